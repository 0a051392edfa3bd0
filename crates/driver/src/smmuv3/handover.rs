//! Crash-kernel boot of a live SMMUv3 (Nicolin Chen's v6 kdump series): keep SMMUEN set, adopt the stream
//! table the crashed kernel left in STRTAB_BASE/STRTAB_BASE_CFG (those registers cannot be written while
//! SMMUEN is set), validate it as untrusted, map level-2 tables only when a master behind them is inserted
//! (re-checking its L1 descriptor then), defer attach, leave the event and PRI queues off, and fall back to
//! a full reset with the reason when anything is off.

use iommu_spec::smmuv3::{l1_index, off, Command, Cr0, Gerror, L1Desc, StrtabBase, StrtabBaseCfg, StrtabFmt};

use super::driver::{alloc_contiguous, write_cr0, write_gbpa, MasterState, Smmuv3, MAX_L1_ENTRIES, SPLIT};
use super::scan::{read_ste, SteKind, SteProblem};
use super::{Refusal, SmmuError};
use crate::{BootEnv, Platform, Policy};

/// How a crash boot went for one SMMUv3 (the contract's [`CrashOutcome`](crate::contract::CrashOutcome) says the same for
/// every IOMMU).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SmmuOutcome {
    /// CR0.SMMUEN was clear at probe: nothing to hand over; a normal boot.
    NotLive,
    /// Reset under `reset-abort`, `reset-bypass` or `off`, as asked.
    Reset,
    /// The old stream table is live: STRTAB_BASE was kept and the SMMU never stopped translating.
    Adopted,
    /// Adoption was refused for this reason; the SMMU was reset instead.
    FellBack(Refusal),
}

/// What a crash boot of one SMMUv3 did, for logs and the simulator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmmuReport {
    /// The policy the boot ran under.
    pub policy: Policy,
    /// What became of the SMMU.
    pub outcome: SmmuOutcome,
    /// Frames the boot allocated (its queues and, on a reset, its own stream table); what later master
    /// insertions spend reaches the crash report through
    /// [`IommuDriver::account`](crate::contract::IommuDriver::account).
    pub frames_allocated: u64,
    /// Bytes of the old stream table read at adoption (the L1 table, or the linear table's size).
    pub bytes_mapped: u64,
    /// L1 descriptors adoption would not trust: each was cleared (its streams abort with C_BAD_STREAMID).
    pub problems: alloc::vec::Vec<SteProblem>,
}

impl Smmuv3 {
    /// Crash-kernel boot under `policy`: adopt the live stream table (keeping SMMUEN set), or reset as asked
    /// or when adoption is refused. Level-2 stream tables are checked later, as masters are inserted.
    pub fn init_crash(hw: &mut impl Platform, env: &BootEnv, policy: Policy) -> Result<(Self, SmmuReport), SmmuError> {
        let mut report = SmmuReport {
            policy,
            outcome: SmmuOutcome::Reset,
            frames_allocated: 0,
            bytes_mapped: 0,
            problems: alloc::vec::Vec::new(),
        };
        let cr0 = Cr0::from_bits(hw.read32(off::CR0));
        let v = if !cr0.smmuen() {
            report.outcome = SmmuOutcome::NotLive;
            Self::init(hw)?
        } else {
            match policy {
                // Linux today: GBPA abort, SMMUEN off, a full reset (in-flight DMA aborts).
                Policy::ResetAbort => Self::init(hw)?,
                // Translation off with GBPA bypass: old DMA lands on physical addresses equal to its IOVAs.
                Policy::ResetBypass | Policy::Off => {
                    let mut v = Self::blank(hw);
                    write_gbpa(hw, false)?;
                    write_cr0(hw, Cr0::new())?;
                    v.translating = false;
                    v
                }
                Policy::Adopt | Policy::AdoptScratch => match Self::adopt(hw, env, &mut report.problems) {
                    Ok(v) => {
                        report.outcome = SmmuOutcome::Adopted;
                        v
                    }
                    Err(r) => {
                        report.outcome = SmmuOutcome::FellBack(r);
                        Self::init(hw)?
                    }
                },
            }
        };
        report.frames_allocated = v.frames_allocated;
        report.bytes_mapped = v.adopted_bytes;
        Ok((v, report))
    }

