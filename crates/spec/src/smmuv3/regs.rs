//! SMMUv3 control and status registers (spec chapter 6): offsets, CR0–CR2, GBPA, IRQ_CTRL, GERROR, the stream
//! table base registers and MSI configuration. Offsets are bytes from the SMMU's MMIO base; page 1 starts at
//! 64 KiB.

use bitfield_struct::bitfield;

/// Register offsets (6.2, Linux `ARM_SMMU_*`).
pub mod off {
    /// SMMU_IDR0 (6.3.1): features: stage 1/2, table formats, ATS, PRI, MSI, coherency, stall model.
    pub const IDR0: usize = 0x00;
    /// SMMU_IDR1 (6.3.2): queue size maxima, StreamID and SubstreamID widths, table presets.
    pub const IDR1: usize = 0x04;
    /// SMMU_IDR2 (6.3.3): BA_VATOS, where the VATOS page is.
    pub const IDR2: usize = 0x08;
    /// SMMU_IDR3 (6.3.4): further features (HAD, range invalidation, BBML, DPT), see [`super::super::idr::Idr3`].
    pub const IDR3: usize = 0x0c;
    /// SMMU_IDR4 (6.3.5): implementation defined.
    pub const IDR4: usize = 0x10;
    /// SMMU_IDR5 (6.3.6): output address size, translation granules, VA extension, stall limit.
    pub const IDR5: usize = 0x14;
    /// SMMU_IIDR (6.3.7): implementer, revision, variant and product ID.
    pub const IIDR: usize = 0x18;
    /// SMMU_AIDR (6.3.8): architecture revision (ArchMinorRev 0 = SMMUv3.0).
    pub const AIDR: usize = 0x1c;
    /// SMMU_CR0 (6.3.9), see [`super::Cr0`].
    pub const CR0: usize = 0x20;
    /// SMMU_CR0ACK (6.3.10): CR0's enables once they have taken effect.
    pub const CR0ACK: usize = 0x24;
    /// SMMU_CR1 (6.3.11), see [`super::Cr1`].
    pub const CR1: usize = 0x28;
    /// SMMU_CR2 (6.3.12), see [`super::Cr2`].
    pub const CR2: usize = 0x2c;
    /// SMMU_STATUSR (6.3.13): DORMANT (bit 0).
    pub const STATUSR: usize = 0x40;
    /// SMMU_GBPA (6.3.14), see [`super::Gbpa`].
    pub const GBPA: usize = 0x44;
    /// SMMU_AGBPA (6.3.15): implementation-defined attribute override for bypassed traffic.
    pub const AGBPA: usize = 0x48;
    /// SMMU_IRQ_CTRL (6.3.16), see [`super::IrqCtrl`].
    pub const IRQ_CTRL: usize = 0x50;
    /// SMMU_IRQ_CTRLACK (6.3.17): IRQ_CTRL's enables once they have taken effect.
    pub const IRQ_CTRLACK: usize = 0x54;
    /// SMMU_GERROR (6.3.18), see [`super::Gerror`]; read-only.
    pub const GERROR: usize = 0x60;
    /// SMMU_GERRORN (6.3.19): software's acknowledgement of GERROR, same layout.
    pub const GERRORN: usize = 0x64;
    /// SMMU_GERROR_IRQ_CFG0 (6.3.20), 64-bit: MSI address, see [`super::MsiCfg0`].
    pub const GERROR_IRQ_CFG0: usize = 0x68;
    /// SMMU_GERROR_IRQ_CFG1 (6.3.21): MSI data, 32 bits.
    pub const GERROR_IRQ_CFG1: usize = 0x70;
    /// SMMU_GERROR_IRQ_CFG2 (6.3.22), see [`super::MsiCfg2`].
    pub const GERROR_IRQ_CFG2: usize = 0x74;
    /// SMMU_STRTAB_BASE (6.3.23), 64-bit, see [`super::StrtabBase`].
    pub const STRTAB_BASE: usize = 0x80;
    /// SMMU_STRTAB_BASE_CFG (6.3.24), see [`super::StrtabBaseCfg`].
    pub const STRTAB_BASE_CFG: usize = 0x88;
    /// SMMU_CMDQ_BASE, 64-bit, see [`super::super::queue::QueueBase`].
    pub const CMDQ_BASE: usize = 0x90;
    /// SMMU_CMDQ_PROD: producer index (software writes), see [`super::super::queue::QueuePtr`].
    pub const CMDQ_PROD: usize = 0x98;
    /// SMMU_CMDQ_CONS: consumer index and ERR (bits 30:24), written by the SMMU.
    pub const CMDQ_CONS: usize = 0x9c;
    /// SMMU_EVTQ_BASE, 64-bit, see [`super::super::queue::QueueBase`].
    pub const EVTQ_BASE: usize = 0xa0;
    /// SMMU_EVTQ_IRQ_CFG0, 64-bit: MSI address.
    pub const EVTQ_IRQ_CFG0: usize = 0xb0;
    /// SMMU_EVTQ_IRQ_CFG1: MSI data, 32 bits.
    pub const EVTQ_IRQ_CFG1: usize = 0xb8;
    /// SMMU_EVTQ_IRQ_CFG2, see [`super::MsiCfg2`].
    pub const EVTQ_IRQ_CFG2: usize = 0xbc;
    /// SMMU_PRIQ_BASE, 64-bit, see [`super::super::queue::QueueBase`].
    pub const PRIQ_BASE: usize = 0xc0;
    /// SMMU_PRIQ_IRQ_CFG0, 64-bit: MSI address.
    pub const PRIQ_IRQ_CFG0: usize = 0xd0;
    /// SMMU_PRIQ_IRQ_CFG1: MSI data, 32 bits.
    pub const PRIQ_IRQ_CFG1: usize = 0xd8;
    /// SMMU_PRIQ_IRQ_CFG2, see [`super::MsiCfg2`].
    pub const PRIQ_IRQ_CFG2: usize = 0xdc;

