//! Second-level page tables (spec 9.8) for the shared walker: R/W present bits, PS large pages at levels 2
//! and 3 where CAP.SLLPS has them.

use iommu_spec::vtd::{level_index, level_size, Cap, SlPte};

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