    fn adopt(
        hw: &mut impl Platform,
        env: &BootEnv,
        problems: &mut alloc::vec::Vec<SteProblem>,
    ) -> Result<Self, Refusal> {
        let mut v = Self::blank(hw);
        if !v.idr0.cohacc() {
            return Err(Refusal::NonCoherentWalker);
        }
        if Gerror::active(hw.read32(off::GERROR), hw.read32(off::GERRORN)).sfm_err() {
            return Err(Refusal::ServiceFailure);
        }
        let base = StrtabBase::from_bits(hw.read64(off::STRTAB_BASE)).table();
        let cfg = StrtabBaseCfg::from_bits(hw.read32(off::STRTAB_BASE_CFG));
        if base == 0 {
            return Err(Refusal::Table(super::StrtabRefusal::BaseZero));
        }
        // The format must be one this hardware walks and the one this kernel would have chosen: 2-level
        // wherever IDR0.ST_LEVEL offers it (Linux `arm_smmu_init_strtab`; the series' review calls a linear
        // table on 2-level hardware a bug), linear otherwise. A reserved FMT names no table at all.
        let fmt_ok = match cfg.fmt() {
            StrtabFmt::TwoLevel => v.two_level,
            StrtabFmt::Linear => !v.two_level,
            _ => false,
        };
        if !fmt_ok {
            return Err(Refusal::Format { fmt: cfg.fmt().0, two_level_hw: v.two_level });
        }
        let sidsize = v.idr1.sidsize().min(32);
        let bytes = if cfg.fmt() == StrtabFmt::TwoLevel {
            if cfg.split() != SPLIT {
                return Err(Refusal::Split { found: cfg.split(), want: SPLIT });
            }
            if cfg.log2size() < cfg.split() || cfg.log2size() > sidsize {
                return Err(Refusal::Log2Size { log2size: cfg.log2size(), min: cfg.split(), max: sidsize });
            }
            let entries = 1u64 << (cfg.log2size() - cfg.split());
            if entries > MAX_L1_ENTRIES {
                return Err(Refusal::TooManyL1 { entries, max: MAX_L1_ENTRIES });
            }
            entries * 8
        } else {
            // Linear-only hardware: the kdump kernel would itself allocate 2^SIDSIZE STEs, and the table's
            // entry count is an unsigned int in Linux (the series caps LOG2SIZE at 31).
            let max = sidsize.min(31);
            if cfg.log2size() > max {
                return Err(Refusal::Log2Size { log2size: cfg.log2size(), min: 0, max });
            }
            (1u64 << cfg.log2size()) * 64
        };
        if !env.in_ram(base, bytes) {
            return Err(Refusal::Table(super::StrtabRefusal::NotRam { addr: base, bytes }));
        }
        if env.in_crash_region(base, bytes) {
            return Err(Refusal::Table(super::StrtabRefusal::InCrashRegion { addr: base, bytes }));
        }
        // L1 descriptors the kernel will not trust but the SMMU would keep walking: collected here, cleared
        // once the unit is known to be adoptable.
        let mut untrusted = alloc::vec::Vec::new();
        if cfg.fmt() == StrtabFmt::TwoLevel {
            super::scan::each_l1(&*hw, base, bytes / 8, Refusal::L1Unreadable, |index, raw| {
                let l1 = L1Desc::from_bits(raw);
                if !l1.valid() {
                    return Ok(());
                }
                if l1.span() != SPLIT + 1 {
                    return Err(Refusal::L1Span { index, span: l1.span() });
                }
                let first = (index << SPLIT) as u32;
                let l2 = l1.l2_table();
                let problem = if l1.reserved_bits() != 0 {
                    Some(SteProblem::L1Reserved { index, raw })
                } else if l2 == 0 || !env.in_ram(l2, l1.l2_bytes()) {
                    Some(SteProblem::TableNotRam { sid: first, what: "L2 stream table", addr: l2 })
                } else if env.in_crash_region(l2, l1.l2_bytes()) {
                    Some(SteProblem::TableInCrashRegion { sid: first, what: "L2 stream table", addr: l2 })
                } else {
                    None
                };
                if let Some(p) = problem {
                    untrusted.push(index);
                    problems.push(p);
                }
                Ok(())
            })?;
        }
        v.two_level = cfg.fmt() == StrtabFmt::TwoLevel;
        v.log2size = cfg.log2size();
        v.strtab = base;
        v.adopted_bytes = bytes;
        // The crashed kernel's command queue stops first: acknowledging CMDQ_ERR while CMDQEN is still set
        // restarts it at the faulting command (SMMUv3 7.1). Then acknowledge, then re-base (CMDQ_BASE may
        // change only with CMDQEN clear, 6.3.26).
        hw.write32(off::IRQ_CTRL, 0);
        let cr0 = Cr0::from_bits(hw.read32(off::CR0)).with_evtqen(false).with_priqen(false).with_cmdqen(false);
        write_cr0(hw, cr0).map_err(Refusal::Hardware)?;
        let ge = hw.read32(off::GERROR);
        hw.write32(off::GERRORN, ge);
        let mut n = 0;
        let q = alloc_contiguous(hw, 1, &mut n).map_err(Refusal::Hardware)?;
        v.frames_allocated += n;
        v.start_cmdq(hw, q).map_err(Refusal::Hardware)?;
        // Clear the untrusted descriptors (SPAN 0: no level-2 table, every stream of the span aborts), then
        // drop every cached configuration and translation, theirs included.
        for index in untrusted {
            hw.write_u64(base + 8 * index, 0).map_err(|e| Refusal::Hardware(e.into()))?;
            v.cleared_l1.insert(index);
        }
        v.submit(hw, &[Command::CfgiAll, Command::TlbiNsnhAll]).map_err(Refusal::Hardware)?;
        v.translating = true;
        Ok(v)
    }

