//! DMA translation through tables written as raw entries: legacy and scalable mode, page sizes,
//! pass-through, faults and their records, FPD, stale IOTLB entries, translation off, garbage sweeps.

mod common;

use std::cell::Cell;

use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, RngAlgorithm, RngSeed};

use common::{legacy_rig, Rig, RO, RW};
use iommu_driver::PhysMem;
use iommu_emu::{Access, DmaOutcome, Translation, VtdConfig};
use iommu_spec::vtd::{
    off, ContextEntry, FaultReason, FaultRecord, Gcmd, IotlbInv, IotlbReg, PasidEntry, Pgtt, RootEntry, RtAddr, SlPte,
    SourceId, TranslationType,
};

const SID: u16 = SourceId::new(0, 3, 0).0;
const DID: u16 = 5;

#[test]
fn legacy_four_level_4k_2m_1g() {
    let (mut rig, _, pt) = legacy_rig(4, SID, DID);
    rig.map(pt, 4, 0x1000, 0x5000, 1, RW);
    rig.map(pt, 4, 0x4020_0000, 0x60_0000, 2, RW);
    rig.map(pt, 4, 0x80_4000_0000, 0x4000_0000, 3, RO);
    assert_eq!(rig.phys(SID, 0x1abc, Access::Write), Some(0x5abc));
    assert_eq!(rig.phys(SID, 0x402f_f123, Access::Read), Some(0x6f_f123));
    assert_eq!(rig.phys(SID, 0x80_7fff_fff8, Access::Read), Some(0x7fff_fff8));
    // Read-only 1 GiB page: writes fault with "write not allowed".
    assert_eq!(rig.fault_code(SID, 0x80_4000_0000, Access::Write), FaultReason::WriteNotAllowed.0 as u16);
    // The DMA lands where the translation says, up to the unmapped page after it.
    let out = rig.dma_write(SID, 0x1ff8, &[0xab; 16]);
    assert!(matches!(out, DmaOutcome::Fault { iova: 0x2000, done: 8, .. }), "{out:?}");
    assert_eq!(rig.mem.read_u64(0x5ff8).unwrap(), 0xabab_abab_abab_abab);
}

#[test]
fn legacy_three_level_and_address_width() {
    let (mut rig, _, pt) = legacy_rig(3, SID, DID);
    rig.map(pt, 3, 0x7f_ffff_f000, 0x9000, 1, RW);
    rig.map(pt, 3, 0x20_0000, 0x40_0000, 2, RW);
    assert_eq!(rig.phys(SID, 0x7f_ffff_f010, Access::Read), Some(0x9010));
    assert_eq!(rig.phys(SID, 0x3f_ffff, Access::Read), Some(0x5f_ffff));
    // 39-bit table: bit 39 is beyond the address width.
    assert_eq!(rig.fault_code(SID, 1 << 39, Access::Read), FaultReason::AddressBeyondMgaw.0 as u16);
}

#[test]
fn large_pages_respect_sllps_and_reserved_bits() {
    let mut cfg = VtdConfig::legacy_only();
    cfg.cap = cfg.cap.with_sllps(0b01); // 2 MiB only
    let mut rig = Rig::new(cfg);
    let root = rig.page();
    let pt = rig.page();
    rig.set_legacy_context(root, SID, Rig::legacy_sl_context(pt, 4, DID));
    rig.enable(root, false);
    rig.map(pt, 4, 0x4000_0000, 0x4000_0000, 3, RW);
    assert_eq!(
        rig.fault_code(SID, 0x4000_0000, Access::Read),
        FaultReason::PteReserved.0 as u16,
        "1 GiB page without SLLPS bit 1"
    );
    // A 2 MiB leaf with address bits below 2 MiB set.
    rig.map(pt, 4, 0x20_0000, 0x30_1000, 2, RW);
    assert_eq!(rig.fault_code(SID, 0x20_0000, Access::Read), FaultReason::PteReserved.0 as u16);
}

