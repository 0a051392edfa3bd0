//! Scalable-mode PASID directory and PASID table entries (spec 9.5, 9.6).

use bitfield_struct::bitfield;

/// PASID-table entries per 4 KiB page (512-bit entries); a PASID's low 6 bits index the table.
pub const PASID_TABLE_ENTRIES: usize = 64;
/// Bytes per scalable-mode PASID-table entry (512 bits).
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
    /// P (bit 0): the PASID table pointer is valid.
    pub present: bool,
    /// FPD (bit 1): fault processing disable for PASIDs through this entry.
    pub fpd: bool,
    /// Bits 11:2, reserved (must be 0).
    #[bits(10)]
    pub reserved: u16,
    /// PASID table pointer.
    #[bits(52)]
    pub ptp: u64,
}

impl PasidDirEntry {
    /// Physical address of the PASID table, 4 KiB aligned.
    pub const fn table(self) -> u64 {
        self.ptp() << 12
    }
}

/// PASID-granular translation type (9.6, PGTT).
#[open_enum::open_enum]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Pgtt {
    /// 001b: first-level translation only (`PASID_ENTRY_PGTT_FL_ONLY`).
    FirstLevel = 1,
    /// 010b: second-level translation only (`PASID_ENTRY_PGTT_SL_ONLY`).
    SecondLevel = 2,
    /// 011b: nested, first level then second level (`PASID_ENTRY_PGTT_NESTED`).
    Nested = 3,
    /// 100b: pass-through, no translation (`PASID_ENTRY_PGTT_PT`); 0 and 5–7 are reserved.
    PassThrough = 4,
}

crate::open_enum_bits!(Pgtt, u8, 3);

/// PASID entry quadword 0 (9.6).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct PasidEntryQw0 {
    /// P (bit 0): the entry is present.
    pub present: bool,
    /// FPD (bit 1): fault processing disable, non-recoverable faults are not recorded.
    pub fpd: bool,
    /// Address width of the second-level table: AGAW.
    #[bits(3)]
    pub aw: u8,
    /// Bit 5, reserved.
    #[bits(1)]
    pub reserved_5: u8,
    /// PGTT (bits 8:6): which translation the PASID gets.
    #[bits(3)]
    pub pgtt: Pgtt,
    /// Second-level access/dirty enable.
    pub ssade: bool,
    /// Bits 11:10, reserved.
    #[bits(2)]
    pub reserved: u8,
    /// Second-level page-table pointer.
    #[bits(52)]
    pub slptptr: u64,
}

/// PASID entry quadword 1 (9.6): bits 127:64 of the entry.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct PasidEntryQw1 {
    /// Domain ID (bits 79:64): tags every cached translation of this entry.
    pub did: u16,
    #[bits(7)]
    __: u8,
    /// Page-walk snoop (bit 87): walks of the paging structures snoop (Linux sets it from ECAP.SMPWCS).
    pub pwsnp: bool,
    /// Page snoop (bit 88): accesses to the translated pages snoop.
    pub pgsnp: bool,
    /// Memory-type fields (CD, EMTE, EMT, PWT, PCD, PAT; bits 127:89): only used with ECAP.MTS.
    #[bits(39)]
    pub memory_type: u64,
}

/// PASID entry quadword 2 (9.6): bits 191:128, the first-level fields.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct PasidEntryQw2 {
    /// Supervisor requests enable (bit 128).
    pub sre: bool,
    /// Bit 129 (execute requests enable in older revisions; reserved since).
    #[bits(1)]
    pub bit_129: u8,
    /// First-level paging mode (bits 131:130): 0 = 4-level, 1 = 5-level (needs CAP.FL5LP), others
    /// reserved.
    #[bits(2)]
    pub flpm: u8,
    /// Write protect enable (bit 132): supervisor writes honour R/W.
    pub wpe: bool,
    /// Bits 134:133 (no-execute and SMEP enables in older revisions; reserved since).
    #[bits(2)]
    pub bits_134_133: u8,
    /// Extended access flag enable (bit 135, needs ECAP.EAFS).
    pub eafe: bool,
    /// Bits 139:136, reserved.
    #[bits(4)]
    pub reserved: u8,
    /// First-level page-table pointer (bits 191:140).
    #[bits(52)]
    pub flptr: u64,
}

/// A whole 512-bit PASID entry as the eight quadwords memory holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PasidEntry(pub [u64; 8]);

