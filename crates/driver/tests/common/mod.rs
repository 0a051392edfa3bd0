//! A bare rig for driver-on-model tests: memory, one VT-d unit, a primary kernel's and a crash kernel's
//! frame pools, and raw DMA through the model.
#![allow(dead_code)]

use iommu_driver::BootEnv;
use iommu_emu::{Access, EmuPlatform, FrameRegion, Iommu, PhysMemory, Translation, VtdConfig, VtdModel};

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
pub const CRASH: std::ops::Range<u64> = (4 * GIB - 256 * MIB)..4 * GIB;

pub struct Rig {
    pub mem: PhysMemory,
    pub unit: VtdModel,
    pub primary: FrameRegion,
    pub crash: FrameRegion,
}

impl Rig {
    pub fn new() -> Self {
        Self::with(VtdConfig::default())
    }
    pub fn with(cfg: VtdConfig) -> Self {
        Rig {
            mem: PhysMemory::contiguous(0x10_0000..4 * GIB),
            unit: VtdModel::new(cfg),
            primary: FrameRegion::new(16 * MIB..64 * MIB),
            crash: FrameRegion::new(CRASH.start + 64 * MIB..CRASH.end),
        }
    }
    pub fn primary(&mut self) -> EmuPlatform<'_, VtdModel> {
        EmuPlatform::new(&mut self.unit, &mut self.mem, &mut self.primary)
    }
    pub fn crash(&mut self) -> EmuPlatform<'_, VtdModel> {
        EmuPlatform::new(&mut self.unit, &mut self.mem, &mut self.crash)
    }
    pub fn crash_env(&self) -> BootEnv {
        BootEnv {
            crash_kernel: true,
            ram: std::iter::once(0x10_0000..4 * GIB).collect(),
            crash_region: Some(CRASH),
            mem_encrypt: false,
            c_bit: 0,
        }
    }
    /// Where a device's write to `iova` lands, or the fault's reason code.
    pub fn dma(&mut self, sid: u16, iova: u64, access: Access) -> Result<u64, u16> {
        match self.unit.translate(&mut self.mem, sid as u32, iova, access) {
            Translation::Ok { phys } => Ok(phys),
            Translation::Fault(f) => Err(f.code),
        }
    }
}
