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

/// The records of the real-vmcore and QEMU-format checks (`fixtures/vmcore/*/makedumpfile.txt`,
/// `fixtures/*/dumpfmt.txt`, written by `scripts/kdump/makedumpfile_check.sh` and
/// `scripts/capture/dumpfmt_check.sh` on real runs): every format they tried decoded to the ELF core's JSON.
#[test]
fn the_committed_real_dump_format_checks_found_every_format_identical() {
    let mut checked = 0;
    let mut files =
        vec![fixture("vtd-legacy/dumpfmt.txt"), fixture("amdvi/dumpfmt.txt"), fixture("smmuv3/dumpfmt.txt")];
    // (An arm64 directory records why makedumpfile refused its vmcore instead: `makedumpfile-refused.txt`.)
    for e in std::fs::read_dir(fixture("vmcore")).unwrap() {
        let f = e.unwrap().path().join("makedumpfile.txt");
        if f.exists() {
            files.push(f);
        }
    }
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("inspect --json")).collect();
        assert!(lines.iter().any(|l| l.contains("identical")), "{}: {text}", f.display());
        assert!(!text.contains("DIFFERS") && !text.contains("failed"), "{}: {text}", f.display());
        checked += lines.iter().filter(|l| l.contains("identical")).count();
    }
    assert!(checked >= 8, "{checked} formats checked");
}
