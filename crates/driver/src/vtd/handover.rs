//! Crash-kernel boot: probe the unit the crashed kernel left translating, and reset it or adopt its tables
//! under a [`Policy`].
//!
//! Adoption follows Linux (`copy_translation_tables`, since 4.2) with the validation the 2014 series asks for:
//! the old root and context tables are *copied* into frames the crash kernel owns, while the old page
//! tables and PASID tables are used in place. Copying rather than using the old context tables in place
//! is deliberate: the crash kernel later rewrites entries (deferred attach, containment), and writing into
//! the crashed kernel's memory would both change the vmcore it is there to save and trust a table that may
//! be corrupt. The copy is also where every entry gets validated, once.
//!
//! [`scan`] is the read-only half: it validates the old tables and lists what it found, and is what runs
//! on a dump. Adoption is `scan` plus the copy and the switch.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use iommu_spec::vtd::{
    off, pasid_dir_index, pasid_table_index, Cap, ContextEntry, Ecap, Gsts, PasidDirEntry, PasidEntry, PasidEntryQw0,
    Pgtt, RootEntry, RtAddr, ScalableContextEntry, ScalableRootEntry, SourceId, TranslationType,
};

use super::qi::InvQueue;
use super::{hw, DeviceState, Vtd, VtdError, VtdOptions};
use crate::{BootEnv, Mmio, PhysMem, Platform, Policy};

/// How an adopted (or scanned) device translates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// Second-level tables at `root`, `levels` deep.
    Translated { root: u64, levels: u32 },
    /// First-level (x86-64-format) tables at `root`, `levels` (4 or 5) deep, from a scalable-mode PASID
    /// entry with PGTT = 001 for RID_PASID `pasid` (Linux's DMA domains on units with ECAP.FLTS).
    FirstLevel { root: u64, levels: u32, pasid: u32 },
    /// Untranslated: the device reaches all of memory. In scalable mode a PASID entry with PGTT = 100, what
    /// Linux writes for its identity (pass-through) domain (`intel_pasid_setup_pass_through`, DID 1).
    PassThrough,
    /// Present entry, but requests without PASID are blocked (RID_PASID entry absent).
    Blocked,
}

impl DeviceKind {
    /// The RID_PASID to flush with PASID-based IOTLB invalidations when the entry goes, for a first-level
    /// entry (plain IOTLB invalidations do not reach first-level translations).
    pub fn first_level_pasid(&self) -> Option<u32> {
        match self {
            DeviceKind::FirstLevel { pasid, .. } => Some(*pasid),
            _ => None,
        }
    }
    /// Root and depth of the page table the device translates through, if any.
    pub fn table(&self) -> Option<(u64, u32)> {
        match *self {
            DeviceKind::Translated { root, levels } | DeviceKind::FirstLevel { root, levels, .. } => {
                Some((root, levels))
            }
            DeviceKind::PassThrough | DeviceKind::Blocked => None,
        }
    }
}

/// One present, valid device entry of the old tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScannedDevice {
    pub sid: u16,
    pub did: u16,
    pub kind: DeviceKind,
    /// The raw context entry (scalable mode: its low 128 bits).
    pub entry: u128,
}

/// What a read-only walk of the old root and context tables found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    pub rtaddr: RtAddr,
    pub gsts: Gsts,
    pub devices: Vec<ScannedDevice>,
    pub problems: Vec<super::EntryProblem>,
    /// Root, context, PASID-directory and PASID-table pages read.
    pub pages_read: Vec<u64>,
    /// Each context table read, by (bus, half) as [`Vtd`] keys its own (legacy: half 0; scalable mode: 0
    /// for devfn < 0x80, 1 above).
    pub context_tables: Vec<((u8, u8), u64)>,
}

impl Scan {
    pub fn scalable(&self) -> bool {
        self.rtaddr.smt()
    }
}

use super::EntryProblem as P;

fn check_table(env: &BootEnv, sid: u16, what: &'static str, addr: u64) -> Result<(), P> {
    if !env.in_ram(addr, 4096) {
        return Err(P::TableNotRam { sid, what, addr });
    }
    if env.in_crash_region(addr, 4096) {
        return Err(P::TableInCrashRegion { sid, what, addr });
    }
    Ok(())
}

