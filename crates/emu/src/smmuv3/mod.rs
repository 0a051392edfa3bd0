//! An Arm SMMUv3 (IHI 0070), modelled after the spec (sections cited per rule), Linux's driver
//! (`drivers/iommu/arm/arm-smmu-v3/`), and where the spec leaves room, QEMU's `hw/arm/smmuv3.c`.
//!
//! What the model does: the register file with per-register writable, read-only and guarded semantics
//! (`regs`); GBPA abort/bypass while SMMUEN = 0; linear and 2-level stream tables, STE configs abort, bypass,
//! stage 1, stage 2 and nested, linear and 2-level CD tables (CD 0 only) (`strtab`); VMSAv8-64 4 KiB-granule
//! stage-1 and stage-2 walks (`walk`); the command queue with CMD_SYNC and CMDQ_ERR (`cmdq`); the event queue,
//! GERROR/GERRORN and MSIs (`evtq`); a configuration cache and a TLB that only commands empty (`cache`); service
//! failure mode on request.
//!
//! What it does not: substreams (every DMA is non-substream traffic; CD 0 serves it through S1DSS), stalls,
//! ATS/PRI, TTB1 walks, 16/64 KiB granules, 52-bit addresses, AArch32 tables, hardware access/dirty updates,
//! secure state, broadcast TLB maintenance, MPAM. A non-coherent walker behaves exactly like a coherent one: the
//! simulator has no CPU caches to miss; [`Smmuv3Model::walker_coherent`] only reports what IDR0.COHACC says.

mod cache;
mod cmdq;
mod event;
mod regs;
mod strtab;
mod translate;

use iommu_spec::smmuv3::{pa_bits, Gerror, Idr0, Idr1, Idr3, Idr5, StLevel, StallModel, TtEndian, Ttf, QUEUE_MAX_LOG2};
use thiserror::Error;

use crate::dma::{Access, FaultInfo, Iommu, Translation};
use crate::mem::PhysMemory;
use crate::platform::MmioDevice;
use cache::Caches;
use event::Deny;
use regs::Regs;

/// [`FaultInfo::code`] of the terminations that write no event record. Event records use their 8-bit event ID
/// (IHI 0070 7.3) as the code; these lie above that range.
pub mod abort_code {
    /// SMMUEN = 0 with GBPA.ABORT = 1 (6.3.14).
    pub const GBPA: u16 = 0x100;
    /// STE.Config = abort (5.2): terminated without an event.
    pub const STE: u16 = 0x101;
    /// Service failure mode (GERROR.SFM_ERR, 12.3): nothing is translated any more.
    pub const SFM: u16 = 0x102;
}

/// What a modelled SMMU implements. `Default` is QEMU's `virt` SMMUv3 (`smmuv3_init_regs`) widened as the
/// simulator needs: 2-level stream tables, 16-bit StreamIDs, stage 1 and stage 2, coherent, MSIs, range
/// invalidation, 19-bit queues, 48-bit output addresses, 4 KiB granule, AArch64 tables only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Smmuv3Config {
    /// IDR1.SIDSIZE: StreamID bits, 0..=32.
    pub sidsize: u8,
    /// IDR1.SSIDSIZE: SubstreamID bits, 0..=20. Non-zero also advertises 2-level CD tables (IDR0.CD2L).
    pub ssidsize: u8,
    /// IDR0.ST_LEVEL = 2-level (else linear only).
    pub two_level_strtab: bool,
    /// IDR0.S1P.
    pub stage1: bool,
    /// IDR0.S2P (with 16-bit VMIDs).
    pub stage2: bool,
    /// IDR0.COHACC: table walks, queues and MSIs are coherent with the CPUs.
    pub coherent: bool,
    /// IDR0.MSI: CMD_SYNC, GERROR and EVTQ interrupts as MSI writes.
    pub msi: bool,
    /// IDR0.HYP: EL2 stage-1 contexts (STE.STRW = EL2) and the TLBI_EL2_* commands.
    pub hyp: bool,
    /// IDR3.RIL: TLBI NUM/SCALE range invalidation.
    pub range_invalidation: bool,
    /// IDR1.CMDQS: largest command queue, log2 entries (≤ 19).
    pub cmdqs: u8,
    /// IDR1.EVTQS: largest event queue, log2 entries (≤ 19).
    pub evtqs: u8,
    /// IDR5.OAS encoding (`pa_bits`): 0..=5, at most 48 bits since descriptors are modelled with 48-bit OAs.
    pub oas: u8,
    /// TLB entries before the model evicts them all (hardware may evict at any time).
    pub tlb_capacity: usize,
    /// Cached STEs plus CDs before the model evicts them all.
    pub cfg_cache_capacity: usize,
}

