//! One contract for the three drivers: what a kernel (or the simulator, or `handover takeover`) does with
//! an IOMMU unit, whatever its architecture.
//!
//! A normal boot and a crash boot each give a `Box<dyn` [`IommuDriver`]`>`; everything after that — the
//! bus probe's "device found" step, domains, attach / detach / contain, map / unmap — goes through the
//! trait. Each architecture's folder implements it in its `contract.rs` on top of its own driver type,
//! which stays available for what only that architecture has (SMMUv3's stream-table geometry, VT-d's
//! scalable mode, AMD-Vi's SNP state).
//!
//! The platform is passed as `&mut dyn Platform` so the trait is object-safe; a `&mut dyn Platform` is
//! itself a [`Platform`] (see `iommu-platform`), so the drivers' generic code runs on it unchanged.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

pub use iommu_spec::IommuKind;

use crate::{amdvi, smmuv3, vtd, BootEnv, Platform, Policy};

/// A requester (PCI: `bus << 8 | devfn`) or SMMUv3 stream ID: the key every IOMMU looks a device up by.
/// SMMUv3 stream IDs are up to 32 bits wide (IDR1.SIDSIZE); VT-d source IDs and AMD-Vi DeviceIDs are 16.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(pub u32);

impl DeviceId {
    /// The 16-bit PCI requester ID, if this ID is one (VT-d and AMD-Vi index their tables with it).
    pub fn rid(self) -> Option<u16> {
        u16::try_from(self.0).ok()
    }
}

impl From<u16> for DeviceId {
    fn from(rid: u16) -> Self {
        DeviceId(rid as u32)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#06x}", self.0)
    }
}

/// A handle to one of a driver's DMA domains (an index into its domain table, not a hardware tag: that is
/// the domain's VT-d DID, AMD-Vi domain ID or SMMUv3 ASID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainId(pub usize);

/// What a device is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attachment {
    /// A DMA domain: translated through its page table.
    Domain(DomainId),
    /// Identity: DMA reaches the physical address it names (VT-d pass-through, AMD-Vi `Mode` 0 with
    /// translation valid, SMMUv3 STE bypass). Linux's identity domain.
    Identity,
}

/// The access a mapping grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm {
    /// The device may read memory through the mapping (DMA to the device: VT-d/AMD-Vi `R`/`IR`, SMMUv3
    /// read permission).
    pub read: bool,
    /// The device may write memory through the mapping (DMA from the device); Linux's `IOMMU_WRITE`.
    pub write: bool,
}

impl Perm {
    /// Both directions: Linux `DMA_BIDIRECTIONAL` (`IOMMU_READ | IOMMU_WRITE`).
    pub const RW: Perm = Perm { read: true, write: true };
    /// The device only reads memory: Linux `DMA_TO_DEVICE`.
    pub const RO: Perm = Perm { read: true, write: false };
    /// The device only writes memory: Linux `DMA_FROM_DEVICE`.
    pub const WO: Perm = Perm { read: false, write: true };
}

/// A driver-side failure, typed per architecture (each error names the register, command or address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriverError {
    /// A VT-d unit refused or failed a register, command or table operation.
    Vtd(vtd::VtdError),
    /// An AMD-Vi unit (or its SEV-SNP firmware state) refused or failed an operation.
    Amdvi(amdvi::AmdError),
    /// An SMMUv3 unit refused or failed an operation (including a `CMD_SYNC` that did not complete).
    Smmuv3(smmuv3::SmmuError),
    /// The device ID does not fit the architecture's requester-ID width.
    BadDeviceId {
        /// The architecture whose width it exceeds.
        kind: IommuKind,
        /// The rejected ID, as the caller gave it.
        id: DeviceId,
    },
    /// The call has no meaning on this architecture.
    Unsupported {
        /// The architecture that lacks it.
        kind: IommuKind,
        /// The missing feature, for the message (`"{kind} has no {what}"`).
        what: &'static str,
    },
}

