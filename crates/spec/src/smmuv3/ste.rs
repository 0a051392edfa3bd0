//! Stream Table Entry (spec 5.2): the 512-bit STE, per-word bitfields and its Config encodings.

use super::pgtable::Granule;
use bitfield_struct::bitfield;

/// Bytes of one STE (`STRTAB_STE_DWORDS` × 8).
pub const STE_SIZE: u64 = 64;

/// STE.Config (5.2): what happens to a stream's traffic (`STRTAB_STE_0_CFG_*`). Bit 2 clear means abort without
/// an event, whatever bits 1:0 hold (QEMU `STE_CFG_ABORT`); bit 0 enables stage 1, bit 1 stage 2.
#[open_enum::open_enum]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Config {
    /// 0b000: abort every transaction, no event (`STRTAB_STE_0_CFG_ABORT`).
    Abort = 0b000,
    /// 0b100: both stages bypassed (`STRTAB_STE_0_CFG_BYPASS`).
    Bypass = 0b100,
    /// 0b101: stage 1 translates, stage 2 bypassed (`STRTAB_STE_0_CFG_S1_TRANS`).
    S1Translate = 0b101,
    /// 0b110: stage 1 bypassed, stage 2 translates (`STRTAB_STE_0_CFG_S2_TRANS`).
    S2Translate = 0b110,
    /// Stage 1 then stage 2.
    Nested = 0b111,
}
crate::open_enum_bits!(Config, u8, 3);

impl Config {
    /// Traffic is aborted (no event): any value with bit 2 clear.
    pub const fn is_abort(self) -> bool {
        self.0 & 0b100 == 0
    }
    /// 0b100: traffic passes with no translation.
    pub const fn is_bypass(self) -> bool {
        self.0 & 0b111 == 0b100
    }
    /// Stage 1 translates (bit 2 and bit 0 set).
    pub const fn s1_enabled(self) -> bool {
        !self.is_abort() && self.0 & 1 != 0
    }
    /// Stage 2 translates (bit 2 and bit 1 set).
    pub const fn s2_enabled(self) -> bool {
        !self.is_abort() && self.0 & 2 != 0
    }
}

/// STE.S1Fmt: the context-descriptor table format (`STRTAB_STE_0_S1FMT_*`).
#[open_enum::open_enum]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum S1Fmt {
    /// A linear array of `2^S1CDMax` CDs (`STRTAB_STE_0_S1FMT_LINEAR`); 3 is reserved.
    Linear = 0,
    /// 2-level, 4 KiB (64-CD) leaf tables: IHI 0070 5.2; Linux never writes it.
    TwoLevel4K = 1,
    /// 2-level, 64 KiB (1024-CD) leaf tables (`STRTAB_STE_0_S1FMT_64K_L2`).
    TwoLevel64K = 2,
}
crate::open_enum_bits!(S1Fmt, u8, 2);

/// STE.S1DSS: what non-substream traffic does when S1CDMax > 0 (`STRTAB_STE_1_S1DSS_*`).
#[open_enum::open_enum]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum S1Dss {
    /// Abort non-substream traffic, recording F_STREAM_DISABLED.
    Terminate = 0,
    /// Non-substream traffic bypasses stage 1 (`STRTAB_STE_1_S1DSS_BYPASS`).
    Bypass = 1,
    /// Translate with CD 0.
    Ssid0 = 2,
}
crate::open_enum_bits!(S1Dss, u8, 2);

/// STE.EATS: ATS translation requests (`STRTAB_STE_1_EATS_*`).
#[open_enum::open_enum]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Eats {
    /// ATS translation requests are refused; translated transactions abort (`STRTAB_STE_1_EATS_ABT`).
    Abort = 0,
    /// Full ATS: requests translated, translated traffic passes (`STRTAB_STE_1_EATS_TRANS`).
    Trans = 1,
    /// Split-stage: stage 1 by the device, stage 2 checked by the SMMU.
    S1Chk = 2,
}
crate::open_enum_bits!(Eats, u8, 2);

