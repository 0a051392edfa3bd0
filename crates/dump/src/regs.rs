//! IOMMU registers captured as text: from the QEMU monitor's `xp` command, or from Linux's VT-d
//! `iommu_regset` debugfs file ([`regset`]); [`RegSnapshot::parse`] tells them apart by content.
//!
//! A dump holds memory, not MMIO: the registers that say where the root table, device table or stream
//! table is (RTADDR, DTE base, STRTAB_BASE) are captured separately, by the capture script typing
//! `xp /1gx 0xfed90020` (or `/4wx`, ...) into the monitor. Its output looks like
//!
//! ```text
//! (qemu) xp /1gx 0xfed90008
//! 00000000fed90008: 0x00d2008c22260206
//! (qemu) xp /4wx 0xfed90000
//! 00000000fed90000: 0x00000010 0x00000000 0x00d2008c 0x22260206
//! ```
//!
//! The values after the colon are consecutive words from that address; each value's digit count gives
//! its width (2, 4, 8 or 16 hex digits: 1, 2, 4 or 8 bytes). Bytes are stored per absolute address,
//! little-endian, so a 64-bit register reads the same whether it was captured as one 64-bit word or
//! two 32-bit words.
//!
//! Which lines count: a line whose first characters are hex digits followed by `:` is an address line
//! and must be well formed; so must a line starting with 8 or more hex digits (it looks like an address
//! line that lost its colon). Anything else (the `(qemu)` prompt echo, blank lines, comments, other
//! monitor output) is ignored. A register given twice keeps the later value: a capture may re-read a
//! status register, and the last read is the state closest to the dump.

mod mmio;
pub mod regset;

pub use mmio::{MmioWrite, SnapshotMmio, MAX_RECORDED_WRITES};
pub use regset::RegsetUnit;

use std::collections::BTreeMap;

/// Why a register snapshot line was refused. `line` is 1-based, as an editor shows it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegsError {
    /// A line that counts (an address line, an `iommu_regset` unit line or row) is malformed.
    #[error("line {line}: {kind}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What was wrong with it.
        kind: LineError,
    },
    /// [`SnapshotMmio::require`]: a register an operation needs was not (wholly) captured.
    #[error("register {name} ({size} bytes at offset {off:#x}, address {addr:#x}) is not in the snapshot")]
    MissingRegister {
        /// The register's spec name (`RTADDR`, `DEV_TABLE_BASE`, `STRTAB_BASE`, ...).
        name: String,
        /// Byte offset from the unit's base.
        off: usize,
        /// Physical address: base + offset.
        addr: u64,
        /// Width, bytes.
        size: usize,
    },
}

/// What was wrong with an address line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Monitor text: the address before the colon does not fit in 64 bits.
    #[error("address {0:?} is wider than 64 bits")]
    AddressTooWide(String),
    /// Monitor text: a line starts with 8 or more hex digits but no `:` follows them.
    #[error("address is not followed by ':'")]
    MissingColon,
    /// Monitor text: an address line with nothing after the colon.
    #[error("no values after the address")]
    NoValues,
    /// Monitor text: a value is not `0x` and 2, 4, 8 or 16 hex digits, so its width is unknown.
    #[error("value {index} {text:?} is not 0x followed by 2, 4, 8 or 16 hex digits")]
    BadValue {
        /// 0-based position of the value on the line.
        index: usize,
        /// The value as written.
        text: String,
    },
    /// Monitor text: a value's last byte would be past address 2^64 - 1.
    #[error("value {index} would lie beyond the 64-bit address space")]
    AddressOverflow {
        /// 0-based position of the value on the line.
        index: usize,
    },
    /// `iommu_regset`: the kernel printed `IOMMU: Invalid base address`, so no registers follow.
    #[error("iommu_regset: Linux printed \"IOMMU: Invalid base address\" and no registers")]
    InvalidBase,
    /// `iommu_regset`: the unit line's `Register Base Address` is not hex of at most 16 digits.
    #[error("iommu_regset: register base address {0:?} is not a hex number of at most 16 digits")]
    BadBase(String),
    /// `iommu_regset`: a register row with no unit line above it, so it has no base.
    #[error("iommu_regset: a register row before any \"IOMMU: ... Register Base Address\" line")]
    RowOutsideUnit,
    /// `iommu_regset`: a register row without exactly name, offset and contents.
    #[error("iommu_regset: a register row has {count} fields, not 3 (name, offset, contents)")]
    RowFields {
        /// Whitespace-separated fields on the row.
        count: usize,
    },
    /// `iommu_regset`: a row's offset or contents is not `0x` and 1 to 16 hex digits.
    #[error("iommu_regset: {field} {text:?} is not 0x followed by 1 to 16 hex digits")]
    RowField {
        /// `offset` or `contents`.
        field: &'static str,
        /// The field as written.
        text: String,
    },
    /// `iommu_regset`: base + offset (+ the register's width) is past address 2^64 - 1.
    #[error("iommu_regset: base {base:#x} + offset {off:#x} lies beyond the 64-bit address space")]
    RowAddressOverflow {
        /// The unit's register base.
        base: u64,
        /// The row's offset.
        off: u64,
    },
}

