//! ACPI tables that say where the IOMMUs are: DMAR (Intel VT-d), IVRS (AMD-Vi) and IORT (Arm SMMUv3).
//!
//! A dump holds the firmware's tables as the crashed machine saw them: the RSDP in the BIOS area points
//! at the RSDT/XSDT, which lists every table ([`rsdp`]). The same table also arrives as a file
//! (`cat /sys/firmware/acpi/tables/DMAR > dmar.bin`), which [`Table::parse`] reads.
//!
//! Everything here is hostile input. Every length and offset is checked against the table and the
//! buffer before it is used, every loop advances by a checked non-zero step inside a bounded range, and
//! every refusal is an [`AcpiError`] naming the table, the offset and the field.

pub mod dmar;
pub mod iort;
pub mod ivrs;
pub mod rsdp;
pub mod units;

use std::fmt;

use iommu_platform::MemError;

pub use dmar::Dmar;
pub use iort::Iort;
pub use ivrs::Ivrs;
pub use rsdp::{Acpi, Rsdp};
pub use units::{sysfs_table, table_of, Firmware, IommuKind, Unit, SYSFS_TABLES};

/// The common header every system description table starts with (ACPI 6.5, 5.2.6).
pub const HEADER_LEN: usize = 36;

/// A table's four-byte signature (`DMAR`, `IVRS`, ...), shown as text, with any unprintable byte escaped.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sig(pub [u8; 4]);

impl Sig {
    pub const DMAR: Sig = Sig(*b"DMAR");
    pub const IVRS: Sig = Sig(*b"IVRS");
    pub const IORT: Sig = Sig(*b"IORT");
    pub const RSDT: Sig = Sig(*b"RSDT");
    pub const XSDT: Sig = Sig(*b"XSDT");
    /// What errors name when not even four bytes were there.
    pub const UNKNOWN: Sig = Sig(*b"????");

    /// The signature at the start of `buf`, or [`Sig::UNKNOWN`].
    pub fn of(buf: &[u8]) -> Sig {
        buf.get(..4).and_then(|b| b.try_into().ok()).map_or(Sig::UNKNOWN, Sig)
    }
}

impl fmt::Display for Sig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in &self.0 {
            if b.is_ascii_graphic() || b == b' ' {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Sig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sig({self})")
    }
}

/// Why a table (or the search for one) was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AcpiError {
    #[error("{table}: {have} bytes, shorter than the {HEADER_LEN}-byte table header")]
    ShortHeader { table: Sig, have: usize },
    #[error("{table}: header length {length} is shorter than the {HEADER_LEN}-byte header itself")]
    LengthBelowHeader { table: Sig, length: u32 },
    #[error("{table}: header length {length} runs past the {have} bytes available")]
    LengthPastBuffer { table: Sig, length: u32, have: usize },
    #[error("{table}: header length {length} is more than the {max} bytes accepted")]
    TooLarge { table: Sig, length: u32, max: u32 },
    #[error("{table}: bad checksum: the {length} bytes sum to {sum:#04x}, not 0 (checksum byte {checksum:#04x})")]
    Checksum { table: Sig, length: u32, sum: u8, checksum: u8 },
    #[error("expected a {expected} table, found {found}")]
    WrongSignature { expected: Sig, found: Sig },
    #[error("{table} at offset {offset:#x}, {field}: {problem}")]
    Field { table: Sig, offset: usize, field: &'static str, problem: Problem },
    #[error("{table}: not a DMAR, IVRS or IORT table")]
    Unsupported { table: Sig },
    #[error("RSDP at {addr:#x}: {problem}")]
    Rsdp { addr: u64, problem: RsdpProblem },
    #[error("no RSDP found: no valid \"RSD PTR \" in the EBDA or 0xe0000-0xfffff{}{}", rejected_note(*.rejected), missing_note(*.missing_pages, *.searched_pages))]
    NoRsdp { rejected: Option<u64>, missing_pages: usize, searched_pages: usize },
    #[error("no {sig} table in the {root} at {root_addr:#x} (it lists: {present})")]
    NoTable { sig: Sig, root: Sig, root_addr: u64, present: Listed },
    #[error("no DMAR, IVRS or IORT table in the {root} at {root_addr:#x} (it lists: {present})")]
    NoIommuTable { root: Sig, root_addr: u64, present: Listed },
    #[error("{what} at physical address {addr:#x}: {source}")]
    Memory { what: String, addr: u64, source: MemError },
}

