//! A DMA-capable device for the first simulator: a ring of buffers it writes (or reads) in turn, one
//! burst per tick, until a function-level reset stops it. Its only path to memory is the IOMMU.

use iommu_emu::{Access, Iommu, PhysMemory, Translation};

/// What a device is for, which decides whether the crash kernel needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Receives packets: writes its buffers.
    Nic,
    /// Stores the dump: the crash kernel needs it.
    Disk,
    /// A bulk copy engine left in pass-through by the primary kernel.
    Bulk,
}

/// One DMA device behind the IOMMU.
#[derive(Clone, Debug)]
pub struct Device {
    pub name: &'static str,
    pub sid: u16,
    pub role: Role,
    /// DMA addresses of its buffers, as its driver programmed them (IOVAs, or physical for pass-through).
    pub ring: Vec<u64>,
    next: usize,
    pub running: bool,
    /// Bytes moved per burst.
    pub burst: usize,
    pub access: Access,
}

/// The outcome of one burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Burst {
    Idle,
    Done { iova: u64, phys: u64 },
    Faulted { iova: u64 },
}

impl Device {
    pub fn new(name: &'static str, sid: u16, role: Role, access: Access) -> Self {
        Device { name, sid, role, ring: Vec::new(), next: 0, running: false, burst: 256, access }
    }

    /// Post a new set of buffers (the driver's ring setup) and start.
    pub fn start(&mut self, ring: Vec<u64>) {
        self.ring = ring;
        self.next = 0;
        self.running = !self.ring.is_empty();
    }

    /// Function-level reset: DMA stops and the ring is forgotten.
    pub fn reset(&mut self) {
        self.running = false;
        self.ring.clear();
        self.next = 0;
    }

    /// One burst into the next buffer, through `iommu`. The data written is a pattern of the device and
    /// the tick so a changed page can be traced to its writer.
    pub fn step(&mut self, iommu: &mut impl Iommu, mem: &mut PhysMemory, tick: u64) -> Burst {
        if !self.running || self.ring.is_empty() {
            return Burst::Idle;
        }
        let iova = self.ring[self.next] + (tick as usize * 64 % (4096 - self.burst)) as u64;
        self.next = (self.next + 1) % self.ring.len();
        match iommu.translate(mem, self.sid as u32, iova, self.access) {
            Translation::Ok { phys } => {
                if self.access == Access::Write {
                    let mut data = vec![0u8; self.burst];
                    for (i, b) in data.iter_mut().enumerate() {
                        *b = (self.sid as u64 ^ tick ^ i as u64) as u8 | 1;
                    }
                    // A write to a non-RAM address goes nowhere (master abort is not modelled).
                    let _ = iommu_driver::PhysMem::write(mem, phys, &data);
                } else {
                    let mut data = vec![0u8; self.burst];
                    let _ = iommu_driver::PhysMem::read(mem, phys, &mut data);
                }
                Burst::Done { iova, phys }
            }
            Translation::Fault(_) => Burst::Faulted { iova },
        }
    }
}
