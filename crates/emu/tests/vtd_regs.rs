//! The register file at raw offsets: latching, full-state GCMD, read-only and reserved bits, W1C
//! fault records and status, register-based invalidation.

mod common;

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{FileFailurePersistence, RngAlgorithm, RngSeed};

use common::{legacy_rig, Rig, RW};
use iommu_driver::PhysMem;
use iommu_emu::{Access, Translation, VtdConfig};
use iommu_spec::vtd::{
    off, Ccmd, EventCtl, FaultReason, FaultRecord, Fsts, Gcmd, IotlbReg, Iva, RtAddr, SlPte, TranslationType,
};

const FRCD0: usize = 0x220;
const IVA: usize = 0xf0;
const IOTLB: usize = 0xf8;

#[test]
fn reset_values_and_read_only_registers() {
    let mut rig = Rig::modern();
    let cap = rig.r64(off::CAP);
    let ecap = rig.r64(off::ECAP);
    assert_eq!(cap, VtdConfig::default().cap.into_bits());
    assert_eq!((cap >> 24) & 0x3ff, 0x22, "FRO");
    assert_eq!((ecap >> 8) & 0x3ff, 0xf, "IRO");
    rig.w64(off::CAP, !cap);
    rig.w32(off::ECAP + 4, 0);
    rig.w32(off::GSTS, u32::MAX);
    rig.w32(off::VER, 0);
    assert_eq!(rig.r64(off::CAP), cap);
    assert_eq!(rig.r64(off::ECAP), ecap);
    assert_eq!(rig.r32(off::GSTS), 0);
    assert_eq!(rig.r32(off::VER), 0x30);
    // FECTL and IECTL come out of reset masked.
    assert_eq!(rig.r32(off::FECTL), 0x8000_0000);
    assert_eq!(rig.r32(off::IECTL), 0x8000_0000);
    // GCMD is write-only.
    rig.w32(off::GCMD, Gcmd::new().with_te(true).into_bits());
    assert_eq!(rig.r32(off::GCMD), 0);
    assert!(rig.gsts().tes());
}

#[test]
fn reserved_bits_read_zero_and_halves_compose() {
    let mut rig = Rig::legacy();
    // RTADDR: bits 11:0 are reserved without scalable mode (SMT included).
    rig.w64(off::RTADDR, 0x1234_5fff);
    assert_eq!(rig.r64(off::RTADDR), 0x1234_5000);
    rig.w32(off::RTADDR + 4, 0xab);
    assert_eq!(rig.r64(off::RTADDR), 0xab_1234_5000);
    assert_eq!(rig.r32(off::RTADDR + 4), 0xab);
    // With scalable mode SMT is writable.
    let mut sm = Rig::modern();
    sm.w64(off::RTADDR, 0x1234_5fff);
    assert_eq!(sm.r64(off::RTADDR), 0x1234_5400);
    // IQT keeps only the index bits; FEADDR only 31:2.
    rig.w64(off::IQT, u64::MAX);
    assert_eq!(rig.r64(off::IQT), 0x7_fff0);
    rig.w32(off::FEADDR, u32::MAX);
    assert_eq!(rig.r32(off::FEADDR), 0xffff_fffc);
    // PMEN is read-only without PLMR/PHMR; IQH is hardware's.
    rig.w32(off::PMEN, u32::MAX);
    rig.w64(off::IQH, u64::MAX);
    assert_eq!((rig.r32(off::PMEN), rig.r64(off::IQH)), (0, 0));
    // Misaligned and out-of-range accesses are ignored.
    rig.w64(off::RTADDR + 4, u64::MAX);
    rig.w32(0x1000, 1);
    assert_eq!(rig.r64(off::RTADDR), 0xab_1234_5000);
    assert_eq!(rig.r64(0x2000), 0);
    assert_eq!(rig.vtd.counters().bad_mmio, 3);
}

