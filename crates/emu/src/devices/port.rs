//! The shared part of every device: its one path to memory (a [`Port`] that sends each DMA through the
//! IOMMU and logs it) and its view of the virtual clock ([`Clock`], [`Rate`]).

use crate::dma::{dma_read, dma_write, Access, DmaOutcome, Iommu, Translation};
use crate::mem::{Page, PhysMemory, PAGE_SIZE};
use std::sync::Arc;

use super::DmaEvent;

/// A device's bus master interface for one tick: every access goes through `iommu` with the device's
/// requester ID and is appended to `log`. There is no other way for a device model to reach memory.
pub(crate) struct Port<'a> {
    pub now: u64,
    pub rid: u32,
    pub iommu: &'a mut dyn Iommu,
    pub mem: &'a mut PhysMemory,
    pub log: &'a mut Vec<DmaEvent>,
}

impl Port<'_> {
    /// A memory read request of `buf.len()` bytes at `iova`. A zero-length access is no request: it
    /// returns `Done` and logs nothing.
    pub fn read(&mut self, iova: u64, buf: &mut [u8], what: &'static str) -> DmaOutcome {
        if buf.is_empty() {
            return DmaOutcome::Done;
        }
        let mut rec = FirstPage { inner: &mut *self.iommu, first: None };
        let outcome = dma_read(&mut rec, self.mem, self.rid, iova, buf);
        let phys = rec.phys();
        self.push(iova, buf.len(), Access::Read, outcome, phys, what);
        outcome
    }

    /// A memory write request of `data` at `iova`; zero-length as in [`Port::read`].
    pub fn write(&mut self, iova: u64, data: &[u8], what: &'static str) -> DmaOutcome {
        if data.is_empty() {
            return DmaOutcome::Done;
        }
        let mut rec = FirstPage { inner: &mut *self.iommu, first: None };
        let outcome = dma_write(&mut rec, self.mem, self.rid, iova, data);
        let phys = rec.phys();
        self.push(iova, data.len(), Access::Write, outcome, phys, what);
        outcome
    }

    /// A memory read request of whole pages at a page-aligned `iova`, as [`Port::read`] of `n` pages, that
    /// hands back each page shared (`None`: never written, zeros) instead of copying it: what the device
    /// reads is the memory of this instant either way (a later write copies the page first). `out` is
    /// cleared first; on a failure it holds the pages read before it. Logged as one request.
    pub fn read_pages(
        &mut self,
        iova: u64,
        n: usize,
        out: &mut Vec<Option<Arc<Page>>>,
        what: &'static str,
    ) -> DmaOutcome {
        out.clear();
        if n == 0 {
            return DmaOutcome::Done;
        }
        let mut first = None;
        let mut outcome = DmaOutcome::Done;
        for i in 0..n {
            let at = iova.wrapping_add(i as u64 * PAGE_SIZE as u64);
            match self.iommu.translate(self.mem, self.rid, at, Access::Read) {
                Translation::Ok { phys } => {
                    first.get_or_insert(phys);
                    if self.mem.check_ram(phys & !0xfff, PAGE_SIZE).is_err() {
                        outcome = DmaOutcome::BadAddress { phys, done: i * PAGE_SIZE };
                        break;
                    }
                    out.push(self.mem.page_shared(phys >> 12).cloned());
                }
                Translation::Fault(info) => {
                    outcome = DmaOutcome::Fault { iova: at, done: i * PAGE_SIZE, info };
                    break;
                }
            }
        }
        self.push(iova, n * PAGE_SIZE, Access::Read, outcome, first, what);
        outcome
    }

    fn push(
        &mut self,
        iova: u64,
        len: usize,
        access: Access,
        outcome: DmaOutcome,
        phys: Option<u64>,
        what: &'static str,
    ) {
        self.log.push(DmaEvent { time: self.now, rid: self.rid, iova, len, access, outcome, phys, what });
    }
}

/// Passes translations through and remembers the first one, so an event can name the physical page a
/// DMA started at without translating twice (a second walk would record a second fault).
struct FirstPage<'a> {
    inner: &'a mut dyn Iommu,
    first: Option<Translation>,
}

impl FirstPage<'_> {
    fn phys(&self) -> Option<u64> {
        match self.first {
            Some(Translation::Ok { phys }) => Some(phys),
            _ => None,
        }
    }
}

impl Iommu for FirstPage<'_> {
    fn translate(&mut self, mem: &mut PhysMemory, rid: u32, iova: u64, access: Access) -> Translation {
        let t = self.inner.translate(mem, rid, iova, access);
        self.first.get_or_insert(t);
        t
    }
}

/// How often something happens on the virtual clock: `count` events at every tick that is a multiple of
/// `every`. Deterministic by construction; `count == 0` (or `every == 0`) means never.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Events at each firing tick.
    pub count: u32,
    /// The period in ticks.
    pub every: u64,
}

impl Rate {
    /// Never.
    pub const OFF: Rate = Rate { count: 0, every: 1 };

    /// `n` events at every tick.
    pub const fn per_tick(n: u32) -> Rate {
        Rate { count: n, every: 1 }
    }

    /// One event at every tick that is a multiple of `k`.
    pub const fn every(k: u64) -> Rate {
        Rate { count: 1, every: k }
    }

    /// Events due at the ticks `from..=to` (saturating; empty when `from > to`).
    pub fn due(&self, from: u64, to: u64) -> u64 {
        if self.count == 0 || self.every == 0 || from > to {
            return 0;
        }
        // Multiples of `every` in [from, to] = those in [0, to] minus those in [0, from - 1].
        let instants = match from {
            0 => (to / self.every).saturating_add(1),
            _ => to / self.every - (from - 1) / self.every,
        };
        instants.saturating_mul(self.count as u64)
    }
}

/// The last tick a device saw, so a call for tick `now` covers exactly the ticks since the previous call
/// (a repeated or earlier `now` covers none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Clock {
    last: Option<u64>,
}

impl Clock {
    /// The ticks `first..=now` not yet covered, or `None` if `now` was already covered.
    pub fn advance(&mut self, now: u64) -> Option<(u64, u64)> {
        let first = match self.last {
            Some(l) if now <= l => return None,
            Some(l) => l + 1,
            None => now,
        };
        self.last = Some(now);
        Some((first, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_counts_multiples() {
        assert_eq!(Rate::every(4).due(0, 0), 1);
        assert_eq!(Rate::every(4).due(1, 3), 0);
        assert_eq!(Rate::every(4).due(1, 8), 2);
        assert_eq!(Rate::per_tick(3).due(5, 6), 6);
        assert_eq!(Rate::OFF.due(0, 100), 0);
        assert_eq!(Rate { count: u32::MAX, every: 1 }.due(0, u64::MAX), u64::MAX);
        assert_eq!(Rate::every(1).due(u64::MAX, u64::MAX), 1);
        assert_eq!(Rate::every(0).due(0, 9), 0);
    }

    #[test]
    fn clock_covers_each_tick_once() {
        let mut c = Clock::default();
        assert_eq!(c.advance(5), Some((5, 5)));
        assert_eq!(c.advance(5), None);
        assert_eq!(c.advance(3), None);
        assert_eq!(c.advance(9), Some((6, 9)));
    }
}
