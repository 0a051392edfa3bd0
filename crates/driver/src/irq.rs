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
    /// The destination CPU's local APIC ID (x2APIC IDs are 32 bits).
    pub apic_id: u32,
    /// The IDT vector the CPU's handler is installed at.
    pub vector: u8,
}

/// The MSI a device is programmed with: a DWORD write of `data` to `addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MsiMessage {
    /// The address the device writes, in the 0xFEEx_xxxx interrupt window (VT-d's remappable format
    /// carries the entry's handle in it).
    pub addr: u64,
    /// The data written with it (AMD-Vi: the entry's index; VT-d: 0, the handle being in the address).
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
    Kept {
        /// Present old entries kept.
        live: u32,
        /// Old entries written non-present, each with the reason.
        refused: Vec<IrteRefusal>,
        /// Whole tables not kept (AMD-Vi: one per device), each with the reason.
        tables_refused: Vec<IrtRefusal>,
    },
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
    /// The entry's index in its table.
    pub index: u32,
    /// What was wrong with it, for the log.
    pub why: &'static str,
}

/// Why an old interrupt-remapping table was not kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IrtRefusal {
    /// VT-d: IRTA.S is not the size Linux programs (`INTR_REMAP_TABLE_REG_SIZE`), which Linux refuses to copy.
    Size {
        /// IRTA.S as read: the table has 2^(S + 1) entries.
        s: u8,
    },
    /// A table page outside RAM.
    NotRam {
        /// AMD-Vi: the device whose table it is; `None` for VT-d's single table.
        device: Option<u16>,
        /// The page's physical address.
        addr: u64,
    },
    /// A table page inside the crash kernel's region, which this kernel overwrites.
    InCrashRegion {
        /// AMD-Vi: the device whose table it is; `None` for VT-d's single table.
        device: Option<u16>,
        /// The page's physical address.
        addr: u64,
    },
    /// A table page that could not be read.
    Unreadable {
        /// AMD-Vi: the device whose table it is; `None` for VT-d's single table.
        device: Option<u16>,
        /// The page's physical address.
        addr: u64,
    },
    /// AMD-Vi: IntTabLen above 2048 entries (reserved), or IntCtl reserved, in a DTE.
    BadDte {
        /// The DeviceID of the entry.
        device: u16,
        /// The DTE's interrupt quadword (bits 191:128) as read.
        raw: u64,
    },
    /// AMD-Vi: the device's table would take the reading past the adoption's bound on entries read.
    Budget {
        /// The DeviceID whose table was not read.
        device: u16,
    },
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
            IrtRefusal::Budget { device } => {
                write!(f, "interrupt table of {device:#06x} past the bound on entries read at adoption")
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
    /// A bitmap for a table of `entries` entries, all free; clamped to 65 536, the largest table either IOMMU
    /// describes.
    pub fn new(entries: u32) -> Self {
        let entries = entries.min(1 << 16);
        IrteBitmap { words: vec![0; entries.div_ceil(64) as usize], entries }
    }
    /// Entries the table has, after the clamp.
    pub fn entries(&self) -> u32 {
        self.entries
    }
    /// Mark entry `i` in use (an entry the old table still holds, or one just allocated); out of range is
    /// ignored.
    pub fn set(&mut self, i: u32) {
        if i < self.entries {
            self.words[(i / 64) as usize] |= 1 << (i % 64);
        }
    }
    /// Whether entry `i` is in use; out of range is not.
    pub fn is_set(&self, i: u32) -> bool {
        i < self.entries && self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
    /// Entries in use.
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

/// One interrupt-remapping entry as a decode of old tables shows it: every entry that is present or holds
/// anything (an all-zero entry is unused and only counted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IrqEntry {
    /// VT-d: the source ID the entry validates (SVT ≠ 0); AMD-Vi: the device whose table it is.
    pub source: Option<u16>,
    /// The entry's index in its table (the handle a device's message names).
    pub index: u32,
    /// VT-d P, AMD-Vi RemapEn.
    pub present: bool,
    /// The vector it delivers.
    pub vector: u8,
    /// The APIC ID, in the unit's interrupt mode.
    pub dest: u32,
    /// Logical destination mode (DM = 1).
    pub logical: bool,
    /// The entry's raw words (the 32-bit AMD-Vi format in the low one).
    pub raw: [u64; 2],
    /// Why the unit would not deliver through it, when present: reserved bits, a posted or guest-mode entry.
    pub problem: Option<&'static str>,
}

impl IrqEntry {
    /// Whether the entry sends its interrupt to a CPU at all: present, sound, a vector a local APIC accepts
    /// (vectors 0–15 are illegal for external interrupts, SDM 10.5.2), and a logical destination naming some
    /// CPU.
    pub fn targets_cpu(&self) -> bool {
        self.present && self.problem.is_none() && self.vector >= 16 && !(self.logical && self.dest == 0)
    }
}

/// The interrupt-remapping tables a unit was using, decoded read-only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IrqTables {
    /// Remapping on (VT-d GSTS.IRES; AMD-Vi Control.IommuEn with some DTE's IV set).
    pub remapping: bool,
    /// Each table read: (address, owning device for AMD-Vi, entries).
    pub tables: Vec<(u64, Option<u16>, u32)>,
    /// Bytes per entry: 16 (VT-d; AMD-Vi with Control.GAEn) or 4 (AMD-Vi 32-bit IRTEs).
    pub entry_size: u64,
    /// Entries that are present or not all zero, by table then index.
    pub entries: Vec<IrqEntry>,
    /// All-zero entries, counted.
    pub unused: u64,
    /// Table pages that could not be read (not in the dump): their entries are unknown.
    pub unread: Vec<u64>,
}

