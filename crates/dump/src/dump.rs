//! One entry point for every dump format: [`Dump::open`] looks at the file's first bytes and opens it
//! as what it is, read on demand.
//!
//! | first bytes | format | written by |
//! |---|---|---|
//! | `\x7fELF` | ELF core ([`ElfCore`]) | `/proc/vmcore`, QEMU `dump-guest-memory`, `makedumpfile -E` |
//! | `KDUMP   ` | kdump-compressed ([`KdumpCore`]) | makedumpfile (default), QEMU `-z/-l/-s` with raw output |
//! | `makedumpfile` | flattened ([`FlatFile`]) around either of the above | `makedumpfile -F`, QEMU `dump-guest-memory -z/-l/-s` |

use std::fmt;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use iommu_platform::{MemError, PhysMem};

use crate::flat::{FlatError, FlatFile, FLAT_SIGNATURE};
use crate::kdump::{Compression, KdumpCore, KdumpError, PageError, KDUMP_SIGNATURE};
use crate::source::{FileSource, ReadAt};
use crate::{ElfCore, ElfError};

/// Why a dump could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// The file could not be opened or its length taken.
    #[error("{path}: {source}", path = path.display())]
    Open {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Reading the first 16 bytes (the magic) failed.
    #[error("reading the first bytes: {0}")]
    Read(io::Error),
    /// The first bytes are none of the three formats' magics, or a flattened file wraps another
    /// flattened file.
    #[error("not a dump: the file starts with {magic:02x?}, not an ELF core, a kdump-compressed or a flattened file")]
    Unknown {
        /// Up to the first 16 bytes.
        magic: Vec<u8>,
    },
    /// The file is an ELF file that [`ElfCore`] refused.
    #[error("ELF core: {0}")]
    Elf(#[from] ElfError),
    /// The file starts `KDUMP   ` and [`KdumpCore`] refused it (or its notes or RAM bitmap could not
    /// be read later).
    #[error("kdump-compressed: {0}")]
    Kdump(#[from] KdumpError),
    /// The file starts `makedumpfile` and [`FlatFile`] refused its header or records.
    #[error("flattened: {0}")]
    Flat(#[from] FlatError),
}

/// The format a dump was opened as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// An ELF core.
    Elf {
        /// Whether it arrived inside makedumpfile's flattened format.
        flattened: bool,
    },
    /// A kdump-compressed file.
    Kdump {
        /// Whether it arrived inside makedumpfile's flattened format.
        flattened: bool,
    },
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, flat) = match *self {
            Format::Elf { flattened } => ("ELF core", flattened),
            Format::Kdump { flattened } => ("kdump-compressed", flattened),
        };
        write!(f, "{name}{}", if flat { " (flattened)" } else { "" })
    }
}

/// A dump of any supported format, as read-only physical memory.
#[derive(Debug)]
pub enum Dump {
    /// An ELF core (or `/proc/kcore`).
    Elf {
        /// The reader.
        core: ElfCore,
        /// Whether it is read through a [`FlatFile`].
        flattened: bool,
    },
    /// A kdump-compressed file.
    Kdump {
        /// The reader.
        core: KdumpCore,
        /// Whether it is read through a [`FlatFile`].
        flattened: bool,
    },
}

