//! SMMUv3 DMA translation: linear and 2-level stream tables, abort and bypass STEs, stage-1 pages and blocks,
//! stage-2 walks with concatenated tables, nested translation, CDs and substream defaults, and the event records
//! faults leave, decoded with the spec crate's event types.

#[path = "smmuv3_rig.rs"]
mod rig;

use iommu_driver::PhysMem;
use iommu_emu::smmuv3::abort_code;
use iommu_emu::{Access, DmaOutcome, PhysMemory, Smmuv3Config, Translation};
use iommu_spec::smmuv3::{
    mair_idx, off, Cd, CdL1Desc, Config, Cr2, Event, EventClass, EventId, IrqCtrl, L1Desc, MsiCfg0, QueuePtr, S1Dss,
    S1Fmt, S1Pte, Ste, SteDw0, StrtabBase, TableDesc, STE_SIZE,
};
use rig::{Rig, MSI, S2_SL0, S2_T0SZ, T0SZ};

const C_BAD_STREAMID: u16 = 0x02;
const C_BAD_STE: u16 = 0x04;

fn one_event(rig: &mut Rig) -> Event {
    let ev = rig.events();
    assert_eq!(ev.len(), 1, "{ev:?}");
    ev[0]
}

#[test]
fn linear_table_bypass_abort_and_bad_streams() {
    let mut rig = Rig::linear();
    rig.set_ste_linear(1, Ste::bypass());
    rig.set_ste_linear(2, Ste::abort());
    // Config 0b001: bit 2 clear, so abort as well.
    rig.set_ste_linear(4, Ste([1 | 1 << 1, 0, 0, 0, 0, 0, 0, 0]));
    // A reserved bit in dw0 makes the STE illegal.
    rig.set_ste_linear(5, Ste([Ste::bypass().0[0] | 1 << 55, 0, 0, 0, 0, 0, 0, 0]));
    assert_eq!(rig.phys(1, 0xdead_b000, Access::Write), Some(0xdead_b000));
    for sid in [2, 4] {
        let f = rig.fault(sid, 0x1000, Access::Write);
        assert_eq!((f.code, f.recorded), (abort_code::STE, false));
    }
    assert!(rig.events().is_empty(), "Config = abort records nothing");
    // V = 0.
    let f = rig.fault(3, 0x1000, Access::Read);
    assert_eq!((f.code, f.reason, f.recorded), (C_BAD_STE, "C_BAD_STE", true));
    let e = one_event(&mut rig);
    assert_eq!((e.id(), e.sid(), e.ssid()), (EventId::CBadSte, 3, None));
    assert_eq!(rig.fault(5, 0, Access::Read).code, C_BAD_STE);
    rig.events();
    // Beyond 2^LOG2SIZE: C_BAD_STREAMID, recorded because CR2.RECINVSID is set.
    let f = rig.fault(256, 0x1000, Access::Read);
    assert_eq!((f.code, f.recorded), (C_BAD_STREAMID, true));
    assert_eq!(one_event(&mut rig).id(), EventId::CBadStreamid);
    assert_eq!(rig.fault(u32::MAX, 0, Access::Read).code, C_BAD_STREAMID);
    rig.events();
    // Without RECINVSID it is not recorded (CR2 can change only with SMMUEN = 0).
    let c = rig.cr0_now();
    rig.cr0(c.with_smmuen(false));
    rig.w32(off::CR2, Cr2::new().into_bits());
    rig.enable();
    let f = rig.fault(256, 0x1000, Access::Read);
    assert_eq!((f.code, f.recorded), (C_BAD_STREAMID, false));
    assert!(rig.events().is_empty());
    let c = rig.smmu.counters();
    assert_eq!((c.ste_aborts, c.ste_bypassed, c.events_suppressed), (2, 1, 1));
}

