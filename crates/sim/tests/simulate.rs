//! The simulator's verdicts on the built-in VT-d machine with its NIC, disk and copy engine, measured:
//! nothing here is a table of expectations the simulator reads.

use iommu_driver::amdvi::AmdError;
use iommu_driver::contract::{CrashOutcome, UnitRefusal};
use iommu_driver::smmuv3::Refusal as Smmuv3Refusal;
use iommu_driver::{DriverError, Policy};
use iommu_sim::{run, run_detailed, Failure, Knobs, Scenario};

fn scenario(policy: Policy, seed: u64, aborts_fatal: bool, scalable: bool) -> Scenario {
    Scenario { policy, seed, knobs: Knobs { aborts_fatal, scalable, ..Knobs::default() } }
}

#[test]
fn same_seed_same_outcome_and_seeds_differ() {
    for p in Policy::ALL {
        let a = run(&scenario(p, 7, true, false));
        let b = run(&scenario(p, 7, true, false));
        assert_eq!(a, b, "{p}");
    }
    let crash_ticks: std::collections::BTreeSet<u64> =
        (0..8).map(|s| run(&scenario(Policy::Adopt, s, true, false)).0.crash_tick).collect();
    assert!(crash_ticks.len() > 1, "the seed moves the crash");
}

#[test]
fn reset_abort_loses_the_dump_where_aborts_are_fatal() {
    for (seed, scalable) in [(1, false), (2, true), (3, false)] {
        let o = run(&scenario(Policy::ResetAbort, seed, true, scalable)).0;
        assert!(!o.captured);
        let failure = o.failure.as_ref().and_then(|f| f.typed());
        assert!(matches!(failure, Some(Failure::FatalAbort { .. })), "{o:?}");
        assert!(o.dma.aborted > 0);
        let benign = run(&scenario(Policy::ResetAbort, seed, false, scalable)).0;
        assert!(benign.captured, "{benign:?}");
        assert!(benign.dma.faulted > 0 && benign.dma.aborted == 0);
        assert_eq!(benign.changed_pages.other, 0);
    }
}

#[test]
fn reset_bypass_corrupts_memory_outside_device_buffers() {
    for (seed, scalable) in [(1, false), (2, true), (3, false)] {
        let o = run(&scenario(Policy::ResetBypass, seed, true, scalable)).0;
        assert!(o.dma.untranslated > 0);
        assert!(o.changed_pages.other > 0, "old DMA on physical addresses equal to its IOVAs: {o:?}");
        assert!(!o.vmcore_intact);
    }
}

#[test]
fn adopt_captures_with_no_corruption_outside_device_buffers() {
    for (seed, scalable) in [(1, false), (2, true), (3, false)] {
        let o = run(&scenario(Policy::Adopt, seed, true, scalable)).0;
        assert!(o.captured, "{o:?}");
        assert_eq!(o.changed_pages.other, 0);
        assert_eq!(o.crashkernel_pages_written, 0);
        assert_eq!(o.dma.faulted + o.dma.aborted, 0);
        assert_eq!(o.adopted_devices, 4, "the NIC, the disk, the copy engine and the idle NIC port");
        assert!(o.changed_pages.buffers > 0, "devices kept writing their old buffers");
        assert!(o.old_memory_writes_after_init > 0);
        assert_eq!(o.usable_devices, vec!["disk".to_string()]);
        assert!(o.dump_pages > 100);
    }
}

#[test]
fn adopt_scratch_captures_with_no_faults_no_aborts_and_no_old_memory_writes() {
    for (seed, scalable) in [(1, false), (2, true), (3, false)] {
        let o = run(&scenario(Policy::AdoptScratch, seed, true, scalable)).0;
        assert!(o.captured, "{o:?}");
        assert_eq!(o.changed_pages.other, 0);
        assert_eq!(o.dma.faulted + o.dma.aborted, 0, "contained descriptor fetches read zeros, not garbage");
        assert_eq!(o.old_memory_writes_after_init, 0, "containment stops every write to old memory");
        assert!(o.dma.redirected > 0);
        assert_eq!(o.scratch_frames, 512 + 4, "a 512-page region and one shared table per level");
    }
}