#[test]
fn rtaddr_latches_only_on_srtp() {
    let mut rig = Rig::legacy();
    let pt_root = rig.page();
    let empty_root = rig.page();
    let pt_ctx =
        iommu_spec::vtd::ContextEntry::new().with_present(true).with_tt(TranslationType::PassThrough).with_did(1);
    rig.set_legacy_context(pt_root, 0x0008, pt_ctx);
    // RTADDR alone changes nothing: TE with no SRTP walks the reset root pointer (0).
    rig.w64(off::RTADDR, RtAddr::from_table(pt_root, false).into_bits());
    rig.gcmd(Gcmd::new().with_te(true));
    assert!(!rig.gsts().rtps());
    assert_eq!(rig.vtd.active_root().into_bits(), 0);
    assert!(rig.phys(0x0008, 0x1000, Access::Read).is_none());
    // SRTP latches it and sets RTPS; translation stays on.
    rig.gcmd(Gcmd::new().with_srtp(true));
    assert!(rig.gsts().rtps() && rig.gsts().tes());
    assert_eq!(rig.phys(0x0008, 0x1000, Access::Read), Some(0x1000));
    // A new RTADDR under live translation: nothing until SRTP...
    rig.w64(off::RTADDR, RtAddr::from_table(empty_root, false).into_bits());
    assert_eq!(rig.vtd.active_root().table(), pt_root);
    rig.gcmd(Gcmd::new().with_srtp(true));
    assert_eq!(rig.vtd.active_root().table(), empty_root);
    // ...and SRTP without ESRTPS leaves the cached context: the old translation survives...
    assert_eq!(rig.phys(0x0008, 0x2000, Access::Read), Some(0x2000));
    // ...until a global context-cache invalidation through CCMD.
    rig.w64(off::CCMD, Ccmd::new().with_icc(true).with_cirg(1).into_bits());
    let fault = rig.translate(0x0008, 0x2000, Access::Read);
    assert!(matches!(fault, Translation::Fault(f) if f.code == FaultReason::RootNotPresent.0 as u16));
}

#[test]
fn esrtps_flushes_on_srtp() {
    let mut cfg = VtdConfig::legacy_only();
    cfg.cap = cfg.cap.with_esrtps(true);
    let mut rig = Rig::new(cfg);
    let root = rig.page();
    let pt_ctx = iommu_spec::vtd::ContextEntry::new().with_present(true).with_tt(TranslationType::PassThrough);
    rig.set_legacy_context(root, 0x0008, pt_ctx);
    rig.enable(root, false);
    assert!(rig.phys(0x0008, 0, Access::Read).is_some());
    let empty = rig.page();
    rig.w64(off::RTADDR, RtAddr::from_table(empty, false).into_bits());
    rig.gcmd(Gcmd::new().with_srtp(true));
    assert!(rig.phys(0x0008, 0, Access::Read).is_none());
}

#[test]
fn gcmd_is_full_state() {
    let (mut rig, _, _) = legacy_rig(4, 0x10, 3);
    assert!(rig.gsts().tes());
    // A command written without TE turns translation off: DMA passes through untranslated.
    rig.w32(off::GCMD, Gcmd::new().with_srtp(true).into_bits());
    let st = rig.gsts();
    assert!(!st.tes() && st.rtps());
    assert_eq!(rig.phys(0x10, 0xabc_d000, Access::Write), Some(0xabc_d000));
    // WBF completes at once; IRE/CFI are reflected (ECAP.IR); SIRTP latches IRTA.
    rig.w64(off::IRTA, 0x7000_000f);
    rig.w32(off::GCMD, Gcmd::new().with_wbf(true).with_ire(true).with_sirtp(true).into_bits());
    let st = rig.gsts();
    assert!(!st.wbfs() && st.ires() && st.irtps() && !st.tes());
    assert_eq!(rig.vtd.active_irta().into_bits(), 0x7000_000f);
    rig.w32(off::GCMD, 0);
    assert!(!rig.gsts().ires(), "IRE dropped by a full-state write");
}

/// Make `sid` fault once (unmapped IOVA, legacy mode).
fn fault_once(rig: &mut Rig, sid: u16, iova: u64) -> bool {
    match rig.translate(sid, iova, Access::Write) {
        Translation::Fault(f) => f.recorded,
        Translation::Ok { .. } => panic!("mapped"),
    }
}

