//! Finding tables in physical memory: the RSDP, then the RSDT or XSDT it points at, then a table by
//! signature (ACPI 6.5, 5.2.5 "Root System Description Pointer" and 5.2.7/5.2.8).
//!
//! On a PC the RSDP sits on a 16-byte boundary in the first KiB of the EBDA (whose segment is the
//! word at 0x40e) or in the BIOS area 0xe0000-0xfffff (5.2.5.1). UEFI machines (arm64) publish it
//! in the EFI configuration table instead, which a dump does not index: give its address then.
//! As ACPICA does (`acpi_tb_parse_root_table`), the XSDT is used when the RSDP is revision 2 or later
//! and names one, the RSDT otherwise or when the XSDT cannot be read; null entries are skipped.

use std::ops::Range;

use iommu_platform::PhysMem;

use super::{checksum, AcpiError, Bytes, Listed, RsdpProblem, Sig, Table, HEADER_LEN};

/// Where the BIOS area is scanned for the RSDP.
pub const BIOS_AREA: Range<u64> = 0xe0000..0x100000;
/// The most bytes of one table read from a dump. DMAR, IVRS and IORT are kilobytes even on large
/// servers; the cap keeps a hostile length from allocating gigabytes.
pub const MAX_TABLE_LEN: u32 = 1 << 20;
const SIGNATURE: &[u8; 8] = b"RSD PTR ";
/// Bytes of an ACPI 1.0 RSDP; revision 2 extends it to `Length` (36).
const V1_LEN: usize = 20;
const V2_LEN: usize = 36;
const EBDA_POINTER: u64 = 0x40e;
const EBDA_SCAN: u64 = 1024;

/// The Root System Description Pointer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rsdp {
    /// Its physical address.
    pub addr: u64,
    /// 0 for ACPI 1.0 (RSDT only), 2 for 2.0 and later.
    pub revision: u8,
    /// `OEMID` (bytes 9-14): the firmware vendor.
    pub oem_id: [u8; 6],
    /// `RsdtAddress` (bytes 16-19): the RSDT's physical address, 0 when there is none.
    pub rsdt: u32,
    /// The XSDT's address, for revision 2 and later when non-zero.
    pub xsdt: Option<u64>,
}

impl Rsdp {
    /// Checks the RSDP in `buf` (20 bytes for revision 0, `Length` bytes for 2 and later) found at `addr`.
    pub fn parse(addr: u64, buf: &[u8]) -> Result<Rsdp, AcpiError> {
        let bad = |problem| AcpiError::Rsdp { addr, problem };
        if buf.len() < V1_LEN || &buf[..8] != SIGNATURE {
            return Err(bad(RsdpProblem::Signature));
        }
        let sum = checksum(&buf[..V1_LEN]);
        if sum != 0 {
            return Err(bad(RsdpProblem::Checksum { sum }));
        }
        let b = Bytes::new(Sig(*b"RSDP"), buf);
        let revision = b.u8(15, "Revision")?;
        let mut xsdt = None;
        if revision >= 2 {
            let length = b.u32(20, "Length")?;
            if !(V2_LEN as u32..=4096).contains(&length) {
                return Err(bad(RsdpProblem::Length { length }));
            }
            let ext = b.slice(0, length as usize, "extended RSDP")?;
            let sum = checksum(ext);
            if sum != 0 {
                return Err(bad(RsdpProblem::ExtendedChecksum { length, sum }));
            }
            xsdt = Some(b.u64(24, "XsdtAddress")?).filter(|&x| x != 0);
        }
        Ok(Rsdp { addr, revision, oem_id: b.array(9, "OEMID")?, rsdt: b.u32(16, "RsdtAddress")?, xsdt })
    }

    /// The RSDP at a known address.
    pub fn at(mem: &impl PhysMem, addr: u64) -> Result<Rsdp, AcpiError> {
        let mut buf = [0u8; V2_LEN];
        let unreadable = |e| AcpiError::Rsdp { addr, problem: RsdpProblem::Unreadable(e) };
        mem.read(addr, &mut buf[..V1_LEN]).map_err(unreadable)?;
        // Revision 2's extension may be longer than 36 bytes: read all of what it claims.
        if buf[15] >= 2 && &buf[..8] == SIGNATURE && checksum(&buf[..V1_LEN]) == 0 {
            let mut len_bytes = [0u8; 4];
            mem.read(addr.wrapping_add(20), &mut len_bytes).map_err(unreadable)?;
            let length = u32::from_le_bytes(len_bytes).clamp(V2_LEN as u32, 4096);
            let mut ext = vec![0u8; length as usize];
            mem.read(addr, &mut ext).map_err(unreadable)?;
            return Rsdp::parse(addr, &ext);
        }
        Rsdp::parse(addr, &buf[..V1_LEN])
    }

