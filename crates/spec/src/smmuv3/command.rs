//! Typed commands (spec 4.2–4.7): [`Command`] encodes the commands a driver issues into the two words of a queue
//! entry, the way Linux's `arm_smmu_cmdq_build_cmd` lays them out, and decodes any two words back.

use super::cmd::*;

/// Scope fields shared by the address-based TLB invalidations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TlbiScope {
    pub leaf: bool,
    /// Level hint, 0–3.
    pub ttl: u8,
    /// Range granule, 0 = single address.
    pub tg: u8,
    pub num: u8,
    pub scale: u8,
}

/// CMD_SYNC fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SyncCmd {
    pub cs: SyncCs,
    pub msh: u8,
    pub msiattr: u8,
    pub msidata: u32,
    /// MSI address (4-byte aligned; bits 51:2 kept).
    pub msiaddr: u64,
}

impl SyncCmd {
    /// A sync that signals nothing: the driver polls CMDQ_CONS past it.
    pub const fn poll() -> Self {
        SyncCmd { cs: SyncCs::None, msh: 0, msiattr: 0, msidata: 0, msiaddr: 0 }
    }
    /// Linux's MSI polling (`ARM_SMMU_OPT_MSIPOLL`): the SMMU writes `msidata` to `msiaddr` (Linux points it at the
    /// CMD_SYNC slot itself), inner shareable, write-back.
    pub const fn msi(msiaddr: u64, msidata: u32) -> Self {
        SyncCmd { cs: SyncCs::Irq, msh: super::sh::ISH, msiattr: super::regs::memattr::OIWB, msidata, msiaddr }
    }
}

/// A decoded command. Opcodes without a variant (and their operands) stay in [`Command::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// PREFETCH_CONFIG: SSID when SSV.
    PrefetchConfig {
        sid: u32,
        ssid: Option<u32>,
    },
    CfgiSte {
        sid: u32,
        leaf: bool,
    },
    /// CFGI_STE_RANGE with Range < 31.
    CfgiSteRange {
        sid: u32,
        range: u8,
    },
    /// CFGI_STE_RANGE with Range = 31.
    CfgiAll,
    CfgiCd {
        sid: u32,
        ssid: u32,
        leaf: bool,
    },
    CfgiCdAll {
        sid: u32,
    },
    TlbiNhAll {
        vmid: u16,
    },
    TlbiNhAsid {
        vmid: u16,
        asid: u16,
    },
    /// Page-aligned VA.
    TlbiNhVa {
        vmid: u16,
        asid: u16,
        addr: u64,
        scope: TlbiScope,
    },
    TlbiNhVaa {
        vmid: u16,
        addr: u64,
        scope: TlbiScope,
    },
    TlbiEl2All,
    TlbiEl2Asid {
        asid: u16,
    },
    TlbiEl2Va {
        asid: u16,
        addr: u64,
        scope: TlbiScope,
    },
    TlbiS12Vmall {
        vmid: u16,
    },
    /// Page-aligned IPA, bits 51:12.
    TlbiS2Ipa {
        vmid: u16,
        ipa: u64,
        scope: TlbiScope,
    },
    TlbiNsnhAll,
    AtcInv {
        sid: u32,
        ssid: Option<u32>,
        global: bool,
        addr: u64,
        size: u8,
    },
    Sync(SyncCmd),
    Other([u64; 2]),
}

const SSID_MASK: u32 = (1 << 20) - 1;
const PAGE_MASK: u64 = !0xfff;
const IPA_MASK: u64 = crate::mask64(51, 12);

const fn tlbi_dw0(op: Opcode, vmid: u16, asid: u16, s: TlbiScope) -> u64 {
    TlbiDw0::new()
        .with_op(op)
        .with_num(s.num & 0x1f)
        .with_scale(s.scale & 0x1f)
        .with_vmid(vmid)
        .with_asid(asid)
        .into_bits()
}

