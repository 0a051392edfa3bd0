//! Paging entries: second-level (spec 9.8; 3, 4 or 5 levels) and first-level (spec 9.7, the x86-64 format;
//! 4 or 5 levels). Both are 512 × 64-bit entries per 4 KiB table and index the input address the same way.

use bitfield_struct::bitfield;

/// Entries per page-table page.
pub const PTES_PER_TABLE: usize = 512;

/// Second-level paging entry, any level (9.8). Present iff R or W is set.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct SlPte {
    /// R (bit 0): reads allowed through this entry.
    pub r: bool,
    /// W (bit 1): writes allowed through this entry.
    pub w: bool,
    /// Bits 6:2: EMT/IPAT on some parts; Linux leaves them zero.
    #[bits(5)]
    pub attr: u8,
    /// Page size: this level-2 (2 MiB) or level-3 (1 GiB) entry maps a page.
    pub ps: bool,
    /// Bits 10:8: ignored by hardware.
    #[bits(3)]
    pub avail: u8,
    /// Snoop behaviour; reserved unless ECAP.SC.
    pub snp: bool,
    /// Next-level table or page frame, bits 51:12.
    #[bits(40)]
    pub addr: u64,
    /// Bits 61:52: ignored by hardware.
    #[bits(10)]
    pub ignored: u16,
    /// Transient mapping (ECAP.DT only).
    pub tm: bool,
    /// Bit 63: ignored by hardware.
    pub ignored_63: bool,
}

impl SlPte {
    /// R or W set: the entry is present (9.8).
    pub const fn present(self) -> bool {
        self.r() || self.w()
    }
    /// Next-level table or page frame address, 4 KiB aligned (for a large page, its base).
    pub const fn phys(self) -> u64 {
        self.addr() << 12
    }
    /// The entry with ADDR set from `pa` (bits outside 51:12 dropped).
    pub const fn with_phys(self, pa: u64) -> Self {
        self.with_addr((pa >> 12) & ((1 << 40) - 1))
    }
    /// A leaf or table entry pointing at `pa` with the given permissions.
    pub const fn entry(pa: u64, r: bool, w: bool) -> Self {
        SlPte::new().with_phys(pa).with_r(r).with_w(w)
    }
    /// Bits a page-walker must find clear in a leaf of `level` (1 = 4 KiB; 2, 3 = large pages): the address
    /// bits below the page size (QEMU's `vtd_slpte_nonzero_rsvd`).
    pub const fn large_page_reserved(self, level: u32) -> u64 {
        match level {
            2 => self.into_bits() & 0x1f_f000,
            3 => self.into_bits() & 0x3fff_f000,
            _ => 0,
        }
    }
}

/// First-level paging entry, any level (spec 9.7; the IA-32e/x86-64 page-table format Linux's
/// `DMA_FL_PTE_*` bits write). Present iff P is set; reads need only P, writes R/W at every level; a
/// request without PASID is a user request (spec 3.6), so U/S must be set at every level.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct FlPte {
    /// Present.
    pub p: bool,
    /// Read/write: writes allowed (through this entry).
    pub rw: bool,
    /// User/supervisor: user requests allowed.
    pub us: bool,
    /// Page-level write-through.
    pub pwt: bool,
    /// Page-level cache disable.
    pub pcd: bool,
    /// Accessed: set by the unit on every entry a walk uses.
    pub a: bool,
    /// Dirty: set by the unit in a leaf on a write (ignored in non-leaf entries).
    pub d: bool,
    /// Page size at levels 2 and 3 (2 MiB, 1 GiB; must be 0 at levels 4 and 5); PAT at level 1.
    pub ps: bool,
    /// Global (leaf only; ignored by the unit).
    pub g: bool,
    /// Bits 11:9: ignored.
    #[bits(3)]
    pub ignored_11_9: u8,
    /// Next-level table or page frame, bits 51:12. In a large-page leaf bit 12 is PAT and the bits below
    /// the page size up to bit 13 are reserved.
    #[bits(40)]
    pub addr: u64,
    /// Bits 62:52: ignored.
    #[bits(11)]
    pub ignored_62_52: u16,
    /// Execute disable: instruction fetches through this entry fault (only requests with execute
    /// permission asked, which untranslated DMA never is, look at it).
    pub xd: bool,
}

