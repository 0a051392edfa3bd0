//! Context descriptors (spec 5.4): the 512-bit CD holding a stage-1 translation's TCR-like configuration, ASID,
//! table bases and MAIR, and the level-1 descriptor of a 2-level CD table (5.4.2).

use super::pgtable::Granule;
use super::ste::S1Fmt;
use bitfield_struct::bitfield;

/// Bytes of one CD (`CTXDESC_CD_DWORDS` × 8).
pub const CD_SIZE: u64 = 64;
/// CDs per 64 KiB leaf table (S1Fmt = 2-level 64 KiB; Linux `CTXDESC_L2_ENTRIES`).
pub const CD_L2_ENTRIES_64K: u32 = 1024;
/// CDs per 4 KiB leaf table (S1Fmt = 2-level 4 KiB).
pub const CD_L2_ENTRIES_4K: u32 = 64;

/// SubstreamID bits a leaf table resolves for `fmt` (0 for a linear table).
pub const fn cd_split(fmt: S1Fmt) -> u32 {
    match fmt {
        S1Fmt::TwoLevel64K => 10,
        S1Fmt::TwoLevel4K => 6,
        _ => 0,
    }
}

/// Level-1 index of `ssid` in a 2-level CD table of format `fmt`.
pub const fn cd_l1_index(ssid: u32, fmt: S1Fmt) -> u32 {
    ssid >> cd_split(fmt)
}

/// Index of `ssid` in its leaf table (or in the linear table).
pub const fn cd_l2_index(ssid: u32, fmt: S1Fmt) -> u32 {
    match cd_split(fmt) {
        0 => ssid,
        s => ssid & ((1 << s) - 1),
    }
}

/// Level-1 CD table descriptor (5.4.2; `CTXDESC_L1_DESC_*`).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct CdL1Desc {
    /// V: the leaf table is valid; a SubstreamID through an invalid one is C_BAD_SUBSTREAMID.
    pub v: bool,
    #[bits(11)]
    __: u16,
    /// Leaf table address bits 51:12.
    #[bits(40)]
    pub l2ptr: u64,
    #[bits(12)]
    __: u16,
}

impl CdL1Desc {
    /// A valid descriptor for a leaf table at `pa` (4 KiB aligned; bits outside 51:12 dropped).
    pub const fn new_table(pa: u64) -> Self {
        CdL1Desc::new().with_v(true).with_l2ptr((pa >> 12) & crate::mask64(39, 0))
    }
    /// Physical address of the leaf CD table.
    pub const fn l2_table(self) -> u64 {
        self.l2ptr() << 12
    }
}

/// CD dw0 (5.4.1): the TCR-like fields, V and the ASID (`CTXDESC_CD_0_*`).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct CdDw0 {
    /// TTB0 input size: `64 - T0SZ` bits.
    #[bits(6)]
    pub t0sz: u8,
    /// TG0 (bits 7:6): TTB0 granule.
    #[bits(2)]
    pub tg0: Granule,
    /// TTB0 walk inner cacheability, [`super::cache`].
    #[bits(2)]
    pub ir0: u8,
    /// OR0 (bits 11:10): TTB0 walk outer cacheability, [`super::cache`].
    #[bits(2)]
    pub or0: u8,
    /// SH0 (bits 13:12): TTB0 walk shareability, [`super::sh`].
    #[bits(2)]
    pub sh0: u8,
    /// Disable TTB0 walks.
    pub epd0: bool,
    /// Big-endian walks.
    pub endi: bool,
    /// T1SZ (bits 21:16): TTB1 input size, `64 - T1SZ` bits.
    #[bits(6)]
    pub t1sz: u8,
    /// TTB1 granule, in TCR.TG1's encoding: see [`CdDw0::tg1_granule`].
    #[bits(2)]
    pub tg1: u8,
    /// IR1 (bits 25:24): TTB1 walk inner cacheability.
    #[bits(2)]
    pub ir1: u8,
    /// OR1 (bits 27:26): TTB1 walk outer cacheability.
    #[bits(2)]
    pub or1: u8,
    /// SH1 (bits 29:28): TTB1 walk shareability.
    #[bits(2)]
    pub sh1: u8,
    /// Disable TTB1 walks (Linux always sets it).
    pub epd1: bool,
    /// Valid; 0 ⇒ C_BAD_CD.
    pub v: bool,
    /// Intermediate physical size, encoded as [`super::pa_bits`].
    #[bits(3)]
    pub ips: u8,
    /// Access-flag fault disable.
    pub affd: bool,
    /// WXN (bit 36): writable implies execute-never.
    pub wxn: bool,
    /// UWXN (bit 37): unprivileged-writable implies privileged execute-never (AArch32).
    pub uwxn: bool,
    /// Top-byte ignore: bit 38 for TTB0, bit 39 for TTB1.
    #[bits(2)]
    pub tbi: u8,
    /// PAN (bit 40): privileged access never to unprivileged-accessible pages.
    pub pan: bool,
    /// AArch64 tables (must be 1 on SMMUs without AArch32).
    pub aa64: bool,
    /// Hardware dirty-state update.
    pub hd: bool,
    /// Hardware access-flag update.
    pub ha: bool,
    /// Stall faults.
    pub s: bool,
    /// Record faults in the event queue.
    pub r: bool,
    /// Abort (rather than RAZ/WI) terminated transactions.
    pub a: bool,
    /// ASID set: 1 = not shared with CPU broadcast TLB maintenance.
    pub aset: bool,
    /// ASID (bits 63:48).
    pub asid: u16,
}

