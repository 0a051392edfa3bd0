//! One face for the three IOMMU models, so a machine holds "an IOMMU" without caring which.

use iommu_platform::PhysMem;
use iommu_spec::IommuKind;

use crate::dma::Iommu;
use crate::mem::PhysMemory;
use crate::platform::MmioDevice;
use crate::{AmdviConfig, AmdviModel, Smmuv3Config, Smmuv3Model, VtdConfig, VtdModel};

/// An IOMMU model: registers ([`MmioDevice`]), DMA translation ([`Iommu`]) and what a machine asks of it.
pub trait IommuModel: MmioDevice + Iommu + Send {
    /// Which architecture the unit models (VT-d, AMD-Vi, SMMUv3).
    fn kind(&self) -> IommuKind;

    /// DMA is translated (VT-d GSTS.TES, AMD-Vi CONTROL.IommuEn, SMMUv3 CR0ACK.SMMUEN).
    fn translation_enabled(&self) -> bool;

    /// Turn the IOTLB and configuration caches off (walk on every access) or back on.
    fn set_caching(&mut self, on: bool);

    /// Turn the front cache (`crate::front`) off (every request asks the IOTLB and configuration caches, as
    /// before the front existed: the benchmark's baseline) or back on.
    fn set_front_cache(&mut self, on: bool);

    /// SEV-SNP's lock on the AMD-Vi base registers; other units have no such lock.
    fn set_snp_lock(&mut self, locked: bool) {
        let _ = locked;
    }

    /// Pages of memory the unit's own structures occupy that a crash kernel reuses in place (AMD-Vi:
    /// device table, command buffer, event log, completion-wait page; SMMUv3: the stream table). Changes
    /// there after a crash are the unit's and the crash kernel's doing, not DMA corruption.
    fn structure_pages(&mut self, mem: &mut PhysMemory) -> Vec<u64> {
        let _ = mem;
        Vec::new()
    }

    /// A copy of the unit with all its state, behind a new box (what `Clone for Box<dyn IommuModel>` uses).
    fn clone_box(&self) -> Box<dyn IommuModel>;

    /// The model as the fault catalogue (`crate::inject`) takes it.
    fn fault_target(&mut self) -> crate::inject::Unit<'_>;

    /// The generation of the model's front cache (`crate::front`) while the front answers requests, `None`
    /// while it answers nothing (translation off on VT-d and AMD-Vi): what a [`crate::shared::Lane`]'s entries
    /// are valid for.
    fn front_gen(&self) -> Option<u64>;

    /// What the model's front cache would answer for this request now, without translating: the address and
    /// the entry's hit flags (which counters a hit stands for).
    fn front_entry(&self, rid: u32, iova: u64, access: crate::Access) -> Option<(u64, u8)>;

    /// Count `n` hits of a front entry with flags `hits`, exactly as the model's own front-cache hit path
    /// counts one: how a [`crate::shared::Lane`]'s hits reach the model's statistics.
    fn replay_front_hits(&mut self, hits: u8, n: u64);

    /// How often the model's counters were zeroed (`reset_counters`): a [`crate::shared::Lane`] that sees this
    /// change drops the hits it has not folded yet, which all came before the reset.
    fn counter_resets(&self) -> u64;
}

impl Clone for Box<dyn IommuModel> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// A model of `kind` with its default configuration; `snp` puts an AMD-Vi unit on an SEV-SNP host and
/// `coherent` is an SMMUv3's IDR0.COHACC (each ignored elsewhere).
pub fn model(kind: IommuKind, snp: bool, coherent: bool) -> Box<dyn IommuModel> {
    model_with(kind, ModelOptions { snp, coherent, no_iasup: false, vtd_first_level: false, c_bit: 0, x2apic: false })
}

/// The platform choices a machine makes for its unit; each is ignored by the kinds it does not apply to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelOptions {
    /// AMD-Vi on an SEV-SNP host (EFR.SNPSup, and the lock once SNP_INIT runs).
    pub snp: bool,
    /// SMMUv3 IDR0.COHACC: the walker snoops CPU caches.
    pub coherent: bool,
    /// AMD-Vi built without EFR.IASup (no INVALIDATE_IOMMU_ALL).
    pub no_iasup: bool,
    /// VT-d: the unit also offers first-level translation (ECAP.FLTS, CAP.FL1GP), as current Intel
    /// server parts do.
    pub vtd_first_level: bool,
    /// AMD-Vi: the host's SME encryption bit, which addresses in the unit's registers and tables carry
    /// ([`AmdviConfig::c_bit`]); 0 without SME.
    pub c_bit: u64,
    /// The host has CPUs with APIC IDs above 255: an AMD-Vi unit offers x2APIC interrupt remapping (EFR.XTSup),
    /// as the parts of such hosts do (a VT-d unit's ECAP.EIM is always offered).
    pub x2apic: bool,
}

