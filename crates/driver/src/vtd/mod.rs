//! Intel VT-d driver: normal boot, and crash-kernel boot under a [`Policy`](crate::Policy).
//!
//! One [`Vtd`] drives one remapping unit. It owns the tables it builds (root, context, PASID, page
//! tables) in frames from the platform's allocator, talks to the unit through [`Mmio`](crate::Mmio), and
//! invalidates through its own queued-invalidation ring.

mod cmdq;
mod context;
mod contract;
mod driver;
mod error;
mod handover;
mod hw;
mod irq;
pub mod scan;
pub mod walk;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

pub use error::{EntryProblem, Refusal, VtdError};
pub use handover::{HandoverOutcome, HandoverReport};
use iommu_spec::vtd::{Cap, Ecap, IotlbInv, PasidIotlbInv};
pub use scan::{scan, DeviceKind, Scan, ScannedDevice};
pub use walk::{FirstLevel, Leaf, Run, SecondLevel, VtdFormat, Walk, WalkIssue, WalkLimits};

use crate::ids::IdAllocator;
use crate::iova::IovaAllocator;
use crate::Platform;
use cmdq::InvQueue;

/// Domain ID Linux gives pass-through and first-level entries (`FLPT_DEFAULT_DID`); DID 0 is never used
/// because CAP.CM hardware tags cached not-present entries with it. Paging domains start at 2.
pub const FLPT_DEFAULT_DID: u16 = 1;
/// The first domain ID handed to a paging domain: DIDs 0 and 1 are never allocated.
pub const FIRST_PAGING_DID: u32 = 2;
/// The RID_PASID our scalable-mode context entries name (Linux `IOMMU_NO_PASID`).
pub(crate) const OUR_RID_PASID: u32 = 0;

/// Choices a kernel makes for its own tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VtdOptions {
    /// Use scalable mode when ECAP.SMTS and a translation ECAP offers (SLTS or FLTS) allow it (Linux does
    /// on capable units).
    pub scalable: bool,
    /// In scalable mode, give DMA domains first-level tables (PASID entries with PGTT = 001) when the unit
    /// has ECAP.FLTS. Linux 6.x does so whenever FLTS is there (`first_level_by_default`); a unit with
    /// FLTS but no SLTS gets first-level tables whatever this says, since it has nothing else.
    pub first_level: bool,
}

impl Default for VtdOptions {
    /// What Linux 6.x does: scalable mode where offered, first-level domains where ECAP.FLTS is.
    fn default() -> Self {
        VtdOptions { scalable: true, first_level: true }
    }
}

pub use crate::contract::{Attachment, DomainId};

/// A DMA domain: a domain ID, a second-level page table and its IOVA space.
#[derive(Clone, Debug)]
pub struct Domain {
    /// The domain ID its context or PASID entries carry and invalidations name.
    pub did: u16,
    /// Physical address of its top-level page table.
    pub root: u64,
    /// Levels of that table.
    pub levels: u32,
    /// The IOVAs handed out and reserved in it.
    pub iova: IovaAllocator,
}

/// A device's state in this driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceState {
    /// On this kernel's tables: a domain of ours, or identity.
    Attached(Attachment),
    /// Still translating through the crashed kernel's entry, copied into our tables; attach is deferred
    /// until the device's new driver has reset it.
    Adopted {
        /// The crashed kernel's domain ID, kept (and reserved) while the entry is live.
        did: u16,
        /// How the adopted entry translates.
        kind: DeviceKind,
    },
    /// Contained: every old IOVA points at the scratch page.
    Contained {
        /// The domain ID of the containment entry (the old one, kept).
        did: u16,
    },
    /// Its old entry failed validation (or its tables reach the crash kernel's region) and was not copied:
    /// its DMA is blocked until it is contained or attached. `did` is the old domain ID, kept reserved.
    Refused {
        /// The crashed kernel's domain ID, reserved so a new domain cannot alias its cached translations.
        did: u16,
    },
}

/// Counters a caller can read to see what the driver did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VtdStats {
    /// Frames taken from the platform for tables, queues and copies.
    pub frames_allocated: u64,
    /// Invalidation descriptors submitted to the queue.
    pub invalidations: u64,
}

