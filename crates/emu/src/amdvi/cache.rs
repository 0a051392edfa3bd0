//! The unit's caches: device table entries by DeviceID, an IOTLB by DomainID and the page-directory entries of
//! each domain's walks (spec 2.4.2, 2.4.3).
//!
//! Entries leave only through the invalidation commands (or capacity eviction of the IOTLB, which hardware may do
//! at any time), never because memory changed: a driver that edits a DTE or a PTE and forgets INVALIDATE_DEVTAB_ENTRY
//! or INVALIDATE_IOMMU_PAGES keeps translating through the old entry, as on hardware. Failed lookups (illegal DTEs,
//! faulting walks) are not cached.
//!
//! IOTLB entries are tagged with the DomainID alone: every device whose DTE names a domain shares its entries, which
//! is why the crash kernel must never hand out an old domain's ID again. They hold the permissions ANDed along the
//! page-table path; the DTE's IR/IW are applied at use, from the (cached) DTE of the requesting device.
//!
//! The page-directory cache holds, per domain and 2 MiB of IOVA, where a walk that went down one level at a time
//! found the level-1 table and the permissions of the directory entries above it: a walk that hits it reads only the
//! leaf (`crate::paths`). Only INVALIDATE_IOMMU_PAGES with PDE = 1 removes paths, those of the domain whose 2 MiB
//! meets its range, or INVALIDATE_IOMMU_ALL all of them. A driver that frees or edits a directory table with PDE = 0,
//! or invalidates less than the table mapped, keeps walking the old one, as on hardware (Linux's
//! `build_inv_iommu_pages` always sets PDE for host domains).
//!
//! The SE (suppress I/O page fault events) bookkeeping lives here too: after one logged IO_PAGE_FAULT a device with
//! DTE.SE stays quiet until its DTE is invalidated (our reading of SE next to SA, "suppress all"; VirtualBox's model
//! calls SE device-specific suppression and leaves it unimplemented).

use crate::hash::FastMap;
use crate::paths::PathCache;

/// What a device's DTE says, decoded once it has been validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DevState {
    /// V = 0: the entry is not valid and requests pass untranslated.
    NotValid,
    /// V = 1, TV = 0: no translation information; requests are refused without an event.
    NoTranslation,
    /// V = 1, TV = 1.
    Translate(DteInfo),
}

/// The translation fields of a valid DTE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct DteInfo {
    pub domain_id: u16,
    /// 0 = untranslated with the DTE's permissions, 1..=6 = page-table levels.
    pub mode: u32,
    pub root: u64,
    pub ir: bool,
    pub iw: bool,
    /// SA: suppress all IO_PAGE_FAULT events.
    pub sa: bool,
    /// SE: suppress IO_PAGE_FAULT events after the first.
    pub se: bool,
    /// EX: the exclusion range applies to this device.
    pub ex: bool,
}

/// A cached translation: a page of `2^shift` bytes and the permissions ANDed along its page-table path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct IotlbEntry {
    /// Physical base of the page.
    pub phys: u64,
    /// log2 of the page size: 12 and up (NextLevel-7 pages have any power of two).
    pub shift: u32,
    pub r: bool,
    pub w: bool,
}

/// A walk's directory part: the level-1 table it reached and the permissions ANDed over the entries above it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PdeEntry {
    /// Physical address of the level-1 table.
    pub table: u64,
    pub r: bool,
    pub w: bool,
}

impl IotlbEntry {
    pub fn translate(&self, iova: u64) -> u64 {
        self.phys | (iova & page_mask(self.shift))
    }
}

fn page_mask(shift: u32) -> u64 {
    if shift >= 64 {
        u64::MAX
    } else {
        (1u64 << shift) - 1
    }
}

/// One domain's IOTLB entries by [`key`] (page size and page number), and which page sizes occur.
#[derive(Clone, Debug, Default)]
struct Domain {
    shifts: u64,
    pages: FastMap<u64, IotlbEntry>,
}

#[derive(Clone, Debug)]
pub(super) struct Caches {
    enabled: bool,
    dte: FastMap<u16, DevState>,
    iotlb: FastMap<u16, Domain>,
    /// The entry map of the domain emptied last, cleared, kept for the next domain to start filling: a driver
    /// that maps, uses and unmaps a buffer at a time empties and refills one domain over and over, and would
    /// otherwise grow a new map each time. One at most, so memory stays bounded by the entries cached.
    spare: Option<FastMap<u64, IotlbEntry>>,
    iotlb_len: usize,
    iotlb_capacity: usize,
    /// Directory paths by DomainID.
    pde: PathCache<u16, PdeEntry>,
    /// Devices with DTE.SE whose one IO_PAGE_FAULT event has been logged.
    se_fired: FastMap<u16, ()>,
    /// Bumped by everything that may remove an entry or turn caching off: what the model's translation
    /// front cache (`crate::front`) checks before it answers.
    gen: u64,
}

