//! A unit shared by threads (`iommu_emu::shared`): lanes answer only what the model's front would, nothing after an
//! invalidation, never a fault; faults and counters are exactly those of the same requests on one thread.

use iommu_driver::{Attachment, BootEnv, BootOptions, DeviceId, DomainId, IommuDriver, IommuKind, Perm};
use iommu_emu::inject::Unit as Target;
use iommu_emu::{Access, EmuPlatform, FrameRegion, Iommu, IommuModel, PhysMemory, SharedUnit, Translation};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const RID: u32 = 0x10;
/// Pages mapped for `RID`, at physical `DATA` on.
const PAGES: u64 = 32;
const DATA: u64 = 512 * MIB;

struct Rig {
    unit: SharedUnit,
    driver: Box<dyn IommuDriver>,
    dom: DomainId,
    frames: FrameRegion,
    /// The IOVA of mapped page `p` is `iovas[p]`, holding physical `DATA + p * 4096`.
    iovas: Vec<u64>,
}

fn env() -> BootEnv {
    BootEnv {
        crash_kernel: false,
        ram: std::iter::once(0..GIB).collect(),
        crash_region: None,
        mem_encrypt: false,
        c_bit: 0,
    }
}

/// A unit of `kind` booted by the real driver, `RID` in a domain with `PAGES` pages mapped read-write.
fn rig(kind: IommuKind) -> Rig {
    let mut mem = PhysMemory::contiguous(0..GIB);
    let mut model = iommu_emu::model(kind, false, true);
    let mut frames = FrameRegion::new(64 * MIB..DATA);
    let (driver, dom, iovas) = {
        let mut hw = EmuPlatform::new(&mut model, &mut mem, &mut frames);
        let mut driver = iommu_driver::boot(kind, &mut hw, &env(), BootOptions::default()).expect("boot");
        let dom = driver.create_domain(&mut hw).expect("domain");
        driver.attach(&mut hw, DeviceId(RID), Attachment::Domain(dom)).expect("attach");
        let iovas =
            (0..PAGES).map(|p| driver.map(&mut hw, dom, DATA + p * 4096, 4096, Perm::RW).expect("map")).collect();
        (driver, dom, iovas)
    };
    Rig { unit: SharedUnit::new(model, mem), driver, dom, frames, iovas }
}

/// An IOVA no page of the domain is mapped at.
fn unmapped(r: &Rig) -> u64 {
    let top = r.iovas.iter().max().copied().unwrap_or(0);
    let iova = top + 64 * 4096;
    assert!(!r.iovas.contains(&iova));
    iova
}

/// The model's counters, printed (each model's own type), and its fault count.
fn counters(m: &mut Box<dyn IommuModel>) -> (String, u64) {
    match m.fault_target() {
        Target::Vtd(v) => (format!("{:?}", v.counters()), v.fault_count()),
        Target::Amdvi(a) => (format!("{:?}", a.counters()), a.fault_count()),
        Target::Smmuv3(s) => (format!("{:?}", s.counters()), s.counters().faults),
    }
}

fn phys(t: Translation) -> u64 {
    match t {
        Translation::Ok { phys } => phys,
        Translation::Fault(f) => panic!("fault {f:?}"),
    }
}

#[test]
fn a_lane_hit_equals_the_models_own_answer() {
    for kind in IommuKind::ALL {
        let r = rig(kind);
        let mut lane = r.unit.lane();
        for (p, &iova) in r.iovas.iter().enumerate() {
            let at = iova + 0x123;
            let first = phys(lane.translate(RID, at, Access::Read));
            assert_eq!(first, DATA + p as u64 * 4096 + 0x123, "{kind:?}");
            assert_eq!(lane.answers(RID, at, Access::Read), Some(first), "{kind:?}: the lane holds the entry");
            let model = r.unit.with_model(|m, _| m.front_entry(RID, at, Access::Read)).map(|(pa, _)| pa);
            assert_eq!(model, Some(first), "{kind:?}: the model's front holds the same");
            // `with_model` may have changed anything: the next request refills, then the lane answers alone.
            assert_eq!(lane.answers(RID, at, Access::Read), None, "{kind:?}: nothing from before `with_model`");
            assert_eq!(phys(lane.translate(RID, at, Access::Read)), first, "{kind:?}");
            assert_eq!(lane.answers(RID, at, Access::Read), Some(first), "{kind:?}");
            let pending = lane.pending();
            assert_eq!(phys(lane.translate(RID, at, Access::Read)), first, "{kind:?}");
            assert_eq!(lane.pending(), pending + 1, "{kind:?}: answered by the lane alone");
        }
    }
}

