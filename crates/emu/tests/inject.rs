//! The fault catalogue: each fault, applied to a machine a primary kernel (this project's driver) left running,
//! makes the structures look as its name says while the unit keeps translating with them.

use std::ops::Range;

use iommu_driver::amdvi::{AmdOptions, Amdvi, Attachment as AmdAttach};
use iommu_driver::smmuv3::{Attachment as SmmuAttach, Smmuv3};
use iommu_driver::vtd::{Attachment as VtdAttach, Vtd, VtdOptions};
use iommu_driver::{BootEnv, Mmio, PhysMem};
use iommu_emu::inject::{self, Crashed, Injected, LateDma, Unit};
use iommu_emu::{
    Access, AmdviConfig, AmdviModel, EmuPlatform, FrameRegion, Iommu, PhysMemory, Smmuv3Config, Smmuv3Model,
    Translation, VtdConfig, VtdModel,
};
use iommu_spec::amdvi::{off as aoff, DevTableBase, Dte, RingBase};
use iommu_spec::smmuv3::{off as soff, L1Desc, StrtabBase};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const CRASH: Range<u64> = (3 * GIB)..(3 * GIB + 256 * MIB);
const NIC: u16 = 0x10;
const DISK: u16 = 0x18;

fn env() -> BootEnv {
    BootEnv {
        crash_kernel: false,
        ram: std::iter::once(0..4 * GIB).collect(),
        crash_region: Some(CRASH),
        mem_encrypt: false,
        c_bit: 0,
    }
}

fn dma(unit: &mut impl Iommu, mem: &mut PhysMemory, rid: u16, iova: u64) -> Result<u64, u16> {
    match unit.translate(mem, rid as u32, iova, Access::Write) {
        Translation::Ok { phys } => Ok(phys),
        Translation::Fault(f) => Err(f.code),
    }
}

fn applied(r: Injected) -> String {
    match r {
        Injected::Applied { what } => what,
        Injected::NotApplicable { why } => panic!("not applied: {why}"),
    }
}

/// NIC and DISK in DMA domains, one page each: (mem, unit, [(devid, iova, pa)]).
fn amd(locked: bool) -> (PhysMemory, AmdviModel, Vec<(u16, u64, u64)>) {
    let mut mem = PhysMemory::contiguous(0..4 * GIB);
    let mut unit = AmdviModel::new(if locked { AmdviConfig::snp() } else { AmdviConfig::default() });
    let mut frames = FrameRegion::new(16 * MIB..256 * MIB);
    let mut out = Vec::new();
    {
        let mut hw = EmuPlatform::new(&mut unit, &mut mem, &mut frames);
        let e = BootEnv { mem_encrypt: locked, ..env() };
        let mut v = Amdvi::init(&mut hw, &e, AmdOptions::default()).unwrap();
        for (i, devid) in [NIC, DISK].into_iter().enumerate() {
            let d = v.create_domain(&mut hw).unwrap();
            v.attach(&mut hw, devid, AmdAttach::Domain(d)).unwrap();
            let pa = 0x2000_0000 + i as u64 * 0x10_0000;
            out.push((devid, v.map(&mut hw, d, pa, 0x1000, true, true).unwrap(), pa));
        }
    }
    unit.set_snp_lock(locked);
    (mem, unit, out)
}

fn smmu() -> (PhysMemory, Smmuv3Model, Vec<(u16, u64, u64)>) {
    let mut mem = PhysMemory::contiguous(0..4 * GIB);
    let mut unit = Smmuv3Model::new(Smmuv3Config::default());
    let mut frames = FrameRegion::new(16 * MIB..256 * MIB);
    let mut out = Vec::new();
    {
        let mut hw = EmuPlatform::new(&mut unit, &mut mem, &mut frames);
        let mut v = Smmuv3::init(&mut hw).unwrap();
        for (i, sid) in [NIC, DISK].into_iter().enumerate() {
            let d = v.create_domain(&mut hw).unwrap();
            v.attach(&mut hw, sid as u32, SmmuAttach::Domain(d)).unwrap();
            let pa = 0x2000_0000 + i as u64 * 0x10_0000;
            out.push((sid, v.map(&mut hw, d, pa, 0x1000, true, true).unwrap(), pa));
        }
    }
    (mem, unit, out)
}

