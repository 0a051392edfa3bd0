//! The I/O Virtualization Reporting Structure (AMD IOMMU spec 48882, 5.2), read as Linux's
//! `amd_iommu` init code (`init_iommu_all`, `init_iommu_from_acpi`) reads it.
//!
//! After the header: IVinfo (32 bits) and eight reserved bytes, then blocks, each `Type`, `Flags`,
//! `Length` (16 bits), `DeviceID`. IVHD blocks (types 10h, 11h, 40h) describe one IOMMU: its own PCI
//! device ID, capability offset, MMIO base, segment, and (11h/40h) an image of its EFR register; then
//! device entries saying which devices it translates (5.2.2.2). IVMD blocks (20h-22h) are memory ranges
//! that devices need mapped (unity) or excluded (5.2.3). Other types are walked past by their length.
//!
//! A machine's IVRS usually describes each IOMMU twice (10h for old kernels, 11h or 40h for new ones);
//! as Linux's `get_highest_supported_ivhd_type` does, [`Ivrs::effective_ivhds`] keeps the highest type.

use super::{AcpiError, Bytes, Problem, SdtHeader, Sig, Skipped, Table};

const BLOCKS: usize = 48;
pub const IVHD_10: u8 = 0x10;
pub const IVHD_11: u8 = 0x11;
pub const IVHD_40: u8 = 0x40;
pub const IVMD_ALL: u8 = 0x20;
pub const IVMD_SELECT: u8 = 0x21;
pub const IVMD_RANGE: u8 = 0x22;

/// Device entry types (5.2.2.2, Linux `IVHD_DEV_*`).
pub mod dev {
    pub const PAD: u8 = 0x00;
    pub const ALL: u8 = 0x01;
    pub const SELECT: u8 = 0x02;
    pub const RANGE_START: u8 = 0x03;
    pub const RANGE_END: u8 = 0x04;
    pub const ALIAS: u8 = 0x42;
    pub const ALIAS_RANGE: u8 = 0x43;
    pub const EXT_SELECT: u8 = 0x46;
    pub const EXT_RANGE: u8 = 0x47;
    pub const SPECIAL: u8 = 0x48;
    pub const ACPI_HID: u8 = 0xf0;
    /// `Special` varieties.
    pub const SPECIAL_IOAPIC: u8 = 1;
    pub const SPECIAL_HPET: u8 = 2;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ivrs {
    pub header: SdtHeader,
    /// IVinfo: EFR support (bit 0), physical/virtual address sizes (bits 14:8, 21:15), ...
    pub iv_info: u32,
    pub ivhds: Vec<Ivhd>,
    pub ivmds: Vec<Ivmd>,
    pub skipped: Vec<Skipped>,
}

/// An I/O virtualization hardware definition: one IOMMU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ivhd {
    pub offset: usize,
    /// 10h, 11h or 40h.
    pub kind: u8,
    pub flags: u8,
    /// The IOMMU's own PCI device ID (bus << 8 | devfn).
    pub device_id: u16,
    pub cap_offset: u16,
    /// The MMIO register base.
    pub base: u64,
    pub segment: u16,
    pub info: u16,
    /// IOMMU feature reporting (10h) or IOMMU attributes (11h, 40h).
    pub features: u32,
    /// The EFR register image (11h, 40h).
    pub efr: Option<u64>,
    /// The EFR2 register image (11h, 40h).
    pub efr2: Option<u64>,
    pub entries: Vec<DeviceEntry>,
}

