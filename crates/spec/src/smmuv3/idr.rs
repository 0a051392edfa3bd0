//! SMMUv3 identification registers (spec 6.3.1–6.3.8): what the SMMU implements.

use bitfield_struct::bitfield;

/// IDR0.ST_LEVEL: stream table formats supported.
#[open_enum::open_enum]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum StLevel {
    /// Linear stream table only.
    LinearOnly = 0,
    /// Linear and 2-level (`IDR0_ST_LVL_2LVL`).
    TwoLevel = 1,
}
crate::open_enum_bits!(StLevel, u8, 2);

/// IDR0.STALL_MODEL.
#[open_enum::open_enum]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum StallModel {
    /// Stall and terminate both supported (`IDR0_STALL_MODEL_STALL`).
    Stall = 0,
    /// Terminate only: stalling is not supported.
    TerminateOnly = 1,
    /// Stall forced on faults configured for stall (`IDR0_STALL_MODEL_FORCE`).
    Force = 2,
}
crate::open_enum_bits!(StallModel, u8, 2);

/// IDR0.TTENDIAN: translation-table endianness supported.
#[open_enum::open_enum]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TtEndian {
    /// Either endianness, selected per table (`IDR0_TTENDIAN_MIXED`).
    Mixed = 0,
    /// Little-endian only (`IDR0_TTENDIAN_LE`).
    Little = 2,
    /// Big-endian only (`IDR0_TTENDIAN_BE`); 1 is reserved.
    Big = 3,
}
crate::open_enum_bits!(TtEndian, u8, 2);

/// IDR0.TTF: translation-table formats supported.
#[open_enum::open_enum]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Ttf {
    /// AArch32 (LPAE) tables only.
    AArch32 = 1,
    /// AArch64 tables only (`IDR0_TTF_AARCH64`).
    AArch64 = 2,
    /// Both AArch32 and AArch64 tables (`IDR0_TTF_AARCH32_64`); 0 is reserved.
    AArch32And64 = 3,
}
crate::open_enum_bits!(Ttf, u8, 2);

/// IDR0 (6.3.1), read-only.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Idr0 {
    /// Stage-2 translation supported.
    pub s2p: bool,
    /// Stage-1 translation supported.
    pub s1p: bool,
    /// TTF (bits 3:2): translation-table formats.
    #[bits(2)]
    pub ttf: Ttf,
    /// Coherent access to tables, queues and MSIs (Linux `ARM_SMMU_FEAT_COHERENCY`).
    pub cohacc: bool,
    /// Broadcast TLB maintenance.
    pub btm: bool,
    /// Hardware translation-table update: 0 none, 1 Access flag, 2 Access and Dirty.
    #[bits(2)]
    pub httu: u8,
    /// DORMHINT (bit 8): STATUSR.DORMANT is implemented.
    pub dormhint: bool,
    /// EL2 (hypervisor) stage-1 contexts.
    pub hyp: bool,
    /// ATS (bit 10): PCIe ATS supported.
    pub ats: bool,
    /// NS1ATS (bit 11): split-stage ATS (STE.EATS = 0b10) not supported when set.
    pub ns1ats: bool,
    /// 16-bit ASIDs (else 8).
    pub asid16: bool,
    /// MSIs for queues and GERROR.
    pub msi: bool,
    /// WFE wake-up event on queue changes.
    pub sev: bool,
    /// ATOS (bit 15): address translation operations (SMMU_GATOS_*).
    pub atos: bool,
    /// PCIe page request interface (PRI queue).
    pub pri: bool,
    /// VMID wildcards (CR0.VMW).
    pub vmw: bool,
    /// 16-bit VMIDs (else 8).
    pub vmid16: bool,
    /// 2-level context-descriptor tables.
    pub cd2l: bool,
    /// VATOS (bit 20): virtual ATOS page.
    pub vatos: bool,
    /// TTENDIAN (bits 22:21): translation-table endianness.
    #[bits(2)]
    pub ttendian: TtEndian,
    /// ATSRECERR (bit 23): configuration errors of ATS translation requests can be recorded (CR2.REC_CFG_ATS).
    pub atsrecerr: bool,
    /// STALL_MODEL (bits 25:24).
    #[bits(2)]
    pub stall_model: StallModel,
    /// Terminate model: 0 = CD.A chooses between abort and RAZ/WI for terminated transactions, 1 = they always
    /// abort (CD.A must be 1; QEMU `smmuv3_init_regs` sets 1 for "always aborted").
    pub term_model: bool,
    /// ST_LEVEL (bits 28:27): stream table formats.
    #[bits(2)]
    pub st_level: StLevel,
    #[bits(1)]
    __: u8,
    /// RME_IMPL (bit 30): Realm Management Extension programming interfaces.
    pub rme_impl: bool,
    #[bits(1)]
    __: u8,
}

