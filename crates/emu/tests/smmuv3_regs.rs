//! The SMMUv3 register file at raw offsets: read-only ID registers, CR0/CR0ACK, the GBPA update handshake and
//! what it does to DMA while SMMUEN = 0, registers guarded by enables, 64-bit registers in 32-bit halves, the
//! page-1 queue pointers, accesses the SMMU does not decode.

#[path = "smmuv3_rig.rs"]
mod rig;

use iommu_emu::smmuv3::abort_code;
use iommu_emu::{Access, Smmuv3Config, Translation};
use iommu_spec::smmuv3::{
    off, Cr0, Gbpa, Idr0, Idr1, Idr5, IrqCtrl, QueueBase, StLevel, Ste, StrtabBase, StrtabBaseCfg, StrtabFmt, Ttf,
};
use rig::{Rig, CMDQ, STRTAB};

#[test]
fn id_registers_describe_the_config_and_ignore_writes() {
    let mut rig = Rig::new(Smmuv3Config::default());
    let idr0 = Idr0::from_bits(rig.r32(off::IDR0));
    assert_eq!(idr0.st_level(), StLevel::TwoLevel);
    assert!(idr0.s1p() && idr0.s2p() && idr0.cohacc() && idr0.msi() && idr0.asid16() && idr0.vmid16());
    assert_eq!(idr0.ttf(), Ttf::AArch64);
    assert!(!idr0.hyp() && !idr0.pri() && !idr0.ats() && !idr0.cd2l());
    let idr1 = Idr1::from_bits(rig.r32(off::IDR1));
    assert_eq!((idr1.sidsize(), idr1.ssidsize(), idr1.cmdqs(), idr1.evtqs()), (16, 0, 19, 19));
    let idr5 = Idr5::from_bits(rig.r32(off::IDR5));
    assert_eq!(idr5.oas_bits(), Some(48));
    assert!(idr5.gran4k() && !idr5.gran64k());
    let before: Vec<u32> =
        [off::IDR0, off::IDR1, off::IDR3, off::IDR5, off::IIDR, off::AIDR].iter().map(|&o| rig.r32(o)).collect();
    for o in [off::IDR0, off::IDR1, off::IDR2, off::IDR3, off::IDR4, off::IDR5, off::IIDR, off::AIDR, off::STATUSR] {
        rig.w32(o, 0xa5a5_a5a5);
    }
    let after: Vec<u32> =
        [off::IDR0, off::IDR1, off::IDR3, off::IDR5, off::IIDR, off::AIDR].iter().map(|&o| rig.r32(o)).collect();
    assert_eq!(before, after);
    assert_eq!((rig.r32(off::IDR2), rig.r32(off::IDR4), rig.r32(off::STATUSR)), (0, 0, 0));

    let cfg = Smmuv3Config { sidsize: 32, coherent: false, two_level_strtab: false, ..Smmuv3Config::default() };
    let mut other = Rig::new(cfg);
    let idr0 = Idr0::from_bits(other.r32(off::IDR0));
    assert!(!idr0.cohacc() && !other.smmu.walker_coherent());
    assert!(rig.smmu.walker_coherent());
    assert_eq!(idr0.st_level(), StLevel::LinearOnly);
    assert_eq!(Idr1::from_bits(other.r32(off::IDR1)).sidsize(), 32);
    assert!(Smmuv3Config { sidsize: 33, ..Smmuv3Config::default() }.validate().is_err());
}