/// What a root table (RSDT/XSDT) lists: the signatures the dump holds, and how many listed tables it lacks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listed {
    pub found: Vec<Sig>,
    pub not_in_dump: usize,
}

impl core::fmt::Display for Listed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.found.is_empty() && self.not_in_dump == 0 {
            return f.write_str("nothing");
        }
        for (i, s) in self.found.iter().enumerate() {
            write!(f, "{}{s}", if i > 0 { " " } else { "" })?;
        }
        match (self.found.is_empty(), self.not_in_dump) {
            (_, 0) => Ok(()),
            (true, n) => write!(f, "{n} not in the dump"),
            (false, n) => write!(f, " {n} not in the dump"),
        }
    }
}

fn rejected_note(rejected: Option<u64>) -> String {
    rejected.map_or(String::new(), |a| format!(" (the signature at {a:#x} failed its checksum)"))
}

fn missing_note(missing: usize, searched: usize) -> String {
    match missing {
        0 => String::new(),
        m if m == searched => " (the dump holds none of those pages)".into(),
        m => format!(" ({m} of the {searched} pages searched are not in the dump)"),
    }
}

/// What was wrong with a field of a table.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("{size} bytes here run past the end at {end:#x}")]
    PastEnd { size: usize, end: usize },
    #[error("length {length} is shorter than the {min} bytes of its fixed part")]
    TooShort { length: usize, min: usize },
    #[error("length {length} is not {expected}")]
    BadLength { length: usize, expected: &'static str },
    #[error("offset {value:#x} is outside the {len}-byte table")]
    OffsetOutside { value: u64, len: usize },
    #[error("{0}")]
    Malformed(&'static str),
}

/// The RSDP's own checks (ACPI 6.5, 5.2.5.3).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RsdpProblem {
    #[error("signature is not \"RSD PTR \"")]
    Signature,
    #[error("the first 20 bytes sum to {sum:#04x}, not 0")]
    Checksum { sum: u8 },
    #[error("extended length {length} is not between 36 and 4096")]
    Length { length: u32 },
    #[error("the {length} bytes of the extended structure sum to {sum:#04x}, not 0")]
    ExtendedChecksum { length: u32, sum: u8 },
    #[error("names neither an RSDT nor an XSDT (both addresses are 0)")]
    NoRoot,
    #[error("not readable: {0}")]
    Unreadable(MemError),
}

/// The common header (ACPI 6.5, 5.2.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdtHeader {
    pub signature: Sig,
    /// The whole table's length in bytes, header included.
    pub length: u32,
    pub revision: u8,
    pub checksum: u8,
    pub oem_id: [u8; 6],
    pub oem_table_id: [u8; 8],
    pub oem_revision: u32,
    pub creator_id: [u8; 4],
    pub creator_revision: u32,
}

/// One checked table: its header was sane, its length fitted the buffer and its checksum summed to 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub header: SdtHeader,
    bytes: Vec<u8>,
}

impl Table {
    /// The table at the start of `buf` (bytes past its header length are ignored: a file may be padded).
    pub fn parse(buf: &[u8]) -> Result<Table, AcpiError> {
        let table = Sig::of(buf);
        if buf.len() < HEADER_LEN {
            return Err(AcpiError::ShortHeader { table, have: buf.len() });
        }
        let b = Bytes::new(table, &buf[..HEADER_LEN]);
        let header = SdtHeader {
            signature: table,
            length: b.u32(4, "Length")?,
            revision: b.u8(8, "Revision")?,
            checksum: b.u8(9, "Checksum")?,
            oem_id: b.array(10, "OEMID")?,
            oem_table_id: b.array(16, "OEM Table ID")?,
            oem_revision: b.u32(24, "OEM Revision")?,
            creator_id: b.array(28, "Creator ID")?,
            creator_revision: b.u32(32, "Creator Revision")?,
        };
        let length = header.length;
        if (length as usize) < HEADER_LEN {
            return Err(AcpiError::LengthBelowHeader { table, length });
        }
        let bytes = buf.get(..length as usize).ok_or(AcpiError::LengthPastBuffer { table, length, have: buf.len() })?;
        let sum = checksum(bytes);
        if sum != 0 {
            return Err(AcpiError::Checksum { table, length, sum, checksum: header.checksum });
        }
        Ok(Table { header, bytes: bytes.to_vec() })
    }

