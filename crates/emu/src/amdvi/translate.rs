//! DMA translation of untranslated requests without PASID (spec 2.2): the device table entry at
//! `DevTableBase + 32 * DeviceID` (2.2.2), then the v1 host page table (2.2.3).
//!
//! The DTE's V / TV / Mode decide, as docs/handover.md#amdvi-dte-valid-bits gives them (QEMU `amdvi_do_translate`):
//! - V = 0: the entry is not valid and the request passes untranslated (Linux therefore sets V in every entry).
//! - V = 1, TV = 0: no translation information; the request is refused without an event (Linux leaves TV = 0 for
//!   unattached devices on SNP hosts, relying on exactly that).
//! - V = 1, TV = 1, Mode 0: untranslated, with the DTE's IR / IW. Linux's boot default (IR = IW = 0) blocks all DMA;
//!   a refused request logs IO_PAGE_FAULT with PR = 0 (the "domain=0x0000" faults of devices with no domain).
//!   With SNP enforcement on this combination is an ILLEGAL_DEV_TABLE_ENTRY: hardware checks TV before using the
//!   host page-table root, and Linux stopped setting TV without one for that reason (its "Set translation valid bit
//!   only when IO page tables are in use" change for SNP hosts).
//! - Modes 1–6: a walk of that many levels; Mode 7, or a Mode above what EFR.HATS advertises: illegal DTE.
//!
//! A V = 1 entry with a reserved bit set, or GV without EFR.GTSup, is an ILLEGAL_DEV_TABLE_ENTRY (QEMU validates
//! the reserved bits of every valid entry before looking at TV). A DeviceID beyond the table that Device Table
//! Base's Size names has no entry: the model refuses it with ILLEGAL_DEV_TABLE_ENTRY rather than reading memory
//! past the table (hardware behaviour unconfirmed). The event carries the request's address (the spec's reading as
//! VirtualBox transcribes it; QEMU logs the DTE address). A DTE or PTE read that is not memory logs
//! DEV_TAB_HARDWARE_ERROR / PAGE_TAB_HARDWARE_ERROR with the entry's address.
//!
//! The walk (spec 2.2.3; Linux `fetch_pte` for the shape): an IOVA above the Mode's reach faults; each entry must be
//! present (PR) with no reserved bit set; IR / IW are ANDed over the DTE and every level. NextLevel 0 is a leaf of the
//! level's natural size (so a leaf may sit at any level), 7 a leaf whose size the address bits encode (it must be
//! at least the level's natural size, below the next level's, and at most 2^52), 1..level-1 the level of the next
//! table. A PDE whose NextLevel skips levels requires the IOVA bits those levels would have indexed to be zero, else
//! IO_PAGE_FAULT (Linux never builds skips and refuses to walk them; public sources leave hardware unconfirmed).
//! NextLevel at or above the entry's own level is an invalid encoding: IO_PAGE_FAULT with RZ.
//!
//! IO_PAGE_FAULT events are suppressed by DTE.SA always and by DTE.SE after the first (see `cache`); other events
//! never are. Requests inside the exclusion range (ExEn, and Allow or DTE.EX) of a translating device pass
//! untranslated, unless SNP enforcement re-purposes the registers as the Completion Store window.

use iommu_platform::PhysMem;
use iommu_spec::amdvi::{
    level_index, level_shift, mode_max_iova, skipped_iova_bits, DeviceId, Dte, Event, EventFlags, IoPte,
    NEXT_LEVEL_LEAF, NEXT_LEVEL_SIZED,
};

use super::cache::{DevState, DteInfo, IotlbEntry, PdeEntry};
use super::AmdviModel;
use crate::dma::{Access, FaultInfo, Translation};
use crate::mem::PhysMemory;

/// Largest page a NextLevel-7 entry may map: all of a 52-bit physical address space.
const MAX_PAGE_SHIFT: u32 = 52;
/// EventFlags.Type 1, master abort: the table read that no target claimed.
const MASTER_ABORT: u8 = 1;

