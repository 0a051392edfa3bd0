//! ElfCore on hand-built cores: layout, uncaptured tails, boundaries, overlaps, and every refusal.

use iommu_driver::{MemError, MemErrorKind, PhysMem};
use iommu_dump::{ElfCore, ElfError};

use crate::builder::{core, pattern, put_at, Ph, EHDR, ET_CORE, PHDR, PT_NOTE};

const NC: MemErrorKind = MemErrorKind::NotCaptured;

/// Two segments listed out of address order; the first has an uncaptured tail (memsz > filesz) and
/// ends exactly where the second starts.
fn two_segments() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (a, b) = (pattern(1, 0x1000), pattern(7, 0x800));
    let phdrs = [Ph::load(0x1000 + 0x200, 0x3000, 0x800, 0x800), Ph::load(0x200, 0x1000, 0x1000, 0x2000)];
    let mut file = core(ET_CORE, &phdrs, 0x1a00);
    put_at(&mut file, 0x200, &a);
    put_at(&mut file, 0x1200, &b);
    (file, a, b)
}

fn read(mem: &impl PhysMem, pa: u64, len: usize) -> Result<Vec<u8>, MemError> {
    let mut buf = vec![0xaa; len];
    mem.read(pa, &mut buf).map(|()| buf)
}

#[test]
fn reads_segments_and_refuses_bytes_past_filesz() {
    let (file, a, b) = two_segments();
    let mem = ElfCore::from_bytes(file).unwrap();
    assert_eq!(mem.machine(), 62);
    let segs: Vec<_> = mem.segments().iter().map(|s| (s.index, s.paddr, s.size, s.filesz)).collect();
    assert_eq!(segs, [(1, 0x1000, 0x2000, 0x1000), (0, 0x3000, 0x800, 0x800)], "sorted by address");
    assert_eq!(mem.ram_ranges(), vec![0x1000..0x3800], "contiguous segments merge");

    assert_eq!(read(&mem, 0x1000, 0x1000).unwrap(), a);
    assert_eq!(read(&mem, 0x1ff0, 0x10).unwrap(), a[0xff0..]);
    assert_eq!(read(&mem, 0x1ff0, 0x20), Err(MemError { addr: 0x2000, kind: NC }), "fails at p_filesz");
    assert_eq!(read(&mem, 0x2800, 8), Err(MemError { addr: 0x2800, kind: NC }), "past p_filesz is not zeros");
    assert_eq!(read(&mem, 0x2ffc, 8), Err(MemError { addr: 0x2ffc, kind: NC }));
    assert_eq!(mem.read_u64(0x3000).unwrap(), u64::from_le_bytes(b[..8].try_into().unwrap()));
}

#[test]
fn uncovered_addresses_fail_at_the_first_missing_byte() {
    let mem = ElfCore::from_bytes(two_segments().0).unwrap();
    assert_eq!(read(&mem, 0xfff, 1), Err(MemError { addr: 0xfff, kind: NC }));
    assert_eq!(read(&mem, 0x37fc, 8), Err(MemError { addr: 0x3800, kind: NC }));
    assert_eq!(read(&mem, u64::MAX - 3, 8), Err(MemError { addr: u64::MAX - 3, kind: NC }));
    assert_eq!(read(&mem, 0, 0), Ok(vec![]), "an empty read touches nothing");
}

#[test]
fn writes_are_refused() {
    let mut mem = ElfCore::from_bytes(two_segments().0).unwrap();
    assert_eq!(mem.write_u32(0x1000, 5), Err(MemError { addr: 0x1000, kind: MemErrorKind::ReadOnly }));
    assert_eq!(read(&mem, 0x1000, 4).unwrap(), pattern(1, 4), "and change nothing");
}

