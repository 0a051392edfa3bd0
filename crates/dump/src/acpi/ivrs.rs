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
/// IVHD block type 10h: the legacy 24-byte fixed part, `IOMMU Feature Reporting` and no EFR image.
pub const IVHD_10: u8 = 0x10;
/// IVHD block type 11h: the 40-byte fixed part with `IOMMU Attributes` and the EFR/EFR2 images.
pub const IVHD_11: u8 = 0x11;
/// IVHD block type 40h: as 11h, and its device entries may include ACPI HID entries (type F0h).
pub const IVHD_40: u8 = 0x40;
/// IVMD block type 20h: a memory range for every device.
pub const IVMD_ALL: u8 = 0x20;
/// IVMD block type 21h: a memory range for the one device in `DeviceID`.
pub const IVMD_SELECT: u8 = 0x21;
/// IVMD block type 22h: a memory range for the devices from `DeviceID` to `Auxiliary Data`.
pub const IVMD_RANGE: u8 = 0x22;

/// Device entry types (5.2.2.2, Linux `IVHD_DEV_*`).
pub mod dev {
    /// 4-byte padding; carries nothing.
    pub const PAD: u8 = 0x00;
    /// 4-byte `All`: the DTE setting applies to every device ID the IOMMU sees.
    pub const ALL: u8 = 0x01;
    /// 4-byte `Select`: one device ID.
    pub const SELECT: u8 = 0x02;
    /// 4-byte `Start of Range`: the first device ID of a range closed by [`RANGE_END`].
    pub const RANGE_START: u8 = 0x03;
    /// 4-byte `End of Range`: the last device ID (inclusive) of the open range.
    pub const RANGE_END: u8 = 0x04;
    /// 8-byte `Alias Select`: one device ID whose requests carry another (bytes 5-6).
    pub const ALIAS: u8 = 0x42;
    /// 8-byte `Alias Start of Range`: a range of device IDs, all aliased to one.
    pub const ALIAS_RANGE: u8 = 0x43;
    /// 8-byte `Extended Select`: one device ID with 32 bits of `Extended Data` (ATS disabled).
    pub const EXT_SELECT: u8 = 0x46;
    /// 8-byte `Extended Start of Range`: a range with `Extended Data`.
    pub const EXT_RANGE: u8 = 0x47;
    /// 8-byte `Special Device`: an IOAPIC or HPET, its handle and the device ID it sends as.
    pub const SPECIAL: u8 = 0x48;
    /// Variable-length `ACPI HID Device` (IVHD 40h): a non-PCI device named by its ACPI `_HID`/`_CID`/`_UID`.
    pub const ACPI_HID: u8 = 0xf0;
    /// `Variety` of a [`SPECIAL`] entry (byte 7): an IOAPIC.
    pub const SPECIAL_IOAPIC: u8 = 1;
    /// `Variety` of a [`SPECIAL`] entry (byte 7): an HPET.
    pub const SPECIAL_HPET: u8 = 2;
}

/// A parsed IVRS: every IVHD and IVMD block in table order, and the blocks of other types walked past.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ivrs {
    /// The table's common header.
    pub header: SdtHeader,
    /// IVinfo: EFR support (bit 0), physical/virtual address sizes (bits 14:8, 21:15), ...
    pub iv_info: u32,
    /// Every IVHD block, all types; [`Ivrs::effective_ivhds`] picks the ones a kernel would use.
    pub ivhds: Vec<Ivhd>,
    /// Every IVMD block.
    pub ivmds: Vec<Ivmd>,
    /// Blocks of any other type, kept by type, offset and length.
    pub skipped: Vec<Skipped>,
}

/// An I/O virtualization hardware definition: one IOMMU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ivhd {
    /// Byte offset of the block from the start of the table.
    pub offset: usize,
    /// 10h, 11h or 40h.
    pub kind: u8,
    /// IVHD `Flags` (byte 1): HtTunEn (bit 0), PassPW, ResPassPW, Isoc, IotlbSup, Coherent, PreFSup,
    /// PPRSup (bit 7).
    pub flags: u8,
    /// The IOMMU's own PCI device ID (bus << 8 | devfn).
    pub device_id: u16,
    /// `Capability Offset` (bytes 6-7): where the IOMMU's capability block sits in its PCI config space.
    pub cap_offset: u16,
    /// The MMIO register base.
    pub base: u64,
    /// `PCI Segment Group` (bytes 16-17) of the IOMMU and every device ID in its entries.
    pub segment: u16,
    /// `IOMMU Info` (bytes 18-19): MSI number (bits 4:0) and HyperTransport UnitID (bits 12:8).
    pub info: u16,
    /// IOMMU feature reporting (10h) or IOMMU attributes (11h, 40h).
    pub features: u32,
    /// The EFR register image (11h, 40h).
    pub efr: Option<u64>,
    /// The EFR2 register image (11h, 40h).
    pub efr2: Option<u64>,
    /// The device entries after the fixed part: which device IDs this IOMMU translates.
    pub entries: Vec<DeviceEntry>,
}

