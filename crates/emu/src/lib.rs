//! Hardware models for the hand-over simulator: a sparse physical memory, a page-frame allocator for a
//! kernel's own memory, the platform glue that lets `iommu-driver` program a model, the DMA entry point
//! every device goes through, spec-faithful Intel VT-d, AMD-Vi and Arm SMMUv3 units, the DMA devices that
//! drive them, the SEV-SNP firmware that locks AMD-Vi, a catalogue of faults to inject into a crashed machine, and a
//! unit shared by threads that each keep their own cache of its answers ([`shared`]).
//!
//! The models behave like the hardware, not like a driver would wish: registers have their writable,
//! read-only and write-1-to-clear bits; root pointers latch only on their command; queues live in
//! physical memory and run when their tail is written; caches hold translations until an invalidation
//! removes them, so a missing flush shows as a stale translation (docs/handover.md#models-unforgiving).
//!
//! All a model reads from memory or a register is hostile input (docs/handover.md#hostile-input): no panics, bounded
//! loops, no allocation sized by a guest value.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod amdvi;
pub mod devices;
pub mod dma;
pub mod frames;
pub mod front;
mod hash;
pub mod inject;
pub mod irq;
pub mod mem;
pub mod model;
mod paths;
pub mod platform;
pub mod shared;
pub mod smmuv3;
pub mod snp;
pub mod stale;
pub mod vtd;

pub use amdvi::{AmdviConfig, AmdviCounters, AmdviModel};
pub use devices::{AnyDevice, Blk, BlkConfig, Bulk, BulkConfig, DmaDevice, DmaEvent, Nic, NicConfig, Rate};
pub use dma::{dma_read, dma_write, Access, DmaOutcome, FaultInfo, Iommu, Translation};
pub use frames::FrameRegion;
pub use irq::{Interrupt, InterruptRemap};
pub use mem::{MemStats, PhysMemory};
pub use model::{model, model_with, IommuModel, ModelOptions};
pub use platform::{EmuPlatform, MmioDevice};
pub use shared::{Lane, SharedUnit};
pub use smmuv3::{Smmuv3Config, Smmuv3ConfigError, Smmuv3Counters, Smmuv3Model};
pub use vtd::{ConfigError, VtdConfig, VtdCounters, VtdModel};
