//! Device table entries (spec 2.2.2): 256 bits, four quadwords, indexed by DeviceID (Linux `struct
//! dev_table_entry`, `u64 data[4]`).
//!
//! Field positions: spec 2.2.2.1 as QEMU's 2025 reserved-mask update and the OSDev transcription of rev 3.11
//! give it, cross-checked against Linux's `DTE_*` and `DEV_ENTRY_*` bit numbers.

use bitfield_struct::bitfield;

use crate::mask64;

/// Bytes per device table entry (Linux `DEV_TABLE_ENTRY_SIZE`).
pub const DTE_SIZE: u64 = 32;
/// Entries in a full device table (one PCI segment).
pub const MAX_DTE_ENTRIES: u32 = 65536;

/// DTE Mode (qw0 11:9): host page-table levels (Linux `PAGE_MODE_*`).
#[open_enum::open_enum]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PagingMode {
    /// Mode 0: no translation; DMA passes untranslated with the DTE's IR/IW permissions.
    NoTranslation = 0,
    /// One level: a single table of 4 KiB pages, a 21-bit IOVA (`PAGE_MODE_1_LEVEL`).
    Level1 = 1,
    /// Two levels, a 30-bit IOVA (`PAGE_MODE_2_LEVEL`).
    Level2 = 2,
    /// Three levels, a 39-bit IOVA (`PAGE_MODE_3_LEVEL`).
    Level3 = 3,
    /// Four levels, a 48-bit IOVA (`PAGE_MODE_4_LEVEL`).
    Level4 = 4,
    /// Five levels, a 57-bit IOVA (`PAGE_MODE_5_LEVEL`).
    Level5 = 5,
    /// Six levels, the full 64-bit IOVA (`PAGE_MODE_6_LEVEL`).
    Level6 = 6,
    /// Mode 7 is reserved in a DTE.
    Reserved = 7,
}

crate::open_enum_bits!(PagingMode, u8, 3);

impl PagingMode {
    /// Page-table levels for modes 1..=6; `None` for no translation and the reserved mode.
    pub const fn levels(self) -> Option<u32> {
        match self.0 {
            1..=6 => Some(self.0 as u32),
            _ => None,
        }
    }
}

/// DTE IntCtl (qw2 61:60): what happens to fixed and arbitrated interrupts.
#[open_enum::open_enum]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum IntCtl {
    /// Attachment abort.
    Abort = 0,
    /// Forwarded unmapped.
    Pass = 1,
    /// Remapped through the interrupt table (Linux `DTE_IRQ_REMAP_INTCTL`).
    Remap = 2,
    /// 3 is reserved.
    Reserved = 3,
}

impl IntCtl {
    /// The value of a raw 2-bit field (higher bits dropped).
    pub const fn from_bits(v: u8) -> Self {
        Self(v & 3)
    }
    /// The 2-bit field value (higher bits dropped).
    pub const fn into_bits(self) -> u8 {
        self.0 & 3
    }
}

/// DTE quadword 0: validity, host translation and guest translation (bits 63:0).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct DteQw0 {
    /// V: the entry is valid (Linux `DTE_FLAG_V`).
    pub v: bool,
    /// TV: the translation fields are valid (`DTE_FLAG_TV`).
    pub tv: bool,
    #[bits(5)]
    __: u8,
    /// HAD: host access/dirty update (`DTE_FLAG_HAD`, 8:7).
    #[bits(2)]
    pub had: u8,
    /// Mode: host page-table levels (`DTE_MODE_MASK`, 11:9).
    #[bits(3)]
    pub mode: PagingMode,
    /// Host Page Table Root Pointer, bits 51:12 (`DTE_HOST_TRP`).
    #[bits(40)]
    pub pt_root: u64,
    /// PPR: peripheral page requests enabled (`DTE_FLAG_PPR`, 52).
    pub ppr: bool,
    /// GPRP: guest PPR response with PASID (53).
    pub gprp: bool,
    /// GIoV: guest I/O protection valid (`DTE_FLAG_GIOV`, 54).
    pub giov: bool,
    /// GV: guest translation valid (`DTE_FLAG_GV`, 55).
    pub gv: bool,
    /// GLX: GCR3 table levels (`DTE_GLX`, 57:56).
    #[bits(2)]
    pub glx: u8,
    /// GCR3 Table Root Pointer bits 14:12 (`DTE_GCR3_14_12`, 60:58).
    #[bits(3)]
    pub gcr3_14_12: u8,
    /// IR: DMA reads allowed (`DTE_FLAG_IR`, 61); also applies in mode 0.
    pub ir: bool,
    /// IW: DMA writes allowed (`DTE_FLAG_IW`, 62).
    pub iw: bool,
    #[bits(1)]
    __: u8,
}