impl From<vtd::VtdError> for DriverError {
    fn from(e: vtd::VtdError) -> Self {
        DriverError::Vtd(e)
    }
}
impl From<amdvi::AmdError> for DriverError {
    fn from(e: amdvi::AmdError) -> Self {
        DriverError::Amdvi(e)
    }
}
impl From<smmuv3::SmmuError> for DriverError {
    fn from(e: smmuv3::SmmuError) -> Self {
        DriverError::Smmuv3(e)
    }
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverError::Vtd(e) => e.fmt(f),
            DriverError::Amdvi(e) => e.fmt(f),
            DriverError::Smmuv3(e) => e.fmt(f),
            DriverError::BadDeviceId { kind, id } => write!(f, "{id} is not a {kind} requester ID"),
            DriverError::Unsupported { kind, what } => write!(f, "{kind} has no {what}"),
        }
    }
}

impl core::error::Error for DriverError {}

/// Why the crash kernel did not adopt a unit as a whole (it reset it instead, or stopped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnitRefusal {
    /// A VT-d unit's old configuration, as a whole, failed validation.
    Vtd(vtd::Refusal),
    /// An AMD-Vi unit's old device table or rings could not be reused.
    Amdvi(amdvi::Refusal),
    /// An SMMUv3 unit's old stream table could not be adopted.
    Smmuv3(smmuv3::Refusal),
}

impl fmt::Display for UnitRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnitRefusal::Vtd(r) => r.fmt(f),
            UnitRefusal::Amdvi(r) => r.fmt(f),
            UnitRefusal::Smmuv3(r) => r.fmt(f),
        }
    }
}

/// Why one old entry (a bus, a device, a stream) was not adopted: its DMA is blocked or contained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryRefusal {
    /// An old VT-d root, context or PASID entry, or the page table below it.
    Vtd(vtd::EntryProblem),
    /// An old AMD-Vi device-table entry, or the page table below it.
    Amdvi(amdvi::DteProblem),
    /// An old SMMUv3 stream-table entry (or L1 descriptor), or the context descriptor and tables below it.
    Smmuv3(smmuv3::SteProblem),
}

impl EntryRefusal {
    /// The device it is about, when it is about one device (a VT-d bus or an AMD-Vi table page is not).
    pub fn device(&self) -> Option<DeviceId> {
        match self {
            EntryRefusal::Vtd(p) => p.sid().map(DeviceId::from),
            EntryRefusal::Amdvi(p) => p.devid().map(DeviceId::from),
            EntryRefusal::Smmuv3(p) => p.sid().map(DeviceId),
        }
    }
}

impl fmt::Display for EntryRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryRefusal::Vtd(p) => p.fmt(f),
            EntryRefusal::Amdvi(p) => p.fmt(f),
            EntryRefusal::Smmuv3(p) => p.fmt(f),
        }
    }
}

/// How a crash boot went for the unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrashOutcome {
    /// Translation was off at probe: nothing to hand over; a normal boot.
    NotLive,
    /// Reset under `reset-abort` or `reset-bypass`, as asked.
    Reset,
    /// The old configuration is live through what this kernel adopted.
    Adopted,
    /// Adoption was refused; the unit was reset instead, for this reason.
    FellBack(UnitRefusal),
}

/// What a crash boot did: for logs, `takeover`'s report and the simulator's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashReport {
    /// The architecture of the unit booted.
    pub kind: IommuKind,
    /// The hand-over policy the boot ran under.
    pub policy: Policy,
    /// What became of the unit as a whole.
    pub outcome: CrashOutcome,
    /// Devices translating through adopted entries (found at boot, or at their bus probe on SMMUv3).
    pub adopted: Vec<DeviceId>,
    /// Old entries not adopted, with the reason.
    pub refused: Vec<EntryRefusal>,
    /// Frames the boot allocated for its own tables (interrupt remapping is counted apart: see
    /// [`IommuDriver::irq_handover`]).
    pub frames_allocated: u64,
    /// Bytes of the crashed kernel's structures the boot read while validating them: the cost of adoption.
    pub bytes_read: u64,
}