fn vtd(scalable: bool) -> (PhysMemory, VtdModel, Vec<(u16, u64, u64)>) {
    let mut mem = PhysMemory::contiguous(0x10_0000..4 * GIB);
    let mut unit = VtdModel::new(VtdConfig::default());
    let mut frames = FrameRegion::new(16 * MIB..256 * MIB);
    let mut out = Vec::new();
    {
        let mut hw = EmuPlatform::new(&mut unit, &mut mem, &mut frames);
        let mut v = Vtd::init(&mut hw, VtdOptions { scalable, first_level: false }).unwrap();
        for (i, sid) in [NIC, DISK].into_iter().enumerate() {
            let d = v.create_domain(&mut hw).unwrap();
            v.attach(&mut hw, sid, VtdAttach::Domain(d)).unwrap();
            let pa = 0x2000_0000 + i as u64 * 0x10_0000;
            out.push((sid, v.map(&mut hw, d, pa, 0x1000, true, true).unwrap(), pa));
        }
    }
    (mem, unit, out)
}

/// Apply `name` to an AMD-Vi unit, an SMMUv3 and a VT-d unit in each mode, then run `$check` on each.
macro_rules! each_unit {
    ($name:expr, |$mem:ident, $unit:ident, $old:ident, $what:ident| $check:block) => {{
        {
            let (mut $mem, mut u, $old) = amd(false);
            let $what = applied(
                inject::apply($name, &mut Crashed { late: late(&$old), ..crashed(&mut $mem, Unit::Amdvi(&mut u)) })
                    .unwrap(),
            );
            let $unit = &mut u;
            $check
        }
        {
            let (mut $mem, mut u, $old) = smmu();
            let $what = applied(
                inject::apply($name, &mut Crashed { late: late(&$old), ..crashed(&mut $mem, Unit::Smmuv3(&mut u)) })
                    .unwrap(),
            );
            let $unit = &mut u;
            $check
        }
        for scalable in [false, true] {
            let (mut $mem, mut u, $old) = vtd(scalable);
            let $what = applied(
                inject::apply($name, &mut Crashed { late: late(&$old), ..crashed(&mut $mem, Unit::Vtd(&mut u)) })
                    .unwrap(),
            );
            let $unit = &mut u;
            $check
        }
    }};
}

/// Neither device runs DMA in these tests: both are idle; the first mapping is the late one.
fn crashed<'a>(mem: &'a mut PhysMemory, unit: Unit<'a>) -> Crashed<'a> {
    Crashed { mem, unit, crash_region: CRASH, seed: 7, idle: &[NIC as u32, DISK as u32], late: None }
}

fn late(old: &[(u16, u64, u64)]) -> Option<LateDma> {
    old.first().map(|&(dev, iova, _)| LateDma { dev: dev as u32, iova })
}

fn in_crash(what: &str) -> bool {
    what.split(|c: char| !c.is_ascii_hexdigit() && c != 'x')
        .filter_map(|w| w.strip_prefix("0x"))
        .filter_map(|h| u64::from_str_radix(h, 16).ok())
        .any(|a| CRASH.contains(&a))
}

#[test]
fn pt_in_crash_region_moves_a_lower_table_the_unit_still_walks() {
    each_unit!("pt-in-crash-region", |mem, unit, old, what| {
        assert!(in_crash(&what), "{what}");
        for &(dev, iova, pa) in &old {
            assert_eq!(dma(unit, &mut mem, dev, iova), Ok(pa), "{what}");
        }
    });
}

#[test]
fn leaf_in_crash_region_makes_an_old_mapping_reach_the_crash_region() {
    each_unit!("leaf-in-crash-region", |mem, unit, old, what| {
        let landed: Vec<_> = old.iter().map(|&(dev, iova, _)| dma(unit, &mut mem, dev, iova)).collect();
        assert!(landed.iter().any(|r| r.is_ok_and(|pa| CRASH.contains(&pa))), "{what}: {landed:x?}");
    });
}

#[test]
fn entry_rejected_live_moves_the_top_table_the_unit_still_walks() {
    each_unit!("entry-rejected-live", |mem, unit, old, what| {
        assert!(in_crash(&what), "{what}");
        for &(dev, iova, pa) in &old {
            assert_eq!(dma(unit, &mut mem, dev, iova), Ok(pa), "{what}");
        }
    });
}

#[test]
fn wide_iova_makes_iovas_above_2_to_the_39_live() {
    let (mut mem, mut u, old) = amd(false);
    applied(inject::wide_iova(&mut crashed(&mut mem, Unit::Amdvi(&mut u))));
    let (dev, iova, pa) = old[0];
    assert_eq!(dma(&mut u, &mut mem, dev, (1 << 39) + iova), Ok(pa));
    assert_eq!(dma(&mut u, &mut mem, dev, iova), Ok(pa));
    let (mut mem, mut u, old) = smmu();
    applied(inject::wide_iova(&mut crashed(&mut mem, Unit::Smmuv3(&mut u))));
    let (dev, iova, pa) = old[0];
    assert_eq!(dma(&mut u, &mut mem, dev, (1 << 39) + iova), Ok(pa));
}

