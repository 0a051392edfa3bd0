//! The AMD-Vi driver: normal boot (Linux `init_iommu_one` / `iommu_enable`), domains with v1 page tables,
//! map/unmap with INVALIDATE_IOMMU_PAGES and completion waits, attach.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use iommu_spec::amdvi::{
    invalidate_iommu_all, off, Control, DevTableBase, DeviceId, Dte, Efr, ExclusionBase, ExclusionLimit,
    InvalidateDevice, InvalidateIommuPages, PagingMode, RingBase, RingPtr,
};

use super::cmdq::CmdRing;
use super::scan::DteKind;
use super::AmdError;
use crate::ids::IdAllocator;
use crate::iova::IovaAllocator;
use crate::{BootEnv, FrameAlloc, Platform};

/// Page-table levels of our domains: 3 (39-bit IOVAs), what Linux starts DMA domains with.
pub const LEVELS: u32 = 3;
/// Ring length code for 512 16-byte entries (8 KiB), Linux's command buffer and event log size.
pub const RING_LEN: u8 = 9;

/// Choices a kernel makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AmdOptions {
    /// Device table entries (a power of two up to 65 536): Linux sizes it from IVRS's last device ID.
    pub dev_table_entries: u32,
}

impl Default for AmdOptions {
    fn default() -> Self {
        AmdOptions { dev_table_entries: 65536 }
    }
}

pub use crate::contract::{Attachment, DomainId};

/// A DMA domain: an AMD-Vi domain ID, a v1 host page table and its IOVA space.
#[derive(Clone, Debug)]
pub struct Domain {
    /// The domain ID its DTEs carry and INVALIDATE_IOMMU_PAGES names.
    pub id: u16,
    /// Physical address of its top-level page table (without the SME bit).
    pub root: u64,
    /// The IOVAs handed out and reserved in it.
    pub iova: IovaAllocator,
}

/// A device's state in this driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceState {
    /// On this kernel's DTE: a domain of ours, or identity.
    Attached(Attachment),
    /// Still translating through the crashed kernel's DTE (used in place); attach deferred.
    Adopted {
        /// The crashed kernel's domain ID, kept (and reserved) while the DTE is live.
        domain: u16,
        /// How the adopted DTE translates.
        kind: DteKind,
    },
    /// Contained: every old IOVA points at the scratch region.
    Contained {
        /// The domain ID of the scratch page tables.
        domain: u16,
    },
    /// Its DTE failed validation (or its tables reach the crash kernel's region) and was rewritten to block
    /// DMA; `domain` is the old domain ID, kept reserved.
    Refused {
        /// The crashed kernel's domain ID.
        domain: u16,
    },
}

/// The scratch region contained devices' DMA lands in, and the shared table chains that map into it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Scratch {
    pub page: u64,
    /// Top table of the chain for each level count (3..=6) built so far.
    pub tops: [Option<u64>; 7],
    pub id: u16,
    pub frames: u64,
}

/// The driver for one AMD-Vi unit.
pub struct Amdvi {
    /// EFR as read at boot: host address translation size, SNP support, guest features.
    pub efr: Efr,
    pub(super) snp: bool,
    pub(super) dev_table: u64,
    pub(super) dev_table_bytes: u64,
    pub(super) cmd: Option<CmdRing>,
    pub(super) domain_ids: IdAllocator,
    pub(super) domains: Vec<Option<Domain>>,
    pub(super) devices: BTreeMap<u16, DeviceState>,
    pub(super) translating: bool,
    pub(super) scratch: Option<Scratch>,
    pub(super) iova_holes: Vec<core::ops::Range<u64>>,
    /// Frames taken from the platform for the device table, rings and page tables.
    pub frames_allocated: u64,
    /// The SME encryption bit every address this kernel gives the unit carries ([`crate::BootEnv::c_bit`]).
    pub(super) c_bit: u64,
    /// Interrupt remapping (`irq`).
    pub(super) irq: super::irq::IrqState,
}

/// Contiguous frames, or out of memory.
pub(super) fn alloc_contiguous(hw: &mut impl FrameAlloc, pages: u64, count: &mut u64) -> Result<u64, AmdError> {
    crate::alloc_contiguous(hw, pages, count).ok_or(AmdError::OutOfMemory)
}

