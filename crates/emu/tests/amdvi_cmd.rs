//! The command buffer and the event log at raw offsets: completion waits (store, ComWaitInt, the SNP Completion
//! Store window), invalidations dropping exactly their entries, stale translations until the right invalidation,
//! illegal commands stopping the processor, the SNP series' locked-register failure, event-log overflow.

#[path = "amdvi_rig.rs"]
mod rig;

use iommu_driver::PhysMem;
use iommu_emu::{Access, AmdviConfig};
use iommu_spec::amdvi::{
    invalidate_iommu_all, off, CmdOpcode, CompletePprRequest, CompletionWait, Control, DevTableBase, DeviceId, Dte,
    Event, EventFlags, ExclusionBase, ExclusionLimit, InvalidateDevice, InvalidateIommuPages, InvalidateIotlbPages,
    IoPte, PagingMode, RingBase, RingPtr, Status, CMD_SIZE,
};
use rig::{Rig, CMD_BUF, EVT_LOG, RAM, RW, SEM};

#[test]
fn completion_wait_stores_and_raises_com_wait_int() {
    let mut rig = Rig::linux();
    assert!(rig.run(&[]));
    assert_eq!(rig.cmd_head(), 1, "head advanced to the tail");
    assert!(!rig.status().com_wait_int(), "no I, no interrupt status");
    // I sets ComWaitInt; the interrupt is sent only with ComWaitIntEn.
    let with_i = CompletionWait::store(SEM, 42).with_i(true).into_bits();
    rig.submit(&[with_i]);
    assert_eq!(rig.mem.read_u64(SEM).unwrap(), 42);
    assert!(rig.status().com_wait_int());
    assert_eq!(rig.iommu.counters().com_wait_interrupts, 0);
    rig.w32(off::STATUS, Status::new().with_com_wait_int(true).into_bits() as u32);
    rig.enable(Control::new().with_com_wait_int_en(true));
    rig.submit(&[CompletionWait::new().with_opcode(CmdOpcode::CompletionWait).with_i(true).into_bits()]);
    assert!(rig.status().com_wait_int());
    assert_eq!(rig.iommu.counters().com_wait_interrupts, 1);
    assert_eq!(rig.mem.read_u64(SEM).unwrap(), 42, "S clear: nothing stored");
    // The 512-entry ring wraps.
    for _ in 0..700 {
        assert!(rig.run(&[]));
    }
    assert_eq!(rig.cmd_head(), (3 + 700) % 512);
    assert_eq!(rig.iommu.counters().commands, 703);
    assert!(rig.status().cmd_buf_run());
}

#[test]
fn commands_wait_for_iommu_en_and_cmd_buf_en() {
    let mut rig = Rig::bare(AmdviConfig::default());
    rig.w64(off::CMD_BUF_BASE, RingBase::from_ring(CMD_BUF, 9).into_bits());
    let (wait, seq) = rig.next_wait();
    rig.submit(&[wait]);
    assert_eq!(rig.mem.read_u64(SEM).unwrap(), 0);
    rig.enable(Control::new().with_cmd_buf_en(true));
    assert_eq!(rig.mem.read_u64(SEM).unwrap(), 0, "CmdBufEn alone does not run commands");
    assert!(!rig.status().cmd_buf_run());
    rig.enable(Control::new().with_iommu_en(true));
    assert_eq!(rig.mem.read_u64(SEM).unwrap(), seq, "posted commands run once the unit is enabled");
    assert_eq!(rig.cmd_head(), 1);
}

/// Devices 0x10 and 0x18 in domain 1, 0x20 in domain 2, four 4 KiB pages each; every translation cached.
fn two_domains() -> Rig {
    let mut rig = Rig::linux();
    let d1 = rig.attach(0x10, 1, 3);
    rig.set_dte(0x18, Dte::translated(d1, PagingMode::Level3, 1, true, true));
    let d2 = rig.attach(0x20, 2, 3);
    for i in 0..4u64 {
        rig.map(d1, 3, i << 12, 0x10_0000 + (i << 12), 1, RW);
        rig.map(d2, 3, i << 12, 0x20_0000 + (i << 12), 1, RW);
    }
    fill(&mut rig);
    rig
}