impl Default for Smmuv3Config {
    fn default() -> Self {
        Smmuv3Config {
            sidsize: 16,
            ssidsize: 0,
            two_level_strtab: true,
            stage1: true,
            stage2: true,
            coherent: true,
            msi: true,
            hyp: false,
            range_invalidation: true,
            cmdqs: 19,
            evtqs: 19,
            oas: 5,
            tlb_capacity: 1 << 20,
            cfg_cache_capacity: 1 << 16,
        }
    }
}

impl Smmuv3Config {
    /// Check that the configuration describes an SMMU this model can be.
    pub fn validate(&self) -> Result<(), Smmuv3ConfigError> {
        if self.sidsize > 32 {
            return Err(Smmuv3ConfigError::SidSize(self.sidsize));
        }
        if self.ssidsize > 20 {
            return Err(Smmuv3ConfigError::SsidSize(self.ssidsize));
        }
        if !self.stage1 && !self.stage2 {
            return Err(Smmuv3ConfigError::NoStage);
        }
        for q in [self.cmdqs, self.evtqs] {
            if q as u32 > QUEUE_MAX_LOG2 {
                return Err(Smmuv3ConfigError::QueueSize(q));
            }
        }
        if self.oas > 5 {
            return Err(Smmuv3ConfigError::Oas(self.oas));
        }
        Ok(())
    }

    /// Output address size in bits.
    pub fn oas_bits(&self) -> u32 {
        pa_bits(self.oas).unwrap_or(48).min(48)
    }

    /// IDR0 (6.3.1). STALL_MODEL = terminate only and TERM_MODEL = 1 (always abort) as QEMU: the model never
    /// stalls and has no RAZ/WI termination.
    pub fn idr0(&self) -> Idr0 {
        Idr0::new()
            .with_s1p(self.stage1)
            .with_s2p(self.stage2)
            .with_ttf(Ttf::AArch64)
            .with_cohacc(self.coherent)
            .with_hyp(self.hyp)
            .with_asid16(true)
            .with_msi(self.msi)
            .with_vmid16(self.stage2)
            .with_cd2l(self.ssidsize > 0)
            .with_ttendian(TtEndian::Little)
            .with_stall_model(StallModel::TerminateOnly)
            .with_term_model(true)
            .with_st_level(if self.two_level_strtab { StLevel::TwoLevel } else { StLevel::LinearOnly })
    }

    /// IDR1 (6.3.2): no PRI queue, no presets.
    pub fn idr1(&self) -> Idr1 {
        Idr1::new()
            .with_sidsize(self.sidsize)
            .with_ssidsize(self.ssidsize)
            .with_evtqs(self.evtqs)
            .with_cmdqs(self.cmdqs)
    }

    /// IDR3 (6.3.4).
    pub fn idr3(&self) -> Idr3 {
        Idr3::new().with_ril(self.range_invalidation)
    }

    /// IDR5 (6.3.6): 4 KiB granule only.
    pub fn idr5(&self) -> Idr5 {
        Idr5::new().with_oas(self.oas).with_gran4k(true)
    }
}

