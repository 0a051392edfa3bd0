//! An IOVA allocator: size-aligned ranges handed out top-down below a limit, as Linux's `alloc_iova` does
//! for DMA domains, with ranges that can be reserved (old IOVAs a device may still use, holes).

use alloc::collections::BTreeMap;

/// Allocated and reserved ranges of one domain's IOVA space.
#[derive(Clone, Debug)]
pub struct IovaAllocator {
    /// start → end (exclusive) of every allocated or reserved range; never overlapping.
    used: BTreeMap<u64, u64>,
    /// The same bytes as maximal runs: start → end of each run of touching ranges. The search walks these gaps,
    /// so the live buffers packed under the limit cost one step, not one each (Linux's `alloc_iova` starts
    /// from a cached node for the same reason).
    spans: BTreeMap<u64, u64>,
    base: u64,
    limit: u64,
}

impl IovaAllocator {
    /// Hand out IOVAs in `[base, limit)`. Linux keeps IOVA 0 unused; `base` is usually one page.
    pub fn new(base: u64, limit: u64) -> Self {
        IovaAllocator { used: BTreeMap::new(), spans: BTreeMap::new(), base, limit }
    }

    /// A domain's allocator with the platform's holes (PCI windows, MSI) reserved from the start.
    pub fn with_holes(base: u64, limit: u64, holes: &[core::ops::Range<u64>]) -> Self {
        let mut a = IovaAllocator::new(base, limit);
        for h in holes {
            a.reserve(h.start, h.end);
        }
        a
    }

    /// Whether `[start, end)` overlaps nothing used.
    fn free(&self, start: u64, end: u64) -> bool {
        match self.spans.range(..end).next_back() {
            Some((_, &e)) => e <= start,
            None => true,
        }
    }

    /// Record `[start, end)` (free until now) as used, joining it to the runs it touches. The run below it, if it
    /// touches, grows in place (the common case: top-down, a ring's next buffer goes right above the run, into the
    /// space its oldest buffer just left).
    fn insert(&mut self, start: u64, end: u64) {
        self.used.insert(start, end);
        // Free until now: at most a run starting right at its end follows, and at most one ending right at its
        // start precedes.
        let top = self.spans.remove(&end).unwrap_or(end);
        match self.spans.range_mut(..=start).next_back() {
            Some((_, pe)) if *pe == start => *pe = top,
            _ => {
                self.spans.insert(start, top);
            }
        }
    }

    /// Mark `[start, end)` used. Only the gaps are inserted: ranges already allocated keep their exact
    /// extent, so releasing one later never frees its neighbours.
    pub fn reserve(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // Ranges never overlap, so their ends ascend with their starts.
        let mut overlapping: alloc::vec::Vec<(u64, u64)> =
            self.used.range(..end).rev().take_while(|(_, &e)| e > start).map(|(&s, &e)| (s, e)).collect();
        overlapping.reverse();
        let mut cur = start;
        for (s, e) in overlapping {
            if s > cur {
                self.insert(cur, s);
            }
            cur = cur.max(e);
        }
        if cur < end {
            self.insert(cur, end);
        }
    }

    /// A free range of `size` bytes (a multiple of 4 KiB), aligned to `size` rounded up to a power of two,
    /// as high as possible below the limit.
    pub fn alloc(&mut self, size: u64) -> Option<u64> {
        if size == 0 || !size.is_multiple_of(4096) {
            return None;
        }
        let align = size.checked_next_power_of_two()?;
        // Walk the gaps between runs from the top down: the first that holds an aligned range holds the highest.
        let mut top = self.limit;
        let mut iter = self.spans.range(..self.limit).rev();
        loop {
            let (gap_start, next_top) = match iter.next() {
                Some((&s, &e)) => (e.max(self.base), Some(s)),
                None => (self.base, None),
            };
            if top >= size {
                let start = (top - size) & !(align - 1);
                if start >= gap_start && start + size <= top {
                    self.insert(start, start + size);
                    return Some(start);
                }
            }
            top = next_top?;
        }
    }

    /// Release the range starting at `start` (exactly as allocated).
    pub fn release(&mut self, start: u64) -> bool {
        let Some(end) = self.used.remove(&start) else { return false };
        // The run holding it splits around it: the part below keeps the run's key and shrinks in place.
        let Some((&rs, re)) = self.spans.range_mut(..=start).next_back() else { return true };
        let run_end = *re;
        if rs < start {
            *re = start;
        } else {
            self.spans.remove(&rs);
        }
        if end < run_end {
            self.spans.insert(end, run_end);
        }
        true
    }

