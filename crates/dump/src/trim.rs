//! Writing a small ELF core that holds chosen pages: how a 2 GiB dump becomes a kilobyte fixture.
//!
//! The layout is what [`crate::ElfCore`] (and `crash`, `gdb`, `object`) read: the ELF64 header, the
//! program headers (an optional `PT_NOTE` first, as QEMU and `/proc/vmcore` put it, then one
//! `PT_LOAD` per run of contiguous pages with `p_paddr` the physical address and `p_vaddr` 0), the
//! note bytes, then the page bytes. It is written with `object`'s ELF writer, which lays out and
//! encodes the headers; this module only decides what goes in them.

use std::collections::BTreeSet;
use std::io::{self, Write};

use iommu_platform::{MemError, MemErrorKind, PhysMem};
use object::elf;
use object::write::elf::{FileHeader, ProgramHeader, Writer};
use object::write::StreamingBuffer;
use object::Endianness;

use crate::PAGE_SIZE;

/// The machine a core is for: `e_machine`, which tells readers how to decode the notes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Arch {
    /// `EM_X86_64` (62).
    #[default]
    X86_64,
    /// `EM_AARCH64` (183).
    Aarch64,
    /// Any other `e_machine`, to keep the source's when trimming (QEMU writes `EM_386` (3) for an x86
    /// guest not in long mode, e.g. one still in its BIOS).
    Other(u16),
}

impl Arch {
    /// The `Arch` for an `e_machine` value, e.g. [`crate::ElfCore::machine`] of the core being trimmed.
    pub fn from_machine(machine: u16) -> Self {
        match elf::Machine(machine) {
            elf::EM_X86_64 => Arch::X86_64,
            elf::EM_AARCH64 => Arch::Aarch64,
            _ => Arch::Other(machine),
        }
    }

    /// The `e_machine` value written.
    pub fn machine(self) -> u16 {
        match self {
            Arch::X86_64 => elf::EM_X86_64.0,
            Arch::Aarch64 => elf::EM_AARCH64.0,
            Arch::Other(m) => m,
        }
    }
}

/// What [`write_core`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrimSummary {
    /// `PT_LOAD` segments written (runs of contiguous pages).
    pub segments: usize,
    /// 4 KiB pages whose bytes were written.
    pub pages_written: usize,
    /// Requested pages left out because `mem` could not read them whole (`NotCaptured` / `NotRam`):
    /// the trimmed core lacks them just as the source did.
    pub pages_skipped: Vec<u64>,
}

