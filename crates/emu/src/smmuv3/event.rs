//! Faults, the event queue and global errors (IHI 0070 chapter 7; QEMU `smmuv3_record_event`,
//! `smmuv3_trigger_irq`).
//!
//! A fault becomes an event record when its recording rule allows (configuration errors and fetch aborts always,
//! translation-class faults only with CD.R or STE.S2R, C_BAD_STREAMID for an out-of-range StreamID only with
//! CR2.RECINVSID) and CR0.EVTQEN is set; otherwise it is counted and lost. A full queue loses the record and
//! toggles EVTQ_PROD.OVFLG unless an earlier overflow is still unacknowledged (OVFLG ≠ EVTQ_CONS.OVACKFLG, 7.4).
//! A record that cannot be written raises GERROR.EVTQ_ABT_ERR.
//!
//! GERROR bits toggle only when inactive (GERROR = GERRORN), so an unacknowledged error is never raised twice.
//! Interrupts are counted; with IDR0.MSI and a non-zero IRQ_CFG0 address the MSI data is written there, and an
//! MSI write that fails raises the matching MSI_*_ABT_ERR.

use iommu_platform::PhysMem;
use iommu_spec::smmuv3::{Event, EventClass, EventId, EvtDw1, Gerror, MsiCfg0, QueueBase, QueuePtr, EVTQ_ENT_SIZE};

use super::Smmuv3Model;
use crate::dma::{Access, FaultInfo};
use crate::mem::PhysMemory;

/// A termination that writes no event record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Abort {
    /// SMMUEN = 0, GBPA.ABORT = 1.
    Gbpa,
    /// STE.Config = abort.
    Ste,
    /// Service failure mode.
    Sfm,
}

/// A fault that is an event (recorded or not), before it is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Fault {
    pub id: EventId,
    /// Whether the recording rule allows a record.
    pub record: bool,
    /// The fault arose at stage 2.
    pub s2: bool,
    pub class: EventClass,
    /// Privileged transaction (PnU).
    pub pnu: bool,
    /// dw3 of a stage-2 fault: the IPA.
    pub ipa: Option<u64>,
    /// dw3 of a fetch abort: the address read.
    pub fetch: Option<u64>,
}

impl Fault {
    const fn base(id: EventId, record: bool) -> Self {
        Fault { id, record, s2: false, class: EventClass::In, pnu: false, ipa: None, fetch: None }
    }
    /// A configuration error (C_*), or F_STREAM_DISABLED: always recorded.
    pub const fn config(id: EventId) -> Self {
        Self::base(id, true)
    }
    /// A configuration-structure fetch abort (F_STE_FETCH, F_CD_FETCH) at `pa`: always recorded.
    pub const fn fetch(id: EventId, pa: u64) -> Self {
        Fault { fetch: Some(pa), ..Self::base(id, true) }
    }
    /// A stage-1 translation-class fault, recorded with CD.R.
    pub const fn stage1(id: EventId, record: bool) -> Self {
        Self::base(id, record)
    }
    /// A stage-2 translation-class fault of `ipa` while translating an address of `class`, recorded with STE.S2R.
    pub const fn stage2(id: EventId, record: bool, ipa: u64, class: EventClass) -> Self {
        Fault { s2: true, class, ipa: Some(ipa), ..Self::base(id, record) }
    }
    /// An external abort reading a translation table at `pa` (F_WALK_EABT): always recorded.
    pub const fn walk_eabt(pa: u64, s2: bool, class: EventClass) -> Self {
        Fault { s2, class, fetch: Some(pa), ..Self::base(EventId::FWalkEabt, true) }
    }
    pub const fn with_pnu(self, pnu: bool) -> Self {
        Fault { pnu, ..self }
    }

    /// The record (7.3): dw0 always; the transaction (dw1) and input address (dw2) for translation-class faults
    /// and walk aborts; dw3 the fetch address or, for stage-2 faults, the IPA. No substreams: SSV = 0.
    fn event(&self, sid: u32, iova: u64, access: Access) -> Event {
        let mut e = Event::new(self.id, sid);
        if self.id.is_translation_fault() || self.id == EventId::FWalkEabt {
            let dw1 = EvtDw1::new()
                .with_pnu(self.pnu)
                .with_rnw(access == Access::Read)
                .with_s2(self.s2)
                .with_class(self.class)
                .with_ttrnw(self.id == EventId::FWalkEabt);
            e = e.with_dw1(dw1).with_input_addr(iova);
        }
        match (self.fetch, self.ipa) {
            (Some(pa), _) => e.with_fetch_addr(pa),
            (None, Some(ipa)) => e.with_ipa(ipa),
            (None, None) => e,
        }
    }
}

