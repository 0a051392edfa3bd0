//! Campaigns: many crash scenarios, each drawn from its own seed, run under every policy on every IOMMU,
//! summarised as capture rates with their confidence intervals.
//!
//! Run `i` of a campaign with seed `S` is scenario `i / cells` of the campaign (drawn from
//! `mix(S, i / cells)`) in cell `i % cells` (an IOMMU × policy pair): every cell sees the same scenarios,
//! so policies are compared on the same crashes, and a run's result depends only on `S` and `i` — never on
//! the thread count or the order runs finish in.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use iommu_driver::Policy;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use crate::inject::Faults;
use crate::outcome::{Failure, Outcome};
use crate::scenario::{run_policies, Knobs, Scenario};
use crate::unit::IommuKind;

/// What to run.
#[derive(Clone, Debug)]
pub struct CampaignSpec {
    /// Runs in all (spread evenly over the cells).
    pub runs: u64,
    /// The campaign seed every scenario's seed is mixed from ([`scenario_seed`]).
    pub seed: u64,
    /// The IOMMUs crossed with `policies` into cells.
    pub iommus: Vec<IommuKind>,
    /// The crash-kernel policies crossed with `iommus` into cells.
    pub policies: Vec<Policy>,
    /// Worker threads (1 runs on the caller's thread).
    pub threads: usize,
    /// The faults runs draw from: each run injects one of them, or none, with equal odds.
    pub inject: Faults,
}

/// One cell's tally.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CellResult {
    /// The cell's IOMMU name.
    pub iommu: &'static str,
    /// The cell's policy name.
    pub policy: &'static str,
    /// Runs made in this cell.
    pub runs: u64,
    /// Runs whose dump was written with no old memory changed outside device buffers (the IOMMU's own reused
    /// structures aside): a corrupt dump is counted in `corrupt_runs`, not here.
    pub captured: u64,
    /// `captured / runs` (0 for a cell with no run).
    pub capture_rate: f64,
    /// 95 % Wilson score interval of the capture rate.
    pub ci95: [f64; 2],
    /// Runs with old-memory pages changed outside device buffers and the IOMMU's own structures.
    pub corrupt_runs: u64,
    /// Runs where DMA wrote the crash kernel's own region.
    pub crashkernel_hit_runs: u64,
    /// The five most frequent failure classes, with their counts.
    pub failures: BTreeMap<String, u64>,
    /// Per injected fault (`none` for runs without one; `NAME (not applicable)` for runs where the fault found
    /// nothing to act on, e.g. a register fault on an SNP host): runs and captures.
    pub by_fault: BTreeMap<String, FaultTally>,
}

/// Runs with one fault injected, and how many captured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FaultTally {
    /// Runs that injected the fault.
    pub runs: u64,
    /// Of those, runs counted as captured (as [`CellResult::captured`]).
    pub captured: u64,
}

/// A whole campaign's figures.
#[derive(Clone, Debug, Serialize)]
pub struct CampaignResult {
    /// Runs made in all.
    pub runs: u64,
    /// The campaign seed, which with `runs` reproduces every result.
    pub seed: u64,
    /// Wall-clock seconds the campaign took (measured; not reproducible).
    pub elapsed_s: f64,
    /// One tally per IOMMU × policy cell, IOMMUs in the spec's order, policies within each.
    pub results: Vec<CellResult>,
}

/// The 95 % Wilson score interval for `k` successes out of `n` (`[0, 1]` when `n` is 0).
pub fn wilson95(k: u64, n: u64) -> [f64; 2] {
    if n == 0 {
        return [0.0, 1.0];
    }
    let z = 1.959_963_984_540_054_f64;
    let (n, p) = (n as f64, k as f64 / n as f64);
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    // The interval holds the observed rate: rounding alone must not lift the bound of 0 of n above 0 (or drop
    // that of n of n below 1).
    [(centre - half).clamp(0.0, p), (centre + half).clamp(p, 1.0)]
}

