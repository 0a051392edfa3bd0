//! `handover audit`: what each device can still reach, as a verdict (exit 0 safe, 1 unsafe, 2 unreadable
//! input), JSON, and a picture of physical memory.
//!
//! The units are found as `inspect` finds them ([`crate::inspect::UnitArgs`]). With one unit the JSON
//! keeps its single-unit shape; with several it is `{"verdict", "crashkernel", "units": [...]}`, each
//! unit in that shape, and the verdict is unsafe if any unit's is.

use std::fmt::Write as _;
use std::io::Write;
use std::process::ExitCode;

use clap::Args as ClapArgs;
use iommu_driver::audit::{audit_amdvi, audit_smmuv3, audit_vtd, Audit, Verdict};
use iommu_driver::walk::WalkLimits;
use iommu_driver::BootEnv;
use iommu_dump::{devmem, Dump, DumpHw, InspectInput, IommuKind, RecordingMem, SnapshotMmio, Unit};
use serde_json::{json, Value};

use crate::inspect::{parse_range, UnitArgs};

#[derive(ClapArgs, Debug, Clone)]
pub struct Args {
    #[arg(long)]
    pub dump: std::path::PathBuf,
    /// Register snapshot: QEMU monitor `xp` output, or Linux's VT-d `iommu_regset` debugfs file.
    #[arg(long, required_unless_present = "regs_devmem")]
    pub regs: Option<std::path::PathBuf>,
    /// Read the registers live from physical memory instead (default /dev/mem; inside a crash kernel
    /// booted with the IOMMU driver off), at the units --base/--iommu, --acpi or the dump's ACPI name.
    /// The values read are echoed to stderr as monitor `xp` lines (usable later as --regs).
    #[arg(long, value_name = "DEVMEM", num_args = 0..=1, default_missing_value = "/dev/mem", conflicts_with = "regs")]
    pub regs_devmem: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub unit: UnitArgs,
    /// The crash kernel's region, START-END.
    #[arg(long, value_parser = parse_range)]
    pub crashkernel: std::ops::Range<u64>,
    /// The machine's RAM, START-END (repeatable); the dump's own ranges when omitted.
    #[arg(long, value_parser = parse_range)]
    pub ram: Vec<std::ops::Range<u64>>,
    #[arg(long)]
    pub json: bool,
    /// Write a picture of physical memory: RAM, the crash kernel's region, each device's reach.
    #[arg(long)]
    pub svg: Option<std::path::PathBuf>,
}

pub fn run(a: &Args) -> Result<ExitCode, String> {
    let mut hw = match (&a.regs, &a.regs_devmem) {
        (Some(regs), _) => InspectInput::load(&a.dump, regs).map_err(|e| e.to_string())?.hw(),
        (None, Some(devmem)) => {
            let core = Dump::open(&a.dump).map_err(|e| format!("{}: {e}", a.dump.display()))?;
            let units = devmem::units(&a.unit.query(), &core).map_err(|e| e.to_string())?;
            let (snap, text) = devmem::snapshot(devmem, &units).map_err(|e| e.to_string())?;
            eprint!("{text}");
            DumpHw { regs: SnapshotMmio::new(snap, 0), mem: RecordingMem::new(core) }
        }
        (None, None) => return Err("give --regs FILE or --regs-devmem".into()),
    };
    let units = hw.find_units(&a.unit.query()).map_err(|e| e.to_string())?;
    let ram = if a.ram.is_empty() { hw.ram_ranges().map_err(|e| e.to_string())? } else { a.ram.clone() };
    let env =
        BootEnv { crash_kernel: true, ram, crash_region: Some(a.crashkernel.clone()), mem_encrypt: false, c_bit: 0 };
    let limits = WalkLimits::default();
    let mut audits = Vec::with_capacity(units.len());
    for unit in units {
        hw.select(unit.base);
        hw.require(unit.kind).map_err(|e| e.to_string())?;
        let audit = match unit.kind {
            IommuKind::AmdVi => audit_amdvi(&mut hw, &env, limits).map_err(|e| e.to_string()),
            IommuKind::Smmuv3 => audit_smmuv3(&mut hw, &env, limits).map_err(|e| e.to_string()),
            IommuKind::Vtd => audit_vtd(&mut hw, &env, limits).map_err(|e| e.to_string()),
        }
        .map_err(|e| format!("{} unit at {:#x}: {e}", unit.kind, unit.base))?;
        audits.push((unit, audit));
    }
    // One audit over every unit's devices: the verdict and the picture cover the machine.
    let all = Audit {
        bypass: audits.iter().any(|(_, x)| x.bypass),
        devices: audits.iter().flat_map(|(_, x)| x.devices.iter().cloned()).collect(),
        notes: audits.iter().flat_map(|(_, x)| x.notes.iter().cloned()).collect(),
    };
    if let Some(path) = &a.svg {
        std::fs::write(path, svg(&all, &env)).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let mut w = std::io::stdout().lock();
    let res = if a.json {
        print_json(&mut w, a, &audits, &all)
    } else {
        audits.iter().try_for_each(|(u, x)| {
            writeln!(w, "{} unit at {:#x} ({})", u.kind, u.base, u.origin)?;
            print_human(&mut w, x, &env)
        })
    };
    crate::output_result(res)?;
    Ok(match all.verdict() {
        Verdict::Safe => ExitCode::SUCCESS,
        // Not proven safe: the same exit status as unsafe.
        Verdict::Unsafe | Verdict::Incomplete => ExitCode::from(1),
    })
}

fn perm(r: bool, w: bool) -> &'static str {
    match (r, w) {
        (true, true) => "rw",
        (true, false) => "r",
        (false, true) => "w",
        _ => "-",
    }
}

