//! The invalidation queue at raw offsets: wait descriptors, exactly-targeted invalidations, and
//! invalidation queue errors that stop fetching until software clears IQE.

mod common;

use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, RngAlgorithm, RngSeed};

use common::{legacy_rig, Rig, RW};
use iommu_driver::PhysMem;
use iommu_emu::{Access, VtdConfig};
use iommu_spec::vtd::{
    iqei, off, ContextCacheInv, DescType, EventCtl, Fsts, Gcmd, Ics, IotlbInv, IqPtr, Iqa, Iqer, PasidCacheInv,
    PasidEntry, PasidIotlbInv, SlPte, WaitInv,
};

const STATUS: u64 = 0x7_0000;

fn wait(data: u32) -> u128 {
    WaitInv::status_write(STATUS, data).into_bits()
}

fn iqe(rig: &mut Rig) -> Option<u8> {
    Fsts::from_bits(rig.r32(off::FSTS)).iqe().then(|| Iqer::from_bits(rig.r64(off::IQER)).iqei())
}

#[test]
fn wait_descriptor_writes_status_128_and_256_bit() {
    for (mut rig, wide) in [(Rig::legacy(), false), (Rig::modern(), true)] {
        rig.enable_qi(wide);
        assert_eq!(rig.iqh(), 0);
        rig.submit(&[wait(2)]);
        assert_eq!(rig.mem.read_u32(STATUS).unwrap(), 2);
        assert_eq!(rig.iqh(), 1, "IQH advanced to IQT");
        // The queue wraps: 256 (or 128) descriptors per 4 KiB page.
        let entries = if wide { 128 } else { 256 };
        for i in 0..entries {
            rig.submit(&[wait(i)]);
        }
        assert_eq!(rig.mem.read_u32(STATUS).unwrap(), entries - 1);
        assert_eq!(rig.iqh(), 1);
        assert_eq!(rig.vtd.counters().qi_descriptors, entries as u64 + 1);
        assert_eq!(iqe(&mut rig), None);
    }
}

#[test]
fn wait_interrupt_flag_fence_and_empty_wait() {
    let mut rig = Rig::legacy();
    rig.enable_qi(false);
    let if_wait = WaitInv::new().with_ty(DescType::Wait).with_iflag(true);
    rig.submit(&[if_wait.into_bits()]);
    assert!(Ics::from_bits(rig.r32(off::ICS)).iwc());
    assert!(EventCtl::from_bits(rig.r32(off::IECTL)).ip(), "masked at reset: held");
    rig.w32(off::ICS, 1);
    assert!(!Ics::from_bits(rig.r32(off::ICS)).iwc());
    assert!(!EventCtl::from_bits(rig.r32(off::IECTL)).ip());
    // A fence alone is a barrier (spec 7.10), fine.
    let fence = WaitInv::new().with_ty(DescType::Wait).with_fence(true);
    rig.submit(&[fence.into_bits()]);
    assert_eq!(iqe(&mut rig), None);
    // Neither SW, IF nor FN: refused.
    rig.submit(&[WaitInv::new().with_ty(DescType::Wait).into_bits()]);
    assert_eq!(iqe(&mut rig), Some(iqei::RESERVED_FIELD));
}

#[test]
fn context_invalidation_drops_exactly_the_right_entries() {
    let mut rig = Rig::legacy();
    let root = rig.page();
    let pt = rig.page();
    // 00:01.0 and 00:01.1 in domain 4, 00:02.0 in domain 5.
    for (sid, did) in [(0x08u16, 4u16), (0x09, 4), (0x10, 5)] {
        rig.set_legacy_context(root, sid, Rig::legacy_sl_context(pt, 4, did));
    }
    rig.map(pt, 4, 0, 0x8000, 1, RW);
    rig.enable(root, false);
    rig.enable_qi(false);
    let fill = |rig: &mut Rig| {
        for sid in [0x08, 0x09, 0x10] {
            rig.phys(sid, 0, Access::Read).unwrap();
        }
    };
    let cached = |rig: &Rig| [0x08, 0x09, 0x10].map(|s| rig.vtd.context_cached(s));
    fill(&mut rig);
    rig.submit(&[ContextCacheInv::device(4, 0x09).into_bits(), wait(1)]);
    assert_eq!(cached(&rig), [true, false, true]);
    // FM = 3 masks the function: both functions of device 1.
    fill(&mut rig);
    rig.submit(&[ContextCacheInv::device(4, 0x08).with_fm(3).into_bits()]);
    assert_eq!(cached(&rig), [false, false, true]);
    fill(&mut rig);
    rig.submit(&[ContextCacheInv::domain(5).into_bits()]);
    assert_eq!(cached(&rig), [true, true, false]);
    fill(&mut rig);
    rig.submit(&[ContextCacheInv::global().into_bits()]);
    assert_eq!(cached(&rig), [false, false, false]);
    assert_eq!(rig.vtd.counters().context_invalidations, 4);
}