    /// Start of register page 1 (the SMMU frame is two 64 KiB pages).
    pub const PAGE1: usize = 0x1_0000;
    /// Size of the register frame (pages 0 and 1).
    pub const FRAME_SIZE: usize = 0x2_0000;
    /// EVTQ_PROD, in page 1 (Linux: `page1 + ARM_SMMU_EVTQ_PROD`).
    pub const EVTQ_PROD: usize = PAGE1 + 0xa8;
    /// EVTQ_CONS, in page 1: consumer index, software writes; OVACKFLG in bit 31.
    pub const EVTQ_CONS: usize = PAGE1 + 0xac;
    /// PRIQ_PROD, in page 1.
    pub const PRIQ_PROD: usize = PAGE1 + 0xc8;
    /// PRIQ_CONS, in page 1: consumer index, software writes; OVACKFLG in bit 31.
    pub const PRIQ_CONS: usize = PAGE1 + 0xcc;

    /// The page-0 alias of a page-1 offset: implementations with Linux's `ARM_SMMU_OPT_PAGE0_REGS_ONLY` decode
    /// only page 0, and QEMU aliases the two pages.
    pub const fn page0_alias(off: usize) -> usize {
        off & !PAGE1
    }
}
/// CR0 and CR0ACK (6.3.9, 6.3.10): software writes CR0 and polls until CR0ACK reads the same.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Cr0 {
    /// Translation enable; with 0, GBPA decides between abort and bypass.
    pub smmuen: bool,
    /// PRIQEN (bit 1): PRI queue enable.
    pub priqen: bool,
    /// EVTQEN (bit 2): event queue enable.
    pub evtqen: bool,
    /// CMDQEN (bit 3): command queue enable; the SMMU consumes commands only while set.
    pub cmdqen: bool,
    /// Translated ATS traffic checks the stream table (STE.EATS).
    pub atschk: bool,
    #[bits(1)]
    __: u8,
    /// VMID wildcard matching for TLB invalidation.
    #[bits(3)]
    pub vmw: u8,
    /// DPT walk enable (SMMUv3.3 DPT; reserved without IDR3.DPT).
    pub dpt_walk_en: bool,
    #[bits(22)]
    __: u32,
}

