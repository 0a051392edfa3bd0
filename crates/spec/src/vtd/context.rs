//! Context entries (spec 9.3 legacy, 9.4 scalable mode), indexed by devfn within a bus.

use bitfield_struct::bitfield;

/// Legacy context table: 256 × 128-bit entries indexed by devfn.
pub const CONTEXT_ENTRIES: usize = 256;
/// Bytes per legacy context entry.
pub const CONTEXT_ENTRY_SIZE: u64 = 16;
/// A scalable-mode context table holds 128 × 256-bit entries (half a bus).
pub const SM_CONTEXT_ENTRIES: usize = 128;
/// Bytes per scalable-mode context entry.
pub const SM_CONTEXT_ENTRY_SIZE: u64 = 32;

/// Translation type of a legacy context entry (9.3).
#[open_enum::open_enum]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TranslationType {
    /// Untranslated requests through the second-level tables; translated (ATS) requests blocked.
    MultiLevel = 0,
    /// As `MultiLevel`, and device-TLB (ATS) requests allowed.
    MultiLevelDevTlb = 1,
    /// Untranslated requests pass through to the same physical address.
    PassThrough = 2,
    /// Reserved: a context entry with it is invalid (fault reason 0x3).
    Reserved = 3,
}

crate::open_enum_bits!(TranslationType, u8, 2);

/// Legacy-mode context entry (9.3).
#[bitfield(u128)]
#[derive(PartialEq, Eq)]
pub struct ContextEntry {
    /// P (bit 0): the entry is present.
    pub present: bool,
    /// Fault processing disable.
    pub fpd: bool,
    /// TT (bits 3:2): translation type.
    #[bits(2)]
    pub tt: TranslationType,
    /// Bits 11:4, reserved.
    #[bits(8)]
    pub reserved_lo: u8,
    /// Second-level page-table pointer (ignored for pass-through).
    #[bits(52)]
    pub slptptr: u64,
    /// Address width: AGAW, levels = AW + 2.
    #[bits(3)]
    pub aw: u8,
    /// Available to software (ignored by hardware).
    #[bits(4)]
    pub avail: u8,
    /// Bit 71, reserved.
    #[bits(1)]
    pub reserved_7: u8,
    /// Domain identifier tagging this device's cached translations.
    pub did: u16,
    /// Bits 127:88, reserved.
    #[bits(40)]
    pub reserved_hi: u64,
}

impl ContextEntry {
    /// Physical address of the second-level table (SLPTPTR, bits 63:12).
    pub const fn page_table(self) -> u64 {
        self.slptptr() << 12
    }
    /// The entry with SLPTPTR set from `pa` (bits 11:0 dropped).
    pub const fn with_page_table(self, pa: u64) -> Self {
        self.with_slptptr(pa >> 12)
    }
    /// Reserved bits that must be zero (bits 11:4, 71, 127:88).
    pub const fn reserved_bits(self) -> u128 {
        self.into_bits() & (0xff0 | 1 << 71 | (u128::MAX << 88))
    }
}

/// Scalable-mode context entry (9.4), the low 128 bits; the upper 128 bits are reserved.
#[bitfield(u128)]
#[derive(PartialEq, Eq)]
pub struct ScalableContextEntry {
    /// P (bit 0): the entry is present.
    pub present: bool,
    /// FPD (bit 1): fault processing disable.
    pub fpd: bool,
    /// Device-TLB enable.
    pub dte: bool,
    /// PASID enable (requests with PASID allowed).
    pub paside: bool,
    /// Page request enable.
    pub pre: bool,
    /// Bits 8:5, reserved.
    #[bits(4)]
    pub reserved_lo: u8,
    /// PASID directory size: `2^(PDTS+7)` entries.
    #[bits(3)]
    pub pdts: u8,
    /// PASIDDIRPTR (bits 63:12): PASID directory pointer.
    #[bits(52)]
    pub pasiddirptr: u64,
    /// PASID used for requests without a PASID.
    #[bits(20)]
    pub rid_pasid: u32,
    /// RID_PRIV (bit 84): requests without PASID are supervisor requests.
    pub rid_priv: bool,
    /// Bits 127:85, reserved.
    #[bits(43)]
    pub reserved_hi: u64,
}

impl ScalableContextEntry {
    /// Physical address of the PASID directory (PASIDDIRPTR, bits 63:12).
    pub const fn pasid_dir(self) -> u64 {
        self.pasiddirptr() << 12
    }
    /// Number of PASID directory entries.
    pub const fn pasid_dir_entries(self) -> u32 {
        1 << (self.pdts() as u32 + 7)
    }
    /// Reserved bits that must be zero (bits 8:5 and 127:85 of the low half).
    pub const fn reserved_bits(self) -> u128 {
        self.into_bits() & (0x1e0 | u128::MAX << 85)
    }
    /// The DID bits (87:72) Linux's legacy-format copy reads even in scalable mode; they overlap RID_PASID.
    pub const fn legacy_did_bits(self) -> u16 {
        (self.into_bits() >> 72) as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_context_entry_layout() {
        let e = ContextEntry::new()
            .with_present(true)
            .with_tt(TranslationType::MultiLevel)
            .with_page_table(0xabcd_e000)
            .with_aw(2)
            .with_did(0x1234);
        assert_eq!(e.into_bits(), 0xabcd_e001 | 2u128 << 64 | 0x1234u128 << 72);
        let pt = ContextEntry::new().with_present(true).with_tt(TranslationType::PassThrough);
        assert_eq!(pt.into_bits(), 0b1001);
        assert_eq!(ContextEntry::from_bits(0b1111).tt(), TranslationType::Reserved);
        assert!(ContextEntry::from_bits(0b11).fpd());
        assert_eq!(ContextEntry::from_bits(0xfu128 << 67).avail(), 0xf);
        assert_eq!(ContextEntry::from_bits(0xfu128 << 67).reserved_bits(), 0);
    }

    #[test]
    fn legacy_context_reserved_bits_sweep() {
        let reserved: [core::ops::Range<u32>; 3] = [4..12, 71..72, 88..128];
        for bit in 0..128u32 {
            let e = ContextEntry::from_bits(1u128 << bit);
            let is_res = reserved.iter().any(|r| r.contains(&bit));
            assert_eq!(e.reserved_bits() != 0, is_res, "bit {bit}");
            assert_eq!(e.into_bits(), 1u128 << bit);
        }
    }

    #[test]
    fn scalable_context_entry_layout() {
        let e = ScalableContextEntry::new()
            .with_present(true)
            .with_dte(true)
            .with_paside(true)
            .with_pdts(2)
            .with_pasiddirptr(0x7_7000 >> 12)
            .with_rid_pasid(0);
        assert_eq!(e.into_bits(), 0x7_7000 | 2 << 9 | 0b1101);
        assert_eq!(e.pasid_dir(), 0x7_7000);
        assert_eq!(e.pasid_dir_entries(), 512);
        assert_eq!(ScalableContextEntry::new().with_rid_pasid(0xfffff).into_bits(), 0xfffffu128 << 64);
        for bit in 0..128u32 {
            let res = (5..9).contains(&bit) || bit >= 85;
            assert_eq!(ScalableContextEntry::from_bits(1u128 << bit).reserved_bits() != 0, res, "bit {bit}");
        }
    }
}
