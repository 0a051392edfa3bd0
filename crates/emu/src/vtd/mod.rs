//! An Intel VT-d DMA-remapping unit, modelled after the spec (rev. 4.x; sections cited per rule), the
//! Linux's `drivers/iommu/intel/`, and where the spec leaves room, QEMU's `hw/i386/intel_iommu.c`.
//!
//! What the model does: the register file with its masks (`regs`), GCMD/GSTS with latched root and
//! interrupt-table pointers, register-based and queued invalidation (`qi`), a context cache, a PASID
//! cache and an IOTLB that only invalidations empty (`cache`), legacy and scalable-mode translation
//! (`translate`), primary fault recording (`fault`) and interrupt remapping of MSIs through an
//! interrupt-entry cache (`irq`).
//!
//! First-level translation (PGTT 001, ECAP.FLTS) is modelled for requests without PASID, with its A/D
//! updates.
//!
//! What it does not: nested translation, requests with PASID, ATS/device-TLB contents,
//! page requests, posted interrupts (CAP.PI is refused; a posted IRTE is a reserved entry), IO-APIC
//! interrupts (only MSIs go through `irq`), advanced fault logging, protected memory regions, paging-structure caches, accessed/dirty bits.

mod cache;
mod cmdq;
mod event;
mod irq;
mod regs;
mod translate;

use iommu_spec::vtd::{off, Cap, Ecap, FaultRecord, Gcmd, Gsts, IqPtr, Iqa, Irta, RtAddr};
use thiserror::Error;

use crate::dma::{Access, Iommu, Translation};
use crate::mem::PhysMemory;
use crate::platform::MmioDevice;
use cache::Caches;
use regs::RegFile;

/// Capabilities and shape of a modelled unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VtdConfig {
    /// VER register value.
    pub ver: u32,
    /// CAP register value (spec 10.4.2): domains (ND), AGAWs (SAGAW), MGAW, fault-record placement (FRO, NFR),
    /// PSI/MAMV, large pages (SLLPS, FL1GP); CAP.PI must be clear.
    pub cap: Cap,
    /// ECAP register value (spec 10.4.3): coherency (C), QI, IR/EIM, PT, IOTLB offset (IRO), scalable mode
    /// (SMTS) and its translation types (SLTS, FLTS); ECAP.NEST must be clear.
    pub ecap: Ecap,
    /// Bytes of MMIO space; registers beyond the architectural ones (IOTLB, fault records) must fit.
    pub mmio_size: usize,
    /// Host address width: table pointers and page frames with bits at or above it are reserved.
    pub haw: u8,
    /// IOTLB entries before the model evicts them all (hardware may evict at any time).
    pub iotlb_capacity: usize,
}

impl Default for VtdConfig {
    /// A modern unit: 3- and 4-level tables, 48-bit MGAW, 65536 domains, 8 fault records at 0x220
    /// after the IOTLB registers at 0xF0 (QEMU's layout), PSI with MAMV 9, 2 MiB and 1 GiB pages, no
    /// caching mode and no ESRTPS (so a missing flush shows), coherent walks, QI, IR with x2APIC (EIM),
    /// pass-through,
    /// scalable mode with second-level translation.
    fn default() -> Self {
        VtdConfig {
            ver: 0x30,
            cap: Cap::new()
                .with_nd(6)
                .with_sagaw(0b0110)
                .with_mgaw(47)
                .with_fro(0x22)
                .with_nfr(7)
                .with_psi(true)
                .with_mamv(9)
                .with_sllps(0b11),
            ecap: Ecap::new()
                .with_c(true)
                .with_qi(true)
                .with_ir(true)
                .with_eim(true)
                .with_pt(true)
                .with_iro(0xf)
                .with_smts(true)
                .with_slts(true),
            mmio_size: 0x1000,
            haw: 48,
            iotlb_capacity: 1 << 20,
        }
    }
}

impl VtdConfig {
    /// The default unit offering first-level translation only, as QEMU's `x-flts=on` does (ECAP.FLTS set,
    /// SLTS clear; CAP.FL1GP for 1 GiB pages), so a kernel on it must build first-level tables.
    pub fn first_level_only() -> Self {
        let d = VtdConfig::default();
        VtdConfig { cap: d.cap.with_fl1gp(true), ecap: d.ecap.with_slts(false).with_flts(true), ..d }
    }

