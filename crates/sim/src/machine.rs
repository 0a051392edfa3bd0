//! The simulated machine: RAM with a PCI hole, the crash kernel's reserved region, one IOMMU unit and its
//! devices (a NIC, an NVMe-like disk, a bulk copy engine, a NIC port whose link is down), all of whose DMA goes
//! through the unit.

use std::ops::Range;
use std::sync::Arc;

use iommu_driver::BootEnv;
use iommu_emu::devices::{AnyDevice, Blk, BlkConfig, Bulk, BulkConfig, DmaDevice, DmaEvent, Nic, NicConfig, Rate};
use iommu_emu::mem::Page;
use iommu_emu::snp::{SnpCommand, SnpFirmware};
use iommu_emu::{EmuPlatform, FrameRegion, PhysMemory};

use crate::unit::{IommuKind, Unit};

/// Bytes in a GiB, for the memory map.
pub const GIB: u64 = 1 << 30;
/// Bytes in a MiB, for the memory map.
pub const MIB: u64 = 1 << 20;

/// Requester ID of the NIC: 00:02.0, where QEMU's q35 places an e1000e.
pub const NIC_RID: u16 = 0x0010;
/// Requester ID of the disk the dump is written to: 00:03.0, where q35 places an nvme.
pub const DISK_RID: u16 = 0x0018;
/// The disk's maximum data transfer size, in 4 KiB blocks (128 KiB): the crash kernel writes the dump in
/// commands this large where the pages are contiguous (the block layer merges a contiguous read of
/// `/proc/vmcore` into requests up to the controller's MDTS, Linux `nvme_set_queue_limits`).
pub const DISK_MDTS_BLOCKS: u32 = 32;
/// Requester ID of the bulk copy engine: 00:04.0.
pub const BULK_RID: u16 = 0x0020;
/// Requester ID of a second NIC port whose link is down: 00:05.0. The primary kernel probes it (a DMA
/// domain, a ring, posted buffers) and it never receives: the device idle at the crash that every real
/// machine has (an unplugged port, an idle USB controller).
pub const IDLE_NIC_RID: u16 = 0x0028;
/// The APIC ID of the CPU that panics on an x2APIC host (`--x2apic`): the first one past the 8-bit range.
pub const X2APIC_CRASH_CPU: u32 = 0x100;
/// The APIC ID of the CPU that panics otherwise: not the boot CPU (APIC 0), where the primary kernel's timer goes.
pub const CRASH_CPU: u32 = 3;
/// The GIC ITS's `GITS_TRANSLATER` on an Arm machine (SMMUv3): where an MSI must land, through the device's
/// stream table entry (ITS frame base + 0x10040, GICv3 architecture 12.19.x; QEMU `virt` has it at 0x08090040).
/// The built-in machine puts the ITS frame in its PCI hole, outside RAM.
pub const ITS_DOORBELL: u64 = 3 * GIB + 0x0809_0040;
/// The IO-APIC's requester ID as the unit sees its interrupts (AMD-Vi: the IVRS special device; VT-d: the DMAR
/// IOAPIC scope): 00:14.0, where AMD platforms put it.
pub const IOAPIC_RID: u16 = 0x00a0;

/// Where things live in physical memory.
#[derive(Clone, Debug)]
pub struct MachineConfig {
    /// System RAM ranges (physical addresses, exclusive ends); the PCI hole lies between them.
    pub ram: Vec<Range<u64>>,
    /// `crashkernel=`: the crash kernel runs here and allocates its IOMMU structures and buffers from it.
    pub crash_region: Range<u64>,
    /// The primary kernel's pages for IOMMU structures.
    pub kernel_frames: Range<u64>,
    /// The primary kernel's pages for device rings and DMA buffers.
    pub buffer_pool: Range<u64>,
    /// The PCI MMIO window (and MSI range) below 4 GiB: not RAM, and kept out of every DMA domain's IOVAs.
    pub pci_hole: Range<u64>,
    /// The IOMMU.
    pub iommu: IommuKind,
    /// Use VT-d scalable mode (both kernels).
    pub scalable: bool,
    /// VT-d: the unit offers first-level translation and both kernels give their DMA domains first-level
    /// tables (with `scalable`; Linux 6.x on such units).
    pub vtd_first_level: bool,
    /// AMD-Vi: the host runs SEV-SNP (the unit's base registers lock at SNP init).
    pub snp: bool,
    /// SMMUv3: IDR0.COHACC.
    pub coherent_walker: bool,
    /// Packets per tick arriving at the NIC.
    pub nic_rate: Rate,
    /// AMD-Vi: the unit lacks EFR.IASup (an injected fault).
    pub no_iasup: bool,
    /// The host has CPUs with APIC IDs above 255 (x2APIC): the crash kernel runs on one of them (kdump boots on
    /// the CPU that panicked), which a compatibility-format MSI's 8-bit destination cannot name.
    pub x2apic: bool,
}

