//! The register file (IHI 0070 chapter 6): which offsets decode, which bits software may write, and the
//! registers whose writes are ignored while the enable that guards them is set.
//!
//! Accesses (6.2): 32-bit to any register, 64-bit to the 64-bit registers, either 32-bit half of a 64-bit
//! register; anything else (other sizes, misalignment, 64 bits over two 32-bit registers, no register) reads 0
//! and is ignored, a CONSTRAINED UNPREDICTABLE choice QEMU's `smmu_readll`/`smmu_writell` make too. The page-1
//! queue pointers (EVTQ_PROD/CONS at 0x100A8/0x100AC, PRIQ at 0x100C8/0x100CC) also answer at their page-0
//! offsets, as on implementations with Linux's `ARM_SMMU_OPT_PAGE0_REGS_ONLY` and in QEMU; other page-1 offsets
//! decode nothing.
//!
//! Enables are acknowledged at once: CR0ACK and IRQ_CTRLACK read what was last written, as in QEMU's
//! `smmu_writel`, so a driver's poll succeeds on its first read.

use iommu_spec::mask64;
use iommu_spec::smmuv3::{off, Cr0, Cr2, Gbpa, Gerror, IrqCtrl, MsiCfg2, QueuePtr, StrtabBaseCfg};

use super::Smmuv3Model;
use crate::mem::PhysMemory;

/// GBPA reset value: SHCFG = use incoming, ABORT = 0 (QEMU's reset; the hardware value is IMPLEMENTATION
/// DEFINED).
const GBPA_RESET: u32 = 0x1000;
/// STRTAB_BASE: ADDR 51:6 and RA (6.3.23).
const STRTAB_BASE_MASK: u64 = mask64(51, 6) | 1 << 62;
/// CMDQ_BASE / EVTQ_BASE: LOG2SIZE, ADDR 51:5, RWA (6.3.25, 6.3.28).
const QUEUE_BASE_MASK: u64 = mask64(51, 0) | 1 << 62;
/// IRQ_CFG0: ADDR 51:2 (6.3.20).
const MSI_ADDR_MASK: u64 = mask64(51, 2);

/// The stored registers. 32-bit registers hold their value in the low half.
#[derive(Clone, Debug, Default)]
pub(super) struct Regs {
    pub cr0: u32,
    pub cr0ack: u32,
    pub cr1: u32,
    pub cr2: u32,
    pub gbpa: u32,
    pub irq_ctrl: u32,
    pub gerror: u32,
    pub gerrorn: u32,
    pub gerror_irq_cfg0: u64,
    pub gerror_irq_cfg1: u32,
    pub gerror_irq_cfg2: u32,
    pub strtab_base: u64,
    pub strtab_base_cfg: u32,
    pub cmdq_base: u64,
    pub cmdq_prod: u32,
    pub cmdq_cons: u32,
    pub evtq_base: u64,
    pub evtq_prod: u32,
    pub evtq_cons: u32,
    pub evtq_irq_cfg0: u64,
    pub evtq_irq_cfg1: u32,
    pub evtq_irq_cfg2: u32,
}

impl Regs {
    pub fn reset() -> Self {
        Regs { gbpa: GBPA_RESET, ..Regs::default() }
    }

    pub fn cr0ack(&self) -> Cr0 {
        Cr0::from_bits(self.cr0ack)
    }

    /// IRQ_CTRLACK: the same as IRQ_CTRL, acknowledged at once.
    pub fn irq_ctrlack(&self) -> IrqCtrl {
        IrqCtrl::from_bits(self.irq_ctrl)
    }

    pub fn cr2(&self) -> Cr2 {
        Cr2::from_bits(self.cr2)
    }

    pub fn gbpa(&self) -> Gbpa {
        Gbpa::from_bits(self.gbpa)
    }

    /// The stored value of a read-write register at canonical offset `base` (0 for the others), what a 32-bit
    /// write to one half merges with.
    pub fn raw(&self, base: usize) -> u64 {
        match base {
            off::GERROR_IRQ_CFG0 => self.gerror_irq_cfg0,
            off::STRTAB_BASE => self.strtab_base,
            off::CMDQ_BASE => self.cmdq_base,
            off::EVTQ_BASE => self.evtq_base,
            off::EVTQ_IRQ_CFG0 => self.evtq_irq_cfg0,
            _ => 0,
        }
    }
}

