//! The DMA-reachability audit (seed 004's "check the tables against the crash kernel's region", grown):
//! for every device the adopted tables let through, which physical memory it can still read and write,
//! and what is wrong with that. The same code runs in a crash kernel and on a dump.
//!
//! Bounded and cycle-safe: it rides on the scans and the shared walker, which cap their work and report
//! loops instead of following them.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::walk::{walk, Format, Walk, WalkIssue, WalkLimits};
use crate::{BootEnv, Mmio, PhysMem};

/// What the audit says about a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Flag {
    /// Untranslated: the device reaches all of memory.
    PassThrough,
    /// Some mapping reaches the crash kernel's region.
    CrashKernel,
    /// The entry is malformed and would be refused.
    Invalid,
    /// Some mapping points outside RAM (MMIO, a hole, nothing).
    OutsideRam,
    /// A page-table entry with reserved bits or an unsupported page size.
    Reserved,
    /// A page-table page is also used by a device of another domain.
    SharedTables,
    /// A page-table page is reached twice within one walk.
    Loop,
    /// The walk could not finish (unreadable tables, caps reached): the reach is a lower bound.
    Truncated,
    /// The entry is a translation this code cannot decode (VT-d nested, PGTT = 011): what the device
    /// reaches is unknown, so neither "no mappings" nor "safe" can be claimed for it.
    Undecodable,
}

impl Flag {
    pub const fn word(self) -> &'static str {
        match self {
            Flag::PassThrough => "passthrough",
            Flag::CrashKernel => "crashkernel",
            Flag::Invalid => "invalid",
            Flag::OutsideRam => "outside-ram",
            Flag::Reserved => "reserved-bits",
            Flag::SharedTables => "shared-tables",
            Flag::Loop => "loop",
            Flag::Truncated => "truncated",
            Flag::Undecodable => "undecodable",
        }
    }
}

/// A physical range a device can reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reach {
    pub phys: u64,
    pub size: u64,
    pub read: bool,
    pub write: bool,
}

