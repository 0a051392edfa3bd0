//! Shared helpers for the device tests: a pass-through IOMMU, a recording IOMMU, and a VT-d domain that
//! maps IOVAs to physical pages (on top of the `common` VT-d rig).
#![allow(dead_code)]

use iommu_driver::PhysMem;
use iommu_emu::devices::DmaEvent;
use iommu_emu::{Access, DmaDevice, DmaOutcome, Iommu, PhysMemory, Translation};

use crate::common::{legacy_rig, Rig, RW};

/// RAM of the pass-through tests.
pub const RAM: u64 = 16 << 20;

/// No translation: the DMA address is the physical address (translation off).
#[derive(Default)]
pub struct Identity {
    /// Every request: (rid, iova, access).
    pub seen: Vec<(u32, u64, Access)>,
}

impl Iommu for Identity {
    fn translate(&mut self, _: &mut PhysMemory, rid: u32, iova: u64, access: Access) -> Translation {
        self.seen.push((rid, iova, access));
        Translation::Ok { phys: iova }
    }
}

pub fn ram() -> PhysMemory {
    PhysMemory::contiguous(0..RAM)
}

/// Tick `dev` at each of `ticks`.
pub fn run<D: DmaDevice + ?Sized>(
    dev: &mut D,
    ticks: std::ops::Range<u64>,
    iommu: &mut dyn Iommu,
    mem: &mut PhysMemory,
    log: &mut Vec<DmaEvent>,
) {
    for t in ticks {
        dev.tick(t, iommu, mem, log);
    }
}

pub fn whats(log: &[DmaEvent]) -> Vec<&'static str> {
    log.iter().map(|e| e.what).collect()
}

pub fn faulted(e: &DmaEvent) -> bool {
    matches!(e.outcome, DmaOutcome::Fault { .. })
}

pub fn read_vec(mem: &PhysMemory, pa: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    mem.read(pa, &mut v).unwrap();
    v
}

/// A legacy VT-d unit translating requester `sid` through a 4-level table: `map` adds 4 KiB pages.
pub struct Domain {
    pub rig: Rig,
    pub pt: u64,
}

impl Domain {
    pub fn new(sid: u16) -> Self {
        let (rig, _, pt) = legacy_rig(4, sid, 1);
        Domain { rig, pt }
    }

    /// Map `pages` pages from `iova` to `pa`, read/write.
    pub fn map(&mut self, iova: u64, pa: u64, pages: u64) {
        for i in 0..pages {
            self.rig.map(self.pt, 4, iova + i * 4096, pa + i * 4096, 1, RW);
        }
    }
}