impl CrashReport {
    /// Record what the bus probe's [`IommuDriver::device_found`] said of `id`.
    pub fn note_found(&mut self, id: DeviceId, found: Result<Found, EntryRefusal>) {
        match found {
            Ok(Found::Adopted) if !self.adopted.contains(&id) => self.adopted.push(id),
            Ok(_) => {}
            Err(r) => self.refused.push(r),
        }
    }

    /// One line: what the boot did with the unit.
    pub fn summary(&self) -> Summary {
        Summary { kind: self.kind, policy: self.policy, outcome: self.outcome.clone(), adopted: self.adopted.len() }
    }
}

/// [`CrashReport::summary`]: what the boot did with the unit, typed; its `Display` is the one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// [`CrashReport::kind`].
    pub kind: IommuKind,
    /// [`CrashReport::policy`]: the line says which reset a `Reset` outcome was.
    pub policy: Policy,
    /// [`CrashReport::outcome`].
    pub outcome: CrashOutcome,
    /// Devices translating through adopted entries.
    pub adopted: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self;
        match &r.outcome {
            CrashOutcome::NotLive => f.write_str("not live"),
            CrashOutcome::Reset if r.policy == Policy::Off => f.write_str("driver disabled (off): translation off"),
            CrashOutcome::Reset => write!(f, "reset ({})", r.policy),
            CrashOutcome::FellBack(why) => write!(f, "fell back to reset: {why}"),
            CrashOutcome::Adopted => {
                let n = r.adopted;
                match r.kind {
                    IommuKind::Vtd => write!(f, "adopted {n} devices"),
                    IommuKind::Amdvi => write!(f, "reused the old device table, adopted {n} devices"),
                    IommuKind::Smmuv3 => write!(f, "adopted the stream table, {n} masters live"),
                }
            }
        }
    }
}

/// What the bus probe's "device found" step learnt about one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// It translates through an adopted entry, until its driver attaches.
    Adopted,
    /// The old configuration has no live entry for it (or the unit is not adopted).
    NotLive,
}

/// Choices a kernel makes for its own tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootOptions {
    /// VT-d: use scalable mode where ECAP allows it.
    pub scalable: bool,
    /// VT-d scalable mode: give DMA domains first-level tables where ECAP.FLTS allows it (as Linux 6.x
    /// does on such units).
    pub vtd_first_level: bool,
    /// AMD-Vi: device-table entries (a power of two up to 65 536; Linux sizes it from IVRS).
    pub dev_table_entries: u32,
}

impl Default for BootOptions {
    fn default() -> Self {
        BootOptions {
            scalable: false,
            vtd_first_level: false,
            dev_table_entries: amdvi::AmdOptions::default().dev_table_entries,
        }
    }
}

/// A driver for one IOMMU unit, after its boot.
pub trait IommuDriver {
    /// The architecture behind the trait object, for callers that must reach its own driver type or word
    /// a message per architecture.
    fn kind(&self) -> IommuKind;

    /// Translation is on and this driver's (false under `reset-bypass`: DMA addresses are physical).
    fn translating(&self) -> bool;

    /// IOVA ranges every domain created from now on keeps unused (PCI windows, the MSI range): Linux
    /// `iova_reserve_pci_windows`.
    fn reserve_iova_holes(&mut self, holes: &[Range<u64>]);

    /// The bus probe found `id` (Linux `iommu_probe_device`). On a crash boot this is where an adopted
    /// configuration entry is looked up for the device; SMMUv3 maps its level-2 stream table only here,
    /// re-checking the L1 descriptor. A refusal leaves the device blocked.
    fn device_found(&mut self, hw: &mut dyn Platform, env: &BootEnv, id: DeviceId) -> Result<Found, EntryRefusal>;

    /// A new, empty DMA domain.
    fn create_domain(&mut self, hw: &mut dyn Platform) -> Result<DomainId, DriverError>;

