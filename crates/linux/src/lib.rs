//! `iommu-driver`'s platform in Linux userspace, for a kdump kernel that runs the crash-kernel hand-over
//! from its initramfs with its own IOMMU driver kept off.
//!
//! Three kinds of physical memory are reachable, and nothing else:
//! - the unit's register block ([`Mmio`]), through a [`RegisterIo`]: [`MappedRegs`] (an `mmap` of
//!   `/dev/mem`, one load or store of the register's width) or [`FileRegs`] (positioned reads and writes of
//!   exactly that width, for the file-backed fake the tests use);
//! - a window of physical memory the kdump kernel does not use as RAM (taken out of it with `memmap=` on its
//!   command line and found again in `/proc/iomem`, see [`iomem`], or a `no-map` reserved-memory node of the
//!   device tree, see [`devtree`]): the frames of every structure the driver builds ([`FrameAlloc`], a bump
//!   allocator) — read and written;
//! - the crashed kernel's RAM ([`PhysMem`]): read anywhere in it, written only inside the ranges declared
//!   with [`LinuxPlatform::allow_old_write`] (the structures a policy adopts in place, e.g. an AMD-Vi device
//!   table). From the kdump kernel that memory is not its own RAM, so `/dev/mem` reaches it.
//!
//! Every access is checked against those bounds with checked arithmetic; a refused or failed access is
//! counted, kept (the first [`MAX_KEPT_ERRORS`]) and can be logged line by line. The [`Mmio`] trait cannot
//! fail, so a refused register read returns all ones (what a read of an absent device returns) and a
//! refused write is dropped; callers check [`LinuxPlatform::errors`] after each step.
//!
//! Why registers are not written with `pwrite`: x86 `/dev/mem` `write()` copies with `copy_from_user`, which
//! moves fewer than 8 bytes one byte at a time (`rep_movs_alternative`), and QEMU's VT-d and AMD-Vi models
//! drop accesses narrower than 4 bytes (their `MemoryRegionOps` `valid.min_access_size`). Reads are
//! different (`copy_from_kernel_nofault` copies aligned words whole), which is why the audit's `pread`
//! works. The real device path is therefore [`MappedRegs`].
//!
//! Memory goes through a [`DevMem`]: positioned `read`/`write` of `/dev/mem` on x86, or [`MappedPhys`] on
//! arm64, whose `/dev/mem` `read()` serves only the kernel's own mapped RAM.

#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod devtree;
pub mod iomem;
mod mapped;

use std::cell::Cell;
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;

pub use iommu_platform::{FrameAlloc, MemError, MemErrorKind, Mmio, PhysMem};
pub use mapped::{MappedPhys, MappedRegs};

/// Page size of every frame the window hands out.
pub const PAGE: u64 = 4096;

/// How many access errors are kept for the report; later ones are only counted, so a driver looping on a
/// refused address cannot grow memory.
pub const MAX_KEPT_ERRORS: usize = 32;

/// A register access width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// A 32-bit access (`readl`/`writel`), e.g. VT-d `GCMD`/`GSTS`.
    W32,
    /// A 64-bit access (`readq`/`writeq`), e.g. VT-d `RTADDR_REG` or an SMMUv3 queue base.
    W64,
}

impl Width {
    /// Bytes moved by one access of this width (4 or 8).
    pub const fn bytes(self) -> u64 {
        match self {
            Width::W32 => 4,
            Width::W64 => 8,
        }
    }
}

/// Register access at byte offsets of one unit's block: the real `mmap` or a file for tests.
pub trait RegisterIo {
    /// Bytes of the block; every offset given is below it (the platform checks first).
    fn len(&self) -> u64;
    /// A zero-length block, which no register access can fit in.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// One access of width `w` at `off`; a 32-bit value comes back zero-extended.
    fn read(&mut self, off: u64, w: Width) -> io::Result<u64>;
    /// One access of width `w` at `off`, storing the low `w` bytes of `val`.
    fn write(&mut self, off: u64, w: Width, val: u64) -> io::Result<()>;
}

/// Physical memory as a file: `/dev/mem`, or a plain file standing in for it in tests.
pub trait PhysFile {
    /// Fill all of `buf` from physical address `pa`; a short read is an error.
    fn read_at(&self, buf: &mut [u8], pa: u64) -> io::Result<()>;
    /// Store all of `data` at physical address `pa`; a short write is an error.
    fn write_at(&self, data: &[u8], pa: u64) -> io::Result<()>;
}

