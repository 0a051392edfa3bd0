//! Interrupt remapping (spec chapter 5, 9.10, 9.11): the interrupt-remapping table entry (IRTE) in its remapped
//! and posted formats, and the MSI address and data a device writes to `0xFEEx_xxxx`.
//!
//! A device's MSI is a DWORD write to the interrupt address range. In remappable format (address bit 4 set,
//! spec 5.1.5.2) the address carries a 16-bit handle and the data an optional subhandle; together they index
//! the table IRTA points at. In compatibility format (bit 4 clear, 5.1.5.1) the address and data name the
//! vector and destination directly, and are blocked while remapping is on unless GSTS.CFIS is set. Names
//! follow the spec and Linux's `struct irte` (`include/linux/dmar.h`).

use bitfield_struct::bitfield;

/// Bytes per IRTE.
pub const IRTE_SIZE: u64 = 16;
/// The IRTA size field Linux programs and requires of a table it adopts (`INTR_REMAP_TABLE_REG_SIZE`):
/// `2^(0xF+1)` = 65536 entries, 1 MiB.
pub const LINUX_IRTA_S: u8 = 0xf;

/// IRTE delivery mode (DLM, bits 7:5), and an MSI data word's delivery mode (data bits 10:8, 5.1.5.1).
#[open_enum::open_enum]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum DeliveryMode {
    /// 000b: fixed, to every destination the address names.
    Fixed = 0,
    /// 001b: lowest priority among the destinations.
    LowestPriority = 1,
    /// 010b: SMI (vector ignored).
    Smi = 2,
    /// 100b: NMI (vector ignored).
    Nmi = 4,
    /// 101b: INIT (vector ignored).
    Init = 5,
    /// 111b: ExtINT; 3 and 6 are reserved.
    ExtInt = 7,
}

crate::open_enum_bits!(DeliveryMode, u8, 3);

/// Source validation type (SVT, bits 83:82): how the unit checks the requester against SID/SQ.
#[open_enum::open_enum]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SourceValidation {
    /// No check.
    None = 0,
    /// The requester ID must equal SID, ignoring the function bits SQ names.
    Sid = 1,
    /// The requester's bus must lie in SID's bus range: start bus in 15:8, end bus in 7:0.
    BusRange = 2,
    /// 11b is reserved.
    Reserved = 3,
}

crate::open_enum_bits!(SourceValidation, u8, 2);

/// An IRTE in remapped format (IM = 0, spec 9.10): the vector and destination the interrupt is delivered to.
#[bitfield(u128)]
#[derive(PartialEq, Eq)]
pub struct Irte {
    /// P: the entry is present.
    pub p: bool,
    /// FPD: fault processing disable (the interrupt is still blocked; no fault is recorded).
    pub fpd: bool,
    /// DM: destination mode, 0 physical, 1 logical.
    pub dm: bool,
    /// RH: redirection hint.
    pub rh: bool,
    /// TM: trigger mode, 0 edge, 1 level.
    pub tm: bool,
    /// DLM (bits 7:5): delivery mode.
    #[bits(3)]
    pub dlm: DeliveryMode,
    /// AVAIL: left to software.
    #[bits(4)]
    pub avail: u8,
    #[bits(3)]
    __: u8,
    /// IM: IRTE mode, 0 remapped, 1 posted ([`PostedIrte`]).
    pub im: bool,
    /// V: the vector.
    pub v: u8,
    #[bits(8)]
    __: u8,
    /// DST: destination ID. xAPIC mode (IRTA.EIME = 0): APIC ID in 15:8 of this field; x2APIC: all 32 bits.
    pub dst: u32,
    /// SID: the requester the entry is for (with SQ and SVT).
    pub sid: u16,
    /// SQ: source-ID qualifier, which low function bits of SID to ignore.
    #[bits(2)]
    pub sq: u8,
    /// SVT (bits 83:82): source validation type.
    #[bits(2)]
    pub svt: SourceValidation,
    #[bits(44)]
    __: u64,
}

/// An IRTE in posted format (IM = 1, spec 9.11): the interrupt is recorded in a posted-interrupt descriptor.
#[bitfield(u128)]
#[derive(PartialEq, Eq)]
pub struct PostedIrte {
    /// P (bit 0): the entry is present.
    pub p: bool,
    /// FPD (bit 1): fault processing disable.
    pub fpd: bool,
    #[bits(6)]
    __: u8,
    /// AVAIL (bits 11:8): left to software.
    #[bits(4)]
    pub avail: u8,
    #[bits(2)]
    __: u8,
    /// URG: urgent.
    pub urg: bool,
    /// IM: 1 in this format.
    pub im: bool,
    /// VV: the virtual vector posted.
    pub vv: u8,
    #[bits(14)]
    __: u16,
    /// PDA bits 31:6: the posted-interrupt descriptor's address, low part.
    #[bits(26)]
    pub pda_lo: u32,
    /// SID (bits 79:64): the requester the entry is for.
    pub sid: u16,
    /// SQ (bits 81:80): source-ID qualifier.
    #[bits(2)]
    pub sq: u8,
    /// SVT (bits 83:82): source validation type.
    #[bits(2)]
    pub svt: SourceValidation,
    #[bits(12)]
    __: u16,
    /// PDA bits 63:32.
    pub pda_hi: u32,
}

