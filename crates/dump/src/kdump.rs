//! The kdump-compressed format ("KDUMP   "): what makedumpfile writes in a kdump kernel by default
//! (`-c` zlib, `-l` lzo, `-p` snappy, `-z` zstd) and QEMU's `dump-guest-memory -z/-l/-s`, as
//! physical memory read on demand.
//!
//! Layout (makedumpfile `diskdump_mod.h` and `write_kdump_header`/`write_kdump_pages_cyclic` in
//! makedumpfile.c; QEMU `create_header64`/`write_dump_pages` in `dump/dump.c`; the reader in crash's
//! `diskdump.c`), in blocks of `block_size` bytes (the page size):
//!
//! - block 0: `struct disk_dump_header`: signature, `header_version`, `utsname`, `status` (compression
//!   and "incomplete" flags), `block_size`, `sub_hdr_size` and `bitmap_blocks` (in blocks), `max_mapnr`;
//! - block 1: `struct kdump_sub_header`: `phys_base`, `dump_level`, `split`, the ELF notes' and
//!   VMCOREINFO's offsets, and from version 6 the 64-bit `max_mapnr_64`; the notes follow it in the
//!   same `sub_hdr_size` blocks;
//! - `bitmap_blocks` blocks: two bitmaps of equal size, bit `pfn % 8` of byte `pfn / 8` (least
//!   significant bit first): the first says which pages were RAM, the second which were dumped (a page
//!   filtered by `-d` is RAM but not dumped);
//! - one 24-byte `page_desc_t` per dumped page, in pfn order: data offset, size, flags (which
//!   compression, or none), page flags;
//! - the page data. Each page is compressed alone and kept compressed only if that made it smaller
//!   than a page; otherwise it is stored whole with no compression flag. Zero pages may all share one
//!   descriptor pointing at a single zero page.
//!
//! Physical address = pfn × block size on x86-64 and arm64 (makedumpfile's `ARCH_PFN_OFFSET` is 0 but
//! on 32-bit arm; QEMU's likewise).
//!
//! Opening reads the two header blocks and nothing else. A page read finds its descriptor by counting
//! the set bits of the second bitmap before it; the counts per 4 KiB of bitmap are kept as they are
//! first computed, so the bitmap is read once, as far as the highest page asked for. Every header
//! field is hostile: sizes are bounded, arithmetic is checked, a descriptor must point past itself
//! and inside the file, and a page must decompress to exactly one page.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::ops::Range;
use std::sync::Mutex;

use iommu_platform::{MemError, MemErrorKind, PhysMem};
use object::elf;

use crate::elf::MAX_NOTES;
use crate::source::ReadAt;

/// "KDUMP   ", the first 8 bytes (`KDUMP_SIGNATURE`).
pub const KDUMP_SIGNATURE: &[u8; 8] = b"KDUMP   ";
/// The smallest block (page) size accepted: 4 KiB, the smallest page of x86-64 and arm64.
pub const MIN_BLOCK_SIZE: u32 = 4096;
/// The largest block size accepted: arm64's 64 KiB pages.
pub const MAX_BLOCK_SIZE: u32 = 64 << 10;
/// The header versions understood: fields are only ever added, version 6 being the last (makedumpfile
/// 1.5.x onwards, QEMU).
pub const MAX_HEADER_VERSION: i32 = 6;
/// `DUMP_DH_COMPRESSED_ZLIB`.
pub const DUMP_DH_COMPRESSED_ZLIB: u32 = 0x1;
/// `DUMP_DH_COMPRESSED_LZO`.
pub const DUMP_DH_COMPRESSED_LZO: u32 = 0x2;
/// `DUMP_DH_COMPRESSED_SNAPPY`.
pub const DUMP_DH_COMPRESSED_SNAPPY: u32 = 0x4;
/// `DUMP_DH_COMPRESSED_INCOMPLETE`: the dump was cut short (the disk filled); pages past that point have
/// all-zero descriptors.
pub const DUMP_DH_COMPRESSED_INCOMPLETE: u32 = 0x8;
/// `DUMP_DH_COMPRESSED_ZSTD`.
pub const DUMP_DH_COMPRESSED_ZSTD: u32 = 0x20;
const COMPRESSION_MASK: u32 =
    DUMP_DH_COMPRESSED_ZLIB | DUMP_DH_COMPRESSED_LZO | DUMP_DH_COMPRESSED_SNAPPY | DUMP_DH_COMPRESSED_ZSTD;
