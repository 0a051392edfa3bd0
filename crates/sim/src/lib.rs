//! Crash → kdump simulator.
//!
//! A machine (RAM, the crash kernel's reserved region, an IOMMU model, DMA devices) runs a primary kernel
//! that boots `iommu-driver` normally and keeps devices busy; it panics with DMA in flight; the crash
//! kernel boots under a [`Policy`](iommu_driver::Policy), probes only the devices the dump needs, and
//! captures. Every DMA goes through the IOMMU model's translation; what happened is measured, not assumed.
//! Runs are deterministic from their seed.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod bench;
pub mod campaign;
pub mod inject;
pub mod kernel;
pub mod ledger;
pub mod machine;
pub mod outcome;
pub mod scenario;
pub mod snpcheck;
pub mod unit;

pub use machine::{Machine, MachineConfig};
pub use outcome::{DmaCounts, Failure, IrqCounts, Outcome, Reason};
pub use scenario::{run, run_detailed, run_on, run_policies, Knobs, RunDetail, Scenario, TraceEvent};
pub use unit::IommuKind;