impl Caches {
    pub fn new(iotlb_capacity: usize) -> Self {
        Caches {
            enabled: true,
            dte: FastMap::default(),
            iotlb: FastMap::default(),
            spare: None,
            iotlb_len: 0,
            iotlb_capacity: iotlb_capacity.max(1),
            pde: PathCache::default(),
            se_fired: FastMap::default(),
            gen: 0,
        }
    }

    /// The generation: it changes whenever any entry may have gone.
    pub fn gen(&self) -> u64 {
        self.gen
    }

    /// A change the caches do not see (a register write, the SNP lock): what was answered before may not be
    /// answered again without a look.
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

    /// (IOTLB entries, DTE cache entries).
    pub fn sizes(&self) -> (usize, usize) {
        (self.iotlb_len, self.dte.len())
    }

    /// INVALIDATE_IOMMU_ALL (spec 2.4.7): every cached DTE, translation and interrupt-table entry.
    pub fn invalidate_all(&mut self) {
        self.bump();
        self.dte.clear();
        self.se_fired.clear();
        self.iotlb.clear();
        self.iotlb_len = 0;
        self.pde.clear();
    }

    // ---- DTE cache ----

    pub fn dte_get(&self, devid: u16) -> Option<DevState> {
        self.dte.get(&devid).copied()
    }

    pub fn dte_peek(&self, devid: u16) -> bool {
        self.dte.contains_key(&devid)
    }

    pub fn dte_put(&mut self, devid: u16, s: DevState) {
        if self.enabled {
            self.dte.insert(devid, s);
        }
    }

    /// INVALIDATE_DEVTAB_ENTRY (spec 2.4.2). The IOTLB is tagged by domain, so its entries stay.
    pub fn dte_invalidate(&mut self, devid: u16) {
        self.bump();
        self.dte.remove(&devid);
        self.se_fired.remove(&devid);
    }

    /// Whether an IO_PAGE_FAULT of `devid` under DTE.SE is to be suppressed; arms the suppression otherwise.
    pub fn se_suppress(&mut self, devid: u16) -> bool {
        self.se_fired.insert(devid, ()).is_some()
    }

    // ---- IOTLB ----

    /// The entry covering `iova` in `domain`, trying each page size the domain holds, smallest first.
    pub fn iotlb_get(&self, domain: u16, iova: u64) -> Option<IotlbEntry> {
        let dom = self.iotlb.get(&domain)?;
        let mut shifts = dom.shifts;
        while shifts != 0 {
            let shift = shifts.trailing_zeros();
            shifts &= shifts - 1;
            if let Some(e) = dom.pages.get(&key(shift, iova)) {
                return Some(*e);
            }
        }
        None
    }

    pub fn iotlb_peek(&self, domain: u16, iova: u64) -> Option<u64> {
        self.iotlb_get(domain, iova).map(|e| e.translate(iova))
    }

    pub fn iotlb_put(&mut self, domain: u16, iova: u64, e: IotlbEntry) {
        if !self.enabled || !(12..64).contains(&e.shift) {
            return;
        }
        if self.iotlb_len >= self.iotlb_capacity {
            // Out of room: evict everything (spec 2.4.3 lets hardware drop cached translations at any time).
            self.bump();
            self.iotlb.clear();
            self.iotlb_len = 0;
        }
        let spare = &mut self.spare;
        let dom =
            self.iotlb.entry(domain).or_insert_with(|| Domain { shifts: 0, pages: spare.take().unwrap_or_default() });
        dom.shifts |= 1 << e.shift;
        if dom.pages.insert(key(e.shift, iova), e).is_none() {
            self.iotlb_len += 1;
        }
    }

    /// INVALIDATE_IOMMU_PAGES (spec 2.4.3): every entry of `domain` whose page overlaps `[first, last]`. A range too
    /// large to enumerate page by page is done by a scan of the domain.
    pub fn iotlb_range(&mut self, domain: u16, first: u64, last: u64) {
        self.bump();
        let Some(dom) = self.iotlb.get_mut(&domain) else {
            return;
        };
        let before = dom.pages.len();
        let mut targeted: u64 = 0;
        let mut shifts = dom.shifts;
        while shifts != 0 {
            let shift = shifts.trailing_zeros();
            shifts &= shifts - 1;
            targeted = targeted.saturating_add(vpn(last, shift) - vpn(first, shift) + 1);
        }
        if targeted > before as u64 {
            dom.pages.retain(|&k, _| {
                let shift = (k & KEY_SHIFT) as u32;
                let lo = (k >> KEY_SHIFT_BITS) << shift;
                let hi = lo | page_mask(shift);
                hi < first || lo > last
            });
        } else {
            let mut shifts = dom.shifts;
            while shifts != 0 {
                let shift = shifts.trailing_zeros();
                shifts &= shifts - 1;
                for v in vpn(first, shift)..=vpn(last, shift) {
                    dom.pages.remove(&page_key(shift, v));
                }
            }
        }
        self.iotlb_len -= before - dom.pages.len();
        if dom.pages.is_empty() {
            if let Some(dom) = self.iotlb.remove(&domain) {
                self.spare = Some(dom.pages);
            }
        }
    }
}

