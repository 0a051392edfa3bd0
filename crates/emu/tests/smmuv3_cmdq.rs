//! The SMMUv3 command queue at raw offsets: consumption on PROD writes, CMD_SYNC completion (polled and MSI),
//! wrap-around, CMDQ_ERR halting the queue until GERRORN acknowledges it, and CFGI/TLBI commands dropping
//! exactly their entries while stale ones survive until then.

#[path = "smmuv3_rig.rs"]
mod rig;

use iommu_driver::PhysMem;
use iommu_emu::smmuv3::abort_code;
use iommu_emu::{Access, Smmuv3Config};
use iommu_spec::smmuv3::{
    level_index, mair_idx, off, CmdqError, Command, Cr0, Gerror, IrqCtrl, MsiCfg0, QueueBase, QueuePtr, S1Pte, S2Pte,
    Ste, StreamDw0, SyncCmd, SyncCs, TableDesc, TlbiScope, CMDQ_ENT_SIZE,
};
use rig::{Rig, CMDQ, CMDQ_LOG2, MSI, S2_SL0, S2_T0SZ};

fn cons(rig: &mut Rig) -> QueuePtr {
    QueuePtr(rig.r32(off::CMDQ_CONS))
}

#[test]
fn commands_run_when_prod_is_written_and_sync_completes() {
    let mut rig = Rig::new(Smmuv3Config::default());
    rig.queues();
    rig.cmds(&[Command::CfgiAll, Command::TlbiNsnhAll, Command::Sync(SyncCmd::poll())]);
    assert_eq!(rig.r32(off::CMDQ_CONS), 3, "CONS moved past the CMD_SYNC");
    let c = rig.smmu.counters();
    assert_eq!((c.commands, c.cfgi_commands, c.tlbi_commands, c.syncs), (3, 1, 1, 1));
    // MSI completion: MSIData lands at MSIAddress.
    rig.cmds(&[Command::Sync(SyncCmd::msi(MSI, 0xdead_beef))]);
    assert_eq!(rig.mem.read_u32(MSI).unwrap(), 0xdead_beef);
    // Linux's MSI polling: the address is the CMD_SYNC slot itself and the data 0, so the slot's first word
    // turns to 0 when the sync completes.
    let slot = CMDQ + cons(&mut rig).index(CMDQ_LOG2 as u32) as u64 * CMDQ_ENT_SIZE;
    rig.cmds(&[Command::Sync(SyncCmd::msi(slot, 0))]);
    assert_eq!(rig.mem.read_u32(slot).unwrap(), 0);
    assert_eq!(rig.smmu.counters().sync_msis, 2);
    // CS = SEV (Linux's choice without MSIs) and CS = IRQ without an address complete too.
    let sev = SyncCmd { cs: SyncCs::Sev, ..SyncCmd::poll() };
    let irq = SyncCmd { cs: SyncCs::Irq, ..SyncCmd::poll() };
    rig.cmds(&[Command::Sync(sev), Command::Sync(irq)]);
    assert_eq!(rig.r32(off::CMDQ_CONS), 7);
    assert_eq!(rig.smmu.counters().sync_irqs, 1);
}

#[test]
fn nothing_runs_until_cmdqen_and_the_queue_wraps() {
    let mut rig = Rig::new(Smmuv3Config::default());
    rig.w64(off::CMDQ_BASE, QueueBase::from_base(CMDQ, CMDQ_LOG2, true).into_bits());
    rig.cmds(&[Command::CfgiAll, Command::Sync(SyncCmd::msi(MSI, 1))]);
    assert_eq!(rig.r32(off::CMDQ_CONS), 0, "CMDQEN = 0: nothing consumed");
    assert_eq!(rig.mem.read_u32(MSI).unwrap(), 0);
    rig.cr0(Cr0::new().with_cmdqen(true));
    assert_eq!(rig.r32(off::CMDQ_CONS), 2, "enabling consumes what PROD holds");
    assert_eq!(rig.mem.read_u32(MSI).unwrap(), 1);
    // 600 more commands in batches of 100 go twice around the 256-entry ring.
    for batch in 0..6 {
        let cmds: Vec<Command> = (0..100).map(|i| Command::Sync(SyncCmd::msi(MSI, batch * 100 + i))).collect();
        rig.cmds(&cmds);
        assert_eq!(cons(&mut rig), QueuePtr(rig.r32(off::CMDQ_PROD)));
    }
    let c = cons(&mut rig);
    assert_eq!((c.index(8), c.wrap(8)), ((602 % 256) as u32, (602 / 256) % 2 == 1));
    assert_eq!(rig.mem.read_u32(MSI).unwrap(), 599);
    assert_eq!(rig.smmu.counters().commands, 602);
}