/// SplitMix64's finaliser: the seed of scenario `index` of a campaign seeded `seed`.
pub fn scenario_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(0x6a09_e667_f3bc_c908);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The scenario drawn from `seed` on `kind`: crash instant (inside the run, from the seed), platform
/// (aborts fatal or not, VT-d table mode and format, SMMUv3 walker coherency, the SNP host's shutdown at panic), load
/// (NIC packet rate) and the crash kernel's timing.
pub fn draw(kind: IommuKind, policy: Policy, seed: u64, catalogue: Faults) -> Scenario {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let faults: Vec<Faults> = catalogue.each().collect();
    let pick = rng.random_range(0..=faults.len());
    let inject = faults.get(pick).copied().unwrap_or(Faults::NONE);
    let aborts_fatal = rng.random_bool(0.5);
    let scalable = rng.random_bool(0.5);
    let coherent_walker = rng.random_bool(0.9);
    let snp_shutdown = match rng.random_range(0..3u8) {
        0 => None,
        1 => Some(true),
        _ => Some(false),
    };
    let knobs = Knobs {
        aborts_fatal,
        iommu: kind,
        scalable,
        vtd_first_level: false,
        snp_shutdown,
        coherent_walker,
        early_ticks: rng.random_range(10..=120),
        probe_ticks: rng.random_range(20..=200),
        nic_rate: rng.random_range(1..=3),
        inject,
        x2apic: false,
    };
    let seed = rng.random();
    // Drawn last, so the choices above stay what they were before first-level tables were drawn: half the
    // scalable-mode runs put both kernels on first-level tables (a unit with ECAP.FLTS, as Linux 6.x uses it).
    let knobs = Knobs { vtd_first_level: scalable && rng.random_bool(0.5), ..knobs };
    Scenario { policy, seed, knobs }
}

/// A failure's class: what counts as "the same reason" across runs (no addresses or counts).
pub fn failure_class(f: &Failure) -> String {
    match f {
        Failure::PrimaryInit(_) => "primary kernel IOMMU init failed".into(),
        Failure::PrimarySetup(_) => "primary kernel device setup failed".into(),
        Failure::PrimaryWorkload(_) => "primary kernel workload failed".into(),
        Failure::CrashInit(e) => format!("crash kernel IOMMU init failed: {}", variant(e)),
        Failure::DiskProbe(e) => format!("crash kernel disk probe failed: {}", variant(e)),
        Failure::DumpStalled { .. } => "dump write stalled".into(),
        Failure::DumpWrite(e) => format!("dump write failed: {}", variant(e)),
        Failure::DiskErrors(_) => "dump writes failed on the disk".into(),
        Failure::FatalAbort { device, before_init: false, .. } => format!("fatal DMA abort ({device})"),
        Failure::FatalAbort { device, before_init: true, .. } => format!("fatal DMA abort before init ({device})"),
        Failure::CrashKernelWritten { .. } => "crash kernel's own memory written by DMA".into(),
        Failure::TimerCheck { .. } => "timer doesn't work through Interrupt-remapped IO-APIC".into(),
    }
}

/// The name of an error's variant path, e.g. `Amdvi(CompletionWaitTimeout)`: its `Debug` text up to the
/// first field, parentheses closed.
fn variant(e: &impl std::fmt::Debug) -> String {
    let full = format!("{e:?}");
    let mut out: String = full.chars().take_while(|c| !matches!(c, '{' | ' ' | ',')).collect();
    let open = out.matches('(').count().saturating_sub(out.matches(')').count());
    out.extend(std::iter::repeat_n(')', open));
    out
}

/// What one run contributes to its cell.
#[derive(Clone, Debug, PartialEq)]
struct Tally {
    cell: usize,
    captured: bool,
    corrupt: bool,
    crashkernel_hit: bool,
    failure: Option<String>,
    fault: String,
}

fn tally(cell: usize, o: &Outcome) -> Tally {
    Tally {
        cell,
        // A dump written over corrupted old memory is not a capture (`simulate` prints it CORRUPT).
        captured: o.captured && o.changed_pages.other == 0,
        corrupt: o.changed_pages.other > 0,
        crashkernel_hit: o.crashkernel_pages_written > 0,
        failure: o.failure.as_ref().map(|f| f.typed().map_or_else(|| f.to_string(), failure_class)),
        // A fault that did not apply to the run's platform injected nothing: counted apart, not as the fault.
        fault: match (o.inject.is_empty(), o.inject_applied) {
            (true, _) => "none".into(),
            (false, true) => o.inject.join(","),
            (false, false) => format!("{} (not applicable)", o.inject.join(",")),
        },
    }
}

