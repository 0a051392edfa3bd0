//! The injection catalogue end to end: every fault, on every IOMMU it applies to, under `adopt` and
//! `adopt-scratch`. What the crash kernel controls — everything from its IOMMU init on — must hold: no DMA
//! writes its region after the init, `adopt-scratch` corrupts nothing outside device buffers and captures the
//! dump. What it cannot control is reported as such: a fault that kills the machine between the panic and the
//! init (a torn entry sends the NIC to garbage, a leaf in the crash region is written) is marked as before
//! the init, and a unit that cannot be reused under SNP stops with the typed reason.

use iommu_driver::amdvi::AmdError;
use iommu_driver::{DriverError, IommuKind, Policy};
use iommu_sim::inject::{Faults, NAMES};
use iommu_sim::{run, Failure, Knobs, Outcome, Scenario};

fn faults() -> Vec<String> {
    NAMES.iter().map(|n| if *n == "bitflips" { "bitflips:8".to_string() } else { n.to_string() }).collect()
}

fn one(kind: IommuKind, policy: Policy, fault: &str, aborts_fatal: bool) -> Outcome {
    let inject = Faults::parse([fault]).unwrap();
    let knobs = Knobs { iommu: kind, aborts_fatal, inject, snp_shutdown: Some(false), ..Knobs::default() };
    run(&Scenario { policy, seed: 1, knobs }).0
}

fn snp_refusal(o: &Outcome) -> bool {
    matches!(
        o.failure.as_ref().and_then(|f| f.typed()),
        Some(Failure::CrashInit(DriverError::Amdvi(AmdError::ReuseFailedWithSnp(_))))
    )
}

#[test]
fn no_fault_lets_dma_write_the_crash_region_after_the_init_and_adopt_scratch_captures() {
    let mut applied = 0;
    for kind in IommuKind::ALL {
        for fault in faults() {
            for policy in [Policy::Adopt, Policy::AdoptScratch] {
                let o = one(kind, policy, &fault, false);
                assert_eq!(o.inject, vec![fault.clone()]);
                if !o.inject_applied {
                    assert!(o.inject_reason.is_some(), "{kind} {fault}: a fault that does not apply says why");
                    continue;
                }
                applied += 1;
                let after_init = o.crashkernel_pages_written - o.crashkernel_pages_written_before_init;
                assert_eq!(after_init, 0, "{kind} {policy} {fault}: {o:?}");
                if policy == Policy::AdoptScratch {
                    assert_eq!(o.changed_pages.other, 0, "{kind} {fault}: {o:?}");
                    let before_init_hit = o.crashkernel_pages_written_before_init > 0;
                    assert!(o.captured || before_init_hit || snp_refusal(&o), "{kind} {fault}: {o:?}");
                    if o.captured {
                        assert_eq!(o.old_memory_writes_after_init, 0, "{kind} {fault}: contained DMA stays in scratch");
                    }
                }
            }
        }
    }
    assert!(applied >= 2 * 3 * 8, "most faults apply to most IOMMUs ({applied})");
}

#[test]
fn where_aborts_are_fatal_adopt_scratch_loses_only_to_what_happened_before_its_init() {
    for kind in IommuKind::ALL {
        for fault in faults() {
            let o = one(kind, Policy::AdoptScratch, &fault, true);
            if !o.inject_applied || o.captured {
                continue;
            }
            let before_init = match o.failure.as_ref().and_then(|f| f.typed()) {
                Some(Failure::FatalAbort { before_init, .. }) => *before_init,
                Some(Failure::CrashKernelWritten { .. }) => {
                    o.crashkernel_pages_written == o.crashkernel_pages_written_before_init
                }
                _ => snp_refusal(&o),
            };
            assert!(before_init, "{kind} {fault}: lost after the crash kernel took over: {o:?}");
        }
    }
}

#[test]
fn a_fault_that_does_not_apply_to_an_iommu_is_named_with_its_reason() {
    let o = one(IommuKind::Vtd, Policy::Adopt, "l1-reserved-bits", true);
    assert!(!o.inject_applied);
    assert!(o.inject_reason.as_deref().is_some_and(|r| r.starts_with("l1-reserved-bits: ")), "{o:?}");
    let o = one(IommuKind::Smmuv3, Policy::Adopt, "no-iasup", true);
    assert!(!o.inject_applied);
    let o = one(IommuKind::Amdvi, Policy::Adopt, "no-iasup", true);
    assert!(o.inject_applied && o.inject_reason.is_none());
}
