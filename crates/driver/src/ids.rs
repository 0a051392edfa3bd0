//! Bitmap allocators for hardware IDs (VT-d domain IDs, AMD domain IDs, SMMUv3 ASIDs/VMIDs).

use alloc::vec;
use alloc::vec::Vec;

/// IDs `0..count`, some reserved, allocated lowest first.
#[derive(Clone, Debug)]
pub struct IdAllocator {
    bits: Vec<u64>,
    count: u32,
    first: u32,
}

impl IdAllocator {
    /// `count` IDs (at most 2^20: a hardware field's range, never a number from memory), allocation
    /// starting at `first` (IDs below it are never handed out: VT-d's DID 0 and 1).
    pub fn new(count: u32, first: u32) -> Self {
        let count = count.min(1 << 20);
        IdAllocator { bits: vec![0; count.div_ceil(64) as usize], count, first }
    }

    /// IDs the hardware field has, as clamped by [`IdAllocator::new`].
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether `id` is taken (allocated or reserved); out-of-range IDs are not.
    pub fn is_used(&self, id: u32) -> bool {
        id < self.count && self.bits[(id / 64) as usize] & (1 << (id % 64)) != 0
    }

    /// Mark `id` as taken (an ID found in the crashed kernel's tables). Out-of-range IDs are ignored and
    /// reported as `false`.
    pub fn reserve(&mut self, id: u32) -> bool {
        if id >= self.count {
            return false;
        }
        self.bits[(id / 64) as usize] |= 1 << (id % 64);
        true
    }

    /// The lowest free ID at or above `first`, now taken; `None` when every one is.
    pub fn alloc(&mut self) -> Option<u32> {
        let start = self.first / 64;
        for w in start as usize..self.bits.len() {
            let mut free = !self.bits[w];
            if w as u32 == start {
                free &= u64::MAX << (self.first % 64);
            }
            if free != 0 {
                let id = w as u32 * 64 + free.trailing_zeros();
                if id >= self.count {
                    return None;
                }
                self.bits[w] |= 1 << (id % 64);
                return Some(id);
            }
        }
        None
    }

    /// Give `id` back (a domain freed); reserved low IDs and out-of-range IDs are left alone.
    pub fn free(&mut self, id: u32) {
        if id < self.count && id >= self.first {
            self.bits[(id / 64) as usize] &= !(1 << (id % 64));
        }
    }

    /// IDs taken, reserved ones included.
    pub fn used(&self) -> u32 {
        self.bits.iter().map(|w| w.count_ones()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_from_first_and_skips_reserved() {
        let mut a = IdAllocator::new(256, 2);
        assert!(a.reserve(2));
        assert!(a.reserve(3));
        assert!(!a.reserve(256));
        assert_eq!(a.alloc(), Some(4));
        assert_eq!(a.alloc(), Some(5));
        a.free(4);
        assert_eq!(a.alloc(), Some(4));
        a.free(0);
        assert!(!a.is_used(0));
    }

    #[test]
    fn exhausts_exactly() {
        let mut a = IdAllocator::new(70, 2);
        let got: alloc::vec::Vec<_> = core::iter::from_fn(|| a.alloc()).collect();
        assert_eq!(got.len(), 68);
        assert_eq!(got.last(), Some(&69));
        assert_eq!(a.used(), 68);
    }
}
