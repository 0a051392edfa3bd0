//! The project's figures, each measured in the same run as its baseline: adoption at scale (against the
//! eager copy Linux does and against the floor of reading each live entry once), translation speed in the
//! models (against the same model with its caches off), and crash scenarios per second.

use std::time::Instant;

use iommu_driver::vtd::{self, Attachment, Vtd, VtdOptions};
use iommu_driver::{amdvi, smmuv3};
use iommu_driver::{BootEnv, Policy};
use iommu_emu::{
    Access, AmdviConfig, AmdviModel, EmuPlatform, FrameRegion, Iommu, PhysMemory, SharedUnit, Smmuv3Config,
    Smmuv3Model, Translation, VtdConfig, VtdModel,
};
use serde::Serialize;

use crate::scenario::{run, run_policies, Knobs, Scenario};
use crate::unit::{IommuKind, Unit};
use iommu_driver::{BootOptions, DeviceId, Perm};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
/// The frames the crash kernel's adoption allocates from (inside its crash region, as `env` names it).
const CRASH_FRAMES: std::ops::Range<u64> = 7 * GIB + 64 * MIB..8 * GIB;

/// The cost of a crash-kernel adoption of one unit with many live devices, next to its two baselines: the
/// eager copy of the old tables Linux makes (or made) before validating anything, and the floor of reading
/// each live entry once.
#[derive(Clone, Debug, Serialize)]
pub struct AdoptFigure {
    /// The IOMMU name.
    pub iommu: &'static str,
    /// Devices (VT-d, AMD-Vi) or stream IDs (SMMUv3) the primary kernel left attached to a domain, as the
    /// floor's read of the old tables found them live (not the number the machine was asked for).
    pub live_devices: u32,
    /// Of those, the devices the adoption kept translating through their old entries (VT-d and AMD-Vi: the report's
    /// adopted devices; SMMUv3: masters inserted with a live adopted STE). Below `live_devices`, the times are
    /// those of an adoption that refused some.
    pub adopted: u32,
    /// Nanoseconds of the project's adoption: `init_crash` under `adopt`, and on SMMUv3 inserting every
    /// master (median of 5).
    pub adopt_ns: u64,
    /// Bytes of new frames the adoption allocated (frames × 4 KiB).
    pub adopt_new_bytes: u64,
    /// Bytes of the crashed kernel's structures the adoption read.
    pub adopt_read_bytes: u64,
    /// Nanoseconds of the eager baseline (median of 5, each in a turn with an adoption): on VT-d our scan (which
    /// validates) and then a copy of every page it read, as Linux's `copy_translation_tables` copies every
    /// context table, with no install; on AMD-Vi a copy of the whole device table (`copy_device_table`); on
    /// SMMUv3 our scan of every STE of every valid level-2 table (which validates each live one), standing for
    /// mapping them all up front. The emulator shares a whole-page write equal to the page written just before,
    /// so copies of a run of alike pages (an AMD-Vi table of default entries) cost a compare, not a copy.
    pub eager_ns: u64,
    /// Bytes the eager baseline moved: on VT-d and AMD-Vi 8 KiB per 4 KiB page copied (read, then written),
    /// on SMMUv3 the level-1 table and 16 KiB (one level-2 table) per live stream, counted, not read: the
    /// machines here put each live stream in a level-2 table of its own.
    pub eager_bytes: u64,
    /// Nanoseconds to read each live context entry, DTE or STE once (median of 5): on VT-d and AMD-Vi our scan
    /// of the root and context tables or the device table (it checks each entry it reads); on SMMUv3 the STE of
    /// each master through its L1 descriptor, the StreamIDs known (no scan of the L1 table). Not comparable across
    /// IOMMUs; the pages floor is the like-for-like one.
    pub floor_ns: u64,
    /// Nanoseconds to read once what the adoption read of old memory (median of 5, each right after an adoption):
    /// the 64-byte lines it read, and whole each page it looked at in place (its tables and the page tables its walks
    /// follow), once however many frames memory lends that page for. What an adoption that must look at all of it
    /// cannot beat.
    pub pages_floor_ns: u64,
    /// Distinct pages the adoption read, in whole or in part.
    pub pages_read: u64,
    /// Adoption time over its pages floor: the median of five turns' ratios, each turn an adoption and right
    /// after it the floor.
    pub adopt_over_pages_floor: f64,
    /// Adoption time over the eager baseline's: the median of the same five turns' ratios.
    pub adopt_over_eager: f64,
}

/// A platform that records what an adoption reads of old memory: the 64-byte lines a `read` touches, and the whole
/// of a page memory lends (the adoption may look at any of it in place).
struct Recorder<'a, P> {
    inner: &'a mut P,
    /// Page number -> lines read, one bit a line (all ones: the whole page).
    lines: std::cell::RefCell<std::collections::BTreeMap<u64, u64>>,
}

impl<P: iommu_driver::Platform> iommu_driver::Mmio for Recorder<'_, P> {
    fn read32(&mut self, off: usize) -> u32 {
        self.inner.read32(off)
    }
    fn read64(&mut self, off: usize) -> u64 {
        self.inner.read64(off)
    }
    fn write32(&mut self, off: usize, val: u32) {
        self.inner.write32(off, val)
    }
    fn write64(&mut self, off: usize, val: u64) {
        self.inner.write64(off, val)
    }
    fn settled(&self) -> bool {
        self.inner.settled()
    }
}

impl<P: iommu_driver::Platform> iommu_driver::PhysMem for Recorder<'_, P> {
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), iommu_driver::MemError> {
        if let (false, Some(last)) = (buf.is_empty(), pa.checked_add(buf.len() as u64 - 1)) {
            let mut lines = self.lines.borrow_mut();
            for line in (pa >> 6)..=(last >> 6) {
                *lines.entry(line >> 6).or_default() |= 1 << (line & 63);
            }
        }
        self.inner.read(pa, buf)
    }
    fn lend_page(&self, pa: u64) -> Option<&[u8; 4096]> {
        let page = self.inner.lend_page(pa)?;
        self.lines.borrow_mut().insert(pa >> 12, u64::MAX);
        Some(page)
    }
    fn write(&mut self, pa: u64, data: &[u8]) -> Result<(), iommu_driver::MemError> {
        self.inner.write(pa, data)
    }
}

impl<P: iommu_driver::Platform> iommu_driver::FrameAlloc for Recorder<'_, P> {
    fn alloc_frame(&mut self) -> Option<u64> {
        self.inner.alloc_frame()
    }
    fn free_frame(&mut self, pa: u64) {
        self.inner.free_frame(pa)
    }
}

/// What `adopt` reads of old memory on a copy of the machine (it runs once, recorded, untimed): each page with the
/// lines read of it, less the pages the adoption allocated itself.
fn recorded_pages<M: Clone + iommu_emu::platform::MmioDevice>(
    mem0: &PhysMemory,
    unit0: &M,
    adopt: impl Fn(&mut Recorder<'_, EmuPlatform<'_, M>>),
) -> Vec<(u64, u64)> {
    let (mut mem, mut unit) = (mem0.clone(), unit0.clone());
    let mut frames = FrameRegion::new(CRASH_FRAMES);
    let mut hw = EmuPlatform::new(&mut unit, &mut mem, &mut frames);
    let mut rec = Recorder { inner: &mut hw, lines: Default::default() };
    adopt(&mut rec);
    rec.lines.into_inner().into_iter().filter(|(p, _)| !CRASH_FRAMES.contains(&(p << 12))).collect()
}

