//! Every DMA of a run, classified by what the IOMMU did with it and where it landed.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use iommu_emu::devices::DmaEvent;
use iommu_emu::{Access, DmaOutcome};

use crate::outcome::{DmaCounts, Failure};

/// What a run has seen of DMA since the panic.
#[derive(Clone, Default)]
pub struct Ledger {
    /// Count from the panic on.
    pub counting: bool,
    /// The crash kernel's IOMMU init has run.
    pub after_init: bool,
    /// A blocked DMA ends the run ([`Knobs::aborts_fatal`](crate::Knobs::aborts_fatal)): counted as
    /// `aborted` and recorded in [`Ledger::fatal`] instead of `faulted`.
    pub aborts_fatal: bool,
    /// The DMA counted so far, by what the IOMMU did.
    pub dma: DmaCounts,
    /// Pages the crash kernel handed to devices itself (its disk queues and buffers; the scratch pages are
    /// [`Ledger::scratch`]).
    pub crash_own: PageRanges,
    /// The scratch pages of `adopt-scratch` containment: DMA landing there counts as redirected.
    pub scratch: Option<Range<u64>>,
    /// Crash-kernel pages written by DMA it did not ask for.
    pub crash_hits: BTreeSet<u64>,
    /// Those written before the crash kernel's IOMMU init ran: no policy can stop them.
    pub crash_hits_before_init: BTreeSet<u64>,
    /// DMA writes into the crashed kernel's memory after the crash kernel's IOMMU init.
    pub old_writes_after_init: u64,
    /// Keep [`Ledger::first_write`] and [`Ledger::writers`]: a page-by-page record no outcome count needs, kept
    /// only for a caller that looks into the run (`scenario::run_detailed`, `scenario::run_on`).
    pub pages: bool,
    /// First tick each old-memory page was written by DMA after the panic (with [`Ledger::pages`]).
    pub first_write: BTreeMap<u64, u64>,
    /// What wrote each old-memory page after the panic (the devices' purposes: `rx-data`, `bulk-dst`, ...; with
    /// [`Ledger::pages`]).
    pub writers: BTreeMap<u64, BTreeSet<&'static str>>,
    /// The first blocked DMA on a platform where that is fatal.
    pub fatal: Option<Failure>,
}

impl Ledger {
    /// Account for `events`, `translating` telling whether the unit had translation on.
    pub fn account(
        &mut self,
        events: &[DmaEvent],
        translating: bool,
        crash_region: &Range<u64>,
        name: impl Fn(u32) -> String,
    ) {
        if !self.counting {
            return;
        }
        for e in events {
            match e.outcome {
                DmaOutcome::Done => {
                    let Some(phys) = e.phys else { continue };
                    let page = phys & !0xfff;
                    if self.scratch.as_ref().is_some_and(|r| r.contains(&page)) {
                        self.dma.redirected += 1;
                    } else if translating {
                        self.dma.translated += 1;
                    } else {
                        self.dma.untranslated += 1;
                    }
                    if e.access != Access::Write {
                        continue;
                    }
                    if crash_region.contains(&phys) {
                        let own =
                            self.crash_own.contains(page) || self.scratch.as_ref().is_some_and(|r| r.contains(&page));
                        if !own {
                            self.crash_hits.insert(page);
                            if !self.after_init {
                                self.crash_hits_before_init.insert(page);
                            }
                        }
                    } else {
                        if self.pages {
                            self.first_write.entry(page).or_insert(e.time);
                            self.writers.entry(page).or_default().insert(e.what);
                        }
                        if self.after_init {
                            self.old_writes_after_init += 1;
                        }
                    }
                }
                DmaOutcome::Fault { iova, .. } | DmaOutcome::BadAddress { phys: iova, .. } => {
                    if self.aborts_fatal {
                        self.dma.aborted += 1;
                        if self.fatal.is_none() {
                            self.fatal = Some(Failure::FatalAbort {
                                device: name(e.rid),
                                what: e.what,
                                iova,
                                before_init: !self.after_init,
                            });
                        }
                    } else {
                        self.dma.faulted += 1;
                    }
                }
            }
        }
    }
}

/// A set of pages kept as ranges: a buffer of many pages is one entry.
#[derive(Clone, Debug, Default)]
pub struct PageRanges {
    /// First page address → end (exclusive) of each range; ranges neither overlap nor touch.
    ranges: BTreeMap<u64, u64>,
}

impl PageRanges {
    /// Add the pages of `start..end` (page-aligned addresses).
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut start, mut end) = (start, end);
        // Merge with the range that ends at or after `start` and begins at or before `end`.
        while let Some((&s, &e)) = self.ranges.range(..=end).next_back() {
            if e < start {
                break;
            }
            self.ranges.remove(&s);
            (start, end) = (start.min(s), end.max(e));
        }
        self.ranges.insert(start, end);
    }

    /// Whether the page at `page` is in the set.
    pub fn contains(&self, page: u64) -> bool {
        self.ranges.range(..=page).next_back().is_some_and(|(_, &end)| page < end)
    }
}

#[cfg(test)]
mod tests {
    use super::PageRanges;

    #[test]
    fn page_ranges_merge_touching_and_overlapping_buffers() {
        let mut r = PageRanges::default();
        r.insert(0x3000, 0x5000);
        r.insert(0x1000, 0x2000);
        r.insert(0x5000, 0x6000);
        r.insert(0x2000, 0x3000);
        r.insert(0x9000, 0x9000);
        assert_eq!(r.ranges.len(), 1, "{:?}", r.ranges);
        assert!(r.contains(0x1000) && r.contains(0x5000) && r.contains(0x5fff));
        assert!(!r.contains(0x6000) && !r.contains(0x0) && !r.contains(0x9000));
        r.insert(0x8000, 0xa000);
        r.insert(0x0, 0x9000);
        assert_eq!(r.ranges.iter().map(|(&s, &e)| (s, e)).collect::<Vec<_>>(), [(0x0, 0xa000)]);
    }
}