/// Why a core could not be written.
#[derive(Debug, thiserror::Error)]
pub enum TrimError {
    /// A page address given is not a multiple of 4 KiB.
    #[error("page address {addr:#x} is not 4 KiB aligned")]
    Unaligned {
        /// The address given.
        addr: u64,
    },
    /// The page is the last of the 64-bit address space: its `PT_LOAD` would end at 2^64, which
    /// `p_paddr` + `p_memsz` cannot express.
    #[error("page {addr:#x} ends beyond the 64-bit address space")]
    PageOutOfRange {
        /// The page's address.
        addr: u64,
    },
    /// The runs of pages (plus the `PT_NOTE`) need more program headers than `e_phnum` holds without
    /// extended numbering (`PN_XNUM` - 1).
    #[error("{count} program headers needed, more than the {max} an ELF header can count")]
    TooManySegments {
        /// Program headers needed.
        count: usize,
        /// The most `e_phnum` can count.
        max: usize,
    },
    /// A page read failed for a reason other than not being captured (or not RAM), or a page readable in
    /// the first pass failed in the second.
    #[error("reading page {addr:#x}: {err}")]
    Read {
        /// The page's address.
        addr: u64,
        /// The memory's error.
        err: MemError,
    },
    /// Writing to the output failed.
    #[error("writing the core: {0}")]
    Io(#[from] io::Error),
    /// `object`'s ELF writer refused the layout.
    #[error("ELF writer: {0}")]
    Object(#[from] object::write::Error),
}

/// Writes an x86-64 core holding `pages` (4 KiB-aligned physical addresses) read from `mem`, and the
/// note bytes `notes` (e.g. [`crate::ElfCore::notes`] of the source) as a `PT_NOTE` if given.
pub fn write_core(
    mem: &impl PhysMem,
    pages: &BTreeSet<u64>,
    notes: Option<&[u8]>,
    out: &mut impl Write,
) -> Result<TrimSummary, TrimError> {
    write_core_for(Arch::X86_64, mem, pages, notes, out)
}

/// [`write_core`] for a given architecture.
pub fn write_core_for(
    arch: Arch,
    mem: &impl PhysMem,
    pages: &BTreeSet<u64>,
    notes: Option<&[u8]>,
    out: &mut impl Write,
) -> Result<TrimSummary, TrimError> {
    let mut page = vec![0u8; PAGE_SIZE as usize];
    // First pass: which pages can be read, and their runs. Reading twice costs little for a
    // fixture, and keeps memory to one page however many pages are asked for.
    let mut summary = TrimSummary::default();
    let mut runs: Vec<(u64, u64)> = Vec::new(); // (paddr, len)
    for &addr in pages {
        if addr % PAGE_SIZE != 0 {
            return Err(TrimError::Unaligned { addr });
        }
        // The core format (and ElfCore) cannot describe a segment that ends at 2^64.
        if addr.checked_add(PAGE_SIZE).is_none() {
            return Err(TrimError::PageOutOfRange { addr });
        }
        match mem.read(addr, &mut page) {
            Ok(()) => {}
            Err(MemError { kind: MemErrorKind::NotCaptured | MemErrorKind::NotRam, .. }) => {
                summary.pages_skipped.push(addr);
                continue;
            }
            Err(err) => return Err(TrimError::Read { addr, err }),
        }
        summary.pages_written += 1;
        match runs.last_mut() {
            Some((start, len)) if *start + *len == addr => *len += PAGE_SIZE,
            _ => runs.push((addr, PAGE_SIZE)),
        }
    }
    summary.segments = runs.len();

    // Without extended numbering (a section header we don't otherwise need) e_phnum stops below
    // PN_XNUM.
    let count = runs.len() + usize::from(notes.is_some());
    let max = usize::from(elf::PN_XNUM) - 1;
    if count > max {
        return Err(TrimError::TooManySegments { count, max });
    }

    let mut buffer = StreamingBuffer::new(out);
    let mut w = Writer::new(Endianness::Little, true, &mut buffer);
    w.reserve_file_header();
    w.reserve_program_headers(count as u32);
    let note_off = notes.map(|n| w.reserve(n.len() as u64, 4));
    let run_offs: Vec<u64> = runs.iter().map(|&(_, len)| w.reserve(len, 8)).collect();

    w.write_file_header(&FileHeader {
        os_abi: elf::ELFOSABI_NONE,
        abi_version: 0,
        e_type: elf::ET_CORE,
        e_machine: elf::Machine(arch.machine()),
        e_entry: 0,
        e_flags: elf::FileFlags::default(),
    })?;
    w.write_align_program_headers();
    if let (Some(n), Some(off)) = (notes, note_off) {
        let len = n.len() as u64;
        w.write_program_header(&ProgramHeader {
            p_type: elf::PT_NOTE,
            p_flags: elf::ProgramFlags::default(),
            p_offset: off,
            p_vaddr: 0,
            p_paddr: 0,
            p_filesz: len,
            p_memsz: len,
            p_align: 0,
        });
    }
    for (&(paddr, len), &off) in runs.iter().zip(&run_offs) {
        w.write_program_header(&ProgramHeader {
            p_type: elf::PT_LOAD,
            p_flags: elf::PF_R | elf::PF_W | elf::PF_X,
            p_offset: off,
            p_vaddr: 0,
            p_paddr: paddr,
            p_filesz: len,
            p_memsz: len,
            p_align: 0,
        });
    }
    if let (Some(n), Some(off)) = (notes, note_off) {
        w.pad_until(off);
        w.write(n);
    }
    for (&(paddr, len), &off) in runs.iter().zip(&run_offs) {
        w.pad_until(off);
        for addr in (paddr..paddr + len).step_by(PAGE_SIZE as usize) {
            mem.read(addr, &mut page).map_err(|err| TrimError::Read { addr, err })?;
            w.write(&page);
        }
    }
    // StreamingBuffer keeps the first I/O error instead of failing each write; collect it here.
    buffer.flush()?;
    Ok(summary)
}
