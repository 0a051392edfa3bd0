//! `handover audit`: what each device can still reach, as a verdict — exit 0 safe, 1 unsafe, 2 incomplete
//! (or an error that stopped the audit) — with text, JSON and a picture of physical memory.
//!
//! The units are found as `inspect` finds them ([`crate::inspect::UnitArgs`]); the scan and the judgement
//! are the driver's (`iommu_driver::survey`, `iommu_driver::audit`). This file parses and prints.

use std::fmt::Write as _;
use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args as ClapArgs;
use iommu_driver::audit::{self, Audit, DeviceAudit, FirmwareRange, Reach, Verdict};
use iommu_driver::survey::{Mode, Problem, UnitScan};
use iommu_driver::BootEnv;
use iommu_dump::acpi::{self, Firmware, Iort};
use iommu_dump::{devmem, required_registers, Dump, DumpHw, InspectInput, RecordingMem, SnapshotMmio, Unit};
use iommu_linux::iomem;
use serde::Serialize;
use serde_json::{json, Value};

use crate::inspect::{bdf, default_mode, dump_of, scan_unit, work_json, work_line, BudgetArgs, UnitArgs};

/// The JSON's shape version: 2 has `units[]` whatever the unit count, `reasons`, and `incomplete`.
pub const SCHEMA_VERSION: u32 = 2;

#[derive(ClapArgs, Debug, Clone)]
pub struct Args {
    /// The dump: an ELF core (`/proc/vmcore`, QEMU `dump-guest-memory`).
    #[arg(value_name = "DUMP", required_unless_present_any = ["dump", "live"])]
    pub dump_path: Option<PathBuf>,
    /// The dump, as an option (the positional argument's alias).
    #[arg(long, value_name = "DUMP", conflicts_with = "dump_path")]
    pub dump: Option<PathBuf>,
    /// Register snapshot: QEMU monitor `xp` output, or Linux's VT-d `iommu_regset` debugfs file. Without it
    /// or --regs-devmem, in a kdump kernel (ROOT/proc/vmcore exists) the defaults are taken from ROOT:
    /// units from ROOT/sys/firmware/acpi/tables, registers from ROOT/dev/mem, the crash region from the
    /// kdump kernel's own System RAM in ROOT/proc/iomem; each default taken is printed.
    #[arg(long)]
    pub regs: Option<PathBuf>,
    /// Read the registers live from physical memory instead (default /dev/mem; inside a crash kernel
    /// booted with the IOMMU driver off), at the units --base/--iommu, --acpi or the dump's ACPI name.
    /// The values read are echoed to stderr as monitor `xp` lines (usable later as --regs).
    #[arg(long, value_name = "DEVMEM", num_args = 0..=1, default_missing_value = "/dev/mem", conflicts_with = "regs")]
    pub regs_devmem: Option<PathBuf>,
    #[command(flatten)]
    pub unit: UnitArgs,
    /// The crash kernel's region (repeatable): a `/proc/iomem` range, `START-END` in hex with or without
    /// 0x, END the last byte (`30000000-3fffffff`; an END ending in 000 is taken as exclusive), or
    /// `SIZE@OFFSET` as on the kernel command line (`256M@0x30000000`). It must lie in RAM. Needed with
    /// --regs or --regs-devmem; otherwise the kdump kernel's own System RAM in ROOT/proc/iomem.
    #[arg(long, value_parser = parse_crashkernel)]
    pub crashkernel: Vec<Range<u64>>,
    /// The machine's RAM (repeatable), in the --crashkernel range syntax; the dump's ranges when omitted.
    #[arg(long, value_parser = parse_region)]
    pub ram: Vec<Range<u64>>,
    #[arg(long)]
    pub json: bool,
    /// Write a picture of physical memory: RAM, the crash kernel's region, each device's reach. Never
    /// over an input, nor over an existing file unless --force.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Let --svg replace an existing file (never an input).
    #[arg(long, requires = "svg")]
    pub force: bool,
    #[command(flatten)]
    pub budget: BudgetArgs,
    /// Where proc/, sys/ and dev/mem are found when the defaults of a kdump kernel (or of --live) are taken.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Audit this running host instead of a dump: "if it panicked now, could its devices reach the crash
    /// kernel?". Memory from ROOT/proc/kcore (its System RAM segments), the units from
    /// ROOT/sys/firmware/acpi/tables, the registers from --regs, else Linux's VT-d debugfs
    /// ROOT/sys/kernel/debug/iommu/intel/iommu_regset, else ROOT/dev/mem; the crash region from the
    /// "Crash kernel" lines of ROOT/proc/iomem and the RAM from its System RAM. Run as root. The memory
    /// moves while it is read: the verdict is of the tables as they were read.
    #[arg(long, conflicts_with_all = ["dump_path", "dump"])]
    pub live: bool,
}

/// A default the audit took, printed on stderr and in the JSON's `defaults`.
#[derive(Debug, Clone)]
struct Taken {
    what: &'static str,
    from: String,
    regions: Option<Vec<Range<u64>>>,
}

/// `r` widened to whole 4 KiB pages (a `/proc/iomem` System RAM range may end inside a page, as x86's
/// `00001000-0009fbff` does); `None` when the top page wraps.
fn pages_around(r: &Range<u64>) -> Option<Range<u64>> {
    Some(r.start & !0xfff..r.end.checked_next_multiple_of(0x1000)?)
}

