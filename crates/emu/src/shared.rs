//! One IOMMU model shared by several threads (a hypervisor's vCPUs or devices doing DMA through one unit).
//!
//! The model and the memory it walks sit behind one lock: a translation the caches cannot answer, a register
//! access and a fault all take it, so the model sees one request at a time and records every fault exactly as
//! when unshared. What makes sharing fast is each thread's [`Lane`]: a front cache of its own
//! ([`crate::front`], eight times the model's, enough for a device's working set) that answers without the
//! lock. A lane only ever holds an entry the model's own front held right after the full path answered the same
//! request, tagged with the unit's *epoch*: an atomic mirror of the model's front generation, advanced under
//! the lock after anything that may change it (a translation, a register write, any other change to the
//! model). A lane entry of an older epoch is never used, so a lane answers only what the model's front answered
//! in the current epoch (entries the model's smaller front has since evicted included: the caches behind it
//! still hold them, as anything that drops a cached entry starts a new generation), and nothing after the
//! operation that removed it (an invalidation, a disable) has returned. Faults are never in a front, so never in
//! a lane.
//!
//! A lane counts its hits by the entry's hit flags and folds them into the model's counters
//! ([`IommuModel::replay_front_hits`], the model's own hit path) when flushed or dropped, so the statistics
//! are those of the same translations done on one thread; hits counted before the model's counters were zeroed
//! are dropped, not folded in after.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::dma::{Access, Translation};
use crate::front::{Front, HitTally};
use crate::mem::PhysMemory;
use crate::model::IommuModel;

/// A lane's entries: 256 KiB, eight times a model's front. A lane is one thread's or one device's, so it can
/// afford to hold a device's whole working set (4096 consecutive pages take distinct slots): every lane miss
/// takes the unit's lock and reads lines another core wrote.
pub const LANE_SLOTS: usize = 8192;

/// What the lock guards.
struct Inner {
    model: Box<dyn IommuModel>,
    mem: PhysMemory,
    /// The model's front generation (`None`: its front answers nothing) the current epoch stands for.
    seen: Option<u64>,
    /// The current epoch (also in [`SharedUnit::epoch`]); only written under the lock.
    epoch: u64,
}

impl Inner {
    /// Advance the epoch if the model's front generation may have changed (`force`) or did, and publish it.
    /// Called under the lock after every operation on the model, before the lock is released.
    fn publish(&mut self, epoch: &AtomicU64, force: bool) {
        let now = self.model.front_gen();
        if force || now != self.seen {
            self.seen = now;
            self.epoch += 1;
            // Release: a thread that loads this epoch sees every write of the operation that led to it.
            epoch.store(self.epoch, Ordering::Release);
        }
    }
}

/// The epoch on a cache line of its own: the hit path of every lane reads it, and the lock next to it is
/// written on every miss.
#[repr(align(128))]
struct Epoch(AtomicU64);

/// An IOMMU model and its memory, shared by threads that each translate through a [`Lane`].
pub struct SharedUnit {
    epoch: Epoch,
    inner: Mutex<Inner>,
    /// The thread holding the lock ([`this_thread`]), 0 when none: a thread that asks for the lock again (a lane
    /// translating inside [`SharedUnit::with_model`]) is told so instead of waiting for itself forever.
    holder: AtomicUsize,
}

/// A token of the calling thread, never 0: the address of a thread-local, distinct among live threads.
fn this_thread() -> usize {
    thread_local!(static TOKEN: u8 = const { 0 });
    TOKEN.with(|t| t as *const u8 as usize)
}

/// The lock as held: it clears the holder before the lock is released.
struct Held<'a> {
    guard: MutexGuard<'a, Inner>,
    holder: &'a AtomicUsize,
}

impl std::ops::Deref for Held<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.guard
    }
}

impl std::ops::DerefMut for Held<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.guard
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // Runs before the guard field is dropped, so before the lock is released.
        self.holder.store(0, Ordering::Relaxed);
    }
}

