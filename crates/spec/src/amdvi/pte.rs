//! v1 host I/O page tables (spec 2.2.3, Linux `io_pgtable.c`): 512 × 64-bit entries per 4 KiB table, 1 to 6
//! levels; the DTE Mode is the level of the root table.
//!
//! Levels here are 1-based like the DTE Mode and NextLevel (level 1 maps 4 KiB pages). Linux's `PM_LEVEL_*`
//! macros count from 0.

use bitfield_struct::bitfield;

use crate::mask64;

/// Entries per page-table page.
pub const PTES_PER_TABLE: usize = 512;

/// NextLevel of a leaf that maps its level's natural page size.
pub const NEXT_LEVEL_LEAF: u8 = 0;
/// NextLevel of a leaf whose page size is encoded in its address bits (Linux `PAGE_MODE_7_LEVEL`).
pub const NEXT_LEVEL_SIZED: u8 = 7;

/// Page sizes Linux advertises for v1 tables (`AMD_IOMMU_PGSIZES`): every power of two from 4 KiB to 2^51,
/// except 512 GiB (hardware erratum).
pub const PAGE_SIZES_V1: u64 = mask64(51, 12) ^ (1 << 39);

/// A v1 I/O page-table entry, PTE or PDE (2.2.3).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct IoPte {
    /// PR: present (Linux `IOMMU_PTE_PR`).
    pub pr: bool,
    /// Ignored by hardware (4:1).
    #[bits(4)]
    pub ignored_lo: u8,
    /// A: accessed, set by hardware when host access updates are on (HASup).
    pub a: bool,
    /// D: dirty, leaves only (Linux `IOMMU_PTE_HD`, bit 6).
    pub d: bool,
    /// Ignored by hardware (8:7).
    #[bits(2)]
    pub ignored_mid: u8,
    /// Next Level (11:9): 0 = leaf of this level's size; 1–6 = level of the table pointed to; 7 = sized leaf.
    #[bits(3)]
    pub next_level: u8,
    /// Next table or page frame, bits 51:12.
    #[bits(40)]
    pub addr: u64,
    #[bits(7)]
    __: u8,
    /// U: untranslated access only (leaves; Linux `IOMMU_PTE_U`, 59).
    pub u: bool,
    /// FC: force coherent (leaves; Linux sets it, `IOMMU_PTE_FC`, 60).
    pub fc: bool,
    /// IR: read permission (61); ANDed with the DTE's and every level's.
    pub ir: bool,
    /// IW: write permission (62).
    pub iw: bool,
    /// Ignored by hardware (63).
    pub ignored_63: bool,
}

impl IoPte {
    /// PR (bit 0): the entry is present.
    pub const fn present(self) -> bool {
        self.pr()
    }
    /// The address bits, 51:12 (Linux `IOMMU_PAGE_MASK`).
    pub const fn phys(self) -> u64 {
        self.addr() << 12
    }
    /// Whether the entry maps a page (NextLevel 0 or 7) rather than pointing at a table.
    pub const fn is_leaf(self) -> bool {
        self.next_level() == NEXT_LEVEL_LEAF || self.next_level() == NEXT_LEVEL_SIZED
    }
    /// A PDE pointing at a table of level `next_level` (1..=6), with IR and IW set as Linux's `PM_LEVEL_PDE`.
    pub const fn pde(table: u64, next_level: u8) -> Self {
        IoPte::new()
            .with_pr(true)
            .with_next_level(next_level & 7)
            .with_addr((table >> 12) & mask64(39, 0))
            .with_ir(true)
            .with_iw(true)
    }
    /// A leaf mapping the natural page size of its level at `pa`, with FC as Linux sets it.
    pub const fn leaf(pa: u64, ir: bool, iw: bool) -> Self {
        IoPte::new().with_pr(true).with_fc(true).with_addr((pa >> 12) & mask64(39, 0)).with_ir(ir).with_iw(iw)
    }
    /// A NextLevel-7 leaf mapping `size` bytes (a power of two, at least 8 KiB) at `pa` (aligned to it), as
    /// Linux's `PAGE_SIZE_PTE`: address bits from 12 up to `log2(size) - 2` set, bit `log2(size) - 1` clear.
    pub const fn sized_leaf(pa: u64, size: u64, ir: bool, iw: bool) -> Self {
        let addr = ((pa | (size.wrapping_sub(1))) & !(size >> 1)) & mask64(51, 12);
        IoPte::leaf(addr, ir, iw).with_next_level(NEXT_LEVEL_SIZED)
    }
    /// The page size a NextLevel-7 entry encodes (Linux `PTE_PAGE_SIZE`): `2^(p+1)` for `p` the lowest clear
    /// bit of `address | 0xfff`. All of bits 51:12 set gives 2^53 (nonsense a validator should reject).
    pub const fn sized_leaf_size(self) -> u64 {
        let p = (self.into_bits() & mask64(51, 12) | 0xfff).trailing_ones();
        1 << (p + 1)
    }
    /// Bytes a leaf found at `level` (1..=6) maps: the level's natural size for NextLevel 0, the encoded size
    /// for NextLevel 7; `None` for a PDE or a level outside 1..=6.
    pub const fn page_size(self, level: u32) -> Option<u64> {
        if level == 0 || level > 6 {
            return None;
        }
        match self.next_level() {
            NEXT_LEVEL_LEAF => Some(level_size(level)),
            NEXT_LEVEL_SIZED => Some(self.sized_leaf_size()),
            _ => None,
        }
    }
    /// Physical address of the page a leaf of `page_size` bytes maps (its low address bits are size encoding).
    pub const fn page_base(self, page_size: u64) -> u64 {
        self.phys() & !(page_size.wrapping_sub(1))
    }
    /// Reserved bits: 58:52 of a leaf; 60:52 of a PDE (U and FC are leaf-only).
    pub const fn reserved_bits(self) -> u64 {
        let mask = if self.is_leaf() { mask64(58, 52) } else { mask64(60, 52) };
        self.into_bits() & mask
    }
}

