//! `handover audit` on the real-Linux fixtures and on corrupted copies of them: verdicts and flags, or a
//! clear error, never a panic or a hang.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

const FIXTURES: [(&str, &str, &str, &str); 5] = [
    ("vtd-legacy", "vtd", "0xfed90000", "0-0x80000000"),
    ("vtd-scalable", "vtd", "0xfed90000", "0-0x80000000"),
    ("vtd-scalable-fl", "vtd", "0xfed90000", "0-0x80000000"),
    ("amdvi", "amdvi", "0xfed80000", "0-0x80000000"),
    ("smmuv3", "smmuv3", "0x09050000", "0x40000000-0xc0000000"),
];

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(name)
}

fn audit(dump: &PathBuf, regs: &PathBuf, iommu: &str, base: &str, ram: &str, crash: &str) -> (Output, Value) {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_handover"))
        .args(["audit", "--json", "--iommu", iommu, "--base", base, "--ram", ram, "--crashkernel", crash, "--dump"])
        .arg(dump)
        .arg("--regs")
        .arg(regs)
        .output()
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(20), "bounded work");
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, v)
}

fn flags(d: &Value) -> Vec<String> {
    d["flags"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect()
}

#[test]
fn linux_tables_are_safe_away_from_their_buffers_and_unsafe_over_them() {
    for (name, iommu, base, ram) in FIXTURES {
        let d = dir(name);
        let (out, v) = audit(&d.join("memory.elf"), &d.join("regs.txt"), iommu, base, ram, "0x30000000-0x30100000");
        assert_eq!(out.status.code(), Some(0), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(v["verdict"], "safe");
        let devices = v["devices"].as_array().unwrap();
        assert!(devices.iter().any(|d| !d["reach"].as_array().unwrap().is_empty()), "{name}");
        for dev in devices {
            assert!(!flags(dev).contains(&"passthrough".to_string()), "no pass-through device in these captures");
        }
        // Put the crash kernel over the first page a device can reach: now that device threatens it.
        let (sid, phys) = devices
            .iter()
            .find_map(|d| {
                d["reach"].as_array().unwrap().first().map(|r| (d["sid"].clone(), r["phys"].as_u64().unwrap()))
            })
            .unwrap();
        let crash = format!("{phys:#x}-{:#x}", phys + 0x1000);
        let (out, v) = audit(&d.join("memory.elf"), &d.join("regs.txt"), iommu, base, ram, &crash);
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert_eq!(v["verdict"], "unsafe");
        let dev = v["devices"].as_array().unwrap().iter().find(|d| d["sid"] == sid).unwrap();
        assert!(flags(dev).contains(&"crashkernel".to_string()), "{name}: {dev}");
    }
}

#[test]
fn the_smmuv3_capture_maps_the_msi_doorbell_outside_ram() {
    let d = dir("smmuv3");
    let (_, v) = audit(
        &d.join("memory.elf"),
        &d.join("regs.txt"),
        "smmuv3",
        "0x09050000",
        "0x40000000-0xc0000000",
        "0x30000000-0x30100000",
    );
    let nic = v["devices"].as_array().unwrap().iter().find(|d| d["sid"] == 0x10).unwrap();
    assert!(flags(nic).contains(&"outside-ram".to_string()), "GICv2m doorbell at 0x08020000: {nic}");
}

/// A deterministic generator.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 17
    }
}

#[test]
fn corrupted_fixtures_give_flags_or_clear_errors() {
    let tmp = std::env::temp_dir().join(format!("handover-audit-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut rng = Lcg(7);
    for (name, iommu, base, ram) in FIXTURES {
        let d = dir(name);
        let pristine = std::fs::read(d.join("memory.elf")).unwrap();
        // The data starts after the headers; flip bits only there so the file stays an ELF core.
        let data_start = 4096.min(pristine.len() / 2);
        for round in 0..12 {
            let mut bytes = pristine.clone();
            for _ in 0..(1 + round * 8) {
                let at = data_start + (rng.next() as usize % (bytes.len() - data_start));
                bytes[at] ^= 1 << (rng.next() % 8);
            }
            let path = tmp.join(format!("{name}-{round}.elf"));
            std::fs::write(&path, &bytes).unwrap();
            let (out, v) = audit(&path, &d.join("regs.txt"), iommu, base, ram, "0x30000000-0x30100000");
            let code = out.status.code();
            assert!(
                matches!(code, Some(0..=2)),
                "{name} round {round}: {code:?} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            if code == Some(2) {
                assert!(!out.stderr.is_empty(), "an error says why");
            } else {
                assert!(v["verdict"].is_string());
            }
        }
        // Truncated: a clear error, exit 2.
        let path = tmp.join(format!("{name}-truncated.elf"));
        std::fs::write(&path, &pristine[..pristine.len() / 3]).unwrap();
        let (out, _) = audit(&path, &d.join("regs.txt"), iommu, base, ram, "0x30000000-0x30100000");
        assert_eq!(out.status.code(), Some(2), "{name}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("segment"), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn a_unit_with_translation_off_is_unsafe_whatever_its_tables_say() {
    // The vtd-legacy capture with GSTS read as the unit reports it with TE cleared (0x47000000: QIES, IRES,
    // IRTPS still set): every device's DMA bypasses translation.
    let d = dir("vtd-legacy");
    let tmp = std::env::temp_dir().join(format!("handover-te-off-{}.txt", std::process::id()));
    let regs = std::fs::read_to_string(d.join("regs.txt")).unwrap();
    let regs: String = regs
        .lines()
        .map(|l| if l.starts_with("00000000fed9001c") { "00000000fed9001c: 0x47000000" } else { l })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&tmp, regs).unwrap();
    let (out, v) = audit(&d.join("memory.elf"), &tmp, "vtd", "0xfed90000", "0-0x80000000", "0x30000000-0x30100000");
    let _ = std::fs::remove_file(&tmp);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(v["verdict"], "unsafe");
    assert_eq!(v["translation_off"], true);
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
fn a_nested_pasid_entry_is_reported_undecodable_and_the_verdict_is_incomplete() {
    // The nvme's RID_PASID entry in the first-level capture (PASID table at 0x7cb4e000, entry 0: qw0 0x49 =
    // P, AW 2, PGTT 001), turned into PGTT 011 (nested): the device's reach can no longer be decoded.
    let d = dir("vtd-scalable-fl");
    let mut core = std::fs::read(d.join("memory.elf")).unwrap();
    patch_core(&mut core, 0x7cb4_e000, 0xc9);
    let tmp = std::env::temp_dir().join(format!("handover-nested-{}.elf", std::process::id()));
    std::fs::write(&tmp, &core).unwrap();
    let (out, v) = audit(&tmp, &d.join("regs.txt"), "vtd", "0xfed90000", "0-0x80000000", "0x30000000-0x30100000");
    std::fs::remove_file(&tmp).ok();
    assert_eq!(out.status.code(), Some(1), "not proven safe: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(v["verdict"], "incomplete");
    let nvme = v["devices"].as_array().unwrap().iter().find(|x| x["sid"] == 0x18).unwrap();
    assert!(flags(nvme).contains(&"undecodable".to_string()), "{nvme}");
    assert!(nvme["reach"].as_array().unwrap().is_empty());
}
