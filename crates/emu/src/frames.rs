//! A page-frame allocator over one physical range: a kernel's own memory (the primary kernel's RAM, or
//! the crash kernel's reserved `crashkernel=` region). Lowest free frame first, so runs are deterministic
//! and a simulator can tell whose page an address is by the range alone.

use std::ops::Range;

const PAGE: u64 = 4096;

/// Frames of a physical range, handed out lowest address first.
#[derive(Clone, Debug)]
pub struct FrameRegion {
    /// Page-aligned (shrunk inwards) range.
    range: Range<u64>,
    /// One bit per frame, 1 = allocated.
    bitmap: Vec<u64>,
    /// No free frame below word `hint`.
    hint: usize,
    allocated: usize,
    bad_frees: u64,
}

impl FrameRegion {
    /// A region over `range`, shrunk inwards to whole 4 KiB pages. The bitmap is sized by the range,
    /// which the simulator chooses (never a guest value).
    pub fn new(range: Range<u64>) -> Self {
        let start = range.start.div_ceil(PAGE).saturating_mul(PAGE);
        let end = (range.end / PAGE) * PAGE;
        let range = if start < end { start..end } else { start..start };
        let frames = ((range.end - range.start) / PAGE) as usize;
        let mut bitmap = vec![0u64; frames.div_ceil(64)];
        // Mark the bits past the last frame as allocated so the search never returns them.
        if !frames.is_multiple_of(64) {
            if let Some(last) = bitmap.last_mut() {
                *last = !0u64 << (frames % 64);
            }
        }
        FrameRegion { range, bitmap, hint: 0, allocated: 0, bad_frees: 0 }
    }

    /// The (page-aligned) range this region hands out.
    pub fn range(&self) -> Range<u64> {
        self.range.clone()
    }

    /// Frames in the region.
    pub fn capacity(&self) -> usize {
        ((self.range.end - self.range.start) / PAGE) as usize
    }

    /// Frames currently allocated.
    pub fn allocated(&self) -> usize {
        self.allocated
    }

    /// Frees of addresses that were not allocated frames of this region (ignored).
    pub fn bad_frees(&self) -> u64 {
        self.bad_frees
    }

    /// Whether `pa` lies in this region.
    pub fn contains(&self, pa: u64) -> bool {
        self.range.contains(&pa)
    }

    /// Whether the frame holding `pa` is allocated.
    pub fn is_allocated(&self, pa: u64) -> bool {
        self.slot(pa).is_some_and(|(w, b)| self.bitmap[w] & (1 << b) != 0)
    }

    /// The lowest free frame's address, or `None` when the region is full. Zeroing the page is the
    /// platform's job (see [`crate::EmuPlatform`]).
    pub fn alloc(&mut self) -> Option<u64> {
        while self.hint < self.bitmap.len() {
            let word = self.bitmap[self.hint];
            if word != u64::MAX {
                let bit = word.trailing_ones() as usize;
                self.bitmap[self.hint] |= 1 << bit;
                self.allocated += 1;
                let index = (self.hint * 64 + bit) as u64;
                return Some(self.range.start + index * PAGE);
            }
            self.hint += 1;
        }
        None
    }

    /// The lowest run of `n` free, contiguous frames (allocated), by its first frame's address; `None` when
    /// no run that long is free or `n` is 0. The search is bounded by the region's size.
    pub fn alloc_run(&mut self, n: usize) -> Option<u64> {
        if n == 0 {
            return None;
        }
        let frames = self.capacity();
        // No free frame lies below word `hint`; whole allocated words are passed over a word at a time.
        while self.bitmap.get(self.hint).is_some_and(|&w| w == u64::MAX) {
            self.hint += 1;
        }
        let (mut start, mut len) = (self.hint * 64, 0);
        let mut i = start;
        while i < frames {
            if i % 64 == 0 && self.bitmap[i / 64] == u64::MAX {
                (start, len) = (i + 64, 0);
                i += 64;
                continue;
            }
            if self.bitmap[i / 64] & (1 << (i % 64)) != 0 {
                (start, len) = (i + 1, 0);
            } else {
                len += 1;
                if len == n {
                    for f in start..start + n {
                        self.bitmap[f / 64] |= 1 << (f % 64);
                    }
                    self.allocated += n;
                    return Some(self.range.start + start as u64 * PAGE);
                }
            }
            i += 1;
        }
        None
    }

    /// Return the frame at `pa`. Returns false (and counts a bad free) if `pa` is not an allocated,
    /// page-aligned frame of this region.
    pub fn free(&mut self, pa: u64) -> bool {
        match self.slot(pa) {
            Some((w, b)) if pa.is_multiple_of(PAGE) && self.bitmap[w] & (1 << b) != 0 => {
                self.bitmap[w] &= !(1 << b);
                self.allocated -= 1;
                self.hint = self.hint.min(w);
                true
            }
            _ => {
                self.bad_frees += 1;
                false
            }
        }
    }

    fn slot(&self, pa: u64) -> Option<(usize, usize)> {
        if !self.range.contains(&pa) {
            return None;
        }
        let index = ((pa - self.range.start) / PAGE) as usize;
        Some((index / 64, index % 64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_first_and_reuse() {
        let mut r = FrameRegion::new(0x1_0800..0x1_5000);
        assert_eq!(r.range(), 0x1_1000..0x1_5000, "shrunk to whole pages");
        assert_eq!(r.capacity(), 4);
        let a: Vec<u64> = (0..4).map(|_| r.alloc().unwrap()).collect();
        assert_eq!(a, vec![0x1_1000, 0x1_2000, 0x1_3000, 0x1_4000]);
        assert_eq!(r.alloc(), None);
        assert!(r.free(0x1_3000));
        assert!(r.free(0x1_2000));
        assert!(!r.free(0x1_2000), "double free");
        assert!(!r.free(0x1_4008), "unaligned");
        assert!(!r.free(0x9000), "outside");
        assert_eq!(r.bad_frees(), 3);
        assert_eq!(r.allocated(), 2);
        assert_eq!(r.alloc(), Some(0x1_2000));
        assert_eq!(r.alloc(), Some(0x1_3000));
        assert!(r.is_allocated(0x1_3abc));
    }

    #[test]
    fn large_and_empty_regions() {
        let mut r = FrameRegion::new(0..(130 * 4096));
        for i in 0..130 {
            assert_eq!(r.alloc(), Some(i * 4096));
        }
        assert_eq!(r.alloc(), None);
        let mut e = FrameRegion::new(0x1001..0x1fff);
        assert_eq!(e.capacity(), 0);
        assert_eq!(e.alloc(), None);
    }

    #[test]
    fn a_run_is_the_lowest_free_stretch_long_enough() {
        let mut r = FrameRegion::new(0..(100 * 4096));
        let a: Vec<u64> = (0..5).map(|_| r.alloc().unwrap()).collect();
        assert!(r.free(a[1]) && r.free(a[2]));
        assert_eq!(r.alloc_run(3), Some(5 * 4096), "the two-frame hole is too short");
        assert_eq!(r.alloc_run(2), Some(4096), "the hole fits two");
        assert_eq!(r.allocated(), 8);
        assert_eq!(r.alloc(), Some(8 * 4096));
        assert_eq!(r.alloc_run(91), Some(9 * 4096), "a run may end at the region's last frame");
        assert_eq!(r.alloc_run(1), None);
        assert_eq!(r.alloc_run(0), None);
    }
}
