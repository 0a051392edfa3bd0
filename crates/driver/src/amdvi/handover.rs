//! Crash-kernel boot of a live AMD-Vi unit (seeds 000 and 002, merged in Linux 6.18): reuse the crashed
//! kernel's command buffer, event log, completion-wait page and device table in place, never writing the
//! base registers SNP may have locked; reserve the old domain IDs; defer attach. Resets write fresh bases,
//! which a locked unit ignores: their first completion wait then times out, as the seeds report.
//!
//! The device table is used in place rather than copied (Linux copied it before 6.18): under SNP its base
//! register cannot be changed, and one way for every kdump boot keeps the two paths from diverging. The
//! cost is that re-attached devices' DTEs are rewritten in the crashed kernel's memory.

use alloc::vec::Vec;

use iommu_spec::amdvi::{off, Control, DevTableBase, Dte, ExclusionBase, PagingMode, RingBase};

use super::cmdq::CmdRing;
use super::driver::{alloc_contiguous, AmdOptions, Amdvi, DeviceState, LEVELS};
use super::scan::{scan, DteKind, DteProblem};
use super::{AmdError, Refusal};
use crate::{BootEnv, Platform, Policy};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AmdOutcome {
    NotLive,
    Reset,
    Adopted,
    FellBack(Refusal),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmdReport {
    pub policy: Policy,
    pub outcome: AmdOutcome,
    pub adopted: Vec<u16>,
    pub problems: Vec<DteProblem>,
    pub reserved_domain_ids: Vec<u16>,
    pub frames_allocated: u64,
    pub bytes_read: u64,
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
    /// `remap_or_alloc_cwwb_sem`, `alloc_command_buffer`/`alloc_event_buffer` in kdump).
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
            let addr = r.ring() & !env.c_bit;
            check(env, what, addr, r.bytes())?;
            Ok((addr, r.entries()))
        };
        let (cmd, cmd_entries) = ring(hw, off::CMD_BUF_BASE, "command buffer")?;
        ring(hw, off::EVENT_LOG_BASE, "event log")?;
        // Under SNP the completion-wait page is the one the (locked) completion-store window names; without
        // SNP any page of ours will do.
        let sem = if v.snp {
            let addr = ExclusionBase::from_bits(hw.read64(off::EXCL_BASE)).address() & !env.c_bit;
            check(env, "completion-wait page", addr, 4096)?;
            addr
        } else {
            let mut n = 0;
            let p = alloc_contiguous(hw, 1, &mut n).map_err(Refusal::Hardware)?;
            v.frames_allocated += n;
            p
        };
        v.dev_table = scan.table.table() & !env.c_bit;
        v.dev_table_bytes = scan.table.bytes();
        v.cmd = Some(CmdRing::new(cmd, cmd_entries, sem));
        v.restart_rings(hw);
        for d in &scan.devices {
            if d.domain != 0 && v.domain_ids.reserve(d.domain as u32) {
                report.reserved_domain_ids.push(d.domain);
            }
            v.devices.insert(d.devid, DeviceState::Adopted { domain: d.domain, kind: d.kind });
            report.adopted.push(d.devid);
        }
        report.reserved_domain_ids.sort_unstable();
        report.reserved_domain_ids.dedup();
        report.problems = scan.problems;
        v.invalidate_all(hw).map_err(Refusal::Hardware)?;
        v.translating = true;
        Ok(v)
    }

    /// Point every IOVA of an adopted device at one scratch page through a chain of shared tables: `LEVELS`
    /// tables and the page, for all contained devices together.
    pub fn contain(&mut self, hw: &mut impl Platform, devid: u16) -> Result<(), AmdError> {
        let Some(DeviceState::Adopted { domain: old, .. }) = self.devices.get(&devid).copied() else {
            return Ok(());
        };
        let (top, id) = match self.scratch {
            Some((_, t, id, _)) => (t, id),
            None => {
                let mut n = 0;
                let page =
                    crate::alloc_contiguous(hw, crate::walk::SCRATCH_PAGES, &mut n).ok_or(AmdError::OutOfMemory)?;
                let top =
                    crate::walk::build_scratch_chain(hw, &super::V1, LEVELS, page, &mut n).map_err(|e| match e {
                        crate::walk::MapError::Mem(m) => AmdError::Mem(m),
                        _ => AmdError::OutOfMemory,
                    })?;
                self.frames_allocated += n;
                let id = self.domain_ids.alloc().ok_or(AmdError::OutOfDomainIds)? as u16;
                self.scratch = Some((page, top, id, n));
                (top, id)
            }
        };
        let dte = Dte::translated(top, PagingMode::from_bits(LEVELS as u8), id, true, true);
        self.write_dte(hw, devid, dte, (old != 0).then_some(old))?;
        self.devices.insert(devid, DeviceState::Contained { domain: id });
        Ok(())
    }

    /// The scratch region contained devices' DMA lands in.
    pub fn scratch_region(&self) -> Option<core::ops::Range<u64>> {
        self.scratch.map(|s| s.0..s.0 + crate::walk::SCRATCH_PAGES * 4096)
    }
    pub fn scratch_frames(&self) -> u64 {
        self.scratch.map_or(0, |s| s.3)
    }
    /// Devices still on adopted entries.
    pub fn adopted(&self) -> impl Iterator<Item = (u16, DteKind)> + '_ {
        self.devices.iter().filter_map(|(&d, s)| match s {
            DeviceState::Adopted { kind, .. } => Some((d, *kind)),
            _ => None,
        })
    }
}

fn check(env: &BootEnv, what: &'static str, addr: u64, bytes: u64) -> Result<(), Refusal> {
    if !env.in_ram(addr, bytes) {
        return Err(Refusal::BufferNotRam { what, addr });
    }
    if env.in_crash_region(addr, bytes) {
        return Err(Refusal::BufferInCrashRegion { what, addr });
    }
    Ok(())
}
