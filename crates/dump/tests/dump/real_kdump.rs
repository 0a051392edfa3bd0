//! kdump-compressed files the real makedumpfile wrote from the committed ELF fixtures
//! (`tests/fixtures/make-kdump.sh`): each must decode to exactly the memory of the core it came from.

use std::path::PathBuf;

use iommu_driver::{MemErrorKind, PhysMem};
use iommu_dump::{Compression, Dump, Format};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(rel)
}

/// Every page of the ELF core reads the same from the kdump file; pages the core lacks (sampled up to
/// the bitmaps' end) are not captured in either.
fn same_memory(elf: &str, kdump: &str, format: Format, compression: Compression) {
    let e = Dump::open(fixture(elf)).unwrap();
    let k = Dump::open(fixture(kdump)).unwrap();
    assert_eq!(k.format(), format, "{kdump}");
    assert_eq!(k.compression(), Some(compression), "{kdump}");
    assert_eq!(k.machine(), e.machine(), "{kdump}: the machine, from its NT_PRSTATUS notes");
    assert_eq!(k.notes().unwrap(), e.notes().unwrap(), "{kdump}: the notes are copied");
    let ram = e.ram_ranges().unwrap();
    assert_eq!(k.ram_ranges().unwrap(), ram, "{kdump}: the first bitmap is the core's segments");

    let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 4096]);
    let mut pages = 0;
    for r in &ram {
        for pa in (r.start..r.end).step_by(4096) {
            e.read(pa, &mut a).unwrap();
            k.read(pa, &mut b).unwrap_or_else(|err| panic!("{kdump}: {err}"));
            assert!(a == b, "{kdump}: page {pa:#x} differs");
            pages += 1;
        }
    }
    assert!(pages > 5, "{kdump}: {pages} pages compared");
    let Dump::Kdump { core, .. } = &k else { unreachable!() };
    let end = core.header().max_mapnr * 4096;
    for pa in (0..end + 0x10_0000).step_by(4096 * 97) {
        if !ram.iter().any(|r| r.contains(&pa)) {
            assert_eq!(k.read(pa, &mut b).unwrap_err().kind, MemErrorKind::NotCaptured, "{kdump}: {pa:#x}");
            assert_eq!(e.read(pa, &mut a).unwrap_err().kind, MemErrorKind::NotCaptured);
        }
    }
    assert_eq!(k.damage().1, 0, "{kdump}: no damaged page");
}

#[test]
fn makedumpfile_zlib_decodes_to_the_amdvi_core() {
    same_memory("amdvi/memory.elf", "amdvi/memory.kdump-zlib", Format::Kdump { flattened: false }, Compression::Zlib);
}

#[test]
fn makedumpfile_lzo_decodes_to_the_amdvi_core() {
    same_memory("amdvi/memory.elf", "amdvi/memory.kdump-lzo", Format::Kdump { flattened: false }, Compression::Lzo);
}

#[test]
fn makedumpfile_flattened_decodes_to_the_amdvi_core() {
    same_memory("amdvi/memory.elf", "amdvi/memory.kdump-flat", Format::Kdump { flattened: true }, Compression::Zlib);
}

#[test]
fn makedumpfile_zlib_decodes_to_the_arm64_smmuv3_core() {
    same_memory("smmuv3/memory.elf", "smmuv3/memory.kdump-zlib", Format::Kdump { flattened: false }, Compression::Zlib);
}

fn local(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

/// QEMU's own `dump-guest-memory -z` of a q35 machine in SeaBIOS (`tests/fixtures/make-qemu-kdump.sh`):
/// the flattened kdump format QEMU writes, against pages of the ELF core dumped at the same instant.
#[test]
fn qemu_dump_guest_memory_z_decodes_to_the_elf_core_of_the_same_instant() {
    let k = Dump::open(local("qemu-kdump.flat")).unwrap();
    let e = Dump::open(local("qemu-kdump.core")).unwrap();
    assert_eq!(k.format(), Format::Kdump { flattened: true });
    assert_eq!(k.compression(), Some(Compression::Zlib));
    // QEMU names no machine for a guest still in real mode (utsname "Unknown", 32-bit register notes).
    assert_eq!((k.machine(), e.machine()), (0, 3));
    assert_eq!(k.ram_ranges().unwrap(), [0..0x20_0000, 0xfffc_0000..0x1_0000_0000], "2 MiB of RAM and the flash");

    let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 4096]);
    let mut compared = 0;
    for s in e.ram_ranges().unwrap() {
        for pa in (s.start..s.end).step_by(4096) {
            e.read(pa, &mut a).unwrap();
            k.read(pa, &mut b).unwrap();
            assert!(a == b, "page {pa:#x} differs");
            compared += 1;
        }
    }
    assert_eq!(compared, 13);
    // Every page QEMU dumped decodes (zero pages share one descriptor; the rest are zlib or raw).
    let mut zero = 0;
    for r in k.ram_ranges().unwrap() {
        for pa in (r.start..r.end).step_by(4096) {
            k.read(pa, &mut b).unwrap_or_else(|err| panic!("{err}"));
            zero += usize::from(b.iter().all(|&x| x == 0));
        }
    }
    assert_eq!((zero, k.damage().1), (576 - 116, 0), "116 of the 576 pages hold something");
}
