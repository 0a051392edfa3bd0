//! `handover campaign`: many crash scenarios, each from its own seed, under every policy on every IOMMU.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Args as ClapArgs;
use iommu_driver::Policy;
use iommu_sim::campaign::{run_campaign, svg, CampaignSpec};
use iommu_sim::IommuKind;

#[derive(ClapArgs, Debug, Clone)]
pub struct Args {
    /// Runs in all, spread evenly over the IOMMU × policy cells (each cell sees the same scenarios).
    #[arg(long, default_value_t = 1000)]
    pub runs: u64,
    /// Campaign seed: run i's scenario depends only on it and i.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// IOMMU (repeatable; all three when omitted).
    #[arg(long)]
    pub iommu: Vec<IommuKind>,
    /// Policy (repeatable; all four when omitted).
    #[arg(long)]
    pub policy: Vec<Policy>,
    /// Faults runs draw from (repeatable, comma lists, `all`): each run injects one of them or none.
    #[arg(long)]
    pub inject: Vec<String>,
    /// Worker threads (default: the machine's cores). Results do not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the capture rates as an SVG chart to FILE (an existing file is not overwritten).
    #[arg(long, value_name = "FILE")]
    pub svg: Option<std::path::PathBuf>,
}

/// Runs a campaign may ask for: enough for tight intervals, bounded so a typo cannot run for days.
const MAX_RUNS: u64 = 100_000_000;

pub fn run(a: &Args) -> Result<ExitCode, String> {
    if a.runs == 0 || a.runs > MAX_RUNS {
        return Err(format!("--runs {} is outside 1..={MAX_RUNS}", a.runs));
    }
    let threads = a.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 || threads > 1024 {
        return Err(format!("--threads {threads} is outside 1..=1024"));
    }
    if let Some(p) = &a.svg {
        if p.exists() {
            return Err(format!("{} exists; not overwriting it", p.display()));
        }
    }
    let spec = CampaignSpec {
        runs: a.runs,
        seed: a.seed,
        iommus: if a.iommu.is_empty() { IommuKind::ALL.to_vec() } else { dedup(&a.iommu) },
        policies: if a.policy.is_empty() { Policy::ALL.to_vec() } else { dedup(&a.policy) },
        threads,
        inject: iommu_sim::inject::Faults::parse(a.inject.iter().map(String::as_str)).map_err(|e| e.to_string())?,
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(a.runs);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} runs, {per_sec}, eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let result = run_campaign(&spec, &|n| {
        if let Some(b) = &bar {
            b.set_position(n);
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some(p) = &a.svg {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(p)
            .and_then(|mut f| f.write_all(svg(&result).as_bytes()))
            .map_err(|e| format!("writing {}: {e}", p.display()))?;
    }
    let mut w = std::io::stdout().lock();
    if a.json {
        let v = serde_json::to_value(&result).map_err(|e| e.to_string())?;
        return crate::output_result(writeln!(w, "{v}"));
    }
    let res = (|| -> std::io::Result<()> {
        writeln!(w, "{} runs, seed {}, {:.1} s on {threads} threads", result.runs, result.seed, result.elapsed_s)?;
        writeln!(
            w,
            "{:<8} {:<14} {:>7} {:>8} {:>7} {:>17} {:>8} {:>8}  top failure",
            "iommu", "policy", "runs", "captured", "rate", "95% interval", "corrupt", "ck-hit"
        )?;
        for c in &result.results {
            let top = c.failures.iter().max_by_key(|(_, n)| **n).map(|(k, n)| format!("{k} ({n})")).unwrap_or_default();
            writeln!(
                w,
                "{:<8} {:<14} {:>7} {:>8} {:>6.1}% {:>7.1}% – {:>5.1}% {:>8} {:>8}  {top}",
                c.iommu,
                c.policy,
                c.runs,
                c.captured,
                100.0 * c.capture_rate,
                100.0 * c.ci95[0],
                100.0 * c.ci95[1],
                c.corrupt_runs,
                c.crashkernel_hit_runs
            )?;
        }
        Ok(())
    })();
    crate::output_result(res)
}

fn dedup<T: Copy + PartialEq>(v: &[T]) -> Vec<T> {
    v.iter().fold(Vec::new(), |mut out, &x| {
        if !out.contains(&x) {
            out.push(x);
        }
        out
    })
}
