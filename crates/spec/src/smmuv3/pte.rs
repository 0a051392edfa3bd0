//! VMSAv8-64 4 KiB-granule descriptors (Arm ARM D8.3; Linux `io-pgtable-arm.c` `ARM_LPAE_PTE_*`): stage-1 and
//! stage-2 leaves, table descriptors and the permissions they grant. Geometry is in [`super::pgtable`]. Output
//! addresses are 48-bit (bits 47:12); the 52-bit (FEAT_LPA2) layout is not modelled.

use super::pgtable::{desc_kind, level_shift, level_size, DescKind};
use bitfield_struct::bitfield;

/// Read and write permission a leaf grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Perm {
    /// Reads are allowed.
    pub read: bool,
    /// Writes are allowed.
    pub write: bool,
}

impl Perm {
    /// No access.
    pub const NONE: Perm = Perm { read: false, write: false };
    /// Read-only.
    pub const RO: Perm = Perm { read: true, write: false };
    /// Read and write.
    pub const RW: Perm = Perm { read: true, write: true };
    /// Access both grant: the intersection, as a table limit meets a leaf.
    pub const fn and(self, o: Perm) -> Perm {
        Perm { read: self.read && o.read, write: self.write && o.write }
    }
}

/// Linux's stage-1 MAIR indices (`ARM_LPAE_MAIR_ATTR_IDX_*`) and the MAIR io-pgtable programs.
pub mod mair_idx {
    /// Normal non-cacheable (0x44).
    pub const NC: u8 = 0;
    /// Normal write-back read/write-allocate (0xff), for `IOMMU_CACHE`.
    pub const CACHE: u8 = 1;
    /// Device-nGnRE (0x04), for `IOMMU_MMIO`.
    pub const DEV: u8 = 2;
    /// Inner non-cacheable, outer write-back (0xf4).
    pub const INC_OCACHE: u8 = 3;
    /// MAIR_ELx value io-pgtable programs into CD.MAIR: attributes 0x44, 0xff, 0x04, 0xf4 at indices 0–3.
    pub const LINUX_MAIR: u64 = 0xf404_ff44;
}

/// Stage-2 MemAttr values Linux writes (`ARM_LPAE_PTE_MEMATTR_*`).
pub mod s2_memattr {
    /// Device-nGnRE (`ARM_LPAE_PTE_MEMATTR_DEV`).
    pub const DEVICE: u8 = 0x1;
    /// Normal non-cacheable (`ARM_LPAE_PTE_MEMATTR_NC`).
    pub const NC: u8 = 0x5;
    /// Normal inner and outer write-back (`ARM_LPAE_PTE_MEMATTR_OIWB`).
    pub const OIWB: u8 = 0xf;
}

/// Address bits 47:12 of a descriptor.
const OA_MASK: u64 = crate::mask64(47, 12);

/// Output address of a leaf at `level`: bits 47:12 for a page, 47:30 or 47:21 for a block.
pub const fn leaf_output(raw: u64, level: u32) -> u64 {
    raw & OA_MASK & !(level_size(level) - 1)
}

/// Address bits below the block size that a block at `level` holds (RES0 in the Arm ARM; bit 16, nT, excluded).
/// QEMU ignores them; a strict walker faults.
pub const fn block_low_bits(raw: u64, level: u32) -> u64 {
    match level {
        1 | 2 => raw & crate::mask64(level_shift(level) - 1, 12) & !(1 << 16),
        _ => 0,
    }
}

/// Stage-1 block or page descriptor (D8.3.2; `ARM_LPAE_PTE_*`).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct S1Pte {
    /// Valid (bit 0).
    pub valid: bool,
    /// 1 for a page (level 3), 0 for a block (levels 1–2).
    pub page: bool,
    /// MAIR index (`ARM_LPAE_PTE_ATTRINDX`).
    #[bits(3)]
    pub attr_indx: u8,
    /// NS (bit 5): non-secure output (secure translations only).
    pub ns: bool,
    /// `AP[2:1]`: bit 6 (`AP[1]`) unprivileged access, bit 7 (`AP[2]`) read-only.
    #[bits(2)]
    pub ap: u8,
    /// SH (bits 9:8): shareability, [`super::sh`] values.
    #[bits(2)]
    pub sh: u8,
    /// Access flag: 0 ⇒ access fault unless hardware updates it (CD.HA) or CD.AFFD.
    pub af: bool,
    /// Not global: the entry is tagged with the ASID.
    pub ng: bool,
    /// Output address bits 47:12.
    #[bits(36)]
    pub oa: u64,
    #[bits(3)]
    __: u8,
    /// Dirty-bit modifier (hardware dirty state with CD.HD).
    pub dbm: bool,
    /// Contiguous hint (bit 52): one of 16 adjacent entries mapping a contiguous range.
    pub contiguous: bool,
    /// PXN (bit 53): privileged execute-never.
    pub pxn: bool,
    /// UXN / XN.
    pub uxn: bool,
    /// Software bits 58:55.
    #[bits(4)]
    pub sw: u8,
    #[bits(5)]
    __: u8,
}

