//! Crash-kernel boot of a live AMD-Vi unit (Kalra's SNP kdump series, merged in Linux 6.18): reuse the crashed
//! kernel's command buffer, event log, completion-wait page and device table in place, never writing the
//! base registers SNP may have locked; reserve the old domain IDs; defer attach. Resets write fresh bases,
//! which a locked unit ignores: their first completion wait then times out, as the series reports.
//!
//! The device table is used in place rather than copied (Linux copied it before 6.18): under SNP its base
//! register cannot be changed, and one way for every kdump boot keeps the two paths from diverging. The
//! cost is that re-attached devices' DTEs are rewritten in the crashed kernel's memory.

use alloc::vec::Vec;

use iommu_spec::amdvi::{off, Control, DevTableBase, Dte, ExclusionBase, ExclusionLimit, PagingMode, RingBase};

use super::cmdq::CmdRing;
use super::driver::{alloc_contiguous, AmdOptions, Amdvi, DeviceState, Scratch, LEVELS, RING_LEN};
use super::scan::{scan, DteKind, DteProblem};
use super::{AmdError, Refusal};
use crate::walk::Slots;
use crate::{BootEnv, Platform, Policy};

/// How a crash boot went for one AMD-Vi unit (the contract's [`CrashOutcome`](crate::contract::CrashOutcome)
/// says the same for every IOMMU).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AmdOutcome {
    /// CONTROL.IommuEn was clear at probe: nothing to hand over; a normal boot.
    NotLive,
    /// Reset under `reset-abort`, `reset-bypass` or `off`, as asked.
    Reset,
    /// The old device table is reused in place (Linux 6.18 `__reuse_device_table`), with every DTE validated;
    /// under SNP the old rings and completion-wait page too (their registers are locked), else fresh ones.
    Adopted,
    /// Reuse was refused for this reason; the unit was reset instead.
    FellBack(Refusal),
}

/// What a crash boot of one AMD-Vi unit did, for logs and the simulator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmdReport {
    /// The policy the boot ran under.
    pub policy: Policy,
    /// What became of the unit.
    pub outcome: AmdOutcome,
    /// DeviceIDs translating through adopted DTEs.
    pub adopted: Vec<u16>,
    /// DTEs not adopted, and why.
    pub problems: Vec<DteProblem>,
    /// The crashed kernel's domain IDs, reserved so this kernel's domains never alias their cached translations.
    pub reserved_domain_ids: Vec<u16>,
    /// Frames the boot allocated for its own structures.
    pub frames_allocated: u64,
    /// Bytes of the old device table read while validating it.
    pub bytes_read: u64,
    /// Devices whose live DTE was refused and rewritten to block DMA (each with its reason in `problems`).
    pub blocked: Vec<u16>,
    /// Adopted devices that reach all of memory, the crash kernel's region included (pass-through, V = 0):
    /// nothing confines them until they are contained or re-attached.
    pub unconfined: Vec<u16>,
    /// Devices that shared a domain ID with a device on other tables, moved to a fresh ID: (device, old, new).
    pub split_domain_ids: Vec<(u16, u16, u16)>,
    /// The exclusion range (first, last byte) the crashed kernel left enabled, disabled at adoption.
    pub exclusion_disabled: Option<(u64, u64)>,
}