#[test]
fn the_dump_differs_from_crash_memory_exactly_where_dma_wrote_after_the_crash() {
    for policy in [Policy::Adopt, Policy::ResetBypass, Policy::AdoptScratch] {
        let d = run_detailed(&scenario(policy, 4, false, false));
        assert!(d.outcome.captured, "{policy}");
        assert!(!d.dump_differs.is_empty(), "{policy}: DMA wrote old memory after the crash");
        // The dump holds what memory held when each page was copied: it differs from the crash instant in
        // exactly the pages that had changed by then...
        assert_eq!(d.dump_differs, d.changed_when_dumped, "{policy}");
        // ... and every one of those was written by DMA after the panic, before it was copied: nothing
        // else touched old memory. (DMA that rewrote identical bytes, like the copy engine repeating a copy,
        // leaves no difference.)
        assert!(d.dump_differs.is_subset(&d.written_before_dumped), "{policy}");
        assert_eq!(d.outcome.dump_pages_differing, d.dump_differs.len() as u64);
    }
}

fn amd(policy: Policy, seed: u64, snp_shutdown: Option<bool>) -> iommu_sim::Outcome {
    let knobs = Knobs { iommu: iommu_sim::IommuKind::Amdvi, snp_shutdown, ..Knobs::default() };
    run(&Scenario { policy, seed, knobs }).0
}

#[test]
fn amdvi_with_snp_shutdown_failed_only_adopt_captures() {
    for seed in [1, 2, 3] {
        for policy in [Policy::ResetAbort, Policy::ResetBypass] {
            let o = amd(policy, seed, Some(false));
            assert!(!o.captured, "{o:?}");
            // Linux goes on past the timeouts with interrupt remapping on and dies in check_timer.
            let failure = o.failure.as_ref().and_then(|f| f.typed());
            assert!(
                matches!(
                    failure,
                    Some(Failure::TimerCheck {
                        after: Some(DriverError::Amdvi(AmdError::CompletionWaitTimeout { .. })),
                        ..
                    })
                ),
                "{o:?}"
            );
        }
        let o = amd(Policy::Adopt, seed, Some(false));
        assert!(o.captured, "{o:?}");
        assert_eq!(o.changed_pages.other, 0);
        assert!(o.changed_pages.iommu > 0, "the reused command buffer and device table are written in place");
        assert_eq!(o.dma.faulted + o.dma.aborted, 0);
        assert_eq!(o.usable_devices, vec!["disk".to_string()]);
    }
}

#[test]
fn amdvi_without_the_lock_behaves_like_vtd() {
    for snp in [None, Some(true)] {
        let abort = amd(Policy::ResetAbort, 1, snp);
        assert!(!abort.captured && abort.dma.aborted > 0, "{snp:?}: {abort:?}");
        let adopt = amd(Policy::Adopt, 1, snp);
        assert!(adopt.captured && adopt.changed_pages.other == 0, "{snp:?}: {adopt:?}");
    }
    let bypass = amd(Policy::ResetBypass, 1, None);
    assert!(bypass.changed_pages.other > 0, "{bypass:?}");
}

#[test]
fn every_iommu_adopt_captures_and_resets_fail_or_corrupt() {
    for iommu in iommu_sim::IommuKind::ALL {
        let k = |aborts_fatal| Knobs { iommu, aborts_fatal, ..Knobs::default() };
        for seed in [1, 5] {
            let adopt = run(&Scenario { policy: Policy::Adopt, seed, knobs: k(true) }).0;
            assert!(adopt.captured, "{iommu:?}: {adopt:?}");
            assert_eq!(adopt.changed_pages.other, 0, "{iommu:?}");
            assert_eq!(adopt.dma.faulted + adopt.dma.aborted, 0, "{iommu:?}");
            let abort = run(&Scenario { policy: Policy::ResetAbort, seed, knobs: k(true) }).0;
            assert!(!abort.captured, "{iommu:?}: {abort:?}");
            let bypass = run(&Scenario { policy: Policy::ResetBypass, seed, knobs: k(true) }).0;
            assert!(bypass.changed_pages.other > 0, "{iommu:?}: {bypass:?}");
            let scratch = run(&Scenario { policy: Policy::AdoptScratch, seed, knobs: k(true) }).0;
            assert!(scratch.captured, "{iommu:?}: {scratch:?}");
            assert_eq!(scratch.old_memory_writes_after_init, 0, "{iommu:?}");
            assert_eq!(scratch.changed_pages.other, 0, "{iommu:?}");
            assert_eq!(scratch.dma.faulted + scratch.dma.aborted, 0, "{iommu:?}");
        }
    }
}

#[test]
fn a_noncoherent_smmu_walker_is_not_adopted() {
    let knobs =
        Knobs { iommu: iommu_sim::IommuKind::Smmuv3, coherent_walker: false, aborts_fatal: false, ..Knobs::default() };
    let o = run(&Scenario { policy: Policy::Adopt, seed: 1, knobs }).0;
    let init = o.iommu_init.typed().expect("a run made here");
    assert_eq!(init.outcome, CrashOutcome::FellBack(UnitRefusal::Smmuv3(Smmuv3Refusal::NonCoherentWalker)), "{o:?}");
    assert!(o.dma.faulted > 0, "the fallback is a reset: old DMA aborts");
}