/// Byte width of the register at canonical offset `off`, `None` where nothing decodes.
fn width(off: usize) -> Option<usize> {
    use off::*;
    match off {
        IDR0 | IDR1 | IDR2 | IDR3 | IDR4 | IDR5 | IIDR | AIDR | CR0 | CR0ACK | CR1 | CR2 | STATUSR | GBPA | AGBPA
        | IRQ_CTRL | IRQ_CTRLACK | GERROR | GERRORN | GERROR_IRQ_CFG1 | GERROR_IRQ_CFG2 | STRTAB_BASE_CFG
        | CMDQ_PROD | CMDQ_CONS | EVTQ_IRQ_CFG1 | EVTQ_IRQ_CFG2 | PRIQ_IRQ_CFG1 | PRIQ_IRQ_CFG2 | EVTQ_PROD
        | EVTQ_CONS | PRIQ_PROD | PRIQ_CONS => Some(4),
        GERROR_IRQ_CFG0 | STRTAB_BASE | CMDQ_BASE | EVTQ_BASE | EVTQ_IRQ_CFG0 | PRIQ_BASE | PRIQ_IRQ_CFG0 => Some(8),
        _ => None,
    }
}

/// The canonical offset of `off`: page-1 queue pointers keep their page-1 offset and are also reached through
/// their page-0 alias; other page-1 offsets decode nothing.
fn canonical(off: usize) -> Option<usize> {
    let is_page1_reg = |o: usize| matches!(o, off::EVTQ_PROD | off::EVTQ_CONS | off::PRIQ_PROD | off::PRIQ_CONS);
    if off >= off::FRAME_SIZE {
        return None;
    }
    if off >= off::PAGE1 {
        return is_page1_reg(off).then_some(off);
    }
    let p1 = off + off::PAGE1;
    Some(if is_page1_reg(p1) { p1 } else { off })
}

/// The register an access of `size` bytes at `off` reaches: its canonical base offset and whether the access is
/// the upper half of a 64-bit register. `None` for an access the SMMU does not decode.
pub(super) fn decode_access(off: usize, size: u8) -> Option<(usize, bool)> {
    let size = size as usize;
    if !(size == 4 || size == 8) || !off.is_multiple_of(size) {
        return None;
    }
    let c = canonical(off)?;
    match width(c) {
        Some(w) if size <= w => Some((c, false)),
        None if size == 4 && c >= 4 && width(c - 4) == Some(8) => Some((c - 4, true)),
        _ => None,
    }
}

/// Index-and-wrap bits of a queue pointer for queues of at most `2^qs` entries (6.3.26: higher bits RES0).
const fn ptr_mask(qs: u8) -> u32 {
    (2u32 << qs) - 1
}

impl Smmuv3Model {
    /// A software read of the register at canonical offset `base`.
    pub(super) fn read_reg(&self, base: usize) -> u64 {
        let r = &self.regs;
        let v32 = match base {
            off::IDR0 => self.cfg.idr0().into_bits(),
            off::IDR1 => self.cfg.idr1().into_bits(),
            off::IDR3 => self.cfg.idr3().into_bits(),
            off::IDR5 => self.cfg.idr5().into_bits(),
            // Arm as implementer (JEP106 0x43B), as QEMU; AIDR: SMMUv3.1.
            off::IIDR => 0x43b,
            off::AIDR => 1,
            off::CR0 => r.cr0,
            off::CR0ACK => r.cr0ack,
            off::CR1 => r.cr1,
            off::CR2 => r.cr2,
            off::GBPA => r.gbpa,
            off::IRQ_CTRL | off::IRQ_CTRLACK => r.irq_ctrl,
            off::GERROR => r.gerror,
            off::GERRORN => r.gerrorn,
            off::GERROR_IRQ_CFG1 => r.gerror_irq_cfg1,
            off::GERROR_IRQ_CFG2 => r.gerror_irq_cfg2,
            off::STRTAB_BASE_CFG => r.strtab_base_cfg,
            off::CMDQ_PROD => r.cmdq_prod,
            off::CMDQ_CONS => r.cmdq_cons,
            off::EVTQ_PROD => r.evtq_prod,
            off::EVTQ_CONS => r.evtq_cons,
            off::EVTQ_IRQ_CFG1 => r.evtq_irq_cfg1,
            off::EVTQ_IRQ_CFG2 => r.evtq_irq_cfg2,
            // The 64-bit registers; IDR2/IDR4, STATUSR, AGBPA and (without PRI) the PRIQ registers read 0.
            _ => return r.raw(base),
        };
        v32 as u64
    }

