//! One IOMMU of any kind, for the simulator: the hardware model ([`Unit`]) and the kernel's driver for it
//! ([`Driver`]), so the kernels, policies and measurements are written once.

use iommu_driver::{amdvi, smmuv3, vtd, BootEnv, Platform, Policy};
use iommu_emu::{
    Access, AmdviConfig, AmdviModel, Iommu, MmioDevice, PhysMemory, Smmuv3Config, Smmuv3Model, Translation, VtdConfig,
    VtdModel,
};

/// Which IOMMU a machine has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IommuKind {
    Vtd,
    Amdvi,
    Smmuv3,
}

impl IommuKind {
    pub const ALL: [IommuKind; 3] = [IommuKind::Vtd, IommuKind::Amdvi, IommuKind::Smmuv3];
    pub const fn name(self) -> &'static str {
        match self {
            IommuKind::Vtd => "vtd",
            IommuKind::Amdvi => "amdvi",
            IommuKind::Smmuv3 => "smmuv3",
        }
    }
}

/// The hardware.
#[derive(Clone)]
pub enum Unit {
    Vtd(Box<VtdModel>),
    Amdvi(Box<AmdviModel>),
    Smmuv3(Box<Smmuv3Model>),
}

impl Unit {
    pub fn new(kind: IommuKind, snp: bool) -> Self {
        Self::with(kind, snp, true)
    }

    /// `coherent`: whether an SMMUv3's walker snoops (IDR0.COHACC); ignored elsewhere.
    pub fn with(kind: IommuKind, snp: bool, coherent: bool) -> Self {
        match kind {
            IommuKind::Vtd => Unit::Vtd(Box::new(VtdModel::new(VtdConfig::default()))),
            IommuKind::Amdvi => {
                Unit::Amdvi(Box::new(AmdviModel::new(if snp { AmdviConfig::snp() } else { AmdviConfig::default() })))
            }
            IommuKind::Smmuv3 => {
                Unit::Smmuv3(Box::new(Smmuv3Model::new(Smmuv3Config { coherent, ..Smmuv3Config::default() })))
            }
        }
    }
    pub fn translation_enabled(&self) -> bool {
        match self {
            Unit::Vtd(u) => u.translation_enabled(),
            Unit::Amdvi(u) => u.translation_enabled(),
            Unit::Smmuv3(u) => u.smmu_enabled(),
        }
    }
    /// Turn the IOTLB and configuration caches off (walk on every access) or back on.
    pub fn set_caching(&mut self, on: bool) {
        match self {
            Unit::Vtd(u) => u.set_caching(on),
            Unit::Amdvi(u) => u.set_caching(on),
            Unit::Smmuv3(u) => u.set_caching(on),
        }
    }

    /// SEV-SNP's lock on the AMD-Vi base registers (no effect elsewhere).
    pub fn set_snp_lock(&mut self, locked: bool) {
        if let Unit::Amdvi(u) = self {
            u.set_snp_lock(locked);
        }
    }
}

impl Unit {
    /// Pages of the crashed kernel's memory the unit itself owns and hand-over reuses in place (AMD-Vi:
    /// device table, command buffer, event log, completion-wait page): changes there after the crash are
    /// the IOMMU's and the crash kernel's doing, not DMA corruption.
    pub fn structure_pages(&mut self, mem: &mut PhysMemory) -> Vec<u64> {
        use iommu_spec::amdvi::{off, DevTableBase, ExclusionBase, RingBase};
        if let Unit::Smmuv3(u) = self {
            return smmu_structure_pages(u, mem);
        }
        let Unit::Amdvi(u) = self else { return Vec::new() };
        let mut pages = Vec::new();
        let dt = DevTableBase::from_bits(u.mmio_read(mem, off::DEV_TABLE_BASE, 8));
        pages.extend((0..dt.bytes() / 4096).map(|i| dt.table() + i * 4096));
        for reg in [off::CMD_BUF_BASE, off::EVENT_LOG_BASE] {
            let r = RingBase::from_bits(u.mmio_read(mem, reg, 8));
            pages.extend((0..r.bytes().div_ceil(4096)).map(|i| r.ring() + i * 4096));
        }
        let sem = ExclusionBase::from_bits(u.mmio_read(mem, off::EXCL_BASE, 8)).address();
        if sem != 0 {
            pages.push(sem);
        }
        pages
    }
}

/// The SMMUv3's stream table (L1 and the L2 tables it points at), which adoption writes STEs into in place.
fn smmu_structure_pages(u: &mut Smmuv3Model, mem: &mut PhysMemory) -> Vec<u64> {
    use iommu_driver::PhysMem;
    use iommu_spec::smmuv3::{off, L1Desc, StrtabBase, StrtabBaseCfg, StrtabFmt};
    let base = StrtabBase::from_bits(u.mmio_read(mem, off::STRTAB_BASE, 8)).table();
    let cfg = StrtabBaseCfg::from_bits(u.mmio_read(mem, off::STRTAB_BASE_CFG, 4) as u32);
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
    pages
}

