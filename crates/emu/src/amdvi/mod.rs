//! An AMD-Vi (AMD IOMMU) unit, modelled after the AMD I/O Virtualization Technology spec (48882, rev 3.x;
//! sections cited per rule), the SNP kdump series (docs/handover.md#amdvi-snp-locked-registers), and where the
//! spec leaves room, QEMU's `hw/i386/amd_iommu.c` and Linux's `drivers/iommu/amd/`.
//!
//! What the model does: the MMIO register file with its writable, read-only and write-1-to-clear bits
//! (`regs`); the SNP lock on the five base registers; the command buffer, processed from head to tail when the
//! tail is written (`cmd`); the event log (`event`); a device-table-entry cache, an IOTLB and a page-directory
//! cache that only the invalidation commands empty (`cache`; directory entries only with PDE = 1); DMA translation through the DTE and the v1 host page table (`translate`);
//! the exclusion range when SNP does not re-purpose it; interrupt remapping of MSIs through the DTE and the
//! interrupt table, with its own caches (`irq`).
//!
//! What it does not: guest (v2 / GCR3) translation, PASIDs, ATS and the device IOTLB (INVALIDATE_IOTLB_PAGES is
//! validated, then a no-op), PPR and GA logs, guest virtual APIC interrupts (GuestMode IRTEs), IO-APIC and HPET
//! interrupts (only MSIs go through `irq`), the unit's own MSIs (interrupts are counted), the hardware-error registers, performance counters,
//! accessed/dirty updates, PREFETCH_IOMMU_PAGES (not advertised, so an illegal command), the RMP checks of SNP.
//!
//! A refused DMA returns [`crate::FaultInfo`] whose `code` is the AMD-Vi event code of what the unit logged
//! (1 ILLEGAL_DEV_TABLE_ENTRY, 2 IO_PAGE_FAULT, 3 DEV_TAB_HARDWARE_ERROR, 4 PAGE_TAB_HARDWARE_ERROR) or 0 for a
//! DTE with V = 1, TV = 0, which refuses silently; `recorded` says whether the event reached the log.

mod cache;
mod cmdq;
mod event;
mod irq;
mod regs;
mod translate;

use iommu_spec::amdvi::{off, Control, DevTableBase, Efr, Efr2, ExclusionBase, ExclusionLimit, RingBase, Status};

use crate::dma::{Access, Iommu, Translation};
use crate::mem::PhysMemory;
use crate::platform::MmioDevice;
use cache::Caches;
use regs::{Reg, RegFile};

/// Capabilities of a modelled unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AmdviConfig {
    /// The Extended Feature Register as the unit advertises it, except SNPSup (bit 63), which
    /// [`Self::snp_capable`] decides. Features it turns on change what the model accepts: IASup allows
    /// INVALIDATE_IOMMU_ALL, HATS bounds the DTE Mode, GTSup allows DTE.GV, PPRSup allows COMPLETE_PPR_REQUEST
    /// and the PPR Control bits, GASup/GAMSup/XTSup/EPHSup/HASup/HDSup make their Control bits writable.
    pub efr: Efr,
    /// EFR2, read-only (SNPAVICSup, NumIntRemapSup and GCR3TRPModeSup make their Control bits writable).
    pub efr2: Efr2,
    /// EFR.SNPSup: the unit can take part in SEV-SNP (the SNP firmware refuses SNP_INIT without it).
    pub snp_capable: bool,
    /// IOTLB entries before the model evicts them all (hardware may drop entries at any time).
    pub iotlb_capacity: usize,
    /// The host's SME encryption bit (`sme_me_mask`, from CPUID Fn8000_001F `EBX[5:0]`); 0 without SME. Every
    /// system physical address the unit takes from a register or a table (device table, rings, completion
    /// store, page tables and the pages they map) may carry it, and the memory controller reaches the same
    /// page with or without it (AMD64 APM vol. 2, 7.10.1): the unit strips it before it touches memory.
    pub c_bit: u64,
}

impl Default for AmdviConfig {
    /// A unit like QEMU's `amd-iommu`, advertising what Linux uses: IASup, GASup and HATS = 2 (DTE Modes 1–6), no
    /// guest translation, no PPR, no prefetch, no x2APIC, no SNP (see [`Self::snp`]).
    fn default() -> Self {
        AmdviConfig {
            efr: Efr::new().with_ia_sup(true).with_ga_sup(true).with_hats(2),
            efr2: Efr2::new(),
            snp_capable: false,
            iotlb_capacity: 1 << 20,
            c_bit: 0,
        }
    }
}

