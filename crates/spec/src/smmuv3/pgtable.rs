//! VMSAv8-64 translation-table geometry with a 4 KiB granule, as the SMMU walks stage 1 (CD.TTB0) and stage 2
//! (STE.S2TTB) (Arm ARM D8.2; Linux `io-pgtable-arm.c`): descriptor kinds per level, level shifts and indices,
//! block sizes, starting levels. 512 × 64-bit descriptors per table; levels 0–3 resolve IA bits 47:39, 38:30,
//! 29:21 and 20:12. The descriptors themselves are in [`super::pte`].

/// Descriptors per 4 KiB table.
pub const PTES_PER_TABLE: usize = 512;
/// Smallest stage-1 T0SZ with a 4 KiB granule (48-bit input).
pub const T0SZ_MIN: u8 = 16;
/// Largest T0SZ without IDR3.STT (25-bit input).
pub const T0SZ_MAX: u8 = 39;
/// Largest T0SZ with IDR3.STT (small translation tables).
pub const T0SZ_MAX_STT: u8 = 48;
/// Most start-level tables a stage-2 walk may concatenate.
pub const S2_MAX_CONCAT: u32 = 16;

/// Translation granule, in CD.TG0 / STE.S2TG encoding.
#[open_enum::open_enum]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Granule {
    /// 0b00: 4 KiB.
    Size4K = 0,
    /// 0b01: 64 KiB.
    Size64K = 1,
    /// 0b10: 16 KiB; 0b11 is reserved.
    Size16K = 2,
}
crate::open_enum_bits!(Granule, u8, 2);

impl Granule {
    /// log2 of the granule size; `None` for the reserved encoding.
    pub const fn page_shift(self) -> Option<u32> {
        match self {
            Granule::Size4K => Some(12),
            Granule::Size16K => Some(14),
            Granule::Size64K => Some(16),
            _ => None,
        }
    }
}

/// What a descriptor is, from bits 1:0 and its level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DescKind {
    /// Bit 0 clear: translation fault.
    Invalid,
    /// Next-level table (levels 0–2, bits 1:0 = 0b11).
    Table,
    /// Block (levels 1–2, bits 1:0 = 0b01): 1 GiB or 2 MiB.
    Block,
    /// Page (level 3, bits 1:0 = 0b11).
    Page,
    /// 0b01 at level 0 or 3, or a level beyond 3: translation fault.
    Reserved,
}

/// The kind of descriptor `raw` is at `level`.
pub const fn desc_kind(raw: u64, level: u32) -> DescKind {
    if raw & 1 == 0 {
        return DescKind::Invalid;
    }
    let bit1 = raw & 2 != 0;
    match level {
        0 if bit1 => DescKind::Table,
        1 | 2 if bit1 => DescKind::Table,
        1 | 2 => DescKind::Block,
        3 if bit1 => DescKind::Page,
        _ => DescKind::Reserved,
    }
}

/// Lowest IA bit a level resolves: 39, 30, 21, 12 for levels 0–3 (`ARM_LPAE_LVL_SHIFT`). Levels beyond 3 read
/// as 3.
pub const fn level_shift(level: u32) -> u32 {
    let l = if level > 3 { 3 } else { level };
    12 + 9 * (3 - l)
}

/// Bytes one descriptor at `level` maps: 512 GiB, 1 GiB, 2 MiB, 4 KiB.
pub const fn level_size(level: u32) -> u64 {
    1 << level_shift(level)
}

/// Size of a block descriptor at `level`: 1 GiB at level 1, 2 MiB at level 2; `None` where blocks don't exist.
pub const fn block_size(level: u32) -> Option<u64> {
    match level {
        1 | 2 => Some(level_size(level)),
        _ => None,
    }
}

/// Input-address width of a walk with `t0sz`: `64 - T0SZ`.
pub const fn ia_bits(t0sz: u8) -> u32 {
    64u32.saturating_sub(t0sz as u32)
}

/// Stage-1 starting level for `t0sz` with a 4 KiB granule: levels = ⌈(IA − 12) / 9⌉, start = 4 − levels
/// (T0SZ 16 → 0, 25 → 1, 34 → 2). `None` outside 16..=48; the caller limits it to 39 without IDR3.STT.
pub const fn s1_start_level(t0sz: u8) -> Option<u32> {
    if t0sz < T0SZ_MIN || t0sz > T0SZ_MAX_STT {
        return None;
    }
    let levels = (ia_bits(t0sz) - 12).div_ceil(9);
    Some(4 - levels)
}

/// Stage-2 starting level from STE.S2SL0 with a 4 KiB granule: 0 → level 2, 1 → level 1, 2 → level 0; 3 is
/// reserved.
pub const fn s2_start_level(s2sl0: u8) -> Option<u32> {
    match s2sl0 {
        0 => Some(2),
        1 => Some(1),
        2 => Some(0),
        _ => None,
    }
}

/// Concatenated start-level tables of a stage-2 walk with S2SL0 and S2T0SZ (4 KiB granule): the start level must
/// resolve between 1 and 13 IA bits (at most 16 tables of 512). `None` when S2SL0 and S2T0SZ are inconsistent.
pub const fn s2_concat_tables(s2sl0: u8, s2t0sz: u8) -> Option<u32> {
    let Some(start) = s2_start_level(s2sl0) else {
        return None;
    };
    if s2t0sz < T0SZ_MIN {
        return None;
    }
    let ia = ia_bits(s2t0sz);
    let shift = level_shift(start);
    if ia <= shift {
        return None;
    }
    let bits = ia - shift;
    if bits <= 9 {
        Some(1)
    } else if bits - 9 <= 4 {
        Some(1 << (bits - 9))
    } else {
        None
    }
}

