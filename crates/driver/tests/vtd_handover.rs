//! Crash-kernel boot of a live VT-d unit under each policy, with the crashed kernel's DMA in flight, and
//! every validation rule of adoption broken once.

mod common;

use common::{Rig, CRASH};
use iommu_driver::vtd::{Attachment, EntryProblem, HandoverOutcome, Refusal, Vtd, VtdOptions};
use iommu_driver::{Mmio, PhysMem, Policy};
use iommu_emu::stale::{Probe, StaleFetchPlatform};
use iommu_emu::{Access, VtdModel};
use iommu_spec::vtd::{off, ContextEntry, RootEntry, RtAddr, TranslationType};

const NIC: u16 = 0x0010;
const DISK: u16 = 0x0018;
const BULK: u16 = 0x0020;
const BUS1: u16 = 0x0108;

/// In-flight DMA of the crashed kernel: (device, IOVA, physical page it must reach).
struct Old {
    dma: Vec<(u16, u64, u64)>,
    dids: Vec<u16>,
}

fn opts(scalable: bool) -> VtdOptions {
    VtdOptions { scalable, first_level: false }
}

/// The primary kernel: NIC and disk in DMA domains (disk on two buses' worth: one on bus 1 too), the bulk
/// engine in pass-through; a few buffers each.
fn primary(rig: &mut Rig, scalable: bool) -> Old {
    let mut v = Vtd::init(&mut rig.primary(), opts(scalable)).unwrap();
    let mut old = Old { dma: Vec::new(), dids: Vec::new() };
    for (i, sid) in [NIC, DISK, BUS1].into_iter().enumerate() {
        let d = v.create_domain(&mut rig.primary()).unwrap();
        old.dids.push(v.domain(d).unwrap().did);
        v.attach(&mut rig.primary(), sid, Attachment::Domain(d)).unwrap();
        for k in 0..4u64 {
            let pa = 0x2000_0000 + (i as u64 * 16 + k) * 0x1000;
            let iova = v.map(&mut rig.primary(), d, pa, 0x1000, true, true).unwrap();
            old.dma.push((sid, iova, pa));
        }
    }
    v.attach(&mut rig.primary(), BULK, Attachment::Identity).unwrap();
    old.dma.push((BULK, 0x3000_0000, 0x3000_0000));
    for &(sid, iova, pa) in &old.dma {
        assert_eq!(rig.dma(sid, iova, Access::Write), Ok(pa), "primary kernel DMA");
    }
    old
}