impl Dump {
    /// Opens the file at `path` by its magic. Reads headers only (and, for a flattened file, each
    /// record's header once).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, DumpError> {
        let path = path.as_ref();
        let open_err = |source| DumpError::Open { path: path.to_owned(), source };
        let file = File::open(path).map_err(open_err)?;
        Self::from_source(Box::new(FileSource::new(file).map_err(open_err)?))
    }

    /// A running kernel's `/proc/kcore` as its physical memory ([`crate::Shape::Kcore`]): not a dump, a
    /// view that changes while it is read.
    pub fn open_kcore(path: impl AsRef<Path>) -> Result<Self, DumpError> {
        Ok(Dump::Elf { core: ElfCore::open_kcore(path)?, flattened: false })
    }

    /// A dump held in memory (fixtures, tests).
    pub fn from_bytes(data: Vec<u8>) -> Result<Self, DumpError> {
        Self::from_source(Box::new(data))
    }

    /// A dump read from any source.
    pub fn from_source(src: Box<dyn ReadAt>) -> Result<Self, DumpError> {
        match sniff(&*src)? {
            Kind::Elf => Ok(Dump::Elf { core: ElfCore::from_source(src)?, flattened: false }),
            Kind::Kdump => Ok(Dump::Kdump { core: KdumpCore::new(src)?, flattened: false }),
            Kind::Flat => {
                let flat: Box<dyn ReadAt> = Box::new(FlatFile::new(src)?);
                match sniff(&*flat)? {
                    Kind::Elf => Ok(Dump::Elf { core: ElfCore::from_source(flat)?, flattened: true }),
                    Kind::Kdump => Ok(Dump::Kdump { core: KdumpCore::new(flat)?, flattened: true }),
                    Kind::Flat => Err(DumpError::Unknown { magic: FLAT_SIGNATURE.to_vec() }),
                }
            }
        }
    }

    /// The format opened, for reports.
    pub fn format(&self) -> Format {
        match *self {
            Dump::Elf { flattened, .. } => Format::Elf { flattened },
            Dump::Kdump { flattened, .. } => Format::Kdump { flattened },
        }
    }

    /// `e_machine` of the crashed machine (0 when a kdump file does not say; see [`KdumpCore::machine`]).
    pub fn machine(&self) -> u16 {
        match self {
            Dump::Elf { core, .. } => core.machine(),
            Dump::Kdump { core, .. } => core.machine(),
        }
    }

    /// The ELF notes (CPU registers, `VMCOREINFO`).
    pub fn notes(&self) -> Result<Vec<u8>, DumpError> {
        match self {
            Dump::Elf { core, .. } => Ok(core.notes()?),
            Dump::Kdump { core, .. } => Ok(core.notes()?),
        }
    }

    /// The crashed machine's RAM as the dump records it: an ELF core's segments, a kdump file's
    /// first bitmap. A kdump file's bitmap is read whole here (max_mapnr / 8 bytes).
    pub fn ram_ranges(&self) -> Result<Vec<Range<u64>>, DumpError> {
        match self {
            Dump::Elf { core, .. } => Ok(core.ram_ranges()),
            Dump::Kdump { core, .. } => Ok(core.ram_ranges()?),
        }
    }

    /// Pages that were in the dump but could not be read (see [`KdumpCore::damage`]); an ELF core has
    /// none of its own.
    pub fn damage(&self) -> (Vec<PageError>, u64) {
        match self {
            Dump::Elf { .. } => (Vec::new(), 0),
            Dump::Kdump { core, .. } => core.damage(),
        }
    }

    /// The compression the kdump header's status names (`None` for an ELF core, or a status naming
    /// several). Pages say their own; this is for reports.
    pub fn compression(&self) -> Option<Compression> {
        let Dump::Kdump { core, .. } = self else { return None };
        core.header().compression()
    }
}

enum Kind {
    Elf,
    Kdump,
    Flat,
}

fn sniff(src: &dyn ReadAt) -> Result<Kind, DumpError> {
    let n = src.len().min(16) as usize;
    let mut magic = [0u8; 16];
    src.read_exact_at(0, &mut magic[..n]).map_err(DumpError::Read)?;
    let magic = &magic[..n];
    if magic.starts_with(b"\x7fELF") {
        Ok(Kind::Elf)
    } else if magic.starts_with(KDUMP_SIGNATURE) {
        Ok(Kind::Kdump)
    } else if magic.starts_with(FLAT_SIGNATURE) {
        Ok(Kind::Flat)
    } else {
        Err(DumpError::Unknown { magic: magic.to_vec() })
    }
}

impl PhysMem for Dump {
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        match self {
            Dump::Elf { core, .. } => core.read(pa, buf),
            Dump::Kdump { core, .. } => core.read(pa, buf),
        }
    }
    fn write(&mut self, pa: u64, data: &[u8]) -> Result<(), MemError> {
        match self {
            Dump::Elf { core, .. } => core.write(pa, data),
            Dump::Kdump { core, .. } => core.write(pa, data),
        }
    }
}

impl From<ElfCore> for Dump {
    fn from(core: ElfCore) -> Self {
        Dump::Elf { core, flattened: false }
    }
}