/// `sizeof(page_desc_t)` on 64-bit machines.
pub const PAGE_DESC_SIZE: u64 = 24;
/// The most RAM ranges [`KdumpCore::ram_ranges`] returns: real machines have tens; a bitmap that
/// alternates bit by bit is refused rather than turned into millions of ranges.
pub const MAX_RAM_RANGES: usize = 1 << 16;
/// The largest zstd window a page's frame may ask for. makedumpfile compresses one page with its size
/// known, so the window is at most the page; this is a bound on memory, not a guess at the format.
const MAX_ZSTD_WINDOW: u64 = 1 << 20;
/// Bitmap bytes per prefix count: 32768 pages (128 MiB of 4 KiB pages) per counted piece.
const RANK_CHUNK: u64 = 4096;
/// Decompressed pages kept: a table walk reads one page many times, 8 bytes at a time.
const PAGE_CACHE: usize = 16;
/// Page errors kept for [`KdumpCore::damage`]; more are counted, not kept.
const MAX_DAMAGE: usize = 64;

// disk_dump_header field offsets, 64-bit layout (the utsname is six 65-byte strings; the timeval
// after it is 8-byte aligned).
const DH_VERSION: usize = 8;
const DH_UTS_MACHINE: usize = 12 + 4 * 65;
const DH_STATUS: usize = 424;
const DH_BLOCK_SIZE: usize = 428;
const DH_SUB_HDR_SIZE: usize = 432;
const DH_BITMAP_BLOCKS: usize = 436;
const DH_MAX_MAPNR: usize = 440;
const DH_LEN: usize = 464;
// kdump_sub_header field offsets.
const KH_PHYS_BASE: usize = 0;
const KH_DUMP_LEVEL: usize = 8;
const KH_SPLIT: usize = 12;
/// `start_pfn` and `end_pfn` (versions 2 to 5; `unsigned long`, 64-bit on the machines read here).
const KH_START_PFN: usize = 16;
const KH_END_PFN: usize = 24;
const KH_OFFSET_NOTE: usize = 48;
const KH_SIZE_NOTE: usize = 56;
const KH_START_PFN_64: usize = 80;
const KH_END_PFN_64: usize = 88;
const KH_MAX_MAPNR_64: usize = 96;
const KH_LEN: usize = 104;

/// A page's compression, from its descriptor's flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Stored whole: compressing did not make the page smaller, or the dump was written uncompressed.
    None,
    /// [`DUMP_DH_COMPRESSED_ZLIB`]: one zlib stream (RFC 1950) per page.
    Zlib,
    /// [`DUMP_DH_COMPRESSED_LZO`]: one raw LZO1X block per page.
    Lzo,
    /// [`DUMP_DH_COMPRESSED_SNAPPY`]: one raw (unframed) snappy block per page.
    Snappy,
    /// [`DUMP_DH_COMPRESSED_ZSTD`]: one zstd frame per page.
    Zstd,
}

impl Compression {
    fn of(flags: u32) -> Option<Self> {
        Some(match flags & COMPRESSION_MASK {
            0 => Compression::None,
            DUMP_DH_COMPRESSED_ZLIB => Compression::Zlib,
            DUMP_DH_COMPRESSED_LZO => Compression::Lzo,
            DUMP_DH_COMPRESSED_SNAPPY => Compression::Snappy,
            DUMP_DH_COMPRESSED_ZSTD => Compression::Zstd,
            _ => return None,
        })
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Zlib => "zlib",
            Compression::Lzo => "lzo",
            Compression::Snappy => "snappy",
            Compression::Zstd => "zstd",
        })
    }
}