#[test]
fn cmdq_error_pending_leaves_the_queue_stopped_on_an_illegal_command() {
    let (mut mem, mut u, _) = smmu();
    applied(inject::cmdq_error_pending(&mut crashed(&mut mem, Unit::Smmuv3(&mut u))));
    assert!(u.gerror_active().cmdq_err());
    let (mut mem, mut u, _) = amd(false);
    applied(inject::cmdq_error_pending(&mut crashed(&mut mem, Unit::Amdvi(&mut u))));
    assert!(!u.status().cmd_buf_run());
}

#[test]
fn torn_entry_pairs_one_devices_root_with_anothers_domain_or_breaks_the_ste() {
    let (mut mem, mut u, old) = amd(false);
    let dt = DevTableBase::from_bits(
        EmuPlatform::new(&mut u, &mut mem, &mut FrameRegion::new(0..0)).read64(aoff::DEV_TABLE_BASE),
    )
    .table();
    let read = |mem: &PhysMemory, d: u16| Dte([0, 1, 2, 3].map(|i| mem.read_u64(dt + 32 * d as u64 + 8 * i).unwrap()));
    let (nic, disk) = (read(&mem, NIC), read(&mem, DISK));
    applied(inject::torn_entry(&mut crashed(&mut mem, Unit::Amdvi(&mut u))));
    let torn = read(&mem, NIC);
    assert_eq!((torn.pt_root(), torn.domain_id()), (disk.pt_root(), nic.domain_id()));
    assert_eq!(dma(&mut u, &mut mem, NIC, old[1].1), Ok(old[1].2), "NIC now walks DISK's tables");
    let (mut mem, mut u, old) = smmu();
    applied(inject::torn_entry(&mut crashed(&mut mem, Unit::Smmuv3(&mut u))));
    assert!(dma(&mut u, &mut mem, old[0].0, old[0].1).is_err(), "an ILLEGAL STE: the unit refuses");
}

#[test]
fn insert_refused_and_l1_reserved_bits_corrupt_the_stream_table() {
    let (mut mem, mut u, old) = smmu();
    let what = applied(inject::insert_refused(&mut crashed(&mut mem, Unit::Smmuv3(&mut u))));
    assert!(in_crash(&what), "{what}");
    assert_eq!(dma(&mut u, &mut mem, old[0].0, old[0].1), Ok(old[0].2), "the unit walks the moved CD");
    let (mut mem, mut u, _) = smmu();
    applied(inject::l1_reserved_bits(&mut crashed(&mut mem, Unit::Smmuv3(&mut u))));
    let base = StrtabBase::from_bits(
        EmuPlatform::new(&mut u, &mut mem, &mut FrameRegion::new(0..0)).read64(soff::STRTAB_BASE),
    )
    .table();
    assert_eq!(L1Desc::from_bits(mem.read_u64(base).unwrap()).reserved_bits(), 1 << 5);
    let (mut mem, mut u, _) = amd(false);
    assert!(!inject::l1_reserved_bits(&mut crashed(&mut mem, Unit::Amdvi(&mut u))).is_applied());
}

#[test]
fn amd_register_faults_apply_without_snp_and_say_why_not_on_an_snp_host() {
    let (mut mem, mut u, _) = amd(false);
    applied(inject::ring_at_zero(&mut crashed(&mut mem, Unit::Amdvi(&mut u))));
    let r =
        RingBase::from_bits(EmuPlatform::new(&mut u, &mut mem, &mut FrameRegion::new(0..0)).read64(aoff::CMD_BUF_BASE));
    assert_eq!(r.ring(), 0);
    let (mut mem, mut u, _) = amd(true);
    let na = inject::ring_at_zero(&mut crashed(&mut mem, Unit::Amdvi(&mut u)));
    assert!(matches!(na, Injected::NotApplicable { why } if why.contains("SNP_INIT")), "{na:?}");
    assert!(u.snp_locked(), "the lock is as it was");
    let (mut mem, mut u, old) = amd(false);
    applied(inject::exclusion_range(&mut crashed(&mut mem, Unit::Amdvi(&mut u))));
    assert_eq!(dma(&mut u, &mut mem, old[0].0, CRASH.start + 0x1000), Ok(CRASH.start + 0x1000), "untranslated");
    let (mut mem, mut u, _) = amd(true);
    assert!(!inject::exclusion_range(&mut crashed(&mut mem, Unit::Amdvi(&mut u))).is_applied());
}

