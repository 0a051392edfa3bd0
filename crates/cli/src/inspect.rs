//! `handover inspect`: decode an IOMMU's tables from a dump and a register snapshot.
//!
//! The units come from `--base` (one), or else from ACPI: a raw table file (`--acpi`), the units an
//! `iommu_regset` snapshot names, or the DMAR/IVRS/IORT in the dump itself (RSDP scan). With one unit the
//! JSON is that unit's object; with several, `{"units": [...]}` of such objects.

use iommu_driver::irq::{IrqEntry, IrqTables};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args as ClapArgs;
use iommu_driver::survey::{self, Budget, Device, Mode, UnitScan, Work};
use iommu_driver::BootEnv;
use iommu_dump::{DumpHw, InspectInput, IommuKind, Unit, UnitQuery};
use serde_json::{json, Value};

/// Which units to decode: shared by `inspect` and `audit`.
#[derive(ClapArgs, Debug, Clone, Default)]
pub struct UnitArgs {
    /// The IOMMU kind. Without --base it picks the ACPI table to look for, and is inferred from the table
    /// found when omitted.
    #[arg(long, value_parser = ["vtd", "amdvi", "smmuv3"])]
    pub iommu: Option<String>,
    /// One unit's MMIO base address (hex with 0x, or decimal). When omitted, the units come from --acpi,
    /// from an iommu_regset snapshot, or from the ACPI tables in the dump.
    #[arg(long, value_parser = parse_u64)]
    pub base: Option<u64>,
    /// A raw DMAR, IVRS or IORT table (`cat /sys/firmware/acpi/tables/DMAR > dmar.bin`) naming the units.
    #[arg(long, conflicts_with = "base")]
    pub acpi: Option<std::path::PathBuf>,
    /// The RSDP's physical address in the dump, when it is not in the BIOS area (UEFI machines).
    #[arg(long, value_parser = parse_u64, conflicts_with_all = ["base", "acpi"])]
    pub rsdp: Option<u64>,
}

impl UnitArgs {
    pub fn query(&self) -> UnitQuery {
        UnitQuery {
            base: self.base,
            kind: self.iommu.as_deref().and_then(|n| n.parse::<IommuKind>().ok()),
            acpi: self.acpi.clone(),
            rsdp: self.rsdp,
        }
    }
}

#[derive(ClapArgs, Debug, Clone)]
pub struct Args {
    /// ELF core: QEMU `dump-guest-memory` output or `/proc/vmcore`.
    #[arg(value_name = "DUMP", required_unless_present = "dump")]
    pub dump_path: Option<PathBuf>,
    /// The dump, as an option (the positional argument's alias).
    #[arg(long, value_name = "DUMP", conflicts_with = "dump_path")]
    pub dump: Option<PathBuf>,
    /// Register snapshot: QEMU monitor `xp` output over the unit's MMIO (absolute addresses), or Linux's
    /// VT-d `iommu_regset` debugfs file.
    #[arg(long)]
    pub regs: std::path::PathBuf,
    #[command(flatten)]
    pub unit: UnitArgs,
    /// The crash kernel's region, to flag tables inside it: as `audit --crashkernel` takes it
    /// (`30000000-3fffffff`, `256M@0x30000000`).
    #[arg(long, value_parser = crate::audit::parse_crashkernel)]
    pub crashkernel: Option<std::ops::Range<u64>>,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write the pages the decode read as a small ELF core (a test fixture). Never over an input, nor
    /// over an existing file unless --force.
    #[arg(long)]
    pub save_fixture: Option<PathBuf>,
    /// Let --save-fixture replace an existing file (never an input).
    #[arg(long, requires = "save_fixture")]
    pub force: bool,
    #[command(flatten)]
    pub budget: BudgetArgs,
}

/// The total work budget of one inspection or audit.
#[derive(ClapArgs, Debug, Clone)]
pub struct BudgetArgs {
    /// At most this many page-table pages read, over every device and unit.
    #[arg(long, default_value_t = Budget::default().max_pages)]
    pub max_pages: u64,
    /// At most this many IOVA runs kept, over every device and unit.
    #[arg(long, default_value_t = Budget::default().max_runs)]
    pub max_runs: u64,
    /// At most this many problems kept (more are counted).
    #[arg(long, default_value_t = Budget::default().max_problems)]
    pub max_problems: u64,
    /// At most this many devices listed, over every unit (more are counted, and make the audit incomplete).
    #[arg(long, default_value_t = Budget::default().max_devices)]
    pub max_devices: u64,
}

