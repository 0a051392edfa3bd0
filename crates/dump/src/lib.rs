//! Physical memory and IOMMU registers from real dumps, read-only.
//!
//! A crashed machine leaves two things worth reading: its memory, as an ELF core (QEMU
//! `dump-guest-memory`, the crash kernel's `/proc/vmcore`) or as makedumpfile writes it, and its IOMMU
//! registers, as the QEMU monitor prints them (`xp`). This crate turns both into the driver's platform traits
//! ([`iommu_platform::PhysMem`], [`iommu_platform::Mmio`]) so the same adoption, validation and audit code
//! that runs in the simulator runs on a real dump. Everything here is read-only: a write is refused
//! (memory) or ignored and recorded (registers), never silently applied.
//!
//! - [`Dump::open`]: any dump by its magic, read on demand (a 4 GiB dump is never loaded whole):
//!   - [`elf::ElfCore`]: an ELF64 little-endian core;
//!   - [`kdump::KdumpCore`]: makedumpfile's and QEMU's kdump-compressed format (zlib, lzo, snappy, zstd
//!     pages; pages filtered out read as "not captured");
//!   - [`flat::FlatFile`]: makedumpfile's flattened format (`-F`, and QEMU's `-z/-l/-s`) around either.
//! - [`regs::RegSnapshot`] / [`regs::SnapshotMmio`]: a register snapshot from monitor text or Linux's
//!   `iommu_regset` debugfs file.
//! - [`acpi`]: the DMAR, IVRS and IORT tables that say where the units are, from the dump (RSDP scan)
//!   or from a raw table file; [`DumpHw::find_units`] uses them when no base is given.
//! - [`record::RecordingMem`] and [`trim::write_core`]: record which pages some code reads, and write a
//!   small core holding only those pages, which is how a 2 GiB dump becomes a kilobyte test fixture.
//!
//! Every byte here comes from a crashed machine or a file someone handed us: hostile input. Errors are
//! typed and name what and where; nothing panics and nothing is allocated by an unchecked count.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod acpi;
pub mod devmem;
pub mod dump;
pub mod elf;
pub mod flat;
pub mod hw;
pub mod kdump;
pub mod notes;
pub mod record;
pub mod regs;
pub mod source;
pub mod trim;

pub use acpi::{AcpiError, Firmware, IommuKind, Unit};
pub use dump::{Dump, DumpError, Format};
pub use elf::{ElfCore, ElfError, Segment, Shape};
pub use flat::{FlatError, FlatFile};
pub use hw::{required_registers, DumpHw, InputError, InspectInput, SaveError, UnitQuery};
pub use kdump::{Compression, KdumpCore, KdumpError, PageError};
pub use notes::{VmcoreInfo, VmcoreInfoError};
pub use record::RecordingMem;
pub use regs::{RegSnapshot, RegsError, SnapshotMmio};
pub use source::{Counting, ReadAt, ReadStats};
pub use trim::{write_core, write_core_for, Arch, TrimError, TrimSummary};

/// The page granule the dump tools work in: what [`record::RecordingMem`] records and
/// [`trim::write_core`] writes. 4 KiB is the smallest page every supported IOMMU walks.
pub const PAGE_SIZE: u64 = 4096;
