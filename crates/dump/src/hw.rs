//! A dump as the platform one IOMMU unit's driver sees: the unit's registers from a snapshot and physical
//! memory from a dump ([`Dump`]: ELF, kdump-compressed, flattened), every page read recorded so the decode
//! can be saved as a small fixture.

use std::fs::File;
use std::io::{BufWriter, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};

use iommu_platform::{MemError, Mmio, PhysMem};
use iommu_spec::vtd::off;

use crate::acpi::rsdp::MAX_TABLE_LEN;
use crate::acpi::{AcpiError, Firmware, IommuKind, Sig, Unit};
use crate::{write_core_for, Arch, Dump, DumpError, RecordingMem, RegSnapshot, RegsError, SnapshotMmio, TrimError};

/// Why a dump could not be opened for inspection.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The dump could not be opened or read as any format [`Dump::open`] knows (or, with the path
    /// "the dump", its RAM map or notes could not be read later).
    #[error("{path}: {source}")]
    Dump {
        /// The dump's path.
        path: PathBuf,
        /// What the format's reader refused.
        source: DumpError,
    },
    /// The register snapshot file could not be read, or is not UTF-8.
    #[error("{path}: {source}")]
    RegsRead {
        /// The snapshot's path.
        path: PathBuf,
        /// The I/O error (`InvalidData` for text that is not UTF-8).
        source: std::io::Error,
    },
    /// The register snapshot's text did not parse.
    #[error("{path}: {source}")]
    Regs {
        /// The snapshot's path.
        path: PathBuf,
        /// The line and what was wrong with it.
        source: RegsError,
    },
    /// A register the decode of the selected unit reads ([`required_registers`]) is not in the snapshot.
    #[error("register snapshot: {0}")]
    Missing(RegsError),
    /// The register snapshot file is over [`MAX_REGS_FILE`] bytes: refused before it is read whole.
    #[error("{path}: over {max} bytes, which no register snapshot is (a regset file is a few KiB)")]
    RegsTooLarge {
        /// The snapshot's path.
        path: PathBuf,
        /// [`MAX_REGS_FILE`], bytes.
        max: u64,
    },
    /// [`DumpHw::save_touched`] could not write the fixture.
    #[error("{path}: {source}")]
    Save {
        /// The fixture's path.
        path: PathBuf,
        /// The write, or the re-read of a page, that failed.
        source: SaveError,
    },
    /// The raw ACPI table file ([`UnitQuery::acpi`]) could not be read.
    #[error("{path}: {source}")]
    AcpiRead {
        /// The table file's path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The raw ACPI table file is not a valid DMAR, IVRS or IORT.
    #[error("{path}: {source}")]
    AcpiFile {
        /// The table file's path.
        path: PathBuf,
        /// What the table parser refused.
        source: AcpiError,
    },
    /// The dump's `VMCOREINFO` has an `NUMBER(sme_mask)` line that is not a number.
    #[error("the dump's VMCOREINFO: {0}")]
    VmcoreInfo(crate::VmcoreInfoError),
    /// Neither a base, a table file nor an `iommu_regset` snapshot named the units, and the dump's own
    /// ACPI tables could not be found or parsed.
    #[error("finding the IOMMU units in the dump: {source}; give --acpi FILE (a raw DMAR, IVRS or IORT) or --base")]
    AcpiDump {
        /// Why the dump's tables gave no units.
        source: AcpiError,
    },
    /// The table found parses but describes no unit (a DMAR without DRHDs, an IORT without SMMUv3 nodes).
    #[error("the {table} table from {origin} lists no IOMMU unit")]
    NoUnits {
        /// Where the table came from: the file's path, "the dump", ...
        origin: String,
        /// The table's signature.
        table: Sig,
    },
    /// `--iommu` asked for one kind and the table found describes another.
    #[error("{origin} holds the {table} table, which describes {found} units, not {wanted}")]
    KindMismatch {
        /// Where the table came from.
        origin: String,
        /// The table's signature.
        table: Sig,
        /// The kind the table describes.
        found: IommuKind,
        /// The kind asked for.
        wanted: IommuKind,
    },
    /// A base was given without a kind, and the snapshot does not name a unit there either.
    #[error("which IOMMU is at {base:#x}? Give --iommu, or leave out --base to find the units from ACPI")]
    UnknownKind {
        /// The MMIO base given.
        base: u64,
    },
    /// A unit the firmware describes lacks a register its decode reads in the snapshot.
    #[error("{kind} unit at {base:#x} ({origin}) is not in the register snapshot: {source}; capture its registers, or pick one unit with --base")]
    UnitNotCaptured {
        /// The unit's kind.
        kind: IommuKind,
        /// The unit's MMIO base.
        base: u64,
        /// Where the unit was described ([`Unit::origin`]).
        origin: String,
        /// The first register missing.
        source: RegsError,
    },
}

