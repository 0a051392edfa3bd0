//! The receive path of an e1000-class NIC (Intel 8254x): a ring of legacy RX descriptors in memory,
//! RDH owned by the device, RDT written by the driver, packets arriving from the wire at a fixed rate.
//!
//! Per packet, as the 8254x does (SDM §3.2, "Receive Descriptor Format"): fetch the descriptor at RDH,
//! write the packet into its buffer, write the descriptor's status half back with DD (descriptor done)
//! and EOP (end of packet) and the length, advance RDH. When RDH == RDT the ring holds no buffer the
//! device owns: the packet is dropped with no DMA (RNBC, "receive no buffers count"). Packets beyond what
//! the model handles in one tick overflow the receive FIFO and are missed (MPC).

use crate::dma::Iommu;
use crate::mem::PhysMemory;

use super::port::{Clock, Port, Rate};
use super::{DmaDevice, DmaEvent};

/// Bytes per legacy RX descriptor.
pub const RX_DESC_SIZE: u64 = 16;
/// Status bit 0: the device is done with the descriptor (DD).
pub const RXD_STAT_DD: u8 = 1 << 0;
/// Status bit 1: the last descriptor of a packet (EOP).
pub const RXD_STAT_EOP: u8 = 1 << 1;
/// The most descriptors a ring may have (RDLEN is at most 1 MiB of 16-byte descriptors).
pub const MAX_RING: u32 = 1 << 16;
/// Packets handled per tick; more arrivals in one tick are missed (the FIFO overflows).
pub const MAX_PACKETS_PER_TICK: u64 = 256;
/// The largest receive buffer (RCTL.BSIZE 16384 with BSEX).
pub const MAX_BUFFER: usize = 16384;

/// A legacy receive descriptor (8254x SDM table 3-1), little-endian in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxDesc {
    /// Where the packet goes (a DMA address: an IOVA behind a translating IOMMU).
    pub buffer_addr: u64,
    /// Bytes written to the buffer (set by the device).
    pub length: u16,
    /// Packet checksum (not computed by the model: 0).
    pub csum: u16,
    /// DD, EOP, ...
    pub status: u8,
    /// Receive errors (CE, SE, ...; never set by the model: 0).
    pub errors: u8,
    /// VLAN tag (not modelled: 0).
    pub special: u16,
}

impl RxDesc {
    /// A descriptor as a driver posts it: the buffer address, everything else zero.
    pub fn posted(buffer_addr: u64) -> Self {
        RxDesc { buffer_addr, ..Default::default() }
    }

    /// Decode the 16-byte in-memory layout.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let mut addr = [0; 8];
        addr.copy_from_slice(&b[..8]);
        RxDesc {
            buffer_addr: u64::from_le_bytes(addr),
            length: u16_at(8),
            csum: u16_at(10),
            status: b[12],
            errors: b[13],
            special: u16_at(14),
        }
    }

    /// Encode as [`Self::from_bytes`] reads it.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0; 16];
        b[..8].copy_from_slice(&self.buffer_addr.to_le_bytes());
        b[8..10].copy_from_slice(&self.length.to_le_bytes());
        b[10..12].copy_from_slice(&self.csum.to_le_bytes());
        b[12] = self.status;
        b[13] = self.errors;
        b[14..].copy_from_slice(&self.special.to_le_bytes());
        b
    }

    /// Status.DD: the device is done with the descriptor (written back).
    pub fn dd(&self) -> bool {
        self.status & RXD_STAT_DD != 0
    }

    /// Status.EOP: the descriptor holds the packet's last bytes.
    pub fn eop(&self) -> bool {
        self.status & RXD_STAT_EOP != 0
    }
}

/// Traffic and buffer sizing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NicConfig {
    /// Packet arrivals from the wire.
    pub rate: Rate,
    /// Bytes per packet, clamped to `1..=buffer_size`: one packet per descriptor (no multi-descriptor
    /// packets, so every written-back descriptor has EOP).
    pub packet_len: usize,
    /// The receive buffer size the driver programmed (RCTL.BSIZE), clamped to `1..=MAX_BUFFER`.
    pub buffer_size: usize,
}

