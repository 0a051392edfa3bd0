//! A read-only walk of radix I/O page tables into merged runs `IOVA → physical`, shared by every IOMMU:
//! each format only says how one entry decodes ([`Format`]).
//!
//! The tables may come from a crashed kernel or a dump: the walk is bounded (caps on tables visited and
//! runs kept), cycle-safe (a table reached twice is reported, not re-entered), and reports what it could
//! not read or found malformed instead of failing.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::{MemError, PhysMem};

/// The last page memory lent that a table scan found holding nothing it looks for. Lent memory does not change
/// while it is lent (`PhysMem::lend_page`), and a scan that keeps memory borrowed keeps it lent: a page lent from
/// the same place again holds the same bytes, whatever frame it stands for, and is passed over without a look. The
/// emulator lends one page for a run of frames written alike and for every frame never written (a device table of
/// default entries, the empty part of a stream table).
pub(crate) struct LentRepeat<'a>(Option<&'a [u8; PAGE]>);

impl<'a> LentRepeat<'a> {
    pub(crate) fn new() -> Self {
        LentRepeat(None)
    }
    /// Whether memory lent `lent` from where it lent the page remembered.
    pub(crate) fn repeats(&self, lent: Option<&[u8; PAGE]>) -> bool {
        matches!((self.0, lent), (Some(q), Some(p)) if core::ptr::eq(q, p))
    }
    /// Remember `lent`, if memory lent the page, as holding nothing the scan looks for.
    pub(crate) fn remember(&mut self, lent: Option<&'a [u8; PAGE]>) {
        if lent.is_some() {
            self.0 = lent;
        }
    }
}

/// Each non-zero little-endian quadword of a table page with its index, in order, until `f` says stop: what a
/// table's scan for present entries needs, as most of a sparse table is zeros. Eight cache lines at a time, then a
/// line, are skipped with one OR each (fixed sizes, so the ORs vectorise) before any quadword is looked at.
pub(crate) fn each_nonzero_qword<E>(
    page: &[u8; PAGE],
    mut f: impl FnMut(usize, u64) -> Result<(), E>,
) -> Result<(), E> {
    for (b, block) in page.chunks_exact(512).enumerate() {
        if block.iter().fold(0, |a, &x| a | x) == 0 {
            continue;
        }
        for (c, line) in block.chunks_exact(64).enumerate() {
            if line.iter().fold(0, |a, &x| a | x) == 0 {
                continue;
            }
            for (j, q) in line.chunks_exact(8).enumerate() {
                let raw = u64::from_le_bytes(q.try_into().unwrap_or([0; 8]));
                if raw != 0 {
                    f(b * 64 + c * 8 + j, raw)?;
                }
            }
        }
    }
    Ok(())
}

/// A run of IOVA space mapped contiguously to physical memory with one permission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// First IOVA of the run.
    pub iova: u64,
    /// The physical address `iova` reaches; the rest follows contiguously.
    pub phys: u64,
    /// Length in bytes (a multiple of 4 KiB).
    pub size: u64,
    /// DMA reads are allowed: every level on the way and the leaf grant it.
    pub read: bool,
    /// DMA writes are allowed, likewise.
    pub write: bool,
}

impl Run {
    /// The permissions as `inspect` prints them: `rw`, `r`, `w` or `-`.
    pub fn perm(&self) -> &'static str {
        match (self.read, self.write) {
            (true, true) => "rw",
            (true, false) => "r",
            (false, true) => "w",
            (false, false) => "-",
        }
    }
    /// One past the run's last IOVA (saturating at the top of the address space).
    pub fn end(&self) -> u64 {
        self.iova.saturating_add(self.size)
    }
}

/// Something the walk could not follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkIssue {
    /// A table could not be read.
    Unreadable {
        /// The level of the table (the root is the highest).
        level: u32,
        /// Its physical address.
        table: u64,
        /// Why the read failed.
        err: MemError,
    },
    /// An entry with reserved bits set, or a page size this unit does not have.
    Reserved {
        /// The level of the table holding the entry.
        level: u32,
        /// The first IOVA the entry covers.
        iova: u64,
        /// The entry as read.
        raw: u64,
    },
    /// A table reached a second time: a loop or two entries sharing one table.
    Revisited {
        /// The level it was reached at the second time.
        level: u32,
        /// Its physical address.
        table: u64,
    },
    /// The cap on tables was reached; the rest was not walked.
    TooManyTables,
    /// The cap on runs was reached; the rest was not kept.
    TooManyRuns,
}

/// Bounds on one walk.
#[derive(Clone, Copy, Debug)]
pub struct WalkLimits {
    /// Tables read, the root included; past it the walk ends with [`WalkIssue::TooManyTables`].
    pub max_tables: usize,
    /// Runs kept; past it the walk goes on but records [`WalkIssue::TooManyRuns`].
    pub max_runs: usize,
}

impl Default for WalkLimits {
    fn default() -> Self {
        WalkLimits { max_tables: 1 << 16, max_runs: 1 << 20 }
    }
}

