//! The stale-fetch walker: a unit that may fetch a configuration entry (VT-d context and PASID entries, an
//! AMD-Vi DTE, an SMMUv3 STE and its CD) at any moment, not only after software invalidated it.
//!
//! Real hardware is allowed to: the SMMUv3 spec (3.21.3, "Configuration structure update procedure") lets the
//! SMMU fetch and cache an STE whenever it likes, which is why Linux's `arm_smmu_write_entry` orders its
//! writes so every intermediate entry is one the hardware may legally act on; the AMD-Vi spec (2.2.2) and
//! VT-d spec (6.5.3.3, "Guidance to Software for Invalidations") say the same of DTEs and context/PASID
//! entries, and Linux writes the DTE's first 128 bits with one `cmpxchg128` (`write_dte_lower128`) for it.
//!
//! [`StaleFetchPlatform`] wraps a model's platform: after every memory write the driver makes it evicts the
//! entries of each watched requester from the unit's caches (a unit may drop any cached entry at any time)
//! and runs one DMA through the live unit, so that fetch reads the half-written entry and whatever it
//! caches (an IOTLB entry under a domain tag the entry names mid-update) stays cached. Every moment is
//! fetched, which covers every seed of a random "fetch now?" choice. One write of the platform is one
//! single-copy-atomic store (64 bits, or 128 for `write_u128`); a fetch reads the whole entry at one moment
//! between stores. (SMMUv3 3.21.3 also lets one fetch read an entry's double-words at different moments,
//! in address order; that mixing across stores is not modelled.) Each fetch must translate to one of
//! the targets the test allows, or be refused by an entry the hardware calls legal (not present, abort,
//! V = 0 on SMMUv3); anything else is recorded in [`StaleFetchPlatform::violations`].

use iommu_platform::{FrameAlloc, MemError, Mmio, PhysMem};

use crate::dma::{Access, FaultInfo, Iommu, Translation};
use crate::mem::PhysMemory;
use crate::platform::{EmuPlatform, MmioDevice};

/// A unit whose configuration fetches can be forced at any moment.
pub trait FetchAnyTime: Iommu + MmioDevice {
    /// Drop what the unit caches of `rid`'s configuration entry (DTE; STE and CDs; context and PASID
    /// entries). Translations stay cached, tagged as they were.
    fn evict_config(&mut self, rid: u32);
    /// Whether the refusal `f` just returned for `rid` comes from an entry the spec calls illegal (reserved
    /// bits, an inconsistent configuration) rather than from a legal blocking entry.
    fn illegal(&self, mem: &PhysMemory, rid: u32, f: &FaultInfo) -> bool;
}

/// One requester watched through an update.
#[derive(Clone, Debug)]
pub struct Probe {
    /// The requester ID (PCI bus/device/function or SMMU StreamID) that issues the request.
    pub rid: u32,
    /// The address it requests.
    pub iova: u64,
    /// Read or write.
    pub access: Access,
    /// Physical addresses the request may reach at any moment (old and new target).
    pub targets: Vec<u64>,
    /// Ranges it may also reach: the crash kernel's own pages where the new target is allocated during the
    /// update (a scratch region).
    pub within: Vec<std::ops::Range<u64>>,
}

impl Probe {
    /// A write by `rid` to `iova`, which may reach only `targets` (or be refused legally).
    pub fn write(rid: u32, iova: u64, targets: Vec<u64>) -> Self {
        Probe { rid, iova, access: Access::Write, targets, within: Vec::new() }
    }
    /// Also accept anything in `r`.
    pub fn or_within(mut self, r: std::ops::Range<u64>) -> Self {
        self.within.push(r);
        self
    }
}

/// A fetch that saw an entry it must not have seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Index of the memory write after which the fetch ran (0 = the first write).
    pub after_write: u64,
    /// Address of that write.
    pub addr: u64,
    /// The probe's requester ID.
    pub rid: u32,
    /// The probe's address.
    pub iova: u64,
    /// What the fetch translated it to: a target not allowed, or an illegal-entry fault.
    pub got: Translation,
}

/// A model's platform whose unit fetches the watched requesters' entries after every memory write.
pub struct StaleFetchPlatform<'a, D: FetchAnyTime> {
    /// The platform the driver writes through.
    pub hw: EmuPlatform<'a, D>,
    /// The requesters fetched after every write.
    pub probes: Vec<Probe>,
    /// Memory writes seen, each followed by one fetch per probe.
    pub writes: u64,
    /// Every fetch that saw a forbidden translation or an illegal entry, in order.
    pub violations: Vec<Violation>,
}

impl<'a, D: FetchAnyTime> StaleFetchPlatform<'a, D> {
    /// Watch `probes` through `hw`, with nothing seen yet.
    pub fn new(hw: EmuPlatform<'a, D>, probes: Vec<Probe>) -> Self {
        StaleFetchPlatform { hw, probes, writes: 0, violations: Vec::new() }
    }

    fn fetch_all(&mut self, addr: u64) {
        for p in &self.probes {
            self.hw.dev.evict_config(p.rid);
            let got = self.hw.dev.translate(self.hw.mem, p.rid, p.iova, p.access);
            let ok = match got {
                Translation::Ok { phys } => p.targets.contains(&phys) || p.within.iter().any(|r| r.contains(&phys)),
                Translation::Fault(f) => !self.hw.dev.illegal(self.hw.mem, p.rid, &f),
            };
            if !ok {
                self.violations.push(Violation { after_write: self.writes, addr, rid: p.rid, iova: p.iova, got });
            }
        }
        self.writes += 1;
    }
}

impl<D: FetchAnyTime> Mmio for StaleFetchPlatform<'_, D> {
    fn read32(&mut self, off: usize) -> u32 {
        self.hw.read32(off)
    }
    fn read64(&mut self, off: usize) -> u64 {
        self.hw.read64(off)
    }
    fn write32(&mut self, off: usize, val: u32) {
        self.hw.write32(off, val)
    }
    fn write64(&mut self, off: usize, val: u64) {
        self.hw.write64(off, val)
    }
    fn settled(&self) -> bool {
        self.hw.settled()
    }
}

impl<D: FetchAnyTime> PhysMem for StaleFetchPlatform<'_, D> {
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.hw.read(pa, buf)
    }
    /// One write is one bus transaction: the unit sees all of it or none of it.
    fn write(&mut self, pa: u64, data: &[u8]) -> Result<(), MemError> {
        let r = self.hw.write(pa, data);
        self.fetch_all(pa);
        r
    }
}

impl<D: FetchAnyTime> FrameAlloc for StaleFetchPlatform<'_, D> {
    fn alloc_frame(&mut self) -> Option<u64> {
        self.hw.alloc_frame()
    }
    fn free_frame(&mut self, pa: u64) {
        self.hw.free_frame(pa)
    }
}