    /// A software write of `v` (already merged with the other half of a 64-bit register) to the register at
    /// canonical offset `base`.
    pub(super) fn write_reg(&mut self, mem: &mut PhysMemory, base: usize, v: u64) {
        let v32 = v as u32;
        let ack = self.regs.cr0ack();
        match base {
            off::CR0 => self.write_cr0(mem, v32),
            // CR1 is guarded by SMMUEN and the queue enables, CR2 by SMMUEN (6.3.11, 6.3.12): changes while
            // they are set are CONSTRAINED UNPREDICTABLE; the model ignores them.
            off::CR1 if ack.smmuen() || ack.cmdqen() || ack.evtqen() => self.counters.guarded_writes_ignored += 1,
            off::CR1 => self.regs.cr1 = v32 & 0xfff,
            off::CR2 if ack.smmuen() => self.counters.guarded_writes_ignored += 1,
            off::CR2 => {
                let e2h = Cr2::new().with_e2h(self.cfg.hyp).into_bits();
                let mask = Cr2::new().with_recinvsid(true).with_ptm(true).into_bits() | e2h;
                self.regs.cr2 = v32 & mask;
            }
            off::GBPA => self.write_gbpa(v32),
            off::IRQ_CTRL => {
                let mask = IrqCtrl::new().with_gerror_irqen(true).with_evtq_irqen(true).into_bits();
                self.regs.irq_ctrl = v32 & mask;
            }
            off::GERRORN => self.write_gerrorn(mem, v32),
            off::GERROR_IRQ_CFG0 if self.cfg.msi => self.regs.gerror_irq_cfg0 = v & MSI_ADDR_MASK,
            off::GERROR_IRQ_CFG1 if self.cfg.msi => self.regs.gerror_irq_cfg1 = v32,
            off::GERROR_IRQ_CFG2 if self.cfg.msi => self.regs.gerror_irq_cfg2 = v32 & msi_cfg2_mask(),
            off::EVTQ_IRQ_CFG0 if self.cfg.msi => self.regs.evtq_irq_cfg0 = v & MSI_ADDR_MASK,
            off::EVTQ_IRQ_CFG1 if self.cfg.msi => self.regs.evtq_irq_cfg1 = v32,
            off::EVTQ_IRQ_CFG2 if self.cfg.msi => self.regs.evtq_irq_cfg2 = v32 & msi_cfg2_mask(),
            // STRTAB_BASE and STRTAB_BASE_CFG are guarded by SMMUEN (6.3.23, 6.3.24): a write while it is set is
            // CONSTRAINED UNPREDICTABLE, and the model takes the "ignored" choice. This is the rule that leaves a
            // kdump kernel no way to install a new table without turning translation off (kdump series v6 1/7).
            off::STRTAB_BASE | off::STRTAB_BASE_CFG if ack.smmuen() => self.counters.guarded_writes_ignored += 1,
            off::STRTAB_BASE => self.regs.strtab_base = v & STRTAB_BASE_MASK,
            off::STRTAB_BASE_CFG => {
                self.regs.strtab_base_cfg = v32 & !StrtabBaseCfg::from_bits(u32::MAX).reserved_bits();
            }
            // The command queue's base and consumer may change only while CMDQEN = 0 (6.3.25, 6.3.27): ignored
            // otherwise, the choice gem5 makes too.
            off::CMDQ_BASE | off::CMDQ_CONS if ack.cmdqen() => self.counters.guarded_writes_ignored += 1,
            off::CMDQ_BASE => self.regs.cmdq_base = v & QUEUE_BASE_MASK,
            off::CMDQ_CONS => {
                let err = self.regs.cmdq_cons & (0x7f << 24);
                self.regs.cmdq_cons = (v32 & ptr_mask(self.cfg.cmdqs)) | err;
            }
            off::CMDQ_PROD => {
                self.regs.cmdq_prod = v32 & ptr_mask(self.cfg.cmdqs);
                self.process_cmdq(mem);
            }
            // The event queue's base and producer belong to software only while EVTQEN = 0 (6.3.28, 6.3.29).
            off::EVTQ_BASE | off::EVTQ_PROD if ack.evtqen() => self.counters.guarded_writes_ignored += 1,
            off::EVTQ_BASE => self.regs.evtq_base = v & QUEUE_BASE_MASK,
            off::EVTQ_PROD => self.regs.evtq_prod = v32 & (ptr_mask(self.cfg.evtqs) | QueuePtr::OVF),
            // CONS.OVACKFLG (bit 31) is how software acknowledges an overflow (7.4).
            off::EVTQ_CONS => self.regs.evtq_cons = v32 & (ptr_mask(self.cfg.evtqs) | QueuePtr::OVF),
            // ID registers, CR0ACK, IRQ_CTRLACK, GERROR, STATUSR, AGBPA, the PRIQ registers (no PRI) and, without
            // MSIs, the IRQ_CFG registers: read-only or RES0.
            _ => {}
        }
    }