impl MachineConfig {
    /// The built-in machine, shaped like a small x86 server: RAM below the 1 GiB PCI hole and above 4 GiB,
    /// a 256 MiB crash region below the hole. Linux hands out IOVAs top-down below the hole, so with
    /// translation off old DMA lands on the old kernel's memory just beneath it.
    pub fn default_vtd() -> Self {
        MachineConfig {
            ram: vec![0..3 * GIB, 4 * GIB..6 * GIB],
            crash_region: 0xa000_0000..0xb000_0000,
            kernel_frames: 16 * MIB..64 * MIB,
            buffer_pool: 256 * MIB..2 * GIB,
            pci_hole: 3 * GIB..4 * GIB,
            iommu: IommuKind::Vtd,
            scalable: false,
            vtd_first_level: false,
            snp: false,
            coherent_walker: true,
            nic_rate: Rate::per_tick(1),
            no_iasup: false,
            x2apic: false,
        }
    }

    /// What the primary kernel boots with: not a crash kernel, the RAM map, the reserved crash region, and
    /// SME if the host runs SNP.
    pub fn primary_env(&self) -> BootEnv {
        BootEnv {
            crash_kernel: false,
            ram: self.ram.clone(),
            crash_region: Some(self.crash_region.clone()),
            mem_encrypt: self.sme(),
            c_bit: self.c_bit(),
        }
    }

    /// The host encrypts its memory (SME, which an SEV-SNP host runs with): only the AMD-Vi machine.
    pub fn sme(&self) -> bool {
        self.snp && self.iommu == IommuKind::Amdvi
    }

    /// The SME encryption bit of the host, 0 without SME: bit 51, where EPYC 7003 and 9004 parts put it
    /// (CPUID `Fn8000_001F EBX[5:0]`). The kernels write it into every address they give the IOMMU, the unit
    /// strips it.
    pub fn c_bit(&self) -> u64 {
        if self.sme() {
            1 << 51
        } else {
            0
        }
    }

    /// The primary kernel's environment with `crash_kernel` set, as `is_kdump_kernel()` sees it.
    pub fn crash_env(&self) -> BootEnv {
        BootEnv { crash_kernel: true, ..self.primary_env() }
    }
}

/// Whose pages a driver allocates from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// The kernel that runs before the panic: IOMMU structures from `kernel_frames`, buffers from
    /// `buffer_pool`.
    Primary,
    /// The kdump kernel: everything from the `crashkernel=` region, past its 64 MiB image.
    Crash,
}

/// A machine with its hardware state.
#[derive(Clone)]
pub struct Machine {
    /// The layout the machine was built from.
    pub cfg: MachineConfig,
    /// Physical memory, shared by both kernels and every device.
    pub mem: PhysMemory,
    /// The IOMMU model every DMA and MSI goes through.
    pub unit: Unit,
    /// The SEV-SNP firmware of an SNP host.
    pub fw: Option<SnpFirmware>,
    /// The NIC, the disk, the copy engine and the idle NIC port, which keep running across the panic.
    pub devices: Vec<AnyDevice>,
    primary_frames: FrameRegion,
    buffers: FrameRegion,
    crash_frames: FrameRegion,
}

impl Machine {
    /// Power on: empty memory, the unit in its reset state, the four devices in reset.
    pub fn new(cfg: MachineConfig) -> Self {
        let mem = PhysMemory::new(cfg.ram.clone());
        let snp = cfg.snp && cfg.iommu == IommuKind::Amdvi;
        let opts = iommu_emu::ModelOptions {
            snp,
            coherent: cfg.coherent_walker,
            no_iasup: cfg.no_iasup,
            vtd_first_level: cfg.vtd_first_level,
            c_bit: cfg.c_bit(),
            x2apic: cfg.x2apic,
        };
        let unit: Unit = iommu_emu::model_with(cfg.iommu, opts);
        let fw = snp.then(|| SnpFirmware::new(4, 4));
        let devices = vec![
            AnyDevice::from(Nic::new("nic", NIC_RID as u32, NicConfig { rate: cfg.nic_rate, ..NicConfig::default() })),
            AnyDevice::from(Blk::new(
                "disk",
                DISK_RID as u32,
                BlkConfig { cmds_per_tick: 16, capacity_blocks: 1 << 21, mdts_blocks: DISK_MDTS_BLOCKS },
            )),
            AnyDevice::from(Bulk::new("bulk", BULK_RID as u32, BulkConfig { descs_per_tick: 1, max_len: 4096 })),
            AnyDevice::from(Nic::new(
                "nic1",
                IDLE_NIC_RID as u32,
                NicConfig { rate: Rate::OFF, ..NicConfig::default() },
            )),
        ];
        // The crash kernel's image and data take the start of its region; IOMMU structures and buffers
        // come from the rest.
        let crash_frames = FrameRegion::new(cfg.crash_region.start + 64 * MIB..cfg.crash_region.end);
        Machine {
            primary_frames: FrameRegion::new(cfg.kernel_frames.clone()),
            buffers: FrameRegion::new(cfg.buffer_pool.clone()),
            crash_frames,
            cfg,
            mem,
            unit,
            fw,
            devices,
        }
    }