fn fill(rig: &mut Rig) {
    for dev in [0x10, 0x18, 0x20] {
        for i in 0..4u64 {
            rig.phys(dev, i << 12, Access::Read).unwrap();
        }
    }
}

fn cached(rig: &Rig, domain: u16) -> Vec<bool> {
    (0..4u64).map(|i| rig.iommu.iotlb_lookup(domain, i << 12).is_some()).collect()
}

#[test]
fn invalidations_drop_exactly_their_entries() {
    let mut rig = two_domains();
    assert_eq!(rig.iommu.cache_sizes(), (8, 3), "domain 1's pages are shared by both of its devices");
    assert!(rig.run(&[InvalidateDevice::devtab_entry(DeviceId(0x18)).into_bits()]));
    assert_eq!([0x10, 0x18, 0x20].map(|d| rig.iommu.dte_cached(d)), [true, false, true]);
    assert_eq!(rig.iommu.cache_sizes().0, 8, "the IOTLB is tagged by domain, not device");
    // One page, then a 16 KiB range, of domain 1.
    assert!(rig.run(&[InvalidateIommuPages::range(1, 0x2000, 0x1000).into_bits()]));
    assert_eq!(cached(&rig, 1), [true, true, false, true]);
    assert_eq!(cached(&rig, 2), [true; 4]);
    assert!(rig.run(&[InvalidateIommuPages::range(1, 0, 0x2000).into_bits()]));
    assert_eq!(cached(&rig, 1), [false, false, false, true]);
    // The all-pages encoding (0x7FFF_FFFF_FFFF_F000, S = 1) empties the domain and only it.
    assert!(rig.run(&[InvalidateIommuPages::all(1).into_bits()]));
    assert_eq!(cached(&rig, 1), [false; 4]);
    assert_eq!(cached(&rig, 2), [true; 4]);
    // Interrupt-table and device-IOTLB invalidations drop none of these.
    let irt = InvalidateDevice::interrupt_table(DeviceId(0x20)).into_bits();
    let dev_iotlb = InvalidateIotlbPages::range(DeviceId(0x20), 0, 0, 0x1000).into_bits();
    assert!(rig.run(&[irt, dev_iotlb]));
    assert_eq!(rig.iommu.cache_sizes(), (4, 2));
    fill(&mut rig);
    assert!(rig.run(&[invalidate_iommu_all()]));
    assert_eq!(rig.iommu.cache_sizes(), (0, 0));
    let c = rig.iommu.counters();
    assert_eq!((c.dte_invalidations, c.iotlb_invalidations, c.irt_invalidations, c.all_invalidations), (1, 3, 1, 1));
}