#[test]
fn a_lane_never_answers_after_an_unmap_and_its_invalidation_complete() {
    for kind in IommuKind::ALL {
        let Rig { unit, mut driver, dom, mut frames, iovas } = rig(kind);
        let iova = iovas[3];
        let filled = std::sync::Barrier::new(2);
        let unmapped = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            // A device's thread holds the entry in its lane, and translates again once the unmap returned.
            s.spawn(|| {
                let mut a = unit.lane();
                phys(a.translate(RID, iova, Access::Write));
                phys(a.translate(RID, iova, Access::Write));
                assert!(a.answers(RID, iova, Access::Write).is_some(), "{kind:?}");
                filled.wait();
                unmapped.wait();
                assert_eq!(a.answers(RID, iova, Access::Write), None, "{kind:?}: the lane dropped the entry");
                let before = unit.with_model(|m, _| counters(m).1);
                assert!(matches!(a.translate(RID, iova, Access::Write), Translation::Fault(_)), "{kind:?}");
                assert_eq!(unit.with_model(|m, _| counters(m).1), before + 1, "{kind:?}: the fault is recorded");
            });
            // Meanwhile the driver unmaps the page (and invalidates the unit's caches) through the shared unit.
            filled.wait();
            unit.with_model(|m, mem| {
                let mut hw = EmuPlatform::new(m, mem, &mut frames);
                driver.unmap(&mut hw, dom, iova, 4096).expect("unmap");
            });
            unmapped.wait();
        });
    }
}

#[test]
fn a_lane_never_holds_a_fault() {
    for kind in IommuKind::ALL {
        let r = rig(kind);
        let bad = unmapped(&r);
        let mut lane = r.unit.lane();
        for n in 1..=3 {
            assert!(matches!(lane.translate(RID, bad, Access::Read), Translation::Fault(_)), "{kind:?}");
            assert_eq!(lane.answers(RID, bad, Access::Read), None, "{kind:?}");
            assert_eq!(r.unit.with_model(|m, _| counters(m).1), n, "{kind:?}: every fault reaches the model");
        }
    }
}

#[test]
fn a_lane_holds_nothing_the_model_would_not_cache() {
    for kind in IommuKind::ALL {
        let r = rig(kind);
        r.unit.set_caching(false);
        let mut lane = r.unit.lane();
        let iova = r.iovas[1];
        for _ in 0..3 {
            phys(lane.translate(RID, iova, Access::Read));
            assert_eq!(lane.answers(RID, iova, Access::Read), None, "{kind:?}: caching off, every request walks");
        }
        r.unit.set_caching(true);
        phys(lane.translate(RID, iova, Access::Read));
        assert!(lane.answers(RID, iova, Access::Read).is_some(), "{kind:?}: caching back on");
    }
}

/// Run `per` requests from each of `threads` threads, each on its own lane, lanes dropped at the end.
fn on_threads(unit: &SharedUnit, threads: usize, per: u64, req: impl Fn(u64) -> (u64, Access) + Sync) -> u64 {
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut lane = unit.lane();
                    (0..per)
                        .filter(|&i| {
                            let (iova, access) = req(i);
                            matches!(lane.translate(RID, iova, access), Translation::Fault(_))
                        })
                        .count() as u64
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("thread")).sum()
    })
}

#[test]
fn two_threads_faulting_n_times_each_record_exactly_2n_faults_as_one_thread_would() {
    const N: u64 = 500;
    for kind in IommuKind::ALL {
        let r = rig(kind);
        let bad = unmapped(&r);
        let (m, mem) = r.unit.with_model(|m, mem| (m.clone(), mem.clone()));
        let serial = SharedUnit::new(m, mem);
        let faults = on_threads(&r.unit, 2, N, |_| (bad, Access::Write));
        assert_eq!(faults, 2 * N, "{kind:?}: every request faulted");
        let (shared, count) = r.unit.with_model(|m, _| counters(m));
        assert_eq!(count, 2 * N, "{kind:?}: every fault counted");
        assert_eq!(on_threads(&serial, 1, 2 * N, |_| (bad, Access::Write)), 2 * N);
        assert_eq!(shared, serial.with_model(|m, _| counters(m).0), "{kind:?}: the same records as one thread");
    }
}

