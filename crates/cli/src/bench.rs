//! `handover bench`: every figure beside its baseline, from one run.

use std::io::Write;
use std::process::ExitCode;

use clap::Args as ClapArgs;
use iommu_sim::bench::{adopt_only, all, Figures};

#[derive(ClapArgs, Debug, Clone)]
pub struct Args {
    /// Smaller sizes and counts: finishes within a minute.
    #[arg(long)]
    pub quick: bool,
    #[arg(long)]
    pub json: bool,
    /// Markdown tables, as BENCHMARKS.md holds them.
    #[arg(long)]
    pub markdown: bool,
    /// Only the adoption figures (for profiling them); the other tables print empty.
    #[arg(long, hide = true)]
    pub adopt_only: bool,
}

pub fn run(a: &Args) -> Result<ExitCode, String> {
    let f = if a.adopt_only { adopt_only(a.quick) } else { all(a.quick) };
    let mut w = std::io::stdout().lock();
    let res = if a.json {
        serde_json::to_writer_pretty(&mut w, &f).map_err(std::io::Error::from).and_then(|_| writeln!(w))
    } else {
        print(&mut w, &f, a.markdown)
    };
    crate::output_result(res)
}

fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        "-".into()
    } else {
        format!("{:.2}x", a / b)
    }
}

