//! `handover simulate`.

use std::process::ExitCode;

use std::io::Write;

use clap::{Args as ClapArgs, ValueEnum};
use iommu_driver::Policy;
use iommu_sim::{IommuKind, Knobs, Outcome, Scenario};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SnpShutdown {
    /// SNP_SHUTDOWN_EX succeeded at panic: the AMD-Vi registers are unlocked for the crash kernel.
    Ok,
    /// It failed (live SNP guests): the registers stay locked.
    Failed,
    /// The host does not run SEV-SNP.
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Aborts {
    /// A blocked DMA ends the crash kernel (PCIe completion timeout → AER → panic).
    Fatal,
    /// A blocked DMA is dropped and logged.
    Benign,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Legacy,
    /// Scalable mode with second-level tables.
    Scalable,
    /// Scalable mode with first-level tables: the unit has ECAP.FLTS and both kernels use it (Linux 6.x).
    ScalableFl,
}

#[derive(ClapArgs, Debug, Clone)]
pub struct Args {
    /// IOMMU of the built-in machine: vtd, amdvi or smmuv3 (all three when omitted).
    #[arg(long)]
    pub iommu: Option<IommuKind>,
    /// Policy to run (repeatable; all four when omitted): reset-abort, reset-bypass, adopt, adopt-scratch, or off
    /// (the crash kernel's IOMMU driver disabled).
    #[arg(long)]
    pub policy: Vec<Policy>,
    /// Seed of the run (crash instant, buffer placement).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// AMD-Vi: the SEV-SNP host's shutdown at panic.
    #[arg(long, value_enum, default_value_t = SnpShutdown::Failed)]
    pub snp_shutdown: SnpShutdown,
    /// SMMUv3: the table walker is not coherent (IDR0.COHACC clear).
    #[arg(long)]
    pub noncoherent_walker: bool,
    /// The host has CPUs above APIC ID 255 and the one that panics is among them: the crash kernel's interrupts
    /// need remapping (a compatibility-format MSI names 8-bit destinations only).
    #[arg(long)]
    pub x2apic: bool,
    /// Ticks from the panic to the crash kernel's IOMMU init (at most 100 000).
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u64).range(0..=MAX_TICKS))]
    pub early_ticks: u64,
    /// Ticks from the IOMMU init to the probe of the disk the dump is written to (at most 100 000).
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u64).range(0..=MAX_TICKS))]
    pub probe_ticks: u64,
    /// What a blocked DMA does to the platform.
    #[arg(long, value_enum, default_value_t = Aborts::Fatal)]
    pub aborts: Aborts,
    /// VT-d table format both kernels use.
    #[arg(long, value_enum, default_value_t = Mode::Legacy)]
    pub mode: Mode,
    /// Inject a fault into the crashed machine or the crash kernel (repeatable, comma lists, `all`):
    /// pt-in-crash-region, leaf-in-crash-region, entry-rejected-live, cmdq-error-pending, torn-entry,
    /// insert-refused, l1-reserved-bits, snp-kernel-without-mem-encrypt, no-iasup, ring-at-zero,
    /// exclusion-range, domain-id-alias, attach-before-reset, wide-iova, bitflips:N.
    #[arg(long)]
    pub inject: Vec<String>,
    /// Print the whole outcome as JSON.
    #[arg(long)]
    pub json: bool,
    /// Print the timeline of each run.
    #[arg(long)]
    pub trace: bool,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            iommu: None,
            policy: Vec::new(),
            seed: 1,
            snp_shutdown: SnpShutdown::Failed,
            noncoherent_walker: false,
            x2apic: false,
            early_ticks: 40,
            probe_ticks: 80,
            aborts: Aborts::Fatal,
            mode: Mode::Legacy,
            inject: Vec::new(),
            json: false,
            trace: false,
        }
    }
}

/// The most ticks a phase may be given: far past any device's DMA burst, and a run that ends in seconds.
pub const MAX_TICKS: u64 = 100_000;