#[test]
fn two_threads_hitting_n_times_each_leave_the_counters_of_2n_translations_on_one_thread() {
    const N: u64 = 20_000;
    for kind in IommuKind::ALL {
        let r = rig(kind);
        let (mut bare, mut mem) = r.unit.with_model(|m, mem| (m.clone(), mem.clone()));
        let iovas = r.iovas.clone();
        // Each page many times in a row, reads and writes, over all mapped pages.
        let req = |i: u64| {
            let access = if i.is_multiple_of(3) { Access::Write } else { Access::Read };
            (iovas[((i / 64) % PAGES) as usize] + (i % 64) * 8, access)
        };
        assert_eq!(on_threads(&r.unit, 2, N, req), 0, "{kind:?}");
        // The same requests, each thread's in turn, through the model alone.
        for i in (0..N).chain(0..N) {
            let (iova, access) = req(i);
            phys(bare.translate(&mut mem, RID, iova, access));
        }
        let (shared, _) = r.unit.with_model(|m, _| counters(m));
        assert_eq!(shared, counters(&mut bare).0, "{kind:?}");
        assert!(shared.contains(&format!("translations: {}", 2 * N)), "{kind:?}: {shared}");
    }
}

/// A new lane that translated `iova` ten times: one miss through the model, nine hits of its own not yet folded in.
fn nine_hits(r: &Rig, iova: u64) -> iommu_emu::Lane<'_> {
    let mut lane = r.unit.lane();
    for _ in 0..10 {
        phys(lane.translate(RID, iova, Access::Read));
    }
    assert_eq!(lane.pending(), 9, "one miss, nine hits");
    lane
}

#[test]
fn a_lanes_hits_reach_the_models_counters_when_it_is_flushed() {
    for kind in IommuKind::ALL {
        let r = rig(kind);
        let iova = r.iovas[0];
        let mut lane = nine_hits(&r, iova);
        let (mut bare, mut mem) = r.unit.with_model(|m, mem| (m.clone(), mem.clone()));
        let shown = |m: &mut Box<dyn IommuModel>| counters(m).0;
        assert!(shown(&mut bare).contains("translations: 1,"), "{kind:?}: {}", shown(&mut bare));
        lane.flush();
        assert_eq!(lane.pending(), 0);
        for _ in 0..9 {
            phys(bare.translate(&mut mem, RID, iova, Access::Read));
        }
        assert_eq!(r.unit.with_model(|m, _| shown(m)), shown(&mut bare), "{kind:?}");
    }
}

/// Zero a model's counters (each model's own `reset_counters`).
fn reset_counters(m: &mut Box<dyn IommuModel>) {
    match m.fault_target() {
        Target::Vtd(v) => v.reset_counters(),
        Target::Amdvi(a) => a.reset_counters(),
        Target::Smmuv3(s) => s.reset_counters(),
    }
}

#[test]
fn hits_a_lane_counted_before_the_counters_were_zeroed_are_not_folded_in_after() {
    for kind in IommuKind::ALL {
        let r = rig(kind);
        let iova = r.iovas[1];
        let mut lane = nine_hits(&r, iova);
        // A model zeroed and copied: what the shared one must show after the same requests from here.
        let (mut bare, mut mem) = r.unit.with_model(|m, mem| {
            reset_counters(m);
            (m.clone(), mem.clone())
        });
        // Flushing now folds nothing in: all nine hits came before the reset.
        lane.flush();
        assert_eq!(lane.pending(), 0, "{kind:?}");
        assert_eq!(r.unit.with_model(|m, _| counters(m).0), counters(&mut bare).0, "{kind:?}: flushed at once");
        // The same, when the lane first takes the lock for a miss (the reset started a new epoch) and hits after.
        let mut other = r.unit.lane();
        phys(other.translate(RID, iova, Access::Read));
        for _ in 0..4 {
            phys(other.translate(RID, iova, Access::Read));
        }
        r.unit.with_model(|m, _| reset_counters(m));
        reset_counters(&mut bare);
        for _ in 0..3 {
            phys(other.translate(RID, iova, Access::Read));
            phys(bare.translate(&mut mem, RID, iova, Access::Read));
        }
        drop(other);
        let shown = r.unit.with_model(|m, _| counters(m).0);
        assert_eq!(shown, counters(&mut bare).0, "{kind:?}: only the three after the reset");
        assert!(shown.contains("translations: 3,"), "{kind:?}: {shown}");
    }
}

#[test]
fn a_register_read_or_a_memory_write_leaves_lanes_warm_and_a_register_write_does_not() {
    for kind in IommuKind::ALL {
        let r = rig(kind);
        let mut lane = r.unit.lane();
        let iova = r.iovas[2];
        let pa = phys(lane.translate(RID, iova, Access::Read));
        // Offset 0 (VT-d VER, AMD-Vi the device table base, SMMUv3 IDR0), read and written back unchanged.
        let v = r.unit.mmio_read(0, 8);
        assert_eq!(lane.answers(RID, iova, Access::Read), Some(pa), "{kind:?}: a read");
        r.unit.with_memory(|mem| iommu_driver::PhysMem::write(mem, pa, &[0xa5; 64])).expect("write");
        assert_eq!(lane.answers(RID, iova, Access::Read), Some(pa), "{kind:?}: a store to the data page");
        r.unit.mmio_write(0, 8, v);
        assert_eq!(lane.answers(RID, iova, Access::Read), None, "{kind:?}: a write");
        assert_eq!(phys(lane.translate(RID, iova, Access::Read)), pa, "{kind:?}");
    }
}

