//! Queued invalidation (spec 6.5.2): our own ring of descriptors, each submission ended by a wait
//! descriptor whose status write tells us the unit has processed everything before it (Linux
//! `qi_submit_sync`).

use iommu_spec::vtd::{off, Fsts, Gcmd, IqPtr, Iqa, Iqer, WaitInv};

use super::hw::{self, STATUS_SPINS};
use super::VtdError;
use crate::{Mmio, Platform};

/// Status word values (Linux `QI_IN_USE` / `QI_DONE`).
const QI_IN_USE: u32 = 1;
const QI_DONE: u32 = 2;

/// An enabled invalidation queue owned by this driver.
#[derive(Clone, Debug)]
pub struct InvQueue {
    base: u64,
    entries: u32,
    wide: bool,
    tail: u32,
    status: u64,
    /// Descriptors submitted, wait descriptors included.
    pub submitted: u64,
}

impl InvQueue {
    /// Disable whatever queue the unit runs (an old kernel's, in a crash kernel), then enable a fresh one:
    /// one page of 128-bit descriptors, or two pages of 256-bit ones in scalable mode (Linux
    /// `dmar_enable_qi`: IQT ← 0, IQA, GCMD.QIE, wait QIES).
    pub fn enable(hw: &mut impl Platform, wide: bool) -> Result<Self, VtdError> {
        Self::disable(hw)?;
        let pages = if wide { 2 } else { 1 };
        let base = alloc_contiguous(hw, pages)?;
        let status = hw.alloc_frame().ok_or(VtdError::OutOfMemory)?;
        let iqa = Iqa::new().with_iqa(base >> 12).with_dw(wide).with_qs(if wide { 1 } else { 0 });
        hw.write64(off::IQT, 0);
        hw.write64(off::IQA, iqa.into_bits());
        let cmd = hw::persistent(hw).with_qie(true);
        hw::command(hw, cmd, "QIES", true, |s| s.qies())?;
        Ok(InvQueue { base, entries: iqa.entries(), wide, tail: 0, status, submitted: 0 })
    }

    /// Turn queued invalidation off once the unit has drained the queue (Linux `__dmar_disable_qi`).
    pub fn disable(hw: &mut impl Mmio) -> Result<(), VtdError> {
        if !hw::gsts(hw).qies() {
            return Ok(());
        }
        // Bounded wait for IQH to reach IQT; a wedged old queue is left to the status timeout below.
        for _ in 0..STATUS_SPINS {
            if hw.read64(off::IQH) == hw.read64(off::IQT) || hw.settled() {
                break;
            }
        }
        let cmd: Gcmd = hw::persistent(hw).with_qie(false);
        hw::command(hw, cmd, "QIES", false, |s| !s.qies())
    }

    fn slot(&self, i: u32) -> u64 {
        self.base + i as u64 * if self.wide { 32 } else { 16 }
    }

    /// Submit `descs` (128-bit each) followed by a wait descriptor, and wait until it completes.
    pub fn submit(&mut self, hw: &mut impl Platform, descs: &[u128]) -> Result<(), VtdError> {
        // Keep one slot free so a full ring is distinguishable from an empty one.
        let need = descs.len() as u32 + 1;
        if need >= self.entries {
            for chunk in descs.chunks((self.entries / 2) as usize) {
                self.submit(hw, chunk)?;
            }
            return Ok(());
        }
        hw.write_u32(self.status, QI_IN_USE)?;
        let wait = WaitInv::status_write(self.status, QI_DONE).into_bits();
        for d in descs.iter().copied().chain(core::iter::once(wait)) {
            let at = self.slot(self.tail);
            hw.write_u128(at, d)?;
            if self.wide {
                hw.write_u128(at + 16, 0)?;
            }
            self.tail = (self.tail + 1) % self.entries;
            self.submitted += 1;
        }
        hw.write64(off::IQT, IqPtr::from_index(self.tail as u16, self.wide).into_bits());
        for _ in 0..STATUS_SPINS {
            if hw.read_u32(self.status)? == QI_DONE {
                return Ok(());
            }
            let fsts = Fsts::from_bits(hw.read32(off::FSTS));
            if fsts.iqe() || fsts.ite() || fsts.ice() {
                let iqer = Iqer::from_bits(hw.read64(off::IQER));
                // Resynchronise with the hardware: skip to its head, clear the error (Linux overwrites the
                // bad descriptor with a wait and resubmits; dropping the batch is the simpler recovery).
                let iqh = IqPtr::from_bits(hw.read64(off::IQH)).index(self.wide) as u32 % self.entries;
                self.tail = iqh;
                hw.write64(off::IQT, IqPtr::from_index(iqh as u16, self.wide).into_bits());
                hw.write32(off::FSTS, Fsts::new().with_iqe(true).with_ite(true).with_ice(true).into_bits());
                return Err(VtdError::QueueError { fsts: fsts.into_bits(), iqer: iqer.into_bits() });
            }
            if hw.settled() {
                break;
            }
        }
        Err(VtdError::QueueTimeout { iqh: hw.read64(off::IQH), iqt: hw.read64(off::IQT) })
    }
}

fn alloc_contiguous(hw: &mut impl Platform, pages: u64) -> Result<u64, VtdError> {
    crate::alloc_contiguous(hw, pages, &mut 0).ok_or(VtdError::OutOfMemory)
}
