//! Decoding a dump costs time proportional to the IOMMU's tables, not to the dump: the same VT-d tables
//! (built by the real driver in the model) are written into sparse ELF cores, and into kdump-compressed files
//! (zlib pages, as makedumpfile -c writes them), of 64 MiB and 4 GiB of RAM, and the decode `handover inspect`
//! does (open the dump, scan root/context tables, walk every device's page tables) is timed on each.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion};
use iommu_driver::vtd::{self, Attachment, Vtd, VtdOptions, WalkLimits};
use iommu_driver::{BootEnv, Mmio, PhysMem};
use iommu_dump::{DumpHw, InspectInput};
use iommu_emu::{EmuPlatform, FrameRegion, PhysMemory, VtdConfig, VtdModel};
use iommu_spec::vtd::{off, Cap};

/// The tests' kdump-compressed writer.
#[allow(dead_code)]
#[path = "../tests/dump/kdump_build.rs"]
mod kdump_build;

const MIB: u64 = 1 << 20;
const BASE: u64 = 0xfed9_0000;

/// A machine with `devices` devices in their own domains, 16 pages each, in `ram` bytes of RAM.
fn machine(ram: u64, devices: u32) -> (PhysMemory, VtdModel) {
    let mut mem = PhysMemory::contiguous(0..ram);
    let mut unit = VtdModel::new(VtdConfig::legacy_only());
    let mut frames = FrameRegion::new(16 * MIB..48 * MIB);
    let mut hw = EmuPlatform::new(&mut unit, &mut mem, &mut frames);
    let mut v = Vtd::init(&mut hw, VtdOptions { scalable: false, first_level: false }).expect("boot");
    for i in 0..devices {
        let d = v.create_domain(&mut hw).expect("domain");
        v.attach(&mut hw, (i * 8) as u16, Attachment::Domain(d)).expect("attach");
        for p in 0..16u64 {
            v.map(&mut hw, d, 48 * MIB + (i as u64 * 16 + p) * 4096, 4096, true, true).expect("map");
        }
    }
    let _ = hw;
    (mem, unit)
}

/// An ELF64 core with one PT_LOAD covering all of `mem`'s RAM; only the pages that hold anything are
/// written, so the file is sparse on disk but `ram` bytes long.
fn write_core(path: &Path, mem: &PhysMemory, ram: u64) {
    let data = 4096u64;
    let mut f = File::create(path).expect("create");
    let mut h = Vec::with_capacity(120);
    h.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    h.extend_from_slice(&4u16.to_le_bytes()); // ET_CORE
    h.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    h.extend_from_slice(&1u32.to_le_bytes());
    h.extend_from_slice(&0u64.to_le_bytes()); // entry
    h.extend_from_slice(&64u64.to_le_bytes()); // phoff
    h.extend_from_slice(&0u64.to_le_bytes()); // shoff
    h.extend_from_slice(&0u32.to_le_bytes());
    for v in [64u16, 56, 1, 64, 0, 0] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    h.extend_from_slice(&7u32.to_le_bytes());
    for v in [data, 0, 0, ram, ram, 4096] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    f.write_all(&h).expect("header");
    f.set_len(data + ram).expect("size");
    for (pfn, page) in mem.pages() {
        f.write_all_at(&page[..], data + pfn * 4096).expect("page");
    }
}

fn regs_text(unit: &mut VtdModel, mem: &mut PhysMemory) -> String {
    let mut frames = FrameRegion::new(0..0);
    let mut hw = EmuPlatform::new(unit, mem, &mut frames);
    let mut s = String::new();
    for (o, wide) in [(off::CAP, true), (off::ECAP, true), (off::GSTS, false), (off::RTADDR, true)] {
        if wide {
            s += &format!("{:016x}: {:#018x}\n", BASE + o as u64, hw.read64(o));
        } else {
            s += &format!("{:016x}: {:#010x}\n", BASE + o as u64, hw.read32(o));
        }
    }
    s
}

/// What `inspect` does: open, scan, walk every device.
fn decode(dump: &Path, regs: &Path) -> usize {
    let mut hw: DumpHw = InspectInput::open(dump, regs, BASE).expect("open").hw();
    let env = BootEnv {
        crash_kernel: true,
        ram: hw.ram_ranges().expect("ram"),
        crash_region: None,
        mem_encrypt: false,
        c_bit: 0,
    };
    let cap = Cap::from_bits(hw.read64(off::CAP));
    let scan = vtd::scan(&mut hw, &env, None).expect("scan");
    let mut runs = 0;
    for d in &scan.devices {
        if let vtd::DeviceKind::Translated { root, levels } = d.kind {
            runs += vtd::walk::walk(&hw, cap, root, levels, WalkLimits::default()).runs.len();
        }
    }
    let mut b = [0u8; 8];
    let _ = hw.read(0, &mut b);
    runs
}

/// A kdump-compressed file of `mem` (every page that holds anything, zlib-compressed), `ram` bytes of RAM.
fn write_kdump(path: &Path, mem: &PhysMemory, ram: u64) {
    let pages = mem.pages().map(|(pfn, page)| (pfn, page[..].to_vec())).collect();
    let k = kdump_build::Kdump { max_mapnr: ram / 4096, pages, ..kdump_build::Kdump::default() };
    std::fs::write(path, k.build().file).expect("kdump");
}

/// The ELF core, the kdump file and the registers of one machine.
fn setup(dir: &Path, ram: u64) -> (PathBuf, PathBuf, PathBuf) {
    let (mut mem, mut unit) = machine(ram, 64);
    let dump = dir.join(format!("core-{}m.elf", ram >> 20));
    let kdump = dir.join(format!("core-{}m.kdump", ram >> 20));
    let regs = dir.join(format!("regs-{}m.txt", ram >> 20));
    write_core(&dump, &mem, ram);
    write_kdump(&kdump, &mem, ram);
    std::fs::write(&regs, regs_text(&mut unit, &mut mem)).expect("regs");
    (dump, kdump, regs)
}

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("handover-decode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut g = c.benchmark_group("decode 64 devices' VT-d tables");
    for ram in [64 * MIB, 4096 * MIB] {
        let (dump, kdump, regs) = setup(&dir, ram);
        // IOVAs are handed out top-down while the pages ascend: no two merge.
        assert_eq!(decode(&dump, &regs), 64 * 16, "every mapped page found");
        assert_eq!(decode(&kdump, &regs), 64 * 16, "every mapped page found in the kdump file");
        g.bench_function(format!("ELF core, {} MiB", ram >> 20), |b| b.iter(|| decode(&dump, &regs)));
        g.bench_function(format!("kdump-compressed, {} MiB", ram >> 20), |b| b.iter(|| decode(&kdump, &regs)));
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
