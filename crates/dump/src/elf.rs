//! ELF64 little-endian core files as physical memory: QEMU `dump-guest-memory` output and the crash
//! kernel's `/proc/vmcore` share one shape: a `PT_NOTE` (CPU state, `VMCOREINFO`) and `PT_LOAD`
//! segments whose `p_paddr` is the physical address, `p_offset` the file offset and `p_filesz` the
//! bytes present. For a program loader `p_memsz > p_filesz` means a zero-filled tail (gABI, "Program
//! Header"); in a core it means memory that exists but was not written out (QEMU clamps a segment's
//! `p_filesz` to the guest memory it dumped, `get_offset_range` in QEMU's `dump/dump.c`), so that tail
//! reads as "not captured", never as zeros.
//!
//! The headers are parsed once with the `object` crate (its checks on the header, `e_phentsize` and
//! extended `e_phnum` are better kept than ours would be); after that the file stays open and each
//! read goes to the file at its offset, because dumps are gigabytes and a test fixture is kilobytes.

use std::fmt;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use iommu_platform::{MemError, MemErrorKind, PhysMem};
use object::elf;
use object::read::elf::{FileHeader as _, ProgramHeader as _};
use object::read::{ReadCache, ReadRef};
use object::LittleEndian as LE;

use crate::source::{Cursor, FileSource, ReadAt};

/// The most program headers we accept. `e_phnum` is 16 bits; only extended numbering (`PN_XNUM`,
/// the count in section 0's `sh_info`) goes higher, and a count from there is a 32-bit number from a
/// hostile file: this bounds the segment table we allocate.
pub const MAX_PHNUM: u32 = 65_535;
/// The most `PT_NOTE` bytes [`ElfCore::notes`] will read: per-CPU register notes and `VMCOREINFO` are
/// kilobytes even on large machines, so anything near this is a broken file, not a big machine.
pub const MAX_NOTES: u64 = 16 << 20;
/// The most bytes [`ElfCore`] compares to accept segments that map the same physical memory twice (the
/// kernel image inside System RAM in `/proc/vmcore`: tens of MiB). More than this is refused, so a
/// hostile file cannot make opening it read without end.
pub const MAX_OVERLAP_CHECK: u64 = 512 << 20;

const EHDR_SIZE: u64 = size_of::<elf::FileHeader64<LE>>() as u64;
const PHDR_SIZE: u64 = size_of::<elf::ProgramHeader64<LE>>() as u64;

/// One `PT_LOAD` segment of physical memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Its index in the program header table, so errors and reports can name it.
    pub index: usize,
    /// `p_paddr`: the first physical address.
    pub paddr: u64,
    /// `p_memsz`: the bytes of physical memory it covers.
    pub size: u64,
    /// `p_offset`: where its bytes start in the file.
    pub offset: u64,
    /// `p_filesz`: the bytes present in the file; the rest of `size` is memory the dump does not hold.
    pub filesz: u64,
}

impl Segment {
    /// The physical range covered. Cannot overflow: [`ElfCore`] rejects such segments.
    pub fn range(&self) -> Range<u64> {
        self.paddr..self.paddr + self.size
    }
}

/// What kind of ELF core a file is: how its program headers are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A dump (`/proc/vmcore`, `dump-guest-memory`, makedumpfile's ELF output): a snapshot, so a segment
    /// inside another must hold the same bytes.
    Core,
    /// A running kernel's `/proc/kcore` (Linux fs/proc/kcore.c `elf_kcore_store_hdr`): one `PT_LOAD` per
    /// System RAM range with its physical address, the kernel text again inside one of them, and vmalloc,
    /// vmemmap and module space with `p_paddr` = -1, which are not physical memory and are skipped. The
    /// memory changes while it is read, so a segment inside another is dropped without comparing bytes.
    Kcore,
}

/// `p_paddr` of a `/proc/kcore` segment that has no physical address (`(elf_addr_t)-1`).
pub const KCORE_NO_PADDR: u64 = u64::MAX;