impl FlPte {
    /// Table pointer (non-leaf) or 4 KiB frame (level-1 leaf).
    pub const fn phys(self) -> u64 {
        self.addr() << 12
    }
    /// The entry with ADDR set from `pa` (bits outside 51:12 dropped).
    pub const fn with_phys(self, pa: u64) -> Self {
        self.with_addr((pa >> 12) & ((1 << 40) - 1))
    }
    /// Frame of a leaf at `level`: for large pages bit 12 is PAT, not address.
    pub const fn leaf_phys(self, level: u32) -> u64 {
        let pa = self.phys();
        if level > 1 {
            pa & !(level_size(level) - 1)
        } else {
            pa
        }
    }
    /// Whether this entry at `level` ends the walk (level 1, or PS at level 2 or 3).
    pub const fn is_leaf(self, level: u32) -> bool {
        level == 1 || (self.ps() && (level == 2 || level == 3))
    }
    /// Reserved bits set in this entry at `level` for a host address width of `haw` bits (spec 9.7; QEMU
    /// `vtd_fpte_rsvd*`): address bits 51:HAW; PS at level 4 or 5; in a large page the address bits
    /// between PAT (bit 12) and the page size (2 MiB: bits 20:13, 1 GiB: bits 29:13). Bits 11:8 and 62:52
    /// are ignored, XD is a permission. Whether this unit offers 1 GiB pages (CAP.FL1GP) is the caller's
    /// check.
    pub const fn reserved_bits(self, level: u32, haw: u32) -> u64 {
        let raw = self.into_bits();
        let mut r = if haw < 52 { raw & crate::mask64(51, haw) } else { 0 };
        if self.ps() {
            r |= match level {
                2 => raw & 0x1f_e000,
                3 => raw & 0x3fff_e000,
                4 | 5 => 1 << 7,
                _ => 0,
            };
        }
        r
    }
    /// A table entry as Linux's `pfn_to_dma_pte` / `dma_pte` code writes one for a first-level domain:
    /// P, R/W, U/S and A set (and XD), so permissions are decided at the leaf.
    pub const fn table(pa: u64) -> Self {
        FlPte::new().with_phys(pa).with_p(true).with_rw(true).with_us(true).with_a(true).with_xd(true)
    }
    /// A 4 KiB leaf as Linux's `__domain_mapping` writes one for a first-level domain: P, U/S, A, XD,
    /// R/W if writable, and D already set on writable pages (`DMA_FL_PTE_DIRTY`).
    pub const fn leaf(pa: u64, write: bool) -> Self {
        FlPte::new().with_phys(pa).with_p(true).with_rw(write).with_us(true).with_a(true).with_d(write).with_xd(true)
    }
}

/// Page-table levels for context/PASID AW (AGAW) value `aw`: 3, 4 or 5 (2 is arithmetic only).
pub const fn agaw_levels(aw: u8) -> u32 {
    aw as u32 + 2
}

/// IOVA width translated by `levels` levels.
pub const fn levels_width(levels: u32) -> u32 {
    12 + 9 * levels
}

