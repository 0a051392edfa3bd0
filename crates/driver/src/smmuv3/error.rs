//! What can go wrong driving an SMMUv3, and why hand-over refuses one.

use core::fmt;

use super::scan::StrtabRefusal;
use crate::MemError;

/// A hardware or resource failure: the driver cannot go on with this SMMU (or with this request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SmmuError {
    /// CR0ACK did not follow CR0 (Linux `arm_smmu_write_reg_sync`).
    Cr0AckTimeout {
        /// The CR0 value written.
        want: u32,
        /// CR0ACK as last read.
        got: u32,
    },
    /// GBPA.UPDATE never cleared.
    GbpaTimeout,
    /// CMD_SYNC never completed (CONS did not reach PROD).
    SyncTimeout {
        /// CMDQ_PROD: how far the driver had queued.
        prod: u32,
        /// CMDQ_CONS when the wait gave up: how far the SMMU consumed.
        cons: u32,
    },
    /// The command queue stopped on an error (GERROR.CMDQ_ERR, CMDQ_CONS.ERR).
    CmdqError {
        /// CMDQ_CONS as read: its index names the failing command, its ERR field the cause.
        cons: u32,
    },
    /// No page for the driver's own structures (stream table, queues, context descriptors, page tables).
    OutOfMemory,
    /// Every ASID is in use (8 or 16 bits, as IDR0.ASID16 says).
    OutOfAsids,
    /// No IOVA range left of the requested size.
    OutOfIova {
        /// The size asked for, in bytes.
        size: u64,
    },
    /// A request named a domain this driver does not hold.
    NoSuchDomain(usize),
    /// A map or unmap request not aligned to 4 KiB, beyond the domain's input size, or over a block.
    BadRange {
        /// The first IOVA of the request.
        iova: u64,
        /// Its length in bytes.
        size: u64,
    },
    /// The stream ID is beyond the stream table.
    BadStreamId(u32),
    /// The L1 descriptor covering the stream names a level-2 table that no longer passes adoption's checks;
    /// it is live for every stream in its span, so it is neither used nor replaced.
    L1Untrusted {
        /// The L1 descriptor's index in the level-1 table.
        index: u64,
        /// The descriptor as read.
        raw: u64,
    },
    /// A physical-memory access failed.
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
    /// The stream table itself cannot be trusted (STRTAB_BASE zero, a geometry beyond IDR1.SIDSIZE,
    /// outside RAM or in the crash region).
    Table(StrtabRefusal),
    /// 2-level: SPLIT differs from this driver's.
    Split {
        /// STRTAB_BASE_CFG.SPLIT as read.
        found: u8,
        /// The SPLIT this driver builds with.
        want: u8,
    },
    /// 2-level: more L1 entries than this driver allows.
    TooManyL1 {
        /// L1 entries the registers describe (2^(LOG2SIZE - SPLIT)).
        entries: u64,
        /// The cap.
        max: u64,
    },
    /// 2-level: LOG2SIZE outside [SPLIT, SIDSIZE]; linear: beyond what this kernel would allocate.
    Log2Size {
        /// STRTAB_BASE_CFG.LOG2SIZE as read.
        log2size: u8,
        /// The smallest accepted.
        min: u8,
        /// The largest accepted.
        max: u8,
    },
    /// A non-empty L1 descriptor whose span is not SPLIT + 1.
    L1Span {
        /// The descriptor's index in the level-1 table.
        index: u64,
        /// Its SPAN field.
        span: u8,
    },
    /// A level-1 table descriptor could not be read while checking it.
    L1Unreadable(MemError),
    /// STRTAB_BASE_CFG.FMT reserved, 2-level on hardware without IDR0.ST_LEVEL, or linear on hardware with
    /// it (this kernel would have built a 2-level table, as the crashed one should have).
    Format {
        /// STRTAB_BASE_CFG.FMT as read.
        fmt: u8,
        /// IDR0.ST_LEVEL says the SMMU has 2-level stream tables.
        two_level_hw: bool,
    },
    /// Adoption started but quiescing the old command queue or starting this kernel's failed.
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
