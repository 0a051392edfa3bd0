//! The interrupt entry point of every IOMMU model: a device's MSI is a DWORD write to `0xFEEx_xxxx`
//! ([`iommu_spec::vtd::is_interrupt_address`]), which the unit remaps, passes or blocks before it reaches a
//! local APIC. What reaches a CPU is an [`Interrupt::Delivered`]: which APIC ID and which vector; whether that
//! is the interrupt the kernel waits for (or a misrouted one) is the receiver's to judge.

use iommu_spec::vtd::{MsiAddrCompat, MsiData};

use crate::dma::FaultInfo;
use crate::mem::PhysMemory;

/// What one MSI became.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupt {
    /// The message reached the local APIC `dest` (physical destination) with `vector`. `remapped`: a table
    /// entry decided it; otherwise the message's own address and data did (compatibility format or
    /// remapping off).
    Delivered {
        /// The destination local APIC ID.
        dest: u32,
        /// The interrupt vector.
        vector: u8,
        /// Whether an interrupt-remapping table entry (IRTE) decided the destination and vector.
        remapped: bool,
    },
    /// The unit blocked the message.
    Blocked(FaultInfo),
    /// A unit without interrupt remapping (SMMUv3) translated the message as the DWORD write it is, to `phys`:
    /// the interrupt controller's doorbell (a GIC ITS's `GITS_TRANSLATER`) if the mapping is right, else
    /// wherever the tables send it (memory, the scratch page).
    Written {
        /// The physical address the DWORD write landed at.
        phys: u64,
    },
}

/// An IOMMU's handling of interrupt messages (units with a remapping table: VT-d, AMD-Vi).
pub trait InterruptRemap {
    /// One MSI write by requester `rid` of `data` to `addr` (an interrupt address). `mem` holds the tables;
    /// mutable because faults and events land in memory and registers.
    fn interrupt(&mut self, mem: &mut PhysMemory, rid: u32, addr: u64, data: u32) -> Interrupt;
}

/// A message as the APIC bus takes it untouched (compatibility format, SDM 11.11): the 8-bit destination of
/// the address and the vector of the data (the delivery and destination modes are not modelled: every
/// message is taken as fixed and physical). Used by units that pass an interrupt through unmapped.
pub fn compat_delivery(addr: u64, data: u32) -> Interrupt {
    let a = MsiAddrCompat::from_bits(addr as u32);
    let d = MsiData::from_bits(data);
    Interrupt::Delivered { dest: a.dest() as u32, vector: d.vector(), remapped: false }
}

/// The MSI address and data a kernel without interrupt remapping programs for APIC ID `apic_id` and `vector`
/// (Linux `__irq_msi_compose_msg`): the ID is cut to the format's 8 bits, so a CPU above 255 is not reachable.
pub fn compat_message(apic_id: u32, vector: u8) -> (u64, u32) {
    let a = MsiAddrCompat::new().with_fee(0xfee).with_dest(apic_id as u8);
    (a.into_bits() as u64, MsiData::new().with_vector(vector).into_bits())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compat_messages_cannot_name_cpus_above_255() {
        let (a, d) = compat_message(3, 0x41);
        assert_eq!(compat_delivery(a, d), Interrupt::Delivered { dest: 3, vector: 0x41, remapped: false });
        let (a, d) = compat_message(0x103, 0x41);
        assert_eq!(compat_delivery(a, d), Interrupt::Delivered { dest: 3, vector: 0x41, remapped: false });
    }
}
