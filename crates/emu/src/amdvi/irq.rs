//! Interrupt remapping (spec 2.2.5; QEMU `amdvi_int_remap_msi`): a device's MSI goes through the interrupt
//! fields of its device table entry (IV, IntCtl, IntTabLen, IntTableRootPtr) and, when remapped, the IRTE its data
//! bits 10:0 select, in the 32-bit format or, with Control.GAEn, the 128-bit one.
//!
//! The rules, in the order the model applies them:
//! - Control.IommuEn = 0, or the DTE has V = 0 or IV = 0: the message is forwarded unmapped.
//! - A V = 1 entry with reserved bits, or IntTabLen above 11 (2048 entries, reserved beyond), or IntCtl 11b: an
//!   ILLEGAL_DEV_TABLE_ENTRY, and the message is target-aborted.
//! - Fixed and arbitrated messages (data 10:8 = 0, 1) follow IntCtl: 00b target abort, 01b forwarded unmapped,
//!   10b remapped. NMI, INIT and ExtINT pass only with NMIPass, InitPass, EIntPass; anything else is aborted.
//! - Remapped: an index at or beyond `2^IntTabLen`, or an IRTE with RemapEn clear, is target-aborted with an
//!   IO_PAGE_FAULT whose I flag marks an interrupt (RemapEn clear and SupIOPF set: no event); reserved bits, or
//!   GuestMode (guest virtual APIC, not modelled), the same with RZ; an x2APIC destination (above 255) without
//!   Control.XTEn, the same. An IRTE that is not memory is a PAGE_TAB_HARDWARE_ERROR.
//!
//! Which event an IntCtl = 00b abort logs is not stated in the sources read (QEMU logs none): the model logs an
//! IO_PAGE_FAULT with I, as for the table's own aborts, so the abort is visible. INVALID_DEVICE_REQUEST is not
//! raised for interrupts: the requests that would raise it (non-DWORD or read requests to the interrupt range) are
//! not ones the simulated devices make.
//!
//! Caching, as unforgiving as the DMA side: the DTE's interrupt quadword is cached by DeviceID until
//! INVALIDATE_DEVTAB_ENTRY, and IRTEs by (DeviceID, index) until INVALIDATE_INTERRUPT_TABLE for that device (both
//! until INVALIDATE_IOMMU_ALL).

use std::collections::BTreeMap;

use iommu_platform::PhysMem;
use iommu_spec::amdvi::{
    DeviceId, Dte, DteQw2, Event, EventFlags, IntCtl, IntType, Irte32, IrteGa, IRTE32_SIZE, IRTE_GA_SIZE,
    IRTE_INDEX_MASK,
};
use iommu_spec::vtd::{DeliveryMode, MsiData};

use super::AmdviModel;
use crate::dma::FaultInfo;
use crate::irq::{compat_delivery, Interrupt, InterruptRemap};
use crate::mem::PhysMemory;

/// Largest IntTabLen: 2^11 = 2048 entries (spec 2.2.2: larger values are reserved).
const MAX_INT_TAB_LEN: u8 = 11;

/// The interrupt caches of one unit.
#[derive(Clone, Debug, Default)]
pub(super) struct IrqCache {
    /// DTE quadword 2 (and V) by DeviceID.
    dte: BTreeMap<u16, (bool, DteQw2, bool)>,
    /// IRTEs (as the two quadwords; the 32-bit format in the low one) by (DeviceID, index).
    irte: BTreeMap<(u16, u16), [u64; 2]>,
}

impl IrqCache {
    pub fn dte_invalidate(&mut self, devid: u16) {
        self.dte.remove(&devid);
    }
    pub fn table_invalidate(&mut self, devid: u16) {
        let lo = (devid, 0);
        let hi = (devid, u16::MAX);
        let keys: Vec<_> = self.irte.range(lo..=hi).map(|(k, _)| *k).collect();
        for k in keys {
            self.irte.remove(&k);
        }
    }
    pub fn clear(&mut self) {
        self.dte.clear();
        self.irte.clear();
    }
    pub fn len(&self) -> usize {
        self.irte.len()
    }
}

