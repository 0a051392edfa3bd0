//! A direct-mapped front cache of recent translations, in front of a model's own caches: a hit is one array
//! probe instead of the context-cache and IOTLB lookups behind it.
//!
//! It may only answer what the caches behind it would answer. Each entry carries the generation of those
//! caches when it was filled, and the model bumps that generation on everything that may remove a cached
//! entry or change how a request is handled without the caches seeing it (an invalidation, a register
//! write, caching turned off): an entry of an older generation is never used. Only successful translations
//! are kept, per requester, page and access, so faults are always found (and recorded) by the full path. A
//! hit replays the counters the full path would have bumped, so statistics do not depend on the front.

use crate::dma::Access;

/// A model's entries: a power of two.
pub const SLOTS: usize = 1024;

/// One entry, 32 bytes: two to a cache line.
#[derive(Clone, Copy, Debug)]
struct Slot {
    /// The generation the entry was filled in.
    gen: u64,
    /// `rid << 1 | write`; `EMPTY` in a slot never filled, which no requester and access give.
    key: u64,
    page: u64,
    /// The physical page's address with the flags in the low 12 bits.
    phys: u64,
}

const EMPTY: u64 = u64::MAX;

/// The front cache of `N` entries (a power of two). `hits` is an opaque set of flags the model stores with an
/// entry (which of its own counters a hit of the full path bumps).
#[derive(Clone, Debug)]
pub struct Front<const N: usize = SLOTS> {
    slots: Box<[Slot; N]>,
    /// Nothing is put while off (the benchmark's baseline: the model's own caches as they answered before the
    /// front existed); the hit path does not look at it, an empty front just never hits.
    off: bool,
}

const EMPTY_SLOT: Slot = Slot { gen: 0, key: EMPTY, page: 0, phys: 0 };

impl<const N: usize> Default for Front<N> {
    fn default() -> Self {
        const { assert!(N.is_power_of_two() && N > 1) };
        // Filled on the heap: a large front would not fit a thread's stack on the way.
        let slots = vec![EMPTY_SLOT; N].into_boxed_slice().try_into().unwrap_or_else(|_| unreachable!());
        Front { slots, off: false }
    }
}

/// The slot of `page` of `rid` among `N`: Fibonacci hashing, which spreads a run of consecutive pages (a DMA
/// buffer) evenly; with 1024 or 8192 slots a run half as long takes distinct slots (tested) unless its page numbers
/// cross a multiple of 2^36 (IOVAs at 2^48), where the requester's bits are mixed in: slower there, never wrong.
#[inline]
fn index<const N: usize>(rid: u32, page: u64) -> usize {
    let h = (page ^ (u64::from(rid) << 36)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> (64 - N.trailing_zeros())) as usize
}

#[inline]
fn key(rid: u32, access: Access) -> u64 {
    u64::from(rid) << 1 | u64::from(access == Access::Write)
}

impl<const N: usize> Front<N> {
    /// The physical address of `iova` for `rid` if an entry of generation `gen` holds its page, with the
    /// entry's flags.
    #[inline]
    pub fn get(&self, gen: u64, rid: u32, iova: u64, access: Access) -> Option<(u64, u8)> {
        let page = iova >> 12;
        // A fixed-size array and a shifted hash: the index needs no bounds check.
        let s = &self.slots[index::<N>(rid, page)];
        (s.gen == gen && s.key == key(rid, access) && s.page == page)
            .then_some(((s.phys & !0xfff) | (iova & 0xfff), s.phys as u8))
    }

    /// Turn the front on or off; off empties it, so every request takes the model's full path.
    pub fn set_enabled(&mut self, on: bool) {
        self.off = !on;
        if !on {
            self.slots.fill(EMPTY_SLOT);
        }
    }

    /// Remember that `iova` of `rid` translated to `phys` for `access` in generation `gen`.
    #[inline]
    pub fn put(&mut self, gen: u64, rid: u32, iova: u64, access: Access, phys: u64, hits: u8) {
        if self.off {
            return;
        }
        let page = iova >> 12;
        self.slots[index::<N>(rid, page)] =
            Slot { gen, key: key(rid, access), page, phys: (phys & !0xfff) | u64::from(hits) };
    }
}

