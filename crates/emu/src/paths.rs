//! Directory-path caches: what each model keeps of the upper levels of its walks (VT-d paging-structure caches,
//! spec 6.2.5; AMD-Vi page-directory entries, spec 2.4.3; SMMUv3 walk caches, IHI 0070 16.2).
//!
//! Per tag (a domain, an ASID) and 2 MiB of input address, a path holds where a walk found the last-level table
//! and what the entries above it allowed, so a walk that hits it reads only the leaf. A path leaves only when an
//! invalidation removes it: one of its tag that covers its 2 MiB, or all of the tag's, never because memory changed.
//! Dropping only the paths whose 2 MiB meets an invalidated range is the least a unit may drop (the entries above a
//! path cover more than its 2 MiB, but software that changes one must invalidate every address it maps), so a
//! driver that frees a table and invalidates too small a range keeps walking the old one here, as hardware may.
//!
//! Bounded whatever the tables say: a tag keeps [`PATHS_PER_TAG`] paths (full, it starts over) and the cache
//! [`TAGS`] tags (full, it empties: hardware may drop cached entries at any time).

use std::hash::Hash;

use crate::hash::FastMap;

/// Paths one tag keeps: a short list searched in turn (a device's buffers sit in a few 2 MiB regions).
const PATHS_PER_TAG: usize = 16;

/// Tags the cache keeps paths for.
const TAGS: usize = 1024;

/// Bits of input address one path covers.
const REGION_SHIFT: u32 = 21;

/// Paths by tag: `P` is what a model keeps of one (the table's address, the permissions above it, its kind).
#[derive(Clone, Debug)]
pub(crate) struct PathCache<K, P> {
    tags: FastMap<K, Vec<(u64, P)>>,
}

impl<K, P> Default for PathCache<K, P> {
    fn default() -> Self {
        PathCache { tags: FastMap::default() }
    }
}

impl<K: Copy + Eq + Hash, P: Copy> PathCache<K, P> {
    /// The path of `tag` for the 2 MiB holding `va` that `fits` (a path of the walk's own kind).
    pub fn get(&self, tag: K, va: u64, fits: impl Fn(&P) -> bool) -> Option<P> {
        let region = va >> REGION_SHIFT;
        self.tags.get(&tag)?.iter().find(|(r, p)| *r == region && fits(p)).map(|&(_, p)| p)
    }

    /// Remember `path` for the 2 MiB holding `va`.
    pub fn put(&mut self, tag: K, va: u64, path: P) {
        if self.tags.len() >= TAGS && !self.tags.contains_key(&tag) {
            self.tags.clear();
        }
        let list = self.tags.entry(tag).or_default();
        if list.len() >= PATHS_PER_TAG {
            list.clear();
        }
        list.push((va >> REGION_SHIFT, path));
    }

    /// Drop the paths `which` selects of every tag `hit` selects. Emptied lists keep their room for the tag's next
    /// walk (the tags are bounded).
    pub fn drop_tags(&mut self, hit: impl Fn(&K) -> bool, which: impl Fn(&P) -> bool) {
        for (tag, list) in self.tags.iter_mut() {
            if hit(tag) {
                list.retain(|(_, p)| !which(p));
            }
        }
    }

    /// [`PathCache::drop_tags`] of the paths whose 2 MiB meets `[first, last]`.
    pub fn drop_range(&mut self, hit: impl Fn(&K) -> bool, first: u64, last: u64, which: impl Fn(&P) -> bool) {
        for (tag, list) in self.tags.iter_mut() {
            if hit(tag) {
                drop_in(list, first, last, &which);
            }
        }
    }

    /// [`PathCache::drop_range`] of one tag (found, not searched for).
    pub fn drop_range_of(&mut self, tag: K, first: u64, last: u64, which: impl Fn(&P) -> bool) {
        if let Some(list) = self.tags.get_mut(&tag) {
            drop_in(list, first, last, &which);
        }
    }

    /// Drop every path.
    pub fn clear(&mut self) {
        self.tags.clear();
    }

    /// Paths held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.tags.values().map(Vec::len).sum()
    }
}

/// Drop from `list` the paths `which` selects whose 2 MiB meets `[first, last]` (either order).
fn drop_in<P>(list: &mut Vec<(u64, P)>, first: u64, last: u64, which: impl Fn(&P) -> bool) {
    let (lo, hi) = (first.min(last) >> REGION_SHIFT, first.max(last) >> REGION_SHIFT);
    list.retain(|(r, p)| !((lo..=hi).contains(r) && which(p)));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A range drops exactly the paths whose 2 MiB it meets, of the tags it names.
    #[test]
    fn a_range_drops_the_paths_whose_two_mib_it_meets() {
        let mut c: PathCache<u16, u64> = PathCache::default();
        for (tag, va) in [(1, 0), (1, 0x20_0000), (1, 0x40_0000), (2, 0x20_0000)] {
            c.put(tag, va, va | u64::from(tag));
        }
        // Two pages astride the boundary of the second and third 2 MiB.
        c.drop_range(|&t| t == 1, 0x3f_f000, 0x40_0fff, |_| true);
        assert_eq!(c.get(1, 0x1f_ffff, |_| true), Some(1));
        assert_eq!((c.get(1, 0x20_0000, |_| true), c.get(1, 0x40_0000, |_| true)), (None, None));
        assert_eq!(c.get(2, 0x20_0000, |_| true), Some(0x20_0002), "another tag");
        c.drop_tags(|&t| t == 2, |_| true);
        assert_eq!((c.len(), c.get(2, 0x20_0000, |_| true)), (1, None));
        c.drop_range_of(1, 0, 0, |_| true);
        assert_eq!(c.len(), 0, "one tag's range");
        c.put(1, 0, 1);
        c.put(2, 0x20_0000, 7);
        c.drop_range(|_| true, u64::MAX, 0, |&p| p == 1);
        assert_eq!(
            (c.len(), c.get(2, 0x20_0000, |_| true)),
            (1, Some(7)),
            "backwards is the same range; `which` filters"
        );
    }

    /// However many tags and regions a walker is shown, the cache stays within its bounds.
    #[test]
    fn the_cache_stays_bounded_whatever_it_is_fed() {
        let mut c: PathCache<u32, ()> = PathCache::default();
        for tag in 0..5000u32 {
            for r in 0..40u64 {
                c.put(tag, r << REGION_SHIFT, ());
            }
        }
        assert!(c.tags.len() <= TAGS && c.len() <= TAGS * PATHS_PER_TAG);
    }
}
