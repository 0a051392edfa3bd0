//! The DMA entry point of every IOMMU model (docs/handover.md#dma-entry-point): a device asks its IOMMU to translate
//! `(requester ID, IOVA, access)`, gets a physical address or a fault, and only then touches memory.
//! There is no other way for a simulated device to reach memory.

use iommu_platform::PhysMem;

use crate::mem::PhysMemory;

/// The direction of a DMA, as the IOMMU checks permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// The device reads memory (memory read request).
    Read,
    /// The device writes memory (memory write request).
    Write,
}

/// Why a translation failed, in a vendor-neutral shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultInfo {
    /// The vendor's fault code (VT-d: the fault reason, spec 7.1.3).
    pub code: u16,
    /// A short name of the reason, for reports.
    pub reason: &'static str,
    /// Whether the IOMMU recorded the fault where software can see it (VT-d: a fault recording
    /// register). False when fault processing was disabled for the source or the record was dropped
    /// for lack of a free slot.
    pub recorded: bool,
}

/// The outcome of one translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Translation {
    /// The request may proceed at this physical address.
    Ok {
        /// The system physical address the IOVA maps to.
        phys: u64,
    },
    /// The request is blocked.
    Fault(FaultInfo),
}

/// An IOMMU's DMA translation.
pub trait Iommu {
    /// Translate one request. `iova` may be any byte address; the answer covers the bytes up to the
    /// end of its 4 KiB page. `mem` is where the unit walks its tables; it is mutable because the
    /// walk's side effects (records, status writes) may go to memory.
    fn translate(&mut self, mem: &mut PhysMemory, rid: u32, iova: u64, access: Access) -> Translation;

    /// The physical address [`Self::translate`] would answer, when the unit's front cache holds it (the hit counted
    /// as `translate` counts it); `None` says nothing, and the caller asks `translate`. A leaf call with nothing to
    /// spill and a result in registers: a device's small DMA pays for the hit only. A unit without a front cache,
    /// or one that changes what `translate` answers (a wrapper), keeps this default.
    #[inline]
    fn translate_cached(&mut self, rid: u32, iova: u64, access: Access) -> Option<u64> {
        let _ = (rid, iova, access);
        None
    }

    /// One MSI: a DWORD write by `rid` of `data` to the interrupt address `addr`, as the unit remaps, passes or
    /// blocks it (VT-d, AMD-Vi: [`crate::InterruptRemap`]). `None`: the unit has no interrupt remapping
    /// (SMMUv3, where an MSI is a write through the stream table to the ITS doorbell).
    fn interrupt(&mut self, mem: &mut PhysMemory, rid: u32, addr: u64, data: u32) -> Option<crate::Interrupt> {
        let _ = (mem, rid, addr, data);
        None
    }
}

/// What happened to one DMA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaOutcome {
    /// Every byte was transferred.
    Done,
    /// The IOMMU blocked the page holding `iova`; `done` bytes before it were transferred.
    Fault {
        /// The IOVA the transfer had reached when the IOMMU blocked it (in the blocked page).
        iova: u64,
        /// Bytes transferred before the fault.
        done: usize,
        /// The IOMMU's reason.
        info: FaultInfo,
    },
    /// The translated address `phys` is not memory (on PCIe: an unsupported request, the write is
    /// dropped / the read completes with an error); `done` bytes before it were transferred.
    BadAddress {
        /// The translated address that no memory backs.
        phys: u64,
        /// Bytes transferred before it.
        done: usize,
    },
}

impl DmaOutcome {
    /// Whether every byte was transferred.
    pub fn is_done(&self) -> bool {
        matches!(self, DmaOutcome::Done)
    }
}

/// A device write of `data` at `iova`. Translated and performed page by page, the way a device splits
/// a transfer into requests that never cross a 4 KiB boundary (PCIe): pages before a fault land.
pub fn dma_write<I: Iommu + ?Sized>(
    iommu: &mut I,
    mem: &mut PhysMemory,
    rid: u32,
    iova: u64,
    data: &[u8],
) -> DmaOutcome {
    let mut done = 0;
    while done < data.len() {
        let at = iova.wrapping_add(done as u64);
        let n = chunk(at, data.len() - done);
        let t = match iommu.translate_cached(rid, at, Access::Write) {
            Some(phys) => Translation::Ok { phys },
            None => iommu.translate(mem, rid, at, Access::Write),
        };
        match t {
            Translation::Ok { phys } => {
                if mem.write(phys, &data[done..done + n]).is_err() {
                    return DmaOutcome::BadAddress { phys, done };
                }
            }
            Translation::Fault(info) => return DmaOutcome::Fault { iova: at, done, info },
        }
        done += n;
    }
    DmaOutcome::Done
}

