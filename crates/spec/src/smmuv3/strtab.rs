//! Stream table (spec 5.1): StreamID indexing of linear and 2-level tables, and the level-1 descriptor of a
//! 2-level table. The STE itself is in [`super::ste`].

use super::ste::STE_SIZE;
use bitfield_struct::bitfield;

/// Bytes of one level-1 descriptor.
pub const L1_DESC_SIZE: u64 = 8;
/// Linux's SPLIT (`STRTAB_SPLIT`): 256 STEs, 16 KiB, per level-2 table.
pub const LINUX_SPLIT: u32 = 8;
/// Linux's cap on level-1 descriptors (`STRTAB_MAX_L1_ENTRIES`).
pub const LINUX_MAX_L1_ENTRIES: u64 = 1 << 17;

/// Byte offset of `sid`'s STE in a linear table.
pub const fn linear_ste_offset(sid: u32) -> u64 {
    sid as u64 * STE_SIZE
}

/// Level-1 index of `sid` in a 2-level table: `sid >> SPLIT`.
pub const fn l1_index(sid: u32, split: u32) -> u32 {
    if split >= 32 {
        0
    } else {
        sid >> split
    }
}

/// Level-2 index of `sid` in a 2-level table: `sid & (2^SPLIT - 1)`.
pub const fn l2_index(sid: u32, split: u32) -> u32 {
    if split >= 32 {
        sid
    } else {
        sid & ((1 << split) - 1)
    }
}

/// Level-1 descriptor of a 2-level stream table (5.1.2; `STRTAB_L1_DESC_*`).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct L1Desc {
    /// Level-2 table span: `2^(SPAN-1)` STEs; 0 = invalid (C_BAD_STREAMID).
    #[bits(5)]
    pub span: u8,
    #[bits(1)]
    __: u8,
    /// Level-2 table address bits 51:6.
    #[bits(46)]
    pub l2ptr: u64,
    #[bits(12)]
    __: u16,
}

impl L1Desc {
    /// A descriptor for a level-2 table at `pa` holding `2^(span-1)` STEs.
    pub const fn new_table(pa: u64, span: u8) -> Self {
        L1Desc::new().with_l2ptr((pa >> 6) & crate::mask64(45, 0)).with_span(span & 0x1f)
    }
    /// Physical address of the level-2 STE array, 64-byte aligned.
    pub const fn l2_table(self) -> u64 {
        self.l2ptr() << 6
    }
    /// SPAN ≠ 0: the descriptor points at a level-2 table.
    pub const fn valid(self) -> bool {
        self.span() != 0
    }
    /// STEs in the level-2 table: `2^(SPAN-1)`, 0 for SPAN = 0. (QEMU bounds the index by `2^SPAN - 1` instead;
    /// the two agree for every SPAN ≤ SPLIT + 1 Linux writes.)
    pub const fn l2_entries(self) -> u64 {
        match self.span() {
            0 => 0,
            s => 1 << (s - 1),
        }
    }
    /// Bytes of the level-2 table.
    pub const fn l2_bytes(self) -> u64 {
        self.l2_entries() * STE_SIZE
    }
    /// Bits 5 and 63:52, which must be zero.
    pub const fn reserved_bits(self) -> u64 {
        self.into_bits() & (1 << 5 | crate::mask64(63, 52))
    }
}

/// The SPAN that covers a level-2 table of `2^split` STEs (Linux: `STRTAB_SPLIT + 1`).
pub const fn span_for_split(split: u32) -> u8 {
    (split + 1) as u8 & 0x1f
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sid_indexing() {
        assert_eq!(linear_ste_offset(3), 192);
        assert_eq!(l1_index(0x1234, 8), 0x12);
        assert_eq!(l2_index(0x1234, 8), 0x34);
        assert_eq!(l1_index(0xffff_ffff, 8), 0x00ff_ffff);
        assert_eq!(l2_index(0xffff_ffff, 10), 0x3ff);
        assert_eq!(l1_index(0x1234, 0), 0x1234);
        assert_eq!(l2_index(0x1234, 0), 0);
        assert_eq!((l1_index(7, 31), l2_index(7, 31)), (0, 7));
        assert_eq!((l1_index(7, 40), l2_index(7, 40)), (0, 7), "a hostile SPLIT never overflows a shift");
        for sid in [0u32, 1, 255, 256, 0x1_0000, 0xfff_ffff] {
            assert_eq!(l1_index(sid, 8) << 8 | l2_index(sid, 8), sid);
        }
    }

    #[test]
    fn l1_descriptor_layout() {
        let d = L1Desc::new_table(0x8_0000_4000, span_for_split(LINUX_SPLIT));
        assert_eq!(d.into_bits(), 0x8_0000_4000 | 9);
        assert_eq!(d.span(), 9);
        assert_eq!(d.l2_table(), 0x8_0000_4000);
        assert_eq!(d.l2_entries(), 256);
        assert_eq!(d.l2_bytes(), 16 * 1024);
        assert!(!L1Desc::from_bits(0x8_0000_4000).valid());
        assert_eq!(L1Desc::from_bits(0x8_0000_4000).l2_entries(), 0);
        assert_eq!(L1Desc::from_bits(1).l2_entries(), 1);
        assert_eq!(L1Desc::from_bits(0x1f).l2_entries(), 1 << 30);
        assert_eq!(L1Desc::from_bits(0x000f_ffff_ffff_ffc0).l2_table(), 0x000f_ffff_ffff_ffc0);
        for raw in [0u64, u64::MAX, 0x5555_5555_5555_5555, 0xdead_beef_0bad_f00d] {
            assert_eq!(L1Desc::from_bits(raw).into_bits(), raw);
        }
        for bit in 0..64u32 {
            let res = bit == 5 || bit >= 52;
            assert_eq!(L1Desc::from_bits(1 << bit).reserved_bits() != 0, res, "bit {bit}");
        }
    }
}
