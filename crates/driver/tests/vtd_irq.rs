//! Interrupt remapping across the crash on VT-d: the primary kernel's devices keep raising the MSIs it
//! programmed; the crash kernel keeps them delivered under `adopt` (a checked copy of the old table, as Linux's
//! `iommu_load_old_irte`) and loses them under the resets (a fresh table); its own entries never take a slot an
//! old entry holds; a hostile old table or entry is refused and not left live.

mod common;

use common::{Rig, CRASH};
use iommu_driver::irq::{IrqHandover, IrqTarget, IrtRefusal, MsiMessage};
use iommu_driver::vtd::{Vtd, VtdOptions};
use iommu_driver::{Mmio, PhysMem, Policy};
use iommu_emu::{Interrupt, InterruptRemap};
use iommu_spec::vtd::{off, FaultReason, Irte, IRTE_SIZE};

const NIC: u16 = 0x0010;
const DISK: u16 = 0x0018;
const OPTS: VtdOptions = VtdOptions { scalable: false, first_level: false };

fn raise(rig: &mut Rig, sid: u16, m: MsiMessage) -> Interrupt {
    let Rig { unit, mem, .. } = rig;
    unit.interrupt(mem, sid as u32, m.addr, m.data)
}

/// The primary kernel: remapping on, an interrupt for the NIC and one for the disk.
fn primary(rig: &mut Rig) -> (MsiMessage, MsiMessage) {
    let mut v = Vtd::init(&mut rig.primary(), OPTS).unwrap();
    assert_eq!(*v.irq_handover(), IrqHandover::Fresh);
    let nic = v.alloc_irq(&mut rig.primary(), NIC, IrqTarget { apic_id: 1, vector: 0x30 }).unwrap().unwrap();
    let disk = v.alloc_irq(&mut rig.primary(), DISK, IrqTarget { apic_id: 2, vector: 0x31 }).unwrap().unwrap();
    assert_eq!(raise(rig, NIC, nic), Interrupt::Delivered { dest: 1, vector: 0x30, remapped: true });
    assert_eq!(raise(rig, DISK, disk), Interrupt::Delivered { dest: 2, vector: 0x31, remapped: true });
    (nic, disk)
}

fn crash(rig: &mut Rig, policy: Policy) -> Vtd {
    let env = rig.crash_env();
    Vtd::init_crash(&mut rig.crash(), &env, OPTS, policy).unwrap().0
}

fn blocked(i: Interrupt) -> u16 {
    match i {
        Interrupt::Blocked(f) => f.code,
        other => panic!("expected blocked, got {other:?}"),
    }
}

#[test]
fn adopt_keeps_old_interrupts_delivered_and_allocates_around_them() {
    for policy in [Policy::Adopt, Policy::AdoptScratch] {
        let mut rig = Rig::new();
        let (nic, disk) = primary(&mut rig);
        let old_irta = rig.unit.active_irta();
        let mut v = crash(&mut rig, policy);
        assert_eq!(*v.irq_handover(), IrqHandover::Kept { live: 2, refused: vec![], tables_refused: vec![] });
        let (table, used) = v.ir_table().unwrap();
        assert!(CRASH.contains(&table) && table != old_irta.table(), "a copy in the crash kernel's memory");
        assert_eq!(used, 2);
        assert_eq!(raise(&mut rig, NIC, nic), Interrupt::Delivered { dest: 1, vector: 0x30, remapped: true });
        // The crash kernel's disk driver gets a new entry, not one of the two live ones.
        let new = v.alloc_irq(&mut rig.crash(), DISK, IrqTarget { apic_id: 0, vector: 0x40 }).unwrap().unwrap();
        assert!(new != nic && new != disk);
        assert_eq!(raise(&mut rig, DISK, new), Interrupt::Delivered { dest: 0, vector: 0x40, remapped: true });
        assert_eq!(raise(&mut rig, DISK, disk), Interrupt::Delivered { dest: 2, vector: 0x31, remapped: true });
    }
}