    /// The default unit without scalable mode (a VT-d 1.x/2.x-style part).
    pub fn legacy_only() -> Self {
        let d = VtdConfig::default();
        VtdConfig { ver: 0x10, ecap: d.ecap.with_smts(false).with_slts(false), ..d }
    }

    /// Check that the layout fits and nothing overlaps.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(0x100..=0x10_0000).contains(&self.mmio_size) || !self.mmio_size.is_multiple_of(16) {
            return Err(ConfigError::MmioSize(self.mmio_size));
        }
        if !(32..=52).contains(&self.haw) {
            return Err(ConfigError::Haw(self.haw));
        }
        if self.cap.pi() {
            return Err(ConfigError::Unmodelled("posted interrupts (CAP.PI)"));
        }
        if self.ecap.nest() {
            return Err(ConfigError::Unmodelled("nested translation (ECAP.NEST)"));
        }
        let iotlb = off::iva(self.ecap.iro())..off::iva(self.ecap.iro()) + 16;
        let frcd = off::frcd(self.cap.fro(), 0)..off::frcd(self.cap.fro(), self.cap.fault_records());
        // 0x000..0x0F0 holds the architectural registers (up to the page-request event registers
        // at 0xE0..0xF0); QEMU puts IVA right after them, at 0xF0.
        for (what, r) in [("IVA/IOTLB", &iotlb), ("fault records", &frcd)] {
            if r.start < 0xf0 || r.end > self.mmio_size {
                return Err(ConfigError::Placement(what, r.start));
            }
        }
        if iotlb.start < frcd.end && frcd.start < iotlb.end {
            return Err(ConfigError::Placement("fault records over IOTLB", frcd.start));
        }
        Ok(())
    }
}

/// A [`VtdConfig`] that cannot describe a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// `mmio_size` is not a multiple of 16 in 0x100..=0x100000.
    #[error("MMIO size {0:#x} is not a multiple of 16 in 0x100..=0x100000")]
    MmioSize(usize),
    /// `haw` is outside 32..=52 bits.
    #[error("host address width {0} outside 32..=52")]
    Haw(u8),
    /// A capability the model does not implement (posted interrupts, nested translation) is advertised.
    #[error("{0} is not modelled; a unit claiming it would translate what the model cannot")]
    Unmodelled(&'static str),
    /// The IOTLB registers (ECAP.IRO) or fault records (CAP.FRO, NFR) overlap the architectural registers,
    /// each other, or run past `mmio_size`.
    #[error("{0} at {1:#x} overlap the architectural registers or leave the MMIO space")]
    Placement(&'static str, usize),
}

/// Event counts of one unit, for tests, benchmarks and simulator metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VtdCounters {
    /// Translations requested.
    pub translations: u64,
    /// Of which passed through untranslated because GSTS.TES = 0.
    pub untranslated: u64,
    /// Translations served from the IOTLB.
    pub iotlb_hits: u64,
    /// IOTLB lookups that found nothing and went on to the context and paging structures.
    pub iotlb_misses: u64,
    /// Context-entry lookups served from the context cache.
    pub context_hits: u64,
    /// Context-entry lookups that read the root and context tables.
    pub context_misses: u64,
    /// PASID-entry lookups (scalable mode) served from the PASID cache.
    pub pasid_hits: u64,
    /// PASID-entry lookups that read the PASID directory and table.
    pub pasid_misses: u64,
    /// Page walks (second- and first-level).
    pub walks: u64,
    /// Of which started at the level-1 table, from the paging-structure caches.
    pub psc_hits: u64,
    /// First-level A/D flags the unit wrote back to a paging entry.
    pub ad_updates: u64,
    /// Translations that faulted.
    pub faults: u64,
    /// Faults written to a fault recording register.
    pub faults_recorded: u64,
    /// Faults not recorded because fault processing was disabled (FPD).
    pub faults_suppressed: u64,
    /// Faults not recorded because of an overflow (PFO set, or the next record still pending).
    pub faults_dropped: u64,
    /// Fault-event interrupt messages sent (FECTL.IM clear).
    pub fault_interrupts: u64,
    /// Invalidation-event interrupt messages sent (IECTL.IM clear).
    pub inv_interrupts: u64,
    /// Queued-invalidation descriptors executed.
    pub qi_descriptors: u64,
    /// Invalidation queue errors raised (FSTS.IQE).
    pub qi_errors: u64,
    /// Context-cache invalidations done, by CCMD.ICC or a context-cache invalidate descriptor.
    pub context_invalidations: u64,
    /// IOTLB invalidations done, by the IOTLB register's IVT or an IOTLB / PASID-based-IOTLB descriptor.
    pub iotlb_invalidations: u64,
    /// PASID-cache invalidate descriptors executed (scalable mode).
    pub pasid_invalidations: u64,
    /// Interrupt messages seen.
    pub interrupts: u64,
    /// Of which remapped through an IRTE.
    pub interrupts_remapped: u64,
    /// Of which blocked with an interrupt-remapping fault.
    pub interrupt_faults: u64,
    /// IRTE lookups served from the interrupt-entry cache.
    pub iec_hits: u64,
    /// Interrupt-entry-cache invalidate descriptors executed (spec 6.5.2.7).
    pub iec_invalidations: u64,
    /// Register accesses outside the MMIO space or not naturally aligned (ignored, read 0).
    pub bad_mmio: u64,
}

