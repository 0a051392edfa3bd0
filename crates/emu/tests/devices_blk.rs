//! The NVMe-like block device: commands through the submission queue, data both ways, phase-tagged
//! completions across a wrap, a full completion queue, bad commands, faults through VT-d, FLR.

mod common;
mod dev_common;

use dev_common::{faulted, ram, read_vec, run, whats, Domain, Identity};
use iommu_driver::PhysMem;
use iommu_emu::devices::nvme::{status, BLOCK, STATUS_DNR};
use iommu_emu::devices::{CqEntry, DmaEvent, SqEntry};
use iommu_emu::{Access, Blk, BlkConfig, DmaDevice, DmaOutcome, Iommu, PhysMemory};

const RID: u32 = 0x0400;
const SQ: u64 = 0x1_0000;
const CQ: u64 = 0x2_0000;

/// The driver's side of one queue pair (DMA addresses `sq`/`cq`, physical `sq_pa`/`cq_pa`).
struct Host {
    blk: Blk,
    mem: PhysMemory,
    log: Vec<DmaEvent>,
    sq_pa: u64,
    cq_pa: u64,
    tail: u32,
    entries: u32,
    now: u64,
}

impl Host {
    fn new(mem: PhysMemory, cfg: BlkConfig, (sq, sq_pa): (u64, u64), (cq, cq_pa): (u64, u64), entries: u32) -> Self {
        let mut blk = Blk::new("nvme0", RID, cfg);
        blk.set_queues(sq, cq, entries);
        Host { blk, mem, log: Vec::new(), sq_pa, cq_pa, tail: 0, entries, now: 0 }
    }

    fn identity(entries: u32) -> Self {
        Host::new(ram(), BlkConfig::default(), (SQ, SQ), (CQ, CQ), entries)
    }

    /// Write commands at the tail and ring the doorbell once.
    fn submit(&mut self, cmds: &[SqEntry]) {
        for c in cmds {
            self.mem.write(self.sq_pa + self.tail as u64 * 64, &c.to_bytes()).unwrap();
            self.tail = (self.tail + 1) % self.entries;
        }
        self.blk.ring_sq_tail(self.tail);
    }

    fn tick(&mut self, iommu: &mut dyn Iommu) {
        self.blk.tick(self.now, iommu, &mut self.mem, &mut self.log);
        self.now += 1;
    }