impl Caches {
    // ---- Page-directory cache ----

    /// The cached directory path of `domain` for the 2 MiB holding `iova`.
    pub fn pde_get(&self, domain: u16, iova: u64) -> Option<PdeEntry> {
        self.pde.get(domain, iova, |_| true)
    }

    /// Remember the directory path of the 2 MiB holding `iova` (caching on).
    pub fn pde_put(&mut self, domain: u16, iova: u64, e: PdeEntry) {
        if self.enabled {
            self.pde.put(domain, iova, e);
        }
    }

    /// INVALIDATE_IOMMU_PAGES with PDE = 1: the directory paths of `domain` whose 2 MiB meets `[first, last]`.
    pub fn pde_invalidate(&mut self, domain: u16, first: u64, last: u64) {
        self.pde.drop_range_of(domain, first, last, |_| true);
    }
}

fn vpn(iova: u64, shift: u32) -> u64 {
    iova.checked_shr(shift).unwrap_or(0)
}

/// Bits of an IOTLB key that hold the page's log2 size.
const KEY_SHIFT_BITS: u32 = 6;
/// Those bits of a key.
const KEY_SHIFT: u64 = (1 << KEY_SHIFT_BITS) - 1;

/// An IOTLB entry's key: the page number above the page's log2 size, one word (`shift` is 12..=63, so the page
/// number has at most 52 bits and the two never overlap).
fn key(shift: u32, iova: u64) -> u64 {
    page_key(shift, vpn(iova, shift))
}

/// [`key`] of page number `vpn` of pages of `2^shift` bytes.
fn page_key(shift: u32, vpn: u64) -> u64 {
    vpn << KEY_SHIFT_BITS | u64::from(shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(phys: u64, shift: u32) -> IotlbEntry {
        IotlbEntry { phys, shift, r: true, w: true }
    }

    /// A key names one page of one size: the size and the page's base come back out of it, for every size the
    /// IOTLB holds and at both ends of the address space.
    #[test]
    fn an_iotlb_key_holds_the_page_size_and_base_apart() {
        let mut seen = std::collections::HashSet::new();
        for shift in 12..64u32 {
            for iova in [0, 1u64 << shift, u64::MAX] {
                let k = key(shift, iova);
                assert_eq!((k & KEY_SHIFT) as u32, shift);
                assert_eq!((k >> KEY_SHIFT_BITS) << shift, iova & !page_mask(shift), "{shift} {iova:#x}");
                seen.insert(k);
            }
        }
        assert_eq!(seen.len(), 52 * 3 - 1, "only shift 63's page at 1 << 63 and at the top coincide");
    }

    #[test]
    fn ranges_drop_overlapping_pages_of_one_domain() {
        let mut c = Caches::new(1 << 10);
        c.iotlb_put(1, 0x1000, e(0xa000, 12));
        c.iotlb_put(1, 0x2000, e(0xb000, 12));
        c.iotlb_put(1, 0x40_0000, e(0x8000_0000, 21));
        c.iotlb_put(1, 0x8000, e(0x10_8000, 15));
        c.iotlb_put(2, 0x1000, e(0xc000, 12));
        assert_eq!(c.iotlb_peek(1, 0x40_1234), Some(0x8000_1234));
        assert_eq!(c.iotlb_peek(1, 0xc123), Some(0x10_c123), "a 32 KiB page");
        c.iotlb_range(1, 0x1000, 0x1fff);
        assert_eq!(c.iotlb_peek(1, 0x1000), None);
        assert_eq!(c.iotlb_peek(1, 0x2000), Some(0xb000));
        assert_eq!(c.iotlb_peek(2, 0x1000), Some(0xc000), "other domain kept");
        // One 4 KiB page inside the 2 MiB and 32 KiB pages drops them whole.
        c.iotlb_range(1, 0x5f_f000, 0x5f_ffff);
        c.iotlb_range(1, 0xf000, 0xffff);
        assert_eq!((c.iotlb_peek(1, 0x40_0000), c.iotlb_peek(1, 0x8000)), (None, None));
        assert_eq!(c.sizes().0, 2);
        // The whole space scans instead of enumerating.
        c.iotlb_range(1, 0, u64::MAX);
        assert_eq!(c.sizes().0, 1);
        c.invalidate_all();
        assert_eq!(c.sizes(), (0, 0));
    }

    #[test]
    fn capacity_evicts_and_disabled_caches_hold_nothing() {
        let mut c = Caches::new(2);
        for i in 0..3u64 {
            c.iotlb_put(1, i << 12, e(i << 12, 12));
        }
        assert_eq!(c.sizes().0, 1);
        c.set_enabled(false);
        c.iotlb_put(1, 0, e(0, 12));
        c.dte_put(1, DevState::NotValid);
        assert_eq!(c.sizes(), (0, 0));
        assert!(!c.se_suppress(7) && c.se_suppress(7));
        c.dte_invalidate(7);
        assert!(!c.se_suppress(7));
    }
}
