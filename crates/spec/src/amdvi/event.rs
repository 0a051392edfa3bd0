//! Event log entries (spec 2.5): 16 bytes, the event code in bits 63:60 (dw1 31:28, Linux `EVENT_TYPE_SHIFT`).
//!
//! The common layout (Linux `EVENT_*` masks): DeviceID in dw0 15:0, `PASID[19:16]` in dw0 19:16 (Linux
//! `EVENT_DOMID_MASK_HI`), DomainID or `PASID[15:0]` in dw1 15:0, twelve flag bits in dw1 27:16, the address in
//! dw2–dw3. Flag positions other than I and RW (the two Linux names) are from VirtualBox's transcription of the
//! spec's IO_PAGE_FAULT figure.

use bitfield_struct::bitfield;

use super::DeviceId;
use crate::mask64;

/// Bytes per event log entry (Linux `EVENT_ENTRY_SIZE`).
pub const EVENT_SIZE: u64 = 16;

/// Event codes (Linux `EVENT_TYPE_*`).
#[open_enum::open_enum]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EventCode {
    /// 0 is not an event: Linux treats it as "entry not written yet" and retries.
    None = 0x0,
    /// ILLEGAL_DEV_TABLE_ENTRY (`EVENT_TYPE_ILL_DEV`).
    IllegalDevTableEntry = 0x1,
    /// IO_PAGE_FAULT (`EVENT_TYPE_IO_FAULT`).
    IoPageFault = 0x2,
    /// DEV_TAB_HARDWARE_ERROR (`EVENT_TYPE_DEV_TAB_ERR`).
    DevTabHardwareError = 0x3,
    /// PAGE_TAB_HARDWARE_ERROR (`EVENT_TYPE_PAGE_TAB_ERR`).
    PageTabHardwareError = 0x4,
    /// ILLEGAL_COMMAND_ERROR (`EVENT_TYPE_ILL_CMD`).
    IllegalCommandError = 0x5,
    /// COMMAND_HARDWARE_ERROR (`EVENT_TYPE_CMD_HARD_ERR`).
    CommandHardwareError = 0x6,
    /// IOTLB_INV_TIMEOUT (`EVENT_TYPE_IOTLB_INV_TO`).
    IotlbInvTimeout = 0x7,
    /// INVALID_DEVICE_REQUEST (`EVENT_TYPE_INV_DEV_REQ`).
    InvalidDeviceRequest = 0x8,
    /// INVALID_PPR_REQUEST (`EVENT_TYPE_INV_PPR_REQ`).
    InvalidPprRequest = 0x9,
    /// RMP_PAGE_FAULT (SNP): the address is the GPA.
    RmpPageFault = 0xd,
    /// RMP_HW_ERROR (SNP).
    RmpHardwareError = 0xe,
}

crate::open_enum_bits!(EventCode, u8, 4);

/// The 12 flag bits of dw1 27:16 (Linux `EVENT_FLAGS_MASK`), numbered from bit 0 of the flags field.
#[bitfield(u16)]
#[derive(PartialEq, Eq)]
pub struct EventFlags {
    /// GN: the address is a guest (PASID) address.
    pub gn: bool,
    /// NX: an instruction fetch.
    pub nx: bool,
    /// US: a user-mode access.
    pub us: bool,
    /// I: an interrupt request, not a memory access (Linux `EVENT_FLAG_I`, 0x008).
    pub i: bool,
    /// PR: the faulting entry was present.
    pub pr: bool,
    /// RW: a write (Linux `EVENT_FLAG_RW`, 0x020).
    pub rw: bool,
    /// PE: permission denied.
    pub pe: bool,
    /// RZ: a reserved bit was non-zero (or an invalid level encoding).
    pub rz: bool,
    /// TR: a translation request (ATS), not a transaction.
    pub tr: bool,
    /// Type (11:9): hardware-error kind (1 master abort, 2 target abort, 3 data error) or request type.
    #[bits(3)]
    pub ty: u8,
    #[bits(4)]
    __: u8,
}

