//! The injection catalogue end to end, as the crashed machine would leave it: every fault, on every IOMMU it
//! applies to (VT-d in its three table formats — the table faults find no second-level table to move under
//! first-level and say so —, AMD-Vi with SNP locked, released and absent, SMMUv3), under
//! `adopt` and `adopt-scratch`, where a blocked DMA is fatal. `adopt-scratch` captures the dump with no
//! crash-kernel page written and nothing outside device buffers changed; `adopt` never lets DMA write the
//! crash region, and where it loses it says why. (Each fault lands where the crash kernel judges it before the
//! hardware acts on it: see `iommu_emu::inject`.)

use iommu_driver::{IommuKind, Policy};
use iommu_sim::inject::{Faults, NAMES};
use iommu_sim::{run, Knobs, Outcome, Scenario};

/// Every fault alone (`bitflips:8`), and flips together with the faults that rewrite the idle device first.
fn faults() -> Vec<String> {
    let mut f: Vec<String> =
        NAMES.iter().map(|n| if *n == "bitflips" { "bitflips:8".to_string() } else { n.to_string() }).collect();
    f.extend(["bitflips:64", "torn-entry,bitflips:16", "domain-id-alias,bitflips:16"].map(String::from));
    f
}

/// Every platform variant a fault may behave differently on.
fn platforms() -> Vec<(&'static str, Knobs)> {
    let k = Knobs::default();
    vec![
        ("vt-d legacy", Knobs { iommu: IommuKind::Vtd, ..k }),
        ("vt-d scalable", Knobs { iommu: IommuKind::Vtd, scalable: true, ..k }),
        ("vt-d scalable first-level", Knobs { iommu: IommuKind::Vtd, scalable: true, vtd_first_level: true, ..k }),
        ("amd-vi snp locked", Knobs { iommu: IommuKind::Amdvi, snp_shutdown: Some(false), ..k }),
        ("amd-vi snp released", Knobs { iommu: IommuKind::Amdvi, snp_shutdown: Some(true), ..k }),
        ("amd-vi no snp", Knobs { iommu: IommuKind::Amdvi, snp_shutdown: None, ..k }),
        ("smmuv3", Knobs { iommu: IommuKind::Smmuv3, ..k }),
    ]
}

fn one(knobs: Knobs, policy: Policy, fault: &str, seed: u64) -> Outcome {
    let inject = Faults::parse([fault]).unwrap();
    run(&Scenario { policy, seed, knobs: Knobs { inject, ..knobs } }).0
}

#[test]
fn every_fault_is_survived_by_adopt_scratch_and_adopt_never_writes_the_crash_region() {
    let mut applied = 0;
    for (name, knobs) in platforms() {
        for fault in faults() {
            for seed in [1, 2] {
                for policy in [Policy::Adopt, Policy::AdoptScratch] {
                    let o = one(knobs, policy, &fault, seed);
                    let what = format!("{name} {fault} {policy} seed {seed}");
                    assert_eq!(o.inject.join(","), fault);
                    if !o.inject_applied {
                        assert!(o.inject_reason.is_some(), "{what}: a fault that does not apply says why");
                        continue;
                    }
                    applied += 1;
                    assert_eq!(o.crashkernel_pages_written, 0, "{what}: {o:?}");
                    if policy == Policy::AdoptScratch {
                        assert!(o.captured, "{what}: {o:?}");
                        assert_eq!(o.changed_pages.other, 0, "{what}: {o:?}");
                        assert_eq!(o.old_memory_writes_after_init, 0, "{what}: contained DMA stays in scratch");
                    } else if !o.captured {
                        assert!(o.failure.is_some(), "{what}: a lost dump says why");
                    }
                }
            }
        }
    }
    assert!(applied >= 240, "most faults apply to most platforms ({applied})");
}

