//! `handover inspect`: decode an IOMMU's tables from a dump and a register snapshot.
//!
//! The units come from `--base` (one), or else from ACPI: a raw table file (`--acpi`), the units an
//! `iommu_regset` snapshot names, or the DMAR/IVRS/IORT in the dump itself (RSDP scan). With one unit the
//! JSON is that unit's object; with several, `{"units": [...]}` of such objects.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use clap::Args as ClapArgs;
use iommu_driver::vtd::{self, DeviceKind, WalkLimits};
use iommu_driver::{BootEnv, Mmio, PhysMem};
use iommu_dump::{DumpHw, InspectInput, IommuKind, Unit, UnitQuery};
use iommu_spec::vtd::{Cap, SourceId};
use serde::Serialize;

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
            kind: self.iommu.as_deref().and_then(IommuKind::from_name),
            acpi: self.acpi.clone(),
            rsdp: self.rsdp,
        }
    }
}

#[derive(ClapArgs, Debug, Clone)]
pub struct Args {
    /// ELF core: QEMU `dump-guest-memory` output or `/proc/vmcore`.
    #[arg(long)]
    pub dump: std::path::PathBuf,
    /// Register snapshot: QEMU monitor `xp` output over the unit's MMIO (absolute addresses), or Linux's
    /// VT-d `iommu_regset` debugfs file.
    #[arg(long)]
    pub regs: std::path::PathBuf,
    #[command(flatten)]
    pub unit: UnitArgs,
    /// The crash kernel's region, START-END (hex), to flag tables inside it.
    #[arg(long, value_parser = parse_range)]
    pub crashkernel: Option<std::ops::Range<u64>>,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write the pages the decode read as a small ELF core (a test fixture).
    #[arg(long)]
    pub save_fixture: Option<std::path::PathBuf>,
}

pub fn parse_u64(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(&h.replace('_', ""), 16),
        None => t.replace('_', "").parse(),
    };
    r.map_err(|e| format!("{s:?} is not an address: {e}"))
}

pub fn parse_range(s: &str) -> Result<std::ops::Range<u64>, String> {
    let (a, b) = s.split_once('-').ok_or_else(|| format!("{s:?}: expected START-END"))?;
    let (a, b) = (parse_u64(a)?, parse_u64(b)?);
    if a >= b {
        return Err(format!("{s:?}: START must be below END"));
    }
    Ok(a..b)
}

#[derive(Serialize)]
struct Mapping {
    iova: u64,
    phys: u64,
    size: u64,
    perm: &'static str,
}

#[derive(Serialize)]
struct DeviceOut {
    sid: u32,
    id: String,
    domain: Option<u16>,
    kind: &'static str,
    mappings: Vec<Mapping>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    problems: Vec<String>,
}

#[derive(Serialize)]
struct InspectOut {
    iommu: &'static str,
    mode: &'static str,
    translation_enabled: bool,
    root_table: u64,
    devices: Vec<DeviceOut>,
    problems: Vec<String>,
}

/// One unit's decode, with where it is and where it was found.
#[derive(Serialize)]
struct UnitOut {
    base: u64,
    origin: String,
    #[serde(flatten)]
    out: InspectOut,
}