/// What [`walk`] found in one page table.
#[derive(Clone, Debug, Default)]
pub struct Walk {
    /// The mappings, merged, in IOVA order.
    pub runs: Vec<Run>,
    /// What the walk could not follow, in the order met.
    pub issues: Vec<WalkIssue>,
    /// Tables read, the root included.
    pub tables: usize,
    /// Every table page visited (for trimming a dump to what the walk needs).
    pub table_pages: Vec<u64>,
}

/// One decoded page-table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Not present: the slot's IOVAs fault.
    Absent,
    /// A pointer to the table of level `level` (usually one below; AMD-Vi may skip levels).
    Table {
        /// Physical address of the next table.
        table: u64,
        /// Its level.
        level: u32,
        /// Reads may pass below (VMSA APTable, AMD-Vi IR; a walk ANDs these down the levels).
        read: bool,
        /// Writes may pass below.
        write: bool,
    },
    /// A page: the physical address backing this entry's slot (`slot` bytes from the slot's IOVA).
    Leaf {
        /// Physical address of the slot's first byte.
        phys: u64,
        /// The leaf grants reads.
        read: bool,
        /// The leaf grants writes.
        write: bool,
    },
    /// Malformed: reserved bits, a page size the unit does not support.
    Bad,
}

/// How one IOMMU's page-table entries decode.
pub trait Format {
    /// Decode `raw` found at `level` (1 = last) for the slot starting at `iova`.
    fn decode(&self, raw: u64, level: u32, iova: u64) -> Entry;
    /// IOVA bytes one entry at `level` covers.
    fn slot_size(&self, level: u32) -> u64;
    /// Index of `iova` in a table at `level`.
    fn index(&self, iova: u64, level: u32) -> usize;
}

const ENTRIES: usize = 512;

/// How a table was first reached in a walk: a later arrival at another level, or with wider permissions,
/// would decode the same page differently (a cycle), not repeat a reach already seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirstVisit {
    /// The level the table was read at.
    pub level: u32,
    /// Reads the path to it allowed.
    pub read: bool,
    /// Writes the path to it allowed.
    pub write: bool,
}

/// What a walk reports as it goes, so a caller can bound its memory across many walks ([`walk_with`]).
pub trait Visitor {
    /// `table` is about to be read for the first time at `level`; `false` ends the walk.
    fn enter(&mut self, table: u64, level: u32) -> bool;
    /// `table` could not be read.
    fn unreadable(&mut self, level: u32, table: u64, err: MemError);
    /// An entry with reserved bits, a page size the unit lacks, or a pointer that does not go down.
    fn reserved(&mut self, level: u32, iova: u64, raw: u64);
    /// `table`, already read as `first`, is reached again at `level` with permissions `read`/`write`. It is
    /// not read again.
    fn revisit(&mut self, table: u64, level: u32, read: bool, write: bool, first: FirstVisit);
    /// A leaf, in ascending IOVA order; `false` ends the walk.
    fn leaf(&mut self, run: Run) -> bool;
}

/// The tables one walk has read, with how each was first reached. Most walks read a handful of tables
/// (one per level for a device with a few mappings): those are kept in a fixed array searched linearly, with
/// no allocation; past it, a map, so a walk of many tables stays `O(log n)` per lookup.
struct Seen {
    small: [(u64, FirstVisit); SEEN_SMALL],
    len: usize,
    big: BTreeMap<u64, FirstVisit>,
}

const SEEN_SMALL: usize = 16;

impl Seen {
    fn new() -> Self {
        Seen {
            small: [(0, FirstVisit { level: 0, read: false, write: false }); SEEN_SMALL],
            len: 0,
            big: BTreeMap::new(),
        }
    }
    fn get(&self, table: u64) -> Option<FirstVisit> {
        if self.big.is_empty() {
            self.small.iter().take(self.len).find(|e| e.0 == table).map(|e| e.1)
        } else {
            self.big.get(&table).copied()
        }
    }
    /// Forget every table (a new walk), keeping the map's allocation out of the small case.
    fn clear(&mut self) {
        self.len = 0;
        self.big.clear();
    }
    /// Record `table`, not yet seen.
    fn insert(&mut self, table: u64, first: FirstVisit) {
        if self.big.is_empty() {
            if let Some(slot) = self.small.get_mut(self.len) {
                *slot = (table, first);
                self.len += 1;
                return;
            }
            self.big.extend(self.small.iter().copied());
        }
        self.big.insert(table, first);
    }
}

/// Walk the `levels`-level table at `root`, depth first in ascending IOVA order, telling `v` what it
/// finds. Each table is read at most once; the stack holds at most 512 entries a level.
pub fn walk_with(mem: &impl PhysMem, fmt: &impl Format, root: u64, levels: u32, v: &mut impl Visitor) {
    walk_in(mem, fmt, root, levels, v, &mut WalkBuffers::default());
}

/// A walk's stack entry: (table, level, IOVA base, read, write).
type Pending = (u64, u32, u64, bool, bool);

/// What a caller walking many tables lends each walk, so that a walk neither allocates its stack nor sets up
/// its visited set afresh: both are emptied when a walk starts, and hold only what one walk needs (at most
/// 512 pending entries a level, one entry per table it read), however many walks share them. A page to copy
/// a table into is allocated the first time memory cannot lend one in place ([`PhysMem::lend_page`]).
pub struct WalkBuffers {
    copy: Option<alloc::boxed::Box<[u8; PAGE]>>,
    stack: Vec<Pending>,
    seen: Seen,
}

