//! Crash-kernel boot: probe the unit the crashed kernel left translating, and reset it or adopt its tables
//! under a [`Policy`].
//!
//! Adoption follows Linux (`copy_translation_tables`, since 4.2) with the validation the 2014 series asks for,
//! and copies lazily: the crash kernel gets its own root table; a context table whose every present entry is
//! adopted as it is stays in place (the old page tables and PASID tables are used in place too), and is copied
//! into a frame the crash kernel owns the first time one of its entries must change (deferred attach,
//! containment, teardown). A table with an entry refused or rewritten (a DID split) is copied at once, the
//! refused entry left out. The crashed kernel's memory is never written: it is the vmcore this kernel is there
//! to save.
//!
//! [`scan`](super::scan::scan) is the read-only half: it validates the old tables and lists what it found, and is
//! what runs on a dump.

use alloc::vec::Vec;

use iommu_spec::vtd::ContextEntry;

use super::cmdq::InvQueue;
use super::scan::{scan, DeviceKind, Scan};
use super::EntryProblem as P;
use super::{hw, DeviceState, Vtd, VtdError, VtdOptions};
use crate::walk::Slots;
use crate::{BootEnv, Platform, Policy};

/// A set of context tables by (bus, half): one bit each, 512 in all.
#[derive(Default)]
struct CtxSet([u64; 8]);

impl CtxSet {
    fn at(key: (u8, u8)) -> (usize, u64) {
        let i = key.0 as usize * 2 + (key.1 & 1) as usize;
        (i / 64, 1 << (i % 64))
    }
    fn insert(&mut self, key: (u8, u8)) {
        let (w, bit) = Self::at(key);
        if let Some(x) = self.0.get_mut(w) {
            *x |= bit;
        }
    }
    fn contains(&self, key: (u8, u8)) -> bool {
        let (w, bit) = Self::at(key);
        self.0.get(w).is_some_and(|x| x & bit != 0)
    }
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
    /// The policy the boot ran under.
    pub policy: Policy,
    /// What became of the unit.
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
    /// Frames the boot allocated: this kernel's own tables, the copies of adopted ones included.
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
        let mut reserved: Vec<u16> = Vec::new();
        // What each device's tables reach (the "iommu/vt-d: Fix crash dump failure caused by legacy DMA/IO"
        // series): walked once per distinct table, within one budget for the whole unit. A device whose tables
        // or pages lie in the crash kernel's region, or whose walk could not finish, is not copied: in our
        // tables its entry is not present, so its DMA faults.
        let mut budget = crate::walk::ADOPT_TABLE_BUDGET;
        let mut bufs = crate::walk::WalkBuffers::default();
        // Keyed by format too: the same page read as first- or second-level entries means different things.
        let tables = || {
            scan.devices.iter().map(|d| match d.kind {
                DeviceKind::Translated { root, levels } => Some((d.did, (root, levels, false))),
                DeviceKind::FirstLevel { root, levels, .. } => Some((d.did, (root, levels, true))),
                DeviceKind::PassThrough | DeviceKind::Blocked => None,
            })
        };
        let mut walked: Slots<Option<crate::walk::Reach>> = Slots::new(tables().map(|t| t.map(|t| t.1)));
        let (second, first) = (super::VtdFormat::new(v.cap, false), super::VtdFormat::new(v.cap, true));
        // The IOTLB is tagged by DID: two devices on different tables under one DID would read each other's
        // translations. The first keeps it; a later one gets a fresh DID in its copied legacy entry, and in
        // scalable mode (the DID is in the old PASID entry, used in place) it is refused.
        let mut owner: Slots<(u64, u32)> = Slots::new(tables().map(|t| t.map(|t| t.0)));
        // Entries to adopt, by context table; a table with an entry refused or rewritten ("dirty") is copied,
        // any other is used in place until one of its entries must change (lazy copy: new memory follows
        // what changes, not what is present).
        let mut writes: Vec<((u8, u8), u64, u128)> = Vec::new();
        let mut dirty = CtxSet::default();
        // Each device's state, in scan order (ascending source IDs): put into the map in one bulk build below.
        let mut states: Vec<(u16, DeviceState)> = Vec::new();
        for (i, d) in scan.devices.iter().enumerate() {
            if d.did != 0 && v.dids.reserve(d.did as u32) {
                reserved.push(d.did);
            }
            let (mut entry, mut did) = (d.entry, d.did);
            match d.kind {
                DeviceKind::Translated { root, levels } | DeviceKind::FirstLevel { root, levels, .. } => {
                    let fl = matches!(d.kind, DeviceKind::FirstLevel { .. });
                    let fmt = if fl { &first } else { &second };
                    let verdict = match walked.get_mut(i) {
                        Some(Some(v)) => *v,
                        slot => {
                            let v = crate::walk::reach_in(hw, fmt, env, root, levels, &mut budget, &mut bufs);
                            if let Some(s) = slot {
                                *s = Some(v);
                            }
                            v
                        }
                    };
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
                        states.push((sid, DeviceState::Refused { did: d.did }));
                        dirty.insert(v.context_slot(sid).0);
                        continue;
                    }
                    // The first device under a DID owns it (every translated DID has a slot).
                    match owner.get_mut(i).map(|s| *s.get_or_insert((root, levels))) {
                        None => {}
                        Some(t) if t == (root, levels) => {}
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
            states.push((d.sid, DeviceState::Adopted { did, kind: d.kind }));
            report.adopted.push(d.sid);
        }
        // As many inserts in order would leave it: a later state for a source ID replaces an earlier one.
        let mut built: alloc::collections::BTreeMap<u16, DeviceState> = states.into_iter().collect();
        v.devices.append(&mut built);
        // The walks' page-table pages are read too: part of what adoption costs.
        report.bytes_read += (crate::walk::ADOPT_TABLE_BUDGET - budget) as u64 * 4096;
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
        let mut adopting = CtxSet::default();
        for w in &writes {
            adopting.insert(w.0);
        }
        // `old_ctx` is empty before this (a fresh `prepare`): the tables used in place are exactly these.
        let mut in_place = CtxSet::default();
        for &(key, table) in &scan.context_tables {
            if adopting.contains(key) && !dirty.contains(key) {
                v.old_ctx.insert(key, table);
                in_place.insert(key);
            }
        }
        for (key, off, entry) in writes {
            if !in_place.contains(key) {
                let table = v.context_table(hw, key)?;
                hw.write_u128(table + off, entry)?;
            }
        }
        for bus in 0..=255u8 {
            if in_place.contains((bus, 0)) || in_place.contains((bus, 1)) {
                v.write_root_entry(hw, bus)?;
            }
        }
        reserved.sort_unstable();
        reserved.dedup();
        report.reserved_dids = reserved;
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
            // Found on the bus with no entry adopted or refused: not present in the crashed kernel's tables (or
            // its present bit lost to corruption), on a refused bus or not. It may still send DMA, which would
            // fault: contained like a refused device.
            None => (0, None, widest),
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
