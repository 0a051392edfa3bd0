//! Interrupt remapping across the crash, shared by the VT-d and AMD-Vi drivers: the message a device is
//! programmed with, what the crash boot did with the old remapping table, and the bounded bitmap of entries in
//! use.
//!
//! The crashed kernel's devices keep raising interrupts with the messages it programmed (an IRTE index in the
//! MSI address or data). A crash kernel that switches to a fresh table turns each of them into an interrupt
//! fault or, with the wrong entry at that index, a misrouted interrupt; one that keeps the old entries (Linux's
//! VT-d `iommu_load_old_irte` copy, AMD-Vi's tables used in place with the device table) keeps them delivered
//! and allocates its own entries in the slots nobody uses.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// Where an interrupt should go: the local APIC ID of a CPU and the vector its handler is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IrqTarget {
    pub apic_id: u32,
    pub vector: u8,
}

/// The MSI a device is programmed with: a DWORD write of `data` to `addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MsiMessage {
    pub addr: u64,
    pub data: u32,
}

/// What the crash boot did with the crashed kernel's interrupt-remapping state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IrqHandover {
    /// This kernel does no interrupt remapping on the unit (no remapping hardware, or none programmed).
    Off,
    /// A fresh, empty table: every old message now faults (the reset policies; also when nothing was live).
    Fresh,
    /// The old entries stay live: `live` present entries kept; `refused` entries were not kept, nor were the
    /// tables in `tables_refused` (AMD-Vi: one table per device; those devices' interrupts are aborted).
    Kept { live: u32, refused: Vec<IrteRefusal>, tables_refused: Vec<IrtRefusal> },
    /// The old table could not be kept; a fresh one instead.
    Refused(IrtRefusal),
}

impl fmt::Display for IrqHandover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IrqHandover::Off => f.write_str("no interrupt remapping"),
            IrqHandover::Fresh => f.write_str("fresh interrupt table"),
            IrqHandover::Kept { live, refused, tables_refused } => {
                write!(f, "kept {live} interrupt entries")?;
                if !refused.is_empty() {
                    write!(f, ", refused {}", refused.len())?;
                }
                match tables_refused.first() {
                    Some(first) => write!(f, ", refused {} tables (first: {first})", tables_refused.len()),
                    None => Ok(()),
                }
            }
            IrqHandover::Refused(why) => write!(f, "old interrupt table refused: {why}"),
        }
    }
}

/// One old interrupt entry that was not kept (written non-present in the table the unit now uses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IrteRefusal {
    /// The device whose table it is (AMD-Vi), or the source ID it validates (VT-d), when known.
    pub device: Option<u16>,
    pub index: u32,
    pub why: &'static str,
}

/// Why an old interrupt-remapping table was not kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IrtRefusal {
    /// VT-d: IRTA.S is not the size Linux programs (`INTR_REMAP_TABLE_REG_SIZE`), which Linux refuses to copy.
    Size { s: u8 },
    /// A table page outside RAM.
    NotRam { device: Option<u16>, addr: u64 },
    /// A table page inside the crash kernel's region, which this kernel overwrites.
    InCrashRegion { device: Option<u16>, addr: u64 },
    /// A table page that could not be read.
    Unreadable { device: Option<u16>, addr: u64 },
    /// AMD-Vi: IntTabLen above 2048 entries (reserved), or IntCtl reserved, in a DTE.
    BadDte { device: u16, raw: u64 },
}

impl fmt::Display for IrtRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dev = |d: &Option<u16>| d.map(|d| alloc::format!(" of {:#06x}", d)).unwrap_or_default();
        match self {
            IrtRefusal::Size { s } => write!(f, "IRTA.S = {s:#x}, not the 65536-entry table Linux copies"),
            IrtRefusal::NotRam { device, addr } => write!(f, "interrupt table{} at {addr:#x} outside RAM", dev(device)),
            IrtRefusal::InCrashRegion { device, addr } => {
                write!(f, "interrupt table{} at {addr:#x} inside the crash kernel's region", dev(device))
            }
            IrtRefusal::Unreadable { device, addr } => {
                write!(f, "interrupt table{} at {addr:#x} unreadable", dev(device))
            }
            IrtRefusal::BadDte { device, raw } => {
                write!(f, "DTE of {device:#06x} has reserved interrupt fields (qw2 {raw:#018x})")
            }
        }
    }
}

/// Which entries of one table are in use: a bitmap sized by the table (at most 65536 entries, 8 KiB), never by
/// what the old table holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IrteBitmap {
    words: Vec<u64>,
    entries: u32,
}

impl IrteBitmap {
    pub fn new(entries: u32) -> Self {
        let entries = entries.min(1 << 16);
        IrteBitmap { words: vec![0; entries.div_ceil(64) as usize], entries }
    }
    pub fn entries(&self) -> u32 {
        self.entries
    }
    pub fn set(&mut self, i: u32) {
        if i < self.entries {
            self.words[(i / 64) as usize] |= 1 << (i % 64);
        }
    }
    pub fn is_set(&self, i: u32) -> bool {
        i < self.entries && self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
    pub fn count(&self) -> u32 {
        self.words.iter().map(|w| w.count_ones()).sum()
    }
    /// The lowest free entry at or above `from`, marked used (Linux `bitmap_find_free_region` in `alloc_irte`).
    pub fn alloc_from(&mut self, from: u32) -> Option<u32> {
        let i = (from..self.entries).find(|&i| !self.is_set(i))?;
        self.set(i);
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bitmap_never_hands_out_a_used_entry_and_stays_bounded() {
        let mut b = IrteBitmap::new(4);
        b.set(0);
        b.set(2);
        assert_eq!(b.alloc_from(0), Some(1));
        assert_eq!(b.alloc_from(0), Some(3));
        assert_eq!(b.alloc_from(0), None);
        assert_eq!(b.count(), 4);
        b.set(1 << 20);
        assert!(!b.is_set(1 << 20));
        assert_eq!(IrteBitmap::new(u32::MAX).entries(), 65536);
    }
}