/// Sorted, with overlapping and touching ranges merged.
fn merged(mut rs: Vec<Range<u64>>) -> Vec<Range<u64>> {
    rs.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(rs.len());
    for r in rs {
        match out.last_mut() {
            Some(l) if r.start <= l.end => l.end = l.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// The arguments with what was not given taken from the running kdump kernel under `--root`, when no
/// registers were given: the units from its ACPI tables in sysfs, the registers from its `dev/mem` (as
/// --regs-devmem reads them), the crash region from its own top-level System RAM in `proc/iomem` (the RAM
/// the crash kernel runs in, which Linux `iomem_resource` shows the running kernel's way). A kdump kernel
/// is recognised by `proc/vmcore`, which Linux `vmcore_init` (fs/proc/vmcore.c) creates only when
/// `is_kdump_kernel()`. Every default that cannot be found is an error naming what and where.
fn kdump_defaults(a: &Args) -> Result<(Args, Vec<Taken>), String> {
    let mut e = a.clone();
    let mut taken = Vec::new();
    if a.regs.is_some() || a.regs_devmem.is_some() {
        if a.crashkernel.is_empty() {
            return Err("give --crashkernel: with --regs or --regs-devmem no default is taken from this machine".into());
        }
        return Ok((e, taken));
    }
    let root = &a.root;
    let vmcore = root.join("proc/vmcore");
    if !vmcore.exists() {
        return Err(format!(
            "no --regs or --regs-devmem, and no defaults to take: {} does not exist (not a kdump kernel)",
            vmcore.display()
        ));
    }
    if a.unit.base.is_none() && a.unit.acpi.is_none() && a.unit.rsdp.is_none() {
        default_units(a, &mut e, &mut taken)?;
    }
    let devmem = root.join("dev/mem");
    if !devmem.exists() {
        return Err(format!("default registers: no {} (give --regs)", devmem.display()));
    }
    taken.push(Taken { what: "registers", from: devmem.display().to_string(), regions: None });
    e.regs_devmem = Some(devmem);
    if a.crashkernel.is_empty() {
        let path = root.join("proc/iomem");
        let tree = iomem::read(&path).map_err(|err| format!("default crash region from {}: {err}", path.display()))?;
        let own = iomem::system_ram(&tree);
        if own.is_empty() {
            return Err(format!(
                "default crash region: no top-level System RAM in {} (give --crashkernel)",
                path.display()
            ));
        }
        let pages: Option<Vec<Range<u64>>> = own.iter().map(pages_around).collect();
        let pages = pages.ok_or_else(|| {
            format!(
                "default crash region: a System RAM range in {} ends at the top of the address space",
                path.display()
            )
        })?;
        e.crashkernel = merged(pages);
        taken.push(Taken {
            what: "crashkernel",
            from: format!("System RAM in {}", path.display()),
            regions: Some(e.crashkernel.clone()),
        });
    }
    Ok((e, taken))
}

/// The arguments of `--live`, with what was not given taken from the running host under `--root` (see
/// [`Args::live`]). Every default that cannot be found is an error naming what and where.
fn live_defaults(a: &Args) -> Result<(Args, Vec<Taken>), String> {
    let mut e = a.clone();
    let root = &a.root;
    let kcore = root.join("proc/kcore");
    let mut taken = vec![Taken {
        what: "memory",
        from: format!("{} (the running kernel, read while it runs)", kcore.display()),
        regions: None,
    }];
    if a.unit.base.is_none() && a.unit.acpi.is_none() && a.unit.rsdp.is_none() {
        default_units(a, &mut e, &mut taken)?;
    }
    if a.regs.is_none() && a.regs_devmem.is_none() {
        let regset = root.join("sys/kernel/debug/iommu/intel/iommu_regset");
        let devmem = root.join("dev/mem");
        if regset.exists() {
            taken.push(Taken { what: "registers", from: regset.display().to_string(), regions: None });
            e.regs = Some(regset);
        } else if devmem.exists() {
            taken.push(Taken { what: "registers", from: devmem.display().to_string(), regions: None });
            e.regs_devmem = Some(devmem);
        } else {
            return Err(format!(
                "default registers: neither {} nor {} (give --regs)",
                regset.display(),
                devmem.display()
            ));
        }
    }
    if a.crashkernel.is_empty() || a.ram.is_empty() {
        let path = root.join("proc/iomem");
        let tree = iomem::read(&path).map_err(|err| format!("defaults from {}: {err}", path.display()))?;
        let pages = |rs: Vec<Range<u64>>, what: &str| -> Result<Vec<Range<u64>>, String> {
            let p: Option<Vec<Range<u64>>> = rs.iter().map(pages_around).collect();
            p.map(merged).ok_or_else(|| format!("a {what} range in {} ends at the top of memory", path.display()))
        };
        if a.crashkernel.is_empty() {
            let crash = iomem::crash_kernel(&tree);
            if crash.is_empty() {
                return Err(format!(
                    "no \"Crash kernel\" in {}: this host reserves no crash kernel (crashkernel= on its command line)",
                    path.display()
                ));
            }
            e.crashkernel = pages(crash, "Crash kernel")?;
            let from = format!("Crash kernel in {}", path.display());
            taken.push(Taken { what: "crashkernel", from, regions: Some(e.crashkernel.clone()) });
        }
        if a.ram.is_empty() {
            e.ram = pages(iomem::system_ram(&tree), "System RAM")?;
            let from = format!("System RAM in {}", path.display());
            taken.push(Taken { what: "ram", from, regions: Some(e.ram.clone()) });
        }
    }
    Ok((e, taken))
}

/// The units when none was given: the ACPI table this kernel exposes under ROOT/sys/firmware/acpi/tables, or
/// on a device-tree machine (arm64 without ACPI) the `arm,smmu-v3` node of ROOT/proc/device-tree (Linux
/// `arm_smmu_of_match`). A tree with several SMMUv3 nodes names them and asks for `--base`: one audit, one unit.
fn default_units(a: &Args, e: &mut Args, taken: &mut Vec<Taken>) -> Result<(), String> {
    let root = &a.root;
    let dir = root.join(acpi::SYSFS_TABLES);
    let kind = a.unit.query().kind;
    if let Some((_, path)) = acpi::sysfs_table(&dir, kind) {
        taken.push(Taken { what: "units", from: path.display().to_string(), regions: None });
        e.unit.acpi = Some(path);
        return Ok(());
    }
    let dt = root.join("proc/device-tree");
    if dt.is_dir() && kind.is_none_or(|k| k == iommu_dump::IommuKind::Smmuv3) {
        let units = iommu_linux::devtree::smmuv3_units(&dt).map_err(|err| format!("default units: {err}"))?;
        match units.as_slice() {
            [(node, reg)] => {
                taken.push(Taken {
                    what: "units",
                    from: format!("{} (arm,smmu-v3)", node.display()),
                    regions: Some(vec![reg.clone()]),
                });
                e.unit.iommu = Some("smmuv3".into());
                e.unit.base = Some(reg.start);
                return Ok(());
            }
            [] => {}
            many => {
                let names: Vec<String> =
                    many.iter().map(|(n, r)| format!("{} at {:#x}", n.display(), r.start)).collect();
                return Err(format!(
                    "default units: {} SMMUv3 nodes in the device tree ({}); give --iommu smmuv3 --base for one",
                    many.len(),
                    names.join(", ")
                ));
            }
        }
    }
    let which = kind.map_or("DMAR, IVRS or IORT".to_string(), |k| acpi::table_of(k).to_string());
    Err(format!(
        "default units: no {which} in {} and no arm,smmu-v3 node in {} (give --acpi, or --iommu and --base)",
        dir.display(),
        dt.display()
    ))
}

/// A hex number as `/proc/iomem` prints it, with or without 0x.
fn hex(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let h = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t);
    u64::from_str_radix(&h.replace('_', ""), 16).map_err(|e| format!("{s:?} is not a hex address: {e}"))
}

/// A size or offset as the kernel's `memparse` reads it: 0x hex, a leading 0 octal, else decimal, then an
/// optional K, M, G, T, P or E suffix (binary multiples).
fn memparse(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, shift) = match t.char_indices().last() {
        Some((i, c)) if "kKmMgGtTpPeE".contains(c) => {
            (&t[..i], 10 * (1 + "kKmMgGtTpPeE".find(c).map_or(0, |p| p / 2)) as u32)
        }
        _ => (t, 0),
    };
    let v = if let Some(h) = num.strip_prefix("0x").or_else(|| num.strip_prefix("0X")) {
        u64::from_str_radix(h, 16)
    } else if num.len() > 1 && num.starts_with('0') {
        u64::from_str_radix(&num[1..], 8)
    } else {
        num.parse()
    }
    .map_err(|e| format!("{s:?} is not a size: {e}"))?;
    v.checked_mul(1u64 << shift).ok_or_else(|| format!("{s:?} does not fit in 64 bits"))
}

/// A physical range: `START-END` in `/proc/iomem` syntax (hex, END inclusive; an END ending in 000 is the
/// exclusive end this tool used to take), with anything after a ` : ` (the iomem name) ignored.
pub fn parse_region(s: &str) -> Result<Range<u64>, String> {
    let body = s.split(" : ").next().unwrap_or(s).trim();
    let (a, b) = body.split_once('-').ok_or_else(|| format!("{s:?}: expected START-END or SIZE@OFFSET"))?;
    let (start, end) = (hex(a)?, hex(b)?);
    let end = if end & 0xfff == 0 {
        end
    } else {
        end.checked_add(1).ok_or_else(|| format!("{s:?}: END is the top of the address space"))?
    };
    if start >= end {
        return Err(format!("{s:?}: START must be below END"));
    }
    Ok(start..end)
}

/// `--crashkernel`: a region in [`parse_region`] syntax, or `SIZE@OFFSET` (Linux `crashkernel=`).
pub fn parse_crashkernel(s: &str) -> Result<Range<u64>, String> {
    let r = match s.split_once('@') {
        Some((size, off)) => {
            let (size, off) = (memparse(size)?, memparse(off)?);
            let end = off.checked_add(size).ok_or_else(|| format!("{s:?}: OFFSET + SIZE overflows"))?;
            if size == 0 {
                return Err(format!("{s:?}: SIZE is zero"));
            }
            off..end
        }
        None => parse_region(s)?,
    };
    if r.start & 0xfff != 0 || r.end & 0xfff != 0 {
        return Err(format!("{s:?}: a crash kernel region is whole 4 KiB pages ({:#x}-{:#x})", r.start, r.end));
    }
    Ok(r)
}

/// The reserved ranges the firmware's table declares, for the audit.
fn firmware_ranges(fw: &Firmware) -> Vec<FirmwareRange> {
    let mut out = Vec::new();
    match fw {
        Firmware::Dmar(d) => {
            for r in &d.rmrrs {
                let Some(end) = r.limit.checked_add(1) else { continue };
                // A scope that names no one requester (a multi-hop path) widens the range to every device.
                let ids: Option<Vec<(u32, u32)>> =
                    r.scopes.iter().map(|s| s.requester_id().map(|id| (u32::from(id), u32::from(id)))).collect();
                out.push(FirmwareRange { source: "RMRR", ids: ids.unwrap_or_default(), range: r.base..end });
            }
        }
        Firmware::Ivrs(i) => {
            for m in &i.ivmds {
                let Some(end) = m.start.checked_add(m.length) else { continue };
                let ids = match m.kind {
                    0x21 => vec![(u32::from(m.device_id), u32::from(m.device_id))],
                    0x22 => vec![(u32::from(m.device_id), u32::from(m.aux))],
                    _ => Vec::new(),
                };
                out.push(FirmwareRange { source: "IVMD", ids, range: m.start..end });
            }
        }
        Firmware::Iort(t) => {
            for n in &t.nodes {
                let iommu_dump::acpi::iort::NodeBody::Rmr(rmr) = &n.body else { continue };
                let ids: Vec<(u32, u32)> =
                    n.mappings.iter().map(|m| (m.output_base, m.output_base.saturating_add(m.id_count))).collect();
                for &(base, len) in &rmr.ranges {
                    let Some(end) = base.checked_add(len) else { continue };
                    out.push(FirmwareRange { source: "RMR", ids: ids.clone(), range: base..end });
                }
            }
        }
    }
    out
}

/// The firmware table that names the units, when the audit can find it: `--acpi`, or the dump's own.
fn firmware(a: &Args, hw: &DumpHw) -> Result<Firmware, String> {
    if let Some(path) = &a.unit.acpi {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        return Firmware::from_bytes(&bytes).map_err(|e| format!("{}: {e}", path.display()));
    }
    let q = a.unit.query();
    Firmware::find(&hw.mem, q.rsdp, q.kind)
        .map_err(|e| format!("no ACPI table in the dump ({e}); give --acpi instead of --base"))
}

pub fn run(given: &Args) -> Result<ExitCode, String> {
    let (dump, (effective, mut taken)) = if given.live {
        (given.root.join("proc/kcore"), live_defaults(given)?)
    } else {
        (dump_of(&given.dump_path, &given.dump)?, kdump_defaults(given)?)
    };
    let open = |p: &std::path::Path| {
        if given.live { Dump::open_kcore(p) } else { Dump::open(p) }.map_err(|e| format!("{}: {e}", p.display()))
    };
    let a = &effective;
    if let Some(svg) = &a.svg {
        let mut inputs = vec![dump.as_path()];
        inputs.extend(a.regs.as_deref());
        inputs.extend(a.regs_devmem.as_deref());
        inputs.extend(a.unit.acpi.as_deref());
        crate::inspect::check_output(svg, &inputs, a.force)?;
    }
    let mut hw = match (&a.regs, &a.regs_devmem) {
        (Some(regs), _) => InspectInput::with_core(open(&dump)?, regs).map_err(|e| e.to_string())?.hw(),
        (None, Some(devmem)) => {
            let core = open(&dump)?;
            let units = devmem::units(&a.unit.query(), &core).map_err(|e| e.to_string())?;
            let (snap, text) = devmem::snapshot(devmem, &units).map_err(|e| e.to_string())?;
            eprint!("{text}");
            DumpHw { regs: SnapshotMmio::new(snap, 0), mem: RecordingMem::new(core) }
        }
        (None, None) => return Err("give --regs FILE or --regs-devmem".into()),
    };
    let units = hw.find_units_uncaptured(&a.unit.query()).map_err(|e| e.to_string())?;
    let ram = if !a.ram.is_empty() {
        a.ram.clone()
    } else if !taken.is_empty() {
        // In a kdump kernel: its /proc/vmcore leaves its own memory out of the crashed kernel's RAM (Linux
        // arch/x86/kernel/crash.c `elf_header_exclude_ranges` drops `crashk_res`), yet it was RAM.
        let ram =
            merged(hw.ram_ranges().map_err(|e| e.to_string())?.into_iter().chain(a.crashkernel.clone()).collect());
        taken.push(Taken {
            what: "ram",
            from: "the dump's RAM and the crash region".into(),
            regions: Some(ram.clone()),
        });
        ram
    } else {
        hw.ram_ranges().map_err(|e| e.to_string())?
    };
    for t in &taken {
        match &t.regions {
            Some(r) => eprintln!("handover: default {}: {} ({})", t.what, t.from, ranges(r)),
            None => eprintln!("handover: default {}: {}", t.what, t.from),
        }
    }
    for c in &a.crashkernel {
        if !ram.iter().any(|r| r.start <= c.start && c.end <= r.end) {
            return Err(format!("--crashkernel {:#x}-{:#x} is not inside RAM ({})", c.start, c.end - 1, ranges(&ram)));
        }
    }
    let (table, fw, fw_note) = match firmware(a, &hw) {
        Ok(t) => {
            let fw = firmware_ranges(&t);
            (Some(t), fw, None)
        }
        Err(why) => (None, Vec::new(), Some(format!("firmware reserved ranges (RMRR/IVMD/RMR) not read: {why}"))),
    };
    let iort = match &table {
        Some(Firmware::Iort(t)) => Some(t),
        _ => None,
    };
    // The scan takes no crash region: the audit checks every table against every region itself.
    let c_bit = hw.sme_mask().map_err(|e| e.to_string())?;
    let env = BootEnv { crash_kernel: true, ram: ram.clone(), crash_region: None, mem_encrypt: c_bit != 0, c_bit };
    let mut work = a.budget.work();
    let mut audits = Vec::with_capacity(units.len());
    let mut irqs = Vec::with_capacity(units.len());
    for unit in units {
        hw.select(unit.base);
        let missing = required_registers(unit.kind).iter().find(|&&(_, off, size)| {
            unit.base.checked_add(off as u64).is_none_or(|at| !hw.regs.snapshot().has(at, size))
        });
        let scan = match missing {
            Some(&(name, off, _)) => {
                UnitScan::unscanned(default_mode(unit.kind), Problem::RegisterMissing { name, off }, &mut work)
            }
            None => scan_unit(&mut hw, unit.kind, &env, &mut work),
        };
        let audit = audit::audit(&scan, &ram, &a.crashkernel, &fw);
        irqs.push(if scan.scanned { crate::inspect::decode_irqs(&mut hw, unit.kind, &env) } else { None });
        audits.push((unit, scan, audit));
    }
    let verdict = audit::overall(audits.iter().map(|x| &x.2));
    let out = Out {
        args: a,
        ram: &ram,
        audits: &audits,
        irqs: &irqs,
        verdict,
        work: &work,
        fw: &fw,
        fw_note: fw_note.as_deref(),
        names: Names { iort },
        defaults: &taken,
    };
    if let Some(path) = &a.svg {
        std::fs::write(path, svg(&out)).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let mut w = std::io::stdout().lock();
    let res = if a.json {
        serde_json::to_writer_pretty(&mut w, &out.json()).map_err(std::io::Error::from).and_then(|_| writeln!(w))
    } else {
        out.print(&mut w)
    };
    crate::output_result(res)?;
    Ok(ExitCode::from(verdict.exit_code()))
}

struct Out<'a> {
    args: &'a Args,
    ram: &'a [Range<u64>],
    audits: &'a [(Unit, UnitScan, Audit)],
    /// Each unit's interrupt-remapping tables (`None`: SMMUv3, or registers not read), by the index of `audits`.
    irqs: &'a [Option<iommu_driver::irq::IrqTables>],
    verdict: Verdict,
    work: &'a iommu_driver::survey::Work,
    fw: &'a [FirmwareRange],
    fw_note: Option<&'a str>,
    names: Names<'a>,
    defaults: &'a [Taken],
}

fn perm(r: bool, w: bool) -> &'static str {
    match (r, w) {
        (true, true) => "rw",
        (true, false) => "r",
        (false, true) => "w",
        _ => "-",
    }
}

