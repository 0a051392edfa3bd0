//! The fuzz targets' bodies, as plain functions: `fuzz/fuzz_targets/*.rs` hand them libFuzzer's bytes,
//! and `crates/cli/tests/fuzz_corpus.rs` runs them over the committed corpora under a stable `cargo test`.
//! Each body panics only when an oracle fails (or the code under test panics), never on bad input.

use std::ops::Range;

use iommu_driver::audit::{audit, Flag, Verdict};
use iommu_driver::survey::{scan_amdvi, scan_smmuv3, scan_vtd, Budget, Work};
use iommu_driver::{
    boot, boot_crash, Attachment, BootEnv, BootOptions, DeviceId, Found, IommuKind, MemError, Mmio, Perm, PhysMem,
    Policy,
};
use iommu_dump::acpi::{Dmar, Iort, Ivrs, Table};
use iommu_dump::{required_registers, Dump, Firmware, RegSnapshot};
use iommu_emu::{model, Access, EmuPlatform, FrameRegion, IommuModel, PhysMemory, Translation};

/// `Dump::open` on `data` written to a file, then a few bounded reads through the platform trait.
pub fn dump_open(data: &[u8]) {
    let path = std::env::temp_dir().join(format!("handover-fuzz-dump-{}", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let dump = Dump::open(&path);
    let Ok(dump) = dump else { return };
    let _ = dump.format();
    let _ = dump.machine();
    let _ = dump.notes();
    let _ = dump.compression();
    let _ = dump.damage();
    let mut buf = [0u8; 64];
    if let Ok(ram) = dump.ram_ranges() {
        for r in ram.iter().take(4) {
            let _ = dump.read(r.start, &mut buf);
            let _ = dump.read(r.end.saturating_sub(buf.len() as u64), &mut buf);
            // A read that would run past 2^64 is refused, never wrapped.
            assert!(dump.read(u64::MAX - 7, &mut buf).is_err(), "a read crossing 2^64 succeeded");
        }
    }
    let _ = dump.read(0, &mut buf);
}

/// Set an ACPI table's checksum byte (offset 9) so its declared length sums to zero, as firmware does
/// (ACPI 6.5, 5.2.6 "System Description Table Header").
fn with_checksum(data: &[u8]) -> Vec<u8> {
    let mut t = data.to_vec();
    if t.len() >= 36 {
        let len = (u32::from_le_bytes([t[4], t[5], t[6], t[7]]) as usize).min(t.len());
        t[9] = 0;
        let sum = t[..len.max(10)].iter().fold(0u8, |a, b| a.wrapping_add(*b));
        t[9] = 0u8.wrapping_sub(sum);
    }
    t
}

/// The DMAR, IVRS and IORT parsers on `data` as given and with its checksum fixed up, and each parser on
/// the table whatever its signature says.
pub fn acpi_tables(data: &[u8]) {
    let _ = Firmware::from_bytes(data);
    let fixed = with_checksum(data);
    if let Ok(fw) = Firmware::from_bytes(&fixed) {
        let _ = fw.kind();
        let _ = format!("{fw:?}");
    }
    if let Ok(table) = Table::parse(&fixed) {
        if let Ok(d) = Dmar::parse(&table) {
            for r in &d.rmrrs {
                let _ = r.is_sane();
            }
        }
        if let Ok(i) = Ivrs::parse(&table) {
            let _ = i.effective_ivhds().count();
        }
        if let Ok(i) = Iort::parse(&table) {
            let bases: Vec<u64> = i.smmuv3s().map(|(_, s)| s.base).collect();
            for rid in [0u32, 8, 0x10, 0xffff] {
                let _ = i.stream_of(0, rid);
            }
            for b in bases {
                let _ = i.requester_of(b, 0x10);
            }
        }
    }
}

/// The register-snapshot text parser; what it parsed answers reads consistently.
pub fn regs_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(s) = RegSnapshot::parse(text) else { return };
    let _ = s.units();
    for addr in [0u64, 0x1000, 0xfed9_0000, 0xfed9_0008, u64::MAX - 3, u64::MAX] {
        if s.read32(addr).is_some() {
            assert!(s.has(addr, 4), "read32 answered at {addr:#x} where has() says no");
        }
        if s.read64(addr).is_some() {
            assert!(s.has(addr, 8), "read64 answered at {addr:#x} where has() says no");
        }
    }
    let _ = (s.len(), s.is_empty());
}

/// Physical memory (an emulator's) and a small register file: a dump in miniature.
struct Machine {
    mem: PhysMemory,
    regs: Vec<(usize, u64)>,
}

impl PhysMem for Machine {
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.mem.read(pa, buf)
    }
    fn write(&mut self, pa: u64, data: &[u8]) -> Result<(), MemError> {
        self.mem.write(pa, data)
    }
}

impl Mmio for Machine {
    fn read32(&mut self, off: usize) -> u32 {
        // A 32-bit register may be the high half of a 64-bit one stored at `off - 4`.
        for &(o, v) in &self.regs {
            if o == off {
                return v as u32;
            }
            if o + 4 == off {
                return (v >> 32) as u32;
            }
        }
        0
    }
    fn read64(&mut self, off: usize) -> u64 {
        self.regs.iter().find(|r| r.0 == off).map_or(0, |r| r.1)
    }
    fn write32(&mut self, _: usize, _: u32) {}
    fn write64(&mut self, _: usize, _: u64) {}
}

