//! Interrupt remapping table entries (spec 2.2.5): the 32-bit format and the 128-bit format used when
//! Control.GAEn is set (guest virtual APIC, "GA"), in its remapped (non-guest) mode. Names follow Linux's
//! `union irte`, `union irte_ga_lo` and `union irte_ga_hi` (`amd_iommu_types.h`).
//!
//! The device table entry says where a device's table is (IV, IntTabLen, IntTableRootPtr, IntCtl: see
//! [`crate::amdvi::Dte`]); a fixed or arbitrated MSI's data bits 10:0 select the entry (2.2.5, QEMU
//! `AMDVI_IRTE_OFFSET`).

use bitfield_struct::bitfield;

/// MSI data bits that index the interrupt table (2.2.5: offset = data 10:0; at most 2048 entries).
pub const IRTE_INDEX_MASK: u32 = 0x7ff;
/// Entries in the table Linux gives each device (`MAX_IRQS_PER_TABLE` 512, `DTE_INTTABLEN` 9); with
/// `NumIntRemapMode` support it may use 2048 (`DTE_INTTABLEN_2K`).
pub const LINUX_INT_TAB_LEN: u8 = 9;

/// IntType (bits 4:2 in both formats): how the interrupt is delivered (Linux writes the APIC delivery mode:
/// 0 fixed, 1 lowest priority, which the spec calls arbitrated).
#[open_enum::open_enum]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum IntType {
    /// 000b: fixed delivery to the destination.
    Fixed = 0,
    /// 001b: arbitrated (x86 lowest priority).
    Arbitrated = 1,
}

crate::open_enum_bits!(IntType, u8, 3);

/// The 32-bit IRTE (2.2.5.1), Linux `union irte`.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Irte32 {
    /// RemapEn: the entry is valid; clear ⇒ the interrupt is target-aborted with an IO_PAGE_FAULT.
    pub remap_en: bool,
    /// SupIOPF: suppress the IO_PAGE_FAULT of a target-aborted interrupt.
    pub sup_iopf: bool,
    /// IntType (bits 4:2).
    #[bits(3)]
    pub int_type: IntType,
    /// RqEoi: request EOI.
    pub rq_eoi: bool,
    /// DM: destination mode, 0 physical, 1 logical.
    pub dm: bool,
    /// GuestMode: must be 0 in this format.
    pub guest_mode: bool,
    /// Destination APIC ID (8 bits: no x2APIC destination in this format).
    pub destination: u8,
    /// Vector (bits 23:16) delivered to the destination.
    pub vector: u8,
    #[bits(8)]
    __: u8,
}

impl Irte32 {
    /// Reserved bits (7 GuestMode, 31:24).
    pub const RESERVED: u32 = 1 << 7 | 0xff << 24;
    /// Set bits of the entry in [`Self::RESERVED`].
    pub const fn reserved_bits(self) -> u32 {
        self.into_bits() & Self::RESERVED
    }
    /// A valid fixed, physical-destination entry as Linux's `irte_prepare` writes it.
    pub const fn fixed(vector: u8, apic_id: u8) -> Self {
        Irte32::new().with_remap_en(true).with_int_type(IntType::Fixed).with_vector(vector).with_destination(apic_id)
    }
}

/// Low quadword of the 128-bit IRTE (2.2.5.2), remapped mode (GuestMode = 0), Linux `irte_ga_lo.fields_remap`.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct IrteGaLo {
    /// RemapEn (bit 0): the entry is valid.
    pub remap_en: bool,
    /// SupIOPF (bit 1): suppress the IO_PAGE_FAULT of a target-aborted interrupt.
    pub sup_iopf: bool,
    /// IntType (bits 4:2).
    #[bits(3)]
    pub int_type: IntType,
    /// RqEoi (bit 5): request EOI.
    pub rq_eoi: bool,
    /// DM (bit 6): destination mode, 0 physical, 1 logical.
    pub dm: bool,
    /// GuestMode: 1 = guest virtual APIC (posted to a vCPU), which this project does not model.
    pub guest_mode: bool,
    /// Destination bits 23:0.
    #[bits(24)]
    pub destination_lo: u32,
    /// GATag (guest mode only).
    pub ga_tag: u32,
}

/// High quadword of the 128-bit IRTE, Linux `irte_ga_hi.fields`.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct IrteGaHi {
    /// Vector (bits 71:64 of the entry).
    pub vector: u8,
    #[bits(4)]
    __: u8,
    /// GA root pointer (guest mode only), bits 51:12.
    #[bits(40)]
    pub ga_root_ptr: u64,
    #[bits(4)]
    __: u8,
    /// Destination bits 31:24 (x2APIC IDs above 2^24).
    pub destination_hi: u8,
}

/// The 128-bit IRTE as the two quadwords the hardware reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct IrteGa(pub [u64; 2]);

