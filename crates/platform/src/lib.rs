//! The seams between an IOMMU driver and whatever runs it: register access for one IOMMU unit
//! ([`Mmio`]), physical memory ([`PhysMem`]), a page allocator for the driver's own structures
//! ([`FrameAlloc`]) and the boot environment ([`BootEnv`]).
//!
//! The hardware models (`iommu-emu`), the dump reader (`iommu-dump`) and the Linux userspace platform
//! implement these; the driver (`iommu-driver`) is written only against them. No crate here depends on the
//! driver to get them.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

/// MMIO register access for one IOMMU unit, at byte offsets from its base (Linux `readl`/`readq`/...).
pub trait Mmio {
    /// A 32-bit register read at byte offset `off` (Linux `readl`).
    fn read32(&mut self, off: usize) -> u32;
    /// A 64-bit register read (Linux `readq`): one access, never two halves.
    fn read64(&mut self, off: usize) -> u64;
    /// A 32-bit register write (Linux `writel`).
    fn write32(&mut self, off: usize, val: u32);
    /// A 64-bit register write (Linux `writeq`): one access, never two halves.
    fn write64(&mut self, off: usize, val: u64);
    /// Whether the unit has already done everything it will ever do in answer to the accesses so far: true
    /// for a model that runs each command when its doorbell is written. A driver polling for a completion may
    /// then stop at its first miss, as polling longer cannot change what it reads; on hardware (the default)
    /// it polls to its bound.
    fn settled(&self) -> bool {
        false
    }
}

/// Why a physical-memory access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemErrorKind {
    /// The address is not backed by RAM (a hole, MMIO, beyond the end of memory).
    NotRam,
    /// The address is RAM but the dump does not hold it.
    NotCaptured,
    /// The backend is read-only (a dump).
    ReadOnly,
}

/// A failed physical-memory access, naming the first address that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemError {
    /// The first physical address that could not be accessed.
    pub addr: u64,
    /// Why.
    pub kind: MemErrorKind,
}

impl fmt::Display for MemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            MemErrorKind::NotRam => "not RAM",
            MemErrorKind::NotCaptured => "not in the dump",
            MemErrorKind::ReadOnly => "read-only",
        };
        write!(f, "physical address {:#x}: {what}", self.addr)
    }
}

impl core::error::Error for MemError {}

/// Physical memory as the CPU sees it (the kernel's `memremap` of RAM, write-back).
pub trait PhysMem {
    /// Fill `buf` from physical address `pa`, all or nothing.
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError>;
    /// Write `data` at physical address `pa`, all or nothing.
    fn write(&mut self, pa: u64, data: &[u8]) -> Result<(), MemError>;

    /// The 4 KiB page at `pa` (4 KiB-aligned) as it lies in memory, for a caller that only looks at it (a table
    /// walk's scan for present entries), where this memory can lend it: the kernel reads old tables through
    /// its `memremap` mapping in place rather than copying each page out first. `None` (the default, and
    /// wherever [`PhysMem::read`] of the page would fail) makes the caller copy it with `read`. What it lends
    /// must be exactly what `read` of the same page would fill in. Lend only memory nothing else changes while it is
    /// lent (a shared borrow promises that): an emulator's (the one that lends today), a dump's. A live machine's old tables, which the IOMMU
    /// may still write (accessed and dirty bits) and DMA may reach, are copied with `read`: a copy is one snapshot
    /// that the checks and the use of an entry both see.
    fn lend_page(&self, pa: u64) -> Option<&[u8; 4096]> {
        let _ = pa;
        None
    }

    /// The 4 KiB page at `pa`: lent in place where this memory can ([`PhysMem::lend_page`]), else read into
    /// `copy`; the same bytes either way.
    fn read_page<'a>(&'a self, pa: u64, copy: &'a mut [u8; 4096]) -> Result<&'a [u8; 4096], MemError> {
        match self.lend_page(pa) {
            Some(page) => Ok(page),
            None => {
                self.read(pa, copy)?;
                Ok(copy)
            }
        }
    }