fn frcd(rig: &mut Rig, n: usize) -> FaultRecord {
    let lo = rig.r64(FRCD0 + 16 * n) as u128;
    let hi = rig.r64(FRCD0 + 16 * n + 8) as u128;
    FaultRecord::from_bits(lo | hi << 64)
}

#[test]
fn fault_records_w1c_ppf_fri_and_overflow() {
    let (mut rig, _, _) = legacy_rig(4, 0x10, 3);
    assert!(fault_once(&mut rig, 0x10, 0x5000));
    let fsts = Fsts::from_bits(rig.r32(off::FSTS));
    assert!(fsts.ppf() && !fsts.pfo());
    assert_eq!(fsts.fri(), 0);
    // The record, read the way Linux reads it.
    let hi = rig.r32(FRCD0 + 12);
    assert_eq!(hi >> 31, 1, "F");
    assert_eq!(hi & 0xff, FaultReason::WriteNotAllowed.0 as u32);
    assert_eq!(hi >> 30 & 1, 0, "T = write");
    assert_eq!(rig.r32(FRCD0 + 8) & 0xffff, 0x10, "SID");
    assert_eq!(rig.r64(FRCD0), 0x5000, "FI");
    // Fault event held as IP because FECTL.IM is set; unmasking sends it.
    assert!(EventCtl::from_bits(rig.r32(off::FECTL)).ip());
    rig.w32(off::FECTL, 0);
    assert_eq!(rig.r32(off::FECTL), 0);
    assert_eq!(rig.vtd.counters().fault_interrupts, 1);
    // Writing 0 to F, or to PPF, does nothing; writing 1 to F clears the record.
    rig.w32(FRCD0 + 12, 0x7fff_ffff);
    rig.w32(off::FSTS, Fsts::new().with_ppf(true).into_bits());
    assert!(frcd(&mut rig, 0).f() && Fsts::from_bits(rig.r32(off::FSTS)).ppf());
    rig.w32(FRCD0 + 12, 1 << 31);
    assert!(!frcd(&mut rig, 0).f());
    assert!(!Fsts::from_bits(rig.r32(off::FSTS)).ppf(), "PPF drops with the last F");

    // Fill all NFR + 1 = 8 records: round-robin from slot 1 (after the last written).
    for i in 0..8 {
        assert!(fault_once(&mut rig, 0x10, 0x10_0000 + i * 0x1000));
    }
    let fsts = Fsts::from_bits(rig.r32(off::FSTS));
    assert_eq!(fsts.fri(), 1, "first pending record when PPF went to 1");
    assert!(fsts.ppf() && !fsts.pfo());
    assert_eq!(rig.vtd.recorded_faults().len(), 8);
    assert_eq!(frcd(&mut rig, 0).address(), 0x10_7000, "wrapped to slot 0");
    // The ninth finds its slot (1) still pending: PFO, not recorded.
    assert!(!fault_once(&mut rig, 0x10, 0x20_0000));
    let fsts = Fsts::from_bits(rig.r32(off::FSTS));
    assert!(fsts.pfo() && fsts.ppf());
    assert_eq!(rig.vtd.counters().faults_dropped, 1);
    // While PFO is set nothing is recorded, even into a free slot.
    rig.w64(FRCD0 + 16 + 8, 1 << 63); // 64-bit W1C of slot 1's F
    assert!(!frcd(&mut rig, 1).f());
    assert!(!fault_once(&mut rig, 0x10, 0x21_0000));
    // Clearing PFO (W1C) lets the next fault into slot 1.
    rig.w32(off::FSTS, Fsts::new().with_pfo(true).into_bits());
    assert!(!Fsts::from_bits(rig.r32(off::FSTS)).pfo());
    assert!(fault_once(&mut rig, 0x10, 0x22_0000));
    assert_eq!(frcd(&mut rig, 1).address(), 0x22_0000);
    // Linux's handler: clear every record, then FSTS; IP stays clear, PPF reads 0.
    for n in 0..8 {
        rig.w32(FRCD0 + 16 * n + 12, 1 << 31);
    }
    rig.w32(off::FSTS, Fsts::W1C | 0b10);
    assert_eq!(rig.r32(off::FSTS) & 0xff, 0);
    assert!(rig.vtd.recorded_faults().is_empty());
    assert_eq!(rig.vtd.fault_count(), 12);
}

