//! Scalable-mode first-level translation (PASID entry PGTT = 001, spec 3.6, 9.6, 9.7) through tables
//! written as raw x86-64-format entries: 4- and 5-level tables, 2 MiB and 1 GiB pages, R/W and U/S, A/D
//! updates, reserved bits, the entry checks against ECAP/CAP, nested refused, and which invalidations
//! remove first-level translations (spec 6.5.2.3–6.5.2.4).

mod common;

use common::Rig;
use iommu_driver::PhysMem;
use iommu_emu::{Access, Translation, VtdConfig, VtdModel};
use iommu_spec::vtd::{
    level_index, FaultReason, FlPte, IotlbInv, PasidCacheInv, PasidEntry, PasidEntryQw0, PasidEntryQw2, PasidIotlbInv,
    Pgtt, SourceId,
};

const SID: u16 = SourceId::new(0, 3, 0).0;
const DID: u16 = 7;

fn code(r: FaultReason) -> u16 {
    r.0 as u16
}

/// Write `entry` as the level-`leaf_level` entry of `iova` in the `levels`-level first-level table at
/// `root`, creating missing tables with `table` entries (Linux's: P, R/W, U/S, A, XD).
fn fl_map(rig: &mut Rig, root: u64, levels: u32, iova: u64, leaf_level: u32, entry: FlPte) -> u64 {
    let mut table = root;
    for level in (leaf_level + 1..=levels).rev() {
        let slot = table + level_index(iova, level) as u64 * 8;
        let pte = FlPte::from_bits(rig.mem.read_u64(slot).unwrap());
        table = if pte.p() {
            pte.phys()
        } else {
            let next = rig.page();
            rig.mem.write_u64(slot, FlPte::table(next).into_bits()).unwrap();
            next
        };
    }
    let slot = table + level_index(iova, leaf_level) as u64 * 8;
    rig.mem.write_u64(slot, entry.into_bits()).unwrap();
    slot
}

/// The slot of the level-`level` entry of `iova` (the path must exist).
fn fl_slot(rig: &mut Rig, root: u64, levels: u32, iova: u64, level: u32) -> u64 {
    let mut table = root;
    for l in (level + 1..=levels).rev() {
        table = FlPte::from_bits(rig.mem.read_u64(table + level_index(iova, l) as u64 * 8).unwrap()).phys();
    }
    table + level_index(iova, level) as u64 * 8
}

/// A first-level-only unit with `sid` on a first-level table of `levels` levels; returns the table root.
fn fl_rig(cfg: VtdConfig, levels: u32) -> (Rig, u64, u64) {
    let mut rig = Rig::new(cfg);
    let root = rig.page();
    let pt = rig.page();
    rig.set_sm_context(root, SID, PasidEntry::first_level(pt, levels == 5, 2, DID, false), false);
    rig.enable(root, true);
    (rig, root, pt)
}

fn five_level_unit() -> VtdConfig {
    let c = VtdConfig::first_level_only();
    VtdConfig { cap: c.cap.with_fl5lp(true), haw: 52, ..c }
}

#[test]
fn four_level_first_level_translates_4k_2m_and_1g_pages() {
    let (mut rig, _, pt) = fl_rig(VtdConfig::first_level_only(), 4);
    fl_map(&mut rig, pt, 4, 0x1000, 1, FlPte::leaf(0x5000, true));
    fl_map(&mut rig, pt, 4, 0x4020_0000, 2, FlPte::leaf(0x60_0000, false).with_ps(true));
    fl_map(&mut rig, pt, 4, 0x80_4000_0000, 3, FlPte::leaf(0x4000_0000, true).with_ps(true));
    // The top half of the 48-bit space is canonical when sign-extended.
    fl_map(&mut rig, pt, 4, 0xffff_8000_0000_0000, 1, FlPte::leaf(0x7000, true));
    assert_eq!(rig.phys(SID, 0x1abc, Access::Write), Some(0x5abc));
    assert_eq!(rig.phys(SID, 0x402f_f123, Access::Read), Some(0x6f_f123));
    assert_eq!(rig.phys(SID, 0x80_7fff_fff8, Access::Write), Some(0x7fff_fff8));
    assert_eq!(rig.phys(SID, 0xffff_8000_0000_0010, Access::Read), Some(0x7010));
    assert_eq!(rig.fault_code(SID, 0x4020_0000, Access::Write), code(FaultReason::SmNoWrite), "read-only 2 MiB");
    assert_eq!(rig.fault_code(SID, 0x2000, Access::Read), code(FaultReason::SmFlNotPresent));
}

