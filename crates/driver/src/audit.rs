//! The DMA-reachability audit: for every device a unit's tables let through, which physical memory it can
//! still read and write, and whether a crash kernel loaded in its reserved region is safe from it. The same
//! code runs in a crash kernel and on a dump; it judges a [`UnitScan`] and reads
//! nothing itself.
//!
//! Three verdicts, and "safe" only when it was earned:
//! - [`Verdict::Unsafe`]: some device can reach the crash region (pass-through, a mapping into it,
//!   translation off, a firmware-reserved range the device uses), or a table the hardware walks lies
//!   inside it (the crash kernel will overwrite a live table). Each with a [`Reason`].
//! - [`Verdict::Incomplete`]: no threat found, but something needed could not be read or trusted (a page
//!   not in the dump, a cycle, the work budget, a missing register, an undecodable entry, registers of
//!   another IOMMU kind), so the reach is a lower bound.
//! - [`Verdict::Safe`]: every device's reach was decoded completely and none reaches the crash region.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use crate::survey::{Problem, Severity, Translation, UnitScan, WalkProblem};

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
    /// A page-table page is reached again where it decodes differently: a cycle.
    Loop,
    /// The walk could not finish (a page not in the dump, the work budget): the reach is a lower bound.
    Truncated,
    /// A table this device's translation reads lies inside the crash kernel's region.
    TableInCrashKernel,
    /// Two-stage translation, not walked.
    Nested,
    /// Firmware declares a range this device uses (DMAR RMRR, IVRS IVMD, IORT RMR) inside the crash region.
    FirmwareRange,
    /// Something needed was not read or trusted: the reach is a lower bound.
    Incomplete,
}

impl Flag {
    /// Every flag, in the order legends and the JSON list them.
    pub const ALL: [Flag; 12] = [
        Flag::PassThrough,
        Flag::CrashKernel,
        Flag::Invalid,
        Flag::OutsideRam,
        Flag::Reserved,
        Flag::SharedTables,
        Flag::Loop,
        Flag::Truncated,
        Flag::TableInCrashKernel,
        Flag::Nested,
        Flag::FirmwareRange,
        Flag::Incomplete,
    ];

    /// The flag's stable word in text output and the audit's JSON.
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
            Flag::TableInCrashKernel => "table-in-crashkernel",
            Flag::Nested => "nested",
            Flag::FirmwareRange => "firmware-range",
            Flag::Incomplete => "incomplete",
        }
    }

    /// One line for a legend.
    pub const fn meaning(self) -> &'static str {
        match self {
            Flag::PassThrough => "untranslated: reaches all of memory",
            Flag::CrashKernel => "a mapping reaches the crash kernel's region",
            Flag::Invalid => "its entry cannot be decoded or trusted",
            Flag::OutsideRam => "a mapping points outside RAM (MMIO, a hole)",
            Flag::Reserved => "a page-table entry with reserved bits or a page size the unit lacks",
            Flag::SharedTables => "a page-table page also used by another domain",
            Flag::Loop => "a page-table cycle",
            Flag::Truncated => "the walk did not finish (page not in the dump, work budget)",
            Flag::TableInCrashKernel => "a table it is translated through lies in the crash kernel's region",
            Flag::Nested => "two-stage translation, not walked",
            Flag::FirmwareRange => "firmware reserves a range it uses inside the crash region",
            Flag::Incomplete => "its reach is a lower bound: something needed was not read or trusted",
        }
    }
}

/// A physical range a device can reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reach {
    /// First physical byte.
    pub phys: u64,
    /// Length in bytes.
    pub size: u64,
    /// The device can read this memory (DMA towards the device).
    pub read: bool,
    /// The device can write this memory: what can corrupt a crash kernel.
    pub write: bool,
}

impl Reach {
    /// One past the last byte (saturating).
    pub fn end(&self) -> u64 {
        self.phys.saturating_add(self.size)
    }
    /// The part of this reach inside `r`, if any.
    pub fn overlap(&self, r: &Range<u64>) -> Option<Reach> {
        let (start, end) = (self.phys.max(r.start), self.end().min(r.end));
        (start < end).then(|| Reach { phys: start, size: end - start, ..*self })
    }
}

/// A range firmware declares some device will DMA to whatever the tables say (Linux identity-maps them):
/// a DMAR RMRR, an IVRS IVMD, an IORT RMR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirmwareRange {
    /// "RMRR", "IVMD", "RMR".
    pub source: &'static str,
    /// The requesters it names, as inclusive ranges (empty: every requester).
    pub ids: Vec<(u32, u32)>,
    /// The physical range, end exclusive.
    pub range: Range<u64>,
}