/// Nanoseconds to read once what the adoption read (`pages`, from [`recorded_pages`]) on a fresh copy of memory:
/// the pages floor. A page memory lends is read in place, every quadword of it, and once however many frames it is
/// lent for (memory that holds one page for a run of frames written alike, or never written, has that page's bytes
/// to read, and an adoption may recognise it); a page the adoption read only lines of is read only those lines.
fn read_once(mem0: &PhysMemory, pages: &[(u64, u64)]) -> u64 {
    let mem = mem0.clone();
    // Which whole pages repeat one lent page, decided before the clock starts: the floor times reads, not its own
    // bookkeeping. (A copy of memory lends the same pages as the original.)
    let mut seen = std::collections::HashSet::new();
    let pages: Vec<(u64, u64)> = pages
        .iter()
        .copied()
        .filter(|&(p, lines)| {
            lines != u64::MAX
                || iommu_driver::PhysMem::lend_page(&mem, p << 12)
                    .is_none_or(|page| seen.insert(page.as_ptr() as usize))
        })
        .collect();
    let mut line = [0u8; 64];
    let fold =
        |bytes: &[u8]| bytes.chunks_exact(8).fold(0, |a, w| a ^ u64::from_le_bytes(w.try_into().unwrap_or([0; 8])));
    time(|| {
        let mut sum = 0u64;
        for &(p, lines) in &pages {
            let lent = iommu_driver::PhysMem::lend_page(&mem, p << 12);
            match lent {
                Some(page) if lines == u64::MAX => sum ^= fold(page),
                // Only the lines read, found a set bit at a time (not by testing all 64: the floor's own loop).
                Some(page) => {
                    let mut left = lines;
                    while left != 0 {
                        let l = left.trailing_zeros() as usize;
                        left &= left - 1;
                        sum ^= fold(&page[64 * l..64 * l + 64]);
                    }
                }
                None => {
                    let mut left = lines;
                    while left != 0 {
                        let l = left.trailing_zeros() as u64;
                        left &= left - 1;
                        if iommu_driver::PhysMem::read(&mem, (p << 12) + 64 * l, &mut line).is_ok() {
                            sum ^= fold(&line);
                        }
                    }
                }
            }
        }
        std::hint::black_box(sum)
    })
    .1
}

/// An adoption timed in turns with its pages floor and its eager baseline.
struct Paired<T> {
    /// The last adoption's result.
    last: T,
    /// The median adoption time.
    ns: u64,
    /// The median floor time.
    floor_ns: u64,
    /// The median of each turn's adoption time over its floor time.
    ratio: f64,
    /// Bytes the last eager baseline moved.
    eager_bytes: u64,
    /// The median eager time.
    eager_ns: u64,
    /// The median of each turn's adoption time over its eager time.
    eager_ratio: f64,
}

/// Five turns of an adoption (`adopt`, timed on fresh copies of the machine), right after it the pages floor
/// (`floor`), then the eager baseline (`eager`: bytes moved and time). Ratios are taken turn by turn: the host's
/// pace, which can halve within seconds, moves a turn's parts alike, where medians of separate phases may each
/// come from a different minute.
fn paired<T>(
    mut adopt: impl FnMut() -> (T, u64),
    mut floor: impl FnMut() -> u64,
    mut eager: impl FnMut() -> (u64, u64),
) -> Paired<T> {
    let (mut times, mut floors, mut eagers, mut ratios, mut eager_ratios) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut last, mut eager_bytes) = (None, 0);
    for _ in 0..5 {
        let (r, t) = adopt();
        let f = floor();
        let (bytes, e) = eager();
        ratios.push(t as f64 / f.max(1) as f64);
        eager_ratios.push(t as f64 / e.max(1) as f64);
        times.push(t);
        floors.push(f);
        eagers.push(e);
        last = Some(r);
        eager_bytes = bytes;
    }
    times.sort_unstable();
    floors.sort_unstable();
    eagers.sort_unstable();
    Paired {
        last: last.expect("five turns"),
        ns: times[2],
        floor_ns: floors[2],
        ratio: middle(ratios),
        eager_bytes,
        eager_ns: eagers[2],
        eager_ratio: middle(eager_ratios),
    }
}

/// Translations per second through one model (`Iommu::translate`, reads of one device's 4096 mapped pages).
#[derive(Clone, Debug, Serialize)]
pub struct TranslateFigure {
    /// The IOMMU name.
    pub iommu: &'static str,
    /// The same IOVA every time: the IOTLB answers.
    pub iotlb_hit_per_s: f64,
    /// A pseudo-random page each time with caching off: a full table walk every translation.
    pub walk_per_s: f64,
    /// The DMA workload with locality, caches on.
    pub locality_per_s: f64,
    /// The same workload with every cache off (`set_caching(false)`: IOTLB, configuration and walk caches; a
    /// configuration fetch and a walk on every access, as OpenVMM's models do).
    pub no_iotlb_per_s: f64,
    /// 8-byte device reads (`dma_read`: translate, then copy from physical memory) with the locality
    /// workload's addresses, caches on.
    pub dma_read8_per_s: f64,
    /// The same reads as they were before the front cache and the fast path: `dma_read_reference` (a
    /// translation per page, the copy through the general `PhysMem::read`) with the model's front cache off, so
    /// each read asks the IOTLB and configuration caches.
    pub dma_read8_reference_per_s: f64,
    /// The locality workload through a [`SharedUnit`] on one thread with its own lane, caches on.
    pub shared_1_per_s: f64,
    /// The same on two threads, each with its own lane and the same requests: translations per second of both
    /// together (each thread's fixed count, timed from the start of both to their join).
    pub shared_2_per_s: f64,
    /// Two threads on the unit over one, the median of turns' ratios ([`SharedRates::two_over_one`]).
    pub shared_2_over_1: f64,
    /// Two threads each on its own copy of the unit over one ([`SharedRates::apart_over_one`]): what sharing
    /// nothing would gain.
    pub apart_2_over_1: f64,
    /// Two threads of throughput-bound arithmetic (no shared memory) against one, a turn right before each turn of
    /// the shared rows: whether two cores were free then. A host that runs both vCPUs on one core's hyperthreads,
    /// which no guest counter shows, gives about 1x here.
    pub arith_2_over_1: f64,
}

/// Whole crash scenarios (boot, workload, panic, crash boot, dump) run per second.
#[derive(Clone, Debug, Serialize)]
pub struct SimulateFigure {
    /// The IOMMU name.
    pub iommu: &'static str,
    /// Worker threads the scenarios were spread over.
    pub threads: u32,
    /// Scenarios completed per wall-clock second, the four policies in turn: the median of five batches of
    /// consecutive seeds, each timed.
    pub scenarios_per_s: f64,
    /// Over one thread: 1 for the one-thread figure; for two, the median of turns' ratios, each turn the same seeds
    /// on one thread then on two ([`simulate_pair`]).
    pub vs_one_thread: f64,
    /// Each seed's run up to the crash kernel's IOMMU init (the primary kernel, its workload, the panic)
    /// made once and shared by its four policies, as a campaign runs them (`run_policies`); otherwise every
    /// scenario runs from power-on.
    pub shared_crash: bool,
    /// Scenarios that ended before the crash (the primary kernel failed): short runs the rate counts too, so any
    /// here make it read faster than whole scenarios run. The default machine has none (tested).
    pub ended_before_crash: u64,
}

