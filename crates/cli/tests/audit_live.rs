//! `handover audit --live` on a fake running host: a directory holding proc/kcore (a committed capture's
//! core: its System RAM segments carry physical addresses, as `/proc/kcore`'s do), proc/iomem with a
//! "Crash kernel" line, the DMAR in sys/firmware/acpi/tables, and the registers as Linux's VT-d
//! debugfs `iommu_regset` or in a sparse dev/mem. The verdict must be the flagged audit's of the same capture
//! with the same crash region; what the host cannot tell is an exit-2 error naming it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

mod common;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// A running host's tree: System RAM with the crash kernel reserved inside it (as Linux nests
/// `crashk_res`), as the README's flagged audits take it.
const IOMEM: &str = "\
00000000-00000fff : Reserved
00001000-7fffffff : System RAM
  01000000-01ffffff : Kernel code
  30000000-3fffffff : Crash kernel
fed90000-fed90fff : dmar0
";

struct Host {
    root: PathBuf,
}

impl Host {
    fn new(name: &str, capture: &str, regset: bool) -> Host {
        let root = std::env::temp_dir().join(format!("handover-live-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["proc", "sys/firmware/acpi/tables", "sys/kernel/debug/iommu/intel", "dev"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let cap = fixtures().join(capture);
        std::fs::copy(cap.join("memory.elf"), root.join("proc/kcore")).unwrap();
        std::fs::copy(fixtures().join("acpi/q35-vtd-dmar.bin"), root.join("sys/firmware/acpi/tables/DMAR")).unwrap();
        std::fs::write(root.join("proc/iomem"), IOMEM).unwrap();
        if regset {
            std::fs::copy(cap.join("iommu_regset.txt"), root.join("sys/kernel/debug/iommu/intel/iommu_regset"))
                .unwrap();
        } else {
            common::devmem_from_monitor(&cap.join("regs.txt"), &root.join("dev/mem"));
        }
        Host { root }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn live(&self, extra: &[&str]) -> (Output, Option<Value>) {
        let out = Command::new(env!("CARGO_BIN_EXE_handover"))
            .args(["audit", "--live", "--json", "--root"])
            .arg(&self.root)
            .args(extra)
            .output()
            .unwrap();
        let v = serde_json::from_slice(&out.stdout).ok();
        (out, v)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The README's flagged audit of the same capture.
fn flagged(capture: &str) -> Value {
    let d = fixtures().join(capture);
    let out = Command::new(env!("CARGO_BIN_EXE_handover"))
        .arg("audit")
        .arg(d.join("memory.elf"))
        .arg("--regs")
        .arg(d.join("regs.txt"))
        .arg("--acpi")
        .arg(fixtures().join("acpi/q35-vtd-dmar.bin"))
        .args(["--ram", "0-7fffffff", "--crashkernel", "30000000-3fffffff", "--json"])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_live_host_is_audited_from_kcore_iomem_and_its_registers_with_the_flagged_verdict() {
    for (capture, regset, verdict, code) in
        [("vtd-legacy", true, "safe", 0), ("vtd-legacy", false, "safe", 0), ("vtd-passthrough", false, "unsafe", 1)]
    {
        let h = Host::new(&format!("{capture}-{regset}"), capture, regset);
        let (out, v) = h.live(&[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{capture}: {err}");
        let v = v.unwrap();
        let want = flagged(capture);
        assert_eq!(v["verdict"], verdict, "{capture}");
        assert_eq!(v["reasons"], want["reasons"], "{capture}");
        assert_eq!(v["crashkernel_regions"], serde_json::json!([{"start": 0x3000_0000u64, "end": 0x4000_0000u64}]));
        let d = &v["defaults"];
        assert!(d["memory"]["from"].as_str().unwrap().contains("proc/kcore"), "{d}");
        let regs = if regset { "sys/kernel/debug/iommu/intel/iommu_regset" } else { "dev/mem" };
        assert_eq!(d["registers"]["from"], h.path(regs).display().to_string().as_str());
        assert!(d["crashkernel"]["from"].as_str().unwrap().contains("Crash kernel"), "{d}");
        assert_eq!(d["ram"]["regions"], serde_json::json!([{"start": 0x1000u64, "end": 0x8000_0000u64}]));
        for what in ["memory", "units", "registers", "crashkernel", "ram"] {
            assert!(err.contains(&format!("default {what}: ")), "{what} not on stderr: {err}");
        }
    }
}

#[test]
fn a_host_without_a_crash_kernel_or_registers_is_an_error_naming_what_is_missing() {
    let h = Host::new("missing", "vtd-legacy", false);
    std::fs::write(h.path("proc/iomem"), "00001000-7fffffff : System RAM\n").unwrap();
    let (out, _) = h.live(&[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("Crash kernel") && err.contains("crashkernel="), "{err}");

    std::fs::write(h.path("proc/iomem"), IOMEM).unwrap();
    std::fs::remove_file(h.path("dev/mem")).unwrap();
    let (out, _) = h.live(&[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("default registers") && err.contains("iommu_regset"), "{err}");

    // A dump and --live at once is a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_handover"))
        .args(["audit", "--live"])
        .arg(h.path("proc/kcore"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// The committed runs of `scripts/capture/live.sh`: each verdict agrees with its exit status, with the
/// README's table, and was reached from the defaults of a real guest (its kcore and iomem).
#[test]
fn the_committed_live_guest_runs_agree_with_their_exit_status_and_the_readme() {
    let readme = std::fs::read_to_string(fixtures().join("../README.md")).unwrap();
    for (dir, verdict, code) in [("vtd", "safe", "0"), ("vtd-passthrough", "unsafe", "1"), ("amdvi", "safe", "0")] {
        let d = fixtures().join("live").join(dir);
        let v: Value = serde_json::from_str(&std::fs::read_to_string(d.join("live.json")).unwrap()).unwrap();
        assert_eq!(v["verdict"], verdict, "{dir}");
        assert_eq!(std::fs::read_to_string(d.join("live.rc")).unwrap().trim(), code, "{dir}");
        assert_eq!(v["defaults"]["memory"]["from"], "/proc/kcore (the running kernel, read while it runs)");
        assert!(v["defaults"]["crashkernel"]["from"].as_str().unwrap().contains("Crash kernel"), "{dir}");
        let row = readme.lines().find(|l| l.contains(&format!("`fixtures/live/{dir}`"))).unwrap();
        assert!(row.contains(&format!("`{verdict}` (exit {code})")), "{dir}: {row}");
        let summary = std::fs::read_to_string(d.join("summary.txt")).unwrap();
        assert!(summary.contains("Linux version 6.12") && summary.contains("QEMU emulator version"), "{dir}");
    }
}