/// The paging-structure caches keep the path to a region's level-1 table until an IOTLB invalidation of the
/// domain that covers the region and does not say only leaves changed (spec 6.5.2.3, IH), or a domain-selective one.
#[test]
fn directory_entries_survive_only_a_page_selective_invalidation_with_ih_set() {
    let (mut rig, _root, pt) = legacy_rig(4, 0x08, 4);
    // Seven 4 KiB pages behind one level-1 table (one 2 MiB region).
    for i in 0..7u64 {
        rig.map(pt, 4, 0x20_0000 + (i << 12), 0x10_0000 + (i << 12), 1, RW);
    }
    rig.enable_qi(false);
    assert_eq!(rig.phys(0x08, 0x20_0000, Access::Read), Some(0x10_0000));
    // The level-2 entry of the region now names an empty table: a driver that freed the level-1 table and
    // invalidated as if only a leaf had changed.
    let slot = rig.pte_slot(pt, 4, 0x20_0000, 2);
    let old = rig.mem.read_u64(slot).unwrap();
    let empty = rig.page();
    rig.mem.write_u64(slot, SlPte::entry(empty, true, true).into_bits()).unwrap();
    rig.submit(&[IotlbInv::pages(4, 0x20_0000, 0).with_ih(true).into_bits()]);
    // No IOTLB entry for the second page, yet its walk starts at the cached level-1 table.
    assert_eq!(rig.phys(0x08, 0x20_1000, Access::Read), Some(0x10_1000));
    assert_eq!(rig.vtd.counters().psc_hits, 1);
    // IH = 0 for another 2 MiB of the domain leaves the path too.
    rig.submit(&[IotlbInv::pages(4, 0x4000_0000, 0).into_bits()]);
    assert_eq!(rig.phys(0x08, 0x20_2000, Access::Read), Some(0x10_2000));
    assert_eq!(rig.vtd.counters().psc_hits, 2);
    // IH = 0 for a page of this one: the next walk reads the new table and finds nothing (and caches the path to
    // it: the directory entries were valid).
    rig.submit(&[IotlbInv::pages(4, 0x20_6000, 0).into_bits()]);
    assert_eq!(rig.phys(0x08, 0x20_3000, Access::Read), None);
    assert_eq!(rig.vtd.counters().psc_hits, 2);
    // Back to the old table without an invalidation: the cached path still names the empty one.
    rig.mem.write_u64(slot, old).unwrap();
    assert_eq!(rig.phys(0x08, 0x20_3000, Access::Read), None);
    assert_eq!(rig.vtd.counters().psc_hits, 3);
    // With one (IH = 0) the walk reads the old table again; a domain-selective invalidation drops paths as well.
    rig.submit(&[IotlbInv::pages(4, 0x20_3000, 0).into_bits()]);
    assert_eq!(rig.phys(0x08, 0x20_3000, Access::Read), Some(0x10_3000));
    rig.mem.write_u64(slot, SlPte::entry(empty, true, true).into_bits()).unwrap();
    rig.submit(&[IotlbInv::domain(4).into_bits()]);
    assert_eq!(rig.phys(0x08, 0x20_4000, Access::Read), None);
    assert_eq!(rig.vtd.counters().psc_hits, 3);
}

/// A domain may hold a cached path and no translation at all (its only walk faulted at the leaf): a page-selective
/// invalidation without IH still drops the path.
#[test]
fn a_page_selective_invalidation_drops_a_path_of_a_domain_that_caches_no_translation() {
    let (mut rig, _root, pt) = legacy_rig(4, 0x08, 4);
    rig.map(pt, 4, 0x20_0000, 0x10_0000, 1, RW);
    rig.enable_qi(false);
    assert_eq!(rig.phys(0x08, 0x20_1000, Access::Read), None, "no leaf: the walk faults, its path is cached");
    // A new level-1 table for the region, with the page mapped, installed with an invalidation of that page.
    let slot = rig.pte_slot(pt, 4, 0x20_0000, 2);
    let table = rig.page();
    rig.mem.write_u64(table + 8, SlPte::entry(0x30_0000, true, true).into_bits()).unwrap();
    rig.mem.write_u64(slot, SlPte::entry(table, true, true).into_bits()).unwrap();
    rig.submit(&[IotlbInv::pages(4, 0x20_1000, 0).into_bits()]);
    assert_eq!(rig.phys(0x08, 0x20_1000, Access::Read), Some(0x30_0000));
}