impl Irte {
    /// Reserved bits of a present remapped-format entry (14:12, 31:24, 127:84); the destination's reserved
    /// bits depend on IRTA.EIME ([`Irte::reserved_bits`]).
    pub const RESERVED: u128 = 0x7 << 12 | 0xff << 24 | !((1u128 << 84) - 1);
    /// In xAPIC mode only DST bits 15:8 hold the APIC ID; the others are reserved (spec 9.10).
    pub const XAPIC_DST_RESERVED: u32 = 0xffff_00ff;

    /// The reserved bits set, for the unit's interrupt mode (`eime`: IRTA.EIME, x2APIC destinations).
    pub const fn reserved_bits(self, eime: bool) -> u128 {
        let dst = if eime { 0 } else { (self.dst() & Self::XAPIC_DST_RESERVED) as u128 };
        (self.into_bits() & Self::RESERVED) | dst << 32
    }
    /// The APIC ID the interrupt goes to: DST as it is read in the unit's mode.
    pub const fn destination(self, eime: bool) -> u32 {
        if eime {
            self.dst()
        } else {
            (self.dst() >> 8) & 0xff
        }
    }
    /// DST for APIC ID `apic_id` in the unit's mode (Linux `IRTE_DEST`: `dest << 8` without x2APIC).
    pub const fn dst_for(apic_id: u32, eime: bool) -> u32 {
        if eime {
            apic_id
        } else {
            (apic_id & 0xff) << 8
        }
    }
    /// A present, fixed, physical-destination, edge entry verifying the full requester ID, as Linux's
    /// `prepare_irte` + `set_msi_sid` build one for a PCI device's MSI.
    pub const fn fixed(vector: u8, apic_id: u32, eime: bool, sid: u16) -> Self {
        Irte::new()
            .with_p(true)
            .with_dlm(DeliveryMode::Fixed)
            .with_v(vector)
            .with_dst(Irte::dst_for(apic_id, eime))
            .with_sid(sid)
            .with_svt(SourceValidation::Sid)
    }
    /// The entry from its two little-endian quadwords in memory.
    pub const fn from_qwords(q: [u64; 2]) -> Self {
        Irte::from_bits(q[0] as u128 | (q[1] as u128) << 64)
    }
    /// The two little-endian quadwords the entry occupies in memory (low first).
    pub const fn to_qwords(self) -> [u64; 2] {
        let v = self.into_bits();
        [v as u64, (v >> 64) as u64]
    }
    /// Whether a request from `rid` passes this entry's source validation (spec 9.10, SVT/SQ table).
    /// `None`: SVT is the reserved encoding, which the unit treats as a reserved field.
    pub const fn source_ok(self, rid: u16) -> Option<bool> {
        match self.svt() {
            SourceValidation::None => Some(true),
            SourceValidation::Sid => {
                // SQ 0: all 16 bits; 1: ignore function bit 2; 2: bits 2:1; 3: bits 2:0.
                let ignore: u16 = match self.sq() {
                    0 => 0,
                    1 => 0b100,
                    2 => 0b110,
                    _ => 0b111,
                };
                Some(rid & !ignore == self.sid() & !ignore)
            }
            SourceValidation::BusRange => {
                let bus = (rid >> 8) as u8;
                let (start, end) = ((self.sid() >> 8) as u8, self.sid() as u8);
                Some(bus >= start && bus <= end)
            }
            _ => None,
        }
    }
}

impl PostedIrte {
    /// The posted-interrupt descriptor's address (64-byte aligned).
    pub const fn pda(self) -> u64 {
        (self.pda_hi() as u64) << 32 | (self.pda_lo() as u64) << 6
    }
    /// The entry with the descriptor address `pa` (bits 63:6) split over PDA low and high.
    pub const fn with_pda(self, pa: u64) -> Self {
        self.with_pda_lo(((pa >> 6) & 0x3ff_ffff) as u32).with_pda_hi((pa >> 32) as u32)
    }
}

/// The interrupt address range: an MSI is a DWORD write whose address bits 31:20 are `0xFEE` (spec 5.1.5).
pub const MSI_ADDR_BASE: u64 = 0xfee0_0000;
/// The interrupt address range's mask.
pub const MSI_ADDR_MASK: u64 = 0xfff0_0000;

