//! Interrupt remapping (AMD IOMMU spec 2.2.5): one interrupt table per device, named by its DTE (IV, IntTabLen,
//! IntTableRootPtr, IntCtl), as Linux's `alloc_irq_table` + `set_dte_irq_entry` build it; 128-bit IRTEs with
//! Control.GAEn (Linux enables it when EFR.GASup: `iommu_enable_ga`), else 32-bit ones.
//!
//! Across the crash the tables stay where they are, with the device table the crash kernel reuses: attach and
//! containment rewrite only a DTE's lower half (`Amdvi::write_dte`), never the interrupt quadwords. At adoption
//! each DTE's interrupt half is hostile input: IntTabLen above 2048 entries, reserved IntCtl, or a table outside
//! RAM or inside the crash kernel's region make the DTE's interrupts aborted (IV = 1, IntCtl = 00b, written and
//! invalidated); within a kept table every valid entry with reserved bits (or GuestMode, which this driver does not
//! program) is cleared in place and the table invalidated. New entries go only in free slots. The reset policies
//! start from a fresh device table, so every old table is gone from the unit's view.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use iommu_spec::amdvi::{
    off, Control, DeviceId, Dte, DteQw2, IntCtl, InvalidateDevice, Irte32, IrteGa, IRTE32_SIZE, IRTE_GA_SIZE,
    LINUX_INT_TAB_LEN,
};

use super::driver::alloc_contiguous;
use super::{AmdError, Amdvi};
use crate::irq::{IrqHandover, IrqTarget, IrtRefusal, IrteBitmap, IrteRefusal, MsiMessage};
use crate::{BootEnv, Platform};

/// Largest IntTabLen (2048 entries); larger values are reserved.
const MAX_INT_TAB_LEN: u8 = 11;

/// One device's interrupt table as this driver knows it.
#[derive(Clone, Debug)]
pub(super) struct IrTable {
    root: u64,
    used: IrteBitmap,
}

/// Interrupt-remapping state of the driver.
#[derive(Clone, Debug)]
pub(super) struct IrqState {
    /// 128-bit IRTEs (Control.GAEn).
    ga: bool,
    /// Each distinct table once, however many DTEs name it (Linux gives a device's DMA aliases one table).
    tables: Vec<IrTable>,
    by_root: BTreeMap<u64, usize>,
    /// Per device: its table and the entries its own DTE lets it use (IntTabLen).
    by_device: BTreeMap<u16, (usize, u32)>,
    pub handover: IrqHandover,
    pub frames: u64,
}

/// IRTEs adoption reads at most, over all tables: 128 full 2048-entry tables. A device table naming more
/// distinct tables than that gets the rest refused, not read.
const ADOPT_IRTE_BUDGET: u32 = 128 * 2048;

impl IrqState {
    pub fn new(ga: bool) -> Self {
        IrqState {
            ga,
            tables: Vec::new(),
            by_root: BTreeMap::new(),
            by_device: BTreeMap::new(),
            handover: IrqHandover::Fresh,
            frames: 0,
        }
    }
    fn add(&mut self, devid: u16, t: IrTable, entries: u32) {
        let i = self.tables.len();
        self.by_root.insert(t.root, i);
        self.tables.push(t);
        self.by_device.insert(devid, (i, entries));
    }
    fn entry_size(&self) -> u64 {
        if self.ga {
            IRTE_GA_SIZE
        } else {
            IRTE32_SIZE
        }
    }
}

/// A DTE with its DeviceID.
struct Scanned {
    devid: u16,
    dte: Dte,
}

/// The interrupt half of a DTE whose interrupts are refused: IV set, fixed and arbitrated interrupts aborted.
pub(super) fn aborting_qw2() -> DteQw2 {
    DteQw2::new().with_iv(true).with_int_ctl(IntCtl::Abort)
}

impl Amdvi {
    /// Normal boot: 128-bit IRTEs where the unit has them (Linux `iommu_enable_ga`).
    pub(super) fn irq_fresh(&mut self, hw: &mut impl Platform) {
        let ctrl = Control::from_bits(hw.read64(off::CONTROL));
        let ga = self.efr.ga_sup();
        // x2APIC destinations in IRTEs where the unit can take them (Linux `iommu_enable_xt`).
        let xt = self.efr.xt_sup();
        if ga != ctrl.ga_en() || xt != ctrl.xt_en() {
            hw.write64(off::CONTROL, ctrl.with_ga_en(ga).with_xt_en(xt).into_bits());
        }
        self.irq = IrqState::new(ga);
    }

