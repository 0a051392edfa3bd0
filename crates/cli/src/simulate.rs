//! `handover simulate`.

use std::process::ExitCode;

use clap::{Args as ClapArgs, ValueEnum};
use iommu_driver::Policy;
use iommu_sim::{Knobs, Outcome, Scenario};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IommuKind {
    Vtd,
    Amd,
    Smmuv3,
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
    Scalable,
}

#[derive(ClapArgs, Debug, Clone)]
pub struct Args {
    /// IOMMU of the built-in machine (all that are implemented when omitted).
    #[arg(long, value_enum)]
    pub iommu: Option<IommuKind>,
    /// Policy to run (repeatable; all when omitted): reset-abort, reset-bypass, adopt, adopt-scratch.
    #[arg(long)]
    pub policy: Vec<Policy>,
    /// Seed of the run (crash instant, buffer placement).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// What a blocked DMA does to the platform.
    #[arg(long, value_enum, default_value_t = Aborts::Fatal)]
    pub aborts: Aborts,
    /// VT-d table format both kernels use.
    #[arg(long, value_enum, default_value_t = Mode::Legacy)]
    pub mode: Mode,
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
            aborts: Aborts::Fatal,
            mode: Mode::Legacy,
            json: false,
            trace: false,
        }
    }
}

pub fn run(a: &Args) -> Result<ExitCode, String> {
    match a.iommu {
        None | Some(IommuKind::Vtd) => {}
        Some(k) => return Err(format!("{k:?} is not simulated yet (VT-d is)")),
    }
    let policies = if a.policy.is_empty() { Policy::ALL.to_vec() } else { a.policy.clone() };
    let knobs =
        Knobs { aborts_fatal: a.aborts == Aborts::Fatal, scalable: a.mode == Mode::Scalable, ..Knobs::default() };
    let mut results = Vec::new();
    for policy in policies {
        let (o, trace) = iommu_sim::run(&Scenario { policy, seed: a.seed, knobs });
        results.push((o, trace));
    }
    if a.json {
        let v: Vec<serde_json::Value> = results
            .iter()
            .map(|(o, t)| {
                let mut v = serde_json::to_value(o).unwrap_or_default();
                if a.trace {
                    v["trace"] = serde_json::to_value(t).unwrap_or_default();
                }
                v
            })
            .collect();
        println!("{}", serde_json::json!({ "runs": v }));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "VT-d ({}), seed {}, aborted DMA {}; DMA counted from the panic on",
        if knobs.scalable { "scalable mode" } else { "legacy mode" },
        a.seed,
        if knobs.aborts_fatal { "fatal" } else { "benign" }
    );
    print_table(results.iter().map(|(o, _)| o));
    if a.trace {
        for (o, t) in &results {
            println!("\n{} timeline:", o.policy);
            for e in t {
                println!("  t={:<4} {}", e.tick, e.what);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table<'a>(rows: impl Iterator<Item = &'a Outcome>) {
    println!(
        "{:<14} {:<8} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8} {:>8} {:>8} {:>6}  why / how",
        "policy", "dump", "xlate", "fault", "abort", "scratc", "bypass", "buf-pg", "other-pg", "old-wr", "ck-pg"
    );
    for o in rows {
        let why = match (&o.failure, o.changed_pages.other) {
            (Some(f), _) => f.clone(),
            (None, 0) => o.iommu_init.clone(),
            (None, n) => format!("{}; {n} old-memory pages outside device buffers overwritten", o.iommu_init),
        };
        println!(
            "{:<14} {:<8} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8} {:>8} {:>8} {:>6}  {}",
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
            why
        );
    }
    println!("xlate..bypass: DMA since the panic, by what the IOMMU did (translated, faulted, aborted fatally, sent to scratch, untranslated)");
    println!("buf-pg / other-pg: old-memory pages changed since the panic, in device buffers / elsewhere (corruption)");
    println!(
        "old-wr: DMA writes into old memory after the crash kernel's IOMMU init; ck-pg: crash-kernel pages hit by DMA"
    );
}