#[test]
fn iotlb_invalidation_drops_exactly_the_right_entries() {
    let (mut rig, root, pt) = legacy_rig(4, 0x08, 4);
    let pt5 = rig.page();
    rig.set_legacy_context(root, 0x10, Rig::legacy_sl_context(pt5, 4, 5));
    for i in 0..4u64 {
        rig.map(pt, 4, i << 12, 0x10_0000 + (i << 12), 1, RW);
        rig.map(pt5, 4, i << 12, 0x20_0000 + (i << 12), 1, RW);
    }
    rig.map(pt, 4, 0x4000_0000, 0x60_0000, 2, RW);
    rig.enable_qi(false);
    let fill = |rig: &mut Rig| {
        for i in 0..4u64 {
            rig.phys(0x08, i << 12, Access::Read).unwrap();
            rig.phys(0x10, i << 12, Access::Read).unwrap();
        }
        rig.phys(0x08, 0x4000_0000, Access::Read).unwrap();
    };
    let d4 = |rig: &Rig| (0..4u64).map(|i| rig.vtd.iotlb_lookup(4, i << 12).is_some()).collect::<Vec<_>>();
    fill(&mut rig);
    assert_eq!(rig.vtd.cache_sizes().0, 9);
    // PSI of 2 pages (AM = 1) at 0x2000 in domain 4.
    rig.submit(&[IotlbInv::pages(4, 0x2000, 1).into_bits()]);
    assert_eq!(d4(&rig), [true, true, false, false]);
    assert_eq!(rig.vtd.cache_sizes().0, 7);
    // PSI of one 4 KiB page inside the 2 MiB mapping drops that mapping.
    rig.submit(&[IotlbInv::pages(4, 0x4010_0000, 0).into_bits()]);
    assert_eq!(rig.vtd.iotlb_lookup(4, 0x4000_0000), None);
    // Domain-selective leaves the other domain alone.
    rig.submit(&[IotlbInv::domain(4).into_bits()]);
    assert_eq!(rig.vtd.cache_sizes().0, 4);
    assert!(rig.vtd.iotlb_lookup(5, 0x3000).is_some());
    fill(&mut rig);
    rig.submit(&[IotlbInv::global().into_bits()]);
    assert_eq!(rig.vtd.cache_sizes().0, 0);
    // Granularity 0 and a mask beyond MAMV are invalid descriptors.
    rig.submit(&[IotlbInv::global().with_g(0).into_bits()]);
    assert_eq!(iqe(&mut rig), Some(iqei::RESERVED_FIELD));
}

#[test]
fn pasid_cache_and_pasid_iotlb_in_scalable_mode() {
    let mut rig = Rig::modern();
    let root = rig.page();
    let pt = rig.page();
    rig.set_sm_context(root, 0x08, PasidEntry::second_level(pt, 2, 7), false);
    rig.set_sm_context(root, 0x10, PasidEntry::pass_through(1), false);
    rig.map(pt, 4, 0, 0x8000, 1, RW);
    rig.enable_qi(true);
    rig.enable(root, true);
    rig.phys(0x08, 0, Access::Read).unwrap();
    rig.phys(0x10, 0, Access::Read).unwrap();
    assert_eq!(rig.vtd.cache_sizes(), (1, 2, 2));
    let pc = |g, did| PasidCacheInv::new().with_ty(DescType::PasidCache).with_g(g).with_did(did).into_bits();
    rig.submit(&[pc(0, 7)]);
    assert_eq!(rig.vtd.cache_sizes(), (1, 2, 1), "DID 7's PASID entry only");
    rig.submit(&[pc(3, 0)]);
    assert_eq!(rig.vtd.cache_sizes(), (1, 2, 0));
    let piotlb = PasidIotlbInv::new().with_ty(DescType::PasidIotlb).with_g(2).with_did(7);
    rig.submit(&[piotlb.into_bits()]);
    assert_eq!(rig.vtd.cache_sizes(), (0, 2, 0));
    assert_eq!(iqe(&mut rig), None);
    // PASID-cache granularity 2 is reserved.
    rig.submit(&[pc(2, 7)]);
    assert_eq!(iqe(&mut rig), Some(iqei::RESERVED_FIELD));
}

