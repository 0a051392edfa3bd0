//! Command queue entries (spec 4.1–4.7): 16 bytes, two words, opcode in dw0 bits 7:0. The per-word bitfields
//! here give raw access; [`super::command::Command`] encodes and decodes whole commands.

use bitfield_struct::bitfield;

/// Command opcodes (4.1; Linux `CMDQ_OP_*`).
#[open_enum::open_enum]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Opcode {
    /// CMD_PREFETCH_CONFIG: hint to fetch a stream's STE (and CD) (`CMDQ_OP_PREFETCH_CFG`).
    PrefetchConfig = 0x01,
    /// CMD_PREFETCH_ADDR: hint to fetch translations for an address range.
    PrefetchAddr = 0x02,
    /// CMD_CFGI_STE: invalidate one StreamID's cached STE (`CMDQ_OP_CFGI_STE`).
    CfgiSte = 0x03,
    /// Also CMD_CFGI_ALL, with Range = 31 (Linux `CMDQ_OP_CFGI_ALL`).
    CfgiSteRange = 0x04,
    /// CMD_CFGI_CD: invalidate one cached CD (`CMDQ_OP_CFGI_CD`).
    CfgiCd = 0x05,
    /// CMD_CFGI_CD_ALL: invalidate every cached CD of a StreamID (`CMDQ_OP_CFGI_CD_ALL`).
    CfgiCdAll = 0x06,
    /// MPAM VMS invalidation (SMMUv3.2). QEMU's enum calls 0x07 "CFGI_ALL", which it is not.
    CfgiVmsPidm = 0x07,
    /// CMD_TLBI_NH_ALL: every stage-1 entry of a VMID (`CMDQ_OP_TLBI_NH_ALL`).
    TlbiNhAll = 0x10,
    /// CMD_TLBI_NH_ASID: non-global stage-1 entries of an ASID (`CMDQ_OP_TLBI_NH_ASID`).
    TlbiNhAsid = 0x11,
    /// CMD_TLBI_NH_VA: stage-1 entries for a VA in an ASID (`CMDQ_OP_TLBI_NH_VA`).
    TlbiNhVa = 0x12,
    /// CMD_TLBI_NH_VAA: stage-1 entries for a VA in every ASID (`CMDQ_OP_TLBI_NH_VAA`).
    TlbiNhVaa = 0x13,
    /// CMD_TLBI_EL3_ALL: every EL3 entry (secure command queue only).
    TlbiEl3All = 0x18,
    /// CMD_TLBI_EL3_VA: EL3 entries for a VA (secure command queue only).
    TlbiEl3Va = 0x1a,
    /// CMD_TLBI_EL2_ALL: every EL2 and EL2-E2H entry (`CMDQ_OP_TLBI_EL2_ALL`).
    TlbiEl2All = 0x20,
    /// CMD_TLBI_EL2_ASID: non-global EL2-E2H entries of an ASID (`CMDQ_OP_TLBI_EL2_ASID`).
    TlbiEl2Asid = 0x21,
    /// CMD_TLBI_EL2_VA: EL2 entries for a VA (`CMDQ_OP_TLBI_EL2_VA`).
    TlbiEl2Va = 0x22,
    /// CMD_TLBI_EL2_VAA: EL2-E2H entries for a VA in every ASID.
    TlbiEl2Vaa = 0x23,
    /// CMD_TLBI_S12_VMALL: every stage-1 and stage-2 entry of a VMID (`CMDQ_OP_TLBI_S12_VMALL`).
    TlbiS12Vmall = 0x28,
    /// CMD_TLBI_S2_IPA: stage-2 entries for an IPA (`CMDQ_OP_TLBI_S2_IPA`).
    TlbiS2Ipa = 0x2a,
    /// CMD_TLBI_NSNH_ALL: every non-secure, non-hypervisor entry (`CMDQ_OP_TLBI_NSNH_ALL`).
    TlbiNsnhAll = 0x30,
    /// CMD_ATC_INV: ATS invalidation of a device's ATC (`CMDQ_OP_ATC_INV`).
    AtcInv = 0x40,
    /// CMD_PRI_RESP: response to a PRI page request group (`CMDQ_OP_PRI_RESP`).
    PriResp = 0x41,
    /// CMD_RESUME: retry or terminate a stalled transaction (`CMDQ_OP_RESUME`).
    Resume = 0x44,
    /// CMD_STALL_TERM: terminate every stalled transaction of a StreamID.
    StallTerm = 0x45,
    /// CMD_SYNC: completes once every earlier command has (`CMDQ_OP_CMD_SYNC`).
    Sync = 0x46,
}
crate::open_enum_bits!(Opcode, u8, 8);

