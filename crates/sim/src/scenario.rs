//! One crash scenario: the primary kernel boots and drives its devices, panics with their DMA in flight,
//! the crash kernel boots under a policy, resets the disk and writes the dump through it, and what
//! changed is measured.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use iommu_driver::Policy;
use iommu_emu::devices::{DmaDevice, DmaEvent};
use iommu_emu::mem::Page;
use iommu_emu::{Interrupt, PhysMemory};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::inject::{Faults, Injected};
use crate::kernel::{
    start_bulk, DiskDriver, Io, IrqWiring, KernelError, NicDriver, Os, IDLE_NIC_RING, IDLE_NIC_VECTOR,
};
use crate::ledger::Ledger;
use crate::machine::{Kernel, Machine, MachineConfig, DISK_MDTS_BLOCKS, DISK_RID, IDLE_NIC_RID, NIC_RID};
use crate::outcome::{Failure, IrqCounts, Outcome, Reason};
use crate::unit::{Driver, IommuKind};
use iommu_driver::{BootOptions, DeviceId};

/// Platform knobs and phase lengths (ticks of the virtual clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Knobs {
    /// A blocked DMA raises a fatal error (PCIe completion timeout → AER → panic) instead of being dropped.
    pub aborts_fatal: bool,
    /// The machine's IOMMU.
    pub iommu: IommuKind,
    /// VT-d scalable mode.
    pub scalable: bool,
    /// VT-d scalable mode with first-level tables: the unit has ECAP.FLTS and both kernels use it.
    pub vtd_first_level: bool,
    /// AMD-Vi on an SEV-SNP host: `Some(shutdown succeeded at panic)`; `None` without SNP.
    pub snp_shutdown: Option<bool>,
    /// SMMUv3: the table walker snoops CPU caches (IDR0.COHACC); the SMMUv3 kdump series adopts only then.
    pub coherent_walker: bool,
    /// From the panic to the crash kernel's IOMMU init (purgatory, early boot).
    pub early_ticks: u64,
    /// From IOMMU init to the probe of the disk the dump is written to.
    pub probe_ticks: u64,
    /// Packets arriving at the NIC per tick.
    pub nic_rate: u32,
    /// Faults injected into the crashed machine or the crash kernel's configuration.
    pub inject: Faults,
    /// The host has CPUs above APIC ID 255, the one that panics among them (see `MachineConfig::x2apic`).
    pub x2apic: bool,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            aborts_fatal: true,
            iommu: IommuKind::Vtd,
            scalable: false,
            vtd_first_level: false,
            snp_shutdown: None,
            coherent_walker: true,
            early_ticks: 40,
            probe_ticks: 80,
            nic_rate: 1,
            inject: Faults::NONE,
            x2apic: false,
        }
    }
}

/// One crash to simulate: everything a run depends on, so equal scenarios give equal outcomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// What the crash kernel does with the live IOMMU.
    pub policy: Policy,
    /// Seeds the run's randomness (the tick of the panic).
    pub seed: u64,
    /// The platform and the phase lengths.
    pub knobs: Knobs,
}

/// One line of a run's timeline.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TraceEvent {
    /// Tick of the virtual clock when it happened.
    pub tick: u64,
    /// What happened, in words.
    pub what: String,
}

/// A run with the detail tests look into. The page sets after `dump_differs` are filled by [`run_detailed`] and
/// [`run_on`] only: the other entry points return outcomes, which none of them changes, and skip the page-by-page
/// record.
#[derive(Clone)]
pub struct RunDetail {
    /// The run's result.
    pub outcome: Outcome,
    /// The run's timeline, in tick order.
    pub trace: Vec<TraceEvent>,
    /// Pages (physical addresses) whose dumped copy differs from memory at the crash instant.
    pub dump_differs: BTreeSet<u64>,
    /// Pages DMA wrote after the panic and before the crash kernel copied them into the dump.
    pub written_before_dumped: BTreeSet<u64>,
    /// Pages whose memory, when the crash kernel copied them into the dump, differed from the crash instant.
    pub changed_when_dumped: BTreeSet<u64>,
    /// What wrote each old-memory page after the panic.
    pub writers: BTreeMap<u64, BTreeSet<&'static str>>,
}