fn ranges(rs: &[Range<u64>]) -> String {
    rs.iter().map(|r| format!("{:#x}-{:#x}", r.start, r.end.saturating_sub(1))).collect::<Vec<_>>().join(", ")
}

/// How requesters are named: by PCI BDF, an SMMUv3 stream by the requester the IORT maps to it.
#[derive(Clone, Copy)]
struct Names<'a> {
    iort: Option<&'a Iort>,
}

impl Names<'_> {
    fn bdf(&self, u: &Unit, mode: Mode, id: u32) -> Option<String> {
        match mode {
            Mode::Smmuv3Linear | Mode::Smmuv3TwoLevel => {
                let (segment, rid) = self.iort?.requester_of(u.base, id)?;
                let rid = iommu_spec::Rid(u16::try_from(rid).ok()?);
                Some(if segment == 0 { rid.to_string() } else { format!("{segment:04x}:{rid}") })
            }
            _ => bdf(mode, id),
        }
    }
    fn name(&self, u: &Unit, mode: Mode, id: u32) -> String {
        match self.bdf(u, mode, id) {
            Some(b) => format!("{b} (sid {id:#06x})"),
            None => format!("sid {id:#06x}"),
        }
    }
}

/// Why a device or unit is incomplete, one line each: its problems of that severity.
fn incomplete_lines(names: Names, u: &Unit, mode: Mode, d: &DeviceAudit) -> Vec<String> {
    let name = |mode, id| names.name(u, mode, id);
    let mut v: Vec<String> = d
        .problems
        .iter()
        .filter(|p| p.severity() == iommu_driver::survey::Severity::Incomplete)
        .map(|p| format!("{}: {p}", name(mode, d.id)))
        .collect();
    if matches!(d.translation, iommu_driver::survey::Translation::Nested) {
        v.push(format!("{}: nested translation is not walked", name(mode, d.id)));
    }
    if d.problems_dropped > 0 {
        v.push(format!("{}: {} more problems not kept (work budget)", name(mode, d.id), d.problems_dropped));
    }
    v
}

