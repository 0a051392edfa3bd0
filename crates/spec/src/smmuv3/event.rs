//! Event queue records (spec 7.3): 32 bytes, four words. dw0 names the event and the stream, dw1 the
//! transaction, dw2 the input address, dw3 a second address (IPA or fetch address) depending on the event.

use bitfield_struct::bitfield;

/// Event types (7.3; Linux `EVT_ID_*`).
#[open_enum::open_enum]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EventId {
    /// Unsupported upstream transaction.
    FUut = 0x01,
    /// StreamID beyond the table, or its L1 descriptor invalid (`EVT_ID_BAD_STREAMID_CONFIG`).
    CBadStreamid = 0x02,
    /// External abort fetching an STE or L1 descriptor (`EVT_ID_STE_FETCH_FAULT`).
    FSteFetch = 0x03,
    /// STE invalid or illegal (`EVT_ID_BAD_STE_CONFIG`).
    CBadSte = 0x04,
    /// ATS translation request refused: the stream's STE (EATS, Config) does not allow ATS.
    FBadAtsTreq = 0x05,
    /// Non-substream traffic with S1DSS = terminate (`EVT_ID_STREAM_DISABLED_FAULT`).
    FStreamDisabled = 0x06,
    /// An ATS-translated transaction on a stream whose configuration does not allow one.
    FTranslForbidden = 0x07,
    /// SubstreamID beyond S1CDMax (`EVT_ID_BAD_SUBSTREAMID_CONFIG`).
    CBadSubstreamid = 0x08,
    /// External abort fetching a CD (`EVT_ID_CD_FETCH_FAULT`).
    FCdFetch = 0x09,
    /// CD invalid or illegal (`EVT_ID_BAD_CD_CONFIG`).
    CBadCd = 0x0a,
    /// External abort on a translation-table walk.
    FWalkEabt = 0x0b,
    /// No valid mapping (`EVT_ID_TRANSLATION_FAULT`).
    FTranslation = 0x10,
    /// Output beyond OAS/IPS/S2PS (`EVT_ID_ADDR_SIZE_FAULT`).
    FAddrSize = 0x11,
    /// Access flag clear (`EVT_ID_ACCESS_FAULT`).
    FAccess = 0x12,
    /// Permission denied (`EVT_ID_PERMISSION_FAULT`).
    FPermission = 0x13,
    /// Multiple TLB entries matched one address (overlapping mappings).
    FTlbConflict = 0x20,
    /// Multiple configuration-cache entries matched one stream.
    FCfgConflict = 0x21,
    /// E_PAGE_REQUEST: an informational page-request hint, not a fault.
    EPageRequest = 0x24,
    /// External abort fetching a VMS (`EVT_ID_VMS_FETCH_FAULT`).
    FVmsFetch = 0x25,
}
crate::open_enum_bits!(EventId, u8, 8);

impl EventId {
    /// The spec's name (F_TRANSLATION, C_BAD_STE, …), or `None` for an unknown code.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self {
            EventId::FUut => "F_UUT",
            EventId::CBadStreamid => "C_BAD_STREAMID",
            EventId::FSteFetch => "F_STE_FETCH",
            EventId::CBadSte => "C_BAD_STE",
            EventId::FBadAtsTreq => "F_BAD_ATS_TREQ",
            EventId::FStreamDisabled => "F_STREAM_DISABLED",
            EventId::FTranslForbidden => "F_TRANSL_FORBIDDEN",
            EventId::CBadSubstreamid => "C_BAD_SUBSTREAMID",
            EventId::FCdFetch => "F_CD_FETCH",
            EventId::CBadCd => "C_BAD_CD",
            EventId::FWalkEabt => "F_WALK_EABT",
            EventId::FTranslation => "F_TRANSLATION",
            EventId::FAddrSize => "F_ADDR_SIZE",
            EventId::FAccess => "F_ACCESS",
            EventId::FPermission => "F_PERMISSION",
            EventId::FTlbConflict => "F_TLB_CONFLICT",
            EventId::FCfgConflict => "F_CFG_CONFLICT",
            EventId::EPageRequest => "E_PAGE_REQUEST",
            EventId::FVmsFetch => "F_VMS_FETCH",
            _ => return None,
        })
    }
    /// A configuration error (C_*): always recorded.
    pub const fn is_config_error(self) -> bool {
        matches!(self, EventId::CBadStreamid | EventId::CBadSte | EventId::CBadSubstreamid | EventId::CBadCd)
    }
    /// A translation-class fault: recorded only with CD.R (stage 1) or STE.S2R (stage 2).
    pub const fn is_translation_fault(self) -> bool {
        matches!(self, EventId::FTranslation | EventId::FAddrSize | EventId::FAccess | EventId::FPermission)
    }
    /// dw3 holds the address whose fetch failed (`EVTQ_3_FETCH_ADDR`).
    pub const fn has_fetch_addr(self) -> bool {
        matches!(self, EventId::FSteFetch | EventId::FCdFetch | EventId::FWalkEabt | EventId::FVmsFetch)
    }
}

