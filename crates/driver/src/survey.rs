//! One scan for every IOMMU: what each requester can do through a unit's current tables, in one shape
//! whatever the vendor — its translation (translated, pass-through, blocked, nested, undecodable), the
//! table roots and format, the IOVA runs its page tables map, and every problem met on the way as a typed
//! value. `inspect` prints a [`UnitScan`]; the [`audit`](crate::audit) judges one.
//!
//! Built on the vendor scans (`vtd::scan`, `amdvi::scan`, `smmuv3::scan`), which validate the root,
//! context, device and stream tables, and on the shared walker for the page tables.
//!
//! Everything read here is hostile. The work is bounded by one [`Budget`] shared by every unit and
//! device of a run — page-table pages read, runs kept, problems kept — so memory follows the budget, never
//! how often a hostile table repeats a pointer. What the budget cut off is not lost silently: the device
//! (or unit) is marked incomplete and the dropped problems are counted.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use crate::walk::{merge_run, walk_with, Entry, FirstVisit, Format, Run, Visitor};
use crate::{amdvi, smmuv3, vtd, BootEnv, MemError, Mmio, PhysMem};

/// How far a problem moves the verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Worth showing; the reach is still known completely.
    Note,
    /// Something needed could not be read or trusted: the reach is a lower bound.
    Incomplete,
    /// A threat in itself (a live table the crash kernel will overwrite).
    Unsafe,
}

/// A problem with a page-table walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkProblem {
    /// A table page the walk needs is not in the dump (or not readable).
    Unreadable {
        /// The level of the table (the root is the highest).
        level: u32,
        /// Its physical address.
        table: u64,
        /// Why the read failed.
        err: MemError,
    },
    /// An entry with reserved bits, a page size the unit lacks, or a pointer that does not go down.
    Reserved {
        /// The level of the table holding the entry.
        level: u32,
        /// The first IOVA the entry covers.
        iova: u64,
        /// The entry as read.
        raw: u64,
    },
    /// A table reached again at another level, or with wider permissions, than it was first read with:
    /// the hardware would decode it differently there (a cycle), and that reach was not followed.
    Cycle {
        /// The table's physical address.
        table: u64,
        /// The level it was reached at this time.
        level: u32,
        /// The level it was first read at.
        first_level: u32,
    },
    /// A table reached again at the level and permissions it was first read with: no new physical reach,
    /// but the IOVAs it maps there are not listed again.
    Shared {
        /// The table's physical address.
        table: u64,
        /// The level it was read at, both times.
        level: u32,
    },
    /// A page-table page inside the crash kernel's region: the crash kernel will overwrite a live table.
    TableInCrashRegion {
        /// The page's physical address.
        table: u64,
        /// The level the walk met it at.
        level: u32,
    },
}

/// Which part of one [`Budget`] ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Page-table pages read ([`Budget::max_pages`]).
    Pages,
    /// IOVA runs kept ([`Budget::max_runs`]): a table mapping scattered pages yields one run each.
    Runs,
    /// Devices listed, over every unit (a 2-level stream table whose level-1 descriptors all name one
    /// level-2 table lists 2^20 streams from 64 KiB).
    Devices,
}

/// Something met while scanning a unit or one of its devices, typed; text only for display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A register the decode reads is not in the snapshot.
    RegisterMissing {
        /// The register's name in its IOMMU's manual.
        name: &'static str,
        /// Its offset from the unit's base.
        off: usize,
    },
    /// A register value this IOMMU kind cannot hold (reserved bits set): these are another unit's registers.
    NotThisKind {
        /// The register's name in its IOMMU's manual.
        register: &'static str,
        /// Its offset from the unit's base.
        off: usize,
        /// The value read, with the reserved bits set.
        value: u64,
    },
    /// The VT-d root table (RTADDR) cannot be walked at all; the same checks a crash boot refuses adoption on.
    VtdRefusal(vtd::Refusal),
    /// A VT-d root, context or PASID entry that could not be decoded or trusted.
    Vtd(vtd::EntryProblem),
    /// The AMD-Vi device table (DEV_TABLE_BASE) cannot be walked at all.
    AmdViRefusal(amdvi::DevTableRefusal),
    /// An AMD-Vi device-table entry that could not be decoded or trusted.
    AmdVi(amdvi::DteProblem),
    /// The SMMUv3 stream table (STRTAB_BASE, STRTAB_BASE_CFG) cannot be walked at all.
    Smmuv3Refusal(smmuv3::StrtabRefusal),
    /// An SMMUv3 L1 descriptor, STE or context descriptor that could not be decoded or trusted.
    Smmuv3(smmuv3::SteProblem),
    /// A page-table walk below a device's entry met a problem.
    Walk(WalkProblem),
    /// The work budget ran out: this device's tables were not (wholly) walked.
    Budget(Limit),
    /// An AMD-Vi exclusion range is enabled (AMD IOMMU spec 3.4.5-3.4.6): requests inside it pass
    /// untranslated for every device (`allow`) or for those whose DTE sets EX, whatever their tables say.
    /// The covered devices' reach includes it.
    ExclusionRange {
        /// First byte of the range (EXCL_BASE).
        first: u64,
        /// Last byte of the range (EXCL_RANGE_LIMIT), inclusive.
        last: u64,
        /// EXCL_BASE.Allow: the range applies to every device, not only those whose DTE sets EX.
        allow: bool,
    },
}