impl SharedUnit {
    /// Share `model`, which walks its tables in `mem`.
    pub fn new(model: Box<dyn IommuModel>, mem: PhysMemory) -> Self {
        let seen = model.front_gen();
        // Epoch 1: no lane entry has it yet (an empty front slot never matches whatever its generation).
        SharedUnit {
            epoch: Epoch(AtomicU64::new(1)),
            inner: Mutex::new(Inner { model, mem, seen, epoch: 1 }),
            holder: AtomicUsize::new(0),
        }
    }

    /// The model and memory back (lanes flushed first: a lane borrows the unit, so none is left).
    pub fn into_inner(self) -> (Box<dyn IommuModel>, PhysMemory) {
        let inner = self.inner.into_inner().unwrap_or_else(|e| e.into_inner());
        (inner.model, inner.mem)
    }

    /// A new cache handle for one thread (vCPU, device), empty. It translates only through this unit.
    pub fn lane(&self) -> Lane<'_> {
        Lane { unit: self, front: Front::default(), hits: HitTally::default(), pending: 0, resets: None }
    }

    /// The lock. A thread that panicked holding it left the model between two operations at worst (each
    /// operation is one call into the model), so a poisoned lock is used as it is. A thread that already holds
    /// it (a [`Lane`] or this unit used from inside [`SharedUnit::with_model`] or [`SharedUnit::with_memory`])
    /// panics saying so rather than deadlocking. Only this thread ever stores its own token, so a relaxed load
    /// that sees it means this thread holds the lock.
    fn lock(&self) -> Held<'_> {
        let me = this_thread();
        assert!(
            self.holder.load(Ordering::Relaxed) != me,
            "SharedUnit used from inside its own with_model or with_memory: this thread already holds the unit"
        );
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        self.holder.store(me, Ordering::Relaxed);
        Held { guard, holder: &self.holder }
    }

    /// The lane could not answer: the model's full path, under the lock.
    #[cold]
    #[inline(never)]
    fn translate_miss(&self, lane: &mut Lane<'_>, rid: u32, iova: u64, access: Access) -> Translation {
        let mut g = self.lock();
        let inner = &mut *g;
        lane.settle(&*inner.model);
        // Another lane's miss may have just filled the model's front with this request (two devices streaming
        // through the same buffers): take it without translating, so the model's lines (its tally, its front)
        // are only read here and stay put in the cache of the core that wrote them. The hit is the model's own
        // front hit, counted as the lane counts its hits; the epoch is current (every operation publishes).
        if let Some((phys, hits)) = inner.model.front_entry(rid, iova, access) {
            lane.front.put(inner.epoch, rid, iova, access, phys, hits);
            lane.hits.add(hits, 1);
            lane.pending += 1;
            return Translation::Ok { phys };
        }
        let t = inner.model.translate(&mut inner.mem, rid, iova, access);
        inner.publish(&self.epoch.0, false);
        // Only what the model's own front now answers (a success it would answer again without a look).
        if let Some((phys, hits)) = inner.model.front_entry(rid, iova, access) {
            lane.front.put(inner.epoch, rid, iova, access, phys, hits);
        }
        t
    }

    /// A register read. Lanes stay valid unless the model's front generation changed (a read the model acts on
    /// bumps it, as for its own front).
    pub fn mmio_read(&self, off: usize, size: u8) -> u64 {
        let mut g = self.lock();
        let inner = &mut *g;
        let v = inner.model.mmio_read(&mut inner.mem, off, size);
        inner.publish(&self.epoch.0, false);
        v
    }

    /// A register write (an invalidation, an enable): no lane answers from before it once it returns.
    pub fn mmio_write(&self, off: usize, size: u8, val: u64) {
        self.with_model(|m, mem| m.mmio_write(mem, off, size, val))
    }

    /// Turn the model's caches off or on ([`IommuModel::set_caching`]).
    pub fn set_caching(&self, on: bool) {
        self.with_model(|m, _| m.set_caching(on))
    }

    /// The memory alone, under the lock (a device's data after its translation, a CPU's store). Lanes stay
    /// valid: like the model's own caches they keep a translation until an invalidation, whatever memory says
    /// (VT-d 6.5, AMD-Vi 2.4.3, SMMUv3 3.21: software invalidates after changing a table).
    pub fn with_memory<R>(&self, f: impl FnOnce(&mut PhysMemory) -> R) -> R {
        f(&mut self.lock().mem)
    }

    /// Anything else on the model and its memory, under the lock (a driver over an
    /// [`crate::EmuPlatform`], a fault injection, reading counters). Lanes answer nothing from before it once it
    /// returns, whatever `f` did.
    pub fn with_model<R>(&self, f: impl FnOnce(&mut Box<dyn IommuModel>, &mut PhysMemory) -> R) -> R {
        let mut g = self.lock();
        let inner = &mut *g;
        // Published even if `f` panics part-way (after an invalidation, say): lanes must not keep answering from
        // before it while the lock is recovered as it is.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut inner.model, &mut inner.mem)));
        inner.publish(&self.epoch.0, true);
        r.unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

/// One thread's cache handle on a [`SharedUnit`]: its own front cache and hit counts. Not shared, so its hit
/// path writes only memory of its own thread.
pub struct Lane<'a> {
    unit: &'a SharedUnit,
    front: Front<LANE_SLOTS>,
    /// Hits not yet folded into the model's counters, by the entry's hit flags.
    hits: HitTally,
    /// Their sum.
    pending: u64,
    /// The model's count of counter resets when the lane last held the lock.
    resets: Option<u64>,
}

