//! `handover inspect` reads the dumps makedumpfile writes: the kdump-compressed (zlib, lzo) and flattened
//! files made from the ELF fixtures (`crates/dump/tests/fixtures/make-kdump.sh`) give exactly the JSON
//! the ELF core gives.

use std::path::PathBuf;
use std::process::Command;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(rel)
}

fn inspect_json(dir: &str, dump: &str, kind: &str, base: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_handover"))
        .args(["inspect", "--json", "--iommu", kind, "--base", base, "--dump"])
        .arg(fixture(&format!("{dir}/{dump}")))
        .arg("--regs")
        .arg(fixture(&format!("{dir}/regs.txt")))
        .output()
        .unwrap();
    assert!(out.status.success(), "{dump}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn amdvi_kdump_files_inspect_like_the_elf_core() {
    let elf = inspect_json("amdvi", "memory.elf", "amdvi", "0xfed80000");
    assert!(elf.contains("\"mappings\""), "the decode found devices: {elf}");
    for dump in ["memory.kdump-zlib", "memory.kdump-lzo", "memory.kdump-flat"] {
        assert_eq!(inspect_json("amdvi", dump, "amdvi", "0xfed80000"), elf, "{dump}");
    }
}

#[test]
fn arm64_smmuv3_kdump_file_inspects_like_the_elf_core() {
    let elf = inspect_json("smmuv3", "memory.elf", "smmuv3", "0x09050000");
    assert_eq!(inspect_json("smmuv3", "memory.kdump-zlib", "smmuv3", "0x09050000"), elf);
}