/// A [`Smmuv3Config`] that cannot describe an SMMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum Smmuv3ConfigError {
    /// IDR1.SIDSIZE above 32 bits.
    #[error("SIDSIZE {0} beyond 32")]
    SidSize(u8),
    /// IDR1.SSIDSIZE above 20 bits.
    #[error("SSIDSIZE {0} beyond 20")]
    SsidSize(u8),
    /// Neither IDR0.S1P nor IDR0.S2P set.
    #[error("neither stage 1 nor stage 2 implemented")]
    NoStage,
    /// IDR1.CMDQS or EVENTQS above the architected 2^19 entries.
    #[error("queue size 2^{0} beyond the architected 2^19")]
    QueueSize(u8),
    /// IDR5.OAS encoding above 48 bits.
    #[error("OAS encoding {0} beyond 48 bits")]
    Oas(u8),
}

/// Event counts of one SMMU, for tests, benchmarks and simulator metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Smmuv3Counters {
    /// Translations requested.
    pub translations: u64,
    /// Passed untranslated because SMMUEN = 0 and GBPA.ABORT = 0.
    pub gbpa_bypassed: u64,
    /// Aborted because SMMUEN = 0 and GBPA.ABORT = 1 (no event).
    pub gbpa_aborts: u64,
    /// Aborted by an STE with Config = abort (no event).
    pub ste_aborts: u64,
    /// Passed untranslated by an STE with Config = bypass (or S1DSS bypass without stage 2).
    pub ste_bypassed: u64,
    /// Aborted in service failure mode.
    pub sfm_aborts: u64,
    /// STE lookups served from the configuration cache.
    pub ste_hits: u64,
    /// STE lookups that fetched from the stream table.
    pub ste_misses: u64,
    /// Context-descriptor lookups served from the configuration cache.
    pub cd_hits: u64,
    /// CD lookups that fetched from the CD table.
    pub cd_misses: u64,
    /// Translations served from the TLB.
    pub tlb_hits: u64,
    /// TLB lookups that found nothing and went on to walk.
    pub tlb_misses: u64,
    /// Translation-table walks (a nested walk counts once).
    pub walks: u64,
    /// Of which stage-1 walks that started at the level-3 table, from the walk cache.
    pub walk_cache_hits: u64,
    /// Translations that faulted with an event-class fault (recorded or not).
    pub faults: u64,
    /// Event records written to the event queue.
    pub events_recorded: u64,
    /// Faults not recorded because CD.R / STE.S2R / CR2.RECINVSID said so.
    pub events_suppressed: u64,
    /// Event records lost: EVTQEN = 0, queue full, or the write aborted.
    pub events_dropped: u64,
    /// Event records lost to a full queue.
    pub evtq_overflows: u64,
    /// Commands executed.
    pub commands: u64,
    /// CMD_CFGI_* (configuration-cache invalidation) commands executed.
    pub cfgi_commands: u64,
    /// CMD_TLBI_* commands executed.
    pub tlbi_commands: u64,
    /// CMD_SYNC commands executed.
    pub syncs: u64,
    /// CMD_SYNC completions signalled by an MSI write.
    pub sync_msis: u64,
    /// Command queue errors raised (GERROR.CMDQ_ERR).
    pub cmdq_errors: u64,
    /// GERROR bits toggled active.
    pub gerrors: u64,
    /// GERROR interrupts signalled (wired or MSI).
    pub gerror_irqs: u64,
    /// Event-queue interrupts signalled (wired or MSI).
    pub evtq_irqs: u64,
    /// CMD_SYNC completions signalled by the wired interrupt (CS = SIG_IRQ without an MSI address).
    pub sync_irqs: u64,
    /// Writes ignored because the register is guarded by an enable that was set (6.3.11, 6.3.23–6.3.28).
    pub guarded_writes_ignored: u64,
    /// Accesses of the wrong size or alignment or to no register (read 0, written nowhere).
    pub bad_mmio: u64,
}

/// One SMMUv3.
#[derive(Clone, Debug)]
pub struct Smmuv3Model {
    cfg: Smmuv3Config,
    regs: Regs,
    /// Service failure mode entered (12.3): only a new model leaves it.
    sfm: bool,
    caches: Caches,
    /// Recent translations in front of the caches (`crate::front`), valid for the caches' generation.
    pub(crate) front: crate::front::Front,
    counters: Smmuv3Counters,
    /// Front-cache hits not yet folded into `counters` ([`Self::counters`] folds them).
    pub(crate) tally: crate::front::HitTally,
}