fn check_ctx_table(env: &BootEnv, bus: u8, addr: u64) -> Result<(), P> {
    if !env.in_ram(addr, 4096) {
        return Err(P::ContextTableNotRam { bus, addr });
    }
    if env.in_crash_region(addr, 4096) {
        return Err(P::ContextTableInCrashRegion { bus, addr });
    }
    Ok(())
}

/// Read and validate the tables the unit is translating with, without writing anything.
///
/// `want_scalable`: the format this kernel will use (a mismatch refuses the unit, Linux's rule), or `None`
/// to accept whatever RTADDR.SMT says (inspecting a dump). Bounded: 256 root entries, 256 context entries
/// a bus, one PASID directory and one PASID table entry a device.
pub fn scan(
    hw: &mut (impl Mmio + PhysMem),
    env: &BootEnv,
    want_scalable: Option<bool>,
) -> Result<Scan, super::Refusal> {
    use super::Refusal as R;
    let cap = Cap::from_bits(hw.read64(off::CAP));
    let ecap = Ecap::from_bits(hw.read64(off::ECAP));
    let gsts = Gsts::from_bits(hw.read32(off::GSTS));
    let rtaddr = RtAddr::from_bits(hw.read64(off::RTADDR));
    let root = rtaddr.table();
    if root == 0 {
        return Err(R::RootTableZero);
    }
    if let Some(want) = want_scalable {
        if want != rtaddr.smt() {
            return Err(R::FormatMismatch { old_smt: rtaddr.smt(), new_smt: want });
        }
    }
    if !env.in_ram(root, 4096) {
        return Err(R::RootTableNotRam { addr: root });
    }
    if env.in_crash_region(root, 4096) {
        return Err(R::RootTableInCrashRegion { addr: root });
    }
    let mut rt = [0u8; 4096];
    hw.read(root, &mut rt).map_err(R::RootTableUnreadable)?;
    let mut scan = Scan {
        rtaddr,
        gsts,
        devices: Vec::new(),
        problems: Vec::new(),
        pages_read: alloc::vec![root],
        context_tables: Vec::new(),
    };
    let mut ct = [0u8; 4096];
    for bus in 0..=255u8 {
        let raw = u128::from_le_bytes(rt[bus as usize * 16..bus as usize * 16 + 16].try_into().unwrap_or([0; 16]));
        // (context table, first devfn, entries, entry size)
        let halves: Vec<(u64, u16)> = if rtaddr.smt() {
            let e = ScalableRootEntry::from_bits(raw);
            if e.reserved_bits() != 0 {
                scan.problems.push(P::RootReserved { bus, raw });
                continue;
            }
            let mut h = Vec::new();
            if e.lp() {
                h.push((e.lower_table(), 0));
            }
            if e.up() {
                h.push((e.upper_table(), 0x80));
            }
            h
        } else {
            let e = RootEntry::from_bits(raw);
            if !e.present() {
                continue;
            }
            if e.reserved_bits() != 0 {
                scan.problems.push(P::RootReserved { bus, raw });
                continue;
            }
            alloc::vec![(e.context_table(), 0)]
        };
        for (table, first) in halves {
            if let Err(p) = check_ctx_table(env, bus, table) {
                scan.problems.push(p);
                continue;
            }
            if let Err(err) = hw.read(table, &mut ct) {
                scan.problems.push(P::ContextTableUnreadable { bus, err });
                continue;
            }
            scan.pages_read.push(table);
            scan.context_tables.push(((bus, u8::from(first == 0x80)), table));
            let (n, size) = if rtaddr.smt() { (128, 32) } else { (256, 16) };
            for i in 0..n {
                let raw = u128::from_le_bytes(ct[i * size..i * size + 16].try_into().unwrap_or([0; 16]));
                let sid = SourceId::new(bus, 0, 0).0 | (first + i as u16);
                let res = if rtaddr.smt() {
                    let hi = u128::from_le_bytes(ct[i * size + 16..i * size + 32].try_into().unwrap_or([0; 16]));
                    scan_sm_entry(hw, env, cap, ecap, sid, raw, hi, &mut scan.pages_read)
                } else {
                    scan_legacy_entry(env, cap, ecap, sid, raw)
                };
                match res {
                    Ok(Some(d)) => scan.devices.push(d),
                    Ok(None) => {}
                    Err(p) => scan.problems.push(p),
                }
            }
        }
    }
    Ok(scan)
}

