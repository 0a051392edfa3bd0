//! This driver's root and context tables, legacy (spec 9.1, 9.3) and scalable mode (9.2, 9.4–9.6), and
//! writing or clearing one device's entry with the invalidations each change needs.

use iommu_spec::vtd::{
    ContextCacheInv, ContextEntry, DescType, IotlbInv, PasidCacheInv, PasidDirEntry, PasidEntry, PasidIotlbInv,
    RootEntry, ScalableContextEntry, ScalableRootEntry, SourceId, TranslationType,
};

use super::{hw, Attachment, Vtd, VtdError, FLPT_DEFAULT_DID};
use crate::Platform;

/// PDTS for a one-page PASID directory: 2^(2+7) = 512 entries.
const PDTS_ONE_PAGE: u8 = 2;

impl Vtd {
    /// (bus, half) of the context table holding `sid`'s entry, and the entry's byte offset in it.
    pub(super) fn context_slot(&self, sid: u16) -> ((u8, u8), u64) {
        let s = SourceId(sid);
        if self.scalable {
            ((s.bus(), s.devfn() >> 7), (s.devfn() & 0x7f) as u64 * 32)
        } else {
            ((s.bus(), 0), s.devfn() as u64 * 16)
        }
    }

    /// The context table for (bus, half) that this kernel may write: allocated and hooked into the root
    /// table on first use, or, for a crashed kernel's table used in place since adoption, copied first
    /// (the old page is never written: it is part of the dump). The copy holds the same entries, so the
    /// unit may fetch from either while the root entry changes; the context cache is then flushed as the
    /// spec asks after a root-entry change (VT-d 6.5.3.3: a global context-cache invalidation).
    pub(super) fn context_table(&mut self, hw: &mut impl Platform, key: (u8, u8)) -> Result<u64, VtdError> {
        if let Some(&t) = self.ctx_tables.get(&key) {
            return Ok(t);
        }
        let t = self.alloc_frame(hw)?;
        let old = self.old_ctx.remove(&key);
        if let Some(old) = old {
            let mut page = [0u8; 4096];
            hw.read(old, &mut page)?;
            hw.write(t, &page)?;
        }
        self.ctx_tables.insert(key, t);
        self.write_root_entry(hw, key.0)?;
        if old.is_some() {
            self.invalidate(hw, &[ContextCacheInv::global().into_bits()])?;
        }
        Ok(t)
    }

