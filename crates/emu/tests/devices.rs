//! The DMA devices: the NIC's RX ring, the bulk copy engine, FLR, faults through VT-d, determinism, and
//! that every DMA is logged and goes through the IOMMU. The block device is in `devices_blk.rs`.

mod common;
mod dev_common;

use dev_common::{faulted, ram, read_vec, run, whats, Domain, Identity};
use iommu_driver::PhysMem;
use iommu_emu::devices::nic::RX_DESC_SIZE;
use iommu_emu::devices::{BulkDesc, RxDesc, SqEntry};
use iommu_emu::{
    Access, AnyDevice, Blk, BlkConfig, Bulk, BulkConfig, DmaDevice, DmaEvent, DmaOutcome, Nic, NicConfig, PhysMemory,
    Rate,
};

const RID: u32 = 0x0300;
const RING: u64 = 0x1_0000;
const BUF: u64 = 0x10_0000;

/// A NIC whose 8-descriptor ring at `RING` points at buffers `BUF + i * 4 KiB` (DMA addresses), with
/// `posted` of them handed to the device.
fn nic(mem: &mut PhysMemory, cfg: NicConfig, posted: u32) -> Nic {
    let mut nic = Nic::new("nic0", RID, cfg);
    for i in 0..8 {
        mem.write(RING + i * RX_DESC_SIZE, &RxDesc::posted(BUF + i * 0x1000).to_bytes()).unwrap();
    }
    nic.set_rx_ring(RING, 8);
    nic.set_rx_tail(posted);
    nic
}

fn desc(mem: &PhysMemory, i: u64) -> RxDesc {
    let mut b = [0; 16];
    mem.read(RING + i * RX_DESC_SIZE, &mut b).unwrap();
    RxDesc::from_bytes(b)
}

fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::new();
    Nic::packet_payload("nic0", seq, len, &mut v);
    v
}

#[test]
fn nic_fills_posted_buffers_then_drops_until_the_tail_moves() {
    let mut mem = ram();
    let cfg = NicConfig { rate: Rate::per_tick(1), packet_len: 100, buffer_size: 2048 };
    let mut nic = nic(&mut mem, cfg, 4);
    let (mut io, mut log) = (Identity::default(), Vec::new());
    run(&mut nic, 0..6, &mut io, &mut mem, &mut log);
    assert_eq!(nic.rx_head(), 4);
    let s = nic.stats();
    assert_eq!((s.arrived, s.received, s.no_buffer, s.bytes), (6, 4, 2, 400));
    assert!(nic.is_quiescent(), "RDH == RDT");
    for i in 0..4 {
        let d = desc(&mem, i);
        assert!(d.dd() && d.eop(), "descriptor {i}: {d:?}");
        assert_eq!((d.length, d.buffer_addr), (100, BUF + i * 0x1000));
        assert_eq!(read_vec(&mem, BUF + i * 0x1000, 101), [payload(i, 100), vec![0]].concat());
    }
    assert_eq!(desc(&mem, 4), RxDesc::posted(BUF + 4 * 0x1000), "not handed to the device: untouched");
    assert_eq!(&read_vec(&mem, BUF, 22), b"nic0#0000000000000000;");
    // Three DMAs per packet, in order, none for the drops.
    assert_eq!(whats(&log), ["rx-desc", "rx-data", "rx-wb"].repeat(4));
    let e = &log[4];
    assert_eq!(
        (e.time, e.rid, e.iova, e.len, e.access, e.phys),
        (1, RID, BUF + 0x1000, 100, Access::Write, Some(e.iova))
    );
    assert_eq!((log[5].iova, log[5].len), (RING + RX_DESC_SIZE + 8, 8), "write-back of the status half");

    // The driver posts the rest (one slot stays empty) and later wraps the tail: the head follows.
    nic.set_rx_tail(7);
    assert!(!nic.is_quiescent());
    run(&mut nic, 6..12, &mut io, &mut mem, &mut log);
    assert_eq!((nic.rx_head(), nic.stats().received, nic.stats().no_buffer), (7, 7, 5));
    // Arrival numbers count the dropped packets too: buffer 4 got packet 6.
    assert_eq!(read_vec(&mem, BUF + 4 * 0x1000, 100), payload(6, 100));
    nic.set_rx_tail(2);
    run(&mut nic, 12..15, &mut io, &mut mem, &mut log);
    assert_eq!(nic.rx_head(), 2);
    assert_eq!(read_vec(&mem, BUF, 100), payload(13, 100), "slot 0 reused after the wrap");
    nic.set_rx_tail(9); // beyond the ring: ignored
    assert_eq!(nic.rx_tail(), 2);
}