/// Why a core file was refused. Each names the segment (program header index) and value at fault.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// The file could not be opened or its length taken.
    #[error("{path}: {source}", path = path.display())]
    Open {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is shorter than the 64-byte `Elf64_Ehdr`.
    #[error("file is {len} bytes, shorter than the {EHDR_SIZE}-byte ELF64 header")]
    Truncated {
        /// File length, bytes.
        len: u64,
    },
    /// `e_ident[EI_MAG0..=EI_MAG3]` is not `\x7fELF`.
    #[error("not an ELF file (magic {magic:02x?})")]
    NotElf {
        /// The four bytes found.
        magic: [u8; 4],
    },
    /// `e_ident[EI_CLASS]` is not `ELFCLASS64`: a 32-bit core, which this reader does not decode.
    #[error("ELF class {class} is not ELFCLASS64 (2)")]
    NotElf64 {
        /// The `EI_CLASS` byte.
        class: u8,
    },
    /// `e_ident[EI_DATA]` is not `ELFDATA2LSB`: a big-endian core.
    #[error("ELF data encoding {data} is not little-endian (ELFDATA2LSB, 1)")]
    NotLittleEndian {
        /// The `EI_DATA` byte.
        data: u8,
    },
    /// `e_type` is not `ET_CORE`: an executable or object file, not a memory dump.
    #[error("ELF type {e_type} is not ET_CORE (4)")]
    NotCore {
        /// The `e_type` found.
        e_type: u16,
    },
    /// The `object` crate refused the file header or program header table (bad `e_phentsize`, a broken
    /// extended `e_phnum`, ...).
    #[error("{what}: {source}")]
    Object {
        /// What was being parsed (`ELF header`, `e_phnum`, `program headers`).
        what: &'static str,
        /// `object`'s error.
        source: object::read::Error,
    },
    /// The program header count (extended numbering included) is over [`MAX_PHNUM`].
    #[error("{count} program headers, more than the {max} accepted")]
    TooManyProgramHeaders {
        /// The count the file claims.
        count: u32,
        /// [`MAX_PHNUM`].
        max: u32,
    },
    /// `e_phoff` + count × `e_phentsize` runs past the end of the file.
    #[error("{count} program headers at offset {phoff:#x} run past the end of the {file_len}-byte file")]
    ProgramHeadersOutsideFile {
        /// `e_phoff`, bytes.
        phoff: u64,
        /// The program header count.
        count: u32,
        /// File length, bytes.
        file_len: u64,
    },
    /// A `PT_LOAD` or `PT_NOTE`'s `p_offset` + `p_filesz` runs past the end of the file (a truncated copy).
    #[error("segment {index}: offset {offset:#x} + filesz {filesz:#x} runs past the end of the {file_len}-byte file")]
    SegmentOutsideFile {
        /// Program header index.
        index: usize,
        /// `p_offset`, bytes.
        offset: u64,
        /// `p_filesz`, bytes.
        filesz: u64,
        /// File length, bytes.
        file_len: u64,
    },
    /// A `PT_LOAD`'s `p_paddr` + `p_memsz` is past 2^64.
    #[error("segment {index}: p_paddr {paddr:#x} + p_memsz {size:#x} overflows 64 bits")]
    SegmentAddressOverflow {
        /// Program header index.
        index: usize,
        /// `p_paddr`.
        paddr: u64,
        /// `p_memsz`, bytes.
        size: u64,
    },
    /// A `PT_LOAD` holds more file bytes than the memory it maps.
    #[error("segment {index}: p_filesz {filesz:#x} is larger than p_memsz {size:#x}")]
    FileszExceedsMemsz {
        /// Program header index.
        index: usize,
        /// `p_filesz`, bytes.
        filesz: u64,
        /// `p_memsz`, bytes.
        size: u64,
    },
    /// Two `PT_LOAD`s share some physical memory without one containing the other.
    #[error("segment {index} at {paddr:#x} partly overlaps segment {other}")]
    SegmentsOverlap {
        /// Program header index of the later-starting segment.
        index: usize,
        /// Program header index of the earlier segment it partly overlaps.
        other: usize,
        /// `p_paddr` of `index`.
        paddr: u64,
    },
    /// A `PT_LOAD` wholly inside another holds different bytes for the same memory ([`Shape::Core`] only).
    #[error(
        "segment {index} maps physical memory segment {other} also maps, with different bytes (first at {paddr:#x})"
    )]
    SegmentsDisagree {
        /// Program header index of the contained segment.
        index: usize,
        /// Program header index of its container.
        other: usize,
        /// Physical address of the first differing byte.
        paddr: u64,
    },
    /// A `PT_LOAD` wholly inside another, where either lacks file bytes (`p_filesz` < `p_memsz`) for the
    /// shared memory, so the two cannot be compared ([`Shape::Core`] only).
    #[error("segment {index} maps memory segment {other} also maps, without its bytes in the file (at {paddr:#x})")]
    OverlapNotCaptured {
        /// Program header index of the contained segment.
        index: usize,
        /// Program header index of its container.
        other: usize,
        /// Physical address of the first byte not in the file.
        paddr: u64,
    },
    /// Contained segments add up to more than [`MAX_OVERLAP_CHECK`] bytes.
    #[error("segment {index}: segments mapping the same memory twice hold more than the {max} bytes checked")]
    OverlapTooLarge {
        /// Program header index of the segment that crossed the bound.
        index: usize,
        /// [`MAX_OVERLAP_CHECK`], bytes.
        max: u64,
    },
    /// The `PT_NOTE` segments add up to more than [`MAX_NOTES`] bytes.
    #[error("PT_NOTE segments hold {size} bytes, more than the {max} accepted")]
    NotesTooLarge {
        /// `p_filesz` of the notes so far, bytes.
        size: u64,
        /// [`MAX_NOTES`].
        max: u64,
    },
    /// Reading segment bytes (notes, or a contained segment being compared) from the file failed.
    #[error("reading segment {index} at file offset {offset:#x}: {source}")]
    Read {
        /// Program header index.
        index: usize,
        /// File offset of the read, bytes.
        offset: u64,
        /// The I/O error.
        source: io::Error,
    },
}

