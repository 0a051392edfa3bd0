//! The driver contract, the same test on every IOMMU: whatever the architecture, a normal boot maps DMA,
//! a crash boot under `adopt` keeps the old mappings live until the device's new driver attaches, the
//! deferred attach gives the device a fresh domain whose IOVAs never alias old ones, and `adopt-scratch`
//! sends every old IOVA of a contained device to the scratch region.

use iommu_driver::{
    boot, boot_crash, Attachment, BootEnv, BootOptions, CrashOutcome, DeviceId, DriverError, Found, IommuDriver,
    IommuKind, Perm, Policy,
};
use iommu_emu::{model, Access, EmuPlatform, FrameRegion, Iommu, IommuModel, PhysMemory, Translation};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const CRASH: std::ops::Range<u64> = (3 * GIB)..(3 * GIB + 256 * MIB);
const NIC: DeviceId = DeviceId(0x0010);
const DISK: DeviceId = DeviceId(0x0018);
const ABSENT: DeviceId = DeviceId(0x0100);

struct Rig {
    mem: PhysMemory,
    unit: Box<dyn IommuModel>,
    primary: FrameRegion,
    crash: FrameRegion,
}

impl Rig {
    fn new(kind: IommuKind) -> Self {
        Rig {
            mem: PhysMemory::contiguous(0..4 * GIB),
            unit: model(kind, false, true),
            primary: FrameRegion::new(16 * MIB..512 * MIB),
            crash: FrameRegion::new(CRASH.start + 64 * MIB..CRASH.end),
        }
    }
    fn env(&self, crash_kernel: bool) -> BootEnv {
        BootEnv {
            crash_kernel,
            ram: std::iter::once(0..4 * GIB).collect(),
            crash_region: Some(CRASH),
            mem_encrypt: false,
            c_bit: 0,
        }
    }
    fn primary(&mut self) -> EmuPlatform<'_, Box<dyn IommuModel>> {
        EmuPlatform::new(&mut self.unit, &mut self.mem, &mut self.primary)
    }
    fn crash(&mut self) -> EmuPlatform<'_, Box<dyn IommuModel>> {
        EmuPlatform::new(&mut self.unit, &mut self.mem, &mut self.crash)
    }
    fn dma(&mut self, id: DeviceId, iova: u64) -> Option<u64> {
        match self.unit.translate(&mut self.mem, id.0, iova, Access::Write) {
            Translation::Ok { phys } => Some(phys),
            Translation::Fault(_) => None,
        }
    }
}

/// The primary kernel: NIC and disk each in a domain with four pages mapped; returns (device, iova, pa).
fn primary(rig: &mut Rig, kind: IommuKind) -> Vec<(DeviceId, u64, u64)> {
    let env = rig.env(false);
    let mut drv = boot(kind, &mut rig.primary(), &env, BootOptions::default()).unwrap();
    assert_eq!(drv.kind(), kind);
    assert!(drv.translating());
    let mut live = Vec::new();
    for (i, id) in [NIC, DISK].into_iter().enumerate() {
        let d = drv.create_domain(&mut rig.primary()).unwrap();
        drv.attach(&mut rig.primary(), id, Attachment::Domain(d)).unwrap();
        for k in 0..4u64 {
            let pa = 0x2000_0000 + (i as u64 * 16 + k) * 0x1000;
            live.push((id, drv.map(&mut rig.primary(), d, pa, 0x1000, Perm::RW).unwrap(), pa));
        }
    }
    for &(id, iova, pa) in &live {
        assert_eq!(rig.dma(id, iova), Some(pa), "{kind}: primary DMA of {id}");
    }
    live
}

fn crash_boot(rig: &mut Rig, kind: IommuKind, policy: Policy) -> (Box<dyn IommuDriver>, iommu_driver::CrashReport) {
    let env = rig.env(true);
    let (mut drv, mut report) = boot_crash(kind, &mut rig.crash(), &env, BootOptions::default(), policy).unwrap();
    for id in [NIC, DISK, ABSENT] {
        let found = drv.device_found(&mut rig.crash(), &env, id);
        if id == ABSENT {
            assert_eq!(found, Ok(Found::NotLive), "{kind}: a device the old kernel never attached");
        }
        report.note_found(id, found);
    }
    drv.account(&mut report);
    (drv, report)
}

