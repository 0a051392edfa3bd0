//! Every fault of the catalogue, on every IOMMU it applies to: after `adopt` no old IOVA reaches the crash
//! kernel's region, and after `adopt-scratch` (every adopted device contained) each one faults or lands in the
//! scratch region. A unit that cannot be adopted falls back with its reason.

use std::ops::Range;

use iommu_driver::amdvi::{AmdError, AmdOptions, Amdvi, Attachment as AmdAttach};
use iommu_driver::smmuv3::{Attachment as SmmuAttach, Smmuv3};
use iommu_driver::vtd::{Attachment as VtdAttach, Vtd, VtdOptions};
use iommu_driver::{BootEnv, Policy};
use iommu_emu::inject::{self, Crashed, LateDma, Unit};
use iommu_emu::snp::{SnpCommand, SnpFirmware};
use iommu_emu::{
    Access, AmdviConfig, AmdviModel, EmuPlatform, FrameRegion, Iommu, PhysMemory, Smmuv3Config, Smmuv3Model,
    Translation, VtdConfig, VtdModel,
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const CRASH: Range<u64> = (3 * GIB)..(3 * GIB + 256 * MIB);
const DEVS: [u16; 3] = [0x10, 0x18, 0x20];
/// No device runs DMA in these tests: every one is idle, and the first mapping is the late one.
const IDLE: [u32; 3] = [0x10, 0x18, 0x20];

/// Apply `fault` to the crashed machine: every device idle, the first mapping the late one.
fn inject(fault: &str, mem: &mut PhysMemory, unit: Unit, old: &[(u16, u64, u64)]) -> inject::Injected {
    let late = old.first().map(|&(dev, iova, _)| LateDma { dev: dev as u32, iova });
    inject::apply(fault, &mut Crashed { mem, unit, crash_region: CRASH, seed: 3, idle: &IDLE, late }).unwrap()
}

const FAULTS: &[&str] = &[
    "pt-in-crash-region",
    "leaf-in-crash-region",
    "entry-rejected-live",
    "cmdq-error-pending",
    "torn-entry",
    "insert-refused",
    "l1-reserved-bits",
    "ring-at-zero",
    "exclusion-range",
    "domain-id-alias",
    "wide-iova",
    "bitflips:4",
    "bitflips:16",
];

fn env(crash: bool, snp: bool) -> BootEnv {
    BootEnv {
        crash_kernel: crash,
        ram: std::iter::once(0..4 * GIB).collect(),
        crash_region: Some(CRASH),
        mem_encrypt: snp,
        c_bit: 0,
    }
}

/// The IOVAs a device may still send, with the page its old mapping named: its old ones, the same 2^39
/// higher (`wide-iova` aliases them), and the crash region's own addresses (an exclusion range passes those).
fn probes(old: &[(u16, u64, u64)]) -> Vec<(u16, u64, Option<u64>)> {
    let mut p: Vec<_> = old.iter().map(|&(d, i, pa)| (d, i, Some(pa))).collect();
    p.extend(old.iter().map(|&(d, i, pa)| (d, i + (1 << 39), Some(pa))));
    p.extend(DEVS.iter().map(|&d| (d, CRASH.start + 0x40_1000, None)));
    p
}

/// Check the machine after the crash kernel's boot: where may each probe land? A contained device only in the
/// scratch region; any other device nowhere in the crash region and, unless the fault rewrote its tables,
/// only on its own old page (never another device's: aliased domain IDs).
fn check(
    unit: &mut impl Iommu,
    mem: &mut PhysMemory,
    old: &[(u16, u64, u64)],
    scratch: Option<Range<u64>>,
    contained: &[u16],
    what: &str,
) {
    // Bit flips and a torn entry rewrite what a device's tables say; every other fault leaves each device
    // its own pages.
    let exact = !what.contains("bitflips") && !what.contains("torn-entry");
    for (dev, iova, own) in probes(old) {
        let got = unit.translate(mem, dev as u32, iova, Access::Write);
        let in_scratch = |phys: u64| scratch.as_ref().is_some_and(|s| s.contains(&phys));
        // A device on 39-bit tables never got an IOVA above them; after `wide-iova` it did.
        let reachable = iova < 1 << 39 || what.contains("wide-iova");
        if contained.contains(&dev) && reachable {
            // Contained: every IOVA it can send lands in the scratch region, none faults.
            assert!(
                matches!(got, Translation::Ok { phys } if in_scratch(phys)),
                "{what}: contained {dev:#x} {iova:#x}: {got:?}, not the scratch region"
            );
        } else if let Translation::Ok { phys } = got {
            assert!(!CRASH.contains(&phys) || in_scratch(phys), "{what}: {dev:#x} {iova:#x} reaches {phys:#x}");
            if exact && !in_scratch(phys) {
                assert_eq!(Some(phys & !0xfff), own, "{what}: {dev:#x} {iova:#x} lands on another page");
            }
        }
    }
}

fn amd_run(fault: &str, policy: Policy, locked: bool) {
    let what = format!("amd-vi {fault} {policy} locked={locked}");
    let mut mem = PhysMemory::contiguous(0..4 * GIB);
    let mut unit = AmdviModel::new(if locked { AmdviConfig::snp() } else { AmdviConfig::default() });
    let mut fw = SnpFirmware::new(4, 4);
    let mut primary = FrameRegion::new(16 * MIB..256 * MIB);
    let mut old = Vec::new();
    {
        let mut hw = EmuPlatform::new(&mut unit, &mut mem, &mut primary);
        let mut v = Amdvi::init(&mut hw, &env(false, locked), AmdOptions::default()).unwrap();
        for (i, &dev) in DEVS.iter().enumerate() {
            let d = v.create_domain(&mut hw).unwrap();
            v.attach(&mut hw, dev, AmdAttach::Domain(d)).unwrap();
            for k in 0..2 {
                let pa = 0x2000_0000 + (i as u64 * 8 + k) * 0x1000;
                old.push((dev, v.map(&mut hw, d, pa, 0x1000, true, true).unwrap(), pa));
            }
        }
    }
    if locked {
        assert!(fw.command(SnpCommand::InitEx).ok());
        unit.set_snp_lock(fw.iommu_locked());
    }
    let applied = inject(fault, &mut mem, Unit::Amdvi(&mut unit), &old);
    let before = unit.counters().locked_writes_ignored;
    let mut frames = FrameRegion::new(CRASH.start + 64 * MIB..CRASH.end);
    let mut hw = EmuPlatform::new(&mut unit, &mut mem, &mut frames);
    let booted = Amdvi::init_crash(&mut hw, &env(true, locked), AmdOptions::default(), policy);
    let (mut v, _) = match booted {
        Ok(b) => b,
        // Nothing else can work with the registers locked: the crash kernel stops and says why.
        Err(AmdError::ReuseFailedWithSnp(why)) if locked => {
            assert!(!why.to_string().is_empty(), "{what}");
            return;
        }
        Err(e) => panic!("{what} ({applied:?}): {e}"),
    };
    let mut contained = Vec::new();
    if policy == Policy::AdoptScratch {
        // Every device still on an adopted entry, a bit flip's new ones included.
        contained = v.adopted().map(|(d, _)| d).collect();
        for &dev in &contained {
            v.contain(&mut hw, dev).unwrap();
        }
        assert_eq!(v.adopted().count(), 0, "{what}");
    }
    let scratch = v.scratch_region();
    assert_eq!(unit.counters().locked_writes_ignored, before, "{what}: no write reached a locked register");
    check(&mut unit, &mut mem, &old, scratch, &contained, &what);
}

fn smmu_run(fault: &str, policy: Policy) {
    let what = format!("smmuv3 {fault} {policy}");
    let mut mem = PhysMemory::contiguous(0..4 * GIB);
    let mut unit = Smmuv3Model::new(Smmuv3Config::default());
    let mut primary = FrameRegion::new(16 * MIB..256 * MIB);
    let mut old = Vec::new();
    {
        let mut hw = EmuPlatform::new(&mut unit, &mut mem, &mut primary);
        let mut v = Smmuv3::init(&mut hw).unwrap();
        for (i, &dev) in DEVS.iter().enumerate() {
            let d = v.create_domain(&mut hw).unwrap();
            v.attach(&mut hw, dev as u32, SmmuAttach::Domain(d)).unwrap();
            for k in 0..2 {
                let pa = 0x2000_0000 + (i as u64 * 8 + k) * 0x1000;
                old.push((dev, v.map(&mut hw, d, pa, 0x1000, true, true).unwrap(), pa));
            }
        }
    }
    let _ = inject(fault, &mut mem, Unit::Smmuv3(&mut unit), &old);
    let mut frames = FrameRegion::new(CRASH.start + 64 * MIB..CRASH.end);
    let mut hw = EmuPlatform::new(&mut unit, &mut mem, &mut frames);
    let e = env(true, false);
    let (mut v, _) = Smmuv3::init_crash(&mut hw, &e, policy).unwrap();
    for dev in DEVS {
        let _ = v.insert_master(&mut hw, &e, dev as u32);
    }
    let mut contained = Vec::new();
    if policy == Policy::AdoptScratch {
        for dev in DEVS {
            if matches!(v.master(dev as u32), Some(iommu_driver::smmuv3::MasterState::Adopted { .. })) {
                v.contain(&mut hw, dev as u32).unwrap();
                contained.push(dev);
            }
        }
    }
    let scratch = v.scratch_region();
    check(&mut unit, &mut mem, &old, scratch, &contained, &what);
}

fn vtd_run(fault: &str, policy: Policy, scalable: bool) {
    let what = format!("vt-d {fault} {policy} scalable={scalable}");
    let mut mem = PhysMemory::contiguous(0x10_0000..4 * GIB);
    let mut unit = VtdModel::new(VtdConfig::default());
    let mut primary = FrameRegion::new(16 * MIB..256 * MIB);
    let mut old = Vec::new();
    {
        let mut hw = EmuPlatform::new(&mut unit, &mut mem, &mut primary);
        let mut v = Vtd::init(&mut hw, VtdOptions { scalable, first_level: false }).unwrap();
        for (i, &dev) in DEVS.iter().enumerate() {
            let d = v.create_domain(&mut hw).unwrap();
            v.attach(&mut hw, dev, VtdAttach::Domain(d)).unwrap();
            for k in 0..2 {
                let pa = 0x2000_0000 + (i as u64 * 8 + k) * 0x1000;
                old.push((dev, v.map(&mut hw, d, pa, 0x1000, true, true).unwrap(), pa));
            }
        }
    }
    let _ = inject(fault, &mut mem, Unit::Vtd(&mut unit), &old);
    let mut frames = FrameRegion::new(CRASH.start + 64 * MIB..CRASH.end);
    let mut hw = EmuPlatform::new(&mut unit, &mut mem, &mut frames);
    let e = BootEnv { ram: std::iter::once(0x10_0000..4 * GIB).collect(), ..env(true, false) };
    let (mut v, _) = Vtd::init_crash(&mut hw, &e, VtdOptions { scalable, first_level: false }, policy).unwrap();
    let mut contained = Vec::new();
    if policy == Policy::AdoptScratch {
        let adopted: Vec<u16> = v
            .devices()
            .filter(|(_, s)| matches!(s, iommu_driver::vtd::DeviceState::Adopted { .. }))
            .map(|(d, _)| d)
            .collect();
        for dev in adopted {
            v.contain(&mut hw, dev).unwrap();
            contained.push(dev);
        }
    }
    let scratch = v.scratch_region();
    check(&mut unit, &mut mem, &old, scratch, &contained, &what);
}

#[test]
fn amdvi_survives_every_fault() {
    for fault in FAULTS {
        for policy in [Policy::Adopt, Policy::AdoptScratch] {
            for locked in [false, true] {
                amd_run(fault, policy, locked);
            }
        }
    }
}

#[test]
fn smmuv3_survives_every_fault() {
    for fault in FAULTS {
        for policy in [Policy::Adopt, Policy::AdoptScratch] {
            smmu_run(fault, policy);
        }
    }
}

#[test]
fn vtd_survives_every_fault() {
    for fault in FAULTS {
        for policy in [Policy::Adopt, Policy::AdoptScratch] {
            for scalable in [false, true] {
                vtd_run(fault, policy, scalable);
            }
        }
    }
}