/// Where the file's bytes live: an open file, a flattened file's rearranged view, or bytes in memory.
struct Backing(Box<dyn ReadAt>);

impl Backing {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_exact_at(offset, buf)
    }
}

impl fmt::Debug for Backing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Backing({} bytes)", self.0.len())
    }
}

/// An ELF64 little-endian core as read-only physical memory.
///
/// Overlapping segments: `/proc/vmcore` on x86-64 and arm64 has a `PT_LOAD` for the kernel image that
/// lies inside a System RAM segment (Linux `crash_prepare_elf64_headers` with `need_kernel_map`): the
/// same physical bytes, mapped twice. A dump that says two things about one byte cannot be read, so
/// overlaps are refused, except that one: a segment wholly inside another whose file bytes are the
/// same bytes, compared when the file is opened (at most [`MAX_OVERLAP_CHECK`] bytes), is dropped and
/// listed by [`ElfCore::shadowed`]. Partial overlaps, different bytes, or a duplicate whose bytes are
/// not both in the file are refused with the segments named.
#[derive(Debug)]
pub struct ElfCore {
    backing: Backing,
    file_len: u64,
    machine: u16,
    /// Non-overlapping, sorted by `paddr`, for binary search.
    segments: Vec<Segment>,
    shadowed: Vec<usize>,
    /// `(index, offset, filesz)` of each `PT_NOTE`, in file order.
    notes: Vec<(usize, u64, u64)>,
}

/// What [`parse`] extracts from the headers; owns everything so the header buffer can be dropped.
struct Parsed {
    machine: u16,
    segments: Vec<Segment>,
    /// Each segment wholly inside another, with the kept segment containing it.
    shadowed: Vec<(Segment, Segment)>,
    notes: Vec<(usize, u64, u64)>,
}

