//! AMD-Vi (AMD I/O Virtualization Technology) driver: normal boot, crash-kernel boot under a policy with
//! the SNP kdump series' reuse of the crashed kernel's structures (SEV-SNP's locked registers never written), the
//! device-table scan and the v1 page-table walk.

mod cmdq;
mod contract;
mod driver;
mod error;
mod handover;
mod irq;
pub mod scan;
pub mod walk;

pub use driver::{AmdOptions, Amdvi, Attachment, DeviceState, Domain, DomainId, LEVELS};
pub use error::{AmdError, Refusal};
pub use handover::{AmdOutcome, AmdReport};
pub use scan::{scan, DevTableRefusal, DevTableScan, DteKind, DteProblem, ScannedDte};
pub use walk::V1;