    pub fn signature(&self) -> Sig {
        self.header.signature
    }

    /// The whole table, header included, `header.length` bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// A checked reader over the table.
    pub(crate) fn reader(&self) -> Bytes<'_> {
        Bytes::new(self.signature(), &self.bytes)
    }

    /// Refuses a table whose signature is not `expected`.
    pub(crate) fn expect(&self, expected: Sig) -> Result<(), AcpiError> {
        if self.signature() != expected {
            return Err(AcpiError::WrongSignature { expected, found: self.signature() });
        }
        Ok(())
    }
}

/// The byte sum modulo 256 that a valid ACPI structure makes 0.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
}

/// Little-endian reads at offsets into one table, each checked against its end; an error names the
/// table, the offset and the field.
#[derive(Clone, Copy)]
pub(crate) struct Bytes<'a> {
    table: Sig,
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    pub(crate) fn new(table: Sig, data: &'a [u8]) -> Self {
        Self { table, data }
    }

    pub(crate) fn len(&self) -> usize {
        self.data.len()
    }

    pub(crate) fn err(&self, offset: usize, field: &'static str, problem: Problem) -> AcpiError {
        AcpiError::Field { table: self.table, offset, field, problem }
    }

    /// `size` bytes at `offset`, which must end by `end` (a sub-structure's end) and by the table's.
    pub(crate) fn slice_within(
        &self,
        offset: usize,
        size: usize,
        end: usize,
        field: &'static str,
    ) -> Result<&'a [u8], AcpiError> {
        let end = end.min(self.data.len());
        match offset.checked_add(size) {
            Some(stop) if stop <= end => Ok(&self.data[offset..stop]),
            _ => Err(self.err(offset, field, Problem::PastEnd { size, end })),
        }
    }

    pub(crate) fn slice(&self, offset: usize, size: usize, field: &'static str) -> Result<&'a [u8], AcpiError> {
        self.slice_within(offset, size, usize::MAX, field)
    }

    pub(crate) fn array<const N: usize>(&self, offset: usize, field: &'static str) -> Result<[u8; N], AcpiError> {
        let s = self.slice(offset, N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    pub(crate) fn u8(&self, offset: usize, field: &'static str) -> Result<u8, AcpiError> {
        Ok(self.array::<1>(offset, field)?[0])
    }

    pub(crate) fn u16(&self, offset: usize, field: &'static str) -> Result<u16, AcpiError> {
        self.array(offset, field).map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&self, offset: usize, field: &'static str) -> Result<u32, AcpiError> {
        self.array(offset, field).map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&self, offset: usize, field: &'static str) -> Result<u64, AcpiError> {
        self.array(offset, field).map(u64::from_le_bytes)
    }

    /// Checks a sub-structure that starts at `offset` and claims `length` bytes: at least `min` (which
    /// is never 0, so a walk always advances) and inside `end` and the table. Returns its end.
    pub(crate) fn entry_end(
        &self,
        offset: usize,
        length: usize,
        min: usize,
        end: usize,
        field: &'static str,
    ) -> Result<usize, AcpiError> {
        debug_assert!(min > 0);
        if length < min {
            return Err(self.err(offset, field, Problem::TooShort { length, min }));
        }
        self.slice_within(offset, length, end, field)?;
        Ok(offset + length)
    }
}

/// A structure a parser walked past without decoding it (a type it does not need), kept so a report can
/// say it was there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub kind: u16,
    pub offset: usize,
    pub length: usize,
}