/// Why a kdump-compressed file was refused when opened.
#[derive(Debug, thiserror::Error)]
pub enum KdumpError {
    /// The file (or the flattened file's reassembled view of it) failed a read of a header, the notes
    /// or the RAM bitmap.
    #[error("reading the {what} at offset {offset:#x}: {source}")]
    Read {
        /// Which structure was being read (`disk_dump_header`, `RAM bitmap`, ...).
        what: &'static str,
        /// File offset of the read, bytes.
        offset: u64,
        /// The I/O error.
        source: io::Error,
    },
    /// The file ends before the `disk_dump_header` or before the `kdump_sub_header` block after it.
    #[error("file is {len} bytes, too short for the kdump header blocks")]
    Truncated {
        /// File length, bytes.
        len: u64,
    },
    /// The first eight bytes are not [`KDUMP_SIGNATURE`].
    #[error("not a kdump-compressed file (signature {found:?})")]
    NotKdump {
        /// The eight bytes found.
        found: [u8; 8],
    },
    /// `disk_dump_header.header_version` is outside 1..=[`MAX_HEADER_VERSION`].
    #[error("header_version {version} is not one of 1..={MAX_HEADER_VERSION} (a big-endian or damaged header?)")]
    Version {
        /// The `header_version` read (little-endian).
        version: i32,
    },
    /// `disk_dump_header.block_size` is not a power of two from [`MIN_BLOCK_SIZE`] to [`MAX_BLOCK_SIZE`].
    #[error("block_size {block_size} is not a power of two in {MIN_BLOCK_SIZE}..={MAX_BLOCK_SIZE}")]
    BlockSize {
        /// The `block_size` read, bytes (its 32 bits unsigned: a negative `int` shows as a huge size).
        block_size: u32,
    },
    /// `disk_dump_header.sub_hdr_size` is 0 or negative: there is no `kdump_sub_header`.
    #[error("sub_hdr_size {blocks} blocks is not a sub header")]
    SubHeaderSize {
        /// The `sub_hdr_size` read, blocks.
        blocks: i32,
    },
    /// The two bitmaps (`bitmap_blocks` blocks after the sub header) end past the end of the file.
    #[error(
        "the bitmaps ({bitmap_blocks} blocks from offset {offset:#x}) run past the end of the {file_len}-byte file"
    )]
    BitmapOutsideFile {
        /// File offset of the first bitmap, bytes.
        offset: u64,
        /// `disk_dump_header.bitmap_blocks`: both bitmaps together, blocks.
        bitmap_blocks: u32,
        /// File length, bytes.
        file_len: u64,
    },
    /// `max_mapnr` claims more pages than each bitmap (half of `bitmap_blocks`) has bits.
    #[error("max_mapnr {max_mapnr:#x} pages need more than the {bits} bits of each bitmap")]
    BitmapTooSmall {
        /// The header's page count (`max_mapnr_64` from version 6, `max_mapnr` before).
        max_mapnr: u64,
        /// Bits in one bitmap.
        bits: u64,
    },
    /// `max_mapnr` pages of `block_size` bytes would end past 2^64: no physical address can hold them.
    #[error("max_mapnr {max_mapnr:#x} pages of {block_size} bytes reach past 64-bit physical addresses")]
    MapnrTooLarge {
        /// The header's page count.
        max_mapnr: u64,
        /// `disk_dump_header.block_size`, bytes.
        block_size: u32,
    },
    /// `kdump_sub_header.split` is set: this file holds one pfn slice of a dump written with
    /// `makedumpfile --split`, and reading it alone would pass the other slices off as not captured.
    #[error(
        "one file of a split dump (pfns {start:#x}..{end:#x}); reassemble the parts with makedumpfile --reassemble"
    )]
    Split {
        /// `start_pfn_64`: the slice's first pfn (a header version 6 field).
        start: u64,
        /// `end_pfn_64`: the pfn after the slice's last, exclusive (a header version 6 field).
        end: u64,
    },
    /// `offset_note` + `size_note` (header version 4 and later) run past the file, or the notes are
    /// larger than [`MAX_NOTES`].
    #[error("ELF notes at {offset:#x} + {size:#x} are outside the file or larger than {MAX_NOTES} bytes")]
    Notes {
        /// `kdump_sub_header.offset_note`, file offset in bytes.
        offset: u64,
        /// `kdump_sub_header.size_note`, bytes.
        size: u64,
    },
    /// [`KdumpCore::ram_ranges`] found more than [`MAX_RAM_RANGES`] runs of set bits in the first bitmap.
    #[error("the RAM bitmap has more than {MAX_RAM_RANGES} runs")]
    TooManyRamRanges,
}

/// Why one page could not be read: the pfn, and where in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// Reading the second bitmap, the page's descriptor or its data from the file failed.
    #[error("pfn {pfn:#x}: reading the {what} at offset {offset:#x}: {error}")]
    Read {
        /// The page asked for.
        pfn: u64,
        /// What was being read (`dump bitmap`, `page descriptor`, `page data`).
        what: &'static str,
        /// File offset of the read, bytes.
        offset: u64,
        /// The I/O error, as text (so the error can be cloned and compared).
        error: String,
    },
    /// The page's `page_desc_t` is impossible: several compression flags, a size of 0, over a page, or
    /// not a whole page when uncompressed, or data that starts before the descriptors end or runs
    /// past the file.
    #[error("pfn {pfn:#x}: descriptor {index} at offset {offset:#x}: {why}")]
    Descriptor {
        /// The page asked for.
        pfn: u64,
        /// The descriptor's index: how many dumped pages precede this one.
        index: u64,
        /// File offset of the descriptor, bytes.
        offset: u64,
        /// Which check failed.
        why: String,
    },
    /// The page's data did not decompress to exactly one block.
    #[error("pfn {pfn:#x}: {compression} data at offset {offset:#x} ({size} bytes): {why}")]
    Decompress {
        /// The page asked for.
        pfn: u64,
        /// The compression the descriptor's `flags` name.
        compression: Compression,
        /// `page_desc_t.offset`: file offset of the compressed data, bytes.
        offset: u64,
        /// `page_desc_t.size`: compressed bytes.
        size: u32,
        /// The decoder's complaint, or the size it produced.
        why: String,
    },
}