fn check_did(cap: Cap, sid: u16, did: u16) -> Result<(), P> {
    if did == 0 || did as u32 >= cap.domain_count() {
        return Err(P::BadDomainId { sid, did });
    }
    Ok(())
}

fn scan_legacy_entry(env: &BootEnv, cap: Cap, ecap: Ecap, sid: u16, raw: u128) -> Result<Option<ScannedDevice>, P> {
    let e = ContextEntry::from_bits(raw);
    if !e.present() {
        return Ok(None);
    }
    if e.reserved_bits() != 0 {
        return Err(P::ContextReserved { sid, raw });
    }
    check_did(cap, sid, e.did())?;
    let kind = match e.tt() {
        TranslationType::MultiLevel | TranslationType::MultiLevelDevTlb => {
            if !cap.supports_agaw(e.aw()) {
                return Err(P::BadAddressWidth { sid, aw: e.aw() });
            }
            check_table(env, sid, "page table", e.page_table())?;
            DeviceKind::Translated { root: e.page_table(), levels: e.aw() as u32 + 2 }
        }
        TranslationType::PassThrough if ecap.pt() => DeviceKind::PassThrough,
        tt => return Err(P::BadTranslationType { sid, tt: tt.0 }),
    };
    Ok(Some(ScannedDevice { sid, did: e.did(), kind, entry: raw }))
}

