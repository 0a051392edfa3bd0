//! The userspace platform on a file standing in for `/dev/mem`: what it reaches, what it refuses, and that
//! nothing outside the registers, the window and the adopted structures ever changes.

use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use iommu_linux::iomem::{self, WindowError};
use iommu_linux::{
    AccessError, FileRegs, FrameAlloc, LinuxPlatform, MappedRegs, MemErrorKind, Mmio, PhysMem, RegisterIo, SetupError,
    Width,
};

/// A 1 MiB fake physical address space: old RAM 0-0x40000, window 0x40000-0x48000, registers at 0x80000.
const SIZE: usize = 0x10_0000;
const REGS: u64 = 0x8_0000;
const REGS_LEN: u64 = 0x1000;
const WINDOW: Range<u64> = 0x4_0000..0x4_8000;
const OLD: Range<u64> = 0..0x4_0000;

struct Fake {
    path: PathBuf,
    before: Vec<u8>,
}

impl Fake {
    fn new(name: &str) -> Fake {
        let path = std::env::temp_dir().join(format!("iommu-linux-{name}-{}", std::process::id()));
        let before: Vec<u8> = (0..SIZE).map(|i| (i * 7 + 3) as u8).collect();
        File::create(&path).and_then(|mut f| f.write_all(&before)).unwrap();
        Fake { path, before }
    }
    fn platform(&self) -> LinuxPlatform<FileRegs<File>, File> {
        let open = || File::options().read(true).write(true).open(&self.path).unwrap();
        let regs = FileRegs { file: open(), base: REGS, len: REGS_LEN };
        LinuxPlatform::new(regs, open(), WINDOW, vec![OLD]).unwrap()
    }
    /// Byte offsets that differ from the initial contents.
    fn changed(&self) -> Vec<u64> {
        let now = std::fs::read(&self.path).unwrap();
        now.iter().zip(&self.before).enumerate().filter(|(_, (a, b))| a != b).map(|(i, _)| i as u64).collect()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn a_register_access_outside_the_block_is_refused_reads_all_ones_and_writes_nothing() {
    let fake = Fake::new("regs");
    let mut p = fake.platform();
    assert_eq!(p.read32(REGS_LEN as usize), u32::MAX);
    assert_eq!(p.read64(REGS_LEN as usize - 4), u64::MAX, "straddles the end");
    p.write64(REGS_LEN as usize - 4, 0);
    p.write32(usize::MAX - 1, 0);
    assert_eq!(p.counts().errors, 4);
    assert!(matches!(
        p.errors()[0],
        AccessError::RegisterOutOfBlock { op: "read", off: 0x1000, bytes: 4, len: 0x1000 }
    ));
    assert_eq!(p.counts().reg_writes, 0);
    assert!(fake.changed().is_empty());
    // In bounds: exactly the register's bytes.
    p.write32(0x18, 0xdead_beef);
    assert_eq!(p.read32(0x18), 0xdead_beef);
    assert_eq!(fake.changed(), (REGS + 0x18..REGS + 0x1c).collect::<Vec<_>>());
}

#[test]
fn memory_outside_the_window_and_the_old_ram_is_unreachable() {
    let fake = Fake::new("reach");
    let mut p = fake.platform();
    let mut b = [0u8; 8];
    assert!(p.read(OLD.end - 8, &mut b).is_ok());
    assert_eq!(b, fake.before[OLD.end as usize - 8..OLD.end as usize]);
    assert!(p.read(WINDOW.start, &mut b).is_ok());
    let gap = WINDOW.end; // between the window and the registers
    assert_eq!(p.read(gap, &mut b).unwrap_err().kind, MemErrorKind::NotRam);
    assert_eq!(p.read(OLD.end - 4, &mut b).unwrap_err().kind, MemErrorKind::NotRam, "straddles old RAM's end");
    assert_eq!(p.read(u64::MAX - 3, &mut b).unwrap_err().kind, MemErrorKind::NotRam, "wraps");
    assert_eq!(p.read(REGS, &mut b).unwrap_err().kind, MemErrorKind::NotRam, "registers are not memory");
    assert_eq!(p.write_u64(gap, 1).unwrap_err().kind, MemErrorKind::NotRam);
    assert_eq!(p.write_u64(REGS, 1).unwrap_err().kind, MemErrorKind::NotRam);
    assert_eq!(p.counts().old_reads, 1);
    assert_eq!(p.counts().window_reads, 1);
    assert!(fake.changed().is_empty());
}

#[test]
fn old_memory_is_written_only_inside_the_structures_allowed_in_place() {
    let fake = Fake::new("old");
    let mut p = fake.platform();
    assert_eq!(p.write_u64(0x1000, 5).unwrap_err().kind, MemErrorKind::ReadOnly);
    assert!(matches!(p.errors()[0], AccessError::WriteRefused { pa: 0x1000, len: 8 }));
    p.allow_old_write(0x1000..0x2000, "device table").unwrap();
    p.write_u64(0x1ff8, 5).unwrap();
    assert_eq!(p.write_u64(0x1ffc, 5).unwrap_err().kind, MemErrorKind::ReadOnly, "straddles the structure");
    assert_eq!(p.write_u64(0x2000, 5).unwrap_err().kind, MemErrorKind::ReadOnly);
    assert_eq!(fake.changed(), (0x1ff8..0x2000).collect::<Vec<_>>());
    assert_eq!(
        p.allow_old_write(WINDOW.start..WINDOW.start + 0x1000, "not old RAM"),
        Err(SetupError::WritableNotOldRam { start: 0x4_0000, end: 0x4_1000, why: "not old RAM".into() })
    );
    assert_eq!(p.counts().old_writes, 1);
}

#[test]
fn frames_come_zeroed_from_the_window_in_ascending_order_until_it_ends() {
    let fake = Fake::new("frames");
    let mut p = fake.platform();
    let frames: Vec<u64> = std::iter::from_fn(|| p.alloc_frame()).take(100).collect();
    assert_eq!(frames, WINDOW.step_by(4096).collect::<Vec<_>>());
    assert_eq!(p.alloc_frame(), None);
    p.free_frame(frames[0]);
    assert_eq!(p.alloc_frame(), None, "a freed frame is not reused");
    let now = std::fs::read(&fake.path).unwrap();
    assert!(now[WINDOW.start as usize..WINDOW.end as usize].iter().all(|&b| b == 0));
    assert!(fake.changed().iter().all(|a| WINDOW.contains(a)));
    assert_eq!(p.counts().frames, 8);
    assert_eq!(p.window_used(), WINDOW);
}

#[test]
fn a_window_in_the_old_ram_or_unaligned_is_refused() {
    let fake = Fake::new("setup");
    let open = || File::options().read(true).write(true).open(&fake.path).unwrap();
    let regs = || FileRegs { file: open(), base: REGS, len: REGS_LEN };
    let e = LinuxPlatform::new(regs(), open(), 0x3_f000..0x4_1000, vec![OLD]).unwrap_err();
    assert_eq!(e, SetupError::WindowInOldRam { window: 0x3_f000..0x4_1000, ram: OLD });
    let e = LinuxPlatform::new(regs(), open(), 0x4_0800..0x4_1000, vec![OLD]).unwrap_err();
    assert_eq!(e, SetupError::BadWindow { start: 0x4_0800, end: 0x4_1000 });
    assert!(LinuxPlatform::new(regs(), open(), 0x4_1000..0x4_1000, vec![OLD]).is_err(), "empty");
}

/// A driver-like sequence of every kind of access, valid and not: afterwards only the registers, the window
/// and the allowed structure differ from the file's initial contents.
#[test]
fn nothing_outside_the_window_registers_and_adopted_structures_ever_changes() {
    let fake = Fake::new("sweep");
    let mut p = fake.platform();
    p.allow_old_write(0x3000..0x3100, "command buffer").unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..4000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let pa = x % (SIZE as u64 + 0x1000);
        match x >> 60 {
            0..=3 => {
                let _ = p.write_u64(pa & !7, x);
            }
            4..=5 => {
                let _ = p.write(pa, &[0xa5; 24]);
            }
            6..=7 => p.write32((pa % 0x1100) as usize & !3, x as u32),
            8 => p.write64((pa % 0x1100) as usize & !7, x),
            9 => {
                let _ = p.alloc_frame();
            }
            _ => {
                let _ = p.write_u32(0x3000 + (pa % 0x200), x as u32);
            }
        }
    }
    let allowed = |a: u64| WINDOW.contains(&a) || (REGS..REGS + REGS_LEN).contains(&a) || (0x3000..0x3100).contains(&a);
    let changed = fake.changed();
    assert!(changed.iter().any(|&a| a < OLD.end), "the allowed structure was written");
    assert!(changed.iter().any(|&a| WINDOW.contains(&a)));
    let stray: Vec<u64> = changed.into_iter().filter(|&a| !allowed(a)).collect();
    assert!(stray.is_empty(), "written outside: {:#x?}", &stray[..stray.len().min(8)]);
    assert!(p.counts().errors > 0 && p.errors().len() <= iommu_linux::MAX_KEPT_ERRORS);
}

#[test]
fn every_access_can_be_logged() {
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let fake = Fake::new("log");
    let mut p = fake.platform();
    let log = Shared::default();
    p.set_log(Box::new(log.clone()));
    p.write32(0x18, 0x8000_0000);
    let f = p.alloc_frame().unwrap();
    p.write_u64(f + 8, 0x1234).unwrap();
    let _ = p.write_u64(0x10, 1);
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "W32 reg+0x18 <- 0x80000000");
    assert_eq!(lines[1], "FRAME 0x40000");
    assert_eq!(lines[2], "W8 0x40008 <- 0x1234");
    assert!(lines[3].starts_with("ERROR write of 8 bytes at 0x10: the crashed kernel's memory"), "{}", lines[3]);
}