/// Bytes per entry's coverage at `level` (1..=6): 4 KiB, 2 MiB, 1 GiB, 512 GiB, 256 TiB, 128 PiB (Linux
/// `PTE_LEVEL_PAGE_SIZE(level - 1)`).
/// 0 for a level outside 1..=6.
pub const fn level_size(level: u32) -> u64 {
    if level == 0 || level > 6 {
        return 0;
    }
    1 << level_shift(level)
}

/// The IOVA bit a level's index starts at: `12 + 9 * (level - 1)`.
pub const fn level_shift(level: u32) -> u32 {
    12u32.saturating_add(9u32.saturating_mul(level.saturating_sub(1)))
}

/// Index of `iova` in a table at `level` (Linux `PM_LEVEL_INDEX(level - 1, iova)`). Level 6 uses bits 63:57.
pub const fn level_index(iova: u64, level: u32) -> usize {
    let shift = level_shift(level);
    if shift >= 64 {
        return 0;
    }
    ((iova >> shift) & 0x1ff) as usize
}

/// Highest IOVA a table tree with DTE Mode `mode` (1..=6) translates: `2^(12 + 9 * mode) - 1`, all of u64 for
/// mode 6 (Linux `PM_LEVEL_SIZE(mode)`).
pub const fn mode_max_iova(mode: u32) -> u64 {
    let bits = 12u32.saturating_add(9u32.saturating_mul(mode));
    if bits >= 64 {
        u64::MAX
    } else {
        (1 << bits) - 1
    }
}

/// The smallest mode (at least `min`, at most 6) whose tree covers `iova`: Linux starts at 3 and adds levels.
pub const fn mode_for_iova(iova: u64, min: u32) -> u32 {
    let mut m = if min == 0 { 1 } else { min };
    while m < 6 && iova > mode_max_iova(m) {
        m += 1;
    }
    m
}

/// Levels skipped by a PDE at `level` whose NextLevel is `next_level` (1..=6; 0 and 7 are leaves, never a skip):
/// 0 for the normal `next_level = level - 1`. Linux never builds a skip and refuses to walk one; QEMU's older
/// walker followed NextLevel.
pub const fn skipped_levels(level: u32, next_level: u32) -> u32 {
    if next_level == 0 || next_level > 6 || next_level + 1 >= level {
        0
    } else {
        level - 1 - next_level
    }
}

/// The IOVA bits that the skipped levels between a PDE at `level` and its table at `next_level` would have
/// indexed. A walker decides what non-zero bits there mean (docs/handover.md#model-choices: the hardware's answer is
/// unconfirmed); the mask tells it where to look.
pub const fn skipped_iova_bits(level: u32, next_level: u32) -> u64 {
    if skipped_levels(level, next_level) == 0 {
        return 0;
    }
    let lo = level_shift(next_level + 1);
    let hi = level_shift(level) - 1;
    if hi >= 64 {
        mask64(63, lo)
    } else {
        mask64(hi, lo)
    }
}