/// The driver for one VT-d unit.
pub struct Vtd {
    /// CAP as read at boot: widths, domain IDs, page sizes, caching mode.
    pub cap: Cap,
    /// ECAP as read at boot: queued invalidation, pass-through, scalable mode and its translation types.
    pub ecap: Ecap,
    scalable: bool,
    /// Our domains use first-level tables (scalable mode, ECAP.FLTS).
    first_level: bool,
    levels: u32,
    /// Translation is on and ours (false only under `reset-bypass`).
    translating: bool,
    root: u64,
    /// Context tables by (bus, half): legacy uses half 0; scalable mode 0 for devfn < 0x80, 1 above.
    ctx_tables: BTreeMap<(u8, u8), u64>,
    /// The crashed kernel's context tables our root table points at in place, by (bus, half): after
    /// adoption, a table whose every present entry was adopted as it is (none refused, none rewritten) is
    /// not copied; it is copied the first time one of its entries must change ([`Vtd::context_table`]).
    old_ctx: BTreeMap<(u8, u8), u64>,
    qi: Option<InvQueue>,
    dids: IdAllocator,
    domains: Vec<Option<Domain>>,
    devices: BTreeMap<u16, DeviceState>,
    /// Buses whose old root or context table adoption refused: their devices' DMA is blocked until contained.
    refused_buses: alloc::collections::BTreeSet<u8>,
    scratch: Option<handover::Scratch>,
    /// IOVA ranges no domain hands out: the platform's PCI windows and the MSI range, which DMA to would
    /// be claimed by a peer device or the interrupt controller (Linux `iova_reserve_pci_windows`).
    iova_holes: Vec<core::ops::Range<u64>>,
    /// What the driver has spent and submitted so far.
    pub stats: VtdStats,
    /// Interrupt remapping (`irq`).
    ir: Option<irq::IrTable>,
    ir_handover: crate::irq::IrqHandover,
    ir_frames: u64,
}