#[test]
fn cr0_changes_are_acknowledged_in_cr0ack() {
    let mut rig = Rig::new(Smmuv3Config::default());
    assert_eq!((rig.r32(off::CR0), rig.r32(off::CR0ACK)), (0, 0));
    let c = Cr0::new().with_smmuen(true).with_cmdqen(true);
    rig.w32(off::CR0, c.into_bits());
    assert_eq!(rig.r32(off::CR0ACK), c.into_bits(), "acknowledged by the first poll");
    assert!(rig.smmu.smmu_enabled());
    // Reserved bits and enables of absent features (PRIQEN, ATSCHK, VMW) stay 0.
    rig.w32(off::CR0, u32::MAX);
    let all = Cr0::new().with_smmuen(true).with_evtqen(true).with_cmdqen(true).into_bits();
    assert_eq!((rig.r32(off::CR0), rig.r32(off::CR0ACK)), (all, all));
    // CR0ACK itself is read-only.
    rig.w32(off::CR0ACK, 0);
    assert_eq!(rig.r32(off::CR0ACK), all);
    rig.w32(off::CR0, 0);
    assert_eq!(rig.r32(off::CR0ACK), 0);
    assert!(!rig.smmu.smmu_enabled());
    // IRQ_CTRL works the same way; PRIQ_IRQEN stays 0 without PRI.
    rig.w32(off::IRQ_CTRL, 0x7);
    let irq = IrqCtrl::new().with_gerror_irqen(true).with_evtq_irqen(true).into_bits();
    assert_eq!((rig.r32(off::IRQ_CTRL), rig.r32(off::IRQ_CTRLACK)), (irq, irq));
}

#[test]
fn gbpa_update_handshake_decides_dma_while_disabled() {
    let mut rig = Rig::new(Smmuv3Config::default());
    // QEMU's reset value: bypass, incoming shareability.
    assert_eq!(rig.r32(off::GBPA), 0x1000);
    assert_eq!(rig.phys(7, 0x1234_5678, Access::Write), Some(0x1234_5678), "SMMUEN = 0, bypass: phys = iova");
    assert_eq!(rig.smmu.counters().gbpa_bypassed, 1);
    // Without UPDATE the write is ignored.
    rig.w32(off::GBPA, Gbpa::new().with_abort(true).into_bits());
    assert_eq!(rig.r32(off::GBPA), 0x1000);
    assert_eq!(rig.phys(7, 0x1000, Access::Read), Some(0x1000));
    // With UPDATE it applies, and UPDATE reads back 0 at once (Linux polls for that).
    rig.w32(off::GBPA, Gbpa::new().with_abort(true).with_update(true).into_bits());
    let g = Gbpa::from_bits(rig.r32(off::GBPA));
    assert!(g.abort() && !g.update());
    let f = rig.fault(7, 0x1000, Access::Write);
    assert_eq!((f.code, f.recorded), (abort_code::GBPA, false));
    assert_eq!(rig.smmu.counters().gbpa_aborts, 1);
    assert_eq!(rig.smmu.counters().events_recorded, 0);
    // Reserved bits are dropped; attribute fields are kept.
    rig.w32(off::GBPA, u32::MAX);
    assert_eq!(rig.r32(off::GBPA), 0x001f_3f1f);
    // Back to bypass.
    rig.w32(off::GBPA, Gbpa::new().with_update(true).with_shcfg(1).into_bits());
    assert_eq!(rig.phys(7, 0x2000, Access::Read), Some(0x2000));
    // With SMMUEN = 1 GBPA no longer matters: the STE does.
    rig.w32(off::GBPA, Gbpa::new().with_abort(true).with_update(true).into_bits());
    rig.strtab_linear(4);
    rig.set_ste_linear(7, Ste::bypass());
    rig.enable();
    assert_eq!(rig.phys(7, 0x3000, Access::Write), Some(0x3000));
}