    /// The platform a kernel's IOMMU driver runs on: the unit, memory, and that kernel's frames.
    pub fn platform(&mut self, k: Kernel) -> EmuPlatform<'_, Unit> {
        let frames = match k {
            Kernel::Primary => &mut self.primary_frames,
            Kernel::Crash => &mut self.crash_frames,
        };
        EmuPlatform { dev: &mut self.unit, mem: &mut self.mem, frames }
    }

    /// A page for a device ring or buffer: from the primary kernel's pool, or the crash kernel's region.
    pub fn buffer_page(&mut self, k: Kernel) -> Option<u64> {
        let pa = match k {
            Kernel::Primary => self.buffers.alloc()?,
            Kernel::Crash => self.crash_frames.alloc()?,
        };
        self.mem.zero_page(pa).ok()?;
        Some(pa)
    }

    /// `n` physically contiguous pages for one I/O buffer, by the first one's address, zeroed.
    pub fn buffer_pages(&mut self, k: Kernel, n: usize) -> Option<u64> {
        self.buffer_pages_holding(k, n, &[])
    }

    /// [`Machine::buffer_pages`] with the first pages holding `pages` (`None`: zeros), as a copy of each into
    /// the zeroed buffer would leave them: shared, not zeroed and then replaced.
    pub fn buffer_pages_holding(&mut self, k: Kernel, n: usize, pages: &[Option<Arc<Page>>]) -> Option<u64> {
        let pa = match k {
            Kernel::Primary => self.buffers.alloc_run(n)?,
            Kernel::Crash => self.crash_frames.alloc_run(n)?,
        };
        for i in 0..n {
            let at = pa + i as u64 * 4096;
            match pages.get(i) {
                Some(Some(page)) => self.mem.write_page_shared(at, page).ok()?,
                _ => self.mem.zero_page(at).ok()?,
            }
        }
        Some(pa)
    }

    /// Every device does the work due by tick `now`; its DMA is appended to `log`.
    pub fn run_devices(&mut self, now: u64, log: &mut Vec<DmaEvent>) {
        for d in &mut self.devices {
            d.tick(now, &mut self.unit, &mut self.mem, log);
        }
    }

    /// Move the interrupt messages the devices sent since the last call to the end of `out`.
    pub fn drain_irqs(&mut self, out: &mut Vec<iommu_emu::devices::IrqEvent>) {
        for d in &mut self.devices {
            d.drain_irqs(out);
        }
    }

    /// The local APIC the crash kernel's interrupts go to: the CPU that panicked, where kdump boots (above 255
    /// on an x2APIC host). An Arm machine (SMMUv3) has no APIC: its GIC ITS reaches every CPU, so `x2apic` does
    /// not apply to it.
    pub fn crash_cpu(&self) -> u32 {
        if self.cfg.x2apic && self.cfg.iommu != IommuKind::Smmuv3 {
            X2APIC_CRASH_CPU
        } else {
            CRASH_CPU
        }
    }

    /// SNP_INIT_EX on an SNP host (after the IOMMU is up, as Linux orders it): the base registers lock.
    pub fn snp_init(&mut self) {
        if let Some(fw) = self.fw.as_mut() {
            fw.command(SnpCommand::InitEx);
            let locked = fw.iommu_locked();
            self.unit.set_snp_lock(locked);
        }
    }

    /// The panic path's SNP_SHUTDOWN_EX: succeeded (the IOMMU released) or failed (still locked).
    pub fn snp_panic(&mut self, shutdown_ok: bool) {
        if let Some(fw) = self.fw.as_mut() {
            if shutdown_ok {
                fw.command(SnpCommand::ShutdownEx { iommu: true });
            }
            let locked = fw.iommu_locked();
            self.unit.set_snp_lock(locked);
        }
    }

    /// The device at requester ID `rid`, e.g. to reset it with an FLR.
    pub fn device(&mut self, rid: u16) -> Option<&mut AnyDevice> {
        self.devices.iter_mut().find(|d| d.rid() == rid as u32)
    }
}