impl Default for WalkBuffers {
    fn default() -> Self {
        WalkBuffers { copy: None, stack: Vec::new(), seen: Seen::new() }
    }
}

/// Bytes of one table page.
const PAGE: usize = ENTRIES * 8;

/// [`walk_with`] with buffers lent by a caller that walks many tables.
fn walk_in(
    mem: &impl PhysMem,
    fmt: &impl Format,
    root: u64,
    levels: u32,
    v: &mut impl Visitor,
    bufs: &mut WalkBuffers,
) {
    let WalkBuffers { copy, stack, seen } = bufs;
    seen.clear();
    stack.clear();
    stack.push((root, levels, 0, true, true));
    while let Some((table, level, base, r, w)) = stack.pop() {
        if let Some(first) = seen.get(table) {
            v.revisit(table, level, r, w, first);
            continue;
        }
        seen.insert(table, FirstVisit { level, read: r, write: w });
        if !v.enter(table, level) {
            break;
        }
        // The table in place where memory lends it, else a copy: the same bytes either way.
        let page: &[u8; PAGE] = match mem.lend_page(table) {
            Some(p) => p,
            None => {
                let buf = copy.get_or_insert_with(|| alloc::boxed::Box::new([0; PAGE]));
                if let Err(err) = mem.read(table, &mut buf[..]) {
                    v.unreadable(level, table, err);
                    continue;
                }
                buf
            }
        };
        let slot = fmt.slot_size(level);
        // Children are pushed in reverse so the stack pops them in ascending IOVA order.
        let pushed = stack.len();
        // An all-zero entry is absent in every format (VT-d R/W clear, AMD-Vi PR clear, VMSA invalid).
        let done = each_nonzero_qword(page, |i, raw| {
            let iova = base.wrapping_add((i as u64).wrapping_mul(slot));
            match fmt.decode(raw, level, iova) {
                Entry::Absent => {}
                Entry::Bad => v.reserved(level, iova, raw),
                Entry::Leaf { phys, read, write } => {
                    if !v.leaf(Run { iova, phys, size: slot, read: r && read, write: w && write }) {
                        return Err(());
                    }
                }
                Entry::Table { table, level: next, read, write } => {
                    if next == 0 || next >= level {
                        v.reserved(level, iova, raw);
                    } else {
                        stack.push((table, next, iova, r && read, w && write));
                    }
                }
            }
            Ok(())
        });
        if done.is_err() {
            return;
        }
        if let Some(children) = stack.get_mut(pushed..) {
            children.reverse();
        }
    }
}

/// [`walk_with`] collecting into a [`Walk`] under per-walk caps.
struct Collect {
    out: Walk,
    limits: WalkLimits,
}

impl Visitor for Collect {
    fn enter(&mut self, table: u64, _level: u32) -> bool {
        if self.out.tables >= self.limits.max_tables {
            self.out.issues.push(WalkIssue::TooManyTables);
            return false;
        }
        self.out.tables += 1;
        self.out.table_pages.push(table);
        true
    }
    fn unreadable(&mut self, level: u32, table: u64, err: MemError) {
        self.out.issues.push(WalkIssue::Unreadable { level, table, err });
    }
    fn reserved(&mut self, level: u32, iova: u64, raw: u64) {
        self.out.issues.push(WalkIssue::Reserved { level, iova, raw });
    }
    fn revisit(&mut self, table: u64, level: u32, _: bool, _: bool, _: FirstVisit) {
        self.out.issues.push(WalkIssue::Revisited { level, table });
    }
    fn leaf(&mut self, run: Run) -> bool {
        push_run(&mut self.out, self.limits, run);
        true
    }
}

/// Walk the `levels`-level table at `root`.
pub fn walk(mem: &impl PhysMem, fmt: &impl Format, root: u64, levels: u32, limits: WalkLimits) -> Walk {
    let mut c = Collect { out: Walk::default(), limits };
    walk_with(mem, fmt, root, levels, &mut c);
    c.out
}

/// Append `run` to `runs`, merging it into the last run when it continues it (IOVA, physical address and
/// permissions); whether it was merged.
pub fn merge_run(runs: &mut [Run], run: Run) -> bool {
    if let Some(last) = runs.last_mut() {
        if last.end() == run.iova
            && last.phys.wrapping_add(last.size) == run.phys
            && (last.read, last.write) == (run.read, run.write)
        {
            if let Some(size) = last.size.checked_add(run.size) {
                last.size = size;
                return true;
            }
        }
    }
    false
}

fn push_run(out: &mut Walk, limits: WalkLimits, run: Run) {
    if merge_run(&mut out.runs, run) {
        return;
    }
    if out.runs.len() >= limits.max_runs {
        if out.issues.last() != Some(&WalkIssue::TooManyRuns) {
            out.issues.push(WalkIssue::TooManyRuns);
        }
        return;
    }
    out.runs.push(run);
}

/// What one IOVA translates to: the physical address for `iova`, its permissions and the slot size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// The physical address the IOVA reaches (offset within the page included).
    pub phys: u64,
    /// Reads are allowed on the whole path.
    pub read: bool,
    /// Writes are allowed on the whole path.
    pub write: bool,
    /// Bytes the leaf entry maps (4 KiB, 2 MiB, 1 GiB...).
    pub size: u64,
}

