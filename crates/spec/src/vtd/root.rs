//! Root table entries (spec 9.1 legacy, 9.2 scalable mode): 256 × 128 bits in one 4 KiB page, indexed by bus.

use bitfield_struct::bitfield;

/// Entries in a root table (one per bus).
pub const ROOT_ENTRIES: usize = 256;
/// Bytes per root entry.
pub const ROOT_ENTRY_SIZE: u64 = 16;

/// Legacy-mode root entry (9.1): one context-table pointer for the whole bus.
#[bitfield(u128)]
#[derive(PartialEq, Eq)]
pub struct RootEntry {
    /// P (bit 0): the context-table pointer is valid.
    pub present: bool,
    /// Bits 11:1, reserved.
    #[bits(11)]
    pub reserved_lo: u16,
    /// Context table pointer, 4 KiB aligned.
    #[bits(52)]
    pub ctp: u64,
    /// Bits 127:64, reserved.
    pub reserved_hi: u64,
}

impl RootEntry {
    /// Physical address of the bus's context table (CTP, bits 63:12).
    pub const fn context_table(self) -> u64 {
        self.ctp() << 12
    }
    /// The entry pointing at a context table at `pa` (bits 11:0 dropped), with P set.
    pub const fn with_context_table(self, pa: u64) -> Self {
        self.with_ctp(pa >> 12).with_present(true)
    }
    /// Reserved bits that a well-formed entry leaves zero.
    pub const fn reserved_bits(self) -> u128 {
        self.into_bits() & (0xffe | (u64::MAX as u128) << 64)
    }
}

/// Scalable-mode root entry (9.2): a lower context table for devfn 0x00–0x7f and an upper one for 0x80–0xff.
#[bitfield(u128)]
#[derive(PartialEq, Eq)]
pub struct ScalableRootEntry {
    /// Lower context table present.
    pub lp: bool,
    /// Bits 11:1, reserved.
    #[bits(11)]
    pub reserved_lo: u16,
    /// LCTP (bits 63:12): lower context table pointer.
    #[bits(52)]
    pub lctp: u64,
    /// Upper context table present.
    pub up: bool,
    /// Bits 75:65, reserved.
    #[bits(11)]
    pub reserved_up: u16,
    /// UCTP (bits 127:76): upper context table pointer.
    #[bits(52)]
    pub uctp: u64,
}

impl ScalableRootEntry {
    /// Physical address of the lower context table (LCTP, bits 63:12): devfn 0x00–0x7f.
    pub const fn lower_table(self) -> u64 {
        self.lctp() << 12
    }
    /// Physical address of the upper context table (UCTP, bits 127:76): devfn 0x80–0xff.
    pub const fn upper_table(self) -> u64 {
        self.uctp() << 12
    }
    /// Reserved bits that a well-formed entry leaves zero (11:1, 75:65).
    pub const fn reserved_bits(self) -> u128 {
        self.into_bits() & (0xffe | 0xffe << 64)
    }
}

/// Split a 128-bit entry into the two quadwords memory holds (low first).
pub const fn to_qwords(v: u128) -> [u64; 2] {
    [v as u64, (v >> 64) as u64]
}

/// Join two quadwords (low first) into a 128-bit entry.
pub const fn from_qwords(q: [u64; 2]) -> u128 {
    q[0] as u128 | (q[1] as u128) << 64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_root_entry_layout() {
        let e = RootEntry::new().with_context_table(0x1234_5000);
        assert_eq!(e.into_bits(), 0x1234_5001);
        assert_eq!(RootEntry::from_bits(0x1234_5001).context_table(), 0x1234_5000);
        assert_eq!(e.reserved_bits(), 0);
        for bit in (1..12).chain(64..128) {
            let bad = RootEntry::from_bits(0x1000_0001 | 1u128 << bit);
            assert_ne!(bad.reserved_bits(), 0, "bit {bit} is reserved");
            assert_eq!(bad.into_bits(), 0x1000_0001 | 1u128 << bit, "round trip keeps bit {bit}");
        }
    }

    #[test]
    fn scalable_root_entry_layout() {
        let e = ScalableRootEntry::new().with_lp(true).with_lctp(0xaa).with_up(true).with_uctp(0xbb);
        assert_eq!(to_qwords(e.into_bits()), [0xaa001, 0xbb001]);
        let d = ScalableRootEntry::from_bits(from_qwords([0xaa001, 0xbb001]));
        assert_eq!((d.lower_table(), d.upper_table()), (0xaa000, 0xbb000));
        assert_eq!(ScalableRootEntry::from_bits(1 << 70).reserved_bits(), 1 << 70);
    }
}