#[test]
fn nic_rate_is_per_tick_and_bounded() {
    let mut mem = ram();
    let every3 = NicConfig { rate: Rate::every(3), packet_len: 64, buffer_size: 2048 };
    let (mut io, mut log) = (Identity::default(), Vec::new());
    let mut a = nic(&mut mem, every3, 7);
    run(&mut a, 0..10, &mut io, &mut mem, &mut log);
    assert_eq!(a.stats().received, 4, "ticks 0, 3, 6, 9");
    // The same arrivals when the clock is sampled sparsely.
    let mut b = nic(&mut mem, every3, 7);
    b.tick(0, &mut io, &mut mem, &mut log);
    b.tick(9, &mut io, &mut mem, &mut log);
    b.tick(9, &mut io, &mut mem, &mut log);
    b.tick(4, &mut io, &mut mem, &mut log);
    assert_eq!(b.stats().arrived, 4);
    // A huge gap: at most MAX_PACKETS_PER_TICK are handled, the rest missed, without DMA.
    let mut c = nic(&mut mem, NicConfig { rate: Rate::per_tick(1), ..every3 }, 0);
    c.tick(0, &mut io, &mut mem, &mut log);
    let before = log.len();
    c.tick(1_000_000, &mut io, &mut mem, &mut log);
    let s = c.stats();
    assert_eq!((s.arrived, s.no_buffer, s.missed), (1_000_001, 257, 1_000_001 - 257));
    assert_eq!(log.len(), before);
    // Missed packets keep their arrival numbers: the next one is packet 1_000_001.
    c.set_rx_tail(1);
    c.tick(1_000_001, &mut io, &mut mem, &mut log);
    assert_eq!(read_vec(&mem, BUF, 64), payload(1_000_001, 64));
    // Oversized packets are clamped to the buffer.
    let big = Nic::new("n", 1, NicConfig { rate: Rate::OFF, packet_len: 1 << 20, buffer_size: 1 << 30 });
    assert_eq!((big.config().packet_len, big.config().buffer_size), (16384, 16384));
    assert!(big.is_quiescent());
}

#[test]
fn nic_faults_through_vtd_are_logged_and_survived() {
    const IOVA_RING: u64 = 0x4000_0000;
    const IOVA_BUF: u64 = 0x5000_0000;
    let mut d = Domain::new(RID as u16);
    d.map(IOVA_RING, 0x8_0000, 1);
    d.map(IOVA_BUF, 0x9_0000, 1); // only buffer 0's page
    for i in 0..4 {
        let rx = RxDesc::posted(IOVA_BUF + i * 0x1000);
        d.rig.mem.write(0x8_0000 + i * RX_DESC_SIZE, &rx.to_bytes()).unwrap();
    }
    let cfg = NicConfig { rate: Rate::per_tick(1), packet_len: 256, buffer_size: 2048 };
    let mut nic = Nic::new("nic0", RID, cfg);
    nic.set_rx_ring(IOVA_RING, 4);
    nic.set_rx_tail(3);
    let mut log = Vec::new();
    run(&mut nic, 0..3, &mut d.rig.vtd, &mut d.rig.mem, &mut log);
    // Packet 0 lands at the translated address; packets 1 and 2 fault on buffer 1 and are dropped.
    assert_eq!(read_vec(&d.rig.mem, 0x9_0000, 256), payload(0, 256));
    assert_eq!(log[1].phys, Some(0x9_0000));
    assert_eq!(whats(&log), ["rx-desc", "rx-data", "rx-wb", "rx-desc", "rx-data", "rx-desc", "rx-data"]);
    let f = &log[4];
    assert!(faulted(f) && f.phys.is_none() && f.iova == IOVA_BUF + 0x1000, "{f:?}");
    assert_eq!((nic.rx_head(), nic.stats().dma_errors, nic.stats().received), (1, 2, 1));
    assert_eq!(d.rig.vtd.fault_count(), 2);
    // The descriptor is read again for the next packet: point it at a mapped buffer and it completes.
    d.rig.mem.write(0x8_0000 + RX_DESC_SIZE, &RxDesc::posted(IOVA_BUF + 0x800).to_bytes()).unwrap();
    run(&mut nic, 3..4, &mut d.rig.vtd, &mut d.rig.mem, &mut log);
    assert_eq!(read_vec(&d.rig.mem, 0x9_0800, 256), payload(3, 256));
    assert_eq!(nic.rx_head(), 2);
    // A ring the IOMMU does not map: the descriptor fetch faults, nothing else happens.
    nic.set_rx_ring(0x6000_0000, 4);
    nic.set_rx_tail(1);
    let n = log.len();
    run(&mut nic, 4..6, &mut d.rig.vtd, &mut d.rig.mem, &mut log);
    assert_eq!(whats(&log[n..]), ["rx-desc", "rx-desc"]);
    assert!(log[n..].iter().all(|e| faulted(e) && e.access == Access::Read));
}