impl IrteGa {
    /// Reserved bits of the high quadword in remapped mode (11:8, 55:52).
    pub const HI_RESERVED: u64 = 0xf << 8 | 0xf << 52;
    /// Quadword 0 (bits 63:0).
    pub const fn lo(self) -> IrteGaLo {
        IrteGaLo::from_bits(self.0[0])
    }
    /// Quadword 1 (bits 127:64).
    pub const fn hi(self) -> IrteGaHi {
        IrteGaHi::from_bits(self.0[1])
    }
    /// The entry from its two quadwords.
    pub const fn from_parts(lo: IrteGaLo, hi: IrteGaHi) -> Self {
        IrteGa([lo.into_bits(), hi.into_bits()])
    }
    /// The 32-bit destination APIC ID assembled from its two pieces.
    pub const fn destination(self) -> u32 {
        self.lo().destination_lo() | (self.hi().destination_hi() as u32) << 24
    }
    /// Vector (bits 71:64).
    pub const fn vector(self) -> u8 {
        self.hi().vector()
    }
    /// RemapEn (bit 0): the entry is valid.
    pub const fn remap_en(self) -> bool {
        self.lo().remap_en()
    }
    /// A valid fixed, physical-destination entry in remapped mode (Linux `irte_ga_prepare`).
    pub const fn fixed(vector: u8, apic_id: u32) -> Self {
        let lo =
            IrteGaLo::new().with_remap_en(true).with_int_type(IntType::Fixed).with_destination_lo(apic_id & 0xff_ffff);
        let hi = IrteGaHi::new().with_vector(vector).with_destination_hi((apic_id >> 24) as u8);
        IrteGa::from_parts(lo, hi)
    }
    /// Reserved bits of a remapped-mode entry, per quadword.
    pub const fn reserved_bits(self) -> [u64; 2] {
        [0, self.0[1] & Self::HI_RESERVED]
    }
}

/// Bytes per entry of the 32-bit format.
pub const IRTE32_SIZE: u64 = 4;
/// Bytes per entry of the 128-bit (GA) format.
pub const IRTE_GA_SIZE: u64 = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn irte32_fields_at_spec_bits() {
        assert_eq!(Irte32::new().with_remap_en(true).into_bits(), 1);
        assert_eq!(Irte32::new().with_sup_iopf(true).into_bits(), 1 << 1);
        assert_eq!(Irte32::new().with_int_type(IntType::Arbitrated).into_bits(), 1 << 2);
        assert_eq!(Irte32::new().with_int_type(IntType(7)).into_bits(), 7 << 2);
        assert_eq!(Irte32::new().with_rq_eoi(true).into_bits(), 1 << 5);
        assert_eq!(Irte32::new().with_dm(true).into_bits(), 1 << 6);
        assert_eq!(Irte32::new().with_guest_mode(true).into_bits(), 1 << 7);
        assert_eq!(Irte32::new().with_destination(0xab).into_bits(), 0xab << 8);
        assert_eq!(Irte32::new().with_vector(0xcd).into_bits(), 0xcd << 16);
        assert_eq!(Irte32::fixed(0x41, 3).into_bits(), 1 | 3 << 8 | 0x41 << 16);
        assert_eq!(Irte32::from_bits(1 << 7 | 1 << 24).reserved_bits(), 1 << 7 | 1 << 24);
        assert_eq!(Irte32::fixed(0xff, 0xff).reserved_bits(), 0);
    }

    #[test]
    fn irte_ga_fields_at_spec_bits() {
        assert_eq!(IrteGaLo::new().with_guest_mode(true).into_bits(), 1 << 7);
        assert_eq!(IrteGaLo::new().with_destination_lo(0xff_ffff).into_bits(), 0xff_ffff << 8);
        assert_eq!(IrteGaLo::new().with_ga_tag(u32::MAX).into_bits(), 0xffff_ffff << 32);
        assert_eq!(IrteGaHi::new().with_vector(0xee).into_bits(), 0xee);
        assert_eq!(IrteGaHi::new().with_ga_root_ptr(1).into_bits(), 1 << 12);
        assert_eq!(IrteGaHi::new().with_destination_hi(0xff).into_bits(), 0xff << 56);
        let e = IrteGa::fixed(0x30, 0x1234_5678);
        assert_eq!(e.0, [1 | 0x34_5678 << 8, 0x30 | 0x12 << 56]);
        assert_eq!((e.destination(), e.vector(), e.remap_en()), (0x1234_5678, 0x30, true));
        assert_eq!(e.reserved_bits(), [0, 0]);
        assert_eq!(IrteGa([0, 1 << 8 | 1 << 52]).reserved_bits(), [0, 1 << 8 | 1 << 52]);
    }

    #[test]
    fn round_trips() {
        for raw in [0u64, u64::MAX, 0x5555_5555_5555_5555, 0xdead_beef_0bad_f00d] {
            assert_eq!(Irte32::from_bits(raw as u32).into_bits(), raw as u32);
            assert_eq!(IrteGaLo::from_bits(raw).into_bits(), raw);
            assert_eq!(IrteGaHi::from_bits(raw).into_bits(), raw);
            let e = IrteGa([raw, raw.rotate_left(7)]);
            assert_eq!(IrteGa::from_parts(e.lo(), e.hi()), e);
        }
    }
}