/// A device read into `buf` from `iova`, page by page like [`dma_write`]: one translation per page, each
/// page's bytes copied straight from the physical page ([`PhysMemory::read_in_page`]). Bytes past a failure
/// are left as they were.
#[inline]
pub fn dma_read<I: Iommu + ?Sized>(
    iommu: &mut I,
    mem: &mut PhysMemory,
    rid: u32,
    iova: u64,
    buf: &mut [u8],
) -> DmaOutcome {
    // Most requests (descriptors, completions) lie in one page: one translation, one copy.
    if chunk(iova, buf.len()) == buf.len() && !buf.is_empty() {
        if let Some(phys) = iommu.translate_cached(rid, iova, Access::Read) {
            return match mem.read_in_page(phys, buf) {
                Ok(()) => DmaOutcome::Done,
                Err(_) => DmaOutcome::BadAddress { phys, done: 0 },
            };
        }
        return match iommu.translate(mem, rid, iova, Access::Read) {
            Translation::Ok { phys } => match mem.read_in_page(phys, buf) {
                Ok(()) => DmaOutcome::Done,
                Err(_) => DmaOutcome::BadAddress { phys, done: 0 },
            },
            Translation::Fault(info) => DmaOutcome::Fault { iova, done: 0, info },
        };
    }
    read_by_page(iommu, mem, rid, iova, buf, PhysMemory::read_in_page)
}

/// The per-page read path as it was before [`dma_read`] got its fast path (the translation is the model's own,
/// the copy [`PhysMemory::read_reference`]): the benchmark's baseline (`handover bench`, measured in the same
/// run) and the oracle [`dma_read`] is tested against.
pub fn dma_read_reference<I: Iommu + ?Sized>(
    iommu: &mut I,
    mem: &mut PhysMemory,
    rid: u32,
    iova: u64,
    buf: &mut [u8],
) -> DmaOutcome {
    read_by_page(iommu, mem, rid, iova, buf, |m, pa, b| m.read_reference(pa, b))
}

/// A read page by page: each page's part translated, then copied by `copy`; stops at the first failure.
#[inline]
fn read_by_page<I: Iommu + ?Sized>(
    iommu: &mut I,
    mem: &mut PhysMemory,
    rid: u32,
    iova: u64,
    buf: &mut [u8],
    copy: impl Fn(&mut PhysMemory, u64, &mut [u8]) -> Result<(), iommu_platform::MemError>,
) -> DmaOutcome {
    let mut done = 0;
    while done < buf.len() {
        let at = iova.wrapping_add(done as u64);
        let n = chunk(at, buf.len() - done);
        match iommu.translate(mem, rid, at, Access::Read) {
            Translation::Ok { phys } => {
                if copy(mem, phys, &mut buf[done..done + n]).is_err() {
                    return DmaOutcome::BadAddress { phys, done };
                }
            }
            Translation::Fault(info) => return DmaOutcome::Fault { iova: at, done, info },
        }
        done += n;
    }
    DmaOutcome::Done
}

/// Bytes from `at` to the end of its page, at most `left`.
#[inline]
fn chunk(at: u64, left: usize) -> usize {
    let to_page_end = 4096 - (at & 0xfff) as usize;
    to_page_end.min(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Maps IOVA page n to physical page n + 16, faults on IOVA page 3.
    struct Shift;

    impl Iommu for Shift {
        fn translate(&mut self, _: &mut PhysMemory, _: u32, iova: u64, _: Access) -> Translation {
            if iova >> 12 == 3 {
                return Translation::Fault(FaultInfo { code: 1, reason: "test", recorded: false });
            }
            Translation::Ok { phys: iova + 0x1_0000 }
        }
    }

    #[test]
    fn page_by_page_until_a_fault() {
        let mut mem = PhysMemory::contiguous(0..0x10_0000);
        let data = [7u8; 0x3000];
        let out = dma_write(&mut Shift, &mut mem, 0, 0x1800, &data);
        assert_eq!(
            out,
            DmaOutcome::Fault {
                iova: 0x3000,
                done: 0x1800,
                info: FaultInfo { code: 1, reason: "test", recorded: false }
            }
        );
        assert_eq!(mem.read_u64(0x1_1800).unwrap(), 0x0707_0707_0707_0707);
        assert_eq!(mem.read_u64(0x1_2ff8).unwrap(), 0x0707_0707_0707_0707);
        assert_eq!(mem.read_u64(0x1_3000).unwrap(), 0);
        let mut buf = [0u8; 16];
        assert!(dma_read(&mut Shift, &mut mem, 0, 0x1ff8, &mut buf).is_done());
        assert_eq!(buf, [7; 16]);
        let out = dma_write(&mut Shift, &mut mem, 0, 0xf_f000, &[1; 8]);
        assert_eq!(out, DmaOutcome::BadAddress { phys: 0x10_f000, done: 0 });
    }

    #[test]
    fn dma_read_matches_the_reference_path() {
        let mut mem = PhysMemory::new([0..0x8000, 0x1_0000..0x1_4800]);
        let fill: Vec<u8> = (0..0x4800u32).map(|i| (i * 7 + i / 4096) as u8).collect();
        mem.write(0x1_0000, &fill).unwrap();
        for iova in [0, 0x8, 0xff8, 0x1ffc, 0x2000, 0x2ffa, 0x3ff8, 0x4000, 0x47f8, 0x4ffc, 0x7ff8] {
            for len in [0, 1, 8, 16, 0x1000, 0x1800, 0x3000] {
                let (mut a, mut b) = (vec![0xeeu8; len], vec![0xeeu8; len]);
                let fast = dma_read(&mut Shift, &mut mem, 0, iova, &mut a);
                let reference = dma_read_reference(&mut Shift, &mut mem, 0, iova, &mut b);
                assert_eq!(fast, reference, "iova {iova:#x} len {len:#x}");
                assert_eq!(a, b, "iova {iova:#x} len {len:#x}");
            }
        }
    }
}
