//! Sparse physical memory: what the CPUs and every DMA see.
//!
//! Memory is a RAM map (the e820 view) plus 4 KiB pages that exist only once written; a read of a page
//! never written returns zeros, as freshly booted RAM does in the simulator. Pages are shared copy-on-write
//! (`Arc` + `Arc::make_mut`), so [`PhysMemory::snapshot`] at the crash instant costs one reference count per
//! page, and comparing two snapshots is a pointer comparison for every page nobody touched since.

use std::collections::hash_map::Entry;
use std::ops::Range;
use std::sync::Arc;

use iommu_platform::{MemError, MemErrorKind, PhysMem};

use crate::hash::FastMap;

/// Bytes per page.
pub const PAGE_SIZE: usize = 4096;
const PAGE_SHIFT: u32 = 12;
const PAGE_MASK: u64 = PAGE_SIZE as u64 - 1;

/// One materialised page.
pub type Page = [u8; PAGE_SIZE];

/// What a page never written holds (compared as a slice: one vectorised comparison, not a byte loop).
static ZERO_PAGE: Page = [0; PAGE_SIZE];

/// Write statistics, for a simulator's accounting and for benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemStats {
    /// Successful write calls.
    pub writes: u64,
    /// Bytes written by successful writes.
    pub bytes_written: u64,
    /// Pages created by a first write.
    pub pages_materialised: u64,
    /// Pages copied because a snapshot, or another frame written with the same bytes, still shared them.
    pub cow_copies: u64,
}

/// Sparse physical memory over a RAM map. Cloning it (see [`PhysMemory::snapshot`]) is cheap.
#[derive(Clone, Debug, Default)]
pub struct PhysMemory {
    /// Sorted, merged, page-granular RAM ranges.
    ram: Vec<Range<u64>>,
    pages: Pages,
    /// Frames recently read by a DMA, direct-mapped by frame number: `(pfn, position in pages.frames)`. A hint
    /// only, checked against the frame it names before use, so nothing ever needs to invalidate it; empty until
    /// the first [`PhysMemory::read_in_page`].
    hints: Vec<(u64, usize)>,
    /// The page the latest whole-page write left, so a run of whole-page writes of the same bytes (a device
    /// table of default entries, zeroed buffers) shares one page instead of a copy each. Its bytes never change
    /// while it is held: a write to a frame sharing it copies the page first (or, when that frame is its only
    /// other holder, lets it go), so sharing it never changes what any frame reads.
    last_whole: Option<Arc<Page>>,
    stats: MemStats,
}

/// Slots in [`PhysMemory`]'s hints: a power of two.
const HINTS: usize = 64;

/// The materialised pages: a vector of frames and a map from frame number to position, so a position found
/// once serves as an index afterwards (the hints) where the map would hash.
#[derive(Clone, Debug, Default)]
struct Pages {
    index: FastMap<u64, usize>,
    frames: Vec<(u64, Arc<Page>)>,
}

impl Pages {
    fn get(&self, pfn: &u64) -> Option<&Arc<Page>> {
        self.index.get(pfn).map(|&i| &self.frames[i].1)
    }
    fn get_mut(&mut self, pfn: &u64) -> Option<&mut Arc<Page>> {
        self.index.get(pfn).map(|&i| &mut self.frames[i].1)
    }
    fn contains_key(&self, pfn: &u64) -> bool {
        self.index.contains_key(pfn)
    }
    /// Put `page` at `pfn`; `true` if the frame is new (one lookup either way).
    fn insert(&mut self, pfn: u64, page: Arc<Page>) -> bool {
        match self.index.entry(pfn) {
            Entry::Occupied(e) => {
                self.frames[*e.get()].1 = page;
                false
            }
            Entry::Vacant(e) => {
                e.insert(self.frames.len());
                self.frames.push((pfn, page));
                true
            }
        }
    }
    /// The frame's position (for a hint) and page, made by `f` if it is new.
    fn get_or_insert_with(&mut self, pfn: u64, f: impl FnOnce() -> Arc<Page>) -> (usize, &mut Arc<Page>) {
        let i = match self.index.entry(pfn) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                e.insert(self.frames.len());
                self.frames.push((pfn, f()));
                self.frames.len() - 1
            }
        };
        (i, &mut self.frames[i].1)
    }
    /// Remove `pfn`; the last frame moves into its position.
    fn remove(&mut self, pfn: &u64) {
        if let Some(i) = self.index.remove(pfn) {
            self.frames.swap_remove(i);
            if let Some(&(moved, _)) = self.frames.get(i) {
                self.index.insert(moved, i);
            }
        }
    }
    fn len(&self) -> usize {
        self.frames.len()
    }
    /// Room for `n` more frames, so a run of first writes does not grow the map step by step.
    fn reserve(&mut self, n: usize) {
        self.index.reserve(n);
        self.frames.reserve(n);
    }
    fn keys(&self) -> impl Iterator<Item = &u64> + '_ {
        self.frames.iter().map(|(pfn, _)| pfn)
    }
}

