//! ARM SMMUv3 driver. So far the read-only half: the stream-table scan and the VMSAv8-64 walk that
//! hand-over validation, `handover inspect` and the audit share.

pub mod scan;
pub mod walk;

pub use scan::{scan, ScannedSte, SteKind, SteProblem, StrtabRefusal, StrtabScan};
pub use walk::{Stage, Vmsa};
