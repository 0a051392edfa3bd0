//! Hostile old tables: scalable-mode validation, loops in page tables, and garbage everywhere. Nothing may
//! panic, loop without bound, or adopt what it could not validate.

mod common;

use std::cell::Cell;

use common::{Rig, CRASH};
use iommu_driver::vtd::{
    walk, Attachment, DeviceKind, EntryProblem, HandoverOutcome, Vtd, VtdOptions, WalkIssue, WalkLimits,
};
use iommu_driver::{Mmio, PhysMem, Policy};
use iommu_emu::Access;
use iommu_spec::vtd::{
    off, Cap, PasidDirEntry, PasidEntryQw0, Pgtt, RtAddr, ScalableContextEntry, ScalableRootEntry, SlPte,
};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, RngAlgorithm, RngSeed};

const NIC: u16 = 0x0010;
const DISK: u16 = 0x0018;

/// A scalable-mode primary kernel with NIC and disk in DMA domains; returns their (sid, iova, pa).
fn primary_sm(rig: &mut Rig) -> Vec<(u16, u64, u64)> {
    let mut v = Vtd::init(&mut rig.primary(), VtdOptions { scalable: true, first_level: false }).unwrap();
    let mut out = Vec::new();
    for (i, sid) in [NIC, DISK].into_iter().enumerate() {
        let d = v.create_domain(&mut rig.primary()).unwrap();
        v.attach(&mut rig.primary(), sid, Attachment::Domain(d)).unwrap();
        let pa = 0x2000_0000 + i as u64 * 0x1000;
        out.push((sid, v.map(&mut rig.primary(), d, pa, 0x1000, true, true).unwrap(), pa));
    }
    out
}

/// Address of `sid`'s scalable-mode context entry in the old tables.
fn sm_context_at(rig: &mut Rig, sid: u16) -> u64 {
    let rt = RtAddr::from_bits(rig.primary().read64(off::RTADDR)).table();
    let root = ScalableRootEntry::from_bits(rig.mem.read_u128(rt + (sid >> 8) as u64 * 16).unwrap());
    let devfn = sid & 0xff;
    let table = if devfn < 0x80 { root.lower_table() } else { root.upper_table() };
    table + (devfn & 0x7f) as u64 * 32
}

fn sm_pasid_entry_at(rig: &mut Rig, sid: u16) -> u64 {
    let at = sm_context_at(rig, sid);
    let ce = ScalableContextEntry::from_bits(rig.mem.read_u128(at).unwrap());
    let de = PasidDirEntry::from_bits(rig.mem.read_u64(ce.pasid_dir()).unwrap());
    de.table()
}

fn adopt_sm(rig: &mut Rig) -> iommu_driver::vtd::HandoverReport {
    let env = rig.crash_env();
    Vtd::init_crash(&mut rig.crash(), &env, VtdOptions { scalable: true, first_level: false }, Policy::Adopt).unwrap().1
}