/// EVTQ dw1 CLASS: what the SMMU was doing when it faulted (`EVTQ_1_CLASS`).
#[open_enum::open_enum]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EventClass {
    /// Fetching a CD.
    Cd = 0,
    /// Walking translation tables (`EVTQ_1_CLASS_TT`).
    Tt = 1,
    /// Translating the input address itself.
    In = 2,
}
crate::open_enum_bits!(EventClass, u8, 2);

/// Event record dw0 (`EVTQ_0_*`).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct EvtDw0 {
    /// Event ID (bits 7:0, `EVTQ_0_ID`).
    #[bits(8)]
    pub event_id: EventId,
    #[bits(3)]
    __: u8,
    /// SubstreamID valid.
    pub ssv: bool,
    /// SubstreamID (bits 31:12, `EVTQ_0_SSID`), meaningful with SSV.
    #[bits(20)]
    pub ssid: u32,
    /// StreamID (bits 63:32, `EVTQ_0_SID`).
    pub sid: u32,
}

/// Event record dw1 (`EVTQ_1_*`): the faulting transaction.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct EvtDw1 {
    /// Stall tag, for CMD_RESUME.
    pub stag: u16,
    #[bits(15)]
    __: u16,
    /// The transaction is stalled.
    pub stall: bool,
    #[bits(1)]
    __: u8,
    /// Privileged (1) or unprivileged.
    pub pnu: bool,
    /// Instruction (1) or data.
    pub ind: bool,
    /// Read (1) or write.
    pub rnw: bool,
    #[bits(3)]
    __: u8,
    /// The fault arose at stage 2.
    pub s2: bool,
    /// CLASS (bits 41:40): CD fetch, table walk or input address.
    #[bits(2)]
    pub class: EventClass,
    #[bits(2)]
    __: u8,
    /// The faulting table access was a read (`EVTQ_1_TT_READ`).
    pub ttrnw: bool,
    #[bits(19)]
    __: u32,
}

/// An event record as the four words the SMMU writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct Event(pub [u64; 4]);