#[test]
fn domain_id_alias_makes_two_devices_on_different_tables_share_an_id() {
    // The NIC is busy, the disk idle: the disk takes the NIC's domain ID.
    let (mut mem, mut u, old) = amd(false);
    applied(inject::domain_id_alias(&mut Crashed { idle: &[DISK as u32], ..crashed(&mut mem, Unit::Amdvi(&mut u)) }));
    // Same IOVA in both domains: the IOTLB now answers DISK with NIC's page.
    assert_eq!(old[0].1, old[1].1);
    assert_eq!(dma(&mut u, &mut mem, NIC, old[0].1), Ok(old[0].2));
    assert_eq!(dma(&mut u, &mut mem, DISK, old[1].1), Ok(old[0].2), "the aliasing hazard itself");
    let (mut mem, mut u, old) = vtd(false);
    applied(inject::domain_id_alias(&mut Crashed { idle: &[DISK as u32], ..crashed(&mut mem, Unit::Vtd(&mut u)) }));
    assert_eq!(dma(&mut u, &mut mem, NIC, old[0].1), Ok(old[0].2));
    assert_eq!(dma(&mut u, &mut mem, DISK, old[1].1), Ok(old[0].2), "VT-d legacy: the same hazard");
}

#[test]
fn bitflips_are_seeded_and_counted() {
    let run = |seed: u64| {
        let (mut mem, mut u, _) = amd(false);
        let mut c = crashed(&mut mem, Unit::Amdvi(&mut u));
        c.seed = seed;
        applied(inject::apply("bitflips:5", &mut c).unwrap())
    };
    assert_eq!(run(1), run(1), "reproducible from its seed");
    assert_ne!(run(1), run(2));
    assert!(run(1).starts_with("5 flips"), "{}", run(1));
}

#[test]
fn the_catalogue_knows_its_names() {
    let (mut mem, mut u, _) = amd(false);
    let mut c = crashed(&mut mem, Unit::Amdvi(&mut u));
    assert!(inject::apply("no-such-fault", &mut c).is_err());
    assert!(inject::apply("bitflips", &mut c).is_err());
    for name in ["no-iasup", "snp-kernel-without-mem-encrypt", "attach-before-reset"] {
        assert!(!inject::apply(name, &mut c).unwrap().is_applied(), "{name} is configuration");
    }
    assert!(!inject::no_iasup(AmdviConfig::default()).efr_register().ia_sup());
    let mut e = BootEnv { mem_encrypt: true, ..env() };
    inject::snp_kernel_without_mem_encrypt(&mut e);
    assert!(!e.mem_encrypt);
    assert_eq!(inject::NAMES.len(), 15);
}

/// A fault in what a busy device walks would act before any crash-kernel code runs: `torn-entry` and
/// `bitflips` touch only idle devices' structures, `leaf-in-crash-region` only the late DMA's leaf, and each
/// says why not when the machine offers no such place.
#[test]
fn faults_leave_busy_devices_translations_alone_and_need_their_place() {
    let faults = ["bitflips:32", "torn-entry", "torn-entry,bitflips:32", "domain-id-alias,bitflips:64"];
    for (seed, fault) in (0..8).flat_map(|seed| faults.map(|f| (seed, f))) {
        for kind in 0..3 {
            let (mut mem, mut amd_u, old) = amd(false);
            let (mut smem, mut smmu_u, sold) = smmu();
            let (mut vmem, mut vtd_u, vold) = vtd(seed % 2 == 1);
            let (m, unit, old): (&mut PhysMemory, Unit, _) = match kind {
                0 => (&mut mem, Unit::Amdvi(&mut amd_u), old),
                1 => (&mut smem, Unit::Smmuv3(&mut smmu_u), sold),
                _ => (&mut vmem, Unit::Vtd(&mut vtd_u), vold),
            };
            let mut c = Crashed { idle: &[DISK as u32], seed, ..crashed(m, unit) };
            for f in fault.split(',') {
                // Combined, a later fault may find nothing left to touch on the idle device: that is fine.
                let _ = inject::apply(f, &mut c).unwrap();
            }
            let (dev, iova, pa) = old[0];
            assert_eq!(dev, NIC);
            let got = match &mut c.unit {
                Unit::Amdvi(u) => dma(*u, c.mem, dev, iova),
                Unit::Smmuv3(u) => dma(*u, c.mem, dev, iova),
                Unit::Vtd(u) => dma(*u, c.mem, dev, iova),
            };
            assert_eq!(got, Ok(pa), "{fault} on kind {kind} seed {seed}: the busy NIC still translates as before");
        }
    }
    let (mut mem, mut u, _) = amd(false);
    let mut c = Crashed { idle: &[], ..crashed(&mut mem, Unit::Amdvi(&mut u)) };
    for name in ["torn-entry", "bitflips:4", "leaf-in-crash-region"] {
        assert!(!inject::apply(name, &mut c).unwrap().is_applied(), "{name}: no place for it");
    }
}