impl PhysMemory {
    /// Memory whose RAM is `ram` (physical ranges). Ranges are sorted and overlapping or adjacent ones
    /// merged, so an access may span two ranges listed separately; empty ranges are dropped.
    pub fn new(ram: impl IntoIterator<Item = Range<u64>>) -> Self {
        let mut ram: Vec<Range<u64>> = ram.into_iter().filter(|r| r.start < r.end).collect();
        ram.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<u64>> = Vec::with_capacity(ram.len());
        for r in ram {
            match merged.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        PhysMemory {
            ram: merged,
            pages: Pages::default(),
            hints: Vec::new(),
            last_whole: None,
            stats: MemStats::default(),
        }
    }

    /// Memory whose RAM is the one range `ram`.
    pub fn contiguous(ram: Range<u64>) -> Self {
        Self::new([ram])
    }

    /// The RAM map (sorted, merged).
    pub fn ram(&self) -> &[Range<u64>] {
        &self.ram
    }

    /// Whether `[pa, pa + len)` is all RAM; `Err` names the first byte that is not.
    pub fn check_ram(&self, pa: u64, len: usize) -> Result<(), MemError> {
        let not_ram = |addr| MemError { addr, kind: MemErrorKind::NotRam };
        if len == 0 {
            return Ok(());
        }
        // `None` = the access wraps past the top of the address space, which no RAM range reaches.
        let end = pa.checked_add(len as u64);
        // Index of the first range ending after `pa`.
        let i = self.ram.partition_point(|r| r.end <= pa);
        match self.ram.get(i) {
            Some(r) if r.start <= pa => match end {
                Some(end) if end <= r.end => Ok(()),
                _ => Err(not_ram(r.end)),
            },
            _ => Err(not_ram(pa)),
        }
    }

    /// Whether byte `pa` is RAM.
    pub fn contains(&self, pa: u64) -> bool {
        let i = self.ram.partition_point(|r| r.end <= pa);
        self.ram.get(i).is_some_and(|r| r.start <= pa)
    }

    /// Reset the page holding `pa` to zeros (it becomes "never written" again).
    pub fn zero_page(&mut self, pa: u64) -> Result<(), MemError> {
        let base = pa & !PAGE_MASK;
        self.check_ram(base, PAGE_SIZE)?;
        self.pages.remove(&(base >> PAGE_SHIFT));
        Ok(())
    }

    /// The page with frame number `pfn`, or `None` if it was never written (it reads as zeros).
    pub fn page(&self, pfn: u64) -> Option<&Page> {
        self.pages.get(&pfn).map(|p| &**p)
    }

    /// The page with frame number `pfn` as shared, or `None` if it was never written: a holder keeps the
    /// bytes of this instant (a later write to memory copies the page first).
    pub fn page_shared(&self, pfn: u64) -> Option<&Arc<Page>> {
        self.pages.get(&pfn)
    }

    /// Whether page `pfn` holds the same bytes here and in `other` (a page never written is zeros). A page
    /// still shared since a snapshot compares by pointer alone.
    pub fn same_page(&self, other: &PhysMemory, pfn: u64) -> bool {
        match (self.pages.get(&pfn), other.pages.get(&pfn)) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a[..] == b[..],
            (Some(p), None) | (None, Some(p)) => p[..] == ZERO_PAGE[..],
            (None, None) => true,
        }
    }

    /// Make the page holding `pa` hold `page`'s bytes, as a whole-page write of them would, by sharing it:
    /// no copy until either holder writes it.
    pub fn write_page_shared(&mut self, pa: u64, page: &Arc<Page>) -> Result<(), MemError> {
        let base = pa & !PAGE_MASK;
        self.check_ram(base, PAGE_SIZE)?;
        if self.pages.insert(base >> PAGE_SHIFT, Arc::clone(page)) {
            self.stats.pages_materialised += 1;
        }
        self.stats.writes += 1;
        self.stats.bytes_written += PAGE_SIZE as u64;
        Ok(())
    }