impl Amdvi {
    /// Translation is on (CONTROL.IommuEn) and through tables this kernel trusts (false under
    /// `reset-bypass` and `off`).
    pub fn translating(&self) -> bool {
        self.translating
    }
    /// SEV-SNP may hold the unit: EFR.SNPSup and either this host runs SNP or, on a crash kernel, a
    /// completion-store window in EXCL_BASE says the crashed one did (Linux `amd_iommu_snp_en`). Then the
    /// device table, rings and completion-wait page may be locked and must be reused in place.
    pub fn snp(&self) -> bool {
        self.snp
    }
    /// Physical address of the device table the unit uses (DEV_TABLE_BASE).
    pub fn device_table(&self) -> u64 {
        self.dev_table
    }
    /// What the driver knows of DeviceID `devid`, if anything.
    pub fn device(&self, devid: u16) -> Option<DeviceState> {
        self.devices.get(&devid).copied()
    }
    /// The domain behind handle `d`, while it exists.
    pub fn domain(&self, d: DomainId) -> Option<&Domain> {
        self.domains.get(d.0).and_then(|x| x.as_ref())
    }
    /// Whether domain ID `id` is taken, by this kernel or reserved from the crashed one.
    pub fn domain_id_used(&self, id: u16) -> bool {
        self.domain_ids.is_used(id as u32)
    }
    /// IOVA ranges every domain created from now on keeps unused (PCI windows, MSI).
    pub fn reserve_iova_holes(&mut self, holes: &[core::ops::Range<u64>]) {
        self.iova_holes = holes.to_vec();
    }

    /// The page-table format as this kernel writes it (with its SME bit).
    pub(super) fn v1(&self) -> super::V1 {
        super::V1 { c_bit: self.c_bit }
    }

    pub(super) fn blank(hw: &mut impl Platform, env: &BootEnv) -> Self {
        let efr = Efr::from_bits(hw.read64(off::EXT_FEATURES));
        // Whether SNP may hold the unit: Linux's `amd_iommu_snp_en` needs EFR.SNPSup and a host running SNP.
        // A crash kernel cannot ask the firmware, and seeing the lock would take a write to a locked register,
        // so it follows the hardware: on an SNPSup unit whose Exclusion Base holds a completion-store window
        // (ExEn clear: what Linux `iommu_set_cwwb_range` leaves on every SNPSup unit), SNP may have locked it,
        // whatever this kernel's own `mem_encrypt` says.
        let window = ExclusionBase::from_bits(hw.read64(off::EXCL_BASE));
        let window_set = window.address() != 0 && !window.ex_en();
        let mut domain_ids = IdAllocator::new(65536, 1);
        domain_ids.reserve(0);
        Amdvi {
            efr,
            snp: efr.snp_sup() && (env.mem_encrypt || (env.crash_kernel && window_set)),
            dev_table: 0,
            dev_table_bytes: 0,
            cmd: None,
            domain_ids,
            domains: Vec::new(),
            devices: BTreeMap::new(),
            translating: false,
            scratch: None,
            iova_holes: Vec::new(),
            frames_allocated: 0,
            c_bit: env.c_bit,
            irq: super::irq::IrqState::new(false),
        }
    }

    /// Normal boot: a fresh device table with every entry blocking DMA, our own command buffer, event log and
    /// completion-wait page, everything invalidated, translation on.
    pub fn init(hw: &mut impl Platform, env: &BootEnv, opts: AmdOptions) -> Result<Self, AmdError> {
        let mut v = Self::fresh(hw, env, opts)?;
        v.irq_fresh(hw);
        v.enable(hw, true)?;
        v.invalidate_all(hw)?;
        Ok(v)
    }