/// A refused message before it is reported.
enum Abort {
    /// Aborted without an event.
    Silent(&'static str),
    IllegalDte(&'static str),
    DteRead(u64),
    /// IO_PAGE_FAULT with I (and RZ for reserved encodings).
    Page {
        rz: bool,
        why: &'static str,
    },
    IrteRead(u64),
}

impl AmdviModel {
    /// DTE interrupt fields of `devid` through the cache: `(V, qw2, reserved bits set)`.
    fn irq_dte(&mut self, mem: &PhysMemory, devid: u16) -> Result<(bool, DteQw2, bool), Abort> {
        if let Some(s) = self.irq.dte.get(&devid) {
            return Ok(*s);
        }
        let dtb = self.dev_table();
        if devid as u32 >= dtb.entries() {
            return Err(Abort::IllegalDte("DeviceID beyond the device table"));
        }
        let pa = self.mem_pa(dtb.table()).wrapping_add(DeviceId(devid).dte_offset());
        let mut raw = [0u8; 32];
        mem.read(pa, &mut raw).map_err(|_| Abort::DteRead(pa))?;
        let dte = Dte::from_le_bytes(&raw);
        let s = (dte.valid(), dte.qw2(), dte.has_reserved_bits());
        if self.caches_enabled() {
            self.irq.dte.insert(devid, s);
        }
        Ok(s)
    }

    fn irte_at(&mut self, mem: &PhysMemory, devid: u16, root: u64, index: u16, ga: bool) -> Result<[u64; 2], Abort> {
        if let Some(e) = self.irq.irte.get(&(devid, index)) {
            return Ok(*e);
        }
        let size = if ga { IRTE_GA_SIZE } else { IRTE32_SIZE };
        let pa = root.wrapping_add(index as u64 * size);
        let e = if ga {
            [mem.read_u64(pa).map_err(|_| Abort::IrteRead(pa))?, mem.read_u64(pa + 8).map_err(|_| Abort::IrteRead(pa))?]
        } else {
            [mem.read_u32(pa).map_err(|_| Abort::IrteRead(pa))? as u64, 0]
        };
        if self.caches_enabled() {
            self.irq.irte.insert((devid, index), e);
        }
        Ok(e)
    }

    /// IRTEs the interrupt cache holds.
    pub fn irte_cache_len(&self) -> usize {
        self.irq.len()
    }

    fn remap(&mut self, mem: &PhysMemory, devid: u16, addr: u64, data: u32) -> Result<Interrupt, Abort> {
        let (v, q2, reserved) = self.irq_dte(mem, devid)?;
        if !v || !q2.iv() {
            return Ok(compat_delivery(addr, data));
        }
        if reserved {
            return Err(Abort::IllegalDte("reserved bits in the device table entry"));
        }
        if q2.int_tab_len() > MAX_INT_TAB_LEN {
            return Err(Abort::IllegalDte("IntTabLen above 2048 entries"));
        }
        let msg = MsiData::from_bits(data);
        match msg.dlm() {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => {}
            DeliveryMode::Nmi if q2.nmi_pass() => return Ok(compat_delivery(addr, data)),
            DeliveryMode::Init if q2.init_pass() => return Ok(compat_delivery(addr, data)),
            DeliveryMode::ExtInt if q2.eint_pass() => return Ok(compat_delivery(addr, data)),
            _ => return Err(Abort::Silent("delivery mode not passed by the DTE")),
        }
        match q2.int_ctl() {
            IntCtl::Abort => return Err(Abort::Page { rz: false, why: "DTE IntCtl aborts fixed interrupts" }),
            IntCtl::Pass => return Ok(compat_delivery(addr, data)),
            IntCtl::Remap => {}
            _ => return Err(Abort::IllegalDte("reserved IntCtl")),
        }
        let index = (data & IRTE_INDEX_MASK) as u16;
        if index as u32 >= 1 << q2.int_tab_len() {
            return Err(Abort::Page { rz: false, why: "interrupt index beyond IntTabLen" });
        }
        let ctl = self.control();
        let ga = ctl.ga_en();
        let raw = self.irte_at(mem, devid, self.mem_pa(q2.int_table_root() << 6), index, ga)?;
        let (remap_en, sup, rsvd, guest, int_type, dest, vector) = if ga {
            let e = IrteGa(raw);
            let lo = e.lo();
            (
                lo.remap_en(),
                lo.sup_iopf(),
                e.reserved_bits()[1] != 0,
                lo.guest_mode(),
                lo.int_type(),
                e.destination(),
                e.vector(),
            )
        } else {
            let e = Irte32::from_bits(raw[0] as u32);
            (
                e.remap_en(),
                e.sup_iopf(),
                e.reserved_bits() != 0,
                false,
                e.int_type(),
                e.destination() as u32,
                e.vector(),
            )
        };
        if !remap_en {
            if sup {
                return Err(Abort::Silent("IRTE RemapEn clear (SupIOPF)"));
            }
            return Err(Abort::Page { rz: false, why: "IRTE RemapEn clear" });
        }
        if rsvd || guest || !matches!(int_type, IntType::Fixed | IntType::Arbitrated) {
            return Err(Abort::Page { rz: true, why: "reserved fields in the IRTE" });
        }
        if dest > 0xff && !ctl.xt_en() {
            return Err(Abort::Page { rz: true, why: "x2APIC destination without XTEn" });
        }
        self.counters.interrupts_remapped += 1;
        Ok(Interrupt::Delivered { dest, vector, remapped: true })
    }
}

impl InterruptRemap for AmdviModel {
    fn interrupt(&mut self, mem: &mut PhysMemory, rid: u32, addr: u64, data: u32) -> Interrupt {
        self.counters.interrupts += 1;
        if !self.control().iommu_en() {
            return compat_delivery(addr, data);
        }
        let devid = rid as u16;
        let abort = match self.remap(mem, devid, addr, data) {
            Ok(i) => return i,
            Err(a) => a,
        };
        self.counters.interrupt_faults += 1;
        let device = DeviceId(devid);
        let write = EventFlags::new().with_rw(true).with_i(true);
        let (ev, code, reason) = match abort {
            Abort::Silent(why) => (None, 0, why),
            Abort::IllegalDte(why) => {
                (Some(Event::IllegalDevTableEntry { device, pasid: 0, address: addr, flags: write }), 1, why)
            }
            Abort::DteRead(pa) => (
                Some(Event::DevTabHardwareError { device, address: pa, flags: write.with_ty(1) }),
                3,
                "device table read failed",
            ),
            Abort::Page { rz: false, why } => (Some(Event::interrupt_fault(device, 0, addr)), 2, why),
            Abort::Page { rz: true, why } => {
                let ev = Event::IoPageFault { device, domain_or_pasid: 0, address: addr, flags: write.with_rz(true) };
                (Some(ev), 2, why)
            }
            Abort::IrteRead(pa) => {
                let ev =
                    Event::PageTabHardwareError { device, domain_or_pasid: 0, address: pa, flags: write.with_ty(1) };
                (Some(ev), 4, "interrupt table read failed")
            }
        };
        let recorded = ev.is_some_and(|ev| self.log_event(mem, ev));
        Interrupt::Blocked(FaultInfo { code, reason, recorded })
    }
}
