//! `handover campaign`: results depend on the seed only, never on the thread count; the JSON has the
//! documented shape; bad arguments fail clearly.

use std::process::Command;

use serde_json::Value;

fn campaign(args: &[&str]) -> (Option<i32>, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_handover")).arg("campaign").args(args).output().unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), v, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn one_thread_and_two_threads_give_identical_results() {
    let (c1, one, _) = campaign(&["--runs", "96", "--seed", "7", "--json", "--threads", "1"]);
    let (c2, two, _) = campaign(&["--runs", "96", "--seed", "7", "--json", "--threads", "2"]);
    assert_eq!((c1, c2), (Some(0), Some(0)));
    assert_eq!(one["results"], two["results"]);
    let (_, other, _) = campaign(&["--runs", "96", "--seed", "8", "--json", "--threads", "2"]);
    assert_ne!(one["results"], other["results"], "the seed draws the scenarios");
}

#[test]
fn json_has_a_cell_per_iommu_and_policy_with_its_interval() {
    let (code, v, _) = campaign(&["--runs", "24", "--seed", "1", "--json", "--iommu", "vtd", "--threads", "1"]);
    assert_eq!(code, Some(0));
    assert_eq!(v["runs"], 24);
    let cells = v["results"].as_array().unwrap();
    assert_eq!(cells.len(), 4, "one IOMMU, four policies");
    for c in cells {
        assert_eq!(c["iommu"], "vtd");
        assert_eq!(c["runs"], 6);
        let (k, n) = (c["captured"].as_u64().unwrap(), c["runs"].as_u64().unwrap());
        let [lo, hi] = [c["ci95"][0].as_f64().unwrap(), c["ci95"][1].as_f64().unwrap()];
        let rate = k as f64 / n as f64;
        assert!(lo <= rate && rate <= hi, "{c}");
        for key in ["corrupt_runs", "crashkernel_hit_runs", "failures", "capture_rate"] {
            assert!(c.get(key).is_some(), "{key}");
        }
    }
}

#[test]
fn zero_runs_and_an_existing_svg_are_refused() {
    let (code, _, err) = campaign(&["--runs", "0"]);
    assert_eq!(code, Some(2));
    assert!(!err.is_empty());
    let existing = std::env::temp_dir().join(format!("handover-campaign-{}.svg", std::process::id()));
    std::fs::write(&existing, "mine").unwrap();
    let (code, _, _) = campaign(&["--runs", "4", "--svg", existing.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "mine", "the user's file is untouched");
    let _ = std::fs::remove_file(existing);
}
