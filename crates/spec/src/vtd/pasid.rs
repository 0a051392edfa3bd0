//! Scalable-mode PASID directory and PASID table entries (spec 9.5, 9.6).

use bitfield_struct::bitfield;

/// PASID-table entries per 4 KiB page (512-bit entries); a PASID's low 6 bits index the table.
pub const PASID_TABLE_ENTRIES: usize = 64;
pub const PASID_ENTRY_SIZE: u64 = 64;
/// PASID directory entries per 4 KiB page; a PASID's bits 19:6 index the directory.
pub const PASID_DIR_ENTRIES_PER_PAGE: usize = 512;

/// Index of `pasid` in its PASID directory.
pub const fn pasid_dir_index(pasid: u32) -> u32 {
    (pasid >> 6) & 0x3fff
}
/// Index of `pasid` in its PASID table.
pub const fn pasid_table_index(pasid: u32) -> u32 {
    pasid & 0x3f
}

/// PASID directory entry (9.5).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct PasidDirEntry {
    pub present: bool,
    pub fpd: bool,
    #[bits(10)]
    pub reserved: u16,
    /// PASID table pointer.
    #[bits(52)]
    pub ptp: u64,
}

impl PasidDirEntry {
    pub const fn table(self) -> u64 {
        self.ptp() << 12
    }
}

/// PASID-granular translation type (9.6, PGTT).
#[open_enum::open_enum]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Pgtt {
    FirstLevel = 1,
    SecondLevel = 2,
    Nested = 3,
    PassThrough = 4,
}

crate::open_enum_bits!(Pgtt, u8, 3);

/// PASID entry quadword 0 (9.6).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct PasidEntryQw0 {
    pub present: bool,
    pub fpd: bool,
    /// Address width of the second-level table: AGAW.
    #[bits(3)]
    pub aw: u8,
    #[bits(1)]
    pub reserved_5: u8,
    #[bits(3)]
    pub pgtt: Pgtt,
    /// Second-level access/dirty enable.
    pub ssade: bool,
    #[bits(2)]
    pub reserved: u8,
    /// Second-level page-table pointer.
    #[bits(52)]
    pub slptptr: u64,
}

/// PASID entry quadword 1 (9.6).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct PasidEntryQw1 {
    pub did: u16,
    #[bits(7)]
    __: u8,
    pub pwsnp: bool,
    pub pgsnp: bool,
    #[bits(39)]
    __: u64,
}

/// PASID entry quadword 2 (9.6).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct PasidEntryQw2 {
    /// Supervisor requests enable.
    pub sre: bool,
    #[bits(1)]
    __: u8,
    /// First-level paging mode: 0 = 4-level, 1 = 5-level.
    #[bits(2)]
    pub flpm: u8,
    pub wpe: bool,
    #[bits(2)]
    __: u8,
    pub eafe: bool,
    #[bits(4)]
    __: u8,
    #[bits(52)]
    pub flptr: u64,
}

/// A whole 512-bit PASID entry as the eight quadwords memory holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PasidEntry(pub [u64; 8]);

impl PasidEntry {
    pub const fn qw0(&self) -> PasidEntryQw0 {
        PasidEntryQw0::from_bits(self.0[0])
    }
    pub const fn qw1(&self) -> PasidEntryQw1 {
        PasidEntryQw1::from_bits(self.0[1])
    }
    pub const fn qw2(&self) -> PasidEntryQw2 {
        PasidEntryQw2::from_bits(self.0[2])
    }
    pub const fn present(&self) -> bool {
        self.qw0().present()
    }
    pub const fn did(&self) -> u16 {
        self.qw1().did()
    }
    pub const fn second_level_table(&self) -> u64 {
        self.qw0().slptptr() << 12
    }
    /// A second-level-only entry (what Linux's DMA domains use in scalable mode).
    pub const fn second_level(table: u64, aw: u8, did: u16) -> Self {
        let qw0 =
            PasidEntryQw0::new().with_present(true).with_aw(aw).with_pgtt(Pgtt::SecondLevel).with_slptptr(table >> 12);
        let mut q = [0; 8];
        q[0] = qw0.into_bits();
        q[1] = PasidEntryQw1::new().with_did(did).into_bits();
        PasidEntry(q)
    }
    /// A pass-through entry.
    pub const fn pass_through(did: u16) -> Self {
        let mut q = [0; 8];
        q[0] = PasidEntryQw0::new().with_present(true).with_pgtt(Pgtt::PassThrough).into_bits();
        q[1] = PasidEntryQw1::new().with_did(did).into_bits();
        PasidEntry(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pasid_indices() {
        assert_eq!(pasid_dir_index(0), 0);
        assert_eq!(pasid_dir_index(0xfffff), 0x3fff);
        assert_eq!(pasid_table_index(0xfffff), 0x3f);
        assert_eq!(pasid_dir_index(64), 1);
    }

    #[test]
    fn pasid_entry_fields_at_spec_bits() {
        let e = PasidEntry::second_level(0x5_5000, 2, 7);
        assert_eq!(e.0[0], 0x5_5000 | 2 << 6 | 2 << 2 | 1);
        assert_eq!(e.0[1], 7);
        assert_eq!(e.second_level_table(), 0x5_5000);
        assert_eq!(PasidEntry::pass_through(1).0[0], 4 << 6 | 1);
        assert_eq!(PasidEntryQw1::new().with_pgsnp(true).into_bits(), 1 << 24);
        assert_eq!(PasidEntryQw2::new().with_flpm(1).with_sre(true).into_bits(), 1 << 2 | 1);
        assert_eq!(PasidEntryQw0::from_bits(7 << 6).pgtt(), Pgtt(7));
        let d = PasidDirEntry::new().with_present(true).with_ptp(0x9);
        assert_eq!(d.into_bits(), 0x9001);
        assert_eq!(PasidDirEntry::from_bits(0x9001).table(), 0x9000);
    }
}
