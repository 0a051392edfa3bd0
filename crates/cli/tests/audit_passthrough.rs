//! `handover audit` on the VT-d pass-through capture (fixtures/vtd-passthrough: Linux booted with
//! `iommu.passthrough=1`, so e1000e and nvme have legacy context entries with TT=2): those devices reach all
//! of memory, the crash kernel's region included, and the verdict is unsafe (exit 1).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

#[test]
fn passthrough_devices_are_flagged_and_the_verdict_is_unsafe() {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/vtd-passthrough");
    let out = Command::new(env!("CARGO_BIN_EXE_handover"))
        .args(["audit", "--json", "--iommu", "vtd", "--base", "0xfed90000", "--ram", "0-0x80000000"])
        .args(["--crashkernel", "0x30000000-0x30100000", "--dump"])
        .arg(d.join("memory.elf"))
        .arg("--regs")
        .arg(d.join("regs.txt"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "unsafe");
    let devices = v["units"][0]["devices"].as_array().unwrap();
    for sid in [0x10, 0x18] {
        let dev = devices.iter().find(|d| d["sid"] == sid).unwrap_or_else(|| panic!("sid {sid:#x} not audited"));
        let flags: Vec<&str> = dev["flags"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
        assert!(flags.contains(&"passthrough"), "sid {sid:#x}: {flags:?}");
        assert!(flags.contains(&"crashkernel"), "sid {sid:#x}: {flags:?}");
        let reach = dev["reach"].as_array().unwrap();
        assert!(reach.iter().any(|r| r["phys"] == 0 && r["size"] == 0x8000_0000u64 && r["perm"] == "rw"), "{reach:?}");
    }
}