/// A raw event log entry in the common layout.
#[bitfield(u128)]
#[derive(PartialEq, Eq)]
pub struct EventEntry {
    /// DeviceID of the requester (dw0 15:0).
    pub device_id: u16,
    /// `PASID[19:16]` (page faults and other PASID-carrying events).
    #[bits(4)]
    pub pasid_19_16: u8,
    #[bits(12)]
    __: u16,
    /// DomainID (GN=0) or `PASID[15:0]` (GN=1).
    pub domain_or_pasid: u16,
    /// The flag bits, see [`EventFlags`].
    #[bits(12)]
    pub flags: u16,
    /// EventCode (dw1 31:28).
    #[bits(4)]
    pub code: EventCode,
    /// The faulting IOVA, or the table entry or command address the event is about.
    pub address: u64,
}

impl EventEntry {
    /// The flags field as [`EventFlags`].
    pub const fn event_flags(self) -> EventFlags {
        EventFlags::from_bits(self.flags())
    }
    /// The entry with `f` as its flags (bits above the 12 kept ones dropped).
    pub const fn with_event_flags(self, f: EventFlags) -> Self {
        self.with_flags(f.into_bits() & 0xfff)
    }
    /// The 20-bit DomainID/PASID as Linux assembles it (`EVENT_DOMID_MASK_HI | EVENT_DOMID_MASK_LO`).
    pub const fn domain_or_pasid20(self) -> u32 {
        (self.pasid_19_16() as u32) << 16 | self.domain_or_pasid() as u32
    }
    /// The entry with a 20-bit DomainID/PASID: bits 19:16 to dw0 19:16, bits 15:0 to dw1 15:0.
    pub const fn with_domain_or_pasid20(self, v: u32) -> Self {
        self.with_pasid_19_16(((v >> 16) & 0xf) as u8).with_domain_or_pasid(v as u16)
    }
    /// Code 0: the hardware has not written this entry (yet).
    pub const fn is_empty(self) -> bool {
        self.code().0 == 0
    }
}

/// A decoded event. Decoding never fails: codes without a typed variant (and code 0) are [`Event::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// ILLEGAL_DEV_TABLE_ENTRY: the DTE had reserved bits or an invalid combination. The address is the
    /// request's (VirtualBox's reading of the spec); QEMU writes the DTE's address instead.
    IllegalDevTableEntry {
        /// DeviceID.
        device: DeviceId,
        /// PASID, 20 bits (with GN).
        pasid: u32,
        /// Address of the request.
        address: u64,
        /// Flag bits.
        flags: EventFlags,
    },
    /// IO_PAGE_FAULT: not present or permission denied; the address is the IOVA.
    IoPageFault {
        /// DeviceID.
        device: DeviceId,
        /// DomainID (GN = 0) or 20-bit PASID (GN = 1).
        domain_or_pasid: u32,
        /// The faulting IOVA (or guest address with GN).
        address: u64,
        /// Flag bits: PR, RW, PE, RZ, I, US, NX, TR.
        flags: EventFlags,
    },
    /// DEV_TAB_HARDWARE_ERROR: reading the DTE at `address` failed.
    DevTabHardwareError {
        /// DeviceID.
        device: DeviceId,
        /// Physical address of the DTE read.
        address: u64,
        /// Flag bits; Type says master abort, target abort or data error.
        flags: EventFlags,
    },
    /// PAGE_TAB_HARDWARE_ERROR: reading the page-table entry at `address` failed.
    PageTabHardwareError {
        /// DeviceID.
        device: DeviceId,
        /// DomainID (GN = 0) or 20-bit PASID (GN = 1).
        domain_or_pasid: u32,
        /// Physical address of the page-table entry read.
        address: u64,
        /// Flag bits; Type says master abort, target abort or data error.
        flags: EventFlags,
    },
    /// ILLEGAL_COMMAND_ERROR: the command at physical `address` was malformed.
    IllegalCommandError {
        /// Physical address of the command in the command buffer.
        address: u64,
    },
    /// COMMAND_HARDWARE_ERROR: an access made for a command (fetch, completion store) failed at `address`.
    CommandHardwareError {
        /// Physical address of the failed access.
        address: u64,
        /// Flag bits; Type says master abort, target abort or data error.
        flags: EventFlags,
    },
    /// IOTLB_INV_TIMEOUT: a device did not answer the INVALIDATE_IOTLB_PAGES at `address`.
    IotlbInvTimeout {
        /// DeviceID of the device that timed out.
        device: DeviceId,
        /// Physical address of the INVALIDATE_IOTLB_PAGES command.
        address: u64,
    },
    /// INVALID_DEVICE_REQUEST.
    InvalidDeviceRequest {
        /// DeviceID.
        device: DeviceId,
        /// PASID, 20 bits (with GN).
        pasid: u32,
        /// Address of the request.
        address: u64,
        /// Flag bits; Type says which request kind was refused.
        flags: EventFlags,
    },
    /// Any other code (PPR, RMP, unknown, or 0), kept raw.
    Other(EventEntry),
}