impl Out<'_> {
    fn reasons(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (u, s, a) in self.audits {
            for r in &a.reasons {
                v.push(format!("{} unit at {:#x}: {}", s.mode.iommu(), u.base, self.rename(u, s.mode, r)));
            }
        }
        v
    }

    /// The reason's text with its device named (BDF beside the number).
    fn rename(&self, u: &Unit, mode: Mode, r: &audit::Reason) -> String {
        let text = r.to_string();
        match r.id() {
            Some(id) => text.replacen(&format!("device {id:#06x}"), &self.names.name(u, mode, id), 1),
            None => text,
        }
    }

    fn incomplete(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (u, s, a) in self.audits {
            let unit = format!("{} unit at {:#x}", s.mode.iommu(), u.base);
            for p in a.problems.iter().filter(|p| p.severity() == iommu_driver::survey::Severity::Incomplete) {
                v.push(format!("{unit}: {p}"));
            }
            if a.problems_dropped > 0 {
                v.push(format!("{unit}: {} more problems not kept (work budget)", a.problems_dropped));
            }
            for d in a.incomplete() {
                v.extend(incomplete_lines(self.names, u, s.mode, d).into_iter().map(|l| format!("{unit}: {l}")));
            }
        }
        if self.work.spent.exhausted.is_some() {
            v.push(format!("the work budget ran out: {}", work_line(self.work)));
        }
        v
    }

    /// The JSON, written as it is serialized: the device lists are never held whole as `Value`s.
    fn json(&self) -> impl Serialize + '_ {
        let region = |c: &Range<u64>| json!({"start": c.start, "end": c.end});
        Top {
            schema_version: SCHEMA_VERSION,
            verdict: self.verdict.word(),
            reasons: self.reasons(),
            incomplete: self.incomplete(),
            crashkernel: self.args.crashkernel.first().map(region),
            crashkernel_regions: self.args.crashkernel.iter().map(region).collect(),
            ram: self.ram.iter().map(region).collect(),
            firmware_ranges: self
                .fw
                .iter()
                .map(|f| {
                    json!({
                        "source": f.source,
                        "start": f.range.start,
                        "end": f.range.end,
                        "ids": f.ids.iter().map(|&(a, b)| json!([a, b])).collect::<Vec<_>>(),
                    })
                })
                .collect(),
            firmware_note: self.fw_note,
            work: work_json(self.work),
            defaults: self
                .defaults
                .iter()
                .map(|t| {
                    let mut v = json!({"from": t.from});
                    if let Some(r) = &t.regions {
                        v["regions"] = r.iter().map(region).collect();
                    }
                    (t.what.to_string(), v)
                })
                .collect(),
            units: Lazy(move || {
                self.audits.iter().enumerate().map(|(i, (u, s, a))| {
                    let irq = self.irqs.get(i).and_then(Option::as_ref);
                    unit_json(self.names, u, s, a, irq, &self.args.crashkernel)
                })
            }),
        }
    }

    fn print(&self, w: &mut impl Write) -> std::io::Result<()> {
        let mut used = std::collections::BTreeSet::new();
        for (i, (u, s, a)) in self.audits.iter().enumerate() {
            writeln!(
                w,
                "{} unit at {:#x} ({}): {} mode, translation {}, {}",
                s.mode.iommu(),
                u.base,
                u.origin,
                s.mode.word(),
                match (s.scanned, s.translation_enabled, s.aborts) {
                    (false, ..) => "unknown",
                    (true, true, _) => "on",
                    (true, false, true) => "off, all DMA aborted",
                    (true, false, false) => "off",
                },
                a.verdict().word()
            )?;
            for d in &a.devices {
                used.extend(d.flags.iter().copied());
                let bytes: u128 = d.reach.iter().map(|r| u128::from(r.size)).sum();
                let flags: Vec<&str> = d.flags.iter().map(|f| f.word()).collect();
                writeln!(
                    w,
                    "  {:<24} {:<11} reaches {} in {} ranges  {}",
                    self.names.name(u, s.mode, d.id),
                    d.translation.word(),
                    human(bytes),
                    d.reach.len(),
                    flags.join(" ")
                )?;
                for t in &d.threats {
                    writeln!(
                        w,
                        "      threatens the crash kernel: {:#x}-{:#x} {}",
                        t.phys,
                        t.end(),
                        perm(t.read, t.write)
                    )?;
                }
                for p in &d.problems {
                    writeln!(w, "      ! {p}")?;
                }
                if d.problems_dropped > 0 {
                    writeln!(w, "      ! {} more problems not kept (work budget)", d.problems_dropped)?;
                }
            }
            for p in &a.problems {
                writeln!(w, "  ! {p}")?;
            }
            if let Some(t) = self.irqs.get(i).and_then(Option::as_ref) {
                let live = t.entries.iter().filter(|e| e.targets_cpu()).count();
                writeln!(
                    w,
                    "  interrupts: {} tables, {live} entries reach a CPU, {} in use but reach none{}",
                    t.tables.len(),
                    t.entries.len() - live,
                    if t.unread.is_empty() {
                        String::new()
                    } else {
                        format!(", {} table pages not in the dump", t.unread.len())
                    }
                )?;
                for n in irq_notes(t, &self.args.crashkernel) {
                    writeln!(w, "  ! {n}")?;
                }
            }
        }
        if let Some(n) = self.fw_note {
            writeln!(w, "note: {n}")?;
        }
        writeln!(w, "verdict: {}", self.verdict.word())?;
        for r in self.reasons() {
            writeln!(w, "reason: {r}")?;
        }
        for i in self.incomplete() {
            writeln!(w, "incomplete: {i}")?;
        }
        if !used.is_empty() {
            writeln!(w, "flags:")?;
            for f in used {
                writeln!(w, "  {:<21} {}", f.word(), f.meaning())?;
            }
        }
        Ok(())
    }
}