/// The real register path, on a plain file: `mmap` works on files too, so the volatile accesses are
/// checked here without `/dev/mem`.
#[test]
fn mapped_registers_read_and_write_at_their_width_and_refuse_out_of_bounds() {
    let fake = Fake::new("mmap");
    let mut m = MappedRegs::open(&fake.path, REGS, REGS_LEN).unwrap();
    let want = u32::from_le_bytes(fake.before[REGS as usize + 0x1c..REGS as usize + 0x20].try_into().unwrap());
    assert_eq!(m.read(0x1c, Width::W32).unwrap(), want as u64);
    m.write(0x20, Width::W64, 0x0123_4567_89ab_cdef).unwrap();
    assert!(m.read(0xffc, Width::W64).is_err(), "past the end");
    assert!(m.read(0x1e, Width::W32).is_err(), "unaligned");
    assert!(m.write(0x1000, Width::W32, 0).is_err());
    drop(m);
    assert_eq!(fake.changed(), (REGS + 0x20..REGS + 0x28).collect::<Vec<_>>());
    let now = std::fs::read(&fake.path).unwrap();
    assert_eq!(&now[REGS as usize + 0x20..REGS as usize + 0x28], &0x0123_4567_89ab_cdefu64.to_le_bytes());
    assert!(MappedRegs::open(&fake.path, REGS + 8, REGS_LEN).is_err(), "unaligned base");
}