    /// Every materialised page, in ascending frame-number order (deterministic).
    pub fn pages(&self) -> impl Iterator<Item = (u64, &Page)> + '_ {
        let mut pfns: Vec<u64> = self.pages.keys().copied().collect();
        pfns.sort_unstable();
        pfns.into_iter().filter_map(move |pfn| Some((pfn, &**self.pages.get(&pfn)?)))
    }

    /// The frame numbers of every materialised page, in no particular order (sort them for a deterministic one).
    pub fn pfns(&self) -> impl Iterator<Item = u64> + '_ {
        self.pages.keys().copied()
    }

    /// Number of materialised pages.
    pub fn page_count(&self) -> usize {
        self.pages.len()
    }

    /// Room for `n` more materialised pages (a dump about to fill that many buffers), so the page map does not
    /// grow, rehashing, step by step. Changes nothing any access sees.
    pub fn reserve_pages(&mut self, n: usize) {
        self.pages.reserve(n);
    }

    /// A 64-bit FNV-1a hash of a page's contents; a never-written page hashes as a zero page.
    pub fn page_hash(&self, pfn: u64) -> u64 {
        let bytes = self.page(pfn).unwrap_or(&ZERO_PAGE);
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for chunk in bytes.chunks_exact(8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            h = (h ^ u64::from_le_bytes(w)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }

    /// A copy of memory at this instant. Pages are shared until either side writes them.
    pub fn snapshot(&self) -> PhysMemory {
        // Not the latest whole page: a snapshot holding it would make the next write to a frame sharing it copy
        // the page for the snapshot's sake.
        PhysMemory { last_whole: None, ..self.clone() }
    }

    /// Frame numbers whose contents differ between `self` and `other`, ascending. A page missing on one
    /// side counts as zeros, so zeroing a page that was zero is no change. Pages still shared since a
    /// snapshot compare by pointer alone.
    pub fn changed_pages(&self, other: &PhysMemory) -> Vec<u64> {
        self.changed_pages_outside(other, &(0..0))
    }

    /// [`PhysMemory::changed_pages`] of the frames outside the physical range `skip` (not compared at all:
    /// a simulator leaves out the crash kernel's own region).
    pub fn changed_pages_outside(&self, other: &PhysMemory, skip: &Range<u64>) -> Vec<u64> {
        let skipped = |pfn: u64| pfn.checked_mul(PAGE_SIZE as u64).is_some_and(|pa| skip.contains(&pa));
        let mut out = Vec::new();
        // Memory and its snapshot list their frames in the same order up to the first removal since (a copy keeps
        // the order; writes append): a frame at the same position with the same number is that frame, found
        // without hashing. Anywhere else the maps answer.
        let (mine, theirs) = (&self.pages.frames, &other.pages.frames);
        for (i, (pfn, page)) in mine.iter().enumerate() {
            if skipped(*pfn) {
                continue;
            }
            let same = match theirs.get(i) {
                Some((q, p)) if q == pfn => Arc::ptr_eq(page, p) || page[..] == p[..],
                _ => self.same_page(other, *pfn),
            };
            if !same {
                out.push(*pfn);
            }
        }
        for (i, (pfn, page)) in theirs.iter().enumerate() {
            let here = mine.get(i).is_some_and(|(q, _)| q == pfn) || self.pages.contains_key(pfn);
            if !skipped(*pfn) && !here && page[..] != ZERO_PAGE[..] {
                out.push(*pfn);
            }
        }
        out.sort_unstable();
        out
    }

    /// Write statistics since creation (a snapshot carries its origin's counts).
    pub fn stats(&self) -> MemStats {
        self.stats
    }

    /// A read that lies in one page, the way a DMA's requests do (`crate::dma::dma_read`): a page read
    /// recently is found through the hints (an index, no hashing, no RAM-map search: a hint is only kept for a
    /// page that is RAM throughout, and the RAM map never changes) and copied from straight away; an 8-byte
    /// read is a single load. `&mut` only to keep the hints.
    #[inline]
    pub fn read_in_page(&mut self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        if self.read_hinted(pa, buf) {
            return Ok(());
        }
        self.read_in_page_miss(pa, buf)
    }

    /// A read within one page whose frame the hints name: copied straight from it (no hashing, no RAM-map
    /// search). `false`: nothing read, take another path.
    #[inline]
    fn read_hinted(&self, pa: u64, buf: &mut [u8]) -> bool {
        let pfn = pa >> PAGE_SHIFT;
        let off = (pa & PAGE_MASK) as usize;
        let Some(&(p, i)) = self.hints.get(pfn as usize & (HINTS - 1)) else { return false };
        if p != pfn || off + buf.len() > PAGE_SIZE {
            return false;
        }
        match self.pages.frames.get(i) {
            Some((f, page)) if *f == pfn => {
                copy_small(buf, &page[off..off + buf.len()]);
                true
            }
            _ => false,
        }
    }

    /// A little-endian quadword through [`Self::read_in_page`]: what a unit's table walk reads, an entry at a
    /// time from the few table pages it keeps coming back to.
    #[inline]
    pub fn read_u64_in_page(&mut self, pa: u64) -> Result<u64, MemError> {
        let mut b = [0u8; 8];
        self.read_in_page(pa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// [`Self::read_in_page`] without a hint: the RAM check and the map, then a hint for next time.
    #[cold]
    #[inline(never)]
    fn read_in_page_miss(&mut self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let pfn = pa >> PAGE_SHIFT;
        let off = (pa & PAGE_MASK) as usize;
        if off + buf.len() > PAGE_SIZE {
            return self.read(pa, buf);
        }
        self.check_ram(pa, buf.len())?;
        let Some(&i) = self.pages.index.get(&pfn) else {
            // Never written: zeros, and nothing to hint at.
            buf.fill(0);
            return Ok(());
        };
        if self.check_ram(pfn << PAGE_SHIFT, PAGE_SIZE).is_ok() {
            if self.hints.is_empty() {
                self.hints = vec![(u64::MAX, 0); HINTS];
            }
            self.hints[pfn as usize & (HINTS - 1)] = (pfn, i);
        }
        copy_small(buf, &self.pages.frames[i].1[off..off + buf.len()]);
        Ok(())
    }

    fn read_unchecked(&self, pa: u64, buf: &mut [u8]) {
        let mut addr = pa;
        let mut done = 0;
        while done < buf.len() {
            let off = (addr & PAGE_MASK) as usize;
            let n = (PAGE_SIZE - off).min(buf.len() - done);
            let dst = &mut buf[done..done + n];
            match self.pages.get(&(addr >> PAGE_SHIFT)) {
                Some(p) => dst.copy_from_slice(&p[off..off + n]),
                None => dst.fill(0),
            }
            done += n;
            addr = addr.wrapping_add(n as u64);
        }
    }

    fn write_unchecked(&mut self, pa: u64, data: &[u8]) {
        let mut addr = pa;
        let mut done = 0;
        // The frame of a write within one page, for a hint once the write is done.
        let mut hinted = None;
        while done < data.len() {
            let off = (addr & PAGE_MASK) as usize;
            let n = (PAGE_SIZE - off).min(data.len() - done);
            let stats = &mut self.stats;
            let src = &data[done..done + n];
            if n == PAGE_SIZE {
                let pfn = addr >> PAGE_SHIFT;
                // The same bytes as the latest whole page: share it (a memcmp that stops at the first
                // difference, against an allocation and a 4 KiB copy).
                if let Some(last) = self.last_whole.as_ref().filter(|last| last[..] == *src) {
                    if self.pages.insert(pfn, Arc::clone(last)) {
                        stats.pages_materialised += 1;
                    }
                } else {
                    // Otherwise made from the data in one copy (no zeroing first), or overwritten in place (the
                    // latest whole page is replaced below anyway: let it go first so it is not copied).
                    self.last_whole = None;
                    let page = match self.pages.get_mut(&pfn) {
                        Some(slot) => {
                            match Arc::get_mut(slot) {
                                Some(page) => page.copy_from_slice(src),
                                None => {
                                    stats.cow_copies += 1;
                                    *slot = new_page(Some(src));
                                }
                            }
                            Arc::clone(slot)
                        }
                        None => {
                            stats.pages_materialised += 1;
                            let page = new_page(Some(src));
                            self.pages.insert(pfn, Arc::clone(&page));
                            page
                        }
                    };
                    self.last_whole = Some(page);
                }
                done += n;
                addr = addr.wrapping_add(n as u64);
                continue;
            }
            let (i, slot) = self.pages.get_or_insert_with(addr >> PAGE_SHIFT, || {
                stats.pages_materialised += 1;
                new_page(None)
            });
            hinted = Some((addr >> PAGE_SHIFT, i));
            // The latest whole page is about to change and no other frame shares it: let it go rather than
            // copy the page for its own sake.
            if Arc::strong_count(slot) == 2 && self.last_whole.as_ref().is_some_and(|last| Arc::ptr_eq(last, slot)) {
                self.last_whole = None;
            }
            if Arc::strong_count(slot) > 1 {
                stats.cow_copies += 1;
                *slot = new_page(Some(&slot[..]));
            }
            Arc::make_mut(slot)[off..off + n].copy_from_slice(&data[done..done + n]);
            done += n;
            addr = addr.wrapping_add(n as u64);
        }
        self.stats.writes += 1;
        self.stats.bytes_written += data.len() as u64;
        if let Some((pfn, i)) = hinted.filter(|_| data.len() < PAGE_SIZE) {
            self.hint(pfn, i);
        }
    }

    /// Remember frame `pfn` at position `i` in its hint slot, if the page is RAM throughout (a hint skips the RAM
    /// check; the RAM map never changes).
    fn hint(&mut self, pfn: u64, i: usize) {
        if self.hints.get(pfn as usize & (HINTS - 1)) == Some(&(pfn, i)) {
            return;
        }
        if pfn.checked_mul(PAGE_SIZE as u64).is_some_and(|pa| self.check_ram(pa, PAGE_SIZE).is_ok()) {
            if self.hints.is_empty() {
                self.hints = vec![(u64::MAX, 0); HINTS];
            }
            self.hints[pfn as usize & (HINTS - 1)] = (pfn, i);
        }
    }

    /// A write within one page, short of a whole one, to a page written or read recently that nothing shares:
    /// in place through the hints, without the RAM check or the map, exactly as the general path would do it (a
    /// page no snapshot and no other frame holds is written in place there too). `false`: take that path.
    #[inline]
    fn write_hinted(&mut self, pa: u64, data: &[u8]) -> bool {
        let pfn = pa >> PAGE_SHIFT;
        let off = (pa & PAGE_MASK) as usize;
        let Some(&(p, i)) = self.hints.get(pfn as usize & (HINTS - 1)) else { return false };
        if p != pfn || data.len() >= PAGE_SIZE || off + data.len() > PAGE_SIZE {
            return false;
        }
        let Some((f, page)) = self.pages.frames.get_mut(i) else { return false };
        if *f != pfn {
            return false;
        }
        let Some(page) = Arc::get_mut(page) else { return false };
        copy_small(&mut page[off..off + data.len()], data);
        self.stats.writes += 1;
        self.stats.bytes_written += data.len() as u64;
        true
    }
}

/// `dst.copy_from_slice(src)`, with the 8-byte case a single load and store rather than a call to `memcpy`.
#[inline]
fn copy_small(dst: &mut [u8], src: &[u8]) {
    match (<&mut [u8; 8]>::try_from(&mut *dst), <&[u8; 8]>::try_from(src)) {
        (Ok(d), Ok(s)) => *d = *s,
        _ => dst.copy_from_slice(src),
    }
}

std::thread_local! {
    /// Page buffers memories dropped on this thread left unshared, for the next memory here to reuse: a simulated
    /// run materialises a few hundred pages and drops them all at its end, and taking them back from the allocator
    /// each run (which returns emptied spans to the system and faults them in again) cost more than the writes.
    static SPARE: std::cell::RefCell<Vec<Arc<Page>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Spare pages kept per thread (4 MiB).
const SPARE_MAX: usize = 1024;

/// A page holding `src` (one whole page), or zeros: a spare buffer of this thread's where there is one.
fn new_page(src: Option<&[u8]>) -> Arc<Page> {
    let whole = src.is_none_or(|src| src.len() == PAGE_SIZE);
    let spare = if whole { SPARE.try_with(|s| s.try_borrow_mut().ok()?.pop()).ok().flatten() } else { None };
    if let Some(mut page) = spare {
        if let Some(buf) = Arc::get_mut(&mut page) {
            match src {
                Some(src) => buf.copy_from_slice(src),
                None => buf.fill(0),
            }
            return page;
        }
    }
    match src {
        Some(src) => page_from(src),
        None => Arc::new([0; PAGE_SIZE]),
    }
}

impl Drop for Pages {
    /// Unshared pages go to this thread's spares (up to [`SPARE_MAX`]), the rest are released.
    fn drop(&mut self) {
        let _ = SPARE.try_with(|s| {
            let Ok(mut spare) = s.try_borrow_mut() else { return };
            for (_, mut page) in self.frames.drain(..) {
                if spare.len() >= SPARE_MAX {
                    break;
                }
                if Arc::get_mut(&mut page).is_some() {
                    spare.push(page);
                }
            }
        });
    }
}

/// A shared page holding `src` (exactly one page), built with a single copy.
pub(crate) fn page_from(src: &[u8]) -> Arc<Page> {
    let shared: Arc<[u8]> = Arc::from(src);
    match shared.try_into() {
        Ok(page) => page,
        // Unreachable (`src` is one page); a page of zeros with the bytes copied keeps this total.
        Err(_) => {
            let mut page = Arc::new([0; PAGE_SIZE]);
            Arc::make_mut(&mut page).copy_from_slice(&src[..PAGE_SIZE.min(src.len())]);
            page
        }
    }
}

impl PhysMemory {
    /// The page holding all of `[pa, pa + len)` when that lies in one page of RAM and the RAM map is short (the
    /// common case: a table entry, a descriptor, on a map of a few ranges around the PCI hole): `Some(None)` for
    /// a page never written. `None`: take the general path (which also reports what is not RAM).
    #[inline]
    fn in_page(&self, pa: u64, len: usize) -> Option<Option<&Page>> {
        let off = (pa & PAGE_MASK) as usize;
        if off + len > PAGE_SIZE || self.ram.len() > SHORT_RAM_MAP {
            return None;
        }
        let end = pa.checked_add(len as u64)?;
        // Ranges are sorted and disjoint: the first one ending after `pa` is the only one that can hold it.
        let r = self.ram.iter().find(|r| pa < r.end)?;
        (r.start <= pa && end <= r.end).then(|| self.pages.get(&(pa >> PAGE_SHIFT)).map(|p| &**p))
    }
}

/// RAM maps of up to this many ranges are searched in order by the in-page fast path.
const SHORT_RAM_MAP: usize = 4;

impl PhysMemory {
    /// [`PhysMem::read`] as it was before its in-page fast path: `crate::dma::dma_read_reference`'s copy, so
    /// the benchmark's baseline stays the old path.
    #[doc(hidden)]
    pub fn read_reference(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.check_ram(pa, buf.len())?;
        self.read_unchecked(pa, buf);
        Ok(())
    }
}

impl PhysMem for PhysMemory {
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        // A table entry the driver wrote or a walk read a moment ago: through the hints.
        if self.read_hinted(pa, buf) {
            return Ok(());
        }
        if let Some(page) = self.in_page(pa, buf.len()) {
            let off = (pa & PAGE_MASK) as usize;
            match page {
                Some(p) => copy_small(buf, &p[off..off + buf.len()]),
                None => buf.fill(0),
            }
            return Ok(());
        }
        self.check_ram(pa, buf.len())?;
        self.read_unchecked(pa, buf);
        Ok(())
    }

    fn write(&mut self, pa: u64, data: &[u8]) -> Result<(), MemError> {
        if self.write_hinted(pa, data) {
            return Ok(());
        }
        self.check_ram(pa, data.len())?;
        self.write_unchecked(pa, data);
        Ok(())
    }

    /// The page itself (a page never written: the zero page), where [`PhysMem::read`] would take its in-page
    /// path; otherwise `None` and the caller reads.
    fn lend_page(&self, pa: u64) -> Option<&[u8; PAGE_SIZE]> {
        if pa & PAGE_MASK != 0 {
            return None;
        }
        Some(self.in_page(pa, PAGE_SIZE)?.unwrap_or(&ZERO_PAGE))
    }

    /// Whole pages into RAM: the first is written as [`PhysMem::write`] writes it, which leaves it the latest
    /// whole page; every later one holds the same bytes (`data` cannot change during the call), so it shares that
    /// page as a write of it would after comparing. Anything else (a partial page, a range not all RAM, which
    /// fails part way) is the plain writes.
    fn write_repeated(&mut self, pa: u64, data: &[u8], count: u64) -> Result<(), MemError> {
        let len = count.checked_mul(PAGE_SIZE as u64).and_then(|n| usize::try_from(n).ok());
        let fits = len.is_some_and(|len| self.check_ram(pa, len).is_ok());
        if count < 2 || data.len() != PAGE_SIZE || pa & PAGE_MASK != 0 || !fits {
            return iommu_platform::write_each(self, pa, data, count);
        }
        self.write_unchecked(pa, data);
        let Some(last) = self.last_whole.clone() else {
            // Unreachable: a whole-page write always leaves the latest whole page.
            let next = pa.checked_add(PAGE_SIZE as u64).ok_or(MemError { addr: pa, kind: MemErrorKind::NotRam })?;
            return iommu_platform::write_each(self, next, data, count - 1);
        };
        self.pages.reserve((count - 1) as usize);
        let first = pa >> PAGE_SHIFT;
        for pfn in first + 1..first + count {
            if self.pages.insert(pfn, Arc::clone(&last)) {
                self.stats.pages_materialised += 1;
            }
            self.stats.writes += 1;
            self.stats.bytes_written += PAGE_SIZE as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> PhysMemory {
        PhysMemory::new(vec![0x10_0000..0x20_0000, 0..0x9_f000, 0x20_0000..0x30_0000])
    }

    /// A lent page holds what a read of it fills in: written bytes, zeros for a page never written; nothing is
    /// lent off a page boundary or outside RAM, where the caller's read reports the error.
    #[test]
    fn a_lent_page_is_what_a_read_of_it_fills_in() {
        let mut m = mem();
        m.write(0x10_0ff8, &[7; 16]).unwrap();
        for pa in [0x10_0000u64, 0x10_1000, 0x20_5000] {
            let mut buf = [0xaa; PAGE_SIZE];
            m.read(pa, &mut buf).unwrap();
            assert_eq!(m.lend_page(pa), Some(&buf), "{pa:#x}");
        }
        assert_eq!(m.lend_page(0x20_5000), Some(&ZERO_PAGE));
        assert_eq!(m.lend_page(0x10_0008), None, "not page-aligned");
        assert_eq!(m.lend_page(0x9_f000), None, "not RAM");
        assert!(m.read(0x9_f000, &mut [0; PAGE_SIZE]).is_err());
    }

    #[test]
    fn ram_map_is_sorted_and_merged() {
        assert_eq!(mem().ram(), &[0..0x9_f000, 0x10_0000..0x30_0000]);
    }

    #[test]
    fn unwritten_ram_reads_zero_and_holes_fail() {
        let m = mem();
        assert_eq!(m.read_u64(0x1000).unwrap(), 0);
        assert_eq!(m.page_count(), 0);
        let e = m.read_u64(0xa_0000).unwrap_err();
        assert_eq!(e.addr, 0xa_0000);
        assert_eq!(e.kind, MemErrorKind::NotRam);
        // Straddling the end of a range names the first byte outside it.
        assert_eq!(m.read_u64(0x9_effc).unwrap_err().addr, 0x9_f000);
        assert_eq!(m.read_u64(u64::MAX - 3).unwrap_err().addr, u64::MAX - 3);
    }

    #[test]
    fn writes_span_pages_and_merged_ranges() {
        let mut m = mem();
        let data: Vec<u8> = (0..64u8).collect();
        m.write(0x1f_ffe0, &data).unwrap();
        let mut back = [0u8; 64];
        m.read(0x1f_ffe0, &mut back).unwrap();
        assert_eq!(&back[..], &data[..]);
        assert_eq!(m.page_count(), 2);
        assert_eq!(m.stats().pages_materialised, 2);
        assert_eq!(m.page(0x1ff).unwrap()[0xfe0], 0);
        assert_eq!(m.page(0x200).unwrap()[0], 32);
    }

    #[test]
    fn failed_write_changes_nothing() {
        let mut m = mem();
        assert!(m.write(0x9_eff0, &[1; 32]).is_err());
        assert_eq!(m.page_count(), 0);
        assert_eq!(m.stats().writes, 0);
    }

    #[test]
    fn snapshots_share_pages_copy_on_write() {
        let mut m = mem();
        m.write_u64(0x1000, 1).unwrap();
        m.write_u64(0x2000, 2).unwrap();
        let snap = m.snapshot();
        assert!(m.changed_pages(&snap).is_empty());
        m.write_u64(0x2000, 3).unwrap();
        m.write_u64(0x3000, 0).unwrap(); // materialised, still zeros: no change
        m.zero_page(0x1000).unwrap(); // 1 -> 0: a change
        assert_eq!(m.stats().cow_copies, 1);
        assert_eq!(m.changed_pages(&snap), vec![1, 2]);
        assert_eq!(m.changed_pages_outside(&snap, &(0x2000..0x3000)), vec![1], "page 2 is not compared");
        assert_eq!(snap.changed_pages(&m), vec![1, 2]);
        assert_eq!(snap.read_u64(0x2000).unwrap(), 2, "the snapshot kept its copy");
        assert_ne!(m.page_hash(2), snap.page_hash(2));
        assert_eq!(m.page_hash(3), m.page_hash(0x50), "zeros hash alike");
        let pfns: Vec<u64> = m.pages().map(|(p, _)| p).collect();
        assert_eq!(pfns, vec![2, 3]);
    }

    #[test]
    fn a_shared_page_write_reads_back_and_copies_on_the_next_write() {
        let mut m = mem();
        m.write_u64(0x1008, 0xabcd).unwrap();
        let page = Arc::clone(m.page_shared(1).unwrap());
        m.write_page_shared(0x2000, &page).unwrap();
        assert_eq!(m.read_u64(0x2008).unwrap(), 0xabcd);
        assert!(m.same_page(&m.snapshot(), 2));
        m.write_u64(0x2008, 1).unwrap();
        assert_eq!(m.read_u64(0x1008).unwrap(), 0xabcd, "the source page is untouched");
        assert_eq!(m.stats().cow_copies, 1);
        assert_eq!(m.write_page_shared(0xa0_0000, &page).unwrap_err().kind, MemErrorKind::NotRam, "a hole");
        assert_eq!(m.read_u64(0x1008).unwrap(), 0xabcd);
    }

    #[test]
    fn whole_page_writes_of_the_same_bytes_share_one_page_and_each_frame_stays_its_own() {
        let mut m = mem();
        let table = [0x5au8; PAGE_SIZE];
        for p in 0..4u64 {
            m.write(0x10_0000 + p * 0x1000, &table).unwrap();
        }
        assert!((1..4).all(|p| Arc::ptr_eq(m.page_shared(0x100).unwrap(), m.page_shared(0x100 + p).unwrap())));
        assert_eq!(m.stats().pages_materialised, 4);
        // A partial write to one frame changes it alone.
        m.write_u64(0x10_1008, 7).unwrap();
        m.write_u64(0x10_3010, 9).unwrap();
        assert_eq!(m.stats().cow_copies, 2, "both frames still shared the page with others");
        assert_eq!(m.read_u64(0x10_1008).unwrap(), 7);
        assert_eq!(m.read_u64(0x10_3010).unwrap(), 9);
        for (pa, want) in
            [(0x10_0008, 0x5a5a_5a5a_5a5a_5a5a), (0x10_2008, 0x5a5a_5a5a_5a5a_5a5a), (0x10_3008, 0x5a5a_5a5a_5a5a_5a5a)]
        {
            assert_eq!(m.read_u64(pa).unwrap(), want, "{pa:#x}");
        }
        // The next whole page of the old bytes still shares; one of other bytes does not, and a frame written
        // whole twice keeps only its last bytes.
        m.write(0x10_4000, &table).unwrap();
        assert!(Arc::ptr_eq(m.page_shared(0x100).unwrap(), m.page_shared(0x104).unwrap()));
        m.write(0x10_4000, &[1; PAGE_SIZE]).unwrap();
        m.write(0x10_4000, &[2; PAGE_SIZE]).unwrap();
        assert_eq!(m.read_u64(0x10_4000).unwrap(), 0x0202_0202_0202_0202);
        assert_eq!(m.read_u64(0x10_0000).unwrap(), 0x5a5a_5a5a_5a5a_5a5a);
        assert_eq!(m.stats().cow_copies, 3, "0x104 shared its page; its second write is in place");
        // A frame alone with the latest whole page is written in place, not copied for the latest's sake.
        m.write_u64(0x10_4008, 3).unwrap();
        assert_eq!(m.stats().cow_copies, 3);
        assert_eq!(m.read_u64(0x10_4008).unwrap(), 3);
        assert!(!m.same_page(&mem(), 0x100), "never-written memory reads zeros");
    }

    /// A repeated write must be indistinguishable from the plain writes it stands for: contents, sharing, stats,
    /// the latest whole page, and how far it gets when the range runs into a hole.
    #[test]
    fn a_repeated_page_write_leaves_memory_as_that_many_writes_do() {
        let mut table = [0u8; PAGE_SIZE];
        table[..8].copy_from_slice(&0x1234u64.to_le_bytes());
        // Over fresh frames, over a frame already holding other bytes, and running into the hole at 0x9_f000.
        for (pa, count) in [(0x10_0000u64, 5u64), (0x9_b000, 3), (0x9_b000, 6), (0x10_0000, 1), (0x10_0000, 0)] {
            let (mut a, mut b) = (mem(), mem());
            for m in [&mut a, &mut b] {
                m.write_u64(0x10_2010, 9).unwrap();
                m.write_u64(0x9_c010, 9).unwrap();
            }
            let got = a.write_repeated(pa, &table, count);
            let want = iommu_platform::write_each(&mut b, pa, &table, count);
            assert_eq!(got, want, "{pa:#x} x{count}");
            assert_eq!(a.stats(), b.stats(), "{pa:#x} x{count}");
            let mut pfns: Vec<u64> = a.pfns().collect();
            pfns.sort_unstable();
            assert_eq!(pfns, b.pages().map(|(p, _)| p).collect::<Vec<_>>());
            assert!(a.changed_pages(&b).is_empty(), "{pa:#x} x{count}");
            // Sharing as the plain writes share: every frame written holds the latest whole page.
            for i in 0..count {
                let pfn = (pa >> PAGE_SHIFT) + i;
                let shared = |m: &PhysMemory| {
                    m.page_shared(pfn).zip(m.last_whole.as_ref()).is_some_and(|(p, l)| Arc::ptr_eq(p, l))
                };
                assert_eq!(shared(&a), shared(&b), "{pfn:#x}");
            }
            // A later partial write changes its frame alone.
            if count > 1 && got.is_ok() {
                a.write_u64(pa + 8, 7).unwrap();
                assert_eq!(a.read_u64(pa + 8).unwrap(), 7);
                assert_eq!(a.read_u64(pa + PAGE_SIZE as u64 + 8).unwrap(), 0);
                assert_eq!(a.read_u64(pa + PAGE_SIZE as u64).unwrap(), 0x1234);
            }
        }
    }

    /// The positional shortcut must agree with the maps whatever happened to the order: removals (which move the
    /// last frame into the hole) on either side, frames added on either side, pages zeroed back to zeros.
    #[test]
    fn changed_pages_agree_with_a_page_by_page_comparison_after_removals_and_additions() {
        let mut m = mem();
        for p in 0..8u64 {
            m.write_u64(0x10_0000 + p * 0x1000, p + 1).unwrap();
        }
        let mut snap = m.snapshot();
        m.zero_page(0x10_2000).unwrap(); // the last frame moves into its position
        m.write_u64(0x10_7008, 5).unwrap(); // the moved frame changes
        m.write_u64(0x12_0000, 1).unwrap(); // a new frame here
        m.write_u64(0x13_0000, 0).unwrap(); // a new frame of zeros: no change
        snap.zero_page(0x10_5000).unwrap(); // a removal on the other side
        snap.write_u64(0x14_0000, 3).unwrap(); // a frame only the other side has
        let naive = |a: &PhysMemory, b: &PhysMemory| {
            let mut pfns: Vec<u64> = a.pfns().chain(b.pfns()).collect();
            pfns.sort_unstable();
            pfns.dedup();
            pfns.retain(|&pfn| a.page_hash(pfn) != b.page_hash(pfn));
            pfns
        };
        assert_eq!(m.changed_pages(&snap), naive(&m, &snap));
        assert_eq!(snap.changed_pages(&m), naive(&snap, &m));
        assert_eq!(m.changed_pages(&snap), vec![0x102, 0x105, 0x107, 0x120, 0x140]);
    }

    /// A write through a hint lands only in a page its frame alone holds: never in a snapshot's page, the latest
    /// whole page another frame shares, a frame moved into the hinted position, or past the end of RAM.
    #[test]
    fn writes_through_hints_reach_only_their_own_unshared_frame() {
        let mut m = mem();
        m.write_u64(0x1000, 1).unwrap();
        m.write_u64(0x1008, 2).unwrap(); // through the hint the first write left
        let snap = m.snapshot();
        m.write_u64(0x1000, 3).unwrap(); // shared with the snapshot: copied first
        m.write_u64(0x1010, 4).unwrap();
        assert_eq!((snap.read_u64(0x1000).unwrap(), snap.read_u64(0x1010).unwrap()), (1, 0), "the snapshot's page");
        assert_eq!((m.read_u64(0x1000).unwrap(), m.read_u64(0x1010).unwrap()), (3, 4));
        m.write_u64(0x41000, 65).unwrap(); // pfn 0x41 takes pfn 1's hint slot
        m.write_u64(0x2000, 5).unwrap();
        m.zero_page(0x1000).unwrap(); // the last frame moves into pfn 1's position
        m.write_u64(0x41008, 66).unwrap();
        m.write_u64(0x2008, 6).unwrap();
        assert_eq!(m.read_u64(0x1000).unwrap(), 0);
        assert_eq!((m.read_u64(0x2000).unwrap(), m.read_u64(0x2008).unwrap()), (5, 6));
        assert_eq!((m.read_u64(0x41000).unwrap(), m.read_u64(0x41008).unwrap()), (65, 66));
        // Two frames sharing the latest whole page: a small write to one copies it.
        m.write(0x3000, &[7; PAGE_SIZE]).unwrap();
        m.write(0x4000, &[7; PAGE_SIZE]).unwrap();
        m.write_u64(0x3000, 8).unwrap();
        m.write_u64(0x3008, 9).unwrap();
        assert_eq!(m.read_u64(0x4000).unwrap(), 0x0707_0707_0707_0707);
        assert_eq!((m.read_u64(0x3000).unwrap(), m.read_u64(0x3008).unwrap()), (8, 9));
        assert_eq!(m.stats().writes, 12);
        assert_eq!(m.stats().cow_copies, 2);
        // A page only partly RAM: the RAM part is written, the rest fails, however often it was written.
        let mut p = PhysMemory::contiguous(0..0x1800);
        for _ in 0..2 {
            p.write_u64(0x17f8, 5).unwrap();
            assert_eq!(p.write_u64(0x1800, 1).unwrap_err().addr, 0x1800);
            assert_eq!(p.write_u64(0x17fc, 1).unwrap_err().addr, 0x1800);
        }
        assert_eq!(p.read_u64(0x17f8).unwrap(), 5);
    }

    #[test]
    fn hinted_reads_follow_writes_removals_snapshots_and_holes() {
        let mut m = mem();
        // Both hinted reads, `read_in_page` and `read`, answer alike every time.
        let rd = |m: &mut PhysMemory, pa: u64| {
            let (mut b, mut c) = ([0u8; 8], [0u8; 8]);
            let plain = PhysMem::read(m, pa, &mut c).map(|_| u64::from_le_bytes(c));
            let in_page = m.read_in_page(pa, &mut b).map(|_| u64::from_le_bytes(b));
            assert_eq!(in_page, plain, "{pa:#x}");
            in_page
        };
        for (pa, v) in [(0x1000, 1), (0x2000, 2), (0x3000, 3), (0x41000, 65)] {
            m.write_u64(pa, v).unwrap();
        }
        assert_eq!(rd(&mut m, 0x1000), Ok(1));
        assert_eq!(rd(&mut m, 0x41000), Ok(65), "pfn 0x41 shares pfn 1's hint slot");
        assert_eq!(rd(&mut m, 0x1000), Ok(1));
        m.write_u64(0x1000, 11).unwrap();
        assert_eq!(rd(&mut m, 0x1000), Ok(11), "a write is seen");
        assert_eq!(rd(&mut m, 0x3000), Ok(3));
        // Removing pfn 1 moves the last frame into its place: neither hint may answer for the other page.
        m.zero_page(0x1000).unwrap();
        assert_eq!(rd(&mut m, 0x1000), Ok(0), "a zeroed page reads zeros");
        assert_eq!(rd(&mut m, 0x3000), Ok(3));
        assert_eq!(rd(&mut m, 0x41000), Ok(65));
        let mut snap = m.snapshot();
        m.write_u64(0x2000, 22).unwrap();
        assert_eq!(rd(&mut snap, 0x2000), Ok(2), "the snapshot keeps its copy");
        assert_eq!(rd(&mut m, 0x2000), Ok(22));
        // Holes fail as `read` does; a read across pages is `read`'s.
        assert_eq!(rd(&mut m, 0x9_eff8), Ok(0));
        assert_eq!(rd(&mut m, 0x9_f000).unwrap_err().addr, 0x9_f000);
        assert_eq!(rd(&mut m, 0x9_effc).unwrap_err().addr, 0x9_f000);
        let mut a = [0u8; 16];
        let mut b = [0u8; 16];
        m.write(0x2ff8, &[7; 16]).unwrap();
        m.read_in_page(0x2ff8, &mut a).unwrap();
        m.read(0x2ff8, &mut b).unwrap();
        assert_eq!(a, b);
        // A page only partly RAM: the RAM part reads, the rest fails, however often it was read.
        let mut p = PhysMemory::contiguous(0..0x1800);
        p.write_u64(0x17f8, 5).unwrap();
        for _ in 0..2 {
            assert_eq!(rd(&mut p, 0x17f8), Ok(5));
            assert_eq!(rd(&mut p, 0x1800).unwrap_err().addr, 0x1800);
        }
    }

    /// Pages a dropped memory leaves are reused by the next one on the thread, but never with their old bytes: a
    /// frame first written in part reads zeros elsewhere, a whole-page write reads as written, and a write to a
    /// page a snapshot shares leaves the snapshot's bytes as they were.
    #[test]
    fn reused_page_buffers_never_show_an_earlier_memorys_bytes() {
        let mut old = PhysMemory::contiguous(0..0x10_0000);
        for f in 0..64u64 {
            old.write(f << 12, &[0xaa; PAGE_SIZE]).unwrap();
            old.write((f << 12) + 8, &[f as u8; 8]).unwrap();
        }
        drop(old);
        let mut m = PhysMemory::contiguous(0..0x10_0000);
        let mut page = [0xff; PAGE_SIZE];
        for f in 0..32u64 {
            m.write((f << 12) + 16, &[1, 2, 3]).unwrap();
            m.read(f << 12, &mut page).unwrap();
            let mut want = [0u8; PAGE_SIZE];
            want[16..19].copy_from_slice(&[1, 2, 3]);
            assert_eq!(page, want, "frame {f} first written in part");
        }
        for f in 32..48u64 {
            m.write(f << 12, &[f as u8; PAGE_SIZE]).unwrap();
            m.read(f << 12, &mut page).unwrap();
            assert_eq!(page, [f as u8; PAGE_SIZE], "frame {f} written whole");
        }
        let snap = m.snapshot();
        m.write(0x1000 + 16, &[9]).unwrap();
        let (mut a, mut b) = ([0u8; PAGE_SIZE], [0u8; PAGE_SIZE]);
        snap.read(0x1000, &mut a).unwrap();
        m.read(0x1000, &mut b).unwrap();
        assert_eq!((a[16], a[17], b[16], b[17]), (1, 2, 9, 2), "copy on write keeps the snapshot's bytes");
        assert_eq!(a.iter().filter(|&&x| x != 0).count(), 3);
    }
}