impl S1Pte {
    /// `AP[1]`, bit 6 (`ARM_LPAE_PTE_AP_UNPRIV`).
    pub const AP_UNPRIV: u8 = 1;
    /// `AP[2]`, bit 7 (`ARM_LPAE_PTE_AP_RDONLY`).
    pub const AP_RDONLY: u8 = 2;

    /// A leaf as Linux's io-pgtable writes it: valid, page at level 3 or block above, AF, inner shareable, nG,
    /// unprivileged access, read-only unless `write`.
    pub const fn leaf(pa: u64, level: u32, attr_indx: u8, write: bool) -> Self {
        let ap = if write { Self::AP_UNPRIV } else { Self::AP_UNPRIV | Self::AP_RDONLY };
        S1Pte::new()
            .with_valid(true)
            .with_page(level == 3)
            .with_attr_indx(attr_indx & 7)
            .with_ap(ap)
            .with_sh(super::sh::ISH)
            .with_af(true)
            .with_ng(true)
            .with_oa((pa & OA_MASK) >> 12)
    }
    /// What the descriptor is at `level`: invalid, table, block, page or reserved.
    pub const fn kind(self, level: u32) -> DescKind {
        desc_kind(self.into_bits(), level)
    }
    /// Output address of the leaf at `level`, aligned to its page or block size.
    pub const fn output(self, level: u32) -> u64 {
        leaf_output(self.into_bits(), level)
    }
    /// Permission for a privileged (PnU = 1) or unprivileged access: `AP[2]` removes write, `AP[1]` = 0 denies
    /// unprivileged access. (Write to a read-only DBM page with CD.HD is the walker's business.)
    pub const fn perm(self, privileged: bool) -> Perm {
        let ap = self.ap();
        if !privileged && ap & Self::AP_UNPRIV == 0 {
            return Perm::NONE;
        }
        Perm { read: true, write: ap & Self::AP_RDONLY == 0 }
    }
    /// Not executable: UXN for unprivileged, PXN for privileged.
    pub const fn exec_never(self, privileged: bool) -> bool {
        if privileged {
            self.pxn()
        } else {
            self.uxn()
        }
    }
}

/// Table descriptor, stage 1 or 2 (D8.3.1). The hierarchical bits 63:59 apply to stage 1 only.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct TableDesc {
    /// Valid (bit 0).
    pub valid: bool,
    /// Must be 1 for a table.
    pub table: bool,
    #[bits(10)]
    __: u16,
    /// Next-level table address bits 47:12.
    #[bits(36)]
    pub next: u64,
    #[bits(11)]
    __: u16,
    /// PXNTable (bit 59): privileged execute-never below.
    pub pxn_table: bool,
    /// UXNTable / XNTable (bit 60): execute-never below.
    pub uxn_table: bool,
    /// APTable: bit 61 no unprivileged access below, bit 62 read-only below.
    #[bits(2)]
    pub ap_table: u8,
    /// NSTable (bit 63): non-secure tables below (secure translations only).
    pub ns_table: bool,
}

impl TableDesc {
    /// A valid table descriptor pointing at the next-level table at `table` (bits 47:12 kept).
    pub const fn to(table: u64) -> Self {
        TableDesc::new().with_valid(true).with_table(true).with_next((table & OA_MASK) >> 12)
    }
    /// Physical address of the next-level table.
    pub const fn next_table(self) -> u64 {
        self.next() << 12
    }
    /// The most the levels below may grant (stage 1, unless CD.HAD disables hierarchical attributes).
    pub const fn limit(self, privileged: bool) -> Perm {
        let apt = self.ap_table();
        if !privileged && apt & 1 != 0 {
            return Perm::NONE;
        }
        Perm { read: true, write: apt & 2 == 0 }
    }
}

