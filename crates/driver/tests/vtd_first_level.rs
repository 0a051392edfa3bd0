//! VT-d scalable mode with first-level tables (PASID entries with PGTT = 001), as Linux 6.x builds them on
//! units with ECAP.FLTS: normal boot, crash-kernel adoption with its DIDs reserved and its deferred attach,
//! containment, pass-through entries as Linux's identity domain, nested entries refused by name.

mod common;

use common::{Rig, CRASH};
use iommu_driver::audit::{audit, Flag, Verdict};
use iommu_driver::survey::{scan_vtd, Translation, Work};
use iommu_driver::vtd::{
    scan, walk, Attachment, DeviceKind, EntryProblem, HandoverOutcome, Vtd, VtdOptions, WalkLimits,
};
use iommu_driver::{Mmio, PhysMem, Policy};
use iommu_emu::{Access, VtdConfig};
use iommu_spec::vtd::{
    off, pasid_table_index, FaultReason, PasidDirEntry, PasidEntryQw0, Pgtt, RtAddr, ScalableContextEntry,
    ScalableRootEntry, SourceId,
};

const NIC: u16 = 0x0010;
const DISK: u16 = 0x0018;
const BULK: u16 = 0x0020;

fn opts(first_level: bool) -> VtdOptions {
    VtdOptions { scalable: true, first_level }
}

/// A unit with both second- and first-level translation (and 1 GiB first-level pages).
fn both_levels() -> VtdConfig {
    let d = VtdConfig::first_level_only();
    VtdConfig { ecap: d.ecap.with_slts(true), ..d }
}

struct Old {
    dma: Vec<(u16, u64, u64)>,
    dids: Vec<u16>,
}

/// The primary kernel on a first-level-only unit: NIC and disk in DMA domains, the copy engine in
/// pass-through.
fn primary(rig: &mut Rig) -> Old {
    let mut v = Vtd::init(&mut rig.primary(), opts(false)).unwrap();
    assert!(v.scalable() && v.first_level(), "FLTS without SLTS: first level is all there is");
    let mut old = Old { dma: Vec::new(), dids: Vec::new() };
    for (i, sid) in [NIC, DISK].into_iter().enumerate() {
        let d = v.create_domain(&mut rig.primary()).unwrap();
        old.dids.push(v.domain(d).unwrap().did);
        v.attach(&mut rig.primary(), sid, Attachment::Domain(d)).unwrap();
        for k in 0..4u64 {
            let pa = 0x2000_0000 + (i as u64 * 16 + k) * 0x1000;
            let iova = v.map(&mut rig.primary(), d, pa, 0x1000, true, k != 3).unwrap();
            old.dma.push((sid, iova, pa));
        }
    }
    v.attach(&mut rig.primary(), BULK, Attachment::Identity).unwrap();
    for &(sid, iova, pa) in &old.dma {
        assert_eq!(rig.dma(sid, iova, Access::Read), Ok(pa), "primary kernel DMA");
    }
    old
}

/// The RID_PASID PASID-table entry's address for `sid`, found from RTADDR as the unit finds it.
fn pasid_entry_addr(rig: &mut Rig, sid: u16) -> u64 {
    let root = RtAddr::from_bits(rig.crash().read64(off::RTADDR)).table();
    let s = SourceId(sid);
    let re = ScalableRootEntry::from_bits(rig.mem.read_u128(root + s.bus() as u64 * 16).unwrap());
    let ce = ScalableContextEntry::from_bits(rig.mem.read_u128(re.lower_table() + s.devfn() as u64 * 32).unwrap());
    let pde = PasidDirEntry::from_bits(rig.mem.read_u64(ce.pasid_dir()).unwrap());
    pde.table() + 64 * pasid_table_index(ce.rid_pasid()) as u64
}