    /// Attach `id` to a domain or to identity. A device still on an adopted entry is torn down first (the
    /// crash kernel's deferred attach), its old IOVAs kept out of the new domain.
    fn attach(&mut self, hw: &mut dyn Platform, id: DeviceId, to: Attachment) -> Result<(), DriverError>;

    /// Point every old IOVA of an adopted device at the scratch region (`adopt-scratch`); a device found on the
    /// bus whose old entry was refused, or that has none (not present, blocking, or corrupted into either),
    /// gets every IOVA the unit allows pointed there, as it may still send DMA. Attached devices are left alone.
    fn contain(&mut self, hw: &mut dyn Platform, id: DeviceId) -> Result<(), DriverError>;

    /// Map `size` bytes at `pa` into domain `d` at a fresh IOVA (the DMA API's `dma_map_*`); the IOVA.
    fn map(&mut self, hw: &mut dyn Platform, d: DomainId, pa: u64, size: u64, perm: Perm) -> Result<u64, DriverError>;

    /// Map `size` bytes at `pa` into domain `d` at the chosen `iova` (all 4 KiB multiples), keeping the range
    /// out of the domain's IOVA allocator: a domain whose addresses the caller picks, such as the one-to-one
    /// domain a kernel with a direct DMA API needs (a kdump kernel with its IOMMU driver off). Not-present to
    /// present needs no invalidation on units that do not cache faults.
    fn map_at(
        &mut self,
        hw: &mut dyn Platform,
        d: DomainId,
        iova: u64,
        pa: u64,
        size: u64,
        perm: Perm,
    ) -> Result<(), DriverError>;

    /// The tag the hardware knows domain `d` by (VT-d domain ID, AMD-Vi domain ID, SMMUv3 ASID), while it
    /// exists.
    fn domain_tag(&self, d: DomainId) -> Option<u32>;

    /// Unmap and invalidate at once (strict mode).
    fn unmap(&mut self, hw: &mut dyn Platform, d: DomainId, iova: u64, size: u64) -> Result<(), DriverError>;

    /// The scratch region containment points at, once built.
    fn scratch_region(&self) -> Option<Range<u64>>;

    /// Frames spent on scratch containment.
    fn scratch_frames(&self) -> u64;

    /// An interrupt-remapping entry sending `id`'s interrupt to `target`, and the message the device must be
    /// programmed with (Linux `irq_remapping_alloc` + `irq_msi_compose_msg`). `Ok(None)`: this driver does not
    /// remap interrupts on the unit (SMMUv3 has no remapping table; a unit without remapping); the caller
    /// composes a compatibility-format message. Never reuses an entry an adopted table still holds.
    fn alloc_irq(
        &mut self,
        hw: &mut dyn Platform,
        id: DeviceId,
        target: crate::irq::IrqTarget,
    ) -> Result<Option<crate::irq::MsiMessage>, DriverError> {
        let _ = (hw, id, target);
        Ok(None)
    }

    /// What the boot did with interrupt remapping, and the frames its table took (counted apart from
    /// [`CrashReport::frames_allocated`]).
    fn irq_handover(&self) -> (crate::irq::IrqHandover, u64) {
        (crate::irq::IrqHandover::Off, 0)
    }

    /// Bring a crash report's cost figures up to date after the bus probe (SMMUv3 reads level-2 stream
    /// tables only when a master is found).
    fn account(&self, report: &mut CrashReport) {
        let _ = report;
    }
}

/// Normal boot of a unit of `kind` (Linux `intel_iommu_init`, `amd_iommu_init`, `arm_smmu_device_probe`).
pub fn boot(
    kind: IommuKind,
    mut hw: &mut dyn Platform,
    env: &BootEnv,
    opts: BootOptions,
) -> Result<Box<dyn IommuDriver>, DriverError> {
    Ok(match kind {
        IommuKind::Vtd => Box::new(vtd::Vtd::init(
            &mut hw,
            vtd::VtdOptions { scalable: opts.scalable, first_level: opts.vtd_first_level },
        )?),
        IommuKind::Amdvi => Box::new(amdvi::Amdvi::init(&mut hw, env, amd_options(opts))?),
        IommuKind::Smmuv3 => Box::new(smmuv3::Smmuv3::init(&mut hw)?),
    })
}

