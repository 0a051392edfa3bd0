//! DMA translation of requests without PASID (spec chapter 3, tables in chapter 9).
//!
//! Legacy mode (latched RTADDR.SMT = 0): root entry by bus (9.1), context entry by devfn (9.3), then
//! pass-through or a second-level walk (9.8). Scalable mode (SMT = 1): root entry halves by devfn
//! (9.2), 256-bit context entry (9.4), the PASID directory and table entry of the context's RID_PASID
//! (9.5, 9.6), then pass-through (PGTT 4), a second-level walk (PGTT 2) or, on a unit with ECAP.FLTS, a
//! first-level walk (PGTT 1: spec 3.6, 9.7). Nested translation (PGTT 3) is not modelled: the model never
//! reports ECAP.NEST, and without it PGTT 3 is an invalid PASID entry (fault 0x5B), never a bypass.
//!
//! Fault reasons are the legacy codes in legacy mode and the scalable-mode codes in scalable mode (spec
//! 7.1.3). Faults found before a context entry is read (root table, root entry) are always recorded;
//! from the context entry on, FPD in the context entry (even one not present: spec 9.3), the PASID
//! directory entry or the PASID entry suppresses the record (QEMU `vtd_do_iommu_translate`).

use iommu_platform::PhysMem;
use iommu_spec::mask64;
use iommu_spec::vtd::{
    agaw_levels, from_qwords, level_index, level_size, levels_width, pasid_dir_index, pasid_table_index, ContextEntry,
    FaultReason, FlPte, PasidDirEntry, PasidEntry, Pgtt, RootEntry, ScalableContextEntry, ScalableRootEntry, SlPte,
    TranslationType,
};

use super::cache::{CtxEntry, IotlbEntry, Mode, PasidEntryState, PscEntry};
use super::VtdModel;
use crate::dma::{Access, Translation};
use crate::mem::PhysMemory;

/// Scalable-mode fault 0x48, "RID_PASID field error in context entry" (spec 7.1.3; Linux
/// `dma_remap_sm_fault_reasons`): the layout crate names no constant for it.
pub(crate) const SM_RID_PASID_ERROR: FaultReason = FaultReason(0x48);

/// A translation failure before it is reported.
#[derive(Clone, Copy, Debug)]
struct Fault {
    reason: FaultReason,
    /// FPD was set on an entry in force: block the request but do not record it.
    suppress: bool,
}

fn fault(reason: FaultReason, suppress: bool) -> Fault {
    Fault { reason, suppress }
}

/// The legacy or scalable-mode code for one kind of failure.
fn pick(sm: bool, legacy: FaultReason, scalable: FaultReason) -> FaultReason {
    if sm {
        scalable
    } else {
        legacy
    }
}

impl VtdModel {
    /// Translate one request while translation is enabled, reporting any fault.
    pub(super) fn translate_dma(&mut self, mem: &mut PhysMemory, sid: u16, iova: u64, access: Access) -> Translation {
        match self.resolve(mem, sid, iova, access) {
            Ok(phys) => Translation::Ok { phys },
            Err(f) => Translation::Fault(self.report_fault(sid, iova, f.reason, access, f.suppress)),
        }
    }

    fn resolve(&mut self, mem: &mut PhysMemory, sid: u16, iova: u64, access: Access) -> Result<u64, Fault> {
        let sm = self.root.smt();
        let (did, fpd, mode) = self.device_state(mem, sid)?;
        if mode == Mode::PassThrough {
            return Ok(iova);
        }
        // A cached first-level entry whose leaf was clean cannot serve a write: the walk that sets D
        // must happen first.
        let cached = self.caches.iotlb_get(did, iova).filter(|e| access != Access::Write || e.dirty);
        let entry = match cached {
            Some(e) => {
                self.counters.iotlb_hits += 1;
                e
            }
            None => {
                self.counters.iotlb_misses += 1;
                let e = match mode {
                    Mode::SecondLevel { root, levels } => {
                        self.walk_second_level(mem, did, root, levels, iova, access, sm)
                    }
                    Mode::FirstLevel { root, levels } => self.walk_first_level(mem, did, root, levels, iova, access),
                    Mode::PassThrough => return Ok(iova),
                }
                .map_err(|r| fault(r, fpd))?;
                self.caches.iotlb_put(did, iova, e);
                e
            }
        };
        // Permissions are checked against the (possibly cached) result, so a permission change
        // without an invalidation is not seen either.
        match access {
            Access::Write if !entry.w => {
                Err(fault(pick(sm, FaultReason::WriteNotAllowed, FaultReason::SmNoWrite), fpd))
            }
            Access::Read if !entry.r => Err(fault(pick(sm, FaultReason::ReadNotAllowed, FaultReason::SmNoRead), fpd)),
            _ => Ok(entry.phys | (iova & (level_size(entry.level) - 1))),
        }
    }