impl ElfCore {
    /// Opens a core file and reads its headers; segment bytes are read later, on demand.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ElfError> {
        let path = path.as_ref();
        let open_err = |source| ElfError::Open { path: path.to_owned(), source };
        let file = File::open(path).map_err(open_err)?;
        let src = FileSource::new(file).map_err(open_err)?;
        Self::from_source(Box::new(src))
    }

    /// A core held in memory: small files such as test fixtures.
    pub fn from_bytes(data: Vec<u8>) -> Result<Self, ElfError> {
        let file_len = data.len() as u64;
        let parsed = parse(data.as_slice(), file_len, Shape::Core)?;
        let backing = Backing(Box::new(data));
        check_shadowed(&backing, &parsed)?;
        Ok(Self::new(backing, file_len, parsed))
    }

    /// A core read from any source (a file, the rearranged view of a flattened file).
    pub fn from_source(src: Box<dyn ReadAt>) -> Result<Self, ElfError> {
        Self::from_source_as(src, Shape::Core)
    }

    /// A running kernel's `/proc/kcore`, read as its physical memory (see [`Shape::Kcore`]).
    pub fn open_kcore(path: impl AsRef<Path>) -> Result<Self, ElfError> {
        let path = path.as_ref();
        let open_err = |source| ElfError::Open { path: path.to_owned(), source };
        let file = File::open(path).map_err(open_err)?;
        let src = FileSource::new(file).map_err(open_err)?;
        Self::from_source_as(Box::new(src), Shape::Kcore)
    }

    /// A core of `shape` read from any source.
    pub fn from_source_as(src: Box<dyn ReadAt>, shape: Shape) -> Result<Self, ElfError> {
        let file_len = src.len();
        // object reads the headers through a cache that only ever reads ranges inside the file, so a
        // hostile count cannot make it allocate more than the file holds.
        let cache = ReadCache::new(Cursor { src: &*src, pos: 0 });
        let parsed = parse(&cache, file_len, shape)?;
        drop(cache);
        let backing = Backing(src);
        if shape == Shape::Core {
            check_shadowed(&backing, &parsed)?;
        }
        Ok(Self::new(backing, file_len, parsed))
    }

    fn new(backing: Backing, file_len: u64, p: Parsed) -> Self {
        let shadowed = p.shadowed.iter().map(|&(s, _)| s.index).collect();
        Self { backing, file_len, machine: p.machine, segments: p.segments, shadowed, notes: p.notes }
    }

    /// `e_machine` (`EM_X86_64` = 62, `EM_AARCH64` = 183), so callers can pick the right decoder.
    pub fn machine(&self) -> u16 {
        self.machine
    }

    /// The file's length in bytes.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The `PT_LOAD` segments that serve reads, sorted by physical address, non-overlapping.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Program header indices of segments dropped because another segment wholly contains them.
    pub fn shadowed(&self) -> &[usize] {
        &self.shadowed
    }

    /// The captured physical ranges, adjacent segments merged: usable as the RAM map
    /// ([`iommu_platform::BootEnv::ram`]) when the dump is all we know about the machine. QEMU dumps
    /// every RAM block, so this also holds video RAM and the firmware flash (q35: `0xfd000000`,
    /// `0xfffc0000`); prefer the machine's own memory map (e820, ACPI) when there is one.
    pub fn ram_ranges(&self) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        for s in &self.segments {
            match out.last_mut() {
                Some(last) if last.end == s.paddr => last.end = s.range().end,
                _ => out.push(s.range()),
            }
        }
        out
    }

    /// The bytes of every `PT_NOTE` segment, concatenated in file order (each note list is already
    /// 4-byte aligned). Read on demand; bounded by [`MAX_NOTES`] when the file was opened.
    pub fn notes(&self) -> Result<Vec<u8>, ElfError> {
        let mut out = Vec::new();
        for &(index, offset, filesz) in &self.notes {
            let start = out.len();
            // filesz was checked against MAX_NOTES in `parse`, so this fits in memory.
            out.resize(start + filesz as usize, 0);
            self.backing.read_at(offset, &mut out[start..]).map_err(|source| ElfError::Read {
                index,
                offset,
                source,
            })?;
        }
        Ok(out)
    }

    /// The segment holding `pa`, if any.
    fn find(&self, pa: u64) -> Option<&Segment> {
        let i = self.segments.partition_point(|s| s.paddr <= pa);
        let s = self.segments.get(i.checked_sub(1)?)?;
        (pa - s.paddr < s.size).then_some(s)
    }
}