const fn tlbi_dw1(addr: u64, s: TlbiScope) -> u64 {
    TlbiDw1::new().with_leaf(s.leaf).with_ttl(s.ttl & 3).with_tg(s.tg & 3).with_addr(addr >> 12).into_bits()
}

const fn stream_dw0(op: Opcode, sid: u32, ssid: Option<u32>) -> StreamDw0 {
    let w = StreamDw0::new().with_op(op).with_sid(sid);
    match ssid {
        Some(s) => w.with_ssv(true).with_ssid(s & SSID_MASK),
        None => w,
    }
}

const fn scope(d0: TlbiDw0, d1: TlbiDw1) -> TlbiScope {
    TlbiScope { leaf: d1.leaf(), ttl: d1.ttl(), tg: d1.tg(), num: d0.num(), scale: d0.scale() }
}

impl Command {
    /// The two words of the command. Operands are masked to their fields.
    pub const fn encode(&self) -> [u64; 2] {
        use Command::*;
        match *self {
            PrefetchConfig { sid, ssid } => [stream_dw0(Opcode::PrefetchConfig, sid, ssid).into_bits(), 0],
            CfgiSte { sid, leaf } => {
                [stream_dw0(Opcode::CfgiSte, sid, None).into_bits(), CfgiLeafDw1::new().with_leaf(leaf).into_bits()]
            }
            CfgiSteRange { sid, range } => [
                stream_dw0(Opcode::CfgiSteRange, sid, None).into_bits(),
                CfgiRangeDw1::new().with_range(range & 0x1f).into_bits(),
            ],
            CfgiAll => [Opcode::CfgiSteRange.0 as u64, CfgiRangeDw1::new().with_range(CFGI_ALL_RANGE).into_bits()],
            CfgiCd { sid, ssid, leaf } => [
                stream_dw0(Opcode::CfgiCd, sid, None).with_ssid(ssid & SSID_MASK).into_bits(),
                CfgiLeafDw1::new().with_leaf(leaf).into_bits(),
            ],
            CfgiCdAll { sid } => [stream_dw0(Opcode::CfgiCdAll, sid, None).into_bits(), 0],
            TlbiNhAll { vmid } => [tlbi_dw0(Opcode::TlbiNhAll, vmid, 0, TlbiScope::ZERO), 0],
            TlbiNhAsid { vmid, asid } => [tlbi_dw0(Opcode::TlbiNhAsid, vmid, asid, TlbiScope::ZERO), 0],
            TlbiNhVa { vmid, asid, addr, scope } => {
                [tlbi_dw0(Opcode::TlbiNhVa, vmid, asid, scope), tlbi_dw1(addr & PAGE_MASK, scope)]
            }
            TlbiNhVaa { vmid, addr, scope } => {
                [tlbi_dw0(Opcode::TlbiNhVaa, vmid, 0, scope), tlbi_dw1(addr & PAGE_MASK, scope)]
            }
            TlbiEl2All => [Opcode::TlbiEl2All.0 as u64, 0],
            TlbiEl2Asid { asid } => [tlbi_dw0(Opcode::TlbiEl2Asid, 0, asid, TlbiScope::ZERO), 0],
            TlbiEl2Va { asid, addr, scope } => {
                [tlbi_dw0(Opcode::TlbiEl2Va, 0, asid, scope), tlbi_dw1(addr & PAGE_MASK, scope)]
            }
            TlbiS12Vmall { vmid } => [tlbi_dw0(Opcode::TlbiS12Vmall, vmid, 0, TlbiScope::ZERO), 0],
            TlbiS2Ipa { vmid, ipa, scope } => {
                [tlbi_dw0(Opcode::TlbiS2Ipa, vmid, 0, scope), tlbi_dw1(ipa & IPA_MASK, scope)]
            }
            TlbiNsnhAll => [Opcode::TlbiNsnhAll.0 as u64, 0],
            AtcInv { sid, ssid, global, addr, size } => [
                stream_dw0(Opcode::AtcInv, sid, ssid).with_global(global).into_bits(),
                AddrSizeDw1::new().with_size(size & 0x3f).with_addr(addr >> 12).into_bits(),
            ],
            Sync(s) => [
                SyncDw0::new()
                    .with_op(Opcode::Sync)
                    .with_cs(SyncCs::from_bits(s.cs.0))
                    .with_msh(s.msh & 3)
                    .with_msiattr(s.msiattr & 0xf)
                    .with_msidata(s.msidata)
                    .into_bits(),
                SyncDw1::new().with_msiaddr((s.msiaddr >> 2) & crate::mask64(49, 0)).into_bits(),
            ],
            Other(raw) => raw,
        }
    }