impl Amdvi {
    /// Boot on a crash kernel under `policy`.
    pub fn init_crash(
        hw: &mut impl Platform,
        env: &BootEnv,
        opts: AmdOptions,
        policy: Policy,
    ) -> Result<(Self, AmdReport), AmdError> {
        let mut report = AmdReport {
            policy,
            outcome: AmdOutcome::Reset,
            adopted: Vec::new(),
            problems: Vec::new(),
            reserved_domain_ids: Vec::new(),
            frames_allocated: 0,
            bytes_read: 0,
            blocked: Vec::new(),
            unconfined: Vec::new(),
            split_domain_ids: Vec::new(),
            exclusion_disabled: None,
        };
        let live = Control::from_bits(hw.read64(off::CONTROL)).iommu_en();
        let v = if !live {
            report.outcome = AmdOutcome::NotLive;
            Self::init(hw, env, opts)?
        } else {
            match policy {
                Policy::ResetAbort => Self::init(hw, env, opts)?,
                // Translation off for the crash kernel (`amd_iommu=off` alone would leave interrupt remapping
                // and x2APIC broken; this kernel still brings the command buffer up, as Linux's init does).
                Policy::ResetBypass => {
                    let mut v = Self::init(hw, env, opts)?;
                    v.enable(hw, false)?;
                    v.irq.handover = crate::irq::IrqHandover::Off;
                    v
                }
                // The driver disabled: IommuEn off (DMA and interrupts pass untranslated), no command issued.
                Policy::Off => {
                    let mut v = Self::blank(hw, env);
                    v.enable(hw, false)?;
                    v.irq.handover = crate::irq::IrqHandover::Off;
                    v
                }
                Policy::Adopt | Policy::AdoptScratch => match Self::reuse(hw, env, opts, &mut report) {
                    Ok(v) => {
                        report.outcome = AmdOutcome::Adopted;
                        v
                    }
                    Err(r) => {
                        let snp = Self::blank(hw, env).snp;
                        if snp {
                            return Err(AmdError::ReuseFailedWithSnp(alloc::boxed::Box::new(r)));
                        }
                        report.outcome = AmdOutcome::FellBack(r);
                        Self::init(hw, env, opts)?
                    }
                },
            }
        };
        report.frames_allocated = v.frames_allocated;
        Ok((v, report))
    }