/// Whether an outcome is of a run that ended in the primary kernel, before any crash was staged.
fn ended_before_crash(o: &crate::outcome::Outcome) -> bool {
    use crate::outcome::Failure;
    matches!(
        o.failure.as_ref().and_then(|f| f.typed()),
        Some(Failure::PrimaryInit(_) | Failure::PrimarySetup(_) | Failure::PrimaryWorkload(_))
    )
}

/// Every figure of one benchmark run, as `handover bench` prints them.
#[derive(Clone, Debug, Serialize)]
pub struct Figures {
    /// What else used the machine's CPUs while the figures were taken (`None` where `/proc/stat` cannot be read).
    pub machine: Option<MachineShare>,
    /// How fast the host ran this process at the start and the end of the run (`None` when not measured).
    pub pace: Option<Pace>,
    /// Adoption at each size, per IOMMU.
    pub adopt: Vec<AdoptFigure>,
    /// Translation speed, one per IOMMU.
    pub translate: Vec<TranslateFigure>,
    /// Scenario throughput, per IOMMU on 1 and 2 threads.
    pub simulate: Vec<SimulateFigure>,
}

fn env() -> BootEnv {
    BootEnv {
        crash_kernel: true,
        ram: std::iter::once(0..8 * GIB).collect(),
        crash_region: Some(7 * GIB..8 * GIB),
        mem_encrypt: false,
        c_bit: 0,
    }
}

/// A VT-d machine whose primary kernel attached `devices` devices spread over all 256 buses, each in its
/// own domain with `pages` mapped pages; with the count of the driver's calls that failed building it (held at 0
/// for the bench's sizes by a test; the figures' live and adopted counts show what was built).
fn vtd_machine(devices: u32, pages: u32) -> (PhysMemory, VtdModel, u32) {
    let mut mem = PhysMemory::contiguous(0..8 * GIB);
    let mut unit = VtdModel::new(VtdConfig::legacy_only());
    let mut frames = FrameRegion::new(64 * MIB..2 * GIB);
    let mut hw = EmuPlatform::new(&mut unit, &mut mem, &mut frames);
    let Ok(mut v) = Vtd::init(&mut hw, VtdOptions { scalable: false, first_level: false }) else {
        return (mem, unit, 1);
    };
    let mut failed = 0;
    for i in 0..devices {
        // Bus i % 256, devfn spread so every bus is used before any doubles up.
        let sid = (((i % 256) << 8) | (((i / 256) * 8) % 256)) as u16;
        let Ok(d) = v.create_domain(&mut hw) else { return (mem, unit, failed + 1) };
        failed += v.attach(&mut hw, sid, Attachment::Domain(d)).is_err() as u32;
        for p in 0..pages {
            let pa = 4 * GIB + (i as u64 * pages as u64 + p as u64) * 4096;
            failed += v.map(&mut hw, d, pa, 4096, true, true).is_err() as u32;
        }
    }
    (mem, unit, failed)
}

fn time<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed().as_nanos() as u64)
}

/// The median of `n` timed runs of `f` on fresh copies of the machine, and the last result.
fn median<T>(n: usize, mut f: impl FnMut() -> (T, u64)) -> (T, u64) {
    let mut times = Vec::with_capacity(n);
    let mut last = None;
    for _ in 0..n.max(1) {
        let (r, t) = f();
        times.push(t);
        last = Some(r);
    }
    times.sort_unstable();
    (last.expect("n >= 1"), times[times.len() / 2])
}

/// Adoption of a VT-d unit with `devices` live devices.
pub fn adopt_vtd(devices: u32) -> AdoptFigure {
    let (mem0, unit0, _) = vtd_machine(devices, 4);
    let env = env();
    let pages = recorded_pages(&mem0, &unit0, |hw| {
        let _ = Vtd::init_crash(hw, &env, VtdOptions { scalable: false, first_level: false }, Policy::Adopt);
    });
    // The eager baseline: Linux's `copy_translation_tables` copies every context table of every present
    // root entry whole (4 KiB each) before validating anything; here our (validating) scan finds them, and no
    // install follows.
    let eager = || {
        let (mut mem, mut unit) = (mem0.clone(), unit0.clone());
        let mut frames = FrameRegion::new(CRASH_FRAMES);
        time(|| {
            let mut hw = EmuPlatform::new(&mut unit, &mut mem, &mut frames);
            let mut bytes = 0;
            if let Ok(scan) = vtd::scan(&mut hw, &env, Some(false)) {
                let mut page = [0u8; 4096];
                for &p in &scan.pages_read {
                    let Some(copy) = iommu_driver::FrameAlloc::alloc_frame(&mut hw) else { break };
                    let _ = iommu_driver::PhysMem::read(&hw, p, &mut page);
                    let _ = iommu_driver::PhysMem::write(&mut hw, copy, &page);
                    bytes += 8192;
                }
            }
            bytes
        })
    };
    // The project's adoption: validate the present entries and walk what they reach, copy a context table only
    // where an entry must change, install; in turns with its floor and the eager baseline.
    let adopt = paired(
        || {
            let (mut mem, mut unit) = (mem0.clone(), unit0.clone());
            let mut frames = FrameRegion::new(CRASH_FRAMES);
            let (r, t) = time(|| {
                Vtd::init_crash(
                    &mut EmuPlatform::new(&mut unit, &mut mem, &mut frames),
                    &env,
                    VtdOptions { scalable: false, first_level: false },
                    Policy::Adopt,
                )
            });
            let figures = r.map(|(_, rep)| (rep.frames_allocated * 4096, rep.bytes_read, rep.adopted.len()));
            (figures.unwrap_or((0, 0, 0)), t)
        },
        || read_once(&mem0, &pages),
        eager,
    );
    let (eager_bytes, eager_ns) = (adopt.eager_bytes, adopt.eager_ns);
    let (adopt_new_bytes, adopt_read_bytes, adopted) = adopt.last;
    // The floor: read each live context entry once, nothing else.
    let (live_devices, floor_ns) = median(5, || {
        let (mut mem, mut unit) = (mem0.clone(), unit0.clone());
        let mut frames = FrameRegion::new(0..0);
        time(|| {
            let mut hw = EmuPlatform::new(&mut unit, &mut mem, &mut frames);
            vtd::scan(&mut hw, &env, Some(false)).map(|s| s.devices.len()).unwrap_or(0)
        })
    });
    AdoptFigure {
        pages_floor_ns: adopt.floor_ns,
        pages_read: pages.len() as u64,
        adopt_over_pages_floor: adopt.ratio,
        adopt_over_eager: adopt.eager_ratio,
        iommu: "vtd",
        live_devices: live_devices as u32,
        adopted: adopted as u32,
        adopt_ns: adopt.ns,
        adopt_new_bytes,
        adopt_read_bytes,
        eager_ns,
        eager_bytes,
        floor_ns,
    }
}

/// An AMD-Vi machine (64K-entry device table) whose primary kernel attached `devices` devices, each in its own
/// domain with one mapped page; with the count of the driver's calls that failed building it.
fn amdvi_machine(devices: u32) -> (PhysMemory, AmdviModel, u32) {
    let mut mem = PhysMemory::contiguous(0..8 * GIB);
    let mut unit = AmdviModel::new(AmdviConfig::default());
    let mut failed = 0;
    {
        let mut frames = FrameRegion::new(64 * MIB..2 * GIB);
        let mut hw = EmuPlatform::new(&mut unit, &mut mem, &mut frames);
        let penv = BootEnv { crash_kernel: false, ..env() };
        let Ok(mut v) = amdvi::Amdvi::init(&mut hw, &penv, amdvi::AmdOptions::default()) else { return (mem, unit, 1) };
        for i in 0..devices {
            let devid = (i * 61 % 65536) as u16;
            let Ok(d) = v.create_domain(&mut hw) else { return (mem, unit, failed + 1) };
            failed += v.attach(&mut hw, devid, amdvi::Attachment::Domain(d)).is_err() as u32;
            failed += v.map(&mut hw, d, 4 * GIB + i as u64 * 4096, 4096, true, true).is_err() as u32;
        }
    }
    (mem, unit, failed)
}