#[test]
fn scalable_mode_validation_rejects_one_device() {
    type Break = fn(&mut Rig) -> EntryProblem;
    let cases: [Break; 5] = [
        |rig| {
            let at = sm_context_at(rig, DISK);
            let ce =
                ScalableContextEntry::from_bits(rig.mem.read_u128(at).unwrap()).with_pasiddirptr(0x1_9000_0000 >> 12);
            rig.mem.write_u128(at, ce.into_bits()).unwrap();
            EntryProblem::TableNotRam { sid: DISK, what: "PASID directory", addr: 0x1_9000_0000 }
        },
        |rig| {
            let at = sm_context_at(rig, DISK);
            let ce =
                ScalableContextEntry::from_bits(rig.mem.read_u128(at).unwrap()).with_pasiddirptr(CRASH.start >> 12);
            rig.mem.write_u128(at, ce.into_bits()).unwrap();
            EntryProblem::TableInCrashRegion { sid: DISK, what: "PASID directory", addr: CRASH.start }
        },
        |rig| {
            let at = sm_context_at(rig, DISK);
            let raw = rig.mem.read_u128(at).unwrap() | 1 << 6;
            rig.mem.write_u128(at, raw).unwrap();
            EntryProblem::ContextReserved { sid: DISK, raw }
        },
        |rig| {
            let pt = sm_pasid_entry_at(rig, DISK);
            let q0 = PasidEntryQw0::from_bits(rig.mem.read_u64(pt).unwrap()).with_pgtt(Pgtt::FirstLevel);
            rig.mem.write_u64(pt, q0.into_bits()).unwrap();
            EntryProblem::BadPasidEntry { sid: DISK, pasid: 0, raw: q0.into_bits() }
        },
        |rig| {
            let pt = sm_pasid_entry_at(rig, DISK);
            let q0 = PasidEntryQw0::from_bits(rig.mem.read_u64(pt).unwrap()).with_slptptr((CRASH.start + 0x3000) >> 12);
            rig.mem.write_u64(pt, q0.into_bits()).unwrap();
            EntryProblem::TableInCrashRegion { sid: DISK, what: "page table", addr: CRASH.start + 0x3000 }
        },
    ];
    for break_it in cases {
        let mut rig = Rig::new();
        let old = primary_sm(&mut rig);
        let want = break_it(&mut rig);
        let report = adopt_sm(&mut rig);
        assert_eq!(report.outcome, HandoverOutcome::Adopted);
        assert_eq!(report.problems, vec![want.clone()]);
        assert_eq!(report.adopted, vec![NIC]);
        assert_eq!(rig.dma(old[0].0, old[0].1, Access::Write), Ok(old[0].2), "the NIC is unaffected by: {want}");
        assert!(rig.dma(old[1].0, old[1].1, Access::Write).is_err(), "the refused disk faults: {want}");
    }
}

#[test]
fn an_absent_rid_pasid_entry_is_adopted_as_blocked() {
    let mut rig = Rig::new();
    let old = primary_sm(&mut rig);
    let pt = sm_pasid_entry_at(&mut rig, DISK);
    rig.mem.write_u64(pt, 0).unwrap();
    let env = rig.crash_env();
    let scan = iommu_driver::vtd::scan(&mut rig.crash(), &env, Some(true)).unwrap();
    let disk = scan.devices.iter().find(|d| d.sid == DISK).unwrap();
    assert_eq!(disk.kind, DeviceKind::Blocked);
    let report = adopt_sm(&mut rig);
    assert!(report.problems.is_empty());
    assert!(rig.dma(DISK, old[1].1, Access::Write).is_err());
}

#[test]
fn page_table_loops_and_caps_are_reported_not_followed() {
    let mut rig = Rig::new();
    let cap = Cap::from_bits(rig.primary().read64(off::CAP));
    // A 4-level table whose entry 0 at every level points back at the root.
    let root = 0x1000_0000;
    rig.mem.write_u64(root, SlPte::entry(root, true, true).into_bits()).unwrap();
    rig.mem.write_u64(root + 8, SlPte::entry(0x1000_1000, true, true).into_bits()).unwrap();
    let w = walk::walk(&rig.mem, cap, root, 4, WalkLimits::default());
    assert!(w.issues.contains(&WalkIssue::Revisited { level: 3, table: root }), "{:?}", w.issues);
    // A table of 512 distinct next-level tables, capped at 10 tables.
    let top = 0x1100_0000;
    for i in 0..512u64 {
        rig.mem.write_u64(top + 8 * i, SlPte::entry(0x1200_0000 + i * 0x1000, true, true).into_bits()).unwrap();
    }
    let w = walk::walk(&rig.mem, cap, top, 4, WalkLimits { max_tables: 10, max_runs: 100 });
    assert_eq!(w.tables, 10);
    assert!(w.issues.contains(&WalkIssue::TooManyTables));
}

