//! Firmware status codes (Linux `enum sev_ret_code`, corrected numbering).

/// A status as CMDRESP returns it; unknown values are values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SevStatus(pub u32);

impl SevStatus {
    pub const SUCCESS: Self = Self(0x00);
    pub const INVALID_PLATFORM_STATE: Self = Self(0x01);
    pub const INVALID_GUEST_STATE: Self = Self(0x02);
    pub const INVALID_CONFIG: Self = Self(0x03);
    pub const INVALID_LEN: Self = Self(0x04);
    pub const ALREADY_OWNED: Self = Self(0x05);
    pub const INACTIVE: Self = Self(0x08);
    pub const INVALID_ADDRESS: Self = Self(0x09);
    pub const ASID_OWNED: Self = Self(0x0c);
    pub const INVALID_ASID: Self = Self(0x0d);
    pub const WBINVD_REQUIRED: Self = Self(0x0e);
    pub const DFFLUSH_REQUIRED: Self = Self(0x0f);
    pub const INVALID_GUEST: Self = Self(0x10);
    pub const INVALID_COMMAND: Self = Self(0x11);
    pub const ACTIVE: Self = Self(0x12);
    pub const UNSUPPORTED: Self = Self(0x15);
    pub const INVALID_PARAM: Self = Self(0x16);
    pub const RESOURCE_LIMIT: Self = Self(0x17);
    pub const SHUTDOWN_REQUIRED: Self = Self(0x23);

    pub const fn ok(self) -> bool {
        self.0 == 0
    }

    pub const fn name(self) -> &'static str {
        match self.0 {
            0x00 => "SUCCESS",
            0x01 => "INVALID_PLATFORM_STATE",
            0x02 => "INVALID_GUEST_STATE",
            0x03 => "INVALID_CONFIG",
            0x04 => "INVALID_LEN",
            0x05 => "ALREADY_OWNED",
            0x08 => "INACTIVE",
            0x09 => "INVALID_ADDRESS",
            0x0c => "ASID_OWNED",
            0x0d => "INVALID_ASID",
            0x0e => "WBINVD_REQUIRED",
            0x0f => "DFFLUSH_REQUIRED",
            0x10 => "INVALID_GUEST",
            0x11 => "INVALID_COMMAND",
            0x12 => "ACTIVE",
            0x15 => "UNSUPPORTED",
            0x16 => "INVALID_PARAM",
            0x17 => "RESOURCE_LIMIT",
            0x23 => "SHUTDOWN_REQUIRED",
            _ => "UNKNOWN",
        }
    }
}

impl std::fmt::Display for SevStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:#04x})", self.name(), self.0)
    }
}