    /// Decode two raw words. Reserved bits are ignored; an opcode without a variant gives [`Command::Other`].
    pub const fn decode(raw: [u64; 2]) -> Self {
        let s0 = StreamDw0::from_bits(raw[0]);
        let t0 = TlbiDw0::from_bits(raw[0]);
        let t1 = TlbiDw1::from_bits(raw[1]);
        let ssid = if s0.ssv() { Some(s0.ssid()) } else { None };
        match opcode(raw) {
            Opcode::PrefetchConfig => Command::PrefetchConfig { sid: s0.sid(), ssid },
            Opcode::CfgiSte => Command::CfgiSte { sid: s0.sid(), leaf: CfgiLeafDw1::from_bits(raw[1]).leaf() },
            Opcode::CfgiSteRange => match CfgiRangeDw1::from_bits(raw[1]).range() {
                CFGI_ALL_RANGE => Command::CfgiAll,
                range => Command::CfgiSteRange { sid: s0.sid(), range },
            },
            Opcode::CfgiCd => {
                Command::CfgiCd { sid: s0.sid(), ssid: s0.ssid(), leaf: CfgiLeafDw1::from_bits(raw[1]).leaf() }
            }
            Opcode::CfgiCdAll => Command::CfgiCdAll { sid: s0.sid() },
            Opcode::TlbiNhAll => Command::TlbiNhAll { vmid: t0.vmid() },
            Opcode::TlbiNhAsid => Command::TlbiNhAsid { vmid: t0.vmid(), asid: t0.asid() },
            Opcode::TlbiNhVa => {
                Command::TlbiNhVa { vmid: t0.vmid(), asid: t0.asid(), addr: t1.addr() << 12, scope: scope(t0, t1) }
            }
            Opcode::TlbiNhVaa => Command::TlbiNhVaa { vmid: t0.vmid(), addr: t1.addr() << 12, scope: scope(t0, t1) },
            Opcode::TlbiEl2All => Command::TlbiEl2All,
            Opcode::TlbiEl2Asid => Command::TlbiEl2Asid { asid: t0.asid() },
            Opcode::TlbiEl2Va => Command::TlbiEl2Va { asid: t0.asid(), addr: t1.addr() << 12, scope: scope(t0, t1) },
            Opcode::TlbiS12Vmall => Command::TlbiS12Vmall { vmid: t0.vmid() },
            Opcode::TlbiS2Ipa => {
                Command::TlbiS2Ipa { vmid: t0.vmid(), ipa: (t1.addr() << 12) & IPA_MASK, scope: scope(t0, t1) }
            }
            Opcode::TlbiNsnhAll => Command::TlbiNsnhAll,
            Opcode::AtcInv => {
                let d1 = AddrSizeDw1::from_bits(raw[1]);
                Command::AtcInv { sid: s0.sid(), ssid, global: s0.global(), addr: d1.addr() << 12, size: d1.size() }
            }
            Opcode::Sync => {
                let d0 = SyncDw0::from_bits(raw[0]);
                Command::Sync(SyncCmd {
                    cs: d0.cs(),
                    msh: d0.msh(),
                    msiattr: d0.msiattr(),
                    msidata: d0.msidata(),
                    msiaddr: SyncDw1::from_bits(raw[1]).msiaddr() << 2,
                })
            }
            _ => Command::Other(raw),
        }
    }