/// Run a campaign. `progress` is called with the number of runs done so far (from any thread).
pub fn run_campaign(spec: &CampaignSpec, progress: &(dyn Fn(u64) + Sync)) -> CampaignResult {
    let started = std::time::Instant::now();
    let cells: Vec<(IommuKind, Policy)> =
        spec.iommus.iter().flat_map(|&k| spec.policies.iter().map(move |&p| (k, p))).collect();
    let done = std::sync::atomic::AtomicU64::new(0);
    // Runs come in groups: one scenario on one IOMMU under every policy (consecutive run indices). A group
    // runs the part before the crash kernel's IOMMU init once (`run_policies`); its results are those of the
    // runs one by one.
    let per = spec.policies.len().max(1) as u64;
    let one = |g: u64| -> Vec<Tally> {
        let first = g * per;
        let n = per.min(spec.runs.saturating_sub(first));
        let cell = (first % cells.len() as u64) as usize;
        let kind = cells[cell].0;
        let policies: Vec<Policy> = (0..n).map(|k| cells[cell + k as usize].1).collect();
        let scenario = draw(kind, policies[0], scenario_seed(spec.seed, first / cells.len() as u64), spec.inject);
        let out = run_policies(&scenario, &policies);
        let before = done.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        if (before + n) / 256 > before / 256 || before + n == spec.runs {
            progress(before + n);
        }
        out.iter().enumerate().map(|(k, o)| tally(cell + k, o)).collect()
    };
    let groups = spec.runs.div_ceil(per);
    let tallies: Vec<Tally> = if cells.is_empty() {
        Vec::new()
    } else if spec.threads <= 1 {
        (0..groups).flat_map(one).collect()
    } else {
        match rayon::ThreadPoolBuilder::new().num_threads(spec.threads).build() {
            Ok(pool) => pool.install(|| (0..groups).into_par_iter().flat_map_iter(one).collect()),
            Err(_) => (0..groups).flat_map(one).collect(),
        }
    };
    let mut results: Vec<CellResult> =
        cells.iter().map(|&(k, p)| CellResult { iommu: k.name(), policy: p.name(), ..CellResult::default() }).collect();
    let mut reasons: Vec<BTreeMap<String, u64>> = vec![BTreeMap::new(); cells.len()];
    for t in &tallies {
        let r = &mut results[t.cell];
        r.runs += 1;
        r.captured += t.captured as u64;
        r.corrupt_runs += t.corrupt as u64;
        r.crashkernel_hit_runs += t.crashkernel_hit as u64;
        if let Some(f) = &t.failure {
            *reasons[t.cell].entry(f.clone()).or_default() += 1;
        }
        let by = r.by_fault.entry(t.fault.clone()).or_default();
        by.runs += 1;
        by.captured += t.captured as u64;
    }
    for (r, why) in results.iter_mut().zip(reasons) {
        r.capture_rate = if r.runs == 0 { 0.0 } else { r.captured as f64 / r.runs as f64 };
        r.ci95 = wilson95(r.captured, r.runs);
        let mut top: Vec<(String, u64)> = why.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        r.failures = top.into_iter().take(5).collect();
    }
    CampaignResult { runs: spec.runs, seed: spec.seed, elapsed_s: started.elapsed().as_secs_f64(), results }
}