#[test]
fn two_level_stream_table() {
    let mut rig = Rig::new(Smmuv3Config::default());
    rig.strtab_2lvl(16, 8);
    rig.queues();
    rig.enable();
    // L1[1]: a full level-2 table (SPAN 9: 256 STEs, 16 KiB), as Linux builds it.
    let l2: Vec<u64> = (0..4).map(|_| rig.page()).collect();
    assert!(l2.windows(2).all(|w| w[1] == w[0] + 0x1000));
    rig.set_l1(1, L1Desc::new_table(l2[0], 9));
    rig.write_words(l2[0] + 0x05 * STE_SIZE, &Ste::bypass().0);
    rig.write_words(l2[0] + 0xff * STE_SIZE, &Ste::abort().0);
    assert_eq!(rig.phys(0x105, 0x1234, Access::Read), Some(0x1234));
    assert_eq!(rig.fault(0x1ff, 0x1234, Access::Read).code, abort_code::STE);
    // L1[2] empty (SPAN 0): C_BAD_STREAMID, recorded whatever RECINVSID says.
    let f = rig.fault(0x205, 0, Access::Read);
    assert_eq!((f.code, f.recorded), (C_BAD_STREAMID, true));
    assert_eq!(one_event(&mut rig).sid(), 0x205);
    // L1[3] with SPAN 2: two STEs; index 3 is beyond them.
    let small = rig.page();
    rig.set_l1(3, L1Desc::new_table(small, 2));
    rig.write_words(small + STE_SIZE, &Ste::bypass().0);
    rig.write_words(small + 3 * STE_SIZE, &Ste::bypass().0);
    assert_eq!(rig.phys(0x301, 0x9000, Access::Write), Some(0x9000));
    assert_eq!(rig.fault(0x303, 0x9000, Access::Write).code, C_BAD_STE);
    rig.events();
    // L1[4] pointing outside RAM: F_STE_FETCH with the STE address.
    rig.set_l1(4, L1Desc::new_table(0x8000_0000, 9));
    assert_eq!(rig.fault(0x410, 0, Access::Read).code, EventId::FSteFetch.into_bits() as u16);
    let e = one_event(&mut rig);
    assert_eq!((e.id(), e.fetch_addr()), (EventId::FSteFetch, 0x8000_0000 + 0x10 * STE_SIZE));
    // Beyond LOG2SIZE.
    assert_eq!(rig.fault(0x1_0000, 0, Access::Read).code, C_BAD_STREAMID);

    // A 2-level format on an SMMU that only does linear tables finds no STE at all.
    let mut lin = Rig::new(Smmuv3Config { two_level_strtab: false, ..Smmuv3Config::default() });
    lin.strtab_2lvl(16, 8);
    lin.queues();
    lin.enable();
    assert_eq!(lin.fault(0, 0, Access::Read).code, C_BAD_STREAMID);
}

#[test]
fn sparse_two_level_table_with_32_bit_stream_ids() {
    let high = 1u64 << 32;
    let mut rig = Rig::new(Smmuv3Config { sidsize: 32, ..Smmuv3Config::default() });
    rig.mem = PhysMemory::new([0..rig::RAM, high..high + (256 << 20)]);
    rig.queues();
    // 2^24 level-1 descriptors (128 MiB) at 4 GiB; only two are live.
    rig.w64(off::STRTAB_BASE, StrtabBase::from_table(high, true).into_bits());
    let cfg = iommu_spec::smmuv3::StrtabBaseCfg::new()
        .with_fmt(iommu_spec::smmuv3::StrtabFmt::TwoLevel)
        .with_log2size(32)
        .with_split(8);
    rig.w32(off::STRTAB_BASE_CFG, cfg.into_bits());
    rig.enable();
    for (i, sid) in [0xabcd_ef12u32, 0xffff_ff00].into_iter().enumerate() {
        let l2 = high + (200 << 20) + i as u64 * 0x4000;
        rig.mem.write_u64(high + (sid as u64 >> 8) * 8, L1Desc::new_table(l2, 9).into_bits()).unwrap();
        rig.write_words(l2 + (sid as u64 & 0xff) * STE_SIZE, &Ste::bypass().0);
        assert_eq!(rig.phys(sid, 0x42_0000, Access::Write), Some(0x42_0000), "sid {sid:#x}");
    }
    assert_eq!(rig.fault(0x1234_5678, 0, Access::Read).code, C_BAD_STREAMID);
    assert!(rig.mem.page_count() < 16, "sparse: {} pages", rig.mem.page_count());
}