/// DTE quadword 1: domain, guest CR3 and device controls (bits 127:64).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct DteQw1 {
    /// DomainID: tags the IOTLB (`DTE_DOMID_MASK`); Linux never uses 0 for a live domain.
    pub domain_id: u16,
    /// GCR3 Table Root Pointer bits 30:15 (`DTE_GCR3_30_15`, 31:16).
    pub gcr3_30_15: u16,
    /// I: device IOTLB (ATS) enabled (`DTE_FLAG_IOTLB`, 32).
    pub i: bool,
    /// SE: suppress I/O page-fault events (33).
    pub se: bool,
    /// SA: suppress all I/O page-fault events (34, Linux `DEV_ENTRY_NO_PAGE_FAULT` = bit 98).
    pub sa: bool,
    /// IoCtl: port I/O control (36:35).
    #[bits(2)]
    pub ioctl: u8,
    /// Cache: IOTLB cache hint (37).
    pub cache: bool,
    /// SD: snoop disable (38).
    pub sd: bool,
    /// EX: the exclusion range applies (39, `DEV_ENTRY_EX` = bit 103).
    pub ex: bool,
    /// SysMgt: system management message handling (41:40, `DTE_DATA1_SYSMGT_MASK`).
    #[bits(2)]
    pub sysmgt: u8,
    /// SATS (42).
    pub sats: bool,
    /// GCR3 Table Root Pointer bits 51:31 (`DTE_GCR3_51_31`, 63:43).
    #[bits(21)]
    pub gcr3_51_31: u32,
}

/// DTE quadword 2: interrupt remapping (bits 191:128).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct DteQw2 {
    /// IV: interrupt map valid (`DTE_IRQ_REMAP_ENABLE`, bit 128).
    pub iv: bool,
    /// IntTabLen: the table holds `2^IntTabLen` IRTEs (4:1; Linux 9 = 512, 11 = 2048).
    #[bits(4)]
    pub int_tab_len: u8,
    /// IG: ignore unmapped interrupts (5).
    pub ig: bool,
    /// Interrupt Table Root Pointer bits 51:6 (`DTE_IRQ_PHYS_ADDR_MASK`), 128-byte aligned.
    #[bits(46)]
    pub int_table_root: u64,
    #[bits(2)]
    __: u8,
    /// GuestPagingMode (55:54, Linux `DTE_GPT_LEVEL_MASK`): 1 = 5-level guest tables.
    #[bits(2)]
    pub guest_paging_mode: u8,
    /// InitPass (56, `DEV_ENTRY_INIT_PASS` = bit 184).
    pub init_pass: bool,
    /// EIntPass (57).
    pub eint_pass: bool,
    /// NMIPass (58).
    pub nmi_pass: bool,
    /// HPTMode (59; reserved in older revisions, which QEMU's pre-2025 mask reflected).
    pub hpt_mode: bool,
    /// IntCtl (61:60).
    #[bits(2)]
    pub int_ctl: IntCtl,
    /// Lint0Pass (62, bit 190).
    pub lint0_pass: bool,
    /// Lint1Pass (63, bit 191).
    pub lint1_pass: bool,
}