impl PageError {
    /// The page that could not be read.
    pub fn pfn(&self) -> u64 {
        match self {
            PageError::Read { pfn, .. } | PageError::Descriptor { pfn, .. } | PageError::Decompress { pfn, .. } => *pfn,
        }
    }
}

/// The headers, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KdumpHeader {
    /// `disk_dump_header.header_version`, 1 to [`MAX_HEADER_VERSION`]: which sub-header fields exist
    /// (split from 2, notes from 4, `max_mapnr_64` from 6).
    pub header_version: i32,
    /// `utsname.machine` ("x86_64", "aarch64"), empty when the writer did not know it.
    pub machine: String,
    /// `disk_dump_header.status`: the `DUMP_DH_COMPRESSED_*` flags.
    pub status: u32,
    /// `disk_dump_header.block_size`: the page size in bytes, a power of two from [`MIN_BLOCK_SIZE`]
    /// to [`MAX_BLOCK_SIZE`]; pfn × `block_size` is the physical address.
    pub block_size: u32,
    /// `disk_dump_header.sub_hdr_size`: blocks of `kdump_sub_header` and notes after the first block.
    pub sub_hdr_size: u32,
    /// `disk_dump_header.bitmap_blocks`: blocks of both bitmaps together.
    pub bitmap_blocks: u32,
    /// Pages covered by the bitmaps (`max_mapnr_64` from version 6, the 32-bit field before).
    pub max_mapnr: u64,
    /// `kdump_sub_header.phys_base`: where the kernel image was relocated to (x86-64's `phys_base`),
    /// for turning kernel virtual addresses into physical ones.
    pub phys_base: u64,
    /// `kdump_sub_header.dump_level`: makedumpfile's `-d` mask of page classes filtered out (1 zero,
    /// 2 cache, 4 private cache, 8 user, 16 free pages).
    pub dump_level: i32,
    /// The ELF notes (`offset_note`, `size_note`), if the header has them.
    pub notes: Option<(u64, u64)>,
}

impl KdumpHeader {
    /// Whether makedumpfile marked the dump as cut short.
    pub fn incomplete(&self) -> bool {
        self.status & DUMP_DH_COMPRESSED_INCOMPLETE != 0
    }
    /// The compression `status` names, `None` if it names several.
    pub fn compression(&self) -> Option<Compression> {
        Compression::of(self.status)
    }
}

/// What a page read found.
enum Page {
    Missing,
    Data(Vec<u8>),
}

struct Lazy {
    /// `rank[k]` = dumped pages in bitmap bytes `[0, k × RANK_CHUNK)`; grows as reads go higher.
    rank: Vec<u64>,
    cache: VecDeque<(u64, Vec<u8>)>,
    damage: Vec<PageError>,
    damage_count: u64,
}

/// A kdump-compressed dump as read-only physical memory.
pub struct KdumpCore {
    src: Box<dyn ReadAt>,
    header: KdumpHeader,
    machine: u16,
    shift: u32,
    /// File offsets of the first bitmap, the second, and the page descriptors.
    bitmap1: u64,
    bitmap2: u64,
    bitmap_len: u64,
    descs: u64,
    lazy: Mutex<Lazy>,
}

impl fmt::Debug for KdumpCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KdumpCore").field("header", &self.header).finish_non_exhaustive()
    }
}

/// Little-endian fields of a fixed-size header buffer (every caller's offset is a constant inside it; a field
/// past the buffer reads as 0 rather than panicking).
fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut q = [0u8; 4];
    if let Some(f) = at.checked_add(4).and_then(|end| b.get(at..end)) {
        q.copy_from_slice(f);
    }
    u32::from_le_bytes(q)
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut q = [0u8; 8];
    if let Some(f) = at.checked_add(8).and_then(|end| b.get(at..end)) {
        q.copy_from_slice(f);
    }
    u64::from_le_bytes(q)
}

