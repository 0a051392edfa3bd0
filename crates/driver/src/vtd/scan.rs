//! Reading the tables the crashed kernel left (spec 9.1–9.6): root, context, PASID directory and PASID entries,
//! each checked as hostile input (addresses in RAM and outside the crash kernel's region, reserved bits,
//! address widths and domain IDs the unit supports). Read-only: it runs on a live unit before adoption and on a
//! dump alike; adoption (`handover.rs`) is this scan plus the switch to our root table.

use alloc::vec::Vec;

use iommu_spec::vtd::{
    off, pasid_dir_index, pasid_table_index, Cap, ContextEntry, Ecap, Gsts, PasidDirEntry, PasidEntry, PasidEntryQw0,
    Pgtt, RootEntry, RtAddr, ScalableContextEntry, ScalableRootEntry, SourceId, TranslationType,
};

use crate::{BootEnv, Mmio, PhysMem};

/// How an adopted (or scanned) device translates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// Second-level tables at `root`, `levels` deep.
    Translated {
        /// Physical address of the top-level second-level table, from the context or PASID entry.
        root: u64,
        /// Levels from the entry's AW: AW + 2.
        levels: u32,
    },
    /// First-level (x86-64-format) tables at `root`, `levels` (4 or 5) deep, from a scalable-mode PASID
    /// entry with PGTT = 001 for RID_PASID `pasid` (Linux's DMA domains on units with ECAP.FLTS).
    FirstLevel {
        /// Physical address of the top-level first-level table, from the PASID entry (FLPTR).
        root: u64,
        /// 4, or 5 with the entry's FLPM set.
        levels: u32,
        /// The PASID of the entry (the context entry's RID_PASID).
        pasid: u32,
    },
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
    /// The source ID (bus, device, function) its entry is indexed by.
    pub sid: u16,
    /// The domain ID its entry tags IOTLB and context-cache entries with, which invalidations name.
    pub did: u16,
    /// How it translates.
    pub kind: DeviceKind,
    /// The raw context entry (scalable mode: its low 128 bits).
    pub entry: u128,
}

/// What a read-only walk of the old root and context tables found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    /// RTADDR as read: the root table and its format (SMT).
    pub rtaddr: RtAddr,
    /// GSTS as read: whether translation (TES) and queued invalidation (QIES) were on.
    pub gsts: Gsts,
    /// Every present entry that passed the checks, by source ID.
    pub devices: Vec<ScannedDevice>,
    /// The buses and devices refused, with the reason: their DMA will fault once adopted.
    pub problems: Vec<super::EntryProblem>,
    /// Root, context, PASID-directory and PASID-table pages read.
    pub pages_read: Vec<u64>,
    /// Each context table read, by (bus, half) as [`super::Vtd`] keys its own (legacy: half 0; scalable mode: 0
    /// for devfn < 0x80, 1 above).
    pub context_tables: Vec<((u8, u8), u64)>,
}

impl Scan {
    /// The old tables are in scalable mode (RTADDR.SMT): scalable-mode root, context and PASID
    /// entries rather than legacy root and context entries.
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
    // A context table is looked at in place where memory lends it, else copied here.
    let mut copy = [0u8; 4096];
    for bus in 0..=255u8 {
        let raw = u128::from_le_bytes(rt[bus as usize * 16..bus as usize * 16 + 16].try_into().unwrap_or([0; 16]));
        // (context table, first devfn, entries, entry size)
        let halves: [Option<(u64, u16)>; 2] = if rtaddr.smt() {
            let e = ScalableRootEntry::from_bits(raw);
            if e.reserved_bits() != 0 {
                scan.problems.push(P::RootReserved { bus, raw });
                continue;
            }
            [e.lp().then(|| (e.lower_table(), 0)), e.up().then(|| (e.upper_table(), 0x80))]
        } else {
            let e = RootEntry::from_bits(raw);
            if !e.present() {
                continue;
            }
            if e.reserved_bits() != 0 {
                scan.problems.push(P::RootReserved { bus, raw });
                continue;
            }
            [Some((e.context_table(), 0)), None]
        };
        for (table, first) in halves.into_iter().flatten() {
            if let Err(p) = check_ctx_table(env, bus, table) {
                scan.problems.push(p);
                continue;
            }
            let ct = match hw.read_page(table, &mut copy) {
                Ok(page) => page,
                Err(err) => {
                    scan.problems.push(P::ContextTableUnreadable { bus, err });
                    continue;
                }
            };
            scan.pages_read.push(table);
            scan.context_tables.push(((bus, u8::from(first == 0x80)), table));
            // Bytes an entry spans: 16 (legacy, 128 bits) or 32 (scalable mode, 256 bits).
            let size = if rtaddr.smt() { 32 } else { 16 };
            let u128_at = |e: &[u8], at: usize| {
                u128::from_le_bytes(e.get(at..at + 16).and_then(|b| b.try_into().ok()).unwrap_or([0; 16]))
            };
            // Eight cache lines at a time: most of a table is zeros (the OR vectorises).
            for (b, block) in ct.chunks_exact(512).enumerate() {
                if block.iter().fold(0, |a, &x| a | x) == 0 {
                    continue;
                }
                for (k, e) in block.chunks_exact(size).enumerate() {
                    let i = b * (512 / size) + k;
                    // A zero low half has P clear in either mode: not present, nothing to decode.
                    let raw = u128_at(e, 0);
                    if raw == 0 {
                        continue;
                    }
                    let sid = SourceId::new(bus, 0, 0).0 | (first + i as u16);
                    let res = if rtaddr.smt() {
                        let hi = u128_at(e, 16);
                        scan_sm_entry(&*hw, env, cap, ecap, sid, raw, hi, &mut scan.pages_read)
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
    hw: &impl PhysMem,
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
