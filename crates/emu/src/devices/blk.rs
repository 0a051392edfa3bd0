//! An NVMe-like block device: one I/O submission queue and one completion queue in memory, a tail
//! doorbell, phase-tagged completions, and a sparse backing store where the crash kernel's dump lands.
//!
//! Modelled on NVMe base spec 2.0: 64-byte submission queue entries (§4.2: CDW0 opcode and command ID,
//! NSID, PRP1/PRP2, CDW10–11 SLBA and CDW12 NLB for the NVM command set's Read 02h and Write 01h),
//! 16-byte completion queue entries (§4.6: DW2 SQ head pointer and SQ identifier, DW3 command ID, phase
//! tag P in bit 16 and the status field above it). The phase tag the controller writes starts at 1 and
//! inverts every time the completion queue wraps, which is how the host tells new entries from old ones
//! without a head register. A full completion queue (tail + 1 == head) stalls the controller until the
//! host rings the completion-queue head doorbell.

use std::sync::Arc;

use crate::dma::Iommu;
use crate::mem::{page_from, Page, PhysMemory};

use super::nvme::{status, CqEntry, SqEntry, BLOCK, CQE_SIZE, MAX_QUEUE, NSID, OPC_FLUSH, OPC_READ, OPC_WRITE};
use super::nvme::{SQE_SIZE, SQID, STATUS_DNR};
use super::port::{Clock, Port};
use super::{DmaDevice, DmaEvent};

/// Commands handled per tick at most, whatever the configuration and the gap since the last tick.
pub const MAX_CMDS_PER_TICK: u64 = 256;
/// The largest maximum data transfer size the model accepts, in blocks (1 MiB).
pub const MAX_MDTS_BLOCKS: u32 = 256;

/// Controller throughput and namespace shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkConfig {
    /// Commands fetched and completed per tick (bounded by [`MAX_CMDS_PER_TICK`]).
    pub cmds_per_tick: u32,
    /// Namespace size in blocks (NSZE).
    pub capacity_blocks: u64,
    /// Maximum data transfer size in blocks (MDTS), clamped to `1..=MAX_MDTS_BLOCKS`; larger commands
    /// complete with Invalid Field.
    pub mdts_blocks: u32,
}

impl Default for BlkConfig {
    fn default() -> Self {
        BlkConfig { cmds_per_tick: 4, capacity_blocks: 1 << 20, mdts_blocks: 32 }
    }
}

/// The model's counters (they survive FLR).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkStats {
    /// Commands fetched.
    pub commands: u64,
    /// Completions posted with success status.
    pub ok: u64,
    /// Completions posted with an error status.
    pub errors: u64,
    /// DMA steps that failed (IOMMU fault or non-memory address), of any kind.
    pub dma_errors: u64,
    /// Commands whose completion could not be written.
    pub lost_completions: u64,
    /// Blocks Write commands moved from host memory to the media.
    pub blocks_written: u64,
    /// Blocks Read commands moved from the media to host memory.
    pub blocks_read: u64,
    /// Ticks the controller stopped early because the completion queue was full.
    pub cq_full: u64,
    /// Function-level resets (FLR) taken.
    pub flrs: u64,
}

/// An NVMe-like controller with one queue pair. See the module docs.
#[derive(Clone, Debug)]
pub struct Blk {
    name: String,
    rid: u32,
    cfg: BlkConfig,
    /// CC.EN with the I/O queue pair created.
    enabled: bool,
    sq_base: u64,
    cq_base: u64,
    entries: u32,
    sq_head: u32,
    /// The SQ tail doorbell.
    sq_tail: u32,
    cq_tail: u32,
    /// The CQ head doorbell.
    cq_head: u32,
    /// The phase tag of the next completion.
    phase: bool,
    clock: Clock,
    /// The media: LBA → block (hashed: a dump writes hundreds of blocks a run); unwritten blocks read as zeros.
    /// Survives FLR. A block written from a whole
    /// page of memory shares that page (copy-on-write), as the written bytes of that instant.
    store: crate::hash::FastMap<u64, Arc<Page>>,
    stats: BlkStats,
    buf: Vec<u8>,
    /// The pages of the write being executed.
    pages: Vec<Option<Arc<Page>>>,
    /// A block of zeros, shared by every block written with zeros.
    zero: Arc<Page>,
    /// MSI capability: one message per tick in which completions were posted.
    msi: Option<super::Msi>,
    irqs: Vec<super::IrqEvent>,
}