/// IDR1 (6.3.2), read-only.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Idr1 {
    /// StreamID width in bits.
    #[bits(6)]
    pub sidsize: u8,
    /// SubstreamID width in bits (0: no substreams).
    #[bits(5)]
    pub ssidsize: u8,
    /// Largest PRI queue: log2 entries.
    #[bits(5)]
    pub priqs: u8,
    /// Largest event queue: log2 entries.
    #[bits(5)]
    pub evtqs: u8,
    /// Largest command queue: log2 entries.
    #[bits(5)]
    pub cmdqs: u8,
    /// ATTR_PERMS_OVR (bit 26): STE.PRIVCFG and INSTCFG override incoming attributes.
    pub attr_perms_ovr: bool,
    /// ATTR_TYPES_OVR (bit 27): STE.MTCFG, MEMATTR, ALLOCCFG, SHCFG override incoming attributes.
    pub attr_types_ovr: bool,
    /// Base addresses are relative to the SMMU (with the presets).
    pub rel: bool,
    /// Queue base registers are fixed by the implementation.
    pub queues_preset: bool,
    /// STRTAB_BASE registers are fixed by the implementation.
    pub tables_preset: bool,
    /// ECMDQ (bit 31): enhanced command queue interfaces.
    pub ecmdq: bool,
}

/// IDR3 (6.3.4), read-only.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Idr3 {
    #[bits(2)]
    __: u8,
    /// Hierarchical attribute disable (CD.HAD0/HAD1).
    pub had: bool,
    /// PBHA (bit 3): page-based hardware attributes (CD.HWU, STE.S2HWU).
    pub pbha: bool,
    /// XNX (bit 4): stage-2 execute-never distinguishes EL0 and EL1.
    pub xnx: bool,
    /// PPS (bit 5): a PASID is always used on PRI auto-generated responses, STE.PPAR ignored.
    pub pps: bool,
    #[bits(1)]
    __: u8,
    /// MPAM (bit 7): memory partitioning and monitoring.
    pub mpam: bool,
    /// FWB (bit 8): stage-2 control of memory types (STE.S2FWB).
    pub fwb: bool,
    /// Small translation tables: T0SZ up to 48 with a 4 KiB granule.
    pub stt: bool,
    /// Range invalidation (TLBI NUM/SCALE).
    pub ril: bool,
    /// BBML (bits 12:11): break-before-make behaviour level, 0–2.
    #[bits(2)]
    pub bbml: u8,
    /// E0PD (bit 13): CD.E0PD0/E0PD1 implemented.
    pub e0pd: bool,
    /// PTWNNC (bit 14): with STE.S2PTW = 0, stage-1 walks to Device memory are treated as Normal non-cacheable.
    pub ptwnnc: bool,
    /// DPT (bit 15): device permission table and STE.EATS = 0b11.
    pub dpt: bool,
    #[bits(16)]
    __: u16,
}

/// IDR5 (6.3.6), read-only.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Idr5 {
    /// Output address size, encoded as [`super::pa_bits`].
    #[bits(3)]
    pub oas: u8,
    #[bits(1)]
    __: u8,
    /// GRAN4K (bit 4): 4 KiB translation granule.
    pub gran4k: bool,
    /// GRAN16K (bit 5): 16 KiB translation granule.
    pub gran16k: bool,
    /// GRAN64K (bit 6): 64 KiB translation granule.
    pub gran64k: bool,
    #[bits(3)]
    __: u8,
    /// Virtual address extension: 1 = 52-bit VAs with 64 KiB granule.
    #[bits(2)]
    pub vax: u8,
    #[bits(4)]
    __: u8,
    /// Maximum outstanding stalled transactions.
    pub stall_max: u16,
}

impl Idr5 {
    /// Output address size in bits, `None` for the reserved encoding.
    pub const fn oas_bits(self) -> Option<u32> {
        super::pa_bits(self.oas())
    }
}

/// IIDR (6.3.7), read-only.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Iidr {
    /// Implementer (bits 11:0): JEP106 code of the designer.
    #[bits(12)]
    pub implementer: u16,
    /// Revision (bits 15:12).
    #[bits(4)]
    pub revision: u8,
    /// Variant (bits 19:16).
    #[bits(4)]
    pub variant: u8,
    /// ProductID (bits 31:20).
    #[bits(12)]
    pub productid: u16,
}