#[test]
fn five_level_first_level_translates_above_48_bits() {
    let (mut rig, _, pt) = fl_rig(five_level_unit(), 5);
    let iova = 0x00ab_cdef_1234_5000;
    fl_map(&mut rig, pt, 5, iova, 1, FlPte::leaf(0x9000, true));
    assert_eq!(rig.phys(SID, iova | 0x44, Access::Read), Some(0x9044));
    // Bit 57 set without bits 63:58: not canonical for a 57-bit space.
    assert_eq!(rig.fault_code(SID, 1 << 57, Access::Read), code(FaultReason::SmFlNonCanonical));
    // The same IOVA through a 4-level entry is not canonical (bit 55 set, 63:48 clear).
    let (mut rig4, _, _) = fl_rig(five_level_unit(), 4);
    assert_eq!(rig4.fault_code(SID, iova, Access::Read), code(FaultReason::SmFlNonCanonical));
}

#[test]
fn writes_need_rw_at_every_level_and_user_requests_need_us() {
    let (mut rig, _, pt) = fl_rig(VtdConfig::first_level_only(), 4);
    fl_map(&mut rig, pt, 4, 0x1000, 1, FlPte::leaf(0x5000, true));
    fl_map(&mut rig, pt, 4, 0x40_0000, 1, FlPte::leaf(0x6000, true));
    fl_map(&mut rig, pt, 4, 0x80_0000, 1, FlPte::leaf(0x8000, true).with_us(false));
    // A read-only level-2 entry above a writable leaf: reads pass, writes fault.
    let pde = fl_slot(&mut rig, pt, 4, 0x40_0000, 2);
    let e = FlPte::from_bits(rig.mem.read_u64(pde).unwrap()).with_rw(false);
    rig.mem.write_u64(pde, e.into_bits()).unwrap();
    assert_eq!(rig.phys(SID, 0x40_0010, Access::Read), Some(0x6010));
    assert_eq!(rig.fault_code(SID, 0x40_0010, Access::Write), code(FaultReason::SmNoWrite));
    // U/S clear: a request without PASID is a user request, refused even for reads.
    assert_eq!(rig.fault_code(SID, 0x80_0000, Access::Read), code(FaultReason::SmFlPrivilege));
    // XD is about instruction fetches: DMA reads and writes pass (Linux sets it everywhere).
    let leaf = fl_slot(&mut rig, pt, 4, 0x1000, 1);
    assert!(FlPte::from_bits(rig.mem.read_u64(leaf).unwrap()).xd());
    assert_eq!(rig.phys(SID, 0x1000, Access::Write), Some(0x5000));
}

#[test]
fn reserved_bits_and_unoffered_page_sizes_fault() {
    let mut cfg = VtdConfig::first_level_only();
    cfg.cap = cfg.cap.with_fl1gp(false);
    let (mut rig, _, pt) = fl_rig(cfg, 4);
    let rsvd = code(FaultReason::SmFlReserved);
    fl_map(&mut rig, pt, 4, 0x4000_0000, 3, FlPte::leaf(0x4000_0000, true).with_ps(true));
    assert_eq!(rig.fault_code(SID, 0x4000_0000, Access::Read), rsvd, "1 GiB page without CAP.FL1GP");
    fl_map(&mut rig, pt, 4, 0x20_0000, 2, FlPte::leaf(0x30_2000, true).with_ps(true));
    assert_eq!(rig.fault_code(SID, 0x20_0000, Access::Read), rsvd, "2 MiB page with bit 13 set");
    fl_map(&mut rig, pt, 4, 0x60_0000, 2, FlPte::leaf(0x60_1000, true).with_ps(true));
    assert_eq!(rig.phys(SID, 0x60_0000, Access::Read), Some(0x60_0000), "bit 12 of a 2 MiB leaf is PAT");
    fl_map(&mut rig, pt, 4, 0x1000, 1, FlPte::leaf(1 << 48, true));
    assert_eq!(rig.fault_code(SID, 0x1000, Access::Read), rsvd, "frame above HAW");
    let pml4e = fl_slot(&mut rig, pt, 4, 0x1000, 4);
    let e = FlPte::from_bits(rig.mem.read_u64(pml4e).unwrap()).with_ps(true);
    rig.mem.write_u64(pml4e, e.into_bits()).unwrap();
    assert_eq!(rig.fault_code(SID, 0x1000, Access::Read), rsvd, "PS in a level-4 entry");
}

