//! A device's MSI capability (PCI Local Bus 3.0, 6.8.1): the message address and data its driver programmed,
//! sent as one DWORD write through the IOMMU's interrupt path whenever the device has news (an NVMe
//! completion, a received packet). FLR clears it, as it clears the enable bit.

use crate::dma::Iommu;
use crate::irq::{compat_delivery, Interrupt};
use crate::mem::PhysMemory;

/// The programmed message, when enabled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Msi {
    pub addr: u64,
    pub data: u32,
}

/// One interrupt message a device sent, and what reached the CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqEvent {
    pub time: u64,
    pub rid: u32,
    pub msg: Msi,
    pub result: Interrupt,
    /// The unit remapped (or blocked) it; false when the unit has no interrupt path (SMMUv3 in this model)
    /// and the message was delivered as its own address and data say.
    pub through_unit: bool,
}

/// Send `msg` from `rid` at `now`, recording what became of it.
pub(crate) fn send(now: u64, rid: u32, msg: Msi, iommu: &mut dyn Iommu, mem: &mut PhysMemory, out: &mut Vec<IrqEvent>) {
    let (result, through_unit) = match iommu.interrupt(mem, rid, msg.addr, msg.data) {
        Some(i) => (i, true),
        None => (compat_delivery(msg.addr, msg.data), false),
    };
    // Bounded: a device's owner drains these every tick; a run that does not keeps the newest.
    if out.len() >= MAX_PENDING {
        out.remove(0);
    }
    out.push(IrqEvent { time: now, rid, msg, result, through_unit });
}

/// Interrupt events a device holds for its owner to drain.
const MAX_PENDING: usize = 1024;
