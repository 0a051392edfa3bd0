//! The unit's translation caches (spec 6.1–6.5): a context cache by source ID, a PASID cache by
//! (source ID, PASID), an IOTLB by domain and paging-structure caches by domain.
//!
//! Entries leave only through invalidations (or capacity eviction of the IOTLB, which the spec allows
//! at any time), never because the tables in memory changed: a driver that edits a table and forgets
//! the flush keeps translating through the old entry, as on hardware. A translation that faults is not
//! cached (the model behaves as CAP.CM = 0 even when configured otherwise, which CM permits), though the
//! directory part of a walk that faults at the leaf is: those entries were present and valid.
//!
//! IOTLB entries are tagged with the domain ID alone, also in scalable mode: PGTT = 2 translations of one
//! DID share the DID's second-level table (spec 6.2.1), so a PASID-based IOTLB invalidation of that DID
//! drops them too, a superset of what the spec requires of it, which hardware may always do. First-level
//! entries (PGTT = 1) are marked: in scalable mode an IOTLB invalidation that is not PASID-based (domain-
//! or page-selective, descriptor type 2 or the IOTLB register) invalidates only second-level and
//! pass-through mappings, so first-level ones survive it (spec 6.5.2.3, 6.5.2.4; Linux flushes first-level
//! domains with `qi_flush_piotlb` for that reason). Only a global IOTLB invalidation or a PASID-based one
//! removes them.
//!
//! The paging-structure caches (spec 6.2.5) hold, per DID and 2 MiB of input address, where a walk found the
//! level-1 table and the permissions of the entries above it: a walk that hits them reads only the leaf
//! (`crate::paths`). A page-selective invalidation removes the domain's paths whose 2 MiB meets its range, unless
//! IH = 1, the hint that software changed only leaf entries (spec 6.5.2.3: hardware may then keep its
//! paging-structure caches; Linux sets IH when an unmap freed no page-table page, `intel_iommu_tlb_sync`); domain-
//! selective and global ones remove all of them, with the same first-level rule as the IOTLB's. First-level paths
//! are tagged by DID alone like the IOTLB's entries: requests without PASID use the context's RID_PASID only. A
//! driver that frees or edits a directory table and invalidates with IH = 1, or too small a range, keeps walking
//! the old one, as on hardware.

use iommu_spec::vtd::level_size;

use crate::hash::FastMap;
use crate::paths::PathCache;

/// How a device's untranslated requests are handled once its context (and PASID entry) is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// Requests go to the same physical address.
    PassThrough,
    /// Requests walk a second-level table.
    SecondLevel { root: u64, levels: u32 },
    /// Requests walk a first-level (x86-64 format) table (PASID entry PGTT = 001).
    FirstLevel { root: u64, levels: u32 },
}

/// A cached context entry, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CtxEntry {
    /// Legacy mode (spec 9.3): the context entry decides everything.
    Legacy { did: u16, fpd: bool, mode: Mode },
    /// Scalable mode (spec 9.4): requests without PASID go through the PASID entry of `rid_pasid`.
    Scalable { fpd: bool, pasid_dir: u64, rid_pasid: u32 },
}

/// A cached PASID-table entry, decoded (spec 9.6), with the FPD of everything above it folded in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PasidEntryState {
    pub did: u16,
    pub fpd: bool,
    pub mode: Mode,
}

/// A cached translation: the page (of `level`'s size) and the permissions ANDed along the walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct IotlbEntry {
    /// Physical base of the page.
    pub phys: u64,
    /// 1 = 4 KiB, 2 = 2 MiB, 3 = 1 GiB.
    pub level: u32,
    pub r: bool,
    pub w: bool,
    /// From a first-level walk (see the module comment on which invalidations remove it).
    pub first_level: bool,
    /// First level: the leaf's D flag was set when the entry was cached. A write through an entry without
    /// it walks again so that D gets set (spec 3.6.2 / 9.7: D is set before the first write). Always true
    /// for second-level entries, which have no D flag unless SSADE.
    pub dirty: bool,
}

/// A walk's directory part: the level-1 table it reached and the permissions ANDed over the entries above it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PscEntry {
    /// Physical address of the level-1 table.
    pub table: u64,
    pub r: bool,
    pub w: bool,
    /// From a first-level walk (kept by invalidations that keep first-level IOTLB entries).
    pub first_level: bool,
}