/// A model of `kind` with `opts`.
pub fn model_with(kind: IommuKind, opts: ModelOptions) -> Box<dyn IommuModel> {
    match kind {
        IommuKind::Vtd => {
            let d = VtdConfig::default();
            let cfg = if opts.vtd_first_level {
                VtdConfig { cap: d.cap.with_fl1gp(true), ecap: d.ecap.with_flts(true), ..d }
            } else {
                d
            };
            Box::new(VtdModel::new(cfg))
        }
        IommuKind::Amdvi => {
            let cfg = if opts.snp { AmdviConfig::snp() } else { AmdviConfig::default() };
            let cfg = if opts.no_iasup { crate::inject::no_iasup(cfg) } else { cfg };
            let cfg = AmdviConfig { c_bit: opts.c_bit, ..cfg };
            let cfg = if opts.x2apic { AmdviConfig { efr: cfg.efr.with_xt_sup(true), ..cfg } } else { cfg };
            Box::new(AmdviModel::new(cfg))
        }
        IommuKind::Smmuv3 => {
            Box::new(Smmuv3Model::new(Smmuv3Config { coherent: opts.coherent, ..Smmuv3Config::default() }))
        }
    }
}

impl MmioDevice for Box<dyn IommuModel> {
    fn mmio_read(&mut self, mem: &mut PhysMemory, off: usize, size: u8) -> u64 {
        (**self).mmio_read(mem, off, size)
    }
    fn mmio_write(&mut self, mem: &mut PhysMemory, off: usize, size: u8, val: u64) {
        (**self).mmio_write(mem, off, size, val)
    }
    fn settled(&self) -> bool {
        (**self).settled()
    }
}

impl Iommu for Box<dyn IommuModel> {
    #[inline]
    fn translate(&mut self, mem: &mut PhysMemory, rid: u32, iova: u64, access: crate::Access) -> crate::Translation {
        (**self).translate(mem, rid, iova, access)
    }
    #[inline]
    fn translate_cached(&mut self, rid: u32, iova: u64, access: crate::Access) -> Option<u64> {
        (**self).translate_cached(rid, iova, access)
    }
    fn interrupt(&mut self, mem: &mut PhysMemory, rid: u32, addr: u64, data: u32) -> Option<crate::Interrupt> {
        (**self).interrupt(mem, rid, addr, data)
    }
}

impl IommuModel for VtdModel {
    fn counter_resets(&self) -> u64 {
        self.tally.resets()
    }
    fn front_gen(&self) -> Option<u64> {
        VtdModel::front_gen(self)
    }
    fn front_entry(&self, rid: u32, iova: u64, access: crate::Access) -> Option<(u64, u8)> {
        VtdModel::front_entry(self, rid, iova, access)
    }
    fn replay_front_hits(&mut self, hits: u8, n: u64) {
        self.count_front_hits(hits, n)
    }
    fn fault_target(&mut self) -> crate::inject::Unit<'_> {
        crate::inject::Unit::Vtd(self)
    }
    fn kind(&self) -> IommuKind {
        IommuKind::Vtd
    }
    fn translation_enabled(&self) -> bool {
        VtdModel::translation_enabled(self)
    }
    fn set_caching(&mut self, on: bool) {
        VtdModel::set_caching(self, on)
    }
    fn set_front_cache(&mut self, on: bool) {
        self.front.set_enabled(on)
    }
    fn clone_box(&self) -> Box<dyn IommuModel> {
        Box::new(self.clone())
    }
}

impl IommuModel for AmdviModel {
    fn counter_resets(&self) -> u64 {
        self.tally.resets()
    }
    fn front_gen(&self) -> Option<u64> {
        AmdviModel::front_gen(self)
    }
    fn front_entry(&self, rid: u32, iova: u64, access: crate::Access) -> Option<(u64, u8)> {
        AmdviModel::front_entry(self, rid, iova, access)
    }
    fn replay_front_hits(&mut self, hits: u8, n: u64) {
        self.count_front_hits(hits, n)
    }
    fn fault_target(&mut self) -> crate::inject::Unit<'_> {
        crate::inject::Unit::Amdvi(self)
    }
    fn kind(&self) -> IommuKind {
        IommuKind::Amdvi
    }
    fn translation_enabled(&self) -> bool {
        AmdviModel::translation_enabled(self)
    }
    fn set_caching(&mut self, on: bool) {
        AmdviModel::set_caching(self, on)
    }
    fn set_front_cache(&mut self, on: bool) {
        self.front.set_enabled(on)
    }
    fn set_snp_lock(&mut self, locked: bool) {
        AmdviModel::set_snp_lock(self, locked)
    }
    fn structure_pages(&mut self, mem: &mut PhysMemory) -> Vec<u64> {
        use iommu_spec::amdvi::{off, DevTableBase, ExclusionBase, RingBase};
        let mut pages = Vec::new();
        let dt = DevTableBase::from_bits(self.mmio_read(mem, off::DEV_TABLE_BASE, 8));
        let table = self.mem_pa(dt.table());
        pages.extend((0..dt.bytes() / 4096).map(|i| table + i * 4096));
        // The interrupt tables the valid DTEs name (remapped IntCtl): reused in place with the device table.
        // Only device-table pages that hold anything are read (memory is sparse), and a page sharing the bytes
        // of the one before (a run of default entries written whole) names the same tables: skipped.
        let mut last: Option<&std::sync::Arc<crate::mem::Page>> = None;
        for i in 0..dt.bytes() / 4096 {
            let Some(page) = mem.page_shared((table >> 12) + i) else { continue };
            if last.is_some_and(|l| std::sync::Arc::ptr_eq(l, page)) {
                continue;
            }
            last = Some(page);
            for raw in page.chunks_exact(32) {
                let dte = iommu_spec::amdvi::Dte::from_le_bytes(raw.try_into().unwrap_or(&[0; 32]));
                if dte.valid() && dte.iv() && dte.int_ctl() == iommu_spec::amdvi::IntCtl::Remap {
                    // At most 2048 × 16 bytes: eight pages.
                    let bytes = (dte.int_table_entries().min(2048) as u64) * 16;
                    let root = self.mem_pa(dte.int_table());
                    let first = root & !0xfff;
                    pages.extend((0..(root + bytes - first).div_ceil(4096)).map(|p| first + p * 4096));
                }
            }
        }
        for reg in [off::CMD_BUF_BASE, off::EVENT_LOG_BASE] {
            let r = RingBase::from_bits(self.mmio_read(mem, reg, 8));
            let ring = self.mem_pa(r.ring());
            pages.extend((0..r.bytes().div_ceil(4096)).map(|i| ring + i * 4096));
        }
        let base = ExclusionBase::from_bits(self.mmio_read(mem, off::EXCL_BASE, 8));
        let sem = self.mem_pa(base.address());
        if sem != 0 {
            pages.push(sem);
        }
        pages
    }
    fn clone_box(&self) -> Box<dyn IommuModel> {
        Box::new(self.clone())
    }
}

