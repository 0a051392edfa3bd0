//! `handover audit /proc/vmcore` with no other flag, in a fake kdump kernel: a directory holding proc/,
//! sys/ and a sparse file as dev/mem, built from a committed capture (`fixtures/README.md`): its core as
//! proc/vmcore, its DMAR as sys/firmware/acpi/tables/DMAR, its registers at their addresses in dev/mem.
//! The audit must take each default from that tree, say so, and reach the verdict the flagged audit of
//! the same capture reaches; a default it cannot find is an exit-2 error naming what and where.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

mod common;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// The crash kernel's region the README's flagged audits use, as the kdump kernel's own RAM.
const IOMEM: &str = "\
00000000-00000fff : Reserved
30000000-3fffffff : System RAM
  31000000-31ffffff : Kernel code
fed90000-fed90fff : reserved
";

struct Fake {
    root: PathBuf,
}

impl Fake {
    fn new(name: &str, capture: &str) -> Fake {
        let root = std::env::temp_dir().join(format!("handover-kdump-defaults-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["proc", "sys/firmware/acpi/tables", "dev"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let cap = fixtures().join(capture);
        std::fs::copy(cap.join("memory.elf"), root.join("proc/vmcore")).unwrap();
        std::fs::copy(fixtures().join("acpi/q35-vtd-dmar.bin"), root.join("sys/firmware/acpi/tables/DMAR")).unwrap();
        std::fs::write(root.join("proc/iomem"), IOMEM).unwrap();
        common::devmem_from_monitor(&cap.join("regs.txt"), &root.join("dev/mem"));
        Fake { root }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// `handover audit ROOT/proc/vmcore --root ROOT --json` and `extra`.
    fn audit(&self, extra: &[&str]) -> (Output, Option<Value>) {
        let out = Command::new(env!("CARGO_BIN_EXE_handover"))
            .arg("audit")
            .arg(self.path("proc/vmcore"))
            .arg("--root")
            .arg(&self.root)
            .arg("--json")
            .args(extra)
            .output()
            .unwrap();
        let v = serde_json::from_slice(&out.stdout).ok();
        (out, v)
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The README's flagged audit of the same capture.
fn flagged(capture: &str) -> (Output, Value) {
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
    let v = serde_json::from_slice(&out.stdout).unwrap();
    (out, v)
}

/// Each device's number and reach, unit by unit: what the verdict is made of.
fn reaches(v: &Value) -> Vec<(u64, Value, Value)> {
    let mut out = Vec::new();
    for u in v["units"].as_array().unwrap() {
        for d in u["devices"].as_array().unwrap() {
            out.push((d["sid"].as_u64().unwrap(), d["reach"].clone(), d["threats"].clone()));
        }
    }
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn with_no_flag_the_defaults_give_the_flagged_verdict() {
    for (capture, verdict, code) in [("vtd-legacy", "safe", 0), ("vtd-passthrough", "unsafe", 1)] {
        let f = Fake::new(capture, capture);
        let (want_out, want) = flagged(capture);
        assert_eq!(want_out.status.code(), Some(code), "{capture} flagged: {}", stderr(&want_out));
        let (out, v) = f.audit(&[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{capture}: {err}");
        let v = v.unwrap();
        assert_eq!(v["verdict"], verdict);
        assert_eq!(v["verdict"], want["verdict"]);
        assert_eq!(v["reasons"], want["reasons"], "{capture}");
        // What each device threatens is the same; so is what it reaches, but for a pass-through device,
        // which reaches all of RAM: the dump's RAM and the crash region here, the flagged --ram there.
        let (got, wanted) = (reaches(&v), reaches(&want));
        assert!(!got.is_empty());
        assert_eq!(
            got.iter().map(|d| (d.0, &d.2)).collect::<Vec<_>>(),
            wanted.iter().map(|d| (d.0, &d.2)).collect::<Vec<_>>()
        );
        if verdict == "safe" {
            assert_eq!(got, wanted, "{capture}");
        }
        assert_eq!(v["crashkernel_regions"], serde_json::json!([{"start": 0x3000_0000u64, "end": 0x4000_0000u64}]));

        // Every default, on stderr and in the JSON.
        let d = &v["defaults"];
        let tables = f.path("sys/firmware/acpi/tables/DMAR").display().to_string();
        assert_eq!(d["units"]["from"], tables.as_str());
        assert_eq!(d["registers"]["from"], f.path("dev/mem").display().to_string().as_str());
        assert!(d["crashkernel"]["from"].as_str().unwrap().contains("proc/iomem"), "{d}");
        assert_eq!(d["crashkernel"]["regions"], v["crashkernel_regions"]);
        assert_eq!(d["ram"]["regions"], v["ram"]);
        for what in ["units", "registers", "crashkernel", "ram"] {
            assert!(err.contains(&format!("default {what}: ")), "{what} not on stderr: {err}");
        }
        // The flagged audit took none.
        assert_eq!(want["defaults"], serde_json::json!({}));
    }
}

#[test]
fn the_crash_region_is_the_kdump_kernels_own_ram_from_proc_iomem() {
    let f = Fake::new("overtable", "vtd-legacy");
    // The kdump kernel's RAM over the root table the crashed kernel left at RTADDR (0x1c43000): its own
    // allocations would overwrite a live table. A range ending inside a page is widened to the page.
    std::fs::write(f.path("proc/iomem"), "00001000-0009fbff : System RAM\n01c00000-01cfffff : System RAM\n").unwrap();
    let (out, v) = f.audit(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v = v.unwrap();
    assert_eq!(v["verdict"], "unsafe");
    assert_eq!(
        v["crashkernel_regions"],
        serde_json::json!([{"start": 0x1000u64, "end": 0xa0000u64}, {"start": 0x1c0_0000u64, "end": 0x1d0_0000u64}])
    );

    // A --crashkernel given is kept; the other defaults are still taken.
    let (out, v) = f.audit(&["--crashkernel", "30000000-3fffffff"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = v.unwrap();
    assert!(v["defaults"].get("crashkernel").is_none(), "{}", v["defaults"]);
    assert!(v["defaults"].get("registers").is_some());
}

fn missing(out: &Output, what: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for w in what {
        assert!(err.contains(w), "want {w:?} in: {err}");
    }
}

#[test]
fn each_default_not_found_is_an_error_naming_it() {
    let f = Fake::new("missing", "vtd-legacy");
    let dump = f.path("proc/vmcore.copy");
    std::fs::copy(f.path("proc/vmcore"), &dump).unwrap();
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_handover"))
            .arg("audit")
            .arg(&dump)
            .arg("--root")
            .arg(&f.root)
            .args(extra)
            .output()
            .unwrap()
    };

    std::fs::remove_file(f.path("proc/iomem")).unwrap();
    missing(&run(&[]), &["default crash region", "proc/iomem"]);
    std::fs::write(f.path("proc/iomem"), "00000000-00000fff : Reserved\n").unwrap();
    missing(&run(&[]), &["no top-level System RAM", "proc/iomem"]);
    std::fs::write(f.path("proc/iomem"), "garbage\n").unwrap();
    missing(&run(&[]), &["default crash region", "line 1"]);
    std::fs::write(f.path("proc/iomem"), IOMEM).unwrap();

    let dmar = f.path("sys/firmware/acpi/tables/DMAR");
    std::fs::write(&dmar, b"DMAR\x05").unwrap();
    missing(&run(&[]), &["tables/DMAR"]);
    std::fs::remove_file(&dmar).unwrap();
    missing(&run(&[]), &["default units", "no DMAR, IVRS or IORT", "sys/firmware/acpi/tables"]);
    missing(&run(&["--iommu", "amdvi"]), &["default units", "no IVRS"]);
    std::fs::copy(fixtures().join("acpi/q35-vtd-dmar.bin"), &dmar).unwrap();

    let devmem = f.path("dev/mem");
    std::fs::OpenOptions::new().write(true).open(&devmem).unwrap().set_len(0x1000).unwrap();
    missing(&run(&[]), &["dev/mem", "VER"]);
    std::fs::remove_file(&devmem).unwrap();
    missing(&run(&[]), &["default registers", "dev/mem"]);

    std::fs::remove_file(f.path("proc/vmcore")).unwrap();
    missing(&run(&[]), &["proc/vmcore", "not a kdump kernel"]);

    // With registers given nothing is taken from the machine: the crash region must be given too.
    let regs = fixtures().join("vtd-legacy/regs.txt");
    missing(&run(&["--regs", regs.to_str().unwrap()]), &["--crashkernel"]);
}

/// An arm64 kdump kernel booted from a device tree has no ACPI tables: the unit is the tree's `arm,smmu-v3`
/// node (its `reg`), and the verdict is the flagged audit's of the same capture.
#[test]
fn on_a_device_tree_machine_the_unit_is_the_smmuv3_node() {
    let root = std::env::temp_dir().join(format!("handover-kdump-defaults-dt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let cap = fixtures().join("smmuv3");
    for d in ["proc/device-tree/smmuv3@9050000", "dev"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let cells = |v: &[u32]| -> Vec<u8> { v.iter().flat_map(|c| c.to_be_bytes()).collect() };
    let dt = root.join("proc/device-tree");
    std::fs::write(dt.join("#address-cells"), cells(&[2])).unwrap();
    std::fs::write(dt.join("#size-cells"), cells(&[2])).unwrap();
    std::fs::write(dt.join("smmuv3@9050000/compatible"), b"arm,smmu-v3\0").unwrap();
    std::fs::write(dt.join("smmuv3@9050000/reg"), cells(&[0, 0x0905_0000, 0, 0x2_0000])).unwrap();
    std::fs::copy(cap.join("memory.elf"), root.join("proc/vmcore")).unwrap();
    // The kdump kernel's own RAM: the README's crash region for this capture.
    std::fs::write(root.join("proc/iomem"), "60000000-6fffffff : System RAM\n").unwrap();
    common::devmem_from_monitor(&cap.join("regs.txt"), &root.join("dev/mem"));
    let out = Command::new(env!("CARGO_BIN_EXE_handover"))
        .arg("audit")
        .arg(root.join("proc/vmcore"))
        .arg("--root")
        .arg(&root)
        .arg("--json")
        .output()
        .unwrap();
    let want = Command::new(env!("CARGO_BIN_EXE_handover"))
        .arg("audit")
        .arg(cap.join("memory.elf"))
        .arg("--regs")
        .arg(cap.join("regs.txt"))
        .args(["--iommu", "smmuv3", "--base", "0x09050000", "--ram", "40000000-bfffffff"])
        .args(["--crashkernel", "256M@0x60000000", "--json"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&root);
    let err = stderr(&out);
    assert_eq!(out.status.code(), want.status.code(), "{err}");
    let (v, w): (Value, Value) =
        (serde_json::from_slice(&out.stdout).unwrap(), serde_json::from_slice(&want.stdout).unwrap());
    assert_eq!(v["verdict"], w["verdict"]);
    assert_eq!(v["verdict"], "safe");
    assert!(v["defaults"]["units"]["from"].as_str().unwrap().contains("smmuv3@9050000"), "{}", v["defaults"]);
    assert!(err.contains("default units: ") && err.contains("arm,smmu-v3"), "{err}");
}