#[test]
fn illegal_command_halts_the_queue_until_gerrorn_acknowledges_it() {
    let mut rig = Rig::new(Smmuv3Config::default());
    rig.queues();
    rig.w32(off::IRQ_CTRL, IrqCtrl::new().with_gerror_irqen(true).into_bits());
    rig.w64(off::GERROR_IRQ_CFG0, MsiCfg0::new().with_addr((MSI + 0x40) >> 2).into_bits());
    rig.w32(off::GERROR_IRQ_CFG1, 0x77);
    let bad = [0xff, 0];
    rig.submit(&[Command::Sync(SyncCmd::poll()).encode(), bad, Command::Sync(SyncCmd::msi(MSI, 5)).encode()]);
    let c = cons(&mut rig);
    assert_eq!((c.index(8), c.err()), (1, CmdqError::Ill), "CONS stays on the bad command");
    assert!(Gerror::from_bits(rig.r32(off::GERROR)).cmdq_err());
    assert!(rig.smmu.gerror_active().cmdq_err());
    assert_eq!(rig.mem.read_u32(MSI + 0x40).unwrap(), 0x77, "GERROR MSI");
    assert_eq!(rig.mem.read_u32(MSI).unwrap(), 0, "nothing after it ran");
    // Halted: more PROD writes consume nothing.
    rig.cmds(&[Command::Sync(SyncCmd::msi(MSI, 6))]);
    assert_eq!(cons(&mut rig).index(8), 1);
    assert_eq!(rig.mem.read_u32(MSI).unwrap(), 0);
    // Software fixes the slot up (Linux `arm_smmu_cmdq_skip_err`: a CMD_SYNC in its place) and acknowledges by
    // writing GERROR's value to GERRORN; the queue restarts at CONS.
    rig.write_words(CMDQ + 16, &Command::Sync(SyncCmd::poll()).encode());
    let gerror = rig.r32(off::GERROR);
    rig.w32(off::GERRORN, gerror);
    assert!(!rig.smmu.gerror_active().cmdq_err());
    assert_eq!(cons(&mut rig), QueuePtr(rig.r32(off::CMDQ_PROD)), "resumed and drained; ERR cleared");
    assert_eq!(rig.mem.read_u32(MSI).unwrap(), 6);
    // Acknowledged without a fix, the same command fails again and GERROR toggles back to active.
    rig.submit(&[bad]);
    assert!(rig.smmu.gerror_active().cmdq_err());
    let before = rig.r32(off::GERROR);
    rig.w32(off::GERRORN, before);
    assert!(rig.smmu.gerror_active().cmdq_err(), "re-raised");
    assert_ne!(rig.r32(off::GERROR), before);
    assert_eq!(rig.smmu.counters().cmdq_errors, 3);
}