#[test]
fn walks_set_accessed_everywhere_and_dirty_in_the_leaf_on_writes() {
    let (mut rig, _, pt) = fl_rig(VtdConfig::first_level_only(), 4);
    let leaf = fl_map(&mut rig, pt, 4, 0x1000, 1, FlPte::leaf(0x5000, true).with_a(false).with_d(false));
    let slots: Vec<u64> = (2..=4).map(|l| fl_slot(&mut rig, pt, 4, 0x1000, l)).collect();
    for &s in &slots {
        let e = FlPte::from_bits(rig.mem.read_u64(s).unwrap()).with_a(false);
        rig.mem.write_u64(s, e.into_bits()).unwrap();
    }
    assert_eq!(rig.phys(SID, 0x1000, Access::Read), Some(0x5000));
    for &s in slots.iter().chain([&leaf]) {
        assert!(FlPte::from_bits(rig.mem.read_u64(s).unwrap()).a(), "A set at {s:#x}");
    }
    assert!(!FlPte::from_bits(rig.mem.read_u64(leaf).unwrap()).d(), "a read leaves D clear");
    // The read cached a clean entry; a write must walk again and set D before it completes.
    let walks = rig.vtd.counters().walks;
    assert_eq!(rig.phys(SID, 0x1000, Access::Write), Some(0x5000));
    assert_eq!(rig.vtd.counters().walks, walks + 1);
    assert!(FlPte::from_bits(rig.mem.read_u64(leaf).unwrap()).d());
    // Now dirty in the IOTLB: further writes hit.
    assert_eq!(rig.phys(SID, 0x1008, Access::Write), Some(0x5008));
    assert_eq!(rig.vtd.counters().walks, walks + 1);
    // Linux's own leaves come with A and D set: no write-back at all.
    let (mut rig2, _, pt2) = fl_rig(VtdConfig::first_level_only(), 4);
    fl_map(&mut rig2, pt2, 4, 0x1000, 1, FlPte::leaf(0x5000, true));
    assert_eq!(rig2.phys(SID, 0x1000, Access::Write), Some(0x5000));
    assert_eq!(rig2.vtd.counters().ad_updates, 0);
}

