//! A byte-level ELF64 core builder, independent of `object` and of `iommu_dump::trim`, so the reader
//! is checked against bytes laid out by hand from the ELF spec (gABI "ELF Header", "Program Header").

pub const EHDR: usize = 64;
pub const PHDR: usize = 56;
pub const ET_CORE: u16 = 4;
pub const EM_X86_64: u16 = 62;
pub const PT_LOAD: u32 = 1;
pub const PT_NOTE: u32 = 4;

/// One program header as raw numbers (any of them may be hostile).
#[derive(Clone, Copy, Debug)]
pub struct Ph {
    pub p_type: u32,
    pub offset: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

impl Ph {
    pub fn load(offset: u64, paddr: u64, filesz: u64, memsz: u64) -> Self {
        Ph { p_type: PT_LOAD, offset, paddr, filesz, memsz }
    }
}

fn put(buf: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    if buf.len() < at + bytes.len() {
        buf.resize(at + bytes.len(), 0);
    }
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

/// An ELF64 LE header with `e_phnum = phdrs.len()`, the program headers right after it (offset 64),
/// the whole file zero-padded to `len` bytes. Callers then `put_at` their segment payloads.
pub fn core(e_type: u16, phdrs: &[Ph], len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len.max(EHDR + phdrs.len() * PHDR)];
    put(&mut b, 0, &[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    put(&mut b, 16, &e_type.to_le_bytes());
    put(&mut b, 18, &EM_X86_64.to_le_bytes());
    put(&mut b, 20, &1u32.to_le_bytes()); // e_version
    put(&mut b, 32, &(if phdrs.is_empty() { 0u64 } else { EHDR as u64 }).to_le_bytes()); // e_phoff
    put(&mut b, 52, &(EHDR as u16).to_le_bytes()); // e_ehsize
    put(&mut b, 54, &(PHDR as u16).to_le_bytes()); // e_phentsize
    put(&mut b, 56, &(phdrs.len() as u16).to_le_bytes()); // e_phnum
    put(&mut b, 58, &64u16.to_le_bytes()); // e_shentsize
    for (i, ph) in phdrs.iter().enumerate() {
        let at = EHDR + i * PHDR;
        put(&mut b, at, &ph.p_type.to_le_bytes());
        put(&mut b, at + 4, &4u32.to_le_bytes()); // PF_R
        put(&mut b, at + 8, &ph.offset.to_le_bytes());
        put(&mut b, at + 24, &ph.paddr.to_le_bytes());
        put(&mut b, at + 32, &ph.filesz.to_le_bytes());
        put(&mut b, at + 40, &ph.memsz.to_le_bytes());
    }
    b
}

/// Overwrites bytes at a file offset (segment payloads, or a header field to corrupt).
pub fn put_at(buf: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    put(buf, at, bytes);
}

/// Bytes where each position's value is a function of its position, so a read from the wrong file
/// offset shows.
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}