    /// Adoption: check every valid DTE's interrupt half and table (whatever its DMA side: a DTE that blocks
    /// DMA may still remap interrupts), keep what is sound, abort the rest. Entries `settle` refused already carry
    /// an aborting half. `candidates`: the DeviceIDs whose entry the scan found with V and IV set, in order (the
    /// rest cannot remap: `settle` writes only lower halves, or an aborting whole entry); each is read again
    /// here, as `settle` left it.
    pub(super) fn irq_adopt(
        &mut self,
        hw: &mut impl Platform,
        env: &BootEnv,
        candidates: &[u16],
    ) -> Result<(), AmdError> {
        let ga = Control::from_bits(hw.read64(off::CONTROL)).ga_en();
        self.irq = IrqState::new(ga);
        let size = self.irq.entry_size();
        let (mut live, mut refused, mut tables_refused) = (0u32, Vec::new(), Vec::new());
        let mut budget = ADOPT_IRTE_BUDGET;
        // The device table is in RAM outside the crash region (the scan checked it); at most 65536 entries.
        let mut devices = Vec::new();
        for &devid in candidates {
            let at = self.dev_table + 32 * devid as u64;
            if at.checked_add(32).is_none_or(|end| end > self.dev_table.saturating_add(self.dev_table_bytes)) {
                continue;
            }
            let mut raw = [0u8; 32];
            if hw.read(at, &mut raw).is_err() {
                continue;
            }
            let dte = Dte::from_le_bytes(&raw);
            if dte.valid() && dte.iv() {
                devices.push((devid, dte));
            }
        }
        for (devid, dte) in devices {
            let d = Scanned { devid, dte };
            let q2 = d.dte.qw2();
            let entries = 1u32 << q2.int_tab_len().min(15);
            let root = (q2.int_table_root() << 6) & !env.c_bit;
            let bad = if q2.int_tab_len() > MAX_INT_TAB_LEN || q2.int_ctl() == IntCtl::Reserved {
                Some(IrtRefusal::BadDte { device: d.devid, raw: q2.into_bits() })
            } else if q2.int_ctl() != IntCtl::Remap {
                // Abort or pass: no table in use.
                continue;
            } else {
                check_table(env, d.devid, root, entries as u64 * size)
            };
            let bad = bad.or_else(|| {
                let over = !self.irq.by_root.contains_key(&root) && budget < entries;
                over.then_some(IrtRefusal::Budget { device: d.devid })
            });
            if let Some(why) = bad {
                self.irq_abort_device(hw, d.devid, d.dte)?;
                tables_refused.push(why);
                continue;
            }
            // A table another DTE already named: read once, shared, each device bounded by its own length.
            if let Some(&i) = self.irq.by_root.get(&root) {
                self.irq.by_device.insert(d.devid, (i, entries));
                continue;
            }
            budget -= entries;
            let mut used = IrteBitmap::new(entries);
            let mut cleared = false;
            // Read a page (or what is left of the table in it) at a time, then look at its entries: the root is
            // 64-byte aligned, so a page boundary never splits an entry.
            let mut chunk = [0u8; 4096];
            let bytes = entries as u64 * size;
            let mut done = 0u64;
            while done < bytes {
                let from = root + done;
                let n = (4096 - (from & 0xfff)).min(bytes - done);
                let buf = &mut chunk[..n as usize];
                hw.read(from, buf)?;
                let first = (done / size) as u32;
                for (k, raw) in buf.chunks_exact(size as usize).enumerate() {
                    let i = first + k as u32;
                    let word = |w: usize| u64::from_le_bytes(raw[8 * w..8 * w + 8].try_into().unwrap_or([0; 8]));
                    let (valid, why) = if ga {
                        let e = IrteGa([word(0), word(1)]);
                        let why = if e.reserved_bits()[1] != 0 {
                            Some("reserved bits set")
                        } else if e.lo().guest_mode() {
                            Some("guest-mode (virtual APIC) entry")
                        } else {
                            None
                        };
                        (e.remap_en(), why)
                    } else {
                        let e = Irte32::from_bits(u32::from_le_bytes(raw[..4].try_into().unwrap_or([0; 4])));
                        (e.remap_en(), (e.reserved_bits() != 0).then_some("reserved bits set"))
                    };
                    if !valid {
                        continue;
                    }
                    if let Some(why) = why {
                        // Cleared in place: the table stays the device's, without this entry.
                        hw.write_u64(root + i as u64 * size, 0)?;
                        cleared = true;
                        refused.push(IrteRefusal { device: Some(d.devid), index: i, why });
                        continue;
                    }
                    used.set(i);
                }
                done += n;
            }
            if cleared {
                self.submit(hw, &[InvalidateDevice::interrupt_table(DeviceId(d.devid)).into_bits()])?;
            }
            live += used.count();
            self.irq.add(d.devid, IrTable { root, used }, entries);
        }
        // One refused table does not make the others unsound: each device's table stands alone.
        self.irq.handover = IrqHandover::Kept { live, refused, tables_refused };
        Ok(())
    }