    fn cqe(&self, i: u64) -> CqEntry {
        let mut b = [0; 16];
        self.mem.read(self.cq_pa + i * 16, &mut b).unwrap();
        CqEntry::from_bytes(&b)
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

#[test]
fn write_then_read_back_through_the_queues() {
    let mut h = Host::identity(8);
    let mut io = Identity::default();
    let data = pattern(2 * BLOCK, 0x5a);
    h.mem.write(0x10_0000, &data).unwrap();
    h.submit(&[SqEntry::write(7, 0x10_0000, 100, 2)]);
    h.tick(&mut io);
    let c = h.cqe(0);
    assert_eq!((c.cid, c.sq_head, c.sq_id, c.phase, c.is_success()), (7, 1, 1, true, true), "{c:?}");
    assert_eq!(&h.blk.block(100).unwrap()[..], &data[..BLOCK]);
    assert_eq!(&h.blk.block(101).unwrap()[..], &data[BLOCK..]);
    assert_eq!(h.blk.blocks().map(|(lba, _)| lba).collect::<Vec<_>>(), [100, 101]);

    // Read it back elsewhere, and read a never-written block over non-zero memory: zeros land.
    h.mem.write(0x20_0000, &[0xff; 3 * BLOCK]).unwrap();
    h.submit(&[SqEntry::read(8, 0x20_0000, 100, 2), SqEntry::read(9, 0x20_2000, 5, 1)]);
    h.tick(&mut io);
    assert_eq!(read_vec(&h.mem, 0x20_0000, 2 * BLOCK), data);
    assert_eq!(read_vec(&h.mem, 0x20_2000, BLOCK), vec![0; BLOCK]);
    assert_eq!((h.cqe(1).cid, h.cqe(1).sq_head, h.cqe(2).cid, h.cqe(2).sq_head), (8, 2, 9, 3));
    assert_eq!(h.blk.stats().blocks_read, 3);
    assert_eq!(
        whats(&h.log),
        ["sq-fetch", "data-out", "cq-post", "sq-fetch", "data-in", "cq-post", "sq-fetch", "data-in", "cq-post"]
    );
    let kinds: Vec<(Access, usize)> = h.log[..3].iter().map(|e| (e.access, e.len)).collect();
    assert_eq!(kinds, [(Access::Read, 64), (Access::Read, 2 * BLOCK), (Access::Write, 16)]);
    assert!(h.blk.is_quiescent());
}

#[test]
fn completions_carry_the_phase_across_a_wrap_and_a_full_queue_stalls() {
    let mut h = Host::identity(4);
    let mut io = Identity::default();
    let flush = |cid| SqEntry { opcode: 0, cid, nsid: 1, ..Default::default() };
    h.submit(&[flush(1), flush(2), flush(3)]);
    h.tick(&mut io);
    assert_eq!((h.blk.cq_tail(), h.blk.stats().ok), (3, 3));
    // A fourth command: the CQ (tail 3, head 0) is full, the controller waits without fetching.
    h.submit(&[flush(4)]);
    let n = h.log.len();
    h.tick(&mut io);
    assert_eq!((h.log.len(), h.blk.stats().cq_full, h.blk.sq_head()), (n, 1, 3));
    assert!(h.blk.is_quiescent(), "nothing until the host frees a completion slot");
    // The host consumed all three: the fourth completes in the last slot and the tail wraps.
    h.blk.ring_cq_head(3);
    h.tick(&mut io);
    assert_eq!((h.cqe(3).cid, h.cqe(3).phase, h.cqe(3).sq_head), (4, true, 0));
    assert_eq!((h.blk.cq_tail(), h.blk.phase()), (0, false));
    h.submit(&[flush(5), flush(6)]);
    h.tick(&mut io);
    let phases: Vec<(u16, bool)> = (0..4).map(|i| (h.cqe(i).cid, h.cqe(i).phase)).collect();
    assert_eq!(phases, [(5, false), (6, false), (3, true), (4, true)], "new entries have the inverted phase");
}

#[test]
fn bad_and_garbage_commands_complete_with_errors() {
    let mut h = Host::new(
        ram(),
        BlkConfig { cmds_per_tick: 8, capacity_blocks: 1000, mdts_blocks: 32 },
        (SQ, SQ),
        (CQ, CQ),
        64,
    );
    let mut io = Identity::default();
    let dnr = |sc: u8| STATUS_DNR | sc as u16;
    h.submit(&[
        SqEntry { opcode: 0x7f, cid: 1, nsid: 1, ..Default::default() },
        SqEntry { nsid: 2, ..SqEntry::write(2, 0x10_0000, 0, 1) },
        SqEntry::write(3, 0x10_0000, 999, 2),
        SqEntry::read(4, 0x10_0000, u64::MAX, 2),
        SqEntry::write(5, 0x10_0000, 0, 33),
    ]);
    h.tick(&mut io);
    let got: Vec<u16> = (0..5).map(|i| h.cqe(i).status).collect();
    use status::*;
    let want = [INVALID_OPCODE, INVALID_NAMESPACE, LBA_OUT_OF_RANGE, LBA_OUT_OF_RANGE, INVALID_FIELD];
    assert_eq!(got, want.map(dnr));
    assert_eq!(whats(&h.log), ["sq-fetch", "cq-post"].repeat(5), "no data moved");
    assert_eq!(h.blk.stats().errors, 5);
    assert_eq!(h.blk.blocks().count(), 0);

    // Random bytes in every slot: each is fetched and completed, nothing panics, work per tick is bounded.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut garbage = vec![0u8; 64 * 64];
    for b in garbage.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    h.mem.write(SQ, &garbage).unwrap();
    h.blk.ring_sq_tail(4); // slots 5..=63 then 0..=3
    let before = h.blk.stats().commands;
    for _ in 0..8 {
        h.blk.ring_cq_head(h.blk.cq_tail());
        let c = h.blk.stats().commands;
        h.tick(&mut io);
        assert!(h.blk.stats().commands - c <= 8);
    }
    assert_eq!(h.blk.stats().commands - before, 63);
    assert_eq!(h.blk.sq_head(), 4);
}

#[test]
fn faults_through_vtd_post_errors_and_the_device_keeps_going() {
    let mut d = Domain::new(RID as u16);
    d.map(0x4000_0000, SQ, 1);
    d.map(0x4000_1000, CQ, 1);
    d.map(0x5000_0000, 0x30_0000, 2);
    let mem = std::mem::take(&mut d.rig.mem);
    let cfg = BlkConfig { cmds_per_tick: 8, ..BlkConfig::default() };
    let mut h = Host::new(mem, cfg, (0x4000_0000, SQ), (0x4000_1000, CQ), 8);
    h.mem.write(0x30_0000, &pattern(2 * BLOCK, 1)).unwrap();
    h.submit(&[
        SqEntry::write(1, 0x5000_0000, 0, 2),
        SqEntry::write(2, 0x5000_1000, 10, 2), // second page unmapped
        SqEntry::read(3, 0x6000_0000, 0, 1),   // unmapped
        SqEntry { opcode: 0, cid: 4, nsid: 1, ..Default::default() },
    ]);
    h.tick(&mut d.rig.vtd);
    let st: Vec<(u16, u8)> = (0..4).map(|i| (h.cqe(i).cid, h.cqe(i).sc())).collect();
    assert_eq!(st, [(1, 0), (2, status::DATA_TRANSFER_ERROR), (3, status::DATA_TRANSFER_ERROR), (4, 0)]);
    assert!(h.blk.block(10).is_none(), "a failed write stores nothing");
    assert_eq!(&h.blk.block(1).unwrap()[..], &pattern(2 * BLOCK, 1)[BLOCK..]);
    let bad: Vec<&DmaEvent> = h.log.iter().filter(|e| faulted(e)).collect();
    assert_eq!(bad.iter().map(|e| e.what).collect::<Vec<_>>(), ["data-out", "data-in"]);
    assert!(matches!(bad[0].outcome, DmaOutcome::Fault { iova: 0x5000_2000, done: 4096, .. }));
    assert_eq!(h.log[0].phys, Some(SQ));
    // `phys` is where the first page went, also when a later page faulted.
    assert_eq!((h.log[1].what, h.log[1].phys), ("data-out", Some(0x30_0000)));
    assert_eq!((h.log[4].what, h.log[4].phys, faulted(&h.log[4])), ("data-out", Some(0x30_1000), true));
    assert_eq!(h.blk.stats().dma_errors, 2);

    // An unmapped submission queue: the fetch faults every tick and the command stays at the head.
    h.blk.set_queues(0x7000_0000, 0x4000_1000, 8);
    h.blk.ring_sq_tail(1);
    let n = h.log.len();
    run(&mut h.blk, 10..13, &mut d.rig.vtd, &mut h.mem, &mut h.log);
    assert_eq!(whats(&h.log[n..]), ["sq-fetch"; 3]);
    assert!(h.log[n..].iter().all(faulted));
    assert_eq!((h.blk.sq_head(), h.blk.is_quiescent()), (0, false));
    // An unmapped completion queue: the command runs, its completion is lost.
    h.blk.set_queues(0x4000_0000, 0x7000_0000, 8);
    h.blk.ring_sq_tail(1);
    let n = h.log.len();
    run(&mut h.blk, 13..14, &mut d.rig.vtd, &mut h.mem, &mut h.log);
    assert_eq!(whats(&h.log[n..]), ["sq-fetch", "data-out", "cq-post"]);
    assert!(faulted(&h.log[n + 2]) && !faulted(&h.log[n + 1]));
    assert_eq!((h.blk.sq_head(), h.blk.stats().lost_completions, h.blk.cq_tail()), (1, 1, 0));
}

#[test]
fn the_media_survives_flr_and_work_is_paced_by_the_clock() {
    let cfg = BlkConfig { cmds_per_tick: 2, ..BlkConfig::default() };
    let mut h = Host::new(ram(), cfg, (SQ, SQ), (CQ, CQ), 16);
    let mut io = Identity::default();
    h.mem.write(0x10_0000, &pattern(6 * BLOCK, 9)).unwrap();
    let writes: Vec<SqEntry> = (0..6).map(|i| SqEntry::write(i, 0x10_0000 + i as u64 * 4096, i as u64, 1)).collect();
    h.submit(&writes);
    h.blk.tick(0, &mut io, &mut h.mem, &mut h.log);
    assert_eq!(h.blk.stats().commands, 2);
    h.blk.tick(2, &mut io, &mut h.mem, &mut h.log); // ticks 1 and 2: four more
    assert_eq!(h.blk.stats().commands, 6);
    h.blk.flr();
    assert!(!h.blk.is_enabled() && h.blk.is_quiescent());
    h.blk.ring_sq_tail(3);
    let n = h.log.len();
    h.blk.tick(3, &mut io, &mut h.mem, &mut h.log);
    assert_eq!(h.log.len(), n, "reset: no queues, no DMA");
    // A new driver sets up fresh queues and reads the media back.
    h.blk.set_queues(SQ, CQ, 16);
    h.tail = 0;
    h.submit(&[SqEntry::read(9, 0x40_0000, 0, 6)]);
    h.blk.tick(4, &mut io, &mut h.mem, &mut h.log);
    assert_eq!(read_vec(&h.mem, 0x40_0000, 6 * BLOCK), pattern(6 * BLOCK, 9));
    assert_eq!((h.cqe(0).cid, h.cqe(0).phase), (9, true), "phase restarts at 1");
}

#[test]
fn a_written_block_keeps_the_bytes_of_its_dma_whether_aligned_or_not() {
    let mut h = Host::identity(8);
    let mut io = Identity::default();
    let data = pattern(3 * BLOCK, 0x33);
    h.mem.write(0x10_0000, &data).unwrap();
    // Page-aligned (the media shares the pages), a never-written page (zeros), and an unaligned buffer.
    h.submit(&[
        SqEntry::write(1, 0x10_0000, 10, 2),
        SqEntry::write(2, 0x40_0000, 12, 1),
        SqEntry::write(3, 0x10_0800, 13, 1),
    ]);
    h.tick(&mut io);
    assert!((0..3).all(|i| h.cqe(i).is_success()));
    // Memory changes after the commands ran: the media does not.
    h.mem.write(0x10_0000, &[0xee; 2 * BLOCK]).unwrap();
    h.mem.write(0x40_0000, &[0xee; 8]).unwrap();
    assert_eq!(&h.blk.block(10).unwrap()[..], &data[..BLOCK]);
    assert_eq!(&h.blk.block(11).unwrap()[..], &data[BLOCK..2 * BLOCK]);
    assert_eq!(&h.blk.block(12).unwrap()[..], &[0u8; BLOCK][..], "a block written from zeros reads zeros");
    assert_eq!(&h.blk.block(13).unwrap()[..], &data[0x800..0x800 + BLOCK]);
    assert_eq!(h.blk.blocks().map(|(lba, _)| lba).collect::<Vec<_>>(), [10, 11, 12, 13]);
}
