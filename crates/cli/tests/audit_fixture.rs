//! `handover audit` on the real-Linux fixtures and on edited copies of them: `safe` as captured; with a
//! page-table page missing, a cycle, or another IOMMU kind's registers, `incomplete` (exit 2); with the
//! crash region over a live table or over a device's mapping, `unsafe` (exit 1); never a panic or a hang.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use iommu_driver::survey::{self, Work};
use iommu_driver::BootEnv;
use iommu_dump::{write_core_for, Arch, ElfCore, InspectInput};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{FileFailurePersistence, RngAlgorithm};
use serde_json::Value;

/// (fixture, kind, base, RAM, a crash region inside RAM that no device reaches).
const FIXTURES: [(&str, &str, &str, &str, &str); 5] = [
    ("vtd-legacy", "vtd", "0xfed90000", "0-0x80000000", "0x30000000-0x30100000"),
    ("vtd-scalable", "vtd", "0xfed90000", "0-0x80000000", "0x30000000-0x30100000"),
    ("amdvi", "amdvi", "0xfed80000", "0-0x80000000", "0x30000000-0x30100000"),
    ("smmuv3", "smmuv3", "0x09050000", "0x40000000-0xc0000000", "0x60000000-0x60100000"),
    // Linux's first-level tables (QEMU x-flts=on).
    ("vtd-scalable-fl", "vtd", "0xfed90000", "0-0x80000000", "0x30000000-0x30100000"),
];

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(name)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("handover-audit-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn audit(dump: &Path, regs: &Path, iommu: &str, base: &str, ram: &str, crash: &str) -> (Output, Value) {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_handover"))
        .arg("audit")
        .arg(dump)
        .args(["--json", "--iommu", iommu, "--base", base, "--ram", ram, "--crashkernel", crash, "--regs"])
        .arg(regs)
        .output()
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(20), "bounded work");
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, v)
}

fn devices(v: &Value) -> &Vec<Value> {
    v["units"][0]["devices"].as_array().unwrap()
}