/// A model's counters, into which front-cache hits fold as the full path would have counted them.
pub trait FoldHits: Copy + Default {
    /// Count `n` hits of a front entry with flags `hits` (which of the model's caches the full path would hit).
    fn fold_hits(&mut self, hits: u8, n: u64);
}

/// Front-cache hits by the flags of the entry that answered: one increment per hit, so the hit path bumps one
/// counter rather than each of the model's; the model folds the tally into its counters when they are read.
#[derive(Clone, Debug, Default)]
pub struct HitTally {
    counts: [u64; 32],
    /// How often [`HitTally::reset`] ran: a model's counters were zeroed that often.
    resets: u64,
}

impl HitTally {
    /// Count `n` hits of an entry with flags `hits` (the low five bits).
    #[inline(always)]
    pub fn add(&mut self, hits: u8, n: u64) {
        self.counts[usize::from(hits) & 31] += n;
    }

    /// `(flags, hits)` for every flag set that answered.
    pub fn counts(&self) -> impl Iterator<Item = (u8, u64)> + '_ {
        self.counts.iter().enumerate().filter(|(_, &n)| n != 0).map(|(h, &n)| (h as u8, n))
    }

    /// `counters` with every hit of the tally folded in: what the model's counters read.
    pub fn folded<C: FoldHits>(&self, mut counters: C) -> C {
        for (hits, n) in self.counts() {
            counters.fold_hits(hits, n);
        }
        counters
    }

    /// Zero a model's `counters` and forget every hit, counting the reset.
    pub fn reset_with<C: FoldHits>(&mut self, counters: &mut C) {
        *counters = C::default();
        self.counts = [0; 32];
        self.resets += 1;
    }

    /// How often the tally was reset ([`HitTally::reset_with`]): a [`crate::shared::Lane`] drops hits counted
    /// before a reset it did not see.
    pub fn resets(&self) -> u64 {
        self.resets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_answers_only_its_requester_page_access_and_generation() {
        let mut f = Front::<SLOTS>::default();
        f.put(7, 0x10, 0x1234_5678, Access::Read, 0x9_9999_9000, 3);
        assert_eq!(f.get(7, 0x10, 0x1234_5abc, Access::Read), Some((0x9_9999_9abc, 3)));
        assert_eq!(f.get(8, 0x10, 0x1234_5678, Access::Read), None, "a newer generation");
        assert_eq!(f.get(7, 0x11, 0x1234_5678, Access::Read), None, "another requester");
        assert_eq!(f.get(7, 0x10, 0x1234_5678, Access::Write), None, "a write is not a read");
        assert_eq!(f.get(7, 0x10, 0x1234_6678, Access::Read), None, "another page");
        for gen in [0, u64::MAX] {
            assert_eq!(Front::<SLOTS>::default().get(gen, 0, 0, Access::Read), None, "empty slots never match");
        }
    }

    /// A device streaming through a buffer of consecutive pages half as many as the slots keeps all of them:
    /// no page of the run evicts another, wherever below page 2^36 the run starts and whoever the requester.
    #[test]
    fn a_run_of_consecutive_pages_half_the_slots_long_fills_distinct_slots() {
        fn check<const N: usize>() {
            for (rid, first) in [(0u32, 0u64), (0x10, 0xf_ffff - 4096), (0xffff, 0x3_4567_89ab), (0x0100, 1 << 35)] {
                let mut f = Front::<N>::default();
                for p in first..first + N as u64 / 2 {
                    f.put(1, rid, p << 12, Access::Read, p << 12, 0);
                }
                for p in first..first + N as u64 / 2 {
                    assert_eq!(f.get(1, rid, p << 12, Access::Read), Some((p << 12, 0)), "{N} slots, page {p:#x}");
                }
            }
        }
        check::<SLOTS>();
        check::<{ crate::shared::LANE_SLOTS }>();
    }
}