/// Where the units to decode come from, in this order of preference: a base given by hand, a raw
/// ACPI table file, the units an `iommu_regset` snapshot names, the ACPI tables in the dump.
#[derive(Clone, Debug, Default)]
pub struct UnitQuery {
    /// One unit at this MMIO base (`--base`).
    pub base: Option<u64>,
    /// The kind wanted (`--iommu`): required with `base` unless the snapshot names it; otherwise it picks
    /// the table to look for and must agree with the one found.
    pub kind: Option<IommuKind>,
    /// A raw DMAR, IVRS or IORT table (`/sys/firmware/acpi/tables/DMAR`).
    pub acpi: Option<PathBuf>,
    /// The RSDP's physical address in the dump; the BIOS area is scanned when absent.
    pub rsdp: Option<u64>,
}

/// The registers a decode of each kind reads: `(name, offset, size)`.
pub fn required_registers(kind: IommuKind) -> &'static [(&'static str, usize, usize)] {
    use iommu_spec::amdvi::off as a;
    use iommu_spec::smmuv3::off as s;
    match kind {
        IommuKind::Vtd => &[
            ("VER", off::VER, 4),
            ("CAP", off::CAP, 8),
            ("ECAP", off::ECAP, 8),
            ("GSTS", off::GSTS, 4),
            ("RTADDR", off::RTADDR, 8),
        ],
        IommuKind::Amdvi => &[
            ("DEV_TABLE_BASE", a::DEV_TABLE_BASE, 8),
            ("CONTROL", a::CONTROL, 8),
            ("EXT_FEATURES", a::EXT_FEATURES, 8),
        ],
        IommuKind::Smmuv3 => &[
            ("IDR1", s::IDR1, 4),
            ("CR0", s::CR0, 4),
            ("GBPA", s::GBPA, 4),
            ("STRTAB_BASE", s::STRTAB_BASE, 8),
            ("STRTAB_BASE_CFG", s::STRTAB_BASE_CFG, 4),
        ],
    }
}

/// Why saving the pages read failed.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// Creating, writing or flushing the file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The trimmed core could not be built: a page read earlier failed when read again, or the ELF
    /// writer refused the layout.
    #[error("{0}")]
    Trim(#[from] TrimError),
}

/// A dump and a register snapshot, opened.
pub struct InspectInput {
    core: Dump,
    regs: SnapshotMmio,
}

impl InspectInput {
    /// Open the dump at `dump` and the monitor text at `regs` for the unit whose MMIO base is `base`.
    pub fn open(dump: &Path, regs: &Path, base: u64) -> Result<Self, InputError> {
        let mut input = Self::load(dump, regs)?;
        input.regs = SnapshotMmio::new(input.regs.snapshot().clone(), base);
        Ok(input)
    }

    /// Open the dump (any format [`Dump::open`] reads) and the register snapshot (monitor text or
    /// `iommu_regset`) without choosing a unit yet: find them with [`DumpHw::find_units`] and pick one
    /// with [`DumpHw::select`].
    pub fn load(dump: &Path, regs: &Path) -> Result<Self, InputError> {
        let core = Dump::open(dump).map_err(|source| InputError::Dump { path: dump.into(), source })?;
        Self::with_core(core, regs)
    }

    /// An opened dump (or `/proc/kcore`, [`Dump::open_kcore`]) and the register snapshot at `regs`.
    pub fn with_core(core: Dump, regs: &Path) -> Result<Self, InputError> {
        let text = read_regs(regs)?;
        let snap = RegSnapshot::parse(&text).map_err(|source| InputError::Regs { path: regs.into(), source })?;
        Ok(InspectInput { core, regs: SnapshotMmio::new(snap, 0) })
    }