/// Whether a DMA write to `addr` is an interrupt request rather than a memory write.
pub const fn is_interrupt_address(addr: u64) -> bool {
    addr & !0xf_ffff == MSI_ADDR_BASE
}

/// An MSI address in remappable format (spec 5.1.5.2): bit 4 set, the handle split over 19:5 and 2.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct MsiAddrRemap {
    #[bits(2)]
    __: u8,
    /// Handle bit 15.
    pub handle_15: bool,
    /// SHV: the data's low 16 bits hold a subhandle added to the handle.
    pub shv: bool,
    /// Interrupt format: 1 = remappable.
    pub remappable: bool,
    /// Handle bits 14:0.
    #[bits(15)]
    pub handle_lo: u16,
    /// 0xFEE.
    #[bits(12)]
    pub fee: u16,
}

impl MsiAddrRemap {
    /// The 16-bit interrupt handle (bit 15 from address bit 2, bits 14:0 from 19:5).
    pub const fn handle(self) -> u16 {
        self.handle_lo() | (self.handle_15() as u16) << 15
    }
    /// The address Linux's `fill_msi_msg` writes for `handle`, with SHV set when the subhandle is used.
    pub const fn for_handle(handle: u16, shv: bool) -> Self {
        MsiAddrRemap::new()
            .with_fee(0xfee)
            .with_remappable(true)
            .with_shv(shv)
            .with_handle_lo(handle & 0x7fff)
            .with_handle_15(handle >> 15 != 0)
    }
    /// The interrupt index this request selects (spec 5.1.5.2: `handle + subhandle` when SHV, with the
    /// subhandle the data's low 16 bits). Wider than 16 bits: the sum can pass the largest table.
    pub const fn index(self, data: u32) -> u32 {
        if self.shv() {
            self.handle() as u32 + (data & 0xffff)
        } else {
            self.handle() as u32
        }
    }
}

/// An MSI address in compatibility format (spec 5.1.5.1; the x86 MSI address of the SDM, 11.11.1).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct MsiAddrCompat {
    #[bits(2)]
    __: u8,
    /// DM: 0 physical, 1 logical.
    pub dm: bool,
    /// RH: redirection hint.
    pub rh: bool,
    /// Interrupt format: 0 = compatibility.
    pub remappable: bool,
    #[bits(7)]
    __: u8,
    /// Destination APIC ID (8 bits: no CPU above 255 is reachable in this format).
    pub dest: u8,
    /// 0xFEE.
    #[bits(12)]
    pub fee: u16,
}

