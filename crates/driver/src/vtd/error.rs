//! What can go wrong talking to a VT-d unit, and why hand-over refuses a unit, a bus or a device.

use core::fmt;

use crate::MemError;

/// A hardware or resource failure: the driver cannot continue with this unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VtdError {
    /// A GSTS bit did not reach its expected value (Linux: "DMAR hardware is malfunctioning").
    StatusTimeout {
        /// The GSTS bit polled (TES, RTPS, QIES, IRES...).
        bit: &'static str,
        /// The value the command should have produced.
        want: bool,
    },
    /// The invalidation queue's wait descriptor never completed.
    QueueTimeout {
        /// IQH when the wait gave up: how far the unit fetched.
        iqh: u64,
        /// IQT: how far the driver had queued.
        iqt: u64,
    },
    /// The unit reported an invalidation queue error (FSTS.IQE/ITE/ICE) for our submission.
    QueueError {
        /// FSTS as read, with the IQE, ITE or ICE bit that stopped the queue.
        fsts: u32,
        /// IQER, which says what was wrong with the descriptor.
        iqer: u64,
    },
    /// CAP.SAGAW offers none of the widths this driver walks (3, 4 or 5 levels).
    NoSupportedAgaw {
        /// CAP.SAGAW as read.
        sagaw: u8,
    },
    /// ECAP lacks something this driver needs.
    Unsupported(&'static str),
    /// No page for the driver's own structures.
    OutOfMemory,
    /// Every domain ID is in use (CAP.ND).
    OutOfDomainIds,
    /// No IOVA range left of the requested size.
    OutOfIova {
        /// The size asked for, in bytes.
        size: u64,
    },
    /// A request named a domain this driver does not hold.
    NoSuchDomain(usize),
    /// A map or unmap request not aligned to 4 KiB, or beyond the domain's address width.
    BadRange {
        /// The first IOVA of the request.
        iova: u64,
        /// Its length in bytes.
        size: u64,
    },
    /// A physical-memory access failed.
    Mem(MemError),
    /// The operation writes, but the platform is a read-only dump.
    ReadOnly,
    /// Every interrupt-remapping table entry is in use.
    OutOfIrtes,
}

impl From<MemError> for VtdError {
    fn from(e: MemError) -> Self {
        VtdError::Mem(e)
    }
}

impl From<crate::walk::MapError> for VtdError {
    fn from(e: crate::walk::MapError) -> Self {
        match e {
            crate::walk::MapError::Mem(m) => VtdError::Mem(m),
            crate::walk::MapError::OutOfMemory => VtdError::OutOfMemory,
            crate::walk::MapError::Occupied { level: _, iova } => VtdError::BadRange { iova, size: 4096 },
        }
    }
}

impl fmt::Display for VtdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VtdError::StatusTimeout { bit, want } => {
                write!(f, "GSTS.{bit} did not become {}", *want as u8)
            }
            VtdError::QueueTimeout { iqh, iqt } => {
                write!(f, "invalidation wait timed out (IQH {iqh:#x}, IQT {iqt:#x})")
            }
            VtdError::QueueError { fsts, iqer } => {
                write!(f, "invalidation queue error: FSTS {fsts:#x}, IQER {iqer:#x}")
            }
            VtdError::NoSupportedAgaw { sagaw } => {
                write!(f, "CAP.SAGAW {sagaw:#x} offers no 3-, 4- or 5-level width")
            }
            VtdError::Unsupported(what) => write!(f, "unit lacks {what}"),
            VtdError::OutOfMemory => f.write_str("out of memory for IOMMU structures"),
            VtdError::OutOfDomainIds => f.write_str("no free domain ID"),
            VtdError::OutOfIova { size } => write!(f, "no free IOVA range of {size:#x} bytes"),
            VtdError::NoSuchDomain(d) => write!(f, "no domain {d}"),
            VtdError::BadRange { iova, size } => write!(f, "bad IOVA range {iova:#x}+{size:#x}"),
            VtdError::Mem(e) => write!(f, "{e}"),
            VtdError::ReadOnly => f.write_str("the platform is read-only"),
            VtdError::OutOfIrtes => f.write_str("every interrupt-remapping table entry is in use"),
        }
    }
}