/// Why the verdict is unsafe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The unit passes all DMA through untranslated.
    TranslationOff,
    /// The device is untranslated; `overlap` is the part of the crash region it reaches.
    PassThrough {
        /// The requester or stream ID.
        id: u32,
        /// The part of the crash region it reaches.
        overlap: Reach,
    },
    /// A mapping of the device reaches the crash region.
    Mapping {
        /// The requester or stream ID.
        id: u32,
        /// The part of the crash region the mapping reaches.
        overlap: Reach,
    },
    /// A table the hardware walks (root, context, device, stream or page table) lies inside the crash region.
    TableInCrashRegion {
        /// The device translated through it; `None` for a unit-wide table (root, device or stream table).
        id: Option<u32>,
        /// The table page's physical address.
        table: u64,
    },
    /// A problem the scan judged unsafe in itself.
    Scan {
        /// The device it was met on; `None` for the unit.
        id: Option<u32>,
        /// The problem, as the scan typed it.
        problem: Problem,
    },
    /// Firmware reserves a range inside the crash region for these requesters.
    Firmware {
        /// The table it comes from: "RMRR", "IVMD" or "RMR".
        source: &'static str,
        /// The requesters it names, inclusive ranges (empty: every requester).
        ids: Vec<(u32, u32)>,
        /// The part of the crash region it covers.
        overlap: Range<u64>,
    },
}

impl Reason {
    /// The device the reason is about, if one (it is then written as `device 0x....` first).
    pub fn id(&self) -> Option<u32> {
        match self {
            Reason::PassThrough { id, .. } | Reason::Mapping { id, .. } => Some(*id),
            Reason::TableInCrashRegion { id, .. } | Reason::Scan { id, .. } => *id,
            Reason::TranslationOff | Reason::Firmware { .. } => None,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let perm = |r: &Reach| match (r.read, r.write) {
            (true, true) => "rw",
            (true, false) => "r",
            (false, true) => "w",
            _ => "-",
        };
        match self {
            Reason::TranslationOff => f.write_str("translation is off: every device reaches all of memory"),
            Reason::PassThrough { id, overlap } => write!(
                f,
                "device {id:#06x} is untranslated and reaches {:#x}-{:#x} ({}) of the crash region",
                overlap.phys,
                overlap.end(),
                perm(overlap)
            ),
            Reason::Mapping { id, overlap } => write!(
                f,
                "device {id:#06x} maps {:#x}-{:#x} ({}) of the crash region",
                overlap.phys,
                overlap.end(),
                perm(overlap)
            ),
            Reason::TableInCrashRegion { id: Some(id), table } => {
                write!(f, "device {id:#06x} is translated through table {table:#x}, inside the crash region")
            }
            Reason::TableInCrashRegion { id: None, table } => {
                write!(f, "the unit walks table {table:#x}, inside the crash region")
            }
            Reason::Scan { id: Some(id), problem } => write!(f, "device {id:#06x}: {problem}"),
            Reason::Scan { id: None, problem } => write!(f, "{problem}"),
            Reason::Firmware { source, ids, overlap } => {
                write!(
                    f,
                    "firmware {source} reserves {:#x}-{:#x} of the crash region for ",
                    overlap.start, overlap.end
                )?;
                if ids.is_empty() {
                    f.write_str("every device")
                } else {
                    for (i, (a, b)) in ids.iter().enumerate() {
                        f.write_str(if i == 0 { "" } else { ", " })?;
                        if a == b {
                            write!(f, "{a:#06x}")?;
                        } else {
                            write!(f, "{a:#06x}-{b:#06x}")?;
                        }
                    }
                    Ok(())
                }
            }
        }
    }
}

/// Whether a crash kernel in the reserved region is safe from a device or unit; ordered by gravity, so the
/// verdict over several is their maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Every device's reach was decoded completely and none reaches the crash region.
    Safe,
    /// No threat found, but something needed could not be read or trusted.
    Incomplete,
    /// Some device can reach the crash region, or a live table lies in it.
    Unsafe,
}

impl Verdict {
    /// The verdict's word in text output and the audit's JSON.
    pub const fn word(self) -> &'static str {
        match self {
            Verdict::Safe => "safe",
            Verdict::Incomplete => "incomplete",
            Verdict::Unsafe => "unsafe",
        }
    }
    /// The process exit code `handover audit` uses: 0, 1, 2.
    pub const fn exit_code(self) -> u8 {
        match self {
            Verdict::Safe => 0,
            Verdict::Unsafe => 1,
            Verdict::Incomplete => 2,
        }
    }
}