/// DTE quadword 3 (bits 255:192): vIOMMU and attribute override fields of rev 3.x; Linux's host driver leaves it 0.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct DteQw3 {
    #[bits(15)]
    __: u16,
    /// vImuEn (15).
    pub vimu_en: bool,
    /// GDeviceID (31:16).
    pub gdevice_id: u16,
    /// GuestID (47:32).
    pub guest_id: u16,
    #[bits(6)]
    __: u8,
    /// AttrV: attribute override valid (54, bit 246).
    pub attr_v: bool,
    /// Mode0FC: force coherent for mode-0 (untranslated) DMA (55).
    pub mode0_fc: bool,
    /// SnoopAttribute (63:56).
    pub snoop_attribute: u8,
}

impl DteQw0 {
    /// Reserved bits (6:2, 63).
    pub const RESERVED: u64 = mask64(6, 2) | 1 << 63;
    /// Set bits of the quadword that [`Self::RESERVED`] names.
    pub const fn reserved_bits(self) -> u64 {
        self.into_bits() & Self::RESERVED
    }
}

impl DteQw1 {
    /// No reserved bits in rev 3.x (QEMU `AMDVI_DTE_QUAD1_RESERVED` = 0; older parts reserved bit 42).
    pub const RESERVED: u64 = 0;
    /// Set bits of the quadword that [`Self::RESERVED`] names.
    pub const fn reserved_bits(self) -> u64 {
        self.into_bits() & Self::RESERVED
    }
}

impl DteQw2 {
    /// Reserved bits (53:52).
    pub const RESERVED: u64 = mask64(53, 52);
    /// Set bits of the quadword that [`Self::RESERVED`] names.
    pub const fn reserved_bits(self) -> u64 {
        self.into_bits() & Self::RESERVED
    }
}

impl DteQw3 {
    /// Reserved bits (14:0, 53:48).
    pub const RESERVED: u64 = mask64(14, 0) | mask64(53, 48);
    /// Set bits of the quadword that [`Self::RESERVED`] names.
    pub const fn reserved_bits(self) -> u64 {
        self.into_bits() & Self::RESERVED
    }
}

/// A device table entry as the four quadwords the hardware reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct Dte(pub [u64; 4]);

impl Dte {
    /// Quadword 0 (bits 63:0).
    pub const fn qw0(self) -> DteQw0 {
        DteQw0::from_bits(self.0[0])
    }
    /// Quadword 1 (bits 127:64).
    pub const fn qw1(self) -> DteQw1 {
        DteQw1::from_bits(self.0[1])
    }
    /// Quadword 2 (bits 191:128).
    pub const fn qw2(self) -> DteQw2 {
        DteQw2::from_bits(self.0[2])
    }
    /// Quadword 3 (bits 255:192).
    pub const fn qw3(self) -> DteQw3 {
        DteQw3::from_bits(self.0[3])
    }
    /// The entry with quadword 0 replaced.
    pub const fn with_qw0(mut self, q: DteQw0) -> Self {
        self.0[0] = q.into_bits();
        self
    }
    /// The entry with quadword 1 replaced.
    pub const fn with_qw1(mut self, q: DteQw1) -> Self {
        self.0[1] = q.into_bits();
        self
    }
    /// The entry with quadword 2 replaced.
    pub const fn with_qw2(mut self, q: DteQw2) -> Self {
        self.0[2] = q.into_bits();
        self
    }
    /// The entry with quadword 3 replaced.
    pub const fn with_qw3(mut self, q: DteQw3) -> Self {
        self.0[3] = q.into_bits();
        self
    }