/// A scalable-mode entry: context → PASID directory → PASID-table entry for RID_PASID. The DID comes from
/// that PASID entry. (Linux's copy reads "DID" from context bits 87:72, which in scalable mode overlap
/// RID_PASID, so it never reserves the DIDs its PASID entries hold; we reserve the real one.)
///
/// PGTT decides what the device reaches (spec 9.6): 010 second level and 001 first level (only on a unit
/// with the matching ECAP.SLTS / ECAP.FLTS, the table checked like any other), 100 pass-through (Linux's
/// identity domain), 011 nested, which this driver cannot decode (the first-level table holds guest
/// addresses translated again by the second level) and refuses by name.
#[allow(clippy::too_many_arguments)]
fn scan_sm_entry(
    hw: &mut impl PhysMem,
    env: &BootEnv,
    cap: Cap,
    ecap: Ecap,
    sid: u16,
    raw: u128,
    hi: u128,
    pages: &mut Vec<u64>,
) -> Result<Option<ScannedDevice>, P> {
    let e = ScalableContextEntry::from_bits(raw);
    if !e.present() {
        return Ok(None);
    }
    if e.reserved_bits() != 0 || hi != 0 {
        return Err(P::ContextReserved { sid, raw });
    }
    let dir = e.pasid_dir();
    check_table(env, sid, "PASID directory", dir)?;
    let pasid = e.rid_pasid();
    let di = pasid_dir_index(pasid);
    let blocked = Ok(Some(ScannedDevice { sid, did: 0, kind: DeviceKind::Blocked, entry: raw }));
    if di >= e.pasid_dir_entries() {
        return blocked;
    }
    // The directory is up to 2^14 entries (128 KiB): check the page the entry is in, not only the first one,
    // and an address that would wrap is no table at all.
    let dir_at = dir.checked_add(8 * di as u64).ok_or(P::TableNotRam { sid, what: "PASID directory", addr: dir })?;
    check_table(env, sid, "PASID directory", dir_at & !0xfff)?;
    let de = PasidDirEntry::from_bits(hw.read_u64(dir_at).map_err(|err| P::TableUnreadable {
        sid,
        what: "PASID directory",
        err,
    })?);
    pages.push(dir_at & !0xfff);
    if !de.present() {
        return blocked;
    }
    check_table(env, sid, "PASID table", de.table())?;
    let pe_at = de.table() + 64 * pasid_table_index(pasid) as u64;
    let mut q = [0u64; 8];
    for (i, w) in q.iter_mut().take(3).enumerate() {
        *w = hw.read_u64(pe_at + 8 * i as u64).map_err(|err| P::TableUnreadable { sid, what: "PASID table", err })?;
    }
    pages.push(pe_at & !0xfff);
    let pe = PasidEntry(q);
    let q0 = PasidEntryQw0::from_bits(q[0]);
    if !q0.present() {
        return blocked;
    }
    if q0.pgtt() == Pgtt::Nested {
        return Err(P::NestedTranslation { sid, pasid, raw: q[0] });
    }
    let did = q[1] as u16;
    check_did(cap, sid, did)?;
    let kind = match q0.pgtt() {
        Pgtt::FirstLevel => {
            let q2 = pe.qw2();
            let levels = match pe.first_level_levels() {
                Some(4) => 4,
                Some(5) if cap.fl5lp() => 5,
                _ => return Err(P::BadPasidEntry { sid, pasid, raw: q[0] }),
            };
            if !ecap.flts()
                || q0.reserved() != 0
                || q0.reserved_5() != 0
                || q2.reserved() != 0
                || (q2.sre() && !ecap.srs())
                || (q2.eafe() && !ecap.eafs())
            {
                return Err(P::BadPasidEntry { sid, pasid, raw: q[0] });
            }
            let root = pe.first_level_table();
            check_table(env, sid, "first-level page table", root)?;
            DeviceKind::FirstLevel { root, levels, pasid }
        }
        Pgtt::SecondLevel => {
            if !ecap.slts() || q0.reserved() != 0 || q0.reserved_5() != 0 {
                return Err(P::BadPasidEntry { sid, pasid, raw: q[0] });
            }
            if !cap.supports_agaw(q0.aw()) {
                return Err(P::BadAddressWidth { sid, aw: q0.aw() });
            }
            let root = q0.slptptr() << 12;
            check_table(env, sid, "page table", root)?;
            DeviceKind::Translated { root, levels: q0.aw() as u32 + 2 }
        }
        Pgtt::PassThrough => DeviceKind::PassThrough,
        _ => return Err(P::BadPasidEntry { sid, pasid, raw: q[0] }),
    };
    Ok(Some(ScannedDevice { sid, did, kind, entry: raw }))
}

/// How the crash kernel's boot of this unit went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandoverOutcome {
    /// Translation was off at probe: nothing to hand over; normal boot.
    NotLive,
    /// Reset under `reset-abort` or `reset-bypass`, as asked.
    Reset,
    /// The old tables are live through our copies.
    Adopted,
    /// Adoption was refused; the unit was reset to abort instead.
    FellBack(super::Refusal),
}

/// What the crash kernel's boot did, for logs and the simulator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandoverReport {
    pub policy: Policy,
    pub outcome: HandoverOutcome,
    /// Devices translating through adopted entries.
    pub adopted: Vec<u16>,
    /// Old entries not adopted, and why: their DMA now faults.
    pub problems: Vec<super::EntryProblem>,
    /// Old domain IDs reserved so new domains never reuse them.
    pub reserved_dids: Vec<u16>,
    /// Adopted devices that reach all of memory, the crash kernel's region included (pass-through): nothing
    /// confines them until they are contained or re-attached.
    pub unconfined: Vec<u16>,
    /// Devices that shared a DID with a device on other tables, given a fresh one: (device, old, new).
    pub split_dids: Vec<(u16, u16, u16)>,
    /// Bytes of old tables read (root, context, PASID) and frames allocated for the copies.
    pub bytes_read: u64,
    pub frames_allocated: u64,
}

/// The scratch region and the chains of shared tables that map every IOVA into it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Scratch {
    pub page: u64,
    /// Top-level table of the chain, for each level count 3..=5 built so far.
    pub tops: [Option<u64>; 6],
    pub did: u16,
    pub frames: u64,
}