/// The audit of one requester the unit's tables name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceAudit {
    /// PCI requester ID on VT-d and AMD-Vi, StreamID on SMMUv3.
    pub id: u32,
    /// The domain tag its entry carries (VT-d DID, AMD-Vi domain ID, SMMUv3 ASID or VMID).
    pub domain: Option<u32>,
    /// How the unit handles its DMA, from the scan.
    pub translation: Translation,
    /// What the audit found about it.
    pub flags: BTreeSet<Flag>,
    /// Physical reach, merged, ascending.
    pub reach: Vec<Reach>,
    /// What of the reach lies in the crash region.
    pub threats: Vec<Reach>,
    /// The scan's problems for this device, as far as the budget kept them.
    pub problems: Vec<Problem>,
    /// Its problems the budget counted but did not keep.
    pub problems_dropped: u64,
    /// This device's verdict alone.
    pub verdict: Verdict,
}

/// The audit of one unit: every device's reach and the unit's verdict.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Audit {
    /// The unit passes DMA through untranslated whatever its tables say.
    pub bypass: bool,
    /// The devices the scan listed, in its order.
    pub devices: Vec<DeviceAudit>,
    /// Problems not tied to one device.
    pub problems: Vec<Problem>,
    /// Unit problems the budget counted but did not keep.
    pub problems_dropped: u64,
    /// Why the verdict is unsafe (empty unless it is).
    pub reasons: Vec<Reason>,
    /// The unit's verdict, the worst of its devices' and its own reasons'; `None` until [`audit`] judged it.
    pub verdict: Option<Verdict>,
}

impl Audit {
    /// The unit's verdict ([`Verdict::Safe`] for an audit not yet judged, which has no devices).
    pub fn verdict(&self) -> Verdict {
        self.verdict.unwrap_or(Verdict::Safe)
    }
    /// The devices whose reach is a lower bound.
    pub fn incomplete(&self) -> impl Iterator<Item = &DeviceAudit> {
        self.devices.iter().filter(|d| d.verdict == Verdict::Incomplete)
    }
}