#[test]
fn commands_the_smmu_does_not_support_are_illegal() {
    let s1_only = Smmuv3Config { stage2: false, ..Smmuv3Config::default() };
    let ssec = StreamDw0::from_bits(Command::CfgiSte { sid: 1, leaf: true }.encode()[0]).with_ssec(true);
    let cases: [(Smmuv3Config, [u64; 2]); 7] = [
        (s1_only, Command::TlbiS12Vmall { vmid: 1 }.encode()),
        (s1_only, Command::TlbiS2Ipa { vmid: 1, ipa: 0x1000, scope: TlbiScope::ZERO }.encode()),
        (Smmuv3Config { stage1: false, ..Smmuv3Config::default() }, Command::TlbiNhAsid { vmid: 0, asid: 1 }.encode()),
        (Smmuv3Config::default(), Command::TlbiEl2All.encode()),
        (Smmuv3Config::default(), [ssec.into_bits(), 1]),
        (Smmuv3Config::default(), [Command::Sync(SyncCmd::poll()).encode()[0] | 3 << 12, 0]),
        (Smmuv3Config::default(), Command::AtcInv { sid: 1, ssid: None, global: true, addr: 0, size: 52 }.encode()),
    ];
    for (i, (cfg, cmd)) in cases.into_iter().enumerate() {
        let mut rig = Rig::new(cfg);
        rig.queues();
        rig.submit(&[cmd]);
        assert_eq!(cons(&mut rig).err(), CmdqError::Ill, "case {i}");
        assert!(rig.smmu.gerror_active().cmdq_err(), "case {i}");
    }
    // With HYP, TLBI_EL2_ALL is fine.
    let mut rig = Rig::new(Smmuv3Config { hyp: true, ..Smmuv3Config::default() });
    rig.queues();
    rig.cmds_sync(&[Command::TlbiEl2All]);
    assert!(!rig.smmu.gerror_active().cmdq_err());
}

#[test]
fn a_command_that_cannot_be_read_is_an_abort() {
    let mut rig = Rig::new(Smmuv3Config::default());
    rig.w64(off::CMDQ_BASE, QueueBase::from_base(rig::RAM, 4, true).into_bits());
    rig.cr0(Cr0::new().with_cmdqen(true));
    rig.w32(off::CMDQ_PROD, 1);
    assert_eq!(cons(&mut rig).err(), CmdqError::Abt);
    assert!(rig.smmu.gerror_active().cmdq_err());
}

/// A linear-table rig with stage-1 stream 1 (ASID 1) and 2 (ASID 2) translating through one table each, and
/// pages 0..4 of each mapped.
fn s1_rig() -> (Rig, u64, u64) {
    let mut rig = Rig::linear();
    let (t1, t2) = (rig.page(), rig.page());
    for (sid, asid, ttb) in [(1, 1, t1), (2, 2, t2)] {
        let ste = rig.s1_ste(asid, ttb);
        rig.set_ste_linear(sid, ste);
    }
    for i in 0..4u64 {
        rig.map_s1(t1, i << 12, 0x10_0000 + (i << 12), 3, true);
        rig.map_s1(t2, i << 12, 0x20_0000 + (i << 12), 3, true);
    }
    (rig, t1, t2)
}

#[test]
fn stale_translation_survives_a_pte_change_until_tlbi() {
    let (mut rig, t1, _) = s1_rig();
    assert_eq!(rig.phys(1, 0x1234, Access::Write), Some(0x10_1234));
    // Remap page 1 elsewhere and make page 2 read-only, without telling the SMMU.
    rig.map_s1(t1, 0x1000, 0x30_0000, 3, true);
    assert_eq!(rig.phys(1, 0x2000, Access::Write), Some(0x10_2000));
    rig.map_s1(t1, 0x2000, 0x10_2000, 3, false);
    assert_eq!(rig.phys(1, 0x1234, Access::Write), Some(0x10_1234), "stale");
    assert_eq!(rig.phys(1, 0x2000, Access::Write), Some(0x10_2000), "stale permission");
    // Another ASID's invalidation does not help; this ASID's does.
    rig.cmds_sync(&[Command::TlbiNhAsid { vmid: 0, asid: 2 }]);
    assert_eq!(rig.phys(1, 0x1234, Access::Write), Some(0x10_1234));
    rig.cmds_sync(&[Command::TlbiNhVa { vmid: 0, asid: 1, addr: 0x1000, scope: TlbiScope::ZERO }]);
    assert_eq!(rig.phys(1, 0x1234, Access::Write), Some(0x30_0234));
    assert_eq!(rig.phys(1, 0x2000, Access::Write), Some(0x10_2000), "page 2 still stale");
    rig.cmds_sync(&[Command::TlbiNhAsid { vmid: 0, asid: 1 }]);
    assert_eq!(rig.fault(1, 0x2000, Access::Write).code, 0x13, "F_PERMISSION");
    // Caching off (a baseline): every change shows at once.
    rig.smmu.set_caching(false);
    rig.map_s1(t1, 0x2000, 0x10_2000, 3, true);
    assert_eq!(rig.phys(1, 0x2000, Access::Write), Some(0x10_2000));
    assert_eq!(rig.smmu.cache_sizes(), (0, 0, 0));
}

