//! Translation of one transaction (IHI 0070 3.2, 3.4) and the VMSAv8-64 4 KiB-granule walks of stage 1 (CD.TTB0)
//! and stage 2 (STE.S2TTB) (Arm ARM D8; QEMU `smmu_ptw_64_s1`, `smmu_ptw_64_s2`).
//!
//! Order of checks, as the spec orders fault priority: service failure mode; SMMUEN = 0 and GBPA; the STE (abort,
//! bypass, or translate); the CD; then the TLB or a walk. A walk reports, at the first descriptor that causes
//! one: F_WALK_EABT (descriptor unreadable), F_TRANSLATION (invalid or reserved descriptor, input address out of
//! range), F_ADDR_SIZE (an output or next-table address beyond the IPS / S2PS), F_ACCESS (AF = 0 without AFFD);
//! F_PERMISSION comes last, from the permissions ANDed along the walk (APTable limits included, IDR3.HAD = 0), and
//! is checked against cached entries too, so a permission change without a TLBI is not seen either.
//!
//! Nested translation: every stage-1 table address and the CD address are IPAs translated by stage 2 first (a
//! stage-2 fault there has CLASS = TT or CD), and the stage-1 output IPA is translated last (CLASS = IN). A stage-1
//! permission fault is found before the output goes through stage 2. Only the combined translation is cached.

use iommu_platform::PhysMem;
use iommu_spec::mask64;
use iommu_spec::smmuv3::{
    desc_kind, level_index, level_shift, DescKind, EventClass, EventId, Perm, S1Pte, S2Pte, TableDesc,
};

use super::cache::{TlbEntry, TlbTag, WalkEntry};
use super::event::{Abort, Deny, Fault};
use super::strtab::{S1Src, SteState, TransCfg};
use super::Smmuv3Model;
use crate::dma::Access;
use crate::mem::PhysMemory;

/// A decoded CD: the stage-1 walk of non-substream traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct S1Cfg {
    pub asid: u16,
    /// TTB0 (an IPA when nested).
    pub ttb: u64,
    /// Input address bits, `64 - T0SZ`.
    pub ia_bits: u32,
    pub start: u32,
    /// Output (IPA) size: CD.IPS capped to OAS.
    pub oa_bits: u32,
    /// TTB0 walks disabled: every address faults.
    pub epd0: bool,
    /// Top-byte ignore for TTB0.
    pub tbi: bool,
    pub affd: bool,
    /// CD.R: record translation-class faults.
    pub record: bool,
}

/// A decoded stage-2 configuration from the STE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct S2Cfg {
    pub vmid: u16,
    pub ttb: u64,
    /// IPA bits, `64 - S2T0SZ` (the start level's index is wider with concatenated tables).
    pub ia_bits: u32,
    pub start: u32,
    /// Output size: S2PS capped to OAS.
    pub oa_bits: u32,
    pub affd: bool,
    /// STE.S2R: record translation-class faults.
    pub record: bool,
}

/// A leaf a walk found: the output block and what it grants, to unprivileged and privileged accesses (index by
/// `privileged as usize`; the same for stage 2).
#[derive(Clone, Copy, Debug)]
struct Leaf {
    out: u64,
    shift: u32,
    perm: [Perm; 2],
    global: bool,
}

/// The bits below `shift`.
pub(super) fn low_mask(shift: u32) -> u64 {
    if shift >= 64 {
        u64::MAX
    } else {
        (1 << shift) - 1
    }
}

fn allows(p: Perm, access: Access) -> bool {
    match access {
        Access::Read => p.read,
        Access::Write => p.write,
    }
}

/// Whether a descriptor's address at `level` (a leaf's output, or with level 3 a table's next-table address)
/// reaches `oa_bits` or beyond. Bits 51:48 are address bits the 48-bit layout leaves RES0, so they count.
fn beyond_oa(raw: u64, level: u32, oa_bits: u32) -> bool {
    let addr = raw & mask64(51, 12) & !low_mask(level_shift(level));
    addr.checked_shr(oa_bits).unwrap_or(0) != 0
}