/// An MSI data word in compatibility format (SDM 11.11.2).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct MsiData {
    /// Vector (bits 7:0).
    pub vector: u8,
    /// Delivery mode (bits 10:8).
    #[bits(3)]
    pub dlm: DeliveryMode,
    #[bits(3)]
    __: u8,
    /// Level (assert) for level-triggered messages.
    pub level: bool,
    /// Trigger mode: 0 edge, 1 level.
    pub tm: bool,
    #[bits(16)]
    __: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remapped_irte_fields_at_spec_bits() {
        assert_eq!(Irte::new().with_p(true).into_bits(), 1);
        assert_eq!(Irte::new().with_fpd(true).into_bits(), 1 << 1);
        assert_eq!(Irte::new().with_dm(true).into_bits(), 1 << 2);
        assert_eq!(Irte::new().with_rh(true).into_bits(), 1 << 3);
        assert_eq!(Irte::new().with_tm(true).into_bits(), 1 << 4);
        assert_eq!(Irte::new().with_dlm(DeliveryMode::ExtInt).into_bits(), 7 << 5);
        assert_eq!(Irte::new().with_avail(0xf).into_bits(), 0xf << 8);
        assert_eq!(Irte::new().with_im(true).into_bits(), 1 << 15);
        assert_eq!(Irte::new().with_v(0xef).into_bits(), 0xef << 16);
        assert_eq!(Irte::new().with_dst(0xffff_ffff).into_bits(), 0xffff_ffff << 32);
        assert_eq!(Irte::new().with_sid(0xabcd).into_bits(), 0xabcd << 64);
        assert_eq!(Irte::new().with_sq(3).into_bits(), 3 << 80);
        assert_eq!(Irte::new().with_svt(SourceValidation::BusRange).into_bits(), 2 << 82);
    }

    #[test]
    fn posted_irte_fields_at_spec_bits() {
        assert_eq!(PostedIrte::new().with_urg(true).into_bits(), 1 << 14);
        assert_eq!(PostedIrte::new().with_im(true).into_bits(), 1 << 15);
        assert_eq!(PostedIrte::new().with_vv(0x41).into_bits(), 0x41 << 16);
        let p = PostedIrte::new().with_pda(0x1234_5678_9abc_de40);
        assert_eq!(p.into_bits(), (0x9abc_de40u128 >> 6) << 38 | 0x1234_5678u128 << 96);
        assert_eq!(p.pda(), 0x1234_5678_9abc_de40);
        assert_eq!(PostedIrte::new().with_svt(SourceValidation::Sid).into_bits(), 1 << 82);
        // The two formats share P, FPD, IM and the source fields.
        let both = 1u128 | 1 << 1 | 1 << 15 | 0x1234 << 64 | 1 << 80 | 1 << 82;
        let (r, q) = (Irte::from_bits(both), PostedIrte::from_bits(both));
        assert_eq!(
            (r.p(), r.fpd(), r.im(), r.sid(), r.sq(), r.svt()),
            (q.p(), q.fpd(), q.im(), q.sid(), q.sq(), q.svt())
        );
    }

    #[test]
    fn reserved_bits_follow_the_interrupt_mode() {
        let e = Irte::fixed(0x30, 3, false, 0x0010);
        assert_eq!(e.dst(), 3 << 8, "xAPIC: APIC ID in DST 15:8 (Linux IRTE_DEST)");
        assert_eq!((e.reserved_bits(false), e.destination(false)), (0, 3));
        let x2 = Irte::fixed(0x30, 0x1_0000, true, 0x0010);
        assert_eq!((x2.reserved_bits(true), x2.destination(true)), (0, 0x1_0000));
        assert_ne!(x2.reserved_bits(false), 0, "an x2APIC destination is reserved bits in xAPIC mode");
        for bit in [12u32, 13, 14, 24, 31, 84, 127] {
            assert_ne!(Irte::from_bits(1 << bit).reserved_bits(true), 0, "bit {bit}");
        }
    }

    #[test]
    fn source_validation_as_the_spec_table() {
        let e = Irte::new().with_sid(0x0108).with_svt(SourceValidation::Sid);
        assert_eq!(e.source_ok(0x0108), Some(true));
        assert_eq!(e.source_ok(0x0109), Some(false));
        assert_eq!(e.with_sq(3).source_ok(0x010f), Some(true), "SQ 3 ignores function bits 2:0");
        assert_eq!(e.with_sq(1).source_ok(0x010a), Some(false), "SQ 1 ignores only bit 2");
        let bus = Irte::new().with_sid(0x0204).with_svt(SourceValidation::BusRange);
        assert_eq!((bus.source_ok(0x0300), bus.source_ok(0x0500)), (Some(true), Some(false)));
        assert_eq!(Irte::new().source_ok(0xffff), Some(true));
        assert_eq!(Irte::new().with_svt(SourceValidation::Reserved).source_ok(0), None);
    }

    #[test]
    fn msi_addresses() {
        let a = MsiAddrRemap::for_handle(0x8005, true);
        assert_eq!(a.into_bits(), 0xfee0_0000 | 5 << 5 | 1 << 4 | 1 << 3 | 1 << 2);
        assert_eq!(a.handle(), 0x8005);
        assert_eq!(a.index(0x0003), 0x8008, "handle + subhandle");
        assert_eq!(a.with_shv(false).index(0x0003), 0x8005);
        assert_eq!(MsiAddrRemap::for_handle(0xffff, true).index(0xffff), 0x1_fffe, "no 16-bit wrap");
        let c = MsiAddrCompat::from_bits(0xfee0_3000 | 1 << 2);
        assert_eq!((c.dest(), c.dm(), c.remappable()), (3, true, false));
        let d = MsiData::new().with_vector(0x41).with_dlm(DeliveryMode::LowestPriority).with_tm(true);
        assert_eq!(d.into_bits(), 0x41 | 1 << 8 | 1 << 15);
        assert!(is_interrupt_address(0xfee0_1000) && is_interrupt_address(0xfeef_fffc));
        assert!(!is_interrupt_address(0xfed0_0000) && !is_interrupt_address(0x1_fee0_0000));
    }

    #[test]
    fn round_trips() {
        let mut x = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834u128;
        for _ in 0..64 {
            x = x.rotate_left(13) ^ x.wrapping_mul(0x2545_f491_4f6c_dd1d);
            assert_eq!(Irte::from_bits(x).into_bits(), x);
            assert_eq!(PostedIrte::from_bits(x).into_bits(), x);
            assert_eq!(Irte::from_qwords(Irte::from_bits(x).to_qwords()).into_bits(), x);
            let w = x as u32;
            assert_eq!(MsiAddrRemap::from_bits(w).into_bits(), w);
            assert_eq!(MsiAddrCompat::from_bits(w).into_bits(), w);
            assert_eq!(MsiData::from_bits(w).into_bits(), w);
        }
    }
}
