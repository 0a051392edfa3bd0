//! AMD-Vi MMIO registers (spec 3.4). Offsets are bytes from the IOMMU's MMIO base; every register is 64 bits.

use bitfield_struct::bitfield;

use crate::mask64;

/// Register offsets (spec 3.4, Linux `MMIO_*_OFFSET`).
pub mod off {
    /// Device Table Base Address Register (3.4.1), see [`super::DevTableBase`].
    pub const DEV_TABLE_BASE: usize = 0x0000;
    /// Command Buffer Base Address Register (3.4.2), see [`super::RingBase`].
    pub const CMD_BUF_BASE: usize = 0x0008;
    /// Event Log Base Address Register (3.4.3), see [`super::RingBase`].
    pub const EVENT_LOG_BASE: usize = 0x0010;
    /// IOMMU Control Register (3.4.4), see [`super::super::ctrl`].
    pub const CONTROL: usize = 0x0018;
    /// Exclusion Base; with SNP enforcement on, the Completion Store (CWWB) Base.
    pub const EXCL_BASE: usize = 0x0020;
    /// Exclusion Range Limit; with SNP enforcement on, the Completion Store (CWWB) Limit.
    pub const EXCL_LIMIT: usize = 0x0028;
    /// Extended Feature Register (EFR).
    pub const EXT_FEATURES: usize = 0x0030;
    /// PPR Log Base Address Register, see [`super::RingBase`].
    pub const PPR_LOG_BASE: usize = 0x0038;
    /// IOMMU Hardware Event Upper Register: one half of the 128-bit hardware error event.
    pub const HW_EVENT_HI: usize = 0x0040;
    /// IOMMU Hardware Event Lower Register: the other half of the hardware error event.
    pub const HW_EVENT_LO: usize = 0x0048;
    /// IOMMU Hardware Event Status Register: HEV (bit 0) valid, HEO (bit 1) overflow.
    pub const HW_EVENT_STATUS: usize = 0x0050;
    /// Guest Virtual APIC Log Base Address Register, see [`super::GaLogBase`].
    pub const GA_LOG_BASE: usize = 0x00e0;
    /// Guest Virtual APIC Log Tail Address Register: where the IOMMU writes the GA log tail.
    pub const GA_LOG_TAIL_ADDR: usize = 0x00e8;
    /// PPR Log B Base Address Register (dual PPR log).
    pub const PPR_LOG_B_BASE: usize = 0x00f0;
    /// Event Log B Base Address Register (dual event log).
    pub const EVENT_LOG_B_BASE: usize = 0x00f8;
    /// MSI Address Low of the IOMMU's MSI capability mirror (Linux `MMIO_MSI_ADDR_LO_OFFSET`), 32-bit.
    pub const MSI_ADDR_LO: usize = 0x015c;
    /// MSI Address High of the MSI capability mirror, 32-bit.
    pub const MSI_ADDR_HI: usize = 0x0160;
    /// MSI Data of the MSI capability mirror, 32-bit.
    pub const MSI_DATA: usize = 0x0164;
    /// x2APIC interrupt capability for the event log (Linux `MMIO_INTCAPXT_EVT_OFFSET`).
    pub const INTCAPXT_EVT: usize = 0x0170;
    /// x2APIC interrupt capability for the PPR log (Linux `MMIO_INTCAPXT_PPR_OFFSET`).
    pub const INTCAPXT_PPR: usize = 0x0178;
    /// x2APIC interrupt capability for the GA log (Linux `MMIO_INTCAPXT_GALOG_OFFSET`).
    pub const INTCAPXT_GALOG: usize = 0x0180;
    /// Extended Feature 2 Register (EFR2).
    pub const EXT_FEATURES2: usize = 0x01a0;
    /// Command Buffer Head Pointer Register: the IOMMU's read offset, see [`super::RingPtr`].
    pub const CMD_HEAD: usize = 0x2000;
    /// Command Buffer Tail Pointer Register: software's write offset, see [`super::RingPtr`].
    pub const CMD_TAIL: usize = 0x2008;
    /// Event Log Head Pointer Register: software's read offset, see [`super::RingPtr`].
    pub const EVENT_HEAD: usize = 0x2010;
    /// Event Log Tail Pointer Register: the IOMMU's write offset, see [`super::RingPtr`].
    pub const EVENT_TAIL: usize = 0x2018;
    /// IOMMU Status Register (3.4.13), see [`super::Status`].
    pub const STATUS: usize = 0x2020;
    /// PPR Log Head Pointer Register, see [`super::RingPtr`].
    pub const PPR_HEAD: usize = 0x2030;
    /// PPR Log Tail Pointer Register, see [`super::RingPtr`].
    pub const PPR_TAIL: usize = 0x2038;
    /// Guest Virtual APIC Log Head Pointer Register (8-byte entries).
    pub const GA_HEAD: usize = 0x2040;
    /// Guest Virtual APIC Log Tail Pointer Register (8-byte entries).
    pub const GA_TAIL: usize = 0x2048;
    /// Performance counter configuration (Linux `MMIO_CNTR_CONF_OFFSET`), with PCSup.
    pub const CNTR_CONF: usize = 0x4000;
    /// Performance counter banks start here (PCSup).
    pub const CNTR_REG: usize = 0x40000;
    /// End of the MMIO window Linux maps when performance counters are present.
    pub const REG_END: usize = 0x80000;
}