impl Cr0 {
    /// Bits reserved in CR0 (QEMU's `SMMU_CR0_RESERVED`, 0xFFFFFC20).
    pub const RESERVED: u32 = 0xffff_fc20;
    /// Set bits of the value that CR0 reserves (0 for a well-formed value).
    pub const fn reserved_bits(self) -> u32 {
        self.into_bits() & Self::RESERVED
    }
}

/// CR1 cacheability (`CR1_CACHE_*`): not the TCR encoding of [`super::cache`].
pub mod cr1_cache {
    /// Non-cacheable (`CR1_CACHE_NC`).
    pub const NC: u8 = 0;
    /// Write-back cacheable (`CR1_CACHE_WB`).
    pub const WB: u8 = 1;
    /// Write-through cacheable (`CR1_CACHE_WT`).
    pub const WT: u8 = 2;
}

/// CR1 (6.3.11): attributes of the SMMU's table and queue accesses. Change only with SMMUEN = 0.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Cr1 {
    /// QUEUE_IC (bits 1:0): inner cacheability of queue accesses ([`cr1_cache`]).
    #[bits(2)]
    pub queue_ic: u8,
    /// QUEUE_OC (bits 3:2): outer cacheability of queue accesses ([`cr1_cache`]).
    #[bits(2)]
    pub queue_oc: u8,
    /// QUEUE_SH (bits 5:4): shareability of queue accesses ([`super::sh`]; 1 reserved).
    #[bits(2)]
    pub queue_sh: u8,
    /// TABLE_IC (bits 7:6): inner cacheability of stream/CD table walks ([`cr1_cache`]).
    #[bits(2)]
    pub table_ic: u8,
    /// TABLE_OC (bits 9:8): outer cacheability of table walks ([`cr1_cache`]).
    #[bits(2)]
    pub table_oc: u8,
    /// TABLE_SH (bits 11:10): shareability of table walks ([`super::sh`]; 1 reserved).
    #[bits(2)]
    pub table_sh: u8,
    #[bits(20)]
    __: u32,
}

impl Cr1 {
    /// Write-back, inner-shareable tables and queues, as Linux's reset programs.
    pub const fn linux_default() -> Self {
        Cr1::new()
            .with_queue_ic(cr1_cache::WB)
            .with_queue_oc(cr1_cache::WB)
            .with_queue_sh(super::sh::ISH)
            .with_table_ic(cr1_cache::WB)
            .with_table_oc(cr1_cache::WB)
            .with_table_sh(super::sh::ISH)
    }
    /// Set bits of the value in CR1's reserved bits 31:12.
    pub const fn reserved_bits(self) -> u32 {
        self.into_bits() & 0xffff_f000
    }
}

/// CR2 (6.3.12). Change only with SMMUEN = 0.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Cr2 {
    /// EL2-E2H translation regime (with IDR0.HYP).
    pub e2h: bool,
    /// Record C_BAD_STREAMID for out-of-range StreamIDs.
    pub recinvsid: bool,
    /// Private TLB maintenance: ignore broadcast TLBI.
    pub ptm: bool,
    /// Record ATS configuration errors (later revisions; not in Linux's header).
    pub rec_cfg_ats: bool,
    #[bits(28)]
    __: u32,
}