#[test]
fn adopt_keeps_old_dma_live_until_the_deferred_attach_on_every_iommu() {
    for kind in IommuKind::ALL {
        let mut rig = Rig::new(kind);
        let live = primary(&mut rig, kind);
        let (mut drv, report) = crash_boot(&mut rig, kind, Policy::Adopt);
        assert_eq!(report.outcome, CrashOutcome::Adopted, "{kind}: {}", report.summary());
        assert_eq!(report.adopted, vec![NIC, DISK], "{kind}");
        assert!(report.refused.is_empty(), "{kind}: {:?}", report.refused);
        for &(id, iova, pa) in &live {
            assert_eq!(rig.dma(id, iova), Some(pa), "{kind}: old DMA of {id} still lands where it did");
        }
        // The disk's new driver: reset (not modelled here), fresh domain, its own buffer.
        let d = drv.create_domain(&mut rig.crash()).unwrap();
        drv.attach(&mut rig.crash(), DISK, Attachment::Domain(d)).unwrap();
        let own = CRASH.start + 128 * MIB;
        let iova = drv.map(&mut rig.crash(), d, own, 0x1000, Perm::RW).unwrap();
        assert_eq!(rig.dma(DISK, iova), Some(own), "{kind}: the new mapping");
        for &(id, old, pa) in live.iter().filter(|l| l.0 == DISK) {
            assert_ne!(old, iova, "{kind}: the new domain never hands out an old IOVA of the device");
            assert_ne!(rig.dma(id, old), Some(pa), "{kind}: the old mapping is gone after attach");
        }
        for &(id, iova, pa) in live.iter().filter(|l| l.0 == NIC) {
            assert_eq!(rig.dma(id, iova), Some(pa), "{kind}: the NIC, not yet probed, keeps translating");
        }
    }
}

#[test]
fn adopt_scratch_sends_every_old_iova_of_a_contained_device_to_the_scratch_region() {
    for kind in IommuKind::ALL {
        let mut rig = Rig::new(kind);
        let live = primary(&mut rig, kind);
        let (mut drv, _) = crash_boot(&mut rig, kind, Policy::AdoptScratch);
        drv.contain(&mut rig.crash(), NIC).unwrap();
        let scratch = drv.scratch_region().expect("containment built a scratch region");
        assert!(drv.scratch_frames() >= (scratch.end - scratch.start) / 4096, "{kind}");
        for &(id, iova, _) in live.iter().filter(|l| l.0 == NIC) {
            let to = rig.dma(id, iova).expect("contained DMA is translated, not faulted");
            assert!(scratch.contains(&to), "{kind}: {iova:#x} -> {to:#x} outside {scratch:x?}");
        }
    }
}

#[test]
fn reset_abort_blocks_old_dma_on_every_iommu() {
    for kind in IommuKind::ALL {
        let mut rig = Rig::new(kind);
        let live = primary(&mut rig, kind);
        let (drv, report) = crash_boot(&mut rig, kind, Policy::ResetAbort);
        assert_eq!(report.outcome, CrashOutcome::Reset, "{kind}");
        assert!(report.adopted.is_empty(), "{kind}");
        assert!(drv.translating(), "{kind}");
        for &(id, iova, _) in &live {
            assert_eq!(rig.dma(id, iova), None, "{kind}: old DMA of {id} at {iova:#x} faults");
        }
    }
}

#[test]
fn a_stream_id_wider_than_a_requester_id_is_a_typed_error_on_pci_only_iommus() {
    for kind in [IommuKind::Vtd, IommuKind::Amdvi] {
        let mut rig = Rig::new(kind);
        let env = rig.env(false);
        let mut drv = boot(kind, &mut rig.primary(), &env, BootOptions::default()).unwrap();
        let wide = DeviceId(0x1_0010);
        assert_eq!(
            drv.attach(&mut rig.primary(), wide, Attachment::Identity),
            Err(DriverError::BadDeviceId { kind, id: wide }),
            "{kind}"
        );
    }
}

/// The crashed kernel left the NIC's entry pointing at a table the crash kernel must refuse (copied into
/// its region) while the unit keeps walking it: refused, the entry is blocked; contained, every old IOVA
/// of the NIC lands in the scratch region instead of faulting (a fault is an AER, a second panic).
#[test]
fn a_refused_device_is_contained_under_adopt_scratch_on_every_iommu() {
    for kind in IommuKind::ALL {
        let mut rig = Rig::new(kind);
        let live = primary(&mut rig, kind);
        let mut crashed = iommu_emu::inject::Crashed {
            mem: &mut rig.mem,
            unit: rig.unit.fault_target(),
            crash_region: CRASH,
            seed: 1,
            idle: &[],
            late: None,
        };
        let injected = iommu_emu::inject::entry_rejected_live(&mut crashed);
        assert!(injected.is_applied(), "{kind}: {injected:?}");
        let (mut drv, report) = crash_boot(&mut rig, kind, Policy::AdoptScratch);
        let refused: Vec<DeviceId> = report.refused.iter().filter_map(|r| r.device()).collect();
        assert!(!refused.is_empty(), "{kind}: the entry in the crash region is refused");
        for &id in &refused {
            assert!(!report.adopted.contains(&id), "{kind}: {id} refused and adopted");
            drv.contain(&mut rig.crash(), id).unwrap();
        }
        let scratch = drv.scratch_region().expect("containment built a scratch region");
        for &(id, iova, _) in live.iter().filter(|l| refused.contains(&l.0)) {
            let to = rig.dma(id, iova);
            assert!(to.is_some_and(|pa| scratch.contains(&pa)), "{kind}: {id} {iova:#x} -> {to:x?}");
        }
    }
}

