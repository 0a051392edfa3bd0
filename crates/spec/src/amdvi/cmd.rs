//! Command buffer entries (spec 2.4): 16 bytes, the opcode in bits 63:60 (dw1 31:28, Linux `CMD_SET_TYPE`).

use bitfield_struct::bitfield;

use super::{mask128, DeviceId};
use crate::mask64;

/// Bytes per command.
pub const CMD_SIZE: u64 = 16;

/// The "whole address space" invalidation address with S=1 (Linux `CMD_INV_IOMMU_ALL_PAGES_ADDRESS` with the
/// low 12 bits cleared, as `build_inv_address` leaves it).
pub const INV_ALL_PAGES_ADDRESS: u64 = 0x7fff_ffff_ffff_f000;

/// Command opcodes (Linux `CMD_*`, QEMU `AMDVI_CMD_*`).
#[open_enum::open_enum]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CmdOpcode {
    /// COMPLETION_WAIT (`CMD_COMPL_WAIT`).
    CompletionWait = 0x1,
    /// INVALIDATE_DEVTAB_ENTRY (`CMD_INV_DEV_ENTRY`).
    InvalidateDevTabEntry = 0x2,
    /// INVALIDATE_IOMMU_PAGES (`CMD_INV_IOMMU_PAGES`).
    InvalidateIommuPages = 0x3,
    /// INVALIDATE_IOTLB_PAGES, an ATS invalidation to the device (`CMD_INV_IOTLB_PAGES`).
    InvalidateIotlbPages = 0x4,
    /// INVALIDATE_INTERRUPT_TABLE (`CMD_INV_IRT`).
    InvalidateInterruptTable = 0x5,
    /// PREFETCH_IOMMU_PAGES (QEMU decodes it as a no-op; Linux never sends it).
    PrefetchIommuPages = 0x6,
    /// COMPLETE_PPR_REQUEST (`CMD_COMPLETE_PPR`).
    CompletePprRequest = 0x7,
    /// INVALIDATE_IOMMU_ALL: needs EFR.IASup.
    InvalidateIommuAll = 0x8,
}

crate::open_enum_bits!(CmdOpcode, u8, 4);

/// The opcode of a raw command.
pub const fn cmd_opcode(raw: u128) -> CmdOpcode {
    CmdOpcode::from_bits((raw >> 60) as u8)
}

/// COMPLETION_WAIT (2.4.1).
#[bitfield(u128)]
#[derive(PartialEq, Eq)]
pub struct CompletionWait {
    /// S: store `store_data` at the store address when all earlier commands completed.
    pub s: bool,
    /// I: set Status.ComWaitInt (and interrupt if ComWaitIntEn).
    pub i: bool,
    /// F: flush queue.
    pub f: bool,
    /// Store address bits 51:3 (8-byte aligned).
    #[bits(49)]
    pub store_addr: u64,
    #[bits(8)]
    __: u8,
    /// Opcode (bits 63:60).
    #[bits(4)]
    pub opcode: CmdOpcode,
    /// Store data (bits 127:64), written with S = 1.
    pub store_data: u64,
}

impl CompletionWait {
    /// Reserved bits (59:52).
    pub const RESERVED: u128 = mask128(59, 52);

    /// The store address, 8-byte aligned.
    pub const fn store_address(self) -> u64 {
        self.store_addr() << 3
    }
    /// A wait that stores `data` at `addr` (Linux `build_completion_wait`: S only, no interrupt).
    pub const fn store(addr: u64, data: u64) -> Self {
        CompletionWait::new()
            .with_opcode(CmdOpcode::CompletionWait)
            .with_s(true)
            .with_store_addr((addr >> 3) & mask64(48, 0))
            .with_store_data(data)
    }
}

/// INVALIDATE_DEVTAB_ENTRY (2.4.2) and INVALIDATE_INTERRUPT_TABLE (2.4.5): one DeviceID operand.
#[bitfield(u128)]
#[derive(PartialEq, Eq)]
pub struct InvalidateDevice {
    /// DeviceID (bits 15:0).
    pub device_id: u16,
    #[bits(44)]
    __: u64,
    /// Opcode (bits 63:60).
    #[bits(4)]
    pub opcode: CmdOpcode,
    __: u64,
}

impl InvalidateDevice {
    /// Reserved bits (59:16, 127:64).
    pub const RESERVED: u128 = mask128(59, 16) | mask128(127, 64);