/// GBPA (6.3.14): what traffic does while SMMUEN = 0. Written with UPDATE = 1; UPDATE reads 0 when applied.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Gbpa {
    /// Memory attribute used when MTCFG = 1.
    #[bits(4)]
    pub memattr: u8,
    /// 1: replace the memory type with MEMATTR.
    pub mtcfg: bool,
    #[bits(3)]
    __: u8,
    /// ALLOCCFG (bits 11:8): 0b0xxx keeps the incoming allocation hints; 0b1RWT replaces them with
    /// Read-allocate, Write-allocate, Transient.
    #[bits(4)]
    pub alloccfg: u8,
    /// Shareability: 0 NSH, 1 use incoming, 2 OSH, 3 ISH.
    #[bits(2)]
    pub shcfg: u8,
    #[bits(2)]
    __: u8,
    /// PRIVCFG (bits 17:16): 0 use incoming, 2 unprivileged, 3 privileged (1 behaves as 0).
    #[bits(2)]
    pub privcfg: u8,
    /// INSTCFG (bits 19:18): 0 use incoming, 2 data, 3 instruction (1 behaves as 0).
    #[bits(2)]
    pub instcfg: u8,
    /// 1: abort all incoming transactions (`GBPA_ABORT`); 0: bypass them.
    pub abort: bool,
    #[bits(10)]
    __: u16,
    /// Update in progress (`GBPA_UPDATE`).
    pub update: bool,
}

impl Gbpa {
    /// SHCFG "use incoming" (QEMU resets GBPA to this alone: 0x1000).
    pub const SHCFG_INCOMING: u8 = 1;
    /// Set bits of the value in GBPA's reserved bits (7:5, 15:14, 30:21).
    pub const fn reserved_bits(self) -> u32 {
        self.into_bits() & 0x7fe0_c0e0
    }
}

/// IRQ_CTRL and IRQ_CTRLACK (6.3.16, 6.3.17).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct IrqCtrl {
    /// GERROR_IRQEN (bit 0): global error interrupt enable.
    pub gerror_irqen: bool,
    /// PRIQ_IRQEN (bit 1): PRI queue interrupt enable.
    pub priq_irqen: bool,
    /// EVTQ_IRQEN (bit 2): event queue interrupt enable.
    pub evtq_irqen: bool,
    #[bits(29)]
    __: u32,
}

/// GERROR and GERRORN (6.3.18, 6.3.19). An error is active while its GERROR bit differs from the GERRORN bit:
/// the SMMU toggles GERROR, software acknowledges by writing GERRORN to match.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Gerror {
    /// Command queue error: CMDQ_CONS.ERR says which; processing stops until acknowledged.
    pub cmdq_err: bool,
    #[bits(1)]
    __: u8,
    /// EVTQ_ABT_ERR (bit 2): an external abort on an event queue write; events may be lost.
    pub evtq_abt_err: bool,
    /// PRIQ_ABT_ERR (bit 3): an external abort on a PRI queue write.
    pub priq_abt_err: bool,
    /// MSI_CMDQ_ABT_ERR (bit 4): a CMD_SYNC MSI write aborted.
    pub msi_cmdq_abt_err: bool,
    /// MSI_EVTQ_ABT_ERR (bit 5): an event queue MSI write aborted.
    pub msi_evtq_abt_err: bool,
    /// MSI_PRIQ_ABT_ERR (bit 6): a PRI queue MSI write aborted.
    pub msi_priq_abt_err: bool,
    /// MSI_GERROR_ABT_ERR (bit 7): a GERROR MSI write aborted.
    pub msi_gerror_abt_err: bool,
    /// Service failure mode: the SMMU stopped translating; only a reset recovers.
    pub sfm_err: bool,
    #[bits(23)]
    __: u32,
}

impl Gerror {
    /// The defined error bits (`GERROR_ERR_MASK`).
    pub const ERR_MASK: u32 = 0x1fd;
    /// The errors active given GERROR and GERRORN: their difference over the defined bits.
    pub const fn active(gerror: u32, gerrorn: u32) -> Self {
        Gerror::from_bits((gerror ^ gerrorn) & Self::ERR_MASK)
    }
    /// At least one defined error bit is set.
    pub const fn any(self) -> bool {
        self.into_bits() & Self::ERR_MASK != 0
    }
}