impl Smmuv3Model {
    /// Translate one transaction of `sid` to a physical address.
    pub(super) fn resolve(&mut self, mem: &mut PhysMemory, sid: u32, iova: u64, access: Access) -> Result<u64, Deny> {
        if self.sfm {
            return Err(Deny::Silent(Abort::Sfm));
        }
        // SMMUEN = 0: GBPA decides for every stream (6.3.14), no event either way.
        if !self.regs.cr0ack().smmuen() {
            if self.regs.gbpa().abort() {
                return Err(Deny::Silent(Abort::Gbpa));
            }
            self.counters.gbpa_bypassed += 1;
            return Ok(iova);
        }
        let t = match self.stream_config(mem, sid)? {
            SteState::Abort => return Err(Deny::Silent(Abort::Ste)),
            SteState::Bypass => {
                self.counters.ste_bypassed += 1;
                return Ok(iova);
            }
            SteState::Translate(t) => t,
        };
        let s1 = match t.s1 {
            Some(S1Src::Cd { ptr, fmt }) => Some(self.context(mem, sid, &t, ptr, fmt)?),
            Some(S1Src::Terminate) => return Err(Fault::config(EventId::FStreamDisabled).into()),
            Some(S1Src::Bypass) | None => None,
        };
        if s1.is_none() && t.s2.is_none() {
            self.counters.ste_bypassed += 1;
            return Ok(iova);
        }
        let tag = TlbTag { el2: t.el2, vmid: t.vmid, asid: s1.map(|c| c.asid) };
        let e = match self.caches.tlb_get(tag, iova) {
            Some(e) => {
                self.counters.tlb_hits += 1;
                e
            }
            None => {
                self.counters.tlb_misses += 1;
                let e = self.walk(mem, tag, &t, s1.as_ref(), iova, access).map_err(|f| f.with_pnu(t.privileged))?;
                self.caches.tlb_put(tag, iova, e);
                e
            }
        };
        if !allows(e.perm1[t.privileged as usize], access) {
            let record = s1.is_some_and(|c| c.record);
            return Err(Fault::stage1(EventId::FPermission, record).with_pnu(t.privileged).into());
        }
        if !allows(e.perm2, access) {
            let record = t.s2.is_some_and(|c| c.record);
            let ipa = e.ipa | (iova & low_mask(e.shift));
            return Err(Fault::stage2(EventId::FPermission, record, ipa, EventClass::In).with_pnu(t.privileged).into());
        }
        Ok(e.phys | (iova & low_mask(e.shift)))
    }

    /// Walk every stage `t` enables for `iova` and combine the result into one TLB entry.
    fn walk(
        &mut self,
        mem: &mut PhysMemory,
        tag: TlbTag,
        t: &TransCfg,
        s1: Option<&S1Cfg>,
        iova: u64,
        access: Access,
    ) -> Result<TlbEntry, Fault> {
        self.counters.walks += 1;
        let (ipa, shift1, perm1, global) = match s1 {
            Some(c) => {
                let l = self.walk_s1(mem, tag, c, t.s2.as_ref(), iova)?;
                if !allows(l.perm[t.privileged as usize], access) {
                    return Err(Fault::stage1(EventId::FPermission, c.record));
                }
                (l.out | (iova & low_mask(l.shift)), l.shift, l.perm, l.global)
            }
            None => (iova, 64, [Perm::RW; 2], false),
        };
        let (phys, shift2, perm2) = match &t.s2 {
            Some(c) => {
                let l = self.walk_s2(mem, c, ipa, EventClass::In)?;
                (l.out | (ipa & low_mask(l.shift)), l.shift, l.perm[0])
            }
            None => (ipa, 64, Perm::RW),
        };
        let shift = shift1.min(shift2);
        Ok(TlbEntry { phys: phys & !low_mask(shift), ipa: ipa & !low_mask(shift), shift, perm1, perm2, global })
    }

