//! Faults a crashed machine can be left with, for the simulator's `--inject`: each function takes the memory
//! and the IOMMU unit at the crash instant and makes the structures look the way a crashed (or corrupted)
//! kernel could have left them, then drops what the unit cached, as that kernel would have flushed after
//! writing. The unit keeps translating with what it finds: the point of most faults is an entry that a careful
//! crash kernel must refuse although the hardware still walks it.
//!
//! Faults that are not a state of memory and registers are configuration: [`no_iasup`] is a unit built
//! without EFR.IASup, [`snp_kernel_without_mem_encrypt`] a crash kernel booted without `mem_encrypt`, and
//! `attach-before-reset` an order of the crash kernel's driver; the simulator applies those itself.
//!
//! Where a fault lands follows one rule: the hardware acts on what memory says at any moment (a walker may
//! fetch an entry without waiting for an invalidation), so a fault in what a device walks while it does DMA
//! acts before any crash-kernel code runs, and no policy can answer it. Each fault is therefore placed where
//! the crash kernel gets to judge it first: on a device that does no DMA from the panic until the crash
//! kernel resets it ([`Crashed::idle`]: a torn entry is an attach in progress, and Linux attaches a device
//! while its driver probes it, before it is started), or on a page a device reaches only after the crash
//! kernel's IOMMU init ([`Crashed::late`]). A fault with no such place answers
//! [`Injected::NotApplicable`] with the reason.
//!
//! Everything is read from the crashed state as hostile input: bounded walks, checked arithmetic, and a typed
//! [`Injected::NotApplicable`] with the reason when the state offers nothing to corrupt.

use std::ops::Range;

use iommu_platform::{BootEnv, PhysMem};
use iommu_spec::amdvi::{self, DevTableBase, Dte, ExclusionBase, ExclusionLimit, PagingMode};
use iommu_spec::smmuv3::{self, Cd, L1Desc, Ste, StrtabBase, StrtabBaseCfg, StrtabFmt};
use iommu_spec::vtd::{ContextEntry, PasidDirEntry, PasidEntryQw0, RootEntry, ScalableContextEntry, ScalableRootEntry};

use crate::mem::PhysMemory;
use crate::platform::MmioDevice;
use crate::{AmdviConfig, AmdviModel, Smmuv3Model, VtdModel};

/// The injection names the simulator accepts (`bitflips` takes `:N`).
pub const NAMES: &[&str] = &[
    "pt-in-crash-region",
    "leaf-in-crash-region",
    "entry-rejected-live",
    "cmdq-error-pending",
    "torn-entry",
    "insert-refused",
    "l1-reserved-bits",
    "snp-kernel-without-mem-encrypt",
    "no-iasup",
    "ring-at-zero",
    "exclusion-range",
    "domain-id-alias",
    "attach-before-reset",
    "wide-iova",
    "bitflips",
];

/// The unit of the crashed machine.
pub enum Unit<'a> {
    /// An Intel VT-d remapping unit.
    Vtd(&'a mut VtdModel),
    /// An AMD-Vi IOMMU.
    Amdvi(&'a mut AmdviModel),
    /// An Arm SMMUv3.
    Smmuv3(&'a mut Smmuv3Model),
}

/// The crashed machine as a fault finds it.
pub struct Crashed<'a> {
    /// The machine's memory as the panic left it: the old kernel's tables and queues.
    pub mem: &'a mut PhysMemory,
    /// The IOMMU, with its registers as the panic left them.
    pub unit: Unit<'a>,
    /// The crash kernel's reserved region: where "in the crash region" faults point.
    pub crash_region: Range<u64>,
    /// Seed of the seeded faults (`bitflips`).
    pub seed: u64,
    /// Requester IDs (stream IDs) of the devices that do no DMA from the panic until the crash kernel resets
    /// them: where `torn-entry` and `bitflips` land.
    pub idle: &'a [u32],
    /// A page some device writes only after the crash kernel's IOMMU init: where `leaf-in-crash-region` lands.
    pub late: Option<LateDma>,
}

/// A DMA the crashed machine's devices will issue only after the crash kernel's IOMMU init (e.g. the NIC's
/// last posted receive buffer, filled once the packets before it have arrived).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LateDma {
    /// Requester ID (stream ID) of the device.
    pub dev: u32,
    /// The IOVA it will write.
    pub iova: u64,
}

/// What a fault did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Injected {
    /// The fault was injected.
    Applied {
        /// What was changed, for reports.
        what: String,
    },
    /// The fault does not apply to this machine (e.g. another vendor's, or nothing to corrupt).
    NotApplicable {
        /// Why not.
        why: &'static str,
    },
}

impl Injected {
    fn applied(what: impl Into<String>) -> Self {
        Injected::Applied { what: what.into() }
    }
    fn na(why: &'static str) -> Self {
        Injected::NotApplicable { why }
    }
    /// Whether the fault was injected.
    pub fn is_applied(&self) -> bool {
        matches!(self, Injected::Applied { .. })
    }
}