    /// CR0 (6.3.9): reserved bits and enables of absent features (PRIQEN, ATSCHK, VMW) stay 0. The change takes
    /// effect at once and shows in CR0ACK. Enabling the command queue fetches what PROD already holds.
    fn write_cr0(&mut self, mem: &mut PhysMemory, v: u32) {
        let mask = Cr0::new().with_smmuen(true).with_evtqen(true).with_cmdqen(true).into_bits();
        self.regs.cr0 = v & mask;
        self.regs.cr0ack = self.regs.cr0;
        self.process_cmdq(mem);
    }

    /// GBPA (6.3.14): a write with UPDATE = 1 applies its attribute and ABORT fields, and UPDATE reads 0 once
    /// applied (here at once); a write with UPDATE = 0 is ignored (the only behaviour from SMMUv3.2; QEMU).
    fn write_gbpa(&mut self, v: u32) {
        let g = Gbpa::from_bits(v);
        if !g.update() {
            return;
        }
        let reserved = Gbpa::from_bits(u32::MAX).reserved_bits();
        self.regs.gbpa = v & !reserved & !Gbpa::new().with_update(true).into_bits();
    }

    /// GERRORN (6.3.19): software acknowledges by making a bit equal to GERROR. Acknowledging CMDQ_ERR restarts
    /// the command queue from CONS (QEMU `smmuv3_cmdq_consume` after `smmuv3_write_gerrorn`).
    fn write_gerrorn(&mut self, mem: &mut PhysMemory, v: u32) {
        self.regs.gerrorn = v & Gerror::ERR_MASK;
        if !self.gerror_active().cmdq_err() {
            self.process_cmdq(mem);
        }
    }
}

fn msi_cfg2_mask() -> u32 {
    MsiCfg2::new().with_memattr(0xf).with_sh(3).into_bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_decoding() {
        assert_eq!(decode_access(off::CR0, 4), Some((off::CR0, false)));
        assert_eq!(decode_access(off::CR0, 8), None, "64 bits over two 32-bit registers");
        assert_eq!(decode_access(off::STRTAB_BASE, 8), Some((off::STRTAB_BASE, false)));
        assert_eq!(decode_access(off::STRTAB_BASE + 4, 4), Some((off::STRTAB_BASE, true)));
        assert_eq!(decode_access(off::STRTAB_BASE + 4, 8), None, "misaligned");
        assert_eq!(decode_access(off::CR0 + 1, 4), None);
        assert_eq!(decode_access(off::CR0, 2), None);
        assert_eq!(decode_access(off::EVTQ_PROD, 4), Some((off::EVTQ_PROD, false)));
        assert_eq!(decode_access(0xa8, 4), Some((off::EVTQ_PROD, false)), "page-0 alias");
        assert_eq!(decode_access(off::PAGE1 + off::CR0, 4), None, "page 1 holds only the queue pointers");
        assert_eq!(decode_access(0x30, 4), None);
        assert_eq!(decode_access(off::FRAME_SIZE, 4), None);
        assert_eq!(decode_access(usize::MAX - 3, 4), None);
    }
}