/// The IOTLB register's page-selective invalidation honours IVA.IH as a queued one does: with IH set the
/// paging-structure caches keep the region's path, without it the path goes.
#[test]
fn register_based_invalidation_keeps_directory_paths_only_with_ih_set() {
    let (mut rig, _, pt) = legacy_rig(4, 0x10, 3);
    for i in 0..4u64 {
        rig.map(pt, 4, 0x20_0000 + (i << 12), 0x8000 + (i << 12), 1, RW);
    }
    assert_eq!(rig.phys(0x10, 0x20_0000, Access::Read), Some(0x8000));
    let slot = rig.pte_slot(pt, 4, 0x20_0000, 2);
    let empty = rig.page();
    rig.mem.write_u64(slot, SlPte::entry(empty, true, true).into_bits()).unwrap();
    let psi = IotlbReg::new().with_ivt(true).with_iirg(3).with_did(3).into_bits();
    rig.w64(IVA, Iva::new().with_addr(0x200).with_ih(true).into_bits());
    rig.w64(IOTLB, psi);
    assert_eq!(rig.phys(0x10, 0x20_1000, Access::Read), Some(0x9000), "the cached path to the old table");
    rig.w64(IVA, Iva::new().with_addr(0x200).into_bits());
    rig.w64(IOTLB, psi);
    assert_eq!(rig.phys(0x10, 0x20_2000, Access::Read), None, "the new, empty table");
}

#[test]
fn register_based_invalidation() {
    let (mut rig, _, pt) = legacy_rig(4, 0x10, 3);
    rig.map(pt, 4, 0x1000, 0x8000, 1, RW);
    rig.map(pt, 4, 0x2000, 0x9000, 1, RW);
    rig.phys(0x10, 0x1000, Access::Read).unwrap();
    rig.phys(0x10, 0x2000, Access::Read).unwrap();
    assert_eq!(rig.vtd.cache_sizes(), (2, 1, 0));
    // Page-selective through IVA + IOTLB register: IVT clears, IAIG reports page granularity.
    rig.w64(IVA, Iva::new().with_addr(0x1).into_bits());
    let req = IotlbReg::new().with_ivt(true).with_iirg(3).with_did(3);
    rig.w64(IOTLB, req.into_bits());
    let done = IotlbReg::from_bits(rig.r64(IOTLB));
    assert!(!done.ivt());
    assert_eq!(done.iaig(), 3);
    assert_eq!(rig.vtd.iotlb_lookup(3, 0x1000), None);
    assert_eq!(rig.vtd.iotlb_lookup(3, 0x2000), Some(0x9000));
    // A mask beyond MAMV fails: IAIG = 0.
    rig.w64(IVA, Iva::new().with_am(10).into_bits());
    rig.w64(IOTLB, req.into_bits());
    assert_eq!(IotlbReg::from_bits(rig.r64(IOTLB)).iaig(), 0);
    // Domain-selective, written as two dwords: acts on the upper one.
    let dsi = IotlbReg::new().with_ivt(true).with_iirg(2).with_did(3).into_bits();
    rig.w32(IOTLB, dsi as u32);
    assert!(rig.vtd.iotlb_lookup(3, 0x2000).is_some());
    rig.w32(IOTLB + 4, (dsi >> 32) as u32);
    assert_eq!(IotlbReg::from_bits(rig.r64(IOTLB)).iaig(), 2);
    assert!(rig.vtd.iotlb_lookup(3, 0x2000).is_none());
    // Device-selective context invalidation with CAIG.
    assert!(rig.vtd.context_cached(0x10));
    let cc = Ccmd::new().with_icc(true).with_cirg(3).with_sid(0x10);
    rig.w64(off::CCMD, cc.into_bits());
    let done = Ccmd::from_bits(rig.r64(off::CCMD));
    assert!(!done.icc() && done.caig() == 3);
    assert!(!rig.vtd.context_cached(0x10));
    // With QI enabled the register interface is ignored: ICC stays set.
    rig.phys(0x10, 0x2000, Access::Read).unwrap();
    rig.enable_qi(false);
    rig.w64(off::CCMD, cc.into_bits());
    assert!(Ccmd::from_bits(rig.r64(off::CCMD)).icc());
    assert!(rig.vtd.context_cached(0x10));
}

