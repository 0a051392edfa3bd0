//! The SNP panic-path checker (`handover snp-check`): the orderings argued about in the x86/sev v2 thread, as data,
//! explored over every interleaving against the SNP firmware model.

mod explore;
mod protocol;

pub use explore::{explore, Exploration, Step, Tally};
pub use protocol::{protocols, Action, Protocol};

use iommu_driver::Policy;

use crate::scenario::{run, Knobs, Scenario};
use crate::unit::IommuKind;

/// Whether the crash kernel captures the dump on the simulated AMD-Vi SEV-SNP host after a panic path that
/// left the firmware with `shutdown_ok`, booting its IOMMU under `policy`. Aborted DMA is benign here, so
/// the answer is about the SNP lock alone (whether the IOMMU init can work at all).
pub fn crash_kernel_captures(policy: Policy, shutdown_ok: bool) -> bool {
    let knobs =
        Knobs { iommu: IommuKind::Amdvi, snp_shutdown: Some(shutdown_ok), aborts_fatal: false, ..Knobs::default() };
    run(&Scenario { policy, seed: 1, knobs }).0.captured
}

/// For one protocol's exploration: does the crash kernel capture in every interleaving, booting under
/// `policy`? Each outcome class the protocol reaches (shutdown succeeded, failed) is booted for real; a run
/// that never reaches kexec captures nothing.
pub fn captures_in_every_interleaving(e: &Exploration, policy: Policy) -> bool {
    if e.tally.no_kexec > 0 {
        return false;
    }
    (e.tally.shutdown_ok == 0 || crash_kernel_captures(policy, true))
        && (e.tally.shutdown_failed == 0 || crash_kernel_captures(policy, false))
}