/// Captured register bytes by absolute physical address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegSnapshot {
    bytes: BTreeMap<u64, u8>,
    /// The units an `iommu_regset` file named, in order; empty for monitor text.
    units: Vec<RegsetUnit>,
}

impl RegSnapshot {
    /// Parses monitor text (see the module docs for what is accepted, ignored and refused), or an
    /// `iommu_regset` file when the text has an `IOMMU:` line ([`regset`]).
    pub fn parse(text: &str) -> Result<Self, RegsError> {
        let mut snap = Self::default();
        if regset::detect(text) {
            regset::parse(text, &mut snap)?;
            return Ok(snap);
        }
        for (i, line) in text.lines().enumerate() {
            snap.parse_line(line).map_err(|kind| RegsError::BadLine { line: i + 1, kind })?;
        }
        Ok(snap)
    }

    fn parse_line(&mut self, line: &str) -> Result<(), LineError> {
        let line = line.trim_start();
        let digits = line.bytes().take_while(u8::is_ascii_hexdigit).count();
        let rest = &line[digits..];
        let is_address_line = (digits > 0 && rest.starts_with(':')) || digits >= 8;
        if !is_address_line {
            return Ok(());
        }
        let addr_text = &line[..digits];
        let Some(values) = rest.strip_prefix(':') else {
            return Err(LineError::MissingColon);
        };
        let mut addr = u64::from_str_radix(addr_text, 16).map_err(|_| LineError::AddressTooWide(addr_text.into()))?;
        // Parse the whole line before storing anything, so a refused line leaves no half of itself.
        let mut words = Vec::new();
        for (index, text) in values.split_whitespace().enumerate() {
            let bad = || LineError::BadValue { index, text: text.into() };
            let hex = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")).ok_or_else(bad)?;
            let width = hex.len() / 2;
            if !matches!(hex.len(), 2 | 4 | 8 | 16) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            let value = u64::from_str_radix(hex, 16).map_err(|_| bad())?;
            // The last byte of this word must be addressable; the next word's start may not be.
            addr.checked_add(width as u64 - 1).ok_or(LineError::AddressOverflow { index })?;
            words.push((addr, value, width));
            addr = addr.wrapping_add(width as u64);
        }
        if words.is_empty() {
            return Err(LineError::NoValues);
        }
        for (addr, value, width) in words {
            self.store(addr, value, width);
        }
        Ok(())
    }

    /// Stores the low `width` bytes of `value` at `addr`, little-endian. The caller has checked that
    /// `addr + width - 1` does not overflow.
    fn store(&mut self, addr: u64, value: u64, width: usize) {
        for (k, b) in value.to_le_bytes()[..width].iter().enumerate() {
            self.bytes.insert(addr + k as u64, *b);
        }
    }

    /// The units an `iommu_regset` file named (Linux's name and register base): the bases a decode
    /// can use without being told one. Empty for monitor text, which names only addresses.
    pub fn units(&self) -> &[RegsetUnit] {
        &self.units
    }

    /// Whether all `size` bytes from `addr` were captured.
    pub fn has(&self, addr: u64, size: usize) -> bool {
        if size == 0 {
            return true;
        }
        addr.checked_add(size as u64 - 1).is_some_and(|last| self.bytes.range(addr..=last).count() == size)
    }

    /// The captured byte at `addr`.
    fn byte(&self, addr: u64) -> Option<u8> {
        self.bytes.get(&addr).copied()
    }

    /// The little-endian value of `N` bytes from `addr`, if all were captured.
    fn read_le<const N: usize>(&self, addr: u64) -> Option<[u8; N]> {
        let mut out = [0u8; N];
        for (k, b) in out.iter_mut().enumerate() {
            *b = *self.bytes.get(&addr.checked_add(k as u64)?)?;
        }
        Some(out)
    }

    /// The 32-bit register at `addr`, or `None` unless all four bytes were captured.
    pub fn read32(&self, addr: u64) -> Option<u32> {
        self.read_le(addr).map(u32::from_le_bytes)
    }

    /// The 64-bit register at `addr`, or `None` unless all eight bytes were captured.
    pub fn read64(&self, addr: u64) -> Option<u64> {
        self.read_le(addr).map(u64::from_le_bytes)
    }

    /// How many bytes were captured.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether nothing was captured (e.g. the text held only prompts).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}