#[test]
fn normal_boot_gives_dma_domains_first_level_tables_where_the_unit_has_them() {
    for (cfg, first_level, want) in [
        (VtdConfig::first_level_only(), false, true),
        (both_levels(), true, true),
        (both_levels(), false, false),
        (VtdConfig::default(), true, false), // no ECAP.FLTS: second level whatever is asked
    ] {
        let mut rig = Rig::with(cfg);
        let mut v = Vtd::init(&mut rig.primary(), opts(first_level)).unwrap();
        assert_eq!(v.first_level(), want);
        let d = v.create_domain(&mut rig.primary()).unwrap();
        v.attach(&mut rig.primary(), NIC, Attachment::Domain(d)).unwrap();
        let iova = v.map(&mut rig.primary(), d, 0x2000_0000, 0x2000, true, true).unwrap();
        assert_eq!(rig.dma(NIC, iova + 0x1008, Access::Write), Ok(0x2000_1008));
        let env = rig.crash_env();
        let s = scan(&mut rig.primary(), &env, None).unwrap();
        let kind = s.devices.iter().find(|x| x.sid == NIC).unwrap().kind;
        assert_eq!(matches!(kind, DeviceKind::FirstLevel { levels: 4, pasid: 0, .. }), want, "{kind:?}");
        // Strict unmap: the translation is gone at once, which on a first-level domain needs the
        // PASID-based IOTLB invalidation (a plain one leaves the cached first-level entry in the model).
        v.unmap(&mut rig.primary(), d, iova, 0x2000).unwrap();
        assert!(rig.dma(NIC, iova + 0x1008, Access::Write).is_err(), "first_level={want}: unmapped IOVA faults");
    }
}

#[test]
fn first_level_leaves_carry_the_mapping_permissions() {
    let mut rig = Rig::with(VtdConfig::first_level_only());
    let old = primary(&mut rig);
    // The last buffer of each device was mapped read-only: a write faults with "no write" (spec 3.6).
    for &(sid, iova, _) in old.dma.iter().skip(3).step_by(4) {
        assert_eq!(rig.dma(sid, iova, Access::Write), Err(FaultReason::SmNoWrite.0 as u16));
    }
    // The shared walker decodes the same tables: every mapping, with its permission.
    let env = rig.crash_env();
    let s = scan(&mut rig.primary(), &env, None).unwrap();
    let cap = iommu_spec::vtd::Cap::from_bits(rig.primary().read64(off::CAP));
    for d in s.devices.iter().filter(|d| d.sid != BULK) {
        let DeviceKind::FirstLevel { root, levels, .. } = d.kind else { panic!("{:?}", d.kind) };
        let w = walk::walk_first_level(&rig.primary(), cap, root, levels, WalkLimits::default());
        assert!(w.issues.is_empty(), "{:?}", w.issues);
        for &(sid, iova, pa) in old.dma.iter().filter(|x| x.0 == d.sid) {
            let run = w.runs.iter().find(|r| r.iova <= iova && iova < r.end()).expect("mapped IOVA in a run");
            assert_eq!(run.phys + (iova - run.iova), pa, "{sid:#x} {iova:#x}");
        }
    }
}

#[test]
fn crash_kernel_adopts_first_level_entries_with_their_dids_reserved_and_defers_attach() {
    for policy in [Policy::Adopt, Policy::AdoptScratch] {
        let mut rig = Rig::with(VtdConfig::first_level_only());
        let old = primary(&mut rig);
        let env = rig.crash_env();
        let (mut v, report) = Vtd::init_crash(&mut rig.crash(), &env, opts(false), policy).unwrap();
        assert_eq!(report.outcome, HandoverOutcome::Adopted);
        assert_eq!(report.adopted, vec![NIC, DISK, BULK]);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        for did in &old.dids {
            assert!(report.reserved_dids.contains(did) && v.did_used(*did), "old DID {did} reserved");
        }
        for &(sid, iova, pa) in &old.dma {
            assert_eq!(rig.dma(sid, iova, Access::Read), Ok(pa), "old first-level DMA of {sid:#x} still lands");
        }
        // The disk's new driver attaches: its old first-level translations go (PASID-based flush), its new
        // domain is first level too, with a fresh DID and IOVAs that avoid the old ones.
        let d = v.create_domain(&mut rig.crash()).unwrap();
        let did = v.domain(d).unwrap().did;
        assert!(!old.dids.contains(&did));
        let (disk_did, (_, disk_iova, _)) = (old.dids[1], old.dma[4]);
        assert!(rig.unit.iotlb_lookup(disk_did, disk_iova).is_some(), "the old translation is cached");
        v.attach(&mut rig.crash(), DISK, Attachment::Domain(d)).unwrap();
        // Teardown flushed the old DID's first-level translations (PASID-based: a plain IOTLB flush
        // leaves them, spec 6.5.2.3).
        assert_eq!(rig.unit.iotlb_lookup(disk_did, disk_iova), None, "old first-level IOTLB entry flushed");
        let buf = CRASH.start + 0x0900_0000;
        let iova = v.map(&mut rig.crash(), d, buf, 0x1000, true, true).unwrap();
        assert_eq!(rig.dma(DISK, iova, Access::Write), Ok(buf));
        for &(sid, oiova, pa) in &old.dma {
            let now = rig.dma(sid, oiova, Access::Read);
            if sid == DISK {
                assert!(now.is_err(), "old IOVA {oiova:#x} of the re-attached disk faults");
                assert_ne!(oiova, iova);
            } else {
                assert_eq!(now, Ok(pa), "{sid:#x} untouched by the disk's attach");
            }
        }
        if policy == Policy::AdoptScratch {
            // The NIC is not needed: contained, its old IOVAs land in the scratch region (first-level chain).
            v.contain(&mut rig.crash(), NIC).unwrap();
            let scratch = v.scratch_region().unwrap();
            for &(_, oiova, _) in old.dma.iter().filter(|x| x.0 == NIC) {
                let pa = rig.dma(NIC, oiova, Access::Write).expect("contained DMA translates");
                assert!(scratch.contains(&pa), "{oiova:#x} -> {pa:#x}");
            }
        }
    }
}

