//! VT-d registers as Linux's debugfs prints them: `/sys/kernel/debug/iommu/intel/iommu_regset`
//! (`iommu_regset_show` in `drivers/iommu/intel/debugfs.c`).
//!
//! For each active unit the kernel prints a line naming the unit and its register base (in hex, without
//! `0x`), a column header, then one row per register: its name, its offset from the base and its value,
//! 32-bit registers read with `readl` and 64-bit ones with `readq`, all printed as 16 hex digits:
//!
//! ```text
//! IOMMU: dmar0 Register Base Address: fed90000
//! Name                    Offset          Contents
//! VER                     0x00            0x0000000000000010
//! GCMD                    0x18            0x0000000000000000
//! CAP                     0x08            0x00d2008c222f0606
//! ```
//!
//! Because every value is printed 16 digits wide, the digits cannot say a register's width; the name
//! does: the kernel's `iommu_regs_32` list is stored as 4 bytes (so GCMD at 0x18 does not overwrite
//! GSTS at 0x1c), everything else as 8, except an unknown name whose value fits in 32 bits, stored as
//! 4 bytes so that it cannot clobber a neighbour. Rows are stored at `base + offset`, like monitor text.
//!
//! Which lines count: an `IOMMU:` line naming a register base starts a unit; a line whose second field
//! starts with `0x` is a row and must be well formed, inside a unit. Other lines (the column header,
//! blank lines, a shell prompt) are ignored. Linux's `IOMMU: Invalid base address` (it stops there) is
//! an error: the registers were not printed.

use super::{LineError, RegSnapshot, RegsError};

/// The registers `iommu_regset_show` reads with `readl` (Linux `iommu_regs_32`).
const REGS_32: [&str; 17] = [
    "VER", "GCMD", "GSTS", "FSTS", "FECTL", "FEDATA", "FEADDR", "FEUADDR", "PMEN", "PLMBASE", "PLMLIMIT", "ICS", "PRS",
    "PECTL", "PEDATA", "PEADDR", "PEUADDR",
];

/// A unit an `iommu_regset` file names: Linux's name for it (`dmar0`) and its register base.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegsetUnit {
    /// The name after `IOMMU:`, Linux's name for the unit (`dmar0`, `dmar1`, ...).
    pub name: String,
    /// The `Register Base Address` printed: the unit's DRHD register base.
    pub base: u64,
}

/// Whether `text` looks like an `iommu_regset` file rather than monitor output.
pub(super) fn detect(text: &str) -> bool {
    text.lines().any(|l| l.trim_start().starts_with("IOMMU:"))
}

/// Parses `iommu_regset` text into `snap`.
pub(super) fn parse(text: &str, snap: &mut RegSnapshot) -> Result<(), RegsError> {
    let mut base = None;
    for (i, line) in text.lines().enumerate() {
        let at = |kind| RegsError::BadLine { line: i + 1, kind };
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("IOMMU:") {
            if let Some(unit) = unit_line(rest).map_err(at)? {
                base = Some(unit.base);
                if !snap.units.iter().any(|u| u.base == unit.base) {
                    snap.units.push(unit);
                }
            }
            continue;
        }
        let fields: Vec<&str> = t.split_whitespace().collect();
        let is_row = fields.get(1).is_some_and(|f| f.starts_with("0x") || f.starts_with("0X"));
        if !is_row {
            continue;
        }
        let base = base.ok_or(at(LineError::RowOutsideUnit))?;
        let [name, off, value] = fields[..] else {
            return Err(at(LineError::RowFields { count: fields.len() }));
        };
        let off = hex(off, 16).ok_or_else(|| at(LineError::RowField { field: "offset", text: off.into() }))?;
        let value = hex(value, 16).ok_or_else(|| at(LineError::RowField { field: "contents", text: value.into() }))?;
        let width = if REGS_32.contains(&name) || (!is_known_64(name) && value <= u64::from(u32::MAX)) { 4 } else { 8 };
        let addr = base
            .checked_add(off)
            .filter(|a| a.checked_add(width - 1).is_some())
            .ok_or(at(LineError::RowAddressOverflow { base, off }))?;
        snap.store(addr, value, width as usize);
    }
    Ok(())
}

/// The rest of an `IOMMU:` line: a unit, nothing (some other `IOMMU:` line), or Linux's refusal.
fn unit_line(rest: &str) -> Result<Option<RegsetUnit>, LineError> {
    let rest = rest.trim();
    if rest == "Invalid base address" {
        return Err(LineError::InvalidBase);
    }
    let Some((name, base)) = rest.split_once("Register Base Address:") else {
        return Ok(None);
    };
    let base = base.trim();
    let value = hex(base, 16).or_else(|| hex(&format!("0x{base}"), 16));
    let base = value.ok_or_else(|| LineError::BadBase(base.into()))?;
    Ok(Some(RegsetUnit { name: name.trim().into(), base }))
}

/// `0x` and 1 to `max` hex digits.
fn hex(text: &str, max: usize) -> Option<u64> {
    let h = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X"))?;
    if h.is_empty() || h.len() > max || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(h, 16).ok()
}

/// Names Linux prints from `iommu_regs_64`; the MTRR registers are matched by prefix.
fn is_known_64(name: &str) -> bool {
    const REGS_64: [&str; 17] = [
        "CAP", "ECAP", "RTADDR", "CCMD", "AFLOG", "PHMBASE", "PHMLIMIT", "IQH", "IQT", "IQA", "IRTA", "PQH", "PQT",
        "PQA", "VCCAP", "VCMD", "VCRSP",
    ];
    REGS_64.contains(&name) || name.starts_with("MTRR")
}