impl PasidEntry {
    /// Quadword 0 (bits 63:0): P, FPD, AW, PGTT, SSADE, the second-level table pointer.
    pub const fn qw0(&self) -> PasidEntryQw0 {
        PasidEntryQw0::from_bits(self.0[0])
    }
    /// Quadword 1 (bits 127:64): DID, snoop and memory-type controls.
    pub const fn qw1(&self) -> PasidEntryQw1 {
        PasidEntryQw1::from_bits(self.0[1])
    }
    /// Quadword 2 (bits 191:128): the first-level controls and table pointer.
    pub const fn qw2(&self) -> PasidEntryQw2 {
        PasidEntryQw2::from_bits(self.0[2])
    }
    /// P: the entry is present.
    pub const fn present(&self) -> bool {
        self.qw0().present()
    }
    /// Domain ID (bits 79:64).
    pub const fn did(&self) -> u16 {
        self.qw1().did()
    }
    /// PGTT (bits 8:6).
    pub const fn pgtt(&self) -> Pgtt {
        self.qw0().pgtt()
    }
    /// Physical address of the second-level table (SLPTPTR, bits 63:12).
    pub const fn second_level_table(&self) -> u64 {
        self.qw0().slptptr() << 12
    }
    /// Physical address of the first-level table (FLPTR, bits 191:140).
    pub const fn first_level_table(&self) -> u64 {
        self.qw2().flptr() << 12
    }
    /// Levels of the first-level table FLPM selects: 4 or 5, `None` for a reserved encoding.
    pub const fn first_level_levels(&self) -> Option<u32> {
        match self.qw2().flpm() {
            0 => Some(4),
            1 => Some(5),
            _ => None,
        }
    }
    /// A first-level-only entry as Linux's `intel_pasid_setup_first_level` writes it for a DMA domain:
    /// FLPTR, FLPM (5-level or 4-level), DID, AW (the unit's AGAW, which Linux fills in although
    /// first-level translation does not use it), PWSNP, then PGTT = 001 and P.
    pub const fn first_level(table: u64, five_level: bool, aw: u8, did: u16, pwsnp: bool) -> Self {
        let mut q = [0; 8];
        q[0] = PasidEntryQw0::new().with_present(true).with_aw(aw).with_pgtt(Pgtt::FirstLevel).into_bits();
        q[1] = PasidEntryQw1::new().with_did(did).with_pwsnp(pwsnp).into_bits();
        q[2] = PasidEntryQw2::new().with_flpm(if five_level { 1 } else { 0 }).with_flptr(table >> 12).into_bits();
        PasidEntry(q)
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
    fn first_level_entry_fields_at_spec_bits() {
        let e = PasidEntry::first_level(0x12_3456_7000, true, 2, 0x1234, true);
        assert_eq!(e.0[0], 1 << 6 | 2 << 2 | 1, "PGTT 001 in bits 8:6, AW, P");
        assert_eq!(e.0[1], 1 << 23 | 0x1234, "PWSNP is bit 87, DID bits 79:64");
        assert_eq!(e.0[2], 0x12_3456_7000 | 1 << 2, "FLPTR bits 191:140, FLPM bits 131:130");
        assert_eq!(e.pgtt(), Pgtt::FirstLevel);
        assert_eq!(e.first_level_table(), 0x12_3456_7000);
        assert_eq!(e.first_level_levels(), Some(5));
        assert_eq!(PasidEntry::first_level(0x1000, false, 2, 1, false).first_level_levels(), Some(4));
        let reserved_flpm = PasidEntry([0, 0, 2 << 2, 0, 0, 0, 0, 0]);
        assert_eq!(reserved_flpm.first_level_levels(), None);
        assert_eq!(PasidEntryQw2::new().with_wpe(true).into_bits(), 1 << 4);
        assert_eq!(PasidEntryQw2::new().with_eafe(true).into_bits(), 1 << 7);
        assert_eq!(PasidEntryQw2::new().with_reserved(0xf).into_bits(), 0xf << 8);
        assert_eq!(PasidEntryQw0::from_bits(3 << 6).pgtt(), Pgtt::Nested);
        assert_eq!(PasidEntryQw1::new().with_memory_type(1).into_bits(), 1 << 25);
    }

    #[test]
    fn pasid_entry_words_round_trip() {
        // Every bit of qw0..qw2 belongs to exactly one field: decoding and encoding give back the word.
        for raw in [0u64, u64::MAX, 0x8000_0000_0000_0001, 0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210] {
            assert_eq!(PasidEntryQw0::from_bits(raw).into_bits(), raw);
            let q1 = PasidEntryQw1::from_bits(raw);
            let rebuilt = PasidEntryQw1::new()
                .with_did(q1.did())
                .with_pwsnp(q1.pwsnp())
                .with_pgsnp(q1.pgsnp())
                .with_memory_type(q1.memory_type());
            assert_eq!(rebuilt.into_bits() | (raw & 0x7f_0000), raw, "qw1 fields cover all but bits 86:80");
            let q2 = PasidEntryQw2::from_bits(raw);
            let rebuilt = PasidEntryQw2::new()
                .with_sre(q2.sre())
                .with_bit_129(q2.bit_129())
                .with_flpm(q2.flpm())
                .with_wpe(q2.wpe())
                .with_bits_134_133(q2.bits_134_133())
                .with_eafe(q2.eafe())
                .with_reserved(q2.reserved())
                .with_flptr(q2.flptr());
            assert_eq!(rebuilt.into_bits(), raw);
        }
        for pgtt in 0..8u8 {
            let q0 = PasidEntryQw0::new().with_pgtt(Pgtt(pgtt));
            assert_eq!(PasidEntryQw0::from_bits(q0.into_bits()).pgtt(), Pgtt(pgtt));
        }
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