impl Reach {
    pub fn end(&self) -> u64 {
        self.phys.saturating_add(self.size)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceAudit {
    pub sid: u32,
    pub domain: Option<u32>,
    pub flags: BTreeSet<Flag>,
    pub reach: Vec<Reach>,
    pub notes: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No adopted device can reach the crash kernel's region or all of memory.
    Safe,
    Unsafe,
    /// Nothing found reaches the crash kernel's region or all of memory, but some device's entry could not
    /// be decoded: safety is not proven.
    Incomplete,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Audit {
    /// The unit passes DMA through untranslated (translation off, or an SMMUv3 disabled with GBPA bypass):
    /// whatever its tables say, every device reaches all of memory.
    pub bypass: bool,
    pub devices: Vec<DeviceAudit>,
    /// Problems not tied to one device (a bus's context table, a run of the device table).
    pub notes: Vec<String>,
}

impl Audit {
    pub fn verdict(&self) -> Verdict {
        let threat = self.bypass
            || self
                .devices
                .iter()
                .any(|d| d.flags.contains(&Flag::PassThrough) || d.flags.contains(&Flag::CrashKernel));
        if threat {
            Verdict::Unsafe
        } else if self.devices.iter().any(|d| d.flags.contains(&Flag::Undecodable)) {
            Verdict::Incomplete
        } else {
            Verdict::Safe
        }
    }
}

/// One device as a scan found it, for [`audit_devices`].
pub enum Found<'f, F: Format> {
    Translated {
        sid: u32,
        domain: u32,
        root: u64,
        levels: u32,
        format: &'f F,
        read: bool,
        write: bool,
    },
    PassThrough {
        sid: u32,
        domain: Option<u32>,
    },
    Invalid {
        sid: u32,
        why: String,
    },
    /// A valid entry of a kind the scan cannot decode: reach unknown.
    Undecodable {
        sid: u32,
        why: String,
    },
}

/// Merge `walk`'s runs into physical reach, bounded by `read`/`write` (an entry-level permission).
fn reach_of(w: &Walk, read: bool, write: bool) -> Vec<Reach> {
    let mut r: Vec<Reach> = w
        .runs
        .iter()
        .map(|x| Reach { phys: x.phys, size: x.size, read: x.read && read, write: x.write && write })
        .filter(|x| x.read || x.write)
        .collect();
    r.sort_by_key(|x| (x.phys, x.size));
    let mut out: Vec<Reach> = Vec::with_capacity(r.len());
    for x in r {
        match out.last_mut() {
            Some(last) if last.end() >= x.phys && (last.read, last.write) == (x.read, x.write) => {
                let end = last.end().max(x.end());
                last.size = end - last.phys;
            }
            _ => out.push(x),
        }
    }
    out
}

/// Audit the devices a scan found. Table pages used by more than one domain are flagged on every device
/// that uses them.
pub fn audit_devices<'f, F: Format + 'f>(
    mem: &impl PhysMem,
    env: &BootEnv,
    found: impl IntoIterator<Item = Found<'f, F>>,
    limits: WalkLimits,
) -> Audit {
    let mut audit = Audit::default();
    let mut owners: BTreeMap<u64, BTreeSet<u32>> = BTreeMap::new();
    let mut pages_of: Vec<Vec<u64>> = Vec::new();
    for f in found {
        let mut d = DeviceAudit { sid: 0, domain: None, flags: BTreeSet::new(), reach: Vec::new(), notes: Vec::new() };
        let mut pages = Vec::new();
        match f {
            Found::Translated { sid, domain, root, levels, format, read, write } => {
                d.sid = sid;
                d.domain = Some(domain);
                let w = walk(mem, format, root, levels, limits);
                for i in &w.issues {
                    match i {
                        WalkIssue::Reserved { .. } => d.flags.insert(Flag::Reserved),
                        WalkIssue::Revisited { .. } => d.flags.insert(Flag::Loop),
                        WalkIssue::Unreadable { .. } | WalkIssue::TooManyTables | WalkIssue::TooManyRuns => {
                            d.flags.insert(Flag::Truncated)
                        }
                    };
                    d.notes.push(alloc::format!("{i:?}"));
                }
                d.reach = reach_of(&w, read, write);
                for p in &w.table_pages {
                    owners.entry(*p).or_default().insert(domain);
                }
                pages = w.table_pages;
            }
            Found::PassThrough { sid, domain } => {
                d.sid = sid;
                d.domain = domain;
                d.flags.insert(Flag::PassThrough);
                d.reach = env
                    .ram
                    .iter()
                    .map(|r| Reach { phys: r.start, size: r.end - r.start, read: true, write: true })
                    .collect();
            }
            Found::Invalid { sid, why } => {
                d.sid = sid;
                d.flags.insert(Flag::Invalid);
                d.notes.push(why);
            }
            Found::Undecodable { sid, why } => {
                d.sid = sid;
                d.flags.insert(Flag::Undecodable);
                d.notes.push(why);
            }
        }
        for r in &d.reach {
            if env.in_crash_region(r.phys, r.size) {
                d.flags.insert(Flag::CrashKernel);
            }
            if !d.flags.contains(&Flag::PassThrough) && !env.in_ram(r.phys, r.size) {
                d.flags.insert(Flag::OutsideRam);
            }
        }
        pages_of.push(pages);
        audit.devices.push(d);
    }
    for (d, pages) in audit.devices.iter_mut().zip(pages_of) {
        if pages.iter().any(|p| owners.get(p).is_some_and(|o| o.len() > 1)) {
            d.flags.insert(Flag::SharedTables);
        }
    }
    audit.devices.sort_by_key(|d| d.sid);
    audit
}

/// Audit a VT-d unit's current tables.
pub fn audit_vtd(
    hw: &mut (impl Mmio + PhysMem),
    env: &BootEnv,
    limits: WalkLimits,
) -> Result<Audit, crate::vtd::Refusal> {
    use crate::vtd::{DeviceKind, VtdFormat};
    let cap = iommu_spec::vtd::Cap::from_bits(hw.read64(iommu_spec::vtd::off::CAP));
    let scan = crate::vtd::scan(hw, env, None)?;
    let (second, first) = (VtdFormat::new(cap, false), VtdFormat::new(cap, true));
    let mut found: Vec<Found<VtdFormat>> = Vec::new();
    for d in &scan.devices {
        match d.kind {
            DeviceKind::Translated { root, levels } => found.push(Found::Translated {
                sid: d.sid as u32,
                domain: d.did as u32,
                root,
                levels,
                format: &second,
                read: true,
                write: true,
            }),
            DeviceKind::FirstLevel { root, levels, .. } => found.push(Found::Translated {
                sid: d.sid as u32,
                domain: d.did as u32,
                root,
                levels,
                format: &first,
                read: true,
                write: true,
            }),
            DeviceKind::PassThrough => found.push(Found::PassThrough { sid: d.sid as u32, domain: Some(d.did as u32) }),
            DeviceKind::Blocked => {}
        }
    }
    let mut notes = Vec::new();
    for p in &scan.problems {
        match (p.sid(), p) {
            (Some(sid), crate::vtd::EntryProblem::NestedTranslation { .. }) => {
                found.push(Found::Undecodable { sid: sid as u32, why: p.to_string() })
            }
            (Some(sid), _) => found.push(Found::Invalid { sid: sid as u32, why: p.to_string() }),
            (None, _) => notes.push(p.to_string()),
        }
    }
    let mut a = audit_devices(hw, env, found, limits);
    a.notes = notes;
    a.bypass = !scan.gsts.tes();
    if a.bypass {
        a.notes.push("GSTS.TES is clear: translation is off, every device reaches all of memory".to_string());
    }
    Ok(a)
}

/// Audit an AMD-Vi unit's device table.
pub fn audit_amdvi(
    hw: &mut (impl Mmio + PhysMem),
    env: &BootEnv,
    limits: WalkLimits,
) -> Result<Audit, crate::amdvi::DevTableRefusal> {
    use crate::amdvi::{DteKind, V1};
    let scan = crate::amdvi::scan(hw, env, false)?;
    let mut found: Vec<Found<V1>> = Vec::new();
    for d in &scan.devices {
        match d.kind {
            DteKind::Translated { root, levels } => found.push(Found::Translated {
                sid: d.devid as u32,
                domain: d.domain as u32,
                root,
                levels,
                format: &V1,
                read: d.dte.ir(),
                write: d.dte.iw(),
            }),
            DteKind::PassThrough { .. } | DteKind::NotValid => {
                found.push(Found::PassThrough { sid: d.devid as u32, domain: Some(d.domain as u32) })
            }
        }
    }
    let mut notes = Vec::new();
    for p in &scan.problems {
        match p.devid() {
            Some(sid) => found.push(Found::Invalid { sid: sid as u32, why: p.to_string() }),
            None => notes.push(p.to_string()),
        }
    }
    let mut a = audit_devices(hw, env, found, limits);
    a.notes = notes;
    exclusion_range(hw, env, &scan, &mut a);
    a.bypass = !scan.control.iommu_en();
    if a.bypass {
        a.notes.push("CONTROL.IOMMU_EN is clear: translation is off, every device reaches all of memory".to_string());
    }
    Ok(a)
}

/// An enabled exclusion range (AMD-Vi 3.4.5-3.4.6): requests inside it pass untranslated for every device
/// (Allow) or for those whose DTE sets EX, whatever their tables say. It is noted, and a device it covers
/// reaches the range; one overlapping the crash kernel's region makes that device a threat. (Under the SNP
/// lock the registers are the completion-store window instead; Linux leaves ExEn clear there.)
fn exclusion_range(hw: &mut impl Mmio, env: &BootEnv, scan: &crate::amdvi::DevTableScan, a: &mut Audit) {
    use iommu_spec::amdvi::{off, ExclusionBase, ExclusionLimit};
    let base = ExclusionBase::from_bits(hw.read64(off::EXCL_BASE));
    if !base.ex_en() {
        return;
    }
    let (first, last) = (base.address() & !env.c_bit, ExclusionLimit::from_bits(hw.read64(off::EXCL_LIMIT)).last());
    if last < first {
        return;
    }
    let size = (last - first).saturating_add(1);
    let crash = env.in_crash_region(first, size);
    a.notes.push(alloc::format!(
        "exclusion range {first:#x}..={last:#x} enabled for {}: requests inside it are not translated",
        if base.allow() { "every device" } else { "devices with DTE.EX" }
    ));
    for d in a.devices.iter_mut() {
        let ex = scan.devices.iter().find(|s| s.devid as u32 == d.sid).is_some_and(|s| s.dte.qw1().ex());
        if base.allow() || ex {
            d.reach.push(Reach { phys: first, size, read: true, write: true });
            d.notes.push(alloc::format!("exclusion range {first:#x}..={last:#x} passes untranslated"));
            if crash {
                d.flags.insert(Flag::CrashKernel);
            }
        }
    }
}

/// Audit an SMMUv3's stream table.
pub fn audit_smmuv3(
    hw: &mut (impl Mmio + PhysMem),
    env: &BootEnv,
    limits: WalkLimits,
) -> Result<Audit, crate::smmuv3::StrtabRefusal> {
    use crate::smmuv3::{SteKind, Vmsa};
    let scan = crate::smmuv3::scan(hw, env)?;
    let walks: Vec<(u32, u32, u64, Vmsa)> = scan
        .streams
        .iter()
        .filter_map(|s| match s.kind {
            SteKind::Stage1 { ttb0, walk, asid } => Some((s.sid, asid as u32, ttb0, walk)),
            SteKind::Stage2 { s2ttb, walk, vmid } => Some((s.sid, vmid as u32, s2ttb, walk)),
            _ => None,
        })
        .collect();
    let mut found: Vec<Found<Vmsa>> = walks
        .iter()
        .map(|(sid, domain, root, w)| Found::Translated {
            sid: *sid,
            domain: *domain,
            root: *root,
            levels: w.levels(),
            format: w,
            read: true,
            write: true,
        })
        .collect();
    for s in &scan.streams {
        if s.kind == SteKind::Bypass {
            found.push(Found::PassThrough { sid: s.sid, domain: None });
        }
    }
    let mut notes = Vec::new();
    for p in &scan.problems {
        match p.sid() {
            Some(sid) => found.push(Found::Invalid { sid, why: p.to_string() }),
            None => notes.push(p.to_string()),
        }
    }
    let mut a = audit_devices(hw, env, found, limits);
    a.notes = notes;
    let gbpa = iommu_spec::smmuv3::Gbpa::from_bits(hw.read32(iommu_spec::smmuv3::off::GBPA));
    a.bypass = !scan.cr0.smmuen() && !gbpa.abort();
    if a.bypass {
        a.notes.push("SMMUEN is clear and GBPA bypasses: every device reaches all of memory".to_string());
    }
    Ok(a)
}
