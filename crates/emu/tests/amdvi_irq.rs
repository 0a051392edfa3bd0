//! AMD-Vi interrupt remapping (spec 2.2.5): a device's MSI through its DTE's IV / IntCtl / IntTabLen and the
//! 32-bit or 128-bit (GA) IRTE that MSI data bits 10:0 select; aborted messages log IO_PAGE_FAULT with I set;
//! the interrupt caches obey INVALIDATE_DEVTAB_ENTRY and INVALIDATE_INTERRUPT_TABLE only.

#[path = "amdvi_rig.rs"]
mod rig;

use iommu_driver::PhysMem;
use iommu_emu::irq::compat_message;
use iommu_emu::{AmdviConfig, Interrupt, InterruptRemap};
use iommu_spec::amdvi::{Control, DeviceId, Dte, Event, EventFlags, IntCtl, InvalidateDevice, Irte32, IrteGa};
use rig::Rig;

const DEV: u16 = DeviceId::new(0, 4, 0).0;
const IRT: u64 = 0x30_0000;
/// The MSI address Linux's AMD driver writes: the APIC's compatibility-format address; the IRTE index goes in the
/// data (`irq_remapping_prepare_irte` → `fill_msi_msg`).
const ADDR: u64 = 0xfee0_0000;

fn msi(rig: &mut Rig, devid: u16, data: u32) -> Interrupt {
    let Rig { iommu, mem, .. } = rig;
    iommu.interrupt(mem, devid as u32, ADDR, data)
}

fn remapped_dte(len: u8) -> Dte {
    Dte::blocked(false).with_int_remap(IRT, len)
}

fn code(i: Interrupt) -> u16 {
    match i {
        Interrupt::Blocked(f) => f.code,
        other => panic!("expected blocked, got {other:?}"),
    }
}

fn interrupt_fault() -> Event {
    Event::IoPageFault {
        device: DeviceId(DEV),
        domain_or_pasid: 0,
        address: ADDR,
        flags: EventFlags::new().with_i(true).with_rw(true),
    }
}

#[test]
fn a_32_bit_irte_remaps_the_msi_its_data_indexes() {
    let mut rig = Rig::linux();
    rig.set_dte(DEV, remapped_dte(9));
    rig.mem.write_u32(IRT + 4 * 7, Irte32::fixed(0x41, 2).into_bits()).unwrap();
    assert_eq!(msi(&mut rig, DEV, 7), Interrupt::Delivered { dest: 2, vector: 0x41, remapped: true });
}

#[test]
fn a_ga_irte_with_xten_reaches_x2apic_destinations() {
    let mut rig = Rig::linux();
    rig.enable(Control::new().with_ga_en(true));
    rig.set_dte(DEV, remapped_dte(9));
    let e = IrteGa::fixed(0x41, 0x1_0002);
    rig.mem.write_u64(IRT + 16 * 7, e.0[0]).unwrap();
    rig.mem.write_u64(IRT + 16 * 7 + 8, e.0[1]).unwrap();
    assert_eq!(code(msi(&mut rig, DEV, 7)), 2, "destination above 255 without XTEn");
    // With XTSup and XTEn the same entry delivers.
    let mut cfg = AmdviConfig::default();
    cfg.efr = cfg.efr.with_xt_sup(true);
    let mut rig = Rig::new(cfg);
    rig.enable(Control::new().with_ga_en(true).with_xt_en(true));
    rig.set_dte(DEV, remapped_dte(9));
    rig.mem.write_u64(IRT + 16 * 7, e.0[0]).unwrap();
    rig.mem.write_u64(IRT + 16 * 7 + 8, e.0[1]).unwrap();
    assert_eq!(msi(&mut rig, DEV, 7), Interrupt::Delivered { dest: 0x1_0002, vector: 0x41, remapped: true });
}