/// Why a translation did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Deny {
    Silent(Abort),
    Event(Fault),
}

impl From<Fault> for Deny {
    fn from(f: Fault) -> Self {
        Deny::Event(f)
    }
}

/// An interrupt source with an MSI configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Irq {
    Gerror,
    Evtq,
}

impl Smmuv3Model {
    /// Report an event-class fault of `sid` at `iova`: record it if its rule allows, and say what the requester
    /// learns.
    pub(super) fn report(&mut self, mem: &mut PhysMemory, sid: u32, iova: u64, access: Access, f: Fault) -> FaultInfo {
        self.counters.faults += 1;
        let recorded = if f.record {
            self.record_event(mem, f.event(sid, iova, access))
        } else {
            self.counters.events_suppressed += 1;
            false
        };
        FaultInfo { code: f.id.into_bits() as u16, reason: f.id.name().unwrap_or("unknown event"), recorded }
    }

    /// Write `e` at EVTQ_PROD and advance it (7.1, 7.4). Returns whether the record landed.
    fn record_event(&mut self, mem: &mut PhysMemory, e: Event) -> bool {
        if !self.regs.cr0ack().evtqen() {
            self.counters.events_dropped += 1;
            return false;
        }
        let q = QueueBase::from_bits(self.regs.evtq_base);
        let log2 = q.log2size().min(self.cfg.evtqs) as u32;
        let prod = QueuePtr(self.regs.evtq_prod);
        let cons = QueuePtr(self.regs.evtq_cons);
        // No space also covers a corrupt CONS that puts PROD more than a queue ahead.
        if iommu_spec::smmuv3::queue_space(prod, cons, log2) == 0 {
            self.counters.events_dropped += 1;
            self.counters.evtq_overflows += 1;
            if prod.ovf() == cons.ovf() {
                self.regs.evtq_prod ^= QueuePtr::OVF;
            }
            return false;
        }
        let pa = q.base().wrapping_add(prod.index(log2) as u64 * EVTQ_ENT_SIZE);
        let mut bytes = [0u8; EVTQ_ENT_SIZE as usize];
        for (chunk, w) in bytes.chunks_exact_mut(8).zip(e.0) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        if mem.write(pa, &bytes).is_err() {
            self.counters.events_dropped += 1;
            self.raise_gerror(mem, Gerror::new().with_evtq_abt_err(true));
            return false;
        }
        self.regs.evtq_prod = prod.next(log2).0;
        self.counters.events_recorded += 1;
        if self.regs.irq_ctrlack().evtq_irqen() {
            self.signal(mem, Irq::Evtq);
        }
        true
    }

    /// Toggle the GERROR bits of `errs` that are not active already (6.3.18), and signal the GERROR interrupt if
    /// any became active. A failed GERROR MSI only marks MSI_GERROR_ABT_ERR, without another interrupt.
    pub(super) fn raise_gerror(&mut self, mem: &mut PhysMemory, errs: Gerror) {
        let new = errs.into_bits() & !self.gerror_active().into_bits() & Gerror::ERR_MASK;
        if new == 0 {
            return;
        }
        self.regs.gerror ^= new;
        self.counters.gerrors += 1;
        let msi_abt = Gerror::new().with_msi_gerror_abt_err(true).into_bits();
        if new & !msi_abt != 0 && self.regs.irq_ctrlack().gerror_irqen() {
            self.signal(mem, Irq::Gerror);
        }
    }

    /// Signal an interrupt: counted, and written as an MSI when the SMMU has MSIs and IRQ_CFG0 holds an address.
    fn signal(&mut self, mem: &mut PhysMemory, irq: Irq) {
        let (cfg0, data, abt) = match irq {
            Irq::Gerror => {
                self.counters.gerror_irqs += 1;
                (self.regs.gerror_irq_cfg0, self.regs.gerror_irq_cfg1, Gerror::new().with_msi_gerror_abt_err(true))
            }
            Irq::Evtq => {
                self.counters.evtq_irqs += 1;
                (self.regs.evtq_irq_cfg0, self.regs.evtq_irq_cfg1, Gerror::new().with_msi_evtq_abt_err(true))
            }
        };
        let addr = MsiCfg0::from_bits(cfg0).address();
        if self.cfg.msi && addr != 0 && mem.write_u32(addr, data).is_err() {
            self.raise_gerror(mem, abt);
        }
    }
}
