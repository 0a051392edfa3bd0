//! The stale-fetch walker itself: a live STE rewritten word by word in an order that passes through an
//! ILLEGAL entry is caught; the same change made break-before-make (V cleared first) is not.

#[path = "smmuv3_rig.rs"]
mod rig;

use iommu_driver::PhysMem;
use iommu_emu::stale::{Probe, StaleFetchPlatform};
use iommu_emu::{Access, EmuPlatform, Translation};
use iommu_spec::smmuv3::{s2_memattr, S2Pte, Ste};
use rig::{Rig, STRTAB};

const SID: u32 = 3;

/// A stream on stage 2 (a 39-bit IPA space, IPA 0..1 GiB one block at 1 GiB), and a stage-1 STE to move it to.
fn setup() -> (Rig, Ste) {
    let mut rig = Rig::linear();
    let root = rig.page();
    rig.mem.write_u64(root, S2Pte::leaf(0x4000_0000, 1, s2_memattr::OIWB, true, true).into_bits()).unwrap();
    rig.set_ste_linear(SID, Ste::s2(9, root, 25, 1, 5));
    assert_eq!(rig.translate(SID, 0x1000, Access::Write), Translation::Ok { phys: 0x4000_1000 });
    let ttb0 = rig.page();
    let s1 = rig.s1_ste(5, ttb0);
    (rig, s1)
}

fn probe() -> Vec<Probe> {
    vec![Probe::write(SID, 0x1000, vec![0x4000_1000])]
}

#[test]
fn a_stage_2_to_stage_1_rewrite_without_a_break_shows_the_walker_an_illegal_ste() {
    let (mut rig, s1) = setup();
    let at = STRTAB + 64 * SID as u64;
    let mut p = StaleFetchPlatform::new(EmuPlatform::new(&mut rig.smmu, &mut rig.mem, &mut rig.frames), probe());
    for i in (1..8).chain(0..1) {
        p.write_u64(at + 8 * i as u64, s1.0[i]).unwrap();
    }
    assert!(!p.violations.is_empty(), "words 1-7 first leave a stage-2 STE with stage-1 words: ILLEGAL");
}

#[test]
fn the_same_rewrite_break_before_make_shows_only_legal_entries() {
    let (mut rig, s1) = setup();
    let at = STRTAB + 64 * SID as u64;
    let mut p = StaleFetchPlatform::new(EmuPlatform::new(&mut rig.smmu, &mut rig.mem, &mut rig.frames), probe());
    p.write_u64(at, 0).unwrap();
    for i in 1..8 {
        p.write_u64(at + 8 * i as u64, s1.0[i]).unwrap();
    }
    p.write_u64(at, s1.0[0]).unwrap();
    assert_eq!(p.writes, 9);
    assert_eq!(p.violations, []);
}