/// A name not in [`NAMES`], or `bitflips` without a count.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown fault {0:?}")]
pub struct UnknownFault(pub String);

/// Apply the fault `name` (one of [`NAMES`]; `bitflips:N`). Configuration faults answer `NotApplicable`: the
/// simulator applies them when it builds the unit or boots the crash kernel.
pub fn apply(name: &str, m: &mut Crashed) -> Result<Injected, UnknownFault> {
    let unknown = || UnknownFault(name.to_string());
    Ok(match name {
        "pt-in-crash-region" => pt_in_crash_region(m),
        "leaf-in-crash-region" => leaf_in_crash_region(m),
        "entry-rejected-live" => entry_rejected_live(m),
        "cmdq-error-pending" => cmdq_error_pending(m),
        "torn-entry" => torn_entry(m),
        "insert-refused" => insert_refused(m),
        "l1-reserved-bits" => l1_reserved_bits(m),
        "ring-at-zero" => ring_at_zero(m),
        "exclusion-range" => exclusion_range(m),
        "domain-id-alias" => domain_id_alias(m),
        "wide-iova" => wide_iova(m),
        "snp-kernel-without-mem-encrypt" | "no-iasup" | "attach-before-reset" => {
            Injected::na("a configuration of the unit or the crash kernel, not a state: the simulator applies it")
        }
        _ => match name.strip_prefix("bitflips:").and_then(|n| n.parse::<u32>().ok()) {
            Some(n) => bitflips(m, n),
            None => return Err(unknown()),
        },
    })
}

// ---- page tables, per format ----

/// How a translation table's entries decode, enough to follow one path down to a leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fmt {
    /// VT-d second level (R/W present bits 1:0, PS bit 7, address 51:12).
    VtdSl,
    /// AMD-Vi v1 (PR bit 0, NextLevel 11:9, address 51:12, less the host's SME bit `c_bit`, which the
    /// unit strips and rewrites keep).
    AmdV1 { c_bit: u64 },
    /// VMSAv8-64 4 KiB granule (valid bit 0, table/page bit 1, address 47:12).
    Vmsa,
}

const ADDR52: u64 = 0x000f_ffff_ffff_f000;
const ADDR48: u64 = 0x0000_ffff_ffff_f000;

impl Fmt {
    fn addr_mask(self) -> u64 {
        match self {
            Fmt::Vmsa => ADDR48,
            Fmt::AmdV1 { c_bit } => ADDR52 & !c_bit,
            Fmt::VtdSl => ADDR52,
        }
    }
    /// `Some(true)` a table pointer, `Some(false)` a leaf, `None` not present, at walker level `level` (1 = last).
    fn kind(self, raw: u64, level: u32) -> Option<bool> {
        match self {
            Fmt::VtdSl => (raw & 3 != 0).then_some(level > 1 && raw & 1 << 7 == 0),
            Fmt::AmdV1 { .. } => {
                let next = (raw >> 9) & 7;
                (raw & 1 != 0).then_some(next != 0 && next != 7)
            }
            Fmt::Vmsa => (raw & 1 != 0).then_some(level > 1 && raw & 2 != 0),
        }
    }
}

/// One step of a path: the table, the index in it, the raw entry, the walker level of the table.
#[derive(Clone, Copy, Debug)]
struct Step {
    table: u64,
    index: u64,
    raw: u64,
    level: u32,
}