/// Registers whose writes hardware ignores while IOMMU SNP enforcement is on (spec 48882 rev 3.10 2.12.2.1, as
/// quoted by the SNP kdump series): they keep pointing at the crashed kernel's structures.
pub const SNP_LOCKED: [usize; 5] =
    [off::DEV_TABLE_BASE, off::CMD_BUF_BASE, off::EVENT_LOG_BASE, off::EXCL_BASE, off::EXCL_LIMIT];

/// Device Table Base Address Register (3.4.1).
///
/// Size is 9 bits (8:0) in the spec as VirtualBox transcribes it: a device table is at most 2 MiB, 512 pages.
/// QEMU decodes bits 11:0 as the size; bits 11:9 are reserved here and show up in [`Self::reserved_bits`].
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct DevTableBase {
    /// Table size in 4 KiB pages, minus one.
    #[bits(9)]
    pub size: u16,
    #[bits(3)]
    __: u8,
    /// DevTabBase, bits 51:12.
    #[bits(40)]
    pub base: u64,
    #[bits(12)]
    __: u16,
}

impl DevTableBase {
    /// Physical address of the device table, 4 KiB aligned.
    pub const fn table(self) -> u64 {
        self.base() << 12
    }
    /// Table bytes: `(Size + 1) * 4 KiB`.
    pub const fn bytes(self) -> u64 {
        (self.size() as u64 + 1) * crate::PAGE_SIZE
    }
    /// Device table entries the table holds: 128 per page.
    pub const fn entries(self) -> u32 {
        (self.size() as u32 + 1) * 128
    }
    /// The register for a table at `pa` of `bytes` (a multiple of 4 KiB, at most 2 MiB), as Linux's
    /// `iommu_set_device_table` writes it. Out-of-range inputs are truncated, never a panic.
    pub const fn from_table(pa: u64, bytes: u64) -> Self {
        let pages = bytes / crate::PAGE_SIZE;
        let size = if pages == 0 { 0 } else { (pages - 1) & 0x1ff };
        DevTableBase::new().with_base((pa >> 12) & mask64(39, 0)).with_size(size as u16)
    }
    /// Reserved bits (11:9, 63:52).
    pub const fn reserved_bits(self) -> u64 {
        self.into_bits() & (mask64(11, 9) | mask64(63, 52))
    }
}

/// Command Buffer, Event Log, PPR Log and GA Log Base Address Registers (3.4.2, 3.4.3, 3.4.7): a 4 KiB-aligned
/// base and a length code in 59:56 (Linux `MMIO_CMD_SIZE_SHIFT`, `EVT_LEN_MASK`).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct RingBase {
    #[bits(12)]
    __: u16,
    /// ComBase / EventBase / PPRLogBase / GALogBase, bits 51:12.
    #[bits(40)]
    pub base: u64,
    #[bits(4)]
    __: u8,
    /// ComLen / EventLen / PPRLogLen / GALogLen: the ring holds `2^length` 16-byte units. The spec reserves codes
    /// below 8 (fewer than 256 entries); Linux writes 9 (512 entries, 8 KiB) for the command buffer and event log.
    #[bits(4)]
    pub length: u8,
    #[bits(4)]
    __: u8,
}