/// Copy commands in flight while writing the dump.
const DUMP_WINDOW: usize = 32;

#[derive(Clone)]
struct Run {
    m: Machine,
    /// Pages of the unit's own structures in the crashed kernel's memory.
    iommu_pages: BTreeSet<u64>,
    tick: u64,
    trace: Vec<TraceEvent>,
    device_pages: BTreeSet<u64>,
    ledger: Ledger,
    log: Vec<DmaEvent>,
    /// The interrupt messages of one tick (kept for its buffer).
    irqs: Vec<iommu_emu::devices::IrqEvent>,
    irq: IrqWiring,
    irq_counts: IrqCounts,
}

impl Run {
    fn log(&mut self, what: impl Into<String>) {
        self.trace.push(TraceEvent { tick: self.tick, what: what.into() });
    }

    /// One tick of every device, accounted.
    fn step(&mut self) {
        self.log.clear();
        self.m.run_devices(self.tick, &mut self.log);
        let on = self.m.unit.translation_enabled();
        let region = self.m.cfg.crash_region.clone();
        let devices = &self.m.devices;
        let name = |rid| devices.iter().find(|d| d.rid() == rid).map(|d| d.name().to_string()).unwrap_or_default();
        self.ledger.account(&self.log, on, &region, name);
        let mut irqs = std::mem::take(&mut self.irqs);
        self.m.drain_irqs(&mut irqs);
        for ev in irqs.drain(..) {
            let hit = match ev.result {
                Interrupt::Delivered { dest, vector, .. } => self.irq.expect.get(&ev.rid) == Some(&(dest, vector)),
                // Arm: the ITS (not modelled further) sends EventID `data` of this DeviceID where the kernel that
                // programmed the device mapped it; a write that missed the doorbell is no interrupt.
                Interrupt::Written { phys } => {
                    phys == crate::machine::ITS_DOORBELL
                        && self.irq.expect.get(&ev.rid).is_some_and(|&(_, v)| u32::from(v) == ev.msg.data)
                }
                Interrupt::Blocked(_) => false,
            };
            if hit {
                *self.irq.arrived.entry(ev.rid).or_default() += 1;
            }
            if self.ledger.counting {
                match ev.result {
                    Interrupt::Blocked(_) => self.irq_counts.blocked += 1,
                    _ if hit => self.irq_counts.delivered += 1,
                    _ => self.irq_counts.misrouted += 1,
                }
            }
        }
        self.irqs = irqs;
        self.tick += 1;
    }

    fn os<'a>(&'a mut self, drv: &'a mut Driver, k: Kernel) -> Os<'a> {
        Os {
            m: &mut self.m,
            drv,
            k,
            device_pages: &mut self.device_pages,
            crash_own: &mut self.ledger.crash_own,
            irq: &mut self.irq,
        }
    }
}

/// Run one scenario on the built-in machine with the knobs' IOMMU.
pub fn run(s: &Scenario) -> (Outcome, Vec<TraceEvent>) {
    let d = run_with(machine_config(&s.knobs), s, false);
    (d.outcome, d.trace)
}

/// [`run`], keeping the page sets and writers behind the outcome's counts.
pub fn run_detailed(s: &Scenario) -> RunDetail {
    run_on(machine_config(&s.knobs), s)
}

/// The scenario `s` under each of `policies`, outcomes in their order: equal to running
/// `Scenario { policy, ..*s }` for each, but the part before the crash kernel's IOMMU init (the primary
/// kernel, its workload, the panic, the faults and the early boot), which no policy changes, runs once.
pub fn run_policies(s: &Scenario, policies: &[Policy]) -> Vec<Outcome> {
    match before_init(machine_config(&s.knobs), s, false) {
        Before::Done(d) => {
            policies.iter().map(|&p| Outcome { policy: p.name().to_string(), ..d.outcome.clone() }).collect()
        }
        Before::Panicked(p) => {
            let Some((&last, rest)) = policies.split_last() else { return Vec::new() };
            let mut out: Vec<Outcome> =
                rest.iter().map(|&policy| after_init((*p).clone(), &Scenario { policy, ..*s }).outcome).collect();
            out.push(after_init(*p, &Scenario { policy: last, ..*s }).outcome);
            out
        }
    }
}

