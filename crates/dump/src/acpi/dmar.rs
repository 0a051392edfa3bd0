//! The DMA Remapping Reporting table (Intel VT-d spec, chapter 8), read as Linux's `dmar_table_init` /
//! `dmar_walk_remapping_entries` read it.
//!
//! After the header: the host address width (minus one), flags, ten reserved bytes, then remapping
//! structures, each `Type` (16 bits) and `Length` (16 bits) first. DRHD (a remapping unit: its register
//! base, segment, and the devices it covers or INCLUDE_PCI_ALL) and RMRR (memory that devices use
//! behind the OS's back, e.g. USB legacy buffers, which must stay mapped through a hand-over) are
//! decoded with their device scopes (8.3.1); the others (ATSR, RHSA, ANDD, SATC, ...) are walked past
//! by their length. A zero or short length is an error, as in Linux ("Invalid 0-length structure").

use super::{AcpiError, Bytes, Problem, SdtHeader, Sig, Skipped, Table};

/// Offset of the first remapping structure.
const STRUCTURES: usize = 48;

/// DMAR `Flags` bit 0 `INTR_REMAP` (8.1): the platform supports interrupt remapping.
pub const INTR_REMAP: u8 = 1 << 0;
/// DMAR `Flags` bit 1 `X2APIC_OPT_OUT` (8.1): firmware asks the OS not to enable x2APIC mode.
pub const X2APIC_OPT_OUT: u8 = 1 << 1;
/// DMAR `Flags` bit 2 `DMA_CTRL_PLATFORM_OPT_IN_FLAG` (8.1): firmware asks for DMA protection of
/// external-facing ports (Linux then forces the IOMMU on when such a port is present).
pub const DMA_CTRL_PLATFORM_OPT_IN: u8 = 1 << 2;
/// DRHD flag: the unit covers every device of its segment not claimed by another unit (8.3).
pub const INCLUDE_PCI_ALL: u8 = 1 << 0;

/// Remapping structure types (8.2).
pub mod kind {
    /// DMA Remapping Hardware Unit Definition: one remapping unit, decoded as [`super::Drhd`].
    pub const DRHD: u16 = 0;
    /// Reserved Memory Region Reporting, decoded as [`super::Rmrr`].
    pub const RMRR: u16 = 1;
    /// Root Port ATS Capability Reporting: walked past.
    pub const ATSR: u16 = 2;
    /// Remapping Hardware Static Affinity (a unit's NUMA proximity domain): walked past.
    pub const RHSA: u16 = 3;
    /// ACPI Name-space Device Declaration: walked past.
    pub const ANDD: u16 = 4;
    /// SoC Integrated Address Translation Cache: walked past.
    pub const SATC: u16 = 5;
}

/// Device scope types (8.3.1).
pub mod scope {
    /// One PCI endpoint device.
    pub const PCI_ENDPOINT: u8 = 1;
    /// A PCI-PCI bridge and every device below it.
    pub const PCI_SUB_HIERARCHY: u8 = 2;
    /// An I/O APIC; `Enumeration ID` is its APIC ID.
    pub const IOAPIC: u8 = 3;
    /// An MSI-capable HPET; `Enumeration ID` is its HPET number.
    pub const HPET: u8 = 4;
    /// An ACPI name-space device declared by an ANDD structure; `Enumeration ID` is its ANDD number.
    pub const ACPI_NAMESPACE: u8 = 5;
}

/// A parsed DMAR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dmar {
    /// The table's common header.
    pub header: SdtHeader,
    /// The DMA physical address width in bits (the stored value plus one).
    pub host_address_width: u16,
    /// [`INTR_REMAP`], [`X2APIC_OPT_OUT`], [`DMA_CTRL_PLATFORM_OPT_IN`].
    pub flags: u8,
    /// Every DRHD, in table order (the spec puts a segment's INCLUDE_PCI_ALL unit last).
    pub drhds: Vec<Drhd>,
    /// Every RMRR, in table order.
    pub rmrrs: Vec<Rmrr>,
    /// Structures walked past: ATSR, RHSA, ANDD, SATC and types this parser does not know.
    pub skipped: Vec<Skipped>,
}

/// A DMA-remapping hardware unit (8.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drhd {
    /// Offset of the structure in the table, for reports.
    pub offset: usize,
    /// DRHD `Flags` (byte 4): [`INCLUDE_PCI_ALL`] in bit 0.
    pub flags: u8,
    /// Register set size as a power of two of 4 KiB pages (VT-d 3.x; 0 in older tables).
    pub size: u8,
    /// `Segment Number` (bytes 6-7): the PCI segment whose devices this unit remaps.
    pub segment: u16,
    /// The unit's register base address.
    pub base: u64,
    /// The devices the unit remaps (with [`INCLUDE_PCI_ALL`], only the IOAPICs, HPETs and ACPI
    /// name-space devices, which the flag does not cover).
    pub scopes: Vec<DeviceScope>,
}

impl Drhd {
    /// Whether [`INCLUDE_PCI_ALL`] is set: the unit takes every device of its segment no other DRHD lists.
    pub fn include_pci_all(&self) -> bool {
        self.flags & INCLUDE_PCI_ALL != 0
    }
}