/// A device entry, with range starts joined to their range end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceEntry {
    /// [`dev::ALL`]: every device ID behind the IOMMU.
    All {
        /// `DTE Setting` (byte 3): INITPass, EIntPass, NMIPass, SysMgt, Lint0Pass, Lint1Pass bits.
        dte: u8,
    },
    /// [`dev::SELECT`]: one device.
    Select {
        /// The device ID (bus << 8 | devfn).
        devid: u16,
        /// `DTE Setting` (byte 3).
        dte: u8,
    },
    /// [`dev::RANGE_START`] joined to its [`dev::RANGE_END`].
    Range {
        /// First device ID.
        start: u16,
        /// Last device ID, inclusive (the `End of Range` entry's).
        end: u16,
        /// `DTE Setting` of the start entry.
        dte: u8,
    },
    /// Requests from `devid` arrive carrying `alias` (e.g. behind a PCIe-to-PCI bridge).
    Alias {
        /// The device ID described.
        devid: u16,
        /// `DTE Setting` (byte 3).
        dte: u8,
        /// The device ID its requests carry (bytes 5-6), whose DTE translates them.
        alias: u16,
    },
    /// [`dev::ALIAS_RANGE`] joined to its [`dev::RANGE_END`]: every device ID in the range sends as `alias`.
    AliasRange {
        /// First device ID.
        start: u16,
        /// Last device ID, inclusive.
        end: u16,
        /// `DTE Setting` of the start entry.
        dte: u8,
        /// The device ID the range's requests carry.
        alias: u16,
    },
    /// [`dev::EXT_SELECT`]: one device with extended settings.
    Extended {
        /// The device ID.
        devid: u16,
        /// `DTE Setting` (byte 3).
        dte: u8,
        /// `Extended Data` (bytes 4-7): the ATS-disabled flag.
        ext: u32,
    },
    /// [`dev::EXT_RANGE`] joined to its [`dev::RANGE_END`].
    ExtendedRange {
        /// First device ID.
        start: u16,
        /// Last device ID, inclusive.
        end: u16,
        /// `DTE Setting` of the start entry.
        dte: u8,
        /// `Extended Data` of the start entry.
        ext: u32,
    },
    /// An IOAPIC ([`dev::SPECIAL_IOAPIC`]) or HPET ([`dev::SPECIAL_HPET`]) with its handle (ID) and the
    /// device ID its interrupts carry.
    Special {
        /// `Handle` (byte 4): the IOAPIC ID or HPET number.
        handle: u8,
        /// The device ID its requests carry (bytes 5-6).
        devid: u16,
        /// `DTE Setting` (byte 3).
        dte: u8,
        /// `Variety` (byte 7): [`dev::SPECIAL_IOAPIC`] or [`dev::SPECIAL_HPET`].
        variety: u8,
    },
    /// [`dev::ACPI_HID`]: a device known by ACPI names rather than a PCI function.
    AcpiHid {
        /// The device ID its requests carry (bytes 1-2).
        devid: u16,
        /// `DTE Setting` (byte 3).
        dte: u8,
        /// `Hardware ID` (bytes 4-11), the ACPI `_HID`.
        hid: [u8; 8],
        /// `Compatible ID` (bytes 12-19), the ACPI `_CID`.
        cid: [u8; 8],
        /// `Unique ID` (from byte 22), `UID Length` (byte 21) bytes long.
        uid: Vec<u8>,
    },
    /// Padding (type 0) or a fixed-size type this parser does not know, walked past by its size.
    Other {
        /// The entry's `Type` byte.
        kind: u8,
        /// Byte offset of the entry from the start of the table.
        offset: usize,
    },
}

/// An I/O virtualization memory definition (5.2.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ivmd {
    /// Byte offset of the block from the start of the table.
    pub offset: usize,
    /// 20h (all devices), 21h (one device), 22h (a device range).
    pub kind: u8,
    /// Unity (bit 0), IR (1), IW (2), exclusion range (3).
    pub flags: u8,
    /// The device (21h) or first device (22h).
    pub device_id: u16,
    /// The last device of a 22h range.
    pub aux: u16,
    /// `IVMD Start Address` (bytes 16-23): physical address of the range.
    pub start: u64,
    /// `IVMD Memory Block Length` (bytes 24-31), bytes.
    pub length: u64,
}

impl Ivrs {
    /// Decodes a checked IVRS: IVinfo, then every block by its `Type` and `Length`. A block shorter than
    /// its fixed part, running past the table, or a device entry list with an unclosed or stray range
    /// is refused.
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
