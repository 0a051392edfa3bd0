//! Recording which physical pages some code reads, to trim a dump down to them.

use std::cell::RefCell;
use std::collections::BTreeSet;

use iommu_platform::{MemError, PhysMem};

use crate::PAGE_SIZE;

/// A [`PhysMem`] that forwards to `M` and records every 4 KiB page a read touched.
///
/// Run the adoption or audit code over `RecordingMem<ElfCore>` once, then hand
/// [`RecordingMem::touched`] to [`crate::trim::write_core`]: the small core it writes answers that
/// code's reads exactly as the 2 GiB dump did. Pages are recorded for every read, successful or not,
/// so a probe of memory the dump lacks is kept as a probe (the trimmed core lacks it too). Writes are
/// forwarded but not recorded: a fixture needs what the code read, not what it changed.
#[derive(Debug)]
pub struct RecordingMem<M> {
    inner: M,
    // `PhysMem::read` takes `&self`; a RefCell lets a read record without changing the trait.
    touched: RefCell<BTreeSet<u64>>,
}

impl<M: PhysMem> RecordingMem<M> {
    /// Wraps `inner` with nothing recorded yet.
    pub fn new(inner: M) -> Self {
        Self { inner, touched: RefCell::new(BTreeSet::new()) }
    }

    /// The 4 KiB-aligned addresses of every page read so far.
    pub fn touched(&self) -> BTreeSet<u64> {
        self.touched.borrow().clone()
    }

    /// The wrapped memory, for what [`PhysMem`] does not offer (notes, RAM ranges); reads through it are
    /// not recorded.
    pub fn inner(&self) -> &M {
        &self.inner
    }

    /// The wrapped memory back, dropping the record.
    pub fn into_inner(self) -> M {
        self.inner
    }
}

impl<M: PhysMem> PhysMem for RecordingMem<M> {
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        if !buf.is_empty() {
            // One entry per page of the request, clamped at the top of the address space. The
            // number of pages is bounded by the caller's buffer, not by anything read from memory.
            let last = pa.saturating_add(buf.len() as u64 - 1);
            let mut touched = self.touched.borrow_mut();
            let mut page = pa & !(PAGE_SIZE - 1);
            loop {
                touched.insert(page);
                match page.checked_add(PAGE_SIZE) {
                    Some(next) if next <= last => page = next,
                    _ => break,
                }
            }
        }
        self.inner.read(pa, buf)
    }

    fn write(&mut self, pa: u64, data: &[u8]) -> Result<(), MemError> {
        self.inner.write(pa, data)
    }
}