/// The built-in machine for the knobs: their IOMMU, VT-d mode, SNP host, walker, NIC rate and unit faults.
fn machine_config(k: &Knobs) -> MachineConfig {
    let mut cfg = MachineConfig::default_vtd();
    cfg.iommu = k.iommu;
    cfg.scalable = k.scalable;
    cfg.vtd_first_level = k.vtd_first_level;
    cfg.snp = k.snp_shutdown.is_some() && k.iommu == IommuKind::Amdvi;
    cfg.coherent_walker = k.coherent_walker;
    cfg.nic_rate = iommu_emu::Rate::per_tick(k.nic_rate);
    cfg.no_iasup = k.inject.contains("no-iasup");
    cfg.x2apic = k.x2apic;
    cfg
}

/// Run one scenario on a machine of the caller's layout. `cfg`'s IOMMU, mode and SNP settings are used as
/// given; the knobs supply the policy's platform behaviour (aborts, phase lengths, faults, SNP shutdown).
pub fn run_on(cfg: MachineConfig, s: &Scenario) -> RunDetail {
    run_with(cfg, s, true)
}

/// [`run_on`], with the page sets only if `pages`.
fn run_with(cfg: MachineConfig, s: &Scenario, pages: bool) -> RunDetail {
    match before_init(cfg, s, pages) {
        Before::Done(d) => *d,
        Before::Panicked(p) => after_init(*p, s),
    }
}

/// A run at the crash kernel's IOMMU init: everything before it is the same under every policy.
#[derive(Clone)]
struct Panicked {
    r: Run,
    out: Outcome,
    /// Memory at the crash instant, only ever read: shared by the policies' runs rather than copied for each.
    at_crash: Arc<PhysMemory>,
    kind: IommuKind,
    opts: BootOptions,
    env: iommu_driver::BootEnv,
    holes: [std::ops::Range<u64>; 1],
}

enum Before {
    /// The run ended before the crash kernel's IOMMU init (the primary kernel failed).
    Done(Box<RunDetail>),
    /// The crash kernel is about to init its IOMMU.
    Panicked(Box<Panicked>),
}

