//! The AMD-Vi register file (spec 3.4) as 64-bit registers with writable and write-1-to-clear masks, the compact
//! scheme of QEMU's `amdvi_set_quad` tables (`romask` / `w1cmask`).
//!
//! A 32-bit access to either half of a register is the matching half of a 64-bit one. Bits in neither mask are
//! read-only to software: reserved bits are never set and read 0, feature bits of features the EFR does not
//! advertise stay 0, and the model changes hardware-owned state through the raw setters.

use iommu_spec::amdvi::{
    off, Control, DevTableBase, ExclusionBase, ExclusionLimit, RingBase, RingPtr, Status, SNP_LOCKED,
};

use super::AmdviConfig;

/// The modelled registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reg {
    DevTableBase,
    CmdBufBase,
    EventLogBase,
    Control,
    ExclBase,
    ExclLimit,
    Efr,
    PprLogBase,
    Efr2,
    CmdHead,
    CmdTail,
    EventHead,
    EventTail,
    Status,
    PprHead,
    PprTail,
}

const REGS: [(Reg, usize); 16] = [
    (Reg::DevTableBase, off::DEV_TABLE_BASE),
    (Reg::CmdBufBase, off::CMD_BUF_BASE),
    (Reg::EventLogBase, off::EVENT_LOG_BASE),
    (Reg::Control, off::CONTROL),
    (Reg::ExclBase, off::EXCL_BASE),
    (Reg::ExclLimit, off::EXCL_LIMIT),
    (Reg::Efr, off::EXT_FEATURES),
    (Reg::PprLogBase, off::PPR_LOG_BASE),
    (Reg::Efr2, off::EXT_FEATURES2),
    (Reg::CmdHead, off::CMD_HEAD),
    (Reg::CmdTail, off::CMD_TAIL),
    (Reg::EventHead, off::EVENT_HEAD),
    (Reg::EventTail, off::EVENT_TAIL),
    (Reg::Status, off::STATUS),
    (Reg::PprHead, off::PPR_HEAD),
    (Reg::PprTail, off::PPR_TAIL),
];

impl Reg {
    /// The register at the 8-byte aligned offset `off`, if modelled. Everything else in the window (GA log, MSI,
    /// INTCAPXT, hardware-error registers: features the default unit does not advertise) reads 0, ignores writes.
    pub(super) fn at(off: usize) -> Option<Reg> {
        REGS.iter().find(|(_, o)| *o == off).map(|(r, _)| *r)
    }

    fn index(self) -> usize {
        self as usize
    }

    fn offset(self) -> usize {
        REGS[self.index()].1
    }

    /// One of the registers SNP enforcement locks (spec 48882 rev 3.10 §2.12.2.1 as Kalra's series lists them; the
    /// layout crate's [`SNP_LOCKED`]).
    pub(super) fn snp_locked(self) -> bool {
        SNP_LOCKED.contains(&self.offset())
    }
}

/// Register values and their software-write masks.
#[derive(Clone, Debug)]
pub(super) struct RegFile {
    val: [u64; REGS.len()],
    wmask: [u64; REGS.len()],
    w1c: [u64; REGS.len()],
}

/// Every address bit a 52-bit physical-address field holds (51:12).
const ADDR40: u64 = (1 << 40) - 1;

/// Writable bits of Control: the base set every unit has, plus the bits of features the EFR advertises.
fn control_mask(cfg: &AmdviConfig) -> u64 {
    let (efr, efr2) = (cfg.efr_register(), cfg.efr2);
    let mut c = Control::new()
        .with_iommu_en(true)
        .with_ht_tun_en(true)
        .with_event_log_en(true)
        .with_event_int_en(true)
        .with_com_wait_int_en(true)
        .with_inv_timeout(7)
        .with_pass_pw(true)
        .with_res_pass_pw(true)
        .with_coherent(true)
        .with_isoc(true)
        .with_cmd_buf_en(true);
    if efr.ppr_sup() {
        c = c.with_ppr_log_en(true).with_ppr_int_en(true).with_ppr_en(true);
    }
    c.set_gt_en(efr.gt_sup());
    c.set_ga_en(efr.ga_sup());
    if efr.gam_sup() != 0 {
        c = c.with_gam_en(7).with_ga_log_en(true).with_ga_int_en(true);
    }
    if efr.xt_sup() {
        c = c.with_xt_en(true).with_int_cap_xt_en(true);
    }
    c.set_eph_en(efr.eph_sup());
    if efr.ha_sup() || efr.hd_sup() {
        c.set_had_update(3);
    }
    if efr2.num_int_remap_sup() != 0 {
        c.set_num_int_remap_mode(3);
    }
    c.set_snp_avic_en(efr2.snp_avic_sup() != 0);
    c.set_gcr3trp_mode(efr2.gcr3trp_mode_sup());
    c.into_bits()
}