const BULK_LIST: u64 = 0xa_0000;

/// Two descriptors copying page A → B and C → D.
fn bulk_setup(mem: &mut PhysMemory) -> Bulk {
    let list =
        [BulkDesc { src: 0x2_0000, dst: 0x3_0000, len: 4096 }, BulkDesc { src: 0x4_0000, dst: 0x5_0000, len: 100 }];
    for (i, d) in list.iter().enumerate() {
        mem.write(BULK_LIST + i as u64 * 24, &d.to_bytes()).unwrap();
    }
    mem.write(0x2_0000, &[0xaa; 4096]).unwrap();
    mem.write(0x4_0000, &[0xbb; 4096]).unwrap();
    let mut b = Bulk::new("gpu0", 0x0500, BulkConfig { descs_per_tick: 1, max_len: 4096 });
    b.start(BULK_LIST, 2);
    b
}

#[test]
fn bulk_copies_in_a_loop_and_rereads_its_list() {
    let mut mem = ram();
    let mut b = bulk_setup(&mut mem);
    let (mut io, mut log) = (Identity::default(), Vec::new());
    run(&mut b, 0..4, &mut io, &mut mem, &mut log);
    assert_eq!(read_vec(&mem, 0x3_0000, 4096), vec![0xaa; 4096]);
    assert_eq!(read_vec(&mem, 0x5_0000, 101), [vec![0xbb; 100], vec![0]].concat());
    let s = b.stats();
    assert_eq!((s.copies, s.bytes, s.passes), (4, 2 * 4196, 2));
    assert_eq!(whats(&log), ["bulk-desc", "bulk-src", "bulk-dst"].repeat(4));
    assert!(!b.is_quiescent());
    // New source data and a corrupt length: the next pass copies the new data, clamped.
    mem.write(0x2_0000, &[0xcc; 4096]).unwrap();
    mem.write_u64(BULK_LIST + 16, u64::MAX).unwrap();
    run(&mut b, 4..5, &mut io, &mut mem, &mut log);
    assert_eq!(read_vec(&mem, 0x3_0000, 4096), vec![0xcc; 4096]);
    assert_eq!(b.stats().clamped, 1);
    // A source outside RAM: the copy fails, the engine moves on to the next descriptor.
    mem.write_u64(BULK_LIST, RAM_END).unwrap();
    run(&mut b, 5..8, &mut io, &mut mem, &mut log);
    let n = log.len();
    assert!(matches!(log[n - 4].outcome, DmaOutcome::BadAddress { phys: RAM_END, done: 0 }), "{:?}", log[n - 4]);
    assert_eq!(whats(&log[n - 5..]), ["bulk-desc", "bulk-src", "bulk-desc", "bulk-src", "bulk-dst"]);
    assert_eq!((b.stats().dma_errors, b.stats().copies), (1, 7));
}

const RAM_END: u64 = dev_common::RAM;