    /// Take over the structures the registers name, checking them first (Linux 6.18 `__reuse_device_table`,
    /// `remap_or_alloc_cwwb_sem`, `alloc_command_buffer`/`alloc_event_buffer` in kdump), then every entry's
    /// reach (see [`Self::settle`]).
    fn reuse(hw: &mut impl Platform, env: &BootEnv, opts: AmdOptions, report: &mut AmdReport) -> Result<Self, Refusal> {
        let mut v = Self::blank(hw, env);
        let want = opts.dev_table_entries.clamp(256, 65536).next_power_of_two() as u64 * 32;
        let table = DevTableBase::from_bits(hw.read64(off::DEV_TABLE_BASE));
        if table.bytes() != want {
            return Err(Refusal::DevTableSize { found: table.bytes(), want });
        }
        let scan = scan(hw, env, true).map_err(Refusal::DevTable)?;
        report.bytes_read = scan.pages_read as u64 * 4096;
        let ring = |hw: &mut _, reg, what| -> Result<(u64, u32), Refusal> {
            let raw = crate::Mmio::read64(hw, reg);
            let r = RingBase::from_bits(raw);
            if !r.length_valid() {
                return Err(Refusal::BadLength { what, raw });
            }
            let addr = env.old_pa(r.ring());
            check(env, what, addr, r.bytes())?;
            Ok((addr, r.entries()))
        };
        let (cmd, cmd_entries) = if v.snp {
            let c = ring(hw, off::CMD_BUF_BASE, "command buffer")?;
            ring(hw, off::EVENT_LOG_BASE, "event log")?;
            c
        } else {
            // Without SNP the base registers are writable: fresh rings, as Linux's kdump kernel allocates them
            // (`alloc_command_buffer`, `alloc_event_buffer` remap the old ones only under SNP). The crashed
            // kernel's rings, whatever their registers say, are neither trusted nor written.
            let mut n = 0;
            let cmd = alloc_contiguous(hw, 2, &mut n).map_err(Refusal::Hardware)?;
            let evt = alloc_contiguous(hw, 2, &mut n).map_err(Refusal::Hardware)?;
            v.frames_allocated += n;
            let ctrl = Control::from_bits(hw.read64(off::CONTROL));
            hw.write64(off::CONTROL, ctrl.with_cmd_buf_en(false).with_event_log_en(false).into_bits());
            for (reg, what, ring) in
                [(off::CMD_BUF_BASE, "command buffer", cmd), (off::EVENT_LOG_BASE, "event log", evt)]
            {
                let want = RingBase::from_ring(env.sme_set(ring), RING_LEN).into_bits();
                hw.write64(reg, want);
                // A locked register keeps the old ring; commands in the new one would never run.
                let raw = hw.read64(reg);
                if raw != want {
                    return Err(Refusal::BaseLocked { what, raw });
                }
            }
            (cmd, 1u32 << RING_LEN)
        };
        // Under SNP the completion-wait page is the one the (locked) completion-store window names; without
        // SNP any page of ours will do.
        let sem = if v.snp {
            let addr = env.old_pa(ExclusionBase::from_bits(hw.read64(off::EXCL_BASE)).address());
            check(env, "completion-wait page", addr, 4096)?;
            addr
        } else {
            let mut n = 0;
            let p = alloc_contiguous(hw, 1, &mut n).map_err(Refusal::Hardware)?;
            v.frames_allocated += n;
            p
        };
        v.dev_table = env.old_pa(scan.table.table());
        v.dev_table_bytes = scan.table.bytes();
        let mut cmd_ring = CmdRing::new(cmd, cmd_entries, sem, env.c_bit);
        if v.snp {
            // The page holds the crashed kernel's last sequence number: a wait for a value already there would
            // "complete" before the unit ran anything, so the sequence continues from it.
            cmd_ring.seq = hw.read_u64(sem).map_err(|e| Refusal::Hardware(e.into()))?;
        }
        v.cmd = Some(cmd_ring);
        // Without SNP the exclusion range is live: requests inside it pass untranslated (AMD-Vi 3.4.5), past
        // any adopted, contained or new table. Turn it off (unlocked without SNP) and say so.
        if !v.snp {
            let base = ExclusionBase::from_bits(hw.read64(off::EXCL_BASE));
            if base.ex_en() {
                let last = ExclusionLimit::from_bits(hw.read64(off::EXCL_LIMIT)).last();
                hw.write64(off::EXCL_BASE, base.with_ex_en(false).into_bits());
                report.exclusion_disabled = Some((base.address(), last));
            }
        }
        v.restart_rings(hw);
        report.problems = scan.problems;
        v.invalidate_all(hw).map_err(Refusal::Hardware)?;
        v.translating = true;
        v.settle(hw, env, &scan.devices, report).map_err(Refusal::Hardware)?;
        v.irq_adopt(hw, env, &scan.irq).map_err(Refusal::Hardware)?;
        report.reserved_domain_ids.sort_unstable();
        report.reserved_domain_ids.dedup();
        Ok(v)
    }

