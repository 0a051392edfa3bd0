//! The VT-d driver's normal boot programmed into the model, checked by DMA through the model.

mod common;

use common::Rig;
use iommu_driver::vtd::{Attachment, Vtd, VtdOptions};
use iommu_driver::{Mmio, PhysMem};
use iommu_emu::Access;
use iommu_spec::vtd::{off, FaultReason, Gsts, RtAddr, SlPte};

fn legacy() -> VtdOptions {
    VtdOptions { scalable: false, first_level: false }
}

#[test]
fn normal_boot_translates_mapped_iovas_and_faults_the_rest() {
    for opts in [legacy(), VtdOptions { scalable: true, first_level: false }] {
        let mut rig = Rig::new();
        let mut v = Vtd::init(&mut rig.primary(), opts).unwrap();
        assert_eq!(v.scalable(), opts.scalable);
        let gsts = Gsts::from_bits(rig.primary().read32(off::GSTS));
        assert!(gsts.tes() && gsts.qies() && gsts.rtps());
        assert_eq!(RtAddr::from_bits(rig.primary().read64(off::RTADDR)).smt(), opts.scalable);

        let d = v.create_domain(&mut rig.primary()).unwrap();
        v.attach(&mut rig.primary(), 0x0010, Attachment::Domain(d)).unwrap();
        let iova = v.map(&mut rig.primary(), d, 0x2000_0000, 0x2000, true, true).unwrap();
        assert_eq!(rig.dma(0x0010, iova + 0x123, Access::Write), Ok(0x2000_0123));
        assert_eq!(rig.dma(0x0010, iova + 0x1008, Access::Read), Ok(0x2000_1008));
        // Unmapped IOVA: a recorded fault the driver can drain.
        let code = rig.dma(0x0010, iova + 0x10_0000, Access::Write).unwrap_err();
        // An absent leaf: legacy mode reports the failed write permission (reason 5), scalable mode the
        // second-level entry with R and W clear (0x79).
        let expect = if opts.scalable { FaultReason::SmSlPermission } else { FaultReason::WriteNotAllowed };
        assert_eq!(code, expect.0 as u16, "scalable={}", opts.scalable);
        let faults = v.drain_faults(&mut rig.primary());
        assert_eq!(faults.len(), 1);
        assert_eq!(faults[0].sid(), 0x0010);
        assert_eq!(faults[0].address(), (iova + 0x10_0000) & !0xfff);
        // A device nobody attached faults too.
        assert!(rig.dma(0x0018, iova, Access::Read).is_err());
        // Read-only mapping refuses writes.
        let ro = v.map(&mut rig.primary(), d, 0x3000_0000, 0x1000, true, false).unwrap();
        assert_eq!(rig.dma(0x0010, ro, Access::Read), Ok(0x3000_0000));
        let no_write = if opts.scalable { FaultReason::SmNoWrite } else { FaultReason::WriteNotAllowed };
        assert_eq!(rig.dma(0x0010, ro, Access::Write), Err(no_write.0 as u16), "present read-only page");
        // Unmap invalidates: the next DMA faults although the IOTLB had it.
        v.unmap(&mut rig.primary(), d, iova, 0x2000).unwrap();
        assert!(rig.dma(0x0010, iova, Access::Write).is_err());
    }
}

#[test]
fn pass_through_reaches_physical_addresses() {
    for opts in [legacy(), VtdOptions { scalable: true, first_level: false }] {
        let mut rig = Rig::new();
        let mut v = Vtd::init(&mut rig.primary(), opts).unwrap();
        v.attach(&mut rig.primary(), 0x0020, Attachment::Identity).unwrap();
        assert_eq!(rig.dma(0x0020, 0x1234_5678, Access::Write), Ok(0x1234_5678));
    }
}

/// The leaf PTE address for `iova` in a 4-level table at `root`.
fn leaf_slot(mem: &impl PhysMem, root: u64, levels: u32, iova: u64) -> u64 {
    let mut t = root;
    for level in (2..=levels).rev() {
        t = SlPte::from_bits(mem.read_u64(t + 8 * iommu_spec::vtd::level_index(iova, level) as u64).unwrap()).phys();
    }
    t + 8 * iommu_spec::vtd::level_index(iova, 1) as u64
}

#[test]
fn a_missing_invalidation_leaves_a_stale_iotlb_entry() {
    let mut rig = Rig::new();
    let mut v = Vtd::init(&mut rig.primary(), legacy()).unwrap();
    let d = v.create_domain(&mut rig.primary()).unwrap();
    v.attach(&mut rig.primary(), 0x0010, Attachment::Domain(d)).unwrap();
    let iova = v.map(&mut rig.primary(), d, 0x2000_0000, 0x1000, true, true).unwrap();
    assert_eq!(rig.dma(0x0010, iova, Access::Write), Ok(0x2000_0000));
    // Clear the PTE behind the driver's back, with no invalidation: the unit still has the translation.
    let dom = v.domain(d).unwrap().clone();
    let slot = leaf_slot(&rig.mem, dom.root, dom.levels, iova);
    rig.mem.write_u64(slot, 0).unwrap();
    assert_eq!(rig.dma(0x0010, iova, Access::Write), Ok(0x2000_0000), "stale IOTLB entry");
    // The driver's strict unmap invalidates; now it faults.
    v.unmap(&mut rig.primary(), d, iova, 0x1000).unwrap();
    assert!(rig.dma(0x0010, iova, Access::Write).is_err());
}

#[test]
fn domain_ids_start_at_two() {
    let mut rig = Rig::new();
    let mut v = Vtd::init(&mut rig.primary(), legacy()).unwrap();
    let a = v.create_domain(&mut rig.primary()).unwrap();
    let b = v.create_domain(&mut rig.primary()).unwrap();
    assert_eq!(v.domain(a).unwrap().did, 2);
    assert_eq!(v.domain(b).unwrap().did, 3);
    assert!(v.did_used(0) && v.did_used(1));
}