/// `takeover`'s needed device: after an adopting crash boot it is attached to a fresh domain mapping a
/// range one-to-one at the IOVA the caller chose (a kdump kernel's direct DMA API), which reaches exactly
/// that range, never an old IOVA of the device; the domain has a non-zero hardware tag, and a
/// misaligned or out-of-range request is refused by name.
#[test]
fn map_at_gives_a_one_to_one_domain_at_the_chosen_iovas_on_every_iommu() {
    for kind in IommuKind::ALL {
        let mut rig = Rig::new(kind);
        let live = primary(&mut rig, kind);
        let (mut drv, report) = crash_boot(&mut rig, kind, Policy::Adopt);
        assert_eq!(report.outcome, CrashOutcome::Adopted, "{kind}");
        let d = drv.create_domain(&mut rig.crash()).unwrap();
        let ram = CRASH.start + 64 * MIB..CRASH.start + 64 * MIB + 16 * 0x1000;
        drv.map_at(&mut rig.crash(), d, ram.start, ram.start, ram.end - ram.start, Perm::RW).unwrap();
        drv.attach(&mut rig.crash(), DISK, Attachment::Domain(d)).unwrap();
        for pa in (ram.start..ram.end).step_by(0x1000) {
            assert_eq!(rig.dma(DISK, pa + 0x10), Some(pa + 0x10), "{kind}: IOVA {pa:#x} is the physical address");
        }
        assert_eq!(rig.dma(DISK, ram.end), None, "{kind}: one page past the range faults");
        assert_eq!(rig.dma(DISK, ram.start - 0x1000), None, "{kind}: one page before it faults");
        for &(_, old, _) in live.iter().filter(|l| l.0 == DISK) {
            assert_eq!(rig.dma(DISK, old), None, "{kind}: the old IOVA {old:#x} is gone");
        }
        let tag = drv.domain_tag(d).unwrap_or_else(|| panic!("{kind}: the new domain has a tag"));
        assert_ne!(tag, 0, "{kind}: tag 0 is reserved (VT-d DID 0, AMD-Vi domain 0, SMMUv3's ASID 0)");
        assert_eq!(drv.domain_tag(iommu_driver::DomainId(d.0 + 100)), None, "{kind}: no such domain");
        // A mapping the allocator now avoids: fresh IOVAs never land in the one-to-one range.
        let iova = drv.map(&mut rig.crash(), d, 0x3000_0000, 0x1000, Perm::RW).unwrap();
        assert!(!(ram.start..ram.end).contains(&iova), "{kind}: {iova:#x} inside the range map_at took");
        for (iova, size) in [(ram.start + 1, 0x1000), (ram.end + 0x1000, 0x800), (!0xfff, 0x2000)] {
            let e = drv.map_at(&mut rig.crash(), d, iova, iova & !0xfff, size, Perm::RW);
            assert!(e.is_err(), "{kind}: map_at {iova:#x}+{size:#x} must be refused");
        }
    }
}

/// A normal boot with the NIC attached to a new, empty domain.
fn nic_in_a_domain(kind: IommuKind) -> (Rig, Box<dyn IommuDriver>, iommu_driver::DomainId) {
    let mut rig = Rig::new(kind);
    let env = rig.env(false);
    let mut drv = boot(kind, &mut rig.primary(), &env, BootOptions::default()).unwrap();
    let d = drv.create_domain(&mut rig.primary()).unwrap();
    drv.attach(&mut rig.primary(), NIC, Attachment::Domain(d)).unwrap();
    (rig, drv, d)
}