/// Index of `iova` in the table at `level`, for a walk of `ia_bits` input bits starting at `start_level`: nine
/// bits at every level but the start level, which takes whatever IA bits remain (fewer for a short IA, up to 13
/// for concatenated stage-2 tables).
pub const fn level_index(iova: u64, level: u32, start_level: u32, ia_bits: u32) -> u64 {
    let shift = level_shift(level);
    let ia = if ia_bits > 64 { 64 } else { ia_bits };
    let width = if level == start_level { ia.saturating_sub(shift) } else { 9 };
    (iova >> shift) & ((1u64 << width) - 1)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_kinds_per_level() {
        for level in 0..4 {
            assert_eq!(desc_kind(0, level), DescKind::Invalid);
            assert_eq!(desc_kind(0xffff_ffff_ffff_fffe, level), DescKind::Invalid, "bit 0 alone decides");
        }
        assert_eq!(desc_kind(0b11, 0), DescKind::Table);
        assert_eq!(desc_kind(0b01, 0), DescKind::Reserved, "no level-0 blocks with 4 KiB");
        assert_eq!(desc_kind(0b11, 1), DescKind::Table);
        assert_eq!(desc_kind(0b01, 1), DescKind::Block);
        assert_eq!(desc_kind(0b11, 2), DescKind::Table);
        assert_eq!(desc_kind(0b01, 2), DescKind::Block);
        assert_eq!(desc_kind(0b11, 3), DescKind::Page);
        assert_eq!(desc_kind(0b01, 3), DescKind::Reserved);
        assert_eq!(desc_kind(0b11, 4), DescKind::Reserved);
    }

    #[test]
    fn level_geometry() {
        assert_eq!([level_shift(0), level_shift(1), level_shift(2), level_shift(3)], [39, 30, 21, 12]);
        assert_eq!(level_shift(9), 12);
        assert_eq!(level_size(0), 512 << 30);
        assert_eq!(block_size(1), Some(1 << 30));
        assert_eq!(block_size(2), Some(2 << 20));
        assert_eq!(block_size(0), None);
        assert_eq!(block_size(3), None);
        assert_eq!(Granule::Size4K.page_shift(), Some(12));
        assert_eq!(Granule::Size16K.page_shift(), Some(14));
        assert_eq!(Granule::Size64K.page_shift(), Some(16));
        assert_eq!(Granule(3).page_shift(), None);
    }

    #[test]
    fn stage1_start_level_from_t0sz() {
        assert_eq!(s1_start_level(16), Some(0));
        assert_eq!(s1_start_level(24), Some(0), "40-bit IA needs 4 levels");
        assert_eq!(s1_start_level(25), Some(1));
        assert_eq!(s1_start_level(33), Some(1));
        assert_eq!(s1_start_level(34), Some(2));
        assert_eq!(s1_start_level(39), Some(2));
        assert_eq!(s1_start_level(43), Some(3), "STT: 21-bit IA");
        assert_eq!(s1_start_level(48), Some(3));
        assert_eq!(s1_start_level(15), None);
        assert_eq!(s1_start_level(49), None);
        assert_eq!(s1_start_level(0xff), None);
        assert_eq!(ia_bits(0xff), 0);
    }

    #[test]
    fn stage2_start_level_and_concatenation() {
        assert_eq!(
            [s2_start_level(0), s2_start_level(1), s2_start_level(2), s2_start_level(3)],
            [Some(2), Some(1), Some(0), None]
        );
        assert_eq!(s2_concat_tables(2, 16), Some(1), "48-bit IPA from level 0");
        assert_eq!(s2_concat_tables(1, 25), Some(1), "39-bit IPA from level 1");
        assert_eq!(s2_concat_tables(1, 24), Some(2), "40-bit IPA: two level-1 tables, as Linux does");
        assert_eq!(s2_concat_tables(1, 21), Some(16), "43 bits: sixteen");
        assert_eq!(s2_concat_tables(1, 20), None, "44 bits would need 32");
        assert_eq!(s2_concat_tables(2, 24), Some(1), "level 0 with one bit");
        assert_eq!(s2_concat_tables(1, 32), Some(1), "32-bit IPA from level 1: a 4-entry table");
        assert_eq!(s2_concat_tables(0, 25), None, "level 2 can't cover 39 bits");
        assert_eq!(s2_concat_tables(1, 34), None, "IPA no wider than level 1's shift");
        assert_eq!(s2_concat_tables(3, 25), None);
        assert_eq!(s2_concat_tables(2, 15), None);
    }

    #[test]
    fn level_indices() {
        let va = 0x0000_7fff_ffff_f000u64;
        assert_eq!(level_index(va, 0, 0, 48), 0xff);
        assert_eq!(level_index(va, 1, 0, 48), 0x1ff);
        assert_eq!(level_index(va, 3, 0, 48), 0x1ff);
        let va = (3u64 << 39) | (5 << 30) | (7 << 21) | (9 << 12) | 0xabc;
        assert_eq!([0, 1, 2, 3].map(|l| level_index(va, l, 0, 48)), [3, 5, 7, 9], "one index per 9-bit field");
        // T0SZ 25 starts at level 1 with a full table.
        assert_eq!(level_index(0x7f_c000_0000, 1, 1, 39), 0x1ff);
        // A 40-bit IPA with two concatenated level-1 tables: the start index takes 10 bits.
        assert_eq!(level_index(0xff_c000_0000, 1, 1, 40), 0x3ff);
        // A 32-bit IPA from level 1: two bits.
        assert_eq!(level_index(0xffff_ffff, 1, 1, 32), 3);
        assert_eq!(level_index(u64::MAX, 0, 0, 1000), (1 << 25) - 1, "hostile IA width clamps, no panic");
        assert_eq!(level_index(u64::MAX, 2, 2, 0), 0);
    }
}