impl CdDw0 {
    /// TG1's granule: 1 16 KiB, 2 4 KiB, 3 64 KiB; `None` for the reserved 0.
    pub const fn tg1_granule(self) -> Option<Granule> {
        match self.tg1() {
            1 => Some(Granule::Size16K),
            2 => Some(Granule::Size4K),
            3 => Some(Granule::Size64K),
            _ => None,
        }
    }
}

/// CD dw1 and dw2 (5.4.1): a translation table base, TTB0 or TTB1 (`CTXDESC_CD_1_TTB0_MASK`).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct CdTtb {
    /// Secure CDs only.
    pub nscfg: bool,
    /// Hierarchical attribute disable (IDR3.HAD; QEMU `CD_HAD`).
    pub had: bool,
    /// Unprivileged-access fault (later revisions).
    pub e0pd: bool,
    #[bits(1)]
    __: u8,
    /// Table address bits 51:4.
    #[bits(48)]
    pub ttb: u64,
    #[bits(12)]
    __: u16,
}

impl CdTtb {
    /// Physical address of the stage-1 translation table, 16-byte aligned.
    pub const fn table(self) -> u64 {
        self.ttb() << 4
    }
    /// The word for a table at `pa` (bits outside 51:4 dropped), NSCFG, HAD and E0PD clear.
    pub const fn from_table(pa: u64) -> Self {
        CdTtb::new().with_ttb((pa >> 4) & crate::mask64(47, 0))
    }
}

/// A whole 512-bit CD as the eight words memory holds: dw0 config, dw1 TTB0, dw2 TTB1, dw3 MAIR (MAIR0 in the
/// low 32 bits, MAIR1 in the high), dw4 AMAIR; dw5–dw7 (implementation defined, MPAM) kept raw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct Cd(pub [u64; 8]);

