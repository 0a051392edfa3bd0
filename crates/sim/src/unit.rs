//! The machine's IOMMU: a model of any kind ([`Unit`]) and the kernel's driver for it ([`Driver`]), both
//! behind their crate's one contract, so the kernels, policies and measurements are written once.

pub use iommu_spec::IommuKind;

/// The hardware: any of the three models.
pub type Unit = Box<dyn iommu_emu::IommuModel>;

/// The kernel's driver for the unit, after a normal or a crash boot.
pub type Driver = Box<dyn iommu_driver::IommuDriver>;
