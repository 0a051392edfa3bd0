//! A dump as the platform one IOMMU unit's driver sees: the unit's registers from a snapshot and physical
//! memory from an ELF core, every page read recorded so the decode can be saved as a small fixture.

use std::fs::File;
use std::io::BufWriter;
use std::ops::Range;
use std::path::{Path, PathBuf};

use iommu_driver::{MemError, Mmio, PhysMem};
use iommu_spec::vtd::off;

use crate::{write_core_for, Arch, ElfCore, ElfError, RecordingMem, RegSnapshot, RegsError, SnapshotMmio, TrimError};

/// Why a dump could not be opened for inspection.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: {source}")]
    Dump { path: PathBuf, source: ElfError },
    #[error("{path}: {source}")]
    RegsRead { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Regs { path: PathBuf, source: RegsError },
    #[error("register snapshot: {0}")]
    Missing(RegsError),
    #[error("{path}: {source}")]
    Save { path: PathBuf, source: SaveError },
}

/// Why saving the pages read failed.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Trim(#[from] TrimError),
}

/// A dump and a register snapshot, opened.
pub struct InspectInput {
    core: ElfCore,
    regs: SnapshotMmio,
}

impl InspectInput {
    /// Open the ELF core at `dump` and the monitor text at `regs` for the unit whose MMIO base is `base`.
    pub fn open(dump: &Path, regs: &Path, base: u64) -> Result<Self, InputError> {
        let core = ElfCore::open(dump).map_err(|source| InputError::Dump { path: dump.into(), source })?;
        let text =
            std::fs::read_to_string(regs).map_err(|source| InputError::RegsRead { path: regs.into(), source })?;
        let snap = RegSnapshot::parse(&text).map_err(|source| InputError::Regs { path: regs.into(), source })?;
        Ok(InspectInput { core, regs: SnapshotMmio::new(snap, base) })
    }

    pub fn hw(self) -> DumpHw {
        DumpHw { regs: self.regs, mem: RecordingMem::new(self.core) }
    }
}

/// The platform over a dump: read-only registers and memory.
pub struct DumpHw {
    pub regs: SnapshotMmio,
    pub mem: RecordingMem<ElfCore>,
}

impl DumpHw {
    /// The VT-d registers a decode reads: all must be in the snapshot.
    pub fn require_vtd(&self) -> Result<(), InputError> {
        self.regs
            .require(&[
                ("CAP", off::CAP, 8),
                ("ECAP", off::ECAP, 8),
                ("GSTS", off::GSTS, 4),
                ("RTADDR", off::RTADDR, 8),
            ])
            .map_err(InputError::Missing)
    }

    /// The AMD-Vi registers a decode reads.
    pub fn require_amdvi(&self) -> Result<(), InputError> {
        use iommu_spec::amdvi::off as a;
        self.regs
            .require(&[
                ("DEV_TABLE_BASE", a::DEV_TABLE_BASE, 8),
                ("CONTROL", a::CONTROL, 8),
                ("EXT_FEATURES", a::EXT_FEATURES, 8),
            ])
            .map_err(InputError::Missing)
    }

    /// The SMMUv3 registers a decode reads.
    pub fn require_smmuv3(&self) -> Result<(), InputError> {
        use iommu_spec::smmuv3::off as s;
        self.regs
            .require(&[
                ("IDR1", s::IDR1, 4),
                ("CR0", s::CR0, 4),
                ("STRTAB_BASE", s::STRTAB_BASE, 8),
                ("STRTAB_BASE_CFG", s::STRTAB_BASE_CFG, 4),
            ])
            .map_err(InputError::Missing)
    }

    /// The physical ranges the dump holds, as the RAM map.
    pub fn ram_ranges(&self) -> Vec<Range<u64>> {
        self.mem.inner().ram_ranges()
    }

    /// Write every page read so far as a small ELF core.
    pub fn save_touched(&self, path: &Path) -> Result<(), InputError> {
        let wrap = |source: SaveError| InputError::Save { path: path.into(), source };
        let f = File::create(path).map_err(|e| wrap(e.into()))?;
        let mut w = BufWriter::new(f);
        let arch = Arch::from_machine(self.mem.inner().machine());
        write_core_for(arch, self.mem.inner(), &self.mem.touched(), None, &mut w).map_err(|e| wrap(e.into()))?;
        std::io::Write::flush(&mut w).map_err(|e| wrap(e.into()))?;
        Ok(())
    }
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