fn print(w: &mut impl Write, f: &Figures, md: bool) -> std::io::Result<()> {
    let sep = if md { " | " } else { "  " };
    let line = |w: &mut dyn Write, cells: &[String]| -> std::io::Result<()> {
        if md {
            writeln!(w, "| {} |", cells.join(sep))
        } else {
            writeln!(w, "{}", cells.iter().map(|c| format!("{c:>14}")).collect::<Vec<_>>().join(sep))
        }
    };
    let rule = |w: &mut dyn Write, n: usize| -> std::io::Result<()> {
        if md {
            writeln!(w, "|{}", "---|".repeat(n))
        } else {
            Ok(())
        }
    };
    match f.machine {
        Some(m) => writeln!(
            w,
            "While it ran, the host gave {:.1} % of the CPUs' time to others (steal) and other processes here used \
             {:.1} %: figures are comparable only when both are near 0.\n",
            m.stolen_pct, m.others_pct
        )?,
        None => writeln!(w, "(What else used the CPUs while it ran is unknown: no /proc/stat.)\n")?,
    }
    if let Some(p) = f.pace {
        writeln!(
            w,
            "The host's pace: one thread of register-only arithmetic ran {:.3e} steps/s at the start and {:.3e} at \
             the end (runs compare only at a like pace).\n",
            p.start, p.end
        )?;
    }
    writeln!(
        w,
        "{}Adoption at scale (eager: copy every context table whole first; floor: read each live entry once; \
         pages floor: read once what the adoption read, its lines and the pages it looked at in place; five turns of the \
         adoption, its pages floor and the eager baseline: adopt/pages floor and adopt/eager are medians of the turns' \
         ratios; every live device has pages mapped, VT-d 4, AMD-Vi and SMMUv3 1)",
        if md { "### " } else { "" }
    )?;
    let head = [
        "iommu",
        "live devices",
        "adopted",
        "adopt µs",
        "eager µs",
        "floor µs",
        "pages floor µs",
        "adopt/pages floor",
        "adopt/eager",
        "new KiB",
        "read KiB",
        "eager KiB",
    ];
    line(w, &head.map(String::from))?;
    rule(w, head.len())?;
    for x in &f.adopt {
        line(
            w,
            &[
                x.iommu.to_string(),
                x.live_devices.to_string(),
                x.adopted.to_string(),
                format!("{:.0}", x.adopt_ns as f64 / 1e3),
                format!("{:.0}", x.eager_ns as f64 / 1e3),
                format!("{:.0}", x.floor_ns as f64 / 1e3),
                format!("{:.0}", x.pages_floor_ns as f64 / 1e3),
                format!("{:.2}x", x.adopt_over_pages_floor),
                format!("{:.2}x", x.adopt_over_eager),
                (x.adopt_new_bytes / 1024).to_string(),
                (x.adopt_read_bytes / 1024).to_string(),
                (x.eager_bytes / 1024).to_string(),
            ],
        )?;
    }
    writeln!(w)?;
    writeln!(
        w,
        "{}Translation in the models (per second; baseline: the same model with its caches off (IOTLB, configuration and walk caches); shared: the \
         locality workload through one shared unit, a lane per thread, both threads' total; 2 threads/1 thread: the \
         median over five turns of each turn's ratio; 2 units/1 thread: the same two threads each on its own copy of \
         the unit, sharing nothing, what two threads of this work could gain then; arithmetic 2/1: two threads of \
         register-only work against one, whether two cores were free)",
        if md { "### " } else { "" }
    )?;
    let head = [
        "iommu",
        "IOTLB hit",
        "full walk",
        "locality",
        "caches off",
        "hit/off",
        "locality/off",
        "shared 1 thread",
        "shared 2 threads",
        "2 threads/1 thread",
        "2 units/1 thread",
        "arithmetic 2/1",
    ];
    line(w, &head.map(String::from))?;
    rule(w, head.len())?;
    for x in &f.translate {
        line(
            w,
            &[
                x.iommu.to_string(),
                format!("{:.2e}", x.iotlb_hit_per_s),
                format!("{:.2e}", x.walk_per_s),
                format!("{:.2e}", x.locality_per_s),
                format!("{:.2e}", x.no_iotlb_per_s),
                ratio(x.iotlb_hit_per_s, x.no_iotlb_per_s),
                ratio(x.locality_per_s, x.no_iotlb_per_s),
                format!("{:.2e}", x.shared_1_per_s),
                format!("{:.2e}", x.shared_2_per_s),
                format!("{:.2}x", x.shared_2_over_1),
                format!("{:.2}x", x.apart_2_over_1),
                format!("{:.2}x", x.arith_2_over_1),
            ],
        )?;
    }
    writeln!(w)?;
    writeln!(
        w,
        "{}8-byte DMA read through the unit (per second, the locality workload; baseline, same run: the per-page \
         path before the fast one, with the model's front cache off)",
        if md { "### " } else { "" }
    )?;
    let head = ["iommu", "dma_read", "reference", "new/reference"];
    line(w, &head.map(String::from))?;
    rule(w, head.len())?;
    for x in &f.translate {
        line(
            w,
            &[
                x.iommu.to_string(),
                format!("{:.2e}", x.dma_read8_per_s),
                format!("{:.2e}", x.dma_read8_reference_per_s),
                ratio(x.dma_read8_per_s, x.dma_read8_reference_per_s),
            ],
        )?;
    }
    writeln!(w)?;
    writeln!(
        w,
        "{}Simulation (crash scenarios per second on the default machine; vs 1 thread: the median over five turns of \
         each turn's ratio, a turn the same seeds on one thread then on two)",
        if md { "### " } else { "" }
    )?;
    writeln!(w, "crash shared: each seed's four policies share the run up to the crash kernel's IOMMU init, as a campaign runs them")?;
    let head = ["iommu", "crash shared", "threads", "scenarios/s", "vs 1 thread"];
    line(w, &head.map(String::from))?;
    rule(w, head.len())?;
    for x in &f.simulate {
        line(
            w,
            &[
                x.iommu.to_string(),
                if x.shared_crash { "by 4 policies" } else { "no" }.to_string(),
                x.threads.to_string(),
                format!("{:.1}", x.scenarios_per_s),
                format!("{:.2}x", x.vs_one_thread),
            ],
        )?;
    }
    let short: u64 = f.simulate.iter().map(|x| x.ended_before_crash).sum();
    if short > 0 {
        writeln!(
            w,
            "\n{short} scenarios ended in the primary kernel, before any crash: the rates above count these short runs too."
        )?;
    }
    Ok(())
}