/// Translate one IOVA (at most `levels` reads, no allocation).
pub fn lookup(
    mem: &impl PhysMem,
    fmt: &impl Format,
    root: u64,
    levels: u32,
    iova: u64,
) -> Result<Option<Leaf>, MemError> {
    let (mut table, mut level, mut r, mut w) = (root, levels, true, true);
    for _ in 0..levels {
        let slot = fmt.slot_size(level);
        let at = table + 8 * fmt.index(iova, level) as u64;
        let slot_iova = iova & !(slot.wrapping_sub(1));
        match fmt.decode(mem.read_u64(at)?, level, slot_iova) {
            Entry::Absent | Entry::Bad => return Ok(None),
            Entry::Leaf { phys, read, write } => {
                return Ok(Some(Leaf {
                    phys: phys + (iova & (slot - 1)),
                    read: r && read,
                    write: w && write,
                    size: slot,
                }))
            }
            Entry::Table { table: t, level: next, read, write } => {
                if next == 0 || next >= level {
                    return Ok(None);
                }
                r &= read;
                w &= write;
                table = t;
                level = next;
            }
        }
    }
    Ok(None)
}

/// How a driver writes its own entries into a format it walks: only 4 KiB leaves and table pointers, which
/// is all this project's domains use.
pub trait Writer: Format {
    /// An entry at `level` pointing at the next table down.
    fn table_entry(&self, table: u64, level: u32) -> u64;
    /// A last-level entry mapping the 4 KiB page at `pa`.
    fn leaf_entry(&self, pa: u64, read: bool, write: bool) -> u64;
}

/// Why writing a mapping failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// Reading or writing a table page failed.
    Mem(MemError),
    /// No page for a new table.
    OutOfMemory,
    /// A large page or a malformed entry sits where a table is needed.
    Occupied {
        /// The level of the entry in the way.
        level: u32,
        /// The IOVA being mapped.
        iova: u64,
    },
}

impl From<MemError> for MapError {
    fn from(e: MemError) -> Self {
        MapError::Mem(e)
    }
}

/// Whether `[iova, iova + size)` → `pa` is a range a table of 4 KiB pages with `width` IOVA bits can map: every
/// bound page-aligned, not empty, inside the IOVA space (what each driver's `map_at` checks first).
pub fn mappable(iova: u64, pa: u64, size: u64, width: u32) -> bool {
    let top = 1u64.checked_shl(width).unwrap_or(u64::MAX);
    iova.is_multiple_of(4096)
        && pa.is_multiple_of(4096)
        && size.is_multiple_of(4096)
        && size != 0
        && iova.checked_add(size).is_some_and(|e| e <= top)
}

/// Whether `[iova, iova + size)`, `size` rounded up to whole pages as an unmap takes it, is a range an unmap of a
/// table with `width` IOVA bits can be given: `iova` page-aligned, not empty, inside the IOVA space. Its caller
/// names the range; one past the space or wrapping at 2^64 is refused before any entry is cleared or any IOVA
/// released, rather than walked page by page (or, on SMMUv3, turned into one invalidation command a page).
pub fn unmappable(iova: u64, size: u64, width: u32) -> bool {
    size.checked_next_multiple_of(4096).is_some_and(|size| mappable(iova, 0, size, width))
}

/// Map `pages` 4 KiB pages from `iova` to `pa` onwards in the `levels`-level table at `root`, allocating missing
/// tables (their count is added to `frames`). The same entries, tables allocated in the same order and pages
/// mapped when it fails part-way as mapping the pages one at a time, walking from the root once per last-level
/// table rather than once per page, as Linux's `__domain_mapping` (VT-d) and `__arm_lpae_map` (io-pgtable-arm)
/// fill consecutive entries of one table.
#[allow(clippy::too_many_arguments)]
pub fn map_range(
    hw: &mut (impl PhysMem + crate::FrameAlloc),
    fmt: &impl Writer,
    root: u64,
    levels: u32,
    iova: u64,
    pa: u64,
    pages: u64,
    read: bool,
    write: bool,
    frames: &mut u64,
) -> Result<(), MapError> {
    let mut table = root;
    for i in 0..pages {
        let (iova, pa) = (iova + i * 4096, pa + i * 4096);
        let index = fmt.index(iova, 1);
        // The first page, or the first slot of the next last-level table: walk down to it.
        if i == 0 || index == 0 {
            table = root;
            for level in (2..=levels).rev() {
                let at = table + 8 * fmt.index(iova, level) as u64;
                table = match fmt.decode(hw.read_u64(at)?, level, iova) {
                    Entry::Table { table, .. } => table,
                    Entry::Absent => {
                        let next = hw.alloc_frame().ok_or(MapError::OutOfMemory)?;
                        *frames += 1;
                        hw.write_u64(at, fmt.table_entry(next, level))?;
                        next
                    }
                    Entry::Leaf { .. } | Entry::Bad => return Err(MapError::Occupied { level, iova }),
                };
            }
        }
        hw.write_u64(table + 8 * index as u64, fmt.leaf_entry(pa, read, write))?;
    }
    Ok(())
}