/// A device entry, with range starts joined to their range end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceEntry {
    All {
        dte: u8,
    },
    Select {
        devid: u16,
        dte: u8,
    },
    Range {
        start: u16,
        end: u16,
        dte: u8,
    },
    /// Requests from `devid` arrive carrying `alias` (e.g. behind a PCIe-to-PCI bridge).
    Alias {
        devid: u16,
        dte: u8,
        alias: u16,
    },
    AliasRange {
        start: u16,
        end: u16,
        dte: u8,
        alias: u16,
    },
    Extended {
        devid: u16,
        dte: u8,
        ext: u32,
    },
    ExtendedRange {
        start: u16,
        end: u16,
        dte: u8,
        ext: u32,
    },
    /// An IOAPIC ([`dev::SPECIAL_IOAPIC`]) or HPET ([`dev::SPECIAL_HPET`]) with its handle (ID) and the
    /// device ID its interrupts carry.
    Special {
        handle: u8,
        devid: u16,
        dte: u8,
        variety: u8,
    },
    AcpiHid {
        devid: u16,
        dte: u8,
        hid: [u8; 8],
        cid: [u8; 8],
        uid: Vec<u8>,
    },
    /// Padding (type 0) or a fixed-size type this parser does not know, walked past by its size.
    Other {
        kind: u8,
        offset: usize,
    },
}

/// An I/O virtualization memory definition (5.2.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ivmd {
    pub offset: usize,
    /// 20h (all devices), 21h (one device), 22h (a device range).
    pub kind: u8,
    /// Unity (bit 0), IR (1), IW (2), exclusion range (3).
    pub flags: u8,
    /// The device (21h) or first device (22h).
    pub device_id: u16,
    /// The last device of a 22h range.
    pub aux: u16,
    pub start: u64,
    pub length: u64,
}

impl Ivrs {
    pub fn parse(table: &Table) -> Result<Ivrs, AcpiError> {
        table.expect(Sig::IVRS)?;
        let b = table.reader();
        let iv_info = b.u32(36, "IVinfo")?;
        b.slice(40, BLOCKS - 40, "Reserved")?;
        let mut ivrs =
            Ivrs { header: table.header.clone(), iv_info, ivhds: Vec::new(), ivmds: Vec::new(), skipped: Vec::new() };
        let mut off = BLOCKS;
        // Each block is at least 4 bytes and inside the table: the walk is bounded by len/4.
        while off < b.len() {
            let kind = b.u8(off, "block Type")?;
            let length = usize::from(b.u16(off + 2, "block Length")?);
            let end = match kind {
                IVHD_10 | IVHD_11 | IVHD_40 => {
                    let fixed = if kind == IVHD_10 { 24 } else { 40 };
                    let end = b.entry_end(off, length, fixed, b.len(), "IVHD Length")?;
                    let wide = kind != IVHD_10;
                    ivrs.ivhds.push(Ivhd {
                        offset: off,
                        kind,
                        flags: b.u8(off + 1, "IVHD Flags")?,
                        device_id: b.u16(off + 4, "IVHD DeviceID")?,
                        cap_offset: b.u16(off + 6, "IVHD Capability Offset")?,
                        base: b.u64(off + 8, "IVHD IOMMU Base Address")?,
                        segment: b.u16(off + 16, "IVHD PCI Segment Group")?,
                        info: b.u16(off + 18, "IVHD IOMMU Info")?,
                        features: b.u32(off + 20, "IVHD IOMMU Feature/Attributes")?,
                        efr: if wide { Some(b.u64(off + 24, "IVHD EFR Register Image")?) } else { None },
                        efr2: if wide { Some(b.u64(off + 32, "IVHD EFR2 Register Image")?) } else { None },
                        entries: entries(b, off + fixed, end)?,
                    });
                    end
                }
                IVMD_ALL | IVMD_SELECT | IVMD_RANGE => {
                    let end = b.entry_end(off, length, 32, b.len(), "IVMD Length")?;
                    ivrs.ivmds.push(Ivmd {
                        offset: off,
                        kind,
                        flags: b.u8(off + 1, "IVMD Flags")?,
                        device_id: b.u16(off + 4, "IVMD DeviceID")?,
                        aux: b.u16(off + 6, "IVMD Auxiliary Data")?,
                        start: b.u64(off + 16, "IVMD Start Address")?,
                        length: b.u64(off + 24, "IVMD Memory Block Length")?,
                    });
                    end
                }
                _ => {
                    let end = b.entry_end(off, length, 4, b.len(), "block Length")?;
                    ivrs.skipped.push(Skipped { kind: kind.into(), offset: off, length });
                    end
                }
            };
            off = end;
        }
        Ok(ivrs)
    }