impl Event {
    /// Decode an entry from its 128 bits (dw0 in bits 31:0).
    pub const fn decode(raw: u128) -> Event {
        let e = EventEntry::from_bits(raw);
        let device = DeviceId(e.device_id());
        let address = e.address();
        let flags = e.event_flags();
        let dp = e.domain_or_pasid20();
        match e.code() {
            EventCode::IllegalDevTableEntry => Event::IllegalDevTableEntry { device, pasid: dp, address, flags },
            EventCode::IoPageFault => Event::IoPageFault { device, domain_or_pasid: dp, address, flags },
            EventCode::DevTabHardwareError => Event::DevTabHardwareError { device, address, flags },
            EventCode::PageTabHardwareError => {
                Event::PageTabHardwareError { device, domain_or_pasid: dp, address, flags }
            }
            EventCode::IllegalCommandError => Event::IllegalCommandError { address },
            EventCode::CommandHardwareError => Event::CommandHardwareError { address, flags },
            EventCode::IotlbInvTimeout => Event::IotlbInvTimeout { device, address },
            EventCode::InvalidDeviceRequest => Event::InvalidDeviceRequest { device, pasid: dp, address, flags },
            _ => Event::Other(e),
        }
    }

    /// EventCode of the entry this event encodes to.
    pub const fn code(self) -> EventCode {
        match self {
            Event::IllegalDevTableEntry { .. } => EventCode::IllegalDevTableEntry,
            Event::IoPageFault { .. } => EventCode::IoPageFault,
            Event::DevTabHardwareError { .. } => EventCode::DevTabHardwareError,
            Event::PageTabHardwareError { .. } => EventCode::PageTabHardwareError,
            Event::IllegalCommandError { .. } => EventCode::IllegalCommandError,
            Event::CommandHardwareError { .. } => EventCode::CommandHardwareError,
            Event::IotlbInvTimeout { .. } => EventCode::IotlbInvTimeout,
            Event::InvalidDeviceRequest { .. } => EventCode::InvalidDeviceRequest,
            Event::Other(e) => e.code(),
        }
    }

    /// The entry as the hardware writes it. Out-of-range values (a PASID over 20 bits) are truncated.
    pub const fn encode(self) -> u128 {
        let base = EventEntry::new().with_code(self.code());
        let e = match self {
            Event::IllegalDevTableEntry { device, pasid: dp, address, flags }
            | Event::IoPageFault { device, domain_or_pasid: dp, address, flags }
            | Event::PageTabHardwareError { device, domain_or_pasid: dp, address, flags }
            | Event::InvalidDeviceRequest { device, pasid: dp, address, flags } => {
                base.with_device_id(device.0).with_domain_or_pasid20(dp).with_address(address).with_event_flags(flags)
            }
            Event::DevTabHardwareError { device, address, flags } => {
                base.with_device_id(device.0).with_address(address).with_event_flags(flags)
            }
            Event::IllegalCommandError { address } => base.with_address(address),
            Event::CommandHardwareError { address, flags } => base.with_address(address).with_event_flags(flags),
            Event::IotlbInvTimeout { device, address } => base.with_device_id(device.0).with_address(address),
            Event::Other(e) => e,
        };
        e.into_bits()
    }