impl PhysFile for File {
    fn read_at(&self, buf: &mut [u8], pa: u64) -> io::Result<()> {
        self.read_exact_at(buf, pa)
    }
    fn write_at(&self, data: &[u8], pa: u64) -> io::Result<()> {
        self.write_all_at(data, pa)
    }
}

/// How `/dev/mem` reaches memory: positioned `read`/`write` (x86, where `read()` reaches physical memory below
/// the kernel's top of RAM that is not its own), or [`MappedPhys`] (arm64, where only `mmap` reaches memory
/// that is not the kernel's own mapped RAM).
#[derive(Debug)]
pub enum DevMem {
    /// `/dev/mem` opened read-write, reached with `pread`/`pwrite` (`read_mem`/`write_mem` in
    /// drivers/char/mem.c; x86).
    Rw(File),
    /// `/dev/mem` reached through cached `mmap`s of aligned chunks (arm64).
    Mapped(MappedPhys),
}

impl DevMem {
    /// `"pread"` or `"mmap"`, for reports.
    pub fn how(&self) -> &'static str {
        match self {
            DevMem::Rw(_) => "pread",
            DevMem::Mapped(_) => "mmap",
        }
    }
}

impl PhysFile for DevMem {
    fn read_at(&self, buf: &mut [u8], pa: u64) -> io::Result<()> {
        match self {
            DevMem::Rw(f) => PhysFile::read_at(f, buf, pa),
            DevMem::Mapped(m) => m.read_at(buf, pa),
        }
    }
    fn write_at(&self, data: &[u8], pa: u64) -> io::Result<()> {
        match self {
            DevMem::Rw(f) => PhysFile::write_at(f, data, pa),
            DevMem::Mapped(m) => m.write_at(data, pa),
        }
    }
}

/// Registers as positioned reads and writes of exactly their width at `base + off` of a file.
#[derive(Debug)]
pub struct FileRegs<F> {
    /// The file holding the block: `/dev/mem` or a test's stand-in.
    pub file: F,
    /// File offset of register 0 (the unit's physical base address for `/dev/mem`).
    pub base: u64,
    /// Bytes of the block; accesses beyond it are refused before they reach the file.
    pub len: u64,
}

impl<F: PhysFile> RegisterIo for FileRegs<F> {
    fn len(&self) -> u64 {
        self.len
    }
    fn read(&mut self, off: u64, w: Width) -> io::Result<u64> {
        let mut b = [0u8; 8];
        let at = self.base.checked_add(off).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.file.read_at(&mut b[..w.bytes() as usize], at)?;
        Ok(u64::from_le_bytes(b))
    }
    fn write(&mut self, off: u64, w: Width, val: u64) -> io::Result<()> {
        let at = self.base.checked_add(off).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.file.write_at(&val.to_le_bytes()[..w.bytes() as usize], at)
    }
}

/// Which of the reachable regions an access fell in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// The unit's MMIO register block.
    Registers,
    /// The frame window the driver's own structures are allocated from.
    Window,
    /// The crashed kernel's RAM, where the old tables live.
    OldRam,
}