/// The caches.
#[derive(Clone, Debug)]
pub(super) struct Caches {
    enabled: bool,
    context: FastMap<u16, CtxEntry>,
    pasid: FastMap<(u16, u32), PasidEntryState>,
    /// Per DID: (level, IOVA >> page shift of that level) -> entry.
    iotlb: FastMap<u16, FastMap<(u32, u64), IotlbEntry>>,
    iotlb_len: usize,
    iotlb_capacity: usize,
    /// Paging-structure entries by DID.
    psc: PathCache<u16, PscEntry>,
    /// Bumped by everything that may remove an entry or turn caching off: what the model's translation
    /// front cache (`super::front`) checks before it answers.
    gen: u64,
}

/// Page shift of a level-`level` page.
fn shift(level: u32) -> u32 {
    12 + 9 * (level - 1)
}

impl Caches {
    pub fn new(iotlb_capacity: usize) -> Self {
        Caches {
            enabled: true,
            context: FastMap::default(),
            pasid: FastMap::default(),
            iotlb: FastMap::default(),
            iotlb_len: 0,
            iotlb_capacity: iotlb_capacity.max(1),
            psc: PathCache::default(),
            gen: 0,
        }
    }

    /// The generation: it changes whenever any entry may have gone.
    pub fn gen(&self) -> u64 {
        self.gen
    }

