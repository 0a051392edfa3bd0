//! VT-d interrupt remapping (spec 5.1): a device's MSI through IRTA's table and the interrupt-entry cache,
//! each blocked case with its fault reason (0x20–0x26) in a fault record carrying the interrupt index.

mod common;

use common::Rig;
use iommu_driver::PhysMem;
use iommu_emu::{irq::compat_message, Interrupt, InterruptRemap};
use iommu_spec::vtd::{
    off, FaultReason, FaultRecord, Fsts, Gcmd, IecInv, Irta, Irte, MsiAddrRemap, PostedIrte, SourceValidation,
};

const TABLE: u64 = 0x40_0000;
const DISK: u16 = 0x0010;

fn msi(rig: &mut Rig, sid: u16, addr: u64, data: u32) -> Interrupt {
    let Rig { vtd, mem, .. } = rig;
    vtd.interrupt(mem, sid as u32, addr, data)
}

fn remappable(handle: u16) -> u64 {
    MsiAddrRemap::for_handle(handle, false).into_bits() as u64
}

fn set_irte(rig: &mut Rig, index: u64, e: Irte) {
    let q = e.to_qwords();
    rig.mem.write_u64(TABLE + index * 16, q[0]).unwrap();
    rig.mem.write_u64(TABLE + index * 16 + 8, q[1]).unwrap();
}

/// Remapping on with a table of `2^(s+1)` entries, xAPIC mode, compatibility format blocked.
fn ir_rig(s: u8) -> Rig {
    let mut rig = Rig::legacy();
    rig.w64(off::IRTA, Irta::from_table(TABLE, s, false).into_bits());
    rig.gcmd(Gcmd::new().with_sirtp(true));
    rig.gcmd(Gcmd::new().with_ire(true));
    assert!(rig.gsts().ires() && rig.gsts().irtps());
    rig
}

fn fault_of(rig: &mut Rig) -> FaultRecord {
    let lo = rig.r64(off::frcd(rig.vtd.config().cap.fro(), 0)) as u128;
    let hi = rig.r64(off::frcd(rig.vtd.config().cap.fro(), 0) + 8) as u128;
    FaultRecord::from_bits(lo | hi << 64)
}

fn blocked(i: Interrupt) -> u16 {
    match i {
        Interrupt::Blocked(f) => f.code,
        other => panic!("expected blocked, got {other:?}"),
    }
}

#[test]
fn a_remappable_msi_is_delivered_to_the_irte_vector_and_destination() {
    let mut rig = ir_rig(7);
    set_irte(&mut rig, 5, Irte::fixed(0x41, 3, false, DISK));
    assert_eq!(msi(&mut rig, DISK, remappable(5), 0), Interrupt::Delivered { dest: 3, vector: 0x41, remapped: true });
    // Handle + subhandle (SHV) selects the entry too.
    let shv = MsiAddrRemap::for_handle(4, true).into_bits() as u64;
    assert_eq!(msi(&mut rig, DISK, shv, 1), Interrupt::Delivered { dest: 3, vector: 0x41, remapped: true });
}

