//! `handover snp-check --json`: the shape and verdicts docs/handover.md#snp-panic-path gives.

use std::process::Command;

use serde_json::Value;

fn snp_check(args: &[&str]) -> (Option<i32>, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_handover")).arg("snp-check").args(args).output().unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), v)
}

#[test]
fn json_has_one_object_per_protocol() {
    let (code, v) = snp_check(&["--cpus", "3", "--json"]);
    assert_eq!(code, Some(0));
    let protos = v["protocols"].as_array().unwrap();
    let names: Vec<&str> = protos.iter().map(|p| p["name"].as_str().unwrap()).collect();
    for want in ["v2-sync", "last-cpu", "wbinvd-first", "no-shutdown"] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    for p in protos {
        for key in ["states", "interleavings", "shutdown_ok", "shutdown_failed", "safety_violations"] {
            assert!(p[key].is_u64(), "{key} of {}", p["name"]);
        }
        assert!(p["capture_ok"].is_boolean());
        let ok = p["shutdown_ok"].as_u64().unwrap() + p["shutdown_failed"].as_u64().unwrap();
        assert_eq!(ok, p["interleavings"].as_u64().unwrap());
        // A counterexample exactly when something failed.
        let failed = p["shutdown_failed"].as_u64().unwrap() > 0 || p["safety_violations"].as_u64().unwrap() > 0;
        assert_eq!(p["counterexample"].is_array(), failed, "{}", p["name"]);
    }
    let v2 = protos.iter().find(|p| p["name"] == "v2-sync").unwrap();
    assert_eq!(v2["shutdown_failed"], 0);
    assert!(v2["counterexample"].is_null());
    // Combined with the AMD-Vi hand-over: with adopt the crash kernel captures whatever the panic path did;
    // with a reset it captures only where every interleaving shut SNP down.
    for p in protos {
        assert_eq!(p["capture_ok"], true, "{}", p["name"]);
        assert_eq!(p["capture_ok_without_handover"], p["shutdown_failed"] == 0, "{}", p["name"]);
    }
    let last = protos.iter().find(|p| p["name"] == "last-cpu").unwrap();
    assert_eq!(last["shutdown_ok"], 0);
    assert!(last["counterexample"].as_array().unwrap().iter().any(|s| s.as_str().unwrap().contains("WBINVD_REQUIRED")));
}

#[test]
fn unknown_protocols_and_bad_cpu_counts_are_refused() {
    let (code, _) = snp_check(&["--protocol", "nope"]);
    assert_eq!(code, Some(2));
    let (code, _) = snp_check(&["--cpus", "0"]);
    assert_eq!(code, Some(2));
}

#[test]
fn simulate_json_round_trips_and_bad_flags_fail_clearly() {
    let out =
        Command::new(env!("CARGO_BIN_EXE_handover")).args(["simulate", "--json", "--seed", "3"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs: Vec<iommu_sim::Outcome> = serde_json::from_value(v["runs"].clone()).unwrap();
    assert_eq!(runs.len(), 12, "three IOMMUs, four policies");
    for r in &runs {
        let again: iommu_sim::Outcome = serde_json::from_str(&serde_json::to_string(r).unwrap()).unwrap();
        assert_eq!(&again, r);
        assert!(["vtd", "amdvi", "smmuv3"].contains(&r.iommu.as_str()));
    }
    for key in ["captured", "failure", "dma", "changed_pages", "crashkernel_pages_written", "adopt_ns", "adopt_bytes"] {
        assert!(v["runs"][0].get(key).is_some(), "{key}");
    }
    for bad in [
        &["simulate", "--policy", "adopt-everything"][..],
        &["simulate", "--iommu", "mmu"],
        &["simulate", "--seed", "-1"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_handover")).args(bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn bench_json_has_the_issue_shape() {
    let out = Command::new(env!("CARGO_BIN_EXE_handover")).args(["bench", "--quick", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for at in ["start", "end"] {
        assert!(v["pace"][at].as_f64().is_some_and(|p| p > 0.0), "the host's pace at the {at}: {}", v["pace"]);
    }
    let adopt = v["adopt"].as_array().unwrap();
    for iommu in ["vtd", "amdvi", "smmuv3"] {
        let rows: Vec<&Value> = adopt.iter().filter(|r| r["iommu"] == iommu).collect();
        assert!(rows.len() >= 2, "{iommu}: two sizes");
        for r in &rows {
            for k in [
                "live_devices",
                "adopt_ns",
                "adopt_new_bytes",
                "adopt_read_bytes",
                "eager_ns",
                "eager_bytes",
                "floor_ns",
                "pages_floor_ns",
                "pages_read",
            ] {
                assert!(r[k].is_u64(), "{iommu} {k}");
            }
            assert!(r["pages_read"].as_u64() > Some(0), "{iommu}: adoption reads old memory");
        }
        // Old memory read grows with the live devices where adoption reads per device (VT-d's context tables,
        // SMMUv3's lazily mapped L2 tables); AMD-Vi validates the whole fixed-size device table. New memory
        // does not grow with them: nothing is attached here, so nothing is copied.
        if iommu != "amdvi" {
            assert!(rows[1]["adopt_read_bytes"].as_u64() > rows[0]["adopt_read_bytes"].as_u64(), "{iommu}");
        }
        assert_eq!(rows[1]["adopt_new_bytes"], rows[0]["adopt_new_bytes"], "{iommu}: new memory is a constant");
    }
    for t in v["translate"].as_array().unwrap() {
        for k in ["iotlb_hit_per_s", "walk_per_s", "no_iotlb_per_s"] {
            assert!(t[k].as_f64().unwrap() > 0.0, "{k}");
        }
    }
    for s in v["simulate"].as_array().unwrap() {
        assert!(s["threads"].is_u64() && s["scenarios_per_s"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn six_cpus_print_exact_counts_past_two_to_the_64() {
    let out = Command::new(env!("CARGO_BIN_EXE_handover"))
        .args(["snp-check", "--cpus", "6", "--protocol", "v2-sync", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    // Counted in u128 by dynamic programming; 2^64 - 1 would be a saturated count.
    assert!(text.contains("\"interleavings\": 181043594757574663437184942080,"), "{text}");
    assert!(!text.contains("18446744073709551615"), "{text}");
    let human = Command::new(env!("CARGO_BIN_EXE_handover"))
        .args(["snp-check", "--cpus", "6", "--protocol", "v2-sync"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&human.stdout).contains(" 181043594757574663437184942080 "));
}
