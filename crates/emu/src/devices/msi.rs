//! A device's MSI capability (PCI Local Bus 3.0, 6.8.1): the message address and data its driver programmed,
//! sent as one DWORD write through the IOMMU's interrupt path whenever the device has news (an NVMe
//! completion, a received packet). FLR clears it, as it clears the enable bit.

use crate::dma::{Access, Iommu, Translation};
use crate::irq::Interrupt;
use crate::mem::PhysMemory;

/// The programmed message, when enabled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Msi {
    /// Message Address (and Upper Address): where the DWORD write goes, `0xFEEx_xxxx` on x86.
    pub addr: u64,
    /// Message Data: the DWORD written.
    pub data: u32,
}

/// One interrupt message a device sent, and what reached the CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqEvent {
    /// The virtual-clock tick it was sent at.
    pub time: u64,
    /// The requester ID the IOMMU saw.
    pub rid: u32,
    /// The message as programmed.
    pub msg: Msi,
    /// What the IOMMU made of it: delivered, blocked, or written somewhere.
    pub result: Interrupt,
}

/// Send `msg` from `rid` at `now`, recording what became of it.
pub(crate) fn send(now: u64, rid: u32, msg: Msi, iommu: &mut dyn Iommu, mem: &mut PhysMemory, out: &mut Vec<IrqEvent>) {
    // A unit without a remapping table translates the message like any write (SMMUv3: through the stream
    // table) and says where it lands; the caller knows where the interrupt controller's doorbell is. (What a
    // message that lands in RAM does to those four bytes is not modelled: it is counted, not written.)
    let result = match iommu.interrupt(mem, rid, msg.addr, msg.data) {
        Some(i) => i,
        None => match iommu.translate(mem, rid, msg.addr, Access::Write) {
            Translation::Ok { phys } => Interrupt::Written { phys },
            Translation::Fault(f) => Interrupt::Blocked(f),
        },
    };
    // Bounded: a device's owner drains these every tick; a run that does not keeps the newest.
    if out.len() >= MAX_PENDING {
        out.remove(0);
    }
    out.push(IrqEvent { time: now, rid, msg, result });
}

/// Interrupt events a device holds for its owner to drain.
const MAX_PENDING: usize = 1024;