/// Where Linux puts a leaf of `size` bytes (a power of two ≥ 4 KiB): `(level, copies)`. The leaf goes at
/// `level` (`PAGE_SIZE_LEVEL + 1`) and is replicated into `copies` consecutive slots (`PAGE_SIZE_PTE_COUNT`);
/// one copy means a natural-size leaf (NextLevel 0), more means NextLevel 7. `None` for other sizes.
pub const fn leaf_layout(size: u64) -> Option<(u32, u32)> {
    if !size.is_power_of_two() || size < crate::PAGE_SIZE {
        return None;
    }
    let shift = size.trailing_zeros() - 12;
    Some((shift / 9 + 1, 1 << (shift % 9)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_at_spec_bits() {
        assert_eq!(IoPte::new().with_pr(true).into_bits(), 1);
        assert_eq!(IoPte::new().with_ignored_lo(0xf).into_bits(), 0x1e);
        assert_eq!(IoPte::new().with_a(true).into_bits(), 1 << 5);
        assert_eq!(IoPte::new().with_d(true).into_bits(), 1 << 6);
        assert_eq!(IoPte::new().with_ignored_mid(3).into_bits(), 3 << 7);
        assert_eq!(IoPte::new().with_next_level(7).into_bits(), 7 << 9);
        assert_eq!(IoPte::new().with_addr(mask64(39, 0)).into_bits(), 0x000f_ffff_ffff_f000);
        assert_eq!(IoPte::new().with_u(true).into_bits(), 1 << 59);
        assert_eq!(IoPte::new().with_fc(true).into_bits(), 1 << 60);
        assert_eq!(IoPte::new().with_ir(true).into_bits(), 1 << 61);
        assert_eq!(IoPte::new().with_iw(true).into_bits(), 1 << 62);
        assert_eq!(IoPte::new().with_ignored_63(true).into_bits(), 1 << 63);
    }

    #[test]
    fn linux_encoders() {
        // PM_LEVEL_PDE(level, table): table | level << 9 | PR | IR | IW.
        assert_eq!(IoPte::pde(0x1234_5000, 2).into_bits(), 0x1234_5000 | 2 << 9 | 1 | 3 << 61);
        // A 4 KiB leaf as iommu_v1_map_pages writes it: paddr | PR | FC | IR | IW.
        assert_eq!(IoPte::leaf(0xabc_d000, true, true).into_bits(), 0xabc_d000 | 1 | 1 << 60 | 3 << 61);
        assert_eq!(IoPte::leaf(0xabc_d000, true, false).into_bits(), 0xabc_d000 | 1 | 1 << 60 | 1 << 61);
        assert_eq!(IoPte::pde(u64::MAX, 0xff).next_level(), 7, "hostile inputs are truncated");
        assert!(IoPte::leaf(0, true, true).is_leaf() && !IoPte::pde(0, 1).is_leaf());
    }

    #[test]
    fn sized_leaf_encoding() {
        // 8 KiB: bit 12 clear; 32 KiB: bits 13:12 set, bit 14 clear (Linux PAGE_SIZE_PTE encoding).
        let p8k = IoPte::sized_leaf(0x10_0000, 8 << 10, true, true);
        assert_eq!(p8k.phys(), 0x10_0000);
        assert_eq!(p8k.next_level(), 7);
        assert_eq!(p8k.sized_leaf_size(), 8 << 10);
        let p32k = IoPte::sized_leaf(0x10_0000, 32 << 10, true, true);
        assert_eq!(p32k.phys(), 0x10_3000);
        assert_eq!(p32k.sized_leaf_size(), 32 << 10);
        assert_eq!(p32k.page_base(32 << 10), 0x10_0000);
        for shift in 13..52 {
            let size = 1u64 << shift;
            let pa = 0x000f_ffff_ffff_f000 & !(size - 1);
            let e = IoPte::sized_leaf(pa, size, true, false);
            assert_eq!(e.sized_leaf_size(), size, "2^{shift}");
            assert_eq!(e.page_base(size), pa, "2^{shift}");
            assert_eq!(e.reserved_bits(), 0);
        }
        assert_eq!(IoPte::from_bits(mask64(51, 12) | 7 << 9).sized_leaf_size(), 1 << 53);
        // Bits above 51 (U, FC, IR, IW) never count as size encoding.
        assert_eq!(IoPte::from_bits(mask64(51, 12) | 0xf << 59).sized_leaf_size(), 1 << 53);
    }

    #[test]
    fn page_sizes_by_level() {
        assert_eq!(IoPte::leaf(0, true, true).page_size(1), Some(4096));
        assert_eq!(IoPte::leaf(0, true, true).page_size(2), Some(2 << 20), "a leaf at a higher level");
        assert_eq!(IoPte::leaf(0, true, true).page_size(3), Some(1 << 30));
        assert_eq!(IoPte::pde(0, 1).page_size(2), None);
        assert_eq!(IoPte::leaf(0, true, true).page_size(0), None);
        assert_eq!(IoPte::leaf(0, true, true).page_size(7), None);
        let e = IoPte::sized_leaf(0x40_0000, 4 << 20, true, true);
        assert_eq!(e.page_size(2), Some(4 << 20));
    }

    #[test]
    fn leaf_layouts_like_linux() {
        assert_eq!(leaf_layout(4096), Some((1, 1)));
        assert_eq!(leaf_layout(8192), Some((1, 2)));
        assert_eq!(leaf_layout(32 << 10), Some((1, 8)));
        assert_eq!(leaf_layout(2 << 20), Some((2, 1)));
        assert_eq!(leaf_layout(4 << 20), Some((2, 2)));
        assert_eq!(leaf_layout(1 << 30), Some((3, 1)));
        assert_eq!(leaf_layout(3 << 12), None);
        assert_eq!(leaf_layout(2048), None);
        assert_eq!(PAGE_SIZES_V1 & (1 << 39), 0);
        assert_eq!(PAGE_SIZES_V1 & 0xfff, 0);
        assert_ne!(PAGE_SIZES_V1 & (1 << 30), 0);
    }

    #[test]
    fn reserved_bits_sweep() {
        for bit in 0..64u32 {
            let leaf = IoPte::from_bits(1 << bit);
            if (9..12).contains(&bit) {
                continue; // NextLevel changes the entry's kind; covered below.
            }
            assert_eq!(leaf.reserved_bits() != 0, (52..59).contains(&bit), "leaf bit {bit}");
            let pde = IoPte::from_bits(1 << bit | 1 << 9);
            assert_eq!(pde.reserved_bits() != 0, (52..61).contains(&bit), "pde bit {bit}");
        }
        assert_eq!(IoPte::from_bits(7 << 9 | 1 << 59).reserved_bits(), 0, "U is defined in a sized leaf");
    }

    #[test]
    fn level_arithmetic() {
        assert_eq!(level_size(1), 4096);
        assert_eq!(level_size(2), 2 << 20);
        assert_eq!(level_size(4), 512 << 30);
        assert_eq!(level_size(6), 1 << 57);
        let iova = 0xffff_ffff_ffff_f000u64;
        assert_eq!(level_index(iova, 1), 0x1ff);
        assert_eq!(level_index(iova, 6), 0x7f, "level 6 indexes bits 63:57");
        assert_eq!(level_index(0x20_0000, 2), 1);
        assert_eq!(level_index(1 << 39, 4), 1);
        assert_eq!(level_index(iova, 8), 0);
        assert_eq!((level_size(0), level_size(7), level_size(u32::MAX)), (0, 0, 0));
        assert_eq!(mode_max_iova(u32::MAX), u64::MAX);
        assert_eq!(mode_max_iova(3), (1 << 39) - 1);
        assert_eq!(mode_max_iova(6), u64::MAX);
        assert_eq!(mode_for_iova(0x1000, 3), 3);
        assert_eq!(mode_for_iova(1 << 39, 3), 4);
        assert_eq!(mode_for_iova(u64::MAX, 3), 6);
        assert_eq!(mode_for_iova(0, 0), 1);
    }

    #[test]
    fn level_skipping() {
        assert_eq!(skipped_levels(4, 3), 0);
        assert_eq!(skipped_levels(4, 1), 2);
        assert_eq!(skipped_levels(3, 5), 0, "NextLevel above the PDE's level is not a skip");
        assert_eq!(skipped_iova_bits(4, 3), 0);
        // A level-4 PDE pointing straight at a level-1 table skips levels 3 and 2: IOVA bits 38:21.
        assert_eq!(skipped_iova_bits(4, 1), mask64(38, 21));
        assert_eq!(skipped_iova_bits(6, 1), mask64(56, 21));
        assert_eq!(skipped_iova_bits(3, 0), 0, "NextLevel 0 is a leaf");
        assert_eq!(skipped_iova_bits(u32::MAX, 1), mask64(63, 21), "no overflow on hostile levels");
    }

    #[test]
    fn round_trips() {
        for raw in [0u64, u64::MAX, 0x5555_5555_5555_5555, 0xaaaa_aaaa_aaaa_aaaa, 0xdead_beef_0bad_f00d] {
            assert_eq!(IoPte::from_bits(raw).into_bits(), raw);
        }
    }
}