    /// The entry from its 32 bytes in memory (little-endian quadwords).
    pub fn from_le_bytes(b: &[u8; 32]) -> Self {
        let mut q = [0u64; 4];
        for (i, chunk) in b.chunks_exact(8).enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            q[i] = u64::from_le_bytes(w);
        }
        Dte(q)
    }
    /// The 32 bytes the entry occupies in memory (little-endian quadwords).
    pub const fn to_le_bytes(self) -> [u8; 32] {
        let mut b = [0u8; 32];
        let mut i = 0;
        while i < 32 {
            b[i] = (self.0[i / 8] >> (8 * (i % 8))) as u8;
            i += 1;
        }
        b
    }

    /// V (bit 0): the entry is valid; clear, DMA passes untranslated and interrupts unremapped.
    pub const fn valid(self) -> bool {
        self.qw0().v()
    }
    /// TV (bit 1): Mode, the root pointer and the permissions are valid.
    pub const fn translation_valid(self) -> bool {
        self.qw0().tv()
    }
    /// Mode (bits 11:9): host page-table levels.
    pub const fn mode(self) -> PagingMode {
        self.qw0().mode()
    }
    /// Physical address of the host page-table root.
    pub const fn pt_root(self) -> u64 {
        self.qw0().pt_root() << 12
    }
    /// DomainID (bits 79:64).
    pub const fn domain_id(self) -> u16 {
        self.qw1().domain_id()
    }
    /// IR (bit 61): DMA reads allowed.
    pub const fn ir(self) -> bool {
        self.qw0().ir()
    }
    /// IW (bit 62): DMA writes allowed.
    pub const fn iw(self) -> bool {
        self.qw0().iw()
    }
    /// The GCR3 table root pointer assembled from its three pieces (bits 51:12 of a physical address).
    pub const fn gcr3(self) -> u64 {
        let (q0, q1) = (self.qw0(), self.qw1());
        (q0.gcr3_14_12() as u64) << 12 | (q1.gcr3_30_15() as u64) << 15 | (q1.gcr3_51_31() as u64) << 31
    }
    /// Spread `pa` (bits 51:12) over the three GCR3 fields.
    pub const fn with_gcr3(self, pa: u64) -> Self {
        let q0 = self.qw0().with_gcr3_14_12(((pa >> 12) & 7) as u8);
        let q1 = self.qw1().with_gcr3_30_15((pa >> 15) as u16).with_gcr3_51_31(((pa >> 31) & mask64(20, 0)) as u32);
        self.with_qw0(q0).with_qw1(q1)
    }
    /// Physical address of the interrupt remapping table.
    pub const fn int_table(self) -> u64 {
        self.qw2().int_table_root() << 6
    }
    /// Number of IRTEs the interrupt table holds: `2^IntTabLen`.
    pub const fn int_table_entries(self) -> u32 {
        1 << self.qw2().int_tab_len()
    }
    /// IntCtl (bits 189:188): fixed and arbitrated interrupts aborted, passed or remapped.
    pub const fn int_ctl(self) -> IntCtl {
        self.qw2().int_ctl()
    }
    /// IV: the interrupt fields are valid; clear, interrupts are forwarded unmapped (2.2.2).
    pub const fn iv(self) -> bool {
        self.qw2().iv()
    }
    /// The DTE with its interrupt-remapping quadword (qw2) taken from `from`: what an attach that rewrites
    /// translation must keep (Linux `set_dte_entry` carries `DTE_DATA2_INTR_MASK` over).
    pub const fn with_interrupts_of(self, from: Dte) -> Self {
        self.with_qw2(from.qw2())
    }
    /// The reserved bits set, per quadword.
    pub const fn reserved_bits(self) -> [u64; 4] {
        [self.qw0().reserved_bits(), self.qw1().reserved_bits(), self.qw2().reserved_bits(), self.qw3().reserved_bits()]
    }
    /// Any quadword has a reserved bit set: the IOMMU reports ILLEGAL_DEV_TABLE_ENTRY for such an entry.
    pub const fn has_reserved_bits(self) -> bool {
        let r = self.reserved_bits();
        r[0] | r[1] | r[2] | r[3] != 0
    }

    /// Linux's boot default for every entry (`amd_iommu_set_dev_table` at init): V=1, TV=1 (TV=0 when SNP is
    /// on), mode 0, IR=IW=0, so the device can do no DMA.
    pub const fn blocked(snp: bool) -> Self {
        Dte([DteQw0::new().with_v(true).with_tv(!snp).into_bits(), 0, 0, 0])
    }
    /// A v1 translated entry as Linux attaches it: root, mode, IR, IW, V, TV and the domain ID. The root is
    /// truncated to bits 51:12 and the mode to 3 bits: a hostile value cannot panic.
    pub const fn translated(root: u64, mode: PagingMode, domain_id: u16, ir: bool, iw: bool) -> Self {
        let q0 = DteQw0::new()
            .with_v(true)
            .with_tv(true)
            .with_mode(PagingMode::from_bits(mode.0))
            .with_pt_root((root >> 12) & mask64(39, 0))
            .with_ir(ir)
            .with_iw(iw);
        Dte([q0.into_bits(), DteQw1::new().with_domain_id(domain_id).into_bits(), 0, 0])
    }
    /// Pass-through: V, TV, mode 0 and full read/write permission.
    pub const fn passthrough(domain_id: u16) -> Self {
        Dte::translated(0, PagingMode::NoTranslation, domain_id, true, true)
    }
    /// Interrupt remapping through a table at `pa` with `2^len` entries (Linux: IV, IntTabLen, IntCtl = remapped).
    pub const fn with_int_remap(self, pa: u64, len: u8) -> Self {
        let q2 = self
            .qw2()
            .with_iv(true)
            .with_int_tab_len(len & 0xf)
            .with_int_table_root((pa >> 6) & mask64(45, 0))
            .with_int_ctl(IntCtl::Remap);
        self.with_qw2(q2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qw0_fields_at_spec_bits() {
        assert_eq!(DteQw0::new().with_v(true).into_bits(), 1);
        assert_eq!(DteQw0::new().with_tv(true).into_bits(), 1 << 1);
        assert_eq!(DteQw0::new().with_had(3).into_bits(), 3 << 7);
        assert_eq!(DteQw0::new().with_mode(PagingMode::Level6).into_bits(), 6 << 9);
        assert_eq!(DteQw0::new().with_pt_root(0xff_ffff_ffff).into_bits(), 0x000f_ffff_ffff_f000);
        assert_eq!(DteQw0::new().with_ppr(true).into_bits(), 1 << 52);
        assert_eq!(DteQw0::new().with_gprp(true).into_bits(), 1 << 53);
        assert_eq!(DteQw0::new().with_giov(true).into_bits(), 1 << 54);
        assert_eq!(DteQw0::new().with_gv(true).into_bits(), 1 << 55);
        assert_eq!(DteQw0::new().with_glx(3).into_bits(), 3 << 56);
        assert_eq!(DteQw0::new().with_gcr3_14_12(7).into_bits(), 7 << 58);
        assert_eq!(DteQw0::new().with_ir(true).into_bits(), 1 << 61);
        assert_eq!(DteQw0::new().with_iw(true).into_bits(), 1 << 62);
        assert_eq!(DteQw0::from_bits(7 << 9).mode(), PagingMode::Reserved);
        assert_eq!(PagingMode::Reserved.levels(), None);
        assert_eq!(PagingMode::NoTranslation.levels(), None);
        assert_eq!(PagingMode::Level4.levels(), Some(4));
    }

    #[test]
    fn qw1_fields_at_spec_bits() {
        assert_eq!(DteQw1::new().with_domain_id(0xffff).into_bits(), 0xffff);
        assert_eq!(DteQw1::new().with_gcr3_30_15(0xffff).into_bits(), 0xffff << 16);
        // Linux DEV_ENTRY_* numbers count from bit 0 of the whole entry: qw1 bit n is entry bit 64 + n.
        assert_eq!(DteQw1::new().with_i(true).into_bits(), 1 << 32);
        assert_eq!(DteQw1::new().with_se(true).into_bits(), 1 << 33);
        assert_eq!(DteQw1::new().with_sa(true).into_bits(), 1 << (0x62 - 64));
        assert_eq!(DteQw1::new().with_ioctl(3).into_bits(), 3 << 35);
        assert_eq!(DteQw1::new().with_cache(true).into_bits(), 1 << 37);
        assert_eq!(DteQw1::new().with_sd(true).into_bits(), 1 << 38);
        assert_eq!(DteQw1::new().with_ex(true).into_bits(), 1 << (0x67 - 64));
        assert_eq!(DteQw1::new().with_sysmgt(3).into_bits(), 1 << (0x68 - 64) | 1 << (0x69 - 64));
        assert_eq!(DteQw1::new().with_sats(true).into_bits(), 1 << 42);
        assert_eq!(DteQw1::new().with_gcr3_51_31(0x1f_ffff).into_bits(), 0x1f_ffff << 43);
        // DTE_FLAG_MASK covers 41:32.
        let flags = DteQw1::new().with_i(true).with_se(true).with_sa(true).with_ioctl(3).with_cache(true);
        let flags = flags.with_sd(true).with_ex(true).with_sysmgt(3);
        assert_eq!(flags.into_bits(), 0x3ff << 32);
    }

    #[test]
    fn qw2_fields_at_spec_bits() {
        assert_eq!(DteQw2::new().with_iv(true).into_bits(), 1);
        assert_eq!(DteQw2::new().with_int_tab_len(9).into_bits(), 9 << 1, "Linux DTE_INTTABLEN_512");
        assert_eq!(DteQw2::new().with_ig(true).into_bits(), 1 << 5);
        assert_eq!(DteQw2::new().with_int_table_root(mask64(45, 0)).into_bits(), mask64(51, 6));
        assert_eq!(DteQw2::new().with_guest_paging_mode(1).into_bits(), 1 << 54);
        assert_eq!(DteQw2::new().with_init_pass(true).into_bits(), 1 << (0xb8 - 128));
        assert_eq!(DteQw2::new().with_eint_pass(true).into_bits(), 1 << (0xb9 - 128));
        assert_eq!(DteQw2::new().with_nmi_pass(true).into_bits(), 1 << (0xba - 128));
        assert_eq!(DteQw2::new().with_hpt_mode(true).into_bits(), 1 << 59);
        assert_eq!(DteQw2::new().with_int_ctl(IntCtl::Remap).into_bits(), 2 << 60);
        assert_eq!(DteQw2::new().with_lint0_pass(true).into_bits(), 1 << (0xbe - 128));
        assert_eq!(DteQw2::new().with_lint1_pass(true).into_bits(), 1 << (0xbf - 128));
        assert_eq!(DteQw2::from_bits(3 << 60).int_ctl(), IntCtl::Reserved);
        // Linux DTE_DATA2_INTR_MASK keeps everything but 55:52.
        assert_eq!(DteQw2::RESERVED | mask64(55, 54), mask64(55, 52));
    }

    #[test]
    fn qw3_fields_at_spec_bits() {
        assert_eq!(DteQw3::new().with_vimu_en(true).into_bits(), 1 << 15);
        assert_eq!(DteQw3::new().with_gdevice_id(0xffff).into_bits(), 0xffff << 16);
        assert_eq!(DteQw3::new().with_guest_id(0xffff).into_bits(), 0xffff << 32);
        assert_eq!(DteQw3::new().with_attr_v(true).into_bits(), 1 << 54);
        assert_eq!(DteQw3::new().with_mode0_fc(true).into_bits(), 1 << 55);
        assert_eq!(DteQw3::new().with_snoop_attribute(0xff).into_bits(), 0xff << 56);
    }

    #[test]
    fn reserved_bit_sweeps() {
        let reserved: [&[core::ops::RangeInclusive<u32>]; 4] = [&[2..=6, 63..=63], &[], &[52..=53], &[0..=14, 48..=53]];
        for (qw, ranges) in reserved.iter().enumerate() {
            for bit in 0..64u32 {
                let mut raw = [0u64; 4];
                raw[qw] = 1 << bit;
                let d = Dte(raw);
                let is_res = ranges.iter().any(|r| r.contains(&bit));
                assert_eq!(d.reserved_bits()[qw] != 0, is_res, "qw{qw} bit {bit}");
                assert_eq!(d.has_reserved_bits(), is_res, "qw{qw} bit {bit}");
                assert_eq!(d.0, raw, "layout types never change raw bits");
            }
        }
        // QEMU's pre-2025 masks, for the record: qw0 0x80300000000000fc still flags bit 63 and 6:2 here.
        assert_eq!(DteQw0::from_bits(0x8030_0000_0000_00fc).reserved_bits(), 0x8000_0000_0000_007c);
    }

    #[test]
    fn linux_encodings() {
        let b = Dte::blocked(false);
        assert_eq!(b.0, [0b11, 0, 0, 0]);
        assert_eq!(Dte::blocked(true).0, [0b01, 0, 0, 0], "SNP: TV left clear");
        let t = Dte::translated(0x1234_5000, PagingMode::Level3, 7, true, true);
        assert_eq!(t.0[0], 0x1234_5000 | 3 << 9 | 1 << 61 | 1 << 62 | 0b11);
        assert_eq!(t.0[1], 7);
        assert_eq!(
            (t.pt_root(), t.mode(), t.domain_id(), t.ir(), t.iw()),
            (0x1234_5000, PagingMode::Level3, 7, true, true)
        );
        assert!(t.valid() && t.translation_valid() && !t.has_reserved_bits());
        let hostile = Dte::translated(u64::MAX, PagingMode(0xff), 1, false, false);
        assert_eq!(hostile.pt_root(), 0x000f_ffff_ffff_f000);
        assert_eq!(hostile.mode(), PagingMode::Reserved);
        let p = Dte::passthrough(1);
        assert_eq!(p.0[0], 0b11 | 3 << 61);
        let r = Dte::blocked(false).with_int_remap(0x8_1280, 9);
        assert_eq!(r.0[2], 1 | 9 << 1 | 0x8_1280 | 2 << 60);
        assert_eq!((r.int_table(), r.int_table_entries(), r.int_ctl()), (0x8_1280, 512, IntCtl::Remap));
        assert!(r.iv() && !Dte::blocked(false).iv());
        let kept = Dte::translated(0x5000, PagingMode::Level3, 2, true, true).with_interrupts_of(r);
        assert_eq!((kept.0[2], kept.pt_root()), (r.0[2], 0x5000));
    }

    #[test]
    fn gcr3_pieces() {
        let pa = 0x000f_ffff_ffff_f000u64;
        let d = Dte::default().with_gcr3(pa);
        assert_eq!(d.0[0], 7 << 58);
        assert_eq!(d.0[1], 0xffff << 16 | 0x1f_ffff << 43);
        assert_eq!(d.gcr3(), pa);
        assert_eq!(Dte::default().with_gcr3(0x1234_5678_9000).gcr3(), 0x1234_5678_9000);
    }

    #[test]
    fn bytes_and_round_trips() {
        let d = Dte([0x0123_4567_89ab_cdef, 1, 2, 0xfedc_ba98_7654_3210]);
        let b = d.to_le_bytes();
        assert_eq!(b[0], 0xef);
        assert_eq!(b[8], 1);
        assert_eq!(b[31], 0xfe);
        assert_eq!(Dte::from_le_bytes(&b), d);
        for raw in [0u64, u64::MAX, 0x5555_5555_5555_5555, 0xaaaa_aaaa_aaaa_aaaa, 0xdead_beef_0bad_f00d] {
            assert_eq!(DteQw0::from_bits(raw).into_bits(), raw);
            assert_eq!(DteQw1::from_bits(raw).into_bits(), raw);
            assert_eq!(DteQw2::from_bits(raw).into_bits(), raw);
            assert_eq!(DteQw3::from_bits(raw).into_bits(), raw);
            let d = Dte([raw; 4]);
            assert_eq!(d.with_qw0(d.qw0()).with_qw1(d.qw1()).with_qw2(d.qw2()).with_qw3(d.qw3()), d);
        }
    }
}
