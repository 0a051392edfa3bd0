//! ELF64 little-endian core files as physical memory: QEMU `dump-guest-memory` output and the crash
//! kernel's `/proc/vmcore` share one shape: a `PT_NOTE` (CPU state, `VMCOREINFO`) and `PT_LOAD`
//! segments whose `p_paddr` is the physical address, `p_offset` the file offset and `p_filesz` the
//! bytes present; `p_memsz > p_filesz` means the tail reads as zeros.
//!
//! The headers are parsed once with the `object` crate (its checks on the header, `e_phentsize` and
//! extended `e_phnum` are better kept than ours would be); after that the file stays open and each
//! read goes to the file at its offset, because dumps are gigabytes and a test fixture is kilobytes.

use std::fmt;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use iommu_platform::{MemError, MemErrorKind, PhysMem};
use object::elf;
use object::read::elf::{FileHeader as _, ProgramHeader as _};
use object::read::{ReadCache, ReadRef};
use object::LittleEndian as LE;

/// The most program headers we accept. `e_phnum` is 16 bits; only extended numbering (`PN_XNUM`,
/// the count in section 0's `sh_info`) goes higher, and a count from there is a 32-bit number from a
/// hostile file: this bounds the segment table we allocate.
pub const MAX_PHNUM: u32 = 65_535;
/// The most `PT_NOTE` bytes [`ElfCore::notes`] will read: per-CPU register notes and `VMCOREINFO` are
/// kilobytes even on large machines, so anything near this is a broken file, not a big machine.
pub const MAX_NOTES: u64 = 16 << 20;

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
    /// `p_filesz`: the bytes present in the file; the rest of `size` reads as zeros.
    pub filesz: u64,
}

impl Segment {
    /// The physical range covered. Cannot overflow: [`ElfCore`] rejects such segments.
    pub fn range(&self) -> Range<u64> {
        self.paddr..self.paddr + self.size
    }
}

/// Why a core file was refused. Each names the segment (program header index) and value at fault.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("{path}: {source}", path = path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("file is {len} bytes, shorter than the {EHDR_SIZE}-byte ELF64 header")]
    Truncated { len: u64 },
    #[error("not an ELF file (magic {magic:02x?})")]
    NotElf { magic: [u8; 4] },
    #[error("ELF class {class} is not ELFCLASS64 (2)")]
    NotElf64 { class: u8 },
    #[error("ELF data encoding {data} is not little-endian (ELFDATA2LSB, 1)")]
    NotLittleEndian { data: u8 },
    #[error("ELF type {e_type} is not ET_CORE (4)")]
    NotCore { e_type: u16 },
    #[error("{what}: {source}")]
    Object { what: &'static str, source: object::read::Error },
    #[error("{count} program headers, more than the {max} accepted")]
    TooManyProgramHeaders { count: u32, max: u32 },
    #[error("{count} program headers at offset {phoff:#x} run past the end of the {file_len}-byte file")]
    ProgramHeadersOutsideFile { phoff: u64, count: u32, file_len: u64 },
    #[error("segment {index}: offset {offset:#x} + filesz {filesz:#x} runs past the end of the {file_len}-byte file")]
    SegmentOutsideFile { index: usize, offset: u64, filesz: u64, file_len: u64 },
    #[error("segment {index}: p_paddr {paddr:#x} + p_memsz {size:#x} overflows 64 bits")]
    SegmentAddressOverflow { index: usize, paddr: u64, size: u64 },
    #[error("segment {index}: p_filesz {filesz:#x} is larger than p_memsz {size:#x}")]
    FileszExceedsMemsz { index: usize, filesz: u64, size: u64 },
    #[error("segment {index} at {paddr:#x} partly overlaps segment {other}")]
    SegmentsOverlap { index: usize, other: usize, paddr: u64 },
    #[error("PT_NOTE segments hold {size} bytes, more than the {max} accepted")]
    NotesTooLarge { size: u64, max: u64 },
    #[error("reading segment {index} at file offset {offset:#x}: {source}")]
    Read { index: usize, offset: u64, source: io::Error },
}

/// Where the file's bytes live: an open file read at offsets, or a small file in memory (fixtures).
enum Backing {
    File(File),
    Bytes(Vec<u8>),
}

