//! ARM SMMUv3 driver: normal boot, crash-kernel boot under a policy with the kdump series' adoption of the
//! stream table (lazy L2, deferred attach, fallback to reset), the stream-table scan and the VMSAv8-64 walk.

mod cmdq;
mod contract;
mod driver;
mod error;
mod handover;
pub mod scan;
pub mod walk;

pub use driver::{Attachment, Domain, DomainId, MasterState, Smmuv3, MAX_L1_ENTRIES, SPLIT};
pub use error::{Refusal, SmmuError};
pub use handover::{SmmuOutcome, SmmuReport};
pub use scan::{scan, ScannedSte, SteKind, SteProblem, StrtabRefusal, StrtabScan};
pub use walk::{Stage, Vmsa};
