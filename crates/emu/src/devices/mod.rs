//! DMA-capable devices: the traffic that is still in flight when a host crashes (docs/handover.md#the-problem).
//!
//! Three models, each a small state machine advanced on the simulator's virtual clock:
//!
//! - [`Nic`]: the receive path of an e1000-class NIC, writing packets into buffers posted on a ring of
//!   legacy RX descriptors and writing each descriptor back with DD|EOP;
//! - [`Blk`]: an NVMe-like controller with one submission/completion queue pair, a phase-tagged
//!   completion queue and a sparse backing store (where the crash kernel writes the dump);
//! - [`Bulk`]: a copy engine (GPU-like) that loops over a list of (src, dst, len) descriptors forever.
//!
//! Every memory access of a device is a DMA through an [`Iommu`] with the device's requester ID (the
//! `dma_read`/`dma_write` path, docs/handover.md#dma-entry-point): there is no back door, so what a device can reach
//! is exactly what the IOMMU lets through. Each access is logged as a [`DmaEvent`] naming its purpose,
//! so the simulator can classify (translated, faulted, redirected, untranslated) and attribute it.
//!
//! A device's registers are its methods (MMIO, not memory). Nothing stops a device when the host
//! crashes: it keeps running on the old kernel's rings until a function-level reset ([`DmaDevice::flr`]).
//! Everything a device reads from memory (descriptors, commands) may be garbage: fields are clamped,
//! addresses are just addresses, and work per tick is bounded (docs/handover.md#hostile-input).

use std::fmt::Debug;

use crate::dma::{Access, DmaOutcome, Iommu};
use crate::mem::PhysMemory;

pub mod blk;
pub mod bulk;
pub mod msi;
pub mod nic;
pub mod nvme;
mod port;

pub use blk::{Blk, BlkConfig, BlkStats};
pub use bulk::{Bulk, BulkConfig, BulkDesc, BulkStats};
pub use msi::{IrqEvent, Msi};
pub use nic::{Nic, NicConfig, NicStats, RxDesc};
pub use nvme::{CqEntry, SqEntry};
pub use port::Rate;

/// One DMA a device issued: what it asked for, what the IOMMU and memory made of it, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaEvent {
    /// The virtual-clock tick it happened at.
    pub time: u64,
    /// Requester (PCI: bus/device/function) or stream ID the IOMMU saw.
    pub rid: u32,
    /// The DMA address the device used (an IOVA, or a physical address when nothing translates).
    pub iova: u64,
    /// Bytes requested.
    pub len: usize,
    /// Read from or write to memory.
    pub access: Access,
    /// What the IOMMU and memory made of it: done, faulted, or an address that is not memory.
    pub outcome: DmaOutcome,
    /// The physical address of the first page's access, when the IOMMU translated it (even if memory
    /// then refused it: see [`DmaOutcome::BadAddress`]). `None` when the first page faulted.
    pub phys: Option<u64>,
    /// The purpose, per device: `rx-desc`, `rx-data`, `rx-wb` (NIC); `sq-fetch`, `data-out`, `data-in`,
    /// `cq-post` (Blk); `bulk-desc`, `bulk-src`, `bulk-dst` (Bulk).
    pub what: &'static str,
}

impl DmaEvent {
    /// Bytes that actually moved (all of them unless a page faulted or missed memory).
    pub fn moved(&self) -> usize {
        match self.outcome {
            DmaOutcome::Done => self.len,
            DmaOutcome::Fault { done, .. } | DmaOutcome::BadAddress { done, .. } => done,
        }
    }
}