fn verdict_word(a: &Audit) -> &'static str {
    match a.verdict() {
        Verdict::Safe => "safe",
        Verdict::Unsafe => "unsafe",
        Verdict::Incomplete => "incomplete",
    }
}

/// One unit's audit in the single-unit JSON shape.
fn unit_json(a: &Args, unit: &Unit, audit: &Audit) -> Value {
    let devices: Vec<_> = audit
        .devices
        .iter()
        .map(|d| {
            json!({
                "sid": d.sid,
                "domain": d.domain,
                "flags": d.flags.iter().map(|f| f.word()).collect::<Vec<_>>(),
                "reach": d.reach.iter().map(|r| json!({"phys": r.phys, "size": r.size, "perm": perm(r.read, r.write)})).collect::<Vec<_>>(),
                "notes": d.notes,
            })
        })
        .collect();
    json!({
        "iommu": unit.kind.name(),
        "base": unit.base,
        "origin": unit.origin,
        "verdict": verdict_word(audit),
        "translation_off": audit.bypass,
        "crashkernel": {"start": a.crashkernel.start, "end": a.crashkernel.end},
        "devices": devices,
        "notes": audit.notes,
    })
}

fn print_json(w: &mut impl Write, a: &Args, audits: &[(Unit, Audit)], all: &Audit) -> std::io::Result<()> {
    let v = match audits {
        [(unit, audit)] => unit_json(a, unit, audit),
        _ => json!({
            "verdict": verdict_word(all),
            "crashkernel": {"start": a.crashkernel.start, "end": a.crashkernel.end},
            "units": audits.iter().map(|(u, x)| unit_json(a, u, x)).collect::<Vec<_>>(),
        }),
    };
    serde_json::to_writer_pretty(&mut *w, &v)?;
    writeln!(w)
}

fn print_human(w: &mut impl Write, audit: &Audit, env: &BootEnv) -> std::io::Result<()> {
    writeln!(w, "verdict: {}", verdict_word(audit))?;
    for d in &audit.devices {
        let bytes: u64 = d.reach.iter().map(|r| r.size).sum();
        let flags: Vec<&str> = d.flags.iter().map(|f| f.word()).collect();
        writeln!(w, "sid {:#06x}  reaches {} in {} ranges  {}", d.sid, human(bytes), d.reach.len(), flags.join(" "))?;
        if let Some(ck) = &env.crash_region {
            for r in d.reach.iter().filter(|r| r.phys < ck.end && ck.start < r.end()) {
                writeln!(w, "    threatens the crash kernel: {:#x}-{:#x} {}", r.phys, r.end(), perm(r.read, r.write))?;
            }
        }
        for n in &d.notes {
            writeln!(w, "    ! {n}")?;
        }
    }
    for n in &audit.notes {
        writeln!(w, "! {n}")?;
    }
    Ok(())
}

fn human(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{} KiB", b >> 10),
    }
}

/// Physical memory on a linear axis: a row for RAM and the crash region, one per device.
fn svg(audit: &Audit, env: &BootEnv) -> String {
    let top = env.ram.iter().map(|r| r.end).chain(env.crash_region.iter().map(|r| r.end)).max().unwrap_or(1).max(1);
    let (left, width, row) = (120.0, 900.0, 22.0);
    let x = |a: u64| left + width * (a as f64 / top as f64);
    let wid = |a: u64, b: u64| ((b.saturating_sub(a)) as f64 / top as f64 * width).max(1.0);
    let rows = audit.devices.len() + 2;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="monospace" font-size="11">"#,
        left + width + 20.0,
        row * rows as f64 + 30.0
    );
    let _ = write!(s, r#"<text x="4" y="15">RAM</text>"#);
    for r in &env.ram {
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="4" width="{:.1}" height="14" fill="#cfd8dc"/>"##,
            x(r.start),
            wid(r.start, r.end)
        );
    }
    if let Some(ck) = &env.crash_region {
        let _ = write!(s, r#"<text x="4" y="{:.0}">crash kernel</text>"#, row + 15.0);
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="{:.0}" width="{:.1}" height="14" fill="#ffb300"/>"##,
            x(ck.start),
            row + 4.0,
            wid(ck.start, ck.end)
        );
    }
    for (i, d) in audit.devices.iter().enumerate() {
        let y = row * (i as f64 + 2.0);
        let _ = write!(s, r#"<text x="4" y="{:.0}">sid {:#06x}</text>"#, y + 15.0, d.sid);
        for r in &d.reach {
            let fill = if r.write { "#c62828" } else { "#1565c0" };
            let _ = write!(
                s,
                r#"<rect x="{:.1}" y="{:.0}" width="{:.1}" height="14" fill="{fill}"/>"#,
                x(r.phys),
                y + 4.0,
                wid(r.phys, r.end())
            );
        }
    }
    let _ = write!(
        s,
        r#"<text x="{left}" y="{:.0}">0</text><text x="{:.0}" y="{:.0}" text-anchor="end">{top:#x}</text></svg>"#,
        row * rows as f64 + 20.0,
        left + width,
        row * rows as f64 + 20.0
    );
    s
}