/// STRTAB_BASE (6.3.23), 64-bit.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct StrtabBase {
    #[bits(6)]
    __: u8,
    /// Stream table address bits 51:6 (`STRTAB_BASE_ADDR_MASK`).
    #[bits(46)]
    pub addr: u64,
    #[bits(10)]
    __: u16,
    /// Read-allocate hint (`STRTAB_BASE_RA`).
    pub ra: bool,
    #[bits(1)]
    __: u8,
}

impl StrtabBase {
    /// Physical address of the stream table (level 1 of a 2-level one), 64-byte aligned.
    pub const fn table(self) -> u64 {
        self.addr() << 6
    }
    /// A base register for a table at `pa` (bits outside 51:6 dropped).
    pub const fn from_table(pa: u64, ra: bool) -> Self {
        StrtabBase::new().with_addr((pa >> 6) & crate::mask64(45, 0)).with_ra(ra)
    }
    /// Set bits of the value in STRTAB_BASE's reserved bits (5:0, 61:52, 63).
    pub const fn reserved_bits(self) -> u64 {
        self.into_bits() & (0x3f | crate::mask64(61, 52) | 1 << 63)
    }
}

/// STRTAB_BASE_CFG.FMT.
#[open_enum::open_enum]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum StrtabFmt {
    /// A linear array of `2^LOG2SIZE` STEs (`STRTAB_BASE_CFG_FMT_LINEAR`).
    Linear = 0,
    /// Level-1 descriptors pointing at level-2 STE arrays (`STRTAB_BASE_CFG_FMT_2LVL`); 2 and 3 reserved.
    TwoLevel = 1,
}
crate::open_enum_bits!(StrtabFmt, u8, 2);

/// STRTAB_BASE_CFG (6.3.24).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct StrtabBaseCfg {
    /// The table covers `2^LOG2SIZE` StreamIDs.
    #[bits(6)]
    pub log2size: u8,
    /// 2-level only: StreamID bits resolved by the level-2 tables (6, 8 or 10 architected; Linux uses 8).
    #[bits(5)]
    pub split: u8,
    #[bits(5)]
    __: u8,
    /// FMT (bits 17:16): linear or 2-level.
    #[bits(2)]
    pub fmt: StrtabFmt,
    #[bits(14)]
    __: u16,
}

impl StrtabBaseCfg {
    /// StreamIDs the table covers: `2^LOG2SIZE`.
    pub const fn sid_count(self) -> u64 {
        1 << self.log2size()
    }
    /// Level-1 descriptors of a 2-level table: `2^(LOG2SIZE - SPLIT)`, at least one.
    pub const fn l1_entries(self) -> u64 {
        1 << self.log2size().saturating_sub(self.split())
    }
    /// Set bits of the value in STRTAB_BASE_CFG's reserved bits (15:11, 31:18).
    pub const fn reserved_bits(self) -> u32 {
        self.into_bits() & 0xfffc_f800
    }
}
/// GERROR_IRQ_CFG0, EVTQ_IRQ_CFG0, PRIQ_IRQ_CFG0 (6.3.20): MSI address bits 51:2 (`MSI_CFG0_ADDR_MASK`).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct MsiCfg0 {
    #[bits(2)]
    __: u8,
    /// ADDR, MSI target address bits 51:2.
    #[bits(50)]
    pub addr: u64,
    #[bits(12)]
    __: u16,
}

impl MsiCfg0 {
    /// The MSI target address, 4-byte aligned.
    pub const fn address(self) -> u64 {
        self.addr() << 2
    }
}

/// GERROR_IRQ_CFG2, EVTQ_IRQ_CFG2, PRIQ_IRQ_CFG2 (6.3.22): MSI write attributes.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct MsiCfg2 {
    /// `MSI_CFG2_MEMATTR`: 0x1 Device-nGnRE, 0xF normal write-back.
    #[bits(4)]
    pub memattr: u8,
    /// SH (bits 5:4): shareability of the MSI write ([`super::sh`]).
    #[bits(2)]
    pub sh: u8,
    #[bits(26)]
    __: u32,
}