/// Stage-2 block or page descriptor (D8.3.2; `ARM_LPAE_PTE_MEMATTR_*`, `ARM_LPAE_PTE_HAP_*`).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct S2Pte {
    /// Valid (bit 0).
    pub valid: bool,
    /// 1 for a page (level 3), 0 for a block.
    pub page: bool,
    /// Memory attributes, see [`s2_memattr`].
    #[bits(4)]
    pub memattr: u8,
    /// S2AP: bit 6 read, bit 7 write.
    #[bits(2)]
    pub s2ap: u8,
    /// SH (bits 9:8): shareability, [`super::sh`] values.
    #[bits(2)]
    pub sh: u8,
    /// AF (bit 10): access flag; 0 faults unless STE.S2HA or S2AFFD.
    pub af: bool,
    #[bits(1)]
    __: u8,
    /// Output address bits 47:12.
    #[bits(36)]
    pub oa: u64,
    #[bits(3)]
    __: u8,
    /// DBM (bit 51): dirty-bit modifier (hardware dirty state with STE.S2HD).
    pub dbm: bool,
    /// Contiguous hint (bit 52).
    pub contiguous: bool,
    /// `XN[1:0]`; bit 54 alone without FEAT_XNX. Linux sets both for no-exec.
    #[bits(2)]
    pub xn: u8,
    /// Bits 58:55: reserved for software.
    #[bits(4)]
    pub sw: u8,
    #[bits(5)]
    __: u8,
}