    pub const fn opcode(&self) -> Opcode {
        opcode(self.encode())
    }
}

impl TlbiScope {
    pub const ZERO: TlbiScope = TlbiScope { leaf: false, ttl: 0, tg: 0, num: 0, scale: 0 };
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes() {
        let ops = [
            (Opcode::PrefetchConfig, 0x01),
            (Opcode::CfgiSte, 0x03),
            (Opcode::CfgiSteRange, 0x04),
            (Opcode::CfgiCd, 0x05),
            (Opcode::CfgiCdAll, 0x06),
            (Opcode::TlbiNhAll, 0x10),
            (Opcode::TlbiNhAsid, 0x11),
            (Opcode::TlbiNhVa, 0x12),
            (Opcode::TlbiEl2All, 0x20),
            (Opcode::TlbiS12Vmall, 0x28),
            (Opcode::TlbiS2Ipa, 0x2a),
            (Opcode::TlbiNsnhAll, 0x30),
            (Opcode::AtcInv, 0x40),
            (Opcode::Sync, 0x46),
        ];
        for (op, v) in ops {
            assert_eq!(op.into_bits(), v);
            assert_eq!(opcode([0xffff_ffff_ffff_ff00 | v as u64, 0]), op);
        }
        assert_eq!(opcode([0xff, 0]), Opcode(0xff));
    }

    #[test]
    fn cfgi_layouts() {
        assert_eq!(Command::CfgiSte { sid: 0x1234, leaf: true }.encode(), [0x1234 << 32 | 0x03, 1]);
        assert_eq!(Command::CfgiSteRange { sid: 0x100, range: 7 }.encode(), [0x100 << 32 | 0x04, 7]);
        assert_eq!(Command::CfgiAll.encode(), [0x04, 31], "Linux CMDQ_OP_CFGI_ALL");
        assert_eq!(
            Command::CfgiCd { sid: 9, ssid: 0xfffff, leaf: false }.encode(),
            [9 << 32 | 0xfffff << 12 | 0x05, 0]
        );
        assert_eq!(Command::CfgiCdAll { sid: 0xffff_ffff }.encode(), [0xffff_ffff << 32 | 0x06, 0]);
        assert_eq!(Command::PrefetchConfig { sid: 3, ssid: Some(5) }.encode(), [3 << 32 | 5 << 12 | 1 << 11 | 1, 0]);
        assert_eq!(StreamDw0::new().with_ssec(true).into_bits(), 1 << 10);
    }

    #[test]
    fn tlbi_layouts() {
        assert_eq!(Command::TlbiNhAll { vmid: 0x1234 }.encode(), [0x1234 << 32 | 0x10, 0]);
        assert_eq!(Command::TlbiNhAsid { vmid: 1, asid: 0xbeef }.encode(), [0xbeef << 48 | 1 << 32 | 0x11, 0]);
        let scope = TlbiScope { leaf: true, ttl: 3, tg: 1, num: 31, scale: 31 };
        let va = Command::TlbiNhVa { vmid: 0, asid: 7, addr: 0xffff_8000_1234_5678, scope }.encode();
        assert_eq!(va[0], 7 << 48 | 31 << 20 | 31 << 12 | 0x12);
        assert_eq!(va[1], 0xffff_8000_1234_5000 | 1 << 10 | 3 << 8 | 1);
        let ipa = Command::TlbiS2Ipa { vmid: 2, ipa: 0xfff0_0000_0000_1000 | 0x8_0000_2000, scope: TlbiScope::ZERO };
        assert_eq!(ipa.encode(), [2 << 32 | 0x2a, 0x8_0000_3000], "IPA bits above 51 dropped");
        assert_eq!(Command::TlbiS12Vmall { vmid: 0xffff }.encode(), [0xffff << 32 | 0x28, 0]);
        assert_eq!(Command::TlbiEl2All.encode(), [0x20, 0]);
        assert_eq!(Command::TlbiNsnhAll.encode(), [0x30, 0]);
        assert_eq!(Command::TlbiEl2Asid { asid: 3 }.encode(), [3 << 48 | 0x21, 0]);
    }