/// Crash-kernel boot of a unit of `kind` under `policy`. The report's `adopted` grows as the bus probe
/// calls [`IommuDriver::device_found`] (see [`CrashReport::note_found`]).
pub fn boot_crash(
    kind: IommuKind,
    mut hw: &mut dyn Platform,
    env: &BootEnv,
    opts: BootOptions,
    policy: Policy,
) -> Result<(Box<dyn IommuDriver>, CrashReport), DriverError> {
    Ok(match kind {
        IommuKind::Vtd => {
            let (d, r) = vtd::Vtd::init_crash(
                &mut hw,
                env,
                vtd::VtdOptions { scalable: opts.scalable, first_level: opts.vtd_first_level },
                policy,
            )?;
            (Box::new(d), r.into())
        }
        IommuKind::Amdvi => {
            let (d, r) = amdvi::Amdvi::init_crash(&mut hw, env, amd_options(opts), policy)?;
            (Box::new(d), r.into())
        }
        IommuKind::Smmuv3 => {
            let (d, r) = smmuv3::Smmuv3::init_crash(&mut hw, env, policy)?;
            (Box::new(d), r.into())
        }
    })
}

/// The crashed kernel's structures a crash boot of a unit of `kind` under `adopt` or `adopt-scratch` writes
/// in place, read from the unit's registers before the boot: AMD-Vi's device table, and on a unit SNP may hold
/// (EFR.SNPSup with a completion-store window in Exclusion Base, as the driver decides) its command buffer, event
/// log and completion-wait page, reused because SNP may lock their base registers (without SNP the crash
/// kernel gives the unit fresh rings and Exclusion Base names an exclusion range, no page of ours); SMMUv3's stream table and
/// the level-2 tables of `masters` (STEs are rewritten where they are); none on VT-d, whose adoption copies
/// the root and context tables. A platform that refuses every other write to old memory needs this list
/// first. It is only a list: every entry is still validated by the driver, which refuses what is not RAM.
/// Sizes come from the registers and are capped (no entry names more than 64 MiB), one L2 table per master.
pub fn writes_in_place(
    kind: IommuKind,
    hw: &mut dyn Platform,
    masters: &[DeviceId],
) -> Vec<(Range<u64>, &'static str)> {
    use iommu_spec::amdvi::{off as aoff, DevTableBase, ExclusionBase, RingBase};
    use iommu_spec::smmuv3::{off as soff, StrtabBase, StrtabBaseCfg, StrtabFmt};
    let mut out = Vec::new();
    match kind {
        IommuKind::Vtd => {}
        IommuKind::Amdvi => {
            let dt = DevTableBase::from_bits(hw.read64(aoff::DEV_TABLE_BASE));
            out.push((dt.table()..dt.table().saturating_add(dt.bytes()), "device table"));
            let efr = iommu_spec::amdvi::Efr::from_bits(hw.read64(aoff::EXT_FEATURES));
            let window = ExclusionBase::from_bits(hw.read64(aoff::EXCL_BASE));
            if !(efr.snp_sup() && window.address() != 0 && !window.ex_en()) {
                return out;
            }
            let cb = RingBase::from_bits(hw.read64(aoff::CMD_BUF_BASE));
            out.push((cb.ring()..cb.ring().saturating_add(cb.bytes()), "command buffer"));
            let el = RingBase::from_bits(hw.read64(aoff::EVENT_LOG_BASE));
            out.push((el.ring()..el.ring().saturating_add(el.bytes()), "event log"));
            let sem = ExclusionBase::from_bits(hw.read64(aoff::EXCL_BASE)).address();
            if sem != 0 {
                out.push((sem..sem.saturating_add(4096), "completion-wait page"));
            }
        }
        IommuKind::Smmuv3 => {
            let base = StrtabBase::from_bits(hw.read64(soff::STRTAB_BASE)).table();
            let cfg = StrtabBaseCfg::from_bits(hw.read32(soff::STRTAB_BASE_CFG));
            // The whole table the registers describe: linear (64-byte STEs) or the L1 descriptors; L2 tables
            // are found through L1 by the driver and stay read-only unless they lie inside.
            let bytes = if cfg.fmt() == StrtabFmt::TwoLevel {
                (1u64 << cfg.log2size().saturating_sub(cfg.split()).min(20)) * 8
            } else {
                (1u64 << cfg.log2size().min(20)) * 64
            };
            out.push((base..base.saturating_add(bytes.next_multiple_of(4096)), "stream table"));
            if cfg.fmt() == StrtabFmt::TwoLevel {
                for m in masters {
                    let index = u64::from(iommu_spec::smmuv3::l1_index(m.0, u32::from(cfg.split())));
                    let Some(at) = index.checked_mul(8).and_then(|o| base.checked_add(o)) else { continue };
                    let Ok(raw) = hw.read_u64(at) else { continue };
                    let l1 = iommu_spec::smmuv3::L1Desc::from_bits(raw);
                    let l2 = l1.l2_table();
                    if l1.valid() && l2 != 0 {
                        let r = l2..l2.saturating_add(l1.l2_bytes());
                        if !out.iter().any(|(x, _)| *x == r) {
                            out.push((r, "level-2 stream table"));
                        }
                    }
                }
            }
        }
    }
    out
}

