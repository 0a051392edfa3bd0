//! Interrupts across the crash, measured: the devices' MSIs go through the unit's remapping, the crash kernel's
//! disk driver waits for its completion interrupt, and Linux's `check_timer` needs the IO-APIC timer on the
//! crash kernel's CPU. The two failures of the AMD SEV-SNP kdump reports come out of the models, not a table.

use iommu_driver::amdvi::AmdError;
use iommu_driver::{DriverError, Policy};
use iommu_sim::kernel::KernelError;
use iommu_sim::{run, Failure, IommuKind, Knobs, Outcome, Scenario};

fn sim(iommu: IommuKind, policy: Policy, seed: u64, knobs: Knobs) -> Outcome {
    run(&Scenario { policy, seed, knobs: Knobs { iommu, ..knobs } }).0
}

fn failure(o: &Outcome) -> Option<&Failure> {
    o.failure.as_ref().and_then(|f| f.typed())
}

#[test]
fn snp_host_with_failed_shutdown_resets_die_in_check_timer_and_adopt_captures_with_interrupts_delivered() {
    let knobs = Knobs { snp_shutdown: Some(false), ..Knobs::default() };
    for seed in 1..=4 {
        for policy in [Policy::ResetAbort, Policy::ResetBypass] {
            let o = sim(IommuKind::Amdvi, policy, seed, knobs);
            assert!(!o.captured, "{o:?}");
            match failure(&o) {
                Some(
                    f @ Failure::TimerCheck {
                        after: Some(DriverError::Amdvi(AmdError::CompletionWaitTimeout { .. })),
                        ..
                    },
                ) => {
                    assert!(f.to_string().starts_with("timer doesn't work through Interrupt-remapped IO-APIC"))
                }
                other => panic!("{policy} seed {seed}: {other:?}"),
            }
        }
        for policy in [Policy::Adopt, Policy::AdoptScratch] {
            let o = sim(IommuKind::Amdvi, policy, seed, knobs);
            assert!(o.captured, "{o:?}");
            assert!(o.irq.delivered > 0 && o.irq.blocked == 0 && o.irq.misrouted == 0, "{policy}: {:?}", o.irq);
        }
    }
}

#[test]
fn without_remapping_an_x2apic_crash_cpu_never_hears_from_the_disk() {
    // VT-d, and AMD-Vi with benign aborts (translation off lets the copy engine's old DMA leave RAM, which a
    // fatal-abort platform dies of first).
    for (iommu, aborts_fatal) in [(IommuKind::Vtd, true), (IommuKind::Amdvi, false)] {
        let knobs = Knobs { aborts_fatal, snp_shutdown: None, ..Knobs::default() };
        let x2 = Knobs { x2apic: true, ..knobs };
        let o = sim(iommu, Policy::Off, 1, x2);
        assert!(!o.captured, "{o:?}");
        assert!(matches!(failure(&o), Some(Failure::DumpWrite(KernelError::IrqTimeout { .. }))), "{o:?}");
        assert!(o.failure.as_ref().is_some_and(|f| f.to_string().contains("I/O timeout")), "{o:?}");
        assert!(o.irq.misrouted > 0, "{:?}", o.irq);
        // The same host without x2APIC CPUs: compatibility-format MSIs reach the crash kernel's CPU.
        let o = sim(iommu, Policy::Off, 1, knobs);
        assert!(o.captured, "{o:?}");
        // And with remapping (the crash kernel's driver on), the x2APIC CPU is reached through an IRTE.
        let o = sim(iommu, Policy::Adopt, 1, x2);
        assert!(o.captured, "{o:?}");
        assert_eq!((o.irq.blocked, o.irq.misrouted), (0, 0), "{:?}", o.irq);
    }
}

#[test]
fn a_fresh_table_blocks_the_old_devices_interrupts_and_adoption_keeps_them() {
    // reset-bypass: the old NIC keeps receiving (translation off) and signalling through a fresh, empty table.
    let knobs = Knobs { aborts_fatal: false, ..Knobs::default() };
    let reset = sim(IommuKind::Vtd, Policy::ResetBypass, 1, knobs);
    assert!(reset.irq.blocked > 0, "{:?}", reset.irq);
    let adopt = sim(IommuKind::Vtd, Policy::Adopt, 1, knobs);
    assert_eq!(adopt.irq.blocked + adopt.irq.misrouted, 0, "{:?}", adopt.irq);
    assert!(adopt.irq.delivered > reset.irq.delivered);
}

#[test]
fn every_run_reports_its_interrupts_in_json() {
    for iommu in IommuKind::ALL {
        let o = sim(iommu, Policy::Adopt, 2, Knobs::default());
        let v = serde_json::to_value(&o).unwrap();
        for k in ["delivered", "blocked", "misrouted"] {
            assert!(v["irq"][k].is_u64(), "{iommu:?}: {v}");
        }
        assert_eq!(v["irq"]["delivered"].as_u64(), Some(o.irq.delivered));
    }
}

#[test]
fn on_smmuv3_msis_are_writes_to_the_its_doorbell_that_adoption_keeps_mapped() {
    let knobs = Knobs { aborts_fatal: false, ..Knobs::default() };
    // adopt: the old NIC's domain still maps the doorbell page, so its MSIs keep reaching the ITS.
    let adopt = sim(IommuKind::Smmuv3, Policy::Adopt, 1, knobs);
    assert!(adopt.captured, "{adopt:?}");
    assert_eq!((adopt.irq.blocked, adopt.irq.misrouted), (0, 0), "{:?}", adopt.irq);
    // adopt-scratch: the contained NIC's every IOVA, its doorbell IOVA included, lands in the scratch page.
    let scratch = sim(IommuKind::Smmuv3, Policy::AdoptScratch, 1, knobs);
    assert!(scratch.captured && scratch.irq.misrouted > 0, "{:?}", scratch.irq);
    // reset-bypass: the doorbell IOVA taken as a physical address misses the ITS.
    let bypass = sim(IommuKind::Smmuv3, Policy::ResetBypass, 1, knobs);
    assert!(bypass.irq.misrouted > 0, "{:?}", bypass.irq);
    // x2APIC is an x86 matter: an Arm crash kernel's disk interrupts arrive either way.
    let x2 = sim(IommuKind::Smmuv3, Policy::Adopt, 1, Knobs { x2apic: true, ..knobs });
    assert_eq!(x2.captured, adopt.captured);
    assert_eq!(x2.irq, adopt.irq);
}
