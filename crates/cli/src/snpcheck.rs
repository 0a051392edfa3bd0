//! `handover snp-check`: every interleaving of the SNP panic path, per protocol.

use std::io::Write;
use std::process::ExitCode;

use clap::Args as ClapArgs;
use iommu_sim::snpcheck::{explore, protocols, Exploration};
use serde::Serialize;

#[derive(ClapArgs, Debug, Clone)]
pub struct Args {
    /// CPUs of the host (CPU 0 panics; the others run the SNP guest).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=6))]
    pub cpus: u8,
    /// Protocols to check (repeatable; all when omitted).
    #[arg(long)]
    pub protocol: Vec<String>,
    /// JSON instead of tables and traces.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: &Args) -> Result<ExitCode, String> {
    let all = protocols();
    for name in &a.protocol {
        if !all.iter().any(|p| p.name == name) {
            let names: Vec<_> = all.iter().map(|p| p.name).collect();
            return Err(format!("unknown protocol {name:?} (known: {})", names.join(", ")));
        }
    }
    let chosen: Vec<_> =
        all.iter().filter(|p| a.protocol.is_empty() || a.protocol.iter().any(|n| n == p.name)).collect();
    let results: Vec<Exploration> = chosen.iter().map(|p| explore(p, a.cpus as usize)).collect();
    let mut w = std::io::stdout().lock();
    let res = if a.json { print_json(&mut w, a, &results) } else { print_human(&mut w, a, &chosen, &results) };
    crate::output_result(res)
}

/// Whether the crash kernel captures in every interleaving: booted for real on the simulated AMD-Vi SNP host
/// for each firmware outcome the protocol reaches, with hand-over (`adopt`) and with a reset (`reset-abort`).
fn capture(e: &Exploration) -> (bool, bool) {
    use iommu_driver::Policy;
    use iommu_sim::snpcheck::captures_in_every_interleaving as every;
    (every(e, Policy::Adopt), every(e, Policy::ResetAbort))
}

/// One protocol's result in JSON. Counts are exact integers: at 6 CPUs they pass 2^64 (serde_json writes
/// a `u128` as its digits; a reader without big integers sees a float, never a saturated 2^64 - 1).
#[derive(Serialize)]
struct ProtocolOut {
    name: &'static str,
    states: usize,
    interleavings: u128,
    shutdown_ok: u128,
    shutdown_failed: u128,
    safety_violations: u128,
    capture_ok: bool,
    capture_ok_without_handover: bool,
    counterexample: Option<Vec<String>>,
    counterexample_violation: Option<&'static str>,
}

#[derive(Serialize)]
struct Out {
    cpus: u8,
    protocols: Vec<ProtocolOut>,
}

fn print_json(w: &mut impl Write, a: &Args, results: &[Exploration]) -> std::io::Result<()> {
    let protocols = results
        .iter()
        .map(|e| {
            let (with, without) = capture(e);
            ProtocolOut {
                name: e.protocol,
                states: e.states,
                interleavings: e.tally.interleavings,
                shutdown_ok: e.tally.shutdown_ok,
                shutdown_failed: e.tally.shutdown_failed,
                safety_violations: e.tally.safety_violations,
                capture_ok: with,
                capture_ok_without_handover: without,
                counterexample: e.counterexample.as_ref().map(|c| c.iter().map(|s| s.to_string()).collect()),
                counterexample_violation: e.counterexample_violation,
            }
        })
        .collect();
    serde_json::to_writer_pretty(&mut *w, &Out { cpus: a.cpus, protocols })?;
    writeln!(w)
}

fn print_human(
    w: &mut impl Write,
    a: &Args,
    chosen: &[&iommu_sim::snpcheck::Protocol],
    results: &[Exploration],
) -> std::io::Result<()> {
    writeln!(w, "SNP panic path, {} CPUs (cpu0 panics, the others run an SNP guest); every interleaving", a.cpus)?;
    writeln!(
        w,
        "{:<20} {:>7} {:>14} {:>14} {:>14} {:>12}  {:<8} {:<8}",
        "protocol", "states", "interleavings", "shutdown ok", "failed", "unsafe", "capture", "no-hand"
    )?;
    for e in results {
        let (with, without) = capture(e);
        writeln!(
            w,
            "{:<20} {:>7} {:>14} {:>14} {:>14} {:>12}  {:<8} {:<8}",
            e.protocol,
            e.states,
            e.tally.interleavings,
            e.tally.shutdown_ok,
            e.tally.shutdown_failed,
            e.tally.safety_violations,
            if with { "yes" } else { "NO" },
            if without { "yes" } else { "NO" },
        )?;
    }
    writeln!(w, "unsafe: interleavings with a DECOMMISSION during a guest exit, or a DF_FLUSH before every marked core's WBINVD")?;
    writeln!(
        w,
        "capture / no-hand: the simulated AMD-Vi crash kernel, booted on each firmware outcome, captures the dump with"
    )?;
    writeln!(w, "  hand-over (adopt) / with a reset (reset-abort), in every interleaving")?;
    for (p, e) in chosen.iter().zip(results) {
        if let Some(ce) = &e.counterexample {
            writeln!(w, "\n{} — {}", p.name, p.about)?;
            writeln!(
                w,
                "  shortest failing interleaving ({} steps){}:",
                ce.len(),
                e.counterexample_violation.map(|v| format!(", {v}")).unwrap_or_default()
            )?;
            for s in ce {
                writeln!(w, "    {s}")?;
            }
        }
    }
    Ok(())
}