impl Vtd {
    /// Boot on a crash kernel under `policy`. A unit found with translation off boots normally.
    pub fn init_crash(
        hw: &mut impl Platform,
        env: &BootEnv,
        opts: VtdOptions,
        policy: Policy,
    ) -> Result<(Self, HandoverReport), VtdError> {
        let mut report = HandoverReport {
            policy,
            outcome: HandoverOutcome::Reset,
            adopted: Vec::new(),
            problems: Vec::new(),
            reserved_dids: Vec::new(),
            unconfined: Vec::new(),
            split_dids: Vec::new(),
            bytes_read: 0,
            frames_allocated: 0,
        };
        if !hw::gsts(hw).tes() {
            report.outcome = HandoverOutcome::NotLive;
            let v = Self::init(hw, opts)?;
            report.frames_allocated = v.stats.frames_allocated;
            return Ok((v, report));
        }
        let v = match policy {
            // Switch to empty tables under live translation: every old DMA faults from here on. (Turning TE
            // off first, as a naive reset would, opens a window where old DMA bypasses translation.)
            Policy::ResetAbort => Self::fresh(hw, opts)?,
            // Translation off for the crash kernel's whole life (`intel_iommu=off` in the kdump command
            // line, or Linux before 4.2): old DMA lands on physical addresses equal to its IOVAs.
            Policy::ResetBypass => {
                InvQueue::disable(hw)?;
                hw::set_translation(hw, false)?;
                Self::from_caps(hw, opts)?
            }
            // The driver disabled: translation and interrupt remapping off, nothing else touched.
            Policy::Off => {
                InvQueue::disable(hw)?;
                hw::set_translation(hw, false)?;
                let cmd = hw::persistent(hw).with_ire(false);
                hw::command(hw, cmd, "IRES", false, |s| !s.ires())?;
                Self::from_caps(hw, opts)?
            }
            Policy::Adopt | Policy::AdoptScratch => {
                let want = Self::from_caps(hw, opts)?.scalable;
                match scan(hw, env, Some(want)) {
                    Ok(s) => {
                        let v = Self::adopt(hw, env, opts, &s, &mut report)?;
                        report.outcome = HandoverOutcome::Adopted;
                        v
                    }
                    Err(r) => {
                        report.outcome = HandoverOutcome::FellBack(r);
                        Self::fresh(hw, opts)?
                    }
                }
            }
        };
        let mut v = v;
        if policy != Policy::Off {
            v.ir_crash(hw, env, policy)?;
        }
        report.frames_allocated = v.stats.frames_allocated;
        Ok((v, report))
    }