    /// Decide, entry by entry, what stays live (bounded, the check the "iommu/vt-d: Fix crash dump failure caused by legacy DMA/IO" series asks for): reserve every domain ID the old
    /// table names; walk each distinct page table once within [`crate::walk::ADOPT_TABLE_BUDGET`]; rewrite to blocking (and
    /// invalidate) every entry the scan refused, whose tables or pages reach the crash kernel's region or that
    /// a walk could not finish; give a device that shares its domain ID with another device on different
    /// tables a fresh ID (the IOTLB is tagged by domain ID: the two would read each other's translations).
    fn settle(
        &mut self,
        hw: &mut impl Platform,
        env: &BootEnv,
        devices: &[super::ScannedDte],
        report: &mut AmdReport,
    ) -> Result<(), AmdError> {
        let mut refuse: Vec<u16> = report.problems.iter().filter_map(|p| p.devid()).collect();
        let mut budget = crate::walk::ADOPT_TABLE_BUDGET;
        let mut bufs = crate::walk::WalkBuffers::default();
        let tables = || {
            devices.iter().map(|d| match d.kind {
                DteKind::Translated { root, levels } => Some((d.domain, (root, levels))),
                DteKind::PassThrough { .. } | DteKind::NotValid => None,
            })
        };
        // Per root walked: the problem it has, if any.
        let mut walked: Slots<Option<DteProblem>> = Slots::new(tables().map(|t| t.map(|t| t.1)));
        // Per domain ID: the tables the first device using it translates through.
        let mut owner: Slots<(u64, u32)> = Slots::new(tables().map(|t| t.map(|t| t.0)));
        for (i, d) in devices.iter().enumerate() {
            if d.domain != 0 && self.domain_ids.reserve(d.domain as u32) {
                report.reserved_domain_ids.push(d.domain);
            }
            let mut domain = d.domain;
            match d.kind {
                DteKind::Translated { root, levels } => {
                    let verdict = match walked.get_mut(i) {
                        Some(Some(v)) => v.clone(),
                        slot => {
                            let v = reach(hw, env, d.devid, root, levels, &mut budget, &mut bufs);
                            if let Some(s) = slot {
                                *s = Some(v.clone());
                            }
                            v
                        }
                    };
                    if let Some(p) = verdict {
                        report.problems.push(p.with_devid(d.devid));
                        refuse.push(d.devid);
                        continue;
                    }
                    // The first device under a domain ID owns it (every translated ID has a slot).
                    match owner.get_mut(i).map(|s| *s.get_or_insert((root, levels))) {
                        None => {}
                        Some(t) if t == (root, levels) => {}
                        Some(_) => {
                            let id = self.domain_ids.alloc().ok_or(AmdError::OutOfDomainIds)? as u16;
                            let dte = Dte([d.dte.0[0], d.dte.qw1().with_domain_id(id).into_bits(), 0, 0]);
                            self.write_dte(hw, d.devid, dte, Some(d.domain))?;
                            report.split_domain_ids.push((d.devid, d.domain, id));
                            domain = id;
                        }
                    }
                }
                DteKind::PassThrough { .. } | DteKind::NotValid => report.unconfined.push(d.devid),
            }
            self.devices.insert(d.devid, DeviceState::Adopted { domain, kind: d.kind });
            report.adopted.push(d.devid);
        }
        // The walks' page-table pages are read too: part of what adoption costs.
        report.bytes_read += (crate::walk::ADOPT_TABLE_BUDGET - budget) as u64 * 4096;
        refuse.sort_unstable();
        refuse.dedup();
        for devid in refuse {
            let at = self.dev_table + 32 * devid as u64;
            let old = Dte([0, hw.read_u64(at + 8)?, 0, 0]).domain_id();
            if old != 0 && self.domain_ids.reserve(old as u32) {
                report.reserved_domain_ids.push(old);
            }
            // Its interrupt half is as untrusted as the rest: interrupts aborted, not forwarded unmapped (IV = 0).
            let blocked = Dte::blocked(self.snp).with_qw2(super::irq::aborting_qw2());
            self.replace_dte(hw, devid, blocked, (old != 0).then_some(old))?;
            self.submit(
                hw,
                &[iommu_spec::amdvi::InvalidateDevice::interrupt_table(iommu_spec::amdvi::DeviceId(devid)).into_bits()],
            )?;
            self.devices.insert(devid, DeviceState::Refused { domain: old });
            report.blocked.push(devid);
        }
        Ok(())
    }

