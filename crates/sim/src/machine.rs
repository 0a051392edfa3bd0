//! The simulated machine: RAM, the crash kernel's reserved region, one VT-d unit and its devices.

use std::ops::Range;

use iommu_driver::BootEnv;
use iommu_emu::{EmuPlatform, FrameRegion, PhysMemory, VtdConfig, VtdModel};

use crate::device::{Device, Role};

pub const GIB: u64 = 1 << 30;
pub const MIB: u64 = 1 << 20;

/// Where things live in physical memory.
#[derive(Clone, Debug)]
pub struct MachineConfig {
    pub ram: Vec<Range<u64>>,
    /// `crashkernel=`: the crash kernel runs here and allocates its IOMMU structures and buffers from it.
    pub crash_region: Range<u64>,
    /// The primary kernel's pages for IOMMU structures.
    pub kernel_frames: Range<u64>,
    /// The primary kernel's pages for DMA buffers.
    pub buffer_pool: Range<u64>,
    /// The PCI MMIO window (and MSI range) below 4 GiB: not RAM, and kept out of every DMA domain's IOVAs.
    pub pci_hole: Range<u64>,
    /// Use VT-d scalable mode (both kernels).
    pub scalable: bool,
}

impl MachineConfig {
    /// The built-in machine, shaped like a small x86 server: RAM below the 1 GiB PCI hole and above 4 GiB,
    /// a 256 MiB crash region below the hole. Linux hands out IOVAs top-down below the hole, so with
    /// translation off old DMA lands on the old kernel's memory just beneath it.
    pub fn default_vtd() -> Self {
        MachineConfig {
            ram: vec![0x10_0000..3 * GIB, 4 * GIB..6 * GIB],
            crash_region: 0xa000_0000..0xb000_0000,
            kernel_frames: 16 * MIB..64 * MIB,
            buffer_pool: 256 * MIB..2 * GIB,
            pci_hole: 3 * GIB..4 * GIB,
            scalable: false,
        }
    }

    pub fn primary_env(&self) -> BootEnv {
        BootEnv {
            crash_kernel: false,
            ram: self.ram.clone(),
            crash_region: Some(self.crash_region.clone()),
            mem_encrypt: false,
        }
    }

    pub fn crash_env(&self) -> BootEnv {
        BootEnv { crash_kernel: true, ..self.primary_env() }
    }
}

/// A machine with its hardware state.
pub struct Machine {
    pub cfg: MachineConfig,
    pub mem: PhysMemory,
    pub vtd: VtdModel,
    pub devices: Vec<Device>,
    pub primary_frames: FrameRegion,
    pub crash_frames: FrameRegion,
}

impl Machine {
    pub fn new(cfg: MachineConfig) -> Self {
        let mem = PhysMemory::new(cfg.ram.clone());
        let vtd = VtdModel::new(VtdConfig::default());
        let devices = vec![
            Device::new("nic", 0x0010, Role::Nic, iommu_emu::Access::Write),
            Device::new("disk", 0x0018, Role::Disk, iommu_emu::Access::Write),
            Device::new("bulk", 0x0020, Role::Bulk, iommu_emu::Access::Write),
        ];
        // The crash kernel's own image and data take the start of its region; IOMMU structures and
        // buffers come from the rest.
        let crash_frames = FrameRegion::new(cfg.crash_region.start + 64 * MIB..cfg.crash_region.end);
        Machine { primary_frames: FrameRegion::new(cfg.kernel_frames.clone()), crash_frames, cfg, mem, vtd, devices }
    }

    /// The platform the primary kernel's driver runs on.
    pub fn primary(&mut self) -> EmuPlatform<'_, VtdModel> {
        EmuPlatform { dev: &mut self.vtd, mem: &mut self.mem, frames: &mut self.primary_frames }
    }

    /// The platform the crash kernel's driver runs on: same unit and memory, frames from the crash region.
    pub fn crash(&mut self) -> EmuPlatform<'_, VtdModel> {
        EmuPlatform { dev: &mut self.vtd, mem: &mut self.mem, frames: &mut self.crash_frames }
    }
}