/// A bus-mastering device on the simulator's clock. Object-safe: a machine holds its devices as
/// `Vec<Box<dyn DmaDevice>>` or as [`AnyDevice`]s.
pub trait DmaDevice: Debug + Send {
    /// The requester ID its DMA carries.
    fn rid(&self) -> u32;
    /// A name for reports (also stamped into the data the device writes, where it writes data).
    fn name(&self) -> &str;
    /// Advance to tick `now`, doing the work due since the previous call (a repeated or earlier `now`
    /// does nothing). All memory access goes through `iommu` into `mem`; every DMA is appended to `log`.
    /// Work per call is bounded whatever the gap since the last call or the contents of memory.
    fn tick(&mut self, now: u64, iommu: &mut dyn Iommu, mem: &mut PhysMemory, log: &mut Vec<DmaEvent>);
    /// Function-level reset (PCIe FLR): DMA stops and every register and queue pointer is forgotten, as
    /// the crash kernel's driver does before it reuses a device. The model's own statistics (and a disk's
    /// media) survive.
    fn flr(&mut self);
    /// True when the device will issue no DMA until the driver writes one of its registers: not enabled,
    /// or enabled with nothing to do (an empty RX ring, no new submission, an empty copy list).
    fn is_quiescent(&self) -> bool;
    /// Program (or, with `None`, disable) the MSI capability. Devices without interrupts ignore it.
    fn set_msi(&mut self, msg: Option<Msi>) {
        let _ = msg;
    }
    /// Move the interrupt messages sent since the last call, oldest first, to the end of `out` (the device keeps
    /// its buffer: no allocation per tick that sends one).
    fn drain_irqs(&mut self, out: &mut Vec<IrqEvent>) {
        let _ = out;
    }
}

/// The three device models as one type, for a machine that wants to reach a device's own registers
/// (`set_rx_tail`, `ring_sq_tail`, ...) without downcasting.
#[derive(Clone, Debug)]
pub enum AnyDevice {
    /// An e1000-class NIC's receive path.
    Nic(Nic),
    /// An NVMe-like block controller.
    Blk(Blk),
    /// A looping copy engine.
    Bulk(Bulk),
}

impl AnyDevice {
    fn dev(&self) -> &dyn DmaDevice {
        match self {
            AnyDevice::Nic(d) => d,
            AnyDevice::Blk(d) => d,
            AnyDevice::Bulk(d) => d,
        }
    }

    fn dev_mut(&mut self) -> &mut dyn DmaDevice {
        match self {
            AnyDevice::Nic(d) => d,
            AnyDevice::Blk(d) => d,
            AnyDevice::Bulk(d) => d,
        }
    }

    /// The NIC, if this is one.
    pub fn as_nic_mut(&mut self) -> Option<&mut Nic> {
        match self {
            AnyDevice::Nic(d) => Some(d),
            _ => None,
        }
    }

    /// The block controller, if this is one.
    pub fn as_blk_mut(&mut self) -> Option<&mut Blk> {
        match self {
            AnyDevice::Blk(d) => Some(d),
            _ => None,
        }
    }

    /// The copy engine, if this is one.
    pub fn as_bulk_mut(&mut self) -> Option<&mut Bulk> {
        match self {
            AnyDevice::Bulk(d) => Some(d),
            _ => None,
        }
    }
}

impl DmaDevice for AnyDevice {
    fn rid(&self) -> u32 {
        self.dev().rid()
    }
    fn name(&self) -> &str {
        self.dev().name()
    }
    fn tick(&mut self, now: u64, iommu: &mut dyn Iommu, mem: &mut PhysMemory, log: &mut Vec<DmaEvent>) {
        self.dev_mut().tick(now, iommu, mem, log)
    }
    fn flr(&mut self) {
        self.dev_mut().flr()
    }
    fn is_quiescent(&self) -> bool {
        self.dev().is_quiescent()
    }
    fn set_msi(&mut self, msg: Option<Msi>) {
        self.dev_mut().set_msi(msg)
    }
    fn drain_irqs(&mut self, out: &mut Vec<IrqEvent>) {
        self.dev_mut().drain_irqs(out)
    }
}

impl From<Nic> for AnyDevice {
    fn from(d: Nic) -> Self {
        AnyDevice::Nic(d)
    }
}

impl From<Blk> for AnyDevice {
    fn from(d: Blk) -> Self {
        AnyDevice::Blk(d)
    }
}

impl From<Bulk> for AnyDevice {
    fn from(d: Bulk) -> Self {
        AnyDevice::Bulk(d)
    }
}
