//! IOMMU drivers with two boots: a normal boot (init, domains, map/unmap, invalidation) and a crash-kernel
//! boot (probe, adopt, validate, deferred attach, reserve old IDs, fall back) under a chosen policy.
//!
//! The driver talks to hardware only through the traits of `iommu-platform` (re-exported as [`platform`]): the kernel's `readq`/`writeq`,
//! `memremap` and page allocator and `is_kdump_kernel()` map onto them; the emulator implements them for
//! the simulator and `iommu-dump` implements them read-only over a dump.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

pub mod policy;
pub mod smmuv3;
pub mod vtd;
pub mod walk;

pub use contract::{
    boot, boot_crash, Attachment, BootOptions, CrashOutcome, CrashReport, DeviceId, DomainId, DriverError,
    EntryRefusal, Found, IommuDriver, IommuKind, Perm, UnitRefusal,
};
/// The platform seams, re-exported so driver users need one dependency.
pub use iommu_platform as platform;
pub use iommu_platform::*;
pub use policy::Policy;
pub mod amdvi;
pub mod audit;
pub mod contract;
pub mod ids;
pub mod iova;
pub mod irq;
pub mod survey;