/// Command Buffer Base Address Register (3.4.2).
pub type CmdBufBase = RingBase;
/// Event Log Base Address Register (3.4.3).
pub type EventLogBase = RingBase;
/// PPR Log Base Address Register.
pub type PprLogBase = RingBase;
/// Guest virtual-APIC Log Base Address Register: 8-byte entries, so `length` 8 (Linux `GA_LOG_SIZE_512`) gives 512.
pub type GaLogBase = RingBase;

impl RingBase {
    /// Smallest length code the spec allows (256 entries, 4 KiB).
    pub const MIN_LEN: u8 = 8;
    /// Length code Linux uses for its command buffer and event log (512 entries, 8 KiB).
    pub const LINUX_LEN: u8 = 9;

    /// Physical address of the ring, 4 KiB aligned.
    pub const fn ring(self) -> u64 {
        self.base() << 12
    }
    /// Ring size in bytes: `16 << length`.
    pub const fn bytes(self) -> u64 {
        16 << self.length()
    }
    /// Number of 16-byte entries (commands, events, PPR requests): `2^length`.
    pub const fn entries(self) -> u32 {
        1 << self.length()
    }
    /// Whether `length` is one the spec defines (8..=15).
    pub const fn length_valid(self) -> bool {
        self.length() >= Self::MIN_LEN
    }
    /// The register for a ring at `pa` with `2^length` entries. Out-of-range inputs are truncated.
    pub const fn from_ring(pa: u64, length: u8) -> Self {
        RingBase::new().with_base((pa >> 12) & mask64(39, 0)).with_length(length & 0xf)
    }
    /// Reserved bits (11:0, 55:52, 63:60).
    pub const fn reserved_bits(self) -> u64 {
        self.into_bits() & (mask64(11, 0) | mask64(55, 52) | mask64(63, 60))
    }
}

/// Exclusion Base Register (3.4.5). With SNP enforcement on, the spec re-purposes it as the Completion Store
/// (CWWB) Base: COMPLETION_WAIT stores must land in `[base, limit]`; Linux writes its `cmd_sem` page here.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct ExclusionBase {
    /// ExEn: exclusion range enabled (Linux `MMIO_EXCL_ENABLE_MASK`).
    pub ex_en: bool,
    /// Allow: the range applies to all devices (Linux `MMIO_EXCL_ALLOW_MASK`).
    pub allow: bool,
    #[bits(10)]
    __: u16,
    /// ExclusionRangeBaseAddr (or Completion Store base) bits 51:12.
    #[bits(40)]
    pub base: u64,
    #[bits(12)]
    __: u16,
}

/// Completion Store Base (the Exclusion Base register under SNP).
pub type CompletionStoreBase = ExclusionBase;

impl ExclusionBase {
    /// First byte of the range, 4 KiB aligned.
    pub const fn address(self) -> u64 {
        self.base() << 12
    }
    /// The register for a range starting at `pa` (bits outside 51:12 dropped), ExEn and Allow clear.
    pub const fn from_address(pa: u64) -> Self {
        ExclusionBase::new().with_base((pa >> 12) & mask64(39, 0))
    }
}

/// Exclusion Range Limit Register (3.4.6); under SNP the Completion Store Limit. Bits 11:0 read as ones.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct ExclusionLimit {
    #[bits(12)]
    __: u16,
    /// ExclusionRangeLimit (or Completion Store limit) bits 51:12: the last page of the range.
    #[bits(40)]
    pub limit: u64,
    #[bits(12)]
    __: u16,
}

/// Completion Store Limit (the Exclusion Limit register under SNP).
pub type CompletionStoreLimit = ExclusionLimit;

impl ExclusionLimit {
    /// Last byte of the range, inclusive: the limit page with its low 12 bits set.
    pub const fn last(self) -> u64 {
        self.limit() << 12 | 0xfff
    }
    /// The register whose last page holds `pa` (bits outside 51:12 dropped).
    pub const fn from_address(pa: u64) -> Self {
        ExclusionLimit::new().with_limit((pa >> 12) & mask64(39, 0))
    }
}

/// Whether `[addr, addr + 8)` (a COMPLETION_WAIT store) lies inside the window named by base and limit.
pub const fn in_completion_store(base: ExclusionBase, limit: ExclusionLimit, addr: u64) -> bool {
    addr >= base.address() && addr <= limit.last() && limit.last() - addr >= 7
}

