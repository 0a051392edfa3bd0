//! Interrupt remapping (VT-d spec 5.1, 9.10): the table IRTA points at, set up at normal boot as Linux's
//! `intel_setup_irq_remapping` + `iommu_set_irq_remapping` + `iommu_enable_irq_remapping` do, and at crash boot
//! either kept (copied, as `iommu_load_old_irte`) or replaced by a fresh one.
//!
//! The table is Linux's size (IRTA.S = 0xF: 65536 entries, 1 MiB). Crash boot with remapping found on
//! (GSTS.IRES) under `adopt` / `adopt-scratch`: the old IRTA is hostile input. Its size must be Linux's (Linux
//! refuses any other), every one of its 256 pages must be RAM outside the crash kernel's region; each present
//! entry is checked (reserved bits for the old IRTA's interrupt mode; posted entries are refused: this driver
//! does not program posted-interrupt descriptors) and copied, or written non-present and listed as refused. The
//! copy becomes the table (IRTA + SIRTP) with remapping left on, then the whole interrupt-entry cache is
//! invalidated, so no refused entry stays live in the unit. The reset policies take a fresh empty table, as
//! Linux before the copy (and any kernel that ignores the old one) does: every old message faults.

use iommu_spec::vtd::{off, Gcmd, IecInv, Irta, Irte, MsiAddrRemap, IRTE_SIZE, LINUX_IRTA_S};

use super::{hw, Vtd, VtdError};
use crate::irq::{IrqHandover, IrqTarget, IrtRefusal, IrteBitmap, IrteRefusal, MsiMessage};
use crate::{BootEnv, Platform, Policy};

/// Pages of a Linux-sized table: 65536 × 16 bytes.
const TABLE_PAGES: u64 = (2u64 << LINUX_IRTA_S) * IRTE_SIZE / 4096;

/// The interrupt-remapping table this driver owns.
#[derive(Clone, Debug)]
pub(super) struct IrTable {
    base: u64,
    eime: bool,
    used: IrteBitmap,
}

impl Vtd {
    /// Normal boot: a fresh table, remapping on, compatibility-format interrupts blocked.
    pub(super) fn ir_fresh(&mut self, hw: &mut impl Platform) -> Result<(), VtdError> {
        if !self.ecap.ir() {
            self.ir_handover = IrqHandover::Off;
            return Ok(());
        }
        let base = self.ir_alloc(hw)?;
        self.ir = Some(IrTable { base, eime: self.ecap.eim(), used: IrteBitmap::new(2 << LINUX_IRTA_S) });
        self.ir_install(hw)?;
        self.ir_handover = IrqHandover::Fresh;
        Ok(())
    }

    fn ir_alloc(&mut self, hw: &mut impl Platform) -> Result<u64, VtdError> {
        let mut n = 0;
        let base = crate::alloc_contiguous(hw, TABLE_PAGES, &mut n).ok_or(VtdError::OutOfMemory)?;
        self.ir_frames += n;
        Ok(base)
    }

    /// IRTA + SIRTP, a global IEC invalidation, then IRE on and CFI off (Linux `iommu_set_irq_remapping`,
    /// `iommu_enable_irq_remapping`: "Block compatibility-format MSIs").
    fn ir_install(&mut self, hw: &mut impl Platform) -> Result<(), VtdError> {
        // Remapping needs queued invalidation for the IEC even where DMA remapping runs without it (`reset-bypass`
        // turned it off): Linux's IR init enables QI itself (`dmar_enable_qi` from `intel_setup_irq_remapping`).
        if self.qi.is_none() {
            self.qi = Some(super::cmdq::InvQueue::enable(hw, self.scalable)?);
            self.ir_frames += if self.scalable { 3 } else { 2 };
        }
        let Some(t) = &self.ir else { return Ok(()) };
        hw.write64(off::IRTA, Irta::from_table(t.base, LINUX_IRTA_S, t.eime).into_bits());
        let cmd = hw::persistent(hw).with_sirtp(true);
        hw::command(hw, cmd, "IRTPS", true, |s| s.irtps())?;
        self.invalidate(hw, &[IecInv::global().into_bits()])?;
        let cmd: Gcmd = hw::persistent(hw).with_ire(true).with_cfi(false);
        hw::command(hw, cmd, "IRES", true, |s| s.ires() && !s.cfis())
    }

    /// Crash boot: keep the old entries under the adopting policies, else a fresh table.
    pub(super) fn ir_crash(&mut self, hw: &mut impl Platform, env: &BootEnv, policy: Policy) -> Result<(), VtdError> {
        if !self.ecap.ir() {
            self.ir_handover = IrqHandover::Off;
            return Ok(());
        }
        if !hw::gsts(hw).ires() || matches!(policy, Policy::ResetAbort | Policy::ResetBypass) {
            return self.ir_fresh(hw);
        }
        let old = Irta::from_bits(hw.read64(off::IRTA));
        match self.ir_copy(hw, env, old) {
            Ok(h) => {
                self.ir_install(hw)?;
                self.ir_handover = h;
                Ok(())
            }
            Err(Copy::Refused(r)) => {
                self.ir_fresh(hw)?;
                self.ir_handover = IrqHandover::Refused(r);
                Ok(())
            }
            Err(Copy::Driver(e)) => Err(e),
        }
    }