#[test]
fn open_reads_from_disk_like_from_bytes() {
    let (file, a, _) = two_segments();
    let path = std::env::temp_dir().join(format!("iommu-dump-test-{}.core", std::process::id()));
    std::fs::write(&path, &file).unwrap();
    let disk = ElfCore::open(&path).unwrap();
    assert_eq!(disk.file_len(), file.len() as u64);
    assert_eq!(read(&disk, 0x1000, 0x1000).unwrap(), a);
    assert_eq!(disk.segments(), ElfCore::from_bytes(file.clone()).unwrap().segments());

    // A file that shrinks under an open core: its bytes are no longer in the dump, and reads say so.
    std::fs::write(&path, &file[..0x300]).unwrap(); // the same inode, truncated
    let got = read(&disk, 0x1000, 0x200);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(got, Err(MemError { addr: 0x1000, kind: NC }));

    let err = ElfCore::open(&path).unwrap_err();
    assert!(matches!(&err, ElfError::Open { path: p, .. } if *p == path), "names the path: {err:?}");
}

#[test]
fn a_read_crosses_into_the_next_contiguous_segment() {
    let phdrs = [Ph::load(0x200, 0x1000, 0x1000, 0x1000), Ph::load(0x1200, 0x2000, 0x800, 0x800)];
    let mut file = core(ET_CORE, &phdrs, 0x1a00);
    let (a, b) = (pattern(1, 0x1000), pattern(7, 0x800));
    put_at(&mut file, 0x200, &a);
    put_at(&mut file, 0x1200, &b);
    let crossing = read(&ElfCore::from_bytes(file).unwrap(), 0x1ffc, 8).unwrap();
    assert_eq!((&crossing[..4], &crossing[4..]), (&a[0xffc..], &b[..4]));
}

/// The `/proc/vmcore` shape: a PT_NOTE, and a kernel-image PT_LOAD inside a System RAM PT_LOAD, its
/// bytes at another file offset. `kernel` is the inner segment's payload.
fn vmcore_shape(kernel: &[u8], kernel_filesz: u64) -> Vec<u8> {
    let phdrs = [
        Ph { p_type: PT_NOTE, offset: 0x200, paddr: 0, filesz: 12, memsz: 12 },
        Ph::load(0x500, 0x2000, kernel_filesz, 0x100),
        Ph::load(0x300, 0x1f00, 0x200, 0x200),
    ];
    let mut file = core(ET_CORE, &phdrs, 0x600);
    put_at(&mut file, 0x200, b"note-bytes!!");
    put_at(&mut file, 0x300, &pattern(3, 0x200));
    put_at(&mut file, 0x500, kernel);
    file
}

#[test]
fn a_segment_mapping_the_same_bytes_twice_is_accepted_and_listed() {
    let same = pattern(3, 0x200)[0x100..].to_vec();
    let mem = ElfCore::from_bytes(vmcore_shape(&same, 0x100)).unwrap();
    assert_eq!(mem.notes().unwrap(), b"note-bytes!!");
    assert_eq!(mem.shadowed(), [1]);
    assert_eq!(mem.segments().len(), 1);
    assert_eq!(read(&mem, 0x2000, 4).unwrap(), same[..4]);
}

#[test]
fn segments_that_disagree_about_the_same_memory_are_refused() {
    let mut differs = pattern(3, 0x200)[0x100..].to_vec();
    differs[0x42] ^= 1;
    let err = refuse(vmcore_shape(&differs, 0x100));
    assert!(matches!(err, ElfError::SegmentsDisagree { index: 1, other: 2, paddr: 0x2042 }), "{err:?}");

    // The inner segment leaves bytes out of the file: nothing to compare them with.
    let same = pattern(3, 0x200)[0x100..].to_vec();
    let err = refuse(vmcore_shape(&same, 0x80));
    assert!(matches!(err, ElfError::OverlapNotCaptured { index: 1, other: 2, paddr: 0x2080 }), "{err:?}");
}

fn refuse(file: Vec<u8>) -> ElfError {
    ElfCore::from_bytes(file).expect_err("must be refused")
}