    /// Scans the EBDA's first KiB, then the BIOS area, on 16-byte boundaries, for an RSDP whose
    /// checksums hold. Pages the dump lacks are skipped.
    pub fn find(mem: &impl PhysMem) -> Result<Rsdp, AcpiError> {
        let (mut rejected, mut missing_pages, mut searched_pages) = (None, 0, 0);
        let mut ebda = [0u8; 2];
        let mut areas = Vec::with_capacity(2);
        if mem.read(EBDA_POINTER, &mut ebda).is_ok() {
            let start = u64::from(u16::from_le_bytes(ebda)) << 4;
            // The EBDA lives below the 640 KiB line; anything else is not an EBDA pointer.
            if (0x400..0xa0000).contains(&start) {
                areas.push(start..start + EBDA_SCAN);
            }
        }
        areas.push(BIOS_AREA);
        for area in areas {
            let mut page = area.start;
            while page < area.end {
                let chunk_end = ((page | 0xfff) + 1).min(area.end);
                let mut buf = vec![0u8; (chunk_end - page) as usize];
                searched_pages += 1;
                if mem.read(page, &mut buf).is_err() {
                    missing_pages += 1;
                } else {
                    for off in (0..buf.len()).step_by(16) {
                        if buf[off..].starts_with(SIGNATURE) {
                            match Rsdp::at(mem, page + off as u64) {
                                Ok(r) => return Ok(r),
                                Err(_) => rejected = rejected.or(Some(page + off as u64)),
                            }
                        }
                    }
                }
                page = chunk_end;
            }
        }
        Err(AcpiError::NoRsdp { rejected, missing_pages, searched_pages })
    }
}

/// A table read from physical memory: the header first, then `Length` bytes (at most
/// [`MAX_TABLE_LEN`]), checked as [`Table::parse`] checks a file.
pub fn read_table(mem: &impl PhysMem, addr: u64) -> Result<Table, AcpiError> {
    let memory = |what: &str, source| AcpiError::Memory { what: what.into(), addr, source };
    let mut head = [0u8; HEADER_LEN];
    mem.read(addr, &mut head).map_err(|e| memory("table header", e))?;
    let table = Sig::of(&head);
    let length = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if length > MAX_TABLE_LEN {
        return Err(AcpiError::TooLarge { table, length, max: MAX_TABLE_LEN });
    }
    if (length as usize) < HEADER_LEN {
        return Err(AcpiError::LengthBelowHeader { table, length });
    }
    let mut buf = vec![0u8; length as usize];
    mem.read(addr, &mut buf).map_err(|e| memory(&format!("{length}-byte {table} table"), e))?;
    Table::parse(&buf)
}

/// The RSDP and the root table it leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acpi {
    /// The pointer the root table was found through.
    pub rsdp: Rsdp,
    /// `RSDT` or `XSDT`.
    pub root: Sig,
    /// Physical address of the root table.
    pub root_addr: u64,
    /// The non-null table addresses the root lists, in order.
    pub entries: Vec<u64>,
}

impl Acpi {
    /// Finds the RSDP (at `rsdp` if given, else by scanning) and reads its root table.
    pub fn load(mem: &impl PhysMem, rsdp: Option<u64>) -> Result<Acpi, AcpiError> {
        let rsdp = match rsdp {
            Some(addr) => Rsdp::at(mem, addr)?,
            None => Rsdp::find(mem)?,
        };
        let rsdt = (rsdp.rsdt != 0).then_some(u64::from(rsdp.rsdt));
        let (root, root_addr, table) = match (rsdp.xsdt, rsdt) {
            (Some(x), rsdt) => match read_table(mem, x) {
                Ok(t) => (Sig::XSDT, x, t),
                Err(e) => match rsdt {
                    Some(r) => (Sig::RSDT, r, read_table(mem, r).map_err(|_| e)?),
                    None => return Err(e),
                },
            },
            (None, Some(r)) => (Sig::RSDT, r, read_table(mem, r)?),
            (None, None) => return Err(AcpiError::Rsdp { addr: rsdp.addr, problem: RsdpProblem::NoRoot }),
        };
        table.expect(root)?;
        let width = if root == Sig::XSDT { 8 } else { 4 };
        let b = table.reader();
        // As ACPICA does, a partial trailing entry is ignored; the count is bounded by the table's length.
        let count = (b.len() - HEADER_LEN) / width;
        let mut entries = Vec::with_capacity(count);
        for i in 0..count {
            let off = HEADER_LEN + i * width;
            let addr = if width == 8 { b.u64(off, "Entry")? } else { u64::from(b.u32(off, "Entry")?) };
            if addr != 0 {
                entries.push(addr);
            }
        }
        Ok(Acpi { rsdp, root, root_addr, entries })
    }

    /// The signature of each listed table whose header the dump holds, with its address.
    pub fn signatures(&self, mem: &impl PhysMem) -> Vec<(Sig, u64)> {
        let mut out = Vec::new();
        for &addr in &self.entries {
            let mut sig = [0u8; 4];
            if mem.read(addr, &mut sig).is_ok() {
                out.push((Sig(sig), addr));
            }
        }
        out
    }

    /// The first listed table with signature `sig`, read and checked. A listed table the dump lacks is
    /// passed over; if none matches, the error lists what the root table does hold.
    pub fn find(&self, mem: &impl PhysMem, sig: Sig) -> Result<Table, AcpiError> {
        let present = self.signatures(mem);
        match present.iter().find(|(s, _)| *s == sig) {
            Some(&(_, addr)) => read_table(mem, addr),
            None => {
                let present = Listed {
                    found: present.iter().map(|&(s, _)| s).collect(),
                    not_in_dump: self.entries.len().saturating_sub(present.len()),
                };
                Err(AcpiError::NoTable { sig, root: self.root, root_addr: self.root_addr, present })
            }
        }
    }
}