    /// INVALIDATE_DEVTAB_ENTRY for `device` (Linux `build_inv_dte`).
    pub const fn devtab_entry(device: DeviceId) -> Self {
        InvalidateDevice::new().with_opcode(CmdOpcode::InvalidateDevTabEntry).with_device_id(device.0)
    }
    /// INVALIDATE_INTERRUPT_TABLE for `device` (Linux `build_inv_irt`).
    pub const fn interrupt_table(device: DeviceId) -> Self {
        InvalidateDevice::new().with_opcode(CmdOpcode::InvalidateInterruptTable).with_device_id(device.0)
    }
}

/// INVALIDATE_IOMMU_PAGES (2.4.3).
#[bitfield(u128)]
#[derive(PartialEq, Eq)]
pub struct InvalidateIommuPages {
    /// PASID (with GN=1).
    #[bits(20)]
    pub pasid: u32,
    #[bits(12)]
    __: u16,
    /// DomainID (bits 47:32).
    pub domain_id: u16,
    #[bits(12)]
    __: u16,
    /// Opcode (bits 63:60).
    #[bits(4)]
    pub opcode: CmdOpcode,
    /// S: the address encodes a range (see [`inv_range`]).
    pub s: bool,
    /// PDE: also drop cached page-directory entries.
    pub pde: bool,
    /// GN: guest (PASID) address space.
    pub gn: bool,
    #[bits(9)]
    __: u16,
    /// Address bits 63:12.
    #[bits(52)]
    pub address: u64,
}

impl InvalidateIommuPages {
    /// Reserved bits (31:20, 59:48, 75:67).
    pub const RESERVED: u128 = mask128(31, 20) | mask128(59, 48) | mask128(75, 67);

    /// Invalidate `[start, start + size)` (widened to the aligned power of two Linux's `build_inv_address`
    /// picks) in `domain_id`, PDEs included, as Linux's `build_inv_iommu_pages` for a host domain.
    pub const fn range(domain_id: u16, start: u64, size: u64) -> Self {
        let (addr, s) = inv_address(start, size);
        InvalidateIommuPages::new()
            .with_opcode(CmdOpcode::InvalidateIommuPages)
            .with_domain_id(domain_id)
            .with_pde(true)
            .with_s(s)
            .with_address(addr >> 12)
    }
    /// The whole address space of `domain_id` (address 0x7FFF_FFFF_FFFF_F000, S=1, PDE=1).
    pub const fn all(domain_id: u16) -> Self {
        InvalidateIommuPages::new()
            .with_opcode(CmdOpcode::InvalidateIommuPages)
            .with_domain_id(domain_id)
            .with_pde(true)
            .with_s(true)
            .with_address(INV_ALL_PAGES_ADDRESS >> 12)
    }
    /// The IOVA range `(first, last)` (inclusive) the command covers.
    pub const fn covered(self) -> (u64, u64) {
        inv_range(self.address() << 12, self.s())
    }
}

/// INVALIDATE_IOTLB_PAGES (2.4.4): invalidates a device's ATS translation cache.
///
/// PASID split as Linux's `build_inv_iotlb_pages` writes it: `PASID[15:8]` in dw0 23:16, `PASID[7:0]` in dw1
/// 23:16. dw1 27:24 would hold `PASID[19:16]` (VirtualBox reads dw1 27:16 as one 12-bit PASID piece); Linux only
/// handles 16-bit PASIDs, so that nibble is unconfirmed. dw1 15:0 is the spec's QueueID; Linux writes the
/// DeviceID there too.
#[bitfield(u128)]
#[derive(PartialEq, Eq)]
pub struct InvalidateIotlbPages {
    /// DeviceID (bits 15:0) of the endpoint.
    pub device_id: u16,
    /// PASID bits 15:8 (bits 23:16).
    pub pasid_15_8: u8,
    /// Maxpend: the device's invalidate queue depth (Linux passes the ATS queue depth).
    pub maxpend: u8,
    /// QueueID (bits 47:32).
    pub queue_id: u16,
    /// PASID bits 7:0 (bits 55:48).
    pub pasid_7_0: u8,
    /// PASID bits 19:16 (bits 59:56; unconfirmed, see above).
    #[bits(4)]
    pub pasid_19_16: u8,
    /// Opcode (bits 63:60).
    #[bits(4)]
    pub opcode: CmdOpcode,
    /// S (bit 64): the address encodes a range (see [`inv_range`]).
    pub s: bool,
    #[bits(1)]
    __: u8,
    /// GN (bit 66): guest (PASID) address space.
    pub gn: bool,
    #[bits(1)]
    __: u8,
    /// Type (69:68, only with EFR.InvIotlbTypeSup).
    #[bits(2)]
    pub ty: u8,
    #[bits(6)]
    __: u8,
    /// Address bits 63:12 (bits 127:76).
    #[bits(52)]
    pub address: u64,
}