/// The slot of the level-`level` descriptor of `va` in a 48-bit stage-1 table (the path must exist).
fn s1_slot(rig: &mut Rig, ttb: u64, va: u64, level: u32) -> u64 {
    let mut table = ttb;
    for l in 0..level {
        table = TableDesc::from_bits(rig.mem.read_u64(table + level_index(va, l, 0, 48) * 8).unwrap()).next_table();
    }
    table + level_index(va, level, 0, 48) * 8
}

/// The walk cache keeps the path to a region's level-3 table until a TLBI of the ASID that covers the region and does
/// not say only last-level entries changed (4.4.1, Leaf), or one of the whole ASID; another ASID's TLBI leaves it.
#[test]
fn a_walk_path_survives_only_a_tlbi_by_address_with_leaf_set() {
    let (mut rig, t1, _) = s1_rig();
    for i in 4..8u64 {
        rig.map_s1(t1, i << 12, 0x10_0000 + (i << 12), 3, true);
    }
    assert_eq!(rig.phys(1, 0, Access::Read), Some(0x10_0000));
    // The region's level-2 descriptor now names an empty table: a driver that freed the level-3 table and
    // invalidated as if only a leaf had changed.
    let slot = s1_slot(&mut rig, t1, 0, 2);
    let old = rig.mem.read_u64(slot).unwrap();
    let empty = rig.page();
    rig.mem.write_u64(slot, TableDesc::to(empty).into_bits()).unwrap();
    let va = |addr: u64, leaf: bool| Command::TlbiNhVa {
        vmid: 0,
        asid: 1,
        addr,
        scope: TlbiScope { leaf, ..TlbiScope::ZERO },
    };
    rig.cmds_sync(&[va(0, true)]);
    // No TLB entry for page 1, yet its walk starts at the cached level-3 table.
    assert_eq!(rig.phys(1, 0x1000, Access::Read), Some(0x10_1000));
    assert_eq!(rig.smmu.counters().walk_cache_hits, 1);
    // Leaf = 0 for another 2 MiB of the ASID leaves the path too.
    rig.cmds_sync(&[va(0x4000_0000, false)]);
    assert_eq!(rig.phys(1, 0x7000, Access::Read), Some(0x10_7000));
    assert_eq!(rig.smmu.counters().walk_cache_hits, 2);
    // Leaf = 0 for a page of this one: the next walk reads the new table and finds nothing.
    rig.cmds_sync(&[va(0x3000, false)]);
    assert_eq!(rig.fault(1, 0x2000, Access::Read).code, 0x10, "F_TRANSLATION");
    assert_eq!(rig.smmu.counters().walk_cache_hits, 2);
    // Back to the old table (and a Leaf = 0 TLBI): cached again by the next walk, kept through another ASID's
    // TLBI, gone with this ASID's.
    rig.mem.write_u64(slot, old).unwrap();
    rig.cmds_sync(&[va(0x2000, false)]);
    assert_eq!(rig.phys(1, 0x4000, Access::Read), Some(0x10_4000));
    rig.mem.write_u64(slot, TableDesc::to(empty).into_bits()).unwrap();
    rig.cmds_sync(&[Command::TlbiNhAsid { vmid: 0, asid: 2 }]);
    assert_eq!(rig.phys(1, 0x5000, Access::Read), Some(0x10_5000));
    assert_eq!(rig.smmu.counters().walk_cache_hits, 3);
    rig.cmds_sync(&[Command::TlbiNhAsid { vmid: 0, asid: 1 }]);
    assert_eq!(rig.fault(1, 0x6000, Access::Read).code, 0x10, "F_TRANSLATION");
    assert_eq!(rig.smmu.counters().walk_cache_hits, 3);
    // `drop_caches` empties the walk cache too (injected faults that rewrite tables rely on it).
    rig.mem.write_u64(slot, old).unwrap();
    rig.cmds_sync(&[Command::TlbiNhAsid { vmid: 0, asid: 1 }]);
    assert_eq!(rig.phys(1, 0x6000, Access::Read), Some(0x10_6000));
    rig.mem.write_u64(slot, TableDesc::to(empty).into_bits()).unwrap();
    rig.smmu.drop_caches();
    assert_eq!(rig.fault(1, 0x7000, Access::Read).code, 0x10, "F_TRANSLATION");
    assert_eq!(rig.smmu.counters().walk_cache_hits, 3);
}