pub fn run(a: &Args) -> Result<ExitCode, String> {
    let input = InspectInput::load(&a.dump, &a.regs).map_err(|e| e.to_string())?;
    let mut hw: DumpHw = input.hw();
    let units = hw.find_units(&a.unit.query()).map_err(|e| e.to_string())?;
    let env = BootEnv {
        crash_kernel: true,
        ram: hw.ram_ranges().map_err(|e| e.to_string())?,
        crash_region: a.crashkernel.clone(),
        mem_encrypt: false,
        c_bit: 0,
    };
    let mut outs = Vec::with_capacity(units.len());
    for Unit { kind, base, origin, .. } in units {
        hw.select(base);
        hw.require(kind).map_err(|e| e.to_string())?;
        let out = match kind {
            IommuKind::AmdVi => decode_amdvi(&mut hw, &env),
            IommuKind::Smmuv3 => decode_smmuv3(&mut hw, &env),
            IommuKind::Vtd => decode_vtd(&mut hw, &env),
        }
        .map_err(|e| format!("{kind} unit at {base:#x}: {e}"))?;
        outs.push(UnitOut { base, origin, out });
    }
    if let Some(path) = &a.save_fixture {
        hw.save_touched(path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let mut w = std::io::stdout().lock();
    let res = if a.json {
        let json = match outs.as_slice() {
            [one] => serde_json::to_value(one),
            all => serde_json::to_value(all).map(|units| serde_json::json!({ "units": units })),
        };
        json.and_then(|v| serde_json::to_writer_pretty(&mut w, &v))
            .map_err(std::io::Error::from)
            .and_then(|_| writeln!(w))
    } else {
        outs.iter().try_for_each(|u| print_human(&mut w, u))
    };
    crate::output_result(res)
}

fn decode_vtd(hw: &mut (impl Mmio + PhysMem), env: &BootEnv) -> Result<InspectOut, String> {
    let cap = Cap::from_bits(hw.read64(iommu_spec::vtd::off::CAP));
    let scan = vtd::scan(hw, env, None).map_err(|r| format!("cannot decode the unit: {r}"))?;
    let mut devices: BTreeMap<u16, DeviceOut> = BTreeMap::new();
    for d in &scan.devices {
        let (kind, mappings) = match d.kind {
            DeviceKind::Translated { .. } | DeviceKind::FirstLevel { .. } => {
                let (w, kind) = match d.kind {
                    DeviceKind::FirstLevel { root, levels, .. } => {
                        (vtd::walk::walk_first_level(hw, cap, root, levels, WalkLimits::default()), "first-level")
                    }
                    DeviceKind::Translated { root, levels } => {
                        (vtd::walk::walk(hw, cap, root, levels, WalkLimits::default()), "translated")
                    }
                    _ => continue,
                };
                let m = w
                    .runs
                    .iter()
                    .map(|r| Mapping { iova: r.iova, phys: r.phys, size: r.size, perm: r.perm() })
                    .collect();
                let problems: Vec<String> = w.issues.iter().map(|i| format!("{i:?}")).collect();
                devices.insert(
                    d.sid,
                    DeviceOut {
                        sid: d.sid as u32,
                        id: SourceId(d.sid).to_string(),
                        domain: Some(d.did),
                        kind,
                        mappings: m,
                        problems,
                    },
                );
                continue;
            }
            DeviceKind::PassThrough => ("passthrough", Vec::new()),
            DeviceKind::Blocked => ("blocked", Vec::new()),
        };
        let domain = (d.did != 0).then_some(d.did);
        devices.insert(
            d.sid,
            DeviceOut {
                sid: d.sid as u32,
                id: SourceId(d.sid).to_string(),
                domain,
                kind,
                mappings,
                problems: Vec::new(),
            },
        );
    }
    let mut problems = Vec::new();
    for p in &scan.problems {
        match p.sid() {
            Some(sid) => {
                devices.insert(
                    sid,
                    DeviceOut {
                        sid: sid.into(),
                        id: SourceId(sid).to_string(),
                        domain: None,
                        // A nested entry is not malformed: it is a translation this tool cannot decode, so
                        // its reach is unknown (not "no mappings").
                        kind: if matches!(p, vtd::EntryProblem::NestedTranslation { .. }) {
                            "nested"
                        } else {
                            "invalid"
                        },
                        mappings: Vec::new(),
                        problems: vec![p.to_string()],
                    },
                );
            }
            None => problems.push(p.to_string()),
        }
    }
    Ok(InspectOut {
        iommu: "vtd",
        mode: if scan.scalable() { "scalable" } else { "legacy" },
        translation_enabled: scan.gsts.tes(),
        root_table: scan.rtaddr.table(),
        devices: devices.into_values().collect(),
        problems,
    })
}

fn decode_amdvi(hw: &mut (impl Mmio + PhysMem), env: &BootEnv) -> Result<InspectOut, String> {
    use iommu_driver::amdvi::{self, DteKind};
    use iommu_spec::amdvi::DeviceId;
    let scan = amdvi::scan(hw, env, false).map_err(|r| format!("cannot decode the unit: {r}"))?;
    let mut devices: BTreeMap<u16, DeviceOut> = BTreeMap::new();
    for d in &scan.devices {
        let id = DeviceId(d.devid).to_string();
        let (kind, mappings, problems) = match d.kind {
            DeviceKind2::Translated { root, levels } => {
                let w = iommu_driver::walk::walk(hw, &amdvi::V1, root, levels, WalkLimits::default());
                // The DTE's IR/IW bound every mapping.
                let (ir, iw) = (d.dte.ir(), d.dte.iw());
                let m = w
                    .runs
                    .iter()
                    .map(|r| iommu_driver::walk::Run { read: r.read && ir, write: r.write && iw, ..*r })
                    .map(|r| Mapping { iova: r.iova, phys: r.phys, size: r.size, perm: r.perm() })
                    .collect();
                ("translated", m, w.issues.iter().map(|i| format!("{i:?}")).collect())
            }
            DteKind::PassThrough { .. } | DteKind::NotValid => ("passthrough", Vec::new(), Vec::new()),
        };
        devices
            .insert(d.devid, DeviceOut { sid: d.devid as u32, id, domain: Some(d.domain), kind, mappings, problems });
    }
    let mut problems = Vec::new();
    for p in &scan.problems {
        match p.devid() {
            Some(devid) => {
                let id = DeviceId(devid).to_string();
                devices.insert(
                    devid,
                    DeviceOut {
                        sid: devid as u32,
                        id,
                        domain: None,
                        kind: "invalid",
                        mappings: Vec::new(),
                        problems: vec![p.to_string()],
                    },
                );
            }
            None => problems.push(p.to_string()),
        }
    }
    Ok(InspectOut {
        iommu: "amdvi",
        mode: "v1",
        translation_enabled: scan.control.iommu_en(),
        root_table: scan.table.table(),
        devices: devices.into_values().collect(),
        problems,
    })
}

use iommu_driver::amdvi::DteKind as DeviceKind2;

fn decode_smmuv3(hw: &mut (impl Mmio + PhysMem), env: &BootEnv) -> Result<InspectOut, String> {
    use iommu_driver::smmuv3::{self, SteKind};
    let scan = smmuv3::scan(hw, env).map_err(|r| format!("cannot decode the unit: {r}"))?;
    let mut devices: BTreeMap<u32, DeviceOut> = BTreeMap::new();
    let walk_runs = |hw: &mut _, root, w: smmuv3::Vmsa| {
        let walk = iommu_driver::walk::walk(hw, &w, root, w.levels(), WalkLimits::default());
        let m: Vec<Mapping> =
            walk.runs.iter().map(|r| Mapping { iova: r.iova, phys: r.phys, size: r.size, perm: r.perm() }).collect();
        (m, walk.issues.iter().map(|i| format!("{i:?}")).collect::<Vec<_>>())
    };
    for st in &scan.streams {
        let (kind, domain, mappings, problems) = match st.kind {
            SteKind::Bypass => ("passthrough", None, Vec::new(), Vec::new()),
            SteKind::Blocked { asid } => ("blocked", Some(asid), Vec::new(), Vec::new()),
            SteKind::Stage1 { ttb0, walk, asid } => {
                let (m, p) = walk_runs(hw, ttb0, walk);
                ("translated", Some(asid), m, p)
            }
            SteKind::Stage2 { s2ttb, walk, vmid } => {
                let (m, p) = walk_runs(hw, s2ttb, walk);
                ("translated", Some(vmid), m, p)
            }
        };
        devices
            .insert(st.sid, DeviceOut { sid: st.sid, id: format!("{:#x}", st.sid), domain, kind, mappings, problems });
    }
    let mut problems = Vec::new();
    for p in &scan.problems {
        match p.sid() {
            Some(sid) => {
                devices.insert(
                    sid,
                    DeviceOut {
                        sid,
                        id: format!("{sid:#x}"),
                        domain: None,
                        kind: "invalid",
                        mappings: Vec::new(),
                        problems: vec![p.to_string()],
                    },
                );
            }
            None => problems.push(p.to_string()),
        }
    }
    let fmt = if scan.cfg.fmt() == iommu_spec::smmuv3::StrtabFmt::TwoLevel { "2-level" } else { "linear" };
    Ok(InspectOut {
        iommu: "smmuv3",
        mode: fmt,
        translation_enabled: scan.cr0.smmuen(),
        root_table: scan.base.table(),
        devices: devices.into_values().collect(),
        problems,
    })
}

fn print_human(w: &mut impl Write, u: &UnitOut) -> std::io::Result<()> {
    let o = &u.out;
    writeln!(
        w,
        "{} at {:#x} ({}), {} mode, translation {}, root table {:#x}",
        o.iommu,
        u.base,
        u.origin,
        o.mode,
        if o.translation_enabled { "on" } else { "off" },
        o.root_table
    )?;
    for d in &o.devices {
        let dom = d.domain.map_or("-".to_string(), |x| x.to_string());
        writeln!(w, "{}  sid {:#06x}  domain {:>5}  {}  ({} runs)", d.id, d.sid, dom, d.kind, d.mappings.len())?;
        for m in &d.mappings {
            writeln!(w, "    iova {:#014x}-{:#014x} -> phys {:#014x}  {}", m.iova, m.iova + m.size, m.phys, m.perm)?;
        }
        for p in &d.problems {
            writeln!(w, "    ! {p}")?;
        }
    }
    for p in &o.problems {
        writeln!(w, "! {p}")?;
    }
    Ok(())
}