impl AmdviConfig {
    /// The default unit with EFR.SNPSup.
    pub fn snp() -> Self {
        AmdviConfig { snp_capable: true, ..AmdviConfig::default() }
    }

    /// The EFR value software reads at 0x30.
    pub fn efr_register(&self) -> Efr {
        self.efr.with_snp_sup(self.snp_capable)
    }
}

/// Event counts of one unit, for tests, benchmarks and simulator metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AmdviCounters {
    /// Translations requested.
    pub translations: u64,
    /// Of which passed untranslated because Control.IommuEn = 0.
    pub untranslated: u64,
    /// Of which passed untranslated because of the DTE (V = 0, Mode 0) or the exclusion range.
    pub passthrough: u64,
    /// Translations served from the IOTLB.
    pub iotlb_hits: u64,
    /// IOTLB lookups that found nothing and went on to the DTE and page tables.
    pub iotlb_misses: u64,
    /// Device-table-entry lookups served from the DTE cache.
    pub dte_hits: u64,
    /// DTE lookups that read the device table in memory.
    pub dte_misses: u64,
    /// Page-table walks.
    pub walks: u64,
    /// Of which started at the level-1 table from the page-directory cache.
    pub pde_hits: u64,
    /// Translations that were refused (with or without an event).
    pub faults: u64,
    /// Events written to the event log.
    pub events_logged: u64,
    /// Events lost: logging off or stopped, log full (overflow), or the log not in RAM.
    pub events_dropped: u64,
    /// IO_PAGE_FAULT events not logged because the DTE said so (SA, SE).
    pub events_suppressed: u64,
    /// Event-log interrupts (Control.EventIntEn).
    pub event_interrupts: u64,
    /// Completion-wait interrupts (Control.ComWaitIntEn).
    pub com_wait_interrupts: u64,
    /// Commands executed.
    pub commands: u64,
    /// Commands that stopped the command processor (ILLEGAL_COMMAND_ERROR, COMMAND_HARDWARE_ERROR).
    pub command_errors: u64,
    /// COMPLETION_WAIT stores written to memory.
    pub completion_stores: u64,
    /// INVALIDATE_DEVTAB_ENTRY commands executed.
    pub dte_invalidations: u64,
    /// INVALIDATE_IOMMU_PAGES commands executed.
    pub iotlb_invalidations: u64,
    /// INVALIDATE_INTERRUPT_TABLE commands executed.
    pub irt_invalidations: u64,
    /// Interrupt messages seen.
    pub interrupts: u64,
    /// Of which remapped through an IRTE.
    pub interrupts_remapped: u64,
    /// Of which target-aborted (interrupt-remapping fault).
    pub interrupt_faults: u64,
    /// INVALIDATE_IOMMU_ALL commands executed (EFR.IASup).
    pub all_invalidations: u64,
    /// Writes to a base register ignored because of the SNP lock.
    pub locked_writes_ignored: u64,
    /// Register accesses outside the MMIO window, not 4 or 8 bytes, or not naturally aligned (ignored, read 0).
    pub bad_mmio: u64,
}

/// One AMD-Vi unit.
#[derive(Clone, Debug)]
pub struct AmdviModel {
    cfg: AmdviConfig,
    regs: RegFile,
    /// IOMMU SNP enforcement (AMD IOMMU spec 48882 rev 3.10 §2.12.2.1, per Kalra): the base registers ignore
    /// writes and COMPLETION_WAIT stores must land in the Completion Store window.
    snp_locked: bool,
    /// The command processor runs: set when CmdBufEn goes 0 → 1, cleared when it goes 0 or a command fails.
    cmd_run: bool,
    /// The event logger runs: set when EventLogEn goes 0 → 1, cleared when it goes 0 or the log overflows.
    evt_run: bool,
    /// Control.IommuEn, as a plain field for the translation fast path (kept by `control_written`, the one
    /// place Control changes).
    iommu_en: bool,
    caches: Caches,
    /// Recent translations in front of the caches (`crate::front`), valid for the caches' generation.
    pub(crate) front: crate::front::Front,
    /// DTE interrupt fields and IRTEs (see `irq`).
    irq: irq::IrqCache,
    counters: AmdviCounters,
    /// Front-cache hits not yet folded into `counters` ([`Self::counters`] folds them).
    pub(crate) tally: crate::front::HitTally,
}