impl Default for NicConfig {
    fn default() -> Self {
        NicConfig { rate: Rate::per_tick(1), packet_len: 1514, buffer_size: 2048 }
    }
}

/// The model's counters (they survive FLR; the device's registers do not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NicStats {
    /// Packets that arrived while receive was enabled.
    pub arrived: u64,
    /// Packets written to memory and handed to the driver (DD set).
    pub received: u64,
    /// Packet bytes written to receive buffers of received packets.
    pub bytes: u64,
    /// Dropped for lack of a descriptor (RDH == RDT); no DMA.
    pub no_buffer: u64,
    /// Dropped because more arrived in one tick than the device handles; no DMA.
    pub missed: u64,
    /// Dropped because a DMA step failed (IOMMU fault or non-memory address).
    pub dma_errors: u64,
    /// Function-level resets (FLR) taken.
    pub flrs: u64,
}

/// An e1000-class NIC's receive path. See the module docs.
#[derive(Clone, Debug)]
pub struct Nic {
    name: String,
    rid: u32,
    cfg: NicConfig,
    /// RCTL.EN.
    enabled: bool,
    /// RDBAH:RDBAL.
    ring_base: u64,
    /// RDLEN / 16.
    ring_len: u32,
    /// RDH.
    head: u32,
    /// RDT.
    tail: u32,
    clock: Clock,
    /// Arrival number of the next packet: stamped into its payload, never reset.
    seq: u64,
    stats: NicStats,
    payload: Vec<u8>,
    /// MSI capability: one message per tick in which packets were written back.
    msi: Option<super::Msi>,
    irqs: Vec<super::IrqEvent>,
}

impl Nic {
    /// A NIC after reset (receive disabled, no ring), named `name` for reports and issuing DMA as requester
    /// `rid`; `cfg.buffer_size` and `cfg.packet_len` are clamped.
    pub fn new(name: impl Into<String>, rid: u32, cfg: NicConfig) -> Self {
        let buffer_size = cfg.buffer_size.clamp(1, MAX_BUFFER);
        let cfg = NicConfig { buffer_size, packet_len: cfg.packet_len.clamp(1, buffer_size), ..cfg };
        Nic {
            name: name.into(),
            rid,
            cfg,
            enabled: false,
            ring_base: 0,
            ring_len: 0,
            head: 0,
            tail: 0,
            clock: Clock::default(),
            seq: 0,
            stats: NicStats::default(),
            payload: Vec::new(),
            msi: None,
            irqs: Vec::new(),
        }
    }

    /// Packets from the wire from now on arrive at `rate` (a link coming up or going down).
    pub fn set_rate(&mut self, rate: Rate) {
        self.cfg.rate = rate;
    }

    /// Program the ring (RDBA, RDLEN in descriptors, RDH = RDT = 0) and enable receive (RCTL.EN). The
    /// ring starts empty: the driver posts buffers by moving the tail. `count` is clamped to
    /// `MAX_RING`; zero disables receive.
    pub fn set_rx_ring(&mut self, base: u64, count: u32) {
        self.ring_base = base;
        self.ring_len = count.min(MAX_RING);
        self.head = 0;
        self.tail = 0;
        self.enabled = self.ring_len > 0;
    }

    /// RDT: descriptors from RDH up to (not including) `tail` belong to the device. A value beyond the
    /// ring is ignored.
    pub fn set_rx_tail(&mut self, tail: u32) {
        if tail < self.ring_len {
            self.tail = tail;
        }
    }

    /// RDH: the next descriptor the device will fill.
    pub fn rx_head(&self) -> u32 {
        self.head
    }

    /// RDT as last written.
    pub fn rx_tail(&self) -> u32 {
        self.tail
    }

    /// (RDBA, descriptors) while receive is enabled.
    pub fn rx_ring(&self) -> Option<(u64, u32)> {
        self.enabled.then_some((self.ring_base, self.ring_len))
    }

    /// The configuration, after clamping.
    pub fn config(&self) -> &NicConfig {
        &self.cfg
    }

    /// The counters so far.
    pub fn stats(&self) -> NicStats {
        self.stats
    }