#[test]
fn flr_stops_every_device_and_forgets_its_rings() {
    let mut mem = ram();
    let nic = nic(&mut mem, NicConfig::default(), 7);
    let mut bulk = bulk_setup(&mut mem);
    let mut blk = Blk::new("nvme0", 0x0400, BlkConfig::default());
    blk.set_queues(0x6_0000, 0x7_0000, 8);
    for i in 0..6 {
        let cmd = SqEntry::read(i, 0x8_0000 + i as u64 * 4096, 0, 1);
        mem.write(0x6_0000 + i as u64 * 64, &cmd.to_bytes()).unwrap();
    }
    blk.ring_sq_tail(6);
    blk.ring_cq_head(0);
    let mut devs: Vec<Box<dyn DmaDevice>> = vec![Box::new(nic), Box::new(blk), Box::new(bulk.clone())];
    let (mut io, mut log) = (Identity::default(), Vec::new());
    for t in 0..1 {
        for d in devs.iter_mut() {
            d.tick(t, &mut io, &mut mem, &mut log);
        }
    }
    assert!(log.iter().any(|e| e.rid == 0x0300) && log.iter().any(|e| e.rid == 0x0400));
    assert!(devs.iter().all(|d| !d.is_quiescent()), "all busy before the reset");
    for d in devs.iter_mut() {
        d.flr();
    }
    let (snap, n, seen) = (mem.snapshot(), log.len(), io.seen.len());
    for t in 1..50 {
        for d in devs.iter_mut() {
            d.tick(t, &mut io, &mut mem, &mut log);
        }
    }
    assert_eq!((log.len(), io.seen.len()), (n, seen), "no DMA after FLR");
    assert!(mem.changed_pages(&snap).is_empty());
    assert!(devs.iter().all(|d| d.is_quiescent()));
    // Forgotten: a tail or doorbell write after FLR starts nothing until the rings are set up again.
    bulk.flr();
    assert_eq!((bulk.is_running(), bulk.stats().flrs), (false, 1));
    let mut any: Vec<AnyDevice> = devs.into_iter().map(|_| AnyDevice::from(bulk.clone())).collect();
    any[0].as_bulk_mut().unwrap().start(BULK_LIST, 2);
    any[0].tick(60, &mut io, &mut mem, &mut log);
    assert_eq!(log.len(), n + 3, "restarted by its driver: runs again");
}

/// Every device, every DMA: each request the IOMMU saw belongs to one logged event, in order, and every
/// page that changed was written by a logged write.
#[test]
fn every_dma_is_logged_and_goes_through_the_iommu() {
    let (log, io, mem, snap) = mixed_run(0);
    let mut expected = Vec::new();
    for e in &log {
        let pages = match e.outcome {
            DmaOutcome::Done => e.len,
            DmaOutcome::Fault { done, .. } | DmaOutcome::BadAddress { done, .. } => done + 1,
        };
        let mut at = e.iova;
        while at < e.iova + pages as u64 {
            expected.push((e.rid, at, e.access));
            at = (at & !0xfff) + 0x1000;
        }
    }
    assert_eq!(io.seen, expected);
    let written = |pfn: u64| {
        log.iter().any(|e| {
            e.access == Access::Write
                && e.moved() > 0
                && e.iova >> 12 <= pfn
                && (e.iova + e.moved() as u64 - 1) >> 12 >= pfn
        })
    };
    let changed = mem.changed_pages(&snap);
    assert!(changed.len() > 10, "{changed:x?}");
    assert!(changed.iter().all(|&p| written(p)), "a page changed without a logged write");
}

/// NIC, disk and copy engine side by side for 40 ticks on the identity IOMMU.
fn mixed_run(seed: u8) -> (Vec<DmaEvent>, Identity, PhysMemory, PhysMemory) {
    let mut mem = ram();
    let mut nic = nic(&mut mem, NicConfig { rate: Rate::every(2), packet_len: 3000, buffer_size: 4096 }, 7);
    let bulk = bulk_setup(&mut mem);
    let mut blk = Blk::new("nvme0", 0x0400, BlkConfig { cmds_per_tick: 2, ..BlkConfig::default() });
    blk.set_queues(0x6_0000, 0x7_0000, 16);
    for pfn in 0x80..0x98 {
        mem.write(pfn << 12, &[pfn as u8; 4096]).unwrap();
    }
    for i in 0..12u16 {
        let data = 0x8_0000 + i as u64 * 0x2000 + seed as u64;
        let cmd = match i % 3 {
            0 => SqEntry::write(i, data, i as u64, 2),
            1 => SqEntry::read(i, data, i as u64 - 1, 2),
            _ => SqEntry { opcode: 0x7f, ..Default::default() },
        };
        mem.write(0x6_0000 + i as u64 * 64, &cmd.to_bytes()).unwrap();
    }
    blk.ring_sq_tail(12);
    nic.set_rx_tail(5);
    let snap = mem.snapshot();
    let mut devs: Vec<AnyDevice> = vec![nic.into(), blk.into(), bulk.into()];
    let (mut io, mut log) = (Identity::default(), Vec::new());
    for t in 0..40 {
        for d in devs.iter_mut() {
            d.tick(t, &mut io, &mut mem, &mut log);
        }
    }
    (log, io, mem, snap)
}

#[test]
fn same_inputs_same_event_log() {
    let (a, _, ma, _) = mixed_run(0);
    let (b, _, mb, _) = mixed_run(0);
    assert_eq!(a, b);
    assert!(ma.changed_pages(&mb).is_empty());
    let (c, _, _, _) = mixed_run(8);
    assert_ne!(a, c, "the log reflects its inputs");
}
