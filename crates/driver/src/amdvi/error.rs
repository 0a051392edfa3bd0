//! What can go wrong driving an AMD-Vi unit, and why hand-over refuses a unit.

use core::fmt;

use super::scan::DevTableRefusal;
use crate::MemError;

/// A hardware or resource failure: the driver cannot go on with this unit (or with this request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AmdError {
    /// A COMPLETION_WAIT's store never arrived (Linux: "Completion-Wait loop timed out"): the unit is not
    /// processing the commands we wrote, e.g. because SNP locked its command-buffer base register.
    CompletionWaitTimeout {
        /// CMD_HEAD when the wait gave up: how far the unit fetched.
        head: u64,
        /// CMD_TAIL: how far the driver had queued.
        tail: u64,
    },
    /// The command processor stopped on an illegal command.
    CommandError {
        /// The Status register (MMIO 0x2020) as read, with CmdBufRun clear.
        status: u64,
    },
    /// No page for the driver's own structures (device table, rings, page tables, interrupt tables).
    OutOfMemory,
    /// Every one of the 16-bit domain IDs is in use.
    OutOfDomainIds,
    /// No IOVA range left of the requested size.
    OutOfIova {
        /// The size asked for, in bytes.
        size: u64,
    },
    /// A request named a domain this driver does not hold.
    NoSuchDomain(usize),
    /// A map or unmap request not aligned to 4 KiB, beyond the domain's address width, or over a large page.
    BadRange {
        /// The first IOVA of the request.
        iova: u64,
        /// Its length in bytes.
        size: u64,
    },
    /// A physical-memory access failed.
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
    /// The old device table itself cannot be trusted (DEV_TABLE_BASE zero, outside RAM or in the crash
    /// region).
    DevTable(DevTableRefusal),
    /// The old device table's size is not the one this kernel uses (Linux compares against the size it
    /// computes from IVRS).
    DevTableSize {
        /// Bytes DEV_TABLE_BASE.Size describes.
        found: u64,
        /// Bytes this kernel's table has.
        want: u64,
    },
    /// A ring (command buffer, event log) or the completion-wait page: `what` at `addr`.
    BufferNotRam {
        /// Which buffer.
        what: &'static str,
        /// Its physical address, from its base register.
        addr: u64,
    },
    /// A ring or the completion-wait page lies in the crash kernel's region, which the crash kernel is
    /// already using: reusing it would let the unit write there.
    BufferInCrashRegion {
        /// Which buffer.
        what: &'static str,
        /// Its physical address, from its base register.
        addr: u64,
    },
    /// A ring base register encodes a length the specification reserves (ComLen or EventLen below 8).
    BadLength {
        /// Which ring.
        what: &'static str,
        /// The base register as read.
        raw: u64,
    },
    /// A ring or the completion-wait page at physical address 0: a register nobody programmed.
    BaseZero {
        /// Which buffer.
        what: &'static str,
    },
    /// A base register written with a fresh ring kept its old value: the unit ignores writes to it (an SNP
    /// lock the driver did not expect), so the rings cannot be replaced.
    BaseLocked {
        /// Which register.
        what: &'static str,
        /// What it still reads.
        raw: u64,
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
            Refusal::BaseLocked { what, raw } => write!(f, "{what} register ignored a write (still {raw:#x})"),
            Refusal::Hardware(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for AmdError {}
impl core::error::Error for Refusal {}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    /// The symptom "[PATCH v3 4/4] iommu/amd: Fix host kdump support for SNP" reports, word for word (Linux's
    /// `iommu_completion_wait` prints it): what an operator searches for.
    #[test]
    fn a_completion_wait_timeout_prints_linuxs_message() {
        let e = AmdError::CompletionWaitTimeout { head: 0x20, tail: 0x40 };
        assert!(e.to_string().starts_with("Completion-Wait loop timed out"));
    }
}