/// Why the crash kernel will not adopt the unit as a whole; it falls back to a full reset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// RTADDR holds zero: there is no root table to adopt.
    RootTableZero,
    /// The old root table's format (RTADDR.SMT) is not the one this kernel uses; SMT may only change while
    /// translation is off (Linux `iommu_context_addr` users refuse the copy with -EINVAL).
    FormatMismatch {
        /// RTADDR.SMT as the crashed kernel left it.
        old_smt: bool,
        /// Whether this kernel runs scalable mode.
        new_smt: bool,
    },
    /// The root table is not in RAM.
    RootTableNotRam {
        /// The root table's address (RTADDR).
        addr: u64,
    },
    /// The root table lies in the crash kernel's own region: the old kernel could not have built it there.
    RootTableInCrashRegion {
        /// The root table's address (RTADDR).
        addr: u64,
    },
    /// Reading the root table failed.
    RootTableUnreadable(MemError),
    /// The unit cannot do what adoption needs (queued invalidation, the old table's format).
    Unsupported(&'static str),
    /// Building the copies failed.
    Hardware(VtdError),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::RootTableZero => f.write_str("RTADDR is zero"),
            Refusal::FormatMismatch { old_smt, new_smt } => {
                write!(
                    f,
                    "RTADDR.SMT is {} but this kernel uses {} mode",
                    *old_smt as u8,
                    if *new_smt { "scalable" } else { "legacy" }
                )
            }
            Refusal::RootTableNotRam { addr } => {
                write!(f, "root table at {addr:#x} is outside RAM")
            }
            Refusal::RootTableInCrashRegion { addr } => {
                write!(f, "root table at {addr:#x} is inside the crash kernel's region")
            }
            Refusal::RootTableUnreadable(e) => write!(f, "root table unreadable: {e}"),
            Refusal::Unsupported(what) => write!(f, "cannot adopt: {what}"),
            Refusal::Hardware(e) => write!(f, "adoption failed: {e}"),
        }
    }
}

/// Why one bus or one device of the old tables is not adopted (its DMA will fault).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryProblem {
    /// Root entry for `bus` has reserved bits set.
    RootReserved {
        /// The bus whose root entry it is.
        bus: u8,
        /// The 128-bit root entry as read.
        raw: u128,
    },
    /// A context table (legacy, or SM lower/upper) outside RAM.
    ContextTableNotRam {
        /// The bus whose context table it is.
        bus: u8,
        /// The context table's address, from the root entry.
        addr: u64,
    },
    /// A context table inside the crash kernel's region.
    ContextTableInCrashRegion {
        /// The bus whose context table it is.
        bus: u8,
        /// The context table's address, from the root entry.
        addr: u64,
    },
    /// A context table that cannot be read.
    ContextTableUnreadable {
        /// The bus whose context table it is.
        bus: u8,
        /// Why the read failed.
        err: MemError,
    },
    /// Context entry reserved bits set.
    ContextReserved {
        /// The device's source ID (bus, device, function).
        sid: u16,
        /// The 128-bit context entry as read.
        raw: u128,
    },
    /// Legacy context entry TT is reserved, or pass-through without ECAP.PT.
    BadTranslationType {
        /// The device's source ID (bus, device, function).
        sid: u16,
        /// The context entry's TT field.
        tt: u8,
    },
    /// Context/PASID AW not in CAP.SAGAW.
    BadAddressWidth {
        /// The device's source ID (bus, device, function).
        sid: u16,
        /// The AW (AGAW) field: the table has AW + 2 levels.
        aw: u8,
    },
    /// DID 0 or beyond CAP.ND.
    BadDomainId {
        /// The device's source ID (bus, device, function).
        sid: u16,
        /// The DID the entry carries.
        did: u16,
    },
    /// A page table, PASID directory or PASID table outside RAM.
    TableNotRam {
        /// The device's source ID (bus, device, function).
        sid: u16,
        /// Which table: page table, PASID directory or PASID table.
        what: &'static str,
        /// The table's physical address.
        addr: u64,
    },
    /// A page table, PASID directory or PASID table inside the crash kernel's region.
    TableInCrashRegion {
        /// The device's source ID (bus, device, function).
        sid: u16,
        /// Which table: page table, PASID directory or PASID table.
        what: &'static str,
        /// The table's physical address.
        addr: u64,
    },
    /// A PASID directory/table entry that cannot be read.
    TableUnreadable {
        /// The device's source ID (bus, device, function).
        sid: u16,
        /// Which table: page table, PASID directory or PASID table.
        what: &'static str,
        /// Why the read failed.
        err: MemError,
    },
    /// The RID_PASID entry is malformed: reserved bits or encodings, or a translation type the unit does
    /// not offer (first level without ECAP.FLTS, second level without ECAP.SLTS, 5-level first level
    /// without CAP.FL5LP).
    BadPasidEntry {
        /// The device's source ID (bus, device, function).
        sid: u16,
        /// The PASID whose entry it is (RID_PASID).
        pasid: u32,
        /// The PASID entry's first quadword as read.
        raw: u64,
    },
    /// The RID_PASID entry is nested (PGTT = 011): its first-level table holds addresses the second level
    /// translates again. This driver neither decodes nor adopts it; what the device reaches is unknown.
    NestedTranslation {
        /// The device's source ID (bus, device, function).
        sid: u16,
        /// The PASID whose entry it is (RID_PASID).
        pasid: u32,
        /// The PASID entry's first quadword as read.
        raw: u64,
    },
    /// The tables map `iova` to `addr`, inside the crash kernel's region (found by the walk at adoption).
    PageInCrashRegion {
        /// The device's source ID (bus, device, function).
        sid: u16,
        /// The IOVA mapped there.
        iova: u64,
        /// The physical address it reaches, inside the region.
        addr: u64,
    },
    /// The walk at adoption hit its bound before seeing all of the device's tables.
    WalkBound {
        /// The device's source ID (bus, device, function).
        sid: u16,
        /// Tables read before the bound.
        tables: u32,
    },
    /// Scalable mode: the DID of another device on other tables (it cannot be changed in place).
    DomainIdAlias {
        /// The device's source ID (bus, device, function).
        sid: u16,
        /// The DID both entries carry.
        did: u16,
    },
}