    /// Point every IOVA of an adopted device at the scratch region through a chain of shared tables, as deep as
    /// the device's IOVAs reach: its own table's depth (at least [`LEVELS`]), or every level the unit has
    /// (EFR.HATS) for a device that translated nothing. One chain per depth, shared by all contained devices.
    pub fn contain(&mut self, hw: &mut impl Platform, devid: u16) -> Result<(), AmdError> {
        let widest = self.efr.host_levels().map_or(6, |l| l as u32);
        let (old, levels) = match self.devices.get(&devid).copied() {
            Some(DeviceState::Adopted { domain, kind: DteKind::Translated { levels, .. } }) => {
                (domain, levels.max(LEVELS))
            }
            Some(DeviceState::Adopted { domain, .. }) => (domain, widest),
            // Blocked at boot: its IOVAs are unknown, so the chain is as deep as the unit's.
            Some(DeviceState::Refused { domain }) => (domain, widest),
            // Found with no DTE adopted or refused (Linux's blocking default, or corrupted into it): it may
            // still send DMA, which would be refused: contained like a refused device.
            None => (0, widest),
            _ => return Ok(()),
        };
        let levels = levels.clamp(LEVELS, 6);
        let mut s = match self.scratch {
            Some(s) => s,
            None => {
                let mut n = 0;
                let page =
                    crate::alloc_contiguous(hw, crate::walk::SCRATCH_PAGES, &mut n).ok_or(AmdError::OutOfMemory)?;
                self.frames_allocated += n;
                let id = self.domain_ids.alloc().ok_or(AmdError::OutOfDomainIds)? as u16;
                Scratch { page, tops: [None; 7], id, frames: n }
            }
        };
        let top = match s.tops[levels as usize] {
            Some(t) => t,
            None => {
                let mut n = 0;
                let t =
                    crate::walk::build_scratch_chain(hw, &self.v1(), levels, s.page, &mut n).map_err(|e| match e {
                        crate::walk::MapError::Mem(m) => AmdError::Mem(m),
                        _ => AmdError::OutOfMemory,
                    })?;
                self.frames_allocated += n;
                s.frames += n;
                s.tops[levels as usize] = Some(t);
                t
            }
        };
        self.scratch = Some(s);
        let dte = Dte::translated(top | self.c_bit, PagingMode::from_bits(levels as u8), s.id, true, true);
        self.write_dte(hw, devid, dte, (old != 0).then_some(old))?;
        self.devices.insert(devid, DeviceState::Contained { domain: s.id });
        Ok(())
    }

    /// The scratch region contained devices' DMA lands in.
    pub fn scratch_region(&self) -> Option<core::ops::Range<u64>> {
        self.scratch.map(|s| s.page..s.page + crate::walk::SCRATCH_PAGES * 4096)
    }
    /// Frames spent on scratch containment (the scratch region and its shared table chains).
    pub fn scratch_frames(&self) -> u64 {
        self.scratch.map_or(0, |s| s.frames)
    }
    /// Devices still on adopted entries.
    pub fn adopted(&self) -> impl Iterator<Item = (u16, DteKind)> + '_ {
        self.devices.iter().filter_map(|(&d, s)| match s {
            DeviceState::Adopted { kind, .. } => Some((d, *kind)),
            _ => None,
        })
    }
}

/// What the `levels`-level table at `root` reaches (see [`crate::walk::reach`]), as `devid`'s problem.
fn reach(
    hw: &impl crate::PhysMem,
    env: &BootEnv,
    devid: u16,
    root: u64,
    levels: u32,
    budget: &mut usize,
    bufs: &mut crate::walk::WalkBuffers,
) -> Option<DteProblem> {
    use crate::walk::Reach;
    Some(match crate::walk::reach_in(hw, &super::V1::of(env), env, root, levels, budget, bufs)? {
        Reach::TableInCrashRegion { addr } => DteProblem::PageTableInCrashRegion { devid, addr },
        Reach::PageInCrashRegion { iova, addr } => DteProblem::PageInCrashRegion { devid, iova, addr },
        Reach::Bound { tables } => DteProblem::WalkBound { devid, tables },
    })
}

fn check(env: &BootEnv, what: &'static str, addr: u64, bytes: u64) -> Result<(), Refusal> {
    if addr == 0 {
        return Err(Refusal::BaseZero { what });
    }
    if !env.in_ram(addr, bytes) {
        return Err(Refusal::BufferNotRam { what, addr });
    }
    if env.in_crash_region(addr, bytes) {
        return Err(Refusal::BufferInCrashRegion { what, addr });
    }
    Ok(())
}
