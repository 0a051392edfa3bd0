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
    /// DMA Remapping table: Intel VT-d remapping units (Intel VT-d spec, chapter 8).
    pub const DMAR: Sig = Sig(*b"DMAR");
    /// I/O Virtualization Reporting Structure: AMD-Vi units (AMD IOMMU spec 48882, 5.2).
    pub const IVRS: Sig = Sig(*b"IVRS");
    /// I/O Remapping Table: Arm SMMUs and what is behind them (Arm DEN0049).
    pub const IORT: Sig = Sig(*b"IORT");
    /// Root System Description Table: 32-bit table addresses (ACPI 6.5, 5.2.7).
    pub const RSDT: Sig = Sig(*b"RSDT");
    /// Extended System Description Table: 64-bit table addresses (ACPI 6.5, 5.2.8).
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
    /// The buffer cannot even hold the 36-byte common header.
    #[error("{table}: {have} bytes, shorter than the {HEADER_LEN}-byte table header")]
    ShortHeader {
        /// The signature of the first four bytes ([`Sig::UNKNOWN`] if fewer).
        table: Sig,
        /// Bytes the buffer holds.
        have: usize,
    },
    /// The header's `Length` claims less than the header itself, so the table has no room for a body.
    #[error("{table}: header length {length} is shorter than the {HEADER_LEN}-byte header itself")]
    LengthBelowHeader {
        /// The table's signature.
        table: Sig,
        /// The header's `Length`, bytes.
        length: u32,
    },
    /// The header's `Length` runs past the end of the buffer (a truncated file).
    #[error("{table}: header length {length} runs past the {have} bytes available")]
    LengthPastBuffer {
        /// The table's signature.
        table: Sig,
        /// The header's `Length`, bytes.
        length: u32,
        /// Bytes the buffer holds.
        have: usize,
    },
    /// A table in a dump claims more than [`rsdp::MAX_TABLE_LEN`]: refused before allocating for it.
    #[error("{table}: header length {length} is more than the {max} bytes accepted")]
    TooLarge {
        /// The table's signature.
        table: Sig,
        /// The header's `Length`, bytes.
        length: u32,
        /// The cap, [`rsdp::MAX_TABLE_LEN`].
        max: u32,
    },
    /// The table's `Length` bytes do not sum to 0 modulo 256 (ACPI 6.5, 5.2.6 `Checksum`): corrupt or
    /// not a table.
    #[error("{table}: bad checksum: the {length} bytes sum to {sum:#04x}, not 0 (checksum byte {checksum:#04x})")]
    Checksum {
        /// The table's signature.
        table: Sig,
        /// The header's `Length`, bytes summed.
        length: u32,
        /// What they summed to.
        sum: u8,
        /// The header's `Checksum` byte, for the message.
        checksum: u8,
    },
    /// A parser for one table was handed another (e.g. an IVRS file given to the DMAR parser, or an
    /// RSDP's RSDT/XSDT address that leads to a table with another signature).
    #[error("expected a {expected} table, found {found}")]
    WrongSignature {
        /// The signature the parser needs.
        expected: Sig,
        /// The signature the table has.
        found: Sig,
    },
    /// A field inside a table's body failed a check: a length, an offset, a count or a type.
    #[error("{table} at offset {offset:#x}, {field}: {problem}")]
    Field {
        /// The table's signature.
        table: Sig,
        /// Byte offset from the start of the table of the structure or field at fault.
        offset: usize,
        /// The field's name as its spec spells it (`Device Scope Length`, `Reference to ID Array`, ...).
        field: &'static str,
        /// What was wrong with it.
        problem: Problem,
    },
    /// [`Firmware::parse`] was given a table that names no IOMMU units.
    #[error("{table}: not a DMAR, IVRS or IORT table")]
    Unsupported {
        /// The table's signature.
        table: Sig,
    },
    /// The RSDP at a given or found address failed one of its own checks.
    #[error("RSDP at {addr:#x}: {problem}")]
    Rsdp {
        /// Physical address of the RSDP.
        addr: u64,
        /// The check that failed.
        problem: RsdpProblem,
    },
    /// The scan of the EBDA and the BIOS area found no RSDP whose checksums hold (a UEFI machine, or a
    /// dump without low memory: give the RSDP's address instead).
    #[error("no RSDP found: no valid \"RSD PTR \" in the EBDA or 0xe0000-0xfffff{}{}", rejected_note(*.rejected), missing_note(*.missing_pages, *.searched_pages))]
    NoRsdp {
        /// Physical address of the first `RSD PTR ` signature whose RSDP failed its checks, if any.
        rejected: Option<u64>,
        /// Pages of the scanned areas the dump does not hold.
        missing_pages: usize,
        /// Pages scanned in all (at most 4 KiB each).
        searched_pages: usize,
    },
    /// The root table lists no table with the wanted signature whose header the dump holds.
    #[error("no {sig} table in the {root} at {root_addr:#x} (it lists: {present})")]
    NoTable {
        /// The signature looked for.
        sig: Sig,
        /// [`Sig::RSDT`] or [`Sig::XSDT`]: the root table searched.
        root: Sig,
        /// Physical address of the root table.
        root_addr: u64,
        /// What the root table lists instead.
        present: Listed,
    },
    /// The root table lists none of DMAR, IVRS, IORT whose header the dump holds.
    #[error("no DMAR, IVRS or IORT table in the {root} at {root_addr:#x} (it lists: {present})")]
    NoIommuTable {
        /// [`Sig::RSDT`] or [`Sig::XSDT`]: the root table searched.
        root: Sig,
        /// Physical address of the root table.
        root_addr: u64,
        /// What the root table lists instead.
        present: Listed,
    },
    /// A table (a root table, or one it lists) could not be read from the dump.
    #[error("{what} at physical address {addr:#x}: {source}")]
    Memory {
        /// What was being read ("table header", "96-byte DMAR table").
        what: String,
        /// Physical address of the read.
        addr: u64,
        /// Why the dump could not supply it.
        source: MemError,
    },
}

