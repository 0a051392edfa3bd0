//! Second-level paging entries (spec 9.8): 512 × 64-bit entries per 4 KiB table, 3, 4 or 5 levels.

use bitfield_struct::bitfield;

/// Entries per page-table page.
pub const PTES_PER_TABLE: usize = 512;

/// Second-level paging entry, any level (9.8). Present iff R or W is set.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct SlPte {
    pub r: bool,
    pub w: bool,
    /// Bits 6:2: EMT/IPAT on some parts; Linux leaves them zero.
    #[bits(5)]
    pub attr: u8,
    /// Page size: this level-2 (2 MiB) or level-3 (1 GiB) entry maps a page.
    pub ps: bool,
    #[bits(3)]
    pub avail: u8,
    /// Snoop behaviour; reserved unless ECAP.SC.
    pub snp: bool,
    /// Next-level table or page frame, bits 51:12.
    #[bits(40)]
    pub addr: u64,
    #[bits(10)]
    pub ignored: u16,
    /// Transient mapping (ECAP.DT only).
    pub tm: bool,
    pub ignored_63: bool,
}

impl SlPte {
    pub const fn present(self) -> bool {
        self.r() || self.w()
    }
    pub const fn phys(self) -> u64 {
        self.addr() << 12
    }
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