/// The invalidation queue as latched when GCMD.QIE enabled it (spec 6.5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IqState {
    iqa: Iqa,
}

/// One VT-d remapping unit.
#[derive(Clone, Debug)]
pub struct VtdModel {
    cfg: VtdConfig,
    regs: RegFile,
    /// The root-table pointer in use: RTADDR as latched by the last SRTP (spec 10.4.6).
    root: RtAddr,
    /// IRTA as latched by the last SIRTP.
    irta: Irta,
    /// The queue in use while QIES = 1.
    iq: Option<IqState>,
    /// Where the next fault record goes (spec 7.3.1: round-robin).
    next_frcd: usize,
    /// GSTS.TES, as a plain field for the translation fast path (kept by `set_gsts`).
    tes: bool,
    caches: Caches,
    /// Recent translations in front of the caches (`crate::front`), valid for the caches' generation.
    pub(crate) front: crate::front::Front,
    /// Interrupt-entry cache: IRTEs by index (see `irq`).
    iec: std::collections::BTreeMap<u32, iommu_spec::vtd::Irte>,
    counters: VtdCounters,
    /// Front-cache hits not yet folded into `counters` ([`Self::counters`] folds them).
    pub(crate) tally: crate::front::HitTally,
}

impl VtdModel {
    /// A unit after reset.
    ///
    /// # Panics
    /// If `cfg` fails [`VtdConfig::validate`] (the configuration is the simulator's, not a guest's).
    pub fn new(cfg: VtdConfig) -> Self {
        Self::try_new(cfg).expect("invalid VtdConfig")
    }

    /// A unit after reset, or why `cfg` cannot describe one.
    pub fn try_new(cfg: VtdConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(VtdModel {
            cfg,
            regs: regs::define(&cfg),
            root: RtAddr::new(),
            irta: Irta::new(),
            iq: None,
            next_frcd: 0,
            tes: false,
            caches: Caches::new(cfg.iotlb_capacity),
            front: Default::default(),
            iec: Default::default(),
            counters: VtdCounters::default(),
            tally: Default::default(),
        })
    }

    /// The capabilities the unit was built with.
    pub fn config(&self) -> &VtdConfig {
        &self.cfg
    }

    /// Event counts since creation or the last [`Self::reset_counters`].
    pub fn counters(&self) -> VtdCounters {
        self.tally.folded(self.counters)
    }

    /// Zero every event count (unit state is untouched).
    pub fn reset_counters(&mut self) {
        self.tally.reset_with(&mut self.counters);
    }

    /// Empty every cache, as a full invalidation would (caching stays as it was).
    pub fn drop_caches(&mut self) {
        self.caches.invalidate_all();
        self.iec.clear();
    }

    /// Turn the context, PASID, IOTLB and paging-structure caches on or off (off: every translation walks the
    /// tables, a benchmark baseline that no real unit offers). Either way the caches are emptied.
    pub fn set_caching(&mut self, enabled: bool) {
        self.caches.set_enabled(enabled);
    }