    #[test]
    fn sync_layout() {
        assert_eq!(Command::Sync(SyncCmd::poll()).encode(), [0x46, 0]);
        let s = Command::Sync(SyncCmd::msi(0x8_0000_1008, 0xabcd_0123)).encode();
        assert_eq!(s[0], 0xabcd_0123 << 32 | 0xf << 24 | 3 << 22 | 1 << 12 | 0x46);
        assert_eq!(s[1], 0x8_0000_1008);
        assert_eq!(SyncDw0::new().with_cs(SyncCs::Sev).into_bits(), 2 << 12);
        assert_eq!(SyncDw1::from_bits(u64::MAX).msiaddr() << 2, crate::mask64(51, 2));
        assert_eq!(SyncDw0::from_bits(3 << 12).cs(), SyncCs(3));
    }

    #[test]
    fn atc_inv_layout() {
        let c = Command::AtcInv { sid: 0x10, ssid: None, global: true, addr: 0, size: ATC_INV_SIZE_ALL };
        assert_eq!(c.encode(), [0x10 << 32 | 1 << 9 | 0x40, 52]);
        assert_eq!(AddrSizeDw1::new().with_addr(1).into_bits(), 1 << 12);
    }

    #[test]
    fn every_typed_command_round_trips() {
        let scope = TlbiScope { leaf: true, ttl: 2, tg: 1, num: 3, scale: 4 };
        let cmds = [
            Command::PrefetchConfig { sid: 1, ssid: None },
            Command::PrefetchConfig { sid: 1, ssid: Some(0xfffff) },
            Command::CfgiSte { sid: 0xffff_ffff, leaf: true },
            Command::CfgiSteRange { sid: 0x300, range: 30 },
            Command::CfgiAll,
            Command::CfgiCd { sid: 4, ssid: 0x12345, leaf: true },
            Command::CfgiCdAll { sid: 5 },
            Command::TlbiNhAll { vmid: 6 },
            Command::TlbiNhAsid { vmid: 6, asid: 7 },
            Command::TlbiNhVa { vmid: 6, asid: 7, addr: 0xffff_ffff_ffff_f000, scope },
            Command::TlbiNhVaa { vmid: 6, addr: 0x1000, scope },
            Command::TlbiEl2All,
            Command::TlbiEl2Asid { asid: 9 },
            Command::TlbiEl2Va { asid: 9, addr: 0x2000, scope },
            Command::TlbiS12Vmall { vmid: 10 },
            Command::TlbiS2Ipa { vmid: 10, ipa: 0x000f_ffff_ffff_f000, scope },
            Command::TlbiNsnhAll,
            Command::AtcInv { sid: 11, ssid: Some(12), global: false, addr: 0x4000, size: 2 },
            Command::Sync(SyncCmd::poll()),
            Command::Sync(SyncCmd::msi(0x1234_5678, 0xffff_ffff)),
            Command::Other([0xdead_beef_0000_0081, 0x1234]),
        ];
        for c in cmds {
            assert_eq!(Command::decode(c.encode()), c, "{c:?}");
            assert_eq!(Command::decode(c.encode()).encode(), c.encode());
        }
        assert_eq!(Command::CfgiAll.opcode(), Opcode::CfgiSteRange);
    }

    #[test]
    fn any_raw_command_decodes() {
        // Every opcode with garbage operands: decoding never panics, and re-encoding a typed decode keeps the
        // opcode.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for op in 0..=255u64 {
            x = x.rotate_left(17).wrapping_mul(0x2545_f491_4f6c_dd1d);
            let raw = [(x & !0xff) | op, x.rotate_left(32)];
            let c = Command::decode(raw);
            assert_eq!(c.encode()[0] & 0xff, op);
            assert_eq!(Command::decode(c.encode()), c);
        }
    }
}
