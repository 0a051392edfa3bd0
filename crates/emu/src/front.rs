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

/// Entries: a power of two.
const SLOTS: usize = 1024;

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// The generation plus one the entry was filled in (0: empty).
    tag: u64,
    rid: u32,
    write: bool,
    page: u64,
    phys_page: u64,
    hits: u8,
}

/// The front cache. `hits` is an opaque set of flags the model stores with an entry (which of its own
/// counters a hit of the full path bumps).
#[derive(Clone, Debug)]
pub struct Front {
    slots: Box<[Slot]>,
}

impl Default for Front {
    fn default() -> Self {
        Front { slots: vec![Slot::default(); SLOTS].into_boxed_slice() }
    }
}

fn index(rid: u32, page: u64) -> usize {
    let h = (page ^ (u64::from(rid) << 36)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> (64 - SLOTS.trailing_zeros())) as usize
}

impl Front {
    /// The physical address of `iova` for `rid` if an entry of generation `gen` holds its page, with the
    /// entry's flags.
    #[inline]
    pub fn get(&self, gen: u64, rid: u32, iova: u64, access: Access) -> Option<(u64, u8)> {
        let page = iova >> 12;
        let s = &self.slots[index(rid, page)];
        let write = access == Access::Write;
        // Tag 0 is an empty slot: the one generation whose tag would be 0 is never cached.
        (gen != u64::MAX && s.tag == gen.wrapping_add(1) && s.rid == rid && s.page == page && s.write == write)
            .then_some((s.phys_page << 12 | (iova & 0xfff), s.hits))
    }

    /// Remember that `iova` of `rid` translated to `phys` for `access` in generation `gen`.
    #[inline]
    pub fn put(&mut self, gen: u64, rid: u32, iova: u64, access: Access, phys: u64, hits: u8) {
        if gen == u64::MAX {
            return;
        }
        let page = iova >> 12;
        self.slots[index(rid, page)] =
            Slot { tag: gen.wrapping_add(1), rid, write: access == Access::Write, page, phys_page: phys >> 12, hits };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_answers_only_its_requester_page_access_and_generation() {
        let mut f = Front::default();
        f.put(7, 0x10, 0x1234_5678, Access::Read, 0x9_9999_9000, 3);
        assert_eq!(f.get(7, 0x10, 0x1234_5abc, Access::Read), Some((0x9_9999_9abc, 3)));
        assert_eq!(f.get(8, 0x10, 0x1234_5678, Access::Read), None, "a newer generation");
        assert_eq!(f.get(7, 0x11, 0x1234_5678, Access::Read), None, "another requester");
        assert_eq!(f.get(7, 0x10, 0x1234_5678, Access::Write), None, "a write is not a read");
        assert_eq!(f.get(7, 0x10, 0x1234_6678, Access::Read), None, "another page");
        assert_eq!(Front::default().get(u64::MAX, 0, 0, Access::Read), None, "empty slots never match");
    }
}