/// The properties' configuration: `cases` cases, a failing case's seed saved in
/// `vtd_regs.proptest-regressions` next to this file and replayed first on the next run.
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

/// A register write: a dword or qword anywhere in the 4 KiB MMIO page, or a qword to a register with
/// side effects.
#[derive(Clone, Debug)]
enum Write {
    Dword { off: usize, val: u32 },
    Qword { off: usize, val: u64 },
    Hot { off: usize, val: u64 },
}

/// One step: a write, perhaps a qword of RAM overwritten, a translation and a read back.
#[derive(Clone, Debug)]
struct Step {
    write: Write,
    ram: Option<(u64, u64)>,
    sid: u16,
    iova: u64,
}

fn step() -> impl Strategy<Value = Step> {
    // Qword-aligned: FSTS is written as the upper half of the qword at 0x30, the fault record's F bit as the
    // upper half of its second qword.
    let hot = select(vec![off::GCMD, off::IQT, off::IQA, off::CCMD, off::FSTS, off::RTADDR, IOTLB, FRCD0 + 12])
        .prop_map(|o| o & !7);
    // Half the values with bits 11:8 clear: IQA's DW and RTADDR's SMT and RTT zero (128-bit descriptors, a
    // legacy root table).
    let hot_val = prop_oneof![any::<u64>(), any::<u64>().prop_map(|v| v & 0xffff_ffff_ffff_f0ff)];
    let write = prop_oneof![
        3 => (0..0x400usize, any::<u32>()).prop_map(|(i, val)| Write::Dword { off: 4 * i, val }),
        3 => (0..0x200usize, any::<u64>()).prop_map(|(i, val)| Write::Qword { off: 8 * i, val }),
        2 => (hot, hot_val).prop_map(|(off, val)| Write::Hot { off, val }),
    ];
    let ram = prop::option::weighted(0.125, (0..common::RAM / 8, any::<u64>()).prop_map(|(q, v)| (8 * q, v)));
    let iova = (any::<u64>(), 0..64u32).prop_map(|(v, shift)| v >> shift);
    (write, ram, any::<u16>(), iova).prop_map(|(write, ram, sid, iova)| Step { write, ram, sid, iova })
}

#[test]
fn garbage_register_writes_never_panic_and_leave_cap_and_ecap_intact() {
    // Random writes at every dword and qword of the MMIO space, mixed with translations and queue
    // activity over garbage memory.
    let steps = prop::collection::vec(step(), 1..2000);
    proptest!(config(40), |(legacy in any::<bool>(), steps in steps)| {
        let cfg = if legacy { VtdConfig::legacy_only() } else { VtdConfig::default() };
        let mut rig = Rig::new(cfg);
        for s in steps {
            let at = match s.write {
                Write::Dword { off, val } => {
                    rig.w32(off, val);
                    off
                }
                Write::Qword { off, val } | Write::Hot { off, val } => {
                    rig.w64(off, val);
                    off
                }
            };
            if let Some((pa, v)) = s.ram {
                rig.mem.write_u64(pa, v).unwrap();
            }
            let _ = rig.translate(s.sid, s.iova, Access::Read);
            let _ = rig.r64(at);
        }
        // Still the unit it was: the capability registers are read-only whatever was written.
        prop_assert_eq!(rig.r64(off::CAP), cfg.cap.into_bits());
        prop_assert_eq!(rig.r64(off::ECAP), cfg.ecap.into_bits());
    });
}