/// IRTEs an AMD-Vi decode reads at most, over all tables: 512 full 2048-entry tables.
pub const DECODE_IRTE_BUDGET: u32 = 512 * 2048;

/// VT-d: the table IRTA names while GSTS.IRES is set (VT-d spec 9.10), every page read once.
pub fn decode_vtd(hw: &mut (impl crate::Mmio + crate::PhysMem)) -> IrqTables {
    use iommu_spec::vtd::{off, Gsts, Irta, Irte};
    let gsts = Gsts::from_bits(hw.read32(off::GSTS));
    let irta = Irta::from_bits(hw.read64(off::IRTA));
    let mut out = IrqTables { remapping: gsts.ires(), entry_size: 16, ..IrqTables::default() };
    if !gsts.ires() {
        return out;
    }
    let (base, entries) = (irta.table(), irta.entries());
    out.tables.push((base, None, entries));
    let mut page = [0u8; 4096];
    for p in 0..(entries as u64 * 16).div_ceil(4096) {
        let Some(addr) = base.checked_add(p * 4096) else { break };
        if hw.read(addr, &mut page).is_err() {
            out.unread.push(addr);
            continue;
        }
        for (i, chunk) in page.chunks_exact(16).enumerate() {
            let raw = u128::from_le_bytes(chunk.try_into().unwrap_or([0; 16]));
            if raw == 0 {
                out.unused += 1;
                continue;
            }
            let e = Irte::from_bits(raw);
            let problem = if e.im() {
                Some("posted-format entry")
            } else if e.reserved_bits(irta.eime()) != 0 {
                Some("reserved bits set")
            } else {
                None
            };
            out.entries.push(IrqEntry {
                source: (e.svt().0 != 0).then_some(e.sid()),
                index: p as u32 * 256 + i as u32,
                present: e.p(),
                vector: e.v(),
                dest: e.destination(irta.eime()),
                logical: e.dm(),
                raw: e.to_qwords(),
                problem,
            });
        }
    }
    out
}

/// AMD-Vi: the interrupt table of every valid DTE with IV set and IntCtl remapped (spec 2.2.2, 2.2.5), each
/// distinct table read once however many DTEs name it, at most [`DECODE_IRTE_BUDGET`] entries in all (the tables
/// past it are listed, unread); 32-bit or 128-bit entries as Control.GAEn says. Addresses lose the SME bit of
/// `env` ([`crate::BootEnv::old_pa`]).
pub fn decode_amdvi(hw: &mut (impl crate::Mmio + crate::PhysMem), env: &crate::BootEnv) -> IrqTables {
    use alloc::collections::BTreeSet;
    use iommu_spec::amdvi::{off, Control, DevTableBase, Dte, IntCtl, Irte32, IrteGa};
    let ctrl = Control::from_bits(hw.read64(off::CONTROL));
    let dt = DevTableBase::from_bits(hw.read64(off::DEV_TABLE_BASE));
    let ga = ctrl.ga_en();
    let size: u64 = if ga { 16 } else { 4 };
    let mut out = IrqTables { entry_size: size, ..IrqTables::default() };
    let mut seen = BTreeSet::new();
    let mut budget = DECODE_IRTE_BUDGET;
    let mut page = [0u8; 4096];
    for p in 0..dt.bytes() / 4096 {
        let Some(addr) = env.old_pa(dt.table()).checked_add(p * 4096) else { break };
        if hw.read(addr, &mut page).is_err() {
            continue;
        }
        for (i, chunk) in page.chunks_exact(32).enumerate() {
            let dte = Dte::from_le_bytes(chunk.try_into().unwrap_or(&[0; 32]));
            let devid = (p * 128 + i as u64) as u16;
            if !dte.valid() || !dte.iv() || dte.int_ctl() != IntCtl::Remap || dte.qw2().int_tab_len() > 11 {
                continue;
            }
            let root = env.old_pa(dte.int_table());
            if !seen.insert(root) {
                continue;
            }
            out.remapping = ctrl.iommu_en();
            let entries = dte.int_table_entries();
            out.tables.push((root, Some(devid), entries));
            if budget < entries {
                out.unread.push(root & !0xfff);
                continue;
            }
            budget -= entries;
            for index in 0..entries {
                let at = root + index as u64 * size;
                let words = if ga {
                    match (hw.read_u64(at), hw.read_u64(at + 8)) {
                        (Ok(a), Ok(b)) => [a, b],
                        _ => {
                            out.unread.push(at & !0xfff);
                            continue;
                        }
                    }
                } else {
                    match hw.read_u32(at) {
                        Ok(a) => [a as u64, 0],
                        Err(_) => {
                            out.unread.push(at & !0xfff);
                            continue;
                        }
                    }
                };
                if words == [0, 0] {
                    out.unused += 1;
                    continue;
                }
                let e = if ga {
                    let e = IrteGa(words);
                    let problem = if e.lo().guest_mode() {
                        Some("guest-mode (virtual APIC) entry")
                    } else if e.reserved_bits()[1] != 0 {
                        Some("reserved bits set")
                    } else {
                        None
                    };
                    (e.remap_en(), e.vector(), e.destination(), e.lo().dm(), problem)
                } else {
                    let e = Irte32::from_bits(words[0] as u32);
                    let problem = (e.reserved_bits() != 0).then_some("reserved bits set");
                    (e.remap_en(), e.vector(), e.destination() as u32, e.dm(), problem)
                };
                out.entries.push(IrqEntry {
                    source: Some(devid),
                    index,
                    present: e.0,
                    vector: e.1,
                    dest: e.2,
                    logical: e.3,
                    raw: words,
                    problem: e.4,
                });
            }
        }
    }
    out.unread.dedup();
    out
}