impl IommuModel for Smmuv3Model {
    fn counter_resets(&self) -> u64 {
        self.tally.resets()
    }
    fn front_gen(&self) -> Option<u64> {
        Smmuv3Model::front_gen(self)
    }
    fn front_entry(&self, rid: u32, iova: u64, access: crate::Access) -> Option<(u64, u8)> {
        Smmuv3Model::front_entry(self, rid, iova, access)
    }
    fn replay_front_hits(&mut self, hits: u8, n: u64) {
        self.count_front_hits(hits, n)
    }
    fn fault_target(&mut self) -> crate::inject::Unit<'_> {
        crate::inject::Unit::Smmuv3(self)
    }
    fn kind(&self) -> IommuKind {
        IommuKind::Smmuv3
    }
    fn translation_enabled(&self) -> bool {
        self.smmu_enabled()
    }
    fn set_caching(&mut self, on: bool) {
        Smmuv3Model::set_caching(self, on)
    }
    fn set_front_cache(&mut self, on: bool) {
        self.front.set_enabled(on)
    }
    /// The stream table: the L1 table and every level-2 table a valid descriptor points at, or the linear
    /// table (capped at 4096 L1 descriptors or STEs: what the simulator's kernels build); and the queues.
    fn structure_pages(&mut self, mem: &mut PhysMemory) -> Vec<u64> {
        use iommu_spec::smmuv3::{off, L1Desc, StrtabBase, StrtabBaseCfg, StrtabFmt};
        let base = StrtabBase::from_bits(self.mmio_read(mem, off::STRTAB_BASE, 8)).table();
        let cfg = StrtabBaseCfg::from_bits(self.mmio_read(mem, off::STRTAB_BASE_CFG, 4) as u32);
        let mut pages = Vec::new();
        if cfg.fmt() == StrtabFmt::TwoLevel && cfg.log2size() >= cfg.split() {
            let entries = (1u64 << (cfg.log2size() - cfg.split()).min(12)).min(4096);
            pages.extend((0..(entries * 8).div_ceil(4096)).map(|i| base + i * 4096));
            for i in 0..entries {
                let l1 = L1Desc::from_bits(mem.read_u64(base + 8 * i).unwrap_or(0));
                if l1.valid() {
                    pages.extend((0..l1.l2_bytes().div_ceil(4096)).map(|p| l1.l2_table() + p * 4096));
                }
            }
        } else {
            let bytes = (1u64 << cfg.log2size().min(12)) * 64;
            pages.extend((0..bytes.div_ceil(4096)).map(|i| base + i * 4096));
        }
        // The queues the unit itself writes into: events and PRI requests (and the command queue it reads),
        // each of 2^log2size entries (32, 16 and 16 bytes; SMMUv3 6.3.26-6.3.29), capped at 1 MiB.
        use iommu_spec::smmuv3::QueueBase;
        for (reg, entry) in [(off::CMDQ_BASE, 16u64), (off::EVTQ_BASE, 32), (off::PRIQ_BASE, 16)] {
            let q = QueueBase::from_bits(self.mmio_read(mem, reg, 8));
            let bytes = (entry << q.log2size().min(16)).min(1 << 20);
            let start = q.base() & !0xfff;
            pages.extend((0..bytes.div_ceil(4096)).map(|i| start + i * 4096));
        }
        pages
    }
    fn clone_box(&self) -> Box<dyn IommuModel> {
        Box::new(self.clone())
    }
}