impl Problem {
    /// How far this problem moves the verdict: a table inside the crash kernel's region is
    /// [`Severity::Unsafe`], anything that hides part of the reach [`Severity::Incomplete`].
    pub fn severity(&self) -> Severity {
        use Severity::*;
        match self {
            Problem::RegisterMissing { .. } | Problem::NotThisKind { .. } | Problem::Budget(_) => Incomplete,
            Problem::VtdRefusal(vtd::Refusal::RootTableInCrashRegion { .. }) => Unsafe,
            Problem::VtdRefusal(_) => Incomplete,
            Problem::Vtd(
                vtd::EntryProblem::ContextTableInCrashRegion { .. } | vtd::EntryProblem::TableInCrashRegion { .. },
            ) => Unsafe,
            Problem::Vtd(_) => Incomplete,
            Problem::AmdViRefusal(amdvi::DevTableRefusal::InCrashRegion { .. }) => Unsafe,
            Problem::AmdViRefusal(_) => Incomplete,
            Problem::AmdVi(amdvi::DteProblem::PageTableInCrashRegion { .. }) => Unsafe,
            Problem::AmdVi(_) => Incomplete,
            Problem::Smmuv3Refusal(smmuv3::StrtabRefusal::InCrashRegion { .. }) => Unsafe,
            Problem::Smmuv3Refusal(_) => Incomplete,
            Problem::Smmuv3(smmuv3::SteProblem::TableInCrashRegion { .. }) => Unsafe,
            Problem::Smmuv3(_) => Incomplete,
            Problem::Walk(WalkProblem::TableInCrashRegion { .. }) => Unsafe,
            Problem::Walk(WalkProblem::Shared { .. }) => Note,
            Problem::Walk(_) => Incomplete,
            Problem::ExclusionRange { .. } => Note,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::RegisterMissing { name, off } => write!(f, "register {name} (offset {off:#x}) is not in the snapshot"),
            Problem::NotThisKind { register, off, value } => write!(
                f,
                "register {register} (offset {off:#x}) reads {value:#x}, which has reserved bits set: not this IOMMU kind's registers"
            ),
            Problem::VtdRefusal(r) => write!(f, "{r}"),
            Problem::Vtd(p) => write!(f, "{p}"),
            Problem::AmdViRefusal(r) => write!(f, "{r}"),
            Problem::AmdVi(p) => write!(f, "{p}"),
            Problem::Smmuv3Refusal(r) => write!(f, "{r}"),
            Problem::Smmuv3(p) => write!(f, "{p}"),
            Problem::Walk(WalkProblem::Unreadable { level, table, err }) => {
                write!(f, "level-{level} table {table:#x} not readable: {err}")
            }
            Problem::Walk(WalkProblem::Reserved { level, iova, raw }) => {
                write!(f, "level-{level} entry for IOVA {iova:#x} cannot be decoded ({raw:#018x})")
            }
            Problem::Walk(WalkProblem::Cycle { table, level, first_level }) => {
                write!(f, "table {table:#x} reached again at level {level} (first at level {first_level}): a cycle")
            }
            Problem::Walk(WalkProblem::Shared { table, level }) => {
                write!(f, "level-{level} table {table:#x} reached twice; its IOVAs are listed once")
            }
            Problem::Walk(WalkProblem::TableInCrashRegion { table, level }) => {
                write!(f, "level-{level} table {table:#x} lies inside the crash kernel's region")
            }
            Problem::Budget(Limit::Pages) => f.write_str("the work budget's page-table pages ran out before this walk ended"),
            Problem::Budget(Limit::Runs) => f.write_str("the work budget's runs ran out before this walk ended"),
            Problem::ExclusionRange { first, last, allow } => write!(
                f,
                "exclusion range {first:#x}..={last:#x} enabled for {}: requests inside it are not translated",
                if *allow { "every device" } else { "devices with DTE.EX" }
            ),
            Problem::Budget(Limit::Devices) => {
                f.write_str("the work budget's devices ran out: the unit's tables name more, not listed or judged")
            }
        }
    }
}

/// The total work of one inspection or audit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Page-table pages read, over every walk.
    pub max_pages: u64,
    /// IOVA runs kept, over every device.
    pub max_runs: u64,
    /// Problems kept, over every unit and device (beyond it they are counted, not kept).
    pub max_problems: u64,
    /// Devices listed, over every unit.
    pub max_devices: u64,
}

