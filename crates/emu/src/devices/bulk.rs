//! A bulk copy engine (a GPU's copy queue, a DMA offload engine): it walks a list of (src, dst, len)
//! descriptors in memory and copies each, then starts over, forever. It is the device whose traffic
//! never pauses by itself: on the old kernel's mappings after a crash, every pass re-reads the list and
//! re-writes every destination until a function-level reset.
//!
//! The descriptor layout is the model's own (three little-endian u64s: source, destination, length),
//! read afresh on every pass as a ring-walking engine does, so a list corrupted in memory changes what is
//! copied on the next pass.

use crate::dma::Iommu;
use crate::mem::PhysMemory;

use super::port::{Clock, Port};
use super::{DmaDevice, DmaEvent};

/// Bytes per descriptor.
pub const BULK_DESC_SIZE: u64 = 24;
/// The longest copy one descriptor may make; longer lengths are clamped (and counted).
pub const MAX_COPY: usize = 64 << 10;
/// Descriptors handled per tick at most.
pub const MAX_DESCS_PER_TICK: u64 = 64;

/// One copy: `len` bytes from `src` to `dst`, both DMA addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BulkDesc {
    /// DMA address read from.
    pub src: u64,
    /// DMA address written to.
    pub dst: u64,
    /// Bytes to copy (clamped to the configured `max_len`).
    pub len: u64,
}

impl BulkDesc {
    /// Decode the in-memory layout: three little-endian u64s, source, destination, length.
    pub fn from_bytes(b: &[u8; 24]) -> Self {
        let q = |i: usize| {
            let mut w = [0; 8];
            w.copy_from_slice(&b[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        BulkDesc { src: q(0), dst: q(1), len: q(2) }
    }

    /// Encode as [`Self::from_bytes`] reads it.
    pub fn to_bytes(&self) -> [u8; 24] {
        let mut b = [0; 24];
        b[..8].copy_from_slice(&self.src.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst.to_le_bytes());
        b[16..].copy_from_slice(&self.len.to_le_bytes());
        b
    }
}

/// Engine throughput and copy size limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BulkConfig {
    /// Descriptors processed per tick (bounded by [`MAX_DESCS_PER_TICK`]).
    pub descs_per_tick: u32,
    /// The longest copy, clamped to `1..=MAX_COPY`.
    pub max_len: usize,
}

impl Default for BulkConfig {
    fn default() -> Self {
        BulkConfig { descs_per_tick: 1, max_len: 4096 }
    }
}

/// The model's counters (they survive FLR).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BulkStats {
    /// Descriptors whose copy completed.
    pub copies: u64,
    /// Bytes copied by completed descriptors.
    pub bytes: u64,
    /// Descriptors whose length was clamped to `max_len`.
    pub clamped: u64,
    /// DMA steps that failed (IOMMU fault or non-memory address); the descriptor is skipped.
    pub dma_errors: u64,
    /// Complete passes over the list.
    pub passes: u64,
    /// Function-level resets (FLR) taken.
    pub flrs: u64,
}

/// A looping copy engine. See the module docs.
#[derive(Clone, Debug)]
pub struct Bulk {
    name: String,
    rid: u32,
    cfg: BulkConfig,
    running: bool,
    list_base: u64,
    count: u32,
    /// The descriptor handled next.
    next: u32,
    clock: Clock,
    stats: BulkStats,
    buf: Vec<u8>,
}

impl Bulk {
    /// A stopped engine, named `name` for reports and issuing DMA as requester `rid`; `cfg.max_len` is
    /// clamped to `1..=MAX_COPY`.
    pub fn new(name: impl Into<String>, rid: u32, cfg: BulkConfig) -> Self {
        let cfg = BulkConfig { max_len: cfg.max_len.clamp(1, MAX_COPY), ..cfg };
        Bulk {
            name: name.into(),
            rid,
            cfg,
            running: false,
            list_base: 0,
            count: 0,
            next: 0,
            clock: Clock::default(),
            stats: BulkStats::default(),
            buf: Vec::new(),
        }
    }

    /// Start looping over the `count` descriptors at `list_base` from the first; `count == 0` stops.
    pub fn start(&mut self, list_base: u64, count: u32) {
        self.list_base = list_base;
        self.count = count;
        self.next = 0;
        self.running = count > 0;
    }

    /// Stop after the current tick's work (the engine's halt bit).
    pub fn stop(&mut self) {
        self.running = false;
    }

    /// Whether the engine is looping over its list.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// The descriptor handled next.
    pub fn next_index(&self) -> u32 {
        self.next
    }

    /// The configuration, after clamping.
    pub fn config(&self) -> &BulkConfig {
        &self.cfg
    }

    /// The counters so far.
    pub fn stats(&self) -> BulkStats {
        self.stats
    }

    /// Handle descriptor `self.next`; true if its copy completed.
    fn copy_one(&mut self, port: &mut Port<'_>) -> bool {
        let at = self.list_base.wrapping_add(self.next as u64 * BULK_DESC_SIZE);
        let mut raw = [0; BULK_DESC_SIZE as usize];
        if !port.read(at, &mut raw, "bulk-desc").is_done() {
            return false;
        }
        let d = BulkDesc::from_bytes(&raw);
        let len = d.len.min(self.cfg.max_len as u64) as usize;
        if (len as u64) < d.len {
            self.stats.clamped += 1;
        }
        // The read fills every byte before the write uses any: no clearing.
        self.buf.resize(len, 0);
        self.buf.truncate(len);
        if !port.read(d.src, &mut self.buf, "bulk-src").is_done() {
            return false;
        }
        if !port.write(d.dst, &self.buf, "bulk-dst").is_done() {
            return false;
        }
        self.stats.bytes += len as u64;
        true
    }
}

impl DmaDevice for Bulk {
    fn rid(&self) -> u32 {
        self.rid
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn tick(&mut self, now: u64, iommu: &mut dyn Iommu, mem: &mut PhysMemory, log: &mut Vec<DmaEvent>) {
        let Some((from, to)) = self.clock.advance(now) else { return };
        if !self.running {
            return;
        }
        let budget = (self.cfg.descs_per_tick as u64).saturating_mul(to - from + 1).min(MAX_DESCS_PER_TICK);
        let mut port = Port { now, rid: self.rid, iommu, mem, log };
        for _ in 0..budget {
            if self.copy_one(&mut port) {
                self.stats.copies += 1;
            } else {
                self.stats.dma_errors += 1;
            }
            self.next = (self.next + 1) % self.count;
            if self.next == 0 {
                self.stats.passes += 1;
            }
        }
    }

    fn flr(&mut self) {
        self.running = false;
        (self.list_base, self.count, self.next) = (0, 0, 0);
        self.stats.flrs += 1;
    }

    fn is_quiescent(&self) -> bool {
        !self.running || self.cfg.descs_per_tick == 0
    }
}