#[test]
fn iv_clear_or_intctl_pass_forward_the_message_unmapped() {
    let (a, d) = compat_message(3, 0x30);
    for dte in [Dte::blocked(false), remapped_dte(9).with_qw2(remapped_dte(9).qw2().with_int_ctl(IntCtl::Pass))] {
        let mut rig = Rig::linux();
        rig.set_dte(DEV, dte);
        let Rig { iommu, mem, .. } = &mut rig;
        assert_eq!(
            iommu.interrupt(mem, DEV as u32, a, d),
            Interrupt::Delivered { dest: 3, vector: 0x30, remapped: false }
        );
    }
}

#[test]
fn aborted_messages_log_io_page_fault_with_i() {
    type Case = (&'static str, Dte, u32, Option<Irte32>);
    let cases: [Case; 3] = [
        ("IntCtl abort", remapped_dte(9).with_qw2(remapped_dte(9).qw2().with_int_ctl(IntCtl::Abort)), 1, None),
        ("index beyond IntTabLen", remapped_dte(1), 2, None),
        ("RemapEn clear", remapped_dte(9), 1, Some(Irte32::new())),
    ];
    for (what, dte, data, irte) in cases {
        let mut rig = Rig::linux();
        rig.set_dte(DEV, dte);
        if let Some(e) = irte {
            rig.mem.write_u32(IRT + 4 * data as u64, e.into_bits()).unwrap();
        }
        assert_eq!(code(msi(&mut rig, DEV, data)), 2, "{what}");
        assert_eq!(rig.events(), vec![interrupt_fault()], "{what}");
    }
    // SupIOPF: aborted, no event.
    let mut rig = Rig::linux();
    rig.set_dte(DEV, remapped_dte(9));
    rig.mem.write_u32(IRT + 4, Irte32::new().with_sup_iopf(true).into_bits()).unwrap();
    assert_eq!(code(msi(&mut rig, DEV, 1)), 0);
    assert!(rig.events().is_empty());
    // Reserved IntCtl: an illegal DTE.
    let mut rig = Rig::linux();
    rig.set_dte(DEV, remapped_dte(9).with_qw2(remapped_dte(9).qw2().with_int_ctl(IntCtl::Reserved)));
    assert_eq!(code(msi(&mut rig, DEV, 1)), 1);
}

#[test]
fn stale_dte_and_irte_are_used_until_their_invalidations() {
    let mut rig = Rig::linux();
    rig.set_dte(DEV, remapped_dte(9));
    rig.mem.write_u32(IRT + 4 * 3, Irte32::fixed(0x41, 2).into_bits()).unwrap();
    assert!(matches!(msi(&mut rig, DEV, 3), Interrupt::Delivered { vector: 0x41, .. }));
    rig.mem.write_u32(IRT + 4 * 3, Irte32::fixed(0x52, 1).into_bits()).unwrap();
    assert!(matches!(msi(&mut rig, DEV, 3), Interrupt::Delivered { vector: 0x41, .. }), "stale IRTE");
    // Invalidating the DTE alone does not drop the IRTE; INVALIDATE_INTERRUPT_TABLE does.
    assert!(rig.run(&[InvalidateDevice::devtab_entry(DeviceId(DEV)).into_bits()]));
    assert!(matches!(msi(&mut rig, DEV, 3), Interrupt::Delivered { vector: 0x41, .. }));
    assert!(rig.run(&[InvalidateDevice::interrupt_table(DeviceId(DEV)).into_bits()]));
    assert_eq!(msi(&mut rig, DEV, 3), Interrupt::Delivered { dest: 1, vector: 0x52, remapped: true });
    // A DTE that drops IV is seen only after INVALIDATE_DEVTAB_ENTRY.
    rig.set_dte(DEV, Dte::blocked(false));
    assert!(matches!(msi(&mut rig, DEV, 3), Interrupt::Delivered { remapped: true, .. }), "stale DTE");
    assert!(rig.run(&[InvalidateDevice::devtab_entry(DeviceId(DEV)).into_bits()]));
    assert!(matches!(msi(&mut rig, DEV, 3), Interrupt::Delivered { remapped: false, .. }));
}

#[test]
fn iommu_off_forwards_everything() {
    let mut rig = Rig::bare(AmdviConfig::default());
    assert!(matches!(msi(&mut rig, DEV, 3), Interrupt::Delivered { remapped: false, .. }));
}