/// The kdump kernel's `/proc/iomem` under QEMU q35 with `memmap=8M$0x13e000000` (abridged).
const KDUMP_IOMEM: &str = "\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
000a0000-000bffff : PCI Bus 0000:00
6e000000-7dffffff : System RAM
  78000000-78ffffff : Kernel code
fed90000-fed90fff : reserved
  fed90000-fed90fff : dmar0
12f000000-13dffffff : System RAM
13e000000-13e7fffff : Reserved
13e800000-13effffff : System RAM
";

#[test]
fn proc_iomem_parses_into_ranges_with_exclusive_ends_and_depths() {
    let e = iomem::parse(KDUMP_IOMEM).unwrap();
    assert_eq!(e.len(), 10);
    assert_eq!(e[4], iomem::Entry { range: 0x7800_0000..0x7900_0000, name: "Kernel code".into(), depth: 1 });
    assert_eq!(
        iomem::system_ram(&e),
        vec![0x1000..0x9_fc00, 0x6e00_0000..0x7e00_0000, 0x1_2f00_0000..0x1_3e00_0000, 0x1_3e80_0000..0x1_3f00_0000]
    );
    let unit = 0xfed9_0000..0xfed9_1000;
    let names: Vec<&str> = iomem::overlapping(&e, &unit).map(|x| x.name.as_str()).collect();
    assert_eq!(names, ["reserved", "dmar0"]);
}

#[test]
fn proc_iomem_refuses_malformed_lines_naming_them() {
    for (text, why) in [
        ("1000-2000 System RAM\n", "no ' : '"),
        ("zz-2000 : x\n", "start is not hex"),
        ("2000-1000 : x\n", "end below start"),
        ("   1000-2000 : x\n", "odd indent"),
        ("0-ffffffffffffffff : x\n", "end overflows"),
    ] {
        let e = iomem::parse(&format!("0-fff : ok\n{text}")).unwrap_err();
        assert!(matches!(e, iomem::IomemError::Line { line: 2, why: w, .. } if w == why), "{text}: {e}");
    }
    assert_eq!(iomem::parse("00000000-00000000 : System RAM\n"), Err(iomem::IomemError::Hidden));
}