#[test]
fn pass_through_entries_are_linux_identity_domain() {
    let mut rig = Rig::with(VtdConfig::first_level_only());
    primary(&mut rig);
    let env = rig.crash_env();
    let s = scan(&mut rig.crash(), &env, Some(true)).unwrap();
    let bulk = s.devices.iter().find(|d| d.sid == BULK).unwrap();
    assert_eq!((bulk.kind, bulk.did), (DeviceKind::PassThrough, iommu_driver::vtd::FLPT_DEFAULT_DID));
    let a = audit(&scan_vtd(&mut rig.crash(), &env, &mut Work::default()), &env.ram, &[CRASH], &[]);
    let d = a.devices.iter().find(|d| d.id == BULK as u32).unwrap();
    assert!(d.flags.contains(&Flag::PassThrough));
}

#[test]
fn nested_entries_are_refused_by_name_and_never_counted_safe() {
    let mut rig = Rig::with(VtdConfig::first_level_only());
    let old = primary(&mut rig);
    let at = pasid_entry_addr(&mut rig, NIC);
    let q0 = PasidEntryQw0::from_bits(rig.mem.read_u64(at).unwrap()).with_pgtt(Pgtt::Nested);
    rig.mem.write_u64(at, q0.into_bits()).unwrap();
    let env = rig.crash_env();
    let a = audit(&scan_vtd(&mut rig.crash(), &env, &mut Work::default()), &env.ram, &[CRASH], &[]);
    let nic = a.devices.iter().find(|d| d.id == NIC as u32).unwrap();
    assert_eq!(nic.translation, Translation::Nested, "{nic:?}");
    assert!(nic.flags.contains(&Flag::Nested), "{:?}", nic.flags);
    assert!(nic.reach.is_empty(), "{nic:?}");
    assert_eq!(nic.verdict, Verdict::Incomplete, "an undecoded device is no proof of safety");
    assert_ne!(a.verdict(), Verdict::Safe);
    let (_, report) = Vtd::init_crash(&mut rig.crash(), &env, opts(false), Policy::Adopt).unwrap();
    assert!(report.problems.iter().any(|p| matches!(p, EntryProblem::NestedTranslation { sid: NIC, pasid: 0, .. })));
    assert!(!report.adopted.contains(&NIC));
    let (_, nic_iova, _) = old.dma[0];
    assert!(rig.dma(NIC, nic_iova, Access::Read).is_err(), "a refused entry's DMA faults");
}

#[test]
fn first_level_entries_are_checked_like_second_level_ones() {
    // A first-level table inside the crash kernel's region: refused, as a second-level one would be.
    let mut rig = Rig::with(VtdConfig::first_level_only());
    primary(&mut rig);
    let at = pasid_entry_addr(&mut rig, NIC);
    rig.mem.write_u64(at + 16, CRASH.start + 0x1000).unwrap();
    // A first-level entry on a unit whose ECAP lacks FLTS would be malformed: model it with a reserved
    // FLPM encoding for the disk.
    let at = pasid_entry_addr(&mut rig, DISK);
    let q2 = rig.mem.read_u64(at + 16).unwrap();
    rig.mem.write_u64(at + 16, q2 | 3 << 2).unwrap();
    let env = rig.crash_env();
    let (_, report) = Vtd::init_crash(&mut rig.crash(), &env, opts(false), Policy::Adopt).unwrap();
    assert!(report.problems.iter().any(|p| matches!(p, EntryProblem::TableInCrashRegion { sid: NIC, .. })));
    assert!(report.problems.iter().any(|p| matches!(p, EntryProblem::BadPasidEntry { sid: DISK, .. })));
    assert_eq!(report.adopted, vec![BULK]);
}