impl RegFile {
    /// The file after reset (spec 3.4: every register 0 but the read-only EFRs and the limit's low ones).
    pub(super) fn new(cfg: &AmdviConfig) -> Self {
        let mut r = RegFile { val: [0; REGS.len()], wmask: [0; REGS.len()], w1c: [0; REGS.len()] };
        let ring = RingBase::new().with_base(ADDR40).with_length(0xf).into_bits();
        let ptr = RingPtr::from_index(0x7fff).into_bits();
        r.define(Reg::DevTableBase, 0, DevTableBase::new().with_base(ADDR40).with_size(0x1ff).into_bits(), 0);
        r.define(Reg::CmdBufBase, 0, ring, 0);
        r.define(Reg::EventLogBase, 0, ring, 0);
        r.define(Reg::Control, 0, control_mask(cfg), 0);
        let excl = ExclusionBase::new().with_ex_en(true).with_allow(true).with_base(ADDR40);
        r.define(Reg::ExclBase, 0, excl.into_bits(), 0);
        // Limit bits 11:0 read as ones (spec 3.4.6): a read-only reset value.
        r.define(Reg::ExclLimit, 0xfff, ExclusionLimit::new().with_limit(ADDR40).into_bits(), 0);
        r.define(Reg::Efr, cfg.efr_register().into_bits(), 0, 0);
        r.define(Reg::Efr2, cfg.efr2.into_bits(), 0, 0);
        let ppr = cfg.efr_register().ppr_sup();
        r.define(Reg::PprLogBase, 0, if ppr { ring } else { 0 }, 0);
        r.define(Reg::CmdHead, 0, ptr, 0);
        r.define(Reg::CmdTail, 0, ptr, 0);
        r.define(Reg::EventHead, 0, ptr, 0);
        r.define(Reg::EventTail, 0, ptr, 0);
        r.define(Reg::PprHead, 0, if ppr { ptr } else { 0 }, 0);
        r.define(Reg::PprTail, 0, if ppr { ptr } else { 0 }, 0);
        // The run bits are computed on read; only the W1C bits are stored.
        r.define(Reg::Status, 0, 0, Status::W1C);
        r
    }

    fn define(&mut self, reg: Reg, init: u64, wmask: u64, w1c: u64) {
        let i = reg.index();
        self.val[i] = init;
        self.wmask[i] = wmask;
        self.w1c[i] = w1c;
    }

    /// A software read.
    pub(super) fn read(&self, reg: Reg) -> u64 {
        self.val[reg.index()]
    }

    /// A software write of `val` to the bits in `access` (a 32-bit write covers one half): writable bits take the
    /// value, W1C bits written as 1 clear, every other bit keeps its value.
    pub(super) fn write(&mut self, reg: Reg, val: u64, access: u64) {
        let i = reg.index();
        let w = self.wmask[i] & access;
        let kept = self.val[i] & !w;
        self.val[i] = (kept | (val & w)) & !(val & self.w1c[i] & access);
    }

    /// The model's own view and updates, ignoring the masks.
    pub(super) fn get(&self, reg: Reg) -> u64 {
        self.val[reg.index()]
    }

    pub(super) fn set(&mut self, reg: Reg, v: u64) {
        self.val[reg.index()] = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_indexed_by_the_enum() {
        for (i, (reg, o)) in REGS.iter().enumerate() {
            assert_eq!(reg.index(), i);
            assert_eq!(Reg::at(*o), Some(*reg));
        }
        assert_eq!(Reg::at(off::GA_LOG_BASE), None);
        let locked: Vec<Reg> = REGS.iter().map(|(r, _)| *r).filter(|r| r.snp_locked()).collect();
        assert_eq!(locked, [Reg::DevTableBase, Reg::CmdBufBase, Reg::EventLogBase, Reg::ExclBase, Reg::ExclLimit]);
    }

    #[test]
    fn masks_and_halves() {
        let mut r = RegFile::new(&AmdviConfig::default());
        r.write(Reg::Status, u64::MAX, u64::MAX);
        assert_eq!(r.read(Reg::Status), 0, "W1C of clear bits is a no-op");
        r.set(Reg::Status, Status::W1C);
        r.write(Reg::Status, 1 << 2, u32::MAX as u64);
        assert_eq!(r.read(Reg::Status), Status::W1C & !(1 << 2));
        r.write(Reg::ExclLimit, u64::MAX, u64::MAX);
        assert_eq!(r.read(Reg::ExclLimit), 0x000f_ffff_ffff_ffff);
        r.write(Reg::CmdBufBase, u64::MAX, u64::MAX);
        assert_eq!(r.read(Reg::CmdBufBase), 0x0f0f_ffff_ffff_f000, "reserved bits stay 0");
        r.write(Reg::CmdBufBase, 0, 0xffff_ffff_0000_0000);
        assert_eq!(r.read(Reg::CmdBufBase), 0xffff_f000, "upper half alone");
        r.write(Reg::Efr, 0, u64::MAX);
        assert_eq!(r.read(Reg::Efr), AmdviConfig::default().efr.into_bits());
    }
}
