//! Firmware status codes (Linux `enum sev_ret_code`, corrected numbering).

/// A status as CMDRESP returns it; unknown values are values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SevStatus(pub u32);

impl SevStatus {
    /// The command completed.
    pub const SUCCESS: Self = Self(0x00);
    /// The platform is in the wrong state for the command (e.g. SNP not initialised, or already).
    pub const INVALID_PLATFORM_STATE: Self = Self(0x01);
    /// The guest is in the wrong state for the command (e.g. SNP_ACTIVATE on an already activated context).
    pub const INVALID_GUEST_STATE: Self = Self(0x02);
    /// The platform configuration is invalid.
    pub const INVALID_CONFIG: Self = Self(0x03);
    /// A buffer length is too small.
    pub const INVALID_LEN: Self = Self(0x04);
    /// The platform is already owned.
    pub const ALREADY_OWNED: Self = Self(0x05);
    /// The guest is not active.
    pub const INACTIVE: Self = Self(0x08);
    /// An address is invalid for the command.
    pub const INVALID_ADDRESS: Self = Self(0x09);
    /// The ASID is already bound to another guest context.
    pub const ASID_OWNED: Self = Self(0x0c);
    /// The ASID is not valid for an SNP guest (the model refuses ASID 0, the host's).
    pub const INVALID_ASID: Self = Self(0x0d);
    /// SNP_DF_FLUSH refused: a core marked by SNP_DECOMMISSION has not executed WBINVD since.
    pub const WBINVD_REQUIRED: Self = Self(0x0e);
    /// SNP_SHUTDOWN_EX refused: an SNP_DECOMMISSION has not been followed by a successful SNP_DF_FLUSH.
    pub const DFFLUSH_REQUIRED: Self = Self(0x0f);
    /// No guest context exists at the given address.
    pub const INVALID_GUEST: Self = Self(0x10);
    /// The command ID is not recognised.
    pub const INVALID_COMMAND: Self = Self(0x11);
    /// The guest is still active.
    pub const ACTIVE: Self = Self(0x12);
    /// The command or feature is not supported by this firmware.
    pub const UNSUPPORTED: Self = Self(0x15);
    /// A command parameter is invalid.
    pub const INVALID_PARAM: Self = Self(0x16);
    /// A firmware resource (e.g. guest contexts) is exhausted.
    pub const RESOURCE_LIMIT: Self = Self(0x17);
    /// The platform must be shut down before the command can run.
    pub const SHUTDOWN_REQUIRED: Self = Self(0x23);

    /// Whether this is SUCCESS.
    pub const fn ok(self) -> bool {
        self.0 == 0
    }

    /// The ABI's name for the code (`UNKNOWN` for codes not listed here).
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