impl KdumpCore {
    /// Reads and checks the two header blocks; nothing else is read until a page is.
    pub fn new(src: Box<dyn ReadAt>) -> Result<Self, KdumpError> {
        let file_len = src.len();
        let read = |what, offset, buf: &mut [u8]| {
            src.read_exact_at(offset, buf).map_err(|source| KdumpError::Read { what, offset, source })
        };
        if file_len < DH_LEN as u64 {
            return Err(KdumpError::Truncated { len: file_len });
        }
        let mut dh = [0u8; DH_LEN];
        read("disk_dump_header", 0, &mut dh)?;
        if &dh[..8] != KDUMP_SIGNATURE {
            let mut found = [0u8; 8];
            found.copy_from_slice(&dh[..8]);
            return Err(KdumpError::NotKdump { found });
        }
        let version = u32_at(&dh, DH_VERSION) as i32;
        if !(1..=MAX_HEADER_VERSION).contains(&version) {
            return Err(KdumpError::Version { version });
        }
        let block_size = u32_at(&dh, DH_BLOCK_SIZE);
        if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
            return Err(KdumpError::BlockSize { block_size });
        }
        let bs = u64::from(block_size);
        let sub_hdr_size = u32_at(&dh, DH_SUB_HDR_SIZE);
        // The sub header is at least one block; as a signed int, it is below 2^31.
        if sub_hdr_size == 0 || sub_hdr_size > i32::MAX as u32 {
            return Err(KdumpError::SubHeaderSize { blocks: sub_hdr_size as i32 });
        }
        if file_len < 2 * bs {
            return Err(KdumpError::Truncated { len: file_len });
        }
        let mut kh = [0u8; KH_LEN];
        read("kdump_sub_header", bs, &mut kh)?;