#[test]
fn stage1_pages_blocks_and_their_faults() {
    let mut rig = Rig::linear();
    let t = rig.page();
    let ste = rig.s1_ste(1, t);
    rig.set_ste_linear(1, ste);
    rig.map_s1(t, 0x1000, 0x300_0000, 3, true);
    rig.map_s1(t, 0x2000, 0x300_1000, 3, false);
    rig.map_s1(t, 0x4000_0000, 0x320_0000, 2, true);
    rig.map_s1(t, 0x80_0000_0000, 0x4000_0000, 1, true);
    assert_eq!(rig.phys(1, 0x1abc, Access::Write), Some(0x300_0abc));
    assert_eq!(rig.phys(1, 0x2abc, Access::Read), Some(0x300_1abc));
    assert_eq!(rig.phys(1, 0x4012_3456, Access::Write), Some(0x332_3456), "2 MiB block");
    assert_eq!(rig.phys(1, 0x80_1234_5678, Access::Read), Some(0x5234_5678), "1 GiB block");
    assert_eq!(rig.smmu.tlb_lookup(0, Some(1), 0x401f_f000), Some(0x33f_f000), "one entry for the block");
    assert!(rig.events().is_empty());

    // Write to a read-only page: F_PERMISSION with the transaction described.
    let f = rig.fault(1, 0x2010, Access::Write);
    assert_eq!((f.code, f.recorded), (0x13, true));
    let e = one_event(&mut rig);
    assert_eq!((e.id(), e.sid(), e.input_addr()), (EventId::FPermission, 1, 0x2010));
    let d = e.dw1();
    assert!(!d.rnw() && !d.s2() && !d.pnu());
    assert_eq!(d.class(), EventClass::In);
    // Nothing mapped; beyond the 48-bit input range; a level-0 "block".
    // (1 << 50 | 0x1000 would alias the mapped 0x1000 if the range were not checked.)
    for va in [0x5000, 1 << 50 | 0x1000] {
        assert_eq!(rig.fault(1, va, Access::Read).code, 0x10);
        let e = one_event(&mut rig);
        assert_eq!((e.id(), e.input_addr(), e.dw1().rnw()), (EventId::FTranslation, va, true));
    }
    rig.mem.write_u64(t + 8 * 3, 0x8000_0001).unwrap();
    assert_eq!(rig.fault(1, 3 << 39, Access::Read).code, 0x10);
    // AF = 0.
    rig.map_raw(t, 0, 48, 0x6000, 3, S1Pte::leaf(0x300_2000, 3, mair_idx::CACHE, true).with_af(false).into_bits());
    assert_eq!(rig.fault(1, 0x6000, Access::Read).code, 0x12);
    // A table descriptor pointing outside RAM: F_WALK_EABT with the descriptor's address.
    rig.mem.write_u64(t + 8 * 4, TableDesc::to(0x8000_0000).into_bits()).unwrap();
    assert_eq!(rig.fault(1, 4 << 39, Access::Read).code, 0x0b);
    rig.events();
    let _ = rig.fault(1, (4 << 39) | (5 << 30), Access::Read);
    let e = one_event(&mut rig);
    assert_eq!((e.id(), e.fetch_addr(), e.dw1().class()), (EventId::FWalkEabt, 0x8000_0000 + 5 * 8, EventClass::Tt));

    // A CD with a 40-bit IPS: an output at 2^44 is an address-size fault. With CD.R = 0 nothing is recorded.
    let t2 = rig.page();
    let cd_pa = rig.page();
    let mut cd = Cd::s1(2, t2, T0SZ, 2, mair_idx::LINUX_MAIR);
    rig.write_words(cd_pa, &cd.0);
    rig.set_ste_linear(2, Ste::s1(cd_pa, S1Fmt::Linear, 0, S1Dss::Terminate));
    rig.map_s1(t2, 0, 1 << 44, 3, true);
    assert_eq!(rig.fault(2, 0, Access::Read).code, 0x11);
    assert_eq!(one_event(&mut rig).id(), EventId::FAddrSize);
    cd.0[0] &= !(1 << 45);
    rig.write_words(cd_pa, &cd.0);
    rig.cmds_sync(&[iommu_spec::smmuv3::Command::CfgiCd { sid: 2, ssid: 0, leaf: true }]);
    let f = rig.fault(2, 0, Access::Read);
    assert_eq!((f.code, f.recorded), (0x11, false));
    assert!(rig.events().is_empty());

    // DMA through stage 1 lands page by page until the read-only page.
    let out = rig.dma_write(1, 0x1800, &[0xab; 0x1000]);
    assert!(matches!(out, DmaOutcome::Fault { iova: 0x2000, done: 0x800, .. }), "{out:?}");
    assert_eq!(rig.mem.read_u64(0x300_0800).unwrap(), 0xabab_abab_abab_abab);
}