impl Event {
    /// A record of `id` for stream `sid`, everything else zero.
    pub const fn new(id: EventId, sid: u32) -> Self {
        Event([EvtDw0::new().with_event_id(id).with_sid(sid).into_bits(), 0, 0, 0])
    }
    /// Word 0: event ID, SubstreamID and StreamID.
    pub const fn dw0(&self) -> EvtDw0 {
        EvtDw0::from_bits(self.0[0])
    }
    /// Word 1: the transaction's attributes (stall tag, class, read/write, privilege).
    pub const fn dw1(&self) -> EvtDw1 {
        EvtDw1::from_bits(self.0[1])
    }
    /// Event ID (dw0 bits 7:0, `EVTQ_0_ID`).
    pub const fn id(&self) -> EventId {
        self.dw0().event_id()
    }
    /// StreamID (dw0 bits 63:32, `EVTQ_0_SID`).
    pub const fn sid(&self) -> u32 {
        self.dw0().sid()
    }
    /// The SubstreamID when SSV is set.
    pub const fn ssid(&self) -> Option<u32> {
        let d = self.dw0();
        if d.ssv() {
            Some(d.ssid())
        } else {
            None
        }
    }
    /// The input address (IOVA) of the transaction (`EVTQ_2_ADDR`).
    pub const fn input_addr(&self) -> u64 {
        self.0[2]
    }
    /// The IPA of a stage-2 fault (`EVTQ_3_IPA`, bits 51:12).
    pub const fn ipa(&self) -> u64 {
        self.0[3] & crate::mask64(51, 12)
    }
    /// The address whose fetch failed (`EVTQ_3_FETCH_ADDR`, bits 51:3).
    pub const fn fetch_addr(&self) -> u64 {
        self.0[3] & crate::mask64(51, 3)
    }
    /// The record with SSV and SubstreamID set from `ssid` (20 bits kept); `None` clears both.
    pub const fn with_ssid(self, ssid: Option<u32>) -> Self {
        let d = match ssid {
            Some(s) => self.dw0().with_ssv(true).with_ssid(s & 0xf_ffff),
            None => self.dw0().with_ssv(false).with_ssid(0),
        };
        Event([d.into_bits(), self.0[1], self.0[2], self.0[3]])
    }
    /// The record with word 1 replaced.
    pub const fn with_dw1(self, dw1: EvtDw1) -> Self {
        Event([self.0[0], dw1.into_bits(), self.0[2], self.0[3]])
    }
    /// The record with `addr` as its input address (word 2).
    pub const fn with_input_addr(self, addr: u64) -> Self {
        Event([self.0[0], self.0[1], addr, self.0[3]])
    }
    /// The record with `ipa` in word 3 (bits 51:12 kept).
    pub const fn with_ipa(self, ipa: u64) -> Self {
        Event([self.0[0], self.0[1], self.0[2], ipa & crate::mask64(51, 12)])
    }
    /// The record with `pa` as its fetch address in word 3 (bits 51:3 kept).
    pub const fn with_fetch_addr(self, pa: u64) -> Self {
        Event([self.0[0], self.0[1], self.0[2], pa & crate::mask64(51, 3)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_codes() {
        let codes = [
            (EventId::FUut, 0x01, "F_UUT"),
            (EventId::CBadStreamid, 0x02, "C_BAD_STREAMID"),
            (EventId::FSteFetch, 0x03, "F_STE_FETCH"),
            (EventId::CBadSte, 0x04, "C_BAD_STE"),
            (EventId::FBadAtsTreq, 0x05, "F_BAD_ATS_TREQ"),
            (EventId::FStreamDisabled, 0x06, "F_STREAM_DISABLED"),
            (EventId::FTranslForbidden, 0x07, "F_TRANSL_FORBIDDEN"),
            (EventId::CBadSubstreamid, 0x08, "C_BAD_SUBSTREAMID"),
            (EventId::FCdFetch, 0x09, "F_CD_FETCH"),
            (EventId::CBadCd, 0x0a, "C_BAD_CD"),
            (EventId::FWalkEabt, 0x0b, "F_WALK_EABT"),
            (EventId::FTranslation, 0x10, "F_TRANSLATION"),
            (EventId::FAddrSize, 0x11, "F_ADDR_SIZE"),
            (EventId::FAccess, 0x12, "F_ACCESS"),
            (EventId::FPermission, 0x13, "F_PERMISSION"),
            (EventId::FTlbConflict, 0x20, "F_TLB_CONFLICT"),
            (EventId::FCfgConflict, 0x21, "F_CFG_CONFLICT"),
            (EventId::EPageRequest, 0x24, "E_PAGE_REQUEST"),
            (EventId::FVmsFetch, 0x25, "F_VMS_FETCH"),
        ];
        for (id, code, name) in codes {
            assert_eq!(id.into_bits(), code);
            assert_eq!(id.name(), Some(name));
            assert_eq!(name.starts_with("C_"), id.is_config_error(), "{name}");
        }
        assert_eq!(EventId::from_bits(0xe0).name(), None);
        assert!(EventId::FPermission.is_translation_fault() && !EventId::FWalkEabt.is_translation_fault());
        assert!(EventId::FWalkEabt.has_fetch_addr() && !EventId::FTranslation.has_fetch_addr());
    }

    #[test]
    fn record_fields_at_spec_bits() {
        assert_eq!(EvtDw0::new().with_event_id(EventId::FTranslation).into_bits(), 0x10);
        assert_eq!(EvtDw0::new().with_ssv(true).into_bits(), 1 << 11);
        assert_eq!(EvtDw0::new().with_ssid(0xfffff).into_bits(), 0xfffff << 12);
        assert_eq!(EvtDw0::new().with_sid(0xffff_ffff).into_bits(), 0xffff_ffff << 32);
        let one: [(EvtDw1, u64); 9] = [
            (EvtDw1::new().with_stag(0xffff), 0xffff),
            (EvtDw1::new().with_stall(true), 1 << 31),
            (EvtDw1::new().with_pnu(true), 1 << 33),
            (EvtDw1::new().with_ind(true), 1 << 34),
            (EvtDw1::new().with_rnw(true), 1 << 35),
            (EvtDw1::new().with_s2(true), 1 << 39),
            (EvtDw1::new().with_class(EventClass::Tt), 1 << 40),
            (EvtDw1::new().with_class(EventClass::In), 2 << 40),
            (EvtDw1::new().with_ttrnw(true), 1 << 44),
        ];
        for (w, raw) in one {
            assert_eq!(w.into_bits(), raw);
        }
        assert_eq!(EvtDw1::from_bits(3 << 40).class(), EventClass(3));
    }

    #[test]
    fn encode_and_decode_a_record() {
        let e = Event::new(EventId::FTranslation, 0x0108)
            .with_ssid(Some(5))
            .with_dw1(EvtDw1::new().with_rnw(true).with_s2(true).with_class(EventClass::In))
            .with_input_addr(0xdead_b000)
            .with_ipa(0xfff0_0008_1234_5678);
        assert_eq!(
            e.0,
            [0x0108 << 32 | 5 << 12 | 1 << 11 | 0x10, 1 << 41 | 1 << 39 | 1 << 35, 0xdead_b000, 0x8_1234_5000]
        );
        let d = Event(e.0);
        assert_eq!(
            (d.id(), d.sid(), d.ssid(), d.input_addr(), d.ipa()),
            (EventId::FTranslation, 0x0108, Some(5), 0xdead_b000, 0x8_1234_5000)
        );
        assert!(d.dw1().rnw() && d.dw1().s2() && !d.dw1().stall());
        let f = Event::new(EventId::FWalkEabt, 1).with_fetch_addr(0x4_0000_1ff8 | 7);
        assert_eq!(f.fetch_addr(), 0x4_0000_1ff8);
        assert_eq!(Event::new(EventId::CBadSte, 1).with_ssid(Some(3)).with_ssid(None).ssid(), None);
        assert_eq!(Event::new(EventId::CBadSte, 2).ssid(), None);
    }

    #[test]
    fn any_raw_record_decodes() {
        let junk = Event([u64::MAX; 4]);
        assert_eq!(junk.id(), EventId(0xff));
        assert_eq!(junk.ssid(), Some(0xfffff));
        assert_eq!(junk.dw1().class(), EventClass(3));
        assert_eq!(junk.ipa(), crate::mask64(51, 12));
        assert_eq!(junk.fetch_addr(), crate::mask64(51, 3));
        for raw in [0u64, u64::MAX, 0x5555_5555_5555_5555, 0xdead_beef_0bad_f00d] {
            assert_eq!(EvtDw0::from_bits(raw).into_bits(), raw);
            assert_eq!(EvtDw1::from_bits(raw).into_bits(), raw);
        }
    }
}