        let bitmap_blocks = u32_at(&dh, DH_BITMAP_BLOCKS);
        // Both products fit: (2^31 + 1) blocks and 2^32 blocks of at most 2^16 bytes.
        let bitmap1 = (1 + u64::from(sub_hdr_size)) * bs;
        let bitmap_len = u64::from(bitmap_blocks) * bs;
        let descs = bitmap1 + bitmap_len;
        if descs > file_len {
            return Err(KdumpError::BitmapOutsideFile { offset: bitmap1, bitmap_blocks, file_len });
        }
        let half = bitmap_len / 2;
        let max_mapnr = if version >= 6 { u64_at(&kh, KH_MAX_MAPNR_64) } else { u64::from(u32_at(&dh, DH_MAX_MAPNR)) };
        if max_mapnr > half.saturating_mul(8) {
            return Err(KdumpError::BitmapTooSmall { max_mapnr, bits: half * 8 });
        }
        let shift = block_size.trailing_zeros();
        if max_mapnr.checked_shl(shift).is_none_or(|a| a >> shift != max_mapnr) {
            return Err(KdumpError::MapnrTooLarge { max_mapnr, block_size });
        }
        if version >= 2 && u32_at(&kh, KH_SPLIT) != 0 {
            // The 64-bit fields exist from version 6; before, `start_pfn` and `end_pfn` say it.
            let (start, end) = if version >= 6 {
                (u64_at(&kh, KH_START_PFN_64), u64_at(&kh, KH_END_PFN_64))
            } else {
                (u64_at(&kh, KH_START_PFN), u64_at(&kh, KH_END_PFN))
            };
            return Err(KdumpError::Split { start, end });
        }
        let notes = if version >= 4 {
            let (offset, size) = (u64_at(&kh, KH_OFFSET_NOTE), u64_at(&kh, KH_SIZE_NOTE));
            let inside = offset.checked_add(size).is_some_and(|end| end <= file_len);
            if !inside || size > MAX_NOTES {
                return Err(KdumpError::Notes { offset, size });
            }
            (size > 0).then_some((offset, size))
        } else {
            None
        };
        let machine_name = {
            let raw = &dh[DH_UTS_MACHINE..DH_UTS_MACHINE + 65];
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            String::from_utf8_lossy(&raw[..end]).into_owned()
        };
        let header = KdumpHeader {
            header_version: version,
            machine: machine_name,
            status: u32_at(&dh, DH_STATUS),
            block_size,
            sub_hdr_size,
            bitmap_blocks,
            max_mapnr,
            phys_base: u64_at(&kh, KH_PHYS_BASE),
            dump_level: u32_at(&kh, KH_DUMP_LEVEL) as i32,
            notes,
        };
        let mut core = KdumpCore {
            src,
            header,
            machine: 0,
            shift,
            bitmap1,
            bitmap2: bitmap1 + half,
            bitmap_len,
            descs,
            lazy: Mutex::new(Lazy { rank: vec![0], cache: VecDeque::new(), damage: Vec::new(), damage_count: 0 }),
        };
        core.machine = core.find_machine();
        Ok(core)
    }

    /// The decoded headers, as checked when opening.
    pub fn header(&self) -> &KdumpHeader {
        &self.header
    }

    /// `e_machine` of the crashed machine: from `utsname.machine`, or when that is empty (makedumpfile
    /// without VMCOREINFO leaves it so) from the size of an `NT_PRSTATUS` note (Linux `struct
    /// elf_prstatus`: 336 bytes on x86-64, 392 on arm64). 0 (`EM_NONE`) when neither tells.
    pub fn machine(&self) -> u16 {
        self.machine
    }

    fn find_machine(&self) -> u16 {
        match self.header.machine.as_str() {
            "x86_64" => return elf::EM_X86_64.0,
            "aarch64" | "arm64" => return elf::EM_AARCH64.0,
            _ => {}
        }
        let Ok(notes) = self.notes() else { return 0 };
        for n in crate::notes::notes(&notes).filter(|n| n.ty == elf::NT_PRSTATUS.0) {
            match n.desc.len() {
                336 => return elf::EM_X86_64.0,
                392 => return elf::EM_AARCH64.0,
                _ => {}
            }
        }
        0
    }

    /// The ELF notes the crashed kernel left (per-CPU `NT_PRSTATUS`, `VMCOREINFO`), as
    /// [`crate::ElfCore::notes`] returns them; empty if the header has none.
    pub fn notes(&self) -> Result<Vec<u8>, KdumpError> {
        let Some((offset, size)) = self.header.notes else { return Ok(Vec::new()) };
        // Checked against the file and MAX_NOTES when opened.
        let mut buf = vec![0u8; size as usize];
        self.src.read_exact_at(offset, &mut buf).map_err(|source| KdumpError::Read {
            what: "ELF notes",
            offset,
            source,
        })?;
        Ok(buf)
    }

    /// The physical ranges the first bitmap marks as RAM, runs merged. Reads the whole first bitmap
    /// (`max_mapnr` / 8 bytes), so it is asked for, not done when opening.
    pub fn ram_ranges(&self) -> Result<Vec<Range<u64>>, KdumpError> {
        const PIECE: u64 = 64 << 10;
        let bytes = self.header.max_mapnr.div_ceil(8);
        let mut buf = vec![0u8; PIECE as usize];
        let mut out: Vec<Range<u64>> = Vec::new();
        let mut run: Option<u64> = None;
        let mut off = 0;
        while off < bytes {
            let n = (bytes - off).min(PIECE) as usize;
            let at = self.bitmap1 + off;
            self.src.read_exact_at(at, &mut buf[..n]).map_err(|source| KdumpError::Read {
                what: "RAM bitmap",
                offset: at,
                source,
            })?;
            for (i, &byte) in buf[..n].iter().enumerate() {
                if (byte == 0 && run.is_none()) || (byte == 0xff && run.is_some()) {
                    continue;
                }
                for bit in 0..8 {
                    let pfn = (off + i as u64) * 8 + bit;
                    let set = byte & (1 << bit) != 0 && pfn < self.header.max_mapnr;
                    match (set, run) {
                        (true, None) => run = Some(pfn),
                        (false, Some(start)) => {
                            if out.len() == MAX_RAM_RANGES {
                                return Err(KdumpError::TooManyRamRanges);
                            }
                            out.push(start << self.shift..pfn << self.shift);
                            run = None;
                        }
                        _ => {}
                    }
                }
            }
            off += n as u64;
        }
        if let Some(start) = run {
            if out.len() == MAX_RAM_RANGES {
                return Err(KdumpError::TooManyRamRanges);
            }
            out.push(start << self.shift..self.header.max_mapnr << self.shift);
        }
        Ok(out)
    }

    /// Pages that could not be read so far (decompression failed, impossible descriptor), the first
    /// 64 (`MAX_DAMAGE`) of them, and how many there were in all. Reads of those pages fail as
    /// `NotCaptured`; this says why.
    pub fn damage(&self) -> (Vec<PageError>, u64) {
        let lazy = self.lazy.lock().unwrap_or_else(|e| e.into_inner());
        (lazy.damage.clone(), lazy.damage_count)
    }

    /// The page `pfn`, decompressed: `Ok(None)` if the dump does not hold it (beyond `max_mapnr`, or
    /// its bit clear in the second bitmap: filtered or not RAM), a [`PageError`] naming the pfn and
    /// file offset if it holds something that is not a page.
    pub fn page(&self, pfn: u64) -> Result<Option<Vec<u8>>, PageError> {
        self.with_page(pfn, |page| page.to_vec())
    }

    /// Runs `f` on the page `pfn` (from the page cache, or loaded into it).
    fn with_page<T>(&self, pfn: u64, f: impl FnOnce(&[u8]) -> T) -> Result<Option<T>, PageError> {
        let mut lazy = self.lazy.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, data)) = lazy.cache.iter().find(|(p, _)| *p == pfn) {
            return Ok(Some(f(data)));
        }
        match self.load(pfn, &mut lazy) {
            Ok(Page::Missing) => Ok(None),
            Ok(Page::Data(data)) => {
                let out = f(&data);
                if lazy.cache.len() == PAGE_CACHE {
                    lazy.cache.pop_front();
                }
                lazy.cache.push_back((pfn, data));
                Ok(Some(out))
            }
            Err(e) => {
                lazy.damage_count += 1;
                if lazy.damage.len() < MAX_DAMAGE && !lazy.damage.contains(&e) {
                    lazy.damage.push(e.clone());
                }
                Err(e)
            }
        }
    }

    fn read_err(pfn: u64, what: &'static str, offset: u64) -> impl FnOnce(io::Error) -> PageError {
        move |e| PageError::Read { pfn, what, offset, error: e.to_string() }
    }

    /// Number of pages dumped before `pfn` (the descriptor's index), or `None` if `pfn` was not dumped.
    fn rank(&self, pfn: u64, lazy: &mut Lazy) -> Result<Option<u64>, PageError> {
        let byte = pfn / 8;
        let chunk = byte / RANK_CHUNK;
        let mut buf = vec![0u8; RANK_CHUNK as usize];
        // Extend the prefix counts up to this chunk; each chunk is read once over the core's life.
        while (lazy.rank.len() as u64) <= chunk {
            let k = (lazy.rank.len() as u64).saturating_sub(1);
            let n = self.chunk(pfn, k, &mut buf)?;
            let ones: u64 = buf[..n].iter().map(|b| u64::from(b.count_ones())).sum();
            let last = lazy.rank.last().copied().unwrap_or(0);
            lazy.rank.push(last + ones);
        }
        let n = self.chunk(pfn, chunk, &mut buf)?;
        let within = (byte - chunk * RANK_CHUNK) as usize;
        if within >= n {
            return Ok(None);
        }
        let bit = (pfn % 8) as u32;
        if buf[within] & (1 << bit) == 0 {
            return Ok(None);
        }
        let before: u64 = buf[..within].iter().map(|b| u64::from(b.count_ones())).sum::<u64>()
            + u64::from((buf[within] & ((1u8 << bit) - 1)).count_ones());
        Ok(Some(lazy.rank[chunk as usize] + before))
    }

    /// Reads chunk `k` of the second bitmap (clipped to the bitmap) into `buf`; returns its length.
    fn chunk(&self, pfn: u64, k: u64, buf: &mut [u8]) -> Result<usize, PageError> {
        let start = k * RANK_CHUNK;
        let half = self.bitmap_len / 2;
        let n = half.saturating_sub(start).min(RANK_CHUNK) as usize;
        let at = self.bitmap2 + start;
        self.src.read_exact_at(at, &mut buf[..n]).map_err(Self::read_err(pfn, "dump bitmap", at))?;
        Ok(n)
    }

    fn load(&self, pfn: u64, lazy: &mut Lazy) -> Result<Page, PageError> {
        if pfn >= self.header.max_mapnr {
            return Ok(Page::Missing);
        }
        let Some(index) = self.rank(pfn, lazy)? else { return Ok(Page::Missing) };
        // index < max_mapnr < 2^52, so neither product overflows.
        let at = self.descs + index * PAGE_DESC_SIZE;
        let mut d = [0u8; PAGE_DESC_SIZE as usize];
        self.src.read_exact_at(at, &mut d).map_err(Self::read_err(pfn, "page descriptor", at))?;
        let (offset, size, flags) = (u64_at(&d, 0), u32_at(&d, 8), u32_at(&d, 12));
        let bad = |why: String| PageError::Descriptor { pfn, index, offset: at, why };
        if self.header.incomplete() && d == [0; PAGE_DESC_SIZE as usize] {
            // makedumpfile stopped before this page (disk full): the page is not in the dump.
            return Ok(Page::Missing);
        }
        let bs = self.header.block_size;
        let Some(compression) = Compression::of(flags) else {
            return Err(bad(format!("flags {flags:#x} name more than one compression")));
        };
        if size == 0 || size > bs || (compression == Compression::None && size != bs) {
            return Err(bad(format!("size {size} for a {bs}-byte page stored as {compression}")));
        }
        // Page data follows every descriptor before it and this one, and ends inside the file.
        let data_floor = at + PAGE_DESC_SIZE;
        if (offset as i64) < 0 || offset < data_floor {
            return Err(bad(format!("data offset {offset:#x} lies in the headers, bitmaps or descriptors")));
        }
        if offset.checked_add(u64::from(size)).is_none_or(|end| end > self.src.len()) {
            return Err(bad(format!("data at {offset:#x} + {size} runs past the end of the file")));
        }
        let mut raw = vec![0u8; size as usize];
        self.src.read_exact_at(offset, &mut raw).map_err(Self::read_err(pfn, "page data", offset))?;
        if compression == Compression::None {
            return Ok(Page::Data(raw));
        }
        let mut out = vec![0u8; bs as usize];
        let got = decompress(compression, &raw, &mut out).map_err(|why| PageError::Decompress {
            pfn,
            compression,
            offset,
            size,
            why,
        })?;
        if got != out.len() {
            let why = format!("decompressed to {got} bytes, not a {bs}-byte page");
            return Err(PageError::Decompress { pfn, compression, offset, size, why });
        }
        Ok(Page::Data(out))
    }
}