/// RAM of the fuzzed machines; the fuzzer's memory is written from physical 0.
const RAM: Range<u64> = 0..0x1_0000_0000;
/// The crash kernel's region the audit judges against: it holds the second half of the fuzzer's memory.
const CRASH: Range<u64> = 0x8000..0x1_0000;

fn u64_at(data: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    for (k, x) in b.iter_mut().enumerate() {
        *x = data.get(i + k).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

/// Input layout: the budget (4 bytes: pages, runs, problems, devices, each a small count), one u64 per
/// register `required_registers(kind)` names, then memory from physical address 0.
fn audit_kind(kind: IommuKind, data: &[u8]) {
    let regs = required_registers(kind);
    let b = |i: usize| u64::from(data.get(i).copied().unwrap_or(0xff));
    let budget = Budget { max_pages: b(0), max_runs: b(1) * 4, max_problems: b(2), max_devices: b(3) };
    let mut m = Machine { mem: PhysMemory::contiguous(RAM), regs: Vec::new() };
    for (k, &(_, off, _)) in regs.iter().enumerate() {
        m.regs.push((off, u64_at(data, 4 + 8 * k)));
    }
    let mem = data.get(4 + 8 * regs.len()..).unwrap_or(&[]);
    for (i, chunk) in mem.chunks(4096).enumerate() {
        m.mem.write(i as u64 * 4096, chunk).expect("inside RAM");
    }
    let env = BootEnv {
        crash_kernel: true,
        ram: std::iter::once(RAM).collect(),
        crash_region: None,
        mem_encrypt: false,
        c_bit: 0,
    };
    let mut work = Work::new(budget);
    let scan = match kind {
        IommuKind::Vtd => scan_vtd(&mut m, &env, &mut work),
        IommuKind::Amdvi => scan_amdvi(&mut m, &env, &mut work),
        IommuKind::Smmuv3 => scan_smmuv3(&mut m, &env, &mut work),
    };
    // The work spent never exceeds the budget, and what is kept is what was counted.
    let s = work.spent;
    assert!(s.pages <= budget.max_pages, "{s:?} over {budget:?}");
    assert!(s.runs <= budget.max_runs, "{s:?} over {budget:?}");
    assert!(s.problems <= budget.max_problems, "{s:?} over {budget:?}");
    assert!(s.devices <= budget.max_devices, "{s:?} over {budget:?}");
    assert!(scan.devices.len() as u64 <= budget.max_devices);
    let runs: usize = scan.devices.iter().map(|d| d.runs.len()).sum();
    assert!(runs as u64 <= budget.max_runs, "{runs} runs kept over {budget:?}");
    let kept = scan.problems.len() + scan.devices.iter().map(|d| d.problems.len()).sum::<usize>();
    assert_eq!(kept as u64, s.problems, "problems kept vs counted");

    let a = audit(&scan, &[RAM], &[CRASH], &[]);
    if a.verdict() == Verdict::Safe {
        // Never "safe" while something was not read, walked or trusted.
        // (A unit that aborts all DMA walks nothing live: what the budget cut off is not needed.)
        assert!(s.exhausted.is_none() || scan.aborts, "safe with the budget exhausted: {s:?}");
        assert_eq!(a.incomplete().count(), 0, "safe with an incomplete device");
        // A unit that aborts all DMA (SMMUv3 disabled, GBPA.ABORT) has no live entry: its devices' entries
        // are judged, not trusted, and may be undecodable (`audit`, crates/driver/src/audit.rs).
        for d in a.devices.iter().filter(|_| !scan.aborts) {
            assert_eq!(d.verdict, Verdict::Safe, "safe overall, device {:#x} is {:?}", d.id, d.verdict);
            for f in [Flag::Truncated, Flag::Incomplete, Flag::Loop, Flag::Nested, Flag::Invalid] {
                assert!(!d.flags.contains(&f), "safe with device {:#x} flagged {f:?}", d.id);
            }
        }
        assert!(scan.scanned || scan.bypass || !scan.translation_enabled || scan.aborts, "safe, unscanned");
    }
}

pub fn audit_vtd(data: &[u8]) {
    audit_kind(IommuKind::Vtd, data)
}
pub fn audit_amdvi(data: &[u8]) {
    audit_kind(IommuKind::Amdvi, data)
}
pub fn audit_smmuv3(data: &[u8]) {
    audit_kind(IommuKind::Smmuv3, data)
}

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// The crash kernel's region of the adoption targets (as in `crates/driver/tests/contract.rs`).
const KDUMP: Range<u64> = (3 * GIB)..(3 * GIB + 256 * MIB);
/// Where the primary kernel's driver allocates its tables: the pages the fuzzer rewrites.
const PRIMARY: Range<u64> = 16 * MIB..512 * MIB;
const NIC: DeviceId = DeviceId(0x0010);
const DISK: DeviceId = DeviceId(0x0018);

fn env(crash_kernel: bool) -> BootEnv {
    BootEnv {
        crash_kernel,
        ram: std::iter::once(0..4 * GIB).collect(),
        crash_region: Some(KDUMP),
        mem_encrypt: false,
        c_bit: 0,
    }
}

/// A crash boot under `adopt-scratch` over tables a primary kernel built and the fuzzer then rewrote.
///
/// Input: byte 0 picks options (bit 0: VT-d scalable mode, bit 1: first-level tables; bits 2..: the third
/// device probed), then 12-byte writes `(page: u16, offset: u16, value: u64)` into the first 64 pages of
/// the primary kernel's frames (its root/context/device/stream and page tables), then IOVAs to try.
/// Oracle: no DMA of a device `contain` succeeded on reaches the crash kernel's region outside the
/// scratch pages.
fn adopt_kind(kind: IommuKind, data: &[u8]) {
    let opt = data.first().copied().unwrap_or(0);
    let opts = BootOptions { scalable: opt & 1 != 0, vtd_first_level: opt & 2 != 0, ..BootOptions::default() };
    let mut mem = PhysMemory::contiguous(0..4 * GIB);
    let mut unit: Box<dyn IommuModel> = model(kind, false, true);
    let mut primary = FrameRegion::new(PRIMARY);
    let mut crash = FrameRegion::new(KDUMP.start + 64 * MIB..KDUMP.end);
    let mut iovas = vec![0u64, 0x1000];
    {
        let hw = &mut EmuPlatform::new(&mut unit, &mut mem, &mut primary);
        let Ok(mut drv) = boot(kind, hw, &env(false), opts) else { return };
        for (i, id) in [NIC, DISK].into_iter().enumerate() {
            let Ok(d) = drv.create_domain(hw) else { return };
            if drv.attach(hw, id, Attachment::Domain(d)).is_err() {
                return;
            }
            for k in 0..4u64 {
                let pa = 0x2000_0000 + (i as u64 * 16 + k) * 0x1000;
                if let Ok(iova) = drv.map(hw, d, pa, 0x1000, Perm::RW) {
                    iovas.push(iova);
                }
            }
        }
    }
    // The crashed kernel's memory, as the fuzzer would have it.
    let mut rest = data.get(1..).unwrap_or(&[]);
    while rest.len() >= 12 {
        let page = u64::from(u16::from_le_bytes([rest[0], rest[1]]) % 64);
        let off = u64::from(u16::from_le_bytes([rest[2], rest[3]]) & 0xff8);
        let value = u64_at(rest, 4);
        mem.write(PRIMARY.start + page * 4096 + off, &value.to_le_bytes()).expect("inside RAM");
        rest = &rest[12..];
    }
    for c in rest.chunks(4) {
        iovas.push(u64::from(u32::from_le_bytes([c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0), 0])) << 12);
    }
    let env = env(true);
    let hw = &mut EmuPlatform::new(&mut unit, &mut mem, &mut crash);
    let Ok((mut drv, _report)) = boot_crash(kind, hw, &env, opts, Policy::AdoptScratch) else { return };
    let mut contained = Vec::new();
    for id in [NIC, DISK, DeviceId(u32::from(opt >> 2))] {
        if drv.device_found(hw, &env, id) == Ok(Found::Adopted) && drv.contain(hw, id).is_ok() {
            contained.push(id);
        }
    }
    // The scratch pages are the crash kernel's own frames (`FrameRegion` above): contained DMA lands there
    // by design (`IommuDriver::contain`, crates/driver/src/contract.rs), and nowhere else in the region.
    let scratch = drv.scratch_region().unwrap_or(0..0);
    for id in contained {
        for &iova in &iovas {
            for access in [Access::Write, Access::Read] {
                if let Translation::Ok { phys } = unit.translate(&mut mem, id.0, iova, access) {
                    let hit = KDUMP.contains(&phys) && !scratch.contains(&phys);
                    assert!(
                        !hit,
                        "{kind}: contained {id:?} {iova:#x} -> {phys:#x}: crash region, not scratch {scratch:x?}"
                    );
                }
            }
        }
    }
}

pub fn adopt_vtd(data: &[u8]) {
    adopt_kind(IommuKind::Vtd, data)
}
pub fn adopt_amdvi(data: &[u8]) {
    adopt_kind(IommuKind::Amdvi, data)
}
pub fn adopt_smmuv3(data: &[u8]) {
    adopt_kind(IommuKind::Smmuv3, data)
}

/// A target's body.
pub type Body = fn(&[u8]);

/// Every target by name, for the corpus test.
pub const TARGETS: [(&str, Body); 9] = [
    ("dump_open", dump_open),
    ("acpi_tables", acpi_tables),
    ("regs_text", regs_text),
    ("audit_vtd", audit_vtd),
    ("audit_amdvi", audit_amdvi),
    ("audit_smmuv3", audit_smmuv3),
    ("adopt_vtd", adopt_vtd),
    ("adopt_amdvi", adopt_amdvi),
    ("adopt_smmuv3", adopt_smmuv3),
];