/// Capture rates with their intervals, one group of bars per IOMMU, one bar per policy.
pub fn svg(r: &CampaignResult) -> String {
    let iommus: Vec<&str> = r.results.iter().map(|c| c.iommu).fold(Vec::new(), |mut v, k| {
        if !v.contains(&k) {
            v.push(k);
        }
        v
    });
    let policies: Vec<&str> = r.results.iter().map(|c| c.policy).fold(Vec::new(), |mut v, p| {
        if !v.contains(&p) {
            v.push(p);
        }
        v
    });
    let colors = ["#c0392b", "#e67e22", "#2980b9", "#27ae60", "#8e44ad"];
    let (bar, gap, plot_h, left, top) = (28.0, 24.0, 240.0, 60.0, 50.0);
    let group_w = policies.len() as f64 * bar + gap;
    let width = left + iommus.len() as f64 * group_w + 200.0;
    let height = top + plot_h + 60.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="20" font-size="15">Capture rate by IOMMU and policy ({} runs, seed {}), bars: 95 % Wilson interval</text>"#,
        r.runs, r.seed
    );
    for t in 0..=4 {
        let v = t as f64 / 4.0;
        let y = top + plot_h * (1.0 - v);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{:.0} %</text>"##,
            left + iommus.len() as f64 * group_w,
            left - 6.0,
            y + 4.0,
            v * 100.0
        );
    }
    for (gi, k) in iommus.iter().enumerate() {
        let gx = left + gi as f64 * group_w + gap / 2.0;
        for (pi, p) in policies.iter().enumerate() {
            let Some(c) = r.results.iter().find(|c| c.iommu == *k && c.policy == *p) else { continue };
            let x = gx + pi as f64 * bar;
            let h = plot_h * c.capture_rate;
            let _ = writeln!(
                s,
                r#"<rect x="{x}" y="{}" width="{}" height="{h}" fill="{}"><title>{k} {p}: {}/{} captured</title></rect>"#,
                top + plot_h - h,
                bar - 4.0,
                colors[pi % colors.len()],
                c.captured,
                c.runs
            );
            let (ylo, yhi) = (top + plot_h * (1.0 - c.ci95[0]), top + plot_h * (1.0 - c.ci95[1]));
            let cx = x + (bar - 4.0) / 2.0;
            let _ = writeln!(s, r#"<line x1="{cx}" x2="{cx}" y1="{ylo}" y2="{yhi}" stroke="black"/>"#);
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{k}</text>"#,
            gx + policies.len() as f64 * bar / 2.0,
            top + plot_h + 18.0
        );
    }
    let lx = left + iommus.len() as f64 * group_w + 20.0;
    for (pi, p) in policies.iter().enumerate() {
        let y = top + pi as f64 * 20.0;
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{y}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{p}</text>"#,
            colors[pi % colors.len()],
            lx + 18.0,
            y + 10.0
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_interval_matches_the_textbook_values() {
        // 8 of 10: the standard worked example gives [0.490, 0.943].
        let [lo, hi] = wilson95(8, 10);
        assert!((lo - 0.4902).abs() < 1e-3 && (hi - 0.9433).abs() < 1e-3, "{lo} {hi}");
        assert_eq!(wilson95(0, 0), [0.0, 1.0]);
        let [lo, hi] = wilson95(0, 50);
        assert!(lo.abs() < 1e-12 && (hi - 0.0713).abs() < 1e-3, "{lo} {hi}");
        let [lo, hi] = wilson95(50, 50);
        assert!((hi - 1.0).abs() < 1e-12 && (lo - 0.9287).abs() < 1e-3, "{lo} {hi}");
        // The interval always holds the observed rate, rounding or not (0 of 6 gave a bound of 2.8e-17).
        for n in 1..200u64 {
            for k in [0, n] {
                let [lo, hi] = wilson95(k, n);
                let p = k as f64 / n as f64;
                assert!(lo <= p && p <= hi, "{k}/{n}: [{lo}, {hi}]");
            }
        }
    }

    #[test]
    fn vtd_runs_draw_every_table_format_and_first_level_only_in_scalable_mode() {
        let draws: Vec<Knobs> =
            (0..200).map(|i| draw(IommuKind::Vtd, Policy::Adopt, scenario_seed(3, i), Faults::NONE).knobs).collect();
        assert!(draws.iter().all(|k| k.scalable || !k.vtd_first_level));
        for (scalable, fl) in [(false, false), (true, false), (true, true)] {
            assert!(draws.iter().any(|k| (k.scalable, k.vtd_first_level) == (scalable, fl)), "{scalable} {fl}");
        }
    }

    #[test]
    fn scenario_seeds_differ_by_index_and_by_campaign_seed() {
        let a: std::collections::BTreeSet<u64> = (0..1000).map(|i| scenario_seed(7, i)).collect();
        assert_eq!(a.len(), 1000);
        assert_ne!(scenario_seed(7, 0), scenario_seed(8, 0));
    }

    #[test]
    fn failure_classes_drop_addresses_and_keep_the_error_variant() {
        let f = Failure::FatalAbort { device: "nic".into(), what: "rx-desc", iova: 0x1234, before_init: false };
        assert_eq!(failure_class(&f), "fatal DMA abort (nic)");
        let e = iommu_driver::DriverError::Amdvi(iommu_driver::amdvi::AmdError::CompletionWaitTimeout {
            head: 0x20,
            tail: 0x20,
        });
        assert_eq!(
            failure_class(&Failure::CrashInit(e)),
            "crash kernel IOMMU init failed: Amdvi(CompletionWaitTimeout)"
        );
    }
}