/// AIDR (6.3.8): architecture revision, SMMUv3.x with x the minor revision.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Aidr {
    /// ArchMinorRev (bits 3:0): x in SMMUv3.x.
    #[bits(4)]
    pub arch_minor_rev: u8,
    /// 0 for SMMUv3.
    #[bits(4)]
    pub arch_major_rev: u8,
    #[bits(24)]
    __: u32,
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idr0_fields_at_spec_bits() {
        let one: [(Idr0, u32); 21] = [
            (Idr0::new().with_s2p(true), 0),
            (Idr0::new().with_s1p(true), 1),
            (Idr0::new().with_cohacc(true), 4),
            (Idr0::new().with_btm(true), 5),
            (Idr0::new().with_hyp(true), 9),
            (Idr0::new().with_ats(true), 10),
            (Idr0::new().with_ns1ats(true), 11),
            (Idr0::new().with_asid16(true), 12),
            (Idr0::new().with_msi(true), 13),
            (Idr0::new().with_sev(true), 14),
            (Idr0::new().with_atos(true), 15),
            (Idr0::new().with_pri(true), 16),
            (Idr0::new().with_vmw(true), 17),
            (Idr0::new().with_vmid16(true), 18),
            (Idr0::new().with_cd2l(true), 19),
            (Idr0::new().with_vatos(true), 20),
            (Idr0::new().with_atsrecerr(true), 23),
            (Idr0::new().with_term_model(true), 26),
            (Idr0::new().with_rme_impl(true), 30),
            (Idr0::new().with_dormhint(true), 8),
            (Idr0::new().with_httu(1), 6),
        ];
        for (r, bit) in one {
            assert_eq!(r.into_bits(), 1 << bit, "bit {bit}");
        }
        // A 2-level, little-endian, AArch64, stall-forcing SMMU with A+D updates.
        let raw = 1 << 27 | 2 << 24 | 2 << 21 | 2 << 6 | 2 << 2 | 3;
        let r = Idr0::from_bits(raw);
        assert_eq!(r.st_level(), StLevel::TwoLevel);
        assert_eq!(r.stall_model(), StallModel::Force);
        assert_eq!(r.ttendian(), TtEndian::Little);
        assert_eq!(r.ttf(), Ttf::AArch64);
        assert_eq!(r.httu(), 2);
        assert!(r.s1p() && r.s2p());
        assert_eq!(Idr0::from_bits(3 << 27).st_level(), StLevel(3), "reserved ST_LEVEL decodes");
        assert_eq!(Idr0::from_bits(1 << 21).ttendian(), TtEndian(1));
    }
    #[test]
    fn idr1_idr3_idr5_fields() {
        let r = Idr1::new().with_sidsize(32).with_ssidsize(20).with_priqs(19).with_evtqs(19).with_cmdqs(19);
        assert_eq!(r.into_bits(), 32 | 20 << 6 | 19 << 11 | 19 << 16 | 19 << 21);
        assert_eq!(Idr1::new().with_attr_perms_ovr(true).into_bits(), 1 << 26);
        assert_eq!(Idr1::new().with_attr_types_ovr(true).into_bits(), 1 << 27);
        assert_eq!(Idr1::new().with_rel(true).into_bits(), 1 << 28);
        assert_eq!(Idr1::new().with_queues_preset(true).into_bits(), 1 << 29);
        assert_eq!(Idr1::new().with_tables_preset(true).into_bits(), 1 << 30);
        assert_eq!(Idr1::new().with_ecmdq(true).into_bits(), 1 << 31);
        assert_eq!(Idr3::new().with_had(true).into_bits(), 1 << 2);
        assert_eq!(Idr3::new().with_fwb(true).into_bits(), 1 << 8);
        assert_eq!(Idr3::new().with_stt(true).into_bits(), 1 << 9);
        assert_eq!(Idr3::new().with_ril(true).into_bits(), 1 << 10);
        assert_eq!(Idr3::new().with_bbml(2).into_bits(), 2 << 11);
        assert_eq!(Idr3::new().with_dpt(true).into_bits(), 1 << 15);
        let r5 = Idr5::from_bits(0xffff << 16 | 1 << 10 | 0b111 << 4 | 5);
        assert_eq!(r5.oas_bits(), Some(48));
        assert!(r5.gran4k() && r5.gran16k() && r5.gran64k());
        assert_eq!(r5.vax(), 1);
        assert_eq!(r5.stall_max(), 0xffff);
        assert_eq!(Idr5::from_bits(7).oas_bits(), None);
        let ii = Iidr::from_bits(0x4830_243b);
        assert_eq!((ii.productid(), ii.variant(), ii.revision(), ii.implementer()), (0x483, 0, 2, 0x43b));
        assert_eq!(Aidr::from_bits(0x02).arch_minor_rev(), 2);
    }
    #[test]
    fn id_registers_round_trip_any_raw_value() {
        for raw in [0u32, u32::MAX, 0x5555_5555, 0xdead_beef] {
            assert_eq!(Idr0::from_bits(raw).into_bits(), raw);
            assert_eq!(Idr1::from_bits(raw).into_bits(), raw);
            assert_eq!(Idr3::from_bits(raw).into_bits(), raw);
            assert_eq!(Idr5::from_bits(raw).into_bits(), raw);
            assert_eq!(Iidr::from_bits(raw).into_bits(), raw);
            assert_eq!(Aidr::from_bits(raw).into_bits(), raw);
        }
    }
}