    /// The domain, FPD and mode of `sid`, through the context (and PASID) caches.
    fn device_state(&mut self, mem: &PhysMemory, sid: u16) -> Result<(u16, bool, Mode), Fault> {
        let ctx = match self.caches.context_get(sid) {
            Some(c) => {
                self.counters.context_hits += 1;
                c
            }
            None => {
                self.counters.context_misses += 1;
                let c = if self.root.smt() { self.sm_context(mem, sid)? } else { self.legacy_context(mem, sid)? };
                self.caches.context_put(sid, c);
                c
            }
        };
        match ctx {
            CtxEntry::Legacy { did, fpd, mode } => Ok((did, fpd, mode)),
            CtxEntry::Scalable { fpd, pasid_dir, rid_pasid } => {
                let p = match self.caches.pasid_get(sid, rid_pasid) {
                    Some(p) => {
                        self.counters.pasid_hits += 1;
                        p
                    }
                    None => {
                        self.counters.pasid_misses += 1;
                        let p = self.pasid_entry(mem, pasid_dir, rid_pasid, fpd)?;
                        self.caches.pasid_put(sid, rid_pasid, p);
                        p
                    }
                };
                Ok((p.did, p.fpd, p.mode))
            }
        }
    }

    /// Whether a table pointer or frame has bits at or above the host address width.
    fn beyond_haw(&self, pa: u64) -> bool {
        pa >> self.cfg.haw != 0
    }

    /// Legacy root and context entry for `sid` (spec 9.1, 9.3; QEMU `vtd_dev_to_context_entry`).
    fn legacy_context(&self, mem: &PhysMemory, sid: u16) -> Result<CtxEntry, Fault> {
        let root_pa = self.root.table().wrapping_add((sid >> 8) as u64 * 16);
        let re = mem.read_u128(root_pa).map_err(|_| fault(FaultReason::RootTableInvalid, false))?;
        let re = RootEntry::from_bits(re);
        if !re.present() {
            return Err(fault(FaultReason::RootNotPresent, false));
        }
        if re.reserved_bits() != 0 || self.beyond_haw(re.context_table()) {
            return Err(fault(FaultReason::RootReserved, false));
        }
        let ce_pa = re.context_table().wrapping_add((sid & 0xff) as u64 * 16);
        let ce = mem.read_u128(ce_pa).map_err(|_| fault(FaultReason::ContextTableInvalid, false))?;
        let ce = ContextEntry::from_bits(ce);
        let fpd = ce.fpd();
        if !ce.present() {
            return Err(fault(FaultReason::ContextNotPresent, fpd));
        }
        if ce.reserved_bits() != 0 {
            return Err(fault(FaultReason::ContextReserved, fpd));
        }
        let invalid = fault(FaultReason::ContextInvalid, fpd);
        let ecap = self.cfg.ecap;
        let mode = match ce.tt() {
            TranslationType::MultiLevel => None,
            // TT 1 needs device-TLB support; TT 2 pass-through support (spec 9.3).
            TranslationType::MultiLevelDevTlb if ecap.dt() => None,
            TranslationType::PassThrough if ecap.pt() => Some(Mode::PassThrough),
            _ => return Err(invalid),
        };
        let mode = match mode {
            Some(m) => m,
            None => {
                if !self.cfg.cap.supports_agaw(ce.aw()) {
                    return Err(invalid);
                }
                if self.beyond_haw(ce.page_table()) {
                    return Err(fault(FaultReason::ContextReserved, fpd));
                }
                Mode::SecondLevel { root: ce.page_table(), levels: agaw_levels(ce.aw()) }
            }
        };
        Ok(CtxEntry::Legacy { did: ce.did(), fpd, mode })
    }