    /// Program fresh structures, translation still off. The registers are written: under a live SNP lock
    /// they are ignored, and the first completion wait after enabling shows it. (Commands only run with
    /// IOMMU_EN set: Linux `early_enable_iommu` enables, then flushes everything.)
    pub(super) fn fresh(hw: &mut impl Platform, env: &BootEnv, opts: AmdOptions) -> Result<Self, AmdError> {
        let mut v = Self::blank(hw, env);
        let ctrl = Control::from_bits(hw.read64(off::CONTROL));
        hw.write64(off::CONTROL, ctrl.with_cmd_buf_en(false).with_event_log_en(false).into_bits());
        let entries = opts.dev_table_entries.clamp(256, 65536).next_power_of_two();
        let bytes = entries as u64 * 32;
        let mut n = 0;
        let dt = alloc_contiguous(hw, bytes / 4096, &mut n)?;
        let snp = v.snp;
        let blocked = Dte::blocked(snp).to_le_bytes();
        let page: Vec<u8> = (0..128).flat_map(|_| blocked).collect();
        hw.write_repeated(dt, &page, bytes / 4096)?;
        let cmd = alloc_contiguous(hw, 2, &mut n)?;
        let evt = alloc_contiguous(hw, 2, &mut n)?;
        let sem = alloc_contiguous(hw, 1, &mut n)?;
        v.frames_allocated += n;
        v.dev_table = dt;
        v.dev_table_bytes = bytes;
        // Every address the unit is given carries the SME bit (Linux `iommu_virt_to_phys`).
        let spa = |pa| env.sme_set(pa);
        hw.write64(off::DEV_TABLE_BASE, DevTableBase::from_table(spa(dt), bytes).into_bits());
        hw.write64(off::CMD_BUF_BASE, RingBase::from_ring(spa(cmd), RING_LEN).into_bits());
        hw.write64(off::EVENT_LOG_BASE, RingBase::from_ring(spa(evt), RING_LEN).into_bits());
        if snp {
            // Completion-wait stores must land in the completion-store window (Linux `iommu_set_cwwb_range`).
            hw.write64(off::EXCL_BASE, ExclusionBase::from_address(spa(sem)).into_bits());
            hw.write64(off::EXCL_LIMIT, ExclusionLimit::from_address(spa(sem)).into_bits());
        }
        v.cmd = Some(CmdRing::new(cmd, 1 << RING_LEN, sem, env.c_bit));
        v.restart_rings(hw);
        Ok(v)
    }

    /// Reset the command buffer and event log to empty and (re)start them (Linux
    /// `amd_iommu_reset_cmd_buffer`, `iommu_enable_event_buffer`): head and tail to 0 with the rings off.
    pub(super) fn restart_rings(&mut self, hw: &mut impl Platform) {
        let ctrl = Control::from_bits(hw.read64(off::CONTROL));
        hw.write64(off::CONTROL, ctrl.with_cmd_buf_en(false).with_event_log_en(false).into_bits());
        for r in [off::CMD_HEAD, off::CMD_TAIL, off::EVENT_HEAD, off::EVENT_TAIL] {
            hw.write64(r, RingPtr::from_index(0).into_bits());
        }
        if let Some(c) = self.cmd.as_mut() {
            c.tail = 0;
        }
        hw.write64(off::CONTROL, ctrl.with_cmd_buf_en(true).with_event_log_en(true).with_coherent(true).into_bits());
    }

    pub(super) fn enable(&mut self, hw: &mut impl Platform, on: bool) -> Result<(), AmdError> {
        let ctrl = Control::from_bits(hw.read64(off::CONTROL));
        hw.write64(off::CONTROL, ctrl.with_iommu_en(on).into_bits());
        self.translating = on;
        Ok(())
    }

    pub(super) fn submit(&mut self, hw: &mut impl Platform, cmds: &[u128]) -> Result<(), AmdError> {
        match self.cmd.as_mut() {
            Some(c) => c.submit(hw, cmds),
            None => Ok(()),
        }
    }

    /// INVALIDATE_IOMMU_ALL where EFR offers it, else every device-table entry and then every domain ID's
    /// translations (Linux `amd_iommu_flush_all_caches`: `amd_iommu_flush_dte_all`, `amd_iommu_flush_tlb_all`
    /// over domain IDs 0..=0xffff), so nothing the crashed kernel left cached survives without IASup either.
    pub(super) fn invalidate_all(&mut self, hw: &mut impl Platform) -> Result<(), AmdError> {
        if self.efr.ia_sup() {
            return self.submit(hw, &[invalidate_iommu_all()]);
        }
        let n = (self.dev_table_bytes / 32).min(65536) as u32;
        let cmds: Vec<u128> = (0..n)
            .map(|d| InvalidateDevice::devtab_entry(DeviceId(d as u16)).into_bits())
            .chain((0..=u16::MAX).map(|id| InvalidateIommuPages::all(id).into_bits()))
            .collect();
        self.submit(hw, &cmds)
    }