#[test]
fn stale_translations_survive_until_the_right_invalidation() {
    let mut rig = Rig::linux();
    let root = rig.attach(0x10, 7, 4);
    rig.map(root, 4, 0x1000, 0x5000, 1, RW);
    assert_eq!(rig.phys(0x10, 0x1abc, Access::Write), Some(0x5abc));
    // Remap the page: the IOTLB still holds the old frame.
    rig.map(root, 4, 0x1000, 0x6000, 1, RW);
    assert_eq!(rig.phys(0x10, 0x1abc, Access::Write), Some(0x5abc));
    // Invalidating another domain, or another page, does not help.
    assert!(rig.run(&[InvalidateIommuPages::all(8).into_bits(), InvalidateIommuPages::range(7, 0x2000, 1).into_bits()]));
    assert_eq!(rig.phys(0x10, 0x1abc, Access::Write), Some(0x5abc));
    assert!(rig.run(&[InvalidateIommuPages::range(7, 0x1000, 0x1000).into_bits()]));
    assert_eq!(rig.phys(0x10, 0x1abc, Access::Write), Some(0x6abc));
    // Unmapping likewise keeps translating until invalidated, then faults.
    rig.map_entry(root, 4, 0x1000, 1, IoPte::new());
    assert_eq!(rig.phys(0x10, 0x1000, Access::Read), Some(0x6000));
    assert!(rig.run(&[InvalidateIommuPages::range(7, 0x1000, 0x1000).into_bits()]));
    assert_eq!(rig.fault(0x10, 0x1000, Access::Read).code, 2);
    // A DTE change is not seen before INVALIDATE_DEVTAB_ENTRY.
    rig.set_dte(0x10, Dte::blocked(false));
    rig.map(root, 4, 0x1000, 0x6000, 1, RW);
    assert!(rig.run(&[InvalidateIommuPages::all(7).into_bits()]));
    assert_eq!(rig.phys(0x10, 0x1000, Access::Read), Some(0x6000));
    assert!(rig.run(&[InvalidateDevice::devtab_entry(DeviceId(0x10)).into_bits()]));
    assert_eq!(rig.fault(0x10, 0x1000, Access::Read).code, 2, "mode 0, IR = IW = 0");
}

#[test]
fn illegal_commands_log_their_address_and_stop_the_processor() {
    let wait = CompletionWait::store(SEM, 0x99).into_bits();
    let bad: [u128; 8] = [
        0,
        6 << 60, // PREFETCH_IOMMU_PAGES: not advertised (EFR.PreFSup = 0)
        9 << 60,
        0xf << 60,
        wait | 1 << 52,
        InvalidateDevice::devtab_entry(DeviceId(1)).into_bits() | 1 << 16,
        invalidate_iommu_all() | 1,
        // COMPLETE_PPR_REQUEST without EFR.PPRSup.
        CompletePprRequest::new().with_opcode(CmdOpcode::CompletePprRequest).into_bits(),
    ];
    for (n, cmd) in bad.into_iter().enumerate() {
        let mut rig = Rig::linux();
        assert!(rig.run(&[]));
        rig.submit(&[cmd, wait]);
        assert_eq!(rig.mem.read_u64(SEM).unwrap(), 1, "#{n}: nothing after the bad command ran");
        assert_eq!(rig.cmd_head(), 1, "#{n}: head stays at the bad command");
        assert!(!rig.status().cmd_buf_run(), "#{n}");
        assert!(rig.control().cmd_buf_en(), "#{n}: the enable stays; the run bit says it stopped");
        assert_eq!(rig.events(), [Event::IllegalCommandError { address: CMD_BUF + CMD_SIZE }], "#{n}");
        // Further tail writes do nothing until software restarts the ring.
        rig.submit(&[wait]);
        assert_eq!(rig.mem.read_u64(SEM).unwrap(), 1, "#{n}");
        rig.disable(Control::new().with_cmd_buf_en(true));
        rig.w32(off::CMD_HEAD, 0);
        rig.w32(off::CMD_TAIL, 0);
        rig.enable(Control::new().with_cmd_buf_en(true));
        assert!(rig.run(&[]), "#{n}: restarted");
        assert_eq!(rig.iommu.counters().command_errors, 1);
    }
}

#[test]
fn invalidate_all_needs_ia_sup() {
    let mut cfg = AmdviConfig::default();
    cfg.efr.set_ia_sup(false);
    let mut rig = Rig::new(cfg);
    assert!(!rig.run(&[invalidate_iommu_all()]));
    assert_eq!(rig.events(), [Event::IllegalCommandError { address: CMD_BUF }]);
}