impl BudgetArgs {
    pub fn work(&self) -> Work {
        Work::new(Budget {
            max_pages: self.max_pages,
            max_runs: self.max_runs,
            max_problems: self.max_problems,
            max_devices: self.max_devices,
        })
    }
}

/// The dump named by the positional argument or `--dump`.
pub fn dump_of(pos: &Option<PathBuf>, flag: &Option<PathBuf>) -> Result<PathBuf, String> {
    pos.clone().or_else(|| flag.clone()).ok_or_else(|| "give the dump (a positional argument or --dump)".into())
}

pub fn parse_u64(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(&h.replace('_', ""), 16),
        None => t.replace('_', "").parse(),
    };
    r.map_err(|e| format!("{s:?} is not an address: {e}"))
}

/// Scan `unit` of `hw` (selected) with the survey of its kind.
pub fn scan_unit(hw: &mut DumpHw, kind: IommuKind, env: &BootEnv, work: &mut Work) -> UnitScan {
    match kind {
        IommuKind::Vtd => survey::scan_vtd(hw, env, work),
        IommuKind::Amdvi => survey::scan_amdvi(hw, env, work),
        IommuKind::Smmuv3 => survey::scan_smmuv3(hw, env, work),
    }
}

/// The mode a unit of `kind` is reported in when its registers could not be read.
pub fn default_mode(kind: IommuKind) -> Mode {
    match kind {
        IommuKind::Vtd => Mode::VtdLegacy,
        IommuKind::Amdvi => Mode::AmdViV1,
        IommuKind::Smmuv3 => Mode::Smmuv3Linear,
    }
}

/// A requester's name beside its number: the PCI BDF for VT-d and AMD-Vi requester IDs.
pub fn bdf(mode: Mode, id: u32) -> Option<String> {
    match mode {
        Mode::Smmuv3Linear | Mode::Smmuv3TwoLevel => None,
        _ => u16::try_from(id).ok().map(|id| iommu_spec::Rid(id).to_string()),
    }
}

fn perm(r: bool, w: bool) -> &'static str {
    match (r, w) {
        (true, true) => "rw",
        (true, false) => "r",
        (false, true) => "w",
        _ => "-",
    }
}

/// Refuse to write `out` over an input, or over an existing file without `force`.
pub fn check_output(out: &std::path::Path, inputs: &[&std::path::Path], force: bool) -> Result<(), String> {
    let canon = |p: &std::path::Path| std::fs::canonicalize(p).ok();
    if let Some(o) = canon(out) {
        if inputs.iter().any(|i| canon(i).as_ref() == Some(&o)) {
            return Err(format!("{}: is an input; not overwriting it", out.display()));
        }
        if !force {
            return Err(format!("{}: exists; give --force to replace it", out.display()));
        }
    }
    Ok(())
}