/// MSI memory attributes (`ARM_SMMU_MEMATTR_*`).
pub mod memattr {
    /// Device-nGnRE (`ARM_SMMU_MEMATTR_DEVICE_nGnRE`).
    pub const DEVICE_NGNRE: u8 = 0x1;
    /// Normal, inner and outer write-back cacheable (`ARM_SMMU_MEMATTR_OIWB`).
    pub const OIWB: u8 = 0xf;
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_pages() {
        assert_eq!(off::EVTQ_PROD, 0x100a8);
        assert_eq!(off::EVTQ_CONS, 0x100ac);
        assert_eq!(off::PRIQ_PROD, 0x100c8);
        assert_eq!(off::PRIQ_CONS, 0x100cc);
        assert_eq!(off::page0_alias(off::EVTQ_PROD), 0xa8);
        assert_eq!(off::page0_alias(off::CMDQ_PROD), off::CMDQ_PROD);
    }
    #[test]
    fn cr0_and_reserved_sweep() {
        assert_eq!(Cr0::new().with_smmuen(true).into_bits(), 1);
        assert_eq!(Cr0::new().with_priqen(true).into_bits(), 1 << 1);
        assert_eq!(Cr0::new().with_evtqen(true).into_bits(), 1 << 2);
        assert_eq!(Cr0::new().with_cmdqen(true).into_bits(), 1 << 3);
        assert_eq!(Cr0::new().with_atschk(true).into_bits(), 1 << 4);
        assert_eq!(Cr0::new().with_vmw(7).into_bits(), 7 << 6);
        for bit in 0..32 {
            let res = bit == 5 || bit >= 10;
            assert_eq!(Cr0::from_bits(1 << bit).reserved_bits() != 0, res, "bit {bit}");
        }
    }

    #[test]
    fn cr1_cr2_layout() {
        assert_eq!(Cr1::linux_default().into_bits(), 3 << 10 | 1 << 8 | 1 << 6 | 3 << 4 | 1 << 2 | 1);
        assert_eq!(Cr1::from_bits(0xfff).reserved_bits(), 0);
        assert_eq!(Cr1::from_bits(0x1000).reserved_bits(), 0x1000);
        assert_eq!(Cr2::new().with_e2h(true).with_recinvsid(true).with_ptm(true).into_bits(), 0b111);
    }

    #[test]
    fn gbpa_fields_and_reserved_sweep() {
        assert_eq!(Gbpa::new().with_update(true).into_bits(), 1 << 31);
        assert_eq!(Gbpa::new().with_abort(true).into_bits(), 1 << 20);
        assert_eq!(Gbpa::new().with_shcfg(Gbpa::SHCFG_INCOMING).into_bits(), 0x1000, "QEMU's reset value");
        assert_eq!(Gbpa::new().with_memattr(0xf).with_mtcfg(true).into_bits(), 0x1f);
        assert_eq!(Gbpa::new().with_alloccfg(0xf).into_bits(), 0xf00);
        assert_eq!(Gbpa::new().with_privcfg(3).with_instcfg(3).into_bits(), 0xf << 16);
        let defined = [0..5, 8..14, 16..21, 31..32];
        for bit in 0..32u32 {
            let res = !defined.iter().any(|r| r.contains(&bit));
            assert_eq!(Gbpa::from_bits(1 << bit).reserved_bits() != 0, res, "bit {bit}");
        }
    }