    /// Whether the byte at `iova` lies in an allocated or reserved range: an old IOVA a device may still use
    /// must not be handed out again.
    pub fn is_used(&self, iova: u64) -> bool {
        !self.free(iova, iova + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_down_and_size_aligned() {
        let mut a = IovaAllocator::new(0x1000, 1 << 32);
        assert_eq!(a.alloc(0x1000), Some(0xffff_f000));
        // 12 KiB is aligned to 16 KiB: the highest such start below 0xffff_f000 that fits.
        assert_eq!(a.alloc(0x3000), Some(0xffff_c000));
        let c = a.alloc(0x20_0000).unwrap();
        assert_eq!(c % 0x20_0000, 0);
        assert!(c < 0xffff_0000);
        assert!(a.release(0xffff_f000));
        assert_eq!(a.alloc(0x1000), Some(0xffff_f000));
    }

    #[test]
    fn reserving_over_allocations_keeps_them_releasable() {
        let mut a = IovaAllocator::new(0x1000, 0x10_0000);
        let x = a.alloc(0x1000).unwrap();
        let y = a.alloc(0x1000).unwrap();
        // Reserving an allocated range again (a map at a chosen IOVA) or one spanning both changes nothing
        // about them...
        a.reserve(x, x + 0x1000);
        a.reserve(y, x + 0x1000);
        // ... so releasing one frees exactly it.
        assert!(a.release(x));
        assert!(!a.is_used(x) && a.is_used(y));
        assert_eq!(a.alloc(0x1000), Some(x));
        // A reservation straddling an allocation fills the gaps around it.
        let mut b = IovaAllocator::new(0x1000, 0x10_0000);
        let z = b.alloc(0x1000).unwrap();
        b.reserve(z - 0x2000, z + 0x1000);
        assert!(b.is_used(z - 0x2000) && b.is_used(z - 0x1000));
        assert!(b.release(z));
        assert!(b.is_used(z - 0x1000), "the reservation stays");
    }

    #[test]
    fn reservations_are_avoided() {
        let mut a = IovaAllocator::new(0x1000, 0x10_0000);
        a.reserve(0xf_0000, 0x10_0000);
        a.reserve(0xe_8000, 0xf_1000);
        assert!(a.is_used(0xe_8000) && a.is_used(0xf_ffff) && !a.is_used(0xe_7fff));
        assert_eq!(a.alloc(0x1000), Some(0xe_7000));
        // Fill the rest: every page below gets used exactly once, then nothing is left.
        let mut n = 0;
        while a.alloc(0x1000).is_some() {
            n += 1;
        }
        assert_eq!(n, (0xe_7000 - 0x1000) / 0x1000);
        assert_eq!(a.alloc(0x1000), None);
    }

    /// The search before runs were kept: every allocated range its own step, each candidate checked against
    /// the ranges. What the allocator hands out must be exactly what this would.
    struct GapWalk {
        used: BTreeMap<u64, u64>,
        base: u64,
        limit: u64,
    }

    impl GapWalk {
        fn free(&self, start: u64, end: u64) -> bool {
            self.used.range(..end).next_back().is_none_or(|(_, &e)| e <= start)
        }
        fn alloc(&mut self, size: u64) -> Option<u64> {
            if size == 0 || !size.is_multiple_of(4096) {
                return None;
            }
            let align = size.checked_next_power_of_two()?;
            let mut top = self.limit;
            let mut iter = self.used.range(..self.limit).rev();
            loop {
                let (gap_start, next_top) = match iter.next() {
                    Some((&s, &e)) => (e.max(self.base), Some(s)),
                    None => (self.base, None),
                };
                if top >= size {
                    let start = (top - size) & !(align - 1);
                    if start >= gap_start && start + size <= top && self.free(start, start + size) {
                        self.used.insert(start, start + size);
                        return Some(start);
                    }
                }
                top = next_top?;
            }
        }
    }

    proptest::proptest! {
        /// Allocations, releases and reservations in any order: the same IOVAs as the plain gap walk, and the
        /// runs cover exactly the bytes the ranges do.
        #[test]
        fn runs_hand_out_what_the_plain_gap_walk_does(
            ops in proptest::collection::vec((0u8..5, 1u64..6, 0u64..66), 1..200),
        ) {
            let (base, limit) = (0x1000, 0x40_0000);
            let mut a = IovaAllocator::new(base, limit);
            let mut live: alloc::vec::Vec<u64> = alloc::vec::Vec::new();
            for (op, pages, at) in ops {
                match op {
                    0 | 1 => {
                        let mut walk = GapWalk { used: a.used.clone(), base, limit };
                        let want = walk.alloc(pages * 0x1000);
                        proptest::prop_assert_eq!(a.alloc(pages * 0x1000), want);
                        live.extend(want);
                    }
                    2 if !live.is_empty() => {
                        let i = (at as usize) % live.len();
                        proptest::prop_assert!(a.release(live.swap_remove(i)));
                    }
                    // A piece of a reservation (or an allocation) released by its start.
                    3 if !a.used.is_empty() => {
                        let start = *a.used.keys().nth((at as usize) % a.used.len()).unwrap_or(&0);
                        proptest::prop_assert!(a.release(start));
                        live.retain(|&x| x != start);
                    }
                    // Up to past the limit.
                    _ => a.reserve(at * 0x10000, at * 0x10000 + pages * 0x3000),
                }
                // Runs: disjoint, not touching, and covering exactly the used bytes.
                let mut runs = a.spans.iter().peekable();
                while let Some((&s, &e)) = runs.next() {
                    proptest::prop_assert!(s < e);
                    if let Some((&ns, _)) = runs.peek() {
                        proptest::prop_assert!(e < ns, "runs {s:#x}..{e:#x} and {ns:#x} touch");
                    }
                }
                let mut joined: alloc::vec::Vec<(u64, u64)> = alloc::vec::Vec::new();
                for (&s, &e) in &a.used {
                    match joined.last_mut() {
                        Some(last) if last.1 == s => last.1 = e,
                        _ => joined.push((s, e)),
                    }
                }
                let runs: alloc::vec::Vec<(u64, u64)> = a.spans.iter().map(|(&s, &e)| (s, e)).collect();
                proptest::prop_assert_eq!(runs, joined);
            }
        }
    }
}