impl MmioDevice for Unit {
    fn mmio_read(&mut self, mem: &mut PhysMemory, off: usize, size: u8) -> u64 {
        match self {
            Unit::Vtd(u) => u.mmio_read(mem, off, size),
            Unit::Amdvi(u) => u.mmio_read(mem, off, size),
            Unit::Smmuv3(u) => u.mmio_read(mem, off, size),
        }
    }
    fn mmio_write(&mut self, mem: &mut PhysMemory, off: usize, size: u8, val: u64) {
        match self {
            Unit::Vtd(u) => u.mmio_write(mem, off, size, val),
            Unit::Amdvi(u) => u.mmio_write(mem, off, size, val),
            Unit::Smmuv3(u) => u.mmio_write(mem, off, size, val),
        }
    }
}

impl Iommu for Unit {
    fn translate(&mut self, mem: &mut PhysMemory, rid: u32, iova: u64, access: Access) -> Translation {
        match self {
            Unit::Vtd(u) => u.translate(mem, rid, iova, access),
            Unit::Amdvi(u) => u.translate(mem, rid, iova, access),
            Unit::Smmuv3(u) => u.translate(mem, rid, iova, access),
        }
    }
}

/// A domain of whichever driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dom(pub usize);

/// What the crash kernel's IOMMU init did, in common terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitReport {
    pub summary: String,
    pub adopted: Vec<u32>,
    pub problems: Vec<String>,
    pub frames_allocated: u64,
    pub bytes_read: u64,
}

/// The kernel's driver for the unit.
pub enum Driver {
    Vtd(vtd::Vtd),
    Amdvi(amdvi::Amdvi),
    Smmuv3(smmuv3::Smmuv3),
}

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

impl Driver {
    pub fn init(kind: IommuKind, hw: &mut impl Platform, env: &BootEnv, scalable: bool) -> Result<Self, String> {
        Ok(match kind {
            IommuKind::Vtd => Driver::Vtd(vtd::Vtd::init(hw, vtd::VtdOptions { scalable }).map_err(s)?),
            IommuKind::Amdvi => Driver::Amdvi(amdvi::Amdvi::init(hw, env, amdvi::AmdOptions::default()).map_err(s)?),
            IommuKind::Smmuv3 => Driver::Smmuv3(smmuv3::Smmuv3::init(hw).map_err(s)?),
        })
    }

    /// Boot the crash kernel's driver; `masters` are the requester/stream IDs its bus probe then finds.
    pub fn init_crash(
        kind: IommuKind,
        hw: &mut impl Platform,
        env: &BootEnv,
        scalable: bool,
        policy: Policy,
        masters: &[u32],
    ) -> Result<(Self, InitReport), String> {
        match kind {
            IommuKind::Vtd => {
                let (v, r) = vtd::Vtd::init_crash(hw, env, vtd::VtdOptions { scalable }, policy).map_err(s)?;
                let summary = match &r.outcome {
                    vtd::HandoverOutcome::NotLive => "not live".into(),
                    vtd::HandoverOutcome::Reset => format!("reset ({policy})"),
                    vtd::HandoverOutcome::Adopted => format!("adopted {} devices", r.adopted.len()),
                    vtd::HandoverOutcome::FellBack(why) => format!("fell back to reset: {why}"),
                };
                let rep = InitReport {
                    summary,
                    adopted: r.adopted.iter().map(|&x| x as u32).collect(),
                    problems: r.problems.iter().map(|p| p.to_string()).collect(),
                    frames_allocated: r.frames_allocated,
                    bytes_read: r.bytes_read,
                };
                Ok((Driver::Vtd(v), rep))
            }
            IommuKind::Amdvi => {
                let (v, r) = amdvi::Amdvi::init_crash(hw, env, amdvi::AmdOptions::default(), policy).map_err(s)?;
                let summary = match &r.outcome {
                    amdvi::AmdOutcome::NotLive => "not live".into(),
                    amdvi::AmdOutcome::Reset => format!("reset ({policy})"),
                    amdvi::AmdOutcome::Adopted => {
                        format!("reused the old structures, adopted {} devices", r.adopted.len())
                    }
                    amdvi::AmdOutcome::FellBack(why) => format!("fell back to reset: {why}"),
                };
                let rep = InitReport {
                    summary,
                    adopted: r.adopted.iter().map(|&x| x as u32).collect(),
                    problems: r.problems.iter().map(|p| p.to_string()).collect(),
                    frames_allocated: r.frames_allocated,
                    bytes_read: r.bytes_read,
                };
                Ok((Driver::Amdvi(v), rep))
            }
            IommuKind::Smmuv3 => {
                let (mut v, r) = smmuv3::Smmuv3::init_crash(hw, env, policy).map_err(s)?;
                let mut adopted = Vec::new();
                let mut problems = Vec::new();
                for &sid in masters {
                    match v.insert_master(hw, env, sid) {
                        Ok(Some(_)) => adopted.push(sid),
                        Ok(None) => {}
                        Err(p) => problems.push(p.to_string()),
                    }
                }
                let summary = match &r.outcome {
                    smmuv3::SmmuOutcome::NotLive => "not live".into(),
                    smmuv3::SmmuOutcome::Reset => format!("reset ({policy})"),
                    smmuv3::SmmuOutcome::Adopted => format!("adopted the stream table, {} masters live", adopted.len()),
                    smmuv3::SmmuOutcome::FellBack(why) => format!("fell back to reset: {why}"),
                };
                let rep = InitReport {
                    summary,
                    adopted,
                    problems,
                    frames_allocated: v.frames_allocated,
                    bytes_read: v.adopted_bytes,
                };
                Ok((Driver::Smmuv3(v), rep))
            }
        }
    }