    /// Stage-1 walk from TTB0 (Arm ARM D8.2). TTB1 is never walked: an address in the upper range faults like
    /// one outside both (Linux always sets EPD1). The result holds the permissions of both privilege levels, as a
    /// TLB entry does, since streams of different PRIVCFG may share an ASID. Without stage 2, the descriptors above
    /// the level-3 table come from the walk cache when `tag` has them for this 2 MiB (see `cache`), and go into it
    /// otherwise.
    fn walk_s1(
        &mut self,
        mem: &mut PhysMemory,
        tag: TlbTag,
        c: &S1Cfg,
        s2: Option<&S2Cfg>,
        va: u64,
    ) -> Result<Leaf, Fault> {
        let fault = |id| Fault::stage1(id, c.record);
        let top = if c.tbi { va & mask64(55, 0) } else { va };
        if c.epd0 || top.checked_shr(c.ia_bits).unwrap_or(0) != 0 {
            return Err(fault(EventId::FTranslation));
        }
        let mut table = c.ttb;
        let mut limit = [Perm::RW; 2];
        let mut first = c.start;
        let cached = s2.is_none() && c.start < 3;
        if let Some(w) = cached.then(|| self.caches.walk_get(tag, top)).flatten() {
            self.counters.walk_cache_hits += 1;
            (table, limit, first) = (w.table, w.limit, 3);
        }
        for level in first..=3 {
            let desc = table.wrapping_add(level_index(va, level, c.start, c.ia_bits) * 8);
            let pa = match s2 {
                Some(s2) => self.s2_read(mem, s2, desc, EventClass::Tt)?,
                None => desc,
            };
            let raw = mem.read_u64_in_page(pa).map_err(|_| Fault::walk_eabt(pa, false, EventClass::Tt))?;
            match desc_kind(raw, level) {
                DescKind::Table => {
                    if beyond_oa(raw, 3, c.oa_bits) {
                        return Err(fault(EventId::FAddrSize));
                    }
                    let td = TableDesc::from_bits(raw);
                    limit = [limit[0].and(td.limit(false)), limit[1].and(td.limit(true))];
                    table = td.next_table();
                    if level == 2 && cached {
                        self.caches.walk_put(tag, top, WalkEntry { table, limit });
                    }
                }
                DescKind::Block | DescKind::Page => {
                    let pte = S1Pte::from_bits(raw);
                    if beyond_oa(raw, level, c.oa_bits) {
                        return Err(fault(EventId::FAddrSize));
                    }
                    if !pte.af() && !c.affd {
                        return Err(fault(EventId::FAccess));
                    }
                    let perm = [pte.perm(false).and(limit[0]), pte.perm(true).and(limit[1])];
                    return Ok(Leaf { out: pte.output(level), shift: level_shift(level), perm, global: !pte.ng() });
                }
                DescKind::Invalid | DescKind::Reserved => return Err(fault(EventId::FTranslation)),
            }
        }
        Err(fault(EventId::FTranslation))
    }

    /// Stage-2 walk from S2TTB for `ipa`, an address of `class` (Arm ARM D8.2; concatenated start tables through
    /// the wider start-level index).
    fn walk_s2(&mut self, mem: &PhysMemory, c: &S2Cfg, ipa: u64, class: EventClass) -> Result<Leaf, Fault> {
        let fault = |id| Fault::stage2(id, c.record, ipa, class);
        if ipa.checked_shr(c.ia_bits).unwrap_or(0) != 0 {
            return Err(fault(EventId::FTranslation));
        }
        let mut table = c.ttb;
        for level in c.start..=3 {
            let pa = table.wrapping_add(level_index(ipa, level, c.start, c.ia_bits) * 8);
            let raw = mem.read_u64(pa).map_err(|_| Fault::walk_eabt(pa, true, class))?;
            match desc_kind(raw, level) {
                DescKind::Table => {
                    if beyond_oa(raw, 3, c.oa_bits) {
                        return Err(fault(EventId::FAddrSize));
                    }
                    table = TableDesc::from_bits(raw).next_table();
                }
                DescKind::Block | DescKind::Page => {
                    let pte = S2Pte::from_bits(raw);
                    if beyond_oa(raw, level, c.oa_bits) {
                        return Err(fault(EventId::FAddrSize));
                    }
                    if !pte.af() && !c.affd {
                        return Err(fault(EventId::FAccess));
                    }
                    return Ok(Leaf {
                        out: pte.output(level),
                        shift: level_shift(level),
                        perm: [pte.perm(); 2],
                        global: false,
                    });
                }
                DescKind::Invalid | DescKind::Reserved => return Err(fault(EventId::FTranslation)),
            }
        }
        Err(fault(EventId::FTranslation))
    }

    /// The physical address of a structure the SMMU reads at `ipa` (a stage-1 table, a CD): its stage-2
    /// translation, which must grant read.
    pub(super) fn s2_read(&mut self, mem: &PhysMemory, c: &S2Cfg, ipa: u64, class: EventClass) -> Result<u64, Fault> {
        let l = self.walk_s2(mem, c, ipa, class)?;
        if !l.perm[0].read {
            return Err(Fault::stage2(EventId::FPermission, c.record, ipa, class));
        }
        Ok(l.out | (ipa & low_mask(l.shift)))
    }
}