/// An access the platform refused or that failed, naming what and where.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// A register access that does not fit inside the mapped block (refused, never issued).
    #[error("register {op} of {bytes} bytes at offset {off:#x}: outside the {len:#x}-byte register block")]
    RegisterOutOfBlock {
        /// `"read"` or `"write"`.
        op: &'static str,
        /// Byte offset from the unit's base.
        off: usize,
        /// Access width in bytes.
        bytes: u64,
        /// Bytes of the block.
        len: u64,
    },
    /// A register access the [`RegisterIo`] issued and that failed.
    #[error("register {op} at offset {off:#x}: {source}")]
    Register {
        /// `"read"` or `"write"`.
        op: &'static str,
        /// Byte offset from the unit's base.
        off: usize,
        /// What the register path reported.
        source: io::Error,
    },
    /// A memory access not wholly inside the window or one range of the crashed kernel's RAM (refused).
    #[error("{op} of {len} bytes at {pa:#x}: outside the window and the crashed kernel's RAM")]
    Unreachable {
        /// `"write"`: a refused read goes back to the driver as its `MemError` and is not kept.
        op: &'static str,
        /// Physical address of the first byte.
        pa: u64,
        /// Bytes accessed.
        len: u64,
    },
    /// A write to the crashed kernel's RAM outside every range of [`LinuxPlatform::allow_old_write`]
    /// (refused: the old kernel's memory is evidence for the dump).
    #[error(
        "write of {len} bytes at {pa:#x}: the crashed kernel's memory, outside every structure the policy adopts in place"
    )]
    WriteRefused {
        /// Physical address of the first byte.
        pa: u64,
        /// Bytes the driver tried to write.
        len: u64,
    },
    /// An allowed memory access that the [`PhysFile`] failed.
    #[error("{op} of {len} bytes at {pa:#x} ({region:?}): {source}")]
    Io {
        /// `"write"`: a failed read goes back to the driver as its `MemError` and is not kept.
        op: &'static str,
        /// Physical address of the first byte.
        pa: u64,
        /// Bytes accessed.
        len: u64,
        /// Which region the access was allowed in.
        region: Region,
        /// What the memory path reported.
        source: io::Error,
    },
    /// Clearing a freshly allocated window frame failed, so the frame was not handed out.
    #[error("zeroing frame {pa:#x}: {source}")]
    Zero {
        /// Physical address of the frame.
        pa: u64,
        /// What the memory path reported.
        source: io::Error,
    },
}

/// How many accesses of each kind went through, and how many were refused or failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Register reads that completed.
    pub reg_reads: u64,
    /// Register writes that completed.
    pub reg_writes: u64,
    /// Reads of the frame window that were allowed (whether or not the file then failed them).
    pub window_reads: u64,
    /// Writes to the frame window that completed.
    pub window_writes: u64,
    /// Reads of the crashed kernel's RAM that were allowed (whether or not the file then failed them).
    pub old_reads: u64,
    /// Writes to adopted structures in the crashed kernel's RAM that completed.
    pub old_writes: u64,
    /// 4 KiB frames handed out from the window.
    pub frames: u64,
    /// Refused or failed register writes and reads, memory writes and frame zeroings; a failed memory read
    /// goes back to the driver as its `MemError` and is not counted here.
    pub errors: u64,
}

/// The crash kernel's platform: one unit's registers, the frame window and the crashed kernel's RAM.
pub struct LinuxPlatform<R, F> {
    regs: R,
    mem: F,
    window: Range<u64>,
    old_ram: Vec<Range<u64>>,
    writable: Vec<(Range<u64>, String)>,
    next_frame: u64,
    counts: Counts,
    window_reads: Cell<u64>,
    old_reads: Cell<u64>,
    errors: Vec<AccessError>,
    log: Option<Box<dyn Write>>,
}

impl<R, F> fmt::Debug for LinuxPlatform<R, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinuxPlatform")
            .field("window", &self.window)
            .field("old_ram", &self.old_ram)
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

/// Why a platform could not be set up.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SetupError {
    /// The frame window is empty or its ends are not multiples of [`PAGE`].
    #[error("window {start:#x}-{end:#x}: empty or not 4 KiB aligned")]
    BadWindow {
        /// First byte of the window.
        start: u64,
        /// Exclusive end of the window.
        end: u64,
    },
    /// The frame window overlaps the crashed kernel's RAM, so the driver's new structures would overwrite
    /// what the dump must capture.
    #[error("window {window:?} overlaps the crashed kernel's RAM {ram:?}")]
    WindowInOldRam {
        /// The window asked for.
        window: Range<u64>,
        /// The first old-RAM range it overlaps.
        ram: Range<u64>,
    },
    /// A range given to [`LinuxPlatform::allow_old_write`] is empty or not inside one old-RAM range.
    #[error("range {start:#x}-{end:#x} allowed for writing ({why}) is not inside the crashed kernel's RAM")]
    WritableNotOldRam {
        /// First byte of the range.
        start: u64,
        /// Exclusive end of the range.
        end: u64,
        /// The caller's reason (the structure adopted in place).
        why: String,
    },
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

fn inside(pa: u64, len: u64, r: &Range<u64>) -> bool {
    pa.checked_add(len).is_some_and(|end| r.start <= pa && end <= r.end)
}