#[test]
fn pasid_entry_checks_follow_ecap_and_cap() {
    let invalid = code(FaultReason::SmPasidEntryInvalid);
    let reserved = code(FaultReason::SmPasidEntryReserved);
    // A unit without ECAP.FLTS (second level only): PGTT 001 is an invalid entry, not a translation.
    let mut rig = Rig::modern();
    assert!(!rig.vtd.config().ecap.flts());
    let root = rig.page();
    let pt = rig.page();
    fl_map(&mut rig, pt, 4, 0, 1, FlPte::leaf(0x5000, true));
    rig.set_sm_context(root, SID, PasidEntry::first_level(pt, false, 2, DID, false), false);
    rig.enable(root, true);
    assert_eq!(rig.fault_code(SID, 0, Access::Read), invalid);

    let mut rig = Rig::new(VtdConfig::first_level_only());
    let root = rig.page();
    let pt = rig.page();
    fl_map(&mut rig, pt, 4, 0, 1, FlPte::leaf(0x5000, true));
    let base = PasidEntry::first_level(pt, false, 2, DID, false);
    let with_qw2 = |f: fn(PasidEntryQw2) -> PasidEntryQw2| {
        let mut e = base;
        e.0[2] = f(PasidEntryQw2::from_bits(e.0[2])).into_bits();
        e
    };
    let mut nested = base;
    nested.0[0] = PasidEntryQw0::from_bits(nested.0[0]).with_pgtt(Pgtt::Nested).into_bits();
    let mut second = base;
    second.0[0] = PasidEntryQw0::from_bits(second.0[0]).with_pgtt(Pgtt::SecondLevel).with_slptptr(pt >> 12).into_bits();
    let cases = [
        (0x10, base, None),
        (0x11, with_qw2(|q| q.with_flpm(1)), Some(invalid)), // 5-level without CAP.FL5LP
        (0x12, with_qw2(|q| q.with_flpm(2)), Some(reserved)),
        (0x13, with_qw2(|q| q.with_sre(true)), Some(reserved)), // SRE without ECAP.SRS
        (0x14, with_qw2(|q| q.with_eafe(true)), Some(reserved)), // EAFE without ECAP.EAFS
        (0x15, with_qw2(|q| q.with_reserved(1)), Some(reserved)),
        (0x16, with_qw2(|q| q.with_flptr(1 << 40)), Some(reserved)), // FLPTR above HAW
        (0x17, nested, Some(invalid)),                               // nested: not offered, never a bypass
        (0x18, second, Some(invalid)),                               // second level: ECAP.SLTS clear
    ];
    for (sid, e, _) in cases {
        rig.set_sm_context(root, sid, e, false);
    }
    rig.enable(root, true);
    for (sid, _, want) in cases {
        match want {
            None => assert_eq!(rig.phys(sid, 0x10, Access::Read), Some(0x5010)),
            Some(c) => assert_eq!(rig.fault_code(sid, 0x10, Access::Read), c, "sid {sid:#x}"),
        }
    }
}

#[test]
fn a_unit_claiming_nested_translation_is_refused() {
    let mut cfg = VtdConfig::first_level_only();
    cfg.ecap = cfg.ecap.with_nest(true);
    assert!(VtdModel::try_new(cfg).is_err());
}

#[test]
fn only_pasid_based_invalidations_remove_first_level_translations() {
    let (mut rig, _, pt) = fl_rig(VtdConfig::first_level_only(), 4);
    rig.enable_qi(true);
    let leaf = fl_map(&mut rig, pt, 4, 0x1000, 1, FlPte::leaf(0x5000, true));
    assert_eq!(rig.phys(SID, 0x1000, Access::Read), Some(0x5000));
    rig.mem.write_u64(leaf, FlPte::leaf(0x6000, true).into_bits()).unwrap();
    // Domain- and page-selective IOTLB invalidations (type 2) cover second-level mappings only.
    rig.submit(&[IotlbInv::domain(DID).into_bits(), IotlbInv::pages(DID, 0x1000, 0).into_bits()]);
    assert_eq!(rig.phys(SID, 0x1000, Access::Read), Some(0x5000), "stale until a PASID-based flush");
    rig.submit(&[PasidIotlbInv::pages(DID, 0, 0x1000, 0, false).into_bits()]);
    assert_eq!(rig.phys(SID, 0x1000, Access::Read), Some(0x6000));
    rig.mem.write_u64(leaf, FlPte::leaf(0x7000, true).into_bits()).unwrap();
    rig.submit(&[PasidIotlbInv::of_pasid(DID, 0).into_bits()]);
    assert_eq!(rig.phys(SID, 0x1000, Access::Read), Some(0x7000));
    rig.mem.write_u64(leaf, FlPte::leaf(0x8000, true).into_bits()).unwrap();
    rig.submit(&[IotlbInv::global().into_bits()]);
    assert_eq!(rig.phys(SID, 0x1000, Access::Read), Some(0x8000), "global invalidation removes everything");
}