/// STE.STRW: the stage-1 translation regime (`STRTAB_STE_1_STRW_*`).
#[open_enum::open_enum]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Strw {
    /// Non-secure EL1 (or secure EL1 for secure streams) (`STRTAB_STE_1_STRW_NSEL1`).
    NsEl1 = 0,
    /// EL2, or EL2-E2H with CR2.E2H (`STRTAB_STE_1_STRW_EL2`); 1 and 3 are reserved.
    El2 = 2,
}
crate::open_enum_bits!(Strw, u8, 2);

/// STE dw0 (5.2).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct SteDw0 {
    /// Valid; 0 ⇒ C_BAD_STE.
    pub v: bool,
    /// Config (bits 3:1).
    #[bits(3)]
    pub config: Config,
    /// S1Fmt (bits 5:4): CD table format.
    #[bits(2)]
    pub s1fmt: S1Fmt,
    /// Context descriptor (table) address bits 51:6.
    #[bits(46)]
    pub s1contextptr: u64,
    #[bits(7)]
    __: u8,
    /// `2^S1CDMax` context descriptors; 0 = one CD and no substreams.
    #[bits(5)]
    pub s1cdmax: u8,
}

/// STE dw1 (5.2).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct SteDw1 {
    /// S1DSS (bits 1:0): default substream behaviour.
    #[bits(2)]
    pub s1dss: S1Dss,
    /// CD fetch inner cacheability, [`super::cache`].
    #[bits(2)]
    pub s1cir: u8,
    /// S1COR (bits 5:4): CD fetch outer cacheability, [`super::cache`].
    #[bits(2)]
    pub s1cor: u8,
    /// CD fetch shareability, [`super::sh`].
    #[bits(2)]
    pub s1csh: u8,
    /// Stage-2 hardware-use bits 59–62 (positions from IHI 0070 5.2; not in Linux's or QEMU's headers, like
    /// DRE, CONT, DCP and PPAR below).
    #[bits(4)]
    pub s2hwu: u8,
    /// Destructive-read enable.
    pub dre: bool,
    /// Contiguous hint.
    #[bits(4)]
    pub cont: u8,
    /// Directed cache prefetch.
    pub dcp: bool,
    /// PRI page-request PASID required.
    pub ppar: bool,
    /// Merge events arising from the same fault (`STRTAB_STE_1_MEV`).
    pub mev: bool,
    #[bits(5)]
    __: u8,
    /// Stage-2 forced write-back (`STRTAB_STE_1_S2FWB`).
    pub s2fwb: bool,
    /// S1MPAM (bit 26): MPAM from the CD (with IDR3.MPAM).
    pub s1mpam: bool,
    /// Stage-1 stall disable (`STRTAB_STE_1_S1STALLD`).
    pub s1stalld: bool,
    /// EATS (bits 29:28): ATS handling.
    #[bits(2)]
    pub eats: Eats,
    /// STRW (bits 31:30): stage-1 translation regime.
    #[bits(2)]
    pub strw: Strw,
    /// MemAttr (bits 35:32): memory type used with MTCFG = 1.
    #[bits(4)]
    pub memattr: u8,
    /// MTCFG (bit 36): replace the incoming memory type with MemAttr.
    pub mtcfg: bool,
    /// ALLOCCFG (bits 40:37): allocation-hint override (0b0xxx keeps incoming).
    #[bits(4)]
    pub alloccfg: u8,
    #[bits(3)]
    __: u8,
    /// Shareability override: 1 = use incoming (`STRTAB_STE_1_SHCFG_INCOMING`).
    #[bits(2)]
    pub shcfg: u8,
    /// NSCFG (bits 47:46): security override (secure streams only).
    #[bits(2)]
    pub nscfg: u8,
    /// PRIVCFG (bits 49:48): 0 use incoming, 2 unprivileged, 3 privileged.
    #[bits(2)]
    pub privcfg: u8,
    /// INSTCFG (bits 51:50): 0 use incoming, 2 data, 3 instruction.
    #[bits(2)]
    pub instcfg: u8,
    #[bits(12)]
    __: u16,
}

impl SteDw1 {
    /// STE.SHCFG "use incoming shareability".
    pub const SHCFG_INCOMING: u8 = 1;
}