pub fn run(a: &Args) -> Result<ExitCode, String> {
    let kinds: Vec<IommuKind> = a.iommu.map_or(IommuKind::ALL.to_vec(), |k| vec![k]);
    let policies = if a.policy.is_empty() { Policy::ALL.to_vec() } else { a.policy.clone() };
    let snp = match a.snp_shutdown {
        SnpShutdown::Ok => Some(true),
        SnpShutdown::Failed => Some(false),
        SnpShutdown::Off => None,
    };
    let inject = iommu_sim::inject::Faults::parse(a.inject.iter().map(String::as_str)).map_err(|e| e.to_string())?;
    let mut results = Vec::new();
    for &kind in &kinds {
        let knobs = Knobs {
            aborts_fatal: a.aborts == Aborts::Fatal,
            iommu: kind,
            scalable: a.mode != Mode::Legacy,
            vtd_first_level: a.mode == Mode::ScalableFl,
            snp_shutdown: snp,
            coherent_walker: !a.noncoherent_walker,
            early_ticks: a.early_ticks,
            probe_ticks: a.probe_ticks,
            nic_rate: 1,
            inject,
            x2apic: a.x2apic,
        };
        for &policy in &policies {
            let (o, trace) = iommu_sim::run(&Scenario { policy, seed: a.seed, knobs });
            results.push((kind, knobs, o, trace));
        }
    }
    if a.json {
        let v: Vec<serde_json::Value> = results
            .iter()
            .map(|(_, _, o, t)| {
                let mut v = serde_json::to_value(o).unwrap_or_default();
                if a.trace {
                    v["trace"] = serde_json::to_value(t).unwrap_or_default();
                }
                v
            })
            .collect();
        let mut w = std::io::stdout().lock();
        return crate::output_result(writeln!(w, "{}", serde_json::json!({ "runs": v })));
    }
    let mut w = std::io::stdout().lock();
    let res = (|| -> std::io::Result<()> {
        for &kind in &kinds {
            let rows: Vec<&Outcome> = results.iter().filter(|r| r.0 == kind).map(|r| &r.2).collect();
            let knobs = results.iter().find(|r| r.0 == kind).map(|r| r.1).unwrap_or_default();
            let what = match kind {
                IommuKind::Vtd => {
                    let mode = match (knobs.scalable, knobs.vtd_first_level) {
                        (false, _) => "legacy mode",
                        (true, false) => "scalable mode, second-level tables",
                        (true, true) => "scalable mode, first-level tables",
                    };
                    format!("VT-d ({mode})")
                }
                IommuKind::Amdvi => match knobs.snp_shutdown {
                    Some(true) => "AMD-Vi, SEV-SNP host, SNP_SHUTDOWN_EX succeeded at panic".to_string(),
                    Some(false) => {
                        "AMD-Vi, SEV-SNP host, SNP_SHUTDOWN_EX failed at panic (registers locked)".to_string()
                    }
                    None => "AMD-Vi, no SEV-SNP".to_string(),
                },
                IommuKind::Smmuv3 => "ARM SMMUv3 (2-level stream table)".to_string(),
            };
            writeln!(
                w,
                "{what}, seed {}, aborted DMA {}; DMA counted from the panic on",
                a.seed,
                if knobs.aborts_fatal { "fatal" } else { "benign" }
            )?;
            print_table(&mut w, rows.into_iter())?;
            writeln!(w)?;
        }
        writeln!(w, "xlate..bypass: DMA since the panic, by what the IOMMU did (translated, faulted, aborted fatally, sent to scratch, untranslated)")?;
        writeln!(w, "buf-pg / other-pg: old-memory pages changed since the panic, in device buffers / elsewhere (corruption; the IOMMU's own reused structures excluded)")?;
        writeln!(w, "old-wr: DMA writes into old memory after the crash kernel's IOMMU init; ck-pg: crash-kernel pages hit by DMA")?;
        writeln!(w, "irq d/b/m: device interrupts since the panic delivered where their kernel asked / blocked by the unit / misrouted")?;
        if a.trace {
            for (kind, _, o, t) in &results {
                writeln!(w, "\n{} {} timeline:", kind.name(), o.policy)?;
                for e in t {
                    writeln!(w, "  t={:<4} {}", e.tick, e.what)?;
                }
            }
        }
        Ok(())
    })();
    crate::output_result(res)
}

fn print_table<'a>(w: &mut impl Write, rows: impl Iterator<Item = &'a Outcome>) -> std::io::Result<()> {
    writeln!(
        w,
        "{:<14} {:<8} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8} {:>8} {:>8} {:>6} {:>12}  why / how",
        "policy",
        "dump",
        "xlate",
        "fault",
        "abort",
        "scratc",
        "bypass",
        "buf-pg",
        "other-pg",
        "old-wr",
        "ck-pg",
        "irq d/b/m"
    )?;
    for o in rows {
        let why = match (&o.failure, o.changed_pages.other) {
            (Some(f), _) => f.to_string(),
            (None, 0) => o.iommu_init.to_string(),
            (None, n) => format!("{}; {n} old-memory pages outside device buffers overwritten", o.iommu_init),
        };
        writeln!(
            w,
            "{:<14} {:<8} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8} {:>8} {:>8} {:>6} {:>12}  {}",
            o.policy,
            match (o.captured, o.changed_pages.other) {
                (false, _) => "LOST",
                (true, 0) => "captured",
                (true, _) => "CORRUPT",
            },
            o.dma.translated,
            o.dma.faulted,
            o.dma.aborted,
            o.dma.redirected,
            o.dma.untranslated,
            o.changed_pages.buffers,
            o.changed_pages.other,
            o.old_memory_writes_after_init,
            o.crashkernel_pages_written,
            format!("{}/{}/{}", o.irq.delivered, o.irq.blocked, o.irq.misrouted),
            why
        )?;
    }
    Ok(())
}
