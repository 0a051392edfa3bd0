//! Primary fault recording and the fault / invalidation event interrupts (spec 7.3, 10.4.9–10.4.14,
//! 10.4.20; QEMU `vtd_report_non_recoverable_fault`, `vtd_generate_fault_event`).
//!
//! Records go round-robin from the slot after the last one written. While FSTS.PFO is set, or when the
//! next slot still holds a pending record (F = 1), the new fault is dropped and PFO set. FSTS.PPF is "some
//! record has F set", recomputed whenever a record changes; FSTS.FRI names the slot written when PPF
//! went from 0 to 1. A fault event is signalled only when no earlier condition is still waiting for
//! software (PPF, PFO, IQE, ICE, ITE all clear); FECTL.IM holds it as IP instead of sending it.

use iommu_spec::vtd::{off, EventCtl, FaultReason, FaultRecord, Fsts, Ics, Iqer};

use super::VtdModel;
use crate::dma::{Access, FaultInfo};

/// FSTS bits that are a condition software has not serviced yet.
const PENDING: u32 = Fsts::new().with_pfo(true).with_ppf(true).with_iqe(true).with_ice(true).with_ite(true).into_bits();

impl VtdModel {
    fn fsts(&self) -> Fsts {
        Fsts::from_bits(self.regs.get32(off::FSTS))
    }

    fn set_fsts(&mut self, f: Fsts) {
        self.regs.set32(off::FSTS, f.into_bits());
    }

    /// Report a translation fault: record it unless `suppress` (FPD set on the context or PASID entry
    /// that was in force), and return what the requester learns.
    pub(super) fn report_fault(
        &mut self,
        sid: u16,
        iova: u64,
        reason: FaultReason,
        access: Access,
        suppress: bool,
    ) -> FaultInfo {
        self.counters.faults += 1;
        let recorded = if suppress {
            self.counters.faults_suppressed += 1;
            false
        } else {
            let rec = FaultRecord::new()
                .with_fi(iova >> 12)
                .with_sid(sid)
                .with_fr(reason)
                .with_t(access == Access::Read)
                .with_f(true);
            self.record(rec)
        };
        FaultInfo { code: reason.into_bits() as u16, reason: reason_name(reason), recorded }
    }

    /// Write `rec` into the next fault recording register (spec 7.3.1).
    pub(super) fn record(&mut self, rec: FaultRecord) -> bool {
        let pre = self.fsts();
        if pre.pfo() {
            // Overflow already latched: nothing is recorded until software clears PFO.
            self.counters.faults_dropped += 1;
            return false;
        }
        let n = self.next_frcd;
        if self.frcd(n).f() {
            self.counters.faults_dropped += 1;
            self.set_fsts(pre.with_pfo(true));
            self.fault_event(pre);
            return false;
        }
        let base = off::frcd(self.cfg.cap.fro(), n);
        let raw = rec.into_bits();
        self.regs.set64(base, raw as u64);
        self.regs.set64(base + 8, (raw >> 64) as u64);
        let mut post = pre.with_ppf(true);
        if !pre.ppf() {
            post.set_fri(n as u8);
        }
        self.set_fsts(post);
        self.next_frcd = (n + 1) % self.cfg.cap.fault_records();
        self.counters.faults_recorded += 1;
        self.fault_event(pre);
        true
    }

    /// Signal a fault event unless one is already waiting for software (`pre` = FSTS before the new
    /// condition).
    fn fault_event(&mut self, pre: Fsts) {
        if pre.into_bits() & PENDING != 0 {
            return;
        }
        self.raise_event(off::FECTL, true);
    }

    /// Latch IP in the event control register at `ctl`; send the message now unless masked.
    fn raise_event(&mut self, ctl: usize, fault: bool) {
        let c = EventCtl::from_bits(self.regs.get32(ctl));
        if c.im() {
            self.regs.set32(ctl, c.with_ip(true).into_bits());
        } else {
            self.send_event(ctl, fault);
        }
    }

    fn send_event(&mut self, ctl: usize, fault: bool) {
        let c = EventCtl::from_bits(self.regs.get32(ctl));
        self.regs.set32(ctl, c.with_ip(false).into_bits());
        if fault {
            self.counters.fault_interrupts += 1;
        } else {
            self.counters.inv_interrupts += 1;
        }
    }

    /// After a FSTS write: W1C already applied; IP drops once nothing is pending.
    pub(super) fn fsts_cleared(&mut self) {
        if self.fsts().into_bits() & PENDING == 0 {
            self.regs.update32(off::FECTL, EventCtl::new().with_ip(true).into_bits(), 0);
        }
    }

    /// After a FECTL write: unmasking sends a held event.
    pub(super) fn fectl_written(&mut self) {
        let c = EventCtl::from_bits(self.regs.get32(off::FECTL));
        if !c.im() && c.ip() {
            self.send_event(off::FECTL, true);
        }
    }