/// Command buffer and event/PPR log head and tail pointer registers (3.4.9–3.4.12): a byte offset into the ring
/// in bits 18:4, so always a whole 16-byte entry (Linux `MMIO_CMD_HEAD_MASK`).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct RingPtr {
    #[bits(4)]
    __: u8,
    /// Entry index (the byte offset divided by 16).
    #[bits(15)]
    pub index: u16,
    #[bits(45)]
    __: u64,
}

impl RingPtr {
    /// The register for entry `index` (15 bits kept).
    pub const fn from_index(index: u32) -> Self {
        RingPtr::new().with_index((index & 0x7fff) as u16)
    }
    /// The register value for byte offset `off` (16-byte aligned, below 512 KiB; other bits dropped).
    pub const fn from_offset(off: u64) -> Self {
        RingPtr::from_bits(off & mask64(18, 4))
    }
    /// Byte offset into the ring: `index * 16`.
    pub const fn offset(self) -> u64 {
        (self.index() as u64) << 4
    }
    /// Reserved bits (3:0, 63:19).
    pub const fn reserved_bits(self) -> u64 {
        self.into_bits() & !mask64(18, 4)
    }
}

/// IOMMU Status Register (3.4.13).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct Status {
    /// EventOverflow (W1C).
    pub event_overflow: bool,
    /// EventLogInt (W1C).
    pub event_log_int: bool,
    /// ComWaitInt (W1C): a COMPLETION_WAIT with I=1 completed.
    pub com_wait_int: bool,
    /// EventLogRun (RO).
    pub event_log_run: bool,
    /// CmdBufRun (RO).
    pub cmd_buf_run: bool,
    /// PprOverflow (W1C).
    pub ppr_overflow: bool,
    /// PprInt (W1C).
    pub ppr_int: bool,
    /// PprLogRun (RO).
    pub ppr_log_run: bool,
    /// GALogRun (RO).
    pub ga_log_run: bool,
    /// GALOverflow (W1C).
    pub ga_log_overflow: bool,
    /// GAInt (W1C).
    pub ga_int: bool,
    /// PprOvrflwB.
    pub ppr_overflow_b: bool,
    /// PprLogActive (which of the dual PPR logs is active).
    pub ppr_log_active: bool,
    #[bits(2)]
    __: u8,
    /// EvtOvrflwB.
    pub event_overflow_b: bool,
    /// EventLogActive.
    pub event_log_active: bool,
    /// PprOvrflwEarlyB.
    pub ppr_overflow_early_b: bool,
    /// PprOverflowEarly.
    pub ppr_overflow_early: bool,
    #[bits(45)]
    __: u64,
}

impl Status {
    /// The bits software clears by writing 1, as Linux and QEMU list them (the dual-log B bits are not modelled).
    pub const W1C: u64 = 0b110_0110_0111;
    /// The read-only run bits.
    pub const RUN: u64 = 0b1_1001_1000;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_match_linux() {
        assert_eq!(off::CONTROL, 0x18);
        assert_eq!(off::EXT_FEATURES, 0x30);
        assert_eq!(off::EXT_FEATURES2, 0x1a0);
        assert_eq!((off::CMD_HEAD, off::CMD_TAIL, off::EVENT_HEAD, off::EVENT_TAIL), (0x2000, 0x2008, 0x2010, 0x2018));
        assert_eq!(off::STATUS, 0x2020);
        assert_eq!(SNP_LOCKED, [0x0, 0x8, 0x10, 0x20, 0x28]);
    }

    #[test]
    fn dev_table_base_size() {
        // Linux: a 2 MiB table (65536 devices) is written as base | 0x1ff.
        let r = DevTableBase::from_bits(0x1_2340_0000 | 0x1ff);
        assert_eq!(r.table(), 0x1_2340_0000);
        assert_eq!(r.bytes(), 2 << 20);
        assert_eq!(r.entries(), 65536);
        assert_eq!(DevTableBase::from_table(0x1_2340_0000, 2 << 20), r);
        assert_eq!(DevTableBase::from_bits(0).entries(), 128);
        assert_eq!(DevTableBase::from_table(0x8000, 0).size(), 0);
        for bit in 0..64 {
            let res = (9..12).contains(&bit) || bit >= 52;
            assert_eq!(DevTableBase::from_bits(1 << bit).reserved_bits() != 0, res, "bit {bit}");
        }
    }