/// Adoption of an AMD-Vi unit with a 64K-entry (2 MiB) device table and `devices` live devices. The project
/// reuses the table in place (Linux 6.18); the eager baseline copies all of it first (Linux before 6.18,
/// `copy_device_table`); the floor reads each live DTE once.
pub fn adopt_amdvi(devices: u32) -> AdoptFigure {
    let (mem0, unit0, _) = amdvi_machine(devices);
    let env = env();
    let pages = recorded_pages(&mem0, &unit0, |hw| {
        let _ = amdvi::Amdvi::init_crash(hw, &env, amdvi::AmdOptions::default(), Policy::Adopt);
    });
    let eager = || {
        let (mut mem, mut unit) = (mem0.clone(), unit0.clone());
        let mut frames = FrameRegion::new(CRASH_FRAMES);
        time(|| {
            let mut hw = EmuPlatform::new(&mut unit, &mut mem, &mut frames);
            let dt = iommu_spec::amdvi::DevTableBase::from_bits(iommu_driver::Mmio::read64(
                &mut hw,
                iommu_spec::amdvi::off::DEV_TABLE_BASE,
            ));
            let mut page = [0u8; 4096];
            let mut bytes = 0;
            for p in 0..dt.bytes() / 4096 {
                let Some(copy) = iommu_driver::FrameAlloc::alloc_frame(&mut hw) else { break };
                let _ = iommu_driver::PhysMem::read(&hw, dt.table() + p * 4096, &mut page);
                let _ = iommu_driver::PhysMem::write(&mut hw, copy, &page);
                bytes += 8192;
            }
            bytes
        })
    };
    let adopt = paired(
        || {
            let (mut mem, mut unit) = (mem0.clone(), unit0.clone());
            let mut frames = FrameRegion::new(CRASH_FRAMES);
            let opts = amdvi::AmdOptions::default();
            time(|| {
                amdvi::Amdvi::init_crash(
                    &mut EmuPlatform::new(&mut unit, &mut mem, &mut frames),
                    &env,
                    opts,
                    Policy::Adopt,
                )
                .map(|x| x.1)
            })
        },
        || read_once(&mem0, &pages),
        eager,
    );
    let (eager_bytes, eager_ns) = (adopt.eager_bytes, adopt.eager_ns);
    let (adopt_new_bytes, adopt_read_bytes, adopted) =
        adopt.last.map(|rep| (rep.frames_allocated * 4096, rep.bytes_read, rep.adopted.len())).unwrap_or((0, 0, 0));
    let (live_devices, floor_ns) = median(5, || {
        let (mut mem, mut unit) = (mem0.clone(), unit0.clone());
        let mut frames = FrameRegion::new(0..0);
        time(|| {
            let mut hw = EmuPlatform::new(&mut unit, &mut mem, &mut frames);
            amdvi::scan(&mut hw, &env, true).map(|s| s.devices.len()).unwrap_or(0)
        })
    });
    AdoptFigure {
        pages_floor_ns: adopt.floor_ns,
        pages_read: pages.len() as u64,
        adopt_over_pages_floor: adopt.ratio,
        adopt_over_eager: adopt.eager_ratio,
        iommu: "amdvi",
        live_devices: live_devices as u32,
        adopted: adopted as u32,
        adopt_ns: adopt.ns,
        adopt_new_bytes,
        adopt_read_bytes,
        eager_ns,
        eager_bytes,
        floor_ns,
    }
}

/// An SMMUv3 machine (SIDSIZE 32, 2-level stream table) whose primary kernel attached `devices` masters, each
/// alone in a level-2 table and in its own domain with `pages` mapped; with their StreamIDs and the count of the driver's calls that
/// failed building it.
fn smmuv3_machine(devices: u32, pages: u32) -> (PhysMemory, Smmuv3Model, Vec<u32>, u32) {
    let mut mem = PhysMemory::contiguous(0..8 * GIB);
    let mut unit = Smmuv3Model::new(Smmuv3Config { sidsize: 32, ..Smmuv3Config::default() });
    let mut failed = 0;
    // One master per level-2 table. Linux (`arm_smmu_init_strtab_2lvl`) and the driver cap the level-1 table at
    // 2^17 descriptors, so with SPLIT 8 only StreamIDs below 2^25 are reachable however large SIDSIZE is.
    let sids: Vec<u32> = (0..devices).map(|i| (i << smmuv3::SPLIT) + 0x10).collect();
    {
        let mut frames = FrameRegion::new(64 * MIB..2 * GIB);
        let mut hw = EmuPlatform::new(&mut unit, &mut mem, &mut frames);
        let Ok(mut v) = smmuv3::Smmuv3::init(&mut hw) else { return (mem, unit, sids, 1) };
        for (i, &sid) in sids.iter().enumerate() {
            let Ok(d) = v.create_domain(&mut hw) else { return (mem, unit, sids, failed + 1) };
            failed += v.attach(&mut hw, sid, smmuv3::Attachment::Domain(d)).is_err() as u32;
            // A live master has something mapped (with a page, its tables are four levels deep, a page each).
            for p in 0..pages as u64 {
                let pa = 4 * GIB + (i as u64 * pages as u64 + p) * 4096;
                failed += v.map(&mut hw, d, pa, 4096, true, true).is_err() as u32;
            }
        }
    }
    (mem, unit, sids, failed)
}

/// Adoption of an SMMUv3 with SIDSIZE 32 and a 2-level stream table with `devices` live masters spread over
/// as many L2 tables, each with a page mapped. The project maps the L1 table, then an L2 table when a master
/// behind it is inserted (SMMUv3 kdump series v6), and walks the master's page table; the eager baseline maps
/// every valid L2 table up front; the floor reads once what the adoption read.
pub fn adopt_smmuv3(devices: u32) -> AdoptFigure {
    adopt_smmuv3_mapping(devices, 1)
}

