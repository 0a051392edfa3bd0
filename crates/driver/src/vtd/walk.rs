//! A read-only walk of second-level page tables (spec 9.8) into merged runs `IOVA → physical`.
//!
//! The tables may come from a crashed kernel or a dump: the walk is bounded (a cap on tables visited and
//! runs kept), cycle-safe (a table reached twice is reported, not re-entered), and reports what it could
//! not read or found malformed instead of failing.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use iommu_spec::vtd::{level_index, level_size, Cap, SlPte, PTES_PER_TABLE};

use crate::{MemError, PhysMem};

/// A run of IOVA space mapped contiguously to physical memory with one permission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub iova: u64,
    pub phys: u64,
    pub size: u64,
    pub read: bool,
    pub write: bool,
}

impl Run {
    pub fn perm(&self) -> &'static str {
        match (self.read, self.write) {
            (true, true) => "rw",
            (true, false) => "r",
            (false, true) => "w",
            (false, false) => "-",
        }
    }
    pub fn end(&self) -> u64 {
        self.iova + self.size
    }
}

/// Something the walk could not follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkIssue {
    /// A table could not be read.
    Unreadable { level: u32, table: u64, err: MemError },
    /// An entry with reserved bits set (a large page where the unit has none, or low address bits in one).
    Reserved { level: u32, iova: u64, raw: u64 },
    /// A table reached a second time: a loop or two entries sharing one table.
    Revisited { level: u32, table: u64 },
    /// The cap on tables was reached; the rest was not walked.
    TooManyTables,
    /// The cap on runs was reached; the rest was not kept.
    TooManyRuns,
}

/// Bounds on one walk.
#[derive(Clone, Copy, Debug)]
pub struct WalkLimits {
    pub max_tables: usize,
    pub max_runs: usize,
}

impl Default for WalkLimits {
    fn default() -> Self {
        WalkLimits { max_tables: 1 << 16, max_runs: 1 << 20 }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Walk {
    pub runs: Vec<Run>,
    pub issues: Vec<WalkIssue>,
    /// Tables read, the root included.
    pub tables: usize,
    /// Every table page visited (for trimming a dump to what the walk needs).
    pub table_pages: Vec<u64>,
}

/// Walk the `levels`-level second-level table at `root`.
pub fn walk(mem: &impl PhysMem, cap: Cap, root: u64, levels: u32, limits: WalkLimits) -> Walk {
    let mut out = Walk::default();
    let mut seen = BTreeSet::new();
    // (table, level, iova base, read, write) — depth at most 5, breadth bounded by max_tables.
    let mut stack: Vec<(u64, u32, u64, bool, bool)> = Vec::new();
    stack.push((root, levels, 0, true, true));
    let mut buf = [0u8; 4096];
    while let Some((table, level, base, r, w)) = stack.pop() {
        if !seen.insert(table) {
            out.issues.push(WalkIssue::Revisited { level, table });
            continue;
        }
        if out.tables >= limits.max_tables {
            out.issues.push(WalkIssue::TooManyTables);
            break;
        }
        out.tables += 1;
        out.table_pages.push(table);
        if let Err(err) = mem.read(table, &mut buf) {
            out.issues.push(WalkIssue::Unreadable { level, table, err });
            continue;
        }
        // Children are pushed in reverse so the stack pops them in ascending IOVA order.
        let mut children = Vec::new();
        for i in 0..PTES_PER_TABLE {
            let raw = u64::from_le_bytes(buf[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
            let pte = SlPte::from_bits(raw);
            if !pte.present() {
                continue;
            }
            let iova = base + i as u64 * level_size(level);
            let (er, ew) = (r && pte.r(), w && pte.w());
            let leaf = level == 1 || pte.ps();
            if leaf {
                let large_ok = match level {
                    1 => true,
                    2 => cap.sllps() & 1 != 0,
                    3 => cap.sllps() & 2 != 0,
                    _ => false,
                };
                if !large_ok || pte.large_page_reserved(level) != 0 {
                    out.issues.push(WalkIssue::Reserved { level, iova, raw });
                    continue;
                }
                push_run(
                    &mut out,
                    limits,
                    Run { iova, phys: pte.phys(), size: level_size(level), read: er, write: ew },
                );
            } else {
                children.push((pte.phys(), level - 1, iova, er, ew));
            }
        }
        stack.extend(children.into_iter().rev());
    }
    out
}

fn push_run(out: &mut Walk, limits: WalkLimits, run: Run) {
    if let Some(last) = out.runs.last_mut() {
        if last.end() == run.iova
            && last.phys + last.size == run.phys
            && (last.read, last.write) == (run.read, run.write)
        {
            last.size += run.size;
            return;
        }
    }
    if out.runs.len() >= limits.max_runs {
        if out.issues.last() != Some(&WalkIssue::TooManyRuns) {
            out.issues.push(WalkIssue::TooManyRuns);
        }
        return;
    }
    out.runs.push(run);
}

/// What one IOVA translates to: the leaf's physical address for `iova`, its permissions and page size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    pub phys: u64,
    pub read: bool,
    pub write: bool,
    pub size: u64,
}

/// Translate one IOVA through a `levels`-level table (at most `levels` reads, no allocation).
pub fn lookup(mem: &impl PhysMem, cap: Cap, root: u64, levels: u32, iova: u64) -> Result<Option<Leaf>, MemError> {
    let (mut table, mut r, mut w) = (root, true, true);
    for level in (1..=levels).rev() {
        let pte = SlPte::from_bits(mem.read_u64(table + 8 * level_index(iova, level) as u64)?);
        if !pte.present() {
            return Ok(None);
        }
        r &= pte.r();
        w &= pte.w();
        let large = pte.ps() && ((level == 2 && cap.sllps() & 1 != 0) || (level == 3 && cap.sllps() & 2 != 0));
        if level == 1 || large {
            let size = level_size(level);
            return Ok(Some(Leaf { phys: pte.phys() + (iova & (size - 1)), read: r, write: w, size }));
        }
        table = pte.phys();
    }
    Ok(None)
}