    /// A change the caches do not see (a register write the unit acts on): what was answered before may not
    /// be answered again without a look.
    pub fn bump(&mut self) {
        self.gen = self.gen.wrapping_add(1);
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn set_enabled(&mut self, on: bool) {
        self.bump();
        self.enabled = on;
        self.invalidate_all();
    }

    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.iotlb_len, self.context.len(), self.pasid.len())
    }

    pub fn invalidate_all(&mut self) {
        self.bump();
        self.context_global();
        self.pasid_global();
        self.iotlb_global();
    }

    // ---- context cache ----

    pub fn context_get(&self, sid: u16) -> Option<CtxEntry> {
        self.context.get(&sid).copied()
    }

    pub fn context_peek(&self, sid: u16) -> bool {
        self.context.contains_key(&sid)
    }

    pub fn context_put(&mut self, sid: u16, e: CtxEntry) {
        if self.enabled {
            self.context.insert(sid, e);
        }
    }

    pub fn context_global(&mut self) {
        self.bump();
        self.context.clear();
    }

    /// Domain-selective (spec 6.5.1.1): legacy entries of `did`. Scalable-mode context entries carry
    /// no DID, so they all go (a superset the spec allows).
    pub fn context_domain(&mut self, did: u16) {
        self.bump();
        self.context.retain(|_, e| match e {
            CtxEntry::Legacy { did: d, .. } => *d != did,
            CtxEntry::Scalable { .. } => false,
        });
    }

    /// Device-selective with function mask `fm` (spec 6.5.2.1): FM 1, 2, 3 ignore SID bit 2, bits 2:1
    /// or bits 2:0 (QEMU `vtd_context_device_invalidate`). The DID in the request is not compared:
    /// Linux passes the context's legacy DID bits even in scalable mode, where they mean nothing.
    pub fn context_device(&mut self, sid: u16, fm: u8) {
        self.bump();
        let ignored: u16 = match fm & 3 {
            0 => 0,
            1 => 0b100,
            2 => 0b110,
            _ => 0b111,
        };
        self.context.retain(|s, _| (s ^ sid) & !ignored != 0);
    }

    // ---- PASID cache ----

    pub fn pasid_get(&self, sid: u16, pasid: u32) -> Option<PasidEntryState> {
        self.pasid.get(&(sid, pasid)).copied()
    }

    pub fn pasid_put(&mut self, sid: u16, pasid: u32, e: PasidEntryState) {
        if self.enabled {
            self.pasid.insert((sid, pasid), e);
        }
    }

    pub fn pasid_global(&mut self) {
        self.bump();
        self.pasid.clear();
    }

    /// Every PASID entry cached for `sid` (a unit may drop any cached entry at any time).
    pub fn pasid_device(&mut self, sid: u16) {
        self.bump();
        self.pasid.retain(|(s, _), _| *s != sid);
    }

    /// All PASIDs of `did`, or just `pasid` of it.
    pub fn pasid_domain(&mut self, did: u16, pasid: Option<u32>) {
        self.bump();
        self.pasid.retain(|(_, p), e| !(e.did == did && pasid.is_none_or(|want| *p == want)));
    }

    // ---- IOTLB ----

    /// The entry covering `iova` in domain `did`, trying 4 KiB, 2 MiB and 1 GiB pages in turn.
    pub fn iotlb_get(&self, did: u16, iova: u64) -> Option<IotlbEntry> {
        let dom = self.iotlb.get(&did)?;
        (1..=3).find_map(|level| dom.get(&(level, iova >> shift(level))).copied())
    }

    pub fn iotlb_peek(&self, did: u16, iova: u64) -> Option<u64> {
        self.iotlb_get(did, iova).map(|e| e.phys + (iova & (level_size(e.level) - 1)))
    }

    pub fn iotlb_put(&mut self, did: u16, iova: u64, e: IotlbEntry) {
        if !self.enabled || !(1..=3).contains(&e.level) {
            return;
        }
        if self.iotlb_len >= self.iotlb_capacity {
            // Out of room: evict everything. Hardware may drop any entry at any time (spec 6.1).
            self.iotlb_global();
        }
        let dom = self.iotlb.entry(did).or_default();
        if dom.insert((e.level, iova >> shift(e.level)), e).is_none() {
            self.iotlb_len += 1;
        }
    }

    pub fn iotlb_global(&mut self) {
        self.bump();
        self.iotlb.clear();
        self.iotlb_len = 0;
        self.psc.clear();
    }

    /// Every entry of `did`, first-level ones included (PASID-based invalidation).
    pub fn iotlb_domain(&mut self, did: u16) {
        self.bump();
        self.psc_domain(did, true);
        if let Some(dom) = self.iotlb.remove(&did) {
            self.iotlb_len -= dom.len();
        }
    }

    /// Domain-selective IOTLB invalidation that is not PASID-based: second-level entries of `did` only.
    pub fn iotlb_domain_sl(&mut self, did: u16) {
        self.bump();
        self.psc_domain(did, false);
        let Some(dom) = self.iotlb.get_mut(&did) else {
            return;
        };
        let before = dom.len();
        dom.retain(|_, e| e.first_level);
        self.iotlb_len -= before - dom.len();
    }

    /// Page-selective (spec 6.5.2.3): every entry of `did` whose page overlaps the `2^am` pages at
    /// `addr` (aligned down to that size, as hardware ignores the low address bits), and unless `ih` (only
    /// leaves changed) the paging-structure entries of that range. A mask too large to enumerate falls back to a
    /// scan of the domain; one that covers the whole address space is a domain-selective invalidation, IH or not.
    pub fn iotlb_pages(&mut self, did: u16, addr: u64, am: u8, ih: bool) {
        self.iotlb_pages_where(did, addr, am, ih, true)
    }

    /// Page-selective IOTLB invalidation that is not PASID-based: second-level entries only.
    pub fn iotlb_pages_sl(&mut self, did: u16, addr: u64, am: u8, ih: bool) {
        self.iotlb_pages_where(did, addr, am, ih, false)
    }

    fn iotlb_pages_where(&mut self, did: u16, addr: u64, am: u8, ih: bool, first_level_too: bool) {
        self.bump();
        if am > 51 {
            // The range covers the whole address space.
            return if first_level_too { self.iotlb_domain(did) } else { self.iotlb_domain_sl(did) };
        }
        let span_shift = 12 + am as u32;
        let first = (addr >> span_shift) << span_shift;
        let last = first | ((1u64 << span_shift) - 1);
        // Paths first: a domain may hold paths and no translation (a walk that faulted at the leaf).
        if !ih {
            self.psc.drop_range_of(did, first, last, |e| first_level_too || !e.first_level);
        }
        let Some(dom) = self.iotlb.get_mut(&did) else {
            return;
        };
        let before = dom.len();
        let targeted: u64 = (1..=3).map(|l| (last >> shift(l)) - (first >> shift(l)) + 1).sum();
        if targeted > dom.len() as u64 {
            dom.retain(|(level, vpn), e| {
                let lo = vpn << shift(*level);
                let hi = lo | (level_size(*level) - 1);
                hi < first || lo > last || (e.first_level && !first_level_too)
            });
        } else {
            for level in 1..=3 {
                for vpn in (first >> shift(level))..=(last >> shift(level)) {
                    if first_level_too || dom.get(&(level, vpn)).is_some_and(|e| !e.first_level) {
                        dom.remove(&(level, vpn));
                    }
                }
            }
        }
        self.iotlb_len -= before - dom.len();
    }

    // ---- Paging-structure caches ----

    /// The cached directory path of `did` for the 2 MiB holding `iova`, from a walk of the same kind.
    pub fn psc_get(&self, did: u16, iova: u64, first_level: bool) -> Option<PscEntry> {
        self.psc.get(did, iova, |e| e.first_level == first_level)
    }

    /// Remember the directory path of the 2 MiB holding `iova` (caching on).
    pub fn psc_put(&mut self, did: u16, iova: u64, e: PscEntry) {
        if self.enabled {
            self.psc.put(did, iova, e);
        }
    }

    /// The directory paths of `did`: all of them, or (`first_level_too` clear) the second-level ones.
    fn psc_domain(&mut self, did: u16, first_level_too: bool) {
        self.psc.drop_tags(|&d| d == did, |e| first_level_too || !e.first_level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(phys: u64, level: u32) -> IotlbEntry {
        IotlbEntry { phys, level, r: true, w: true, first_level: false, dirty: true }
    }

    #[test]
    fn non_pasid_invalidations_keep_first_level_entries() {
        let mut c = Caches::new(1 << 10);
        let fl = IotlbEntry { first_level: true, ..e(0xa000, 1) };
        c.iotlb_put(1, 0x1000, fl);
        c.iotlb_put(1, 0x2000, e(0xb000, 1));
        c.iotlb_pages_sl(1, 0, 2, false); // 0..0x4000: both pages
        assert_eq!(c.iotlb_peek(1, 0x1000), Some(0xa000), "first-level entry survives a type-2 PSI");
        assert_eq!(c.iotlb_peek(1, 0x2000), None);
        c.iotlb_put(1, 0x2000, e(0xb000, 1));
        c.iotlb_domain_sl(1);
        assert_eq!((c.iotlb_peek(1, 0x1000), c.iotlb_peek(1, 0x2000)), (Some(0xa000), None));
        c.iotlb_pages_sl(1, 0, 60, false);
        assert_eq!(c.iotlb_peek(1, 0x1000), Some(0xa000));
        c.iotlb_pages(1, 0x1000, 0, false);
        assert_eq!(c.iotlb_peek(1, 0x1000), None, "a PASID-based PSI removes it");
        assert_eq!(c.sizes().0, 0);
    }

    #[test]
    fn iotlb_page_selective_hits_overlapping_sizes_only() {
        let mut c = Caches::new(1 << 10);
        c.iotlb_put(1, 0x1000, e(0xa000, 1));
        c.iotlb_put(1, 0x2000, e(0xb000, 1));
        c.iotlb_put(1, 0x40_0000, e(0x8000_0000, 2));
        c.iotlb_put(2, 0x1000, e(0xc000, 1));
        assert_eq!(c.iotlb_peek(1, 0x40_1234), Some(0x8000_1234));
        c.iotlb_pages(1, 0x1000, 0, false);
        assert_eq!(c.iotlb_peek(1, 0x1000), None);
        assert_eq!(c.iotlb_peek(1, 0x2000), Some(0xb000));
        assert_eq!(c.iotlb_peek(2, 0x1000), Some(0xc000), "other domain kept");
        // A 4 KiB PSI inside the 2 MiB page drops the whole large page.
        c.iotlb_pages(1, 0x5f_f000, 0, false);
        assert_eq!(c.iotlb_peek(1, 0x40_0000), None);
        assert_eq!(c.sizes().0, 2);
        // A huge mask scans instead of enumerating.
        c.iotlb_pages(1, 0, 40, false);
        assert_eq!(c.sizes().0, 1);
        c.iotlb_domain(2);
        assert_eq!(c.sizes().0, 0);
    }

    #[test]
    fn context_device_function_mask() {
        let mut c = Caches::new(16);
        let ctx = CtxEntry::Legacy { did: 1, fpd: false, mode: Mode::PassThrough };
        for sid in [0x0100, 0x0101, 0x0104, 0x0107, 0x0108] {
            c.context_put(sid, ctx);
        }
        c.context_device(0x0100, 1); // 0x0100 and 0x0104
        assert!(!c.context_peek(0x0100) && !c.context_peek(0x0104));
        assert!(c.context_peek(0x0101) && c.context_peek(0x0107));
        c.context_device(0x0100, 3); // all functions of device 0
        assert!(!c.context_peek(0x0101) && !c.context_peek(0x0107));
        assert!(c.context_peek(0x0108));
    }
}