/// Run `f` on the crash kernel's platform with the unit fetching every old device's entry after each memory
/// write (the stale-fetch walker): each old IOVA may reach its old page, a page the crash kernel owns (a new
/// target being built), or be refused by a legal entry, at every moment.
fn watched<R>(rig: &mut Rig, old: &[(u16, u64, u64)], f: impl FnOnce(&mut StaleFetchPlatform<'_, VtdModel>) -> R) -> R {
    let probes = old.iter().map(|&(d, iova, pa)| Probe::write(d as u32, iova, vec![pa]).or_within(CRASH)).collect();
    let mut p = StaleFetchPlatform::new(rig.crash(), probes);
    let r = f(&mut p);
    assert!(p.writes > 0, "the update wrote memory");
    assert_eq!(p.violations, [], "a fetch in the middle of the update saw an entry it must not");
    r
}

fn crash(rig: &mut Rig, scalable: bool, policy: Policy) -> (Vtd, iommu_driver::vtd::HandoverReport) {
    let env = rig.crash_env();
    Vtd::init_crash(&mut rig.crash(), &env, opts(scalable), policy).unwrap()
}

#[test]
fn adopt_keeps_old_translations_until_each_device_is_reattached() {
    for scalable in [false, true] {
        let mut rig = Rig::new();
        let old = primary(&mut rig, scalable);
        let (mut v, report) = crash(&mut rig, scalable, Policy::Adopt);
        assert_eq!(report.outcome, HandoverOutcome::Adopted, "scalable={scalable}");
        assert_eq!(report.adopted, vec![NIC, DISK, BULK, BUS1]);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        for did in &old.dids {
            assert!(report.reserved_dids.contains(did), "old DID {did} reserved");
        }
        // The root table now lives in the crash kernel's region; translation never went off.
        let rt = RtAddr::from_bits(rig.crash().read64(off::RTADDR)).table();
        assert!(CRASH.contains(&rt));
        for &(sid, iova, pa) in &old.dma {
            assert_eq!(rig.dma(sid, iova, Access::Write), Ok(pa), "old DMA of {sid:#x} still lands where it did");
        }
        // The disk's new driver attaches: a fresh domain, a DID and IOVAs that collide with nothing old.
        let d = v.create_domain(&mut rig.crash()).unwrap();
        let did = v.domain(d).unwrap().did;
        assert!(!old.dids.contains(&did));
        watched(&mut rig, &old.dma, |p| v.attach(p, DISK, Attachment::Domain(d))).unwrap();
        let buf = CRASH.start + 0x0900_0000;
        let iova = v.map(&mut rig.crash(), d, buf, 0x1000, true, true).unwrap();
        assert_eq!(rig.dma(DISK, iova, Access::Read), Ok(buf));
        for &(sid, oiova, pa) in &old.dma {
            let now = rig.dma(sid, oiova, Access::Write);
            if sid == DISK {
                assert!(now.is_err(), "old IOVA {oiova:#x} of the re-attached disk faults");
                assert_ne!(oiova, iova, "new IOVAs avoid the old ones");
            } else {
                assert_eq!(now, Ok(pa), "{sid:#x} untouched by the disk's attach");
            }
        }
    }
}

#[test]
fn reset_abort_faults_every_in_flight_dma() {
    for scalable in [false, true] {
        let mut rig = Rig::new();
        let old = primary(&mut rig, scalable);
        let (_, report) = crash(&mut rig, scalable, Policy::ResetAbort);
        assert_eq!(report.outcome, HandoverOutcome::Reset);
        for &(sid, iova, _) in &old.dma {
            assert!(rig.dma(sid, iova, Access::Write).is_err(), "{sid:#x} {iova:#x}");
        }
    }
}

#[test]
fn reset_bypass_lands_old_dma_on_physical_addresses_equal_to_iovas() {
    let mut rig = Rig::new();
    let old = primary(&mut rig, false);
    let (mut v, _) = crash(&mut rig, false, Policy::ResetBypass);
    assert!(!v.translating());
    for &(sid, iova, _) in &old.dma {
        assert_eq!(rig.dma(sid, iova, Access::Write), Ok(iova));
    }
    // Top-down IOVAs below 4 GiB are exactly where the crash kernel lives on this machine.
    assert!(old.dma.iter().any(|&(_, iova, _)| CRASH.contains(&iova)));
    // The crash kernel's own drivers use physical addresses.
    let d = v.create_domain(&mut rig.crash()).unwrap();
    assert_eq!(v.map(&mut rig.crash(), d, 0x5000_0000, 0x1000, true, true), Ok(0x5000_0000));
}

#[test]
fn a_unit_found_off_boots_normally() {
    let mut rig = Rig::new();
    let (v, report) = crash(&mut rig, false, Policy::Adopt);
    assert_eq!(report.outcome, HandoverOutcome::NotLive);
    assert!(v.translating());
}

#[test]
fn adopt_scratch_contains_every_iova_in_a_constant_size_region() {
    let mut rig = Rig::new();
    let old = primary(&mut rig, false);
    let (mut v, _) = crash(&mut rig, false, Policy::AdoptScratch);
    watched(&mut rig, &old.dma, |p| v.contain(p, NIC)).unwrap();
    watched(&mut rig, &old.dma, |p| v.contain(p, BULK)).unwrap();
    let region = v.scratch_region().unwrap();
    assert!(CRASH.contains(&region.start) && CRASH.contains(&(region.end - 1)));
    // 4-level tables: 512 region pages and one table per level, shared by every contained device.
    assert_eq!(v.scratch_frames(), 512 + 4);
    let slot = |iova: u64| region.start + ((iova >> 12) % 512) * 4096 + (iova & 0xfff);
    for &(sid, iova, pa) in &old.dma {
        let got = rig.dma(sid, iova + 0x40, Access::Write);
        match sid {
            NIC | BULK => assert_eq!(got, Ok(slot(iova + 0x40))),
            _ => assert_eq!(got, Ok(pa + 0x40)),
        }
    }
    assert_eq!(
        rig.dma(NIC, 0x7fff_ffff_f000, Access::Write),
        Ok(slot(0x7fff_ffff_f000)),
        "any IOVA of the 48-bit space"
    );
}

// ---- validation: each rule broken once ----

fn rtaddr(rig: &mut Rig) -> u64 {
    RtAddr::from_bits(rig.primary().read64(off::RTADDR)).table()
}

/// Rewrite the old root entry of `bus`.
fn set_root_entry(rig: &mut Rig, bus: u8, f: impl Fn(RootEntry) -> RootEntry) {
    let at = rtaddr(rig) + bus as u64 * 16;
    let e = RootEntry::from_bits(rig.mem.read_u128(at).unwrap());
    rig.mem.write_u128(at, f(e).into_bits()).unwrap();
}

/// Rewrite the old legacy context entry of `sid`.
fn set_context(rig: &mut Rig, sid: u16, f: impl Fn(ContextEntry) -> ContextEntry) {
    let rt = rtaddr(rig);
    let root = RootEntry::from_bits(rig.mem.read_u128(rt + (sid >> 8) as u64 * 16).unwrap());
    let at = root.context_table() + (sid & 0xff) as u64 * 16;
    let e = ContextEntry::from_bits(rig.mem.read_u128(at).unwrap());
    rig.mem.write_u128(at, f(e).into_bits()).unwrap();
}

/// Write RTADDR without SRTP: the unit keeps translating with the latched root, but software reading
/// the register (as a crash kernel does) sees the new value.
fn set_rtaddr_register(rig: &mut Rig, v: u64) {
    rig.primary().write64(off::RTADDR, v);
}

fn fell_back(rig: &mut Rig, scalable: bool) -> Refusal {
    let (_, report) = crash(rig, scalable, Policy::Adopt);
    match report.outcome {
        HandoverOutcome::FellBack(r) => r,
        o => panic!("expected a fallback, got {o:?}"),
    }
}

#[test]
fn refuses_rtaddr_zero() {
    let mut rig = Rig::new();
    let old = primary(&mut rig, false);
    set_rtaddr_register(&mut rig, 0);
    assert_eq!(fell_back(&mut rig, false), Refusal::RootTableZero);
    // The fallback is a full reset: old DMA faults rather than going anywhere.
    assert!(rig.dma(old.dma[0].0, old.dma[0].1, Access::Write).is_err());
}

#[test]
fn refuses_a_root_table_format_mismatch() {
    let mut rig = Rig::new();
    primary(&mut rig, false);
    assert_eq!(fell_back(&mut rig, true), Refusal::FormatMismatch { old_smt: false, new_smt: true });
}

#[test]
fn refuses_a_root_table_outside_ram_or_in_the_crash_region() {
    let mut rig = Rig::new();
    primary(&mut rig, false);
    set_rtaddr_register(&mut rig, 0x1_2000_0000);
    assert_eq!(fell_back(&mut rig, false), Refusal::RootTableNotRam { addr: 0x1_2000_0000 });

    let mut rig = Rig::new();
    primary(&mut rig, false);
    set_rtaddr_register(&mut rig, CRASH.start + 0x1000);
    assert_eq!(fell_back(&mut rig, false), Refusal::RootTableInCrashRegion { addr: CRASH.start + 0x1000 });
}

/// Adopt with one broken piece: the broken bus/device is refused with `want`, everything else adopted.
fn adopt_with(break_it: impl Fn(&mut Rig), want: impl Fn(&mut Rig) -> EntryProblem, refused: &[u16]) {
    let mut rig = Rig::new();
    let old = primary(&mut rig, false);
    break_it(&mut rig);
    let want = want(&mut rig);
    let (_, report) = crash(&mut rig, false, Policy::Adopt);
    assert_eq!(report.outcome, HandoverOutcome::Adopted);
    assert_eq!(report.problems, vec![want.clone()], "{want}");
    for &(sid, iova, pa) in &old.dma {
        let got = rig.dma(sid, iova, Access::Write);
        if refused.contains(&sid) {
            assert!(got.is_err(), "{sid:#x} refused → its DMA faults");
        } else {
            assert_eq!(got, Ok(pa), "{sid:#x} still adopted");
        }
    }
    assert!(!want.to_string().is_empty());
}

#[test]
fn rejects_a_bus_whose_context_table_is_outside_ram() {
    adopt_with(
        |rig| set_root_entry(rig, 1, |e| e.with_context_table(0x1_4000_0000)),
        |_| EntryProblem::ContextTableNotRam { bus: 1, addr: 0x1_4000_0000 },
        &[BUS1],
    );
}

#[test]
fn rejects_a_bus_whose_context_table_is_in_the_crash_region() {
    adopt_with(
        |rig| set_root_entry(rig, 1, |e| e.with_context_table(CRASH.start)),
        |_| EntryProblem::ContextTableInCrashRegion { bus: 1, addr: CRASH.start },
        &[BUS1],
    );
}

#[test]
fn rejects_a_root_entry_with_reserved_bits() {
    adopt_with(
        |rig| set_root_entry(rig, 1, |e| e.with_reserved_hi(1)),
        |rig| {
            let rt = rtaddr(rig);
            let raw = rig.mem.read_u128(rt + 16).unwrap();
            EntryProblem::RootReserved { bus: 1, raw }
        },
        &[BUS1],
    )
}

#[test]
fn rejects_malformed_context_entries_one_device_at_a_time() {
    type Case = (fn(ContextEntry) -> ContextEntry, fn(u128) -> EntryProblem);
    let cases: [Case; 7] = [
        (|e| e.with_reserved_hi(1), |raw| EntryProblem::ContextReserved { sid: DISK, raw }),
        (|e| e.with_tt(TranslationType::Reserved), |_| EntryProblem::BadTranslationType { sid: DISK, tt: 3 }),
        (|e| e.with_aw(3), |_| EntryProblem::BadAddressWidth { sid: DISK, aw: 3 }),
        (|e| e.with_aw(0), |_| EntryProblem::BadAddressWidth { sid: DISK, aw: 0 }),
        (|e| e.with_did(0), |_| EntryProblem::BadDomainId { sid: DISK, did: 0 }),
        (
            |e| e.with_page_table(0x1_8000_0000),
            |_| EntryProblem::TableNotRam { sid: DISK, what: "page table", addr: 0x1_8000_0000 },
        ),
        (
            |e| e.with_page_table(CRASH.start + 0x5000),
            |_| EntryProblem::TableInCrashRegion { sid: DISK, what: "page table", addr: CRASH.start + 0x5000 },
        ),
    ];
    for (f, want) in cases {
        let mut rig = Rig::new();
        let old = primary(&mut rig, false);
        set_context(&mut rig, DISK, f);
        let (_, report) = crash(&mut rig, false, Policy::Adopt);
        assert_eq!(report.problems.len(), 1);
        let raw = match &report.problems[0] {
            EntryProblem::ContextReserved { raw, .. } => *raw,
            _ => 0,
        };
        assert_eq!(report.problems[0], want(raw));
        assert_eq!(report.problems[0].sid(), Some(DISK));
        assert!(!report.adopted.contains(&DISK));
        for &(sid, iova, pa) in &old.dma {
            let got = rig.dma(sid, iova, Access::Write);
            if sid == DISK {
                assert!(got.is_err());
            } else {
                assert_eq!(got, Ok(pa));
            }
        }
    }
}

#[test]
fn live_context_updates_show_the_walker_only_the_old_entry_the_new_one_or_not_present() {
    for scalable in [false, true] {
        let mut rig = Rig::new();
        let old = primary(&mut rig, scalable);
        let (mut v, _) = crash(&mut rig, scalable, Policy::AdoptScratch);
        let d = v.create_domain(&mut rig.crash()).unwrap();
        let disk = old.dma.iter().find(|o| o.0 == DISK).copied().unwrap();
        let probes = vec![Probe::write(DISK as u32, disk.1, vec![disk.2])];
        let mut p = StaleFetchPlatform::new(rig.crash(), probes);
        v.attach(&mut p, DISK, Attachment::Domain(d)).unwrap();
        assert!(p.writes > 0);
        assert_eq!(p.violations, [], "scalable={scalable}: attach");
        assert!(rig.dma(DISK, disk.1, Access::Write).is_err(), "scalable={scalable}");
        // Containment: BUS1 first (the region exists), then NIC with the unit fetching after every write.
        watched(&mut rig, &old.dma, |p| v.contain(p, BUS1)).unwrap();
        let nic = old.dma.iter().find(|o| o.0 == NIC).copied().unwrap();
        let scratch = v.scratch_region().unwrap().start + ((nic.1 >> 12) % 512) * 4096;
        let probes = vec![Probe::write(NIC as u32, nic.1, vec![nic.2, scratch])];
        let mut p = StaleFetchPlatform::new(rig.crash(), probes);
        v.contain(&mut p, NIC).unwrap();
        assert_eq!(p.violations, [], "scalable={scalable}: contain");
        assert_eq!(rig.dma(NIC, nic.1, Access::Write), Ok(scratch));
    }
}

#[test]
fn attach_before_reset_old_dma_never_lands_in_the_new_domains_buffers() {
    // A crash-kernel driver that attaches and maps before it resets its device: the device's in-flight DMA
    // to old IOVAs must fault, never reach a buffer the new driver mapped.
    for scalable in [false, true] {
        let mut rig = Rig::new();
        let old = primary(&mut rig, scalable);
        let (mut v, _) = crash(&mut rig, scalable, Policy::Adopt);
        let d = v.create_domain(&mut rig.crash()).unwrap();
        watched(&mut rig, &old.dma, |p| v.attach(p, DISK, Attachment::Domain(d))).unwrap();
        let bufs: Vec<u64> = (0..64).map(|i| CRASH.start + 0x0900_0000 + i * 0x1000).collect();
        for &b in &bufs {
            v.map(&mut rig.crash(), d, b, 0x1000, true, true).unwrap();
        }
        for &(sid, iova, _) in old.dma.iter().filter(|o| o.0 == DISK) {
            assert!(rig.dma(sid, iova, Access::Write).is_err(), "scalable={scalable}: old IOVA {iova:#x} faults");
        }
    }
}

#[test]
fn devices_sharing_a_did_on_different_tables_get_their_own_in_the_copy() {
    let mut rig = Rig::new();
    let old = primary(&mut rig, false);
    // DISK's entry names NIC's DID with its own tables.
    let nic_did = old.dids[0];
    set_context(&mut rig, DISK, |e| e.with_did(nic_did));
    let nic = old.dma.iter().find(|o| o.0 == NIC).copied().unwrap();
    let disk = old.dma.iter().find(|o| o.0 == DISK && o.1 == nic.1).copied().expect("both domains start at one IOVA");
    let (v, r) = crash(&mut rig, false, Policy::Adopt);
    assert!(matches!(r.split_dids.as_slice(), [(DISK, d, _)] if *d == nic_did), "{:?}", r.split_dids);
    assert!(v.did_used(r.split_dids[0].2));
    assert_eq!(rig.dma(NIC, nic.1, Access::Write), Ok(nic.2));
    assert_eq!(rig.dma(DISK, disk.1, Access::Write), Ok(disk.2), "DISK reads its own tables, not NIC's cached entry");
}

/// Lazy context tables: adoption points the new root table at the crashed kernel's context tables whose
/// every entry it adopts as they are, and copies one only when an entry of it must change; the old pages
/// themselves are never written (they are part of the dump).
#[test]
fn adoption_copies_a_context_table_only_when_one_of_its_entries_changes() {
    for scalable in [false, true] {
        let mut rig = Rig::new();
        let old = primary(&mut rig, scalable);
        let (mut v, report) = crash(&mut rig, scalable, Policy::Adopt);
        assert_eq!(report.outcome, HandoverOutcome::Adopted);
        let in_place: Vec<((u8, u8), u64)> = v.old_context_tables().collect();
        assert_eq!(in_place.iter().map(|t| t.0).collect::<Vec<_>>(), [(0, 0), (1, 0)], "scalable={scalable}");
        let before: Vec<Vec<u8>> = in_place
            .iter()
            .map(|&(_, t)| {
                let mut page = vec![0u8; 4096];
                rig.mem.read(t, &mut page).unwrap();
                page
            })
            .collect();
        // The disk (bus 0) is re-attached: its table is copied, bus 1's stays in place.
        let d = v.create_domain(&mut rig.crash()).unwrap();
        watched(&mut rig, &old.dma, |p| v.attach(p, DISK, Attachment::Domain(d))).unwrap();
        assert_eq!(v.old_context_tables().map(|t| t.0).collect::<Vec<_>>(), [(1, 0)]);
        for &(sid, iova, pa) in old.dma.iter().filter(|d| d.0 != DISK) {
            assert_eq!(rig.dma(sid, iova, Access::Write), Ok(pa), "{sid:#x} still translates after the copy");
        }
        for (&(_, t), was) in in_place.iter().zip(&before) {
            let mut now = vec![0u8; 4096];
            rig.mem.read(t, &mut now).unwrap();
            assert_eq!(&now, was, "old context table {t:#x} unwritten");
        }
    }
}
