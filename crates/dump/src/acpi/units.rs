//! From a table to the IOMMU units it describes: which kind, at which MMIO base, for which segment.

use std::path::{Path, PathBuf};

use iommu_platform::PhysMem;

use super::iort::NodeBody;
use super::{Acpi, AcpiError, Dmar, Iort, Ivrs, Listed, Sig, Table};

pub use iommu_spec::IommuKind;

/// The ACPI table that describes units of `kind`: DMAR, IVRS or IORT.
pub fn table_of(kind: IommuKind) -> Sig {
    match kind {
        IommuKind::Vtd => Sig::DMAR,
        IommuKind::Amdvi => Sig::IVRS,
        IommuKind::Smmuv3 => Sig::IORT,
    }
}

/// Where Linux shows the firmware's ACPI tables, relative to the filesystem root: one file per table,
/// named by its signature (drivers/acpi/sysfs.c, `acpi_table_attr_init`).
pub const SYSFS_TABLES: &str = "sys/firmware/acpi/tables";

/// The file in `dir` (a [`SYSFS_TABLES`] directory) of the table naming the IOMMU units: the one for
/// `kind`, or without a kind the first of DMAR, IVRS, IORT present. `None` when there is none.
pub fn sysfs_table(dir: &Path, kind: Option<IommuKind>) -> Option<(IommuKind, PathBuf)> {
    IommuKind::ALL
        .iter()
        .copied()
        .filter(|k| kind.is_none_or(|w| w == *k))
        .map(|k| (k, dir.join(table_of(k).to_string())))
        .find(|(_, p)| p.exists())
}

/// One IOMMU unit as firmware describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    /// Which IOMMU architecture, from the table it came from.
    pub kind: IommuKind,
    /// The MMIO register base.
    pub base: u64,
    /// The PCI segment it translates: the DRHD's or IVHD's, or for an SMMUv3 the segment of the first
    /// root complex whose ID mappings lead to it (0 when none does).
    pub segment: u32,
    /// Where it was found, for messages: "DMAR DRHD 0", "IVRS IVHD type 0x11 at 0x64", ...
    pub origin: String,
}

/// A parsed DMAR, IVRS or IORT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// Intel VT-d's table.
    Dmar(Dmar),
    /// AMD-Vi's table.
    Ivrs(Ivrs),
    /// Arm's table, for SMMUv3.
    Iort(Iort),
}

impl Firmware {
    /// Parses a checked table by its signature.
    pub fn parse(table: &Table) -> Result<Firmware, AcpiError> {
        match table.signature() {
            Sig::DMAR => Dmar::parse(table).map(Firmware::Dmar),
            Sig::IVRS => Ivrs::parse(table).map(Firmware::Ivrs),
            Sig::IORT => Iort::parse(table).map(Firmware::Iort),
            table => Err(AcpiError::Unsupported { table }),
        }
    }

    /// One raw table, as `/sys/firmware/acpi/tables/DMAR` holds it.
    pub fn from_bytes(buf: &[u8]) -> Result<Firmware, AcpiError> {
        Firmware::parse(&Table::parse(buf)?)
    }

    /// The table for `kind` in a dump, or without a kind the first of DMAR, IVRS, IORT the dump holds.
    /// `rsdp` is the RSDP's address when known; otherwise the BIOS area is scanned.
    pub fn find(mem: &impl PhysMem, rsdp: Option<u64>, kind: Option<IommuKind>) -> Result<Firmware, AcpiError> {
        let acpi = Acpi::load(mem, rsdp)?;
        let kinds = match kind {
            Some(k) => vec![k],
            None => IommuKind::ALL.to_vec(),
        };
        let mut absent = None;
        for k in kinds.iter().copied() {
            match acpi.find(mem, table_of(k)) {
                Ok(t) => return Firmware::parse(&t),
                // A table that is there but broken is the error to report; absence only if all are absent.
                Err(AcpiError::NoTable { root, root_addr, present, .. }) => absent = Some((root, root_addr, present)),
                Err(e) => return Err(e),
            }
        }
        let (root, root_addr, present) = absent.unwrap_or((acpi.root, acpi.root_addr, Listed::default()));
        match kind {
            Some(k) => Err(AcpiError::NoTable { sig: table_of(k), root, root_addr, present }),
            None => Err(AcpiError::NoIommuTable { root, root_addr, present }),
        }
    }

    /// The IOMMU architecture the table describes.
    pub fn kind(&self) -> IommuKind {
        match self {
            Firmware::Dmar(_) => IommuKind::Vtd,
            Firmware::Ivrs(_) => IommuKind::Amdvi,
            Firmware::Iort(_) => IommuKind::Smmuv3,
        }
    }

    /// The table's signature: DMAR, IVRS or IORT.
    pub fn signature(&self) -> Sig {
        table_of(self.kind())
    }

    /// The units, in table order.
    pub fn units(&self) -> Vec<Unit> {
        match self {
            Firmware::Dmar(d) => d
                .drhds
                .iter()
                .enumerate()
                .map(|(i, h)| Unit {
                    kind: IommuKind::Vtd,
                    base: h.base,
                    segment: h.segment.into(),
                    origin: format!("DMAR DRHD {i} at offset {:#x}", h.offset),
                })
                .collect(),
            Firmware::Ivrs(v) => v
                .effective_ivhds()
                .map(|h| Unit {
                    kind: IommuKind::Amdvi,
                    base: h.base,
                    segment: h.segment.into(),
                    origin: format!("IVRS IVHD type {:#04x} at offset {:#x}", h.kind, h.offset),
                })
                .collect(),
            Firmware::Iort(t) => t
                .nodes
                .iter()
                .filter_map(|n| match &n.body {
                    NodeBody::Smmuv3(s) => Some(Unit {
                        kind: IommuKind::Smmuv3,
                        base: s.base,
                        // The segment is the root complex's that maps into this SMMU, if any does.
                        segment: t
                            .nodes
                            .iter()
                            .find_map(|rc| match &rc.body {
                                NodeBody::RootComplex(r)
                                    if rc.mappings.iter().any(|m| m.output_ref as usize == n.offset) =>
                                {
                                    Some(r.segment)
                                }
                                _ => None,
                            })
                            .unwrap_or(0),
                        origin: format!("IORT SMMUv3 node at offset {:#x}", n.offset),
                    }),
                    _ => None,
                })
                .collect(),
        }
    }
}