fn reach_json(r: &Reach) -> Value {
    json!({"phys": r.phys, "size": r.size, "perm": perm(r.read, r.write)})
}

/// A JSON array serialized element by element from a fresh iterator.
struct Lazy<F>(F);

impl<F, I> Serialize for Lazy<F>
where
    F: Fn() -> I,
    I: Iterator,
    I::Item: Serialize,
{
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq((self.0)())
    }
}

#[derive(Serialize)]
struct Top<'a, U: Serialize> {
    schema_version: u32,
    verdict: &'static str,
    reasons: Vec<String>,
    incomplete: Vec<String>,
    crashkernel: Option<Value>,
    crashkernel_regions: Vec<Value>,
    ram: Vec<Value>,
    firmware_ranges: Vec<Value>,
    firmware_note: Option<&'a str>,
    work: Value,
    /// What was taken from the running kdump kernel because it was not given, by name.
    defaults: serde_json::Map<String, Value>,
    units: U,
}

#[derive(Serialize)]
struct UnitJson<'a, D: Serialize> {
    iommu: &'static str,
    mode: &'static str,
    base: u64,
    origin: &'a str,
    verdict: &'static str,
    translation_off: bool,
    /// Translation off and every DMA aborted (SMMUv3 GBPA.ABORT).
    dma_aborted: bool,
    devices: D,
    notes: Vec<String>,
    /// The interrupt-remapping tables (`inspect`'s decode); null for SMMUv3, which has none.
    interrupts: Value,
}

