//! One crash scenario: primary boot and workload, the panic with DMA in flight, the crash kernel's boot
//! under a policy, the capture, and what changed.

use std::collections::BTreeSet;

use iommu_driver::vtd::{Attachment, HandoverOutcome, Vtd, VtdOptions};
use iommu_driver::Policy;
use iommu_emu::{Access, PhysMemory};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::device::{Burst, Role};
use crate::machine::{Machine, MachineConfig};
use crate::outcome::{DmaCounts, Outcome};

/// Platform knobs and phase lengths (ticks of the virtual clock; one tick = one burst per device).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Knobs {
    /// A blocked DMA raises a fatal error (PCIe completion timeout → AER → panic) instead of being dropped.
    pub aborts_fatal: bool,
    pub scalable: bool,
    /// From the panic to the crash kernel's IOMMU init (purgatory, early boot).
    pub early_ticks: u64,
    /// From IOMMU init to the probe of the devices the dump needs.
    pub probe_ticks: u64,
    /// Writing the dump.
    pub capture_ticks: u64,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs { aborts_fatal: true, scalable: false, early_ticks: 40, probe_ticks: 80, capture_ticks: 80 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scenario {
    pub policy: Policy,
    pub seed: u64,
    pub knobs: Knobs,
}

/// One line of a run's timeline.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TraceEvent {
    pub tick: u64,
    pub what: String,
}

/// Buffers per device ring.
const RING: usize = 8;

struct Run {
    m: Machine,
    rng: ChaCha8Rng,
    tick: u64,
    trace: Vec<TraceEvent>,
    /// Physical pages the devices were given as buffers (old memory: expected to change).
    buffer_pages: BTreeSet<u64>,
    /// Pages of the crash region the crash kernel itself handed to devices.
    crash_buffers: BTreeSet<u64>,
    crash_hits: BTreeSet<u64>,
    dma: DmaCounts,
    counting: bool,
    fatal: Option<String>,
    scratch_page: Option<u64>,
    after_init: bool,
    old_writes_after_init: u64,
}

impl Run {
    fn log(&mut self, what: String) {
        self.trace.push(TraceEvent { tick: self.tick, what });
    }

    fn translating(&mut self) -> bool {
        use iommu_emu::MmioDevice;
        let gsts = self.m.vtd.mmio_read(&mut self.m.mem, iommu_spec::vtd::off::GSTS, 4) as u32;
        iommu_spec::vtd::Gsts::from_bits(gsts).tes()
    }

    /// Every running device does one burst.
    fn step(&mut self, aborts_fatal: bool) {
        let on = self.translating();
        for i in 0..self.m.devices.len() {
            let (dev, vtd, mem) = (&mut self.m.devices[i], &mut self.m.vtd, &mut self.m.mem);
            let r = dev.step(vtd, mem, self.tick);
            if !self.counting {
                continue;
            }
            match r {
                Burst::Idle => {}
                Burst::Done { phys, .. } => {
                    let page = phys & !0xfff;
                    if Some(page) == self.scratch_page {
                        self.dma.redirected += 1;
                    } else if on {
                        self.dma.translated += 1;
                    } else {
                        self.dma.untranslated += 1;
                    }
                    let in_crash_region = self.m.cfg.crash_region.contains(&phys);
                    if dev.access == Access::Write && in_crash_region && !self.crash_buffers.contains(&page) {
                        self.crash_hits.insert(page);
                    }
                    if dev.access == Access::Write && !in_crash_region && self.after_init {
                        self.old_writes_after_init += 1;
                    }
                }
                Burst::Faulted { iova } => {
                    if aborts_fatal {
                        self.dma.aborted += 1;
                        if self.fatal.is_none() {
                            let name = dev.name;
                            self.fatal = Some(format!("fatal DMA abort: {name} at IOVA {iova:#x} (AER, second panic)"));
                        }
                    } else {
                        self.dma.faulted += 1;
                    }
                }
            }
        }
        self.tick += 1;
    }

    fn page_in_pool(&mut self, pool: std::ops::Range<u64>) -> u64 {
        let pages = (pool.end - pool.start) / 4096;
        pool.start + self.rng.random_range(0..pages) * 4096
    }
}

/// Run one scenario on the built-in VT-d machine.
pub fn run(s: &Scenario) -> (Outcome, Vec<TraceEvent>) {
    let mut cfg = MachineConfig::default_vtd();
    cfg.scalable = s.knobs.scalable;
    run_on(cfg, s)
}