impl S2Pte {
    /// A leaf as Linux's io-pgtable writes it: valid, page or block, AF, inner shareable.
    pub const fn leaf(pa: u64, level: u32, memattr: u8, read: bool, write: bool) -> Self {
        S2Pte::new()
            .with_valid(true)
            .with_page(level == 3)
            .with_memattr(memattr & 0xf)
            .with_s2ap(read as u8 | (write as u8) << 1)
            .with_sh(super::sh::ISH)
            .with_af(true)
            .with_oa((pa & OA_MASK) >> 12)
    }
    /// What the descriptor is at `level`: invalid, table, block, page or reserved.
    pub const fn kind(self, level: u32) -> DescKind {
        desc_kind(self.into_bits(), level)
    }
    /// Output address of the leaf at `level`, aligned to its page or block size.
    pub const fn output(self, level: u32) -> u64 {
        leaf_output(self.into_bits(), level)
    }
    /// S2AP (bits 7:6): bit 6 grants read, bit 7 write.
    pub const fn perm(self) -> Perm {
        Perm { read: self.s2ap() & 1 != 0, write: self.s2ap() & 2 != 0 }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage1_leaf_fields_at_spec_bits() {
        let one: [(S1Pte, u64); 14] = [
            (S1Pte::new().with_valid(true), 1),
            (S1Pte::new().with_page(true), 2),
            (S1Pte::new().with_attr_indx(7), 7 << 2),
            (S1Pte::new().with_ns(true), 1 << 5),
            (S1Pte::new().with_ap(S1Pte::AP_UNPRIV), 1 << 6),
            (S1Pte::new().with_ap(S1Pte::AP_RDONLY), 1 << 7),
            (S1Pte::new().with_sh(3), 3 << 8),
            (S1Pte::new().with_af(true), 1 << 10),
            (S1Pte::new().with_ng(true), 1 << 11),
            (S1Pte::new().with_dbm(true), 1 << 51),
            (S1Pte::new().with_contiguous(true), 1 << 52),
            (S1Pte::new().with_pxn(true), 1 << 53),
            (S1Pte::new().with_uxn(true), 1 << 54),
            (S1Pte::new().with_sw(0xf), 0xf << 55),
        ];
        for (p, raw) in one {
            assert_eq!(p.into_bits(), raw);
        }
        assert_eq!(S1Pte::new().with_oa(crate::mask64(35, 0)).into_bits(), OA_MASK);
        let leaf = S1Pte::leaf(0x8_1234_5000, 3, mair_idx::CACHE, false);
        assert_eq!(leaf.into_bits(), 0x8_1234_5000 | 1 << 11 | 1 << 10 | 3 << 8 | 3 << 6 | 1 << 2 | 3);
        assert_eq!(leaf.kind(3), DescKind::Page);
        assert_eq!(leaf.output(3), 0x8_1234_5000);
        let block = S1Pte::leaf(0x4020_0000, 2, mair_idx::NC, true);
        assert_eq!(block.kind(2), DescKind::Block);
        assert_eq!(block.into_bits() & 3, 1);
        assert_eq!(block.output(2), 0x4020_0000);
        assert_eq!(S1Pte::from_bits(0x4020_1401).output(2), 0x4020_0000, "low bits are not address");
        assert_eq!(S1Pte::from_bits(0x000f_ffff_ffff_f003).output(3), 0x0000_ffff_ffff_f000, "OA is 47:12");
    }

    #[test]
    fn block_alignment_bits() {
        assert_eq!(block_low_bits(0x4020_0001, 2), 0);
        assert_eq!(block_low_bits(0x4020_1001, 2), 0x1000);
        assert_eq!(block_low_bits(0x4000_0001 | 1 << 16, 1), 0, "nT is not address");
        assert_eq!(block_low_bits(0x4020_0001, 1), 0x20_0000);
        assert_eq!(block_low_bits(0x4020_1003, 3), 0);
    }

    #[test]
    fn stage1_permissions() {
        let ap = |v: u8| S1Pte::new().with_ap(v);
        assert_eq!(ap(0b00).perm(true), Perm::RW);
        assert_eq!(ap(0b00).perm(false), Perm::NONE);
        assert_eq!(ap(0b01).perm(false), Perm::RW);
        assert_eq!(ap(0b10).perm(true), Perm::RO);
        assert_eq!(ap(0b10).perm(false), Perm::NONE);
        assert_eq!(ap(0b11).perm(false), Perm::RO);
        assert!(S1Pte::new().with_uxn(true).exec_never(false));
        assert!(!S1Pte::new().with_uxn(true).exec_never(true));
        let t = TableDesc::to(0x8000).with_ap_table(2);
        assert_eq!(t.limit(false), Perm::RO);
        assert_eq!(TableDesc::new().with_ap_table(1).limit(false), Perm::NONE);
        assert_eq!(TableDesc::new().with_ap_table(1).limit(true), Perm::RW);
        assert_eq!(Perm::RW.and(t.limit(true)), Perm::RO);
    }

    #[test]
    fn table_descriptor_fields() {
        let t = TableDesc::to(0x0000_ffff_ffff_f000);
        assert_eq!(t.into_bits(), 0x0000_ffff_ffff_f003);
        assert_eq!(t.next_table(), 0x0000_ffff_ffff_f000);
        assert_eq!(TableDesc::new().with_pxn_table(true).into_bits(), 1 << 59);
        assert_eq!(TableDesc::new().with_uxn_table(true).into_bits(), 1 << 60);
        assert_eq!(TableDesc::new().with_ap_table(3).into_bits(), 3 << 61);
        assert_eq!(TableDesc::new().with_ns_table(true).into_bits(), 1 << 63);
        assert_eq!(desc_kind(t.into_bits(), 0), DescKind::Table);
    }

    #[test]
    fn stage2_leaf_fields_and_permissions() {
        assert_eq!(S2Pte::new().with_memattr(0xf).into_bits(), 0xf << 2);
        assert_eq!(S2Pte::new().with_s2ap(1).into_bits(), 1 << 6);
        assert_eq!(S2Pte::new().with_s2ap(2).into_bits(), 1 << 7);
        assert_eq!(S2Pte::new().with_sh(3).into_bits(), 3 << 8);
        assert_eq!(S2Pte::new().with_af(true).into_bits(), 1 << 10);
        assert_eq!(S2Pte::new().with_dbm(true).into_bits(), 1 << 51);
        assert_eq!(S2Pte::new().with_contiguous(true).into_bits(), 1 << 52);
        assert_eq!(S2Pte::new().with_xn(3).into_bits(), 3 << 53);
        let p = S2Pte::leaf(0x9000_0000, 3, s2_memattr::OIWB, true, false);
        assert_eq!(p.into_bits(), 0x9000_0000 | 1 << 10 | 3 << 8 | 1 << 6 | 0xf << 2 | 3);
        assert_eq!(p.perm(), Perm::RO);
        assert_eq!(S2Pte::from_bits(1 << 7).perm(), Perm { read: false, write: true });
        assert_eq!(S2Pte::from_bits(3 << 6).perm(), Perm::RW);
        let b = S2Pte::leaf(0x4000_0000, 1, s2_memattr::NC, true, true);
        assert_eq!((b.kind(1), b.output(1)), (DescKind::Block, 0x4000_0000));
    }

    #[test]
    fn descriptors_round_trip_any_raw_value() {
        for raw in [0u64, u64::MAX, 0x5555_5555_5555_5555, 0xdead_beef_0bad_f00d] {
            assert_eq!(S1Pte::from_bits(raw).into_bits(), raw);
            assert_eq!(S2Pte::from_bits(raw).into_bits(), raw);
            assert_eq!(TableDesc::from_bits(raw).into_bits(), raw);
        }
    }
}
