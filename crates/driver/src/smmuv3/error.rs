//! What can go wrong driving an SMMUv3, and why hand-over refuses one.

use core::fmt;

use super::scan::StrtabRefusal;
use crate::MemError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SmmuError {
    /// CR0ACK did not follow CR0 (Linux `arm_smmu_write_reg_sync`).
    Cr0AckTimeout {
        want: u32,
        got: u32,
    },
    /// GBPA.UPDATE never cleared.
    GbpaTimeout,
    /// CMD_SYNC never completed (CONS did not reach PROD).
    SyncTimeout {
        prod: u32,
        cons: u32,
    },
    /// The command queue stopped on an error (GERROR.CMDQ_ERR, CMDQ_CONS.ERR).
    CmdqError {
        cons: u32,
    },
    OutOfMemory,
    OutOfAsids,
    OutOfIova {
        size: u64,
    },
    NoSuchDomain(usize),
    BadRange {
        iova: u64,
        size: u64,
    },
    /// The stream ID is beyond the stream table.
    BadStreamId(u32),
    /// The L1 descriptor covering the stream names a level-2 table that no longer passes adoption's checks;
    /// it is live for every stream in its span, so it is neither used nor replaced.
    L1Untrusted {
        index: u64,
        raw: u64,
    },
    Mem(MemError),
}

impl From<MemError> for SmmuError {
    fn from(e: MemError) -> Self {
        SmmuError::Mem(e)
    }
}

impl fmt::Display for SmmuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SmmuError::Cr0AckTimeout { want, got } => write!(f, "CR0ACK {got:#x} did not follow CR0 {want:#x}"),
            SmmuError::GbpaTimeout => f.write_str("GBPA update did not complete"),
            SmmuError::SyncTimeout { prod, cons } => write!(f, "CMD_SYNC timed out (PROD {prod:#x}, CONS {cons:#x})"),
            SmmuError::CmdqError { cons } => write!(f, "command queue error (CMDQ_CONS {cons:#x})"),
            SmmuError::OutOfMemory => f.write_str("out of memory for SMMU structures"),
            SmmuError::OutOfAsids => f.write_str("no free ASID"),
            SmmuError::OutOfIova { size } => write!(f, "no free IOVA range of {size:#x} bytes"),
            SmmuError::NoSuchDomain(d) => write!(f, "no domain {d}"),
            SmmuError::BadRange { iova, size } => write!(f, "bad IOVA range {iova:#x}+{size:#x}"),
            SmmuError::BadStreamId(s) => write!(f, "stream ID {s:#x} beyond the stream table"),
            SmmuError::L1Untrusted { index, raw } => {
                write!(f, "L1 descriptor {index} ({raw:#x}) names a level-2 table that fails the checks")
            }
            SmmuError::Mem(e) => write!(f, "{e}"),
        }
    }
}

/// Why the crash kernel will not adopt the stream table (the v6 kdump series' checks); it resets instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// CR0.SMMUEN clear: nothing to adopt.
    NotEnabled,
    /// IDR0.COHACC clear: the walker does not snoop, so the crash kernel cannot trust what it reads.
    NonCoherentWalker,
    /// GERROR.SFM_ERR active: the SMMU is in service failure mode.
    ServiceFailure,
    Table(StrtabRefusal),
    /// 2-level: SPLIT differs from this driver's.
    Split {
        found: u8,
        want: u8,
    },
    /// 2-level: more L1 entries than this driver allows.
    TooManyL1 {
        entries: u64,
        max: u64,
    },
    /// 2-level: LOG2SIZE outside [SPLIT, SIDSIZE]; linear: beyond what this kernel would allocate.
    Log2Size {
        log2size: u8,
        min: u8,
        max: u8,
    },
    /// A non-empty L1 descriptor whose span is not SPLIT + 1.
    L1Span {
        index: u64,
        span: u8,
    },
    L1Unreadable(MemError),
    /// STRTAB_BASE_CFG.FMT reserved, 2-level on hardware without IDR0.ST_LEVEL, or linear on hardware with
    /// it (this kernel would have built a 2-level table, as the crashed one should have).
    Format {
        fmt: u8,
        two_level_hw: bool,
    },
    Hardware(SmmuError),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotEnabled => f.write_str("SMMUEN is clear"),
            Refusal::NonCoherentWalker => f.write_str("the table walker is not coherent (IDR0.COHACC)"),
            Refusal::ServiceFailure => f.write_str("GERROR.SFM_ERR: service failure mode"),
            Refusal::Table(r) => write!(f, "{r}"),
            Refusal::Split { found, want } => write!(f, "STRTAB_BASE_CFG.SPLIT {found}, this driver uses {want}"),
            Refusal::TooManyL1 { entries, max } => write!(f, "{entries} L1 entries, at most {max}"),
            Refusal::Log2Size { log2size, min, max } => write!(f, "LOG2SIZE {log2size} outside [{min}, {max}]"),
            Refusal::L1Span { index, span } => write!(f, "L1 descriptor {index}: SPAN {span}"),
            Refusal::L1Unreadable(e) => write!(f, "L1 table unreadable: {e}"),
            Refusal::Format { fmt, two_level_hw } => write!(
                f,
                "STRTAB_BASE_CFG.FMT {fmt} on hardware {} 2-level stream tables",
                if *two_level_hw { "with" } else { "without" }
            ),
            Refusal::Hardware(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for SmmuError {}
impl core::error::Error for Refusal {}