impl Vtd {
    /// This kernel's tables are in scalable mode (RTADDR.SMT).
    pub fn scalable(&self) -> bool {
        self.scalable
    }
    /// Levels of second-level tables on this unit: the AGAW picked from CAP.SAGAW (4 when offered, as Linux
    /// prefers, then 5, then 3).
    pub fn levels(&self) -> u32 {
        self.levels
    }
    /// Whether our domains use first-level tables.
    pub fn first_level(&self) -> bool {
        self.first_level
    }
    /// The page-table format of our domains.
    pub fn format(&self) -> VtdFormat {
        VtdFormat::new(self.cap, self.first_level)
    }
    /// Levels of our domains' tables: the AGAW's for second level; 4 for first level (Linux uses 5 only
    /// on a 5-level-paging CPU with CAP.FL5LP).
    pub fn domain_levels(&self) -> u32 {
        if self.first_level {
            4
        } else {
            self.levels
        }
    }
    /// IOVA bits our domains translate: a first-level table translates a sign-extended space, of which
    /// DMA uses the lower, canonical half.
    fn iova_width(&self, levels: u32) -> u32 {
        let w = iommu_spec::vtd::levels_width(levels);
        if self.first_level {
            w - 1
        } else {
            w
        }
    }
    /// Translation is on and through this kernel's tables (false under `reset-bypass` and `off`).
    pub fn translating(&self) -> bool {
        self.translating
    }
    /// Physical address of this kernel's root table (what RTADDR holds).
    pub fn root_table(&self) -> u64 {
        self.root
    }
    /// What the driver knows of the device with source ID `sid`, if anything.
    pub fn device(&self, sid: u16) -> Option<DeviceState> {
        self.devices.get(&sid).copied()
    }
    /// Every device the driver knows, by source ID.
    pub fn devices(&self) -> impl Iterator<Item = (u16, DeviceState)> + '_ {
        self.devices.iter().map(|(&s, &d)| (s, d))
    }
    /// The domain behind handle `d`, while it exists.
    pub fn domain(&self, d: DomainId) -> Option<&Domain> {
        self.domains.get(d.0).and_then(|x| x.as_ref())
    }
    /// Whether `did` is taken (by us or reserved from the crashed kernel).
    pub fn did_used(&self, did: u16) -> bool {
        self.dids.is_used(did as u32)
    }

    fn alloc_frame(&mut self, hw: &mut impl Platform) -> Result<u64, VtdError> {
        self.stats.frames_allocated += 1;
        hw.alloc_frame().ok_or(VtdError::OutOfMemory)
    }

    /// Submit invalidation descriptors and wait for them.
    fn invalidate(&mut self, hw: &mut impl Platform, descs: &[u128]) -> Result<(), VtdError> {
        self.stats.invalidations += descs.len() as u64;
        match self.qi.as_mut() {
            Some(q) => q.submit(hw, descs),
            None => Ok(()),
        }
    }

    /// IOVA ranges every domain created from now on keeps unused (PCI windows, MSI).
    pub fn reserve_iova_holes(&mut self, holes: &[core::ops::Range<u64>]) {
        self.iova_holes = holes.to_vec();
    }

    /// A new DMA domain with an empty page table. IOVAs are handed out below 4 GiB first, as Linux's
    /// DMA API does for 32-bit-capable devices, above IOVA 0 which stays unmapped.
    pub fn create_domain(&mut self, hw: &mut impl Platform) -> Result<DomainId, VtdError> {
        let did = self.dids.alloc().ok_or(VtdError::OutOfDomainIds)? as u16;
        let root = self.alloc_frame(hw)?;
        let levels = self.domain_levels();
        let limit = (1u64 << self.iova_width(levels)).min(1 << 32);
        let iova = IovaAllocator::with_holes(0x1000, limit, &self.iova_holes);
        let dom = Domain { did, root, levels, iova };
        let id = DomainId(self.domains.len());
        self.domains.push(Some(dom));
        Ok(id)
    }

    fn domain_mut(&mut self, d: DomainId) -> Result<&mut Domain, VtdError> {
        self.domains.get_mut(d.0).and_then(|x| x.as_mut()).ok_or(VtdError::NoSuchDomain(d.0))
    }

    /// Map `size` bytes of physical memory at `pa` into domain `d` at a fresh IOVA (the DMA API's
    /// `dma_map_*`). Under `reset-bypass` the "IOVA" is the physical address: there is no translation.
    pub fn map(
        &mut self,
        hw: &mut impl Platform,
        d: DomainId,
        pa: u64,
        size: u64,
        read: bool,
        write: bool,
    ) -> Result<u64, VtdError> {
        if !self.translating {
            return Ok(pa);
        }
        let iova = self.domain_mut(d)?.iova.alloc(size).ok_or(VtdError::OutOfIova { size })?;
        self.map_at(hw, d, iova, pa, size, read, write)?;
        Ok(iova)
    }

    /// Map at a chosen IOVA (both 4 KiB aligned).
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
    ) -> Result<(), VtdError> {
        let dom = self.domain_mut(d)?;
        let (root, levels) = (dom.root, dom.levels);
        let width = self.iova_width(levels);
        let dom = self.domain_mut(d)?;
        if !crate::walk::mappable(iova, pa, size, width) {
            return Err(VtdError::BadRange { iova, size });
        }
        dom.iova.reserve(iova, iova + size);
        let fmt = self.format();
        crate::walk::map_range(
            hw,
            &fmt,
            root,
            levels,
            iova,
            pa,
            size / 4096,
            read,
            write,
            &mut self.stats.frames_allocated,
        )
        .map_err(VtdError::from)?;
        // Not-present → present needs no invalidation unless the unit caches not-present entries (CAP.CM),
        // where Linux flushes the range (`__mapping_notify_one`); otherwise only the write buffer.
        if self.cap.cm() {
            let did = self.domain_mut(d)?.did;
            // Tables may have gone from not present to present: not a leaf-only change.
            self.flush_range(hw, did, iova, size, false)?;
        } else {
            hw::flush_write_buffer(hw, self.cap)?;
        }
        Ok(())
    }

    /// Unmap and invalidate at once (strict mode): page-selective when the unit can, else domain-wide.
    pub fn unmap(&mut self, hw: &mut impl Platform, d: DomainId, iova: u64, size: u64) -> Result<(), VtdError> {
        if !self.translating {
            return Ok(());
        }
        let dom = self.domain_mut(d)?;
        let (root, levels, did) = (dom.root, dom.levels, dom.did);
        if !crate::walk::unmappable(iova, size, self.iova_width(levels)) {
            return Err(VtdError::BadRange { iova, size });
        }
        let dom = self.domain_mut(d)?;
        dom.iova.release(iova);
        let fmt = self.format();
        crate::walk::unmap_range(hw, &fmt, root, levels, iova, size.div_ceil(4096))?;
        // Only leaves were cleared and no table freed: IH = 1, as Linux's `intel_iommu_tlb_sync` sets it when the
        // unmap's freelist is empty, so the unit may keep its paging-structure caches.
        self.flush_range(hw, did, iova, size, true)
    }

    /// IOTLB invalidation for `[iova, iova+size)` of `did` (Linux `iommu_flush_iotlb_psi`): one
    /// page-selective descriptor covering the range's aligned power-of-two block if CAP.PSI and CAP.MAMV
    /// allow, else a domain-selective flush. First-level domains are flushed with PASID-based IOTLB
    /// descriptors for their RID_PASID (Linux `qi_flush_piotlb`): a plain IOTLB invalidation does not
    /// reach first-level translations (spec 6.5.2.3). `leaf_only`: the invalidation hint (IH), set when no
    /// paging-structure entry above the leaves changed.
    fn flush_range(
        &mut self,
        hw: &mut impl Platform,
        did: u16,
        iova: u64,
        size: u64,
        leaf_only: bool,
    ) -> Result<(), VtdError> {
        let pages = size.div_ceil(4096).max(1);
        let mut am = pages.next_power_of_two().trailing_zeros();
        // Grow the mask until the aligned block covers the whole range.
        while am < 52 && (iova >> 12 >> am) != ((iova + size - 1) >> 12 >> am) {
            am += 1;
        }
        let base = iova & !((4096u64 << am) - 1);
        let page_selective = self.cap.psi() && am <= self.cap.mamv() as u32;
        let desc = match (self.first_level, page_selective) {
            (false, true) => IotlbInv::pages(did, base, am as u8).with_ih(leaf_only).into_bits(),
            (false, false) => IotlbInv::domain(did).into_bits(),
            (true, true) => PasidIotlbInv::pages(did, OUR_RID_PASID, base, am as u8, leaf_only).into_bits(),
            (true, false) => PasidIotlbInv::of_pasid(did, OUR_RID_PASID).into_bits(),
        };
        self.invalidate(hw, &[desc])
    }

    /// Attach `sid` to a domain or to pass-through. A device still on an adopted entry is torn down first
    /// (the deferred attach of a crash kernel): its old IOVAs are reserved in the new domain so old DMA can
    /// never land in a new buffer.
    pub fn attach(&mut self, hw: &mut impl Platform, sid: u16, to: Attachment) -> Result<(), VtdError> {
        if !self.translating {
            return Ok(());
        }
        if let Attachment::Domain(d) = to {
            self.domain_mut(d)?;
        }
        if matches!(to, Attachment::Identity) && !self.ecap.pt() {
            return Err(VtdError::Unsupported("pass-through (ECAP.PT)"));
        }
        match self.devices.get(&sid).copied() {
            Some(DeviceState::Adopted { did, kind }) => {
                let limits = WalkLimits { max_tables: 4096, max_runs: 65536 };
                let old = match kind {
                    DeviceKind::Translated { root, levels } => Some(walk::walk(hw, self.cap, root, levels, limits)),
                    DeviceKind::FirstLevel { root, levels, .. } => {
                        Some(walk::walk_first_level(hw, self.cap, root, levels, limits))
                    }
                    DeviceKind::PassThrough | DeviceKind::Blocked => None,
                };
                if let (Attachment::Domain(d), Some(w)) = (to, old) {
                    let dom = self.domain_mut(d)?;
                    for r in &w.runs {
                        dom.iova.reserve(r.iova, r.end());
                    }
                }
                self.clear_context(hw, sid, did, kind.first_level_pasid())?;
            }
            Some(DeviceState::Attached(_))
            | Some(DeviceState::Contained { .. })
            | Some(DeviceState::Refused { .. }) => {
                let did = self.current_did(sid);
                let fl = self.first_level.then_some(OUR_RID_PASID);
                self.clear_context(hw, sid, did, fl)?;
            }
            None => {}
        }
        self.set_context(hw, sid, to)?;
        self.devices.insert(sid, DeviceState::Attached(to));
        Ok(())
    }

    fn current_did(&self, sid: u16) -> u16 {
        match self.devices.get(&sid) {
            Some(DeviceState::Attached(Attachment::Domain(d))) => self.domain(*d).map_or(0, |x| x.did),
            Some(DeviceState::Attached(Attachment::Identity)) => FLPT_DEFAULT_DID,
            Some(DeviceState::Adopted { did, .. })
            | Some(DeviceState::Contained { did })
            | Some(DeviceState::Refused { did }) => *did,
            None => 0,
        }
    }

    /// Drain and clear the unit's primary fault records.
    pub fn drain_faults(&mut self, hw: &mut impl Platform) -> Vec<iommu_spec::vtd::FaultRecord> {
        hw::drain_faults(hw, self.cap)
    }
}
