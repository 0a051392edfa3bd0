//! `inspect` and `audit` without `--base`: the units come from a raw ACPI table (`--acpi`), from the
//! dump's own ACPI tables (RSDP scan), or from a Linux `iommu_regset` snapshot; they must decode exactly
//! as `--base` does. Several units give `{"units": [...]}`; what is missing is named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use iommu_driver::{MemError, MemErrorKind, PhysMem};
use iommu_dump::{write_core, ElfCore};
use serde_json::Value;

fn root(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("handover-acpi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn run(args: &[&str], dump: &Path, regs: &Path) -> (Output, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_handover"))
        .args(args)
        .arg("--json")
        .arg("--dump")
        .arg(dump)
        .arg("--regs")
        .arg(regs)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, v)
}

fn ok(args: &[&str], dump: &Path, regs: &Path) -> Value {
    let (out, v) = run(args, dump, regs);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    v
}

fn fails(args: &[&str], dump: &Path, regs: &Path) -> String {
    let (out, _) = run(args, dump, regs);
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The fixture's dump and monitor registers.
fn fixture(name: &str) -> (PathBuf, PathBuf) {
    (root(&format!("fixtures/{name}/memory.elf")), root(&format!("fixtures/{name}/regs.txt")))
}

#[test]
fn a_raw_table_finds_the_unit_that_base_names() {
    for (name, iommu, base, table) in [
        ("vtd-legacy", "vtd", "0xfed90000", "q35-vtd-dmar.bin"),
        ("vtd-scalable", "vtd", "0xfed90000", "q35-vtd-dmar.bin"),
        ("amdvi", "amdvi", "0xfed80000", "q35-amdvi-ivrs.bin"),
    ] {
        let (dump, regs) = fixture(name);
        let by_base = ok(&["inspect", "--iommu", iommu, "--base", base], &dump, &regs);
        let acpi = root(&format!("fixtures/acpi/{table}"));
        let by_acpi = ok(&["inspect", "--acpi", acpi.to_str().unwrap()], &dump, &regs);
        assert_eq!(by_acpi["iommu"], iommu, "{name}: the kind comes from the table");
        assert_eq!(by_acpi["base"].as_u64(), by_base["base"].as_u64());
        assert_eq!(by_acpi["devices"], by_base["devices"], "{name}");
        assert!(by_acpi["origin"].as_str().unwrap().starts_with(if iommu == "vtd" {
            "DMAR DRHD 0"
        } else {
            "IVRS IVHD"
        }));
    }
}

/// The fixture's pages plus the real RSDP, RSDT and table at the addresses SeaBIOS put them.
struct WithAcpi {
    core: ElfCore,
    pages: BTreeMap<u64, Vec<u8>>,
}

impl PhysMem for WithAcpi {
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let page = pa & !0xfff;
        match self.pages.get(&page) {
            Some(p) if (pa - page) as usize + buf.len() <= 4096 => {
                buf.copy_from_slice(&p[(pa - page) as usize..][..buf.len()]);
                Ok(())
            }
            _ => self.core.read(pa, buf),
        }
    }
    fn write(&mut self, pa: u64, _: &[u8]) -> Result<(), MemError> {
        Err(MemError { addr: pa, kind: MemErrorKind::ReadOnly })
    }
}

fn with_acpi(name: &str, prefix: &str, rsdt: u64, table_at: u64, table: &str) -> PathBuf {
    let core = ElfCore::open(fixture(name).0).unwrap();
    let put = |pages: &mut BTreeMap<u64, Vec<u8>>, addr: u64, file: &str| {
        let bytes = std::fs::read(root(&format!("fixtures/acpi/{file}"))).unwrap();
        let page = pages.entry(addr & !0xfff).or_insert_with(|| vec![0; 4096]);
        page[(addr & 0xfff) as usize..][..bytes.len()].copy_from_slice(&bytes);
    };
    let mut pages = BTreeMap::new();
    put(&mut pages, 0xf5240, &format!("{prefix}-rsdp.bin"));
    put(&mut pages, rsdt, &format!("{prefix}-rsdt.bin"));
    put(&mut pages, table_at, table);
    let mut all: BTreeSet<u64> = pages.keys().copied().collect();
    for s in core.segments() {
        all.extend((s.paddr..s.range().end).step_by(4096));
    }
    let path = tmp(&format!("{name}-acpi.elf"));
    let mut f = std::fs::File::create(&path).unwrap();
    write_core(&WithAcpi { core, pages }, &all, None, &mut f).unwrap();
    path
}