    /// After a write to the fault records: F may have been cleared, so PPF is recomputed.
    pub(super) fn frcd_cleared(&mut self) {
        let any = (0..self.cfg.cap.fault_records()).any(|n| self.frcd(n).f());
        let f = self.fsts().with_ppf(any);
        self.set_fsts(f);
        self.fsts_cleared();
    }

    /// Invalidation queue error (spec 6.5.2.10): latch IQE with the reason in IQER.IQEI; the queue stops
    /// fetching, IQH stays at the offending descriptor.
    pub(super) fn raise_iqe(&mut self, iqei: u8) {
        self.counters.qi_errors += 1;
        let pre = self.fsts();
        self.set_fsts(pre.with_iqe(true));
        let iqer = Iqer::from_bits(self.regs.get64(off::IQER)).with_iqei(iqei);
        self.regs.set64(off::IQER, iqer.into_bits());
        self.fault_event(pre);
    }

    /// A wait descriptor with IF (spec 6.5.2.8): set ICS.IWC and signal an invalidation event, unless
    /// IWC is still set from an earlier one.
    pub(super) fn inv_wait_event(&mut self) {
        let ics = Ics::from_bits(self.regs.get32(off::ICS));
        if ics.iwc() {
            return;
        }
        self.regs.set32(off::ICS, ics.with_iwc(true).into_bits());
        self.raise_event(off::IECTL, false);
    }

    /// After a write to ICS or IECTL: clearing IWC drops IECTL.IP; unmasking sends a held event.
    pub(super) fn inv_event_regs_written(&mut self) {
        let ip = EventCtl::new().with_ip(true).into_bits();
        if !Ics::from_bits(self.regs.get32(off::ICS)).iwc() {
            self.regs.update32(off::IECTL, ip, 0);
        }
        let c = EventCtl::from_bits(self.regs.get32(off::IECTL));
        if !c.im() && c.ip() {
            self.send_event(off::IECTL, false);
        }
    }
}

/// Short names of the fault reasons (spec 7.1.3; Linux `dma_remap_fault_reasons` for the wording).
pub(crate) fn reason_name(r: FaultReason) -> &'static str {
    match r {
        FaultReason::RootNotPresent => "root entry not present",
        FaultReason::ContextNotPresent => "context entry not present",
        FaultReason::ContextInvalid => "invalid context entry",
        FaultReason::AddressBeyondMgaw => "address beyond MGAW",
        FaultReason::WriteNotAllowed => "write not allowed",
        FaultReason::ReadNotAllowed => "read not allowed",
        FaultReason::NextLevelInvalid => "page-table access error",
        FaultReason::RootTableInvalid => "root table access error",
        FaultReason::ContextTableInvalid => "context table access error",
        FaultReason::RootReserved => "reserved bits in root entry",
        FaultReason::ContextReserved => "reserved bits in context entry",
        FaultReason::PteReserved => "reserved bits in page-table entry",
        FaultReason::TranslationTypeBlocked => "translation type blocks request",
        FaultReason::SmRootAccess => "SM: root entry access error",
        FaultReason::SmRootNotPresent => "SM: root entry not present",
        FaultReason::SmRootReserved => "SM: reserved bits in root entry",
        FaultReason::SmContextAccess => "SM: context entry access error",
        FaultReason::SmContextNotPresent => "SM: context entry not present",
        FaultReason::SmContextReserved => "SM: reserved bits in context entry",
        FaultReason::SmContextInvalid => "SM: invalid context entry",
        super::translate::SM_RID_PASID_ERROR => "SM: RID_PASID error in context entry",
        FaultReason::SmPasidDirAccess => "SM: PASID directory access error",
        FaultReason::SmPasidDirNotPresent => "SM: PASID directory entry not present",
        FaultReason::SmPasidDirReserved => "SM: reserved bits in PASID directory entry",
        FaultReason::SmPasidEntryAccess => "SM: PASID entry access error",
        FaultReason::SmPasidEntryNotPresent => "SM: PASID entry not present",
        FaultReason::SmPasidEntryReserved => "SM: reserved bits in PASID entry",
        FaultReason::SmPasidEntryInvalid => "SM: invalid PASID entry",
        FaultReason::SmSlAccess => "SM: second-level entry access error",
        FaultReason::SmSlPermission => "SM: second-level entry not present",
        FaultReason::SmSlReserved => "SM: reserved bits in second-level entry",
        FaultReason::SmAddressBeyondHaw => "SM: address beyond hardware maximum",
        FaultReason::SmNoWrite => "SM: write not allowed",
        FaultReason::SmNoRead => "SM: read not allowed",
        FaultReason::IrRequestReserved => "IR: reserved fields in interrupt request",
        FaultReason::IrIndexOverflow => "IR: interrupt index beyond the table",
        FaultReason::IrEntryNotPresent => "IR: interrupt entry not present",
        FaultReason::IrTableAccess => "IR: interrupt table access error",
        FaultReason::IrEntryReserved => "IR: reserved fields in interrupt entry",
        FaultReason::IrCompatBlocked => "IR: compatibility-format interrupt blocked",
        FaultReason::IrSourceInvalid => "IR: source-id verification failed",
        _ => "other",
    }
}
