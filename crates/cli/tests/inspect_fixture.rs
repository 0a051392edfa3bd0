//! Real Linux as the referee: tables Linux 6.12 built under QEMU's intel-iommu (legacy and scalable mode),
//! decoded by `handover inspect`, must give every translation QEMU itself made (its trace events, filtered
//! to those still valid when the VM was paused: `scripts/capture/`).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(name)
}

struct OracleEntry {
    sid: u64,
    iova: u64,
    phys: u64,
    size: u64,
    perm: String,
    domain: u64,
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
}

fn oracle(name: &str) -> Vec<OracleEntry> {
    let text = std::fs::read_to_string(fixture(name).join("oracle.tsv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            OracleEntry {
                sid: hex(f[0]),
                iova: hex(f[1]),
                phys: hex(f[2]),
                size: hex(f[3]),
                perm: f[4].to_string(),
                domain: hex(f[5]),
            }
        })
        .collect()
}

fn inspect(name: &str, iommu: &str, base: &str) -> Value {
    let dir = fixture(name);
    let out = Command::new(env!("CARGO_BIN_EXE_handover"))
        .args(["inspect", "--iommu", iommu, "--base", base, "--json", "--dump"])
        .arg(dir.join("memory.elf"))
        .arg("--regs")
        .arg(dir.join("regs.txt"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn check(name: &str, iommu: &str, base: &str, mode: &str, min_oracle: usize) {
    check_format(name, iommu, base, mode, min_oracle, None)
}

/// `check`, and every oracle device's tables are of `format` when given.
fn check_format(name: &str, iommu: &str, base: &str, mode: &str, min_oracle: usize, format: Option<&str>) {
    let v = inspect(name, iommu, base);
    assert_eq!(v["iommu"], iommu);
    assert_eq!(v["mode"], mode);
    assert_eq!(v["translation_enabled"], true);
    let devices = v["devices"].as_array().unwrap();
    let oracle = oracle(name);
    assert!(oracle.len() >= min_oracle, "the oracle has substance");
    for o in &oracle {
        let dev =
            devices.iter().find(|d| d["sid"].as_u64() == Some(o.sid)).unwrap_or_else(|| panic!("sid {:#x}", o.sid));
        assert_eq!(dev["kind"], "translated");
        if let Some(f) = format {
            assert_eq!(dev["format"], f, "sid {:#x}", o.sid);
        }
        assert_eq!(dev["domain"].as_u64(), Some(o.domain), "sid {:#x}: DID", o.sid);
        assert!(!dev["id"].as_str().unwrap().is_empty());
        // The run holding the IOVA maps it to the oracle's physical page with the oracle's permission.
        let run = dev["mappings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| {
                let (iova, size) = (m["iova"].as_u64().unwrap(), m["size"].as_u64().unwrap());
                iova <= o.iova && o.iova + o.size <= iova + size
            })
            .unwrap_or_else(|| panic!("{name}: sid {:#x} iova {:#x} not mapped", o.sid, o.iova));
        let phys = run["phys"].as_u64().unwrap() + (o.iova - run["iova"].as_u64().unwrap());
        assert_eq!(phys, o.phys, "{name}: sid {:#x} iova {:#x}", o.sid, o.iova);
        assert_eq!(run["perm"], o.perm.as_str());
    }
    // Runs are merged: no two adjacent runs of a device continue each other.
    for d in devices {
        let runs = d["mappings"].as_array().unwrap();
        for w in runs.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            let a_end = a["iova"].as_u64().unwrap() + a["size"].as_u64().unwrap();
            let contiguous = a_end == b["iova"].as_u64().unwrap()
                && a["phys"].as_u64().unwrap() + a["size"].as_u64().unwrap() == b["phys"].as_u64().unwrap()
                && a["perm"] == b["perm"];
            assert!(!contiguous, "unmerged runs {a} {b}");
        }
    }
}

#[test]
fn vtd_legacy_mode_tables_match_qemus_translations() {
    check("vtd-legacy", "vtd", "0xfed90000", "legacy", 20);
}

#[test]
fn vtd_scalable_mode_tables_match_qemus_translations() {
    check_format("vtd-scalable", "vtd", "0xfed90000", "scalable", 20, Some("vtd-second-level"));
}

/// QEMU's `x-flts=on` unit (first-level translation only): Linux gives its DMA domains first-level
/// (x86-64-format) tables, PASID entries with PGTT = 001.
#[test]
fn vtd_first_level_tables_match_qemus_translations() {
    check_format("vtd-scalable-fl", "vtd", "0xfed90000", "scalable", 20, Some("vtd-first-level"));
}

#[test]
fn smmuv3_tables_match_qemus_translations() {
    check("smmuv3", "smmuv3", "0x09050000", "2-level", 20);
}

#[test]
fn amdvi_tables_match_qemus_translations() {
    check("amdvi", "amdvi", "0xfed80000", "v1", 10);
}

#[test]
fn a_missing_register_is_named() {
    let dir = fixture("vtd-legacy");
    let regs = std::env::temp_dir().join(format!("handover-regs-{}.txt", std::process::id()));
    let text = std::fs::read_to_string(dir.join("regs.txt")).unwrap();
    std::fs::write(&regs, text.lines().filter(|l| !l.starts_with("00000000fed90020")).collect::<Vec<_>>().join("\n"))
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_handover"))
        .args(["inspect", "--iommu", "vtd", "--base", "0xfed90000", "--dump"])
        .arg(dir.join("memory.elf"))
        .arg("--regs")
        .arg(&regs)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&regs);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RTADDR"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn save_fixture_never_overwrites_an_input_nor_an_existing_file_without_force() {
    let dir = fixture("vtd-legacy");
    let tmp = std::env::temp_dir().join(format!("handover-save-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    // The inputs are copied, so a failure of the rule could not damage the committed fixture.
    let (dump, regs) = (tmp.join("memory.elf"), tmp.join("regs.txt"));
    std::fs::copy(dir.join("memory.elf"), &dump).unwrap();
    std::fs::copy(dir.join("regs.txt"), &regs).unwrap();
    let before = std::fs::read(&dump).unwrap();
    let save = |to: &std::path::Path, force: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_handover"));
        c.args(["inspect", "--iommu", "vtd", "--base", "0xfed90000"]).arg(&dump).arg("--regs").arg(&regs);
        c.arg("--save-fixture").arg(to);
        if force {
            c.arg("--force");
        }
        c.output().unwrap()
    };
    for force in [false, true] {
        let out = save(&dump, force);
        assert_eq!(out.status.code(), Some(2), "force {force}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("is an input"));
        assert_eq!(std::fs::read(&dump).unwrap(), before, "the dump is untouched");
    }
    let other = tmp.join("other.elf");
    std::fs::write(&other, b"keep me").unwrap();
    let out = save(&other, false);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(std::fs::read(&other).unwrap(), b"keep me");
    assert!(save(&other, true).status.success());
    assert_ne!(std::fs::read(&other).unwrap(), b"keep me");
    let fresh = tmp.join("fresh.elf");
    assert!(save(&fresh, false).status.success());
    assert!(std::fs::metadata(&fresh).unwrap().len() > 0);
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Overwrite the 8 bytes at physical `pa` in an ELF core's PT_LOAD data (ELF64 little-endian).
fn patch_core(core: &mut [u8], pa: u64, value: u64) {
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap()) as usize;
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (u64_at(core, 0x20) as usize, u16_at(core, 0x36), u16_at(core, 0x38));
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let (off, paddr, filesz) = (u64_at(core, ph + 8), u64_at(core, ph + 24), u64_at(core, ph + 32));
        if u32::from_le_bytes(core[ph..ph + 4].try_into().unwrap()) == 1 && paddr <= pa && pa + 8 <= paddr + filesz {
            let at = (off + pa - paddr) as usize;
            core[at..at + 8].copy_from_slice(&value.to_le_bytes());
            return;
        }
    }
    panic!("{pa:#x} is not in the core");
}

#[test]
fn a_nested_pasid_entry_is_shown_as_nested_not_as_a_device_without_mappings() {
    // The nvme's RID_PASID entry of the first-level capture (qw0 0x49 at 0x7cb4e000) made nested (PGTT 011).
    let d = fixture("vtd-scalable-fl");
    let mut core = std::fs::read(d.join("memory.elf")).unwrap();
    patch_core(&mut core, 0x7cb4_e000, 0xc9);
    let tmp = std::env::temp_dir().join(format!("handover-inspect-nested-{}.elf", std::process::id()));
    std::fs::write(&tmp, &core).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_handover"))
        .args(["inspect", "--iommu", "vtd", "--base", "0xfed90000", "--json", "--dump"])
        .arg(&tmp)
        .arg("--regs")
        .arg(d.join("regs.txt"))
        .output()
        .unwrap();
    std::fs::remove_file(&tmp).ok();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let devices = v["devices"].as_array().unwrap();
    let nvme = devices.iter().find(|x| x["sid"] == 0x18).unwrap();
    assert_eq!(nvme["kind"], "nested", "{nvme}");
    assert!(nvme["mappings"].as_array().unwrap().is_empty());
    assert!(nvme["problems"][0].as_str().unwrap().contains("reach unknown"), "{nvme}");
    let nic = devices.iter().find(|x| x["sid"] == 0x10).unwrap();
    assert_eq!((&nic["kind"], &nic["format"]), (&Value::from("translated"), &Value::from("vtd-first-level")));
}

#[test]
fn the_interrupt_table_linux_programmed_is_found_and_its_missing_pages_are_named() {
    // Linux programmed IRTA = 0x130000f (IRES on, 65536 entries); the trimmed fixture holds none of its pages,
    // so the decode names all 256 as not in the dump instead of showing an empty table.
    let v = inspect("vtd-legacy", "vtd", "0xfed90000");
    let irq = &v["interrupts"];
    assert_eq!(irq["remapping"], true, "{irq}");
    assert_eq!(irq["tables"][0]["address"], 0x130_0000u64);
    assert_eq!(irq["tables"][0]["entries"], 65536);
    assert_eq!(irq["unread_pages"].as_array().map(Vec::len), Some(256));
    assert_eq!(irq["entries"].as_array().map(Vec::len), Some(0));
    let smmu = inspect("smmuv3", "smmuv3", "0x09050000");
    assert!(smmu["interrupts"].is_null(), "SMMUv3 has no remapping table");
}
