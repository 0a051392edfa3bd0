//! A byte-level builder of ACPI tables, written from the specs' layouts (ACPI 5.2.6 header, VT-d ch. 8,
//! AMD IOMMU 5.2, Arm DEN0049) and independent of the parser, so the parser is checked against bytes
//! laid out by hand.

/// Little-endian bytes, appended field by field.
#[derive(Clone, Default)]
pub struct Le(pub Vec<u8>);

impl Le {
    pub fn new() -> Self {
        Le(Vec::new())
    }
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    pub fn u16(mut self, v: u16) -> Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    pub fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    pub fn zeros(mut self, n: usize) -> Self {
        self.0.resize(self.0.len() + n, 0);
        self
    }
}

/// Sets byte 9 so the whole table sums to 0.
pub fn fix_checksum(t: &mut [u8]) {
    t[9] = 0;
    let sum = t.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    t[9] = 0u8.wrapping_sub(sum);
}

/// A table: the 36-byte header (length and checksum filled in) and `body`.
pub fn table(sig: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let len = 36 + body.len() as u32;
    let mut t = Le::new()
        .bytes(sig)
        .u32(len)
        .u8(revision)
        .u8(0)
        .bytes(b"HNDOVR")
        .bytes(b"TESTTABL")
        .u32(1)
        .bytes(b"TEST")
        .u32(1)
        .bytes(body)
        .0;
    fix_checksum(&mut t);
    t
}

// --- DMAR (VT-d 8.1-8.4) ---

pub fn dmar(haw: u8, flags: u8, structures: &[Vec<u8>]) -> Vec<u8> {
    let body = Le::new().u8(haw).u8(flags).zeros(10).bytes(&structures.concat());
    table(b"DMAR", 1, &body.0)
}

pub fn scope(kind: u8, enumeration_id: u8, bus: u8, path: &[(u8, u8)]) -> Vec<u8> {
    let mut s = Le::new().u8(kind).u8(6 + 2 * path.len() as u8).u8(0).u8(0).u8(enumeration_id).u8(bus);
    for &(d, f) in path {
        s = s.u8(d).u8(f);
    }
    s.0
}

pub fn drhd(flags: u8, segment: u16, base: u64, scopes: &[Vec<u8>]) -> Vec<u8> {
    let s = scopes.concat();
    Le::new().u16(0).u16(16 + s.len() as u16).u8(flags).u8(0).u16(segment).u64(base).bytes(&s).0
}

pub fn rmrr(segment: u16, base: u64, limit: u64, scopes: &[Vec<u8>]) -> Vec<u8> {
    let s = scopes.concat();
    Le::new().u16(1).u16(24 + s.len() as u16).u16(0).u16(segment).u64(base).u64(limit).bytes(&s).0
}

/// A structure of some other type, `len` bytes (ATSR, RHSA, ANDD, ...).
pub fn dmar_other(kind: u16, len: u16) -> Vec<u8> {
    Le::new().u16(kind).u16(len).zeros(len as usize - 4).0
}

// --- IVRS (AMD IOMMU 5.2) ---

pub fn ivrs(iv_info: u32, blocks: &[Vec<u8>]) -> Vec<u8> {
    table(b"IVRS", 2, &Le::new().u32(iv_info).zeros(8).bytes(&blocks.concat()).0)
}

/// An IVHD: type 10h has a 24-byte fixed part, 11h and 40h 40 bytes with the EFR images.
pub fn ivhd(kind: u8, devid: u16, base: u64, segment: u16, efr: u64, entries: &[u8]) -> Vec<u8> {
    let fixed = if kind == 0x10 { 24 } else { 40 };
    let mut b = Le::new()
        .u8(kind)
        .u8(0xb0)
        .u16((fixed + entries.len()) as u16)
        .u16(devid)
        .u16(0x40)
        .u64(base)
        .u16(segment)
        .u16(0)
        .u32(0x44);
    if kind != 0x10 {
        b = b.u64(efr).u64(0);
    }
    b.bytes(entries).0
}

pub fn dev4(kind: u8, devid: u16, dte: u8) -> Vec<u8> {
    Le::new().u8(kind).u16(devid).u8(dte).0
}

pub fn dev8(kind: u8, devid: u16, dte: u8, b4: u8, w5: u16, b7: u8) -> Vec<u8> {
    Le::new().u8(kind).u16(devid).u8(dte).u8(b4).u16(w5).u8(b7).0
}

pub fn ivmd(kind: u8, flags: u8, devid: u16, aux: u16, start: u64, len: u64) -> Vec<u8> {
    Le::new().u8(kind).u8(flags).u16(32).u16(devid).u16(aux).u64(0).u64(start).u64(len).0
}

// --- IORT (DEN0049) ---

/// Offset of the first node in tables built by [`iort`].
pub const IORT_NODES: u32 = 48;

pub fn iort(nodes: &[Vec<u8>]) -> Vec<u8> {
    table(b"IORT", 3, &Le::new().u32(nodes.len() as u32).u32(IORT_NODES).u32(0).bytes(&nodes.concat()).0)
}

/// A node: the 16-byte header, `body`, then the ID mappings `[input, count-1, output, ref, flags]`.
pub fn node(kind: u8, body: &[u8], mappings: &[[u32; 5]]) -> Vec<u8> {
    let len = 16 + body.len() + 20 * mappings.len();
    let refs = if mappings.is_empty() { 0 } else { 16 + body.len() as u32 };
    let mut n = Le::new().u8(kind).u16(len as u16).u8(3).u32(7).u32(mappings.len() as u32).u32(refs).bytes(body);
    for m in mappings {
        for v in m {
            n = n.u32(*v);
        }
    }
    n.0
}

pub fn smmuv3_body(base: u64) -> Vec<u8> {
    // Base, flags (COHACC), reserved, VATOS, model, 4 GSIVs, proximity domain, DeviceID mapping index.
    Le::new().u64(base).u32(1).u32(0).u64(0).u32(0).u32(0x6a).u32(0x6b).u32(0x6c).u32(0x6d).u32(0).u32(0).0
}

pub fn root_complex_body(segment: u32) -> Vec<u8> {
    Le::new().u64(1).u32(0).u32(segment).u8(48).zeros(3).0
}

pub fn its_body() -> Vec<u8> {
    Le::new().u32(1).u32(0).0
}

/// An RMR body whose descriptors follow its fixed part directly (reference 28).
pub fn rmr_body(ranges: &[(u64, u64)]) -> Vec<u8> {
    let mut b = Le::new().u32(0).u32(ranges.len() as u32).u32(28);
    for &(base, len) in ranges {
        b = b.u64(base).u64(len).u32(0);
    }
    b.0
}

pub fn named_body(name: &str) -> Vec<u8> {
    Le::new().u32(0).u64(0).u8(48).bytes(name.as_bytes()).u8(0).zeros(3).0
}