/// The first path from `top` to a present leaf (depth-first, at most 64 tables read).
fn first_leaf(mem: &PhysMemory, fmt: Fmt, top: u64, levels: u32) -> Option<Vec<Step>> {
    fn go(mem: &PhysMemory, fmt: Fmt, table: u64, level: u32, budget: &mut u32, path: &mut Vec<Step>) -> bool {
        if level == 0 || *budget == 0 {
            return false;
        }
        *budget -= 1;
        for index in 0..512u64 {
            let Ok(raw) = mem.read_u64(table.wrapping_add(8 * index)) else { return false };
            let Some(is_table) = fmt.kind(raw, level) else { continue };
            path.push(Step { table, index, raw, level });
            if !is_table || go(mem, fmt, raw & fmt.addr_mask(), level - 1, budget, path) {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut path = Vec::new();
    let mut budget = 64;
    go(mem, fmt, top, levels.min(6), &mut budget, &mut path).then_some(path)
}

/// A device's translation: the top table, its levels and format, and the configuration entry (128 bits at
/// `at`) holding the pointer, with how to rewrite it.
struct Tables {
    dev: u32,
    top: u64,
    levels: u32,
    fmt: Fmt,
    at: u64,
    set_top: fn(u128, u64) -> u128,
    /// The configuration entries behind this device's translation, as (address, bytes): the context or
    /// PASID entry, the DTE, the STE and CD.
    entries: [(u64, u64); 2],
}

/// Copy the 4 KiB page at `from` to `to`.
fn copy_page(mem: &mut PhysMemory, from: u64, to: u64) -> bool {
    let mut page = [0u8; 4096];
    mem.read(from, &mut page).is_ok() && mem.write(to, &page).is_ok()
}

/// A page of the crash region for fault number `k`, away from its start (where a crash kernel loads).
fn crash_page(r: &Range<u64>, k: u64) -> Option<u64> {
    let p = r.start.checked_add(0x40_0000 + k * 0x1000)?;
    (p.checked_add(0x1000)? <= r.end).then_some(p)
}

fn vtd_tables(mem: &PhysMemory, v: &VtdModel) -> Vec<Tables> {
    let rt = v.active_root();
    let root = rt.table();
    let mut out = Vec::new();
    for bus in 0..256u64 {
        let Ok(re) = mem.read_u128(root + 16 * bus) else { return out };
        if rt.smt() {
            let e = ScalableRootEntry::from_bits(re);
            for (present, table, first) in [(e.lp(), e.lower_table(), 0u64), (e.up(), e.upper_table(), 0x80)] {
                if !present {
                    continue;
                }
                for i in 0..128u64 {
                    let Ok(ce) = mem.read_u128(table + 32 * i) else { break };
                    let ce = ScalableContextEntry::from_bits(ce);
                    if !ce.present() {
                        continue;
                    }
                    let Ok(de) = mem.read_u64(ce.pasid_dir()) else { continue };
                    let de = PasidDirEntry::from_bits(de);
                    if !de.present() {
                        continue;
                    }
                    // RID_PASID 0: the first entry of the first PASID table, as Linux sets it up.
                    let at = de.table();
                    let Ok(q0) = mem.read_u64(at) else { continue };
                    let q0 = PasidEntryQw0::from_bits(q0);
                    if !q0.present() || q0.slptptr() == 0 {
                        continue;
                    }
                    out.push(Tables {
                        dev: (bus << 8 | (first + i)) as u32,
                        top: q0.slptptr() << 12,
                        levels: q0.aw() as u32 + 2,
                        fmt: Fmt::VtdSl,
                        at,
                        set_top: |raw, pa| {
                            let q0 = PasidEntryQw0::from_bits(raw as u64).with_slptptr(pa >> 12);
                            (raw & !(u64::MAX as u128)) | q0.into_bits() as u128
                        },
                        entries: [(table + 32 * i, 32), (at, 64)],
                    });
                }
            }
        } else {
            let e = RootEntry::from_bits(re);
            if !e.present() {
                continue;
            }
            for devfn in 0..256u64 {
                let at = e.context_table() + 16 * devfn;
                let Ok(ce) = mem.read_u128(at) else { break };
                let ce = ContextEntry::from_bits(ce);
                if !ce.present() || ce.tt().0 == 2 {
                    continue;
                }
                out.push(Tables {
                    dev: (bus << 8 | devfn) as u32,
                    top: ce.page_table(),
                    levels: ce.aw() as u32 + 2,
                    fmt: Fmt::VtdSl,
                    at,
                    set_top: |raw, pa| ContextEntry::from_bits(raw).with_page_table(pa).into_bits(),
                    entries: [(at, 16), (at, 0)],
                });
            }
        }
    }
    out
}

fn amd_dev_table(mem: &mut PhysMemory, v: &mut AmdviModel) -> (u64, u32) {
    let t = DevTableBase::from_bits(v.mmio_read(mem, amdvi::off::DEV_TABLE_BASE, 8));
    (t.table() & !v.config().c_bit, t.entries())
}

fn amd_dte(mem: &PhysMemory, at: u64) -> Option<Dte> {
    let mut raw = [0u8; 32];
    mem.read(at, &mut raw).ok()?;
    Some(Dte::from_le_bytes(&raw))
}

fn amd_tables(mem: &mut PhysMemory, v: &mut AmdviModel) -> Vec<Tables> {
    let (table, entries) = amd_dev_table(mem, v);
    let mut out = Vec::new();
    for devid in 0..entries.min(65536) as u64 {
        let at = table + 32 * devid;
        let Some(d) = amd_dte(mem, at) else { break };
        let Some(levels) = d.mode().levels() else { continue };
        if !d.valid() || !d.translation_valid() || levels == 0 {
            continue;
        }
        out.push(Tables {
            dev: devid as u32,
            top: d.pt_root() & !v.config().c_bit,
            levels,
            fmt: Fmt::AmdV1 { c_bit: v.config().c_bit },
            at,
            set_top: |raw, pa| {
                let q0 = (raw as u64 & !ADDR52) | (pa & ADDR52);
                (raw & !(u64::MAX as u128)) | q0 as u128
            },
            entries: [(at, 32), (at, 0)],
        });
    }
    out
}

/// Every stream's STE address, bounded by the table the registers name (at most 2^16 streams).
fn smmu_stes(mem: &mut PhysMemory, v: &mut Smmuv3Model) -> Vec<(u32, u64)> {
    let base = StrtabBase::from_bits(v.mmio_read(mem, smmuv3::off::STRTAB_BASE, 8)).table();
    let cfg = StrtabBaseCfg::from_bits(v.mmio_read(mem, smmuv3::off::STRTAB_BASE_CFG, 4) as u32);
    let streams = 1u64 << cfg.log2size().min(16);
    let mut out = Vec::new();
    match cfg.fmt() {
        StrtabFmt::Linear => out.extend((0..streams).map(|sid| (sid as u32, base + 64 * sid))),
        StrtabFmt::TwoLevel => {
            let split = cfg.split().min(cfg.log2size()) as u32;
            for l1 in 0..(streams >> split).max(1) {
                let Ok(raw) = mem.read_u64(base + 8 * l1) else { break };
                let d = L1Desc::from_bits(raw);
                if !d.valid() {
                    continue;
                }
                for i in 0..d.l2_entries().min(1 << split) {
                    out.push(((l1 << split | i) as u32, d.l2_table() + 64 * i));
                }
            }
        }
        _ => {}
    }
    out
}

fn read_ste(mem: &PhysMemory, at: u64) -> Option<Ste> {
    let mut w = [0u64; 8];
    for (i, x) in w.iter_mut().enumerate() {
        *x = mem.read_u64(at + 8 * i as u64).ok()?;
    }
    Some(Ste(w))
}

fn read_cd(mem: &PhysMemory, at: u64) -> Option<Cd> {
    let mut w = [0u64; 8];
    for (i, x) in w.iter_mut().enumerate() {
        *x = mem.read_u64(at + 8 * i as u64).ok()?;
    }
    Some(Cd(w))
}

/// Stage-1 streams with one linear CD: (sid, STE address, CD address).
fn smmu_s1(mem: &mut PhysMemory, v: &mut Smmuv3Model) -> Vec<(u32, u64, u64)> {
    smmu_stes(mem, v)
        .into_iter()
        .filter_map(|(sid, at)| {
            let s = read_ste(mem, at)?;
            (s.valid() && s.config() == smmuv3::Config::S1Translate && s.dw0().s1cdmax() == 0)
                .then(|| (sid, at, s.s1_context_ptr()))
        })
        .collect()
}

fn smmu_tables(mem: &mut PhysMemory, v: &mut Smmuv3Model) -> Vec<Tables> {
    smmu_s1(mem, v)
        .into_iter()
        .filter_map(|(sid, ste_at, cd_at)| {
            let cd = read_cd(mem, cd_at)?;
            let start = smmuv3::s1_start_level(cd.dw0().t0sz())?;
            (cd.valid() && !cd.dw0().epd0()).then_some(Tables {
                dev: sid,
                top: cd.ttb0(),
                levels: 4 - start.min(3),
                fmt: Fmt::Vmsa,
                at: cd_at,
                set_top: |raw, pa| {
                    let w1 = smmuv3::CdTtb::from_bits((raw >> 64) as u64).with_ttb(smmuv3::CdTtb::from_table(pa).ttb());
                    (raw & u64::MAX as u128) | (w1.into_bits() as u128) << 64
                },
                entries: [(ste_at, 64), (cd_at, 64)],
            })
        })
        .collect()
}

fn tables(m: &mut Crashed) -> Vec<Tables> {
    match &mut m.unit {
        Unit::Vtd(v) => vtd_tables(m.mem, v),
        Unit::Amdvi(v) => amd_tables(m.mem, v),
        Unit::Smmuv3(v) => smmu_tables(m.mem, v),
    }
}

/// Drop everything the unit caches: the crashed kernel flushed after it wrote.
fn flushed(m: &mut Crashed) {
    match &mut m.unit {
        Unit::Vtd(v) => v.drop_caches(),
        Unit::Amdvi(v) => v.drop_caches(),
        Unit::Smmuv3(v) => v.drop_caches(),
    }
}

/// A page table below the top (the second level of the first device's first path) copied into the crash
/// region and its parent entry pointed at the copy: only a walk of every level sees it.
pub fn pt_in_crash_region(m: &mut Crashed) -> Injected {
    for t in tables(m) {
        let Some(path) = first_leaf(m.mem, t.fmt, t.top, t.levels) else { continue };
        let [parent, child, ..] = path.as_slice() else { continue };
        let Some(to) = crash_page(&m.crash_region, 0) else { return Injected::na("crash region too small") };
        if !copy_page(m.mem, child.table, to) {
            continue;
        }
        let raw = (parent.raw & !t.fmt.addr_mask()) | (to & t.fmt.addr_mask());
        if m.mem.write_u64(parent.table + 8 * parent.index, raw).is_err() {
            continue;
        }
        flushed(m);
        return Injected::applied(format!(
            "device {:#x}: level-{} table {:#x} moved to {to:#x}",
            t.dev, child.level, child.table
        ));
    }
    Injected::na("no device translates through tables of two levels or more")
}

/// The leaf that maps `iova` in tables of `levels` levels from `top` (a large page ends the walk early).
fn leaf_for(mem: &PhysMemory, fmt: Fmt, top: u64, levels: u32, iova: u64) -> Option<Step> {
    let mut table = top;
    for level in (1..=levels.min(6)).rev() {
        let index = (iova >> (12 + 9 * (level - 1))) & 511;
        let raw = mem.read_u64(table.checked_add(8 * index)?).ok()?;
        match fmt.kind(raw, level)? {
            true => table = raw & fmt.addr_mask(),
            false => return Some(Step { table, index, raw, level }),
        }
    }
    None
}

/// The leaf behind [`Crashed::late`] retargeted at a page of the crash region (flags kept): the device
/// writes the crash kernel's memory through it unless the crash kernel's init refuses or contains it first.
/// A leaf reached before the init would be written before any crash-kernel code runs: not this fault.
pub fn leaf_in_crash_region(m: &mut Crashed) -> Injected {
    let Some(late) = m.late else { return Injected::na("no device has a mapping it reaches only after the init") };
    let Some(t) = tables(m).into_iter().find(|t| t.dev == late.dev) else {
        return Injected::na("the late DMA's device does not translate");
    };
    let Some(leaf) = leaf_for(m.mem, t.fmt, t.top, t.levels, late.iova) else {
        return Injected::na("the late DMA's IOVA is not mapped");
    };
    // A large page needs an aligned target: take the first aligned address 4 MiB into the region.
    let size = 1u64 << (12 + 9 * (leaf.level - 1).min(4));
    let Some(to) = m.crash_region.start.checked_add(0x40_0000).map(|a| a.next_multiple_of(size)) else {
        return Injected::na("crash region too small");
    };
    if to.checked_add(size).is_none_or(|e| e > m.crash_region.end) {
        return Injected::na("crash region too small");
    }
    let raw = (leaf.raw & !t.fmt.addr_mask()) | (to & t.fmt.addr_mask());
    if m.mem.write_u64(leaf.table + 8 * leaf.index, raw).is_err() {
        return Injected::na("page table not writable");
    }
    flushed(m);
    Injected::applied(format!(
        "device {:#x}: IOVA {:#x} (leaf {:#x}[{}]) now maps {to:#x}",
        t.dev, late.iova, leaf.table, leaf.index
    ))
}

/// The top table of the first device copied into the crash region and its configuration entry pointed at the
/// copy: validation refuses the entry, the unit keeps walking it.
pub fn entry_rejected_live(m: &mut Crashed) -> Injected {
    for t in tables(m) {
        let Some(to) = crash_page(&m.crash_region, 1) else { return Injected::na("crash region too small") };
        let Ok(raw) = m.mem.read_u128(t.at) else { continue };
        if !copy_page(m.mem, t.top, to) || m.mem.write_u128(t.at, (t.set_top)(raw, to)).is_err() {
            continue;
        }
        flushed(m);
        return Injected::applied(format!("device {:#x}: top table {:#x} moved to {to:#x}", t.dev, t.top));
    }
    Injected::na("no device translates")
}

/// SMMUv3: the first stage-1 stream's context descriptor copied into the crash region and its STE pointed at
/// it: the crash kernel refuses the stream when its bus probe inserts it.
pub fn insert_refused(m: &mut Crashed) -> Injected {
    let Unit::Smmuv3(v) = &mut m.unit else { return Injected::na("SMMUv3 only") };
    let Some((sid, at, cd)) = smmu_s1(m.mem, v).into_iter().next() else {
        return Injected::na("no stage-1 stream");
    };
    let Some(to) = crash_page(&m.crash_region, 2) else { return Injected::na("crash region too small") };
    let Some(ste) = read_ste(m.mem, at) else { return Injected::na("STE unreadable") };
    let Some(c) = read_cd(m.mem, cd) else { return Injected::na("CD unreadable") };
    for (i, w) in c.0.iter().enumerate() {
        if m.mem.write_u64(to + 8 * i as u64, *w).is_err() {
            return Injected::na("crash region not RAM");
        }
    }
    let dw0 = ste.dw0().with_s1contextptr(to >> 6);
    if m.mem.write_u64(at, dw0.into_bits()).is_err() {
        return Injected::na("STE not writable");
    }
    flushed(m);
    Injected::applied(format!("stream {sid:#x}: CD {cd:#x} moved to {to:#x}"))
}

/// SMMUv3: reserved bit 5 set in the first live L1 descriptor.
pub fn l1_reserved_bits(m: &mut Crashed) -> Injected {
    let Unit::Smmuv3(v) = &mut m.unit else { return Injected::na("SMMUv3 only") };
    let base = StrtabBase::from_bits(v.mmio_read(m.mem, smmuv3::off::STRTAB_BASE, 8)).table();
    let cfg = StrtabBaseCfg::from_bits(v.mmio_read(m.mem, smmuv3::off::STRTAB_BASE_CFG, 4) as u32);
    if cfg.fmt() != StrtabFmt::TwoLevel {
        return Injected::na("a linear stream table has no L1 descriptors");
    }
    let n = 1u64 << cfg.log2size().saturating_sub(cfg.split()).min(17);
    for i in 0..n {
        let Ok(raw) = m.mem.read_u64(base + 8 * i) else { break };
        if L1Desc::from_bits(raw).valid() {
            if m.mem.write_u64(base + 8 * i, raw | 1 << 5).is_err() {
                break;
            }
            flushed(m);
            return Injected::applied(format!("L1 descriptor {i}: {raw:#x} -> {:#x}", raw | 1 << 5));
        }
    }
    Injected::na("no live L1 descriptor")
}

/// An illegal command left at the head of the crashed kernel's queue: SMMUv3 CMDQ_ERR pending; AMD-Vi the
/// command processor stopped on ILLEGAL_COMMAND_ERROR.
pub fn cmdq_error_pending(m: &mut Crashed) -> Injected {
    match &mut m.unit {
        Unit::Smmuv3(v) => {
            let q = smmuv3::QueueBase::from_bits(v.mmio_read(m.mem, smmuv3::off::CMDQ_BASE, 8));
            let prod = smmuv3::QueuePtr(v.mmio_read(m.mem, smmuv3::off::CMDQ_PROD, 4) as u32);
            let l = q.log2size() as u32;
            let at = q.base() + 16 * prod.index(l) as u64;
            if m.mem.write_u64(at, 0xff).is_err() || m.mem.write_u64(at + 8, 0).is_err() {
                return Injected::na("command queue not RAM");
            }
            v.mmio_write(m.mem, smmuv3::off::CMDQ_PROD, 4, prod.next(l).0 as u64);
            if !v.gerror_active().cmdq_err() {
                return Injected::na("the queue did not run the command (CMDQEN clear)");
            }
            Injected::applied(format!("illegal opcode 0xff at {at:#x}, CMDQ_ERR active"))
        }
        Unit::Amdvi(v) => {
            let ring = amdvi::RingBase::from_bits(v.mmio_read(m.mem, amdvi::off::CMD_BUF_BASE, 8));
            let tail = v.mmio_read(m.mem, amdvi::off::CMD_TAIL, 8);
            let at = (ring.ring() & !v.config().c_bit) + (tail & 0x7fff0);
            // Opcode 0xf is reserved (AMD-Vi 2.4): ILLEGAL_COMMAND_ERROR stops the processor.
            if m.mem.write_u128(at, 0xf << 60).is_err() {
                return Injected::na("command buffer not RAM");
            }
            let next = (tail + 16) % ring.bytes().max(16);
            v.mmio_write(m.mem, amdvi::off::CMD_TAIL, 8, next);
            if v.status().cmd_buf_run() {
                return Injected::na("the command processor did not stop");
            }
            Injected::applied(format!("reserved opcode at {at:#x}, command processor stopped"))
        }
        Unit::Vtd(_) => Injected::na("VT-d invalidation-queue errors are not part of this catalogue"),
    }
}

/// A configuration entry the crashed kernel was rewriting when it died, torn between two 64-bit writes. Linux
/// rewrites a device's entry when it attaches the device to a domain, while the device's driver probes it and
/// before it starts DMA, so the torn entry is an idle device's ([`Crashed::idle`]): AMD-Vi a DTE with another
/// device's root under its own domain ID; VT-d a context (legacy) or PASID (scalable) entry with another
/// device's table under its own DID; SMMUv3 a stage-1 STE whose word 0 was rewritten to stage 2 while words
/// 2-3 still hold no stage-2 configuration (an ILLEGAL STE the unit refuses).
pub fn torn_entry(m: &mut Crashed) -> Injected {
    let idle = m.idle;
    match &mut m.unit {
        Unit::Amdvi(_) | Unit::Vtd(_) => {
            let t = tables(m);
            let Some(a) = t.iter().find(|t| idle.contains(&t.dev)) else {
                return Injected::na("no idle device translates");
            };
            let Some(b) = t.iter().find(|b| b.dev != a.dev) else {
                return Injected::na("fewer than two translating devices");
            };
            let (Ok(ra), Ok(rb)) = (m.mem.read_u128(a.at), m.mem.read_u128(b.at)) else {
                return Injected::na("entries unreadable");
            };
            // Low quadword (root) from b, the rest (domain ID) from a.
            let torn = (ra & !(u64::MAX as u128)) | (rb & u64::MAX as u128);
            if m.mem.write_u128(a.at, torn).is_err() {
                return Injected::na("entry not writable");
            }
            let (a, b) = (a.dev, b.dev);
            flushed(m);
            Injected::applied(format!("device {a:#x}: root of device {b:#x}, its own domain ID"))
        }
        Unit::Smmuv3(v) => {
            let Some((sid, at, _)) = smmu_s1(m.mem, v).into_iter().find(|(sid, ..)| idle.contains(sid)) else {
                return Injected::na("no idle stage-1 stream");
            };
            let Some(ste) = read_ste(m.mem, at) else { return Injected::na("STE unreadable") };
            let dw0 = ste.dw0().with_config(smmuv3::Config::S2Translate).with_s1contextptr(0);
            if m.mem.write_u64(at, dw0.into_bits()).is_err() {
                return Injected::na("STE not writable");
            }
            flushed(m);
            Injected::applied(format!("stream {sid:#x}: word 0 stage 2, words 2-3 empty"))
        }
    }
}

/// Why the register faults do not apply to a unit of an SNP host: SNP_INIT locks the base registers (the
/// exclusion pair becomes the completion-store window) with the values the crashed kernel programmed and then
/// ran with, and they stay so until the panic's SNP_SHUTDOWN_EX; no software can have changed them since.
const SNP_REGISTERS: &str =
    "on an SNP host the base and completion-store registers hold what the crashed kernel ran with since SNP_INIT";

/// AMD-Vi without SNP: the command buffer's base register left at 0 (length kept), as a corrupted register
/// would be. (A kernel that ran never placed its ring at 0: see [`SNP_REGISTERS`] for SNP hosts.)
pub fn ring_at_zero(m: &mut Crashed) -> Injected {
    let Unit::Amdvi(v) = &mut m.unit else { return Injected::na("AMD-Vi only") };
    if v.config().snp_capable {
        return Injected::na(SNP_REGISTERS);
    }
    let ring = amdvi::RingBase::from_bits(v.mmio_read(m.mem, amdvi::off::CMD_BUF_BASE, 8));
    v.mmio_write(m.mem, amdvi::off::CMD_BUF_BASE, 8, ring.with_base(0).into_bits());
    Injected::applied(format!("command buffer base {:#x} -> 0", ring.ring()))
}

/// AMD-Vi without SNP: an exclusion range over the first 16 MiB of the crash region, for every device (ExEn,
/// Allow).
pub fn exclusion_range(m: &mut Crashed) -> Injected {
    let Unit::Amdvi(v) = &mut m.unit else { return Injected::na("AMD-Vi only") };
    if v.config().snp_capable {
        return Injected::na(SNP_REGISTERS);
    }
    let first = m.crash_region.start;
    let last = first + (16 << 20).min(m.crash_region.end - first) - 1;
    let base = ExclusionBase::from_address(first).with_ex_en(true).with_allow(true);
    v.mmio_write(m.mem, amdvi::off::EXCL_BASE, 8, base.into_bits());
    v.mmio_write(m.mem, amdvi::off::EXCL_LIMIT, 8, ExclusionLimit::from_address(last).into_bits());
    Injected::applied(format!("exclusion range {first:#x}..={last:#x} for all devices"))
}

/// An idle device ([`Crashed::idle`]) given a busy translating device's domain ID (different tables): AMD-Vi in
/// its DTE, VT-d (legacy mode) in its context entry. The IOTLB is tagged by domain ID: once the idle device
/// does DMA, each would read the other's cached translations. (Aliasing two busy devices would act before the
/// crash kernel runs.)
pub fn domain_id_alias(m: &mut Crashed) -> Injected {
    let idle = m.idle;
    if let Unit::Vtd(v) = &mut m.unit {
        if v.active_root().smt() {
            return Injected::na("VT-d scalable mode keeps the DID in the PASID entry");
        }
        let t = vtd_tables(m.mem, v);
        let Some(a) = t.iter().find(|a| !idle.contains(&a.dev)) else {
            return Injected::na("no busy device translates");
        };
        let Some(b) = t.iter().find(|b| idle.contains(&b.dev) && b.top != a.top) else {
            return Injected::na("no idle device on tables of its own");
        };
        let (Ok(ra), Ok(rb)) = (m.mem.read_u128(a.at), m.mem.read_u128(b.at)) else {
            return Injected::na("unreadable");
        };
        let did = ContextEntry::from_bits(ra).did();
        if m.mem.write_u128(b.at, ContextEntry::from_bits(rb).with_did(did).into_bits()).is_err() {
            return Injected::na("context entry not writable");
        }
        flushed(m);
        return Injected::applied(format!("device {:#x} now shares DID {did} with device {:#x}", b.dev, a.dev));
    }
    let Unit::Amdvi(v) = &mut m.unit else { return Injected::na("AMD-Vi and VT-d only") };
    let t = amd_tables(m.mem, v);
    let Some(a) = t.iter().find(|a| !idle.contains(&a.dev)) else { return Injected::na("no busy device translates") };
    let Some(b) = t.iter().find(|b| idle.contains(&b.dev) && b.top != a.top) else {
        return Injected::na("no idle device on tables of its own");
    };
    let (Some(da), Some(db)) = (amd_dte(m.mem, a.at), amd_dte(m.mem, b.at)) else { return Injected::na("unreadable") };
    let q1 = amdvi::DteQw1::from_bits(db.0[1]).with_domain_id(da.domain_id());
    if m.mem.write_u64(b.at + 8, q1.into_bits()).is_err() {
        return Injected::na("DTE not writable");
    }
    flushed(m);
    Injected::applied(format!("device {:#x} now shares domain ID {} with device {:#x}", b.dev, da.domain_id(), a.dev))
}

/// IOVAs at and above 2^39 live for the first device: its top table's entry 0 repeated at entry 1 (4-level
/// tables), or, for a 3-level AMD-Vi table, a new top level whose entries 0 and 1 both name the old top.
pub fn wide_iova(m: &mut Crashed) -> Injected {
    for t in tables(m) {
        if t.levels >= 4 {
            let Ok(e0) = m.mem.read_u64(t.top) else { continue };
            if t.fmt.kind(e0, t.levels).is_none() || m.mem.write_u64(t.top + 8, e0).is_err() {
                continue;
            }
            flushed(m);
            return Injected::applied(format!("device {:#x}: IOVAs from 2^39 alias those from 0", t.dev));
        }
        if matches!(t.fmt, Fmt::AmdV1 { .. }) && t.levels == 3 {
            let top = t.top;
            // The new top level takes the first zero page above the old top (a bounded scan): memory the
            // crashed kernel held and had not written.
            let Some(new_top) = (1..=256u64).map(|k| top + k * 0x1000).find(|&p| zero_page(m.mem, p)) else {
                continue;
            };
            let pde = |pa: u64| 1 | (3u64 << 9) | (pa & ADDR52) | 3 << 61;
            if m.mem.write_u64(new_top, pde(top)).is_err() || m.mem.write_u64(new_top + 8, pde(top)).is_err() {
                continue;
            }
            let Ok(raw) = m.mem.read_u128(t.at) else { continue };
            let q0 = Dte([raw as u64, 0, 0, 0]).qw0().with_mode(PagingMode::from_bits(4)).into_bits();
            let raw = (t.set_top)((raw & !(u64::MAX as u128)) | q0 as u128, new_top);
            if m.mem.write_u128(t.at, raw).is_err() {
                continue;
            }
            flushed(m);
            return Injected::applied(format!("device {:#x}: 4-level now, IOVAs from 2^39 alias those from 0", t.dev));
        }
    }
    Injected::na("no device with tables deep enough")
}

fn zero_page(mem: &PhysMemory, pa: u64) -> bool {
    let mut page = [0u8; 4096];
    mem.read(pa, &mut page).is_ok() && page.iter().all(|&b| b == 0)
}

/// `n` single-bit flips, chosen from `seed`, in the non-zero 64-bit words of what only idle devices
/// ([`Crashed::idle`]) translate through: their configuration entries (VT-d context and PASID entries, AMD-Vi
/// DTEs, SMMUv3 STEs and CDs) and the page tables on their first path to a page, less any table another
/// device's translation starts at. (A flip in what a busy device walks acts before any crash-kernel code runs.)
pub fn bitflips(m: &mut Crashed, n: u32) -> Injected {
    let all = tables(m);
    // Every table on a busy device's first path: an idle device that shares one (after `torn-entry` gave it a
    // busy device's root, say) keeps its page tables unflipped.
    let busy_pages: Vec<u64> = all
        .iter()
        .filter(|t| !m.idle.contains(&t.dev))
        .flat_map(|t| {
            let path = first_leaf(m.mem, t.fmt, t.top, t.levels).unwrap_or_default();
            core::iter::once(t.top).chain(path.into_iter().map(|s| s.table)).collect::<Vec<_>>()
        })
        .collect();
    let mut words: Vec<u64> = Vec::new();
    let live = |mem: &PhysMemory, at: u64| mem.read_u64(at).is_ok_and(|w| w != 0);
    for t in all.iter().filter(|t| m.idle.contains(&t.dev)) {
        for &(at, bytes) in &t.entries {
            words.extend((0..bytes / 8).filter_map(|i| at.checked_add(8 * i)).filter(|&a| live(m.mem, a)));
        }
        let path = first_leaf(m.mem, t.fmt, t.top, t.levels).unwrap_or_default();
        let mut pages: Vec<u64> = core::iter::once(t.top).chain(path.iter().map(|s| s.table)).collect();
        pages.dedup();
        if pages.iter().any(|p| busy_pages.contains(p)) {
            continue;
        }
        for page in pages {
            words.extend((0..512u64).filter_map(|i| page.checked_add(8 * i)).filter(|&a| live(m.mem, a)));
        }
    }
    words.sort_unstable();
    words.dedup();
    if words.is_empty() {
        return Injected::na("no live structure word of an idle device");
    }
    let mut rng = m.seed;
    let mut flipped = Vec::new();
    for _ in 0..n {
        let r = splitmix64(&mut rng);
        let at = words[(r % words.len() as u64) as usize];
        let bit = (r >> 32) % 64;
        if let Ok(w) = m.mem.read_u64(at) {
            if m.mem.write_u64(at, w ^ 1 << bit).is_ok() {
                flipped.push(format!("{at:#x}:{bit}"));
            }
        }
    }
    flushed(m);
    Injected::applied(format!("{} flips: {}", flipped.len(), flipped.join(" ")))
}

/// SplitMix64: a seeded, reproducible stream of 64-bit values.
fn splitmix64(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `no-iasup` unit: EFR without IASup (no INVALIDATE_IOMMU_ALL), for the simulator to build.
pub fn no_iasup(cfg: AmdviConfig) -> AmdviConfig {
    AmdviConfig { efr: cfg.efr.with_ia_sup(false), ..cfg }
}

/// The `snp-kernel-without-mem-encrypt` crash kernel: booted without `mem_encrypt` on an SNP host.
pub fn snp_kernel_without_mem_encrypt(env: &mut BootEnv) {
    env.mem_encrypt = false;
}
