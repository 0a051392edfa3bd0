//! Our crash kernel adopting tables real Linux built: the captured memory is loaded into the model, the
//! unit is programmed as Linux left it (RTADDR latched, translation on), and after `adopt` every translation
//! QEMU made for Linux's devices still lands on the same page, now through the crash kernel's copies.

use std::path::PathBuf;

use iommu_driver::vtd::{HandoverOutcome, Vtd, VtdOptions};
use iommu_driver::{BootEnv, Mmio, PhysMem, Policy};
use iommu_dump::{ElfCore, RegSnapshot};
use iommu_emu::{Access, EmuPlatform, FrameRegion, Iommu, PhysMemory, Translation, VtdConfig, VtdModel};
use iommu_spec::vtd::{off, Cap, Ecap, Gcmd, RtAddr};

const BASE: u64 = 0xfed9_0000;
const RAM: std::ops::Range<u64> = 0..0x8000_0000;
/// The crash kernel's region. The captured guests booted without `crashkernel=`, and Linux put page tables
/// and DMA buffers in their top 256 MiB (0x7fe3_a000, 0x7fee_8000, ...): a real reservation is memory that
/// kernel never used, and since adoption walks every table and page, the region is one the captures show
/// unused.
const CRASH: std::ops::Range<u64> = 0x5000_0000..0x6000_0000;

fn dir(mode: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(format!("vtd-{mode}"))
}

fn adopt_linux(mode: &str) {
    let d = dir(mode);
    let snap = RegSnapshot::parse(&std::fs::read_to_string(d.join("regs.txt")).unwrap()).unwrap();
    let cap = Cap::from_bits(snap.read64(BASE + off::CAP as u64).unwrap());
    let ecap = Ecap::from_bits(snap.read64(BASE + off::ECAP as u64).unwrap());
    let rtaddr = RtAddr::from_bits(snap.read64(BASE + off::RTADDR as u64).unwrap());
    assert_eq!(rtaddr.smt(), mode != "legacy");

    // Memory: what the fixture holds of the guest's RAM.
    let mut mem = fixture_memory(&d, RAM);
    let mut unit = VtdModel::new(VtdConfig { cap, ecap, ..VtdConfig::default() });
    let mut no_frames = FrameRegion::new(0..0);
    {
        // Linux's state at the crash: root latched, translation on.
        let mut hw = EmuPlatform::new(&mut unit, &mut mem, &mut no_frames);
        hw.write64(off::RTADDR, rtaddr.into_bits());
        hw.write32(off::GCMD, Gcmd::new().with_srtp(true).into_bits());
        hw.write32(off::GCMD, Gcmd::new().with_te(true).into_bits());
    }

    let oracle = oracle_of(&d);
    for &(sid, iova, phys, w) in &oracle {
        assert_eq!(
            dma_through(&mut unit, &mut mem, sid, iova, w),
            Ok(phys),
            "the model agrees with QEMU before the crash"
        );
    }

    let crash = CRASH;
    let env =
        BootEnv { crash_kernel: true, ram: vec![RAM], crash_region: Some(crash.clone()), mem_encrypt: false, c_bit: 0 };
    let mut frames = FrameRegion::new(crash.start + 0x100_0000..crash.end);
    let opts = VtdOptions { scalable: mode != "legacy", first_level: false };
    let (v, report) =
        Vtd::init_crash(&mut EmuPlatform::new(&mut unit, &mut mem, &mut frames), &env, opts, Policy::Adopt).unwrap();
    assert_eq!(report.outcome, HandoverOutcome::Adopted, "{mode}");
    assert!(report.problems.is_empty(), "Linux's tables pass every check: {:?}", report.problems);
    assert_eq!(report.adopted, vec![0x0000, 0x0010, 0x0018, 0x00f8, 0x00fa, 0x00fb]);
    assert_eq!(report.reserved_dids, vec![2, 3, 4, 5]);
    assert!(v.did_used(5));
    assert!(crash.contains(&unit.active_root().table()), "the unit now reads the crash kernel's copies");
    for &(sid, iova, phys, w) in &oracle {
        assert_eq!(
            dma_through(&mut unit, &mut mem, sid, iova, w),
            Ok(phys),
            "{mode}: {sid:#x} {iova:#x} after adoption"
        );
    }
    // On the first-level unit every translating device was adopted as first level, and what the crash
    // kernel builds itself is first level too (QEMU's x-flts unit has no second level).
    let first_level = mode == "scalable-fl";
    assert_eq!(ecap.flts() && !ecap.slts(), first_level);
    assert_eq!(v.first_level(), first_level);
    for sid in [0x0010u16, 0x0018] {
        let kind = match v.device(sid) {
            Some(iommu_driver::vtd::DeviceState::Adopted { kind, .. }) => kind,
            other => panic!("{sid:#x}: {other:?}"),
        };
        assert_eq!(
            matches!(kind, iommu_driver::vtd::DeviceKind::FirstLevel { levels: 4, pasid: 0, .. }),
            first_level,
            "{kind:?}"
        );
    }
}