    #[test]
    fn ring_bases() {
        // Linux: command buffer base | MMIO_CMD_SIZE_512 (0x9 << 56).
        let c = CmdBufBase::from_bits(0x0000_0001_0000_2000 | 0x9 << 56);
        assert_eq!(c.ring(), 0x1_0000_2000);
        assert_eq!(c.length(), 9);
        assert_eq!(c.entries(), 512);
        assert_eq!(c.bytes(), 8192);
        assert!(c.length_valid() && !RingBase::from_ring(0, 7).length_valid());
        assert_eq!(RingBase::from_ring(0x1_0000_2fff, 9), c, "low bits of the address are dropped");
        assert_eq!(RingBase::from_ring(0, 15).entries(), 32768);
        // GA log: 8-byte entries; Linux GA_LOG_SIZE_512 is 0x8.
        assert_eq!(GaLogBase::from_ring(0, 8).bytes() / 8, 512);
        for bit in 0..64 {
            let res = bit < 12 || (52..56).contains(&bit) || bit >= 60;
            assert_eq!(RingBase::from_bits(1 << bit).reserved_bits() != 0, res, "bit {bit}");
        }
    }

    #[test]
    fn exclusion_and_completion_store() {
        let b = ExclusionBase::from_bits(0x7_f000 | 0b11);
        assert!(b.ex_en() && b.allow());
        assert_eq!(b.address(), 0x7_f000);
        let l = ExclusionLimit::from_address(0x7_f000);
        assert_eq!(l.into_bits(), 0x7_f000);
        assert_eq!(l.last(), 0x7_ffff);
        // Linux under SNP: base == limit == the cmd_sem page, so the window is one 4 KiB page.
        let base = CompletionStoreBase::from_address(0x7_f000);
        assert!(in_completion_store(base, l, 0x7_f000));
        assert!(in_completion_store(base, l, 0x7_fff8));
        assert!(!in_completion_store(base, l, 0x7_fffc), "an 8-byte store must fit");
        assert!(!in_completion_store(base, l, 0x7_e000));
        assert!(!in_completion_store(base, l, 0x8_0000));
    }

    #[test]
    fn head_tail_pointers() {
        assert_eq!(RingPtr::from_index(5).into_bits(), 5 << 4);
        assert_eq!(RingPtr::from_bits(0x1ff0).index(), 0x1ff);
        assert_eq!(RingPtr::from_offset(0x1ff0).offset(), 0x1ff0);
        assert_eq!(RingPtr::from_offset(0x8_0000 | 0x20 | 0x8).offset(), 0x20, "bits beyond 18:4 dropped");
        assert_eq!(RingPtr::from_index(0x8000).index(), 0, "index wraps at the field width");
        for bit in 0..64 {
            assert_eq!(RingPtr::from_bits(1 << bit).reserved_bits() != 0, !(4..19).contains(&bit), "bit {bit}");
        }
    }

    #[test]
    fn status_bits() {
        let w1c = Status::new()
            .with_event_overflow(true)
            .with_event_log_int(true)
            .with_com_wait_int(true)
            .with_ppr_overflow(true)
            .with_ppr_int(true)
            .with_ga_log_overflow(true)
            .with_ga_int(true);
        assert_eq!(w1c.into_bits(), Status::W1C);
        let run =
            Status::new().with_event_log_run(true).with_cmd_buf_run(true).with_ppr_log_run(true).with_ga_log_run(true);
        assert_eq!(run.into_bits(), Status::RUN);
        assert_eq!(Status::new().with_cmd_buf_run(true).into_bits(), 1 << 4);
        assert_eq!(Status::new().with_ppr_overflow_early(true).into_bits(), 1 << 18);
        assert_eq!(Status::new().with_event_log_active(true).into_bits(), 1 << 16);
    }

    #[test]
    fn every_register_round_trips_any_raw_value() {
        for raw in [0u64, u64::MAX, 0x5555_5555_5555_5555, 0xaaaa_aaaa_aaaa_aaaa, 0xdead_beef_0bad_f00d] {
            assert_eq!(DevTableBase::from_bits(raw).into_bits(), raw);
            assert_eq!(RingBase::from_bits(raw).into_bits(), raw);
            assert_eq!(ExclusionBase::from_bits(raw).into_bits(), raw);
            assert_eq!(ExclusionLimit::from_bits(raw).into_bits(), raw);
            assert_eq!(RingPtr::from_bits(raw).into_bits(), raw);
            assert_eq!(Status::from_bits(raw).into_bits(), raw);
        }
    }
}