#[test]
fn stage1_walk_from_level_1() {
    let mut rig = Rig::linear();
    let t = rig.page();
    let cd_pa = rig.page();
    // T0SZ 25: a 39-bit input range, walked from level 1.
    rig.write_words(cd_pa, &Cd::s1(5, t, 25, 5, mair_idx::LINUX_MAIR).0);
    rig.set_ste_linear(6, Ste::s1(cd_pa, S1Fmt::Linear, 0, S1Dss::Terminate));
    let leaf = S1Pte::leaf(0x2a0_0000, 3, mair_idx::CACHE, true).into_bits();
    rig.map_raw(t, 1, 39, 0x7f_ffff_f000, 3, leaf);
    assert_eq!(rig.phys(6, 0x7f_ffff_f123, Access::Read), Some(0x2a0_0123));
    assert_eq!(rig.fault(6, 0xff_ffff_f123, Access::Read).code, 0x10, "beyond 39 bits");
    // An invalid CD: C_BAD_CD; a CD outside RAM: F_CD_FETCH.
    let mut bad = Cd::s1(5, t, 25, 5, 0);
    bad.0[0] &= !(1 << 31);
    let bad_pa = rig.page();
    rig.write_words(bad_pa, &bad.0);
    rig.set_ste_linear(7, Ste::s1(bad_pa, S1Fmt::Linear, 0, S1Dss::Terminate));
    assert_eq!(rig.fault(7, 0, Access::Read).code, EventId::CBadCd.into_bits() as u16);
    rig.set_ste_linear(8, Ste::s1(0x8000_0000, S1Fmt::Linear, 0, S1Dss::Terminate));
    assert_eq!(rig.fault(8, 0, Access::Read).code, EventId::FCdFetch.into_bits() as u16);
    let ev = rig.events();
    assert_eq!(
        ev.iter().map(|e| e.id()).collect::<Vec<_>>(),
        [EventId::FTranslation, EventId::CBadCd, EventId::FCdFetch]
    );
    assert_eq!(ev[2].fetch_addr(), 0x8000_0000);
    // Substreams: with S1CDMax > 0 on an SMMU without SSIDs the STE is illegal.
    rig.set_ste_linear(9, Ste::s1(cd_pa, S1Fmt::Linear, 1, S1Dss::Ssid0));
    assert_eq!(rig.fault(9, 0, Access::Read).code, C_BAD_STE);
}

#[test]
fn non_substream_traffic_with_substreams() {
    let mut rig = Rig::new(Smmuv3Config { ssidsize: 8, ..Smmuv3Config::default() });
    rig.strtab_linear(8);
    rig.queues();
    rig.enable();
    let t = rig.page();
    rig.map_s1(t, 0, 0x280_0000, 3, true);
    // A 2-level CD table with 64 KiB leaves, as Linux builds it: L1 descriptor 0 -> leaf, CD 0 in it.
    let l1 = rig.page();
    let leaf = rig.page();
    rig.mem.write_u64(l1, CdL1Desc::new_table(leaf).into_bits()).unwrap();
    rig.write_words(leaf, &Cd::s1(4, t, T0SZ, 5, mair_idx::LINUX_MAIR).0);
    rig.set_ste_linear(1, Ste::s1(l1, S1Fmt::TwoLevel64K, 8, S1Dss::Ssid0));
    assert_eq!(rig.phys(1, 0x10, Access::Write), Some(0x280_0010));
    rig.set_ste_linear(2, Ste::s1(l1, S1Fmt::TwoLevel64K, 8, S1Dss::Bypass));
    assert_eq!(rig.phys(2, 0x10, Access::Write), Some(0x10));
    rig.set_ste_linear(3, Ste::s1(l1, S1Fmt::TwoLevel64K, 8, S1Dss::Terminate));
    assert_eq!(rig.fault(3, 0x10, Access::Write).code, EventId::FStreamDisabled.into_bits() as u16);
    let empty = rig.page();
    rig.set_ste_linear(4, Ste::s1(empty, S1Fmt::TwoLevel64K, 8, S1Dss::Ssid0));
    assert_eq!(rig.fault(4, 0x10, Access::Write).code, EventId::CBadSubstreamid.into_bits() as u16);
    rig.set_ste_linear(5, Ste::s1(l1, S1Fmt::TwoLevel64K, 9, S1Dss::Ssid0));
    assert_eq!(rig.fault(5, 0x10, Access::Write).code, C_BAD_STE, "S1CDMax beyond SSIDSIZE");
}