fn before_init(cfg: MachineConfig, s: &Scenario, pages: bool) -> Before {
    let (kind, scalable, snp) = (cfg.iommu, cfg.scalable, cfg.snp);
    let vtd_first_level = cfg.vtd_first_level;
    let holes = [cfg.pci_hole.clone()];
    let mut r = Run {
        m: Machine::new(cfg),
        iommu_pages: BTreeSet::new(),
        tick: 0,
        trace: Vec::new(),
        device_pages: BTreeSet::new(),
        ledger: Ledger { aborts_fatal: s.knobs.aborts_fatal, pages, ..Ledger::default() },
        log: Vec::new(),
        irqs: Vec::new(),
        irq: IrqWiring::default(),
        irq_counts: IrqCounts::default(),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
    let mut out = Outcome::new(kind.name(), s.policy, s.seed);
    let detail = |out: Outcome, r: Run, dump_differs, written| RunDetail {
        outcome: out,
        trace: r.trace,
        dump_differs,
        written_before_dumped: written,
        changed_when_dumped: BTreeSet::new(),
        writers: r.ledger.writers,
    };

    // Primary kernel: IOMMU up, NIC, disk and the idle NIC port in DMA domains, the copy engine in pass-through.
    let penv = r.m.cfg.primary_env();
    let opts = BootOptions { scalable, vtd_first_level, ..BootOptions::default() };
    let mut drv: Driver = match iommu_driver::boot(kind, &mut r.m.platform(Kernel::Primary), &penv, opts) {
        Ok(d) => d,
        Err(e) => {
            out.failure = Some(Failure::PrimaryInit(e).into());
            return Before::Done(Box::new(detail(out, r, BTreeSet::new(), BTreeSet::new())));
        }
    };
    drv.reserve_iova_holes(&holes);
    r.m.snp_init();
    let setup = (|| -> Result<(NicDriver, DiskDriver), KernelError> {
        let mut os = r.os(&mut drv, Kernel::Primary);
        // x86: the IO-APIC timer goes to the boot CPU (APIC 0) through the unit's remapping.
        if kind != IommuKind::Smmuv3 {
            os.route_timer(0)?;
        }
        let nic = NicDriver::probe(&mut os)?;
        let disk = DiskDriver::probe(&mut os)?;
        start_bulk(&mut os, 4, !snp)?;
        NicDriver::probe_port(&mut os, IDLE_NIC_RID, IDLE_NIC_RING, IDLE_NIC_VECTOR)?;
        Ok((nic, disk))
    })();
    let (mut nic, mut disk) = match setup {
        Ok(x) => x,
        Err(e) => {
            out.failure = Some(Failure::PrimarySetup(e).into());
            return Before::Done(Box::new(detail(out, r, BTreeSet::new(), BTreeSet::new())));
        }
    };
    r.log("primary kernel up: nic, disk and the idle nic1 in DMA domains, bulk engine in pass-through");

    // The workload: packets received and refilled, disk reads, copies; until the panic.
    let crash_tick = 48 + rng.random_range(0..96u64);
    out.crash_tick = crash_tick;
    while r.tick < crash_tick {
        r.step();
        let t = r.tick;
        let mut os = r.os(&mut drv, Kernel::Primary);
        let work = nic.service(&mut os).and_then(|_| {
            if t.is_multiple_of(3) {
                disk.submit(&mut os, Io::Read { lba: t % 97 })?;
            }
            disk.reap(&mut os)
        });
        if let Err(e) = work {
            out.failure = Some(Failure::PrimaryWorkload(e).into());
            return Before::Done(Box::new(detail(out, r, BTreeSet::new(), BTreeSet::new())));
        }
    }
    // The panic: the primary kernel's drivers are gone; the devices are not.
    // The NIC's last posted buffer is a DMA it makes only after the crash kernel's IOMMU init when the
    // packets before it take longer than the early boot (with a tick of margin either side).
    let late = nic.last_posted(&mut r.m).and_then(|(iova, packets)| {
        // No packets, no DMA at all: nothing reaches the buffer late either.
        let rate = u64::from(s.knobs.nic_rate);
        if rate == 0 {
            return None;
        }
        let ticks = u64::from(packets).div_ceil(rate);
        (ticks > s.knobs.early_ticks.saturating_add(2))
            .then_some(iommu_emu::inject::LateDma { dev: NIC_RID as u32, iova })
    });
    drop((nic, disk, drv));
    r.m.snp_panic(s.knobs.snp_shutdown.unwrap_or(true));
    // What the crashed kernel left behind: the injected faults are part of memory at the crash instant.
    inject_faults(&mut r.m, s, kind, snp, late, &mut out);
    // No room is made here for what the policies add: every copy of memory would copy it (more L1 data misses than
    // the growth it saves, BENCHMARKS.md); each policy reserves for its dump instead.
    let at_crash = Arc::new(r.m.mem.snapshot());
    let Machine { unit, mem, .. } = &mut r.m;
    r.iommu_pages = unit.structure_pages(mem).into_iter().collect();
    r.ledger.counting = true;
    r.log("panic: kexec into the crash kernel; devices keep doing DMA");

    for _ in 0..s.knobs.early_ticks {
        r.step();
    }

    // The crash kernel's boot environment; its IOMMU init is the first thing a policy decides.
    let mut env = r.m.cfg.crash_env();
    if s.knobs.inject.contains("snp-kernel-without-mem-encrypt") {
        iommu_emu::inject::snp_kernel_without_mem_encrypt(&mut env);
    }
    Before::Panicked(Box::new(Panicked { r, out, at_crash, kind, opts, env, holes }))
}

/// From the crash kernel's IOMMU init under `s.policy` to the dump.
fn after_init(p: Panicked, s: &Scenario) -> RunDetail {
    let Panicked { mut r, mut out, at_crash, kind, opts, env, holes } = p;
    out.policy = s.policy.name().to_string();
    // Crash kernel: IOMMU init under the policy.
    let started = std::time::Instant::now();
    let masters: Vec<DeviceId> = r.m.devices.iter().map(|d| DeviceId(d.rid())).collect();
    let booted = iommu_driver::boot_crash(kind, &mut r.m.platform(Kernel::Crash), &env, opts, s.policy);
    let booted = booted.map(|(mut kd, mut report)| {
        // The bus probe: every device the crash kernel's PCI scan finds.
        for &id in &masters {
            let found = kd.device_found(&mut r.m.platform(Kernel::Crash), &env, id);
            report.note_found(id, found);
        }
        kd.account(&mut report);
        (kd, report)
    });
    out.adopt_ns = started.elapsed().as_nanos() as u64;
    let (mut kd, report) = match booted {
        Ok(x) => x,
        Err(e) => {
            // Linux's AMD-Vi init logs "Completion-Wait loop timed out" and goes on with interrupt remapping
            // enabled on the tables it wrote (a locked unit never sees them); the timer check comes next.
            if let iommu_driver::DriverError::Amdvi(iommu_driver::amdvi::AmdError::CompletionWaitTimeout { .. }) = e {
                let msg =
                    iommu_emu::devices::Msi { addr: iommu_spec::vtd::MSI_ADDR_BASE, data: FRESH_TABLE_FIRST_INDEX };
                let cpu = r.m.crash_cpu();
                if let Err(f) = timer_check(&mut r, msg, cpu, Some(e.clone())) {
                    out.failure = Some(f.into());
                    return finish(r, out, &at_crash, &[]);
                }
            }
            out.failure = Some(Failure::CrashInit(e).into());
            return finish(r, out, &at_crash, &[]);
        }
    };
    kd.reserve_iova_holes(&holes);
    r.ledger.after_init = true;
    // The idle port's link comes up: from here on it fills its posted buffers through whatever the crash
    // kernel's init left for it (its adopted entry, a containment, a block), so what adoption accepted for an
    // idle device is used, not only parsed.
    if let Some(nic) = r.m.device(IDLE_NIC_RID).and_then(|d| d.as_nic_mut()) {
        nic.set_rate(iommu_emu::Rate::per_tick(1));
    }
    out.iommu_init = report.summary().into();
    out.adopted_devices = report.adopted.len() as u64;
    out.refused_entries = report.refused.iter().cloned().map(Reason::Typed).collect();
    out.init_frames = report.frames_allocated;
    out.adopt_bytes = report.frames_allocated * 4096;
    out.init_bytes_read = report.bytes_read;
    r.log(format!("crash kernel IOMMU init: {}", out.iommu_init));
    // The IO-APIC timer, routed by the crash kernel, then Linux's `check_timer` (x86 only). It panics only with
    // interrupt remapping on; without it Linux falls back through the 8259A.
    if kind != IommuKind::Smmuv3 {
        let cpu = r.m.crash_cpu();
        let routed = r.os(&mut kd, Kernel::Crash).route_timer(cpu);
        let remapping = !matches!(kd.irq_handover().0, iommu_driver::irq::IrqHandover::Off);
        match routed {
            Ok(msg) if remapping => {
                if let Err(f) = timer_check(&mut r, msg, cpu, None) {
                    out.failure = Some(f.into());
                    return finish(r, out, &at_crash, &[]);
                }
            }
            Ok(_) => {}
            Err(e) => {
                let got = format!("could not be routed ({e})");
                out.failure = Some(Failure::TimerCheck { got, after: None }.into());
                return finish(r, out, &at_crash, &[]);
            }
        }
    }
    if s.policy == Policy::AdoptScratch {
        // Every device found on the bus but the disk: adopted ones, and refused ones (blocked at boot), whose
        // DMA would otherwise fault.
        for sid in masters.iter().copied().filter(|&sid| sid != DeviceId::from(DISK_RID)) {
            if let Err(e) = kd.contain(&mut r.m.platform(Kernel::Crash), sid) {
                r.log(format!("containment of {sid} failed: {e}"));
            }
        }
        r.ledger.scratch = kd.scratch_region();
        out.scratch_frames = kd.scratch_frames();
        r.log(format!("contained the devices the dump does not need: {} pages", out.scratch_frames));
    }

    for _ in 0..s.knobs.probe_ticks {
        if r.ledger.fatal.is_some() {
            return finish(r, out, &at_crash, &[]);
        }
        r.step();
    }

    // Probe the disk: reset it (FLR stops its DMA), give it a fresh domain and queues in the crash kernel's
    // memory (deferred attach tears the adopted entry down), then write the dump through it.
    // Linux resets the device before its driver maps anything; `attach-before-reset` is a driver that maps
    // first (the open question of the 2014 VT-d kdump series): the reset then comes after the attach.
    let attach_first = s.knobs.inject.contains("attach-before-reset");
    let flr = |r: &mut Run| {
        if let Some(d) = r.m.device(DISK_RID) {
            d.flr();
        }
    };
    let probed = if attach_first {
        DiskDriver::map_queues(&mut r.os(&mut kd, Kernel::Crash)).and_then(|mapped| {
            flr(&mut r);
            DiskDriver::start(&mut r.os(&mut kd, Kernel::Crash), mapped)
        })
    } else {
        flr(&mut r);
        DiskDriver::probe(&mut r.os(&mut kd, Kernel::Crash))
    };
    let mut disk = match probed {
        Ok(d) => d,
        Err(e) => {
            out.failure = Some(Failure::DiskProbe(e).into());
            return finish(r, out, &at_crash, &[]);
        }
    };
    out.usable_devices.push("disk".into());
    r.log("disk reset and attached to a fresh domain; writing the dump");

    // The dump: every page of old memory that holds anything, as /proc/vmcore reads it now.
    let region = r.m.cfg.crash_region.clone();
    // Each frame once: memory's, then those only the crash instant still had (zeroed since), so the sort below
    // sorts each frame once rather than the many both hold twice.
    let mem = &r.m.mem;
    let mut queue: Vec<u64> = mem
        .pfns()
        .chain(at_crash.pfns().filter(|&pfn| mem.page(pfn).is_none()))
        .filter(|pfn| !region.contains(&(pfn << 12)))
        .collect();
    // Highest first, so the lowest frame is popped first.
    queue.sort_unstable_by(|a, b| b.cmp(a));
    queue.dedup();
    // Every page dumped is copied into a fresh buffer page and onto a block of the disk: room for them now.
    r.m.mem.reserve_pages(queue.len());
    if let Some(blk) = r.m.device(DISK_RID).and_then(|d| d.as_blk_mut()) {
        blk.reserve_blocks(queue.len());
    }
    // (page, tick it was dumped), ascending by page: the queue hands out each frame once, lowest first.
    let mut dumped_at: Vec<(u64, u64)> = Vec::with_capacity(queue.len());
    // Ascending, as the pages are dumped: collected into a set at the end in one pass (for a detailed run).
    let mut changed_when_dumped = Vec::new();
    let pages = r.ledger.pages;
    let deadline = r.tick + 64 + 4 * queue.len() as u64;
    let mut run: Vec<Option<Arc<Page>>> = Vec::with_capacity(DISK_MDTS_BLOCKS as usize);
    while (!queue.is_empty() || disk.inflight() > 0) && r.ledger.fatal.is_none() {
        if r.tick > deadline {
            out.failure = Some(Failure::DumpStalled { pages_left: queue.len(), in_flight: disk.inflight() }.into());
            break;
        }
        let t = r.tick;
        let mut os = r.os(&mut kd, Kernel::Crash);
        let mut err = disk.reap(&mut os).err();
        while err.is_none() && disk.inflight() < DUMP_WINDOW {
            // The next run of contiguous frames, up to the disk's MDTS: one write command.
            let Some(&first) = queue.last() else { break };
            let n =
                queue.iter().rev().zip(first..).take(DISK_MDTS_BLOCKS as usize).take_while(|(&p, q)| p == *q).count();
            run.clear();
            run.extend((first..first + n as u64).map(|pfn| os.m.mem.page_shared(pfn).cloned()));
            match disk.submit(&mut os, Io::Write { lba: first, pages: &run }) {
                Ok(true) => {
                    for pfn in first..first + n as u64 {
                        queue.pop();
                        if pages && !os.m.mem.same_page(&at_crash, pfn) {
                            changed_when_dumped.push(pfn << 12);
                        }
                        dumped_at.push((pfn << 12, t));
                    }
                }
                Ok(false) => break,
                Err(e) => err = Some(e),
            }
        }
        if let Some(e) = err {
            out.failure = Some(Failure::DumpWrite(e).into());
            break;
        }
        r.step();
    }
    if disk.errors > 0 && out.failure.is_none() {
        out.failure = Some(Failure::DiskErrors(disk.errors).into());
    }
    out.dump_pages = dumped_at.len() as u64;
    let mut d = finish(r, out, &at_crash, &dumped_at);
    d.changed_when_dumped = changed_when_dumped.into_iter().collect();
    d
}

/// What a page never written holds.
static ZERO_PAGE: [u8; 4096] = [0; 4096];
/// The index the crash kernel's AMD-Vi driver gives the IO-APIC timer in the fresh table it built: the first
/// (Linux allocates from 0 in a new table).
const FRESH_TABLE_FIRST_INDEX: u32 = 0;

/// Linux's `check_timer`: the IO-APIC sends the timer (`msg`) through the unit; it must reach `cpu` on the timer
/// vector.
fn timer_check(
    r: &mut Run,
    msg: iommu_emu::devices::Msi,
    cpu: u32,
    after: Option<iommu_driver::DriverError>,
) -> Result<(), Failure> {
    use iommu_emu::Iommu;
    let rid = crate::machine::IOAPIC_RID as u32;
    let Machine { unit, mem, .. } = &mut r.m;
    let got = unit.interrupt(mem, rid, msg.addr, msg.data).unwrap_or(Interrupt::Delivered {
        dest: cpu,
        vector: crate::kernel::TIMER_VECTOR,
        remapped: false,
    });
    match got {
        Interrupt::Delivered { dest, vector, .. } if dest == cpu && vector == crate::kernel::TIMER_VECTOR => {
            r.log(format!("check_timer: the IO-APIC timer reaches CPU {cpu:#x}"));
            Ok(())
        }
        Interrupt::Delivered { dest, vector, .. } => {
            let got = format!("went to APIC {dest:#x} vector {vector:#x}, not APIC {cpu:#x}");
            r.log(format!("check_timer: the timer {got}"));
            Err(Failure::TimerCheck { got, after })
        }
        Interrupt::Written { phys } => {
            let got = format!("was written to {phys:#x}");
            r.log(format!("check_timer: the timer {got}"));
            Err(Failure::TimerCheck { got, after })
        }
        Interrupt::Blocked(f) => {
            let got = format!("was blocked ({})", f.reason);
            r.log(format!("check_timer: the timer {got}"));
            Err(Failure::TimerCheck { got, after })
        }
    }
}

/// `dumped_at`: (page, tick it was dumped), ascending by page.
fn finish(mut r: Run, mut out: Outcome, at_crash: &PhysMemory, dumped_at: &[(u64, u64)]) -> RunDetail {
    debug_assert!(dumped_at.windows(2).all(|w| w[0].0 < w[1].0), "dumped pages ascending, each once");
    let region = r.m.cfg.crash_region.clone();
    for pfn in r.m.mem.changed_pages_outside(at_crash, &region) {
        let page = pfn << 12;
        if r.device_pages.contains(&page) {
            out.changed_pages.buffers += 1;
        } else if r.iommu_pages.contains(&page) {
            out.changed_pages.iommu += 1;
        } else {
            out.changed_pages.other += 1;
        }
    }
    // The dump against the crash instant, page by page.
    let mut dump_differs = BTreeSet::new();
    if let Some(blk) = r.m.device(DISK_RID).and_then(|d| d.as_blk_mut()) {
        for &(page, _) in dumped_at {
            let same = match (blk.block_shared(page >> 12), at_crash.page_shared(page >> 12)) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a[..] == b[..],
                (Some(p), None) | (None, Some(p)) => p[..] == ZERO_PAGE[..],
                (None, None) => true,
            };
            if !same {
                dump_differs.insert(page);
            }
        }
    }
    let written: BTreeSet<u64> = r
        .ledger
        .first_write
        .iter()
        .filter(|(&page, &t)| {
            dumped_at
                .binary_search_by_key(&page, |&(p, _)| p)
                .is_ok_and(|i| dumped_at.get(i).is_some_and(|&(_, d)| t < d))
        })
        .map(|(&p, _)| p)
        .collect();
    out.dump_pages_differing = dump_differs.len() as u64;
    out.crashkernel_pages_written = r.ledger.crash_hits.len() as u64;
    out.crashkernel_pages_written_before_init = r.ledger.crash_hits_before_init.len() as u64;
    out.old_memory_writes_after_init = r.ledger.old_writes_after_init;
    out.dma = r.ledger.dma;
    out.irq = r.irq_counts;
    out.failure = if let Some(f) = r.ledger.fatal.take() {
        Some(f.into())
    } else if out.crashkernel_pages_written > 0 {
        Some(Failure::CrashKernelWritten { pages: out.crashkernel_pages_written }.into())
    } else {
        out.failure
    };
    out.captured = out.failure.is_none();
    out.vmcore_intact = out.captured && dump_differs.is_empty();
    let end = if out.captured {
        "dump captured".to_string()
    } else {
        format!("no dump: {}", out.failure.as_ref().map(|f| f.to_string()).unwrap_or_default())
    };
    r.log(end);
    RunDetail {
        outcome: out,
        trace: r.trace,
        dump_differs,
        written_before_dumped: written,
        changed_when_dumped: BTreeSet::new(),
        writers: r.ledger.writers,
    }
}