impl Default for Budget {
    /// 256 Ki table pages (1 GiB of tables), 1 Mi runs (40 MiB), 64 Ki problems, 128 Ki devices (two
    /// whole PCI segments).
    fn default() -> Self {
        Budget { max_pages: 1 << 18, max_runs: 1 << 20, max_problems: 1 << 16, max_devices: 1 << 17 }
    }
}

/// What a budget has been spent on so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Spent {
    /// Page-table pages read, against [`Budget::max_pages`].
    pub pages: u64,
    /// IOVA runs kept, against [`Budget::max_runs`].
    pub runs: u64,
    /// Problems kept, against [`Budget::max_problems`].
    pub problems: u64,
    /// Problems met but not kept.
    pub problems_dropped: u64,
    /// Devices listed, against [`Budget::max_devices`].
    pub devices: u64,
    /// Devices the tables name but the budget did not list.
    pub devices_dropped: u64,
    /// The limit that ran out, if one did.
    pub exhausted: Option<Limit>,
}

/// A [`Budget`] and what has been spent of it: shared by every unit scanned in one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Work {
    /// The limits, fixed for the run.
    pub budget: Budget,
    /// What the units scanned so far have used.
    pub spent: Spent,
}

impl Work {
    /// Nothing spent yet of `budget`.
    pub fn new(budget: Budget) -> Self {
        Work { budget, spent: Spent::default() }
    }

    /// Keep `p` in `list` if the budget allows; it counts towards `worst` either way.
    fn keep(&mut self, list: &mut Vec<Problem>, worst: &mut Option<Severity>, dropped: &mut u64, p: Problem) {
        let s = p.severity();
        if worst.is_none_or(|w| w < s) {
            *worst = Some(s);
        }
        if self.spent.problems < self.budget.max_problems {
            self.spent.problems += 1;
            list.push(p);
        } else {
            self.spent.problems_dropped += 1;
            *dropped += 1;
        }
    }
}

/// A page-table format, one per vendor (the walker's [`Format`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableFormat {
    /// VT-d second-level tables (the unit's CAP says which page sizes it has).
    VtdSecondLevel(iommu_spec::vtd::Cap),
    /// VT-d first-level (x86-64-format) tables of a PASID entry with PGTT = 001 (CAP.FL1GP says whether
    /// 1 GiB pages exist).
    VtdFirstLevel(iommu_spec::vtd::Cap),
    /// AMD-Vi v1 host page tables.
    AmdViV1(amdvi::V1),
    /// VMSAv8-64, 4 KiB granule: SMMUv3 stage 1 or 2.
    Vmsa(smmuv3::Vmsa),
}

impl TableFormat {
    /// The format's stable name in `inspect` output and the audit's JSON.
    pub fn name(&self) -> &'static str {
        match self {
            TableFormat::VtdSecondLevel(_) => "vtd-second-level",
            TableFormat::VtdFirstLevel(_) => "vtd-first-level",
            TableFormat::AmdViV1(_) => "amdvi-v1",
            TableFormat::Vmsa(v) if v.stage == smmuv3::Stage::One => "vmsa-stage1",
            TableFormat::Vmsa(_) => "vmsa-stage2",
        }
    }
}

impl Format for TableFormat {
    fn decode(&self, raw: u64, level: u32, iova: u64) -> Entry {
        match self {
            TableFormat::VtdSecondLevel(cap) => vtd::SecondLevel(*cap).decode(raw, level, iova),
            TableFormat::VtdFirstLevel(cap) => vtd::FirstLevel(*cap).decode(raw, level, iova),
            TableFormat::AmdViV1(v) => v.decode(raw, level, iova),
            TableFormat::Vmsa(v) => v.decode(raw, level, iova),
        }
    }
    fn slot_size(&self, level: u32) -> u64 {
        match self {
            TableFormat::VtdSecondLevel(cap) => vtd::SecondLevel(*cap).slot_size(level),
            TableFormat::VtdFirstLevel(cap) => vtd::FirstLevel(*cap).slot_size(level),
            TableFormat::AmdViV1(v) => v.slot_size(level),
            TableFormat::Vmsa(v) => v.slot_size(level),
        }
    }
    fn index(&self, iova: u64, level: u32) -> usize {
        match self {
            TableFormat::VtdSecondLevel(cap) => vtd::SecondLevel(*cap).index(iova, level),
            TableFormat::VtdFirstLevel(cap) => vtd::FirstLevel(*cap).index(iova, level),
            TableFormat::AmdViV1(v) => v.index(iova, level),
            TableFormat::Vmsa(v) => v.index(iova, level),
        }
    }
}