#[test]
fn adopts_linux_first_level_tables() {
    adopt_linux("scalable-fl");
}

#[test]
fn adopts_linux_legacy_mode_tables() {
    adopt_linux("legacy");
}

#[test]
fn adopts_linux_scalable_mode_tables() {
    adopt_linux("scalable");
}

#[test]
fn adopts_linux_amdvi_tables() {
    use iommu_driver::amdvi::{AmdOptions, AmdOutcome, Amdvi};
    use iommu_emu::{AmdviConfig, AmdviModel};
    use iommu_spec::amdvi::off as a;
    const BASE: u64 = 0xfed8_0000;
    let d = dir_named("amdvi");
    let snap = RegSnapshot::parse(&std::fs::read_to_string(d.join("regs.txt")).unwrap()).unwrap();
    let reg = |o: usize| snap.read64(BASE + o as u64).unwrap();
    let mut mem = fixture_memory(&d, RAM);
    let mut unit = AmdviModel::new(AmdviConfig::default());
    let mut none = FrameRegion::new(0..0);
    {
        // Linux's state at the crash: bases, then CONTROL with the unit enabled.
        let mut hw = EmuPlatform::new(&mut unit, &mut mem, &mut none);
        for o in [a::DEV_TABLE_BASE, a::CMD_BUF_BASE, a::EVENT_LOG_BASE, a::EXCL_BASE, a::EXCL_LIMIT, a::CONTROL] {
            hw.write64(o, reg(o));
        }
    }
    let oracle = oracle_of(&d);
    for &(sid, iova, phys, w) in &oracle {
        assert_eq!(
            dma_through(&mut unit, &mut mem, sid, iova, w),
            Ok(phys),
            "the model agrees with QEMU before the crash"
        );
    }
    let env = BootEnv { crash_kernel: true, ram: vec![RAM], crash_region: Some(CRASH), mem_encrypt: false, c_bit: 0 };
    let mut frames = FrameRegion::new(CRASH.start + 0x100_0000..CRASH.end);
    // Linux sized this table for 256 devices (IVRS's last device ID): so does this crash kernel.
    let opts = AmdOptions { dev_table_entries: 256 };
    let (v, report) =
        Amdvi::init_crash(&mut EmuPlatform::new(&mut unit, &mut mem, &mut frames), &env, opts, Policy::Adopt).unwrap();
    assert_eq!(report.outcome, AmdOutcome::Adopted);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.adopted.contains(&0x10) && report.adopted.contains(&0x18));
    assert_eq!(report.reserved_domain_ids, vec![1, 2, 3, 4]);
    assert!(v.domain_id_used(2));
    for &(sid, iova, phys, w) in &oracle {
        assert_eq!(dma_through(&mut unit, &mut mem, sid, iova, w), Ok(phys), "{sid:#x} {iova:#x} after adoption");
    }
}

fn dir_named(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(name)
}