/// What a policy's run comes to, in the terms the simulator's verdicts use: captured or the failure's
/// class, memory corrupted outside device buffers, crash-kernel pages written, devices adopted.
fn policy_outcome(o: &iommu_sim::Outcome) -> (bool, Option<String>, bool, bool, u64) {
    let failure = o.failure.as_ref().map(|f| match f.typed() {
        Some(t) => iommu_sim::campaign::failure_class(t),
        None => "untyped".to_string(),
    });
    (o.captured, failure, o.changed_pages.other > 0, o.crashkernel_pages_written > 0, o.adopted_devices)
}

#[test]
fn first_level_scalable_mode_gives_the_policy_outcomes_of_legacy_and_second_level_modes() {
    for policy in Policy::ALL {
        for (seed, aborts_fatal) in [(1, true), (2, false), (3, true)] {
            let mode = |scalable, vtd_first_level| {
                let knobs = Knobs { aborts_fatal, scalable, vtd_first_level, ..Knobs::default() };
                run(&Scenario { policy, seed, knobs }).0
            };
            let (legacy, second, first) = (mode(false, false), mode(true, false), mode(true, true));
            let want = policy_outcome(&legacy);
            assert_eq!(policy_outcome(&second), want, "{policy} seed {seed}: second level vs legacy");
            assert_eq!(policy_outcome(&first), want, "{policy} seed {seed}: first level vs legacy\n{first:?}");
            // The first-level run really ran on first-level tables: the same traffic, translated.
            assert_eq!(first.dma.translated > 0, legacy.dma.translated > 0, "{policy} seed {seed}");
        }
    }
}

#[test]
fn the_first_level_machine_offers_first_level_translation_and_its_kernel_uses_it() {
    use iommu_driver::vtd::DeviceKind;
    use iommu_sim::machine::Kernel;
    let mut cfg = iommu_sim::MachineConfig::default_vtd();
    (cfg.scalable, cfg.vtd_first_level) = (true, true);
    let env = cfg.primary_env();
    let mut m = iommu_sim::Machine::new(cfg);
    let opts = iommu_driver::BootOptions { scalable: true, vtd_first_level: true, ..Default::default() };
    let mut drv = iommu_driver::boot(iommu_sim::IommuKind::Vtd, &mut m.platform(Kernel::Primary), &env, opts).unwrap();
    let d = drv.create_domain(&mut m.platform(Kernel::Primary)).unwrap();
    drv.attach(&mut m.platform(Kernel::Primary), iommu_driver::DeviceId(0x0010), iommu_driver::Attachment::Domain(d))
        .unwrap();
    let s = iommu_driver::vtd::scan(&mut m.platform(Kernel::Primary), &env, None).unwrap();
    let nic = s.devices.iter().find(|x| x.sid == 0x0010).unwrap();
    assert!(matches!(nic.kind, DeviceKind::FirstLevel { levels: 4, .. }), "{:?}", nic.kind);
}

/// Campaigns run the part before the crash kernel's IOMMU init once per scenario and branch it per policy:
/// each branch must be exactly the run made alone (a state the branches shared would show here). Neither keeps
/// the page-by-page record a detailed run keeps, which must change no outcome either.
#[test]
fn one_scenario_under_every_policy_at_once_equals_each_run_alone_and_each_detailed_run() {
    let policies = [Policy::ResetAbort, Policy::ResetBypass, Policy::Adopt, Policy::AdoptScratch, Policy::Off];
    for kind in iommu_driver::IommuKind::ALL {
        for (seed, inject) in [(1, "none"), (5, "torn-entry"), (9, "leaf-in-crash-region")] {
            let inject = if inject == "none" {
                iommu_sim::inject::Faults::NONE
            } else {
                iommu_sim::inject::Faults::parse([inject]).unwrap()
            };
            let knobs = Knobs { iommu: kind, inject, snp_shutdown: Some(false), ..Knobs::default() };
            let s = Scenario { policy: Policy::Adopt, seed, knobs };
            let together = iommu_sim::run_policies(&s, &policies);
            assert_eq!(together.len(), policies.len());
            for (o, &policy) in together.iter().zip(&policies) {
                let alone = run(&Scenario { policy, ..s }).0;
                assert_eq!(*o, alone, "{kind} {policy} seed {seed}");
                let detailed = iommu_sim::run_detailed(&Scenario { policy, ..s }).outcome;
                assert_eq!(alone, detailed, "{kind} {policy} seed {seed}: the page record changed the outcome");
            }
        }
    }
}