#[test]
fn legacy_translation_types() {
    let mut rig = Rig::legacy();
    let root = rig.page();
    let pt = rig.page();
    let tt = |t| Rig::legacy_sl_context(pt, 4, DID).with_tt(t);
    rig.set_legacy_context(root, 0x10, tt(TranslationType::PassThrough));
    rig.set_legacy_context(root, 0x11, tt(TranslationType::MultiLevelDevTlb));
    rig.set_legacy_context(root, 0x12, tt(TranslationType::Reserved));
    rig.set_legacy_context(root, 0x13, Rig::legacy_sl_context(pt, 6, DID)); // AW 4: not in SAGAW
    rig.enable(root, false);
    assert_eq!(rig.phys(0x10, 0x1234_5678, Access::Write), Some(0x1234_5678));
    let invalid = FaultReason::ContextInvalid.0 as u16;
    assert_eq!(rig.fault_code(0x11, 0, Access::Read), invalid, "TT 1 needs ECAP.DT");
    assert_eq!(rig.fault_code(0x12, 0, Access::Read), invalid, "TT 3");
    assert_eq!(rig.fault_code(0x13, 0, Access::Read), invalid, "AW 4");

    let mut cfg = VtdConfig::legacy_only();
    cfg.ecap = cfg.ecap.with_pt(false);
    let mut rig = Rig::new(cfg);
    let root = rig.page();
    rig.set_legacy_context(root, 0x10, tt(TranslationType::PassThrough));
    rig.enable(root, false);
    assert_eq!(rig.fault_code(0x10, 0, Access::Read), invalid, "TT 2 needs ECAP.PT");
}

#[test]
fn unmapped_iova_faults_and_is_recorded() {
    let (mut rig, _, pt) = legacy_rig(4, SID, DID);
    rig.map(pt, 4, 0x1000, 0x5000, 1, RW);
    let t = rig.translate(SID, 0x7_7123, Access::Read);
    let Translation::Fault(info) = t else { panic!("{t:?}") };
    assert_eq!(info.code, FaultReason::ReadNotAllowed.0 as u16);
    assert!(info.recorded);
    let rec = rig.r64(off::frcd(0x22, 0)) as u128 | (rig.r64(off::frcd(0x22, 0) + 8) as u128) << 64;
    let rec = FaultRecord::from_bits(rec);
    assert!(rec.f());
    assert_eq!(rec.fr(), FaultReason::ReadNotAllowed);
    assert_eq!(rec.sid(), SID);
    assert_eq!(rec.address(), 0x7_7000);
    assert!(rec.t(), "T = 1: read");
    // A write to it reports the write code; DMA stops at the fault.
    let out = rig.dma_write(SID, 0x7_7000, &[1; 8]);
    let DmaOutcome::Fault { iova, done, info } = out else { panic!("{out:?}") };
    assert_eq!((iova, done), (0x7_7000, 0));
    assert_eq!(info.code, FaultReason::WriteNotAllowed.0 as u16);
    assert_eq!(rig.vtd.fault_count(), 2);
    assert_eq!(rig.vtd.recorded_faults().len(), 2);
}

#[test]
fn root_and_context_faults_in_legacy_mode() {
    let mut rig = Rig::legacy();
    let root = rig.page();
    rig.enable(root, false);
    let code = |r: FaultReason| r.0 as u16;
    assert_eq!(rig.fault_code(0x0200, 0, Access::Read), code(FaultReason::RootNotPresent));
    rig.mem.write_u128(root + 2 * 16, RootEntry::new().with_context_table(0x30_0000).into_bits() | 0x10).unwrap();
    assert_eq!(rig.fault_code(0x0200, 0, Access::Read), code(FaultReason::RootReserved));
    let ct = rig.legacy_ctx_table(root, 1);
    assert_eq!(rig.fault_code(0x0105, 0, Access::Read), code(FaultReason::ContextNotPresent));
    let bad = ContextEntry::new().with_present(true).into_bits() | 1 << 100;
    rig.mem.write_u128(ct + 6 * 16, bad).unwrap();
    assert_eq!(rig.fault_code(0x0106, 0, Access::Read), code(FaultReason::ContextReserved));
    // A page table outside RAM: the walk's read fails.
    let ce = Rig::legacy_sl_context(1 << 40, 4, DID);
    rig.set_legacy_context(root, 0x0107, ce);
    assert_eq!(rig.fault_code(0x0107, 0, Access::Read), code(FaultReason::NextLevelInvalid));
    // A root table outside RAM.
    rig.w64(off::RTADDR, 1 << 40);
    rig.gcmd(iommu_spec::vtd::Gcmd::new().with_srtp(true));
    assert_eq!(rig.fault_code(0x0300, 0, Access::Read), code(FaultReason::RootTableInvalid));
}