    /// A new, empty DMA domain with a fresh domain ID and an empty top-level table.
    pub fn create_domain(&mut self, hw: &mut impl Platform) -> Result<DomainId, AmdError> {
        let id = self.domain_ids.alloc().ok_or(AmdError::OutOfDomainIds)? as u16;
        let root = hw.alloc_frame().ok_or(AmdError::OutOfMemory)?;
        self.frames_allocated += 1;
        let iova = IovaAllocator::with_holes(0x1000, 1 << 32, &self.iova_holes);
        self.domains.push(Some(Domain { id, root, iova }));
        Ok(DomainId(self.domains.len() - 1))
    }

    fn domain_mut(&mut self, d: DomainId) -> Result<&mut Domain, AmdError> {
        self.domains.get_mut(d.0).and_then(|x| x.as_mut()).ok_or(AmdError::NoSuchDomain(d.0))
    }

    /// Map `size` bytes at `pa` at a fresh IOVA. With translation off the "IOVA" is the physical address.
    pub fn map(
        &mut self,
        hw: &mut impl Platform,
        d: DomainId,
        pa: u64,
        size: u64,
        read: bool,
        write: bool,
    ) -> Result<u64, AmdError> {
        if !self.translating {
            return Ok(pa);
        }
        if !pa.is_multiple_of(4096) || !size.is_multiple_of(4096) || size == 0 {
            return Err(AmdError::BadRange { iova: pa, size });
        }
        let dom = self.domain_mut(d)?;
        let iova = dom.iova.alloc(size).ok_or(AmdError::OutOfIova { size })?;
        let root = dom.root;
        self.map_range(hw, root, iova, pa, size, read, write)?;
        Ok(iova)
    }

    /// Map at a chosen IOVA (all 4 KiB multiples): what a one-to-one domain for a kernel whose DMA API is
    /// direct needs. Not-present to present needs no invalidation, as for [`Amdvi::map`].
    #[allow(clippy::too_many_arguments)]
    pub fn map_at(
        &mut self,
        hw: &mut impl Platform,
        d: DomainId,
        iova: u64,
        pa: u64,
        size: u64,
        read: bool,
        write: bool,
    ) -> Result<(), AmdError> {
        if !self.translating {
            return Ok(());
        }
        let width = 12 + 9 * LEVELS;
        if !crate::walk::mappable(iova, pa, size, width) {
            return Err(AmdError::BadRange { iova, size });
        }
        let dom = self.domain_mut(d)?;
        dom.iova.reserve(iova, iova + size);
        let root = dom.root;
        self.map_range(hw, root, iova, pa, size, read, write)?;
        Ok(())
    }

    /// Leaves for `[iova, iova + size)` → `pa` (4 KiB multiples), one walk per last-level table.
    #[allow(clippy::too_many_arguments)]
    fn map_range(
        &mut self,
        hw: &mut impl Platform,
        root: u64,
        iova: u64,
        pa: u64,
        size: u64,
        r: bool,
        w: bool,
    ) -> Result<(), AmdError> {
        let pages = size / 4096;
        crate::walk::map_range(hw, &self.v1(), root, LEVELS, iova, pa, pages, r, w, &mut self.frames_allocated).map_err(
            |e| match e {
                crate::walk::MapError::Mem(m) => AmdError::Mem(m),
                crate::walk::MapError::OutOfMemory => AmdError::OutOfMemory,
                crate::walk::MapError::Occupied { iova, .. } => AmdError::BadRange { iova, size: 4096 },
            },
        )
    }

    /// Unmap and invalidate at once (strict): INVALIDATE_IOMMU_PAGES for the range, then a completion wait.
    pub fn unmap(&mut self, hw: &mut impl Platform, d: DomainId, iova: u64, size: u64) -> Result<(), AmdError> {
        if !self.translating {
            return Ok(());
        }
        if !crate::walk::unmappable(iova, size, 12 + 9 * LEVELS) {
            return Err(AmdError::BadRange { iova, size });
        }
        let dom = self.domain_mut(d)?;
        let (root, id) = (dom.root, dom.id);
        dom.iova.release(iova);
        crate::walk::unmap_range(hw, &self.v1(), root, LEVELS, iova, size.div_ceil(4096))?;
        self.submit(hw, &[InvalidateIommuPages::range(id, iova, size).into_bits()])
    }