    /// Copy every valid present entry of `scan` into new context tables, reserve the old DIDs, and switch
    /// the unit to the copies with translation left on (Linux `copy_translation_tables` + SRTP under TE).
    fn adopt(
        hw: &mut impl Platform,
        env: &BootEnv,
        opts: VtdOptions,
        scan: &Scan,
        report: &mut HandoverReport,
    ) -> Result<Self, VtdError> {
        let mut v = Self::prepare(hw, opts)?;
        report.bytes_read = scan.pages_read.len() as u64 * 4096;
        report.problems = scan.problems.clone();
        let mut reserved = BTreeMap::new();
        // What each device's tables reach (the "iommu/vt-d: Fix crash dump failure caused by legacy DMA/IO"
        // series): walked once per distinct table, within one budget for the whole unit. A device whose tables
        // or pages lie in the crash kernel's region, or whose walk could not finish, is not copied: in our
        // tables its entry is not present, so its DMA faults.
        let mut budget = crate::walk::ADOPT_TABLE_BUDGET;
        // Keyed by format too: the same page read as first- or second-level entries means different things.
        let mut walked: BTreeMap<(u64, u32, bool), Option<crate::walk::Reach>> = BTreeMap::new();
        let (second, first) = (super::VtdFormat::new(v.cap, false), super::VtdFormat::new(v.cap, true));
        // The IOTLB is tagged by DID: two devices on different tables under one DID would read each other's
        // translations. The first keeps it; a later one gets a fresh DID in its copied legacy entry, and in
        // scalable mode (the DID is in the old PASID entry, used in place) it is refused.
        let mut owner: BTreeMap<u16, (u64, u32)> = BTreeMap::new();
        // Entries to adopt, by context table; a table with an entry refused or rewritten ("dirty") is copied,
        // any other is used in place until one of its entries must change (lazy copy: new memory follows
        // what changes, not what is present).
        let mut writes: Vec<((u8, u8), u64, u128)> = Vec::new();
        let mut dirty: BTreeSet<(u8, u8)> = BTreeSet::new();
        for d in &scan.devices {
            if d.did != 0 && v.dids.reserve(d.did as u32) {
                reserved.insert(d.did, ());
            }
            let (mut entry, mut did) = (d.entry, d.did);
            match d.kind {
                DeviceKind::Translated { root, levels } | DeviceKind::FirstLevel { root, levels, .. } => {
                    let fl = matches!(d.kind, DeviceKind::FirstLevel { .. });
                    let fmt = if fl { &first } else { &second };
                    let verdict = *walked
                        .entry((root, levels, fl))
                        .or_insert_with(|| crate::walk::reach(hw, fmt, env, root, levels, &mut budget));
                    if let Some(r) = verdict {
                        let sid = d.sid;
                        report.problems.push(match r {
                            crate::walk::Reach::TableInCrashRegion { addr } => {
                                P::TableInCrashRegion { sid, what: "page table", addr }
                            }
                            crate::walk::Reach::PageInCrashRegion { iova, addr } => {
                                P::PageInCrashRegion { sid, iova, addr }
                            }
                            crate::walk::Reach::Bound { tables } => P::WalkBound { sid, tables },
                        });
                        v.devices.insert(sid, DeviceState::Refused { did: d.did });
                        dirty.insert(v.context_slot(sid).0);
                        continue;
                    }
                    match owner.get(&d.did) {
                        None => {
                            owner.insert(d.did, (root, levels));
                        }
                        Some(&t) if t == (root, levels) => {}
                        Some(_) if scan.scalable() => {
                            report.problems.push(P::DomainIdAlias { sid: d.sid, did: d.did });
                            dirty.insert(v.context_slot(d.sid).0);
                            continue;
                        }
                        Some(_) => {
                            did = v.dids.alloc().ok_or(VtdError::OutOfDomainIds)? as u16;
                            entry = ContextEntry::from_bits(entry).with_did(did).into_bits();
                            report.split_dids.push((d.sid, d.did, did));
                            dirty.insert(v.context_slot(d.sid).0);
                        }
                    }
                }
                DeviceKind::PassThrough => report.unconfined.push(d.sid),
                DeviceKind::Blocked => {}
            }
            let (key, off) = v.context_slot(d.sid);
            writes.push((key, off, entry));
            v.devices.insert(d.sid, DeviceState::Adopted { did, kind: d.kind });
            report.adopted.push(d.sid);
        }
        // Devices (and whole buses) whose entries the scan refused: known, blocked, containable.
        for p in &scan.problems {
            match *p {
                P::RootReserved { bus, .. }
                | P::ContextTableNotRam { bus, .. }
                | P::ContextTableInCrashRegion { bus, .. }
                | P::ContextTableUnreadable { bus, .. } => {
                    v.refused_buses.insert(bus);
                }
                _ => {
                    if let Some(sid) = p.sid() {
                        v.devices.entry(sid).or_insert(DeviceState::Refused { did: 0 });
                        dirty.insert(v.context_slot(sid).0);
                    }
                }
            }
        }
        let adopting: BTreeSet<(u8, u8)> = writes.iter().map(|w| w.0).collect();
        for &(key, table) in &scan.context_tables {
            if adopting.contains(&key) && !dirty.contains(&key) {
                v.old_ctx.insert(key, table);
            }
        }
        for (key, off, entry) in writes {
            if !v.old_ctx.contains_key(&key) {
                let table = v.context_table(hw, key)?;
                hw.write_u128(table + off, entry)?;
            }
        }
        let in_place: BTreeSet<u8> = v.old_ctx.keys().map(|k| k.0).collect();
        for bus in in_place {
            v.write_root_entry(hw, bus)?;
        }
        report.reserved_dids = reserved.keys().copied().collect();
        v.install_root(hw)?;
        v.translating = true;
        Ok(v)
    }