#[test]
fn stage2_walks_and_faults() {
    let mut rig = Rig::linear();
    let t2 = rig.s2_root();
    // 40-bit IPA from level 1 over two concatenated tables.
    let mut ste = Ste::s2(7, t2, S2_T0SZ, S2_SL0, 5);
    rig.set_ste_linear(4, ste);
    rig.map_s2(t2, 0x1000, 0x310_0000, 3, (true, false));
    rig.map_s2(t2, 0xc0_0000_0000, 0x4000_0000, 1, (true, true));
    assert_eq!(rig.phys(4, 0x1234, Access::Read), Some(0x310_0234));
    assert_eq!(rig.phys(4, 0xc0_1234_5678, Access::Write), Some(0x5234_5678), "1 GiB block, second table");
    assert_eq!(rig.smmu.tlb_lookup(7, None, 0x1000), Some(0x310_0000));
    // Read-only at stage 2: F_PERMISSION with S2 and the IPA.
    assert_eq!(rig.fault(4, 0x1234, Access::Write).code, 0x13);
    let e = one_event(&mut rig);
    assert!(e.dw1().s2());
    assert_eq!((e.ipa(), e.input_addr(), e.dw1().class()), (0x1000, 0x1234, EventClass::In));
    // Unmapped, and beyond the 40-bit IPA range.
    for ipa in [0x5000, 1 << 40] {
        assert_eq!(rig.fault(4, ipa, Access::Read).code, 0x10);
        assert!(one_event(&mut rig).dw1().s2());
    }
    // S2R = 0: not recorded.
    ste.0[2] &= !(1 << 58);
    rig.set_ste_linear(5, ste);
    let f = rig.fault(5, 0x5000, Access::Read);
    assert_eq!((f.code, f.recorded), (0x10, false));
    // Illegal stage-2 configurations.
    let bad =
        [Ste::s2(7, t2, 15, 1, 5), Ste::s2(7, t2, 24, 3, 5), Ste::s2(7, 1 << 50, 24, 1, 5), Ste::s2(7, t2, 16, 1, 5)];
    for (i, s) in bad.into_iter().enumerate() {
        rig.set_ste_linear(10 + i as u32, s);
        assert_eq!(rig.fault(10 + i as u32, 0, Access::Read).code, C_BAD_STE, "case {i}");
    }
    let mut s1_only = Rig::new(Smmuv3Config { stage2: false, ..Smmuv3Config::default() });
    s1_only.strtab_linear(4);
    s1_only.set_ste_linear(1, Ste::s2(7, t2, S2_T0SZ, S2_SL0, 5));
    s1_only.enable();
    assert_eq!(s1_only.fault(1, 0, Access::Read).code, C_BAD_STE);
}

