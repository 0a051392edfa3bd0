//! IOMMU layouts: register offsets and fields, table entries, page-table entries, commands and events.
//!
//! Layouts only, no behaviour. Every type decodes from the raw words the hardware reads and encodes back to
//! them, so the emulator, the driver and the dump decoder share one truth per bit. Reserved bits survive a
//! round trip untouched: checking them is the reader's job, not the decoder's.
//!
//! Encodings that a hostile or corrupt table may hold (translation types, descriptor types, fault reasons)
//! are open enums: an unknown value is a value, never a panic.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// A PCI requester ID (`bus << 8 | devfn`): VT-d's source ID, AMD-Vi's DeviceID (re-exported under those
/// names), the PCI side of an SMMUv3 StreamID mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Rid(pub u16);

impl Rid {
    /// The ID of PCI function `bus:dev.func`; `dev` is masked to 5 bits, `func` to 3.
    pub const fn new(bus: u8, dev: u8, func: u8) -> Self {
        Rid(((bus as u16) << 8) | (((dev & 0x1f) as u16) << 3) | (func & 7) as u16)
    }
    /// Bus number, bits 15:8.
    pub const fn bus(self) -> u8 {
        (self.0 >> 8) as u8
    }
    /// Device and function, bits 7:0 (`PCI_DEVFN`).
    pub const fn devfn(self) -> u8 {
        self.0 as u8
    }
    /// Device number, bits 7:3.
    pub const fn dev(self) -> u8 {
        (self.0 >> 3) as u8 & 0x1f
    }
    /// Function number, bits 2:0.
    pub const fn func(self) -> u8 {
        self.0 as u8 & 7
    }
    /// Byte offset of this device's entry in an AMD-Vi device table.
    pub const fn dte_offset(self) -> u64 {
        self.0 as u64 * amdvi::DTE_SIZE
    }
}

impl core::fmt::Display for Rid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus(), self.dev(), self.func())
    }
}

/// `from_bits` / `into_bits` for an open enum stored in a `bits`-wide bitfield: what `bitfield-struct`
/// calls to decode and encode a custom field type. Both mask to the field, so any raw value is a value.
macro_rules! open_enum_bits {
    ($t:ty, $repr:ty, $bits:expr) => {
        impl $t {
            /// The value of a raw field: bits above the field's width are dropped.
            pub const fn from_bits(v: $repr) -> Self {
                Self(v & (((1u64 << $bits) - 1) as $repr))
            }
            /// Masked too, so a value built from an out-of-range constant cannot spill into the next field.
            pub const fn into_bits(self) -> $repr {
                self.0 & (((1u64 << $bits) - 1) as $repr)
            }
        }
    };
}
pub(crate) use open_enum_bits;

pub mod amdvi;
pub mod smmuv3;
pub mod vtd;

/// Which of the three IOMMU architectures a unit is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IommuKind {
    /// Intel VT-d (Intel Virtualization Technology for Directed I/O).
    Vtd,
    /// AMD I/O Virtualization Technology (AMD-Vi).
    Amdvi,
    /// Arm System MMU version 3.
    Smmuv3,
}

impl IommuKind {
    /// The three kinds, in declaration order.
    pub const ALL: [IommuKind; 3] = [IommuKind::Vtd, IommuKind::Amdvi, IommuKind::Smmuv3];

    /// `vtd`, `amdvi`, `smmuv3`: the names the command line and JSON use.
    pub const fn name(self) -> &'static str {
        match self {
            IommuKind::Vtd => "vtd",
            IommuKind::Amdvi => "amdvi",
            IommuKind::Smmuv3 => "smmuv3",
        }
    }
}

impl core::fmt::Display for IommuKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not `vtd`, `amdvi` or `smmuv3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownIommuKind;

impl core::fmt::Display for UnknownIommuKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("unknown IOMMU kind (expected vtd, amdvi or smmuv3)")
    }
}

impl core::error::Error for UnknownIommuKind {}

impl core::str::FromStr for IommuKind {
    type Err = UnknownIommuKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IommuKind::ALL.into_iter().find(|k| k.name() == s).ok_or(UnknownIommuKind)
    }
}

/// Size of the 4 KiB page every IOMMU here uses for its tables.
pub const PAGE_SIZE: u64 = 4096;
/// `log2(PAGE_SIZE)`.
pub const PAGE_SHIFT: u32 = 12;

/// Bits `hi:lo` (inclusive) of `v` as a mask.
pub const fn mask64(hi: u32, lo: u32) -> u64 {
    (u64::MAX >> (63 - hi)) & (u64::MAX << lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iommu_kind_names_round_trip_and_unknown_names_are_refused() {
        for k in IommuKind::ALL {
            assert_eq!(k.name().parse::<IommuKind>(), Ok(k));
        }
        assert_eq!("amd-vi".parse::<IommuKind>(), Err(UnknownIommuKind));
    }

    #[test]
    fn mask_edges() {
        assert_eq!(mask64(63, 0), u64::MAX);
        assert_eq!(mask64(63, 12), !0xfff);
        assert_eq!(mask64(11, 4), 0xff0);
        assert_eq!(mask64(0, 0), 1);
    }
}