/// How a requester's DMA is handled by the unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Translation {
    /// Through page tables at `root`, `levels` deep; `read`/`write` bound every mapping (AMD-Vi DTE IR/IW).
    Translated {
        /// Physical address of the top-level table.
        root: u64,
        /// Levels from the root to the 4 KiB leaves (VT-d AW, AMD-Vi DTE Mode, VMSA start level).
        levels: u32,
        /// How its entries decode.
        format: TableFormat,
        /// Reads may be allowed by the tables (false: every read faults, whatever they map).
        read: bool,
        /// Writes may be allowed by the tables.
        write: bool,
    },
    /// Untranslated: the requester reaches all of memory with these permissions.
    PassThrough {
        /// DMA reads of memory are allowed.
        read: bool,
        /// DMA writes to memory are allowed.
        write: bool,
    },
    /// A present entry that lets nothing through.
    Blocked,
    /// Two stages (SMMUv3 nested, VT-d PASID entry PGTT = 011): not walked, reach unknown.
    Nested,
    /// The entry could not be decoded or trusted: see the device's problems.
    Undecodable,
}

impl Translation {
    /// The one word `inspect` and the audit's JSON print for it.
    pub fn word(&self) -> &'static str {
        match self {
            Translation::Translated { .. } => "translated",
            Translation::PassThrough { .. } => "passthrough",
            Translation::Blocked => "blocked",
            Translation::Nested => "nested",
            Translation::Undecodable => "invalid",
        }
    }
}

/// One requester the unit's tables name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// PCI requester ID (bus << 8 | devfn) on VT-d and AMD-Vi; the StreamID on SMMUv3.
    pub id: u32,
    /// The domain tag: VT-d DID, AMD-Vi domain ID, SMMUv3 ASID (stage 1) or VMID (stage 2).
    pub domain: Option<u32>,
    /// How the unit handles its DMA, as its entry says.
    pub translation: Translation,
    /// IOVA → physical runs its page tables map, merged, in IOVA order.
    pub runs: Vec<Run>,
    /// Page-table pages its walk read.
    pub table_pages: Vec<u64>,
    /// What was met while decoding its entry and walking its tables, as far as the budget kept.
    pub problems: Vec<Problem>,
    /// Problems met but not kept (the budget's).
    pub problems_dropped: u64,
    /// The worst severity met, kept or not.
    pub worst: Option<Severity>,
}

impl Device {
    fn new(id: u32, domain: Option<u32>, translation: Translation) -> Self {
        Device {
            id,
            domain,
            translation,
            runs: Vec::new(),
            table_pages: Vec::new(),
            problems: Vec::new(),
            problems_dropped: 0,
            worst: None,
        }
    }
}

/// The table formats of the root structures a unit walks from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// VT-d root and context tables (RTADDR.TTM = 00).
    VtdLegacy,
    /// VT-d scalable-mode root, context and PASID tables (RTADDR.TTM = 01).
    VtdScalable,
    /// The AMD-Vi device table, with v1 host page tables.
    AmdViV1,
    /// An SMMUv3 linear stream table (STRTAB_BASE_CFG.FMT = 0).
    Smmuv3Linear,
    /// An SMMUv3 2-level stream table: level-1 descriptors naming level-2 STE tables (FMT = 1).
    Smmuv3TwoLevel,
}

impl Mode {
    /// The mode's word in `inspect` output and the audit's JSON.
    pub fn word(&self) -> &'static str {
        match self {
            Mode::VtdLegacy => "legacy",
            Mode::VtdScalable => "scalable",
            Mode::AmdViV1 => "v1",
            Mode::Smmuv3Linear => "linear",
            Mode::Smmuv3TwoLevel => "2-level",
        }
    }
    /// The IOMMU kind's name, as `--iommu` takes it.
    pub fn iommu(&self) -> &'static str {
        match self {
            Mode::VtdLegacy | Mode::VtdScalable => "vtd",
            Mode::AmdViV1 => "amdvi",
            Mode::Smmuv3Linear | Mode::Smmuv3TwoLevel => "smmuv3",
        }
    }
}

/// One unit, scanned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitScan {
    /// The root-table format the registers select.
    pub mode: Mode,
    /// The registers were read and belong to this kind (false: see `problems`; nothing else is known).
    pub scanned: bool,
    /// Translation enabled (GSTS.TES, CONTROL.IOMMU_EN, CR0.SMMUEN).
    pub translation_enabled: bool,
    /// DMA passes untranslated whatever the tables say (translation off; SMMUv3 disabled with GBPA bypass).
    pub bypass: bool,
    /// All DMA is aborted whatever the tables say, and no table is walked (SMMUv3 disabled with GBPA abort).
    pub aborts: bool,
    /// Root table, device table or stream table address.
    pub root_table: u64,
    /// The tables the unit walks before any page table: root, context and PASID pages (VT-d), the device
    /// table (AMD-Vi), the stream table and its level-2 tables (SMMUv3).
    pub tables: Vec<Range<u64>>,
    /// By ID, ascending.
    pub devices: Vec<Device>,
    /// Problems not tied to one device (a bus, a run of the device table, the registers).
    pub problems: Vec<Problem>,
    /// Unit problems met but not kept (the budget's).
    pub problems_dropped: u64,
    /// The worst severity met on the unit itself, kept or not (each device has its own).
    pub worst: Option<Severity>,
}