/// A reserved memory region (8.4): devices in `scopes` may DMA to `base..=limit` at any time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rmrr {
    /// Offset of the structure in the table, for reports.
    pub offset: usize,
    /// `Segment Number` (bytes 6-7) of the devices in `scopes`.
    pub segment: u16,
    /// `Reserved Memory Region Base Address` (bytes 8-15): first byte, 4 KiB aligned when sane.
    pub base: u64,
    /// The last byte of the region (inclusive, as the table stores it).
    pub limit: u64,
    /// The devices that use the region (USB controllers, integrated graphics, ...).
    pub scopes: Vec<DeviceScope>,
}

impl Rmrr {
    /// Linux's `arch_rmrr_sanity_check`: page-aligned base and end, and a non-empty region.
    pub fn is_sane(&self) -> bool {
        self.base & 0xfff == 0 && self.limit & 0xfff == 0xfff && self.base < self.limit
    }
}

/// A device scope entry (8.3.1): a device named by its start bus and the path of (device, function)
/// hops through bridges from there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceScope {
    /// Offset of the entry in the table, for reports.
    pub offset: usize,
    /// One of [`scope`]'s constants, or an unknown value kept as is.
    pub kind: u8,
    /// Device Scope `Flags` (byte 2); reserved in older spec revisions, kept for reports only.
    pub flags: u8,
    /// The IOAPIC ID, HPET number or ACPI device number, for those scope types.
    pub enumeration_id: u8,
    /// `Start Bus Number` (byte 5): the bus the first path hop is on.
    pub start_bus: u8,
    /// `(device, function)` per hop.
    pub path: Vec<(u8, u8)>,
}

impl DeviceScope {
    /// The requester ID (bus << 8 | device << 3 | function) when the path is one hop, so the device sits
    /// on the start bus; a longer path needs the bridges' secondary bus numbers, which a dump lacks.
    pub fn requester_id(&self) -> Option<u16> {
        match self.path.as_slice() {
            [(dev, func)] if *dev < 32 && *func < 8 => {
                Some(u16::from(self.start_bus) << 8 | u16::from(*dev) << 3 | u16::from(*func))
            }
            _ => None,
        }
    }
}

impl Dmar {
    /// Decodes a checked DMAR: the host address width and flags, then each remapping structure by its
    /// `Type` and `Length`. A structure shorter than its fixed part or past the table's end, or a device
    /// scope whose length is odd, short or past its structure, is refused.
    pub fn parse(table: &Table) -> Result<Dmar, AcpiError> {
        table.expect(Sig::DMAR)?;
        let b = table.reader();
        let haw = b.u8(36, "Host Address Width")?;
        let flags = b.u8(37, "Flags")?;
        b.slice(38, STRUCTURES - 38, "Reserved")?;
        let mut dmar = Dmar {
            header: table.header.clone(),
            host_address_width: u16::from(haw) + 1,
            flags,
            drhds: Vec::new(),
            rmrrs: Vec::new(),
            skipped: Vec::new(),
        };
        let mut off = STRUCTURES;
        // Each step advances by a length of at least 4, inside the table: at most len/4 steps.
        while off < b.len() {
            let ty = b.u16(off, "Type")?;
            let length = usize::from(b.u16(off + 2, "Length")?);
            match ty {
                kind::DRHD => {
                    let end = b.entry_end(off, length, 16, b.len(), "DRHD Length")?;
                    dmar.drhds.push(Drhd {
                        offset: off,
                        flags: b.u8(off + 4, "DRHD Flags")?,
                        size: b.u8(off + 5, "DRHD Size")?,
                        segment: b.u16(off + 6, "DRHD Segment Number")?,
                        base: b.u64(off + 8, "DRHD Register Base Address")?,
                        scopes: scopes(b, off + 16, end)?,
                    });
                    off = end;
                }
                kind::RMRR => {
                    let end = b.entry_end(off, length, 24, b.len(), "RMRR Length")?;
                    dmar.rmrrs.push(Rmrr {
                        offset: off,
                        segment: b.u16(off + 6, "RMRR Segment Number")?,
                        base: b.u64(off + 8, "RMRR Base Address")?,
                        limit: b.u64(off + 16, "RMRR Limit Address")?,
                        scopes: scopes(b, off + 24, end)?,
                    });
                    off = end;
                }
                _ => {
                    let end = b.entry_end(off, length, 4, b.len(), "remapping structure Length")?;
                    dmar.skipped.push(Skipped { kind: ty, offset: off, length });
                    off = end;
                }
            }
        }
        Ok(dmar)
    }
}

/// The device scope entries from `off` to `end` (8.3.1): `Type`, `Length` (6 plus 2 per path hop),
/// flags, a reserved byte, the enumeration ID, the start bus, then the path.
fn scopes(b: Bytes<'_>, mut off: usize, end: usize) -> Result<Vec<DeviceScope>, AcpiError> {
    let mut out = Vec::new();
    while off < end {
        let kind = b.u8(off, "Device Scope Type")?;
        let length = usize::from(b.u8(off + 1, "Device Scope Length")?);
        let stop = b.entry_end(off, length, 6, end, "Device Scope Length")?;
        if length % 2 != 0 {
            return Err(b.err(off, "Device Scope Length", Problem::BadLength { length, expected: "6 + 2 per hop" }));
        }
        let path = b.slice(off + 6, length - 6, "Device Scope Path")?.chunks_exact(2).map(|p| (p[0], p[1])).collect();
        out.push(DeviceScope {
            offset: off,
            kind,
            flags: b.u8(off + 2, "Device Scope Flags")?,
            enumeration_id: b.u8(off + 4, "Enumeration ID")?,
            start_bus: b.u8(off + 5, "Start Bus Number")?,
            path,
        });
        off = stop;
    }
    Ok(out)
}