#[test]
fn nested_translation() {
    let mut rig = Rig::linear();
    // Stage 2: IPA 0x40_0000_0000 + x -> PA x (a 1 GiB block), 40-bit IPA from level 1.
    let t2 = rig.s2_root();
    const OFF: u64 = 0x40_0000_0000;
    rig.map_s2(t2, OFF, 0, 1, (true, true));
    // Stage 1 with a 30-bit input range (from level 2) whose tables and CD are addressed by IPA.
    let (l2, l3, cd_pa) = (rig.page(), rig.page(), rig.page());
    rig.mem.write_u64(l2, TableDesc::to(l3 + OFF).into_bits()).unwrap();
    rig.mem.write_u64(l3 + 8, S1Pte::leaf(OFF + 0x290_0000, 3, mair_idx::CACHE, true).into_bits()).unwrap();
    rig.write_words(cd_pa, &Cd::s1(3, l2 + OFF, 34, 2, mair_idx::LINUX_MAIR).0);
    let mut ste = Ste::s2(9, t2, S2_T0SZ, S2_SL0, 5);
    ste.0[0] = SteDw0::new().with_v(true).with_config(Config::Nested).with_s1contextptr((cd_pa + OFF) >> 6).into_bits();
    rig.set_ste_linear(1, ste);
    assert_eq!(rig.phys(1, 0x1abc, Access::Write), Some(0x290_0abc));
    assert_eq!(rig.smmu.tlb_lookup(9, Some(3), 0x1000), Some(0x290_0000));
    // A stage-1 table whose IPA stage 2 does not map: a stage-2 fault of CLASS TT.
    rig.mem.write_u64(l2 + 8, TableDesc::to(0x20_0000_0000).into_bits()).unwrap();
    assert_eq!(rig.fault(1, 0x20_0000, Access::Read).code, 0x10);
    let e = one_event(&mut rig);
    assert!(e.dw1().s2());
    assert_eq!((e.dw1().class(), e.ipa(), e.input_addr()), (EventClass::Tt, 0x20_0000_0000, 0x20_0000));
    // The stage-1 output IPA unmapped at stage 2: CLASS IN.
    rig.mem.write_u64(l3 + 16, S1Pte::leaf(0x1000, 3, mair_idx::CACHE, true).into_bits()).unwrap();
    assert_eq!(rig.fault(1, 0x2000, Access::Read).code, 0x10);
    let e = one_event(&mut rig);
    assert_eq!((e.dw1().class(), e.ipa()), (EventClass::In, 0x1000));
}

#[test]
fn events_need_evtqen_and_overflow_toggles_ovflg() {
    let mut rig = Rig::linear();
    rig.w32(off::IRQ_CTRL, IrqCtrl::new().with_evtq_irqen(true).into_bits());
    rig.w64(off::EVTQ_IRQ_CFG0, MsiCfg0::new().with_addr((MSI + 0x80) >> 2).into_bits());
    rig.w32(off::EVTQ_IRQ_CFG1, 0xe1);
    rig.fault(3, 0, Access::Read);
    assert_eq!(rig.mem.read_u32(MSI + 0x80).unwrap(), 0xe1, "EVTQ MSI");
    assert_eq!(rig.smmu.counters().evtq_irqs, 1);
    rig.events();
    // EVTQEN off: the fault is counted, nothing is written.
    let c = rig.cr0_now();
    rig.cr0(c.with_evtqen(false));
    let f = rig.fault(3, 0, Access::Read);
    assert!(!f.recorded);
    rig.cr0(c);
    assert!(rig.events().is_empty());
    // 16 entries: the 17th record is lost and OVFLG toggles once.
    let recorded: Vec<bool> = (0..20).map(|i| rig.fault(3, i << 12, Access::Read).recorded).collect();
    assert_eq!(recorded.iter().filter(|r| **r).count(), 16);
    let prod = QueuePtr(rig.r32(off::EVTQ_PROD));
    assert!(prod.ovf());
    assert_eq!(rig.smmu.counters().evtq_overflows, 4);
    // Consume and acknowledge the overflow (CONS.OVACKFLG = PROD.OVFLG); the next overflow toggles again.
    assert_eq!(rig.events().len(), 16);
    let cons = rig.r32(off::EVTQ_CONS);
    rig.w32(off::EVTQ_CONS, cons | QueuePtr::OVF);
    for i in 0..17 {
        rig.fault(3, i << 12, Access::Read);
    }
    assert!(!QueuePtr(rig.r32(off::EVTQ_PROD)).ovf(), "toggled back: a new overflow");
    assert_eq!(rig.smmu.counters().events_dropped, 1 + 4 + 1);
}

#[test]
fn event_queue_outside_ram_raises_evtq_abt_err() {
    let mut rig = Rig::new(Smmuv3Config::default());
    rig.strtab_linear(4);
    rig.w64(off::EVTQ_BASE, iommu_spec::smmuv3::QueueBase::from_base(0x8000_0000, 4, true).into_bits());
    rig.cr0(iommu_spec::smmuv3::Cr0::new().with_evtqen(true).with_smmuen(true));
    let f = rig.fault(1, 0, Access::Read);
    assert!(!f.recorded);
    assert!(rig.smmu.gerror_active().evtq_abt_err());
    assert!(matches!(rig.translate(1, 0, Access::Read), Translation::Fault(_)));
}