/// Index of `iova` in a table at `level` (1 = last level).
pub const fn level_index(iova: u64, level: u32) -> usize {
    ((iova >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

/// Bytes mapped by one entry at `level`.
pub const fn level_size(level: u32) -> u64 {
    1 << (12 + 9 * (level - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pte_fields_at_spec_bits() {
        assert_eq!(SlPte::entry(0x1234_5000, true, true).into_bits(), 0x1234_5003);
        assert_eq!(SlPte::new().with_ps(true).into_bits(), 1 << 7);
        assert_eq!(SlPte::new().with_snp(true).into_bits(), 1 << 11);
        assert_eq!(SlPte::new().with_tm(true).into_bits(), 1 << 62);
        assert!(!SlPte::from_bits(0x1234_5000).present());
        assert!(SlPte::from_bits(0x1234_5002).present());
        assert_eq!(SlPte::from_bits(0x000f_ffff_ffff_f003).phys(), 0x000f_ffff_ffff_f000);
        assert_eq!(SlPte::from_bits(0x0010_0000_0000_0003).phys(), 0, "bit 52 is not address");
    }

    #[test]
    fn first_level_fields_at_spec_bits() {
        assert_eq!(FlPte::new().with_p(true).into_bits(), 1);
        assert_eq!(FlPte::new().with_rw(true).into_bits(), 1 << 1);
        assert_eq!(FlPte::new().with_us(true).into_bits(), 1 << 2);
        assert_eq!(FlPte::new().with_pwt(true).with_pcd(true).into_bits(), 0b11 << 3);
        assert_eq!(FlPte::new().with_a(true).into_bits(), 1 << 5);
        assert_eq!(FlPte::new().with_d(true).into_bits(), 1 << 6);
        assert_eq!(FlPte::new().with_ps(true).into_bits(), 1 << 7);
        assert_eq!(FlPte::new().with_g(true).into_bits(), 1 << 8);
        assert_eq!(FlPte::new().with_xd(true).into_bits(), 1 << 63);
        // Linux 6.12's leaf for a read-write page: P | RW | US | A | D | XD.
        assert_eq!(FlPte::leaf(0x1234_5000, true).into_bits(), 0x8000_0000_1234_5067);
        assert_eq!(FlPte::leaf(0x1234_5000, false).into_bits(), 0x8000_0000_1234_5025);
        assert_eq!(FlPte::table(0x9000).into_bits(), 0x8000_0000_0000_9027);
        assert_eq!(FlPte::from_bits(0x8000_0000_1234_5067).phys(), 0x1234_5000);
        assert_eq!(FlPte::from_bits(0x8000_0000_4020_1087).leaf_phys(2), 0x4020_0000, "bit 12 is PAT");
    }

    #[test]
    fn first_level_round_trip() {
        for raw in [0u64, u64::MAX, 0x8000_0000_1234_5067, 0x7ff0_0000_0000_0f00, 0x0123_4567_89ab_cdef] {
            let e = FlPte::from_bits(raw);
            let rebuilt = FlPte::new()
                .with_p(e.p())
                .with_rw(e.rw())
                .with_us(e.us())
                .with_pwt(e.pwt())
                .with_pcd(e.pcd())
                .with_a(e.a())
                .with_d(e.d())
                .with_ps(e.ps())
                .with_g(e.g())
                .with_ignored_11_9(e.ignored_11_9())
                .with_addr(e.addr())
                .with_ignored_62_52(e.ignored_62_52())
                .with_xd(e.xd());
            assert_eq!(rebuilt.into_bits(), raw);
        }
    }

    #[test]
    fn first_level_reserved_bits() {
        let leaf = FlPte::leaf(0x4000_0000, true);
        assert_eq!(leaf.reserved_bits(1, 48), 0);
        assert_eq!(FlPte::leaf(0x1_0000_0000_0000, true).reserved_bits(1, 48), 1 << 48, "above HAW");
        assert_eq!(leaf.with_ps(true).reserved_bits(2, 48), 0, "2 MiB aligned");
        assert_eq!(FlPte::leaf(0x4020_1000, true).with_ps(true).reserved_bits(2, 48), 0, "bit 12 is PAT");
        assert_ne!(FlPte::leaf(0x4020_2000, true).with_ps(true).reserved_bits(2, 48), 0);
        assert_ne!(FlPte::leaf(0x4020_0000, true).with_ps(true).reserved_bits(3, 48), 0);
        assert_eq!(FlPte::table(0x9000).with_ps(true).reserved_bits(4, 48), 1 << 7, "no 512 GiB pages");
        // Ignored bits and XD are never reserved.
        assert_eq!(FlPte::from_bits(0xfff0_0000_0000_0f01).reserved_bits(1, 48), 0);
    }

    #[test]
    fn large_page_reserved_bits() {
        let two_m = SlPte::entry(0x4020_0000, true, true).with_ps(true);
        assert_eq!(two_m.large_page_reserved(2), 0);
        assert_ne!(SlPte::entry(0x4020_1000, true, true).large_page_reserved(2), 0);
        assert_eq!(SlPte::entry(0x4000_0000, true, true).large_page_reserved(3), 0);
        assert_ne!(SlPte::entry(0x4020_0000, true, true).large_page_reserved(3), 0);
    }

    #[test]
    fn level_arithmetic() {
        assert_eq!(agaw_levels(1), 3);
        assert_eq!(agaw_levels(2), 4);
        assert_eq!(agaw_levels(3), 5);
        assert_eq!(levels_width(3), 39);
        assert_eq!(levels_width(4), 48);
        assert_eq!(levels_width(5), 57);
        let iova = 0x0000_7fff_ffff_f000u64;
        assert_eq!(level_index(iova, 4), 0xff);
        assert_eq!(level_index(iova, 1), 0x1ff);
        assert_eq!(level_index(0x20_0000, 2), 1);
        assert_eq!(level_size(2), 2 << 20);
        assert_eq!(level_size(3), 1 << 30);
    }
}
