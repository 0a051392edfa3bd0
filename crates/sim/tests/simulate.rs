//! The simulator's verdicts on the built-in VT-d machine, and their determinism.

use iommu_driver::Policy;
use iommu_sim::{run, Knobs, Scenario};

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
fn policies_on_the_default_machine() {
    for scalable in [false, true] {
        for seed in [1, 2, 3] {
            let abort = run(&scenario(Policy::ResetAbort, seed, true, scalable)).0;
            assert!(!abort.captured, "{abort:?}");
            assert!(abort.failure.as_deref().unwrap().contains("fatal DMA abort"));
            assert!(abort.dma.aborted > 0);

            let benign = run(&scenario(Policy::ResetAbort, seed, false, scalable)).0;
            assert!(benign.captured, "{benign:?}");
            assert!(benign.dma.faulted > 0 && benign.dma.aborted == 0);

            let bypass = run(&scenario(Policy::ResetBypass, seed, true, scalable)).0;
            assert!(
                bypass.changed_pages.other > 0,
                "IOVAs below the PCI hole land on the old kernel's memory: {bypass:?}"
            );
            assert!(bypass.dma.untranslated > 0);

            let adopt = run(&scenario(Policy::Adopt, seed, true, scalable)).0;
            assert!(adopt.captured, "{adopt:?}");
            assert_eq!(adopt.changed_pages.other, 0, "no corruption outside device buffers");
            assert_eq!(adopt.crashkernel_pages_written, 0);
            assert_eq!(adopt.dma.faulted + adopt.dma.aborted, 0);
            assert_eq!(adopt.adopted_devices, 3);
            assert!(adopt.changed_pages.buffers > 0, "devices kept writing their old buffers");
            assert_eq!(adopt.usable_devices, vec!["disk".to_string()]);

            let scratch = run(&scenario(Policy::AdoptScratch, seed, true, scalable)).0;
            assert!(scratch.captured, "{scratch:?}");
            assert!(scratch.dma.redirected > 0);
            assert!(adopt.old_memory_writes_after_init > 0, "adopted devices keep writing old buffers");
            // Only the disk, which the dump needs and which is not contained, keeps writing old memory: one
            // burst a tick until its driver resets it at probe time.
            assert_eq!(
                scratch.old_memory_writes_after_init,
                Knobs::default().probe_ticks,
                "containment stops the rest"
            );
            assert_eq!(scratch.scratch_frames, 5);
        }
    }
}