    /// The platform for the driver's decode: the snapshot's registers and the dump's memory, every
    /// page read recorded.
    pub fn hw(self) -> DumpHw {
        DumpHw { regs: self.regs, mem: RecordingMem::new(self.core) }
    }
}

/// The platform over a dump: read-only registers and memory.
pub struct DumpHw {
    /// The snapshot, serving the registers of the selected unit ([`DumpHw::select`]).
    pub regs: SnapshotMmio,
    /// The dump's physical memory, recording which pages were read (for [`DumpHw::save_touched`]).
    pub mem: RecordingMem<Dump>,
}

impl DumpHw {
    /// The VT-d registers a decode reads: all must be in the snapshot.
    pub fn require_vtd(&self) -> Result<(), InputError> {
        self.require(IommuKind::Vtd)
    }

    /// The AMD-Vi registers a decode reads.
    pub fn require_amdvi(&self) -> Result<(), InputError> {
        self.require(IommuKind::Amdvi)
    }

    /// The SMMUv3 registers a decode reads.
    pub fn require_smmuv3(&self) -> Result<(), InputError> {
        self.require(IommuKind::Smmuv3)
    }

    /// The registers a decode of `kind` reads, at the selected unit.
    pub fn require(&self, kind: IommuKind) -> Result<(), InputError> {
        self.regs.require(required_registers(kind)).map_err(InputError::Missing)
    }

    /// Serve the registers of the unit at `base` from now on (the memory, and what was read of it, stay).
    pub fn select(&mut self, base: u64) {
        self.regs = SnapshotMmio::new(self.regs.snapshot().clone(), base);
    }

    /// The units to decode (see [`UnitQuery`]), each checked to be in the register snapshot. ACPI
    /// tables in the dump are read through the recording memory, so `--save-fixture` keeps them.
    pub fn find_units(&self, q: &UnitQuery) -> Result<Vec<Unit>, InputError> {
        let units = self.find_units_uncaptured(q)?;
        let snap = self.regs.snapshot();
        for u in &units {
            let probe = SnapshotMmio::new(snap.clone(), u.base);
            probe.require(required_registers(u.kind)).map_err(|source| InputError::UnitNotCaptured {
                kind: u.kind,
                base: u.base,
                origin: u.origin.clone(),
                source,
            })?;
        }
        Ok(units)
    }

    /// The units to decode, as [`DumpHw::find_units`] finds them, without checking that their registers
    /// were captured: for a caller that reports a missing register per unit instead of stopping.
    pub fn find_units_uncaptured(&self, q: &UnitQuery) -> Result<Vec<Unit>, InputError> {
        let snap = self.regs.snapshot();
        let named = snap.units();
        let (units, origin, table) = if let Some(base) = q.base {
            let kind = match q.kind {
                Some(k) => k,
                None if named.iter().any(|u| u.base == base) => IommuKind::Vtd,
                None => return Err(InputError::UnknownKind { base }),
            };
            (
                vec![Unit { kind, base, segment: 0, origin: "--base".into() }],
                "--base".to_string(),
                crate::acpi::table_of(kind),
            )
        } else if let Some(path) = &q.acpi {
            let origin = path.display().to_string();
            let fw = Firmware::from_bytes(&read_capped(path)?)
                .map_err(|source| InputError::AcpiFile { path: path.clone(), source })?;
            (fw.units(), origin, fw.signature())
        } else if !named.is_empty() && q.kind.is_none_or(|k| k == IommuKind::Vtd) {
            let units = named
                .iter()
                .map(|u| Unit {
                    kind: IommuKind::Vtd,
                    base: u.base,
                    segment: 0,
                    origin: format!("iommu_regset {}", u.name),
                })
                .collect();
            (units, "the iommu_regset snapshot".to_string(), Sig::DMAR)
        } else {
            let origin = "the dump".to_string();
            let fw = Firmware::find(&self.mem, q.rsdp, q.kind).map_err(|source| InputError::AcpiDump { source })?;
            (fw.units(), origin, fw.signature())
        };
        if let (Some(wanted), Some(u)) = (q.kind, units.first()) {
            if u.kind != wanted {
                return Err(InputError::KindMismatch { origin, table, found: u.kind, wanted });
            }
        }
        if units.is_empty() {
            return Err(InputError::NoUnits { origin, table });
        }
        Ok(units)
    }