/// Decompresses one page into `out` (exactly a page long) with the ecosystem's decoders; returns the
/// bytes produced, or why it failed. Output past `out` is an error, never a reallocation.
fn decompress(c: Compression, input: &[u8], out: &mut [u8]) -> Result<usize, String> {
    match c {
        Compression::None => Err("not compressed".into()),
        // compress2() output: a zlib stream (RFC 1950), as makedumpfile's compress_mdf and QEMU write it.
        Compression::Zlib => {
            let mut z = flate2::Decompress::new(true);
            let status = z.decompress(input, out, flate2::FlushDecompress::Finish).map_err(|e| e.to_string())?;
            if status != flate2::Status::StreamEnd {
                return Err("zlib stream does not end within a page".into());
            }
            Ok(z.total_out() as usize)
        }
        // lzo1x_1_compress() output: a raw LZO1X block, no header.
        Compression::Lzo => lzo::decompress_into(input, out).map_err(|e| format!("lzo: {e:?}")),
        // snappy_compress() output: raw snappy (no framing); its preamble states the length.
        Compression::Snappy => {
            let len = snap::raw::decompress_len(input).map_err(|e| e.to_string())?;
            if len != out.len() {
                return Err(format!("snappy preamble says {len} bytes"));
            }
            snap::raw::Decoder::new().decompress(input, out).map_err(|e| e.to_string())
        }
        // ZSTD_compressCCtx() output: one zstd frame.
        Compression::Zstd => {
            let mut d = ruzstd::decoding::FrameDecoder::new();
            d.set_max_window_size(MAX_ZSTD_WINDOW);
            d.decode_all(input, out).map_err(|e| format!("zstd: {e}"))
        }
    }
}

impl PhysMem for KdumpCore {
    /// A page the dump does not hold, or holds damaged (see [`KdumpCore::damage`]), fails the read with
    /// `NotCaptured` at the first byte of it that was asked for.
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let bs = u64::from(self.header.block_size);
        let mut done = 0usize;
        while done < buf.len() {
            let missing = |addr| MemError { addr, kind: MemErrorKind::NotCaptured };
            let cur = pa.checked_add(done as u64).ok_or(missing(u64::MAX))?;
            let within = cur & (bs - 1);
            let n = (bs - within).min((buf.len() - done) as u64) as usize;
            let dst = &mut buf[done..done + n];
            let copy = |page: &[u8]| dst.copy_from_slice(&page[within as usize..within as usize + n]);
            self.with_page(cur >> self.shift, copy).ok().flatten().ok_or(missing(cur))?;
            done += n;
        }
        Ok(())
    }

    fn write(&mut self, pa: u64, _data: &[u8]) -> Result<(), MemError> {
        Err(MemError { addr: pa, kind: MemErrorKind::ReadOnly })
    }
}