/// The properties' configuration: `cases` cases, a failing case's seed saved in
/// `vtd_hostile.proptest-regressions` next to this file and replayed first on the next run.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        // A third less generation time than the default ChaCha; the inputs need no cryptographic quality.
        rng_algorithm: RngAlgorithm::XorShift,
        // A fixed seed: every run sweeps the same cases, so a coverage claim passes or fails the same way each time
        // (new cases come from the fuzz targets).
        rng_seed: RngSeed::Fixed(0x4841_4e44_4f56_4552),
        max_shrink_iters: 512,
        ..ProptestConfig::default()
    }
}

/// What a crashed kernel left: its tables (scalable or legacy) with root-table qwords overwritten and
/// qwords scribbled over the first 64 frames of the region its tables were allocated from (16 MiB up).
#[derive(Clone, Debug)]
struct Garbage {
    scalable: bool,
    /// (entry index, value) over the root table's 512 qwords.
    root: Vec<(u64, u64)>,
    /// (frame, qword index, value) in the 64 frames from 16 MiB.
    pages: Vec<(u64, u64, u64)>,
    /// Page-aligned IOVAs below 4 GiB, for a DMA from each requester after the hand-over.
    dma: Vec<u64>,
}

fn garbage() -> impl Strategy<Value = Garbage> {
    // A third of the root qwords masked to look like entries: an address below 64 GiB, bits 2:0 (the
    // present bit among them) kept, the rest clear.
    let root_qword = prop_oneof![2 => any::<u64>(), 1 => any::<u64>().prop_map(|v| v & 0x0000_000f_ffff_f007)];
    (
        any::<bool>(),
        prop::collection::vec((0..512u64, root_qword), 64),
        prop::collection::vec((0..64u64, 0..512u64, any::<u64>()), 256),
        prop::collection::vec(any::<u64>().prop_map(|v| v & 0xffff_f000), 5),
    )
        .prop_map(|(scalable, root, pages, dma)| Garbage { scalable, root, pages, dma })
}

#[test]
fn garbage_tables_never_panic_and_never_adopt_the_unvalidated() {
    let (adopted, refused, fell_back) = (Cell::new(0), Cell::new(0), Cell::new(0));
    proptest!(config(40), |(g in garbage())| {
        let mut rig = Rig::new();
        primary_sm_or_legacy(&mut rig, g.scalable);
        let rt = RtAddr::from_bits(rig.primary().read64(off::RTADDR)).table();
        // Scribble over the root table and a few pages the tables point into.
        for (i, v) in g.root {
            rig.mem.write_u64(rt + 8 * i, v).unwrap();
        }
        for (frame, i, v) in g.pages {
            rig.mem.write_u64(16 * common::MIB + frame * 0x1000 + 8 * i, v).unwrap();
        }
        let env = rig.crash_env();
        let opts = VtdOptions { scalable: g.scalable, first_level: false };
        let (v, report) = Vtd::init_crash(&mut rig.crash(), &env, opts, Policy::Adopt).unwrap();
        adopted.set(adopted.get() + report.adopted.len());
        refused.set(refused.get() + report.problems.len());
        fell_back.set(fell_back.get() + matches!(report.outcome, HandoverOutcome::FellBack(_)) as usize);
        // Whatever was adopted passed the checks: its tables are in RAM and outside the crash region.
        for (sid, st) in v.devices() {
            if let iommu_driver::vtd::DeviceState::Adopted { did, kind } = st {
                prop_assert!(report.adopted.contains(&sid));
                prop_assert!(did != 0 || kind == DeviceKind::Blocked);
                if let DeviceKind::Translated { root, levels } = kind {
                    prop_assert!(env.in_ram(root, 4096) && !env.in_crash_region(root, 4096));
                    prop_assert!((3..=5).contains(&levels));
                }
            }
        }
        // DMA from every requester still gets an answer.
        for (sid, iova) in [0u16, NIC, DISK, 0x0100, 0xffff].into_iter().zip(g.dma) {
            let _ = rig.dma(sid, iova, Access::Write);
        }
    });
    // The property exercised adoption and refusal, or it proves nothing.
    let (adopted, refused, fell_back) = (adopted.get(), refused.get(), fell_back.get());
    assert!(adopted > 0 && refused > 0, "adopted {adopted}, refused {refused}, fell back {fell_back}");
    eprintln!("garbage property: adopted {adopted}, refused {refused}, fell back {fell_back}");
}

