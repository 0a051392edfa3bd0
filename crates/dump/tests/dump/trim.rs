//! write_core round trips, and trimming a dump through RecordingMem.

use std::collections::{BTreeMap, BTreeSet};

use iommu_driver::{MemError, MemErrorKind, PhysMem};
use iommu_dump::{write_core, write_core_for, Arch, ElfCore, RecordingMem, TrimError, PAGE_SIZE};

use crate::builder::{core, pattern, put_at, Ph, ET_CORE};

/// Sparse test memory: whole pages, anything else NotCaptured. Writes are refused so that a test
/// passing through RecordingMem sees the inner result.
struct PageMem(BTreeMap<u64, Vec<u8>>);

impl PageMem {
    fn with(pages: &[u64]) -> Self {
        PageMem(pages.iter().map(|&p| (p, pattern((p >> 12) as u8, PAGE_SIZE as usize))).collect())
    }
}

impl PhysMem for PageMem {
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        for (i, b) in buf.iter_mut().enumerate() {
            let a = pa + i as u64;
            let page =
                self.0.get(&(a & !(PAGE_SIZE - 1))).ok_or(MemError { addr: a, kind: MemErrorKind::NotCaptured })?;
            *b = page[(a % PAGE_SIZE) as usize];
        }
        Ok(())
    }
    fn write(&mut self, pa: u64, _: &[u8]) -> Result<(), MemError> {
        Err(MemError { addr: pa, kind: MemErrorKind::ReadOnly })
    }
}

fn page(mem: &impl PhysMem, pa: u64) -> Result<Vec<u8>, MemError> {
    let mut buf = vec![0; PAGE_SIZE as usize];
    mem.read(pa, &mut buf).map(|()| buf)
}

#[test]
fn round_trip_keeps_exactly_the_chosen_pages() {
    let src = PageMem::with(&[0x1000, 0x2000, 0x3000, 0x5000, 0x7000]);
    let wanted: BTreeSet<u64> = [0x1000, 0x2000, 0x5000, 0x9000].into();
    let mut out = Vec::new();
    let summary = write_core(&src, &wanted, Some(b"CORE\0\0\0\0"), &mut out).unwrap();
    assert_eq!((summary.segments, summary.pages_written, summary.pages_skipped), (2, 3, vec![0x9000]));
    assert!(out.len() < 4 * PAGE_SIZE as usize, "small: {} bytes", out.len());

    let core = ElfCore::from_bytes(out).unwrap();
    assert_eq!(core.machine(), 62);
    assert_eq!(core.ram_ranges(), [0x1000..0x3000, 0x5000..0x6000], "contiguous pages share a PT_LOAD");
    assert!(core.segments().iter().all(|s| s.filesz == s.size));
    assert_eq!(core.notes().unwrap(), b"CORE\0\0\0\0");
    for &p in &[0x1000, 0x2000, 0x5000] {
        assert_eq!(page(&core, p).unwrap(), page(&src, p).unwrap(), "page {p:#x}");
    }
    for &p in &[0x3000, 0x7000, 0x9000, 0] {
        assert_eq!(page(&core, p), Err(MemError { addr: p, kind: MemErrorKind::NotCaptured }), "page {p:#x}");
    }
}

#[test]
fn arch_empty_sets_and_bad_pages() {
    let src = PageMem::with(&[0x1000]);
    let mut out = Vec::new();
    write_core_for(Arch::Aarch64, &src, &[0x1000].into(), None, &mut out).unwrap();
    let core = ElfCore::from_bytes(out).unwrap();
    assert_eq!((core.machine(), core.notes().unwrap().len()), (183, 0));

    let mut out = Vec::new();
    write_core_for(Arch::from_machine(3), &src, &[0x1000].into(), None, &mut out).unwrap();
    assert_eq!(ElfCore::from_bytes(out).unwrap().machine(), 3, "another e_machine is kept");

    let mut out = Vec::new();
    write_core(&src, &BTreeSet::new(), None, &mut out).unwrap();
    assert!(ElfCore::from_bytes(out).unwrap().segments().is_empty());

    let err = write_core(&src, &[0x1008].into(), None, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, TrimError::Unaligned { addr: 0x1008 }), "{err:?}");
    let top = !(PAGE_SIZE - 1);
    let err = write_core(&src, &[top].into(), None, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, TrimError::PageOutOfRange { addr } if addr == top), "{err:?}");
}

#[test]
fn write_errors_surface() {
    struct Full;
    impl std::io::Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::StorageFull.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let err = write_core(&PageMem::with(&[0]), &[0].into(), None, &mut Full).unwrap_err();
    assert!(matches!(err, TrimError::Io(ref e) if e.kind() == std::io::ErrorKind::StorageFull), "{err:?}");
}

#[test]
fn recording_mem_records_every_page_a_read_touches() {
    let mut rec = RecordingMem::new(PageMem::with(&[0x1000, 0x2000]));
    let mut buf = [0; 8];
    rec.read(0x1ffc, &mut buf).unwrap();
    assert_eq!(rec.read(0x8000, &mut buf), Err(MemError { addr: 0x8000, kind: MemErrorKind::NotCaptured }));
    rec.read(0x9000, &mut []).unwrap();
    rec.read(u64::MAX - 2, &mut buf).unwrap_err();
    assert_eq!(rec.write_u32(0x5000, 1), Err(MemError { addr: 0x5000, kind: MemErrorKind::ReadOnly }), "forwarded");
    let top = !(PAGE_SIZE - 1);
    assert_eq!(rec.touched(), [0x1000, 0x2000, 0x8000, top].into(), "writes and empty reads are not recorded");
    let mut big = vec![0; 3 * PAGE_SIZE as usize + 1];
    rec.read(0x10_0fff, &mut big).unwrap_err();
    assert_eq!(rec.touched().range(0x10_0000..0x20_0000).count(), 4, "every page of a long read");
}

/// The way fixtures are made: run code over a recording dump, write what it touched, and the small
/// core answers that code exactly as the dump did.
#[test]
fn trimmed_dump_answers_recorded_reads_like_the_original() {
    let phdrs = [Ph::load(0x1000, 0x10_0000, 0x3000, 0x4000)];
    let mut file = core(ET_CORE, &phdrs, 0x4000);
    put_at(&mut file, 0x1000, &pattern(9, 0x3000));
    let dump = RecordingMem::new(ElfCore::from_bytes(file).unwrap());
    let walk = |mem: &dyn PhysMem| -> Vec<Result<u64, MemError>> {
        [0x10_0008, 0x10_2ff8, 0x10_3000, 0x20_0000].iter().map(|&a| mem.read_u64(a)).collect()
    };
    let before = walk(&dump);
    let mut out = Vec::new();
    let summary = write_core(dump.inner(), &dump.touched(), None, &mut out).unwrap();
    assert_eq!(summary.pages_skipped, [0x10_3000, 0x20_0000]);
    let small = ElfCore::from_bytes(out).unwrap();
    assert_eq!(walk(&small), before);
    let nc = |addr| Err(MemError { addr, kind: MemErrorKind::NotCaptured });
    assert_eq!(before[2], nc(0x10_3000), "a page past p_filesz is not in the dump, nor in the trimmed core");
}