/// The TLBIs that cover a tag's stage-1 entries as a whole drop its walk paths (NH_ALL of its VMID, S12_VMALL,
/// NSNH_ALL), as does NH_VAA (every ASID) by an address in the path's 2 MiB without Leaf; another VMID's, another
/// 2 MiB's or a Leaf = 1 one leaves them.
#[test]
fn whole_tag_tlbis_drop_walk_paths_and_others_leave_them() {
    let (mut rig, t1, _) = s1_rig();
    let slot = s1_slot(&mut rig, t1, 0, 2);
    let old = rig.mem.read_u64(slot).unwrap();
    let empty = rig.page();
    let vaa =
        |addr: u64, leaf: bool| Command::TlbiNhVaa { vmid: 0, addr, scope: TlbiScope { leaf, ..TlbiScope::ZERO } };
    for (cmd, drops) in [
        (vaa(0x3000, true), false),
        (vaa(0x4000_0000, false), false),
        (vaa(0x3000, false), true),
        (Command::TlbiNhAll { vmid: 1 }, false),
        (Command::TlbiNhAll { vmid: 0 }, true),
        (Command::TlbiS12Vmall { vmid: 0 }, true),
        (Command::TlbiNsnhAll, true),
    ] {
        // The path to the real table cached by a walk, then the level-2 descriptor pointed at an empty table
        // behind the unit's back.
        rig.mem.write_u64(slot, old).unwrap();
        rig.cmds_sync(&[Command::TlbiNsnhAll]);
        assert_eq!(rig.phys(1, 0x1000, Access::Read), Some(0x10_1000));
        rig.mem.write_u64(slot, TableDesc::to(empty).into_bits()).unwrap();
        rig.cmds_sync(&[cmd]);
        assert_eq!(rig.phys(1, 0x2000, Access::Read).is_none(), drops, "{cmd:?}");
    }
}

#[test]
fn tlbi_commands_drop_exactly_their_entries() {
    let (mut rig, _, _) = s1_rig();
    let fill = |rig: &mut Rig| {
        for sid in [1, 2] {
            for i in 0..4u64 {
                rig.phys(sid, i << 12, Access::Read).unwrap();
            }
        }
    };
    let cached = |rig: &Rig, asid: u16| {
        (0..4u64).map(|i| rig.smmu.tlb_lookup(0, Some(asid), i << 12).is_some()).collect::<Vec<_>>()
    };
    fill(&mut rig);
    assert_eq!(rig.smmu.cache_sizes().0, 8);
    // A range of two pages (RIL: TG = 4 KiB, NUM = 1) at 0x1000 in ASID 1.
    let two = TlbiScope { tg: 1, num: 1, ..TlbiScope::ZERO };
    rig.cmds_sync(&[Command::TlbiNhVa { vmid: 0, asid: 1, addr: 0x1000, scope: two }]);
    assert_eq!(cached(&rig, 1), [true, false, false, true]);
    assert_eq!(cached(&rig, 2), [true; 4]);
    // NH_VAA: that VA in every ASID.
    rig.cmds_sync(&[Command::TlbiNhVaa { vmid: 0, addr: 0x3000, scope: TlbiScope::ZERO }]);
    assert_eq!(cached(&rig, 1), [true, false, false, false]);
    assert_eq!(cached(&rig, 2), [true, true, true, false]);
    // Other VMIDs are untouched; NH_ALL of VMID 0 drops all stage-1 entries.
    rig.cmds_sync(&[Command::TlbiNhAll { vmid: 5 }, Command::TlbiS12Vmall { vmid: 5 }]);
    assert_eq!(rig.smmu.cache_sizes().0, 4);
    rig.cmds_sync(&[Command::TlbiNhAll { vmid: 0 }]);
    assert_eq!(rig.smmu.cache_sizes().0, 0);
    fill(&mut rig);
    rig.cmds_sync(&[Command::TlbiS12Vmall { vmid: 0 }]);
    assert_eq!(rig.smmu.cache_sizes().0, 0);
    fill(&mut rig);
    rig.cmds_sync(&[Command::TlbiNsnhAll]);
    assert_eq!(rig.smmu.cache_sizes().0, 0);
}