impl Blk {
    /// A controller after reset (disabled, no queues, empty media), named `name` for reports and issuing DMA
    /// as requester `rid`; `cfg.mdts_blocks` is clamped to `1..=MAX_MDTS_BLOCKS`.
    pub fn new(name: impl Into<String>, rid: u32, cfg: BlkConfig) -> Self {
        let cfg = BlkConfig { mdts_blocks: cfg.mdts_blocks.clamp(1, MAX_MDTS_BLOCKS), ..cfg };
        Blk {
            name: name.into(),
            rid,
            cfg,
            enabled: false,
            sq_base: 0,
            cq_base: 0,
            entries: 0,
            sq_head: 0,
            sq_tail: 0,
            cq_tail: 0,
            cq_head: 0,
            phase: true,
            clock: Clock::default(),
            store: Default::default(),
            stats: BlkStats::default(),
            buf: Vec::new(),
            pages: Vec::new(),
            zero: Arc::new([0; BLOCK]),
            msi: None,
            irqs: Vec::new(),
        }
    }

    /// Create the queue pair (both `entries` long, clamped to `MAX_QUEUE`; fewer than 2 disables) with
    /// all pointers 0 and phase 1, and enable the controller.
    pub fn set_queues(&mut self, sq_base: u64, cq_base: u64, entries: u32) {
        self.entries = entries.min(MAX_QUEUE);
        self.enabled = self.entries >= 2;
        (self.sq_base, self.cq_base) = (sq_base, cq_base);
        (self.sq_head, self.sq_tail, self.cq_tail, self.cq_head) = (0, 0, 0, 0);
        self.phase = true;
    }

    /// The SQ tail doorbell: entries from the head up to `tail` are commands. A value beyond the queue
    /// is ignored (on hardware: an Invalid Doorbell Write Value event, not modelled).
    pub fn ring_sq_tail(&mut self, tail: u32) {
        if tail < self.entries {
            self.sq_tail = tail;
        }
    }

    /// The CQ head doorbell: the host consumed completions up to `head`.
    pub fn ring_cq_head(&mut self, head: u32) {
        if head < self.entries {
            self.cq_head = head;
        }
    }

    /// The SQ head: the next entry the controller fetches (reported in completion DW2).
    pub fn sq_head(&self) -> u32 {
        self.sq_head
    }

    /// The CQ tail: the slot the next completion goes to.
    pub fn cq_tail(&self) -> u32 {
        self.cq_tail
    }

    /// The phase tag the next completion will carry.
    pub fn phase(&self) -> bool {
        self.phase
    }

    /// Whether the controller is enabled (CC.EN) with its I/O queue pair created.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Block `lba` of the media, or `None` if never written (reads as zeros).
    pub fn block(&self, lba: u64) -> Option<&[u8; BLOCK]> {
        self.store.get(&lba).map(|b| &**b)
    }

    /// Block `lba` of the media as shared, or `None` if never written: a block written from a page still
    /// unchanged in memory is that very page.
    pub fn block_shared(&self, lba: u64) -> Option<&Arc<Page>> {
        self.store.get(&lba)
    }

    /// Every written block, by ascending LBA.
    pub fn blocks(&self) -> impl Iterator<Item = (u64, &[u8; BLOCK])> + '_ {
        let mut blocks: Vec<(u64, &[u8; BLOCK])> = self.store.iter().map(|(lba, b)| (*lba, &**b)).collect();
        blocks.sort_unstable_by_key(|&(lba, _)| lba);
        blocks.into_iter()
    }

    /// Room on the media for `n` more blocks (a dump about to write that many), so its map does not grow,
    /// rehashing, step by step. Nothing the device does changes.
    pub fn reserve_blocks(&mut self, n: usize) {
        self.store.reserve(n);
    }

    /// Put data on the media directly (a disk that arrives with contents); ignored beyond capacity.
    pub fn preload(&mut self, lba: u64, data: &[u8; BLOCK]) {
        if lba < self.cfg.capacity_blocks {
            self.store.insert(lba, Arc::new(*data));
        }
    }

    /// The configuration, after clamping.
    pub fn config(&self) -> &BlkConfig {
        &self.cfg
    }

    /// The counters so far.
    pub fn stats(&self) -> BlkStats {
        self.stats
    }

    /// Run one fetched command; returns its status.
    fn execute(&mut self, cmd: &SqEntry, port: &mut Port<'_>) -> u16 {
        if cmd.opcode != OPC_FLUSH && cmd.opcode != OPC_WRITE && cmd.opcode != OPC_READ {
            return STATUS_DNR | status::INVALID_OPCODE as u16;
        }
        if cmd.nsid != NSID {
            return STATUS_DNR | status::INVALID_NAMESPACE as u16;
        }
        if cmd.opcode == OPC_FLUSH {
            return status::SUCCESS as u16;
        }
        let blocks = cmd.blocks();
        if blocks > self.cfg.mdts_blocks {
            return STATUS_DNR | status::INVALID_FIELD as u16;
        }
        if cmd.slba.checked_add(blocks as u64).is_none_or(|end| end > self.cfg.capacity_blocks) {
            return STATUS_DNR | status::LBA_OUT_OF_RANGE as u16;
        }
        if cmd.opcode == OPC_WRITE && cmd.prp1.is_multiple_of(BLOCK as u64) {
            // Whole pages: the media keeps the pages read, shared, not copied.
            if !port.read_pages(cmd.prp1, blocks as usize, &mut self.pages, "data-out").is_done() {
                self.stats.dma_errors += 1;
                return status::DATA_TRANSFER_ERROR as u16;
            }
            for (lba, page) in (cmd.slba..).zip(self.pages.drain(..)) {
                self.store.insert(lba, page.unwrap_or_else(|| Arc::clone(&self.zero)));
            }
            self.stats.blocks_written += blocks as u64;
            return status::SUCCESS as u16;
        }
        // Every byte is written before it is used (by the DMA read, or block by block below): no clearing.
        self.buf.resize(blocks as usize * BLOCK, 0);
        self.buf.truncate(blocks as usize * BLOCK);
        if cmd.opcode == OPC_WRITE {
            if !port.read(cmd.prp1, &mut self.buf, "data-out").is_done() {
                self.stats.dma_errors += 1;
                return status::DATA_TRANSFER_ERROR as u16;
            }
            for (lba, data) in (cmd.slba..).zip(self.buf.chunks_exact(BLOCK)) {
                self.store.insert(lba, page_from(data));
            }
            self.stats.blocks_written += blocks as u64;
        } else {
            for (lba, data) in (cmd.slba..).zip(self.buf.chunks_exact_mut(BLOCK)) {
                match self.store.get(&lba) {
                    Some(block) => data.copy_from_slice(&block[..]),
                    None => data.fill(0),
                }
            }
            if !port.write(cmd.prp1, &self.buf, "data-in").is_done() {
                self.stats.dma_errors += 1;
                return status::DATA_TRANSFER_ERROR as u16;
            }
            self.stats.blocks_read += blocks as u64;
        }
        status::SUCCESS as u16
    }
}