fn primary_sm_or_legacy(rig: &mut Rig, scalable: bool) {
    let mut v = Vtd::init(&mut rig.primary(), VtdOptions { scalable, first_level: false }).unwrap();
    for sid in [NIC, DISK, 0x0100] {
        let d = v.create_domain(&mut rig.primary()).unwrap();
        v.attach(&mut rig.primary(), sid, Attachment::Domain(d)).unwrap();
        v.map(&mut rig.primary(), d, 0x2000_0000, 0x4000, true, true).unwrap();
    }
}

#[test]
fn a_pasid_directory_entry_is_checked_where_it_lies_in_a_128_kib_directory() {
    let mut rig = Rig::new();
    primary_sm(&mut rig);
    // DISK's directory starts on the last page before the crash region and is 2^14 entries long; its
    // RID_PASID's entry lies 32 KiB in, inside the region.
    let at = sm_context_at(&mut rig, DISK);
    let dir = CRASH.start - 0x1000;
    let ce = ScalableContextEntry::from_bits(rig.mem.read_u128(at).unwrap())
        .with_pasiddirptr(dir >> 12)
        .with_pdts(7)
        .with_rid_pasid(0xffc << 6);
    rig.mem.write_u128(at, ce.into_bits()).unwrap();
    let r = adopt_sm(&mut rig);
    assert_eq!(r.outcome, HandoverOutcome::Adopted);
    let page = dir + 0x7000;
    assert!(
        r.problems.contains(&EntryProblem::TableInCrashRegion { sid: DISK, what: "PASID directory", addr: page }),
        "{:?}",
        r.problems
    );
    assert!(!r.adopted.contains(&DISK));
}

#[test]
fn a_pasid_directory_at_the_top_of_the_address_space_is_refused_not_wrapped() {
    let mut rig = Rig::new();
    primary_sm(&mut rig);
    let at = sm_context_at(&mut rig, DISK);
    let dir = 0xffff_ffff_ffff_e000;
    let ce = ScalableContextEntry::from_bits(rig.mem.read_u128(at).unwrap())
        .with_pasiddirptr(dir >> 12)
        .with_pdts(7)
        .with_rid_pasid(0x3fff << 6);
    rig.mem.write_u128(at, ce.into_bits()).unwrap();
    // A firmware map whose last range reaches the top of the address space.
    let mut env = rig.crash_env();
    env.ram.push(0xffff_ffff_fff0_0000..u64::MAX);
    let (_, r) =
        Vtd::init_crash(&mut rig.crash(), &env, VtdOptions { scalable: true, first_level: false }, Policy::Adopt)
            .unwrap();
    assert!(
        r.problems.contains(&EntryProblem::TableNotRam { sid: DISK, what: "PASID directory", addr: dir }),
        "{:?}",
        r.problems
    );
}

#[test]
fn scalable_devices_sharing_a_did_on_different_tables_refuse_the_later_one() {
    let mut rig = Rig::new();
    primary_sm(&mut rig);
    let nic_at = sm_pasid_entry_at(&mut rig, NIC);
    let nic_did = rig.mem.read_u64(nic_at + 8).unwrap() as u16;
    let at = sm_pasid_entry_at(&mut rig, DISK) + 8;
    let q1 = rig.mem.read_u64(at).unwrap();
    rig.mem.write_u64(at, (q1 & !0xffff) | nic_did as u64).unwrap();
    let r = adopt_sm(&mut rig);
    assert!(r.problems.contains(&EntryProblem::DomainIdAlias { sid: DISK, did: nic_did }), "{:?}", r.problems);
    assert!(r.adopted.contains(&NIC) && !r.adopted.contains(&DISK));
}