fn amd_options(opts: BootOptions) -> amdvi::AmdOptions {
    amdvi::AmdOptions { dev_table_entries: opts.dev_table_entries }
}

/// The contract methods every driver implements the same way: its own inherent method of the same name.
macro_rules! delegate_common {
    ($ty:ident) => {
        fn translating(&self) -> bool {
            $ty::translating(self)
        }
        fn reserve_iova_holes(&mut self, holes: &[core::ops::Range<u64>]) {
            $ty::reserve_iova_holes(self, holes)
        }
        fn create_domain(
            &mut self,
            mut hw: &mut dyn crate::Platform,
        ) -> Result<crate::contract::DomainId, crate::contract::DriverError> {
            Ok($ty::create_domain(self, &mut hw)?)
        }
        fn map(
            &mut self,
            mut hw: &mut dyn crate::Platform,
            d: crate::contract::DomainId,
            pa: u64,
            size: u64,
            perm: crate::contract::Perm,
        ) -> Result<u64, crate::contract::DriverError> {
            Ok($ty::map(self, &mut hw, d, pa, size, perm.read, perm.write)?)
        }
        fn map_at(
            &mut self,
            mut hw: &mut dyn crate::Platform,
            d: crate::contract::DomainId,
            iova: u64,
            pa: u64,
            size: u64,
            perm: crate::contract::Perm,
        ) -> Result<(), crate::contract::DriverError> {
            Ok($ty::map_at(self, &mut hw, d, iova, pa, size, perm.read, perm.write)?)
        }
        fn unmap(
            &mut self,
            mut hw: &mut dyn crate::Platform,
            d: crate::contract::DomainId,
            iova: u64,
            size: u64,
        ) -> Result<(), crate::contract::DriverError> {
            Ok($ty::unmap(self, &mut hw, d, iova, size)?)
        }
        fn scratch_region(&self) -> Option<core::ops::Range<u64>> {
            $ty::scratch_region(self)
        }
        fn scratch_frames(&self) -> u64 {
            $ty::scratch_frames(self)
        }
    };
}
pub(crate) use delegate_common;

/// The 16-bit requester ID VT-d and AMD-Vi index by, or the typed error.
pub(crate) fn rid16(kind: IommuKind, id: DeviceId) -> Result<u16, DriverError> {
    id.rid().ok_or(DriverError::BadDeviceId { kind, id })
}