#[test]
fn fetch_and_store_failures_are_command_hardware_errors() {
    let master_abort = EventFlags::new().with_ty(1);
    let mut rig = Rig::linux();
    let beyond = RAM + 0x1000;
    assert!(!rig.run(&[CompletionWait::store(beyond, 1).into_bits()]));
    assert_eq!(rig.events(), [Event::CommandHardwareError { address: beyond, flags: master_abort }]);
    assert!(!rig.status().cmd_buf_run());
    // A command buffer outside RAM: the fetch fails at the ring's first entry.
    let mut rig = Rig::linux();
    rig.disable(Control::new().with_cmd_buf_en(true));
    rig.w64(off::CMD_BUF_BASE, RingBase::from_ring(beyond, 8).into_bits());
    rig.enable(Control::new().with_cmd_buf_en(true));
    rig.w32(off::CMD_TAIL, 0x10);
    assert_eq!(rig.events(), [Event::CommandHardwareError { address: beyond, flags: master_abort }]);
}

/// An SNP unit as Linux sets it up: the CWWB window (Exclusion Base = Limit = the `cmd_sem` page), then SNP_INIT
/// locks it.
fn snp_rig() -> Rig {
    let mut rig = Rig::new(AmdviConfig::snp());
    rig.w64(off::EXCL_BASE, ExclusionBase::from_address(SEM).into_bits());
    rig.w64(off::EXCL_LIMIT, ExclusionLimit::from_address(SEM).into_bits());
    rig.iommu.set_snp_lock(true);
    rig
}

#[test]
fn snp_completion_stores_must_land_in_the_completion_store_window() {
    let mut rig = snp_rig();
    assert!(rig.run(&[]));
    rig.submit(&[CompletionWait::store(SEM + 0xff8, 5).into_bits()]);
    assert_eq!(rig.mem.read_u64(SEM + 0xff8).unwrap(), 5);
    // Outside the window: illegal, nothing stored.
    let outside = SEM + 0x1000;
    rig.submit(&[CompletionWait::store(outside, 6).into_bits()]);
    assert_eq!(rig.mem.read_u64(outside).unwrap(), 0);
    assert_eq!(rig.events(), [Event::IllegalCommandError { address: CMD_BUF + 2 * CMD_SIZE }]);
    assert!(!rig.status().cmd_buf_run());
    // Without SNP enforcement the same store is fine.
    let mut rig = Rig::new(AmdviConfig::snp());
    rig.submit(&[CompletionWait::store(outside, 6).into_bits()]);
    assert_eq!(rig.mem.read_u64(outside).unwrap(), 6);
}