impl UnitScan {
    /// A unit whose tables could not be scanned at all, for `problem`.
    pub fn unscanned(mode: Mode, problem: Problem, work: &mut Work) -> Self {
        let mut u = UnitScan {
            mode,
            scanned: false,
            translation_enabled: false,
            bypass: false,
            aborts: false,
            root_table: 0,
            tables: Vec::new(),
            devices: Vec::new(),
            problems: Vec::new(),
            problems_dropped: 0,
            worst: None,
        };
        u.problem(problem, work);
        u
    }

    fn problem(&mut self, p: Problem, work: &mut Work) {
        work.keep(&mut self.problems, &mut self.worst, &mut self.problems_dropped, p);
    }
}

/// Collects a scan's devices by ID.
struct Devices {
    by_id: BTreeMap<u32, Device>,
    /// Devices not listed for the budget.
    dropped: u64,
}

impl Devices {
    fn new() -> Self {
        Devices { by_id: BTreeMap::new(), dropped: 0 }
    }
    /// The entry for `id`, made with `make` if the budget allows one more device.
    fn entry(&mut self, id: u32, work: &mut Work, make: impl FnOnce() -> Device) -> Option<&mut Device> {
        if !self.by_id.contains_key(&id) {
            if work.spent.devices >= work.budget.max_devices {
                self.dropped += 1;
                work.spent.devices_dropped += 1;
                return None;
            }
            work.spent.devices += 1;
            self.by_id.insert(id, make());
        }
        self.by_id.get_mut(&id)
    }
    fn add(&mut self, d: Device, work: &mut Work) {
        let (id, translation, domain) = (d.id, d.translation, d.domain);
        if let Some(e) = self.entry(id, work, || Device::new(id, domain, translation)) {
            (e.translation, e.domain) = (translation, domain);
        }
    }
    /// A problem about device `id`: an undecodable device when the scan listed none under that ID.
    fn problem(&mut self, id: u32, p: Problem, work: &mut Work) {
        if let Some(d) = self.entry(id, work, || Device::new(id, None, Translation::Undecodable)) {
            work.keep(&mut d.problems, &mut d.worst, &mut d.problems_dropped, p);
        }
    }
    /// The listed devices, and the unit problem saying how many were not.
    fn finish(self, unit: &mut UnitScan, work: &mut Work) {
        if self.dropped > 0 {
            work.spent.exhausted.get_or_insert(Limit::Devices);
            unit.problem(Problem::Budget(Limit::Devices), work);
        }
        unit.devices = self.by_id.into_values().collect();
    }
}

/// The walker's visitor for one device, charging the shared budget.
struct DeviceWalk<'a> {
    dev: &'a mut Device,
    work: &'a mut Work,
    env: &'a BootEnv,
    /// Entry-level permissions bounding every mapping.
    read: bool,
    write: bool,
}

impl DeviceWalk<'_> {
    fn problem(&mut self, p: Problem) {
        self.work.keep(&mut self.dev.problems, &mut self.dev.worst, &mut self.dev.problems_dropped, p);
    }
    fn exhausted(&mut self, l: Limit) {
        self.work.spent.exhausted.get_or_insert(l);
        self.problem(Problem::Budget(l));
    }
}

impl Visitor for DeviceWalk<'_> {
    fn enter(&mut self, table: u64, level: u32) -> bool {
        if self.work.spent.pages >= self.work.budget.max_pages {
            self.exhausted(Limit::Pages);
            return false;
        }
        self.work.spent.pages += 1;
        self.dev.table_pages.push(table);
        if self.env.in_crash_region(table, 4096) {
            self.problem(Problem::Walk(WalkProblem::TableInCrashRegion { table, level }));
        }
        true
    }
    fn unreadable(&mut self, level: u32, table: u64, err: MemError) {
        self.problem(Problem::Walk(WalkProblem::Unreadable { level, table, err }));
    }
    fn reserved(&mut self, level: u32, iova: u64, raw: u64) {
        self.problem(Problem::Walk(WalkProblem::Reserved { level, iova, raw }));
    }
    fn revisit(&mut self, table: u64, level: u32, read: bool, write: bool, first: FirstVisit) {
        let wider = (read && !first.read) || (write && !first.write);
        let p = if level != first.level || wider {
            WalkProblem::Cycle { table, level, first_level: first.level }
        } else {
            WalkProblem::Shared { table, level }
        };
        self.problem(Problem::Walk(p));
    }
    fn leaf(&mut self, run: Run) -> bool {
        let run = Run { read: run.read && self.read, write: run.write && self.write, ..run };
        if !run.read && !run.write {
            return true;
        }
        if merge_run(&mut self.dev.runs, run) {
            return true;
        }
        if self.work.spent.runs >= self.work.budget.max_runs {
            self.exhausted(Limit::Runs);
            return false;
        }
        self.work.spent.runs += 1;
        self.dev.runs.push(run);
        true
    }
}