impl PhysMem for ElfCore {
    /// Reads may cross from one segment into the next when they are contiguous. The first byte not
    /// in any segment, or past its `p_filesz`, fails the read with `NotCaptured`; so does a file that
    /// became unreadable after it was opened (the bytes are then not in the dump as far as the caller
    /// can tell).
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let mut done = 0usize;
        while done < buf.len() {
            let missing = |addr| MemError { addr, kind: MemErrorKind::NotCaptured };
            // Byte u64::MAX is never inside a segment (ends are checked not to overflow), so a read
            // that would wrap fails there before `cur` can overflow; `checked_add` keeps that local.
            let cur = pa.checked_add(done as u64).ok_or(missing(u64::MAX))?;
            let seg = self.find(cur).ok_or(missing(cur))?;
            let within = cur - seg.paddr;
            let n = (seg.size - within).min((buf.len() - done) as u64) as usize;
            let chunk = &mut buf[done..done + n];
            let in_file = seg.filesz.saturating_sub(within).min(n as u64) as usize;
            if in_file < n {
                // Past p_filesz: memory that existed, not in the file.
                return Err(missing(cur + in_file as u64));
            }
            self.backing.read_at(seg.offset + within, chunk).map_err(|_| missing(cur))?;
            done += n;
        }
        Ok(())
    }

    fn write(&mut self, pa: u64, _data: &[u8]) -> Result<(), MemError> {
        Err(MemError { addr: pa, kind: MemErrorKind::ReadOnly })
    }
}

/// Parses and checks the file header and program headers. `data` is the whole file, `file_len` long.
fn parse<'d, R: ReadRef<'d>>(data: R, file_len: u64, shape: Shape) -> Result<Parsed, ElfError> {
    if file_len < EHDR_SIZE {
        return Err(ElfError::Truncated { len: file_len });
    }
    // The ident first, by hand, so a wrong class or byte order gets its own error naming the value
    // rather than object's generic "unsupported header".
    let raw = data.read_at::<elf::FileHeader64<LE>>(0).map_err(|()| ElfError::Truncated { len: file_len })?;
    let ident = raw.e_ident();
    if ident.magic != elf::ELFMAG {
        return Err(ElfError::NotElf { magic: ident.magic });
    }
    if ident.class != elf::ELFCLASS64 {
        return Err(ElfError::NotElf64 { class: ident.class.0 });
    }
    if ident.data != elf::ELFDATA2LSB {
        return Err(ElfError::NotLittleEndian { data: ident.data.0 });
    }
    let header =
        elf::FileHeader64::<LE>::parse(data).map_err(|source| ElfError::Object { what: "ELF header", source })?;
    let e_type = header.e_type(LE);
    if e_type != elf::ET_CORE {
        return Err(ElfError::NotCore { e_type: e_type.0 });
    }
    let phoff = header.e_phoff(LE);
    let count = header.phnum(LE, data).map_err(|source| ElfError::Object { what: "e_phnum", source })?;
    if count > MAX_PHNUM {
        return Err(ElfError::TooManyProgramHeaders { count, max: MAX_PHNUM });
    }
    if phoff != 0 && count != 0 {
        let end = phoff.checked_add(u64::from(count) * PHDR_SIZE);
        if end.is_none_or(|end| end > file_len) {
            return Err(ElfError::ProgramHeadersOutsideFile { phoff, count, file_len });
        }
    }
    let phdrs =
        header.program_headers(LE, data).map_err(|source| ElfError::Object { what: "program headers", source })?;

    let mut loads = Vec::with_capacity(phdrs.len());
    let mut notes = Vec::new();
    let mut notes_size = 0u64;
    for (index, ph) in phdrs.iter().enumerate() {
        let (offset, filesz) = (ph.p_offset(LE), ph.p_filesz(LE));
        let p_type = ph.p_type(LE);
        if p_type != elf::PT_LOAD && p_type != elf::PT_NOTE {
            continue;
        }
        if offset.checked_add(filesz).is_none_or(|end| end > file_len) {
            return Err(ElfError::SegmentOutsideFile { index, offset, filesz, file_len });
        }
        if p_type == elf::PT_NOTE {
            notes_size = notes_size.saturating_add(filesz);
            if notes_size > MAX_NOTES {
                return Err(ElfError::NotesTooLarge { size: notes_size, max: MAX_NOTES });
            }
            notes.push((index, offset, filesz));
            continue;
        }
        let (paddr, size) = (ph.p_paddr(LE), ph.p_memsz(LE));
        if shape == Shape::Kcore && paddr == KCORE_NO_PADDR {
            continue;
        }
        if filesz > size {
            return Err(ElfError::FileszExceedsMemsz { index, filesz, size });
        }
        if paddr.checked_add(size).is_none() {
            return Err(ElfError::SegmentAddressOverflow { index, paddr, size });
        }
        if size != 0 {
            loads.push(Segment { index, paddr, size, offset, filesz });
        }
    }
    let (segments, shadowed) = resolve_overlaps(loads)?;
    Ok(Parsed { machine: header.e_machine(LE).0, segments, shadowed, notes })
}