/// [`adopt_smmuv3`] with `pages` mapped for each master (0: every master's page table empty, the case where the
/// per-master bookkeeping weighs most against what the floor reads).
pub fn adopt_smmuv3_mapping(devices: u32, pages: u32) -> AdoptFigure {
    let (mem0, unit0, sids, _) = smmuv3_machine(devices, pages);
    let env = env();
    let pages = recorded_pages(&mem0, &unit0, |hw| {
        if let Ok((mut v, _)) = smmuv3::Smmuv3::init_crash(hw, &env, Policy::Adopt) {
            for &sid in &sids {
                let _ = v.insert_master(hw, &env, sid);
            }
        }
    });
    let eager = || {
        let (mut mem, mut unit) = (mem0.clone(), unit0.clone());
        let mut frames = FrameRegion::new(0..0);
        time(|| {
            let mut hw = EmuPlatform::new(&mut unit, &mut mem, &mut frames);
            let Ok(scan) = smmuv3::scan(&mut hw, &env) else { return 0 };
            // Every valid L2 table mapped (read whole) before any master is looked at.
            let cfg = iommu_spec::smmuv3::StrtabBaseCfg::from_bits(iommu_driver::Mmio::read32(
                &mut hw,
                iommu_spec::smmuv3::off::STRTAB_BASE_CFG,
            ));
            let l1 = (1u64 << (cfg.log2size() - cfg.split())) * 8;
            l1 + scan.streams.len() as u64 * (1 << cfg.split()) * 64
        })
    };
    let adopt = paired(
        || {
            let (mut mem, mut unit) = (mem0.clone(), unit0.clone());
            let mut frames = FrameRegion::new(CRASH_FRAMES);
            time(|| {
                let mut hw = EmuPlatform::new(&mut unit, &mut mem, &mut frames);
                let Ok((mut v, _)) = smmuv3::Smmuv3::init_crash(&mut hw, &env, Policy::Adopt) else {
                    return (0, 0, 0);
                };
                let mut adopted = 0;
                for &sid in &sids {
                    let state = v.insert_master(&mut hw, &env, sid);
                    adopted += matches!(state, Ok(Some(smmuv3::MasterState::Adopted { .. }))) as usize;
                }
                (v.frames_allocated * 4096, v.adopted_bytes + v.walked_bytes, adopted)
            })
        },
        || read_once(&mem0, &pages),
        eager,
    );
    let (eager_bytes, eager_ns) = (adopt.eager_bytes, adopt.eager_ns);
    let (adopt_new_bytes, adopt_read_bytes, adopted) = adopt.last;
    let (live_devices, floor_ns) = median(5, || {
        use iommu_driver::{Mmio, PhysMem};
        use iommu_spec::smmuv3::{off, L1Desc, Ste, StrtabBase, StrtabBaseCfg};
        let (mut mem, mut unit) = (mem0.clone(), unit0.clone());
        let mut none = FrameRegion::new(0..0);
        time(|| {
            let mut hw = EmuPlatform::new(&mut unit, &mut mem, &mut none);
            let base = StrtabBase::from_bits(hw.read64(off::STRTAB_BASE)).table();
            let split = StrtabBaseCfg::from_bits(hw.read32(off::STRTAB_BASE_CFG)).split() as u32;
            let mut ste = [0u8; 64];
            let mut live = 0usize;
            for &sid in &sids {
                let l1 = L1Desc::from_bits(hw.read_u64(base + 8 * (sid >> split) as u64).unwrap_or(0));
                let at = l1.l2_table() + 64 * (sid as u64 & ((1 << split) - 1));
                if l1.l2_table() != 0 && hw.read(at, &mut ste).is_ok() {
                    let words =
                        std::array::from_fn(|i| u64::from_le_bytes(ste[8 * i..8 * i + 8].try_into().unwrap_or([0; 8])));
                    let ste = Ste(words);
                    live += (ste.valid() && !ste.config().is_abort()) as usize;
                }
            }
            live
        })
    });
    AdoptFigure {
        pages_floor_ns: adopt.floor_ns,
        pages_read: pages.len() as u64,
        adopt_over_pages_floor: adopt.ratio,
        adopt_over_eager: adopt.eager_ratio,
        iommu: "smmuv3",
        live_devices: live_devices as u32,
        adopted: adopted as u32,
        adopt_ns: adopt.ns,
        adopt_new_bytes,
        adopt_read_bytes,
        eager_ns,
        eager_bytes,
        floor_ns,
    }
}

/// The translation figures' machine: `kind`'s model with one device (requester 0x10) in a domain of 4096 mapped
/// pages, built by the real driver, each page holding distinct bytes. Returns memory, unit, the lowest IOVA mapped
/// and the requester.
pub fn translate_rig(kind: IommuKind) -> (PhysMemory, Unit, u64, u32) {
    let mut mem = PhysMemory::contiguous(0..8 * GIB);
    let mut unit: Unit = iommu_emu::model(kind, false, true);
    let mut frames = FrameRegion::new(64 * MIB..2 * GIB);
    let rid = 0x10u32;
    let mut base = 0;
    {
        let mut hw = EmuPlatform::new(&mut unit, &mut mem, &mut frames);
        let penv = BootEnv { crash_kernel: false, ..env() };
        if let Ok(mut d) = iommu_driver::boot(kind, &mut hw, &penv, BootOptions::default()) {
            if let Ok(dom) = d.create_domain(&mut hw) {
                let _ = d.attach(&mut hw, DeviceId(rid), Attachment::Domain(dom));
                for p in 0..4096u64 {
                    if let Ok(iova) = d.map(&mut hw, dom, 4 * GIB + p * 4096, 4096, Perm::RW) {
                        base = iova;
                    }
                }
            }
        }
    }
    // IOVAs are handed out top-down: the last one mapped is the lowest of the 4096. Each page gets
    // distinct contents, so the reads copy real bytes rather than a never-written page's zeros.
    for p in 0..4096u64 {
        let _ = iommu_driver::PhysMem::write(&mut mem, 4 * GIB + p * 4096, &[p as u8 | 1; 4096]);
    }
    (mem, unit, base, rid)
}

/// What a device does with a translation: uses the address, in registers (a fault counts as 1). A `black_box` of
/// the whole `Translation` instead made each loop store it and reload it at another width, a failed
/// store-to-load forward that cost more than a hit itself (8.3-8.7 ns against 3.1 ns on one machine) and came and
/// went with how the compiler laid out each loop: one IOMMU's hits read half another's with the same work.
#[inline(always)]
pub fn used(t: iommu_emu::Translation) -> u64 {
    match t {
        iommu_emu::Translation::Ok { phys } => phys,
        iommu_emu::Translation::Fault(_) => 1,
    }
}

/// Translations per second through `kind`'s model: one device's domain with 4096 mapped pages, built by the
/// real driver ([`translate_rig`]).
pub fn translate(kind: IommuKind, ops: u64) -> TranslateFigure {
    let (mut mem, mut unit, base, rid) = translate_rig(kind);
    let mut sum = 0u64;
    let hit = rate(ops, |_| {
        sum = sum.wrapping_add(used(unit.translate(&mut mem, rid, std::hint::black_box(base), Access::Read)));
    });
    let local = |i: u64| base + ((i / 512) % 4096) * 4096 + (i % 512) * 8;
    let locality = rate(ops, |i| {
        sum = sum.wrapping_add(used(unit.translate(&mut mem, rid, local(i), Access::Read)));
    });
    let dma_read8 = rate(ops, |i| {
        let mut buf = [0u8; 8];
        let _ = iommu_emu::dma_read(&mut unit, &mut mem, rid, local(i), &mut buf);
        sum = sum.wrapping_add(u64::from_le_bytes(buf));
    });
    unit.set_front_cache(false);
    let dma_read8_reference = rate(ops, |i| {
        let mut buf = [0u8; 8];
        let _ = iommu_emu::dma::dma_read_reference(&mut unit, &mut mem, rid, local(i), &mut buf);
        sum = sum.wrapping_add(u64::from_le_bytes(buf));
    });
    unit.set_front_cache(true);
    unit.set_caching(false);
    let walk = rate(ops, |i| {
        let iova = base + (i.wrapping_mul(2654435761) % 4096) * 4096;
        sum = sum.wrapping_add(used(unit.translate(&mut mem, rid, iova, Access::Read)));
    });
    let no_iotlb = rate(ops, |i| {
        sum = sum.wrapping_add(used(unit.translate(&mut mem, rid, local(i), Access::Read)));
    });
    std::hint::black_box(sum);
    unit.set_caching(true);
    // Five times the requests of a row above per thread and run: a run of a few milliseconds is at the mercy
    // of when each thread gets its core.
    let twin = SharedUnit::new(unit.clone(), mem.snapshot());
    let shared = shared_rates(&SharedUnit::new(unit, mem), &twin, rid, 5 * ops, local);
    TranslateFigure {
        iommu: kind.name(),
        iotlb_hit_per_s: hit,
        walk_per_s: walk,
        locality_per_s: locality,
        no_iotlb_per_s: no_iotlb,
        dma_read8_per_s: dma_read8,
        dma_read8_reference_per_s: dma_read8_reference,
        shared_1_per_s: shared.one,
        shared_2_per_s: shared.two,
        shared_2_over_1: shared.two_over_one,
        apart_2_over_1: shared.apart_over_one,
        arith_2_over_1: shared.arith_2_over_1,
    }
}

