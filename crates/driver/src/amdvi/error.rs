//! What can go wrong driving an AMD-Vi unit, and why hand-over refuses a unit.

use core::fmt;

use super::scan::DevTableRefusal;
use crate::MemError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AmdError {
    /// A COMPLETION_WAIT's store never arrived (Linux: "Completion-Wait loop timed out"): the unit is not
    /// processing the commands we wrote, e.g. because SNP locked its command-buffer base register.
    CompletionWaitTimeout {
        head: u64,
        tail: u64,
    },
    /// The command processor stopped on an illegal command.
    CommandError {
        status: u64,
    },
    OutOfMemory,
    OutOfDomainIds,
    OutOfIova {
        size: u64,
    },
    NoSuchDomain(usize),
    BadRange {
        iova: u64,
        size: u64,
    },
    Mem(MemError),
    /// Every entry of a device's interrupt table is in use.
    OutOfIrtes,
    /// Reusing the crashed kernel's structures failed with SNP on: nothing else can work (the registers are
    /// locked), so the crash kernel stops here with the reason (Linux's BUG_ON) rather than hanging.
    ReuseFailedWithSnp(alloc::boxed::Box<Refusal>),
}

impl From<MemError> for AmdError {
    fn from(e: MemError) -> Self {
        AmdError::Mem(e)
    }
}

impl fmt::Display for AmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AmdError::CompletionWaitTimeout { head, tail } => {
                write!(f, "Completion-Wait loop timed out (command head {head:#x}, tail {tail:#x})")
            }
            AmdError::CommandError { status } => write!(f, "command processor stopped (STATUS {status:#x})"),
            AmdError::OutOfMemory => f.write_str("out of memory for IOMMU structures"),
            AmdError::OutOfDomainIds => f.write_str("no free domain ID"),
            AmdError::OutOfIova { size } => write!(f, "no free IOVA range of {size:#x} bytes"),
            AmdError::NoSuchDomain(d) => write!(f, "no domain {d}"),
            AmdError::BadRange { iova, size } => write!(f, "bad IOVA range {iova:#x}+{size:#x}"),
            AmdError::Mem(e) => write!(f, "{e}"),
            AmdError::OutOfIrtes => f.write_str("every entry of the device's interrupt table is in use"),
            AmdError::ReuseFailedWithSnp(r) => write!(f, "SNP is on and the old IOMMU state cannot be reused: {r}"),
        }
    }
}

/// Why the crash kernel will not reuse the crashed kernel's structures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    DevTable(DevTableRefusal),
    /// The old device table's size is not the one this kernel uses (Linux compares against the size it
    /// computes from IVRS).
    DevTableSize {
        found: u64,
        want: u64,
    },
    /// A ring (command buffer, event log) or the completion-wait page: `what` at `addr`.
    BufferNotRam {
        what: &'static str,
        addr: u64,
    },
    BufferInCrashRegion {
        what: &'static str,
        addr: u64,
    },
    BadLength {
        what: &'static str,
        raw: u64,
    },
    /// A ring or the completion-wait page at physical address 0: a register nobody programmed.
    BaseZero {
        what: &'static str,
    },
    /// Reuse ran but its first completion wait did not complete.
    Hardware(AmdError),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::DevTable(r) => write!(f, "{r}"),
            Refusal::DevTableSize { found, want } => {
                write!(f, "device table is {found:#x} bytes, this kernel uses {want:#x}")
            }
            Refusal::BufferNotRam { what, addr } => write!(f, "{what} at {addr:#x} is outside RAM"),
            Refusal::BufferInCrashRegion { what, addr } => {
                write!(f, "{what} at {addr:#x} is inside the crash kernel's region")
            }
            Refusal::BadLength { what, raw } => write!(f, "{what} register {raw:#x} has a reserved length"),
            Refusal::BaseZero { what } => write!(f, "{what} base is zero"),
            Refusal::Hardware(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for AmdError {}
impl core::error::Error for Refusal {}