#[test]
fn truncated_and_foreign_headers_are_refused() {
    let (file, ..) = two_segments();
    assert!(matches!(refuse(file[..63].to_vec()), ElfError::Truncated { len: 63 }));
    assert!(matches!(refuse(vec![]), ElfError::Truncated { len: 0 }));
    // Header intact, program headers cut off.
    let cut = refuse(file[..EHDR + PHDR].to_vec());
    assert!(matches!(cut, ElfError::ProgramHeadersOutsideFile { phoff: 64, count: 2, .. }), "{cut:?}");

    let mut f = file.clone();
    f[0] = 0;
    assert!(matches!(refuse(f), ElfError::NotElf { magic: [0, b'E', b'L', b'F'] }));
    let mut f = file.clone();
    f[4] = 1;
    assert!(matches!(refuse(f), ElfError::NotElf64 { class: 1 }));
    let mut f = file.clone();
    f[5] = 2;
    assert!(matches!(refuse(f), ElfError::NotLittleEndian { data: 2 }));
    assert!(matches!(refuse(core(2, &[], 64)), ElfError::NotCore { e_type: 2 }));
    let mut f = file.clone();
    f[54] = 32; // e_phentsize
    assert!(matches!(refuse(f), ElfError::Object { .. }));
}

#[test]
fn hostile_segments_are_refused_by_index() {
    let ok = Ph::load(0x100, 0x1000, 0x10, 0x10);
    type Expect = fn(&ElfError) -> bool;
    let cases: [(Ph, Expect); 5] = [
        (Ph::load(0x100, 0x1000, 0x1000, 0x1000), |e| {
            matches!(e, ElfError::SegmentOutsideFile { index: 1, offset: 0x100, filesz: 0x1000, file_len: 0x200 })
        }),
        (Ph::load(u64::MAX, 0x1000, 2, 2), |e| matches!(e, ElfError::SegmentOutsideFile { index: 1, .. })),
        (Ph::load(0x100, u64::MAX - 0xf, 0x10, 0x10), |e| {
            matches!(e, ElfError::SegmentAddressOverflow { index: 1, paddr: 0xffff_ffff_ffff_fff0, size: 0x10 })
        }),
        (Ph::load(0x100, 0x2000, 0x20, 0x10), |e| matches!(e, ElfError::FileszExceedsMemsz { index: 1, .. })),
        (Ph::load(0x100, 0x1008, 0x10, 0x10), |e| {
            matches!(e, ElfError::SegmentsOverlap { index: 1, other: 0, paddr: 0x1008 })
        }),
    ];
    for (bad, is_expected) in cases {
        let err = refuse(core(ET_CORE, &[ok, bad], 0x200));
        assert!(is_expected(&err), "{bad:?}: {err:?}");
    }
}

#[test]
fn oversized_notes_are_refused() {
    let size = iommu_dump::elf::MAX_NOTES + 1;
    let note = Ph { p_type: PT_NOTE, offset: 0x100, paddr: 0, filesz: size, memsz: size };
    let err = refuse(core(ET_CORE, &[note], 0x100 + size as usize));
    assert!(matches!(err, ElfError::NotesTooLarge { size: s, .. } if s == size), "{err:?}");
}

#[test]
fn extended_program_header_counts_are_capped() {
    // e_phnum = PN_XNUM with no section header: object's own check refuses it.
    let mut f = core(ET_CORE, &[], 0x100);
    put_at(&mut f, 32, &64u64.to_le_bytes());
    put_at(&mut f, 56, &0xffffu16.to_le_bytes());
    assert!(matches!(refuse(f.clone()), ElfError::Object { what: "e_phnum", .. }));
    // Section 0 at 0x80 claims 100,000 program headers in sh_info.
    put_at(&mut f, 40, &0x80u64.to_le_bytes());
    put_at(&mut f, 0x80 + 44, &100_000u32.to_le_bytes());
    let err = refuse(f);
    assert!(matches!(err, ElfError::TooManyProgramHeaders { count: 100_000, max: 65_535 }), "{err:?}");
}