pub fn run_on(cfg: MachineConfig, s: &Scenario) -> (Outcome, Vec<TraceEvent>) {
    let opts = VtdOptions { scalable: cfg.scalable };
    let mut r = Run {
        m: Machine::new(cfg),
        rng: ChaCha8Rng::seed_from_u64(s.seed),
        tick: 0,
        trace: Vec::new(),
        buffer_pages: BTreeSet::new(),
        crash_buffers: BTreeSet::new(),
        crash_hits: BTreeSet::new(),
        dma: DmaCounts::default(),
        counting: false,
        fatal: None,
        scratch_page: None,
        after_init: false,
        old_writes_after_init: 0,
    };
    let mut out = Outcome {
        iommu: "vtd",
        policy: s.policy.name().to_string(),
        seed: s.seed,
        crash_tick: 0,
        captured: false,
        failure: None,
        iommu_init: String::new(),
        dma: DmaCounts::default(),
        changed_pages: Default::default(),
        old_memory_writes_after_init: 0,
        crashkernel_pages_written: 0,
        adopted_devices: 0,
        refused_entries: Vec::new(),
        adopt_ns: 0,
        adopt_bytes: 0,
        init_frames: 0,
        init_bytes_read: 0,
        scratch_frames: 0,
        usable_devices: Vec::new(),
        vmcore_intact: false,
    };

    // Primary kernel: normal boot, a domain per translated device, the bulk engine in pass-through.
    let pool = r.m.cfg.buffer_pool.clone();
    let holes = [r.m.cfg.pci_hole.clone()];
    let mut drv = match Vtd::init(&mut r.m.primary(), opts) {
        Ok(mut d) => {
            d.reserve_iova_holes(&holes);
            d
        }
        Err(e) => {
            out.failure = Some(format!("primary kernel IOMMU init failed: {e}"));
            return (out, r.trace);
        }
    };
    let mut domains = Vec::new();
    for i in 0..r.m.devices.len() {
        let (sid, role) = (r.m.devices[i].sid, r.m.devices[i].role);
        let mut ring = Vec::new();
        let mut phys = Vec::new();
        for _ in 0..RING {
            phys.push(r.page_in_pool(pool.clone()));
        }
        let res: Result<Option<iommu_driver::vtd::DomainId>, iommu_driver::vtd::VtdError> = (|| {
            let mut hw = r.m.primary();
            if role == Role::Bulk {
                drv.attach(&mut hw, sid, Attachment::PassThrough)?;
                ring.extend(phys.iter().copied());
                Ok(None)
            } else {
                let d = drv.create_domain(&mut hw)?;
                drv.attach(&mut hw, sid, Attachment::Domain(d))?;
                for &p in &phys {
                    ring.push(drv.map(&mut hw, d, p, 4096, true, true)?);
                }
                Ok(Some(d))
            }
        })();
        match res {
            Ok(d) => domains.push(d),
            Err(e) => {
                out.failure = Some(format!("primary kernel setup of {sid:#06x} failed: {e}"));
                return (out, r.trace);
            }
        }
        r.buffer_pages.extend(phys.iter().copied());
        r.m.devices[i].start(ring);
    }
    r.log(format!("primary kernel up: {} devices, translation on", r.m.devices.len()));

    // Workload: the NIC recycles a buffer every few ticks (strict unmap + fresh map).
    let crash_tick = 48 + r.rng.random_range(0..96u64);
    out.crash_tick = crash_tick;
    while r.tick < crash_tick {
        r.step(false);
        if r.tick.is_multiple_of(8) {
            if let Some(d) = domains[0] {
                let slot = (r.tick / 8) as usize % RING;
                let old = r.m.devices[0].ring[slot];
                let p = r.page_in_pool(pool.clone());
                let mut hw = r.m.primary();
                let new =
                    drv.unmap(&mut hw, d, old & !0xfff, 4096).and_then(|_| drv.map(&mut hw, d, p, 4096, true, true));
                if let Ok(new) = new {
                    r.m.devices[0].ring[slot] = new;
                    r.buffer_pages.insert(p);
                }
            }
        }
    }
    // The panic: the primary kernel is gone, devices are not.
    drop(drv);
    let at_crash: PhysMemory = r.m.mem.clone();
    r.counting = true;
    r.log("panic: kexec into the crash kernel; devices still doing DMA".into());

    for _ in 0..s.knobs.early_ticks {
        r.step(s.knobs.aborts_fatal);
    }

    // Crash kernel: IOMMU init under the policy.
    let env = r.m.cfg.crash_env();
    let started = std::time::Instant::now();
    let booted = Vtd::init_crash(&mut r.m.crash(), &env, opts, s.policy);
    out.adopt_ns = started.elapsed().as_nanos() as u64;
    let (mut kd, report) = match booted {
        Ok((mut kd, report)) => {
            kd.reserve_iova_holes(&holes);
            (kd, report)
        }
        Err(e) => {
            out.failure = Some(format!("crash kernel IOMMU init failed: {e}"));
            return finish(r, out, &at_crash);
        }
    };
    out.iommu_init = match &report.outcome {
        HandoverOutcome::NotLive => "not live".into(),
        HandoverOutcome::Reset => format!("reset ({})", s.policy),
        HandoverOutcome::Adopted => format!("adopted {} devices", report.adopted.len()),
        HandoverOutcome::FellBack(why) => format!("fell back to reset: {why}"),
    };
    out.adopted_devices = report.adopted.len() as u64;
    out.refused_entries = report.problems.iter().map(|p| p.to_string()).collect();
    out.init_frames = report.frames_allocated;
    out.adopt_bytes = report.frames_allocated * 4096;
    out.init_bytes_read = report.bytes_read;
    r.log(format!("crash kernel IOMMU init: {}", out.iommu_init));
    if s.policy == Policy::AdoptScratch {
        let unneeded: Vec<u16> = r.m.devices.iter().filter(|d| d.role != Role::Disk).map(|d| d.sid).collect();
        for sid in unneeded {
            if let Err(e) = kd.contain(&mut r.m.crash(), sid) {
                r.log(format!("containment of {sid:#06x} failed: {e}"));
            }
        }
        r.scratch_page = kd.scratch_page();
        // The scratch page is the crash kernel's, handed to devices on purpose.
        r.crash_buffers.extend(r.scratch_page);
        out.scratch_frames = kd.scratch_frames();
        r.log(format!("contained devices the dump does not need: {} pages", out.scratch_frames));
    }

    r.after_init = true;
    for _ in 0..s.knobs.probe_ticks {
        if r.fatal.is_some() {
            break;
        }
        r.step(s.knobs.aborts_fatal);
    }

    // Probe what the dump needs: reset the disk (FLR stops its DMA), give it a fresh domain in the crash
    // kernel's memory, and point it at new buffers.
    if r.fatal.is_none() {
        for i in 0..r.m.devices.len() {
            if r.m.devices[i].role != Role::Disk {
                continue;
            }
            r.m.devices[i].reset();
            let sid = r.m.devices[i].sid;
            let mut ring = Vec::new();
            let res: Result<(), iommu_driver::vtd::VtdError> = (|| {
                let mut hw = r.m.crash();
                let d = kd.create_domain(&mut hw)?;
                kd.attach(&mut hw, sid, Attachment::Domain(d))?;
                for _ in 0..RING {
                    let p = iommu_driver::FrameAlloc::alloc_frame(&mut hw)
                        .ok_or(iommu_driver::vtd::VtdError::OutOfMemory)?;
                    r.crash_buffers.insert(p);
                    ring.push(kd.map(&mut hw, d, p, 4096, true, true)?);
                }
                Ok(())
            })();
            match res {
                Ok(()) => {
                    let dev = &mut r.m.devices[i];
                    // Writing the dump: the disk reads memory.
                    dev.access = Access::Read;
                    dev.start(ring);
                    out.usable_devices.push(dev.name.to_string());
                    let name = dev.name;
                    r.log(format!("{name} reset and attached to a fresh domain"));
                }
                Err(e) => r.log(format!("{sid:#06x} attach failed: {e}")),
            }
        }
        for _ in 0..s.knobs.capture_ticks {
            if r.fatal.is_some() {
                break;
            }
            r.step(s.knobs.aborts_fatal);
        }
    }
    finish(r, out, &at_crash)
}

