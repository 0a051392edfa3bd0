//! The SNP panic-path checker on the designs of the x86/sev v2 thread, at N = 1, 2 and 3 CPUs.

use iommu_sim::snpcheck::{explore, protocols, Exploration};

fn run(name: &str, cpus: usize) -> Exploration {
    let p = protocols().into_iter().find(|p| p.name == name).unwrap();
    explore(&p, cpus)
}

fn trace(e: &Exploration) -> Vec<String> {
    e.counterexample.as_ref().unwrap().iter().map(|s| s.to_string()).collect()
}

#[test]
fn v2_ordering_succeeds_in_every_interleaving() {
    for (cpus, interleavings, states) in [(2, 1, 17), (3, 46_872, 106)] {
        let e = run("v2-sync", cpus);
        assert_eq!(e.tally.interleavings, interleavings, "N={cpus}");
        assert_eq!(e.states, states, "N={cpus}");
        assert_eq!(e.tally.shutdown_ok, interleavings);
        assert_eq!(e.tally.safety_violations, 0);
        assert_eq!(e.tally.no_kexec, 0);
        assert!(e.counterexample.is_none());
    }
}

#[test]
fn v2_ordering_fails_with_a_single_cpu() {
    // Review of the v2 patch: with one online CPU nobody reaches the rendezvous, so nobody decommissions.
    let e = run("v2-sync", 1);
    assert_eq!(e.tally.shutdown_failed, 1);
    assert!(trace(&e).iter().any(|s| s.contains("SNP_SHUTDOWN_EX → DFFLUSH_REQUIRED")));
}

#[test]
fn decommissioning_last_leaves_halted_cpus_unable_to_wbinvd() {
    for (cpus, interleavings) in [(2, 1), (3, 924)] {
        let e = run("last-cpu", cpus);
        assert_eq!(e.tally.interleavings, interleavings);
        assert_eq!(e.tally.shutdown_failed, interleavings, "fails in every interleaving");
        assert_eq!(e.tally.safety_violations, interleavings);
    }
    let e = run("last-cpu", 2);
    assert_eq!(
        trace(&e),
        [
            "cpu0: NMI to every other CPU",
            "cpu1: NMI: VM exit begins",
            "cpu1: saves guest state",
            "cpu1: saves guest state",
            "cpu1: guest state saved; enters the NMI callback",
            "cpu1: WBINVD",
            "cpu1: callback returns: counted stopped, halts",
            "cpu0: all other CPUs stopped",
            "cpu0: SNP_DECOMMISSION → SUCCESS",
            "cpu0: WBINVD",
            "cpu0: SNP_DF_FLUSH → WBINVD_REQUIRED",
            "cpu0: SNP_SHUTDOWN_EX → DFFLUSH_REQUIRED, SNP_DF_FLUSH → WBINVD_REQUIRED, SNP_SHUTDOWN_EX → DFFLUSH_REQUIRED",
            "cpu0: kexec into the crash kernel",
        ]
    );
    assert_eq!(e.counterexample_violation, Some("SNP_DF_FLUSH while a marked core had not executed WBINVD"));
}

#[test]
fn spinning_until_released_depends_on_the_timeout_and_the_race() {
    let e = run("last-cpu-spin", 3);
    assert_eq!(e.tally.interleavings, 294_000);
    assert_eq!(e.tally.shutdown_ok, 135_800);
    assert_eq!(e.tally.shutdown_failed, 158_200);
    assert!(trace(&e).iter().any(|s| s.contains("timeout")), "the panicking CPU only goes on by timing out");
}

#[test]
fn wbinvd_before_decommission_does_not_count() {
    let e = run("wbinvd-first", 3);
    assert_eq!((e.tally.interleavings, e.tally.shutdown_failed), (924, 924));
    let t = trace(&e);
    let wbinvd = t.iter().position(|s| s.contains("WBINVD")).unwrap();
    let decommission = t.iter().position(|s| s.contains("SNP_DECOMMISSION")).unwrap();
    assert!(wbinvd < decommission);
    assert!(t.iter().any(|s| s.contains("SNP_DF_FLUSH → WBINVD_REQUIRED")));
}

#[test]
fn mainline_never_decommissions_so_shutdown_fails() {
    let e = run("mainline", 3);
    assert_eq!((e.tally.interleavings, e.tally.shutdown_failed, e.tally.safety_violations), (924, 924, 0));
    assert_eq!(e.counterexample_violation, None);
    assert!(trace(&e).last().unwrap().contains("kexec"));
}

#[test]
fn decommissioning_early_races_the_vm_exit() {
    let e = run("decommission-early", 2);
    assert_eq!(e.tally.interleavings, 7);
    assert_eq!(e.tally.safety_violations, 6, "only the one interleaving where cpu1 finished its exit first is safe");
    assert_eq!(e.counterexample_violation, Some("SNP_DECOMMISSION while a CPU was still in or saving the guest"));
    let t = trace(&e);
    assert_eq!(t[..2], ["cpu0: NMI to every other CPU".to_string(), "cpu0: SNP_DECOMMISSION → SUCCESS".to_string()]);
}

#[test]
fn no_shutdown_leaves_the_iommu_locked_but_reaches_the_crash_kernel() {
    let e = run("no-shutdown", 3);
    assert_eq!((e.tally.interleavings, e.tally.shutdown_failed, e.tally.no_kexec), (252, 252, 0));
}