pub fn run(a: &Args) -> Result<ExitCode, String> {
    let dump = dump_of(&a.dump_path, &a.dump)?;
    if let Some(path) = &a.save_fixture {
        check_output(path, &[&dump, &a.regs], a.force)?;
    }
    let input = InspectInput::load(&dump, &a.regs).map_err(|e| e.to_string())?;
    let mut hw: DumpHw = input.hw();
    let units = hw.find_units(&a.unit.query()).map_err(|e| e.to_string())?;
    let env = BootEnv {
        crash_kernel: true,
        ram: hw.ram_ranges().map_err(|e| e.to_string())?,
        crash_region: a.crashkernel.clone(),
        mem_encrypt: false,
        c_bit: hw.sme_mask().map_err(|e| e.to_string())?,
    };
    let mut work = a.budget.work();
    let mut outs = Vec::with_capacity(units.len());
    for unit in units {
        hw.select(unit.base);
        hw.require(unit.kind).map_err(|e| e.to_string())?;
        let scan = scan_unit(&mut hw, unit.kind, &env, &mut work);
        let irq = decode_irqs(&mut hw, unit.kind, &env);
        outs.push((unit, scan, irq));
    }
    if let Some(path) = &a.save_fixture {
        hw.save_touched(path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if work.spent.exhausted.is_some() {
        eprintln!("handover: the work budget ran out ({}); the decode is incomplete", work_line(&work));
    }
    let mut w = std::io::stdout().lock();
    let res = if a.json {
        let units: Vec<Value> = outs
            .iter()
            .map(|(u, s, irq)| {
                let mut v = unit_json(u, s);
                v["interrupts"] = irq.as_ref().map_or(Value::Null, |t| irq_json(s.mode, t));
                v
            })
            .collect();
        let v = match <[Value; 1]>::try_from(units) {
            Ok([one]) => one,
            Err(all) => json!({ "units": all }),
        };
        serde_json::to_writer_pretty(&mut w, &v).map_err(std::io::Error::from).and_then(|_| writeln!(w))
    } else {
        outs.iter().try_for_each(|(u, s, irq)| {
            print_human(&mut w, u, s)?;
            irq.as_ref().map_or(Ok(()), |t| print_irqs(&mut w, s.mode, t))
        })
    };
    crate::output_result(res)
}

/// The unit's interrupt-remapping tables, decoded read-only (`iommu_driver::irq`); `None` for SMMUv3, which has
/// none (its MSIs are writes through the stream table).
pub fn decode_irqs(hw: &mut DumpHw, kind: IommuKind, env: &BootEnv) -> Option<IrqTables> {
    match kind {
        IommuKind::Vtd => Some(iommu_driver::irq::decode_vtd(hw)),
        IommuKind::Amdvi => Some(iommu_driver::irq::decode_amdvi(hw, env)),
        IommuKind::Smmuv3 => None,
    }
}

fn irq_entry_json(mode: Mode, e: &IrqEntry) -> Value {
    json!({
        "index": e.index,
        "source": e.source,
        "id": e.source.and_then(|s| bdf(mode, s as u32)),
        "present": e.present,
        "vector": e.vector,
        "dest": e.dest,
        "logical": e.logical,
        "targets_cpu": e.targets_cpu(),
        "problem": e.problem,
        "raw": [format!("{:#018x}", e.raw[0]), format!("{:#018x}", e.raw[1])],
    })
}

pub fn irq_json(mode: Mode, t: &IrqTables) -> Value {
    json!({
        "remapping": t.remapping,
        "tables": t.tables.iter().map(|(a, d, n)| json!({"address": a, "device": d, "entries": n})).collect::<Vec<_>>(),
        "entries": t.entries.iter().map(|e| irq_entry_json(mode, e)).collect::<Vec<_>>(),
        "unused": t.unused,
        "unread_pages": t.unread,
    })
}

/// Which devices can raise which interrupts: every entry in use, and each that reaches no CPU, by why.
fn print_irqs(w: &mut impl Write, mode: Mode, t: &IrqTables) -> std::io::Result<()> {
    if t.tables.is_empty() {
        return writeln!(w, "interrupt remapping: no table in use");
    }
    writeln!(
        w,
        "interrupt remapping {}: {} tables, {} entries in use, {} unused{}",
        if t.remapping { "on" } else { "off" },
        t.tables.len(),
        t.entries.len(),
        t.unused,
        if t.unread.is_empty() { String::new() } else { format!(", {} table pages not in the dump", t.unread.len()) }
    )?;
    for e in &t.entries {
        let who = e.source.map_or("any source".to_string(), |s| bdf(mode, s as u32).unwrap_or(format!("{s:#06x}")));
        let to = if e.logical { "logical" } else { "APIC" };
        write!(w, "  {who:<12} index {:>5}  vector {:#04x} -> {to} {:#x}", e.index, e.vector, e.dest)?;
        match (e.present, e.problem, e.targets_cpu()) {
            (false, _, _) => writeln!(w, "  ! not present")?,
            (true, Some(p), _) => writeln!(w, "  ! {p}")?,
            (true, None, false) => writeln!(w, "  ! targets no CPU")?,
            (true, None, true) => writeln!(w)?,
        }
    }
    Ok(())
}

/// The work done, for a message.
pub fn work_line(w: &Work) -> String {
    format!(
        "{} of {} table pages, {} of {} runs, {} problems kept of {} met",
        w.spent.pages,
        w.budget.max_pages,
        w.spent.runs,
        w.budget.max_runs,
        w.spent.problems,
        w.spent.problems + w.spent.problems_dropped
    )
}

/// The work done, as JSON.
pub fn work_json(w: &Work) -> Value {
    json!({
        "pages": w.spent.pages,
        "runs": w.spent.runs,
        "problems": w.spent.problems,
        "problems_dropped": w.spent.problems_dropped,
        "devices": w.spent.devices,
        "devices_dropped": w.spent.devices_dropped,
        "exhausted": w.spent.exhausted.is_some(),
        "budget": {
            "pages": w.budget.max_pages,
            "runs": w.budget.max_runs,
            "problems": w.budget.max_problems,
            "devices": w.budget.max_devices,
        },
    })
}

fn device_json(mode: Mode, d: &Device) -> Value {
    json!({
        "sid": d.id,
        "id": bdf(mode, d.id).unwrap_or_else(|| format!("{:#x}", d.id)),
        "domain": d.domain,
        "kind": d.translation.word(),
        "format": match d.translation {
            iommu_driver::survey::Translation::Translated { format, .. } => Some(format.name()),
            _ => None,
        },
        "mappings": d.runs.iter().map(|r| json!({"iova": r.iova, "phys": r.phys, "size": r.size, "perm": r.perm()})).collect::<Vec<_>>(),
        "problems": d.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "problems_dropped": d.problems_dropped,
    })
}

fn unit_json(u: &Unit, s: &UnitScan) -> Value {
    json!({
        "base": u.base,
        "origin": u.origin,
        "iommu": s.mode.iommu(),
        "mode": s.mode.word(),
        "translation_enabled": s.translation_enabled,
        "root_table": s.root_table,
        "devices": s.devices.iter().map(|d| device_json(s.mode, d)).collect::<Vec<_>>(),
        "problems": s.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "problems_dropped": s.problems_dropped,
    })
}

fn print_human(w: &mut impl Write, u: &Unit, s: &UnitScan) -> std::io::Result<()> {
    writeln!(
        w,
        "{} at {:#x} ({}), {} mode, translation {}, root table {:#x}",
        s.mode.iommu(),
        u.base,
        u.origin,
        s.mode.word(),
        match (s.scanned, s.translation_enabled) {
            (false, _) => "unknown",
            (true, true) => "on",
            (true, false) => "off",
        },
        s.root_table
    )?;
    for d in &s.devices {
        let dom = d.domain.map_or("-".to_string(), |x| x.to_string());
        let id = bdf(s.mode, d.id).unwrap_or_else(|| format!("{:#x}", d.id));
        writeln!(w, "{id}  sid {:#06x}  domain {dom:>5}  {}  ({} runs)", d.id, d.translation.word(), d.runs.len())?;
        for m in &d.runs {
            // The end may be 2^64 (a run reaching the top of the IOVA space): print it in 128 bits.
            let end = u128::from(m.iova) + u128::from(m.size);
            writeln!(w, "    iova {:#014x}-{:#014x} -> phys {:#014x}  {}", m.iova, end, m.phys, perm(m.read, m.write))?;
        }
        for p in &d.problems {
            writeln!(w, "    ! {p}")?;
        }
        if d.problems_dropped > 0 {
            writeln!(w, "    ! {} more problems not kept (work budget)", d.problems_dropped)?;
        }
    }
    for p in &s.problems {
        writeln!(w, "! {p}")?;
    }
    if s.problems_dropped > 0 {
        writeln!(w, "! {} more problems not kept (work budget)", s.problems_dropped)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use iommu_driver::survey::{TableFormat, Translation};
    use iommu_driver::walk::Run;

    #[test]
    fn a_run_that_ends_at_the_top_of_the_iova_space_prints_its_end() {
        let run = Run { iova: u64::MAX - 0xfff, phys: 0x1000, size: 0x1000, read: true, write: true };
        let device = Device {
            id: 0x10,
            domain: Some(1),
            translation: Translation::Translated {
                root: 0x1000,
                levels: 6,
                format: TableFormat::AmdViV1(Default::default()),
                read: true,
                write: true,
            },
            runs: vec![run],
            table_pages: vec![0x1000],
            problems: Vec::new(),
            problems_dropped: 0,
            worst: None,
        };
        let mut work = Work::default();
        let mut scan = UnitScan::unscanned(Mode::AmdViV1, survey::Problem::Budget(survey::Limit::Pages), &mut work);
        scan.devices.push(device);
        let unit = Unit { kind: IommuKind::Amdvi, base: 0xfed80000, segment: 0, origin: "--base".into() };
        let mut out = Vec::new();
        print_human(&mut out, &unit, &scan).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("iova 0xfffffffffffff000-0x10000000000000000 -> phys 0x000000001000  rw"), "{text}");
    }
}