#[test]
fn bad_descriptor_stops_the_queue_until_iqe_is_cleared() {
    let mut rig = Rig::legacy();
    let q = rig.enable_qi(false);
    let bad = 0xfu128; // type 0xF: no such descriptor
    rig.submit(&[wait(1), bad, wait(3)]);
    assert_eq!(iqe(&mut rig), Some(iqei::INVALID_TYPE));
    assert_eq!(rig.iqh(), 1, "IQH points at the bad descriptor");
    assert_eq!(rig.mem.read_u32(STATUS).unwrap(), 1, "the wait before it ran");
    // Fault event: FECTL.IP held (masked at reset).
    assert!(EventCtl::from_bits(rig.r32(off::FECTL)).ip());
    // Writing IQT again does not restart fetching while IQE is set.
    let tail = rig.r64(off::IQT);
    rig.w64(off::IQT, tail);
    assert_eq!((rig.iqh(), rig.mem.read_u32(STATUS).unwrap()), (1, 1));
    // Linux's recovery: overwrite the bad slot with a wait, clear IQE (W1C), write IQT.
    rig.mem.write_u128(q + 16, wait(2)).unwrap();
    rig.w32(off::FSTS, Fsts::new().with_iqe(true).into_bits());
    assert_eq!(iqe(&mut rig), None);
    assert!(!EventCtl::from_bits(rig.r32(off::FECTL)).ip());
    rig.w64(off::IQT, tail);
    assert_eq!(rig.iqh(), 3);
    assert_eq!(rig.mem.read_u32(STATUS).unwrap(), 3);
    assert_eq!(rig.vtd.counters().qi_errors, 1);
}

#[test]
fn reserved_bits_and_queue_shape_errors() {
    // A reserved bit in a context-cache descriptor.
    let mut rig = Rig::legacy();
    rig.enable_qi(false);
    rig.submit(&[ContextCacheInv::global().into_bits() | 1 << 100]);
    assert_eq!(iqe(&mut rig), Some(iqei::RESERVED_FIELD));
    assert_eq!(rig.iqh(), 0);

    // 256-bit mode: a non-zero upper half is reserved; an odd IQT is misaligned.
    let mut rig = Rig::modern();
    let q = rig.enable_qi(true);
    rig.mem.write_u64(q + 16, 1).unwrap();
    rig.w64(off::IQT, IqPtr::from_index(1, true).into_bits());
    assert_eq!(iqe(&mut rig), Some(iqei::RESERVED_FIELD));
    rig.mem.write_u64(q + 16, 0).unwrap();
    rig.mem.write_u128(q, wait(5)).unwrap();
    rig.w32(off::FSTS, Fsts::new().with_iqe(true).into_bits());
    rig.w64(off::IQT, 0x10);
    assert_eq!(iqe(&mut rig), Some(iqei::INVALID_TAIL));
    rig.w32(off::FSTS, Fsts::new().with_iqe(true).into_bits());
    rig.w64(off::IQT, 0x20);
    assert_eq!((iqe(&mut rig), rig.iqh()), (None, 1));
    assert_eq!(rig.mem.read_u32(STATUS).unwrap(), 5);

    // IQT beyond a one-page queue.
    let mut rig = Rig::legacy();
    rig.enable_qi(false);
    rig.w64(off::IQT, IqPtr::from_index(300, false).into_bits());
    assert_eq!(iqe(&mut rig), Some(iqei::INVALID_TAIL));

    // 256-bit descriptors on a unit without scalable mode; 128-bit ones in scalable mode.
    let mut rig = Rig::legacy();
    rig.enable_qi(true);
    rig.submit(&[wait(1)]);
    assert_eq!(iqe(&mut rig), Some(iqei::INVALID_WIDTH));
    let mut rig = Rig::modern();
    let root = rig.page();
    rig.enable(root, true);
    rig.enable_qi(false);
    rig.submit(&[wait(1)]);
    assert_eq!(iqe(&mut rig), Some(iqei::INVALID_WIDTH));

    // A queue outside RAM: the fetch fails.
    let mut rig = Rig::legacy();
    rig.w64(off::IQA, Iqa::new().with_iqa(1 << 28).into_bits());
    rig.gcmd(Gcmd::new().with_qie(true));
    rig.w64(off::IQT, IqPtr::from_index(1, false).into_bits());
    assert_eq!(iqe(&mut rig), Some(iqei::FETCH_ERROR));
}