/// Work done per second by one or two threads each running the same register-only loop (no memory shared):
/// 128 independent multiply chains (scalar or vector, as the target allows), so a thread keeps a core's
/// multipliers busy every cycle: two threads on the two hyperthreads of one host core (which no guest counter
/// shows) get about 1x, on two cores 2x.
fn arith_rate(threads: usize) -> f64 {
    const STEPS: u64 = 1_000_000;
    let spin = || {
        let mut x: [u64; 128] = std::array::from_fn(|i| i as u64);
        for i in 0..STEPS {
            for v in &mut x {
                *v = v.wrapping_mul(6364136223846793005).wrapping_add(i);
            }
        }
        std::hint::black_box(x)
    };
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(spin);
        }
    });
    (threads as u64 * STEPS) as f64 / t.elapsed().as_secs_f64()
}

/// The shared unit's rates with two ceilings measured in the same minutes.
#[derive(Clone, Copy, Debug)]
pub struct SharedRates {
    /// Translations per second on one thread: the median over the turns of each turn's two one-thread runs'
    /// mean.
    pub one: f64,
    /// Translations per second of two threads together on the unit, the median over the turns.
    pub two: f64,
    /// Two threads on the unit over one thread, the median of the turns' ratios (each turn's runs are adjacent,
    /// so a turn sees one machine; a ratio of medians would set one turn's one thread against another's two).
    pub two_over_one: f64,
    /// Two threads each on a unit of its own (a copy: nothing written is shared) over one thread, the median of
    /// the turns' ratios: what two threads of this very work gain on this machine then, sharing nothing.
    pub apart_over_one: f64,
    /// Two threads of register-only work over one, the median of the turns taken right before each of the shared
    /// unit's: whether two cores were free then.
    pub arith_2_over_1: f64,
}

/// Translations per second of `lanes.len()` threads, each with its own lane on its unit, each `ops` requests
/// `iova(i)` from `rid` (thread `t` starting 256 requests further along than thread `t - 1`), timed after a
/// warm-up of a tenth of them.
fn lanes_rate(units: &[&SharedUnit], rid: u32, ops: u64, iova: &(impl Fn(u64) -> u64 + Sync)) -> f64 {
    let ready = std::sync::Barrier::new(units.len() + 1);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0u64..)
            .zip(units)
            .map(|(t, &unit)| {
                // Half a page of requests further along than the thread before: two devices' DMA is not in lockstep,
                // so their once-a-page misses do not meet at the lock every time.
                let ready = &ready;
                let iova = move |i: u64| iova(i + t * 256);
                s.spawn(move || {
                    let mut lane = unit.lane();
                    let mut ok = 0u64;
                    let mut pass = |lane: &mut iommu_emu::Lane<'_>, n: u64| {
                        for i in 0..n {
                            ok += matches!(lane.translate(rid, iova(i), Access::Read), Translation::Ok { .. }) as u64;
                        }
                    };
                    pass(&mut lane, ops / 10);
                    ready.wait();
                    pass(&mut lane, ops);
                    std::hint::black_box(ok);
                    // The lane's hits reach the model's counters after the clock stops.
                    lane
                })
            })
            .collect();
        ready.wait();
        let t = Instant::now();
        let lanes: Vec<_> = hs.into_iter().filter_map(|h| h.join().ok()).collect();
        let rate = (units.len() as u64 * ops) as f64 / t.elapsed().as_secs_f64();
        drop(lanes);
        rate
    })
}