/// Interrupt tables the crash kernel would overwrite: a table page inside a crash region (informational; the
/// DMA verdict does not depend on it).
fn irq_notes(t: &iommu_driver::irq::IrqTables, crash: &[Range<u64>]) -> Vec<String> {
    let mut v = Vec::new();
    for &(addr, dev, n) in &t.tables {
        let end = addr.saturating_add(n as u64 * t.entry_size);
        if let Some(c) = crash.iter().find(|c| c.start < end && addr < c.end) {
            let owner = dev.map(|d| format!(" of {d:#06x}")).unwrap_or_default();
            v.push(format!(
                "interrupt table{owner} at {addr:#x} lies in the crash region {:#x}-{:#x}: the crash kernel overwrites what old interrupts go through",
                c.start,
                c.end - 1
            ));
        }
    }
    v
}

fn unit_json<'a>(
    names: Names<'a>,
    u: &'a Unit,
    s: &'a UnitScan,
    a: &'a Audit,
    irq: Option<&iommu_driver::irq::IrqTables>,
    crash: &[Range<u64>],
) -> impl Serialize + 'a {
    let mode = s.mode;
    let device = move |d: &DeviceAudit| {
        json!({
            "sid": d.id,
            "bdf": names.bdf(u, mode, d.id),
            "domain": d.domain,
            "kind": d.translation.word(),
            "verdict": d.verdict.word(),
            "flags": d.flags.iter().map(|f| f.word()).collect::<Vec<_>>(),
            "reach": d.reach.iter().map(reach_json).collect::<Vec<_>>(),
            "threats": d.threats.iter().map(reach_json).collect::<Vec<_>>(),
            "notes": d.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            "problems_dropped": d.problems_dropped,
        })
    };
    UnitJson {
        iommu: s.mode.iommu(),
        mode: s.mode.word(),
        base: u.base,
        origin: &u.origin,
        verdict: a.verdict().word(),
        translation_off: a.bypass,
        dma_aborted: s.aborts,
        devices: Lazy(move || a.devices.iter().map(device)),
        notes: a
            .problems
            .iter()
            .map(|p| p.to_string())
            .chain(irq.into_iter().flat_map(|t| irq_notes(t, crash)))
            .collect(),
        interrupts: irq.map_or(Value::Null, |t| crate::inspect::irq_json(mode, t)),
    }
}