    /// Contain an adopted (or refused) device the crash kernel will not use: every IOVA it can send now lands in the
    /// scratch region, read and write, so its DMA neither faults (no AER, no second panic) nor reaches the
    /// crashed kernel's memory. The tables are a chain of shared pages, every entry of a level pointing at
    /// the same next-level table, so containment costs `levels + 1` pages for all devices together.
    pub fn contain(&mut self, hw: &mut impl Platform, sid: u16) -> Result<(), VtdError> {
        // A refused device's IOVAs are unknown: its chain is as deep as the unit allows, so every IOVA it
        // can send lands in the scratch region rather than faulting. The chain is in our own format: an
        // adopted device's own depth is kept only where its format is ours (a first-level chain has 4 or 5
        // levels, whatever the old second-level entry had).
        let widest = if self.first_level {
            if self.cap.fl5lp() {
                5
            } else {
                4
            }
        } else {
            [5u32, 4, 3].into_iter().find(|&l| self.cap.supports_agaw(l as u8 - 2)).unwrap_or(self.levels)
        };
        let (old, fl_pasid, levels) = match self.devices.get(&sid).copied() {
            Some(DeviceState::Adopted { did, kind: DeviceKind::Translated { levels, .. } }) if !self.first_level => {
                (did, None, levels)
            }
            Some(DeviceState::Adopted { did, kind: DeviceKind::FirstLevel { levels, pasid, .. } })
                if self.first_level =>
            {
                (did, Some(pasid), levels)
            }
            Some(DeviceState::Adopted { did, kind }) => (did, kind.first_level_pasid(), widest),
            Some(DeviceState::Refused { did }) => (did, None, widest),
            None if self.refused_buses.contains(&((sid >> 8) as u8)) => (0, None, widest),
            _ => return Ok(()),
        };
        let mut s = match self.scratch {
            Some(s) => s,
            None => {
                let mut frames = 0;
                let page = crate::alloc_contiguous(hw, crate::walk::SCRATCH_PAGES, &mut frames)
                    .ok_or(VtdError::OutOfMemory)?;
                self.stats.frames_allocated += frames;
                let did = self.dids.alloc().ok_or(VtdError::OutOfDomainIds)? as u16;
                Scratch { page, tops: [None; 6], did, frames }
            }
        };
        let top = match s.tops.get(levels as usize).copied().flatten() {
            Some(t) => t,
            None => {
                let fmt = self.format();
                let t = crate::walk::build_scratch_chain(hw, &fmt, levels, s.page, &mut s.frames)?;
                if let Some(slot) = s.tops.get_mut(levels as usize) {
                    *slot = Some(t);
                }
                t
            }
        };
        self.scratch = Some(s);
        self.clear_context(hw, sid, old, fl_pasid)?;
        self.write_contained(hw, sid, top, levels, s.did)?;
        self.devices.insert(sid, DeviceState::Contained { did: s.did });
        Ok(())
    }

    /// The scratch region contained devices' DMA lands in, once containment has begun.
    pub fn scratch_region(&self) -> Option<core::ops::Range<u64>> {
        self.scratch.map(|s| s.page..s.page + crate::walk::SCRATCH_PAGES * 4096)
    }

    /// Pages containment has used so far (scratch page plus shared tables).
    pub fn scratch_frames(&self) -> u64 {
        self.scratch.map_or(0, |s| s.frames)
    }

    fn write_contained(
        &mut self,
        hw: &mut impl Platform,
        sid: u16,
        top: u64,
        levels: u32,
        did: u16,
    ) -> Result<(), VtdError> {
        // A tiny domain wrapper so `set_context` writes the right format for either mode.
        let dom = super::Domain { did, root: top, levels, iova: crate::iova::IovaAllocator::new(0, 0) };
        let id = super::DomainId(self.domains.len());
        self.domains.push(Some(dom));
        let r = self.set_context(hw, sid, super::Attachment::Domain(id));
        self.domains.pop();
        r
    }
}