    /// Replace a DTE's interrupt half with one that aborts its interrupts, and invalidate it.
    fn irq_abort_device(&mut self, hw: &mut impl Platform, devid: u16, dte: Dte) -> Result<(), AmdError> {
        let at = self.dev_table + 32 * devid as u64;
        hw.write_u128(at + 16, aborting_qw2().into_bits() as u128 | (dte.0[3] as u128) << 64)?;
        self.submit(
            hw,
            &[
                InvalidateDevice::devtab_entry(DeviceId(devid)).into_bits(),
                InvalidateDevice::interrupt_table(DeviceId(devid)).into_bits(),
            ],
        )
    }

    /// An IRTE for `devid`'s interrupt to `target` in the device's table (a new 512-entry table, written into its
    /// DTE, when it has none: Linux `alloc_irq_table`, `set_dte_irq_entry`), never in a slot a kept entry holds;
    /// the message is the compatibility address with the index as data (Linux `fill_msi_msg`).
    pub fn alloc_irq(
        &mut self,
        hw: &mut impl Platform,
        devid: u16,
        target: IrqTarget,
    ) -> Result<Option<MsiMessage>, AmdError> {
        // Remapping needs IommuEn: with translation off (`reset-bypass`, `off`) messages pass as they are, so
        // the caller composes a compatibility-format one.
        if !self.translating {
            return Ok(None);
        }
        let size = self.irq.entry_size();
        if !self.irq.by_device.contains_key(&devid) {
            let entries = 1u32 << LINUX_INT_TAB_LEN;
            let pages = (entries as u64 * size).div_ceil(4096);
            let mut n = 0;
            let root = alloc_contiguous(hw, pages, &mut n)?;
            self.irq.frames += n;
            let at = self.dev_table + 32 * devid as u64;
            // The table's address carries the SME bit like every other one (Linux `set_dte_irq_entry`
            // writes `iommu_virt_to_phys(table->table)`).
            let q2 = Dte::default().with_int_remap(root | self.c_bit, LINUX_INT_TAB_LEN).qw2();
            hw.write_u64(at + 16, q2.into_bits())?;
            self.submit(hw, &[InvalidateDevice::devtab_entry(DeviceId(devid)).into_bits()])?;
            self.irq.add(devid, IrTable { root, used: IrteBitmap::new(entries) }, entries);
        }
        let ga = self.irq.ga;
        let &(i, entries) = self.irq.by_device.get(&devid).ok_or(AmdError::OutOfMemory)?;
        let t = self.irq.tables.get_mut(i).ok_or(AmdError::OutOfMemory)?;
        let index = t.used.alloc_from(0).filter(|&x| x < entries).ok_or(AmdError::OutOfIrtes)?;
        let at = t.root + index as u64 * size;
        if ga {
            let e = IrteGa::fixed(target.vector, target.apic_id);
            hw.write_u128(at, e.0[0] as u128 | (e.0[1] as u128) << 64)?;
        } else {
            hw.write_u32(at, Irte32::fixed(target.vector, target.apic_id as u8).into_bits())?;
        }
        self.submit(hw, &[InvalidateDevice::interrupt_table(DeviceId(devid)).into_bits()])?;
        Ok(Some(MsiMessage { addr: iommu_spec::vtd::MSI_ADDR_BASE, data: index }))
    }

    /// What the boot did with interrupt remapping.
    pub fn irq_handover(&self) -> &IrqHandover {
        &self.irq.handover
    }
    /// Frames interrupt tables took (apart from [`Amdvi::frames_allocated`]).
    pub fn irq_frames(&self) -> u64 {
        self.irq.frames
    }
}

fn check_table(env: &BootEnv, devid: u16, root: u64, bytes: u64) -> Option<IrtRefusal> {
    let device = Some(devid);
    let Some(end) = root.checked_add(bytes) else {
        return Some(IrtRefusal::NotRam { device, addr: root });
    };
    // At most 2048 × 16 bytes: eight pages.
    let mut addr = root;
    while addr < end {
        let len = (4096 - (addr & 0xfff)).min(end - addr);
        if !env.in_ram(addr, len) {
            return Some(IrtRefusal::NotRam { device, addr });
        }
        if env.in_crash_region(addr, len) {
            return Some(IrtRefusal::InCrashRegion { device, addr });
        }
        addr += len;
    }
    None
}