    /// Point `devid`'s DTE at a new translation and invalidate what the unit caches for it (Linux
    /// `set_dte_entry` + `device_flush_dte`). The unit may fetch the entry at any moment (AMD-Vi 2.2.2), so
    /// the interrupt-remapping half (quadwords 2-3) is kept as it is, as `set_dte_entry` keeps it, and the
    /// root, mode, V/TV and domain ID (quadwords 0-1) change in one 128-bit write (Linux `update_dte256` /
    /// `write_dte_lower128`): no fetch sees a new domain ID with the old root. Both the old and the new domain
    /// ID are flushed: a fetch just before the write may have cached the old translations, and the new ID's
    /// entries may predate this domain.
    pub(super) fn write_dte(
        &mut self,
        hw: &mut impl Platform,
        devid: u16,
        dte: Dte,
        old_domain: Option<u16>,
    ) -> Result<(), AmdError> {
        let at = self.dev_table + 32 * devid as u64;
        let lower = dte.0[0] as u128 | (dte.0[1] as u128) << 64;
        hw.write_u128(at, lower)?;
        let mut cmds = alloc::vec![InvalidateDevice::devtab_entry(DeviceId(devid)).into_bits()];
        if let Some(id) = old_domain {
            cmds.push(InvalidateIommuPages::all(id).into_bits());
        }
        if old_domain != Some(dte.domain_id()) {
            cmds.push(InvalidateIommuPages::all(dte.domain_id()).into_bits());
        }
        self.submit(hw, &cmds)
    }

    /// Replace the whole live DTE of `devid` with `dte`, for an entry refused as a whole (its interrupt half is
    /// as untrusted as the rest). Quadwords 0-1 first, which make the entry stop translating, then 2-3: the
    /// order Linux `update_dte256` uses when an entry stops translating.
    pub(super) fn replace_dte(
        &mut self,
        hw: &mut impl Platform,
        devid: u16,
        dte: Dte,
        old_domain: Option<u16>,
    ) -> Result<(), AmdError> {
        let at = self.dev_table + 32 * devid as u64;
        hw.write_u128(at, dte.0[0] as u128 | (dte.0[1] as u128) << 64)?;
        hw.write_u128(at + 16, dte.0[2] as u128 | (dte.0[3] as u128) << 64)?;
        let mut cmds = alloc::vec![InvalidateDevice::devtab_entry(DeviceId(devid)).into_bits()];
        if let Some(id) = old_domain {
            cmds.push(InvalidateIommuPages::all(id).into_bits());
        }
        self.submit(hw, &cmds)
    }

    /// Attach `devid`. A device still on its adopted DTE is switched over here (the deferred attach): its old
    /// IOVAs are reserved in the new domain and the old domain's translations are flushed.
    pub fn attach(&mut self, hw: &mut impl Platform, devid: u16, to: Attachment) -> Result<(), AmdError> {
        if !self.translating {
            return Ok(());
        }
        let old_domain = match self.devices.get(&devid).copied() {
            Some(DeviceState::Adopted { domain, kind }) => {
                if let (Attachment::Domain(d), DteKind::Translated { root, levels }) = (to, kind) {
                    let w = crate::walk::walk(
                        hw,
                        &self.v1(),
                        root,
                        levels,
                        crate::walk::WalkLimits { max_tables: 4096, max_runs: 65536 },
                    );
                    let dom = self.domain_mut(d)?;
                    for r in &w.runs {
                        dom.iova.reserve(r.iova, r.end());
                    }
                }
                Some(domain)
            }
            Some(DeviceState::Contained { domain }) | Some(DeviceState::Refused { domain }) => Some(domain),
            Some(DeviceState::Attached(Attachment::Domain(d))) => self.domain(d).map(|x| x.id),
            _ => None,
        };
        let dte = match to {
            Attachment::Domain(d) => {
                let dom = self.domain(d).ok_or(AmdError::NoSuchDomain(d.0))?;
                Dte::translated(dom.root | self.c_bit, PagingMode::from_bits(LEVELS as u8), dom.id, true, true)
            }
            Attachment::Identity => {
                let id = self.domain_ids.alloc().ok_or(AmdError::OutOfDomainIds)? as u16;
                Dte::passthrough(id)
            }
        };
        self.write_dte(hw, devid, dte, old_domain)?;
        self.devices.insert(devid, DeviceState::Attached(to));
        Ok(())
    }
}