impl<R: RegisterIo, F: PhysFile> LinuxPlatform<R, F> {
    /// `window`: frames for the driver's structures (4 KiB aligned, outside `old_ram`); `old_ram`: the
    /// crashed kernel's RAM (e.g. `/proc/vmcore`'s `PT_LOAD` ranges).
    pub fn new(regs: R, mem: F, window: Range<u64>, old_ram: Vec<Range<u64>>) -> Result<Self, SetupError> {
        if window.start >= window.end || !window.start.is_multiple_of(PAGE) || !window.end.is_multiple_of(PAGE) {
            return Err(SetupError::BadWindow { start: window.start, end: window.end });
        }
        if let Some(ram) = old_ram.iter().find(|r| overlaps(r, &window)) {
            return Err(SetupError::WindowInOldRam { window: window.clone(), ram: ram.clone() });
        }
        Ok(LinuxPlatform {
            regs,
            mem,
            next_frame: window.start,
            window,
            old_ram,
            writable: Vec::new(),
            counts: Counts::default(),
            window_reads: Cell::new(0),
            old_reads: Cell::new(0),
            errors: Vec::new(),
            log: None,
        })
    }

    /// Log every access, one line each, to `w`.
    pub fn set_log(&mut self, w: Box<dyn Write>) {
        self.log = Some(w);
    }

    /// Allow writes to `range` of the crashed kernel's memory: a structure the policy adopts in place.
    pub fn allow_old_write(&mut self, range: Range<u64>, why: &str) -> Result<(), SetupError> {
        let ok = range.start < range.end && self.old_ram.iter().any(|r| r.start <= range.start && range.end <= r.end);
        if !ok {
            return Err(SetupError::WritableNotOldRam { start: range.start, end: range.end, why: why.into() });
        }
        self.writable.push((range, why.into()));
        Ok(())
    }

    /// Accesses so far by kind, including the reads counted through `&self`.
    pub fn counts(&self) -> Counts {
        Counts { window_reads: self.window_reads.get(), old_reads: self.old_reads.get(), ..self.counts }
    }
    /// The first [`MAX_KEPT_ERRORS`] refused or failed accesses; [`Counts::errors`] counts them all.
    pub fn errors(&self) -> &[AccessError] {
        &self.errors
    }
    /// The whole frame window given to [`LinuxPlatform::new`].
    pub fn window(&self) -> Range<u64> {
        self.window.clone()
    }
    /// Frames handed out so far, from the start of the window.
    pub fn window_used(&self) -> Range<u64> {
        self.window.start..self.next_frame
    }
    /// The memory path (e.g. to name it in a report).
    pub fn mem(&self) -> &F {
        &self.mem
    }
    /// The register path and the memory path back, e.g. to unmap or close them once the hand-over is done.
    pub fn into_parts(self) -> (R, F) {
        (self.regs, self.mem)
    }

    fn fail(&mut self, e: AccessError) {
        self.counts.errors += 1;
        self.note(format_args!("ERROR {e}"));
        if self.errors.len() < MAX_KEPT_ERRORS {
            self.errors.push(e);
        }
    }

    fn note(&mut self, args: fmt::Arguments<'_>) {
        if let Some(w) = self.log.as_mut() {
            // A log that cannot be written is not a reason to stop a hand-over.
            let _ = writeln!(w, "{args}");
        }
    }

    fn reg_read(&mut self, off: usize, w: Width) -> u64 {
        let all_ones = if w == Width::W32 { u32::MAX as u64 } else { u64::MAX };
        let fits = (off as u64).checked_add(w.bytes()).is_some_and(|e| e <= self.regs.len());
        if !fits {
            let len = self.regs.len();
            self.fail(AccessError::RegisterOutOfBlock { op: "read", off, bytes: w.bytes(), len });
            return all_ones;
        }
        match self.regs.read(off as u64, w) {
            Ok(v) => {
                self.counts.reg_reads += 1;
                self.note(format_args!("R{} reg+{off:#x} = {v:#x}", w.bytes() * 8));
                v
            }
            Err(source) => {
                self.fail(AccessError::Register { op: "read", off, source });
                all_ones
            }
        }
    }