/// CFGI_STE_RANGE's Range value meaning "every StreamID" (CMD_CFGI_ALL).
pub const CFGI_ALL_RANGE: u8 = 31;
/// ATC_INV Size meaning "the whole ATC" (`ATC_INV_SIZE_ALL`).
pub const ATC_INV_SIZE_ALL: u8 = 52;

/// The opcode of a raw command.
pub const fn opcode(cmd: [u64; 2]) -> Opcode {
    Opcode::from_bits(cmd[0] as u8)
}

/// dw0 of the commands addressed to a stream (PREFETCH_*, CFGI_*, ATC_INV, PRI_RESP, RESUME, STALL_TERM).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct StreamDw0 {
    /// Opcode (bits 7:0).
    #[bits(8)]
    pub op: Opcode,
    #[bits(1)]
    __: u8,
    /// ATC_INV: invalidate global (all-substream) entries too (`CMDQ_ATC_0_GLOBAL`).
    pub global: bool,
    /// Secure stream (secure command queue only).
    pub ssec: bool,
    /// SubstreamID valid (`CMDQ_0_SSV`).
    pub ssv: bool,
    /// SubstreamID (`CMDQ_CFGI_0_SSID`).
    #[bits(20)]
    pub ssid: u32,
    /// StreamID (`CMDQ_CFGI_0_SID`).
    pub sid: u32,
}

/// dw1 of CFGI_STE and CFGI_CD: Leaf (`CMDQ_CFGI_1_LEAF`).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct CfgiLeafDw1 {
    /// Only the leaf entry changed (not a level-1 descriptor).
    pub leaf: bool,
    #[bits(63)]
    __: u64,
}

/// dw1 of CFGI_STE_RANGE: `2^(Range+1)` STEs from the StreamID aligned down to that size (`CMDQ_CFGI_1_RANGE`).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct CfgiRangeDw1 {
    /// Range (bits 4:0): the span is `2^(Range+1)` StreamIDs; 31 is every StreamID.
    #[bits(5)]
    pub range: u8,
    #[bits(59)]
    __: u64,
}

/// The StreamIDs CFGI_STE_RANGE with `range` starting from `sid` covers, as `(first, count)`.
pub const fn cfgi_range_span(sid: u32, range: u8) -> (u32, u64) {
    let n = (range as u32 & 0x1f) + 1;
    let count = 1u64 << n;
    let first = if n >= 32 { 0 } else { sid & !((1u32 << n) - 1) };
    (first, count)
}

/// dw0 of the TLBI commands (`CMDQ_TLBI_0_*`).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct TlbiDw0 {
    /// Opcode (bits 7:0).
    #[bits(8)]
    pub op: Opcode,
    #[bits(4)]
    __: u8,
    /// Range invalidation (IDR3.RIL): `(NUM+1) × 2^SCALE` translation granules.
    #[bits(5)]
    pub num: u8,
    #[bits(3)]
    __: u8,
    /// SCALE (bits 24:20): range multiplier exponent.
    #[bits(5)]
    pub scale: u8,
    #[bits(7)]
    __: u8,
    /// VMID (bits 47:32).
    pub vmid: u16,
    /// ASID (bits 63:48).
    pub asid: u16,
}

/// dw1 of TLBI_*_VA, TLBI_*_VAA and TLBI_S2_IPA (`CMDQ_TLBI_1_*`).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct TlbiDw1 {
    /// Only leaf entries.
    pub leaf: bool,
    #[bits(7)]
    __: u8,
    /// Translation-table level hint (0 = any).
    #[bits(2)]
    pub ttl: u8,
    /// Translation granule of a range invalidation (0 = not a range).
    #[bits(2)]
    pub tg: u8,
    /// Address bits 63:12 (VA), or 51:12 of an IPA for TLBI_S2_IPA.
    #[bits(52)]
    pub addr: u64,
}

/// CMD_SYNC completion signal (`CMDQ_SYNC_0_CS_*`).
#[open_enum::open_enum]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum SyncCs {
    /// SIG_NONE: no signal; software polls CMDQ_CONS.
    None = 0,
    /// Interrupt, i.e. an MSI write when MSIAddress ≠ 0.
    Irq = 1,
    /// WFE wake-up event.
    Sev = 2,
}
crate::open_enum_bits!(SyncCs, u8, 2);

