//! A test-only writer of kdump-compressed and flattened files, laid out by hand from makedumpfile's
//! `diskdump_mod.h` / `makedumpfile.h` (and `write_kdump_header`, `write_kdump_pages_cyclic`,
//! `write_buffer`) independently of the reader, with the same compression crates the reader decodes
//! with (and lzokay for LZO, which the reader does not use).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

pub const ZLIB: u32 = 0x1;
pub const LZO: u32 = 0x2;
pub const SNAPPY: u32 = 0x4;
pub const INCOMPLETE: u32 = 0x8;
pub const ZSTD: u32 = 0x20;
pub const DESC: usize = 24;

/// What to write. Pages are per pfn; `filtered` pfns are RAM (first bitmap) but not dumped.
#[derive(Clone, Debug)]
pub struct Kdump {
    pub block_size: usize,
    pub max_mapnr: u64,
    /// One of ZLIB, LZO, SNAPPY, ZSTD, or 0 for none.
    pub compression: u32,
    pub pages: BTreeMap<u64, Vec<u8>>,
    pub filtered: BTreeSet<u64>,
    pub machine: &'static str,
    pub notes: Vec<u8>,
    /// Zero pages share one descriptor and one zero page of data (`-d` bit 1, QEMU always).
    pub share_zero_page: bool,
}

impl Default for Kdump {
    fn default() -> Self {
        Kdump {
            block_size: 4096,
            max_mapnr: 64,
            compression: ZLIB,
            pages: BTreeMap::new(),
            filtered: BTreeSet::new(),
            machine: "x86_64",
            notes: Vec::new(),
            share_zero_page: true,
        }
    }
}

/// The file and where its parts went, for tests that corrupt a part.
#[derive(Clone, Debug)]
pub struct Built {
    pub file: Vec<u8>,
    pub bitmap: usize,
    pub descs: usize,
    /// pfn -> (descriptor offset, data offset, data size, flags)
    pub layout: BTreeMap<u64, (usize, usize, usize, u32)>,
    /// Pages stored compressed (as opposed to raw because compression did not make them smaller).
    pub compressed: usize,
}

pub fn compress(kind: u32, page: &[u8]) -> Vec<u8> {
    match kind {
        ZLIB => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(page).unwrap();
            e.finish().unwrap()
        }
        LZO => lzokay_native::compress(page).unwrap(),
        SNAPPY => snap::raw::Encoder::new().compress_vec(page).unwrap(),
        ZSTD => ruzstd::encoding::compress_to_vec(page, ruzstd::encoding::CompressionLevel::Fastest),
        _ => page.to_vec(),
    }
}

fn put(b: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    if b.len() < at + bytes.len() {
        b.resize(at + bytes.len(), 0);
    }
    b[at..at + bytes.len()].copy_from_slice(bytes);
}

pub fn put_u32(b: &mut Vec<u8>, at: usize, v: u32) {
    put(b, at, &v.to_le_bytes());
}
pub fn put_u64(b: &mut Vec<u8>, at: usize, v: u64) {
    put(b, at, &v.to_le_bytes());
}