#[test]
fn table_descriptor_limits_apply_below_them() {
    let mut rig = Rig::linear();
    let t = rig.page();
    let ste = rig.s1_ste(1, t);
    rig.set_ste_linear(1, ste);
    rig.map_s1(t, 0x1000, 0x300_0000, 3, true);
    rig.map_s1(t, 1 << 39, 0x300_1000, 3, true);
    // APTable[1] (bit 62) on level-0 entry 1: everything below it is read-only, whatever the leaf says.
    let l0e1 = rig.mem.read_u64(t + 8).unwrap();
    rig.mem.write_u64(t + 8, TableDesc::from_bits(l0e1).with_ap_table(2).into_bits()).unwrap();
    assert_eq!(rig.phys(1, 1 << 39, Access::Read), Some(0x300_1000));
    assert_eq!(rig.fault(1, 1 << 39, Access::Write).code, 0x13);
    // APTable[0] (bit 61): no unprivileged access below; DMA is unprivileged unless STE.PRIVCFG says otherwise.
    let l0e0 = rig.mem.read_u64(t).unwrap();
    rig.mem.write_u64(t, TableDesc::from_bits(l0e0).with_ap_table(1).into_bits()).unwrap();
    assert_eq!(rig.fault(1, 0x1000, Access::Read).code, 0x13);
    let mut privileged = ste;
    privileged.0[1] |= 3 << 48;
    rig.set_ste_linear(2, privileged);
    assert_eq!(rig.phys(2, 0x1000, Access::Write), Some(0x300_0000));
    rig.events();
    rig.fault(1, 0x1000, Access::Read);
    assert!(!rig.events()[0].dw1().pnu());
    rig.mem.write_u64(t + 8 * 2, 0).unwrap();
    rig.fault(2, 2 << 39, Access::Read);
    assert!(rig.events()[0].dw1().pnu(), "PnU from PRIVCFG");
}

/// The front cache answers only while nothing could have changed the answer: a TLB invalidation, a stream table
/// base write and SMMUEN going off each end its entry, and with caching off it holds none. After the invalidation
/// the full path sees a remapped page; with SMMUEN off the request follows GBPA, not the old translation.
#[test]
fn front_entries_end_at_invalidations_base_writes_and_enable_changes() {
    use iommu_spec::smmuv3::{Command, StrtabBase};
    let mut rig = Rig::linear();
    let t = rig.page();
    let ste = rig.s1_ste(1, t);
    rig.set_ste_linear(1, ste);
    rig.map_s1(t, 0x1000, 0x300_0000, 3, true);
    let front = |rig: &Rig| rig.smmu.front_answers(1, 0x1008, Access::Read);
    assert_eq!(front(&rig), None);
    assert_eq!(rig.phys(1, 0x1008, Access::Read), Some(0x300_0008));
    assert_eq!(front(&rig), Some(0x300_0008), "a translation fills the front");
    // Remapped in memory without an invalidation: the TLB (and so the front) still answers the old page.
    rig.map_s1(t, 0x1000, 0x310_0000, 3, true);
    assert_eq!(rig.phys(1, 0x1008, Access::Read), Some(0x300_0008));
    rig.cmds_sync(&[Command::TlbiNsnhAll]);
    assert_eq!(front(&rig), None, "TLBI_NSNH_ALL");
    assert_eq!(rig.phys(1, 0x1008, Access::Read), Some(0x310_0008));
    rig.w64(off::STRTAB_BASE, StrtabBase::from_table(rig::STRTAB, true).into_bits());
    assert_eq!(front(&rig), None, "a stream table base write");
    assert_eq!(rig.phys(1, 0x1008, Access::Read), Some(0x310_0008));
    let c = rig.cr0_now();
    rig.cr0(c.with_smmuen(false));
    assert_eq!(front(&rig), None, "SMMUEN off");
    assert_ne!(rig.phys(1, 0x1008, Access::Read), Some(0x310_0008), "GBPA decides with SMMUEN off");
    rig.enable();
    assert_eq!(rig.phys(1, 0x1008, Access::Read), Some(0x310_0008));
    rig.smmu.set_caching(false);
    assert_eq!(front(&rig), None, "caching off");
    assert_eq!(rig.phys(1, 0x1008, Access::Read), Some(0x310_0008));
    assert_eq!(front(&rig), None, "nothing is kept with caching off");
}