#[test]
fn strtab_writes_are_ignored_while_smmuen_is_set() {
    let mut rig = Rig::new(Smmuv3Config::default());
    rig.strtab_linear(4);
    rig.set_ste_linear(1, Ste::bypass());
    rig.queues();
    rig.enable();
    let base = rig.r64(off::STRTAB_BASE);
    let cfg = rig.r32(off::STRTAB_BASE_CFG);
    assert_eq!(base, StrtabBase::from_table(STRTAB, true).into_bits());
    // A second table with an abort STE for the same stream.
    let other = STRTAB + 0x10_0000;
    rig.write_words(other + 64, &Ste::abort().0);
    rig.w64(off::STRTAB_BASE, StrtabBase::from_table(other, true).into_bits());
    rig.w32(off::STRTAB_BASE, other as u32);
    rig.w32(off::STRTAB_BASE + 4, 1);
    rig.w32(off::STRTAB_BASE_CFG, StrtabBaseCfg::new().with_fmt(StrtabFmt::TwoLevel).with_log2size(9).into_bits());
    assert_eq!((rig.r64(off::STRTAB_BASE), rig.r32(off::STRTAB_BASE_CFG)), (base, cfg));
    assert_eq!(rig.smmu.counters().guarded_writes_ignored, 4);
    // Even with the caches flushed, the old table is the one in use.
    rig.cmds_sync(&[iommu_spec::smmuv3::Command::CfgiAll]);
    assert_eq!(rig.phys(1, 0x5000, Access::Write), Some(0x5000));
    // With SMMUEN clear the write lands, and once enabled again the new table is used.
    let c = rig.cr0_now().with_smmuen(false);
    rig.cr0(c);
    rig.w64(off::STRTAB_BASE, StrtabBase::from_table(other, true).into_bits());
    assert_eq!(rig.r64(off::STRTAB_BASE), StrtabBase::from_table(other, true).into_bits());
    rig.enable();
    rig.cmds_sync(&[iommu_spec::smmuv3::Command::CfgiAll]);
    assert_eq!(rig.fault(1, 0x5000, Access::Write).code, abort_code::STE);
}

#[test]
fn queue_and_control_registers_guarded_by_their_enables() {
    let mut rig = Rig::new(Smmuv3Config::default());
    rig.queues();
    let cmdq_base = rig.r64(off::CMDQ_BASE);
    let evtq_base = rig.r64(off::EVTQ_BASE);
    let cr1 = rig.r32(off::CR1);
    rig.w64(off::CMDQ_BASE, 0x9000_0000);
    rig.w32(off::CMDQ_CONS, 5);
    rig.w64(off::EVTQ_BASE, 0x9000_0000);
    rig.w32(off::EVTQ_PROD, 5);
    rig.w32(off::CR1, 0x5);
    assert_eq!(rig.r64(off::CMDQ_BASE), cmdq_base);
    assert_eq!((rig.r32(off::CMDQ_CONS), rig.r32(off::EVTQ_PROD)), (0, 0));
    assert_eq!(rig.r64(off::EVTQ_BASE), evtq_base);
    assert_eq!(rig.r32(off::CR1), cr1);
    assert_eq!(rig.smmu.counters().guarded_writes_ignored, 5);
    // EVTQ_CONS belongs to software at all times.
    rig.w32(off::EVTQ_CONS, 3);
    assert_eq!(rig.r32(off::EVTQ_CONS), 3);
    // CR2 is guarded by SMMUEN only.
    rig.w32(off::CR2, 0);
    assert_eq!(rig.r32(off::CR2), 0);
    rig.enable();
    rig.w32(off::CR2, 0x6);
    assert_eq!(rig.r32(off::CR2), 0);
    // With everything off, the writes land (reserved bits dropped).
    rig.cr0(Cr0::new());
    rig.w64(off::CMDQ_BASE, u64::MAX);
    assert_eq!(rig.r64(off::CMDQ_BASE), 0x400f_ffff_ffff_ffff, "ADDR, LOG2SIZE and RWA");
    rig.w32(off::CR1, u32::MAX);
    assert_eq!(rig.r32(off::CR1), 0xfff);
    rig.w32(off::CR2, u32::MAX);
    assert_eq!(rig.r32(off::CR2), 0x6, "RECINVSID and PTM; E2H needs HYP");
}