/// An unmap is told its range by its caller: one that wraps at 2^64, lies past the IOVA space, is empty or starts
/// mid-page is refused before anything changes (no entry cleared, no IOVA released, no command queued per page of
/// a huge size), on every IOMMU; a good one after it still unmaps.
#[test]
fn an_unmap_of_a_range_no_table_can_hold_is_refused_and_changes_nothing_on_every_iommu() {
    for kind in IommuKind::ALL {
        let (mut rig, mut drv, d) = nic_in_a_domain(kind);
        let pa = 0x2000_0000;
        let iova = drv.map(&mut rig.primary(), d, pa, 0x1000, Perm::RW).unwrap();
        for (at, size) in [(iova, u64::MAX), (iova, 0), (iova + 0x800, 0x1000), (!0xfff, 0x2000), (iova, 1 << 60)] {
            let e = drv.unmap(&mut rig.primary(), d, at, size);
            assert!(e.is_err(), "{kind}: unmap {at:#x}+{size:#x} must be refused");
            assert_eq!(rig.dma(NIC, iova), Some(pa), "{kind}: the mapping survives a refused unmap {at:#x}+{size:#x}");
        }
        // Not released by the refused unmaps: a new map does not get the same IOVA.
        let other = drv.map(&mut rig.primary(), d, pa + 0x1000, 0x1000, Perm::RW).unwrap();
        assert_ne!(other, iova, "{kind}");
        drv.unmap(&mut rig.primary(), d, iova, 0x1000).unwrap();
        assert_eq!(rig.dma(NIC, iova), None, "{kind}: a good unmap still unmaps");
    }
}

/// An unmap clears leaves and frees no table, which is what its invalidation tells the unit (VT-d IH = 1, SMMUv3
/// Leaf = 1; AMD-Vi always sets PDE). The models keep their paging-structure and walk caches across such an unmap,
/// so a table freed behind that hint would show as a stale walk; instead every new mapping in the same 2 MiB
/// reaches its page and every unmapped IOVA faults, round after round, on every IOMMU.
#[test]
fn mappings_after_an_unmap_with_the_leaf_only_hint_reach_their_new_pages_on_every_iommu() {
    for kind in IommuKind::ALL {
        let (mut rig, mut drv, d) = nic_in_a_domain(kind);
        for round in 0..4u64 {
            let pa = 0x2000_0000 + round * MIB;
            let iovas: Vec<u64> =
                (0..8).map(|i| drv.map(&mut rig.primary(), d, pa + i * 0x1000, 0x1000, Perm::RW).unwrap()).collect();
            for (i, &iova) in iovas.iter().enumerate() {
                assert_eq!(rig.dma(NIC, iova), Some(pa + i as u64 * 0x1000), "{kind}: round {round}, {iova:#x}");
            }
            for &iova in &iovas {
                drv.unmap(&mut rig.primary(), d, iova, 0x1000).unwrap();
                assert_eq!(rig.dma(NIC, iova), None, "{kind}: round {round}, {iova:#x} unmapped");
            }
        }
    }
}

/// `writes_in_place` is the whole list of old memory an adopting crash boot writes: on every IOMMU, every
/// page of the crashed kernel's memory that the boot, the bus probe, a containment and a deferred attach
/// changed lies inside one of the ranges it named from the registers beforehand (VT-d: none at all).
#[test]
fn writes_in_place_names_every_old_page_an_adopting_crash_boot_writes_on_every_iommu() {
    for kind in IommuKind::ALL {
        let mut rig = Rig::new(kind);
        primary(&mut rig, kind);
        let before = rig.mem.snapshot();
        let listed = iommu_driver::contract::writes_in_place(kind, &mut rig.crash(), &[NIC, DISK, ABSENT]);
        let (mut drv, report) = crash_boot(&mut rig, kind, Policy::AdoptScratch);
        assert_eq!(report.outcome, CrashOutcome::Adopted, "{kind}");
        drv.contain(&mut rig.crash(), NIC).unwrap();
        let d = drv.create_domain(&mut rig.crash()).unwrap();
        drv.attach(&mut rig.crash(), DISK, Attachment::Domain(d)).unwrap();
        let old: Vec<u64> =
            rig.mem.changed_pages(&before).into_iter().map(|pfn| pfn << 12).filter(|pa| !CRASH.contains(pa)).collect();
        let outside: Vec<u64> =
            old.iter().copied().filter(|pa| !listed.iter().any(|(r, _)| r.start <= *pa && *pa < r.end)).collect();
        assert!(outside.is_empty(), "{kind}: old pages written outside {listed:x?}: {outside:#x?}");
        match kind {
            IommuKind::Vtd => assert!(listed.is_empty() && old.is_empty(), "{kind}: adoption copies, never writes"),
            _ => assert!(!old.is_empty(), "{kind}: adoption rewrote entries in place"),
        }
    }
}
