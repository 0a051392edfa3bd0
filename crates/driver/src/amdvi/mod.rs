//! AMD-Vi (AMD I/O Virtualization Technology) driver. So far the read-only half: the device-table scan
//! and the v1 page-table walk that hand-over validation, `handover inspect` and the audit share.

pub mod scan;
pub mod walk;

pub use scan::{scan, DevTableRefusal, DevTableScan, DteKind, DteProblem, ScannedDte};
pub use walk::V1;