    /// GSTS.TES.
    pub fn translation_enabled(&self) -> bool {
        self.tes
    }

    /// The latched root-table pointer (including SMT).
    pub fn active_root(&self) -> RtAddr {
        self.root
    }

    /// The latched interrupt-remapping table pointer.
    pub fn active_irta(&self) -> Irta {
        self.irta
    }

    /// Translations that faulted since reset (recorded or not).
    pub fn fault_count(&self) -> u64 {
        self.counters.faults
    }

    /// The fault recording registers with F set, by index.
    pub fn recorded_faults(&self) -> Vec<(usize, FaultRecord)> {
        (0..self.cfg.cap.fault_records()).map(|n| (n, self.frcd(n))).filter(|(_, r)| r.f()).collect()
    }

    /// Entries held by the IOTLB, the context cache and the PASID cache.
    pub fn cache_sizes(&self) -> (usize, usize, usize) {
        self.caches.sizes()
    }

    /// Whether the IOTLB holds a translation of `iova` for domain `did`, and to which physical address.
    pub fn iotlb_lookup(&self, did: u16, iova: u64) -> Option<u64> {
        self.caches.iotlb_peek(did, iova)
    }

    /// What the front cache (`crate::front`) holds for this request now, without translating: for tests that an
    /// entry never outlives what could change the answer.
    #[doc(hidden)]
    pub fn front_answers(&self, rid: u32, iova: u64, access: Access) -> Option<u64> {
        self.front.get(self.caches.gen(), rid, iova, access).map(|(phys, _)| phys)
    }

    /// Whether the context cache holds an entry for source `sid`.
    pub fn context_cached(&self, sid: u16) -> bool {
        self.caches.context_peek(sid)
    }

    fn gsts(&self) -> Gsts {
        Gsts::from_bits(self.regs.get32(off::GSTS))
    }

    /// The only writer of GSTS (software cannot write it): it keeps `tes` in step.
    fn set_gsts(&mut self, g: Gsts) {
        self.regs.set32(off::GSTS, g.into_bits());
        self.tes = g.tes();
    }

    /// GCMD write (spec 10.4.4; Linux's gcmd shadow): software writes the full state. Persistent enables act
    /// when they differ from GSTS; one-shot commands act whenever written as 1 (SRTP re-latches even
    /// with RTPS already 1), like QEMU's `vtd_handle_gcmd_write`.
    fn write_gcmd(&mut self, mem: &mut PhysMemory, cmd: Gcmd) {
        let mut st = self.gsts();
        // TE. Neither enabling nor disabling flushes the caches: QEMU resets its caches here, but the
        // spec does not promise it, so a driver that relies on it must show its stale entries.
        st.set_tes(cmd.te());
        if cmd.srtp() {
            // The new root takes effect at once, even with translation on (spec 6.6: kdump relies
            // on switching roots under live DMA). Caches survive unless CAP.ESRTPS says SRTP
            // invalidates them.
            self.root = RtAddr::from_bits(self.regs.get64(off::RTADDR));
            if self.cfg.cap.esrtps() {
                self.caches.invalidate_all();
            }
            st.set_rtps(true);
        }
        // SFL and EAFL need CAP.AFL, which this model does not offer: ignored.
        if cmd.wbf() {
            // Write-buffer flush completes immediately: WBFS never reads 1.
            st.set_wbfs(false);
        }
        if cmd.qie() != st.qies() && self.cfg.ecap.qi() {
            self.set_qi(mem, cmd.qie(), &mut st);
        }
        if self.cfg.ecap.ir() {
            if cmd.sirtp() {
                self.irta = Irta::from_bits(self.regs.get64(off::IRTA));
                st.set_irtps(true);
            }
            st.set_ires(cmd.ire());
            st.set_cfis(cmd.cfi());
        }
        self.set_gsts(st);
    }