impl Kdump {
    pub fn build(&self) -> Built {
        let bs = self.block_size;
        let mut f = vec![0u8; 2 * bs];
        // disk_dump_header
        put(&mut f, 0, b"KDUMP   ");
        put_u32(&mut f, 8, 6); // header_version
        put(&mut f, 12 + 4 * 65, self.machine.as_bytes()); // utsname.machine
        put_u32(&mut f, 424, self.compression); // status
        put_u32(&mut f, 428, bs as u32);
        let sub_hdr_blocks = (104 + self.notes.len()).div_ceil(bs);
        put_u32(&mut f, 432, sub_hdr_blocks as u32);
        let half = (self.max_mapnr.div_ceil(8) as usize).div_ceil(bs) * bs;
        put_u32(&mut f, 436, (2 * half / bs) as u32); // bitmap_blocks
        put_u32(&mut f, 440, self.max_mapnr.min(u32::MAX as u64) as u32);
        put_u32(&mut f, 460, 1); // nr_cpus
                                 // kdump_sub_header at block 1, notes right after it
        put_u64(&mut f, bs, 0); // phys_base
        put_u32(&mut f, bs + 8, 1); // dump_level
        if !self.notes.is_empty() {
            put_u64(&mut f, bs + 48, (bs + 104) as u64);
            put_u64(&mut f, bs + 56, self.notes.len() as u64);
            put(&mut f, bs + 104, &self.notes);
        }
        put_u64(&mut f, bs + 96, self.max_mapnr);
        // bitmaps
        let bitmap = (1 + sub_hdr_blocks) * bs;
        f.resize(bitmap + 2 * half, 0);
        let set = |f: &mut Vec<u8>, base: usize, pfn: u64| f[base + (pfn / 8) as usize] |= 1 << (pfn % 8);
        for &pfn in self.pages.keys() {
            set(&mut f, bitmap, pfn);
            set(&mut f, bitmap + half, pfn);
        }
        for &pfn in &self.filtered {
            set(&mut f, bitmap, pfn);
        }
        // descriptors, then data
        let descs = bitmap + 2 * half;
        let mut data = descs + DESC * self.pages.len();
        f.resize(data, 0);
        let mut layout = BTreeMap::new();
        let mut compressed = 0;
        let mut zero: Option<usize> = None;
        for (i, (&pfn, page)) in self.pages.iter().enumerate() {
            assert_eq!(page.len(), bs, "pages are whole");
            let d = descs + i * DESC;
            let (off, size, flags) = if self.share_zero_page && page.iter().all(|&b| b == 0) {
                let off = *zero.get_or_insert_with(|| {
                    let at = data;
                    put(&mut f, at, &vec![0; bs]);
                    data += bs;
                    at
                });
                (off, bs, 0)
            } else {
                let c = compress(self.compression, page);
                let (bytes, flags) = if self.compression != 0 && c.len() < bs {
                    compressed += 1;
                    (c, self.compression)
                } else {
                    (page.clone(), 0)
                };
                let at = data;
                put(&mut f, at, &bytes);
                data += bytes.len();
                (at, bytes.len(), flags)
            };
            put_u64(&mut f, d, off as u64);
            put_u32(&mut f, d + 8, size as u32);
            put_u32(&mut f, d + 12, flags);
            layout.insert(pfn, (d, off, size, flags));
        }
        Built { file: f, bitmap, descs, layout, compressed }
    }
}

/// The flattened form of `file`: the 4096-byte header, then the file as records of at most `record`
/// bytes, written in an order that is not the file's (the header blocks last, as a writer that fills
/// them in at the end would), with a first garbage copy of the header that the later one overwrites.
pub fn flatten(file: &[u8], record: usize) -> Vec<u8> {
    let mut out = vec![0u8; 4096];
    out[..12].copy_from_slice(b"makedumpfile");
    out[16..24].copy_from_slice(&1i64.to_be_bytes());
    out[24..32].copy_from_slice(&1i64.to_be_bytes());
    let rec = |out: &mut Vec<u8>, off: usize, bytes: &[u8]| {
        out.extend_from_slice(&(off as i64).to_be_bytes());
        out.extend_from_slice(&(bytes.len() as i64).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    rec(&mut out, 0, &vec![0xee; 600]);
    let head = 464.min(file.len());
    let mut off = head;
    while off < file.len() {
        let n = record.min(file.len() - off);
        rec(&mut out, off, &file[off..off + n]);
        off += n;
    }
    rec(&mut out, 0, &file[..head]);
    out.extend_from_slice(&(-1i64).to_be_bytes());
    out.extend_from_slice(&(-1i64).to_be_bytes());
    out
}

/// An ELF note: name, type, descriptor, each padded to 4 bytes.
pub fn note(name: &str, ty: u32, desc: &[u8]) -> Vec<u8> {
    let mut n = Vec::new();
    n.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
    n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    n.extend_from_slice(&ty.to_le_bytes());
    n.extend_from_slice(name.as_bytes());
    n.push(0);
    n.resize(n.len().next_multiple_of(4), 0);
    n.extend_from_slice(desc);
    n.resize(n.len().next_multiple_of(4), 0);
    n
}
