//! The seams between the driver and whatever runs it: register access for one IOMMU unit, physical
//! memory, a page allocator for the driver's own structures, and the boot environment.

use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

/// MMIO register access for one IOMMU unit, at byte offsets from its base (Linux `readl`/`readq`/...).
pub trait Mmio {
    fn read32(&mut self, off: usize) -> u32;
    fn read64(&mut self, off: usize) -> u64;
    fn write32(&mut self, off: usize, val: u32);
    fn write64(&mut self, off: usize, val: u64);
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
    pub addr: u64,
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
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError>;
    fn write(&mut self, pa: u64, data: &[u8]) -> Result<(), MemError>;

    fn read_u64(&self, pa: u64) -> Result<u64, MemError> {
        let mut b = [0; 8];
        self.read(pa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn write_u64(&mut self, pa: u64, v: u64) -> Result<(), MemError> {
        self.write(pa, &v.to_le_bytes())
    }
    fn read_u32(&self, pa: u64) -> Result<u32, MemError> {
        let mut b = [0; 4];
        self.read(pa, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn write_u32(&mut self, pa: u64, v: u32) -> Result<(), MemError> {
        self.write(pa, &v.to_le_bytes())
    }
    /// A 128-bit table entry: two little-endian quadwords, low first.
    fn read_u128(&self, pa: u64) -> Result<u128, MemError> {
        let mut b = [0; 16];
        self.read(pa, &mut b)?;
        Ok(u128::from_le_bytes(b))
    }
    fn write_u128(&mut self, pa: u64, v: u128) -> Result<(), MemError> {
        self.write(pa, &v.to_le_bytes())
    }
}

/// Zeroed 4 KiB pages for the driver's own structures (root tables, page tables, queues).
pub trait FrameAlloc {
    /// A zeroed, 4 KiB-aligned page, or `None` when memory is exhausted.
    fn alloc_frame(&mut self) -> Option<u64>;
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