    /// The DeviceID the event names, if it names one.
    pub const fn device(self) -> Option<DeviceId> {
        match self {
            Event::IllegalDevTableEntry { device, .. }
            | Event::IoPageFault { device, .. }
            | Event::DevTabHardwareError { device, .. }
            | Event::PageTabHardwareError { device, .. }
            | Event::IotlbInvTimeout { device, .. }
            | Event::InvalidDeviceRequest { device, .. } => Some(device),
            Event::IllegalCommandError { .. } | Event::CommandHardwareError { .. } | Event::Other(_) => None,
        }
    }

    /// An IO_PAGE_FAULT for a host (GN=0) DMA by `device` in `domain_id` at `iova`: `write` sets RW, `present`
    /// PR, `perm` PE; I stays clear (a memory request).
    pub const fn page_fault(
        device: DeviceId,
        domain_id: u16,
        iova: u64,
        write: bool,
        present: bool,
        perm: bool,
    ) -> Self {
        let flags = EventFlags::new().with_rw(write).with_pr(present).with_pe(perm);
        Event::IoPageFault { device, domain_or_pasid: domain_id as u32, address: iova, flags }
    }
}

impl Event {
    /// The IO_PAGE_FAULT of a target-aborted interrupt request (2.5.3; I set, and RW: an MSI is a write) by
    /// `device` at the MSI address `addr`.
    pub const fn interrupt_fault(device: DeviceId, domain_id: u16, addr: u64) -> Self {
        let flags = EventFlags::new().with_i(true).with_rw(true);
        Event::IoPageFault { device, domain_or_pasid: domain_id as u32, address: addr, flags }
    }
}