    /// The physical ranges the dump records as RAM, as the RAM map (see [`Dump::ram_ranges`]).
    pub fn ram_ranges(&self) -> Result<Vec<Range<u64>>, InputError> {
        self.mem.inner().ram_ranges().map_err(|source| InputError::Dump { path: "the dump".into(), source })
    }

    /// The crashed kernel's SME encryption bit, from its `VMCOREINFO` (`NUMBER(sme_mask)`): the bit its
    /// AMD-Vi addresses carry ([`iommu_platform::BootEnv::c_bit`]). 0 when the dump has no `VMCOREINFO` or
    /// it does not say (a kernel without SME writes 0): then no address is taken to carry one.
    pub fn sme_mask(&self) -> Result<u64, InputError> {
        let notes = self.mem.inner().notes().map_err(|source| InputError::Dump { path: "the dump".into(), source })?;
        match crate::VmcoreInfo::from_notes(&notes).and_then(|i| i.sme_mask()) {
            Some(mask) => mask.map_err(InputError::VmcoreInfo),
            None => Ok(0),
        }
    }

    /// Write every page read so far as a small ELF core, with the dump's notes (its `VMCOREINFO` keeps
    /// [`DumpHw::sme_mask`] as the dump had it).
    pub fn save_touched(&self, path: &Path) -> Result<(), InputError> {
        let wrap = |source: SaveError| InputError::Save { path: path.into(), source };
        let notes = self.mem.inner().notes().map_err(|source| InputError::Dump { path: "the dump".into(), source })?;
        let f = File::create(path).map_err(|e| wrap(e.into()))?;
        let mut w = BufWriter::new(f);
        let arch = Arch::from_machine(self.mem.inner().machine());
        let notes = (!notes.is_empty()).then_some(&notes[..]);
        write_core_for(arch, self.mem.inner(), &self.mem.touched(), notes, &mut w).map_err(|e| wrap(e.into()))?;
        std::io::Write::flush(&mut w).map_err(|e| wrap(e.into()))?;
        Ok(())
    }
}

/// The most bytes of a register snapshot file read: far above any unit's registers as text.
pub const MAX_REGS_FILE: u64 = 4 << 20;

/// A register snapshot file, refused past [`MAX_REGS_FILE`] rather than read whole.
fn read_regs(path: &Path) -> Result<String, InputError> {
    let err = |source| InputError::RegsRead { path: path.into(), source };
    let mut buf = Vec::new();
    File::open(path).and_then(|f| f.take(MAX_REGS_FILE + 1).read_to_end(&mut buf)).map_err(err)?;
    if buf.len() as u64 > MAX_REGS_FILE {
        return Err(InputError::RegsTooLarge { path: path.into(), max: MAX_REGS_FILE });
    }
    String::from_utf8(buf).map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

/// A raw table file, read up to [`MAX_TABLE_LEN`] bytes (more is not a table: the parse says so).
fn read_capped(path: &Path) -> Result<Vec<u8>, InputError> {
    let err = |source| InputError::AcpiRead { path: path.into(), source };
    let mut buf = Vec::new();
    File::open(path).and_then(|f| f.take(u64::from(MAX_TABLE_LEN)).read_to_end(&mut buf)).map_err(err)?;
    Ok(buf)
}

impl Mmio for DumpHw {
    fn read32(&mut self, off: usize) -> u32 {
        self.regs.read32(off)
    }
    fn read64(&mut self, off: usize) -> u64 {
        self.regs.read64(off)
    }
    fn write32(&mut self, off: usize, val: u32) {
        self.regs.write32(off, val)
    }
    fn write64(&mut self, off: usize, val: u64) {
        self.regs.write64(off, val)
    }
}

impl PhysMem for DumpHw {
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.mem.read(pa, buf)
    }
    fn write(&mut self, pa: u64, data: &[u8]) -> Result<(), MemError> {
        self.mem.write(pa, data)
    }
}