impl AmdviModel {
    /// A unit after reset: every enable off, every base register 0.
    pub fn new(cfg: AmdviConfig) -> Self {
        AmdviModel {
            cfg,
            regs: RegFile::new(&cfg),
            snp_locked: false,
            cmd_run: false,
            evt_run: false,
            iommu_en: false,
            caches: Caches::new(cfg.iotlb_capacity),
            front: Default::default(),
            irq: Default::default(),
            counters: AmdviCounters::default(),
            tally: Default::default(),
        }
    }

    /// The capabilities the unit was built with.
    pub fn config(&self) -> &AmdviConfig {
        &self.cfg
    }

    /// Event counts since creation or the last [`Self::reset_counters`].
    pub fn counters(&self) -> AmdviCounters {
        self.tally.folded(self.counters)
    }

    /// Zero every event count (unit state is untouched).
    pub fn reset_counters(&mut self) {
        self.tally.reset_with(&mut self.counters);
    }

    /// Empty every cache, as a full invalidation would (caching stays as it was).
    pub fn drop_caches(&mut self) {
        self.caches.invalidate_all();
        self.irq.clear();
    }

    /// Turn the DTE cache and the IOTLB on or off (off: every translation reads the DTE and walks, a benchmark
    /// baseline no real unit offers). Either way both are emptied.
    pub fn set_caching(&mut self, enabled: bool) {
        self.caches.set_enabled(enabled);
        self.irq.clear();
    }

    /// IOMMU SNP enforcement, as the SNP firmware turns it on (SNP_INIT) and off (a successful SNP_SHUTDOWN_EX
    /// with IOMMU_SNP_SHUTDOWN): the machine wires this to `SnpFirmware::iommu_locked()`. The model honours it
    /// whatever `snp_capable` says; a machine that locks a unit without SNPSup models what firmware would refuse.
    pub fn set_snp_lock(&mut self, locked: bool) {
        self.snp_locked = locked;
        self.caches.bump();
    }

    /// Whether SNP enforcement is on: base-register writes are ignored (see [`Self::set_snp_lock`]).
    pub fn snp_locked(&self) -> bool {
        self.snp_locked
    }

    /// Control.IommuEn.
    pub fn translation_enabled(&self) -> bool {
        self.iommu_en
    }

    /// The Control register.
    pub fn control(&self) -> Control {
        Control::from_bits(self.regs.get(Reg::Control))
    }

    /// The Status register as software reads it (run bits included).
    pub fn status(&self) -> Status {
        let ctl = self.control();
        Status::from_bits(self.regs.get(Reg::Status))
            .with_cmd_buf_run(self.cmd_run && ctl.cmd_buf_en() && ctl.iommu_en())
            .with_event_log_run(self.evt_run && ctl.event_log_en())
    }

    /// Translations refused since reset (with or without an event).
    pub fn fault_count(&self) -> u64 {
        self.counters.faults
    }

    /// Entries held by the IOTLB and the DTE cache.
    pub fn cache_sizes(&self) -> (usize, usize) {
        self.caches.sizes()
    }

    /// Whether the IOTLB holds a translation of `iova` for `domain_id`, and to which physical address.
    pub fn iotlb_lookup(&self, domain_id: u16, iova: u64) -> Option<u64> {
        self.caches.iotlb_peek(domain_id, iova)
    }

    /// What the front cache (`crate::front`) holds for this request now, without translating: for tests that an
    /// entry never outlives what could change the answer.
    #[doc(hidden)]
    pub fn front_answers(&self, rid: u32, iova: u64, access: Access) -> Option<u64> {
        self.front.get(self.caches.gen(), rid, iova, access).map(|(phys, _)| phys)
    }

    /// Whether the DTE cache holds the entry of `device_id`.
    pub fn dte_cached(&self, device_id: u16) -> bool {
        self.caches.dte_peek(device_id)
    }

    /// The memory address of system physical address `spa` taken from a register or a table: without the
    /// SME encryption bit ([`AmdviConfig::c_bit`]).
    pub(crate) fn mem_pa(&self, spa: u64) -> u64 {
        spa & !self.cfg.c_bit
    }

    /// Whether a completion store to memory address `addr` lands in the completion-store window (the
    /// re-purposed exclusion registers, which name it by system physical address: C-bit stripped too).
    fn in_completion_store(&self, addr: u64) -> bool {
        let c = self.cfg.c_bit;
        let base = ExclusionBase::from_bits(self.excl_base().into_bits() & !c);
        let limit = ExclusionLimit::from_bits(self.excl_limit().into_bits() & !c);
        iommu_spec::amdvi::in_completion_store(base, limit, addr)
    }