    /// Check the old table and copy its valid present entries into a new one (not yet installed).
    fn ir_copy(&mut self, hw: &mut impl Platform, env: &BootEnv, old: Irta) -> Result<IrqHandover, Copy> {
        if old.s() != LINUX_IRTA_S {
            return Err(Copy::Refused(IrtRefusal::Size { s: old.s() }));
        }
        let src = old.table() & !env.c_bit;
        for p in 0..TABLE_PAGES {
            let addr = src + p * 4096;
            if !env.in_ram(addr, 4096) {
                return Err(Copy::Refused(IrtRefusal::NotRam { device: None, addr }));
            }
            if env.in_crash_region(addr, 4096) {
                return Err(Copy::Refused(IrtRefusal::InCrashRegion { device: None, addr }));
            }
        }
        let base = self.ir_alloc(hw).map_err(Copy::Driver)?;
        let eime = old.eime();
        let mut used = IrteBitmap::new(old.entries());
        let mut refused = alloc::vec::Vec::new();
        // Each page looked at in place where memory lends it, else copied here: most of a table is zeros,
        // skipped eight cache lines (32 entries) at a time without a decode (P is bit 0: a zero entry is not
        // present).
        let mut copy = [0u8; 4096];
        let mut out = [0u8; 4096];
        for p in 0..TABLE_PAGES {
            let addr = src + p * 4096;
            let page = hw
                .read_page(addr, &mut copy)
                .map_err(|_| Copy::Refused(IrtRefusal::Unreadable { device: None, addr }))?;
            let mut any = false;
            for (b, block) in page.chunks_exact(512).enumerate() {
                if block.iter().fold(0, |a, &x| a | x) == 0 {
                    continue;
                }
                for (k, q) in block.chunks_exact(16).enumerate() {
                    let i = b * 32 + k;
                    let index = (p * 256) as u32 + i as u32;
                    let raw = u128::from_le_bytes(q.try_into().unwrap_or([0; 16]));
                    let e = Irte::from_bits(raw);
                    if !e.p() {
                        continue;
                    }
                    let why = if e.im() {
                        Some("posted-format entry")
                    } else if e.reserved_bits(eime) != 0 {
                        Some("reserved bits set")
                    } else if e.source_ok(0).is_none() {
                        Some("reserved source-validation type")
                    } else {
                        None
                    };
                    if let Some(why) = why {
                        refused.push(IrteRefusal { device: Some(e.sid()), index, why });
                        continue;
                    }
                    used.set(index);
                    // The copy of this page starts from zeros at its first kept entry.
                    if !any {
                        out.fill(0);
                        any = true;
                    }
                    if let Some(o) = out.get_mut(16 * i..16 * i + 16) {
                        o.copy_from_slice(q);
                    }
                }
            }
            if any {
                hw.write(base + p * 4096, &out).map_err(|e| Copy::Driver(e.into()))?;
            }
        }
        let live = used.count();
        self.ir = Some(IrTable { base, eime, used });
        Ok(IrqHandover::Kept { live, refused, tables_refused: alloc::vec::Vec::new() })
    }

    /// An IRTE for `sid`'s interrupt to `target`, in the first free slot (never one an adopted entry holds), and
    /// the message the device must send (Linux `intel_irq_remapping_alloc` → `alloc_irte`, `modify_irte`,
    /// `fill_msi_msg`: remappable format, SHV set with subhandle 0). `None` without remapping.
    pub fn alloc_irq(
        &mut self,
        hw: &mut impl Platform,
        sid: u16,
        target: IrqTarget,
    ) -> Result<Option<MsiMessage>, VtdError> {
        let Some(t) = self.ir.as_mut() else { return Ok(None) };
        let index = t.used.alloc_from(0).ok_or(VtdError::OutOfIrtes)?;
        let e = Irte::fixed(target.vector, target.apic_id, t.eime, sid);
        let at = t.base + index as u64 * IRTE_SIZE;
        hw.write_u128(at, e.into_bits())?;
        self.invalidate(hw, &[IecInv::index(index as u16, 0).into_bits()])?;
        let addr = MsiAddrRemap::for_handle(index as u16, true).into_bits() as u64;
        Ok(Some(MsiMessage { addr, data: 0 }))
    }

    /// What the boot did with interrupt remapping.
    pub fn irq_handover(&self) -> &IrqHandover {
        &self.ir_handover
    }

    /// Frames the interrupt-remapping table took (not in [`super::VtdStats::frames_allocated`], which counts the
    /// DMA-remapping structures).
    pub fn ir_frames(&self) -> u64 {
        self.ir_frames
    }

    /// The table in use: base, entries in use.
    pub fn ir_table(&self) -> Option<(u64, u32)> {
        self.ir.as_ref().map(|t| (t.base, t.used.count()))
    }
}

enum Copy {
    Refused(IrtRefusal),
    Driver(VtdError),
}