#[test]
fn a_window_must_be_reserved_unclaimed_and_outside_the_kdump_kernels_ram() {
    let e = iomem::parse(KDUMP_IOMEM).unwrap();
    assert_eq!(iomem::check_window(&e, &(0x1_3e00_0000..0x1_3e80_0000)), Ok(()));
    assert!(matches!(
        iomem::check_window(&e, &(0x1_3e70_0000..0x1_3e90_0000)),
        Err(WindowError::OverlapsRam { ram, .. }) if ram == (0x1_3e80_0000..0x1_3f00_0000)
    ));
    assert!(matches!(iomem::check_window(&e, &(0x0..0x1000)), Ok(())));
    assert!(matches!(iomem::check_window(&e, &(0x1_4000_0000..0x1_4010_0000)), Err(WindowError::NotReserved { .. })));
    assert!(
        matches!(iomem::check_window(&e, &(0xfed9_0000..0xfed9_1000)), Err(WindowError::NotReserved { .. })),
        "lower-case 'reserved' is a reserve= claim, not memmap="
    );
    let claimed = format!("{KDUMP_IOMEM}13f000000-13f0fffff : Reserved\n  13f010000-13f010fff : pmem0\n");
    let e = iomem::parse(&claimed).unwrap();
    assert!(matches!(
        iomem::check_window(&e, &(0x1_3f00_0000..0x1_3f10_0000)),
        Err(WindowError::Claimed { name, .. }) if name == "pmem0"
    ));
}

/// Memory through `mmap` (arm64's only way to the crashed kernel's RAM): unaligned, chunk-crossing accesses
/// land byte-exact, the window works as with `pread`, and no more than `SLOTS` mappings stay live however
/// many places are touched.
#[test]
fn mapped_memory_reads_and_writes_byte_exact_across_chunks_with_a_bounded_number_of_mappings() {
    use iommu_linux::{DevMem, MappedPhys, PhysFile};
    let fake = Fake::new("mapped-phys");
    let m = MappedPhys::with_chunk(&fake.path, 0x2000).unwrap();
    let data: Vec<u8> = (0..0x3003u32).map(|i| (i * 13 + 5) as u8).collect();
    m.write_at(&data, 0x1ffd).unwrap();
    let mut back = vec![0u8; data.len()];
    m.read_at(&mut back, 0x1ffd).unwrap();
    assert_eq!(back, data);
    let file = std::fs::read(&fake.path).unwrap();
    assert_eq!(&file[0x1ffd..0x1ffd + data.len()], &data[..], "the file itself holds the bytes");
    assert_eq!(file[0x1ffc], fake.before[0x1ffc]);
    assert_eq!(file[0x1ffd + data.len()], fake.before[0x1ffd + data.len()]);
    // Touch every chunk of the fake: 128 chunks, never more than SLOTS mapped at once.
    for pa in (0..SIZE as u64).step_by(0x2000) {
        let mut b = [0u8; 3];
        m.read_at(&mut b, pa + 1).unwrap();
        assert_eq!(b[..], file[pa as usize + 1..pa as usize + 4]);
        assert!(m.mappings_live() <= MappedPhys::SLOTS);
    }
    assert!(m.mappings_made() >= (SIZE / 0x2000) as u64);
    assert_eq!(m.mappings_live(), MappedPhys::SLOTS);
    assert!(MappedPhys::with_chunk(&fake.path, 0x3000).is_err(), "a chunk is a power of two");

    // The platform on mapped memory: frames zeroed in the window, old RAM read, nothing else written.
    let open = || File::options().read(true).write(true).open(&fake.path).unwrap();
    let regs = FileRegs { file: open(), base: REGS, len: REGS_LEN };
    let mem = DevMem::Mapped(MappedPhys::open(&fake.path).unwrap());
    assert_eq!(mem.how(), "mmap");
    let before = std::fs::read(&fake.path).unwrap();
    let mut p = LinuxPlatform::new(regs, mem, WINDOW, vec![OLD]).unwrap();
    let f = p.alloc_frame().unwrap();
    assert_eq!(f, WINDOW.start);
    assert_eq!(p.read_u64(f + 8).unwrap(), 0);
    p.write_u64(f + 16, 0x1122_3344_5566_7788).unwrap();
    assert_eq!(p.read_u32(0x100).unwrap(), u32::from_le_bytes(before[0x100..0x104].try_into().unwrap()));
    assert!(p.write_u32(0x100, 0).is_err(), "old RAM stays read-only");
    let now = std::fs::read(&fake.path).unwrap();
    let changed: Vec<usize> = (0..SIZE).filter(|&i| now[i] != before[i]).collect();
    assert!(changed.iter().all(|&i| (WINDOW.start as usize..WINDOW.start as usize + 4096).contains(&i)));
    assert_eq!(&now[f as usize + 16..f as usize + 24], &0x1122_3344_5566_7788u64.to_le_bytes());
}