#[test]
fn the_dumps_own_acpi_tables_find_the_unit() {
    for (name, iommu, base, prefix, rsdt, at, table) in [
        ("vtd-legacy", "vtd", "0xfed90000", "q35-vtd", 0x7ffe23d5, 0x7ffe2335, "q35-vtd-dmar.bin"),
        ("amdvi", "amdvi", "0xfed80000", "q35-amdvi", 0x7ffe2416, 0x7ffe2346, "q35-amdvi-ivrs.bin"),
    ] {
        let (dump, regs) = fixture(name);
        let by_base = ok(&["inspect", "--iommu", iommu, "--base", base], &dump, &regs);
        let full = with_acpi(name, prefix, rsdt, at, table);
        let found = ok(&["inspect"], &full, &regs);
        assert_eq!((found["iommu"].as_str(), found["base"].as_u64()), (Some(iommu), by_base["base"].as_u64()));
        assert_eq!(found["devices"], by_base["devices"], "{name}");
        let audit = ok(&["audit", "--crashkernel", "0x30000000-0x30100000", "--ram", "0-0x80000000"], &full, &regs);
        assert_eq!(audit["verdict"], "safe");
        assert_eq!(audit["units"][0]["iommu"], iommu);
        // The trimmed fixture itself holds no ACPI tables: the error says so and what to do.
        let e = fails(&["inspect"], &dump, &regs);
        assert!(e.contains("no RSDP found") && e.contains("--acpi"), "{e}");
    }
}