/// What a root table (RSDT/XSDT) lists: the signatures the dump holds, and how many listed tables it lacks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listed {
    /// Signatures of the listed tables whose first four bytes the dump holds, in the root table's order.
    pub found: Vec<Sig>,
    /// Listed (non-null) addresses whose signature the dump does not hold.
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
    /// The field or structure would end past its enclosing structure or the table.
    #[error("{size} bytes here run past the end at {end:#x}")]
    PastEnd {
        /// Bytes the field or structure needs.
        size: usize,
        /// Table offset (exclusive) it must end by: the enclosing structure's end or the table's.
        end: usize,
    },
    /// A structure's own `Length` is below its fixed part (a 0 would make a walk loop forever).
    #[error("length {length} is shorter than the {min} bytes of its fixed part")]
    TooShort {
        /// The structure's `Length` field, bytes.
        length: usize,
        /// The fixed part's size, bytes.
        min: usize,
    },
    /// A `Length` that must follow a formula does not (e.g. a DMAR Device Scope: 6 + 2 per path hop).
    #[error("length {length} is not {expected}")]
    BadLength {
        /// The `Length` field, bytes.
        length: usize,
        /// The rule it breaks, for the message.
        expected: &'static str,
    },
    /// An offset field (an IORT node or ID-mapping offset) points outside the table or its node.
    #[error("offset {value:#x} is outside the {len}-byte table")]
    OffsetOutside {
        /// The offset field's value, bytes.
        value: u64,
        /// Bytes it had to stay inside.
        len: usize,
    },
    /// Any other structural fault, described in words (an unknown entry type of unknown size, a range
    /// end without a start, ...).
    #[error("{0}")]
    Malformed(&'static str),
}

/// The RSDP's own checks (ACPI 6.5, 5.2.5.3).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RsdpProblem {
    /// The first eight bytes are not `RSD PTR ` (or fewer than 20 bytes were given).
    #[error("signature is not \"RSD PTR \"")]
    Signature,
    /// The ACPI 1.0 `Checksum` over the first 20 bytes fails.
    #[error("the first 20 bytes sum to {sum:#04x}, not 0")]
    Checksum {
        /// What the 20 bytes summed to, modulo 256.
        sum: u8,
    },
    /// A revision 2 RSDP whose `Length` is below its own 36 bytes or implausibly large (over 4 KiB).
    #[error("extended length {length} is not between 36 and 4096")]
    Length {
        /// The RSDP's `Length` field, bytes.
        length: u32,
    },
    /// A revision 2 RSDP's `Extended Checksum` over `Length` bytes fails.
    #[error("the {length} bytes of the extended structure sum to {sum:#04x}, not 0")]
    ExtendedChecksum {
        /// The RSDP's `Length` field, bytes.
        length: u32,
        /// What those bytes summed to, modulo 256.
        sum: u8,
    },
    /// Both `RsdtAddress` and `XsdtAddress` are 0: there is no root table to follow.
    #[error("names neither an RSDT nor an XSDT (both addresses are 0)")]
    NoRoot,
    /// The dump does not hold the RSDP's bytes at the given address.
    #[error("not readable: {0}")]
    Unreadable(MemError),
}

/// The common header (ACPI 6.5, 5.2.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdtHeader {
    /// `Signature`, bytes 0-3.
    pub signature: Sig,
    /// The whole table's length in bytes, header included.
    pub length: u32,
    /// `Revision`, byte 8: the table format's revision (IVRS and IORT layouts depend on it).
    pub revision: u8,
    /// `Checksum`, byte 9: makes the whole table sum to 0; already checked by [`Table::parse`].
    pub checksum: u8,
    /// `OEMID`, bytes 10-15: the firmware vendor, for reports.
    pub oem_id: [u8; 6],
    /// `OEM Table ID`, bytes 16-23: the vendor's name for this table or platform.
    pub oem_table_id: [u8; 8],
    /// `OEM Revision`, bytes 24-27.
    pub oem_revision: u32,
    /// `Creator ID`, bytes 28-31: the vendor of the tool that built the table (e.g. QEMU's `BXPC`).
    pub creator_id: [u8; 4],
    /// `Creator Revision`, bytes 32-35: that tool's revision.
    pub creator_revision: u32,
}

/// One checked table: its header was sane, its length fitted the buffer and its checksum summed to 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// The decoded common header; `header.length` bytes were checksummed.
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

    /// The header's `Signature`, which says which parser applies.
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
    /// The structure's `Type` field (a DMAR remapping-structure type, an IVRS block type).
    pub kind: u16,
    /// Byte offset of the structure from the start of the table.
    pub offset: usize,
    /// The structure's `Length` field, bytes.
    pub length: usize,
}