impl Smmuv3Model {
    /// An SMMU after reset.
    ///
    /// # Panics
    /// If `cfg` fails [`Smmuv3Config::validate`] (the configuration is the simulator's, not a guest's).
    pub fn new(cfg: Smmuv3Config) -> Self {
        Self::try_new(cfg).expect("invalid Smmuv3Config")
    }

    /// An SMMU after reset, or why `cfg` cannot describe one.
    pub fn try_new(cfg: Smmuv3Config) -> Result<Self, Smmuv3ConfigError> {
        cfg.validate()?;
        Ok(Smmuv3Model {
            cfg,
            regs: Regs::reset(),
            sfm: false,
            caches: Caches::new(cfg.tlb_capacity, cfg.cfg_cache_capacity),
            front: Default::default(),
            counters: Smmuv3Counters::default(),
            tally: Default::default(),
        })
    }

    /// The ID registers' configuration the SMMU was built with.
    pub fn config(&self) -> &Smmuv3Config {
        &self.cfg
    }

    /// Event counts since creation or the last [`Self::reset_counters`].
    pub fn counters(&self) -> Smmuv3Counters {
        self.tally.folded(self.counters)
    }

    /// Zero every event count (SMMU state is untouched).
    pub fn reset_counters(&mut self) {
        self.tally.reset_with(&mut self.counters);
    }

    /// Empty every cache, as a full invalidation would (caching stays as it was).
    pub fn drop_caches(&mut self) {
        self.caches.cfg_all();
        self.caches.tlb_select(|_| cache::Scope::All);
        self.caches.walk_drop(|_| true);
    }

    /// What the front cache (`crate::front`) holds for this request now, without translating: for tests that an
    /// entry never outlives what could change the answer.
    #[doc(hidden)]
    pub fn front_answers(&self, rid: u32, iova: u64, access: Access) -> Option<u64> {
        self.front.get(self.caches.gen(), rid, iova, access).map(|(phys, _)| phys)
    }

    /// Turn the configuration cache, the TLB and the walk cache on or off (off: every translation fetches and walks,
    /// a benchmark baseline no real SMMU offers). Either way they are emptied.
    pub fn set_caching(&mut self, enabled: bool) {
        self.caches.set_enabled(enabled);
    }

    /// Whether the table walker is coherent with the CPUs (IDR0.COHACC; Linux `ARM_SMMU_FEAT_COHERENCY`), the
    /// condition the kdump series puts on adoption.
    pub fn walker_coherent(&self) -> bool {
        self.cfg.coherent
    }

    /// Enter service failure mode (12.3): GERROR.SFM_ERR toggles active (unless it already is) and from now on
    /// every DMA aborts, whatever software does; acknowledging it through GERRORN does not leave the mode. The
    /// GERROR interrupt is counted but no MSI is written (no memory at hand). The command queue keeps running.
    pub fn inject_sfm_err(&mut self) {
        self.sfm = true;
        self.caches.bump();
        let sfm = Gerror::new().with_sfm_err(true).into_bits();
        if !self.gerror_active().sfm_err() {
            self.regs.gerror ^= sfm;
            self.counters.gerrors += 1;
            if self.regs.irq_ctrlack().gerror_irqen() {
                self.counters.gerror_irqs += 1;
            }
        }
    }

    /// Whether the SMMU is in service failure mode.
    pub fn in_service_failure(&self) -> bool {
        self.sfm
    }

    /// CR0ACK.SMMUEN: translation is on.
    pub fn smmu_enabled(&self) -> bool {
        self.regs.cr0ack().smmuen()
    }

    /// The global errors active now: GERROR xor GERRORN (6.3.18).
    pub fn gerror_active(&self) -> Gerror {
        Gerror::active(self.regs.gerror, self.regs.gerrorn)
    }