#[test]
fn the_resets_take_a_fresh_table_and_old_interrupts_fault() {
    for policy in [Policy::ResetAbort, Policy::ResetBypass] {
        let mut rig = Rig::new();
        let (nic, _) = primary(&mut rig);
        let mut v = crash(&mut rig, policy);
        assert_eq!(*v.irq_handover(), IrqHandover::Fresh, "{policy}");
        assert_eq!(blocked(raise(&mut rig, NIC, nic)), FaultReason::IrEntryNotPresent.0 as u16, "{policy}");
        // The first new entry takes index 0, the NIC's old index: an old message now reaches the new target.
        let new = v.alloc_irq(&mut rig.crash(), DISK, IrqTarget { apic_id: 0, vector: 0x40 }).unwrap().unwrap();
        assert_eq!(new, nic);
        assert_eq!(blocked(raise(&mut rig, NIC, nic)), FaultReason::IrSourceInvalid.0 as u16, "{policy}: SID check");
    }
}

#[test]
fn hostile_old_tables_are_refused_for_a_fresh_one() {
    // A table size Linux would not have programmed.
    let mut rig = Rig::new();
    let (nic, _) = primary(&mut rig);
    let irta = rig.unit.active_irta();
    rig.crash().write64(off::IRTA, irta.with_s(7).into_bits());
    rig.crash().write64(off::GCMD, (1 << 24) | (1 << 25) | (1 << 31));
    let v = crash(&mut rig, Policy::Adopt);
    assert_eq!(*v.irq_handover(), IrqHandover::Refused(IrtRefusal::Size { s: 7 }));
    assert_eq!(blocked(raise(&mut rig, NIC, nic)), FaultReason::IrEntryNotPresent.0 as u16);
    // A table inside the crash kernel's region.
    let mut rig = Rig::new();
    primary(&mut rig);
    let irta = rig.unit.active_irta();
    let inside = CRASH.start + 0x10_0000;
    rig.crash().write64(off::IRTA, irta.with_irta(inside >> 12).into_bits());
    rig.crash().write64(off::GCMD, (1 << 24) | (1 << 25) | (1 << 31));
    let v = crash(&mut rig, Policy::Adopt);
    assert_eq!(*v.irq_handover(), IrqHandover::Refused(IrtRefusal::InCrashRegion { device: None, addr: inside }));
}

#[test]
fn a_hostile_entry_is_refused_and_not_left_live() {
    let mut rig = Rig::new();
    let (nic, disk) = primary(&mut rig);
    let irta = rig.unit.active_irta();
    // The disk's entry (index 1) gets reserved bits; the unit still has it in its IEC.
    let at = irta.table() + IRTE_SIZE;
    let e = Irte::from_bits(rig.mem.read_u128(at).unwrap());
    rig.mem.write_u128(at, e.into_bits() | 1 << 100).unwrap();
    assert!(matches!(raise(&mut rig, DISK, disk), Interrupt::Delivered { .. }), "cached before the crash kernel");
    let v = crash(&mut rig, Policy::Adopt);
    match v.irq_handover() {
        IrqHandover::Kept { live: 1, refused, .. } => {
            assert_eq!((refused.len(), refused[0].index, refused[0].device), (1, 1, Some(DISK)))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(blocked(raise(&mut rig, DISK, disk)), FaultReason::IrEntryNotPresent.0 as u16);
    assert!(matches!(raise(&mut rig, NIC, nic), Interrupt::Delivered { vector: 0x30, .. }));
}

#[test]
fn the_decode_shows_who_raises_what_and_entries_that_reach_no_cpu() {
    let mut rig = Rig::new();
    primary(&mut rig);
    let table = rig.unit.active_irta().table();
    // A freed-but-not-zeroed entry, and a present one on an illegal vector (0–15).
    rig.mem.write_u128(table + 7 * IRTE_SIZE, Irte::fixed(0x33, 1, true, NIC).with_p(false).into_bits()).unwrap();
    rig.mem.write_u128(table + 8 * IRTE_SIZE, Irte::fixed(0x05, 1, true, NIC).into_bits()).unwrap();
    let t = iommu_driver::irq::decode_vtd(&mut rig.primary());
    assert!(t.remapping && t.unread.is_empty());
    assert_eq!(t.tables, vec![(table, None, 65536)]);
    let seen: Vec<_> = t.entries.iter().map(|e| (e.index, e.source, e.vector, e.dest, e.targets_cpu())).collect();
    assert_eq!(
        seen,
        [
            (0, Some(NIC), 0x30, 1, true),
            (1, Some(DISK), 0x31, 2, true),
            (7, Some(NIC), 0x33, 1, false),
            (8, Some(NIC), 0x05, 1, false)
        ]
    );
    assert!(!t.entries[2].present);
    assert_eq!(t.unused, 65536 - 4);
}