/// Walk every translated device's tables under the shared budget. A device left when the budget is gone
/// is marked incomplete without a walk.
fn walk_devices(mem: &impl PhysMem, env: &BootEnv, devices: &mut Devices, work: &mut Work) {
    for dev in devices.by_id.values_mut() {
        let Translation::Translated { root, levels, format, read, write } = dev.translation else {
            continue;
        };
        if let Some(l) = work.spent.exhausted {
            work.keep(&mut dev.problems, &mut dev.worst, &mut dev.problems_dropped, Problem::Budget(l));
            continue;
        }
        let mut v = DeviceWalk { dev, work, env, read, write };
        walk_with(mem, &format, root, levels, &mut v);
    }
}

/// The first register of `checks` whose reserved bits are set: `(name, offset, value, reserved bits)`.
fn not_this_kind(checks: &[(&'static str, usize, u64, u64)]) -> Option<Problem> {
    checks.iter().find(|c| c.3 != 0).map(|&(register, off, value, _)| Problem::NotThisKind { register, off, value })
}

/// Scan a VT-d unit: root and context tables (and scalable-mode PASID entries) by `vtd::scan`, then every
/// translated device's second-level tables.
pub fn scan_vtd(hw: &mut (impl Mmio + PhysMem), env: &BootEnv, work: &mut Work) -> UnitScan {
    use iommu_spec::vtd::{off, Cap, Gsts, RtAddr, Ver};
    let ver = Ver::from_bits(hw.read32(off::VER));
    let rtaddr = RtAddr::from_bits(hw.read64(off::RTADDR));
    let mode = if rtaddr.smt() { Mode::VtdScalable } else { Mode::VtdLegacy };
    // VER (11.4.1): bits 31:8 are reserved, and the major version is at least 1.
    let ver_bad = (ver.into_bits() >> 8) | u32::from(ver.max() == 0);
    if let Some(p) = not_this_kind(&[("VER", off::VER, u64::from(ver.into_bits()), u64::from(ver_bad))]) {
        return UnitScan::unscanned(mode, p, work);
    }
    let cap = Cap::from_bits(hw.read64(off::CAP));
    let gsts = Gsts::from_bits(hw.read32(off::GSTS));
    let mut unit = UnitScan::scanned(mode, gsts.tes(), rtaddr.table());
    unit.bypass = !gsts.tes();
    // The root table is walked by the hardware even when the scan refuses it.
    unit.tables.push(rtaddr.table()..rtaddr.table().saturating_add(4096));
    let scan = match vtd::scan(hw, env, None) {
        Ok(s) => s,
        Err(r) => {
            unit.problem(Problem::VtdRefusal(r), work);
            return unit;
        }
    };
    unit.tables.extend(scan.pages_read.iter().filter(|p| **p != rtaddr.table()).map(|p| *p..p.saturating_add(4096)));
    let fmt = TableFormat::VtdSecondLevel(cap);
    let mut devices = Devices::new();
    for d in &scan.devices {
        let (translation, domain) = match d.kind {
            vtd::DeviceKind::Translated { root, levels } => {
                (Translation::Translated { root, levels, format: fmt, read: true, write: true }, Some(d.did))
            }
            vtd::DeviceKind::FirstLevel { root, levels, .. } => {
                let format = TableFormat::VtdFirstLevel(cap);
                (Translation::Translated { root, levels, format, read: true, write: true }, Some(d.did))
            }
            vtd::DeviceKind::PassThrough => (Translation::PassThrough { read: true, write: true }, Some(d.did)),
            vtd::DeviceKind::Blocked => (Translation::Blocked, (d.did != 0).then_some(d.did)),
        };
        devices.add(Device::new(u32::from(d.sid), domain.map(u32::from), translation), work);
    }
    for p in scan.problems {
        match p.sid() {
            Some(sid) => {
                // A nested PASID entry is a kind of its own (two stages, not walked), not a malformed one.
                if let vtd::EntryProblem::NestedTranslation { .. } = p {
                    let id = u32::from(sid);
                    // Through the budget like every device: a nested entry is one more listed.
                    if let Some(d) = devices.entry(id, work, || Device::new(id, None, Translation::Nested)) {
                        d.translation = Translation::Nested;
                    }
                }
                devices.problem(u32::from(sid), Problem::Vtd(p), work)
            }
            None => unit.problem(Problem::Vtd(p), work),
        }
    }
    walk_devices(hw, env, &mut devices, work);
    devices.finish(&mut unit, work);
    unit
}

/// Scan an AMD-Vi unit: the device table by `amdvi::scan`, then every translated device's v1 tables.
pub fn scan_amdvi(hw: &mut (impl Mmio + PhysMem), env: &BootEnv, work: &mut Work) -> UnitScan {
    use iommu_spec::amdvi::{off, Control, DevTableBase};
    let base = DevTableBase::from_bits(hw.read64(off::DEV_TABLE_BASE));
    let control = Control::from_bits(hw.read64(off::CONTROL));
    if let Some(p) = not_this_kind(&[("DEV_TABLE_BASE", off::DEV_TABLE_BASE, base.into_bits(), base.reserved_bits())]) {
        return UnitScan::unscanned(Mode::AmdViV1, p, work);
    }
    let mut unit = UnitScan::scanned(Mode::AmdViV1, control.iommu_en(), env.old_pa(base.table()));
    unit.bypass = !control.iommu_en();
    unit.tables.push(unit.root_table..unit.root_table.saturating_add(base.bytes()));
    let scan = match amdvi::scan(hw, env, false) {
        Ok(s) => s,
        Err(r) => {
            unit.problem(Problem::AmdViRefusal(r), work);
            return unit;
        }
    };
    let mut devices = Devices::new();
    for d in &scan.devices {
        let translation = match d.kind {
            amdvi::DteKind::Translated { root, levels } => Translation::Translated {
                root,
                levels,
                format: TableFormat::AmdViV1(amdvi::V1::of(env)),
                read: d.dte.ir(),
                write: d.dte.iw(),
            },
            amdvi::DteKind::PassThrough { read, write } => Translation::PassThrough { read, write },
            // V=0: the unit passes the DMA through untranslated (AMD IOMMU spec 2.2.2.1).
            amdvi::DteKind::NotValid => Translation::PassThrough { read: true, write: true },
        };
        devices.add(Device::new(u32::from(d.devid), Some(u32::from(d.domain)), translation), work);
    }
    for p in scan.problems.iter().cloned() {
        match p.devid() {
            Some(id) => devices.problem(u32::from(id), Problem::AmdVi(p), work),
            None => unit.problem(Problem::AmdVi(p), work),
        }
    }
    walk_devices(hw, env, &mut devices, work);
    exclusion_range(hw, env, &scan, &mut devices, &mut unit, work);
    devices.finish(&mut unit, work);
    unit
}

/// An enabled exclusion range: a unit note, and the range added to the reach of every device it covers.
/// (Under the SNP lock these registers are the completion-store window instead, and Linux leaves ExEn clear.)
fn exclusion_range(
    hw: &mut impl Mmio,
    env: &BootEnv,
    scan: &amdvi::DevTableScan,
    devices: &mut Devices,
    unit: &mut UnitScan,
    work: &mut Work,
) {
    use iommu_spec::amdvi::{off, ExclusionBase, ExclusionLimit};
    let base = ExclusionBase::from_bits(hw.read64(off::EXCL_BASE));
    let (first, last) = (env.old_pa(base.address()), ExclusionLimit::from_bits(hw.read64(off::EXCL_LIMIT)).last());
    if !base.ex_en() || last < first {
        return;
    }
    unit.problem(Problem::ExclusionRange { first, last, allow: base.allow() }, work);
    let size = (last - first).saturating_add(1);
    for d in devices.by_id.values_mut() {
        let ex = scan.devices.iter().find(|s| u32::from(s.devid) == d.id).is_some_and(|s| s.dte.qw1().ex());
        if base.allow() || ex {
            d.runs.push(Run { iova: first, phys: first, size, read: true, write: true });
        }
    }
}

/// Scan an SMMUv3: the stream table by `smmuv3::scan`, then every translating stream's tables.
pub fn scan_smmuv3(hw: &mut (impl Mmio + PhysMem), env: &BootEnv, work: &mut Work) -> UnitScan {
    use iommu_spec::smmuv3::{off, Config, Cr0, Gbpa, StrtabBase, StrtabBaseCfg, StrtabFmt};
    let cr0 = Cr0::from_bits(hw.read32(off::CR0));
    let base = StrtabBase::from_bits(hw.read64(off::STRTAB_BASE));
    let cfg = StrtabBaseCfg::from_bits(hw.read32(off::STRTAB_BASE_CFG));
    let gbpa = Gbpa::from_bits(hw.read32(off::GBPA));
    let mode = if cfg.fmt() == StrtabFmt::TwoLevel { Mode::Smmuv3TwoLevel } else { Mode::Smmuv3Linear };
    if let Some(p) = not_this_kind(&[
        ("CR0", off::CR0, u64::from(cr0.into_bits()), u64::from(cr0.reserved_bits())),
        ("STRTAB_BASE", off::STRTAB_BASE, base.into_bits(), base.reserved_bits()),
        ("STRTAB_BASE_CFG", off::STRTAB_BASE_CFG, u64::from(cfg.into_bits()), u64::from(cfg.reserved_bits())),
        ("GBPA", off::GBPA, u64::from(gbpa.into_bits()), u64::from(gbpa.reserved_bits())),
    ]) {
        return UnitScan::unscanned(mode, p, work);
    }
    let mut unit = UnitScan::scanned(mode, cr0.smmuen(), base.table());
    // With SMMUEN clear, GBPA decides: abort, or every stream bypasses (SMMUv3 6.3.14).
    unit.bypass = !cr0.smmuen() && !gbpa.abort();
    unit.aborts = !cr0.smmuen() && gbpa.abort();
    let scan = match smmuv3::scan(hw, env) {
        Ok(s) => s,
        Err(r) => {
            // A refused configuration has no trusted size: its first page at least is walked.
            unit.tables.push(base.table()..base.table().saturating_add(4096));
            unit.problem(Problem::Smmuv3Refusal(r), work);
            return unit;
        }
    };
    unit.tables = stream_tables(hw, base.table(), cfg);
    let mut devices = Devices::new();
    for s in &scan.streams {
        let (translation, domain) = match s.kind {
            smmuv3::SteKind::Bypass => (Translation::PassThrough { read: true, write: true }, None),
            smmuv3::SteKind::Blocked { asid } => (Translation::Blocked, Some(asid)),
            smmuv3::SteKind::Stage1 { ttb0, walk, asid } => (
                Translation::Translated {
                    root: ttb0,
                    levels: walk.levels(),
                    format: TableFormat::Vmsa(walk),
                    read: true,
                    write: true,
                },
                Some(asid),
            ),
            smmuv3::SteKind::Stage2 { s2ttb, walk, vmid } => (
                Translation::Translated {
                    root: s2ttb,
                    levels: walk.levels(),
                    format: TableFormat::Vmsa(walk),
                    read: true,
                    write: true,
                },
                Some(vmid),
            ),
        };
        devices.add(Device::new(s.sid, domain.map(u32::from), translation), work);
    }
    for p in scan.problems {
        match p.sid() {
            Some(sid) => {
                // A nested STE (Config 0b111) is a kind of its own: both stages, not walked here.
                if let smmuv3::SteProblem::SteUnsupported { config, .. } = p {
                    if Config(config) == Config::Nested {
                        // Through the budget like every device: a nested STE is one more listed.
                        if let Some(d) = devices.entry(sid, work, || Device::new(sid, None, Translation::Nested)) {
                            d.translation = Translation::Nested;
                        }
                    }
                }
                devices.problem(sid, Problem::Smmuv3(p), work)
            }
            None => unit.problem(Problem::Smmuv3(p), work),
        }
    }
    walk_devices(hw, env, &mut devices, work);
    devices.finish(&mut unit, work);
    unit
}

impl UnitScan {
    /// A unit whose registers were read, before its tables are.
    fn scanned(mode: Mode, translation_enabled: bool, root_table: u64) -> Self {
        UnitScan {
            mode,
            scanned: true,
            translation_enabled,
            bypass: false,
            aborts: false,
            root_table,
            tables: Vec::new(),
            devices: Vec::new(),
            problems: Vec::new(),
            problems_dropped: 0,
            worst: None,
        }
    }
}

/// The stream table's pages: the linear table, or the level-1 table and every valid level-2 table it names
/// (SMMUv3 6.3.24: STRTAB_BASE_CFG), read again a page of descriptors at a time. Only called after
/// `smmuv3::scan` accepted the configuration, which bounds the level-1 table.
fn stream_tables(mem: &impl PhysMem, table: u64, cfg: iommu_spec::smmuv3::StrtabBaseCfg) -> Vec<Range<u64>> {
    use iommu_spec::smmuv3::{L1Desc, StrtabFmt};
    let (log2size, split) = (u32::from(cfg.log2size()), u32::from(cfg.split()));
    if cfg.fmt() != StrtabFmt::TwoLevel {
        let bytes = 1u64.checked_shl(log2size).and_then(|n| n.checked_mul(64)).unwrap_or(u64::MAX);
        return alloc::vec![table..table.saturating_add(bytes)];
    }
    let l1 = 1u64.checked_shl(log2size.saturating_sub(split)).unwrap_or(0).min(smmuv3::scan::MAX_L1);
    let mut out = alloc::vec![table..table.saturating_add(l1 * 8)];
    let mut page = [0u8; 4096];
    for first in (0..l1).step_by(512) {
        let n = (l1 - first).min(512) as usize;
        let Some(at) = table.checked_add(first * 8) else { break };
        if mem.read(at, &mut page[..n * 8]).is_err() {
            continue;
        }
        for q in page[..n * 8].chunks_exact(8) {
            let d = L1Desc::from_bits(u64::from_le_bytes(q.try_into().unwrap_or([0; 8])));
            if d.valid() && d.reserved_bits() == 0 {
                out.push(d.l2_table()..d.l2_table().saturating_add(d.l2_bytes()));
            }
        }
    }
    out
}