/// Sorts segments by address and sets aside those wholly inside another (see [`ElfCore`]), each with
/// its container, for [`check_shadowed`]; a partial overlap is an error naming both segments.
#[allow(clippy::type_complexity)]
fn resolve_overlaps(mut loads: Vec<Segment>) -> Result<(Vec<Segment>, Vec<(Segment, Segment)>), ElfError> {
    // Larger first at equal addresses, so the container comes before what it contains.
    loads.sort_by_key(|s| (s.paddr, std::cmp::Reverse(s.size), s.index));
    let mut kept: Vec<Segment> = Vec::with_capacity(loads.len());
    let mut shadowed = Vec::new();
    let mut checked = 0u64;
    for s in loads {
        // Kept segments are disjoint and sorted, so only the last can overlap `s`.
        match kept.last() {
            Some(last) if s.paddr < last.range().end => {
                if s.range().end > last.range().end {
                    return Err(ElfError::SegmentsOverlap { index: s.index, other: last.index, paddr: s.paddr });
                }
                checked = checked.saturating_add(s.size);
                if checked > MAX_OVERLAP_CHECK {
                    return Err(ElfError::OverlapTooLarge { index: s.index, max: MAX_OVERLAP_CHECK });
                }
                shadowed.push((s, *last));
            }
            _ => kept.push(s),
        }
    }
    shadowed.sort_unstable_by_key(|(s, _)| s.index);
    Ok((kept, shadowed))
}

/// A segment set aside by [`resolve_overlaps`] is accepted only if every byte it maps is in the file
/// for both segments and equal: then dropping it loses nothing. Reads in 64 KiB pieces; the total is
/// bounded by [`MAX_OVERLAP_CHECK`].
fn check_shadowed(backing: &Backing, p: &Parsed) -> Result<(), ElfError> {
    const PIECE: u64 = 64 << 10;
    let (mut a, mut b) = (vec![0u8; PIECE as usize], vec![0u8; PIECE as usize]);
    for &(s, c) in &p.shadowed {
        let delta = s.paddr - c.paddr; // s lies inside c
        if s.filesz < s.size || c.filesz < delta + s.size {
            let paddr = s.paddr + s.filesz.min(c.filesz.saturating_sub(delta));
            return Err(ElfError::OverlapNotCaptured { index: s.index, other: c.index, paddr });
        }
        let mut done = 0;
        while done < s.size {
            let n = (s.size - done).min(PIECE) as usize;
            let read = |seg: &Segment, off: u64, buf: &mut [u8]| {
                backing.read_at(off, buf).map_err(|source| ElfError::Read { index: seg.index, offset: off, source })
            };
            read(&s, s.offset + done, &mut a[..n])?;
            read(&c, c.offset + delta + done, &mut b[..n])?;
            if let Some(i) = a[..n].iter().zip(&b[..n]).position(|(x, y)| x != y) {
                let paddr = s.paddr + done + i as u64;
                return Err(ElfError::SegmentsDisagree { index: s.index, other: c.index, paddr });
            }
            done += n as u64;
        }
    }
    Ok(())
}