    fn caches_enabled(&self) -> bool {
        self.caches.enabled()
    }

    fn dev_table(&self) -> DevTableBase {
        DevTableBase::from_bits(self.regs.get(Reg::DevTableBase))
    }

    fn cmd_ring(&self) -> RingBase {
        RingBase::from_bits(self.regs.get(Reg::CmdBufBase))
    }

    fn event_ring(&self) -> RingBase {
        RingBase::from_bits(self.regs.get(Reg::EventLogBase))
    }

    fn excl_base(&self) -> ExclusionBase {
        ExclusionBase::from_bits(self.regs.get(Reg::ExclBase))
    }

    fn excl_limit(&self) -> ExclusionLimit {
        ExclusionLimit::from_bits(self.regs.get(Reg::ExclLimit))
    }

    fn set_status(&mut self, s: Status) {
        // Only the W1C bits are stored; the run bits are computed when read.
        self.regs.set(Reg::Status, s.into_bits() & Status::W1C);
    }

    /// A Control write (spec 3.4.4): the enables' edges start and stop the command processor and the event
    /// logger (Linux restarts a stopped one by clearing and setting its enable, `amd_iommu_restart_event_logging`),
    /// and commands already posted run once the processor may run.
    fn control_written(&mut self, mem: &mut PhysMemory, old: Control, new: Control) {
        self.iommu_en = new.iommu_en();
        if !new.cmd_buf_en() {
            self.cmd_run = false;
        } else if !old.cmd_buf_en() {
            self.cmd_run = true;
        }
        if !new.event_log_en() {
            self.evt_run = false;
        } else if !old.event_log_en() {
            self.evt_run = true;
        }
        self.process_commands(mem);
    }

    /// Side effects of a software write that the register file accepted.
    fn after_write(&mut self, mem: &mut PhysMemory, reg: Reg, old: u64) {
        match reg {
            // Writing a ring's base resets its pointers (QEMU `amdvi_handle_cmdbase_write` / `_evtbase_write`).
            Reg::CmdBufBase => {
                self.regs.set(Reg::CmdHead, 0);
                self.regs.set(Reg::CmdTail, 0);
            }
            Reg::EventLogBase => {
                self.regs.set(Reg::EventHead, 0);
                self.regs.set(Reg::EventTail, 0);
            }
            Reg::Control => {
                let new = self.control();
                self.control_written(mem, Control::from_bits(old), new);
            }
            Reg::CmdTail => self.process_commands(mem),
            _ => {}
        }
    }

    /// Whether software may write `reg` now. The hardware-owned pointers (command head, event tail) take writes
    /// only while their ring is stopped: Linux resets them to 0 with the ring disabled (`amd_iommu_reset_cmd_buffer`,
    /// `iommu_enable_event_buffer`, the kdump reuse path). The SNP lock ignores writes to the five locked bases.
    fn write_allowed(&mut self, reg: Reg) -> bool {
        if reg.snp_locked() && self.snp_locked {
            self.counters.locked_writes_ignored += 1;
            return false;
        }
        let st = self.status();
        match reg {
            Reg::CmdHead => !st.cmd_buf_run(),
            Reg::EventTail => !st.event_log_run(),
            _ => true,
        }
    }
}

/// The MMIO window: registers up to the Status/PPR/GA pointers; the performance counters at 0x4000 and up are not
/// modelled (EFR.PCSup = 0), which is the 16 KiB Linux maps then (`MMIO_REGION_LENGTH`).
pub const MMIO_SIZE: usize = off::CNTR_CONF;

impl MmioDevice for AmdviModel {
    /// Commands run when their doorbell is written and register reads change nothing.
    fn settled(&self) -> bool {
        true
    }
    fn mmio_read(&mut self, _mem: &mut PhysMemory, off: usize, size: u8) -> u64 {
        let Some((reg, shift, mask)) = self.decode_access(off, size) else {
            return 0;
        };
        let Some(reg) = reg else {
            return 0;
        };
        let v = match reg {
            Reg::Status => self.status().into_bits(),
            _ => self.regs.read(reg),
        };
        (v >> shift) & mask
    }

    fn mmio_write(&mut self, mem: &mut PhysMemory, off: usize, size: u8, val: u64) {
        // Whatever the write does (an enable, a base, the exclusion range, commands), the front cache of
        // translations answers nothing from before it.
        self.caches.bump();
        let Some((Some(reg), shift, mask)) = self.decode_access(off, size) else {
            return;
        };
        if !self.write_allowed(reg) {
            return;
        }
        let old = self.regs.get(reg);
        self.regs.write(reg, (val & mask) << shift, mask << shift);
        self.after_write(mem, reg, old);
    }
}