    /// Context tables of the crashed kernel in use in place, by (bus, half).
    pub fn old_context_tables(&self) -> impl Iterator<Item = ((u8, u8), u64)> + '_ {
        self.old_ctx.iter().map(|(&k, &t)| (k, t))
    }

    /// Rewrite the root entry of `bus` from the context tables we hold for it.
    pub(super) fn write_root_entry(&mut self, hw: &mut impl Platform, bus: u8) -> Result<(), VtdError> {
        let at = self.root + bus as u64 * 16;
        let raw = if self.scalable {
            let mut e = ScalableRootEntry::new();
            if let Some(&lo) = self.ctx_tables.get(&(bus, 0)).or(self.old_ctx.get(&(bus, 0))) {
                e = e.with_lp(true).with_lctp(lo >> 12);
            }
            if let Some(&up) = self.ctx_tables.get(&(bus, 1)).or(self.old_ctx.get(&(bus, 1))) {
                e = e.with_up(true).with_uctp(up >> 12);
            }
            e.into_bits()
        } else {
            match self.ctx_tables.get(&(bus, 0)).or(self.old_ctx.get(&(bus, 0))) {
                Some(&t) => RootEntry::new().with_context_table(t).into_bits(),
                None => 0,
            }
        };
        hw.write_u128(at, raw)?;
        Ok(())
    }

    /// Write `sid`'s context entry for `to` into a slot that is not present (Linux
    /// `domain_context_mapping_one`; scalable mode: `intel_pasid_setup_first_level` for first-level
    /// domains, `intel_pasid_setup_second_level` / `_pass_through` otherwise, under a context entry
    /// pointing at the device's PASID directory).
    pub(super) fn set_context(&mut self, hw: &mut impl Platform, sid: u16, to: Attachment) -> Result<(), VtdError> {
        let (key, off) = self.context_slot(sid);
        let table = self.context_table(hw, key)?;
        let (did, root, levels) = match to {
            Attachment::Domain(d) => {
                let dom = self.domain(d).ok_or(VtdError::NoSuchDomain(d.0))?;
                (dom.did, Some(dom.root), dom.levels)
            }
            Attachment::Identity => (FLPT_DEFAULT_DID, None, self.levels),
        };
        let aw = (self.levels - 2) as u8;
        if self.scalable {
            let dir = self.alloc_frame(hw)?;
            let ptab = self.alloc_frame(hw)?;
            let entry = match root {
                // Linux fills AW with the unit's AGAW also for first-level entries, and PWSNP from
                // ECAP.SMPWCS.
                Some(r) if self.first_level => PasidEntry::first_level(r, levels == 5, aw, did, self.ecap.smpwcs()),
                Some(r) => PasidEntry::second_level(r, (levels - 2) as u8, did),
                None => PasidEntry::pass_through(did),
            };
            for (i, q) in entry.0.iter().enumerate() {
                hw.write_u64(ptab + 8 * i as u64, *q)?;
            }
            hw.write_u64(dir, PasidDirEntry::new().with_present(true).with_ptp(ptab >> 12).into_bits())?;
            let ce = ScalableContextEntry::new()
                .with_present(true)
                .with_pdts(PDTS_ONE_PAGE)
                .with_pasiddirptr(dir >> 12)
                .with_rid_pasid(0);
            hw.write_u128(table + off + 16, 0)?;
            hw.write_u128(table + off, ce.into_bits())?;
        } else {
            let ce = match root {
                Some(r) => ContextEntry::new().with_tt(TranslationType::MultiLevel).with_page_table(r),
                None => ContextEntry::new().with_tt(TranslationType::PassThrough),
            };
            let ce = ce.with_aw(aw).with_did(did).with_present(true);
            hw.write_u128(table + off, ce.into_bits())?;
        }
        if self.cap.cm() {
            // Caching mode: the unit may hold the not-present entry under DID 0 (Linux flushes it).
            let descs = [ContextCacheInv::device(0, sid).into_bits(), IotlbInv::domain(0).into_bits()];
            self.invalidate(hw, &descs)
        } else {
            hw::flush_write_buffer(hw, self.cap)
        }
    }

    /// Clear `sid`'s context entry and flush what the unit may cache for it under `old_did` (Linux
    /// `domain_context_clear_one` and the copied-entry teardown): a device-selective context-cache flush and
    /// a domain-selective IOTLB flush with the old DID; in scalable mode also the PASID cache, and for an
    /// entry with first-level tables (`fl_pasid`: its RID_PASID) a PASID-based IOTLB flush of that PASID,
    /// the only IOTLB invalidation that reaches first-level translations (Linux
    /// `intel_pasid_tear_down_entry`: `qi_flush_piotlb` for PGTT first-level and pass-through).
    pub(super) fn clear_context(
        &mut self,
        hw: &mut impl Platform,
        sid: u16,
        old_did: u16,
        fl_pasid: Option<u32>,
    ) -> Result<(), VtdError> {
        let (key, off) = self.context_slot(sid);
        if !self.ctx_tables.contains_key(&key) && !self.old_ctx.contains_key(&key) {
            return Ok(());
        }
        let table = self.context_table(hw, key)?;
        hw.write_u128(table + off, 0)?;
        if self.scalable {
            hw.write_u128(table + off + 16, 0)?;
        }
        let mut descs = alloc::vec![ContextCacheInv::device(old_did, sid).into_bits()];
        if self.scalable {
            // PASID-cache: all PASIDs of the old DID (granularity 0 is "domain-selective" for this type).
            descs.push(PasidCacheInv::new().with_ty(DescType::PasidCache).with_g(0).with_did(old_did).into_bits());
        }
        descs.push(IotlbInv::domain(old_did).into_bits());
        if let Some(pasid) = fl_pasid.filter(|_| self.scalable) {
            descs.push(PasidIotlbInv::of_pasid(old_did, pasid).into_bits());
        }
        self.invalidate(hw, &descs)
    }
}