/// A `VMCOREINFO` note as Linux `append_elf_note` lays it out.
fn vmcoreinfo_note(text: &str) -> Vec<u8> {
    iommu_dump::notes::note(b"VMCOREINFO", 0, text.as_bytes())
}

#[test]
fn the_sme_mask_comes_from_the_crashed_kernels_vmcoreinfo() {
    let hw = |text: Option<&str>| {
        let note = text.map(vmcoreinfo_note).unwrap_or_default();
        let mut phdrs = vec![Ph::load(0x1000, 0, 0x1000, 0x1000)];
        if !note.is_empty() {
            phdrs.push(Ph {
                p_type: PT_NOTE,
                offset: 0x200,
                paddr: 0,
                filesz: note.len() as u64,
                memsz: note.len() as u64,
            });
        }
        let mut f = core(ET_CORE, &phdrs, 0x2000);
        put_at(&mut f, 0x200, &note);
        let regs = iommu_dump::SnapshotMmio::new(iommu_dump::RegSnapshot::parse("").unwrap(), 0);
        iommu_dump::DumpHw { regs, mem: iommu_dump::RecordingMem::new(iommu_dump::Dump::from_bytes(f).unwrap()) }
    };
    let sme = hw(Some("OSRELEASE=6.12.0\nNUMBER(sme_mask)=2251799813685248\n"));
    assert_eq!(sme.sme_mask().unwrap(), 1 << 51);
    // A fixture saved from it keeps the note, so the mask with it.
    let _ = iommu_driver::PhysMem::read(&sme.mem, 0, &mut [0u8; 8]);
    let path = std::env::temp_dir().join(format!("iommu-dump-sme-{}.core", std::process::id()));
    sme.save_touched(&path).unwrap();
    let saved = iommu_dump::Dump::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let regs = iommu_dump::SnapshotMmio::new(iommu_dump::RegSnapshot::parse("").unwrap(), 0);
    let saved = iommu_dump::DumpHw { regs, mem: iommu_dump::RecordingMem::new(saved) };
    assert_eq!(saved.sme_mask().unwrap(), 1 << 51, "the saved fixture keeps VMCOREINFO");
    assert_eq!(hw(Some("OSRELEASE=6.12.0\n")).sme_mask().unwrap(), 0, "a kernel that does not say");
    assert_eq!(hw(None).sme_mask().unwrap(), 0, "no VMCOREINFO (a QEMU dump-guest-memory core)");
    assert!(matches!(
        hw(Some("NUMBER(sme_mask)=banana\n")).sme_mask(),
        Err(iommu_dump::InputError::VmcoreInfo(iommu_dump::VmcoreInfoError::NotANumber { .. }))
    ));
}

/// `/proc/kcore`'s shape: System RAM with its physical address, the kernel text again inside it (bytes that
/// moved on while the file was read), vmalloc space with `p_paddr` = -1.
#[test]
fn kcore_is_read_as_its_ram_segments() {
    let ram = Ph::load(0x1000, 0x10_0000, 0x2000, 0x2000);
    let text = Ph::load(0x3000, 0x10_1000, 0x800, 0x800);
    let vmalloc = Ph::load(0x3800, iommu_dump::elf::KCORE_NO_PADDR, 0x800, 0x800);
    let mut f = core(ET_CORE, &[ram, text, vmalloc], 0x4000);
    put_at(&mut f, 0x1000, &pattern(1, 0x2000));
    put_at(&mut f, 0x3000, &pattern(2, 0x800));
    assert!(matches!(refuse(f.clone()), ElfError::SegmentAddressOverflow { index: 2, .. }), "a dump has no -1");
    let k = ElfCore::from_source_as(Box::new(f), iommu_dump::Shape::Kcore).unwrap();
    assert_eq!(k.ram_ranges(), vec![0x10_0000u64..0x10_2000]);
    assert_eq!(read(&k, 0x10_1000, 8).unwrap(), pattern(1, 0x2000)[0x1000..0x1008], "RAM, not the text copy");
    assert_eq!(k.shadowed(), [1]);
}