fn flags(d: &Value) -> Vec<String> {
    d["flags"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Each translated device's page-table pages, from the library's own scan of the fixture.
fn table_pages(name: &str, iommu: &str, base: u64) -> Vec<(u32, Vec<u64>)> {
    let d = dir(name);
    let mut hw = InspectInput::load(&d.join("memory.elf"), &d.join("regs.txt")).unwrap().hw();
    hw.select(base);
    let env =
        BootEnv { crash_kernel: true, ram: hw.ram_ranges().unwrap(), crash_region: None, mem_encrypt: false, c_bit: 0 };
    let mut work = Work::default();
    let scan = match iommu {
        "vtd" => survey::scan_vtd(&mut hw, &env, &mut work),
        "amdvi" => survey::scan_amdvi(&mut hw, &env, &mut work),
        _ => survey::scan_smmuv3(&mut hw, &env, &mut work),
    };
    scan.devices.into_iter().filter(|d| !d.runs.is_empty()).map(|d| (d.id, d.table_pages)).collect()
}

/// A copy of the fixture's core without the page at `drop`.
fn without_page(name: &str, drop: u64) -> PathBuf {
    let core = ElfCore::open(dir(name).join("memory.elf")).unwrap();
    let mut pages = BTreeSet::new();
    for s in core.segments() {
        pages.extend((s.paddr..s.paddr + s.filesz).step_by(4096));
    }
    assert!(pages.remove(&drop), "{drop:#x} is in the fixture");
    let path = tmp(&format!("{name}-without-{drop:x}.elf"));
    let mut f = std::fs::File::create(&path).unwrap();
    write_core_for(Arch::from_machine(core.machine()), &core, &pages, None, &mut f).unwrap();
    path
}

/// A copy of the fixture's core with the 8 bytes at physical `pa` replaced by `value`.
fn with_u64(name: &str, pa: u64, value: u64) -> PathBuf {
    let core = ElfCore::open(dir(name).join("memory.elf")).unwrap();
    let s = core.segments().iter().find(|s| s.paddr <= pa && pa + 8 <= s.paddr + s.filesz).unwrap();
    let at = (s.offset + pa - s.paddr) as usize;
    let mut bytes = std::fs::read(dir(name).join("memory.elf")).unwrap();
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
    let path = tmp(&format!("{name}-{pa:x}-{value:x}.elf"));
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn linux_tables_as_captured_are_safe_and_unsafe_under_a_mapping() {
    for (name, iommu, base, ram, crash) in FIXTURES {
        let d = dir(name);
        let (out, v) = audit(&d.join("memory.elf"), &d.join("regs.txt"), iommu, base, ram, crash);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        assert_eq!(v["verdict"], "safe");
        assert_eq!(v["schema_version"], 2);
        assert!(v["reasons"].as_array().unwrap().is_empty() && v["incomplete"].as_array().unwrap().is_empty());
        let devs = devices(&v);
        assert!(devs.iter().any(|d| !d["reach"].as_array().unwrap().is_empty()), "{name}");
        for dev in devs {
            assert!(!flags(dev).contains(&"passthrough".to_string()), "no pass-through device in these captures");
            assert_eq!(dev["verdict"], "safe");
        }
        // Put the crash kernel over the first page a device can reach: now that device threatens it, and
        // the threat printed is that page, not the device's whole range.
        let ram_start = u64::from_str_radix(ram.split('-').next().unwrap().trim_start_matches("0x"), 16).unwrap();
        let (sid, phys) = devs
            .iter()
            .find_map(|d| {
                let r = d["reach"].as_array().unwrap().iter().find(|r| r["phys"].as_u64().unwrap() >= ram_start);
                r.map(|r| (d["sid"].clone(), r["phys"].as_u64().unwrap()))
            })
            .unwrap();
        let crash = format!("{phys:#x}-{:#x}", phys + 0xfff);
        let (out, v) = audit(&d.join("memory.elf"), &d.join("regs.txt"), iommu, base, ram, &crash);
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert_eq!(v["verdict"], "unsafe");
        let dev = devices(&v).iter().find(|d| d["sid"] == sid).unwrap();
        assert!(flags(dev).contains(&"crashkernel".to_string()), "{name}: {dev}");
        assert_eq!(dev["threats"][0]["phys"].as_u64(), Some(phys));
        assert_eq!(dev["threats"][0]["size"].as_u64(), Some(0x1000));
        assert!(!v["reasons"].as_array().unwrap().is_empty());
    }
}

#[test]
fn a_page_table_page_missing_from_the_dump_is_incomplete() {
    for (name, iommu, base, ram, crash) in FIXTURES {
        let (sid, pages) = table_pages(name, iommu, u64::from_str_radix(&base[2..], 16).unwrap()).remove(0);
        let dump = without_page(name, *pages.last().unwrap());
        let (out, v) = audit(&dump, &dir(name).join("regs.txt"), iommu, base, ram, crash);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
        assert_eq!(v["verdict"], "incomplete", "{name}");
        let dev = devices(&v).iter().find(|d| d["sid"] == sid).unwrap();
        assert_eq!(dev["verdict"], "incomplete");
        assert!(flags(dev).contains(&"truncated".to_string()), "{name}: {dev}");
        assert!(v["incomplete"].as_array().unwrap().iter().any(|l| l.as_str().unwrap().contains("not readable")));
    }
}

#[test]
fn a_page_table_cycle_is_incomplete() {
    // vtd-legacy: a free slot of a device's top table made to point back at that table. The walker would
    // read it again as a level-3 table: a cycle, whose reach is not followed.
    let (name, iommu, base, ram, crash) = FIXTURES[0];
    let (sid, pages) = table_pages(name, iommu, 0xfed90000).remove(0);
    let top = pages[0];
    let core = ElfCore::open(dir(name).join("memory.elf")).unwrap();
    let mut page = [0u8; 4096];
    iommu_driver::PhysMem::read(&core, top, &mut page).unwrap();
    let free = (0..512).rev().find(|i| page[i * 8..i * 8 + 8] == [0; 8]).unwrap() as u64;
    let dump = with_u64(name, top + 8 * free, top | 3);
    let (out, v) = audit(&dump, &dir(name).join("regs.txt"), iommu, base, ram, crash);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(v["verdict"], "incomplete");
    let dev = devices(&v).iter().find(|d| d["sid"] == sid).unwrap();
    assert!(flags(dev).contains(&"loop".to_string()), "{dev}");
}

#[test]
fn a_crash_region_over_a_live_table_is_unsafe() {
    for (name, iommu, base, ram, _) in FIXTURES {
        let (sid, pages) = table_pages(name, iommu, u64::from_str_radix(&base[2..], 16).unwrap()).remove(0);
        let table = *pages.last().unwrap();
        let crash = format!("{table:x}-{:x}", table + 0xfff);
        let d = dir(name);
        let (out, v) = audit(&d.join("memory.elf"), &d.join("regs.txt"), iommu, base, ram, &crash);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        assert_eq!(v["verdict"], "unsafe");
        let dev = devices(&v).iter().find(|d| d["sid"] == sid).unwrap();
        assert!(flags(dev).contains(&"table-in-crashkernel".to_string()), "{name}: {dev}");
        let table_hex = format!("{table:#x}");
        assert!(v["reasons"].as_array().unwrap().iter().any(|r| r.as_str().unwrap().contains(&table_hex)), "{v}");
    }
}

#[test]
fn registers_of_another_iommu_kind_are_incomplete() {
    let (_, _, _, ram, crash) = FIXTURES[0];
    // The AMD-Vi capture read as VT-d (its device table base where VER would be), the VT-d capture read as
    // AMD-Vi (no 64-bit word at offset 0), the SMMUv3 capture read as VT-d (IDR0 where VER would be).
    for (name, as_kind, base, ram) in [
        ("amdvi", "vtd", "0xfed80000", ram),
        ("vtd-legacy", "amdvi", "0xfed90000", ram),
        ("smmuv3", "vtd", "0x09050000", "0x40000000-0xc0000000"),
    ] {
        let crash = if name == "smmuv3" { "0x60000000-0x60100000" } else { crash };
        let d = dir(name);
        let (out, v) = audit(&d.join("memory.elf"), &d.join("regs.txt"), as_kind, base, ram, crash);
        assert_eq!(out.status.code(), Some(2), "{name} as {as_kind}: {}", stderr(&out));
        assert_eq!(v["verdict"], "incomplete", "{name} as {as_kind}");
        assert!(!v["incomplete"].as_array().unwrap().is_empty());
    }
}

#[test]
fn the_smmuv3_capture_maps_the_msi_doorbell_outside_ram() {
    let (name, iommu, base, ram, crash) = FIXTURES[3];
    let d = dir(name);
    let (_, v) = audit(&d.join("memory.elf"), &d.join("regs.txt"), iommu, base, ram, crash);
    let nic = devices(&v).iter().find(|d| d["sid"] == 0x10).unwrap();
    assert!(flags(nic).contains(&"outside-ram".to_string()), "GICv2m doorbell at 0x08020000: {nic}");
}

#[test]
fn a_crash_region_outside_ram_is_an_error() {
    let (name, iommu, base, _, _) = FIXTURES[3];
    let d = dir(name);
    let (out, _) =
        audit(&d.join("memory.elf"), &d.join("regs.txt"), iommu, base, "0x40000000-0xc0000000", "256M@0x10000000");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not inside RAM"), "{}", stderr(&out));
}

#[test]
fn the_dump_may_be_given_with_dump_and_the_crash_region_repeated() {
    let (name, iommu, base, ram, crash) = FIXTURES[0];
    let d = dir(name);
    let out = Command::new(env!("CARGO_BIN_EXE_handover"))
        .args(["audit", "--json", "--iommu", iommu, "--base", base, "--ram", ram, "--crashkernel", crash])
        .args(["--crashkernel", "16M@0x38000000", "--regs"])
        .arg(d.join("regs.txt"))
        .arg("--dump")
        .arg(d.join("memory.elf"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["crashkernel_regions"].as_array().unwrap().len(), 2);
    assert_eq!(v["crashkernel_regions"][1]["start"], 0x3800_0000u64);
    assert_eq!(v["crashkernel_regions"][1]["end"], 0x3900_0000u64);
}

/// A fixture's core with bits flipped after its headers (so it stays an ELF core): `flips` are (an index
/// into the data, the bit).
#[derive(Clone, Debug)]
struct Flipped {
    fixture: usize,
    flips: Vec<(Index, u8)>,
}

fn flipped() -> impl Strategy<Value = Flipped> {
    (0..FIXTURES.len(), prop::collection::vec((any::<Index>(), 0..8u8), 1..90))
        .prop_map(|(fixture, flips)| Flipped { fixture, flips })
}

#[test]
fn corrupted_fixtures_give_verdicts_or_clear_errors() {
    let pristine: Vec<Vec<u8>> =
        FIXTURES.iter().map(|(name, ..)| std::fs::read(dir(name).join("memory.elf")).unwrap()).collect();
    let config = ProptestConfig {
        cases: 60,
        // A failing case's seed is saved in `audit_fixture.proptest-regressions` next to this file and
        // replayed first on the next run.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        // A third less generation time than the default ChaCha; the inputs need no cryptographic quality.
        rng_algorithm: RngAlgorithm::XorShift,
        // Each case runs the binary: shrink for at most a few hundred runs.
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    };
    proptest!(config, |(c in flipped())| {
        let (name, iommu, base, ram, crash) = FIXTURES[c.fixture];
        let mut bytes = pristine[c.fixture].clone();
        // The data starts after the headers.
        let data_start = 4096.min(bytes.len() / 2);
        let data_len = bytes.len() - data_start;
        for (at, bit) in &c.flips {
            bytes[data_start + at.index(data_len)] ^= 1 << bit;
        }
        let path = tmp(&format!("{name}-flipped.elf"));
        std::fs::write(&path, &bytes).unwrap();
        let (out, v) = audit(&path, &dir(name).join("regs.txt"), iommu, base, ram, crash);
        let code = out.status.code();
        prop_assert!(matches!(code, Some(0..=2)), "{name}: {code:?} {}", stderr(&out));
        match v["verdict"].as_str() {
            Some(verdict) => {
                let want = match verdict {
                    "safe" => 0,
                    "unsafe" => 1,
                    _ => 2,
                };
                prop_assert_eq!(code, Some(want), "{}: the exit code is the verdict's", name);
            }
            None => prop_assert!(code == Some(2) && !out.stderr.is_empty(), "an error says why"),
        }
    });
}

#[test]
fn truncated_fixtures_are_refused_with_a_clear_error() {
    for (name, iommu, base, ram, crash) in FIXTURES {
        let d = dir(name);
        let pristine = std::fs::read(d.join("memory.elf")).unwrap();
        let path = tmp(&format!("{name}-truncated.elf"));
        std::fs::write(&path, &pristine[..pristine.len() / 3]).unwrap();
        let (out, _) = audit(&path, &d.join("regs.txt"), iommu, base, ram, crash);
        assert_eq!(out.status.code(), Some(2), "{name}");
        assert!(stderr(&out).contains("segment"), "{}", stderr(&out));
    }
}

#[test]
fn a_unit_with_translation_off_is_unsafe_whatever_its_tables_say() {
    // The vtd-legacy capture with GSTS read as the unit reports it with TE cleared (0x47000000: QIES, IRES,
    // IRTPS still set): every device's DMA bypasses translation.
    let d = dir("vtd-legacy");
    let regs_path = tmp("te-off.txt");
    let regs = std::fs::read_to_string(d.join("regs.txt")).unwrap();
    let regs: String = regs
        .lines()
        .map(|l| if l.starts_with("00000000fed9001c") { "00000000fed9001c: 0x47000000" } else { l })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&regs_path, regs).unwrap();
    let (out, v) =
        audit(&d.join("memory.elf"), &regs_path, "vtd", "0xfed90000", "0-0x80000000", "0x30000000-0x30100000");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(v["verdict"], "unsafe");
    assert_eq!(v["units"][0]["translation_off"], true);
    assert!(v["reasons"][0].as_str().unwrap().contains("translation is off"), "{v}");
}

#[test]
fn a_register_file_past_the_size_cap_is_refused_not_read() {
    let (name, iommu, base, ram, crash) = FIXTURES[0];
    let big = tmp("huge-regs.txt");
    let line = "(qemu) info registers\n";
    std::fs::write(&big, line.repeat((5 << 20) / line.len())).unwrap();
    let (out, v) = audit(&dir(name).join("memory.elf"), &big, iommu, base, ram, crash);
    assert_eq!(out.status.code(), Some(2));
    assert!(v.is_null());
    assert!(stderr(&out).contains("no register snapshot is"), "{}", stderr(&out));
}

/// The q35 DMAR with an RMRR appended: `base..=limit` reserved for the device at 00:02.0.
fn dmar_with_rmrr(base: u64, limit: u64) -> PathBuf {
    let mut t = std::fs::read(dir("acpi").join("q35-vtd-dmar.bin")).unwrap();
    // RMRR (VT-d 8.4): type 1, length, reserved, segment 0, base, limit; one PCI endpoint scope
    // (8.3.1: type 1, length 8, flags, reserved, enumeration ID, start bus 0, path device 2 function 0).
    let mut rmrr = vec![1, 0, 32, 0, 0, 0, 0, 0];
    rmrr.extend(base.to_le_bytes());
    rmrr.extend(limit.to_le_bytes());
    rmrr.extend([1, 8, 0, 0, 0, 0, 2, 0]);
    t.extend(rmrr);
    let len = t.len() as u32;
    t[4..8].copy_from_slice(&len.to_le_bytes());
    t[9] = 0;
    t[9] = 0u8.wrapping_sub(t.iter().fold(0u8, |s, b| s.wrapping_add(*b)));
    let path = tmp(&format!("dmar-rmrr-{base:x}.bin"));
    std::fs::write(&path, t).unwrap();
    path
}

#[test]
fn a_devices_rmrr_inside_the_crash_region_is_unsafe() {
    let d = dir("vtd-legacy");
    let run = |crash: &str| {
        let dmar = dmar_with_rmrr(0x3000_0000, 0x300f_ffff);
        let out = Command::new(env!("CARGO_BIN_EXE_handover"))
            .arg("audit")
            .arg(d.join("memory.elf"))
            .args(["--json", "--ram", "0-0x80000000", "--crashkernel", crash, "--acpi"])
            .arg(dmar)
            .arg("--regs")
            .arg(d.join("regs.txt"))
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out, v)
    };
    let (out, v) = run("0x38000000-0x380fffff");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(v["firmware_ranges"][0]["source"], "RMRR");
    assert_eq!(v["firmware_ranges"][0]["ids"][0][0], 0x10);
    let (out, v) = run("0x30080000-0x3017ffff");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(v["verdict"], "unsafe");
    let nic = devices(&v).iter().find(|d| d["sid"] == 0x10).unwrap();
    assert!(flags(nic).contains(&"firmware-range".to_string()), "{nic}");
    let reason = v["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).find(|r| r.contains("RMRR"));
    assert!(reason.is_some_and(|r| r.contains("0x30080000-0x30100000") && r.contains("0x0010")), "{v}");
}

#[test]
fn text_names_devices_by_bdf_shows_the_overlap_and_a_legend_and_the_svg_draws_what_the_verdict_rests_on() {
    let d = dir("vtd-legacy");
    let regs = tmp("te-off-svg.txt");
    let text = std::fs::read_to_string(d.join("regs.txt")).unwrap();
    std::fs::write(&regs, text.replace("00000000fed9001c: 0xc7000000", "00000000fed9001c: 0x47000000")).unwrap();
    let svg = tmp("reach.svg");
    let _ = std::fs::remove_file(&svg);
    let out = Command::new(env!("CARGO_BIN_EXE_handover"))
        .arg("audit")
        .arg(d.join("memory.elf"))
        .args(["--iommu", "vtd", "--base", "0xfed90000", "--ram", "0-0x7fffffff", "--crashkernel"])
        .args(["30000000-300fffff", "--regs"])
        .arg(&regs)
        .arg("--svg")
        .arg(&svg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("00:02.0 (sid 0x0010)"), "{text}");
    assert!(text.contains("verdict: unsafe") && text.contains("translation is off: every device"), "{text}");
    assert!(text.contains("threatens the crash kernel: 0x30000000-0x30100000 rw"), "{text}");
    assert!(text.contains("flags:\n") && text.contains("  passthrough           untranslated"), "{text}");
    let picture = std::fs::read_to_string(&svg).unwrap();
    for want in ["<title>", "verdict: unsafe", "translation off", "00:02.0", "url(#off)", "0x80000000</text>"] {
        assert!(picture.contains(want), "{want} in the svg");
    }
    // The picture is never written over an input, nor over itself without --force.
    let again = Command::new(env!("CARGO_BIN_EXE_handover"))
        .arg("audit")
        .arg(d.join("memory.elf"))
        .args(["--iommu", "vtd", "--base", "0xfed90000", "--ram", "0-0x7fffffff", "--crashkernel"])
        .args(["30000000-300fffff", "--regs"])
        .arg(&regs)
        .arg("--svg")
        .arg(&svg)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("--force"));
}

#[test]
fn a_device_that_threatens_prints_the_overlap_not_its_whole_reach() {
    let d = dir("vtd-passthrough");
    let out = Command::new(env!("CARGO_BIN_EXE_handover"))
        .arg("audit")
        .arg(d.join("memory.elf"))
        .args(["--iommu", "vtd", "--base", "0xfed90000", "--ram", "0-0x7fffffff", "--crashkernel"])
        .args(["256M@0x30000000", "--regs"])
        .arg(d.join("regs.txt"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("threatens the crash kernel: 0x30000000-0x40000000 rw"), "{text}");
    assert!(!text.contains("threatens the crash kernel: 0x0-"), "{text}");
    assert!(text.contains("passthrough           untranslated: reaches all of memory"), "{text}");
    assert!(text.contains("reason: vtd unit at 0xfed90000: 00:02.0 (sid 0x0010) is untranslated"), "{text}");
}

/// The q35 IVRS with an IVMD appended (AMD IOMMU spec 5.2.3: type 21h names one device): unity-mapped
/// `start..start+length` for the device at 00:02.0.
fn ivrs_with_ivmd(start: u64, length: u64) -> PathBuf {
    let mut t = std::fs::read(dir("acpi").join("q35-amdvi-ivrs.bin")).unwrap();
    // Type 21h, flags (unity, IR, IW), length 32, DeviceID 0x0010, auxiliary data, reserved, start, length.
    let mut ivmd = vec![0x21, 0b111, 32, 0, 0x10, 0, 0, 0];
    ivmd.extend([0u8; 8]);
    ivmd.extend(start.to_le_bytes());
    ivmd.extend(length.to_le_bytes());
    t.extend(ivmd);
    let len = t.len() as u32;
    t[4..8].copy_from_slice(&len.to_le_bytes());
    t[9] = 0;
    t[9] = 0u8.wrapping_sub(t.iter().fold(0u8, |s, b| s.wrapping_add(*b)));
    let path = tmp(&format!("ivrs-ivmd-{start:x}.bin"));
    std::fs::write(&path, t).unwrap();
    path
}

#[test]
fn a_devices_ivmd_inside_the_crash_region_is_unsafe() {
    let d = dir("amdvi");
    let ivrs = ivrs_with_ivmd(0x3000_0000, 0x10_0000);
    let run = |crash: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_handover"))
            .arg("audit")
            .arg(d.join("memory.elf"))
            .args(["--json", "--ram", "0-0x7fffffff", "--crashkernel", crash, "--acpi"])
            .arg(&ivrs)
            .arg("--regs")
            .arg(d.join("regs.txt"))
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out, v)
    };
    let (out, v) = run("0x38000000-0x380fffff");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(v["firmware_ranges"][0]["source"], "IVMD");
    let (out, v) = run("0x300ff000-0x301fffff");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let nic = devices(&v).iter().find(|d| d["sid"] == 0x10).unwrap();
    assert!(flags(nic).contains(&"firmware-range".to_string()), "{nic}");
    let disk = devices(&v).iter().find(|d| d["sid"] == 0x18).unwrap();
    assert!(!flags(disk).contains(&"firmware-range".to_string()), "the IVMD names 00:02.0 only: {disk}");
}

#[test]
fn an_smmuv3_disabled_aborts_everything_with_gbpa_abort_and_passes_everything_without() {
    // The smmuv3 capture with CR0.SMMUEN cleared (0xc) and GBPA read as ABORT (bit 20) or as QEMU's reset
    // value (bypass): SMMUv3 6.3.14, what incoming traffic does while SMMUEN is 0.
    let (name, iommu, base, ram, _) = FIXTURES[3];
    let d = dir(name);
    let text = std::fs::read_to_string(d.join("regs.txt")).unwrap();
    let disabled = text.replace("0000000009050020: 0x0000000d", "0000000009050020: 0x0000000c");
    assert_ne!(disabled, text);
    // A crash region over a page the NIC's stage-1 tables map: harmless while everything aborts.
    let (_, v) = audit(&d.join("memory.elf"), &d.join("regs.txt"), iommu, base, ram, "0x60000000-0x60100000");
    let phys = devices(&v)
        .iter()
        .flat_map(|d| d["reach"].as_array().unwrap().iter())
        .map(|r| r["phys"].as_u64().unwrap())
        .find(|p| *p >= 0x4000_0000)
        .unwrap();
    let crash = format!("{phys:#x}-{:#x}", phys + 0xfff);
    for (gbpa, code, verdict) in [("0x00100000", 0, "safe"), ("0x00001000", 1, "unsafe")] {
        let regs = tmp(&format!("smmu-off-{gbpa}.txt"));
        std::fs::write(&regs, disabled.replace("0000000009050044: 0x00001000", &format!("0000000009050044: {gbpa}")))
            .unwrap();
        let (out, v) = audit(&d.join("memory.elf"), &regs, iommu, base, ram, &crash);
        assert_eq!(out.status.code(), Some(code), "GBPA {gbpa}: {}", stderr(&out));
        assert_eq!(v["verdict"], verdict);
        assert_eq!(v["units"][0]["translation_off"], code == 1);
    }
}

#[test]
fn a_nested_pasid_entry_is_nested_and_the_verdict_incomplete_never_safe() {
    // The nvme's RID_PASID entry in the first-level capture (PASID table at 0x7cb4e000, entry 0: qw0 0x49 =
    // P, AW 2, PGTT 001), turned into PGTT 011 (nested): the device's reach can no longer be decoded.
    let (name, iommu, base, ram, crash) = FIXTURES[4];
    let core = with_u64(name, 0x7cb4_e000, 0xc9);
    let (out, v) = audit(&core, &dir(name).join("regs.txt"), iommu, base, ram, crash);
    std::fs::remove_file(&core).ok();
    assert_eq!(v["verdict"], "incomplete", "{}", stderr(&out));
    assert_ne!(out.status.code(), Some(0));
    let nvme = devices(&v).iter().find(|x| x["sid"] == 0x18).unwrap();
    assert!(flags(nvme).contains(&"nested".to_string()), "{nvme}");
    assert!(nvme["reach"].as_array().unwrap().is_empty());
    assert_ne!(nvme["verdict"], "safe");
    let nic = devices(&v).iter().find(|x| x["sid"] == 0x10).unwrap();
    assert_eq!(nic["verdict"], "safe", "the first-level NIC still decodes: {nic}");
}

#[test]
fn an_interrupt_table_in_the_crash_region_is_noted_without_changing_the_dma_verdict() {
    let d = dir("vtd-legacy");
    // Linux's table is at 0x1300000 (IRTA 0x130000f). A crash region over it alone: noted; one elsewhere: not.
    let (o, v) =
        audit(&d.join("memory.elf"), &d.join("regs.txt"), "vtd", "0xfed90000", "0-7fffffff", "1300000-13fffff");
    let notes: Vec<&str> = v["units"][0]["notes"].as_array().unwrap().iter().filter_map(|n| n.as_str()).collect();
    assert!(notes.iter().any(|n| n.starts_with("interrupt table at 0x1300000 lies in the crash region")), "{notes:?}");
    assert_eq!(v["units"][0]["interrupts"]["tables"][0]["address"], 0x130_0000u64, "{}", stderr(&o));
    let (_, away) =
        audit(&d.join("memory.elf"), &d.join("regs.txt"), "vtd", "0xfed90000", "0-7fffffff", "30000000-3fffffff");
    assert_eq!(away["verdict"], "safe");
    let notes = away["units"][0]["notes"].as_array().unwrap();
    assert!(!notes.iter().any(|n| n.as_str().is_some_and(|n| n.starts_with("interrupt table"))), "{notes:?}");
}
