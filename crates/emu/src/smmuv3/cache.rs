//! The SMMU's caches (IHI 0070 16.2): a configuration cache of decoded STEs by StreamID and CDs by (StreamID,
//! SubstreamID), and a TLB of translations by (regime, VMID, ASID) and page.
//!
//! Entries leave only through CFGI_* and TLBI_* commands (or capacity eviction, which the spec allows at any
//! time), never because the structures in memory changed: a driver that edits an STE or a PTE and forgets the
//! invalidation keeps getting the old answer, as on hardware. Faulting lookups are not cached.
//!
//! An STE invalidation drops the CDs fetched through that StreamID too: a CD is reached through its STE, and
//! Linux switches an STE to a new CD table with CFGI_STE alone (QEMU `smmuv3_flush_config` drops both).
//!
//! TLB entries are tagged with the VMID of their STE (STE.S2VMID, also for stage-1-only streams, which Linux
//! invalidates with VMID 0) and the ASID of their CD (none for stage-2-only streams). A stage-1 entry that came
//! from a global leaf (nG = 0) is still looked up only under its own ASID (caching less is always allowed) but
//! is marked global, so TLBI_NH_ASID keeps it and TLBI_NH_VA of any ASID drops it, as 4.4 requires. A nested
//! walk caches only the combined translation, which TLBI_S2_IPA does not have to drop (4.4.6: software follows
//! it with a stage-1 invalidation).
//!
//! The walk cache holds, per tag and 2 MiB of input address, where a stage-1 walk without stage 2 found the level-3
//! table and the APTable limits of the table descriptors above it: a walk that hits it reads only the last level
//! (`crate::paths`). A TLBI by address removes the paths of the tags it covers whose 2 MiB meets its range, unless
//! Leaf = 1, which says only last-level entries changed and need not touch walk caches (4.4.1; Linux sets Leaf on the
//! unmap flush, `arm_smmu_iotlb_sync`, and clears it when a table was freed, `arm_smmu_tlb_inv_walk`); every other
//! TLBI that covers a tag's stage-1 entries removes all of its paths. A driver that frees a table and invalidates
//! with Leaf = 1, or too small a range, keeps walking the old one, as on hardware. Nested and stage-2 walks are not
//! cached this way (each of their stage-1 descriptors is itself translated by stage 2).

use iommu_spec::smmuv3::Perm;

use super::strtab::SteState;
use super::translate::{low_mask, S1Cfg};
use crate::hash::FastMap;
use crate::paths::PathCache;

/// Leaf sizes an entry may have: 4 KiB, 2 MiB, 1 GiB.
const SHIFTS: [u32; 3] = [12, 21, 30];

/// The translation regime and tags of a TLB entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TlbTag {
    /// EL2 stage-1 regime (STE.STRW = EL2); VMID 0 then.
    pub el2: bool,
    pub vmid: u16,
    /// `None` for stage-2-only translations.
    pub asid: Option<u16>,
}

/// A cached translation: a page or block of `1 << shift` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TlbEntry {
    /// Physical base of the page.
    pub phys: u64,
    /// IPA base of the page (the input address when there is no stage 1).
    pub ipa: u64,
    pub shift: u32,
    /// What stage 1 grants to unprivileged and privileged accesses (everything without stage 1).
    pub perm1: [Perm; 2],
    /// What stage 2 grants (everything without stage 2).
    pub perm2: Perm,
    /// From a global stage-1 leaf (nG = 0).
    pub global: bool,
}

/// A stage-1 walk's directory part: the level-3 table it reached and the APTable limits above it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct WalkEntry {
    /// Physical address of the level-3 table.
    pub table: u64,
    /// The limits for unprivileged and privileged accesses.
    pub limit: [Perm; 2],
}

/// Which entries of a tag an invalidation drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scope {
    Keep,
    All,
    GlobalOnly,
    NonGlobal,
}

