//! The glue between `iommu-driver` and a model: the driver's [`Mmio`], [`PhysMem`] and [`FrameAlloc`]
//! traits implemented over one device model, the physical memory and a kernel's frame region.
//!
//! Register writes reach the model synchronously together with memory, so a model acts on them right
//! then: a VT-d invalidation queue runs against memory during the driver's `write64(IQT, ..)`, exactly
//! when hardware would start fetching.

use iommu_platform::{FrameAlloc, MemError, Mmio, PhysMem};

use crate::frames::FrameRegion;
use crate::mem::PhysMemory;

/// A memory-mapped device: register accesses at byte offsets from its base, with memory at hand for
/// whatever the access triggers (queue processing, status writes).
pub trait MmioDevice {
    /// A `size`-byte (4 or 8) read at `off`.
    fn mmio_read(&mut self, mem: &mut PhysMemory, off: usize, size: u8) -> u64;
    /// A `size`-byte (4 or 8) write of `val` at `off`.
    fn mmio_write(&mut self, mem: &mut PhysMemory, off: usize, size: u8, val: u64);
    /// The device does all its work inside `mmio_write` (a queued command when its doorbell is written, a
    /// status change when its command register is) and its reads have no effect: after one poll, more polls
    /// read the same (see [`iommu_platform::Mmio::settled`]). `false` unless a device says so.
    fn settled(&self) -> bool {
        false
    }
}

/// One kernel's view of one IOMMU unit: its registers, physical memory and the kernel's page allocator.
pub struct EmuPlatform<'a, D: MmioDevice> {
    /// The unit whose registers [`Mmio`] accesses reach.
    pub dev: &'a mut D,
    /// The machine's physical memory, shared by the unit's table walks and the kernel's writes.
    pub mem: &'a mut PhysMemory,
    /// The pages this kernel may allocate (for a crash kernel: its reserved region).
    pub frames: &'a mut FrameRegion,
}

impl<'a, D: MmioDevice> EmuPlatform<'a, D> {
    /// A kernel's view over the given unit, memory and frame region.
    pub fn new(dev: &'a mut D, mem: &'a mut PhysMemory, frames: &'a mut FrameRegion) -> Self {
        EmuPlatform { dev, mem, frames }
    }
}

impl<D: MmioDevice> Mmio for EmuPlatform<'_, D> {
    fn read32(&mut self, off: usize) -> u32 {
        self.dev.mmio_read(self.mem, off, 4) as u32
    }
    fn read64(&mut self, off: usize) -> u64 {
        self.dev.mmio_read(self.mem, off, 8)
    }
    fn write32(&mut self, off: usize, val: u32) {
        self.dev.mmio_write(self.mem, off, 4, val as u64)
    }
    fn write64(&mut self, off: usize, val: u64) {
        self.dev.mmio_write(self.mem, off, 8, val)
    }
    fn settled(&self) -> bool {
        self.dev.settled()
    }
}

impl<D: MmioDevice> PhysMem for EmuPlatform<'_, D> {
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.mem.read(pa, buf)
    }
    fn write(&mut self, pa: u64, data: &[u8]) -> Result<(), MemError> {
        self.mem.write(pa, data)
    }
    fn lend_page(&self, pa: u64) -> Option<&[u8; 4096]> {
        self.mem.lend_page(pa)
    }
    fn write_repeated(&mut self, pa: u64, data: &[u8], count: u64) -> Result<(), MemError> {
        self.mem.write_repeated(pa, data, count)
    }
}

impl<D: MmioDevice> FrameAlloc for EmuPlatform<'_, D> {
    /// The region's lowest free frame, zeroed in memory. A frame the RAM map does not back is given
    /// back and `None` returned.
    fn alloc_frame(&mut self) -> Option<u64> {
        let pa = self.frames.alloc()?;
        if self.mem.zero_page(pa).is_err() {
            self.frames.free(pa);
            return None;
        }
        Some(pa)
    }
    fn free_frame(&mut self, pa: u64) {
        self.frames.free(pa);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch register file: 8 bytes at offset 0, recording the access sizes it saw.
    #[derive(Default)]
    struct Scratch {
        reg: u64,
        sizes: Vec<u8>,
    }

    impl MmioDevice for Scratch {
        fn mmio_read(&mut self, _: &mut PhysMemory, off: usize, size: u8) -> u64 {
            self.sizes.push(size);
            self.reg >> (off * 8)
        }
        fn mmio_write(&mut self, _: &mut PhysMemory, _: usize, size: u8, val: u64) {
            self.sizes.push(size);
            self.reg = val;
        }
    }

    #[test]
    fn platform_routes_mmio_memory_and_frames() {
        let mut dev = Scratch::default();
        let mut mem = PhysMemory::contiguous(0..0x10_0000);
        mem.write_u64(0x8000, 0xdead).unwrap();
        let mut frames = FrameRegion::new(0x8000..0xa000);
        let mut p = EmuPlatform::new(&mut dev, &mut mem, &mut frames);
        p.write64(0, 0x1122_3344_5566_7788);
        assert_eq!(p.read32(4), 0x1122_3344);
        assert_eq!(p.read64(0), 0x1122_3344_5566_7788);
        let f = p.alloc_frame().unwrap();
        assert_eq!(f, 0x8000);
        assert_eq!(p.read_u64(0x8000).unwrap(), 0, "allocated frames are zeroed");
        p.free_frame(f);
        assert_eq!(frames.allocated(), 0);
        assert_eq!(dev.sizes, vec![8, 4, 8]);
    }

    #[test]
    fn frame_outside_ram_is_refused() {
        let mut dev = Scratch::default();
        let mut mem = PhysMemory::contiguous(0..0x1000);
        let mut frames = FrameRegion::new(0x1000..0x2000);
        let mut p = EmuPlatform::new(&mut dev, &mut mem, &mut frames);
        assert_eq!(p.alloc_frame(), None);
        assert_eq!(frames.allocated(), 0);
    }
}