    fn reg_write(&mut self, off: usize, w: Width, val: u64) {
        let fits = (off as u64).checked_add(w.bytes()).is_some_and(|e| e <= self.regs.len());
        if !fits {
            let len = self.regs.len();
            self.fail(AccessError::RegisterOutOfBlock { op: "write", off, bytes: w.bytes(), len });
            return;
        }
        match self.regs.write(off as u64, w, val) {
            Ok(()) => {
                self.counts.reg_writes += 1;
                self.note(format_args!("W{} reg+{off:#x} <- {val:#x}", w.bytes() * 8));
            }
            Err(source) => self.fail(AccessError::Register { op: "write", off, source }),
        }
    }

    /// Where `[pa, pa+len)` lies, if wholly inside one reachable region.
    fn region(&self, pa: u64, len: u64) -> Option<Region> {
        if inside(pa, len, &self.window) {
            Some(Region::Window)
        } else if self.old_ram.iter().any(|r| inside(pa, len, r)) {
            Some(Region::OldRam)
        } else {
            None
        }
    }
}

impl<R: RegisterIo, F: PhysFile> Mmio for LinuxPlatform<R, F> {
    fn read32(&mut self, off: usize) -> u32 {
        self.reg_read(off, Width::W32) as u32
    }
    fn read64(&mut self, off: usize) -> u64 {
        self.reg_read(off, Width::W64)
    }
    fn write32(&mut self, off: usize, val: u32) {
        self.reg_write(off, Width::W32, val as u64)
    }
    fn write64(&mut self, off: usize, val: u64) {
        self.reg_write(off, Width::W64, val)
    }
}

/// `PhysMem::read` takes `&self`: reads are counted through cells, and a refused or failed read is reported to
/// the driver as its `MemError` (not kept).
impl<R: RegisterIo, F: PhysFile> PhysMem for LinuxPlatform<R, F> {
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let len = buf.len() as u64;
        match self.region(pa, len) {
            None => Err(MemError { addr: pa, kind: MemErrorKind::NotRam }),
            Some(region) => {
                let n = if region == Region::Window { &self.window_reads } else { &self.old_reads };
                n.set(n.get() + 1);
                self.mem.read_at(buf, pa).map_err(|_| MemError { addr: pa, kind: MemErrorKind::NotCaptured })
            }
        }
    }

    fn write(&mut self, pa: u64, data: &[u8]) -> Result<(), MemError> {
        let len = data.len() as u64;
        let region = match self.region(pa, len) {
            Some(Region::OldRam) if !self.writable.iter().any(|(r, _)| inside(pa, len, r)) => {
                self.fail(AccessError::WriteRefused { pa, len });
                return Err(MemError { addr: pa, kind: MemErrorKind::ReadOnly });
            }
            Some(r) => r,
            None => {
                self.fail(AccessError::Unreachable { op: "write", pa, len });
                return Err(MemError { addr: pa, kind: MemErrorKind::NotRam });
            }
        };
        match self.mem.write_at(data, pa) {
            Ok(()) => {
                match region {
                    Region::OldRam => self.counts.old_writes += 1,
                    _ => self.counts.window_writes += 1,
                }
                if len <= 16 {
                    let mut b = [0u8; 16];
                    b[..data.len()].copy_from_slice(data);
                    self.note(format_args!("W{len} {pa:#x} <- {:#x}", u128::from_le_bytes(b)));
                } else {
                    self.note(format_args!("W{len} {pa:#x}"));
                }
                Ok(())
            }
            Err(source) => {
                self.fail(AccessError::Io { op: "write", pa, len, region, source });
                Err(MemError { addr: pa, kind: MemErrorKind::NotCaptured })
            }
        }
    }
}

impl<R: RegisterIo, F: PhysFile> FrameAlloc for LinuxPlatform<R, F> {
    /// The next page of the window, zeroed through the same path the driver writes by. Frames are never
    /// reused: freed ones stay out of use, so the ascending order `alloc_contiguous` relies on holds.
    fn alloc_frame(&mut self) -> Option<u64> {
        let pa = self.next_frame;
        let end = pa.checked_add(PAGE)?;
        if end > self.window.end {
            return None;
        }
        if let Err(source) = self.mem.write_at(&[0u8; PAGE as usize], pa) {
            self.fail(AccessError::Zero { pa, source });
            return None;
        }
        self.next_frame = end;
        self.counts.frames += 1;
        self.note(format_args!("FRAME {pa:#x}"));
        Some(pa)
    }
    fn free_frame(&mut self, pa: u64) {
        self.note(format_args!("FREE {pa:#x} (not reused)"));
    }
}