/// Event-log addresses of commands are 16-byte aligned (IOTLB_INV_TIMEOUT keeps 67:64 reserved).
pub const COMMAND_ADDRESS_MASK: u64 = mask64(63, 4);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amdvi::{from_dwords, to_dwords};

    #[test]
    fn common_layout_at_spec_bits() {
        let e = EventEntry::new()
            .with_device_id(0x0108)
            .with_pasid_19_16(0xa)
            .with_domain_or_pasid(0xbcde)
            .with_flags(0xfff)
            .with_code(EventCode::IoPageFault)
            .with_address(0x1234_5678_9abc_d000);
        assert_eq!(to_dwords(e.into_bits()), [0x000a_0108, 0x2fff_bcde, 0x9abc_d000, 0x1234_5678]);
        assert_eq!(e.domain_or_pasid20(), 0xa_bcde);
        assert!(EventEntry::new().is_empty());
        assert_eq!(EventEntry::from_bits(0xfu128 << 60).code(), EventCode(0xf));
    }

    #[test]
    fn flags_at_linux_and_spec_bits() {
        // Linux: EVENT_FLAG_I = 0x008, EVENT_FLAG_RW = 0x020 within the 12-bit flags field (dw1 bit 16 up).
        assert_eq!(EventFlags::new().with_i(true).into_bits(), 0x008);
        assert_eq!(EventFlags::new().with_rw(true).into_bits(), 0x020);
        assert_eq!(EventFlags::new().with_gn(true).into_bits(), 0x001);
        assert_eq!(EventFlags::new().with_nx(true).into_bits(), 0x002);
        assert_eq!(EventFlags::new().with_us(true).into_bits(), 0x004);
        assert_eq!(EventFlags::new().with_pr(true).into_bits(), 0x010);
        assert_eq!(EventFlags::new().with_pe(true).into_bits(), 0x040);
        assert_eq!(EventFlags::new().with_rz(true).into_bits(), 0x080);
        assert_eq!(EventFlags::new().with_tr(true).into_bits(), 0x100);
        assert_eq!(EventFlags::new().with_ty(7).into_bits(), 0xe00);
        // In the entry: flag bit n is entry bit 48 + n (I = 51, RW = 53, TR = 56, Type 59:57).
        let e = EventEntry::new().with_event_flags(EventFlags::new().with_i(true).with_rw(true).with_tr(true));
        assert_eq!(e.into_bits(), 1 << 51 | 1 << 53 | 1 << 56);
        // Garbage above the 12 flag bits cannot panic the encoder.
        assert_eq!(EventEntry::new().with_event_flags(EventFlags::from_bits(0xffff)).flags(), 0xfff);
    }

    #[test]
    fn io_page_fault_layout() {
        // dw1 31:16 is what QEMU calls the info field: code << 12 | flags. The IOVA is in dw2–dw3.
        let ev = Event::page_fault(DeviceId(0x0010), 5, 0xdead_b000, true, true, true);
        let raw = ev.encode();
        assert_eq!(to_dwords(raw), [0x0010, 5 | (2 << 12 | 0x070) << 16, 0xdead_b000, 0]);
        assert_eq!(Event::decode(raw), ev);
        assert_eq!(ev.device(), Some(DeviceId(0x0010)));
        assert_eq!(ev.code(), EventCode::IoPageFault);
    }

    #[test]
    fn every_typed_event_round_trips() {
        let f = EventFlags::new().with_i(true).with_ty(2);
        let d = DeviceId(0xfedc);
        let events = [
            Event::IllegalDevTableEntry { device: d, pasid: 0xf_ffff, address: 0x1000, flags: f },
            Event::IoPageFault { device: d, domain_or_pasid: 0xffff, address: u64::MAX, flags: f },
            Event::DevTabHardwareError { device: d, address: 0x8_0020, flags: f },
            Event::PageTabHardwareError { device: d, domain_or_pasid: 7, address: 0x9_0ff8, flags: f },
            Event::IllegalCommandError { address: 0x7_0010 },
            Event::CommandHardwareError { address: 0x7_0020, flags: f },
            Event::IotlbInvTimeout { device: d, address: 0x7_0030 },
            Event::InvalidDeviceRequest { device: d, pasid: 3, address: 0x4000, flags: f },
        ];
        for (n, ev) in events.into_iter().enumerate() {
            let raw = ev.encode();
            assert_eq!(to_dwords(raw)[1] >> 28, n as u32 + 1, "{ev:?}");
            assert_eq!(Event::decode(raw), ev);
            assert_eq!(Event::decode(raw).encode(), raw);
        }
        assert_eq!(Event::IllegalCommandError { address: 1 }.device(), None);
    }

    #[test]
    fn unknown_and_empty_entries_stay_raw() {
        for raw in [0u128, u128::MAX, 0x9u128 << 60 | 0x1234, 0xdu128 << 60 | 0xabcd_u128 << 64, 0xfu128 << 60] {
            let ev = Event::decode(raw);
            assert!(matches!(ev, Event::Other(_)), "{raw:#x}");
            assert_eq!(ev.encode(), raw);
        }
        assert_eq!(Event::decode(0xeu128 << 60).code(), EventCode::RmpHardwareError);
        assert_eq!(Event::decode(0).code(), EventCode::None);
    }

    #[test]
    fn decoding_garbage_never_panics() {
        let mut x = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834u128;
        for _ in 0..4096 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let ev = Event::decode(x);
            let _ = ev.encode();
            let _ = ev.device();
        }
    }

    #[test]
    fn round_trips() {
        for raw in [0u128, u128::MAX, from_dwords([0x5555_5555; 4]), from_dwords([0xdead_beef, 1, 2, 3])] {
            assert_eq!(EventEntry::from_bits(raw).into_bits(), raw);
        }
        for raw in [0u16, 0xffff, 0x5555, 0xaaaa] {
            assert_eq!(EventFlags::from_bits(raw).into_bits(), raw);
        }
        assert_eq!(COMMAND_ADDRESS_MASK & 0xf, 0);
    }
}