#[test]
fn translate_cached_answers_what_translate_would_counts_alike_and_nothing_with_the_front_off() {
    for kind in IommuKind::ALL {
        let r = rig(kind);
        r.unit.with_model(|m, mem| {
            let at = r.iovas[5] + 0x40;
            assert_eq!(m.translate_cached(RID, at, Access::Read), None, "{kind:?}: nothing before the first request");
            let full = phys(m.translate(mem, RID, at, Access::Read));
            // A hit counts as the full path's hit: the same counters after one more of each.
            let mut twin = m.clone();
            let mut twin_mem = mem.clone();
            assert_eq!(m.translate_cached(RID, at, Access::Read), Some(full), "{kind:?}");
            assert_eq!(phys(twin.translate(&mut twin_mem, RID, at, Access::Read)), full, "{kind:?}");
            assert_eq!(counters(m), counters(&mut twin), "{kind:?}");
            assert_eq!(m.translate_cached(RID, at, Access::Write), None, "{kind:?}: a read's entry is not a write's");
            assert_eq!(m.translate_cached(RID + 1, at, Access::Read), None, "{kind:?}: nor another requester's");
            // Off: emptied, never filled, and the full path still answers the same.
            m.set_front_cache(false);
            assert_eq!(m.translate_cached(RID, at, Access::Read), None, "{kind:?}: the front is emptied");
            assert_eq!(phys(m.translate(mem, RID, at, Access::Read)), full, "{kind:?}");
            assert_eq!(m.translate_cached(RID, at, Access::Read), None, "{kind:?}: nothing put while off");
            m.set_front_cache(true);
            assert_eq!(phys(m.translate(mem, RID, at, Access::Read)), full, "{kind:?}");
            assert_eq!(m.translate_cached(RID, at, Access::Read), Some(full), "{kind:?}: filled again once on");
        });
    }
}

/// A lane that translates inside `with_model` asks for the lock its own thread holds: it is told so (a panic that
/// names the misuse) instead of waiting for itself forever, and the unit stays usable afterwards.
#[test]
fn a_lane_used_inside_with_model_panics_instead_of_deadlocking() {
    let r = rig(IommuKind::Vtd);
    let at = r.iovas[0];
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut lane = r.unit.lane();
        r.unit.with_model(|_, _| lane.translate(RID, at, Access::Read))
    }));
    let msg = caught.err().and_then(|p| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
    assert!(msg.contains("already holds the unit"), "{msg:?}");
    let nested =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.unit.with_memory(|_| r.unit.mmio_read(0, 4))));
    assert!(nested.is_err(), "the unit used inside with_memory");
    assert_eq!(phys(r.unit.lane().translate(RID, at, Access::Read)), DATA, "usable afterwards");
}

/// A page one lane translated is answered to a second lane from what the model's front holds (no translation of
/// the model's, counted as a hit the lane folds in); after an unmap and its invalidation neither lane answers, and a
/// request from either faults and is recorded.
#[test]
fn a_second_lane_takes_what_the_first_translated_and_nothing_after_an_unmap() {
    for kind in IommuKind::ALL {
        let Rig { unit, mut driver, dom, mut frames, iovas } = rig(kind);
        let iova = iovas[5];
        let (mut a, mut b) = (unit.lane(), unit.lane());
        let first = phys(a.translate(RID, iova, Access::Write));
        assert_eq!(phys(b.translate(RID, iova + 8, Access::Write)), first + 8, "{kind:?}");
        assert_eq!(b.pending(), 1, "{kind:?}: the second lane's answer counts as a hit it folds in");
        assert_eq!(b.answers(RID, iova, Access::Write), Some(first), "{kind:?}: and is held by it");
        a.flush();
        b.flush();
        unit.with_model(|m, mem| {
            let mut hw = EmuPlatform::new(m, mem, &mut frames);
            driver.unmap(&mut hw, dom, iova, 4096).expect("unmap");
        });
        let faults = unit.with_model(|m, _| counters(m).1);
        assert!(matches!(b.translate(RID, iova, Access::Write), Translation::Fault(_)), "{kind:?}");
        assert!(matches!(a.translate(RID, iova, Access::Write), Translation::Fault(_)), "{kind:?}");
        assert_eq!(unit.with_model(|m, _| counters(m).1), faults + 2, "{kind:?}: both faults recorded");
    }
}
