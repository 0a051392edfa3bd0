//! A register snapshot as the driver's [`Mmio`] for one IOMMU unit, read-only.

use iommu_platform::Mmio;

use super::{RegSnapshot, RegsError};

/// How many ignored writes [`SnapshotMmio`] keeps in detail; beyond this only the count grows, so a
/// driver stuck in a retry loop on a dump cannot grow memory without bound.
pub const MAX_RECORDED_WRITES: usize = 4096;

/// A write the driver attempted on a dump, which was ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioWrite {
    /// Byte offset from the unit's base.
    pub off: usize,
    /// 4 or 8.
    pub size: usize,
    /// The value the driver tried to write (a 4-byte write's in the low 32 bits).
    pub val: u64,
}

/// The registers of one IOMMU unit at `base`, served from a [`RegSnapshot`].
///
/// A register that was not captured reads as 0, because the [`Mmio`] trait cannot fail (hardware reads
/// don't); the first such offset is kept so the caller can say "RTADDR was not captured" instead of
/// trusting a zero. Use [`SnapshotMmio::require`] beforehand to refuse a snapshot missing the
/// registers an operation needs. Writes are ignored (a dump cannot change) and recorded, so an
/// inspection that tried to change hardware state is visible.
#[derive(Clone, Debug)]
pub struct SnapshotMmio {
    snap: RegSnapshot,
    base: u64,
    missing: Option<usize>,
    writes: Vec<MmioWrite>,
    write_count: u64,
}

impl SnapshotMmio {
    /// Serves `snap`'s bytes at `base` + offset, with no reads missed and no writes recorded yet.
    pub fn new(snap: RegSnapshot, base: u64) -> Self {
        Self { snap, base, missing: None, writes: Vec::new(), write_count: 0 }
    }

    /// The whole snapshot, every unit's bytes: for serving another unit ([`SnapshotMmio::new`]).
    pub fn snapshot(&self) -> &RegSnapshot {
        &self.snap
    }

    /// The unit's MMIO register base: the physical address of offset 0.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The offset of the first register read that was not (wholly) in the snapshot.
    pub fn missing(&self) -> Option<usize> {
        self.missing
    }

    /// The writes attempted so far, oldest first (the first [`MAX_RECORDED_WRITES`]).
    pub fn writes_attempted(&self) -> &[MmioWrite] {
        &self.writes
    }

    /// How many writes were attempted in all, including those past [`MAX_RECORDED_WRITES`].
    pub fn write_count(&self) -> u64 {
        self.write_count
    }

    /// Checks that every `(name, offset, size)` register is captured; the error names the first that
    /// is not, with its offset and absolute address.
    pub fn require(&self, regs: &[(&str, usize, usize)]) -> Result<(), RegsError> {
        for &(name, off, size) in regs {
            let addr = self.addr(off);
            if !addr.is_some_and(|a| self.snap.has(a, size)) {
                let addr = addr.unwrap_or(u64::MAX);
                return Err(RegsError::MissingRegister { name: name.into(), off, addr, size });
            }
        }
        Ok(())
    }

    fn addr(&self, off: usize) -> Option<u64> {
        self.base.checked_add(off as u64)
    }

    /// Reads `N` bytes at `off`: captured bytes as captured, missing ones as 0 (and the offset noted).
    /// A half-captured register keeps its captured half: that half is still what the hardware held.
    fn read_bytes<const N: usize>(&mut self, off: usize) -> [u8; N] {
        let mut out = [0u8; N];
        let mut complete = true;
        for (k, b) in out.iter_mut().enumerate() {
            match self.addr(off).and_then(|a| a.checked_add(k as u64)).and_then(|a| self.snap.byte(a)) {
                Some(v) => *b = v,
                None => complete = false,
            }
        }
        if !complete {
            self.missing.get_or_insert(off);
        }
        out
    }

    fn record(&mut self, off: usize, size: usize, val: u64) {
        self.write_count += 1;
        if self.writes.len() < MAX_RECORDED_WRITES {
            self.writes.push(MmioWrite { off, size, val });
        }
    }
}

impl Mmio for SnapshotMmio {
    fn read32(&mut self, off: usize) -> u32 {
        u32::from_le_bytes(self.read_bytes(off))
    }

    fn read64(&mut self, off: usize) -> u64 {
        u64::from_le_bytes(self.read_bytes(off))
    }

    fn write32(&mut self, off: usize, val: u32) {
        self.record(off, 4, val.into());
    }

    fn write64(&mut self, off: usize, val: u64) {
        self.record(off, 8, val);
    }
}