/// Clear the leaves of `pages` 4 KiB pages from `iova` onwards, walking once per last-level table (Linux
/// `dma_pte_clear_range`, `__arm_lpae_unmap`). Tables are kept (freed with their domain).
pub fn unmap_range(
    hw: &mut impl PhysMem,
    fmt: &impl Format,
    root: u64,
    levels: u32,
    iova: u64,
    pages: u64,
) -> Result<(), MemError> {
    let mut table = None;
    for i in 0..pages {
        let iova = iova + i * 4096;
        let index = fmt.index(iova, 1);
        if i == 0 || index == 0 {
            table = leaf_table(hw, fmt, root, levels, iova)?;
        }
        if let Some(table) = table {
            hw.write_u64(table + 8 * index as u64, 0)?;
        }
    }
    Ok(())
}

/// The last-level table on `iova`'s path from `root`, or `None` where the path has no table to follow.
fn leaf_table(
    hw: &impl PhysMem,
    fmt: &impl Format,
    root: u64,
    levels: u32,
    iova: u64,
) -> Result<Option<u64>, MemError> {
    let mut table = root;
    for level in (2..=levels).rev() {
        match fmt.decode(hw.read_u64(table + 8 * fmt.index(iova, level) as u64)?, level, iova) {
            Entry::Table { table: t, .. } => table = t,
            _ => return Ok(None),
        }
    }
    Ok(Some(table))
}

/// Pages in a scratch region (see [`build_scratch_chain`]): the 512 slots of one leaf table.
pub const SCRATCH_PAGES: u64 = 512;

/// The tables that contain a device: every IOVA of a `levels`-level space lands in the scratch region at
/// `region` (`SCRATCH_PAGES` contiguous pages), read and write. Upper levels are one table each whose
/// entries all point at the table below, so the chain costs `levels` pages whatever the IOVA space. The
/// leaf table spreads its 512 slots over the region's pages, so IOVA page `n` lands on region page
/// `n mod 512`: a descriptor ring and the buffers it names usually fall on different pages, and a device that
/// fetches descriptors from its contained IOVAs reads zeros rather than its own last writes (a single shared
/// page would feed it garbage addresses, which fault: measured in the simulator). Returns the top table.
pub fn build_scratch_chain(
    hw: &mut (impl PhysMem + crate::FrameAlloc),
    fmt: &impl Writer,
    levels: u32,
    region: u64,
    frames: &mut u64,
) -> Result<u64, MapError> {
    let mut page = [0u8; 4096];
    let leaf = hw.alloc_frame().ok_or(MapError::OutOfMemory)?;
    *frames += 1;
    for (i, slot) in page.chunks_exact_mut(8).enumerate() {
        slot.copy_from_slice(&fmt.leaf_entry(region + (i as u64 % SCRATCH_PAGES) * 4096, true, true).to_le_bytes());
    }
    hw.write(leaf, &page)?;
    let mut next = leaf;
    for level in 2..=levels {
        let t = hw.alloc_frame().ok_or(MapError::OutOfMemory)?;
        *frames += 1;
        let e = fmt.table_entry(next, level).to_le_bytes();
        for slot in page.chunks_exact_mut(8) {
            slot.copy_from_slice(&e);
        }
        hw.write(t, &page)?;
        next = t;
    }
    Ok(next)
}

/// A value per distinct key of a list known before a loop fills them in (what adoption records per distinct
/// table or domain ID): the list sorted once, each item given its key's slot, so the loop finds it by the
/// item's index without a search. Memory is one slot per item, however often a key repeats.
pub(crate) struct Slots<V> {
    /// Per item, its key's slot (`u32::MAX`: the item has no key).
    slot_of: Vec<u32>,
    vals: Vec<Option<V>>,
}

impl<V> Slots<V> {
    /// An empty slot for every distinct key of `keys`; `None` items have none.
    pub(crate) fn new<K: Ord>(keys: impl Iterator<Item = Option<K>>) -> Self {
        let mut slot_of = Vec::new();
        let mut keyed: Vec<(K, u32)> = Vec::new();
        for (i, k) in keys.enumerate() {
            slot_of.push(u32::MAX);
            if let Some(k) = k {
                keyed.push((k, i as u32));
            }
        }
        keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut n = 0u32;
        for (j, (k, i)) in keyed.iter().enumerate() {
            if j > 0 && keyed.get(j - 1).is_some_and(|prev| prev.0 != *k) {
                n += 1;
            }
            if let Some(s) = slot_of.get_mut(*i as usize) {
                *s = n;
            }
        }
        let distinct = if keyed.is_empty() { 0 } else { n as usize + 1 };
        Slots { slot_of, vals: (0..distinct).map(|_| None).collect() }
    }
    /// The slot of item `i`'s key; `None` for an item without a key.
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut Option<V>> {
        let s = *self.slot_of.get(i)?;
        self.vals.get_mut(s as usize)
    }
}

/// Page-table pages the walks of one adoption read together, at most (256 MiB of tables, a time bound: each
/// walk's own state is freed before the next): past it, devices not yet walked are refused rather than adopted
/// unchecked.
pub const ADOPT_TABLE_BUDGET: usize = 1 << 16;
/// Runs one walk at adoption keeps, at most.
pub const ADOPT_MAX_RUNS: usize = 1 << 16;