    /// QIE change (spec 10.4.4, 10.4.13): enabling latches IQA; IQH reads 0 whenever the queue is
    /// disabled, so both transitions reset it.
    fn set_qi(&mut self, mem: &mut PhysMemory, enable: bool, st: &mut Gsts) {
        self.regs.set64(off::IQH, 0);
        st.set_qies(enable);
        if enable {
            self.iq = Some(IqState { iqa: Iqa::from_bits(self.regs.get64(off::IQA)) });
            self.set_gsts(*st);
            // Descriptors already posted (IQT != 0) are fetched now.
            self.process_queue(mem);
        } else {
            self.iq = None;
        }
    }

    fn frcd(&self, n: usize) -> FaultRecord {
        let base = off::frcd(self.cfg.cap.fro(), n);
        let lo = self.regs.get64(base) as u128;
        let hi = self.regs.get64(base + 8) as u128;
        FaultRecord::from_bits(lo | hi << 64)
    }

    /// IQH as a descriptor index.
    fn iqh_index(&self, wide: bool) -> u16 {
        IqPtr::from_bits(self.regs.get64(off::IQH)).index(wide)
    }
}

/// Whether the access `[off, off + size)` touches `[reg, reg + len)`.
fn touches(off: usize, size: usize, reg: usize, len: usize) -> bool {
    off < reg + len && reg < off + size
}

impl MmioDevice for VtdModel {
    /// Commands run when their doorbell is written and register reads change nothing.
    fn settled(&self) -> bool {
        true
    }
    fn mmio_read(&mut self, _mem: &mut PhysMemory, off: usize, size: u8) -> u64 {
        let size = size as usize;
        if !(size == 4 || size == 8) || !off.is_multiple_of(size) || !self.regs.in_range(off, size) {
            self.counters.bad_mmio += 1;
            return 0;
        }
        self.regs.read(off, size)
    }

    fn mmio_write(&mut self, mem: &mut PhysMemory, off: usize, size: u8, val: u64) {
        // Whatever the write does (a root-pointer latch, an enable, an invalidation), the front cache of
        // translations answers nothing from before it.
        self.caches.bump();
        let size = size as usize;
        if !(size == 4 || size == 8) || !off.is_multiple_of(size) || !self.regs.in_range(off, size) {
            self.counters.bad_mmio += 1;
            return;
        }
        self.regs.write(off, size, val);
        let iro = self.cfg.ecap.iro();
        let fro = self.cfg.cap.fro();
        if touches(off, size, off::GCMD, 4) {
            let shift = 8 * (off::GCMD - off) as u32;
            self.write_gcmd(mem, Gcmd::from_bits((val >> shift) as u32));
        }
        // CCMD and the IOTLB register act when the dword holding ICC / IVT is written.
        if touches(off, size, off::CCMD + 4, 4) {
            self.write_ccmd();
        }
        if touches(off, size, off::iotlb(iro) + 4, 4) {
            self.write_iotlb_reg();
        }
        // IQT acts when the dword holding the tail index is written.
        if touches(off, size, off::IQT, 4) {
            self.write_iqt(mem);
        }
        if touches(off, size, off::FSTS, 4) {
            self.fsts_cleared();
        }
        if touches(off, size, off::FECTL, 4) {
            self.fectl_written();
        }
        if touches(off, size, off::ICS, 4) || touches(off, size, off::IECTL, 4) {
            self.inv_event_regs_written();
        }
        let frcd_end = off::frcd(fro, self.cfg.cap.fault_records());
        if touches(off, size, off::frcd(fro, 0), frcd_end - off::frcd(fro, 0)) {
            self.frcd_cleared();
        }
    }
}

/// Which caches a front-cache hit stands for.
const FRONT_CONTEXT: u8 = 1;
const FRONT_PASID: u8 = 2;
const FRONT_IOTLB: u8 = 4;

impl Iommu for VtdModel {
    /// The front-cache hit, kept to a few dozen instructions with no stack frame: everything else is in
    /// [`VtdModel::translate_miss`], out of line.
    fn translate(&mut self, mem: &mut PhysMemory, rid: u32, iova: u64, access: Access) -> Translation {
        match self.translate_cached(rid, iova, access) {
            Some(phys) => Translation::Ok { phys },
            None => self.translate_miss(mem, rid, iova, access),
        }
    }
    #[inline]
    fn translate_cached(&mut self, rid: u32, iova: u64, access: Access) -> Option<u64> {
        if !self.tes {
            return None;
        }
        let (phys, hits) = self.front.get(self.caches.gen(), rid, iova, access)?;
        self.count_front_hits(hits, 1);
        Some(phys)
    }
    fn interrupt(&mut self, mem: &mut PhysMemory, rid: u32, addr: u64, data: u32) -> Option<crate::Interrupt> {
        Some(crate::InterruptRemap::interrupt(self, mem, rid, addr, data))
    }
}