impl EntryProblem {
    /// The device this problem is about, if it is about one device (else a whole bus).
    pub fn sid(&self) -> Option<u16> {
        match self {
            EntryProblem::RootReserved { .. }
            | EntryProblem::ContextTableNotRam { .. }
            | EntryProblem::ContextTableInCrashRegion { .. }
            | EntryProblem::ContextTableUnreadable { .. } => None,
            EntryProblem::ContextReserved { sid, .. }
            | EntryProblem::BadTranslationType { sid, .. }
            | EntryProblem::BadAddressWidth { sid, .. }
            | EntryProblem::BadDomainId { sid, .. }
            | EntryProblem::TableNotRam { sid, .. }
            | EntryProblem::TableInCrashRegion { sid, .. }
            | EntryProblem::TableUnreadable { sid, .. }
            | EntryProblem::BadPasidEntry { sid, .. }
            | EntryProblem::NestedTranslation { sid, .. }
            | EntryProblem::PageInCrashRegion { sid, .. }
            | EntryProblem::WalkBound { sid, .. }
            | EntryProblem::DomainIdAlias { sid, .. } => Some(*sid),
        }
    }
}

struct Bdf(u16);
impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", iommu_spec::vtd::SourceId(self.0))
    }
}

impl fmt::Display for EntryProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryProblem::RootReserved { bus, raw } => {
                write!(f, "root entry for bus {bus:#04x}: reserved bits set ({raw:#034x})")
            }
            EntryProblem::ContextTableNotRam { bus, addr } => {
                write!(f, "bus {bus:#04x}: context table {addr:#x} outside RAM")
            }
            EntryProblem::ContextTableInCrashRegion { bus, addr } => {
                write!(f, "bus {bus:#04x}: context table {addr:#x} inside the crash kernel's region")
            }
            EntryProblem::ContextTableUnreadable { bus, err } => {
                write!(f, "bus {bus:#04x}: context table unreadable: {err}")
            }
            EntryProblem::ContextReserved { sid, raw } => {
                write!(f, "{}: context entry reserved bits set ({raw:#034x})", Bdf(*sid))
            }
            EntryProblem::BadTranslationType { sid, tt } => {
                write!(f, "{}: context entry TT {tt} not usable", Bdf(*sid))
            }
            EntryProblem::BadAddressWidth { sid, aw } => {
                write!(f, "{}: AW {aw} not in CAP.SAGAW", Bdf(*sid))
            }
            EntryProblem::BadDomainId { sid, did } => {
                write!(f, "{}: domain ID {did} invalid", Bdf(*sid))
            }
            EntryProblem::TableNotRam { sid, what, addr } => {
                write!(f, "{}: {what} {addr:#x} outside RAM", Bdf(*sid))
            }
            EntryProblem::TableInCrashRegion { sid, what, addr } => {
                write!(f, "{}: {what} {addr:#x} inside the crash kernel's region", Bdf(*sid))
            }
            EntryProblem::TableUnreadable { sid, what, err } => {
                write!(f, "{}: {what} unreadable: {err}", Bdf(*sid))
            }
            EntryProblem::BadPasidEntry { sid, pasid, raw } => {
                write!(f, "{}: PASID {pasid} entry not adoptable (qw0 {raw:#018x})", Bdf(*sid))
            }
            EntryProblem::NestedTranslation { sid, pasid, raw } => {
                write!(
                    f,
                    "{}: PASID {pasid} entry is nested (PGTT 011, qw0 {raw:#018x}): not decoded, reach unknown",
                    Bdf(*sid)
                )
            }
            EntryProblem::PageInCrashRegion { sid, iova, addr } => {
                write!(f, "{}: IOVA {iova:#x} maps {addr:#x}, inside the crash kernel's region", Bdf(*sid))
            }
            EntryProblem::WalkBound { sid, tables } => {
                write!(f, "{}: page-table walk stopped at its bound after {tables} tables", Bdf(*sid))
            }
            EntryProblem::DomainIdAlias { sid, did } => {
                write!(f, "{}: DID {did} is another device's, on other tables", Bdf(*sid))
            }
        }
    }
}

impl core::error::Error for VtdError {}
impl core::error::Error for Refusal {}
impl core::error::Error for EntryProblem {}