#[test]
fn global_entries_survive_an_asid_invalidation() {
    let mut rig = Rig::linear();
    let t = rig.page();
    let ste = rig.s1_ste(3, t);
    rig.set_ste_linear(1, ste);
    let global = S1Pte::leaf(0x50_0000, 3, mair_idx::CACHE, true).with_ng(false).into_bits();
    rig.map_raw(t, 0, 48, 0x7000, 3, global);
    assert_eq!(rig.phys(1, 0x7000, Access::Read), Some(0x50_0000));
    rig.cmds_sync(&[Command::TlbiNhAsid { vmid: 0, asid: 3 }]);
    assert!(rig.smmu.tlb_lookup(0, Some(3), 0x7000).is_some(), "global: kept by NH_ASID");
    rig.cmds_sync(&[Command::TlbiNhVa { vmid: 0, asid: 9, addr: 0x7000, scope: TlbiScope::ZERO }]);
    assert!(rig.smmu.tlb_lookup(0, Some(3), 0x7000).is_none(), "global: dropped by NH_VA of any ASID");
}

#[test]
fn stage2_entries_need_stage2_invalidations() {
    let mut rig = Rig::linear();
    // 40-bit IPA from level 1 with two concatenated tables (Linux's layout): S2T0SZ 24, S2SL0 1.
    let t2 = rig.s2_root();
    rig.set_ste_linear(4, Ste::s2(7, t2, S2_T0SZ, S2_SL0, 5));
    rig.map_s2(t2, 0x80_0000_1000, 0x60_1000, 3, (true, true));
    assert_eq!(rig.phys(4, 0x80_0000_1234, Access::Write), Some(0x60_1234));
    rig.map_s2(t2, 0x80_0000_1000, 0x70_1000, 3, (true, true));
    rig.cmds_sync(&[Command::TlbiNhAll { vmid: 7 }]);
    assert_eq!(rig.phys(4, 0x80_0000_1234, Access::Write), Some(0x60_1234), "stage-1 invalidation: stale");
    rig.cmds_sync(&[Command::TlbiS2Ipa { vmid: 7, ipa: 0x80_0000_1000, scope: TlbiScope::ZERO }]);
    assert_eq!(rig.phys(4, 0x80_0000_1234, Access::Write), Some(0x70_1234));
    rig.mem.write_u64(t2 + 0x1000, S2Pte::new().into_bits()).unwrap();
    rig.cmds_sync(&[Command::TlbiS12Vmall { vmid: 7 }]);
    assert!(rig.phys(4, 0x80_0000_1234, Access::Write).is_none(), "level-1 entry gone after S12_VMALL");
}