/// Translations per second through `unit` on one thread and on two (each its own lane, each `ops` requests
/// `iova(i)` from `rid`), with `twin` (a copy of `unit` in a copy of its memory) for the two threads sharing
/// nothing: five turns, each the arithmetic on one thread then two, then one thread, two on `unit`, one on each
/// unit, one thread again, so each turn's ratios compare runs of the same minute.
pub fn shared_rates(
    unit: &SharedUnit,
    twin: &SharedUnit,
    rid: u32,
    ops: u64,
    iova: impl Fn(u64) -> u64 + Sync,
) -> SharedRates {
    let (mut one, mut two, mut ratio, mut apart, mut arith) = (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..5 {
        let a1 = arith_rate(1);
        arith.push(arith_rate(2) / a1);
        let first = lanes_rate(&[unit], rid, ops, &iova);
        let shared = lanes_rate(&[unit, unit], rid, ops, &iova);
        let alone = lanes_rate(&[unit, twin], rid, ops, &iova);
        let single = (first + lanes_rate(&[unit], rid, ops, &iova)) / 2.0;
        one.push(single);
        two.push(shared);
        ratio.push(shared / single);
        apart.push(alone / single);
    }
    SharedRates {
        one: middle(one),
        two: middle(two),
        two_over_one: middle(ratio),
        apart_over_one: middle(apart),
        arith_2_over_1: middle(arith),
    }
}

/// Operations per second of `op(i)` for `i` in `0..ops`: the median of five batches of a fifth each, so a
/// batch slowed by another job on the machine does not set the figure.
fn rate(ops: u64, mut op: impl FnMut(u64)) -> f64 {
    let batch = (ops / 5).max(1);
    middle(
        (0..5)
            .map(|b| {
                let t = Instant::now();
                for i in b * batch..(b + 1) * batch {
                    op(i);
                }
                batch as f64 / t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// Crash scenarios per second on the default machine with `kind`, on `threads` threads (independent seeds);
/// with `shared_crash`, each seed's four policies share the run up to the crash kernel's IOMMU init. The median of
/// five timed batches of consecutive seeds, so a second in which the host ran this process slow does not set it.
pub fn simulate(kind: IommuKind, scenarios: u64, threads: u32, shared_crash: bool) -> SimulateFigure {
    let batches = Batches::new(kind, scenarios, shared_crash);
    let rate = middle((0..5).map(|b| batches.rate(b, threads)).collect());
    batches.figure(threads, rate, 1.0)
}

/// [`simulate`] on one thread and on two, in turns: each turn times a batch of seeds on one thread, then the same
/// seeds on two, and the two-thread figure's `vs_one_thread` is the median of the turns' ratios (two figures
/// timed apart would set a slow minute of one against a fast minute of the other).
pub fn simulate_pair(kind: IommuKind, scenarios: u64, shared_crash: bool) -> [SimulateFigure; 2] {
    let batches = Batches::new(kind, scenarios, shared_crash);
    let turns: Vec<(f64, f64)> = (0..5).map(|b| (batches.rate(b, 1), batches.rate(b, 2))).collect();
    let (one, two, ratio) = paired_rates(&turns);
    [batches.figure(1, one, 1.0), batches.figure(2, two, ratio)]
}

/// From turns of (one-thread rate, two-thread rate): the median of each, and the median of the turns' ratios.
fn paired_rates(turns: &[(f64, f64)]) -> (f64, f64, f64) {
    (
        middle(turns.iter().map(|t| t.0).collect()),
        middle(turns.iter().map(|t| t.1).collect()),
        middle(turns.iter().map(|t| t.1 / t.0).collect()),
    )
}

/// The median of figures (the upper one of an even count; 0 for none).
fn middle(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Five batches of consecutive seeds for the scenario figures, and the count of runs that ended before the crash,
/// apart for one thread and for more (each figure counts the runs it timed).
struct Batches {
    kind: IommuKind,
    knobs: Knobs,
    shared_crash: bool,
    per_seed: u64,
    batch: u64,
    short: [std::sync::atomic::AtomicU64; 2],
}

impl Batches {
    fn new(kind: IommuKind, scenarios: u64, shared_crash: bool) -> Self {
        let per_seed = if shared_crash { Policy::ALL.len() as u64 } else { 1 };
        let batch = scenarios.div_ceil(per_seed).div_ceil(5).max(1);
        let knobs = Knobs { iommu: kind, ..Knobs::default() };
        let short = [std::sync::atomic::AtomicU64::new(0), std::sync::atomic::AtomicU64::new(0)];
        Batches { kind, knobs, shared_crash, per_seed, batch, short }
    }

    /// Scenarios per second over batch `b`'s seeds spread over `threads` threads.
    fn rate(&self, b: u64, threads: u32) -> f64 {
        let first = b * self.batch;
        let (knobs, shared, batch) = (self.knobs, self.shared_crash, self.batch);
        let short = &self.short[usize::from(threads > 1)];
        let t = Instant::now();
        std::thread::scope(|s| {
            for th in 0..threads as u64 {
                s.spawn(move || {
                    for seed in (first + th..first + batch).step_by(threads as usize) {
                        let n = if shared {
                            let s = Scenario { policy: Policy::ALL[0], seed, knobs };
                            run_policies(&s, &Policy::ALL).iter().filter(|o| ended_before_crash(o)).count()
                        } else {
                            let s = Scenario { policy: Policy::ALL[(seed % 4) as usize], seed, knobs };
                            ended_before_crash(&run(&s).0) as usize
                        };
                        short.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                });
            }
        });
        (batch * self.per_seed) as f64 / t.elapsed().as_secs_f64()
    }

    fn figure(&self, threads: u32, scenarios_per_s: f64, vs_one_thread: f64) -> SimulateFigure {
        SimulateFigure {
            iommu: self.kind.name(),
            threads,
            scenarios_per_s,
            vs_one_thread,
            shared_crash: self.shared_crash,
            ended_before_crash: self.short[usize::from(threads > 1)].load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

fn adopt_all(quick: bool) -> Vec<AdoptFigure> {
    let sizes: &[u32] = if quick { &[100, 1000] } else { &[100, 1000, 4000] };
    sizes
        .iter()
        .map(|&n| adopt_vtd(n))
        .chain(sizes.iter().map(|&n| adopt_amdvi(n)))
        .chain(sizes.iter().map(|&n| adopt_smmuv3(n)))
        .collect()
}

/// The adoption figures alone (for profiling them); the other lists are empty.
pub fn adopt_only(quick: bool) -> Figures {
    let start = CpuTicks::now();
    let adopt = adopt_all(quick);
    Figures { machine: MachineShare::since(start), pace: None, adopt, translate: Vec::new(), simulate: Vec::new() }
}

/// One thread of register-only arithmetic (the loop of the translation table's arithmetic column), in steps per
/// second, at the start and at the end of a run: the host's pace in those minutes, which moves every figure with
/// it (a vCPU on a host core shared with other guests runs slower without any steal time showing). Runs compare
/// only at a like pace.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Pace {
    /// Before the first figure.
    pub start: f64,
    /// After the last.
    pub end: f64,
}

/// Shares of the machine's CPU time, over all its CPUs, while the bench ran: timings are only comparable when
/// the bench had the CPUs to itself. On a virtual machine the host may run other guests on the same cores
/// (steal time), which no process list here shows.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct MachineShare {
    /// Percent of the CPUs' time the host gave to others (the `steal` column of `/proc/stat`).
    pub stolen_pct: f64,
    /// Percent of the CPUs' time other processes of this machine ran (busy time less this process's own).
    pub others_pct: f64,
}

/// Clock ticks from `/proc/stat` (all CPUs) and `/proc/self/stat`.
#[derive(Clone, Copy, Debug)]
struct CpuTicks {
    total: u64,
    busy: u64,
    steal: u64,
    own: u64,
}

impl CpuTicks {
    fn now() -> Option<CpuTicks> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> =
            stat.lines().next()?.strip_prefix("cpu ")?.split_whitespace().filter_map(|v| v.parse().ok()).collect();
        // user nice system idle iowait irq softirq steal (guest time is counted in user already).
        let col = |i: usize| cpu.get(i).copied().unwrap_or(0);
        let own_stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces), from field 3 on: utime and stime are 14 and 15.
        let rest: Vec<&str> = own_stat.rsplit_once(')')?.1.split_whitespace().collect();
        let own = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
        Some(CpuTicks {
            total: (0..8).map(col).sum(),
            busy: col(0) + col(1) + col(2) + col(5) + col(6),
            steal: col(7),
            own,
        })
    }
}

impl MachineShare {
    fn since(start: Option<CpuTicks>) -> Option<MachineShare> {
        let (a, b) = (start?, CpuTicks::now()?);
        let total = b.total.checked_sub(a.total).filter(|&t| t > 0)? as f64;
        let busy = b.busy.saturating_sub(a.busy);
        let own = b.own.saturating_sub(a.own);
        Some(MachineShare {
            stolen_pct: 100.0 * b.steal.saturating_sub(a.steal) as f64 / total,
            others_pct: 100.0 * busy.saturating_sub(own) as f64 / total,
        })
    }
}

/// Every figure; `quick` keeps it under a minute.
pub fn all(quick: bool) -> Figures {
    let ops = if quick { 2_000_000 } else { 20_000_000 };
    let scenarios = if quick { 200 } else { 2000 };
    let start = CpuTicks::now();
    let pace_start = arith_rate(1);
    let mut f = Figures {
        machine: None,
        pace: None,
        adopt: adopt_all(quick),
        translate: IommuKind::ALL.iter().map(|&k| translate(k, ops)).collect(),
        simulate: IommuKind::ALL
            .iter()
            .flat_map(|&k| [false, true].map(move |sh| simulate_pair(k, scenarios, sh)))
            .flatten()
            .collect(),
    };
    f.pace = Some(Pace { start: pace_start, end: arith_rate(1) });
    f.machine = MachineShare::since(start);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn the_machine_share_is_read_and_counts_this_process_apart() {
        let start = CpuTicks::now().expect("/proc/stat and /proc/self/stat");
        // Busy for a while on this thread: whatever it used is this process's, not "others".
        let t = Instant::now();
        let mut x = 1u64;
        while t.elapsed().as_millis() < 300 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let end = CpuTicks::now().expect("read again");
        assert!(end.own > start.own, "this process's own ticks grew");
        let m = MachineShare::since(Some(start)).expect("ticks passed");
        assert!((0.0..=100.0).contains(&m.stolen_pct) && (0.0..=100.0).contains(&m.others_pct), "{m:?}");
    }

    /// The adoption rows name the live devices the old tables hold: each machine, at the bench's largest size,
    /// must be built without a failed driver call and have attached every device it was asked for (SMMUv3 StreamIDs spaced beyond the 2^25 a 2-level
    /// stream table reaches stopped at 512).
    #[test]
    fn every_adoption_machine_leaves_as_many_live_devices_as_it_was_asked_for() {
        const N: u32 = 4000;
        let env = env();
        let (mut mem, mut unit, failed) = vtd_machine(N, 4);
        assert_eq!(failed, 0, "VT-d calls failed");
        let mut none = FrameRegion::new(0..0);
        let scan = vtd::scan(&mut EmuPlatform::new(&mut unit, &mut mem, &mut none), &env, Some(false));
        assert_eq!(scan.map(|s| s.devices.len()).ok(), Some(N as usize), "VT-d");
        let (mut mem, mut unit, failed) = amdvi_machine(N);
        assert_eq!(failed, 0, "AMD-Vi calls failed");
        let scan = amdvi::scan(&mut EmuPlatform::new(&mut unit, &mut mem, &mut none), &env, true);
        assert_eq!(scan.map(|s| s.devices.len()).ok(), Some(N as usize), "AMD-Vi");
        let (mut mem, mut unit, sids, failed) = smmuv3_machine(N, 1);
        assert_eq!(failed, 0, "SMMUv3 calls failed");
        let scan = smmuv3::scan(&mut EmuPlatform::new(&mut unit, &mut mem, &mut none), &env);
        let live: Vec<u32> = scan
            .map(|s| s.streams.iter().filter(|x| x.ste.valid() && !x.ste.config().is_abort()).map(|x| x.sid).collect())
            .unwrap();
        assert_eq!(live, sids, "SMMUv3");
    }

    /// The adoption's ratio to its floor is taken within each turn: a turn where the host ran slow moves both of
    /// its halves, and must not pair a slow adoption with a fast floor from another turn.
    #[test]
    fn the_adoption_ratio_is_the_median_of_each_turns_ratio_not_a_ratio_of_medians() {
        let adopt = [100, 10, 10, 10, 100];
        let floor = [50, 5, 50, 50, 5];
        let eager = [200, 5, 50, 50, 5];
        let (mut a, mut f, mut e) = (adopt.iter(), floor.iter(), eager.iter());
        let p = paired(|| ((), *a.next().unwrap()), || *f.next().unwrap(), || (7, *e.next().unwrap()));
        // Turns' ratios 2, 2, 0.2, 0.2, 20: median 2. Medians apart would give 10 / 50.
        assert_eq!((p.ns, p.floor_ns, p.ratio), (10, 50, 2.0));
        // Against eager: 0.5, 2, 0.2, 0.2, 20: median 0.5. Medians apart would give 10 / 50.
        assert_eq!((p.eager_ns, p.eager_ratio, p.eager_bytes), (50, 0.5, 7));
    }

    /// An adoption row times the adoption of every live device: one that refused some would be faster for it.
    #[test]
    fn every_adoption_row_adopts_every_live_device() {
        for f in [adopt_vtd(1000), adopt_amdvi(1000), adopt_smmuv3(1000)] {
            assert_eq!((f.live_devices, f.adopted), (1000, 1000), "{}", f.iommu);
        }
    }

    /// The two-thread scenario figure's ratio is taken within each turn (the same seeds on one thread, then on
    /// two), not between medians from separate turns.
    #[test]
    fn the_two_thread_scenario_ratio_is_the_median_of_each_turns_ratio() {
        // Two minutes of a slow host and two of a fast one, and a turn whose two-thread half caught the fast one:
        // turns' ratios 1.9, 1.9, 2, 2, 8, median 2; the medians apart, 800 / 100, would say 8.
        let turns = [(100.0, 190.0), (100.0, 190.0), (400.0, 800.0), (400.0, 800.0), (100.0, 800.0)];
        assert_eq!(paired_rates(&turns), (100.0, 800.0, 2.0));
    }

    /// Each SMMUv3 master of the adoption rows has a page mapped, as a device doing DMA does: its insertion walks
    /// four tables of its own (levels 0-3 of a 48-bit stage-1 walk), not one empty root table.
    #[test]
    fn every_smmuv3_master_of_the_adoption_rows_walks_four_tables_of_its_own() {
        const N: u32 = 100;
        let (mem0, unit0, sids, failed) = smmuv3_machine(N, 1);
        assert_eq!(failed, 0);
        let (mut mem, mut unit) = (mem0.clone(), unit0.clone());
        let mut frames = FrameRegion::new(CRASH_FRAMES);
        let mut hw = EmuPlatform::new(&mut unit, &mut mem, &mut frames);
        let env = env();
        let (mut v, _) = smmuv3::Smmuv3::init_crash(&mut hw, &env, Policy::Adopt).expect("adoptable");
        for &sid in &sids {
            assert!(matches!(v.insert_master(&mut hw, &env, sid), Ok(Some(smmuv3::MasterState::Adopted { .. }))));
        }
        assert_eq!(v.walked_bytes, N as u64 * 4 * 4096);
    }

    /// The translation figures' domain maps 4096 pages at consecutive IOVAs from the rig's lowest one, each to
    /// its own frame: a map that failed would leave the workloads timing faults.
    #[test]
    fn the_translation_rig_maps_4096_consecutive_pages_each_to_its_own_frame() {
        for kind in IommuKind::ALL {
            let (mut mem, mut unit, base, rid) = translate_rig(kind);
            let mut frames = std::collections::BTreeSet::new();
            for p in 0..4096u64 {
                match unit.translate(&mut mem, rid, base + p * 4096, Access::Read) {
                    iommu_emu::Translation::Ok { phys } => {
                        assert!((4 * GIB..4 * GIB + 4096 * 4096).contains(&phys), "{kind:?} page {p}: {phys:#x}");
                        frames.insert(phys);
                    }
                    other => panic!("{kind:?} page {p}: {other:?}"),
                }
            }
            assert_eq!(frames.len(), 4096, "{kind:?}");
        }
    }

    /// The pages floor reads what the adoption read: the lines of a `read`, a lent page whole.
    #[test]
    fn the_recorder_notes_the_lines_a_read_touches_and_a_lent_page_whole() {
        use iommu_driver::PhysMem;
        let mut mem = PhysMemory::contiguous(0..GIB);
        let _ = mem.write(0x3000, &[1; 4096]);
        let mut unit = VtdModel::new(VtdConfig::legacy_only());
        let mut frames = FrameRegion::new(0..0);
        let mut hw = EmuPlatform::new(&mut unit, &mut mem, &mut frames);
        let rec = Recorder { inner: &mut hw, lines: Default::default() };
        let mut b = [0u8; 16];
        rec.read(0x1040, &mut b[..8]).unwrap();
        rec.read(0x1ff8, &mut b).unwrap();
        assert!(rec.lend_page(0x3000).is_some());
        let lines: Vec<(u64, u64)> = rec.lines.into_inner().into_iter().collect();
        assert_eq!(lines, [(1, 1 << 1 | 1 << 63), (2, 1), (3, u64::MAX)]);
    }

    /// The scenario rate counts whole scenarios: on the bench's machine none ends in the primary kernel (such a
    /// run is short, and a regression that made them would read as a speed-up).
    #[test]
    fn the_bench_machines_scenarios_all_reach_the_crash() {
        for kind in IommuKind::ALL {
            let f = simulate(kind, 40, 2, true);
            assert_eq!(f.ended_before_crash, 0, "{kind:?}");
            let f = simulate(kind, 10, 1, false);
            assert_eq!(f.ended_before_crash, 0, "{kind:?}");
        }
    }
}