    /// Entries held by the TLB, the STE cache and the CD cache.
    pub fn cache_sizes(&self) -> (usize, usize, usize) {
        self.caches.sizes()
    }

    /// Whether the configuration cache holds the STE of `sid`.
    pub fn ste_cached(&self, sid: u32) -> bool {
        self.caches.ste_peek(sid)
    }

    /// Whether the configuration cache holds CD `ssid` of `sid`.
    pub fn cd_cached(&self, sid: u32, ssid: u32) -> bool {
        self.caches.cd_peek(sid, ssid)
    }

    /// The physical address the TLB holds for `iova` under VMID `vmid` and ASID `asid` (`None` for stage-2-only
    /// entries), if any.
    pub fn tlb_lookup(&self, vmid: u16, asid: Option<u16>, iova: u64) -> Option<u64> {
        self.caches.tlb_peek(cache::TlbTag { el2: false, vmid, asid }, iova)
    }
}

impl MmioDevice for Smmuv3Model {
    /// Commands run when their doorbell is written and register reads change nothing.
    fn settled(&self) -> bool {
        true
    }
    fn mmio_read(&mut self, _mem: &mut PhysMemory, off: usize, size: u8) -> u64 {
        let Some((base, upper)) = regs::decode_access(off, size) else {
            self.counters.bad_mmio += 1;
            return 0;
        };
        let v = self.read_reg(base);
        match (size, upper) {
            (8, _) => v,
            (_, true) => v >> 32,
            _ => v & 0xffff_ffff,
        }
    }

    fn mmio_write(&mut self, mem: &mut PhysMemory, off: usize, size: u8, val: u64) {
        // Whatever the write does (SMMUEN, GBPA, the stream table base, commands), the front cache of
        // translations answers nothing from before it.
        self.caches.bump();
        let Some((base, upper)) = regs::decode_access(off, size) else {
            self.counters.bad_mmio += 1;
            return;
        };
        // A 32-bit half of a 64-bit register merges with the other half (6.2: 32-bit accesses to either half
        // are allowed).
        let v = match (size, upper) {
            (8, _) => val,
            (_, true) => (self.regs.raw(base) & 0xffff_ffff) | (val << 32),
            _ => (self.regs.raw(base) & !0xffff_ffff) | (val & 0xffff_ffff),
        };
        self.write_reg(mem, base, v);
    }
}

impl Iommu for Smmuv3Model {
    /// `rid` is the StreamID.
    ///
    /// The front-cache hit, kept to a few dozen instructions with no stack frame: everything else is in
    /// [`Smmuv3Model::translate_miss`], out of line. The front is asked first whatever SMMUEN says: every
    /// register write bumps the generation, so an entry only answers under the enables it was filled with.
    fn translate(&mut self, mem: &mut PhysMemory, rid: u32, iova: u64, access: Access) -> Translation {
        match self.translate_cached(rid, iova, access) {
            Some(phys) => Translation::Ok { phys },
            None => self.translate_miss(mem, rid, iova, access),
        }
    }
    #[inline]
    fn translate_cached(&mut self, rid: u32, iova: u64, access: Access) -> Option<u64> {
        let (phys, hits) = self.front.get(self.caches.gen(), rid, iova, access)?;
        self.count_front_hits(hits, 1);
        Some(phys)
    }
}

impl Smmuv3Model {
    /// Count `n` front-cache hits of an entry with flags `hits`: what the full path would count for each.
    #[inline(always)]
    pub(crate) fn count_front_hits(&mut self, hits: u8, n: u64) {
        self.tally.add(hits, n);
    }

    /// The front cache's generation (asked whatever SMMUEN says), for [`crate::shared`].
    pub(crate) fn front_gen(&self) -> Option<u64> {
        Some(self.caches.gen())
    }

    /// The front cache's answer for this request and its hit flags.
    pub(crate) fn front_entry(&self, rid: u32, iova: u64, access: Access) -> Option<(u64, u8)> {
        self.front.get(self.caches.gen(), rid, iova, access)
    }