    pub fn reserve_iova_holes(&mut self, holes: &[std::ops::Range<u64>]) {
        match self {
            Driver::Vtd(v) => v.reserve_iova_holes(holes),
            Driver::Amdvi(v) => v.reserve_iova_holes(holes),
            Driver::Smmuv3(v) => v.reserve_iova_holes(holes),
        }
    }

    pub fn create_domain(&mut self, hw: &mut impl Platform) -> Result<Dom, String> {
        match self {
            Driver::Vtd(v) => v.create_domain(hw).map(|d| Dom(d.0)).map_err(s),
            Driver::Amdvi(v) => v.create_domain(hw).map(|d| Dom(d.0)).map_err(s),
            Driver::Smmuv3(v) => v.create_domain(hw).map(|d| Dom(d.0)).map_err(s),
        }
    }

    /// Attach to `dom`, or to pass-through with `None`.
    pub fn attach(&mut self, hw: &mut impl Platform, rid: u32, dom: Option<Dom>) -> Result<(), String> {
        match self {
            Driver::Vtd(v) => {
                let to = dom.map_or(vtd::Attachment::PassThrough, |d| vtd::Attachment::Domain(vtd::DomainId(d.0)));
                v.attach(hw, rid as u16, to).map_err(s)
            }
            Driver::Amdvi(v) => {
                let to =
                    dom.map_or(amdvi::Attachment::PassThrough, |d| amdvi::Attachment::Domain(amdvi::DomainId(d.0)));
                v.attach(hw, rid as u16, to).map_err(s)
            }
            Driver::Smmuv3(v) => {
                let to = dom.map_or(smmuv3::Attachment::Bypass, |d| smmuv3::Attachment::Domain(smmuv3::DomainId(d.0)));
                v.attach(hw, rid, to).map_err(s)
            }
        }
    }

    pub fn map(&mut self, hw: &mut impl Platform, dom: Dom, pa: u64, size: u64) -> Result<u64, String> {
        match self {
            Driver::Vtd(v) => v.map(hw, vtd::DomainId(dom.0), pa, size, true, true).map_err(s),
            Driver::Amdvi(v) => v.map(hw, amdvi::DomainId(dom.0), pa, size, true, true).map_err(s),
            Driver::Smmuv3(v) => v.map(hw, smmuv3::DomainId(dom.0), pa, size, true, true).map_err(s),
        }
    }

    pub fn unmap(&mut self, hw: &mut impl Platform, dom: Dom, iova: u64, size: u64) -> Result<(), String> {
        match self {
            Driver::Vtd(v) => v.unmap(hw, vtd::DomainId(dom.0), iova, size).map_err(s),
            Driver::Amdvi(v) => v.unmap(hw, amdvi::DomainId(dom.0), iova, size).map_err(s),
            Driver::Smmuv3(v) => v.unmap(hw, smmuv3::DomainId(dom.0), iova, size).map_err(s),
        }
    }

    pub fn contain(&mut self, hw: &mut impl Platform, rid: u32) -> Result<(), String> {
        match self {
            Driver::Vtd(v) => v.contain(hw, rid as u16).map_err(s),
            Driver::Amdvi(v) => v.contain(hw, rid as u16).map_err(s),
            Driver::Smmuv3(v) => v.contain(hw, rid).map_err(s),
        }
    }

    pub fn scratch_region(&self) -> Option<std::ops::Range<u64>> {
        match self {
            Driver::Vtd(v) => v.scratch_region(),
            Driver::Amdvi(v) => v.scratch_region(),
            Driver::Smmuv3(v) => v.scratch_region(),
        }
    }

    pub fn scratch_frames(&self) -> u64 {
        match self {
            Driver::Vtd(v) => v.scratch_frames(),
            Driver::Amdvi(v) => v.scratch_frames(),
            Driver::Smmuv3(v) => v.scratch_frames(),
        }
    }
}