/// The AMD SNP kdump series' failure at the registers: SNP_SHUTDOWN_EX failed, so the crash kernel meets a locked unit. A fresh init's new
/// buffers are ignored and its completion wait never lands; reusing the old buffers (the fix) works.
#[test]
fn seed_000_locked_registers_make_fresh_buffers_time_out() {
    let (new_dt, new_cmd, new_evt, new_sem) = (0x180_0000u64, 0x30_0000u64, 0x31_0000u64, 0x32_0000u64);
    let mut rig = snp_rig();
    // The old kernel ran for a while: its ring holds old completion waits.
    for _ in 0..5 {
        assert!(rig.run(&[]));
    }
    let old_sem = rig.mem.read_u64(SEM).unwrap();
    // Crash kernel, "reset" policy: program fresh buffers as a normal boot would.
    rig.disable(Control::new().with_cmd_buf_en(true).with_event_log_en(true));
    rig.w64(off::DEV_TABLE_BASE, DevTableBase::from_table(new_dt, 2 << 20).into_bits());
    rig.w64(off::CMD_BUF_BASE, RingBase::from_ring(new_cmd, 9).into_bits());
    rig.w64(off::EVENT_LOG_BASE, RingBase::from_ring(new_evt, 9).into_bits());
    rig.w64(off::EXCL_BASE, ExclusionBase::from_address(new_sem).into_bits());
    rig.w64(off::EXCL_LIMIT, ExclusionLimit::from_address(new_sem).into_bits());
    for o in [off::CMD_HEAD, off::CMD_TAIL, off::EVENT_HEAD, off::EVENT_TAIL] {
        rig.w32(o, 0);
    }
    rig.enable(Control::new().with_cmd_buf_en(true).with_event_log_en(true));
    assert_eq!(rig.r64(off::CMD_BUF_BASE), RingBase::from_ring(CMD_BUF, 9).into_bits(), "the write was ignored");
    // Its first completion wait, written into its own ring, waits on its own semaphore.
    rig.mem.write_u128(new_cmd, CompletionWait::store(new_sem, 1).into_bits()).unwrap();
    rig.w32(off::CMD_TAIL, 0x10);
    assert_eq!(rig.mem.read_u64(new_sem).unwrap(), 0, "Completion-Wait loop timed out");
    // The unit ran the old ring's stale entry instead.
    assert_eq!(rig.mem.read_u64(SEM).unwrap(), 1);
    assert!(old_sem > 1);
    // "adopt": take the ring and the semaphore page from the registers, as Linux 6.18 does.
    let ring = RingBase::from_bits(rig.r64(off::CMD_BUF_BASE)).ring();
    let sem = ExclusionBase::from_bits(rig.r64(off::EXCL_BASE)).address();
    let tail = RingPtr::from_bits(rig.r64(off::CMD_TAIL)).index() as u64;
    rig.mem.write_u128(ring + tail * CMD_SIZE, CompletionWait::store(sem, 0xabc).into_bits()).unwrap();
    rig.w32(off::CMD_TAIL, RingPtr::from_index(tail as u32 + 1).into_bits() as u32);
    assert_eq!(rig.mem.read_u64(SEM).unwrap(), 0xabc);
    assert_eq!(rig.iommu.counters().locked_writes_ignored, 5);
}

#[test]
fn event_log_overflow_stops_logging_until_restarted() {
    let mut rig = Rig::linux();
    // 00:02.0 with Linux's boot default DTE (mode 0, IR = IW = 0): every DMA faults.
    rig.set_dte(0x10, Dte::blocked(false));
    for i in 0..511u64 {
        assert!(rig.fault(0x10, i << 12, Access::Write).recorded);
    }
    assert!(rig.status().event_log_int() && !rig.status().event_overflow());
    assert_eq!(rig.iommu.counters().event_interrupts, 0, "EventIntEn is off");
    // 512 entries hold 511 events: the next one overflows and stops the logger.
    rig.enable(Control::new().with_event_int_en(true));
    assert!(!rig.fault(0x10, 0x1000, Access::Write).recorded);
    let st = rig.status();
    assert!(st.event_overflow() && !st.event_log_run());
    assert_eq!(rig.iommu.counters().event_interrupts, 1);
    let events = rig.events();
    assert_eq!(events.len(), 511);
    let flags = EventFlags::new().with_rw(true);
    assert_eq!(events[5], Event::IoPageFault { device: DeviceId(0x10), domain_or_pasid: 0, address: 0x5000, flags });
    // Drained but still stopped; clearing the overflow alone, or rewriting Control with EventLogEn still set, does
    // not restart it: Linux clears the overflow and toggles EventLogEn.
    assert!(!rig.fault(0x10, 0, Access::Read).recorded);
    rig.w32(off::STATUS, Status::new().with_event_overflow(true).with_event_log_int(true).into_bits() as u32);
    rig.enable(Control::new().with_event_log_en(true));
    assert!(!rig.status().event_log_run());
    assert!(!rig.fault(0x10, 0, Access::Read).recorded);
    rig.disable(Control::new().with_event_log_en(true));
    rig.enable(Control::new().with_event_log_en(true));
    assert!(rig.fault(0x10, 0x7000, Access::Read).recorded);
    assert_eq!(rig.events().len(), 1);
    assert_eq!(rig.iommu.counters().events_dropped, 3);
    assert_eq!(rig.r64(off::EVENT_LOG_BASE), RingBase::from_ring(EVT_LOG, 9).into_bits());
}
