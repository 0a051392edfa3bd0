//! Interrupt remapping (spec 5.1; QEMU `vtd_interrupt_remap_msi`, `vtd_irte_get`): an MSI in remappable
//! format is looked up in the table IRTA latched at the last SIRTP, through the interrupt-entry cache (IEC).
//!
//! The order of checks and their fault reasons follow spec 5.1.4 (QEMU uses the same order): reserved request
//! fields (0x20), index beyond the table (0x21), the entry unreadable (0x23), not present (0x22), reserved
//! fields or an unsupported posted entry (0x24), source validation (0x26); a compatibility-format message
//! while remapping is on and GSTS.CFIS clear is blocked (0x25). With remapping off every message is taken in
//! compatibility format (spec 5.1.2), a remappable one included, so its handle bits become a destination.
//!
//! The IEC caches entries by index and, like the other caches, forgets one only through an IEC invalidation
//! (global or index-selective): a driver that rewrites an IRTE without the flush keeps getting the old one.
//! SIRTP does not empty it (Linux follows SIRTP with `qi_global_iec`).

use iommu_platform::PhysMem;
use iommu_spec::vtd::{off, FaultReason, FaultRecord, Gsts, IecInv, Irte, MsiAddrRemap, IRTE_SIZE};

use super::VtdModel;
use crate::dma::FaultInfo;
use crate::irq::{compat_delivery, Interrupt, InterruptRemap};
use crate::mem::PhysMemory;

/// MSI data bits that must be zero in a remappable request (QEMU `VTD_IR_MSI_DATA_RESERVED`).
const DATA_RESERVED: u32 = 0xffff_0000;

impl VtdModel {
    /// An IRTE through the IEC; a miss reads the table and fills the cache. `None`: the read failed.
    fn irte(&mut self, mem: &PhysMemory, index: u32) -> Option<Irte> {
        if let Some(e) = self.iec.get(&index) {
            self.counters.iec_hits += 1;
            return Some(*e);
        }
        let at = self.irta.table().checked_add(index as u64 * IRTE_SIZE)?;
        let lo = mem.read_u64(at).ok()?;
        let hi = mem.read_u64(at + 8).ok()?;
        let e = Irte::from_qwords([lo, hi]);
        // Only present entries are cached (QEMU caches nothing that faulted, as the model's other caches).
        if e.p() {
            self.iec.insert(index, e);
        }
        Some(e)
    }

    /// Execute an interrupt-entry-cache invalidation (spec 6.5.2.7).
    pub(super) fn iec_invalidate(&mut self, d: IecInv) {
        self.iec.retain(|&i, _| !d.covers(i));
        self.counters.iec_invalidations += 1;
    }

    /// Entries the IEC holds.
    pub fn iec_len(&self) -> usize {
        self.iec.len()
    }

    fn interrupt_fault(&mut self, sid: u16, index: u32, reason: FaultReason, fpd: bool) -> Interrupt {
        self.counters.interrupt_faults += 1;
        self.counters.faults += 1;
        let recorded = if fpd {
            self.counters.faults_suppressed += 1;
            false
        } else {
            // The index field is 16 bits; an overflowing handle + subhandle is recorded truncated.
            let rec = FaultRecord::new().with_sid(sid).with_fr(reason).with_interrupt_index(index as u16).with_f(true);
            self.record(rec)
        };
        Interrupt::Blocked(FaultInfo { code: reason.0 as u16, reason: super::event::reason_name(reason), recorded })
    }
}

impl InterruptRemap for VtdModel {
    fn interrupt(&mut self, mem: &mut PhysMemory, rid: u32, addr: u64, data: u32) -> Interrupt {
        self.counters.interrupts += 1;
        let sid = rid as u16;
        let gsts = Gsts::from_bits(self.regs.get32(off::GSTS));
        let a = MsiAddrRemap::from_bits(addr as u32);
        if !gsts.ires() {
            return compat_delivery(addr, data);
        }
        if !a.remappable() {
            if gsts.cfis() {
                return compat_delivery(addr, data);
            }
            return self.interrupt_fault(sid, 0, FaultReason::IrCompatBlocked, false);
        }
        let index = a.index(data);
        if addr >> 32 != 0 || (a.shv() && data & DATA_RESERVED != 0) {
            return self.interrupt_fault(sid, index, FaultReason::IrRequestReserved, false);
        }
        if index >= self.irta.entries() {
            return self.interrupt_fault(sid, index, FaultReason::IrIndexOverflow, false);
        }
        let Some(e) = self.irte(mem, index) else {
            return self.interrupt_fault(sid, index, FaultReason::IrTableAccess, false);
        };
        if !e.p() {
            return self.interrupt_fault(sid, index, FaultReason::IrEntryNotPresent, e.fpd());
        }
        let eime = self.irta.eime();
        // A posted entry (IM = 1) on a unit without CAP.PI is a reserved encoding (the model refuses to offer
        // CAP.PI: posting is not modelled).
        if e.reserved_bits(eime) != 0 || e.im() {
            return self.interrupt_fault(sid, index, FaultReason::IrEntryReserved, e.fpd());
        }
        match e.source_ok(sid) {
            Some(true) => {}
            Some(false) => return self.interrupt_fault(sid, index, FaultReason::IrSourceInvalid, e.fpd()),
            None => return self.interrupt_fault(sid, index, FaultReason::IrEntryReserved, e.fpd()),
        }
        self.counters.interrupts_remapped += 1;
        Interrupt::Delivered { dest: e.destination(eime), vector: e.v(), remapped: true }
    }
}