    /// Everything but a front-cache hit: the full path through the caches and tables.
    #[cold]
    #[inline(never)]
    fn translate_miss(&mut self, mem: &mut PhysMemory, rid: u32, iova: u64, access: Access) -> Translation {
        self.counters.translations += 1;
        let c = self.counters;
        match self.resolve(mem, rid, iova, access) {
            Ok(phys) => {
                let n = &self.counters;
                let looked = |h: u64, m: u64, h0: u64, m0: u64| h + m > h0 + m0;
                let ste = looked(n.ste_hits, n.ste_misses, c.ste_hits, c.ste_misses);
                // Only what a second transaction would find: the STE held (when one was read) and caching on.
                if self.caches.enabled() && (!ste || self.caches.ste_peek(rid)) {
                    let flag = |on: bool, f: u8| if on { f } else { 0 };
                    let hits = flag(n.gbpa_bypassed > c.gbpa_bypassed, FRONT_GBPA)
                        | flag(ste, FRONT_STE)
                        | flag(n.ste_bypassed > c.ste_bypassed, FRONT_STE_BYPASS)
                        | flag(looked(n.cd_hits, n.cd_misses, c.cd_hits, c.cd_misses), FRONT_CD)
                        | flag(looked(n.tlb_hits, n.tlb_misses, c.tlb_hits, c.tlb_misses), FRONT_TLB);
                    self.front.put(self.caches.gen(), rid, iova, access, phys, hits);
                }
                Translation::Ok { phys }
            }
            Err(Deny::Silent(a)) => {
                let (code, reason) = match a {
                    event::Abort::Gbpa => {
                        self.counters.gbpa_aborts += 1;
                        (abort_code::GBPA, "GBPA abort")
                    }
                    event::Abort::Ste => {
                        self.counters.ste_aborts += 1;
                        (abort_code::STE, "STE abort")
                    }
                    event::Abort::Sfm => {
                        self.counters.sfm_aborts += 1;
                        (abort_code::SFM, "service failure mode")
                    }
                };
                Translation::Fault(FaultInfo { code, reason, recorded: false })
            }
            Err(Deny::Event(f)) => Translation::Fault(self.report(mem, rid, iova, access, f)),
        }
    }
}

/// Which counters a front-cache hit stands for.
const FRONT_GBPA: u8 = 1;
const FRONT_STE: u8 = 2;
const FRONT_STE_BYPASS: u8 = 4;
const FRONT_CD: u8 = 8;
const FRONT_TLB: u8 = 16;

impl crate::stale::FetchAnyTime for Smmuv3Model {
    fn evict_config(&mut self, rid: u32) {
        self.caches.cfgi_ste_range(rid, 1);
    }
    /// C_BAD_STE or C_BAD_CD from an STE with V = 1: an ILLEGAL structure (5.2). An STE with V = 0 is the
    /// legal break of a break-before-make update (Linux `arm_smmu_write_entry`).
    fn illegal(&self, mem: &PhysMemory, rid: u32, f: &FaultInfo) -> bool {
        use iommu_spec::smmuv3::EventId;
        let bad = f.code == EventId::CBadSte.0 as u16 || f.code == EventId::CBadCd.0 as u16;
        bad && self.fetch_ste(mem, rid).is_ok_and(|s| s.valid())
    }
}

impl crate::front::FoldHits for Smmuv3Counters {
    /// What the full path would count for `n` front-cache hits of an entry with flags `hits`.
    fn fold_hits(&mut self, hits: u8, n: u64) {
        self.translations += n;
        self.gbpa_bypassed += u64::from(hits & FRONT_GBPA) * n;
        self.ste_hits += u64::from((hits & FRONT_STE) >> 1) * n;
        self.ste_bypassed += u64::from((hits & FRONT_STE_BYPASS) >> 2) * n;
        self.cd_hits += u64::from((hits & FRONT_CD) >> 3) * n;
        self.tlb_hits += u64::from((hits & FRONT_TLB) >> 4) * n;
    }
}