impl AmdviModel {
    /// Check an access: `None` for one the model ignores (counted); `Some((None, ..))` for an unmodelled offset
    /// inside the window (reads 0, writes ignored); otherwise the register, the bit shift of the accessed half and
    /// the access mask.
    fn decode_access(&mut self, off: usize, size: u8) -> Option<(Option<Reg>, u32, u64)> {
        let size = size as usize;
        if !(size == 4 || size == 8) || !off.is_multiple_of(size) || off.checked_add(size).is_none_or(|e| e > MMIO_SIZE)
        {
            self.counters.bad_mmio += 1;
            return None;
        }
        let shift = 8 * (off & 4) as u32;
        let mask = if size == 8 { u64::MAX } else { u32::MAX as u64 };
        Some((Reg::at(off & !7), shift, mask))
    }
}

impl Iommu for AmdviModel {
    /// The front-cache hit, kept to a few dozen instructions with no stack frame: everything else is in
    /// [`AmdviModel::translate_miss`], out of line.
    fn translate(&mut self, mem: &mut PhysMemory, rid: u32, iova: u64, access: Access) -> Translation {
        match self.translate_cached(rid, iova, access) {
            Some(phys) => Translation::Ok { phys },
            None => self.translate_miss(mem, rid, iova, access),
        }
    }
    #[inline]
    fn translate_cached(&mut self, rid: u32, iova: u64, access: Access) -> Option<u64> {
        if !self.iommu_en {
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

impl AmdviModel {
    /// Count `n` front-cache hits of an entry with flags `hits`: what the full path would count for each.
    #[inline(always)]
    pub(crate) fn count_front_hits(&mut self, hits: u8, n: u64) {
        self.tally.add(hits, n);
    }

    /// The front cache's generation while it answers (CONTROL.IommuEn set), for [`crate::shared`].
    pub(crate) fn front_gen(&self) -> Option<u64> {
        self.iommu_en.then(|| self.caches.gen())
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
        if !self.iommu_en {
            // IommuEn = 0: requests pass untranslated (spec 3.4.4), what makes "reset to bypass" dangerous in kdump.
            self.counters.untranslated += 1;
            return Translation::Ok { phys: iova };
        }
        let c = self.counters;
        // A DeviceID is 16 bits (bus:devfn of one PCI segment).
        let t = self.translate_dma(mem, rid as u16, iova, access);
        if let Translation::Ok { phys } = t {
            let n = &self.counters;
            // Only what a second request would find cached: the DTE (and the IOTLB entry, if one) were looked
            // up and are held now.
            if self.caches.enabled() && self.caches.dte_peek(rid as u16) {
                let hits = if n.dte_hits + n.dte_misses > c.dte_hits + c.dte_misses { FRONT_DTE } else { 0 }
                    | if n.iotlb_hits + n.iotlb_misses > c.iotlb_hits + c.iotlb_misses { FRONT_IOTLB } else { 0 }
                    | if n.passthrough > c.passthrough { FRONT_PASS } else { 0 };
                self.front.put(self.caches.gen(), rid, iova, access, phys, hits);
            }
        }
        t
    }
}

/// Which counters a front-cache hit stands for.
const FRONT_DTE: u8 = 1;
const FRONT_IOTLB: u8 = 2;
const FRONT_PASS: u8 = 4;

impl crate::stale::FetchAnyTime for AmdviModel {
    fn evict_config(&mut self, rid: u32) {
        self.caches.dte_invalidate(rid as u16);
    }
    /// ILLEGAL_DEV_TABLE_ENTRY (event code 1): reserved bits, a reserved Mode, TV with Mode 0 under SNP.
    fn illegal(&self, _mem: &PhysMemory, _rid: u32, f: &crate::dma::FaultInfo) -> bool {
        f.code == 1
    }
}

impl crate::front::FoldHits for AmdviCounters {
    /// What the full path would count for `n` front-cache hits of an entry with flags `hits`.
    fn fold_hits(&mut self, hits: u8, n: u64) {
        self.translations += n;
        self.dte_hits += u64::from(hits & FRONT_DTE) * n;
        self.iotlb_hits += u64::from((hits & FRONT_IOTLB) >> 1) * n;
        self.passthrough += u64::from((hits & FRONT_PASS) >> 2) * n;
    }
}