impl Scope {
    fn hits(self, e: &TlbEntry) -> bool {
        match self {
            Scope::Keep => false,
            Scope::All => true,
            Scope::GlobalOnly => e.global,
            Scope::NonGlobal => !e.global,
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct Caches {
    enabled: bool,
    ste: FastMap<u32, SteState>,
    cd: FastMap<(u32, u32), S1Cfg>,
    cfg_capacity: usize,
    tlb: FastMap<TlbTag, FastMap<(u32, u64), TlbEntry>>,
    tlb_len: usize,
    tlb_capacity: usize,
    /// Stage-1 directory paths by tag.
    walk: PathCache<TlbTag, WalkEntry>,
    /// Bumped by everything that may remove an entry or turn caching off: what the model's translation
    /// front cache (`crate::front`) checks before it answers.
    gen: u64,
}

impl Caches {
    pub fn new(tlb_capacity: usize, cfg_capacity: usize) -> Self {
        Caches {
            enabled: true,
            ste: FastMap::default(),
            cd: FastMap::default(),
            cfg_capacity: cfg_capacity.max(1),
            tlb: FastMap::default(),
            tlb_len: 0,
            tlb_capacity: tlb_capacity.max(1),
            walk: PathCache::default(),
            gen: 0,
        }
    }

    /// The generation: it changes whenever any entry may have gone.
    pub fn gen(&self) -> u64 {
        self.gen
    }

    /// A change the caches do not see (a register write, service failure mode): what was answered before
    /// may not be answered again without a look.
    pub fn bump(&mut self) {
        self.gen = self.gen.wrapping_add(1);
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn set_enabled(&mut self, on: bool) {
        self.bump();
        self.enabled = on;
        self.cfg_all();
        self.tlb_select(|_| Scope::All);
        self.walk.clear();
    }

    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.tlb_len, self.ste.len(), self.cd.len())
    }

    // ---- configuration cache ----

    pub fn ste_get(&self, sid: u32) -> Option<SteState> {
        self.ste.get(&sid).copied()
    }

    pub fn ste_peek(&self, sid: u32) -> bool {
        self.ste.contains_key(&sid)
    }

    pub fn ste_put(&mut self, sid: u32, s: SteState) {
        if !self.enabled {
            return;
        }
        if self.ste.len() + self.cd.len() >= self.cfg_capacity {
            self.cfg_all();
        }
        self.ste.insert(sid, s);
    }

    pub fn cd_get(&self, sid: u32, ssid: u32) -> Option<S1Cfg> {
        self.cd.get(&(sid, ssid)).copied()
    }

    pub fn cd_peek(&self, sid: u32, ssid: u32) -> bool {
        self.cd.contains_key(&(sid, ssid))
    }

    pub fn cd_put(&mut self, sid: u32, ssid: u32, c: S1Cfg) {
        if !self.enabled {
            return;
        }
        if self.ste.len() + self.cd.len() >= self.cfg_capacity {
            self.cfg_all();
        }
        self.cd.insert((sid, ssid), c);
    }

    /// CFGI_STE / CFGI_STE_RANGE (4.3.1, 4.3.2): the STEs of `count` StreamIDs from `first`, and their CDs.
    pub fn cfgi_ste_range(&mut self, first: u32, count: u64) {
        self.bump();
        let hit = |sid: u32| (sid as u64).wrapping_sub(first as u64) < count;
        self.ste.retain(|&sid, _| !hit(sid));
        self.cd.retain(|&(sid, _), _| !hit(sid));
    }

    /// CFGI_CD (`Some(ssid)`) or CFGI_CD_ALL (`None`) of `sid` (4.3.3, 4.3.4).
    pub fn cfgi_cd(&mut self, sid: u32, ssid: Option<u32>) {
        self.bump();
        self.cd.retain(|&(s, ss), _| !(s == sid && ssid.is_none_or(|want| want == ss)));
    }

    /// CFGI_ALL (4.3.5).
    pub fn cfg_all(&mut self) {
        self.bump();
        self.ste.clear();
        self.cd.clear();
    }

    // ---- TLB ----

    /// The entry covering `va` under `tag`, trying 4 KiB, 2 MiB and 1 GiB pages in turn.
    pub fn tlb_get(&self, tag: TlbTag, va: u64) -> Option<TlbEntry> {
        let dom = self.tlb.get(&tag)?;
        SHIFTS.iter().find_map(|&s| dom.get(&(s, va >> s)).copied())
    }

    pub fn tlb_peek(&self, tag: TlbTag, va: u64) -> Option<u64> {
        self.tlb_get(tag, va).map(|e| e.phys | (va & low_mask(e.shift)))
    }

    pub fn tlb_put(&mut self, tag: TlbTag, va: u64, e: TlbEntry) {
        if !self.enabled || !SHIFTS.contains(&e.shift) {
            return;
        }
        if self.tlb_len >= self.tlb_capacity {
            // Out of room: evict everything (16.2: entries may be dropped at any time).
            self.tlb_select(|_| Scope::All);
            self.walk.clear();
        }
        if self.tlb.entry(tag).or_default().insert((e.shift, va >> e.shift), e).is_none() {
            self.tlb_len += 1;
        }
    }

    /// Drop, per tag, the entries `scope(tag)` selects.
    pub fn tlb_select(&mut self, scope: impl Fn(&TlbTag) -> Scope) {
        self.bump();
        let mut dropped = 0;
        self.tlb.retain(|tag, dom| {
            let s = scope(tag);
            let before = dom.len();
            dom.retain(|_, e| !s.hits(e));
            dropped += before - dom.len();
            !dom.is_empty()
        });
        self.tlb_len -= dropped;
    }

    /// Drop, per tag, the entries `scope(tag)` selects that overlap `[first, last]` (input addresses). Small ranges
    /// are enumerated page by page; a range with more pages than the tag has entries is a scan instead.
    pub fn tlb_select_range(&mut self, scope: impl Fn(&TlbTag) -> Scope, first: u64, last: u64) {
        self.bump();
        let (first, last) = (first.min(last), first.max(last));
        let targeted: u64 =
            SHIFTS.iter().map(|&s| ((last >> s) - (first >> s)).saturating_add(1)).fold(0, u64::saturating_add);
        let mut dropped = 0;
        for (tag, dom) in self.tlb.iter_mut() {
            let s = scope(tag);
            if s == Scope::Keep {
                continue;
            }
            let before = dom.len();
            if targeted > dom.len() as u64 {
                dom.retain(|&(shift, vpn), e| {
                    let lo = vpn << shift;
                    let hi = lo | low_mask(shift);
                    hi < first || lo > last || !s.hits(e)
                });
            } else {
                for shift in SHIFTS {
                    for vpn in (first >> shift)..=(last >> shift) {
                        if dom.get(&(shift, vpn)).is_some_and(|e| s.hits(e)) {
                            dom.remove(&(shift, vpn));
                        }
                    }
                }
            }
            dropped += before - dom.len();
        }
        self.tlb.retain(|_, dom| !dom.is_empty());
        self.tlb_len -= dropped;
    }

    // ---- Walk cache ----

    /// The cached stage-1 directory path of `tag` for the 2 MiB holding `va`.
    pub fn walk_get(&self, tag: TlbTag, va: u64) -> Option<WalkEntry> {
        self.walk.get(tag, va, |_| true)
    }

    /// Remember the directory path of the 2 MiB holding `va` (caching on).
    pub fn walk_put(&mut self, tag: TlbTag, va: u64, e: WalkEntry) {
        if self.enabled {
            self.walk.put(tag, va, e);
        }
    }

    /// Drop the directory paths of every tag `hit` selects.
    pub fn walk_drop(&mut self, hit: impl Fn(&TlbTag) -> bool) {
        self.walk.drop_tags(hit, |_| true);
    }

    /// Drop the directory paths of every tag `hit` selects whose 2 MiB meets `[first, last]`.
    pub fn walk_drop_range(&mut self, hit: impl Fn(&TlbTag) -> bool, first: u64, last: u64) {
        self.walk.drop_range(hit, first, last, |_| true);
    }

    /// [`Caches::walk_drop_range`] of one tag.
    pub fn walk_drop_range_of(&mut self, tag: TlbTag, first: u64, last: u64) {
        self.walk.drop_range_of(tag, first, last, |_| true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(phys: u64, shift: u32, global: bool) -> TlbEntry {
        TlbEntry { phys, ipa: phys, shift, perm1: [Perm::RW; 2], perm2: Perm::RW, global }
    }

    const T1: TlbTag = TlbTag { el2: false, vmid: 0, asid: Some(1) };
    const T2: TlbTag = TlbTag { el2: false, vmid: 0, asid: Some(2) };

    #[test]
    fn ranges_hit_overlapping_sizes_and_respect_global() {
        let mut c = Caches::new(1 << 10, 16);
        c.tlb_put(T1, 0x1000, e(0xa000, 12, false));
        c.tlb_put(T1, 0x2000, e(0xb000, 12, true));
        c.tlb_put(T1, 0x40_0000, e(0x8000_0000, 21, false));
        c.tlb_put(T2, 0x1000, e(0xc000, 12, false));
        assert_eq!(c.tlb_peek(T1, 0x40_1234), Some(0x8000_1234));
        // ASID-wide: the global entry survives.
        c.tlb_select(|t| if *t == T1 { Scope::NonGlobal } else { Scope::Keep });
        assert_eq!(c.sizes().0, 2);
        assert_eq!(c.tlb_peek(T1, 0x2000), Some(0xb000));
        // A VA invalidation of another ASID drops global entries only.
        c.tlb_select_range(|t| if *t == T2 { Scope::All } else { Scope::GlobalOnly }, 0x2000, 0x2fff);
        assert_eq!(c.tlb_peek(T1, 0x2000), None);
        assert_eq!(c.tlb_peek(T2, 0x1000), Some(0xc000));
        // A 4 KiB range inside a 2 MiB block drops the block; a huge range scans.
        c.tlb_put(T1, 0x40_0000, e(0x8000_0000, 21, false));
        c.tlb_select_range(|_| Scope::All, 0x5f_f000, 0x5f_ffff);
        assert_eq!(c.tlb_peek(T1, 0x40_0000), None);
        c.tlb_select_range(|_| Scope::All, 0, u64::MAX);
        assert_eq!(c.sizes().0, 0);
    }

    #[test]
    fn capacity_evicts_everything() {
        let mut c = Caches::new(2, 16);
        for i in 0..5u64 {
            c.tlb_put(T1, i << 12, e(i << 12, 12, false));
        }
        assert!(c.sizes().0 <= 2);
        c.cfgi_ste_range(u32::MAX, 2);
        c.cfgi_ste_range(0, 1 << 32);
    }
}