    /// A master found during the crash kernel's bus probe: map its level-2 table on first use, re-checking
    /// its L1 descriptor (a span changed since adoption rejects only this master), and keep its STE live
    /// until its driver attaches. Returns the master's state, if it translates through an adopted STE.
    pub fn insert_master(
        &mut self,
        hw: &mut impl Platform,
        env: &BootEnv,
        sid: u32,
    ) -> Result<Option<MasterState>, SteProblem> {
        // A bus probe finds masters in ascending StreamID order: one past the last known is new without a search.
        let known =
            self.masters.last_key_value().is_some_and(|(&last, _)| sid <= last) && self.masters.contains_key(&sid);
        if !self.translating || known || (sid as u64) >> self.log2size != 0 {
            return Ok(self.masters.get(&sid).copied());
        }
        if self.two_level && self.cleared_l1.contains(&(l1_index(sid, SPLIT as u32) as u64)) {
            // Refused at boot with its whole span (the report says why): known, aborting, containable.
            self.masters.insert(sid, MasterState::Refused);
            return Ok(Some(MasterState::Refused));
        }
        let at = if self.two_level {
            let index = l1_index(sid, SPLIT as u32) as u64;
            let raw = hw.read_u64(self.strtab + 8 * index).map_err(|err| SteProblem::Unreadable {
                sid,
                what: "L1 descriptor",
                err,
            })?;
            let l1 = L1Desc::from_bits(raw);
            if !l1.valid() {
                return Ok(None);
            }
            if l1.span() != SPLIT + 1 {
                return Err(SteProblem::L1Span { index, span: l1.span(), want: SPLIT + 1 });
            }
            let l2 = l1.l2_table();
            if l2 == 0 || !env.in_ram(l2, l1.l2_bytes()) {
                return Err(SteProblem::TableNotRam { sid, what: "L2 stream table", addr: l2 });
            }
            if env.in_crash_region(l2, l1.l2_bytes()) {
                return Err(SteProblem::TableInCrashRegion { sid, what: "L2 stream table", addr: l2 });
            }
            if self.l2.insert(index, l2) {
                self.adopted_bytes += l1.l2_bytes();
            }
            l2 + 64 * (sid as u64 & ((1 << SPLIT) - 1))
        } else {
            self.strtab + 64 * sid as u64
        };
        // What the stream's tables reach (the check the "iommu/vt-d: Fix crash dump failure caused by legacy DMA/IO" series asks for), within what is left of this unit's walk budget.
        let reached = |hw: &mut _,
                       budget: &mut usize,
                       bufs: &mut crate::walk::WalkBuffers,
                       st: super::ScannedSte|
         -> Result<_, SteProblem> {
            use crate::walk::{reach_in, Reach};
            let r = match st.kind {
                SteKind::Stage1 { ttb0, walk, .. } => reach_in(hw, &walk, env, ttb0, walk.levels(), budget, bufs),
                SteKind::Stage2 { s2ttb, walk, .. } => reach_in(hw, &walk, env, s2ttb, walk.levels(), budget, bufs),
                _ => None,
            };
            match r {
                None => Ok(st),
                Some(Reach::TableInCrashRegion { addr }) => {
                    Err(SteProblem::TableInCrashRegion { sid, what: "page table", addr })
                }
                Some(Reach::PageInCrashRegion { iova, addr }) => Err(SteProblem::PageInCrashRegion { sid, iova, addr }),
                Some(Reach::Bound { tables }) => Err(SteProblem::WalkBound { sid, tables }),
            }
        };
        let budget = self.walk_budget;
        let read = read_ste(hw, env, sid, at).and_then(|s| match s {
            Some(s) => reached(hw, &mut self.walk_budget, &mut self.walk_bufs, s).map(Some),
            None => Ok(None),
        });
        self.walked_bytes += budget.saturating_sub(self.walk_budget) as u64 * 4096;
        let st = match read {
            Ok(Some(st)) => st,
            Ok(None) => return Ok(None),
            Err(p) => {
                // Its ASID, where a CD can be read, stays out of new domains' way.
                if let Some(asid) = stale_asid(hw, at) {
                    self.asids.reserve(asid as u32);
                }
                // Refused but live: the SMMU would keep walking what it names. Abort the stream and drop
                // every cached translation (its ASID or VMID cannot be trusted either).
                let blocked = self
                    .update_ste(hw, sid, at, &iommu_spec::smmuv3::Ste::abort())
                    .and_then(|_| self.submit(hw, &[Command::TlbiNsnhAll]));
                if blocked.is_ok() {
                    self.masters.insert(sid, MasterState::Refused);
                }
                return Err(p);
            }
        };
        let asid = match st.kind {
            SteKind::Stage1 { asid, .. } | SteKind::Blocked { asid } => Some(asid),
            _ => None,
        };
        if let Some(a) = asid {
            self.asids.reserve(a as u32);
        }
        let state = MasterState::Adopted { asid, kind: st.kind };
        self.masters.insert(sid, state);
        Ok(Some(state))
    }