    /// Scalable-mode root and context entry for `sid` (spec 9.2, 9.4).
    fn sm_context(&self, mem: &PhysMemory, sid: u16) -> Result<CtxEntry, Fault> {
        let root_pa = self.root.table().wrapping_add((sid >> 8) as u64 * 16);
        let re = mem.read_u128(root_pa).map_err(|_| fault(FaultReason::SmRootAccess, false))?;
        let re = ScalableRootEntry::from_bits(re);
        if re.reserved_bits() != 0 {
            return Err(fault(FaultReason::SmRootReserved, false));
        }
        let devfn = (sid & 0xff) as u64;
        let (present, table) = if devfn < 0x80 { (re.lp(), re.lower_table()) } else { (re.up(), re.upper_table()) };
        if !present {
            return Err(fault(FaultReason::SmRootNotPresent, false));
        }
        if self.beyond_haw(table) {
            return Err(fault(FaultReason::SmRootReserved, false));
        }
        let mut q = [0u8; 32];
        mem.read(table.wrapping_add((devfn & 0x7f) * 32), &mut q)
            .map_err(|_| fault(FaultReason::SmContextAccess, false))?;
        let qw = |i: usize| u64::from_le_bytes(q[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        let ce = ScalableContextEntry::from_bits(from_qwords([qw(0), qw(1)]));
        let fpd = ce.fpd();
        if !ce.present() {
            return Err(fault(FaultReason::SmContextNotPresent, fpd));
        }
        // The upper 128 bits are reserved (spec 9.4).
        if ce.reserved_bits() != 0 || qw(2) != 0 || qw(3) != 0 || self.beyond_haw(ce.pasid_dir()) {
            return Err(fault(FaultReason::SmContextReserved, fpd));
        }
        if pasid_dir_index(ce.rid_pasid()) >= ce.pasid_dir_entries() {
            return Err(fault(SM_RID_PASID_ERROR, fpd));
        }
        Ok(CtxEntry::Scalable { fpd, pasid_dir: ce.pasid_dir(), rid_pasid: ce.rid_pasid() })
    }

    /// The PASID directory and table entry of `pasid` (spec 9.5, 9.6; QEMU `vtd_get_pe_from_pasid_table`).
    fn pasid_entry(&self, mem: &PhysMemory, dir: u64, pasid: u32, mut fpd: bool) -> Result<PasidEntryState, Fault> {
        let pde = mem
            .read_u64(dir.wrapping_add(pasid_dir_index(pasid) as u64 * 8))
            .map_err(|_| fault(FaultReason::SmPasidDirAccess, fpd))?;
        let pde = PasidDirEntry::from_bits(pde);
        fpd |= pde.fpd();
        if !pde.present() {
            return Err(fault(FaultReason::SmPasidDirNotPresent, fpd));
        }
        if pde.reserved() != 0 || self.beyond_haw(pde.table()) {
            return Err(fault(FaultReason::SmPasidDirReserved, fpd));
        }
        let mut raw = [0u8; 64];
        mem.read(pde.table().wrapping_add(pasid_table_index(pasid) as u64 * 64), &mut raw)
            .map_err(|_| fault(FaultReason::SmPasidEntryAccess, fpd))?;
        let mut q = [0u64; 8];
        for (i, w) in q.iter_mut().enumerate() {
            *w = u64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        }
        let pe = PasidEntry(q);
        let qw0 = pe.qw0();
        fpd |= qw0.fpd();
        if !pe.present() {
            return Err(fault(FaultReason::SmPasidEntryNotPresent, fpd));
        }
        // Only the reserved fields the layout names are checked; the rest of qw1..qw7 carries
        // memory-type fields this model ignores.
        if qw0.reserved_5() != 0 || qw0.reserved() != 0 {
            return Err(fault(FaultReason::SmPasidEntryReserved, fpd));
        }
        let invalid = fault(FaultReason::SmPasidEntryInvalid, fpd);
        let ecap = self.cfg.ecap;
        let mode = match qw0.pgtt() {
            Pgtt::SecondLevel if ecap.slts() => {
                if !self.cfg.cap.supports_agaw(qw0.aw()) {
                    return Err(invalid);
                }
                if self.beyond_haw(pe.second_level_table()) {
                    return Err(fault(FaultReason::SmPasidEntryReserved, fpd));
                }
                Mode::SecondLevel { root: pe.second_level_table(), levels: agaw_levels(qw0.aw()) }
            }
            Pgtt::PassThrough if ecap.pt() => Mode::PassThrough,
            // First level only on a unit that has it (spec 9.6: PGTT 001 with ECAP.FLTS clear is an
            // invalid entry). FLPM 01 needs CAP.FL5LP, 1x is reserved; SRE needs ECAP.SRS and EAFE
            // ECAP.EAFS, else those bits are reserved; FLPTR must lie below HAW.
            Pgtt::FirstLevel if ecap.flts() => {
                let qw2 = pe.qw2();
                let levels = match pe.first_level_levels() {
                    Some(5) if !self.cfg.cap.fl5lp() => return Err(invalid),
                    Some(l) => l,
                    None => return Err(fault(FaultReason::SmPasidEntryReserved, fpd)),
                };
                if qw2.reserved() != 0
                    || (qw2.sre() && !ecap.srs())
                    || (qw2.eafe() && !ecap.eafs())
                    || self.beyond_haw(pe.first_level_table())
                {
                    return Err(fault(FaultReason::SmPasidEntryReserved, fpd));
                }
                Mode::FirstLevel { root: pe.first_level_table(), levels }
            }
            // Nested translation is not modelled and never offered (the model refuses a configuration
            // with ECAP.NEST): PGTT 011 is an invalid entry here, as are the reserved encodings.
            _ => return Err(invalid),
        };
        Ok(PasidEntryState { did: pe.did(), fpd, mode })
    }

    /// Walk a second-level table of `levels` levels for `iova` (spec 3.7, 9.8; QEMU
    /// `vtd_iova_to_slpte`). Permissions are ANDed across levels; an entry with neither R nor W is not
    /// present; PS at level 2 or 3 ends the walk. The entries above the level-1 table come from the
    /// paging-structure caches when `did` has them for this 2 MiB (see `cache`), and go into them otherwise.
    #[allow(clippy::too_many_arguments)]
    fn walk_second_level(
        &mut self,
        mem: &mut PhysMemory,
        did: u16,
        root: u64,
        levels: u32,
        iova: u64,
        access: Access,
        sm: bool,
    ) -> Result<IotlbEntry, FaultReason> {
        self.counters.walks += 1;
        // The input address may use neither more bits than the table translates nor more than MGAW.
        let width = levels_width(levels).min(self.cfg.cap.mgaw() as u32 + 1);
        if width < 64 && iova >> width != 0 {
            return Err(pick(sm, FaultReason::AddressBeyondMgaw, FaultReason::SmAddressBeyondHaw));
        }
        let not_present = match access {
            Access::Write => FaultReason::WriteNotAllowed,
            Access::Read => FaultReason::ReadNotAllowed,
        };
        let (mut r, mut w) = (true, true);
        let (mut table, mut top) = (root, levels);
        if let Some(p) = self.caches.psc_get(did, iova, false) {
            self.counters.psc_hits += 1;
            (r, w, table, top) = (p.r, p.w, p.table, 1);
        }
        for level in (1..=top).rev() {
            let pa = table.wrapping_add(level_index(iova, level) as u64 * 8);
            let pte = mem
                .read_u64_in_page(pa)
                .map_err(|_| pick(sm, FaultReason::NextLevelInvalid, FaultReason::SmSlAccess))?;
            let pte = SlPte::from_bits(pte);
            if !pte.present() {
                return Err(pick(sm, not_present, FaultReason::SmSlPermission));
            }
            if self.sl_reserved(pte, level) {
                return Err(pick(sm, FaultReason::PteReserved, FaultReason::SmSlReserved));
            }
            r &= pte.r();
            w &= pte.w();
            if level == 1 || pte.ps() {
                let size = level_size(level);
                return Ok(IotlbEntry { phys: pte.phys() & !(size - 1), level, r, w, first_level: false, dirty: true });
            }
            table = pte.phys();
            if level == 2 {
                self.caches.psc_put(did, iova, PscEntry { table, r, w, first_level: false });
            }
        }
        // Only reachable with zero levels, which no supported AGAW gives.
        Err(pick(sm, FaultReason::NextLevelInvalid, FaultReason::SmSlAccess))
    }

    /// Walk a first-level (x86-64 format) table of `levels` levels for `iova`, a request without PASID and
    /// so a user-mode, non-execute request (spec 3.6; QEMU `vtd_iova_to_flpte`):
    /// - the input address must be canonical for the paging mode (48 or 57 bits, sign-extended);
    /// - every entry must be present (P), have U/S set (a user request) and, for a write, R/W set;
    ///   reads need nothing more, XD does not apply to non-execute requests;
    /// - reserved bits fault: address bits at or above HAW, PS at level 4 or 5, PS at level 3 without
    ///   CAP.FL1GP, address bits below a large page's size;
    /// - the unit sets A in every entry it uses and, for a write, D in the leaf (spec 3.6.2), writing
    ///   them back to memory; a failed update is fault 0x91.
    ///
    /// The entries above the level-1 table come from the paging-structure caches as for a second-level walk: they
    /// passed every check above when they were cached and their A flags were set then.
    fn walk_first_level(
        &mut self,
        mem: &mut PhysMemory,
        did: u16,
        root: u64,
        levels: u32,
        iova: u64,
        access: Access,
    ) -> Result<IotlbEntry, FaultReason> {
        self.counters.walks += 1;
        let width = levels_width(levels);
        let upper = iova >> (width - 1);
        if upper != 0 && upper != (u64::MAX >> (width - 1)) {
            return Err(FaultReason::SmFlNonCanonical);
        }
        let mut w = true;
        let (mut table, mut top) = (root, levels);
        if let Some(p) = self.caches.psc_get(did, iova, true) {
            self.counters.psc_hits += 1;
            // The walk that cached the path stopped at the first entry without R/W for a write.
            if access == Access::Write && !p.w {
                return Err(FaultReason::SmNoWrite);
            }
            (w, table, top) = (p.w, p.table, 1);
        }
        for level in (1..=top).rev() {
            let pa = table.wrapping_add(level_index(iova, level) as u64 * 8);
            let unreadable = if level == levels { FaultReason::SmFlPointer } else { FaultReason::SmFlAccess };
            let raw = mem.read_u64_in_page(pa).map_err(|_| unreadable)?;
            let pte = FlPte::from_bits(raw);
            if !pte.p() {
                return Err(FaultReason::SmFlNotPresent);
            }
            let leaf = pte.is_leaf(level);
            let no_1g = level == 3 && pte.ps() && !self.cfg.cap.fl1gp();
            if pte.reserved_bits(level, self.cfg.haw as u32) != 0 || no_1g {
                return Err(FaultReason::SmFlReserved);
            }
            if !pte.us() {
                return Err(FaultReason::SmFlPrivilege);
            }
            w &= pte.rw();
            if access == Access::Write && !pte.rw() {
                return Err(FaultReason::SmNoWrite);
            }
            let mut updated = pte.with_a(true);
            if leaf && access == Access::Write {
                updated = updated.with_d(true);
            }
            if updated != pte {
                mem.write_u64(pa, updated.into_bits()).map_err(|_| FaultReason::SmFlFlagUpdate)?;
                self.counters.ad_updates += 1;
            }
            if leaf {
                return Ok(IotlbEntry {
                    phys: pte.leaf_phys(level),
                    level,
                    r: true,
                    w,
                    first_level: true,
                    dirty: updated.d(),
                });
            }
            table = pte.phys();
            if level == 2 {
                self.caches.psc_put(did, iova, PscEntry { table, r: true, w, first_level: true });
            }
        }
        // Only reachable with zero levels, which no FLPM encoding gives.
        Err(FaultReason::SmFlAccess)
    }

    /// Reserved bits of a second-level entry at `level` (spec 9.8; QEMU `vtd_slpte_nonzero_rsvd`):
    /// address bits at or above HAW; SNP unless ECAP.SC; TM in a leaf unless ECAP.DT; PS at level 4 or
    /// 5, or for a page size CAP.SLLPS does not offer; address bits below a large page's size.
    fn sl_reserved(&self, pte: SlPte, level: u32) -> bool {
        let raw = pte.into_bits();
        if raw & mask64(51, self.cfg.haw as u32) != 0 {
            return true;
        }
        if pte.snp() && !self.cfg.ecap.sc() {
            return true;
        }
        let large = pte.ps() && level > 1;
        if large {
            if level > 3 || self.cfg.cap.sllps() & (1 << (level - 2)) == 0 {
                return true;
            }
            if pte.large_page_reserved(level) != 0 {
                return true;
            }
        }
        (level == 1 || large) && pte.tm() && !self.cfg.ecap.dt()
    }
}
