//! VT-d page tables for the shared walker: second level (spec 9.8: R/W present bits, PS large pages at
//! levels 2 and 3 where CAP.SLLPS has them) and first level (spec 9.7: the x86-64 format, P/R/W/U/S, PS at
//! level 2 always and at level 3 where CAP.FL1GP has it).

use iommu_spec::vtd::{level_index, level_size, Cap, FlPte, SlPte};

use crate::walk::{Entry, Format, Writer};
pub use crate::walk::{Leaf, Run, Walk, WalkIssue, WalkLimits};
use crate::{MemError, PhysMem};

/// VT-d second-level entries, as this unit's CAP allows them.
pub struct SecondLevel(pub Cap);

impl Format for SecondLevel {
    fn decode(&self, raw: u64, level: u32, _iova: u64) -> Entry {
        let pte = SlPte::from_bits(raw);
        if !pte.present() {
            return Entry::Absent;
        }
        if level == 1 || pte.ps() {
            let large_ok = match level {
                1 => true,
                2 => self.0.sllps() & 1 != 0,
                3 => self.0.sllps() & 2 != 0,
                _ => false,
            };
            if !large_ok || pte.large_page_reserved(level) != 0 {
                return Entry::Bad;
            }
            return Entry::Leaf { phys: pte.phys(), read: pte.r(), write: pte.w() };
        }
        Entry::Table { table: pte.phys(), level: level - 1, read: pte.r(), write: pte.w() }
    }
    fn slot_size(&self, level: u32) -> u64 {
        level_size(level)
    }
    fn index(&self, iova: u64, level: u32) -> usize {
        level_index(iova, level)
    }
}

/// Walk the `levels`-level second-level table at `root`.
pub fn walk(mem: &impl PhysMem, cap: Cap, root: u64, levels: u32, limits: WalkLimits) -> Walk {
    crate::walk::walk(mem, &SecondLevel(cap), root, levels, limits)
}

/// Translate one IOVA through a `levels`-level table.
pub fn lookup(mem: &impl PhysMem, cap: Cap, root: u64, levels: u32, iova: u64) -> Result<Option<Leaf>, MemError> {
    crate::walk::lookup(mem, &SecondLevel(cap), root, levels, iova)
}

impl Writer for SecondLevel {
    /// Linux builds non-leaf entries with R and W set, so permissions are decided at the leaf.
    fn table_entry(&self, table: u64, _level: u32) -> u64 {
        SlPte::entry(table, true, true).into_bits()
    }
    fn leaf_entry(&self, pa: u64, read: bool, write: bool) -> u64 {
        SlPte::entry(pa, read, write).into_bits()
    }
}

/// VT-d first-level entries (PASID entry PGTT = 001), as this unit's CAP allows them. What a request
/// without PASID may do through an entry: read if P is set, write if R/W is set as well, at every level
/// (spec 3.6; such a request is a user request, so an entry with U/S clear blocks it and is reported as
/// malformed here, since Linux sets U/S in every entry it writes). XD concerns instruction fetches only.
pub struct FirstLevel(pub Cap);

impl Format for FirstLevel {
    fn decode(&self, raw: u64, level: u32, _iova: u64) -> Entry {
        let pte = FlPte::from_bits(raw);
        if !pte.p() {
            return Entry::Absent;
        }
        // No address-width bound here: HAW comes from ACPI, not from a register (0 = only the layout's
        // reserved bits).
        let no_1g = level == 3 && pte.ps() && !self.0.fl1gp();
        if !pte.us() || pte.reserved_bits(level, 52) != 0 || no_1g || level > 5 {
            return Entry::Bad;
        }
        if pte.is_leaf(level) {
            return Entry::Leaf { phys: pte.leaf_phys(level), read: true, write: pte.rw() };
        }
        Entry::Table { table: pte.phys(), level: level - 1, read: true, write: pte.rw() }
    }
    fn slot_size(&self, level: u32) -> u64 {
        level_size(level)
    }
    fn index(&self, iova: u64, level: u32) -> usize {
        level_index(iova, level)
    }
}

impl Writer for FirstLevel {
    /// Linux's first-level table entries: P, R/W, U/S, A (and XD), so permissions are decided at the leaf.
    fn table_entry(&self, table: u64, _level: u32) -> u64 {
        FlPte::table(table).into_bits()
    }
    /// A first-level leaf is always readable; `read` cannot be withheld (Linux refuses such mappings).
    fn leaf_entry(&self, pa: u64, _read: bool, write: bool) -> u64 {
        FlPte::leaf(pa, write).into_bits()
    }
}

/// Either VT-d format, for code that handles devices of both kinds.
pub enum VtdFormat {
    /// Second-level tables: legacy-mode context entries and PASID entries with PGTT = 010.
    Second(SecondLevel),
    /// First-level (x86-64-format) tables: PASID entries with PGTT = 001.
    First(FirstLevel),
}

impl VtdFormat {
    /// The format a domain uses on this unit: first-level when `first_level` (scalable mode with ECAP.FLTS),
    /// else second-level.
    pub fn new(cap: Cap, first_level: bool) -> Self {
        if first_level {
            VtdFormat::First(FirstLevel(cap))
        } else {
            VtdFormat::Second(SecondLevel(cap))
        }
    }
}

impl Format for VtdFormat {
    fn decode(&self, raw: u64, level: u32, iova: u64) -> Entry {
        match self {
            VtdFormat::Second(f) => f.decode(raw, level, iova),
            VtdFormat::First(f) => f.decode(raw, level, iova),
        }
    }
    fn slot_size(&self, level: u32) -> u64 {
        level_size(level)
    }
    fn index(&self, iova: u64, level: u32) -> usize {
        level_index(iova, level)
    }
}

impl Writer for VtdFormat {
    fn table_entry(&self, table: u64, level: u32) -> u64 {
        match self {
            VtdFormat::Second(f) => f.table_entry(table, level),
            VtdFormat::First(f) => f.table_entry(table, level),
        }
    }
    fn leaf_entry(&self, pa: u64, read: bool, write: bool) -> u64 {
        match self {
            VtdFormat::Second(f) => f.leaf_entry(pa, read, write),
            VtdFormat::First(f) => f.leaf_entry(pa, read, write),
        }
    }
}

/// Walk the `levels`-level first-level table at `root`.
pub fn walk_first_level(mem: &impl PhysMem, cap: Cap, root: u64, levels: u32, limits: WalkLimits) -> Walk {
    crate::walk::walk(mem, &FirstLevel(cap), root, levels, limits)
}

/// Translate one IOVA through a `levels`-level first-level table.
pub fn lookup_first_level(
    mem: &impl PhysMem,
    cap: Cap,
    root: u64,
    levels: u32,
    iova: u64,
) -> Result<Option<Leaf>, MemError> {
    crate::walk::lookup(mem, &FirstLevel(cap), root, levels, iova)
}