impl InvalidateIotlbPages {
    /// Reserved bits (65, 67, 75:70).
    pub const RESERVED: u128 = 1 << 65 | 1 << 67 | mask128(75, 70);

    /// Invalidate `[start, start + size)` in the device's IOTLB, as Linux's `build_inv_iotlb_pages` (no PASID).
    pub const fn range(device: DeviceId, maxpend: u8, start: u64, size: u64) -> Self {
        let (addr, s) = inv_address(start, size);
        InvalidateIotlbPages::new()
            .with_opcode(CmdOpcode::InvalidateIotlbPages)
            .with_device_id(device.0)
            .with_queue_id(device.0)
            .with_maxpend(maxpend)
            .with_s(s)
            .with_address(addr >> 12)
    }
    /// The 20-bit PASID assembled from its three pieces (meaningful with GN = 1).
    pub const fn pasid(self) -> u32 {
        (self.pasid_19_16() as u32) << 16 | (self.pasid_15_8() as u32) << 8 | self.pasid_7_0() as u32
    }
    /// The inclusive address range `(first, last)` the command invalidates, see [`inv_range`].
    pub const fn covered(self) -> (u64, u64) {
        inv_range(self.address() << 12, self.s())
    }
}

/// COMPLETE_PPR_REQUEST (2.4.6), Linux `build_complete_ppr` layout: tag in dw3 8:0, status in dw3 15:12.
#[bitfield(u128)]
#[derive(PartialEq, Eq)]
pub struct CompletePprRequest {
    /// DeviceID (bits 15:0) of the requester.
    pub device_id: u16,
    __: u16,
    /// PASID (bits 51:32), with GN = 1.
    #[bits(20)]
    pub pasid: u32,
    #[bits(8)]
    __: u8,
    /// Opcode (bits 63:60).
    #[bits(4)]
    pub opcode: CmdOpcode,
    #[bits(2)]
    __: u8,
    /// GN (bit 66): the request carried a PASID.
    pub gn: bool,
    #[bits(29)]
    __: u32,
    /// Completion tag (bits 104:96), the PPR request's PRG index.
    #[bits(9)]
    pub tag: u16,
    #[bits(3)]
    __: u8,
    /// Response status (bits 111:108): the PCIe PRG response code.
    #[bits(4)]
    pub status: u8,
    __: u16,
}

impl CompletePprRequest {
    /// Bits outside the fields Linux writes.
    pub const RESERVED: u128 = mask128(31, 16) | mask128(59, 52) | mask128(65, 64) | mask128(95, 67);
    /// Tag bits 11:9 and dw3 31:16 (the spec's completion tag may be wider than Linux's 9 bits: unconfirmed).
    pub const TAG_HIGH: u128 = mask128(107, 105) | mask128(127, 112);
}

/// INVALIDATE_IOMMU_ALL (2.4.7): no operands; every other bit is reserved.
pub const fn invalidate_iommu_all() -> u128 {
    (CmdOpcode::InvalidateIommuAll.0 as u128) << 60
}

/// The reserved bits set in a raw command of a known opcode (a non-zero result is what the hardware reports
/// as ILLEGAL_COMMAND_ERROR); `None` for opcodes this module does not know.
pub const fn cmd_reserved_bits(raw: u128) -> Option<u128> {
    let mask = match cmd_opcode(raw) {
        CmdOpcode::CompletionWait => CompletionWait::RESERVED,
        CmdOpcode::InvalidateDevTabEntry | CmdOpcode::InvalidateInterruptTable => InvalidateDevice::RESERVED,
        CmdOpcode::InvalidateIommuPages => InvalidateIommuPages::RESERVED,
        CmdOpcode::InvalidateIotlbPages => InvalidateIotlbPages::RESERVED,
        CmdOpcode::CompletePprRequest => CompletePprRequest::RESERVED,
        CmdOpcode::InvalidateIommuAll => mask128(59, 0) | mask128(127, 64),
        _ => return None,
    };
    Some(raw & mask)
}

/// Address and S bit for invalidating `[start, start + size)`, as Linux's `build_inv_address`: one page gives
/// S=0 and the page address; otherwise the bits below the highest bit in which first and last byte differ are
/// set (widening to an aligned power of two) and S=1; a span above bit 51 becomes the whole-space address.
pub const fn inv_address(start: u64, size: u64) -> (u64, bool) {
    let last = start.saturating_add(if size == 0 { 0 } else { size - 1 });
    if start >> 12 == last >> 12 {
        return (start & !0xfff, false);
    }
    let msb = 63 - (start ^ last).leading_zeros();
    if msb > 51 {
        return (INV_ALL_PAGES_ADDRESS, true);
    }
    ((start | ((1 << msb) - 1)) & !0xfff, true)
}