#[test]
fn fpd_suppresses_the_record_not_the_block() {
    let mut rig = Rig::legacy();
    let root = rig.page();
    let pt = rig.page();
    let ce = Rig::legacy_sl_context(pt, 4, DID).with_fpd(true);
    rig.set_legacy_context(root, SID, ce);
    // FPD on a context entry that is not present applies too (spec 9.3).
    let np = ContextEntry::new().with_fpd(true);
    rig.set_legacy_context(root, SID + 1, np);
    rig.enable(root, false);
    let t = rig.translate(SID, 0x1000, Access::Write);
    assert!(matches!(t, Translation::Fault(f) if !f.recorded && f.code == 5));
    let t = rig.translate(SID + 1, 0x1000, Access::Write);
    assert!(matches!(t, Translation::Fault(f) if !f.recorded && f.code == 2));
    assert!(rig.vtd.recorded_faults().is_empty());
    assert_eq!(rig.vtd.counters().faults_suppressed, 2);
    // Root-level faults are found before any context entry: always recorded.
    let t = rig.translate(0x4400, 0, Access::Read);
    assert!(matches!(t, Translation::Fault(f) if f.recorded && f.code == 1));
}

#[test]
fn stale_iotlb_entry_survives_until_invalidated() {
    let (mut rig, _, pt) = legacy_rig(4, SID, DID);
    rig.map(pt, 4, 0x10_0000, 0x20_0000, 1, RW);
    assert_eq!(rig.phys(SID, 0x10_0010, Access::Write), Some(0x20_0010));
    // The driver remaps the IOVA to another page and forgets the IOTLB flush.
    let slot = rig.pte_slot(pt, 4, 0x10_0000, 1);
    rig.mem.write_u64(slot, SlPte::entry(0x30_0000, true, true).into_bits()).unwrap();
    assert_eq!(
        rig.phys(SID, 0x10_0010, Access::Write),
        Some(0x20_0010),
        "a stale IOTLB entry that a missing invalidation would leave"
    );
    // Unmapping without a flush does not stop the device either.
    rig.mem.write_u64(slot, 0).unwrap();
    assert!(rig.dma_write(SID, 0x10_0000, &[9; 4]).is_done());
    assert_eq!(rig.mem.read_u32(0x20_0000).unwrap(), 0x0909_0909);
    // Page-selective invalidation of another domain changes nothing; of this one, the unmap shows.
    rig.enable_qi(false);
    rig.submit(&[IotlbInv::pages(DID + 1, 0x10_0000, 0).into_bits()]);
    assert_eq!(rig.phys(SID, 0x10_0000, Access::Read), Some(0x20_0000));
    rig.submit(&[IotlbInv::pages(DID, 0x10_0000, 0).into_bits()]);
    assert_eq!(rig.fault_code(SID, 0x10_0000, Access::Read), FaultReason::ReadNotAllowed.0 as u16);
}

#[test]
fn caching_off_sees_every_change() {
    let (mut rig, _, pt) = legacy_rig(4, SID, DID);
    rig.vtd.set_caching(false);
    rig.map(pt, 4, 0x10_0000, 0x20_0000, 1, RW);
    assert_eq!(rig.phys(SID, 0x10_0000, Access::Read), Some(0x20_0000));
    let slot = rig.pte_slot(pt, 4, 0x10_0000, 1);
    rig.mem.write_u64(slot, SlPte::entry(0x30_0000, true, true).into_bits()).unwrap();
    assert_eq!(rig.phys(SID, 0x10_0000, Access::Read), Some(0x30_0000));
    let c = rig.vtd.counters();
    assert_eq!((c.walks, c.iotlb_hits, c.context_hits), (2, 0, 0));
    assert_eq!(rig.vtd.cache_sizes(), (0, 0, 0));
}

#[test]
fn translation_off_passes_through() {
    let mut rig = Rig::modern();
    assert!(!rig.vtd.translation_enabled());
    assert_eq!(rig.phys(SID, 0x1234_5678, Access::Write), Some(0x1234_5678));
    assert!(rig.dma_write(SID, 0x4000, &[5; 4]).is_done());
    assert_eq!(rig.mem.read_u32(0x4000).unwrap(), 0x0505_0505);
    assert_eq!(rig.vtd.counters().untranslated, 2);
}