/// Apply the run's faults to the crashed machine (state faults) or note where they apply (configuration),
/// recording in `out` what was injected and, for each fault that does not apply, why.
fn inject_faults(
    m: &mut Machine,
    s: &Scenario,
    kind: IommuKind,
    snp: bool,
    late: Option<iommu_emu::inject::LateDma>,
    out: &mut Outcome,
) {
    let faults = s.knobs.inject;
    out.inject = faults.names();
    let mut reasons = Vec::new();
    for name in faults.names() {
        let applied = match name.as_str() {
            "attach-before-reset" => {
                Injected::Applied { what: "the disk is attached and mapped before its reset".into() }
            }
            "no-iasup" if kind == IommuKind::Amdvi => Injected::Applied { what: "EFR.IASup clear".into() },
            "no-iasup" => Injected::NotApplicable { why: "EFR.IASup is an AMD-Vi feature" },
            "snp-kernel-without-mem-encrypt" if kind == IommuKind::Amdvi && snp => {
                Injected::Applied { what: "the crash kernel boots without mem_encrypt".into() }
            }
            "snp-kernel-without-mem-encrypt" => Injected::NotApplicable { why: "needs an AMD-Vi unit on an SNP host" },
            _ => {
                let crash_region = m.cfg.crash_region.clone();
                let Machine { mem, unit, .. } = m;
                // The idle NIC port does no DMA; the others are busy from the panic to the init.
                let idle = [IDLE_NIC_RID as u32];
                let mut crashed = iommu_emu::inject::Crashed {
                    mem,
                    unit: unit.fault_target(),
                    crash_region,
                    seed: s.seed,
                    idle: &idle,
                    late,
                };
                iommu_emu::inject::apply(&name, &mut crashed)
                    .unwrap_or(Injected::NotApplicable { why: "not in the fault catalogue" })
            }
        };
        if let Injected::NotApplicable { why } = applied {
            reasons.push(format!("{name}: {why}"));
        }
    }
    out.inject_applied = reasons.is_empty();
    out.inject_reason = (!reasons.is_empty()).then(|| reasons.join("; "));
}