    /// The IVHDs of the highest type present, one per IOMMU (see the module docs).
    pub fn effective_ivhds(&self) -> impl Iterator<Item = &Ivhd> {
        let top = self.ivhds.iter().map(|h| h.kind).max();
        self.ivhds.iter().filter(move |h| Some(h.kind) == top)
    }
}

/// The size of the device entry at `off` from its type's top two bits (5.2.2.2; Linux
/// `ivhd_entry_length`): 4 or 8 bytes, or for an ACPI HID entry 22 plus its UID length.
fn entry_len(b: Bytes<'_>, off: usize, kind: u8) -> Result<usize, AcpiError> {
    match kind >> 6 {
        0 => Ok(4),
        1 => Ok(8),
        _ if kind == dev::ACPI_HID => Ok(22 + usize::from(b.u8(off + 21, "ACPI HID UID Length")?)),
        _ => Err(b.err(
            off,
            "device entry Type",
            Problem::Malformed("a variable-length or reserved type of unknown size"),
        )),
    }
}

/// The device entries from `off` to `end`.
fn entries(b: Bytes<'_>, mut off: usize, end: usize) -> Result<Vec<DeviceEntry>, AcpiError> {
    let mut out = Vec::new();
    // A range start (its offset, type, and the entry to complete) waits for the next RANGE_END.
    let mut open: Option<(usize, DeviceEntry)> = None;
    while off < end {
        let kind = b.u8(off, "device entry Type")?;
        let len = entry_len(b, off, kind)?;
        b.slice_within(off, len, end, "device entry")?;
        let devid = b.u16(off + 1, "device entry DeviceID")?;
        let dte = b.u8(off + 3, "device entry DTE Setting")?;
        let u16_at5 = || b.u16(off + 5, "device entry source DeviceID");
        let entry = match kind {
            dev::ALL => DeviceEntry::All { dte },
            dev::SELECT => DeviceEntry::Select { devid, dte },
            dev::ALIAS => DeviceEntry::Alias { devid, dte, alias: u16_at5()? },
            dev::EXT_SELECT => DeviceEntry::Extended { devid, dte, ext: b.u32(off + 4, "Extended Data")? },
            dev::SPECIAL => DeviceEntry::Special {
                handle: b.u8(off + 4, "Special Handle")?,
                devid: u16_at5()?,
                dte,
                variety: b.u8(off + 7, "Special Variety")?,
            },
            dev::ACPI_HID => DeviceEntry::AcpiHid {
                devid,
                dte,
                hid: b.array(off + 4, "ACPI HID")?,
                cid: b.array(off + 12, "ACPI CID")?,
                uid: b.slice(off + 22, len - 22, "ACPI UID")?.to_vec(),
            },
            dev::RANGE_START | dev::ALIAS_RANGE | dev::EXT_RANGE => {
                if open.is_some() {
                    return Err(b.err(off, "device entry Type", Problem::Malformed("a range starts inside a range")));
                }
                let start = match kind {
                    dev::RANGE_START => DeviceEntry::Range { start: devid, end: devid, dte },
                    dev::ALIAS_RANGE => DeviceEntry::AliasRange { start: devid, end: devid, dte, alias: u16_at5()? },
                    _ => DeviceEntry::ExtendedRange {
                        start: devid,
                        end: devid,
                        dte,
                        ext: b.u32(off + 4, "Extended Data")?,
                    },
                };
                open = Some((off, start));
                off += len;
                continue;
            }
            dev::RANGE_END => match open.take() {
                Some((_, mut range)) => {
                    match &mut range {
                        DeviceEntry::Range { end, .. }
                        | DeviceEntry::AliasRange { end, .. }
                        | DeviceEntry::ExtendedRange { end, .. } => *end = devid,
                        _ => {}
                    }
                    range
                }
                None => return Err(b.err(off, "device entry Type", Problem::Malformed("a range end without a start"))),
            },
            _ => DeviceEntry::Other { kind, offset: off },
        };
        out.push(entry);
        off += len;
    }
    if let Some((at, _)) = open {
        return Err(b.err(at, "device entry Type", Problem::Malformed("a range start without a range end")));
    }
    Ok(out)
}