/// Why a device's tables cannot be adopted as they are (what the "iommu/vt-d: Fix crash dump failure caused by legacy DMA/IO" series asks a crash kernel to check of old tables).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// A table page at `addr` lies in the crash kernel's region: the unit would walk memory the crash kernel
    /// is about to reuse.
    TableInCrashRegion {
        /// Physical address of the table page.
        addr: u64,
    },
    /// The tables map `iova` to `addr`, in the crash kernel's region: in-flight DMA would write it.
    PageInCrashRegion {
        /// The IOVA mapped there.
        iova: u64,
        /// The physical address it reaches.
        addr: u64,
    },
    /// The walk hit its bound after `tables` tables: what it did not see is not trusted.
    Bound {
        /// Tables read before the bound.
        tables: u32,
    },
}

/// Walk the `levels`-level table at `root` within `budget` tables (decremented by what was read) and say
/// whether any table page or mapped page lies in the crash kernel's region, or the walk could not finish.
pub fn reach(
    mem: &impl PhysMem,
    fmt: &impl Format,
    env: &crate::BootEnv,
    root: u64,
    levels: u32,
    budget: &mut usize,
) -> Option<Reach> {
    reach_in(mem, fmt, env, root, levels, budget, &mut WalkBuffers::default())
}

/// [`reach`] with buffers lent by a caller that walks many tables ([`WalkBuffers`]).
pub fn reach_in(
    mem: &impl PhysMem,
    fmt: &impl Format,
    env: &crate::BootEnv,
    root: u64,
    levels: u32,
    budget: &mut usize,
    bufs: &mut WalkBuffers,
) -> Option<Reach> {
    let mut v = ReachVisitor { env, budget: *budget, tables: 0, runs: 0, last: None, verdict: None };
    walk_in(mem, fmt, root, levels, &mut v, bufs);
    *budget = budget.saturating_sub(v.tables);
    v.verdict
}

/// [`reach`]'s walk: nothing collected, the first table or page in the crash region (or the bound) ends it.
/// Tables in the crash region are found when entered, before their leaves; runs are counted merged, as
/// [`walk`] lists them, against [`ADOPT_MAX_RUNS`].
struct ReachVisitor<'a> {
    env: &'a crate::BootEnv,
    budget: usize,
    tables: usize,
    runs: usize,
    last: Option<Run>,
    verdict: Option<Reach>,
}