/// A refused request before it is reported.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// V = 1, TV = 0: refused without an event.
    NoTranslation,
    /// ILLEGAL_DEV_TABLE_ENTRY; `rz` when reserved bits were set.
    IllegalDte { rz: bool, why: &'static str },
    /// DEV_TAB_HARDWARE_ERROR reading the DTE at this address.
    DteRead(u64),
    /// IO_PAGE_FAULT with these flags.
    Page { pr: bool, pe: bool, rz: bool, why: &'static str },
    /// PAGE_TAB_HARDWARE_ERROR reading the entry at this address.
    PteRead(u64),
}

fn not_present(why: &'static str) -> Fault {
    Fault::Page { pr: false, pe: false, rz: false, why }
}

fn invalid_entry(why: &'static str) -> Fault {
    Fault::Page { pr: true, pe: false, rz: true, why }
}

fn allowed(access: Access, r: bool, w: bool) -> bool {
    match access {
        Access::Read => r,
        Access::Write => w,
    }
}

impl AmdviModel {
    /// Translate one request while Control.IommuEn is set, reporting any fault.
    pub(super) fn translate_dma(&mut self, mem: &mut PhysMemory, devid: u16, iova: u64, access: Access) -> Translation {
        let info = match self.device_state(mem, devid) {
            Ok(DevState::NotValid) => {
                self.counters.passthrough += 1;
                return Translation::Ok { phys: iova };
            }
            Ok(DevState::NoTranslation) => return self.report(mem, devid, None, iova, access, Fault::NoTranslation),
            Ok(DevState::Translate(info)) => info,
            Err(f) => return self.report(mem, devid, None, iova, access, f),
        };
        if self.excluded(&info, iova) {
            self.counters.passthrough += 1;
            return Translation::Ok { phys: iova };
        }
        match self.resolve(mem, &info, iova, access) {
            Ok(phys) => Translation::Ok { phys },
            Err(f) => self.report(mem, devid, Some(info), iova, access, f),
        }
    }

    fn resolve(&mut self, mem: &mut PhysMemory, info: &DteInfo, iova: u64, access: Access) -> Result<u64, Fault> {
        if info.mode == 0 {
            if allowed(access, info.ir, info.iw) {
                self.counters.passthrough += 1;
                return Ok(iova);
            }
            return Err(not_present("DTE Mode 0 permissions deny the access"));
        }
        let entry = match self.caches.iotlb_get(info.domain_id, iova) {
            Some(e) => {
                self.counters.iotlb_hits += 1;
                e
            }
            None => {
                self.counters.iotlb_misses += 1;
                let e = self.walk(mem, info, iova)?;
                self.caches.iotlb_put(info.domain_id, iova, e);
                e
            }
        };
        // Checked against the (possibly cached) entry: a permission change without an invalidation is not seen.
        if !allowed(access, info.ir && entry.r, info.iw && entry.w) {
            return Err(Fault::Page { pr: true, pe: true, rz: false, why: "permission denied" });
        }
        Ok(entry.translate(iova))
    }

    /// The decoded DTE of `devid`, through the DTE cache.
    fn device_state(&mut self, mem: &PhysMemory, devid: u16) -> Result<DevState, Fault> {
        if let Some(s) = self.caches.dte_get(devid) {
            self.counters.dte_hits += 1;
            return Ok(s);
        }
        self.counters.dte_misses += 1;
        let dtb = self.dev_table();
        if devid as u32 >= dtb.entries() {
            return Err(Fault::IllegalDte { rz: false, why: "DeviceID beyond the device table" });
        }
        let pa = self.mem_pa(dtb.table()).wrapping_add(DeviceId(devid).dte_offset());
        let mut raw = [0u8; 32];
        mem.read(pa, &mut raw).map_err(|_| Fault::DteRead(pa))?;
        let s = self.decode_dte(Dte::from_le_bytes(&raw))?;
        self.caches.dte_put(devid, s);
        Ok(s)
    }

    /// Validate and decode a DTE (spec 2.2.2.1).
    fn decode_dte(&self, dte: Dte) -> Result<DevState, Fault> {
        if !dte.valid() {
            return Ok(DevState::NotValid);
        }
        if dte.has_reserved_bits() {
            return Err(Fault::IllegalDte { rz: true, why: "reserved bits in the device table entry" });
        }
        if !dte.translation_valid() {
            return Ok(DevState::NoTranslation);
        }
        let efr = self.cfg.efr_register();
        let (q0, q1) = (dte.qw0(), dte.qw1());
        if q0.gv() && !efr.gt_sup() {
            return Err(Fault::IllegalDte { rz: false, why: "GV without guest translation support" });
        }
        let mode = match dte.mode().levels() {
            None if dte.mode().into_bits() == 0 => {
                if self.snp_locked {
                    return Err(Fault::IllegalDte { rz: false, why: "TV without a host page table under SNP" });
                }
                0
            }
            None => return Err(Fault::IllegalDte { rz: false, why: "reserved DTE Mode 7" }),
            Some(m) if efr.host_levels().is_some_and(|max| m <= max as u32) => m,
            Some(_) => return Err(Fault::IllegalDte { rz: false, why: "DTE Mode above EFR.HATS" }),
        };
        Ok(DevState::Translate(DteInfo {
            domain_id: q1.domain_id(),
            mode,
            root: self.mem_pa(dte.pt_root()),
            ir: q0.ir(),
            iw: q0.iw(),
            sa: q1.sa(),
            se: q1.se(),
            ex: q1.ex(),
        }))
    }

    /// Walk the v1 table of `info` for `iova` (spec 2.2.3). Each step lowers the level, so at most six reads.
    fn walk(&mut self, mem: &mut PhysMemory, info: &DteInfo, iova: u64) -> Result<IotlbEntry, Fault> {
        self.counters.walks += 1;
        if iova > mode_max_iova(info.mode) {
            return Err(not_present("IOVA beyond the reach of the DTE Mode"));
        }
        let (mut r, mut w) = (true, true);
        let mut table = info.root;
        let mut level = info.mode;
        // Whether every directory entry so far named the level right below its own (no skipped levels): only such a
        // path is filed in the page-directory cache, by the 2 MiB its level-1 table maps.
        let mut stepwise = true;
        if level > 1 {
            if let Some(p) = self.caches.pde_get(info.domain_id, iova) {
                self.counters.pde_hits += 1;
                (table, level, r, w) = (p.table, 1, p.r, p.w);
            }
        }
        for _ in 0..6 {
            let pa = table.wrapping_add(level_index(iova, level) as u64 * 8);
            let pte = IoPte::from_bits(mem.read_u64_in_page(pa).map_err(|_| Fault::PteRead(pa))?);
            if !pte.present() {
                return Err(not_present("page-table entry not present"));
            }
            if pte.reserved_bits() != 0 {
                return Err(invalid_entry("reserved bits in a page-table entry"));
            }
            r &= pte.ir();
            w &= pte.iw();
            let shift = match pte.next_level() {
                NEXT_LEVEL_LEAF => level_shift(level),
                NEXT_LEVEL_SIZED => {
                    let shift = pte.sized_leaf_size().trailing_zeros();
                    let natural = level_shift(level);
                    if shift < natural || shift >= natural + 9 || shift > MAX_PAGE_SHIFT {
                        return Err(invalid_entry("NextLevel-7 page size does not fit its level"));
                    }
                    shift
                }
                next if (next as u32) < level => {
                    let next = next as u32;
                    stepwise &= next + 1 == level;
                    if iova & skipped_iova_bits(level, next) != 0 {
                        return Err(Fault::Page {
                            pr: true,
                            pe: false,
                            rz: false,
                            why: "skipped levels' IOVA bits set",
                        });
                    }
                    table = self.mem_pa(pte.phys());
                    level = next;
                    if level == 1 && stepwise {
                        self.caches.pde_put(info.domain_id, iova, PdeEntry { table, r, w });
                    }
                    continue;
                }
                _ => return Err(invalid_entry("NextLevel not below the entry's level")),
            };
            return Ok(IotlbEntry { phys: self.mem_pa(pte.page_base(1 << shift)), shift, r, w });
        }
        // Unreachable: every step lowers the level and level 1 only holds leaves.
        Err(invalid_entry("page-table walk too deep"))
    }

    /// Whether `iova` lies in the exclusion range for this device (Exclusion Base and Limit, spec 3.4.5–3.4.6).
    fn excluded(&self, info: &DteInfo, iova: u64) -> bool {
        if self.snp_locked {
            return false;
        }
        let (base, limit) = (self.excl_base(), self.excl_limit());
        base.ex_en() && (base.allow() || info.ex) && iova >= base.address() && iova <= limit.last()
    }

    /// Refuse the request: log its event unless suppressed, and tell the requester.
    fn report(
        &mut self,
        mem: &mut PhysMemory,
        devid: u16,
        info: Option<DteInfo>,
        iova: u64,
        access: Access,
        f: Fault,
    ) -> Translation {
        self.counters.faults += 1;
        let device = DeviceId(devid);
        let rw = EventFlags::new().with_rw(access == Access::Write);
        let domain = info.map_or(0, |i| i.domain_id as u32);
        let (ev, code, reason) = match f {
            Fault::NoTranslation => (None, 0, "DTE without translation information (TV = 0)"),
            Fault::IllegalDte { rz, why } => {
                let flags = rw.with_rz(rz);
                (Some(Event::IllegalDevTableEntry { device, pasid: 0, address: iova, flags }), 1, why)
            }
            Fault::DteRead(pa) => {
                let flags = rw.with_ty(MASTER_ABORT);
                (Some(Event::DevTabHardwareError { device, address: pa, flags }), 3, "device table read failed")
            }
            Fault::Page { pr, pe, rz, why } => {
                let flags = rw.with_pr(pr).with_pe(pe).with_rz(rz);
                let ev = Event::IoPageFault { device, domain_or_pasid: domain, address: iova, flags };
                (self.unless_suppressed(devid, info, ev), 2, why)
            }
            Fault::PteRead(pa) => {
                let flags = rw.with_ty(MASTER_ABORT);
                let ev = Event::PageTabHardwareError { device, domain_or_pasid: domain, address: pa, flags };
                (Some(ev), 4, "page-table read failed")
            }
        };
        let recorded = ev.is_some_and(|ev| self.log_event(mem, ev));
        Translation::Fault(FaultInfo { code, reason, recorded })
    }

    /// `ev` (an IO_PAGE_FAULT) unless DTE.SA, or DTE.SE after an earlier one, suppresses it.
    fn unless_suppressed(&mut self, devid: u16, info: Option<DteInfo>, ev: Event) -> Option<Event> {
        let suppress = match info {
            Some(i) if i.sa => true,
            Some(i) if i.se => self.caches.se_suppress(devid),
            _ => false,
        };
        if suppress {
            self.counters.events_suppressed += 1;
            return None;
        }
        Some(ev)
    }
}