/// First-level paths sit in the paging-structure caches too: an invalidation that is not PASID-based leaves them,
/// as it leaves first-level IOTLB entries, and a PASID-based page-selective one leaves them when IH says only
/// leaves changed (spec 6.5.2.4). A write through a cached path without R/W faults as the walk would.
#[test]
fn first_level_directory_entries_go_with_a_pasid_based_invalidation_without_ih() {
    let (mut rig, _, pt) = fl_rig(VtdConfig::first_level_only(), 4);
    rig.enable_qi(true);
    for i in 0..5u64 {
        fl_map(&mut rig, pt, 4, 0x20_0000 + (i << 12), 1, FlPte::leaf(0x10_0000 + (i << 12), true));
    }
    assert_eq!(rig.phys(SID, 0x20_0000, Access::Read), Some(0x10_0000));
    // The region's level-2 entry now names an empty, read-only table.
    let slot = fl_slot(&mut rig, pt, 4, 0x20_0000, 2);
    let empty = rig.page();
    rig.mem.write_u64(slot, FlPte::table(empty).with_rw(false).into_bits()).unwrap();
    rig.submit(&[IotlbInv::domain(DID).into_bits(), IotlbInv::pages(DID, 0x20_0000, 0).into_bits()]);
    assert_eq!(rig.phys(SID, 0x20_1000, Access::Write), Some(0x10_1000), "type 2 left the path");
    rig.submit(&[PasidIotlbInv::pages(DID, 0, 0x20_1000, 0, true).into_bits()]);
    assert_eq!(rig.phys(SID, 0x20_2000, Access::Read), Some(0x10_2000), "IH = 1 left the path");
    assert_eq!(rig.vtd.counters().psc_hits, 2);
    rig.submit(&[PasidIotlbInv::pages(DID, 0, 0x20_1000, 0, false).into_bits()]);
    // Walks read the new path: a write faults at the level-2 entry; a read gets past it (caching the read-only
    // path) and finds nothing in the empty table; a write through the cached path faults as the walk did.
    assert_eq!(rig.fault_code(SID, 0x20_3000, Access::Write), code(FaultReason::SmNoWrite));
    assert_eq!(rig.fault_code(SID, 0x20_3000, Access::Read), code(FaultReason::SmFlNotPresent));
    assert_eq!(rig.vtd.counters().psc_hits, 2);
    assert_eq!(rig.fault_code(SID, 0x20_4000, Access::Write), code(FaultReason::SmNoWrite));
    assert_eq!(rig.vtd.counters().psc_hits, 3);
}

#[test]
fn pasid_cache_invalidation_makes_a_new_first_level_pointer_visible() {
    let (mut rig, root, pt) = fl_rig(VtdConfig::first_level_only(), 4);
    rig.enable_qi(true);
    fl_map(&mut rig, pt, 4, 0x1000, 1, FlPte::leaf(0x5000, true));
    assert_eq!(rig.phys(SID, 0x1000, Access::Read), Some(0x5000));
    // Point the PASID entry at another table (found through the root → context → directory path).
    let pt2 = rig.page();
    fl_map(&mut rig, pt2, 4, 0x1000, 1, FlPte::leaf(0x9000, true));
    let ct = iommu_spec::vtd::ScalableRootEntry::from_bits(rig.mem.read_u128(root).unwrap()).lower_table();
    let ce =
        iommu_spec::vtd::ScalableContextEntry::from_bits(rig.mem.read_u128(ct + (SID & 0x7f) as u64 * 32).unwrap());
    let dir = ce.pasid_dir();
    let table = iommu_spec::vtd::PasidDirEntry::from_bits(rig.mem.read_u64(dir).unwrap()).table();
    let qw2 = PasidEntryQw2::from_bits(rig.mem.read_u64(table + 16).unwrap()).with_flptr(pt2 >> 12);
    rig.mem.write_u64(table + 16, qw2.into_bits()).unwrap();
    rig.submit(&[PasidIotlbInv::of_pasid(DID, 0).into_bits()]);
    assert_eq!(rig.phys(SID, 0x1000, Access::Read), Some(0x5000), "the PASID cache still holds the old pointer");
    rig.submit(&[PasidCacheInv::of_pasid(DID, 0).into_bits(), PasidIotlbInv::of_pasid(DID, 0).into_bits()]);
    assert_eq!(rig.phys(SID, 0x1000, Access::Read), Some(0x9000));
    assert!(matches!(rig.translate(SID, 0x2000, Access::Read), Translation::Fault(_)));
}
