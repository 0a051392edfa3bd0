//! Register protocols: GCMD commands acknowledged in GSTS, write-buffer flush, fault-record draining.

use alloc::vec::Vec;

use iommu_spec::vtd::{off, Cap, FaultRecord, Fsts, Gcmd, Gsts};

use super::VtdError;
use crate::Mmio;

/// How many GSTS reads a command may take before the unit counts as broken. Linux waits up to
/// `DMAR_OPERATION_TIMEOUT` (about 8 s of TSC); a bounded count is the equivalent here.
pub const STATUS_SPINS: u32 = 100_000;

pub fn gsts(hw: &mut impl Mmio) -> Gsts {
    Gsts::from_bits(hw.read32(off::GSTS))
}

/// Write `cmd` to GCMD and wait for GSTS to satisfy `done` (Linux `IOMMU_WAIT_OP` on GSTS).
pub fn command(
    hw: &mut impl Mmio,
    cmd: Gcmd,
    bit: &'static str,
    want: bool,
    done: impl Fn(Gsts) -> bool,
) -> Result<(), VtdError> {
    hw.write32(off::GCMD, cmd.into_bits());
    for _ in 0..STATUS_SPINS {
        if done(gsts(hw)) {
            return Ok(());
        }
        if hw.settled() {
            break;
        }
    }
    Err(VtdError::StatusTimeout { bit, want })
}

/// The current persistent enables, to carry into the next GCMD write (GCMD is write-the-whole-state).
pub fn persistent(hw: &mut impl Mmio) -> Gcmd {
    gsts(hw).persistent_cmd()
}

pub fn set_translation(hw: &mut impl Mmio, on: bool) -> Result<(), VtdError> {
    let cmd = persistent(hw).with_te(on);
    command(hw, cmd, "TES", on, |s| s.tes() == on)
}

/// Latch RTADDR (GCMD.SRTP, wait GSTS.RTPS).
pub fn set_root(hw: &mut impl Mmio, rtaddr: u64) -> Result<(), VtdError> {
    hw.write64(off::RTADDR, rtaddr);
    let cmd = persistent(hw).with_srtp(true);
    command(hw, cmd, "RTPS", true, |s| s.rtps())
}

/// Flush the write buffer if CAP.RWBF says the hardware needs it (Linux `iommu_flush_write_buffer`).
pub fn flush_write_buffer(hw: &mut impl Mmio, cap: Cap) -> Result<(), VtdError> {
    if !cap.rwbf() {
        return Ok(());
    }
    let cmd = persistent(hw).with_wbf(true);
    command(hw, cmd, "WBFS", false, |s| !s.wbfs())
}

/// Read and clear every pending primary fault record, starting at FSTS.FRI (Linux `dmar_fault`), then
/// clear the overflow and error bits. Bounded by CAP.NFR + 1 records.
pub fn drain_faults(hw: &mut impl Mmio, cap: Cap) -> Vec<FaultRecord> {
    let mut out = Vec::new();
    let fsts = Fsts::from_bits(hw.read32(off::FSTS));
    let n = cap.fault_records();
    if fsts.ppf() {
        let mut i = fsts.fri() as usize % n;
        for _ in 0..n {
            let at = off::frcd(cap.fro(), i);
            let hi = hw.read64(at + 8);
            if hi >> 63 == 0 {
                break;
            }
            let lo = hw.read64(at);
            out.push(FaultRecord::from_bits(lo as u128 | (hi as u128) << 64));
            hw.write32(at + FaultRecord::F_DWORD, 1 << FaultRecord::F_BIT_IN_DWORD);
            i = (i + 1) % n;
        }
    }
    hw.write32(off::FSTS, Fsts::new().with_pfo(true).with_pro(true).with_ppf(true).into_bits());
    out
}