/// CMD_SYNC dw0 (4.7.3; `CMDQ_SYNC_0_*`).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct SyncDw0 {
    /// Opcode (bits 7:0).
    #[bits(8)]
    pub op: Opcode,
    #[bits(4)]
    __: u8,
    /// CS (bits 13:12): completion signal.
    #[bits(2)]
    pub cs: SyncCs,
    #[bits(8)]
    __: u8,
    /// MSI shareability.
    #[bits(2)]
    pub msh: u8,
    /// MSI memory attributes.
    #[bits(4)]
    pub msiattr: u8,
    #[bits(4)]
    __: u8,
    /// The 32-bit value the SMMU writes at MSIAddress on completion.
    pub msidata: u32,
}

/// CMD_SYNC dw1: MSIAddress bits 51:2 (`CMDQ_SYNC_1_MSIADDR_MASK`).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct SyncDw1 {
    #[bits(2)]
    __: u8,
    /// MSIAddress bits 51:2 (4-byte aligned).
    #[bits(50)]
    pub msiaddr: u64,
    #[bits(12)]
    __: u16,
}

/// dw1 of ATC_INV (`CMDQ_ATC_1_*`) and PREFETCH_ADDR (`CMDQ_PREFETCH_1_*`, whose Size is bits 4:0).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct AddrSizeDw1 {
    /// log2 of the span in 4 KiB pages; ATC_INV 52 = everything.
    #[bits(6)]
    pub size: u8,
    #[bits(6)]
    __: u8,
    /// Address bits 63:12.
    #[bits(52)]
    pub addr: u64,
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_fields_at_spec_bits() {
        let s = StreamDw0::new().with_op(Opcode::CfgiCd).with_ssec(true).with_ssv(true).with_ssid(0xfffff);
        assert_eq!(s.with_sid(0xffff_ffff).into_bits(), 0xffff_ffff << 32 | 0xfffff << 12 | 1 << 11 | 1 << 10 | 5);
        assert_eq!(StreamDw0::new().with_global(true).into_bits(), 1 << 9);
        let t = TlbiDw0::new().with_num(31).with_scale(31).with_vmid(0xffff).with_asid(0xffff);
        assert_eq!(t.into_bits(), 0xffff_ffff << 32 | 31 << 20 | 31 << 12);
        let t1 = TlbiDw1::new().with_leaf(true).with_ttl(3).with_tg(3).with_addr(crate::mask64(51, 0));
        assert_eq!(t1.into_bits(), !0xfff | 3 << 10 | 3 << 8 | 1);
        assert_eq!(CfgiLeafDw1::new().with_leaf(true).into_bits(), 1);
        assert_eq!(CfgiRangeDw1::new().with_range(31).into_bits(), 31);
        let y = SyncDw0::new().with_cs(SyncCs::Sev).with_msh(3).with_msiattr(0xf).with_msidata(0xffff_ffff);
        assert_eq!(y.into_bits(), 0xffff_ffff << 32 | 0xf << 24 | 3 << 22 | 2 << 12);
        assert_eq!(SyncDw1::new().with_msiaddr(crate::mask64(49, 0)).into_bits(), crate::mask64(51, 2));
        assert_eq!(AddrSizeDw1::new().with_size(0x3f).with_addr(1).into_bits(), 1 << 12 | 0x3f);
        for raw in [0u64, u64::MAX, 0x5555_5555_5555_5555, 0xdead_beef_0bad_f00d] {
            assert_eq!(StreamDw0::from_bits(raw).into_bits(), raw);
            assert_eq!(TlbiDw0::from_bits(raw).into_bits(), raw);
            assert_eq!(TlbiDw1::from_bits(raw).into_bits(), raw);
            assert_eq!(SyncDw0::from_bits(raw).into_bits(), raw);
            assert_eq!(SyncDw1::from_bits(raw).into_bits(), raw);
            assert_eq!(AddrSizeDw1::from_bits(raw).into_bits(), raw);
        }
    }

    #[test]
    fn cfgi_range() {
        assert_eq!(cfgi_range_span(0x1234, 7), (0x1200, 256));
        assert_eq!(cfgi_range_span(0x1234, 0), (0x1234, 2));
        assert_eq!(cfgi_range_span(0xffff_ffff, 31), (0, 1 << 32));
        assert_eq!(cfgi_range_span(5, 0xff), (0, 1 << 32), "Range is five bits");
    }
}