impl Backing {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Backing::File(f) => f.read_exact_at(buf, offset),
            Backing::Bytes(b) => {
                let src = usize::try_from(offset)
                    .ok()
                    .and_then(|start| b.get(start..start.checked_add(buf.len())?))
                    .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
                buf.copy_from_slice(src);
                Ok(())
            }
        }
    }
}

impl fmt::Debug for Backing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backing::File(file) => f.debug_tuple("File").field(file).finish(),
            Backing::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
        }
    }
}

/// An ELF64 little-endian core as read-only physical memory.
///
/// Overlapping segments: `/proc/vmcore` on x86 has a `PT_LOAD` for the kernel text that lies inside a
/// System RAM segment (the same physical bytes, mapped twice). A segment wholly inside another is
/// therefore accepted and dropped (the larger, or for equal ranges the earlier, one serves reads;
/// [`ElfCore::shadowed`] lists the dropped ones); segments that partly overlap are refused, since no
/// reading of them is obviously right.
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
    shadowed: Vec<usize>,
    notes: Vec<(usize, u64, u64)>,
}

impl ElfCore {
    /// Opens a core file and reads its headers; segment bytes are read later, on demand.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ElfError> {
        let path = path.as_ref();
        let open_err = |source| ElfError::Open { path: path.to_owned(), source };
        let file = File::open(path).map_err(open_err)?;
        let file_len = file.metadata().map_err(open_err)?.len();
        // object reads the headers through a cache that only ever reads ranges inside the file, so a
        // hostile count cannot make it allocate more than the file holds.
        let cache = ReadCache::new(file);
        let parsed = parse(&cache, file_len)?;
        Ok(Self::new(Backing::File(cache.into_inner()), file_len, parsed))
    }

    /// A core held in memory: small files such as test fixtures.
    pub fn from_bytes(data: Vec<u8>) -> Result<Self, ElfError> {
        let file_len = data.len() as u64;
        let parsed = parse(data.as_slice(), file_len)?;
        Ok(Self::new(Backing::Bytes(data), file_len, parsed))
    }

    fn new(backing: Backing, file_len: u64, p: Parsed) -> Self {
        Self { backing, file_len, machine: p.machine, segments: p.segments, shadowed: p.shadowed, notes: p.notes }
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
    /// in any segment fails the read with `NotCaptured`; so does a file that became unreadable after
    /// it was opened (the bytes are then not in the dump as far as the caller can tell).
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
            let (file_part, zero_part) = chunk.split_at_mut(in_file);
            if !file_part.is_empty() {
                self.backing.read_at(seg.offset + within, file_part).map_err(|_| missing(cur))?;
            }
            zero_part.fill(0);
            done += n;
        }
        Ok(())
    }

    fn write(&mut self, pa: u64, _data: &[u8]) -> Result<(), MemError> {
        Err(MemError { addr: pa, kind: MemErrorKind::ReadOnly })
    }
}

/// Parses and checks the file header and program headers. `data` is the whole file, `file_len` long.
fn parse<'d, R: ReadRef<'d>>(data: R, file_len: u64) -> Result<Parsed, ElfError> {
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

/// Sorts segments by address and drops those wholly inside another (see [`ElfCore`]); a partial
/// overlap is an error naming both segments.
fn resolve_overlaps(mut loads: Vec<Segment>) -> Result<(Vec<Segment>, Vec<usize>), ElfError> {
    // Larger first at equal addresses, so the container comes before what it contains.
    loads.sort_by_key(|s| (s.paddr, std::cmp::Reverse(s.size), s.index));
    let mut kept: Vec<Segment> = Vec::with_capacity(loads.len());
    let mut shadowed = Vec::new();
    for s in loads {
        // Kept segments are disjoint and sorted, so only the last can overlap `s`.
        match kept.last() {
            Some(last) if s.paddr < last.range().end => {
                if s.range().end > last.range().end {
                    return Err(ElfError::SegmentsOverlap { index: s.index, other: last.index, paddr: s.paddr });
                }
                shadowed.push(s.index);
            }
            _ => kept.push(s),
        }
    }
    shadowed.sort_unstable();
    Ok((kept, shadowed))
}