    #[test]
    fn irq_ctrl_and_gerror() {
        assert_eq!(IrqCtrl::new().with_gerror_irqen(true).with_priq_irqen(true).with_evtq_irqen(true).into_bits(), 7);
        let bits: [(Gerror, u32); 8] = [
            (Gerror::new().with_cmdq_err(true), 0),
            (Gerror::new().with_evtq_abt_err(true), 2),
            (Gerror::new().with_priq_abt_err(true), 3),
            (Gerror::new().with_msi_cmdq_abt_err(true), 4),
            (Gerror::new().with_msi_evtq_abt_err(true), 5),
            (Gerror::new().with_msi_priq_abt_err(true), 6),
            (Gerror::new().with_msi_gerror_abt_err(true), 7),
            (Gerror::new().with_sfm_err(true), 8),
        ];
        let mut all = 0;
        for (g, bit) in bits {
            assert_eq!(g.into_bits(), 1 << bit);
            all |= 1 << bit;
        }
        assert_eq!(all, Gerror::ERR_MASK);
        // Active = GERROR xor GERRORN: a toggled CMDQ_ERR is active, an acknowledged SFM_ERR is not.
        let a = Gerror::active(0x101, 0x100);
        assert!(a.cmdq_err() && !a.sfm_err() && a.any());
        assert!(!Gerror::active(0x1fd, 0x1fd).any());
        assert!(!Gerror::active(0xffff_fe02, 0).any(), "undefined bits never count");
        assert!(Gerror::active(0, 0x100).sfm_err(), "either side of the toggle");
    }

    #[test]
    fn strtab_registers() {
        let b = StrtabBase::from_table(0x8_1234_5640, true);
        assert_eq!(b.into_bits(), 1 << 62 | 0x8_1234_5640);
        assert_eq!(b.table(), 0x8_1234_5640);
        assert_eq!(StrtabBase::from_bits(0x000f_ffff_ffff_ffc0).table(), 0x000f_ffff_ffff_ffc0);
        for bit in 0..64u32 {
            let res = bit < 6 || (52..62).contains(&bit) || bit == 63;
            assert_eq!(StrtabBase::from_bits(1 << bit).reserved_bits() != 0, res, "bit {bit}");
        }
        let c = StrtabBaseCfg::new().with_fmt(StrtabFmt::TwoLevel).with_split(8).with_log2size(16);
        assert_eq!(c.into_bits(), 1 << 16 | 8 << 6 | 16);
        assert_eq!(c.sid_count(), 65536);
        assert_eq!(c.l1_entries(), 256);
        assert_eq!(StrtabBaseCfg::new().with_split(10).with_log2size(6).l1_entries(), 1);
        assert_eq!(StrtabBaseCfg::from_bits(3 << 16).fmt(), StrtabFmt(3));
        assert_eq!(StrtabBaseCfg::new().with_log2size(63).sid_count(), 1 << 63);
        for bit in 0..32u32 {
            let res = (11..16).contains(&bit) || bit >= 18;
            assert_eq!(StrtabBaseCfg::from_bits(1 << bit).reserved_bits() != 0, res, "bit {bit}");
        }
    }
    #[test]
    fn msi_config() {
        assert_eq!(MsiCfg0::from_bits(0x000f_ffff_ffff_ffff).address(), 0x000f_ffff_ffff_fffc);
        assert_eq!(MsiCfg2::new().with_sh(3).with_memattr(memattr::OIWB).into_bits(), 0x3f);
    }
    #[test]
    fn every_register_round_trips_any_raw_value() {
        for raw in [0u64, u64::MAX, 0x5555_5555_5555_5555, 0xdead_beef_0bad_f00d] {
            assert_eq!(StrtabBase::from_bits(raw).into_bits(), raw);
            assert_eq!(MsiCfg0::from_bits(raw).into_bits(), raw);
            let r = raw as u32;
            assert_eq!(Cr0::from_bits(r).into_bits(), r);
            assert_eq!(Cr1::from_bits(r).into_bits(), r);
            assert_eq!(Cr2::from_bits(r).into_bits(), r);
            assert_eq!(Gbpa::from_bits(r).into_bits(), r);
            assert_eq!(IrqCtrl::from_bits(r).into_bits(), r);
            assert_eq!(Gerror::from_bits(r).into_bits(), r);
            assert_eq!(StrtabBaseCfg::from_bits(r).into_bits(), r);
            assert_eq!(MsiCfg2::from_bits(r).into_bits(), r);
        }
    }
}