#[test]
fn cfgi_commands_drop_exactly_their_configuration() {
    let mut rig = Rig::linear();
    for sid in 0..8 {
        rig.set_ste_linear(sid, Ste::bypass());
    }
    let t = rig.page();
    let ste = rig.s1_ste(1, t);
    rig.set_ste_linear(9, ste);
    rig.map_s1(t, 0, 0x300_0000, 3, true);
    let fill = |rig: &mut Rig| {
        for sid in (0..8).chain([9]) {
            rig.phys(sid, 0, Access::Read).unwrap();
        }
    };
    let cached = |rig: &Rig| (0..8).map(|s| rig.smmu.ste_cached(s)).collect::<Vec<_>>();
    fill(&mut rig);
    assert!(rig.smmu.cd_cached(9, 0));
    // Change every STE to abort: cached configurations keep bypassing.
    for sid in 0..8 {
        rig.set_ste_linear(sid, Ste::abort());
    }
    assert_eq!(rig.phys(3, 0x1000, Access::Write), Some(0x1000), "stale STE");
    rig.cmds_sync(&[Command::CfgiSte { sid: 3, leaf: true }]);
    assert_eq!(cached(&rig), [true, true, true, false, true, true, true, true]);
    assert_eq!(rig.fault(3, 0x1000, Access::Write).code, abort_code::STE);
    // Range 1: the two STEs of the aligned pair holding SID 5.
    rig.cmds_sync(&[Command::CfgiSteRange { sid: 5, range: 0 }]);
    assert_eq!(cached(&rig), [true, true, true, true, false, false, true, true]);
    rig.cmds_sync(&[Command::CfgiCd { sid: 9, ssid: 0, leaf: true }]);
    assert!(rig.smmu.ste_cached(9) && !rig.smmu.cd_cached(9, 0));
    rig.phys(9, 0, Access::Read).unwrap();
    rig.cmds_sync(&[Command::CfgiCdAll { sid: 8 }]);
    assert!(rig.smmu.cd_cached(9, 0));
    // An STE invalidation drops the stream's CDs too.
    rig.cmds_sync(&[Command::CfgiSte { sid: 9, leaf: false }]);
    assert!(!rig.smmu.cd_cached(9, 0));
    rig.cmds_sync(&[Command::CfgiAll]);
    assert_eq!((rig.smmu.cache_sizes().1, rig.smmu.cache_sizes().2), (0, 0));
    // Prefetch is a hint.
    rig.cmds_sync(&[Command::PrefetchConfig { sid: 1, ssid: None }]);
    assert!(!rig.smmu.gerror_active().cmdq_err());
}

#[test]
fn el2_streams_need_hyp_and_el2_invalidations() {
    let el2_ste = |rig: &mut Rig, ttb: u64| {
        let mut ste = rig.s1_ste(6, ttb);
        ste.0[1] |= 2 << 30;
        ste
    };
    let mut rig = Rig::linear();
    let t = rig.page();
    let ste = el2_ste(&mut rig, t);
    rig.set_ste_linear(1, ste);
    rig.map_s1(t, 0, 0x300_0000, 3, true);
    assert_eq!(rig.fault(1, 0, Access::Read).code, 0x04, "STRW = EL2 without IDR0.HYP");

    let mut rig = Rig::new(Smmuv3Config { hyp: true, ..Smmuv3Config::default() });
    rig.strtab_linear(4);
    rig.queues();
    rig.enable();
    let t = rig.page();
    let ste = el2_ste(&mut rig, t);
    rig.set_ste_linear(1, ste);
    rig.map_s1(t, 0, 0x300_0000, 3, true);
    assert_eq!(rig.phys(1, 0x10, Access::Read), Some(0x300_0010));
    rig.map_s1(t, 0, 0x310_0000, 3, true);
    // NS-EL1 maintenance leaves EL2 entries alone; EL2 maintenance drops them.
    rig.cmds_sync(&[Command::TlbiNsnhAll, Command::TlbiNhAsid { vmid: 0, asid: 6 }]);
    assert_eq!(rig.phys(1, 0x10, Access::Read), Some(0x300_0010));
    rig.cmds_sync(&[Command::TlbiEl2Asid { asid: 6 }]);
    assert_eq!(rig.phys(1, 0x10, Access::Read), Some(0x310_0010));
    rig.map_s1(t, 0, 0x320_0000, 3, true);
    rig.cmds_sync(&[Command::TlbiEl2All]);
    assert_eq!(rig.phys(1, 0x10, Access::Read), Some(0x320_0010));
}