/// STE dw2 (5.2): the stage-2 VMID and the VTCR-like walk configuration (`STRTAB_STE_2_*`).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct SteDw2 {
    /// S2VMID (bits 15:0): the stream's VMID.
    pub s2vmid: u16,
    #[bits(16)]
    __: u16,
    /// IPA size is `64 - S2T0SZ` bits.
    #[bits(6)]
    pub s2t0sz: u8,
    /// Starting level, see [`super::s2_start_level`].
    #[bits(2)]
    pub s2sl0: u8,
    /// S2IR0 (bits 41:40): stage-2 walk inner cacheability, [`super::cache`].
    #[bits(2)]
    pub s2ir0: u8,
    /// S2OR0 (bits 43:42): stage-2 walk outer cacheability, [`super::cache`].
    #[bits(2)]
    pub s2or0: u8,
    /// S2SH0 (bits 45:44): stage-2 walk shareability, [`super::sh`].
    #[bits(2)]
    pub s2sh0: u8,
    /// Granule: 0 4 KiB, 1 64 KiB, 2 16 KiB.
    #[bits(2)]
    pub s2tg: Granule,
    /// Output size, encoded as [`super::pa_bits`].
    #[bits(3)]
    pub s2ps: u8,
    /// AArch64 tables (must be 1).
    pub s2aa64: bool,
    /// Big-endian walks.
    pub s2endi: bool,
    /// Access-flag fault disable.
    pub s2affd: bool,
    /// Protected table walk.
    pub s2ptw: bool,
    /// S2HD (bit 55): hardware dirty-state update at stage 2.
    pub s2hd: bool,
    /// S2HA (bit 56): hardware access-flag update at stage 2.
    pub s2ha: bool,
    /// Stall stage-2 faults.
    pub s2s: bool,
    /// Record stage-2 faults in the event queue.
    pub s2r: bool,
    #[bits(5)]
    __: u8,
}

/// STE dw3 (5.2): the stage-2 table base (`STRTAB_STE_3_S2TTB_MASK`).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct SteDw3 {
    /// Secure STEs only.
    pub s2nsw: bool,
    /// S2NSA (bit 1): stage-2 output non-secure (secure STEs only).
    pub s2nsa: bool,
    #[bits(2)]
    __: u8,
    /// Stage-2 table address bits 51:4.
    #[bits(48)]
    pub s2ttb: u64,
    #[bits(12)]
    __: u16,
}

/// A whole 512-bit STE as the eight words memory holds. Words 4–7 (MPAM, VMSPtr, secure stage 2) are kept raw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct Ste(pub [u64; 8]);