#[test]
fn every_blocked_case_records_its_fault_reason_and_interrupt_index() {
    type Case = (&'static str, u16, u64, u32, Option<Irte>, FaultReason);
    let cases: [Case; 6] = [
        (
            "reserved data bits with SHV",
            DISK,
            MsiAddrRemap::for_handle(1, true).into_bits() as u64,
            0x1_0000,
            None,
            FaultReason::IrRequestReserved,
        ),
        ("index past 2^(S+1)", DISK, remappable(256), 0, None, FaultReason::IrIndexOverflow),
        ("entry not present", DISK, remappable(9), 0, Some(Irte::new()), FaultReason::IrEntryNotPresent),
        (
            "reserved bits in the entry",
            DISK,
            remappable(9),
            0,
            Some(Irte::fixed(0x41, 3, false, DISK).with_dst(0x1_0000)),
            FaultReason::IrEntryReserved,
        ),
        (
            "wrong requester",
            0x0018,
            remappable(9),
            0,
            Some(Irte::fixed(0x41, 3, false, DISK)),
            FaultReason::IrSourceInvalid,
        ),
        ("compatibility format", DISK, compat_message(3, 0x41).0, 0x41, None, FaultReason::IrCompatBlocked),
    ];
    for (what, sid, addr, data, irte, reason) in cases {
        let mut rig = ir_rig(7);
        if let Some(e) = irte {
            set_irte(&mut rig, 9, e);
        }
        assert_eq!(blocked(msi(&mut rig, sid, addr, data)), reason.0 as u16, "{what}");
        let rec = fault_of(&mut rig);
        assert!(rec.f() && rec.is_interrupt_fault(), "{what}: recorded");
        assert_eq!((rec.fr(), rec.sid()), (reason, sid), "{what}");
        let want_index = if reason == FaultReason::IrCompatBlocked {
            0
        } else {
            MsiAddrRemap::from_bits(addr as u32).index(data) as u16
        };
        assert_eq!(rec.interrupt_index(), want_index, "{what}");
        assert!(Fsts::from_bits(rig.r32(off::FSTS)).ppf());
    }
}

#[test]
fn a_posted_entry_is_reserved_on_a_unit_without_posted_interrupts() {
    let mut rig = ir_rig(7);
    let p = PostedIrte::new().with_p(true).with_im(true).with_vv(0x41).with_pda(0x1000);
    set_irte(&mut rig, 2, Irte::from_bits(p.into_bits()));
    assert_eq!(blocked(msi(&mut rig, DISK, remappable(2), 0)), FaultReason::IrEntryReserved.0 as u16);
}

#[test]
fn fpd_blocks_without_recording() {
    let mut rig = ir_rig(7);
    set_irte(&mut rig, 3, Irte::new().with_fpd(true));
    match msi(&mut rig, DISK, remappable(3), 0) {
        Interrupt::Blocked(f) => assert!(!f.recorded),
        other => panic!("{other:?}"),
    }
    assert!(!fault_of(&mut rig).f());
}

#[test]
fn cfis_passes_compatibility_format_and_remapping_off_passes_everything_as_compat() {
    let mut rig = ir_rig(7);
    rig.gcmd(Gcmd::new().with_ire(true).with_cfi(true));
    let (a, d) = compat_message(7, 0x30);
    assert_eq!(msi(&mut rig, DISK, a, d), Interrupt::Delivered { dest: 7, vector: 0x30, remapped: false });
    // IRE off: a remappable message is read in compatibility format; its handle bits name a destination
    // (address 19:12) that nobody programmed.
    let mut off_rig = Rig::legacy();
    let addr = remappable(0x7f80 >> 3);
    match msi(&mut off_rig, DISK, addr, 0) {
        Interrupt::Delivered { remapped, .. } => assert!(!remapped),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_stale_iec_entry_is_used_until_invalidated() {
    let mut rig = ir_rig(7);
    set_irte(&mut rig, 5, Irte::fixed(0x41, 3, false, DISK));
    assert!(matches!(msi(&mut rig, DISK, remappable(5), 0), Interrupt::Delivered { vector: 0x41, .. }));
    // The driver rewrites the entry without flushing: the unit keeps the cached one.
    set_irte(&mut rig, 5, Irte::fixed(0x52, 1, false, DISK));
    assert!(matches!(msi(&mut rig, DISK, remappable(5), 0), Interrupt::Delivered { vector: 0x41, dest: 3, .. }));
    // An index-selective invalidation of another block leaves it; one covering index 5 drops it.
    rig.enable_qi(false);
    rig.submit(&[IecInv::index(8, 2).into_bits()]);
    assert!(matches!(msi(&mut rig, DISK, remappable(5), 0), Interrupt::Delivered { vector: 0x41, .. }));
    rig.submit(&[IecInv::index(4, 2).into_bits()]);
    assert_eq!(msi(&mut rig, DISK, remappable(5), 0), Interrupt::Delivered { dest: 1, vector: 0x52, remapped: true });
    // SIRTP to another table does not flush either (Linux sends qi_global_iec after it).
    rig.w64(off::IRTA, Irta::from_table(TABLE + 0x10_0000, 7, false).into_bits());
    rig.gcmd(Gcmd::new().with_ire(true).with_sirtp(true));
    assert!(matches!(msi(&mut rig, DISK, remappable(5), 0), Interrupt::Delivered { vector: 0x52, .. }));
    rig.submit(&[IecInv::global().into_bits()]);
    assert_eq!(blocked(msi(&mut rig, DISK, remappable(5), 0)), FaultReason::IrEntryNotPresent.0 as u16);
}

#[test]
fn x2apic_destinations_need_eime() {
    let mut rig = Rig::legacy();
    rig.w64(off::IRTA, Irta::from_table(TABLE, 7, true).into_bits());
    rig.gcmd(Gcmd::new().with_sirtp(true));
    rig.gcmd(Gcmd::new().with_ire(true));
    set_irte(&mut rig, 1, Irte::fixed(0x41, 0x1_0003, true, DISK).with_svt(SourceValidation::None));
    assert_eq!(
        msi(&mut rig, DISK, remappable(1), 0),
        Interrupt::Delivered { dest: 0x1_0003, vector: 0x41, remapped: true }
    );
    // A unit without ECAP.EIM keeps IRTA.EIME at 0: the same entry has reserved destination bits.
    let mut cfg = iommu_emu::VtdConfig::legacy_only();
    cfg.ecap = cfg.ecap.with_eim(false);
    let mut rig = Rig::new(cfg);
    rig.w64(off::IRTA, Irta::from_table(TABLE, 7, true).into_bits());
    assert!(!Irta::from_bits(rig.r64(off::IRTA)).eime());
    rig.gcmd(Gcmd::new().with_sirtp(true));
    rig.gcmd(Gcmd::new().with_ire(true));
    set_irte(&mut rig, 1, Irte::fixed(0x41, 0x1_0003, true, DISK));
    assert_eq!(blocked(msi(&mut rig, DISK, remappable(1), 0)), FaultReason::IrEntryReserved.0 as u16);
}