#[test]
fn scalable_second_level_and_pass_through() {
    let mut rig = Rig::modern();
    let root = rig.page();
    let pt = rig.page();
    let sid_hi = SourceId::new(0, 0x1f, 7).0; // devfn 0xff: upper context table
    rig.set_sm_context(root, SID, PasidEntry::second_level(pt, 2, DID), false);
    rig.set_sm_context(root, sid_hi, PasidEntry::pass_through(1), false);
    rig.map(pt, 4, 0x1000, 0xa000, 1, RO);
    rig.enable(root, true);
    assert_eq!(rig.phys(SID, 0x1008, Access::Read), Some(0xa008));
    assert_eq!(rig.phys(sid_hi, 0xdead_0000, Access::Write), Some(0xdead_0000));
    // Scalable-mode fault codes.
    let code = |r: FaultReason| r.0 as u16;
    assert_eq!(rig.fault_code(SID, 0x1000, Access::Write), code(FaultReason::SmNoWrite));
    assert_eq!(rig.fault_code(SID, 0x2000, Access::Read), code(FaultReason::SmSlPermission));
    assert_eq!(rig.fault_code(SID, 1 << 48, Access::Read), code(FaultReason::SmAddressBeyondHaw));
    assert_eq!(rig.fault_code(0x0500, 0, Access::Read), code(FaultReason::SmRootNotPresent));
    assert_eq!(rig.fault_code(SID + 1, 0, Access::Read), code(FaultReason::SmContextNotPresent));
    let c = rig.vtd.counters();
    assert!(c.pasid_hits > 0 && c.context_hits > 0 && c.walks > 0);
}

#[test]
fn scalable_pgtt_values() {
    let mut rig = Rig::modern();
    let root = rig.page();
    let pt = rig.page();
    for pgtt in 0..8u8 {
        let mut pe = PasidEntry::second_level(pt, 2, DID);
        pe.0[0] = iommu_spec::vtd::PasidEntryQw0::from_bits(pe.0[0]).with_pgtt(Pgtt(pgtt)).into_bits();
        rig.set_sm_context(root, 0x0100 + pgtt as u16, pe, false);
    }
    rig.map(pt, 4, 0, 0x7000, 1, RW);
    rig.enable(root, true);
    for pgtt in 0..8u8 {
        let t = rig.translate(0x0100 + pgtt as u16, 0x10, Access::Read);
        let want = match pgtt {
            2 => Translation::Ok { phys: 0x7010 },
            4 => Translation::Ok { phys: 0x10 },
            _ => {
                assert!(
                    matches!(t, Translation::Fault(f) if f.code == FaultReason::SmPasidEntryInvalid.0 as u16),
                    "PGTT {pgtt}: {t:?}"
                );
                continue;
            }
        };
        assert_eq!(t, want, "PGTT {pgtt}");
    }
}

/// The properties' configuration: `cases` cases, a failing case's seed saved in
/// `vtd_translate.proptest-regressions` next to this file and replayed first on the next run.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        // A third less generation time than the default ChaCha; the inputs need no cryptographic quality.
        rng_algorithm: RngAlgorithm::XorShift,
        // A fixed seed: every run sweeps the same cases, so a coverage claim passes or fails the same way each time
        // (new cases come from the fuzz targets).
        rng_seed: RngSeed::Fixed(0x4841_4e44_4f56_4552),
        max_shrink_iters: 1024,
        ..ProptestConfig::default()
    }
}

/// One round: a root-table entry overwritten, a qword of table space overwritten, perhaps the caches
/// flushed (so fresh garbage is walked, not cached entries), then one translation.
#[derive(Clone, Debug)]
struct Round {
    slot: u64,
    root_entry: u128,
    table_qword: (u64, u64),
    flush: bool,
    sid: u16,
    iova: u64,
    write: bool,
}

fn round() -> impl Strategy<Value = Round> {
    // Plausible root entries: present, pointing into RAM, the upper half empty or a second pointer.
    let plausible = (0..common::RAM >> 12, any::<bool>()).prop_map(|(page, both)| {
        let lo = (page << 12 | 1) as u128;
        lo | if both { lo << 64 } else { 0 }
    });
    let root_entry = prop_oneof![2 => any::<u128>(), 1 => plausible];
    let table_qword = (0..1u64 << 20, any::<u64>()).prop_map(|(q, v)| (common::TABLES.start + 8 * q, v));
    let iova = (any::<u64>(), 0..64u32).prop_map(|(v, shift)| v >> shift);
    (0..256u64, root_entry, table_qword, prop::bool::weighted(0.002), any::<u16>(), iova, any::<bool>()).prop_map(
        |(slot, root_entry, table_qword, flush, sid, iova, write)| Round {
            slot,
            root_entry,
            table_qword,
            flush,
            sid,
            iova,
            write,
        },
    )
}