#[test]
fn a_regset_names_its_units() {
    let (dump, regs) = fixture("vtd-legacy");
    let regset = root("fixtures/vtd-legacy/iommu_regset.txt");
    let by_base = ok(&["inspect", "--iommu", "vtd", "--base", "0xfed90000"], &dump, &regs);
    let found = ok(&["inspect"], &dump, &regset);
    assert_eq!(found["origin"], "iommu_regset dmar0");
    assert_eq!(found["devices"], by_base["devices"]);
    // --base alone is enough when the regset names that base.
    assert_eq!(ok(&["inspect", "--base", "0xfed90000"], &dump, &regset)["devices"], by_base["devices"]);

    // Two units (the second a copy at another base): a list of units, each in the one-unit shape.
    let text = std::fs::read_to_string(&regset).unwrap();
    let two = tmp("two-units.txt");
    std::fs::write(&two, format!("{text}{}", text.replace("dmar0", "dmar1").replace("fed90000", "fed91000"))).unwrap();
    let v = ok(&["inspect"], &dump, &two);
    let units = v["units"].as_array().unwrap();
    assert_eq!(units.iter().map(|u| u["base"].as_u64().unwrap()).collect::<Vec<_>>(), [0xfed90000, 0xfed91000]);
    for u in units {
        assert_eq!(u["devices"], by_base["devices"]);
    }
    let v = ok(&["audit", "--crashkernel", "0x30000000-0x30100000", "--ram", "0-0x80000000"], &dump, &two);
    assert_eq!((v["verdict"].as_str(), v["units"].as_array().map(Vec::len)), (Some("safe"), Some(2)));
    // A crash region over the first page a device reaches: unsafe overall, exit 1.
    let phys = v["units"][0]["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|d| d["reach"].as_array().unwrap().first().map(|r| r["phys"].as_u64().unwrap()))
        .unwrap();
    let crash = format!("{phys:#x}-{:#x}", phys + 0x1000);
    let (out, v) = run(&["audit", "--crashkernel", &crash, "--ram", "0-0x80000000"], &dump, &two);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(v["verdict"], "unsafe");
}

#[test]
fn what_is_missing_is_named() {
    let (dump, regs) = fixture("vtd-legacy");
    let ivrs = root("fixtures/acpi/q35-amdvi-ivrs.bin");
    let e = fails(&["inspect", "--acpi", ivrs.to_str().unwrap(), "--iommu", "vtd"], &dump, &regs);
    assert!(e.contains("IVRS") && e.contains("not vtd"), "{e}");
    let e = fails(&["inspect", "--acpi", ivrs.to_str().unwrap()], &dump, &regs);
    assert!(e.contains("0xfed80000") && e.contains("not in the register snapshot"), "{e}");
    let e = fails(&["audit", "--crashkernel", "0-0x1000", "--base", "0xfed90000"], &dump, &regs);
    assert!(e.contains("Give --iommu"), "{e}");
    let bad = tmp("bad-dmar.bin");
    let mut bytes = std::fs::read(root("fixtures/acpi/q35-vtd-dmar.bin")).unwrap();
    bytes[0x40] ^= 0x80;
    std::fs::write(&bad, &bytes).unwrap();
    let e = fails(&["inspect", "--acpi", bad.to_str().unwrap()], &dump, &regs);
    assert!(e.contains("bad checksum"), "{e}");
}

/// An IORT for QEMU virt's SMMUv3 (0x09050000), laid out by hand from DEN0049: an ITS group, the SMMUv3
/// (its mapping to the ITS), and the PCI root complex mapping every RID to the same StreamID.
fn virt_iort() -> Vec<u8> {
    let le32 = |v: u32| v.to_le_bytes().to_vec();
    let node = |kind: u8, body: Vec<u8>, map: Option<[u32; 5]>| {
        let len = 16 + body.len() + if map.is_some() { 20 } else { 0 };
        let mut n = vec![kind];
        n.extend((len as u16).to_le_bytes());
        n.push(0);
        n.extend(le32(0));
        n.extend(le32(map.is_some() as u32));
        n.extend(le32(if map.is_some() { 16 + body.len() as u32 } else { 0 }));
        n.extend(body);
        n.extend(map.iter().flat_map(|m| m.iter().flat_map(|v| v.to_le_bytes())));
        n
    };
    let its = node(0, [le32(1), le32(0)].concat(), None);
    let smmu_body = [0x0905_0000u64.to_le_bytes().to_vec(), vec![0; 44]].concat();
    let smmu = node(4, smmu_body, Some([0, 0xffff, 0, 48, 0]));
    let rc = node(2, [vec![0; 8], le32(0), le32(0), vec![48, 0, 0, 0]].concat(), Some([0, 0xffff, 0, 72, 0]));
    let body = [le32(3), le32(48), le32(0), its, smmu, rc].concat();
    let mut t = [b"IORT".to_vec(), le32(36 + body.len() as u32), vec![0, 0], vec![0; 26], body].concat();
    t[9] = 0u8.wrapping_sub(t.iter().fold(0u8, |s, b| s.wrapping_add(*b)));
    t
}

#[test]
fn an_iort_finds_the_smmuv3() {
    // The arm64 capture booted from a device tree (no firmware, no ACPI): the IORT is hand-made.
    let (dump, regs) = fixture("smmuv3");
    let iort = tmp("virt-iort.bin");
    std::fs::write(&iort, virt_iort()).unwrap();
    let by_base = ok(&["inspect", "--iommu", "smmuv3", "--base", "0x09050000"], &dump, &regs);
    let found = ok(&["inspect", "--acpi", iort.to_str().unwrap()], &dump, &regs);
    assert_eq!((found["iommu"].as_str(), found["base"].as_u64()), (Some("smmuv3"), Some(0x0905_0000)));
    assert_eq!(found["devices"], by_base["devices"]);
    // The audit names each stream by the requester the IORT maps to it.
    let out = Command::new(env!("CARGO_BIN_EXE_handover"))
        .arg("audit")
        .arg(&dump)
        .args(["--ram", "40000000-bfffffff", "--crashkernel", "256M@0x60000000", "--acpi"])
        .arg(&iort)
        .arg("--regs")
        .arg(&regs)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("00:02.0 (sid 0x0010)") && text.contains("00:03.0 (sid 0x0018)"), "{text}");
}