fn human(b: u128) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{} KiB", b >> 10),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Physical memory on a linear axis: a row for RAM and the crash regions, one per device; a unit with
/// translation off gets one row of its own, all of RAM hatched.
fn svg(o: &Out) -> String {
    let top = o.ram.iter().map(|r| r.end).chain(o.args.crashkernel.iter().map(|r| r.end)).max().unwrap_or(1).max(1);
    let (left, width, row) = (190.0, 880.0, 22.0);
    let x = |a: u64| left + width * (a as f64 / top as f64);
    let wid = |a: u64, b: u64| ((b.saturating_sub(a)) as f64 / top as f64 * width).max(1.0);
    // (label, [(start, end, fill)]) a row.
    type Row<'f> = (String, Vec<(u64, u64, &'f str)>);
    let mut rows: Vec<Row> = Vec::new();
    rows.push(("RAM".into(), o.ram.iter().map(|r| (r.start, r.end, "#cfd8dc")).collect()));
    rows.push(("crash kernel".into(), o.args.crashkernel.iter().map(|r| (r.start, r.end, "#ffb300")).collect()));
    for (u, s, a) in o.audits {
        if a.bypass {
            rows.push((
                format!("{} {:#x}: translation off", s.mode.iommu(), u.base),
                o.ram.iter().map(|r| (r.start, r.end, "url(#off)")).collect(),
            ));
        }
        for d in &a.devices {
            let fill = |r: &Reach| if r.write { "#c62828" } else { "#1565c0" };
            rows.push((o.names.name(u, s.mode, d.id), d.reach.iter().map(|r| (r.phys, r.end(), fill(r))).collect()));
        }
    }
    let legend_y = row * rows.len() as f64 + 44.0;
    let height = legend_y + 40.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="monospace" font-size="11">"#,
        left + width + 20.0
    );
    let _ = write!(
        s,
        r##"<defs><pattern id="off" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="3" height="6" fill="#c62828"/></pattern></defs>"##
    );
    let _ = write!(
        s,
        r#"<title>handover audit: {}</title><text x="4" y="14" font-size="13">DMA reach — verdict: {}</text>"#,
        o.verdict.word(),
        o.verdict.word()
    );
    for (i, (label, rects)) in rows.iter().enumerate() {
        let y = 22.0 + row * i as f64;
        let _ = write!(s, r#"<text x="4" y="{:.0}">{}</text>"#, y + 13.0, esc(label));
        for (a, b, fill) in rects {
            let _ = write!(
                s,
                r#"<rect x="{:.1}" y="{:.0}" width="{:.1}" height="14" fill="{fill}"/>"#,
                x(*a),
                y + 2.0,
                wid(*a, *b)
            );
        }
    }
    // Axis ticks: eight divisions of the physical address space drawn.
    let axis_y = 22.0 + row * rows.len() as f64 + 4.0;
    let _ =
        write!(s, r#"<line x1="{left}" y1="{axis_y:.0}" x2="{:.0}" y2="{axis_y:.0}" stroke="black"/>"#, left + width);
    for i in 0..=8u64 {
        let at = (u128::from(top) * u128::from(i) / 8) as u64;
        let tx = x(at);
        let anchor = if i == 0 {
            "start"
        } else if i == 8 {
            "end"
        } else {
            "middle"
        };
        let _ = write!(
            s,
            r#"<line x1="{tx:.1}" y1="{axis_y:.0}" x2="{tx:.1}" y2="{:.0}" stroke="black"/><text x="{tx:.1}" y="{:.0}" text-anchor="{anchor}">{at:#x}</text>"#,
            axis_y + 4.0,
            axis_y + 15.0
        );
    }
    let items = [
        ("#cfd8dc", "RAM"),
        ("#ffb300", "crash kernel"),
        ("#c62828", "device can write"),
        ("#1565c0", "device can read only"),
        ("url(#off)", "translation off"),
    ];
    for (i, (fill, label)) in items.iter().enumerate() {
        let lx = left + 170.0 * i as f64;
        let _ = write!(
            s,
            r#"<rect x="{lx:.0}" y="{legend_y:.0}" width="12" height="12" fill="{fill}"/><text x="{:.0}" y="{:.0}">{label}</text>"#,
            lx + 16.0,
            legend_y + 10.0
        );
    }
    let _ = write!(s, "</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crashkernel_takes_proc_iomem_ranges_with_inclusive_ends() {
        assert_eq!(parse_crashkernel("30000000-3fffffff"), Ok(0x3000_0000..0x4000_0000));
        assert_eq!(parse_crashkernel("0x30000000-0x3fffffff"), Ok(0x3000_0000..0x4000_0000));
        assert_eq!(parse_crashkernel("  30000000-3fffffff : Crash kernel"), Ok(0x3000_0000..0x4000_0000));
        // A page-aligned end is the exclusive end (the old syntax), the same region.
        assert_eq!(parse_crashkernel("0x30000000-0x40000000"), Ok(0x3000_0000..0x4000_0000));
    }

    #[test]
    fn default_crash_regions_are_whole_pages_merged() {
        assert_eq!(pages_around(&(0x1000..0x9fc00)), Some(0x1000..0xa0000));
        assert_eq!(pages_around(&(0x1800..0x2000)), Some(0x1000..0x2000));
        assert_eq!(pages_around(&(0xffff_ffff_ffff_f000..u64::MAX)), None);
        assert_eq!(
            merged(vec![0x5000..0x6000, 0x1000..0x3000, 0x3000..0x4000, 0x2000..0x2800]),
            vec![0x1000..0x4000, 0x5000..0x6000]
        );
    }

    #[test]
    fn crashkernel_takes_size_at_offset_as_the_kernel_command_line() {
        assert_eq!(parse_crashkernel("256M@0x30000000"), Ok(0x3000_0000..0x4000_0000));
        assert_eq!(parse_crashkernel("512M@16M"), Ok(0x100_0000..0x2100_0000));
        assert_eq!(parse_crashkernel("0x1000@0x2000"), Ok(0x2000..0x3000));
    }

    #[test]
    fn crashkernel_refuses_what_is_not_a_page_granular_region() {
        assert!(parse_crashkernel("30000000-30000001").is_err(), "end neither page-aligned nor ...fff");
        assert!(parse_crashkernel("40000000-3fffffff").is_err(), "empty");
        assert!(parse_crashkernel("1E@0xffffffffffff0000").is_err(), "overflow");
        assert!(parse_crashkernel("0@0x1000").is_err(), "empty");
        assert!(parse_crashkernel("xyz").is_err());
        assert!(parse_crashkernel("ffffffffffff0000-ffffffffffffffff").is_err(), "end wraps");
    }
}