#[test]
fn iqa_latches_at_enable_and_disable_resets_iqh() {
    let mut rig = Rig::legacy();
    let q = rig.enable_qi(false);
    rig.submit(&[wait(1)]);
    // Rewriting IQA while enabled changes nothing: the latched queue is used.
    rig.w64(off::IQA, Iqa::new().with_iqa(1 << 20).into_bits());
    rig.mem.write_u128(q + 16, wait(2)).unwrap();
    rig.w64(off::IQT, IqPtr::from_index(2, false).into_bits());
    assert_eq!(rig.mem.read_u32(STATUS).unwrap(), 2);
    // Disabling resets IQH; re-enabling latches the new IQA.
    rig.w32(off::GCMD, 0);
    assert!(!rig.gsts().qies());
    assert_eq!(rig.iqh(), 0);
    // Posting with QI off does nothing until QIE (which fetches what is already posted).
    rig.w64(off::IQA, Iqa::new().with_iqa(q >> 12).into_bits());
    rig.w64(off::IQT, IqPtr::from_index(1, false).into_bits());
    rig.mem.write_u128(q, wait(7)).unwrap();
    assert_eq!(rig.mem.read_u32(STATUS).unwrap(), 2);
    rig.gcmd(Gcmd::new().with_qie(true));
    assert_eq!(rig.mem.read_u32(STATUS).unwrap(), 7);
    assert_eq!(rig.iqh(), 1);
    // Units without QI ignore QIE.
    let mut cfg = VtdConfig::legacy_only();
    cfg.ecap = cfg.ecap.with_qi(false);
    let mut rig = Rig::new(cfg);
    rig.gcmd(Gcmd::new().with_qie(true));
    assert!(!rig.gsts().qies());
}

/// The properties' configuration: `cases` cases, a failing case's seed saved in
/// `vtd_qi.proptest-regressions` next to this file and replayed first on the next run.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        // A third less generation time than the default ChaCha; the inputs need no cryptographic quality.
        rng_algorithm: RngAlgorithm::XorShift,
        // A fixed seed: every run sweeps the same cases, so a coverage claim passes or fails the same way each time
        // (new cases come from the fuzz targets).
        rng_seed: RngSeed::Fixed(0x4841_4e44_4f56_4552),
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    }
}

/// A queue slot's low 128 bits: a valid wait, garbage with any type in the low 7 bits, or a valid global
/// IOTLB invalidation.
fn descriptor() -> impl Strategy<Value = u128> {
    prop_oneof![
        1 => any::<u32>().prop_map(wait),
        1 => (any::<u64>(), 0..0x80u128).prop_map(|(hi, ty)| (hi as u128) << 64 | ty),
        2 => Just(IotlbInv::global().into_bits()),
    ]
}

#[test]
fn garbage_queues_never_panic_and_work_is_bounded() {
    // The largest queue (QS = 7: 2^15 slots of 128 bits, 2^14 of 256), mostly garbage, with valid waits
    // sprinkled in (4096 generated slots, repeated); then tail writes, each perhaps followed by Linux's
    // recovery from an IQE.
    let slots = prop::collection::vec(descriptor(), 4096);
    let tails = prop::collection::vec((any::<u64>().prop_map(|t| t & 0x7_fff0), any::<bool>()), 200);
    proptest!(config(8), |(wide in any::<bool>(), slots in slots, tails in tails)| {
        let mut rig = Rig::modern();
        let q = rig.page();
        let iqa = Iqa::new().with_iqa(q >> 12).with_dw(wide).with_qs(7);
        rig.w64(off::IQA, iqa.into_bits());
        rig.gcmd(Gcmd::new().with_qie(true));
        let entries = iqa.entries() as u64;
        let size = iqa.descriptor_size() as u64;
        for (i, d) in slots.iter().cycle().take(entries as usize).enumerate() {
            rig.mem.write_u128(q + i as u64 * size, *d).unwrap();
        }
        let before = rig.vtd.counters().qi_descriptors;
        for (tail, recover) in &tails {
            rig.w64(off::IQT, *tail);
            if iqe(&mut rig).is_some() && *recover {
                // Linux's recovery: replace the offending descriptor, clear IQE.
                let head = rig.iqh() as u64;
                rig.mem.write_u128(q + head * size, wait(0)).unwrap();
                rig.w32(off::FSTS, Fsts::new().with_iqe(true).into_bits());
            }
        }
        let done = rig.vtd.counters().qi_descriptors - before;
        prop_assert!(done <= tails.len() as u64 * entries, "at most one lap per IQT write: {done}");
        prop_assert!(done > 0);
    });
}
