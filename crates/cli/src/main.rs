//! `handover`: IOMMU hand-over to a crash kernel. `simulate` (the default) crashes a simulated machine
//! with DMA in flight and boots the crash kernel under each policy; `inspect` decodes a real dump.
#![forbid(unsafe_code)]

mod audit;
mod bench;
mod campaign;
mod inspect;
mod simulate;
mod snpcheck;
mod takeover;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A campaign allocates and frees many small objects per run on every worker thread (memory maps, cache
/// entries, outcome records), which mimalloc's per-thread heaps serve faster than the system allocator.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "handover", version, about = "IOMMU hand-over to a crash (kdump) kernel: simulate, inspect, audit")]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Crash the built-in machine with DMA in flight and boot the crash kernel under each policy.
    Simulate(simulate::Args),
    /// Decode an IOMMU's tables from a dump: per device, its entry and mapped IOVA runs.
    Inspect(inspect::Args),
    /// What each device can still reach in a dump: a verdict (exit 0 safe, 1 unsafe, 2 incomplete or an error).
    Audit(audit::Args),
    /// Many crash scenarios under every policy: capture rates with 95 % intervals, failures by reason.
    Campaign(campaign::Args),
    /// Benchmarks: each figure beside its baseline from the same run.
    Bench(bench::Args),
    /// Explore every interleaving of the SNP panic path (the x86/sev v2 thread's designs) against the firmware model.
    SnpCheck(snpcheck::Args),
    /// In a kdump kernel: take over the IOMMU the crashed kernel left live (exit 2 when it may not).
    Takeover(takeover::Args),
}

/// Finish a command whose output went to stdout: a closed pipe (`| head`) is a normal end, not an error.
pub fn output_result(r: std::io::Result<()>) -> Result<ExitCode, String> {
    match r {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(format!("writing output: {e}")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        None => simulate::run(&simulate::Args::default()),
        Some(Cmd::Simulate(a)) => simulate::run(&a),
        Some(Cmd::Inspect(a)) => inspect::run(&a),
        Some(Cmd::Audit(a)) => audit::run(&a),
        Some(Cmd::Campaign(a)) => campaign::run(&a),
        Some(Cmd::Bench(a)) => bench::run(&a),
        Some(Cmd::SnpCheck(a)) => snpcheck::run(&a),
        Some(Cmd::Takeover(a)) => takeover::run(&a),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("handover: {e}");
            ExitCode::from(2)
        }
    }
}