    /// A little-endian quadword (a 64-bit table entry).
    fn read_u64(&self, pa: u64) -> Result<u64, MemError> {
        let mut b = [0; 8];
        self.read(pa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    /// Write a little-endian quadword. A platform whose hardware may fetch the entry concurrently makes
    /// this one 64-bit store.
    fn write_u64(&mut self, pa: u64, v: u64) -> Result<(), MemError> {
        self.write(pa, &v.to_le_bytes())
    }
    /// A little-endian doubleword.
    fn read_u32(&self, pa: u64) -> Result<u32, MemError> {
        let mut b = [0; 4];
        self.read(pa, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    /// Write a little-endian doubleword.
    fn write_u32(&mut self, pa: u64, v: u32) -> Result<(), MemError> {
        self.write(pa, &v.to_le_bytes())
    }
    /// Write `data` `count` times back to back from `pa`, exactly as that many [`PhysMem::write`]s in
    /// ascending order would (stopping at the first that fails): one call, so a memory that shares equal pages
    /// can fill a table of identical pages (an AMD-Vi device table of default entries) without comparing each.
    fn write_repeated(&mut self, pa: u64, data: &[u8], count: u64) -> Result<(), MemError> {
        write_each(self, pa, data, count)
    }
    /// A 128-bit table entry: two little-endian quadwords, low first.
    fn read_u128(&self, pa: u64) -> Result<u128, MemError> {
        let mut b = [0; 16];
        self.read(pa, &mut b)?;
        Ok(u128::from_le_bytes(b))
    }
    /// Write a 128-bit entry. Where hardware may fetch it concurrently (an AMD-Vi DTE's lower half, a VT-d
    /// context entry) this must be one 16-byte store, as Linux's `cmpxchg128` makes it.
    fn write_u128(&mut self, pa: u64, v: u128) -> Result<(), MemError> {
        self.write(pa, &v.to_le_bytes())
    }
}

/// [`PhysMem::write_repeated`] as `count` plain writes, for an implementation's slow path. An address past the
/// top of the address space fails as not RAM.
pub fn write_each<M: PhysMem + ?Sized>(mem: &mut M, pa: u64, data: &[u8], count: u64) -> Result<(), MemError> {
    let mut at = pa;
    for i in 0..count {
        if i > 0 {
            at = at.checked_add(data.len() as u64).ok_or(MemError { addr: at, kind: MemErrorKind::NotRam })?;
        }
        mem.write(at, data)?;
    }
    Ok(())
}

/// Zeroed 4 KiB pages for the driver's own structures (root tables, page tables, queues).
pub trait FrameAlloc {
    /// A zeroed, 4 KiB-aligned page, or `None` when memory is exhausted.
    fn alloc_frame(&mut self) -> Option<u64>;
    /// Give back a frame [`FrameAlloc::alloc_frame`] handed out.
    fn free_frame(&mut self, pa: u64);
}

/// `pages` physically contiguous zeroed frames (a queue, a device table, a level-2 stream table), counting
/// every frame taken in `count`. The frame allocators here hand out ascending addresses; if a platform's
/// does not, this gives up (`None`) rather than build a structure across a gap.
pub fn alloc_contiguous(hw: &mut impl FrameAlloc, pages: u64, count: &mut u64) -> Option<u64> {
    let first = hw.alloc_frame()?;
    *count += 1;
    for i in 1..pages {
        let next = hw.alloc_frame()?;
        *count += 1;
        if next != first + i * 4096 {
            return None;
        }
    }
    Some(first)
}

/// A [`FrameAlloc`] that counts what passes through it: frames taken, frames given back, and the most
/// held at once. Wrap a platform's allocator in it to measure what a boot allocated.
#[derive(Clone, Debug, Default)]
pub struct CountingFrames<A> {
    /// The allocator counted.
    pub inner: A,
    /// Frames handed out.
    pub allocated: u64,
    /// Frames given back.
    pub freed: u64,
    /// The most frames held at once.
    pub peak: u64,
}

impl<A: FrameAlloc> CountingFrames<A> {
    /// Count what passes through `inner`, from zero.
    pub fn new(inner: A) -> Self {
        CountingFrames { inner, allocated: 0, freed: 0, peak: 0 }
    }
    /// Frames taken and not given back.
    pub fn held(&self) -> u64 {
        self.allocated - self.freed
    }
}

impl<A: FrameAlloc> FrameAlloc for CountingFrames<A> {
    fn alloc_frame(&mut self) -> Option<u64> {
        let pa = self.inner.alloc_frame()?;
        self.allocated += 1;
        self.peak = self.peak.max(self.held());
        Some(pa)
    }
    fn free_frame(&mut self, pa: u64) {
        self.freed += 1;
        self.inner.free_frame(pa);
    }
}

// A borrowed platform is a platform: lets a driver written against `impl Platform` run on a
// `&mut dyn Platform` (the driver contract's object-safe seam) without a wrapper type.
impl<T: Mmio + ?Sized> Mmio for &mut T {
    fn read32(&mut self, off: usize) -> u32 {
        (**self).read32(off)
    }
    fn read64(&mut self, off: usize) -> u64 {
        (**self).read64(off)
    }
    fn write32(&mut self, off: usize, val: u32) {
        (**self).write32(off, val)
    }
    fn write64(&mut self, off: usize, val: u64) {
        (**self).write64(off, val)
    }
    fn settled(&self) -> bool {
        (**self).settled()
    }
}

impl<T: PhysMem + ?Sized> PhysMem for &mut T {
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        (**self).read(pa, buf)
    }
    fn write(&mut self, pa: u64, data: &[u8]) -> Result<(), MemError> {
        (**self).write(pa, data)
    }
    fn lend_page(&self, pa: u64) -> Option<&[u8; 4096]> {
        (**self).lend_page(pa)
    }
    fn read_u64(&self, pa: u64) -> Result<u64, MemError> {
        (**self).read_u64(pa)
    }
    fn write_u64(&mut self, pa: u64, v: u64) -> Result<(), MemError> {
        (**self).write_u64(pa, v)
    }
    fn read_u32(&self, pa: u64) -> Result<u32, MemError> {
        (**self).read_u32(pa)
    }
    fn write_u32(&mut self, pa: u64, v: u32) -> Result<(), MemError> {
        (**self).write_u32(pa, v)
    }
    fn read_u128(&self, pa: u64) -> Result<u128, MemError> {
        (**self).read_u128(pa)
    }
    fn write_u128(&mut self, pa: u64, v: u128) -> Result<(), MemError> {
        (**self).write_u128(pa, v)
    }
    fn write_repeated(&mut self, pa: u64, data: &[u8], count: u64) -> Result<(), MemError> {
        (**self).write_repeated(pa, data, count)
    }
}

impl<T: FrameAlloc + ?Sized> FrameAlloc for &mut T {
    fn alloc_frame(&mut self) -> Option<u64> {
        (**self).alloc_frame()
    }
    fn free_frame(&mut self, pa: u64) {
        (**self).free_frame(pa)
    }
}

/// Everything one IOMMU unit's driver needs from the platform.
pub trait Platform: Mmio + PhysMem + FrameAlloc {}
impl<T: Mmio + PhysMem + FrameAlloc> Platform for T {}

/// What the kernel knows about the boot it is in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootEnv {
    /// `is_kdump_kernel()`: this is the crash kernel, booted by kexec from a panic.
    pub crash_kernel: bool,
    /// RAM ranges (the e820 / device-tree memory map), physical addresses.
    pub ram: Vec<Range<u64>>,
    /// The crash kernel's reserved region (`crashkernel=`), if one exists.
    pub crash_region: Option<Range<u64>>,
    /// Host memory encryption (SME / SEV-SNP) is active.
    pub mem_encrypt: bool,
    /// The SME encryption bit (`sme_me_mask`): addresses the crashed kernel wrote into IOMMU registers and
    /// tables may carry it, and it is stripped before they are used as physical addresses (Linux
    /// `iommu_memremap`). Zero without SME.
    pub c_bit: u64,
}

impl BootEnv {
    /// Whether `[pa, pa + len)` lies wholly inside one RAM range.
    pub fn in_ram(&self, pa: u64, len: u64) -> bool {
        let Some(end) = pa.checked_add(len) else {
            return false;
        };
        self.ram.iter().any(|r| r.start <= pa && end <= r.end)
    }
    /// A physical address from an address the crashed kernel (or this one) wrote into an IOMMU register or
    /// table: the SME encryption bit it may carry is removed, here and nowhere else (Linux
    /// `iommu_memremap` and `__sme_clr`).
    pub fn old_pa(&self, raw: u64) -> u64 {
        raw & !self.c_bit
    }
    /// The form of `pa` this kernel writes into an IOMMU register or table under SME: with the encryption bit
    /// (Linux `iommu_virt_to_phys` and `__sme_set`), so the unit's accesses are decrypted like the CPU's.
    pub fn sme_set(&self, pa: u64) -> u64 {
        pa | self.c_bit
    }
    /// Whether `[pa, pa + len)` overlaps the crash kernel's region.
    pub fn in_crash_region(&self, pa: u64, len: u64) -> bool {
        let end = pa.saturating_add(len);
        self.crash_region.as_ref().is_some_and(|r| pa < r.end && r.start < end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// Frames from a bump pointer, for the counting test.
    struct Bump(u64);
    impl FrameAlloc for Bump {
        fn alloc_frame(&mut self) -> Option<u64> {
            self.0 += 4096;
            (self.0 <= 0x4000).then_some(self.0)
        }
        fn free_frame(&mut self, _: u64) {}
    }

    #[test]
    fn counting_frames_counts_taken_freed_and_peak() {
        let mut a = CountingFrames::new(Bump(0));
        let f1 = a.alloc_frame().unwrap();
        let _f2 = a.alloc_frame().unwrap();
        a.free_frame(f1);
        let _f3 = a.alloc_frame().unwrap();
        assert_eq!((a.allocated, a.freed, a.peak, a.held()), (3, 1, 2, 2));
        let _f4 = a.alloc_frame().unwrap();
        assert_eq!(a.alloc_frame(), None, "exhaustion is not counted");
        assert_eq!(a.allocated, 4);
    }

    #[test]
    fn contiguous_allocation_gives_up_across_a_gap() {
        let mut n = 0;
        assert_eq!(alloc_contiguous(&mut Bump(0), 3, &mut n), Some(0x1000));
        assert_eq!(n, 3);
        struct Gappy(u64);
        impl FrameAlloc for Gappy {
            fn alloc_frame(&mut self) -> Option<u64> {
                self.0 += 0x2000;
                Some(self.0)
            }
            fn free_frame(&mut self, _: u64) {}
        }
        assert_eq!(alloc_contiguous(&mut Gappy(0), 2, &mut 0), None);
    }

    #[test]
    fn ram_and_crash_region_checks() {
        let env = BootEnv {
            crash_kernel: true,
            ram: vec![0..0xa_0000, 0x10_0000..0x8000_0000],
            crash_region: Some(0x4000_0000..0x5000_0000),
            mem_encrypt: false,
            c_bit: 0,
        };
        assert!(env.in_ram(0x1000, 0x1000));
        assert!(!env.in_ram(0x9_f000, 0x2000), "straddles a hole");
        assert!(!env.in_ram(u64::MAX - 10, 0x1000), "wraps");
        assert!(env.in_crash_region(0x3fff_f000, 0x2000));
        assert!(!env.in_crash_region(0x5000_0000, 0x1000));
    }
}