/// The inclusive IOVA range `(first, last)` an invalidation address covers (the decoder of [`inv_address`], as
/// QEMU decodes it): S=0 is one 4 KiB page; S=1 is `2^(p+1)` bytes for `p` the lowest clear bit at or above 12.
/// The whole-space address (p = 63) covers all of u64; QEMU treats any p ≥ 51 as all.
pub const fn inv_range(address: u64, s: bool) -> (u64, u64) {
    let page = address & !0xfff;
    if !s {
        return (page, page | 0xfff);
    }
    let p = 12 + (address >> 12).trailing_ones();
    if p >= 63 {
        return (0, u64::MAX);
    }
    let span = (1u64 << (p + 1)) - 1;
    (address & !span, address | span)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amdvi::{to_dwords, to_qwords};

    #[test]
    fn completion_wait_like_linux() {
        // build_completion_wait: data[0] = lo(paddr) | S, data[1] = hi(paddr) | 1 << 28, data[2..3] = value.
        let c = CompletionWait::store(0x1_2345_6788, 0x0000_0001_0000_0002);
        let d = to_dwords(c.into_bits());
        assert_eq!(d, [0x2345_6788 | 1, 0x1 | 1 << 28, 2, 1]);
        assert_eq!(cmd_opcode(c.into_bits()), CmdOpcode::CompletionWait);
        assert_eq!(CompletionWait::from_bits(c.into_bits()).store_address(), 0x1_2345_6788);
        assert_eq!(CompletionWait::new().with_i(true).into_bits(), 2);
        assert_eq!(CompletionWait::new().with_f(true).into_bits(), 4);
        assert_eq!(CompletionWait::store(u64::MAX, 0).store_address(), 0x000f_ffff_ffff_fff8, "bits 51:3 only");
        assert_eq!(cmd_reserved_bits(c.into_bits()), Some(0));
    }

    #[test]
    fn device_invalidations() {
        let d = InvalidateDevice::devtab_entry(DeviceId(0x0108));
        assert_eq!(to_dwords(d.into_bits()), [0x0108, 2 << 28, 0, 0]);
        let i = InvalidateDevice::interrupt_table(DeviceId(0xffff));
        assert_eq!(to_dwords(i.into_bits()), [0xffff, 5 << 28, 0, 0]);
        assert_eq!(to_dwords(invalidate_iommu_all()), [0, 8 << 28, 0, 0]);
    }

    #[test]
    fn invalidate_iommu_pages_like_linux() {
        // Whole domain: data[1] = domid | 3 << 28, data[2] = 0xfffff000 | PDE | S, data[3] = 0x7fffffff.
        let a = InvalidateIommuPages::all(0x42);
        assert_eq!(to_dwords(a.into_bits()), [0, 0x42 | 3 << 28, 0xffff_f000 | 0b11, 0x7fff_ffff]);
        assert_eq!(a.covered(), (0, u64::MAX));
        assert_eq!(InvalidateIommuPages::range(1, 0, 1 << 63).into_bits(), InvalidateIommuPages::all(1).into_bits());
        // One page: S=0.
        let one = InvalidateIommuPages::range(1, 0x1234_5000, 0x1000);
        assert_eq!(to_qwords(one.into_bits())[1], 0x1234_5000 | 0b10);
        assert_eq!(one.covered(), (0x1234_5000, 0x1234_5fff));
        let q = InvalidateIommuPages::new().with_pasid(0xfffff).with_gn(true);
        assert_eq!(to_dwords(q.into_bits()), [0xfffff, 0, 0b100, 0]);
        assert_eq!(cmd_reserved_bits(a.into_bits()), Some(0));
    }

    #[test]
    fn invalidation_address_encoding() {
        assert_eq!(inv_address(0, 0x2000), (0, true), "8 KiB at 0: p = 12");
        assert_eq!(inv_range(0, true), (0, 0x1fff));
        assert_eq!(inv_address(0, 0x4000), (0x1000, true));
        assert_eq!(inv_range(0x1000, true), (0, 0x3fff));
        assert_eq!(inv_address(0x1000, 0x1000), (0x1000, false));
        assert_eq!(inv_address(0x1fff, 2), (0x1000, true), "0x1fff..=0x2000 needs the aligned 16 KiB around it");
        assert_eq!(inv_address(0x1234, 0), (0x1000, false));
        assert_eq!(inv_address(u64::MAX - 0xfff, u64::MAX), (!0xfff, false), "saturates, no overflow");
        // Every encoded range covers what was asked, and is the aligned power of two Linux would choose.
        for (start, size) in [(0x3000u64, 0x5000u64), (0x20_0000, 0x20_0000), (0x1f_f000, 0x2000), (0x7000, 0x1000)] {
            let (addr, s) = inv_address(start, size);
            let (first, last) = inv_range(addr, s);
            assert!(first <= start && last >= start + size - 1, "{start:#x}+{size:#x}");
            assert!((last - first + 1).is_power_of_two());
            assert_eq!(first & (last - first), 0, "aligned");
        }
        assert_eq!(inv_range(INV_ALL_PAGES_ADDRESS, true), (0, u64::MAX));
        assert_eq!(inv_range(u64::MAX, true), (0, u64::MAX));
        assert_eq!(inv_range(0xffff_f000, false), (0xffff_f000, 0xffff_ffff));
    }

    #[test]
    fn invalidate_iotlb_pages_like_linux() {
        let c = InvalidateIotlbPages::range(DeviceId(0x0300), 32, 0x4000, 0x1000);
        assert_eq!(to_dwords(c.into_bits()), [0x0300 | 32 << 24, 0x0300 | 4 << 28, 0x4000, 0]);
        let p = InvalidateIotlbPages::new().with_pasid_15_8(0xab).with_pasid_7_0(0xcd).with_pasid_19_16(0xe);
        assert_eq!(to_dwords(p.into_bits()), [0xab << 16, 0xcd << 16 | 0xe << 24, 0, 0]);
        assert_eq!(p.pasid(), 0xe_abcd);
        assert_eq!(InvalidateIotlbPages::new().with_gn(true).with_ty(3).into_bits(), 1 << 66 | 3 << 68);
        assert_eq!(c.covered(), (0x4000, 0x4fff));
    }

    #[test]
    fn complete_ppr_like_linux() {
        let c = CompletePprRequest::new()
            .with_opcode(CmdOpcode::CompletePprRequest)
            .with_device_id(0x10)
            .with_pasid(0x1234)
            .with_gn(true)
            .with_tag(0x1ff)
            .with_status(0xf);
        assert_eq!(to_dwords(c.into_bits()), [0x10, 0x1234 | 7 << 28, 0b100, 0x1ff | 0xf << 12]);
        assert_eq!(cmd_reserved_bits(c.into_bits()), Some(0));
    }

    #[test]
    fn reserved_bit_sweeps() {
        let cases: [(u128, u128); 6] = [
            (CompletionWait::store(0, 0).into_bits(), CompletionWait::RESERVED),
            (InvalidateDevice::devtab_entry(DeviceId(0)).into_bits(), InvalidateDevice::RESERVED),
            (InvalidateDevice::interrupt_table(DeviceId(0)).into_bits(), InvalidateDevice::RESERVED),
            (InvalidateIommuPages::all(0).into_bits(), InvalidateIommuPages::RESERVED),
            (InvalidateIotlbPages::range(DeviceId(0), 0, 0, 0).into_bits(), InvalidateIotlbPages::RESERVED),
            (invalidate_iommu_all(), mask128(59, 0) | mask128(127, 64)),
        ];
        for (base, reserved) in cases {
            for bit in (0..128u32).filter(|b| !(60..64).contains(b)) {
                let raw = base ^ (1u128 << bit);
                let r = cmd_reserved_bits(raw).unwrap();
                assert_eq!(r != 0, reserved >> bit & 1 != 0, "opcode {:?} bit {bit}", cmd_opcode(base));
            }
        }
        assert_eq!(cmd_reserved_bits(0), None, "opcode 0 is not a command");
        assert_eq!(cmd_reserved_bits(6 << 60), None);
        assert_eq!(cmd_reserved_bits(0xfu128 << 60), None);
        assert_eq!(cmd_opcode(u128::MAX), CmdOpcode(0xf));
    }

    #[test]
    fn round_trips() {
        for raw in
            [0u128, u128::MAX, 0x5555_5555_5555_5555_5555_5555_5555_5555, 0xdead_beef_0bad_f00d_1234_5678_9abc_def0]
        {
            assert_eq!(CompletionWait::from_bits(raw).into_bits(), raw);
            assert_eq!(InvalidateDevice::from_bits(raw).into_bits(), raw);
            assert_eq!(InvalidateIommuPages::from_bits(raw).into_bits(), raw);
            assert_eq!(InvalidateIotlbPages::from_bits(raw).into_bits(), raw);
            assert_eq!(CompletePprRequest::from_bits(raw).into_bits(), raw);
        }
    }
}