fn oracle_of(d: &std::path::Path) -> Vec<(u16, u64, u64, bool)> {
    std::fs::read_to_string(d.join("oracle.tsv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let h = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
            (h(f[0]) as u16, h(f[1]), h(f[2]), f[4].contains('w'))
        })
        .collect()
}

#[test]
fn adopts_linux_smmuv3_stream_table() {
    use iommu_driver::smmuv3::{SmmuOutcome, Smmuv3};
    use iommu_emu::{Smmuv3Config, Smmuv3Model};
    use iommu_spec::smmuv3::off as s;
    const BASE: u64 = 0x0905_0000;
    const RAM: std::ops::Range<u64> = 0x4000_0000..0xc000_0000;
    const CRASH: std::ops::Range<u64> = 0x6000_0000..0x7000_0000;
    let d = dir_named("smmuv3");
    let snap = RegSnapshot::parse(&std::fs::read_to_string(d.join("regs.txt")).unwrap()).unwrap();
    let mut mem = fixture_memory(&d, RAM);
    let mut unit = Smmuv3Model::new(Smmuv3Config::default());
    let mut none = FrameRegion::new(0..0);
    {
        // Linux's state at the crash: stream table, queues, then CR0 with SMMUEN.
        let mut hw = EmuPlatform::new(&mut unit, &mut mem, &mut none);
        hw.write64(s::STRTAB_BASE, snap.read64(BASE + s::STRTAB_BASE as u64).unwrap());
        hw.write32(s::STRTAB_BASE_CFG, snap.read32(BASE + s::STRTAB_BASE_CFG as u64).unwrap());
        hw.write32(s::CR2, snap.read32(BASE + s::CR2 as u64).unwrap());
        hw.write32(s::CR0, snap.read32(BASE + s::CR0 as u64).unwrap() & 1);
    }
    let oracle = oracle_of(&d);
    for &(sid, iova, phys, w) in &oracle {
        assert_eq!(
            dma_through(&mut unit, &mut mem, sid, iova, w),
            Ok(phys),
            "the model agrees with QEMU before the crash"
        );
    }
    let env = BootEnv { crash_kernel: true, ram: vec![RAM], crash_region: Some(CRASH), mem_encrypt: false, c_bit: 0 };
    let mut frames = FrameRegion::new(CRASH.start + 0x100_0000..CRASH.end);
    let mut hw = EmuPlatform::new(&mut unit, &mut mem, &mut frames);
    let (mut v, report) = Smmuv3::init_crash(&mut hw, &env, Policy::Adopt).unwrap();
    assert_eq!(report.outcome, SmmuOutcome::Adopted, "Linux's 2-level table with SPLIT 8 passes every check");
    for sid in [0x10u32, 0x18] {
        assert!(v.insert_master(&mut hw, &env, sid).unwrap().is_some(), "{sid:#x} adopted");
    }
    assert!(v.asid_used(1) && v.asid_used(2), "Linux's ASIDs reserved");
    let _ = hw;
    for &(sid, iova, phys, w) in &oracle {
        assert_eq!(dma_through(&mut unit, &mut mem, sid, iova, w), Ok(phys), "{sid:#x} {iova:#x} after adoption");
    }
}

/// The fixture's captured pages in a memory of `ram`.
fn fixture_memory(d: &std::path::Path, ram: std::ops::Range<u64>) -> PhysMemory {
    let core = ElfCore::open(d.join("memory.elf")).unwrap();
    let mut mem = PhysMemory::contiguous(ram);
    for seg in core.segments() {
        let mut buf = vec![0u8; seg.size as usize];
        core.read(seg.paddr, &mut buf).unwrap();
        mem.write(seg.paddr, &buf).unwrap();
    }
    mem
}

/// Where a device's DMA to `iova` lands through `unit`, or the fault code.
fn dma_through(unit: &mut impl Iommu, mem: &mut PhysMemory, sid: u16, iova: u64, w: bool) -> Result<u64, u16> {
    match unit.translate(mem, sid as u32, iova, if w { Access::Write } else { Access::Read }) {
        Translation::Ok { phys } => Ok(phys),
        Translation::Fault(f) => Err(f.code),
    }
}