#[test]
fn garbage_tables_never_panic_and_every_fault_has_a_reason() {
    let faults = [Cell::new(0u32), Cell::new(0u32)];
    let rounds = prop::collection::vec(round(), 1..600);
    proptest!(config(20), |(smt in any::<bool>(), rounds in rounds)| {
        let mut rig = Rig::modern();
        let root = rig.page();
        rig.enable(root, smt);
        // Every TT value with a sane table, in legacy mode.
        let pt = rig.page();
        for tt in 0..4u8 {
            let ce = Rig::legacy_sl_context(pt, 4, 1).with_tt(TranslationType::from_bits(tt));
            rig.set_legacy_context(root, 0xff00 | tt as u16, ce);
        }
        for r in rounds {
            rig.mem.write_u128(root + r.slot * 16, r.root_entry).unwrap();
            rig.mem.write_u64(r.table_qword.0, r.table_qword.1).unwrap();
            if r.flush {
                rig.vtd.set_caching(true);
            }
            let access = if r.write { Access::Write } else { Access::Read };
            if let Translation::Fault(f) = rig.translate(r.sid, r.iova, access) {
                prop_assert!(f.code != 0, "{f:?}");
                faults[smt as usize].set(faults[smt as usize].get() + 1);
            }
        }
    });
    // Garbage must fault somewhere in both modes, or the property proves nothing.
    assert!(faults.iter().all(|f| f.get() > 0), "faults (legacy, scalable): {faults:?}");
}

/// The front cache answers only while nothing could have changed the answer: a cache flush (by the IOTLB
/// register, or all caches at once), a root-pointer latch and TE going off each end its entry, and with caching
/// off it holds none. After the flush the full path sees a remapped page; with TE off the request passes
/// untranslated.
#[test]
fn front_entries_end_at_flushes_latches_and_enable_changes() {
    let (mut rig, root, pt) = legacy_rig(4, SID, DID);
    rig.map(pt, 4, 0x1000, 0x5000, 1, RW);
    let front = |rig: &Rig| rig.vtd.front_answers(SID as u32, 0x1008, Access::Read);
    assert_eq!(front(&rig), None);
    assert_eq!(rig.phys(SID, 0x1008, Access::Read), Some(0x5008));
    assert_eq!(front(&rig), Some(0x5008), "a translation fills the front");
    // Remapped in memory without a flush: the IOTLB (and so the front) still answers the old page.
    rig.map(pt, 4, 0x1000, 0x6000, 1, RW);
    assert_eq!(rig.phys(SID, 0x1008, Access::Read), Some(0x5008));
    let iotlb = off::iotlb(rig.vtd.config().ecap.iro());
    rig.w64(iotlb, IotlbReg::new().with_ivt(true).with_iirg(1).into_bits());
    assert_eq!(front(&rig), None, "a global IOTLB invalidation");
    assert_eq!(rig.phys(SID, 0x1008, Access::Read), Some(0x6008));
    assert_eq!(front(&rig), Some(0x6008));
    rig.vtd.drop_caches();
    assert_eq!(front(&rig), None, "all caches dropped");
    assert_eq!(rig.phys(SID, 0x1008, Access::Read), Some(0x6008));
    rig.w64(off::RTADDR, RtAddr::from_table(root, false).into_bits());
    rig.gcmd(Gcmd::new().with_srtp(true));
    assert_eq!(front(&rig), None, "a root-pointer latch");
    assert_eq!(rig.phys(SID, 0x1008, Access::Read), Some(0x6008));
    let te_off = rig.gsts().persistent_cmd().with_te(false);
    rig.w32(off::GCMD, te_off.into_bits());
    assert_eq!(front(&rig), None, "TE off");
    assert_eq!(rig.phys(SID, 0x1008, Access::Read), Some(0x1008), "untranslated with TE off");
    rig.gcmd(Gcmd::new().with_te(true));
    assert_eq!(rig.phys(SID, 0x1008, Access::Read), Some(0x6008));
    rig.vtd.set_caching(false);
    assert_eq!(front(&rig), None, "caching off");
    assert_eq!(rig.phys(SID, 0x1008, Access::Read), Some(0x6008));
    assert_eq!(front(&rig), None, "nothing is kept with caching off");
}