#[test]
fn halves_of_64_bit_registers_and_undecoded_accesses() {
    let mut rig = Rig::new(Smmuv3Config::default());
    rig.w32(off::STRTAB_BASE, 0x8765_4321);
    rig.w32(off::STRTAB_BASE + 4, 0xc000_0abc);
    // ADDR 51:6 and RA kept; bits 5:0, 61:52 and 63 dropped.
    assert_eq!(rig.r64(off::STRTAB_BASE), 0x4000_0abc_8765_4300);
    assert_eq!(rig.r32(off::STRTAB_BASE + 4), 0x4000_0abc);
    assert_eq!(rig.r32(off::STRTAB_BASE), 0x8765_4300);
    rig.w64(off::CMDQ_BASE, QueueBase::from_base(CMDQ, 8, false).into_bits());
    rig.w32(off::CMDQ_BASE + 4, 0);
    assert_eq!(QueueBase::from_bits(rig.r64(off::CMDQ_BASE)).base(), CMDQ);
    // The EVTQ pointers live in page 1 and answer at their page-0 alias too.
    rig.w32(off::EVTQ_CONS, 7);
    assert_eq!(rig.r32(off::EVTQ_CONS - off::PAGE1), 7);
    rig.w32(off::EVTQ_CONS - off::PAGE1, 9);
    assert_eq!(rig.r32(off::EVTQ_CONS), 9);
    // Not decoded: 64 bits over 32-bit registers, misaligned, odd sizes, page-1 offsets other than the queue
    // pointers, beyond the frame. Reads give 0, writes change nothing.
    let bad = rig.smmu.counters().bad_mmio;
    rig.w64(off::CR0, 1);
    assert_eq!(rig.r32(off::CR0), 0);
    assert_eq!(rig.r64(off::CMDQ_PROD), 0);
    rig.w32(off::STRTAB_BASE + 2, 0xffff_ffff);
    rig.smmu_write(off::CR0, 2, 1);
    rig.w32(off::PAGE1 + off::CR0, 1);
    assert_eq!(rig.r32(off::CR0), 0);
    assert_eq!(rig.r32(off::FRAME_SIZE), 0);
    rig.w32(usize::MAX - 3, 1);
    assert_eq!(rig.r32(0x30), 0);
    assert_eq!(rig.smmu.counters().bad_mmio, bad + 8);
    assert_eq!(rig.r64(off::STRTAB_BASE), 0x4000_0abc_8765_4300);
}

#[test]
fn gerror_toggles_and_gerrorn_acknowledges() {
    let mut rig = Rig::new(Smmuv3Config::default());
    rig.w32(off::IRQ_CTRL, IrqCtrl::new().with_gerror_irqen(true).into_bits());
    rig.smmu.inject_sfm_err();
    let sfm = 1 << 8;
    assert_eq!((rig.r32(off::GERROR), rig.r32(off::GERRORN)), (sfm, 0));
    assert!(rig.smmu.gerror_active().sfm_err() && rig.smmu.in_service_failure());
    assert_eq!(rig.smmu.counters().gerror_irqs, 1);
    // Still active: a second failure does not toggle it back.
    rig.smmu.inject_sfm_err();
    assert_eq!(rig.r32(off::GERROR), sfm);
    // GERROR is read-only; GERRORN takes the acknowledgement (undefined bits dropped).
    rig.w32(off::GERROR, 0);
    assert_eq!(rig.r32(off::GERROR), sfm);
    rig.w32(off::GERRORN, sfm | 0xffff_0002);
    assert_eq!(rig.r32(off::GERRORN), sfm);
    assert!(!rig.smmu.gerror_active().sfm_err());
    // Acknowledged, but the SMMU stays in service failure mode: even bypass traffic aborts.
    let f = rig.fault(1, 0x1000, Access::Read);
    assert_eq!((f.code, f.recorded), (abort_code::SFM, false));
    assert!(matches!(rig.translate(2, 0, Access::Write), Translation::Fault(_)));
    assert_eq!(rig.smmu.counters().sfm_aborts, 2);
}

impl Rig {
    fn smmu_write(&mut self, off: usize, size: u8, v: u64) {
        iommu_emu::MmioDevice::mmio_write(&mut self.smmu, &mut self.mem, off, size, v);
    }
}