fn finish(mut r: Run, mut out: Outcome, at_crash: &PhysMemory) -> (Outcome, Vec<TraceEvent>) {
    // Compare old memory (outside the crash region) at capture against the crash instant.
    let region = r.m.cfg.crash_region.clone();
    let changed = r.m.mem.changed_pages(at_crash);
    for pfn in changed {
        let page = pfn << 12;
        if region.contains(&page) {
            continue;
        }
        if r.buffer_pages.contains(&page) {
            out.changed_pages.buffers += 1;
        } else {
            out.changed_pages.other += 1;
        }
    }
    out.crashkernel_pages_written = r.crash_hits.len() as u64;
    out.old_memory_writes_after_init = r.old_writes_after_init;
    out.dma = r.dma;
    out.vmcore_intact = out.changed_pages.buffers == 0 && out.changed_pages.other == 0;
    out.failure = if let Some(f) = r.fatal.take() {
        Some(f)
    } else if out.crashkernel_pages_written > 0 {
        Some(format!("crash kernel's own memory written by DMA ({} pages)", out.crashkernel_pages_written))
    } else if out.failure.is_none() && out.usable_devices.is_empty() {
        Some("no device to write the dump".into())
    } else {
        out.failure
    };
    out.captured = out.failure.is_none();
    r.log(if out.captured {
        "dump captured".into()
    } else {
        format!("no dump: {}", out.failure.as_deref().unwrap_or(""))
    });
    (out, r.trace)
}
