//! A real QEMU dump and real monitor output (see `tests/fixtures/make-qemu-bios.sh`): a q35 machine
//! with an Intel IOMMU sitting in SeaBIOS, trimmed to five pages by this crate's writer. The checks
//! are facts about PC firmware, not numbers copied out of the file: if the reader took bytes from the
//! wrong offset or segment they would not hold.

use iommu_driver::{MemError, MemErrorKind, Mmio, PhysMem};
use iommu_dump::{ElfCore, RegSnapshot, RegsError, SnapshotMmio};
use iommu_spec::vtd::regs::{off, Cap};

const VTD_BASE: u64 = 0xfed9_0000;

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn dump() -> ElfCore {
    ElfCore::open(fixture("qemu-bios.core")).unwrap()
}

#[test]
fn qemu_core_headers_and_notes() {
    let core = dump();
    assert_eq!(core.machine(), 3, "QEMU writes EM_386 for a guest not in long mode");
    assert_eq!(core.segments().len(), 5);
    let notes = core.notes().unwrap();
    // The first note is NT_PRSTATUS (1) named "CORE"; QEMU adds its own "QEMU" CPU-state note.
    assert_eq!(u32::from_le_bytes(notes[8..12].try_into().unwrap()), 1);
    assert_eq!(&notes[12..17], b"CORE\0");
    assert!(notes.windows(5).any(|w| w == b"QEMU\0"));
}

#[test]
fn both_copies_of_the_bios_hold_the_reset_vector() {
    let core = dump();
    let mut flash = [0; 13];
    let mut shadow = [0; 13];
    core.read(0xffff_fff0, &mut flash).unwrap();
    core.read(0xf_fff0, &mut shadow).unwrap();
    // `ljmp $0xf000, $0xe05b`, then the BIOS date string: the x86 reset entry of every PC BIOS.
    assert_eq!(flash[..5], [0xea, 0x5b, 0xe0, 0x00, 0xf0]);
    assert_eq!(&flash[5..13], b"06/23/99");
    assert_eq!(flash, shadow, "SeaBIOS copies itself into the shadow RAM below 1 MiB");
}

#[test]
fn real_mode_tables_point_into_captured_memory() {
    let core = dump();
    for vector in 0..4 {
        assert_eq!(core.read_u32(vector * 4).unwrap() >> 16, 0xf000, "IVT entry {vector} points into the BIOS");
    }
    // BDA 0x40e: the EBDA's segment; the EBDA's first byte is its size in KiB.
    let ebda = u64::from(core.read_u32(0x40e).unwrap() as u16) << 4;
    assert_eq!(ebda, 0x9_fc00);
    let mut kib = [0];
    core.read(ebda, &mut kib).unwrap();
    assert_eq!(kib, [1]);
    // The EBDA runs up to the VGA hole at 0xa0000, which no segment covers.
    let mut buf = [0; 8];
    assert_eq!(core.read(0x9_fffc, &mut buf), Err(MemError { addr: 0xa_0000, kind: MemErrorKind::NotCaptured }));
}

#[test]
fn qemu_monitor_output_as_printed() {
    let text = std::fs::read_to_string(fixture("qemu-bios-vtd.txt")).unwrap();
    assert!(text.contains("\r\n") && text.contains('\x1b'), "the raw monitor text, escapes and all");
    let mut mmio = SnapshotMmio::new(RegSnapshot::parse(&text).unwrap(), VTD_BASE);
    assert_eq!(mmio.read32(off::VER), 0x10, "VT-d 1.0");
    let cap = Cap::from_bits(mmio.read64(off::CAP));
    assert_eq!((cap.domain_count(), cap.mgaw() + 1), (65536, 48));
    assert!(cap.supports_agaw(1) && cap.supports_agaw(2), "3- and 4-level tables");
    assert_eq!(mmio.read32(off::GSTS), 0, "translation is off in the BIOS");
    assert_eq!(mmio.read64(off::RTADDR), 0);
    assert_eq!(mmio.missing(), None);
    // The fault recording registers were not captured, and require says which is absent.
    let frcd0 = off::frcd(cap.fro(), 0);
    let err = mmio.require(&[("CAP", off::CAP, 8), ("FRCD0", frcd0, 16)]).unwrap_err();
    assert_eq!(err, RegsError::MissingRegister { name: "FRCD0".into(), off: 0x220, addr: VTD_BASE + 0x220, size: 16 });
}