/// Merge runs into physical reach: sorted, touching runs of one permission joined.
fn reach_of(runs: impl Iterator<Item = Reach>) -> Vec<Reach> {
    let mut r: Vec<Reach> = runs.filter(|x| x.read || x.write).collect();
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

fn merged(ranges: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut v: Vec<Range<u64>> = ranges.iter().filter(|r| r.start < r.end).cloned().collect();
    v.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

fn in_any(crash: &[Range<u64>], pa: u64, len: u64) -> bool {
    let end = pa.saturating_add(len);
    crash.iter().any(|r| pa < r.end && r.start < end)
}

fn in_ram(ram: &[Range<u64>], pa: u64, len: u64) -> bool {
    let Some(end) = pa.checked_add(len) else { return false };
    ram.iter().any(|r| r.start <= pa && end <= r.end)
}

fn flag_of(p: &Problem) -> Option<Flag> {
    Some(match p {
        Problem::Walk(WalkProblem::Reserved { .. }) => Flag::Reserved,
        Problem::Walk(WalkProblem::Cycle { .. }) => Flag::Loop,
        Problem::Walk(WalkProblem::Unreadable { .. }) | Problem::Budget(_) => Flag::Truncated,
        Problem::Walk(WalkProblem::Shared { .. }) => return None,
        Problem::Walk(WalkProblem::TableInCrashRegion { .. }) => Flag::TableInCrashKernel,
        p if p.severity() == Severity::Unsafe => Flag::TableInCrashKernel,
        _ => Flag::Invalid,
    })
}

/// Judge one scanned unit against the crash kernel's regions (`crash`, one or more) and RAM. Tables the
/// unit walks (`scan.tables`, each device's page-table pages) are checked against every region here, so
/// the scan may have been made without one.
pub fn audit(scan: &UnitScan, ram: &[Range<u64>], crash: &[Range<u64>], firmware: &[FirmwareRange]) -> Audit {
    // Adjacent RAM ranges (a dump's segments) as one, so a reach across their boundary is RAM.
    let ram = &merged(ram);
    let mut a = Audit {
        bypass: scan.bypass,
        problems: scan.problems.clone(),
        problems_dropped: scan.problems_dropped,
        ..Audit::default()
    };
    let mut worst =
        if !scan.aborts && scan.worst >= Some(Severity::Incomplete) { Verdict::Incomplete } else { Verdict::Safe };
    if scan.bypass {
        a.reasons.push(Reason::TranslationOff);
    }
    for p in scan.problems.iter().filter(|p| p.severity() == Severity::Unsafe) {
        a.reasons.push(Reason::Scan { id: None, problem: p.clone() });
    }
    // A unit that aborts all DMA walks no table: nothing it holds is live, nothing it lacks is needed.
    let tables: &[Range<u64>] = if scan.aborts { &[] } else { &scan.tables };
    for t in tables {
        if in_any(crash, t.start, t.end.saturating_sub(t.start)) {
            a.reasons.push(Reason::TableInCrashRegion { id: None, table: t.start });
        }
    }
    // A page-table page used by more than one domain: (first domain, used by another too).
    let mut owners: BTreeMap<u64, (Option<u32>, bool)> = BTreeMap::new();
    for d in &scan.devices {
        for p in &d.table_pages {
            let e = owners.entry(*p).or_insert((d.domain, false));
            if e.0 != d.domain {
                e.1 = true;
            }
        }
    }
    for d in &scan.devices {
        let mut da = DeviceAudit {
            id: d.id,
            domain: d.domain,
            translation: d.translation,
            flags: BTreeSet::new(),
            reach: Vec::new(),
            threats: Vec::new(),
            problems: d.problems.clone(),
            problems_dropped: d.problems_dropped,
            verdict: Verdict::Safe,
        };
        let mut reasons = Vec::new();
        // Translation off: whatever the entry says, the device's DMA is untranslated.
        // SMMUv3 disabled with GBPA.ABORT: whatever the entry says, nothing gets through.
        let translation = if scan.bypass {
            Translation::PassThrough { read: true, write: true }
        } else if scan.aborts {
            Translation::Blocked
        } else {
            d.translation
        };
        match translation {
            Translation::Translated { .. } => {
                da.reach =
                    reach_of(d.runs.iter().map(|r| Reach { phys: r.phys, size: r.size, read: r.read, write: r.write }));
            }
            Translation::PassThrough { read, write } => {
                da.flags.insert(Flag::PassThrough);
                da.reach = ram.iter().map(|r| Reach { phys: r.start, size: r.end - r.start, read, write }).collect();
            }
            Translation::Nested => {
                da.flags.insert(Flag::Nested);
            }
            Translation::Blocked | Translation::Undecodable => {}
        }
        for r in &da.reach {
            for c in crash {
                if let Some(o) = r.overlap(c) {
                    da.threats.push(o);
                    da.flags.insert(Flag::CrashKernel);
                    reasons.push(if da.flags.contains(&Flag::PassThrough) {
                        Reason::PassThrough { id: d.id, overlap: o }
                    } else {
                        Reason::Mapping { id: d.id, overlap: o }
                    });
                }
            }
            if !da.flags.contains(&Flag::PassThrough) && !in_ram(ram, r.phys, r.size) {
                da.flags.insert(Flag::OutsideRam);
            }
        }
        for p in d.table_pages.iter().filter(|_| !scan.aborts) {
            if in_any(crash, *p, 4096) {
                da.flags.insert(Flag::TableInCrashKernel);
                reasons.push(Reason::TableInCrashRegion { id: Some(d.id), table: *p });
            }
            if owners.get(p).is_some_and(|o| o.1) {
                da.flags.insert(Flag::SharedTables);
            }
        }
        for p in &d.problems {
            if let Some(f) = flag_of(p) {
                da.flags.insert(f);
            }
            if p.severity() == Severity::Unsafe && !matches!(p, Problem::Walk(WalkProblem::TableInCrashRegion { .. })) {
                reasons.push(Reason::Scan { id: Some(d.id), problem: p.clone() });
            }
        }
        if d.problems_dropped > 0 && d.worst >= Some(Severity::Incomplete) {
            da.flags.insert(Flag::Truncated);
        }
        for fw in firmware {
            let uses = fw.ids.is_empty() || fw.ids.iter().any(|&(a, b)| a <= d.id && d.id <= b);
            if uses && crash.iter().any(|c| fw.range.start < c.end && c.start < fw.range.end) {
                da.flags.insert(Flag::FirmwareRange);
            }
        }
        da.verdict = if !reasons.is_empty() || da.flags.contains(&Flag::FirmwareRange) || scan.bypass {
            Verdict::Unsafe
        } else if !scan.aborts
            && (d.worst >= Some(Severity::Incomplete) || matches!(d.translation, Translation::Nested))
        {
            Verdict::Incomplete
        } else {
            Verdict::Safe
        };
        if da.verdict == Verdict::Incomplete {
            da.flags.insert(Flag::Incomplete);
        }
        worst = worst.max(da.verdict);
        a.reasons.extend(reasons);
        a.devices.push(da);
    }
    for fw in firmware {
        for c in crash {
            let overlap = fw.range.start.max(c.start)..fw.range.end.min(c.end);
            if overlap.start < overlap.end {
                a.reasons.push(Reason::Firmware { source: fw.source, ids: fw.ids.clone(), overlap });
            }
        }
    }
    if !a.reasons.is_empty() {
        worst = Verdict::Unsafe;
    }
    a.verdict = Some(worst);
    a
}

/// The verdict over several audits: unsafe if any is, else incomplete if any is, else safe.
pub fn overall<'a>(audits: impl IntoIterator<Item = &'a Audit>) -> Verdict {
    audits.into_iter().map(Audit::verdict).max().unwrap_or(Verdict::Safe)
}