impl Lane<'_> {
    /// Translate one request: from the lane without the lock when it holds the request in the unit's current
    /// epoch, else through the model's full [`crate::Iommu::translate`] under the lock (which records a fault as
    /// ever), copying the model's front entry for the request, if it now has one, into the lane.
    #[inline]
    pub fn translate(&mut self, rid: u32, iova: u64, access: Access) -> Translation {
        let epoch = self.unit.epoch.0.load(Ordering::Acquire);
        if let Some((phys, hits)) = self.front.get(epoch, rid, iova, access) {
            self.hits.add(hits, 1);
            self.pending += 1;
            return Translation::Ok { phys };
        }
        let unit = self.unit;
        unit.translate_miss(self, rid, iova, access)
    }

    /// Whether the lane alone would answer this request now, and with which address: for tests that a lane
    /// holds only what the model would answer.
    pub fn answers(&self, rid: u32, iova: u64, access: Access) -> Option<u64> {
        let epoch = self.unit.epoch.0.load(Ordering::Acquire);
        self.front.get(epoch, rid, iova, access).map(|(phys, _)| phys)
    }

    /// Requests the lane answered alone since it last folded its hits into the model's counters (hits it will drop
    /// instead, if the model's counters were zeroed meanwhile, included until it next takes the unit's lock).
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Fold the lane's hits into the model's counters, so they read as if every translation had gone through
    /// the model. Dropping the lane does the same.
    pub fn flush(&mut self) {
        if self.pending == 0 {
            return;
        }
        let mut g = self.unit.lock();
        self.settle(&*g.model);
        for (hits, n) in std::mem::take(&mut self.hits).counts() {
            g.model.replay_front_hits(hits, n);
        }
        self.pending = 0;
    }

    /// Under the unit's lock: drop the hits not yet folded if the model's counters were zeroed since the lane
    /// last held the lock. They all came before that reset: it was made under the lock (through
    /// [`SharedUnit::with_model`], which starts a new epoch), and from then until it takes the lock the lane holds
    /// no entry of the new epoch, so it answers nothing.
    fn settle(&mut self, model: &dyn IommuModel) {
        let now = model.counter_resets();
        if self.resets != Some(now) {
            self.hits = HitTally::default();
            self.pending = 0;
            self.resets = Some(now);
        }
    }
}

impl Drop for Lane<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

impl std::fmt::Debug for Lane<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane").field("pending", &self.pending).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for SharedUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedUnit").field("epoch", &self.epoch.0.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}
