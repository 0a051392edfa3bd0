//! Normal boot (Linux `init_dmars` / `intel_iommu_init`): a fresh root table, our own invalidation queue,
//! global invalidations, then translation on.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use iommu_spec::vtd::{off, Cap, ContextCacheInv, DescType, Ecap, IotlbInv, PasidCacheInv, RtAddr};

use super::cmdq::InvQueue;
use super::{hw, Vtd, VtdError, VtdOptions, VtdStats, FIRST_PAGING_DID, FLPT_DEFAULT_DID};
use crate::ids::IdAllocator;
use crate::Platform;

/// The widest page-table depth CAP.SAGAW offers, preferring 4 levels (48-bit) as Linux does for a
/// 48-bit-or-wider guest address width, then 5, then 3.
pub(super) fn pick_levels(cap: Cap) -> Result<u32, VtdError> {
    for agaw in [2u8, 3, 1] {
        if cap.supports_agaw(agaw) {
            return Ok(agaw as u32 + 2);
        }
    }
    Err(VtdError::NoSupportedAgaw { sagaw: cap.sagaw() })
}

impl Vtd {
    /// Normal boot: take the unit from whatever state firmware left it in to translating with empty tables.
    /// A unit found translating outside a crash kernel is switched off first (Linux warns and disables it).
    pub fn init(hw: &mut impl Platform, opts: VtdOptions) -> Result<Self, VtdError> {
        if hw::gsts(hw).tes() {
            hw::set_translation(hw, false)?;
        }
        let mut v = Self::fresh(hw, opts)?;
        hw::set_translation(hw, true)?;
        v.translating = true;
        v.ir_fresh(hw)?;
        Ok(v)
    }

    /// Build empty tables, point the unit at them and start our invalidation queue, leaving TE as it is:
    /// with TE on this is the atomic switch that `reset-abort` uses.
    pub(super) fn fresh(hw: &mut impl Platform, opts: VtdOptions) -> Result<Self, VtdError> {
        let mut v = Self::prepare(hw, opts)?;
        v.install_root(hw)?;
        v.translating = hw::gsts(hw).tes();
        Ok(v)
    }

    /// Driver state for this unit with our own invalidation queue running and an empty root table, not yet
    /// installed. Old fault records are cleared first, or they would be misread as ours (Linux clears them
    /// before enabling QI).
    pub(super) fn prepare(hw: &mut impl Platform, opts: VtdOptions) -> Result<Self, VtdError> {
        let mut v = Self::from_caps(hw, opts)?;
        hw::drain_faults(hw, v.cap);
        v.qi = Some(InvQueue::enable(hw, v.scalable)?);
        v.stats.frames_allocated += if v.scalable { 3 } else { 2 };
        v.root = v.alloc_frame(hw)?;
        Ok(v)
    }

    /// Point the unit at our root table (SRTP) and flush everything cached from the previous one.
    pub(super) fn install_root(&mut self, hw: &mut impl Platform) -> Result<(), VtdError> {
        hw::set_root(hw, RtAddr::from_table(self.root, self.scalable).into_bits())?;
        self.flush_all(hw)
    }

    /// Driver state from the unit's CAP and ECAP, no tables yet.
    pub(super) fn from_caps(hw: &mut impl Platform, opts: VtdOptions) -> Result<Self, VtdError> {
        let cap = Cap::from_bits(hw.read64(off::CAP));
        let ecap = Ecap::from_bits(hw.read64(off::ECAP));
        Self::blank(cap, ecap, opts)
    }

    /// Driver state for a unit with these capabilities, no tables yet.
    pub(super) fn blank(cap: Cap, ecap: Ecap, opts: VtdOptions) -> Result<Self, VtdError> {
        if !ecap.qi() {
            return Err(VtdError::Unsupported("queued invalidation (ECAP.QI)"));
        }
        let levels = pick_levels(cap)?;
        // Scalable mode needs a translation type the unit offers for it; first level where asked for and
        // offered, or where it is all there is (a unit with FLTS but not SLTS, as QEMU's `x-flts=on`).
        let scalable = opts.scalable && ecap.smts() && (ecap.slts() || ecap.flts());
        let first_level = scalable && ecap.flts() && (opts.first_level || !ecap.slts());
        let mut dids = IdAllocator::new(cap.domain_count(), FIRST_PAGING_DID);
        dids.reserve(0);
        dids.reserve(FLPT_DEFAULT_DID as u32);
        Ok(Vtd {
            cap,
            ecap,
            scalable,
            first_level,
            levels,
            translating: false,
            root: 0,
            ctx_tables: BTreeMap::new(),
            old_ctx: BTreeMap::new(),
            qi: None,
            dids,
            domains: Vec::new(),
            devices: BTreeMap::new(),
            refused_buses: alloc::collections::BTreeSet::new(),
            scratch: None,
            iova_holes: Vec::new(),
            stats: VtdStats::default(),
            ir: None,
            ir_handover: crate::irq::IrqHandover::Off,
            ir_frames: 0,
        })
    }

    /// Global context-cache, PASID-cache (scalable mode) and IOTLB invalidation, skipped when SRTP already
    /// did it (CAP.ESRTPS; Linux `intel_iommu_init_qi` callers).
    pub(super) fn flush_all(&mut self, hw: &mut impl Platform) -> Result<(), VtdError> {
        if self.cap.esrtps() {
            return Ok(());
        }
        let mut descs = alloc::vec![ContextCacheInv::global().into_bits()];
        if self.scalable {
            descs.push(PasidCacheInv::new().with_ty(DescType::PasidCache).with_g(3).into_bits());
        }
        descs.push(IotlbInv::global().into_bits());
        self.invalidate(hw, &descs)
    }
}