impl Cd {
    /// Word 0: the TCR-like configuration, V and the ASID.
    pub const fn dw0(&self) -> CdDw0 {
        CdDw0::from_bits(self.0[0])
    }
    /// Word 1: TTB0 with its flags.
    pub const fn ttb0_word(&self) -> CdTtb {
        CdTtb::from_bits(self.0[1])
    }
    /// Word 2: TTB1 with its flags.
    pub const fn ttb1_word(&self) -> CdTtb {
        CdTtb::from_bits(self.0[2])
    }
    /// CD.V: valid; traffic through an invalid CD is C_BAD_CD.
    pub const fn valid(&self) -> bool {
        self.dw0().v()
    }
    /// CD.ASID, the 16-bit ASID that tags the context's TLB entries.
    pub const fn asid(&self) -> u16 {
        self.dw0().asid()
    }
    /// Physical address of the TTB0 table (the lower VA range; the one Linux uses).
    pub const fn ttb0(&self) -> u64 {
        self.ttb0_word().table()
    }
    /// Physical address of the TTB1 table (the upper VA range).
    pub const fn ttb1(&self) -> u64 {
        self.ttb1_word().table()
    }
    /// CD.MAIR, word 3: eight 8-bit memory attributes, indexed by a descriptor's AttrIndx.
    pub const fn mair(&self) -> u64 {
        self.0[3]
    }
    /// CD.AMAIR, word 4: implementation-defined auxiliary attributes.
    pub const fn amair(&self) -> u64 {
        self.0[4]
    }
    /// MAIR attribute `idx` (0–7), the byte a stage-1 descriptor's AttrIndx selects.
    pub const fn mair_attr(&self, idx: u8) -> u8 {
        (self.0[3] >> ((idx as u32 & 7) * 8)) as u8
    }
    /// Input-address bits translated through TTB0: `64 - T0SZ`.
    pub const fn ia_bits0(&self) -> u32 {
        64u32.saturating_sub(self.dw0().t0sz() as u32)
    }
    /// Whether TTB0 lies within the IPS the CD declares (QEMU rejects the CD otherwise). `false` for the
    /// reserved IPS encoding.
    pub const fn ttb0_within_ips(&self) -> bool {
        match super::pa_bits(self.dw0().ips()) {
            Some(bits) => self.ttb0() >> bits == 0,
            None => false,
        }
    }
    /// A stage-1 CD shaped as Linux's `arm_smmu_make_s1_cd` builds it for a 4 KiB-granule io-pgtable: TTB0 walks
    /// write-back inner shareable, TTB1 disabled, AArch64, faults recorded and aborted, ASET, valid.
    pub const fn s1(asid: u16, ttb0: u64, t0sz: u8, ips: u8, mair: u64) -> Self {
        let dw0 = CdDw0::new()
            .with_t0sz(t0sz & 0x3f)
            .with_tg0(Granule::Size4K)
            .with_ir0(super::cache::WBRA)
            .with_or0(super::cache::WBRA)
            .with_sh0(super::sh::ISH)
            .with_epd1(true)
            .with_v(true)
            .with_ips(ips & 7)
            .with_aa64(true)
            .with_r(true)
            .with_a(true)
            .with_aset(true)
            .with_asid(asid);
        Cd([dw0.into_bits(), CdTtb::from_table(ttb0).into_bits(), 0, mair, 0, 0, 0, 0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cd_dw0_fields_at_spec_bits() {
        let one: [(CdDw0, u64); 30] = [
            (CdDw0::new().with_t0sz(0x3f), 0x3f),
            (CdDw0::new().with_tg0(Granule::Size16K), 2 << 6),
            (CdDw0::new().with_ir0(3), 3 << 8),
            (CdDw0::new().with_or0(3), 3 << 10),
            (CdDw0::new().with_sh0(3), 3 << 12),
            (CdDw0::new().with_epd0(true), 1 << 14),
            (CdDw0::new().with_endi(true), 1 << 15),
            (CdDw0::new().with_t1sz(0x3f), 0x3f << 16),
            (CdDw0::new().with_tg1(3), 3 << 22),
            (CdDw0::new().with_ir1(3), 3 << 24),
            (CdDw0::new().with_or1(3), 3 << 26),
            (CdDw0::new().with_sh1(3), 3 << 28),
            (CdDw0::new().with_epd1(true), 1 << 30),
            (CdDw0::new().with_v(true), 1 << 31),
            (CdDw0::new().with_ips(7), 7 << 32),
            (CdDw0::new().with_affd(true), 1 << 35),
            (CdDw0::new().with_wxn(true), 1 << 36),
            (CdDw0::new().with_uwxn(true), 1 << 37),
            (CdDw0::new().with_tbi(1), 1 << 38),
            (CdDw0::new().with_tbi(2), 1 << 39),
            (CdDw0::new().with_pan(true), 1 << 40),
            (CdDw0::new().with_aa64(true), 1 << 41),
            (CdDw0::new().with_hd(true), 1 << 42),
            (CdDw0::new().with_ha(true), 1 << 43),
            (CdDw0::new().with_s(true), 1 << 44),
            (CdDw0::new().with_r(true), 1 << 45),
            (CdDw0::new().with_a(true), 1 << 46),
            (CdDw0::new().with_aset(true), 1 << 47),
            (CdDw0::new().with_asid(0xffff), 0xffff << 48),
            (CdDw0::new().with_asid(1), 1 << 48),
        ];
        for (w, raw) in one {
            assert_eq!(w.into_bits(), raw, "{w:?}");
        }
        assert_eq!(CdDw0::from_bits(3 << 6).tg0(), Granule(3), "reserved TG0 decodes");
        assert_eq!(CdDw0::new().with_tg1(2).tg1_granule(), Some(Granule::Size4K));
        assert_eq!(CdDw0::new().with_tg1(1).tg1_granule(), Some(Granule::Size16K));
        assert_eq!(CdDw0::new().with_tg1(3).tg1_granule(), Some(Granule::Size64K));
        assert_eq!(CdDw0::new().tg1_granule(), None);
    }

    #[test]
    fn cd_table_words() {
        let t = CdTtb::from_table(0x000f_ffff_ffff_fff0).with_had(true).with_nscfg(true);
        assert_eq!(t.into_bits(), 0x000f_ffff_ffff_fff3);
        assert_eq!(t.table(), 0x000f_ffff_ffff_fff0);
        assert_eq!(CdTtb::new().with_e0pd(true).into_bits(), 1 << 2);
        assert_eq!(CdTtb::from_bits(u64::MAX).table(), crate::mask64(51, 4));
    }

    #[test]
    fn linux_shaped_cd() {
        let cd = Cd::s1(0x42, 0x8_1234_5000, 16, 5, 0xf404_ff44);
        assert_eq!(
            cd.0[0],
            16 | 1 << 8
                | 1 << 10
                | 3 << 12
                | 1 << 30
                | 1 << 31
                | 5 << 32
                | 1 << 41
                | 1 << 45
                | 1 << 46
                | 1 << 47
                | 0x42 << 48
        );
        assert_eq!(cd.0[1], 0x8_1234_5000);
        assert_eq!(cd.0[3], 0xf404_ff44);
        assert!(cd.valid());
        assert_eq!((cd.asid(), cd.ttb0(), cd.ia_bits0()), (0x42, 0x8_1234_5000, 48));
        assert_eq!((cd.mair_attr(0), cd.mair_attr(1), cd.mair_attr(2), cd.mair_attr(3)), (0x44, 0xff, 0x04, 0xf4));
        assert!(cd.ttb0_within_ips());
        assert!(!Cd::s1(1, 1 << 48, 16, 5, 0).ttb0_within_ips(), "TTB0 beyond a 48-bit IPS");
        assert!(!Cd::s1(1, 0x1000, 16, 7, 0).ttb0_within_ips(), "reserved IPS");
        let junk = Cd([u64::MAX; 8]);
        assert_eq!(junk.ia_bits0(), 1);
        assert_eq!(junk.mair_attr(0xff), 0xff);
    }

    #[test]
    fn cd_l1_descriptor_and_indexing() {
        let d = CdL1Desc::new_table(0x4_0001_0000);
        assert_eq!(d.into_bits(), 0x4_0001_0001);
        assert_eq!(d.l2_table(), 0x4_0001_0000);
        assert_eq!(CdL1Desc::from_bits(u64::MAX).l2_table(), crate::mask64(51, 12));
        assert_eq!((cd_l1_index(0x12345, S1Fmt::TwoLevel64K), cd_l2_index(0x12345, S1Fmt::TwoLevel64K)), (0x48, 0x345));
        assert_eq!((cd_l1_index(0x12345, S1Fmt::TwoLevel4K), cd_l2_index(0x12345, S1Fmt::TwoLevel4K)), (0x48d, 0x05));
        assert_eq!((cd_l1_index(77, S1Fmt::Linear), cd_l2_index(77, S1Fmt::Linear)), (77, 77));
        assert_eq!(cd_split(S1Fmt(3)), 0);
        assert_eq!(CD_L2_ENTRIES_64K as u64 * CD_SIZE, 64 * 1024);
        assert_eq!(CD_L2_ENTRIES_4K as u64 * CD_SIZE, 4 * 1024);
    }

    #[test]
    fn cd_words_round_trip_any_raw_value() {
        for raw in [0u64, u64::MAX, 0x5555_5555_5555_5555, 0xdead_beef_0bad_f00d] {
            assert_eq!(CdDw0::from_bits(raw).into_bits(), raw);
            assert_eq!(CdTtb::from_bits(raw).into_bits(), raw);
            assert_eq!(CdL1Desc::from_bits(raw).into_bits(), raw);
        }
    }
}