/// Each fault lands where the crash kernel judges it first: between the panic and the init no DMA is blocked
/// and no DMA reaches the crash region, on any fault.
#[test]
fn no_fault_acts_before_the_crash_kernel_can_judge_it() {
    for (name, knobs) in platforms() {
        for fault in faults() {
            let o = one(knobs, Policy::AdoptScratch, &fault, 3);
            assert_eq!(o.crashkernel_pages_written_before_init, 0, "{name} {fault}: {o:?}");
            let early = o
                .failure
                .as_ref()
                .and_then(|f| f.typed())
                .is_some_and(|f| matches!(f, iommu_sim::Failure::FatalAbort { before_init: true, .. }));
            assert!(!early, "{name} {fault}: {o:?}");
        }
    }
}

/// The leaf fault shows the adoption walk at work: `adopt` keeps a device only if its tables reach nowhere
/// in the crash region, so the NIC whose late buffer was moved there is refused (blocked, its DMA then
/// aborts: the run says so), where `adopt-scratch` contains it.
#[test]
fn a_leaf_in_the_crash_region_is_refused_at_adoption_on_every_iommu() {
    for kind in IommuKind::ALL {
        let knobs = Knobs { iommu: kind, snp_shutdown: Some(false), ..Knobs::default() };
        let nic_refused = |o: &Outcome| {
            o.refused_entries.iter().filter_map(|r| r.typed()).filter_map(|r| r.device()).any(|d| d.0 == 0x10)
        };
        let o = one(knobs, Policy::Adopt, "leaf-in-crash-region", 1);
        assert!(o.inject_applied, "{kind}: {o:?}");
        assert!(nic_refused(&o), "{kind}: the NIC (00:02.0) is refused: {o:?}");
        assert_eq!(o.crashkernel_pages_written, 0, "{kind}: {o:?}");
        // Without the fault the same NIC is adopted: the refusal is the walk's answer to the moved leaf.
        assert!(!nic_refused(&one(knobs, Policy::Adopt, "no-iasup", 1)), "{kind}: adopted without the fault");
        let o = one(knobs, Policy::AdoptScratch, "leaf-in-crash-region", 1);
        assert!(nic_refused(&o) && o.captured, "{kind}: refused, contained, captured: {o:?}");
        assert_eq!(o.crashkernel_pages_written, 0, "{kind}: {o:?}");
    }
}

#[test]
fn a_fault_that_does_not_apply_to_an_iommu_is_named_with_its_reason() {
    let o = one(Knobs { iommu: IommuKind::Vtd, ..Knobs::default() }, Policy::Adopt, "l1-reserved-bits", 1);
    assert!(!o.inject_applied);
    assert!(o.inject_reason.as_deref().is_some_and(|r| r.starts_with("l1-reserved-bits: ")), "{o:?}");
    let o = one(Knobs { iommu: IommuKind::Smmuv3, ..Knobs::default() }, Policy::Adopt, "no-iasup", 1);
    assert!(!o.inject_applied);
    let o = one(Knobs { iommu: IommuKind::Amdvi, ..Knobs::default() }, Policy::Adopt, "no-iasup", 1);
    assert!(o.inject_applied && o.inject_reason.is_none());
}

/// A reset does not inherit the crashed kernel's command-queue error: SMMUv3 `reset-abort` and the fallback of a
/// non-coherent walker boot past a pending CMDQ_ERR (before, the first CMD_SYNC on the new queue read as failed).
#[test]
fn a_reset_boots_past_a_pending_command_queue_error() {
    let smmu = Knobs { iommu: IommuKind::Smmuv3, ..Knobs::default() };
    for (knobs, policy) in [
        (smmu, Policy::ResetAbort),
        (smmu, Policy::ResetBypass),
        (Knobs { coherent_walker: false, ..smmu }, Policy::AdoptScratch),
    ] {
        let o = one(knobs, policy, "cmdq-error-pending", 1);
        assert!(o.inject_applied, "{o:?}");
        let init_failed = matches!(o.failure.as_ref().and_then(|f| f.typed()), Some(iommu_sim::Failure::CrashInit(_)));
        assert!(!init_failed, "{policy}: {o:?}");
    }
}