impl VtdModel {
    /// Count `n` front-cache hits of an entry with flags `hits`: what the full path would count for each in the
    /// context (PASID) cache and IOTLB.
    #[inline(always)]
    pub(crate) fn count_front_hits(&mut self, hits: u8, n: u64) {
        self.tally.add(hits, n);
    }

    /// The front cache's generation while it answers (GSTS.TES set), for [`crate::shared`].
    pub(crate) fn front_gen(&self) -> Option<u64> {
        self.tes.then(|| self.caches.gen())
    }

    /// The front cache's answer for this request and its hit flags, when the front answers.
    pub(crate) fn front_entry(&self, rid: u32, iova: u64, access: Access) -> Option<(u64, u8)> {
        self.front_gen().and_then(|gen| self.front.get(gen, rid, iova, access))
    }

    /// Everything but a front-cache hit: translation off, or the full path through the caches and tables.
    #[cold]
    #[inline(never)]
    fn translate_miss(&mut self, mem: &mut PhysMemory, rid: u32, iova: u64, access: Access) -> Translation {
        self.counters.translations += 1;
        // A VT-d source ID is 16 bits (bus:devfn); wider requester IDs belong to other IOMMUs.
        let sid = rid as u16;
        if !self.tes {
            // Translation off: requests pass untranslated, as on hardware (spec 3.x: DMA remapping
            // disabled), which is exactly what makes "reset to bypass" dangerous in kdump.
            self.counters.untranslated += 1;
            return Translation::Ok { phys: iova };
        }
        let c = self.counters;
        let t = self.translate_dma(mem, sid, iova, access);
        if let Translation::Ok { phys } = t {
            if self.caches.enabled() {
                let looked = |h: u64, m: u64, h0: u64, m0: u64| h + m > h0 + m0;
                let n = &self.counters;
                let hits = if looked(n.context_hits, n.context_misses, c.context_hits, c.context_misses) {
                    FRONT_CONTEXT
                } else {
                    0
                } | if looked(n.pasid_hits, n.pasid_misses, c.pasid_hits, c.pasid_misses) {
                    FRONT_PASID
                } else {
                    0
                } | if looked(n.iotlb_hits, n.iotlb_misses, c.iotlb_hits, c.iotlb_misses) {
                    FRONT_IOTLB
                } else {
                    0
                };
                self.front.put(self.caches.gen(), rid, iova, access, phys, hits);
            }
        }
        t
    }
}

impl crate::stale::FetchAnyTime for VtdModel {
    fn evict_config(&mut self, rid: u32) {
        self.caches.context_device(rid as u16, 0);
        self.caches.pasid_device(rid as u16);
    }
    /// Reserved or invalid root, context, PASID-directory or PASID entries (spec 7.1.3 fault reasons).
    fn illegal(&self, _mem: &PhysMemory, _rid: u32, f: &crate::dma::FaultInfo) -> bool {
        use iommu_spec::vtd::FaultReason as R;
        [
            R::ContextInvalid,
            R::RootReserved,
            R::ContextReserved,
            R::SmRootReserved,
            R::SmContextReserved,
            R::SmContextInvalid,
            R::SmPasidDirReserved,
            R::SmPasidEntryReserved,
            R::SmPasidEntryInvalid,
        ]
        .iter()
        .any(|r| r.0 as u16 == f.code)
    }
}

impl crate::front::FoldHits for VtdCounters {
    /// What the full path would count for `n` front-cache hits of an entry with flags `hits`.
    fn fold_hits(&mut self, hits: u8, n: u64) {
        self.translations += n;
        self.context_hits += u64::from(hits & FRONT_CONTEXT) * n;
        self.pasid_hits += u64::from((hits & FRONT_PASID) >> 1) * n;
        self.iotlb_hits += u64::from((hits & FRONT_IOTLB) >> 2) * n;
    }
}