    /// Point every IOVA of an adopted master at one scratch page: a CD and four shared tables.
    pub fn contain(&mut self, hw: &mut impl Platform, sid: u32) -> Result<(), SmmuError> {
        use iommu_spec::smmuv3::{mair_idx, Cd, S1Dss, S1Fmt, Ste};
        let old = match self.masters.get(&sid).copied() {
            Some(MasterState::Adopted { asid, .. }) => asid,
            // Its STE was rewritten to abort at insertion: contained, its DMA lands in scratch instead.
            Some(MasterState::Refused) => None,
            // Found with no STE adopted or refused (invalid, abort, or corrupted into either): it may still
            // send DMA, which would abort: contained like a refused master.
            None => None,
            _ => return Ok(()),
        };
        let (cd, _asid) = match self.scratch {
            Some((_, cd, asid, _)) => (cd, asid),
            None => {
                let mut n = 0;
                let page = alloc_contiguous(hw, crate::walk::SCRATCH_PAGES, &mut n)?;
                let walk = super::Vmsa { stage: super::Stage::One, start: 0, ia_bits: 48 };
                let top =
                    crate::walk::build_scratch_chain(hw, &walk, walk.levels(), page, &mut n).map_err(|e| match e {
                        crate::walk::MapError::Mem(m) => SmmuError::Mem(m),
                        _ => SmmuError::OutOfMemory,
                    })?;
                let asid = self.asids.alloc().ok_or(SmmuError::OutOfAsids)? as u16;
                let cd = alloc_contiguous(hw, 1, &mut n)?;
                let c = Cd::s1(asid, top, super::driver::T0SZ, 5, mair_idx::LINUX_MAIR);
                for (i, w) in c.0.iter().enumerate() {
                    hw.write_u64(cd + 8 * i as u64, *w)?;
                }
                self.frames_allocated += n;
                self.scratch = Some((page, cd, asid, n));
                (cd, asid)
            }
        };
        let slot = self.ste_slot(hw, sid)?;
        self.update_ste(hw, sid, slot, &Ste::s1(cd, S1Fmt::Linear, 0, S1Dss::Ssid0))?;
        if let Some(a) = old {
            self.submit(hw, &[Command::TlbiNhAsid { vmid: 0, asid: a }])?;
        }
        self.masters.insert(sid, MasterState::Contained);
        Ok(())
    }

    /// Masters still on an adopted bypass STE: they reach all of memory, the crash kernel's region included,
    /// until they are contained or attached.
    pub fn unconfined(&self) -> alloc::vec::Vec<u32> {
        self.masters
            .iter()
            .filter(|(_, m)| matches!(m, MasterState::Adopted { kind: SteKind::Bypass, .. }))
            .map(|(&sid, _)| sid)
            .collect()
    }

    /// The scratch region contained masters' DMA lands in.
    pub fn scratch_region(&self) -> Option<core::ops::Range<u64>> {
        self.scratch.map(|s| s.0..s.0 + crate::walk::SCRATCH_PAGES * 4096)
    }
    /// Frames spent on scratch containment (the scratch region and its chain of shared tables).
    pub fn scratch_frames(&self) -> u64 {
        self.scratch.map_or(0, |s| s.3)
    }
}

/// The ASID of the stage-1 STE at `at`, if its (linear, first) CD can be read at all.
fn stale_asid(hw: &impl crate::PhysMem, at: u64) -> Option<u16> {
    let ste = iommu_spec::smmuv3::Ste([hw.read_u64(at).ok()?, 0, 0, 0, 0, 0, 0, 0]);
    if !ste.valid() || !ste.config().s1_enabled() {
        return None;
    }
    let mut cd = [0u64; 8];
    for (i, w) in cd.iter_mut().enumerate() {
        *w = hw.read_u64(ste.s1_context_ptr().checked_add(8 * i as u64)?).ok()?;
    }
    let cd = iommu_spec::smmuv3::Cd(cd);
    cd.valid().then(|| cd.asid())
}