impl Visitor for ReachVisitor<'_> {
    fn enter(&mut self, table: u64, _level: u32) -> bool {
        if self.tables >= self.budget {
            self.verdict = Some(Reach::Bound { tables: self.tables as u32 });
            return false;
        }
        self.tables += 1;
        if self.env.in_crash_region(table, 4096) {
            self.verdict = Some(Reach::TableInCrashRegion { addr: table });
            return false;
        }
        true
    }
    fn unreadable(&mut self, _: u32, _: u64, _: MemError) {}
    fn reserved(&mut self, _: u32, _: u64, _: u64) {}
    fn revisit(&mut self, _: u64, _: u32, _: bool, _: bool, _: FirstVisit) {}
    fn leaf(&mut self, run: Run) -> bool {
        if self.env.in_crash_region(run.phys, run.size) {
            self.verdict = Some(Reach::PageInCrashRegion { iova: run.iova, addr: run.phys });
            return false;
        }
        let merged = match self.last.as_mut() {
            Some(last) => merge_run(core::slice::from_mut(last), run),
            None => false,
        };
        if !merged {
            self.runs += 1;
            self.last = Some(run);
            if self.runs > ADOPT_MAX_RUNS {
                self.verdict = Some(Reach::Bound { tables: self.tables as u32 });
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::{mappable, unmappable, walk, Entry, Format, WalkIssue, WalkLimits};
    use crate::{MemError, PhysMem};

    /// Sparse memory: the words written, zeros elsewhere.
    struct Sparse(alloc::collections::BTreeMap<u64, u64>);

    impl PhysMem for Sparse {
        fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
            for (i, b) in buf.iter_mut().enumerate() {
                let a = pa + i as u64;
                *b = self.0.get(&(a & !7)).copied().unwrap_or(0).to_le_bytes()[(a % 8) as usize];
            }
            Ok(())
        }
        fn write(&mut self, pa: u64, _: &[u8]) -> Result<(), MemError> {
            Err(MemError { addr: pa, kind: crate::MemErrorKind::ReadOnly })
        }
    }

    /// Word-addressed memory that records every write, with a bump frame allocator that can run dry.
    #[derive(Clone, Default, PartialEq, Debug)]
    struct Rw {
        words: alloc::collections::BTreeMap<u64, u64>,
        writes: alloc::vec::Vec<(u64, u64)>,
        next: u64,
        left: u64,
    }

    impl PhysMem for Rw {
        fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
            buf.copy_from_slice(&self.words.get(&pa).copied().unwrap_or(0).to_le_bytes()[..buf.len()]);
            Ok(())
        }
        fn write(&mut self, pa: u64, data: &[u8]) -> Result<(), MemError> {
            let mut w = [0u8; 8];
            w[..data.len()].copy_from_slice(data);
            self.words.insert(pa, u64::from_le_bytes(w));
            self.writes.push((pa, u64::from_le_bytes(w)));
            Ok(())
        }
    }

    impl crate::FrameAlloc for Rw {
        fn alloc_frame(&mut self) -> Option<u64> {
            self.left = self.left.checked_sub(1)?;
            self.next += 0x1000;
            Some(self.next)
        }
        fn free_frame(&mut self, _: u64) {}
    }

    /// A range crossing two last-level tables (and, with too few frames, failing part-way) leaves memory, the
    /// writes in their order and the frame count exactly as mapping its pages one by one does; unmapping it
    /// clears the same leaves as page by page.
    #[test]
    fn a_range_maps_and_unmaps_as_its_pages_one_by_one() {
        let fmt = crate::vtd::SecondLevel(iommu_spec::vtd::Cap::from_bits(0));
        let (root, iova, pa, pages) = (0x100_0000u64, 0x3f_e000u64, 0x4000_0000u64, 700u64);
        for frames in [16, 3, 2] {
            let fresh = Rw { next: 0x200_0000, left: frames, ..Rw::default() };
            let (mut one, mut range) = (fresh.clone(), fresh);
            let (mut n1, mut n2) = (0, 0);
            let by_page = (0..pages).try_for_each(|i| {
                super::map_range(&mut one, &fmt, root, 4, iova + i * 4096, pa + i * 4096, 1, true, true, &mut n1)
            });
            let ranged = super::map_range(&mut range, &fmt, root, 4, iova, pa, pages, true, true, &mut n2);
            assert_eq!(ranged, by_page, "{frames} frames");
            assert_eq!((range.words.clone(), n2), (one.words.clone(), n1), "{frames} frames");
            assert_eq!(range.writes, one.writes, "{frames} frames");
            if frames == 16 {
                assert_eq!(n1, 5, "two tables above the last level and three last-level tables");
                for i in 0..pages {
                    super::unmap_range(&mut one, &fmt, root, 4, iova + i * 4096, 1).unwrap();
                }
                super::unmap_range(&mut range, &fmt, root, 4, iova, pages).unwrap();
                assert_eq!(range.words, one.words);
                assert_eq!(range.words.values().filter(|&&w| w != 0).count(), 5, "only the table pointers are left");
            }
        }
    }

    #[test]
    fn slots_hold_one_value_per_distinct_key_and_none_for_an_item_without_one() {
        let mut s = super::Slots::new([Some(5u64), Some(3), None, Some(5), Some(9), Some(3)].into_iter());
        assert_eq!(s.vals.len(), 3, "3, 5 and 9");
        *s.get_mut(0).unwrap() = Some("five");
        assert_eq!(s.get_mut(3).map(|v| *v), Some(Some("five")), "the same key, the same slot");
        assert_eq!(s.get_mut(1).map(|v| *v), Some(None));
        assert_eq!(s.get_mut(5).map(|v| *v), Some(None));
        assert!(s.get_mut(2).is_none() && s.get_mut(6).is_none());
        *s.get_mut(4).unwrap() = Some("nine");
        assert_eq!(s.get_mut(1).map(|v| *v), Some(None), "a slot of its own");
    }

    /// Whole pages, lent in place or not: the walk must find the same in either.
    struct Pages {
        pages: alloc::collections::BTreeMap<u64, [u8; 4096]>,
        lend: bool,
    }

    impl PhysMem for Pages {
        fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
            let page =
                self.pages.get(&(pa & !0xfff)).ok_or(MemError { addr: pa, kind: crate::MemErrorKind::NotRam })?;
            let off = (pa & 0xfff) as usize;
            buf.copy_from_slice(
                page.get(off..off + buf.len()).ok_or(MemError { addr: pa, kind: crate::MemErrorKind::NotRam })?,
            );
            Ok(())
        }
        fn write(&mut self, pa: u64, _: &[u8]) -> Result<(), MemError> {
            Err(MemError { addr: pa, kind: crate::MemErrorKind::ReadOnly })
        }
        fn lend_page(&self, pa: u64) -> Option<&[u8; 4096]> {
            self.pages.get(&pa).filter(|_| self.lend)
        }
    }

    /// Tables read in place ([`PhysMem::lend_page`]) are checked as copied ones are: a cycle back to the root, a
    /// table shared by two entries and an unreadable table are each reported, every table is read once, and a
    /// second walk with the same lent buffers starts from an empty visited set.
    #[test]
    fn a_walk_over_lent_pages_reports_cycles_shared_and_unreadable_tables_as_over_copies() {
        use iommu_spec::vtd::SlPte;
        let e = |t: u64| SlPte::entry(t, true, true).into_bits().to_le_bytes();
        let (root, mid, shared) = (0x10_0000u64, 0x20_0000u64, 0x30_0000u64);
        let mut pages = alloc::collections::BTreeMap::new();
        let mut page = |at: u64, entries: &[(usize, u64)]| {
            let mut p = [0u8; 4096];
            for &(i, t) in entries {
                p[8 * i..8 * i + 8].copy_from_slice(&e(t));
            }
            pages.insert(at, p);
        };
        // Root: two entries to `mid` tables sharing one leaf table, one to a missing table.
        page(root, &[(0, mid), (1, mid + 0x1000), (2, 0x40_0000)]);
        page(mid, &[(0, shared)]);
        // The second mid-level table also points back at the root: a cycle.
        page(mid + 0x1000, &[(0, shared), (1, root)]);
        page(shared, &[(3, 0x8000_0000)]);
        let fmt = crate::vtd::SecondLevel(iommu_spec::vtd::Cap::from_bits(0));
        let run = |lend: bool| {
            let mem = Pages { pages: pages.clone(), lend };
            let mut bufs = super::WalkBuffers::default();
            let mut c = super::Collect { out: super::Walk::default(), limits: WalkLimits::default() };
            super::walk_in(&mem, &fmt, root, 3, &mut c, &mut bufs);
            let first = c.out;
            let mut c = super::Collect { out: super::Walk::default(), limits: WalkLimits::default() };
            super::walk_in(&mem, &fmt, root, 3, &mut c, &mut bufs);
            assert_eq!((c.out.issues, c.out.tables), (first.issues.clone(), first.tables), "the same again");
            first
        };
        let (lent, copied) = (run(true), run(false));
        assert_eq!(lent.issues, copied.issues);
        assert_eq!((lent.runs, lent.tables), (copied.runs, copied.tables));
        assert_eq!(lent.tables, 5, "root, two mid tables, the shared one, the missing one: each once");
        assert!(lent.issues.contains(&WalkIssue::Revisited { level: 1, table: shared }), "{:?}", lent.issues);
        assert!(lent.issues.contains(&WalkIssue::Revisited { level: 1, table: root }), "the cycle: {:?}", lent.issues);
        assert!(lent.issues.iter().any(|i| matches!(i, WalkIssue::Unreadable { table: 0x40_0000, .. })));
    }

    /// The walk keeps its first few tables in a small array, then a map: a table shared by 40 tables, reached
    /// before and after that switch, is read once and every later arrival reported.
    #[test]
    fn a_walk_of_more_tables_than_its_small_set_still_reads_each_table_once() {
        use iommu_spec::vtd::SlPte;
        let e = |t: u64| SlPte::entry(t, true, true).into_bits();
        let (root, shared) = (0x10_0000u64, 0x20_0000u64);
        let mut m = alloc::collections::BTreeMap::new();
        for i in 0..40u64 {
            let l2 = 0x30_0000 + i * 0x1000;
            m.insert(root + 8 * i, e(l2));
            m.insert(l2, e(shared));
        }
        m.insert(shared, e(0x4000_0000));
        let fmt = crate::vtd::SecondLevel(iommu_spec::vtd::Cap::from_bits(0));
        let w = walk(&Sparse(m), &fmt, root, 3, WalkLimits::default());
        assert_eq!(w.tables, 42, "root, 40 level-2 tables, the shared one");
        let revisits = w.issues.iter().filter(|i| **i == WalkIssue::Revisited { level: 1, table: shared }).count();
        assert_eq!(revisits, 39, "{:?}", w.issues);
        assert_eq!(w.runs.len(), 1, "the shared leaf table's page, listed once");
    }

    /// `walk_with` skips all-zero entries without decoding them: every format must call them absent.
    #[test]
    fn an_all_zero_entry_is_absent_in_every_format() {
        fn absent(f: &impl Format, levels: u32) -> bool {
            (1..=levels).all(|l| matches!(f.decode(0, l, 0), Entry::Absent))
        }
        let cap = iommu_spec::vtd::Cap::from_bits(u64::MAX);
        assert!(absent(&crate::vtd::SecondLevel(cap), 5));
        assert!(absent(&crate::vtd::FirstLevel(cap), 5));
        assert!(absent(&crate::amdvi::V1 { c_bit: 1 << 51 }, 6));
        for stage in [crate::smmuv3::Stage::One, crate::smmuv3::Stage::Two] {
            assert!(absent(&crate::smmuv3::Vmsa { stage, start: 0, ia_bits: 48 }, 4));
        }
    }

    #[test]
    fn a_mappable_or_unmappable_range_is_page_aligned_non_empty_and_inside_the_iova_space() {
        assert!(mappable(0x1000, 0x2000, 0x3000, 39));
        assert!(mappable((1 << 39) - 0x1000, 0, 0x1000, 39), "up to the top");
        assert!(!mappable((1 << 39) - 0x1000, 0, 0x2000, 39), "past the top");
        assert!(!mappable(0x1001, 0, 0x1000, 39) && !mappable(0, 0x10, 0x1000, 39) && !mappable(0, 0, 0x800, 39));
        assert!(!mappable(0, 0, 0, 39), "empty");
        assert!(!mappable(u64::MAX - 0xfff, 0, 0x1000, 64), "a range ending at 2^64 wraps");
        assert!(unmappable(0x1000, 0x1800, 39), "an unmap's size is rounded up to pages");
        assert!(unmappable((1 << 39) - 0x1000, 1, 39) && !unmappable((1 << 39) - 0x1000, 0x1001, 39), "the top");
        assert!(!unmappable(0x1000, 0, 39) && !unmappable(0x1800, 0x1000, 39), "empty, unaligned");
        assert!(!unmappable(0x1000, u64::MAX, 64), "a size that rounds up past 2^64");
    }
}