impl DmaDevice for Blk {
    fn rid(&self) -> u32 {
        self.rid
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn tick(&mut self, now: u64, iommu: &mut dyn Iommu, mem: &mut PhysMemory, log: &mut Vec<DmaEvent>) {
        let Some((from, to)) = self.clock.advance(now) else { return };
        if !self.enabled {
            return;
        }
        let budget = (self.cfg.cmds_per_tick as u64).saturating_mul(to - from + 1).min(MAX_CMDS_PER_TICK);
        let mut port = Port { now, rid: self.rid, iommu, mem, log };
        let mut posted = false;
        for _ in 0..budget {
            if self.sq_head == self.sq_tail {
                break;
            }
            if (self.cq_tail + 1) % self.entries == self.cq_head {
                self.stats.cq_full += 1;
                break;
            }
            let mut raw = [0; SQE_SIZE as usize];
            let at = self.sq_base.wrapping_add(self.sq_head as u64 * SQE_SIZE);
            if !port.read(at, &mut raw, "sq-fetch").is_done() {
                // The command stays at the head; the fetch is retried next tick.
                self.stats.dma_errors += 1;
                break;
            }
            let cmd = SqEntry::from_bytes(&raw);
            self.sq_head = (self.sq_head + 1) % self.entries;
            self.stats.commands += 1;
            let status = self.execute(&cmd, &mut port);
            let cqe =
                CqEntry { dw0: 0, sq_head: self.sq_head as u16, sq_id: SQID, cid: cmd.cid, phase: self.phase, status };
            let at = self.cq_base.wrapping_add(self.cq_tail as u64 * CQE_SIZE);
            if !port.write(at, &cqe.to_bytes(), "cq-post").is_done() {
                // The command ran but the host will never hear of it; the slot is reused.
                self.stats.dma_errors += 1;
                self.stats.lost_completions += 1;
                continue;
            }
            if cqe.is_success() {
                self.stats.ok += 1;
            } else {
                self.stats.errors += 1;
            }
            self.cq_tail = (self.cq_tail + 1) % self.entries;
            if self.cq_tail == 0 {
                self.phase = !self.phase;
            }
            posted = true;
        }
        if let (true, Some(msg)) = (posted, self.msi) {
            super::msi::send(now, self.rid, msg, port.iommu, port.mem, &mut self.irqs);
        }
    }

    fn set_msi(&mut self, msg: Option<super::Msi>) {
        self.msi = msg;
    }

    fn drain_irqs(&mut self, out: &mut Vec<super::IrqEvent>) {
        out.append(&mut self.irqs);
    }

    fn flr(&mut self) {
        self.enabled = false;
        (self.sq_base, self.cq_base, self.entries) = (0, 0, 0);
        (self.sq_head, self.sq_tail, self.cq_tail, self.cq_head) = (0, 0, 0, 0);
        self.phase = true;
        self.msi = None;
        self.stats.flrs += 1;
    }

    fn is_quiescent(&self) -> bool {
        !self.enabled || self.sq_head == self.sq_tail || (self.cq_tail + 1) % self.entries == self.cq_head
    }
}