    /// The payload of packet number `seq` of NIC `name`: `"<name>#<seq as 16 hex digits>;"` repeated to
    /// `len` bytes, so a changed page names its writer and the packet.
    pub fn packet_payload(name: &str, seq: u64, len: usize, out: &mut Vec<u8>) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        // The stamp is written in place (no formatting machinery, no allocation: this runs for every packet of
        // every simulated run), then doubled by copies of what is there: whole stamps, then a head of them.
        out.clear();
        out.reserve(len.max(name.len() + 18));
        out.extend_from_slice(name.as_bytes());
        out.push(b'#');
        out.extend((0..16).rev().map(|i| HEX[(seq >> (4 * i)) as usize & 0xf]));
        out.push(b';');
        out.truncate(len);
        while out.len() < len {
            let n = out.len().min(len - out.len());
            out.extend_from_within(..n);
        }
    }

    /// One packet from the wire.
    fn receive(&mut self, port: &mut Port<'_>) {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        if self.head == self.tail {
            self.stats.no_buffer += 1;
            return;
        }
        let at = self.ring_base.wrapping_add(self.head as u64 * RX_DESC_SIZE);
        let mut raw = [0; 16];
        if !port.read(at, &mut raw, "rx-desc").is_done() {
            self.stats.dma_errors += 1;
            return;
        }
        let desc = RxDesc::from_bytes(raw);
        let len = self.cfg.packet_len;
        Self::packet_payload(&self.name, seq, len, &mut self.payload);
        if !port.write(desc.buffer_addr, &self.payload, "rx-data").is_done() {
            self.stats.dma_errors += 1;
            return;
        }
        // `len <= MAX_BUFFER < 2^16`.
        let done =
            RxDesc { length: len as u16, csum: 0, status: RXD_STAT_DD | RXD_STAT_EOP, errors: 0, special: 0, ..desc };
        if !port.write(at.wrapping_add(8), &done.to_bytes()[8..], "rx-wb").is_done() {
            self.stats.dma_errors += 1;
            return;
        }
        self.head = (self.head + 1) % self.ring_len;
        self.stats.received += 1;
        self.stats.bytes += len as u64;
    }
}

impl DmaDevice for Nic {
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
        let due = self.cfg.rate.due(from, to);
        let handled = due.min(MAX_PACKETS_PER_TICK);
        self.stats.arrived = self.stats.arrived.saturating_add(due);
        self.stats.missed = self.stats.missed.saturating_add(due - handled);
        let mut port = Port { now, rid: self.rid, iommu, mem, log };
        let before = self.stats.received;
        for _ in 0..handled {
            self.receive(&mut port);
        }
        // The missed packets were the latest arrivals: they keep their sequence numbers.
        self.seq = self.seq.wrapping_add(due - handled);
        if let (true, Some(msg)) = (self.stats.received > before, self.msi) {
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
        self.ring_base = 0;
        self.ring_len = 0;
        self.head = 0;
        self.tail = 0;
        self.msi = None;
        self.stats.flrs += 1;
    }

    fn is_quiescent(&self) -> bool {
        !self.enabled || self.head == self.tail || self.cfg.rate.count == 0
    }
}

#[cfg(test)]
mod tests {
    use super::Nic;

    #[test]
    fn packet_payload_is_the_stamp_repeated_to_the_length_with_a_partial_tail() {
        let stamp = b"n#000000000000002a;";
        for len in [0, 1, stamp.len() - 1, stamp.len(), stamp.len() + 1, 3 * stamp.len() + 7, 1500] {
            let mut out = vec![0xff; 3];
            Nic::packet_payload("n", 42, len, &mut out);
            let want: Vec<u8> = stamp.iter().copied().cycle().take(len).collect();
            assert_eq!(out, want, "len {len}");
        }
        // Every hex digit, a longer name: the stamp as `format!` writes it.
        for seq in [0, 0xdead_beef_0123_4567, u64::MAX] {
            let stamp = format!("nic1#{seq:016x};");
            let mut out = Vec::new();
            Nic::packet_payload("nic1", seq, 100, &mut out);
            let want: Vec<u8> = stamp.bytes().cycle().take(100).collect();
            assert_eq!(out, want, "{seq:#x}");
        }
    }
}