impl Ste {
    /// Word 0 (bits 63:0): V, Config, S1Fmt, S1ContextPtr, S1CDMax.
    pub const fn dw0(&self) -> SteDw0 {
        SteDw0::from_bits(self.0[0])
    }
    /// Word 1 (bits 127:64): CD fetch attributes, EATS, STRW and the attribute overrides.
    pub const fn dw1(&self) -> SteDw1 {
        SteDw1::from_bits(self.0[1])
    }
    /// Word 2 (bits 191:128): S2VMID and the stage-2 walk configuration.
    pub const fn dw2(&self) -> SteDw2 {
        SteDw2::from_bits(self.0[2])
    }
    /// Word 3 (bits 255:192): S2TTB.
    pub const fn dw3(&self) -> SteDw3 {
        SteDw3::from_bits(self.0[3])
    }
    /// An STE from its first four words; words 4–7 zero.
    pub const fn from_words(dw0: SteDw0, dw1: SteDw1, dw2: SteDw2, dw3: SteDw3) -> Self {
        Ste([dw0.into_bits(), dw1.into_bits(), dw2.into_bits(), dw3.into_bits(), 0, 0, 0, 0])
    }
    /// STE.V: valid; an invalid STE makes the stream's traffic abort with C_BAD_STE.
    pub const fn valid(&self) -> bool {
        self.dw0().v()
    }
    /// STE.Config.
    pub const fn config(&self) -> Config {
        self.dw0().config()
    }
    /// Context-descriptor table address.
    pub const fn s1_context_ptr(&self) -> u64 {
        self.dw0().s1contextptr() << 6
    }
    /// Context descriptors the table holds: `2^S1CDMax`.
    pub const fn cd_count(&self) -> u64 {
        1 << self.dw0().s1cdmax()
    }
    /// STE.S2VMID, the VMID that tags stage-2 (and, with stage 1, the stream's) TLB entries.
    pub const fn s2vmid(&self) -> u16 {
        self.dw2().s2vmid()
    }
    /// Stage-2 table address.
    pub const fn s2ttb(&self) -> u64 {
        self.dw3().s2ttb() << 4
    }
    /// Linux's abort STE (`arm_smmu_make_abort_ste`): V, Config = abort.
    pub const fn abort() -> Self {
        Self::from_words(
            SteDw0::new().with_v(true).with_config(Config::Abort),
            SteDw1::new(),
            SteDw2::new(),
            SteDw3::new(),
        )
    }
    /// Linux's bypass STE (`arm_smmu_make_bypass_ste`): V, Config = bypass, SHCFG = incoming.
    pub const fn bypass() -> Self {
        Self::from_words(
            SteDw0::new().with_v(true).with_config(Config::Bypass),
            SteDw1::new().with_shcfg(SteDw1::SHCFG_INCOMING),
            SteDw2::new(),
            SteDw3::new(),
        )
    }
    /// A stage-1 STE pointing at a CD table, with the fetch attributes Linux uses
    /// (`arm_smmu_make_cdtable_ste`: write-back read-allocate, inner shareable, NS-EL1).
    pub const fn s1(cd_table: u64, fmt: S1Fmt, s1cdmax: u8, s1dss: S1Dss) -> Self {
        Self::from_words(
            SteDw0::new()
                .with_v(true)
                .with_config(Config::S1Translate)
                .with_s1fmt(fmt)
                .with_s1contextptr((cd_table >> 6) & crate::mask64(45, 0))
                .with_s1cdmax(s1cdmax & 0x1f),
            SteDw1::new()
                .with_s1dss(s1dss)
                .with_s1cir(super::cache::WBRA)
                .with_s1cor(super::cache::WBRA)
                .with_s1csh(super::sh::ISH)
                .with_strw(Strw::NsEl1),
            SteDw2::new(),
            SteDw3::new(),
        )
    }
    /// A stage-2 STE with a 4 KiB-granule AArch64 walk as Linux builds it (`arm_smmu_make_s2_domain_ste`:
    /// write-back inner-shareable walks, S2PTW, faults recorded).
    pub const fn s2(vmid: u16, s2ttb: u64, s2t0sz: u8, s2sl0: u8, s2ps: u8) -> Self {
        Self::from_words(
            SteDw0::new().with_v(true).with_config(Config::S2Translate),
            SteDw1::new().with_shcfg(SteDw1::SHCFG_INCOMING),
            SteDw2::new()
                .with_s2vmid(vmid)
                .with_s2t0sz(s2t0sz & 0x3f)
                .with_s2sl0(s2sl0 & 3)
                .with_s2ir0(super::cache::WBRA)
                .with_s2or0(super::cache::WBRA)
                .with_s2sh0(super::sh::ISH)
                .with_s2tg(Granule::Size4K)
                .with_s2ps(s2ps & 7)
                .with_s2aa64(true)
                .with_s2ptw(true)
                .with_s2r(true),
            SteDw3::new().with_s2ttb((s2ttb >> 4) & crate::mask64(47, 0)),
        )
    }
    /// Reserved bits set, per word (dw0 58:52, dw2 31:16 and 63:60, dw3 3:2 and 63:52); words 1 and 4–7 are
    /// not checked (their upper fields differ between SMMU revisions and secure state).
    pub const fn reserved_bits(&self) -> [u64; 8] {
        [
            self.0[0] & crate::mask64(58, 52),
            0,
            self.0[2] & (crate::mask64(31, 16) | crate::mask64(63, 60)),
            self.0[3] & (crate::mask64(3, 2) | crate::mask64(63, 52)),
            0,
            0,
            0,
            0,
        ]
    }
    /// Words 0, 2 or 3 have a reserved bit set (an STE with reserved bits is C_BAD_STE).
    pub const fn has_reserved_bits(&self) -> bool {
        let r = self.reserved_bits();
        r[0] | r[2] | r[3] != 0
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_encodings() {
        let named = [
            (Config::Abort, 0b000, true, false, false, false),
            (Config::Bypass, 0b100, false, true, false, false),
            (Config::S1Translate, 0b101, false, false, true, false),
            (Config::S2Translate, 0b110, false, false, false, true),
            (Config::Nested, 0b111, false, false, true, true),
        ];
        for (c, raw, abort, bypass, s1, s2) in named {
            assert_eq!(c.into_bits(), raw);
            assert_eq!(SteDw0::new().with_config(c).into_bits(), (raw as u64) << 1);
            assert_eq!(SteDw0::from_bits((raw as u64) << 1).config(), c);
            assert_eq!((c.is_abort(), c.is_bypass(), c.s1_enabled(), c.s2_enabled()), (abort, bypass, s1, s2));
        }
        for raw in 1..4 {
            let c = Config::from_bits(raw);
            assert!(c.is_abort() && !c.s1_enabled() && !c.s2_enabled(), "0b0xx aborts: {raw:#b}");
        }
        assert_eq!(Config::from_bits(0xff), Config::Nested, "only three bits");
    }

    #[test]
    fn ste_dw0_dw1_fields_at_spec_bits() {
        assert_eq!(SteDw0::new().with_v(true).into_bits(), 1);
        assert_eq!(SteDw0::new().with_s1fmt(S1Fmt::TwoLevel64K).into_bits(), 2 << 4);
        assert_eq!(SteDw0::new().with_s1contextptr(1).into_bits(), 1 << 6);
        assert_eq!(SteDw0::new().with_s1contextptr(crate::mask64(45, 0)).into_bits(), crate::mask64(51, 6));
        assert_eq!(SteDw0::new().with_s1cdmax(0x1f).into_bits(), 0x1f << 59);
        let one: [(SteDw1, u64); 9] = [
            (SteDw1::new().with_s1dss(S1Dss::Ssid0), 2),
            (SteDw1::new().with_s1cir(3), 3 << 2),
            (SteDw1::new().with_s1cor(3), 3 << 4),
            (SteDw1::new().with_s1csh(3), 3 << 6),
            (SteDw1::new().with_mev(true), 1 << 19),
            (SteDw1::new().with_s2fwb(true), 1 << 25),
            (SteDw1::new().with_s1stalld(true), 1 << 27),
            (SteDw1::new().with_eats(Eats::S1Chk), 2 << 28),
            (SteDw1::new().with_strw(Strw::El2), 2 << 30),
        ];
        for (w, raw) in one {
            assert_eq!(w.into_bits(), raw);
        }
        assert_eq!(SteDw1::new().with_memattr(0xf).with_mtcfg(true).into_bits(), 0x1f << 32);
        assert_eq!(SteDw1::new().with_alloccfg(0xf).into_bits(), 0xf << 37);
        assert_eq!(SteDw1::new().with_shcfg(1).into_bits(), 1 << 44);
        assert_eq!(SteDw1::new().with_nscfg(3).into_bits(), 3 << 46);
        assert_eq!(SteDw1::new().with_privcfg(3).into_bits(), 3 << 48);
        assert_eq!(SteDw1::new().with_instcfg(3).into_bits(), 3 << 50);
        assert_eq!(SteDw1::new().with_s2hwu(0xf).into_bits(), 0xf << 8);
        assert_eq!(SteDw1::new().with_dre(true).with_cont(0xf).into_bits(), 0x1f << 12);
        assert_eq!(SteDw1::new().with_dcp(true).with_ppar(true).into_bits(), 3 << 17);
    }

    #[test]
    fn ste_dw2_dw3_fields_at_spec_bits() {
        let one: [(SteDw2, u64); 16] = [
            (SteDw2::new().with_s2vmid(0xffff), 0xffff),
            (SteDw2::new().with_s2t0sz(0x3f), 0x3f << 32),
            (SteDw2::new().with_s2sl0(3), 3 << 38),
            (SteDw2::new().with_s2ir0(3), 3 << 40),
            (SteDw2::new().with_s2or0(3), 3 << 42),
            (SteDw2::new().with_s2sh0(3), 3 << 44),
            (SteDw2::new().with_s2tg(Granule(3)), 3 << 46),
            (SteDw2::new().with_s2ps(7), 7 << 48),
            (SteDw2::new().with_s2aa64(true), 1 << 51),
            (SteDw2::new().with_s2endi(true), 1 << 52),
            (SteDw2::new().with_s2affd(true), 1 << 53),
            (SteDw2::new().with_s2ptw(true), 1 << 54),
            (SteDw2::new().with_s2hd(true), 1 << 55),
            (SteDw2::new().with_s2ha(true), 1 << 56),
            (SteDw2::new().with_s2s(true), 1 << 57),
            (SteDw2::new().with_s2r(true), 1 << 58),
        ];
        for (w, raw) in one {
            assert_eq!(w.into_bits(), raw);
        }
        assert_eq!(SteDw3::new().with_s2ttb(crate::mask64(47, 0)).into_bits(), crate::mask64(51, 4));
        assert_eq!(SteDw3::new().with_s2nsw(true).with_s2nsa(true).into_bits(), 3);
    }

    #[test]
    fn linux_shaped_stes() {
        assert_eq!(Ste::abort().0, [1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Ste::bypass().0, [1 | 4 << 1, 1 << 44, 0, 0, 0, 0, 0, 0]);
        let s1 = Ste::s1(0x4_0000_1000, S1Fmt::Linear, 0, S1Dss::Terminate);
        assert_eq!(s1.0[0], 1 | 5 << 1 | 0x4_0000_1000);
        assert_eq!(s1.0[1], 1 << 2 | 1 << 4 | 3 << 6);
        assert_eq!(s1.s1_context_ptr(), 0x4_0000_1000);
        assert_eq!(s1.cd_count(), 1);
        let s2 = Ste::s2(7, 0x8_0000_2000, 24, 1, 2);
        assert_eq!(s2.config(), Config::S2Translate);
        assert_eq!(
            s2.0[2],
            7 | 24 << 32 | 1 << 38 | 1 << 40 | 1 << 42 | 3 << 44 | 2 << 48 | 1 << 51 | 1 << 54 | 1 << 58
        );
        assert_eq!(s2.0[3], 0x8_0000_2000);
        assert_eq!((s2.s2vmid(), s2.s2ttb()), (7, 0x8_0000_2000));
        assert!(!s1.has_reserved_bits() && !s2.has_reserved_bits());
    }

    #[test]
    fn ste_reserved_bits_sweep() {
        // (word, lowest bit, highest bit) of each reserved range.
        let reserved = [(0, 52, 58), (2, 16, 31), (2, 60, 63), (3, 2, 3), (3, 52, 63)];
        for w in 0..4 {
            for bit in 0..64u32 {
                let mut ste = Ste::default();
                ste.0[w] = 1 << bit;
                let res = reserved.iter().any(|&(rw, lo, hi)| rw == w && (lo..=hi).contains(&bit));
                assert_eq!(ste.has_reserved_bits(), res, "dw{w} bit {bit}");
                assert_eq!(ste.reserved_bits()[w], if res { 1 << bit } else { 0 });
            }
        }
        let mut ste = Ste::default();
        ste.0[1] = u64::MAX;
        ste.0[7] = u64::MAX;
        assert!(!ste.has_reserved_bits());
    }

    #[test]
    fn ste_words_round_trip_any_raw_value() {
        for raw in [0u64, u64::MAX, 0x5555_5555_5555_5555, 0xdead_beef_0bad_f00d] {
            assert_eq!(SteDw0::from_bits(raw).into_bits(), raw);
            assert_eq!(SteDw1::from_bits(raw).into_bits(), raw);
            assert_eq!(SteDw2::from_bits(raw).into_bits(), raw);
            assert_eq!(SteDw3::from_bits(raw).into_bits(), raw);
            let ste = Ste([raw; 8]);
            assert_eq!(Ste::from_words(ste.dw0(), ste.dw1(), ste.dw2(), ste.dw3()).0[..4], [raw; 4]);
        }
        // Any garbage decodes without a panic.
        let junk = Ste([u64::MAX; 8]);
        assert_eq!(junk.config(), Config(7));
        assert_eq!(junk.dw0().s1fmt(), S1Fmt(3));
        assert_eq!(junk.dw1().s1dss(), S1Dss(3));
        assert_eq!(junk.dw1().eats(), Eats(3));
        assert_eq!(junk.dw1().strw(), Strw(3));
        assert_eq!(junk.cd_count(), 1 << 31);
        assert_eq!(junk.s2ttb(), crate::mask64(51, 4));
    }
}
