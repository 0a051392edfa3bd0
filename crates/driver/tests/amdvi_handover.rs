//! The AMD-Vi driver on the model: normal boot, and crash-kernel boot under each policy with DMA in flight,
//! with SEV-SNP off, on with a successful shutdown, and on with a failed one (the base registers locked).

use iommu_driver::amdvi::{AmdError, AmdOptions, AmdOutcome, Amdvi, Attachment, DteProblem, Refusal};
use iommu_driver::{BootEnv, Mmio, PhysMem, Policy};
use iommu_emu::snp::{SnpCommand, SnpFirmware};
use iommu_emu::stale::{Probe, StaleFetchPlatform};
use iommu_emu::{Access, AmdviConfig, AmdviModel, EmuPlatform, FrameRegion, Iommu, PhysMemory, Translation};
use iommu_spec::amdvi::{off, DevTableBase, Dte, DteQw1, ExclusionBase, ExclusionLimit, PagingMode, RingBase};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const CRASH: std::ops::Range<u64> = (3 * GIB)..(3 * GIB + 256 * MIB);
const NIC: u16 = 0x0010;
const DISK: u16 = 0x0018;
const BULK: u16 = 0x0020;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Snp {
    Off,
    ShutdownOk,
    ShutdownFailed,
}

/// The SME encryption bit of the SNP hosts here (bit 51, as on EPYC 7003/9004).
const C_BIT: u64 = 1 << 51;

struct Rig {
    mem: PhysMemory,
    unit: AmdviModel,
    fw: SnpFirmware,
    primary: FrameRegion,
    crash: FrameRegion,
    snp: Snp,
}

impl Rig {
    fn new(snp: Snp) -> Self {
        // An SNP host runs SME: every address the kernels give the unit carries the encryption bit.
        let cfg =
            if snp == Snp::Off { AmdviConfig::default() } else { AmdviConfig { c_bit: C_BIT, ..AmdviConfig::snp() } };
        Self::with(snp, cfg)
    }
    fn with(snp: Snp, cfg: AmdviConfig) -> Self {
        Rig {
            mem: PhysMemory::contiguous(0..4 * GIB),
            unit: AmdviModel::new(cfg),
            fw: SnpFirmware::new(4, 4),
            primary: FrameRegion::new(16 * MIB..256 * MIB),
            crash: FrameRegion::new(CRASH.start + 64 * MIB..CRASH.end),
            snp,
        }
    }
    fn env(&self, crash: bool) -> BootEnv {
        BootEnv {
            crash_kernel: crash,
            ram: std::iter::once(0..4 * GIB).collect(),
            crash_region: Some(CRASH),
            mem_encrypt: self.snp != Snp::Off,
            c_bit: self.unit.config().c_bit,
        }
    }
    fn primary(&mut self) -> EmuPlatform<'_, AmdviModel> {
        EmuPlatform::new(&mut self.unit, &mut self.mem, &mut self.primary)
    }
    fn crash(&mut self) -> EmuPlatform<'_, AmdviModel> {
        EmuPlatform::new(&mut self.unit, &mut self.mem, &mut self.crash)
    }
    /// Writes the SNP lock ignored since the unit was made: the crash kernel must make none.
    fn locked_writes(&self) -> u64 {
        self.unit.counters().locked_writes_ignored
    }
    fn dte_at(&mut self, devid: u16) -> u64 {
        let spa = DevTableBase::from_bits(self.primary().read64(off::DEV_TABLE_BASE)).table();
        (spa & !self.unit.config().c_bit) + 32 * devid as u64
    }
    fn dte(&mut self, devid: u16) -> Dte {
        let at = self.dte_at(devid);
        Dte([0, 1, 2, 3].map(|i| self.mem.read_u64(at + 8 * i).unwrap()))
    }
    fn dma(&mut self, devid: u16, iova: u64, access: Access) -> Result<u64, u16> {
        match self.unit.translate(&mut self.mem, devid as u32, iova, access) {
            Translation::Ok { phys } => Ok(phys),
            Translation::Fault(f) => Err(f.code),
        }
    }
    /// The SNP host's panic path ends: shutdown succeeded or not; the IOMMU lock follows the firmware.
    fn panic(&mut self) {
        if self.snp == Snp::ShutdownOk {
            assert!(self.fw.command(SnpCommand::ShutdownEx { iommu: true }).ok());
        }
        self.unit.set_snp_lock(self.fw.iommu_locked());
    }
}

/// The primary kernel: IOMMU up, then (SNP hosts) SNP_INIT_EX, which locks the base registers; NIC and
/// disk in DMA domains, the copy engine in pass-through, a few buffers each.
fn primary(rig: &mut Rig) -> (Vec<(u16, u64, u64)>, Vec<u16>) {
    let env = rig.env(false);
    let mut v = Amdvi::init(&mut rig.primary(), &env, AmdOptions::default()).unwrap();
    if rig.snp != Snp::Off {
        assert!(rig.fw.command(SnpCommand::InitEx).ok());
        rig.unit.set_snp_lock(rig.fw.iommu_locked());
    }
    let mut dma = Vec::new();
    let mut ids = Vec::new();
    for (i, devid) in [NIC, DISK].into_iter().enumerate() {
        let d = v.create_domain(&mut rig.primary()).unwrap();
        ids.push(v.domain(d).unwrap().id);
        v.attach(&mut rig.primary(), devid, Attachment::Domain(d)).unwrap();
        for k in 0..4u64 {
            let pa = 0x2000_0000 + (i as u64 * 16 + k) * 0x1000;
            dma.push((devid, v.map(&mut rig.primary(), d, pa, 0x1000, true, true).unwrap(), pa));
        }
    }
    // SNP hosts cannot use pass-through (Linux's `iommu_snp_enable` requires translation; the unit treats
    // TV=1 with Mode 0 as an illegal entry under SNP).
    if rig.snp == Snp::Off {
        v.attach(&mut rig.primary(), BULK, Attachment::Identity).unwrap();
        dma.push((BULK, 0x3000_0000, 0x3000_0000));
    }
    for &(devid, iova, pa) in &dma {
        assert_eq!(rig.dma(devid, iova, Access::Write), Ok(pa), "primary DMA");
    }
    (dma, ids)
}

/// Run `f` on the crash kernel's platform with the unit fetching every old device's entry after each memory
/// write (the stale-fetch walker): each old IOVA may reach its old page, a page the crash kernel owns (a new
/// target being built), or be refused by a legal entry, at every moment.
fn watched<R>(
    rig: &mut Rig,
    old: &[(u16, u64, u64)],
    f: impl FnOnce(&mut StaleFetchPlatform<'_, AmdviModel>) -> R,
) -> R {
    let probes = old.iter().map(|&(d, iova, pa)| Probe::write(d as u32, iova, vec![pa]).or_within(CRASH)).collect();
    let mut p = StaleFetchPlatform::new(rig.crash(), probes);
    let r = f(&mut p);
    assert!(p.writes > 0, "the update wrote memory");
    assert_eq!(p.violations, [], "a fetch in the middle of the update saw an entry it must not");
    r
}

fn crash(rig: &mut Rig, policy: Policy) -> Result<(Amdvi, iommu_driver::amdvi::AmdReport), AmdError> {
    rig.panic();
    let env = rig.env(true);
    Amdvi::init_crash(&mut rig.crash(), &env, AmdOptions::default(), policy)
}

#[test]
fn normal_boot_translates_and_unmap_invalidates() {
    let mut rig = Rig::new(Snp::Off);
    let env = rig.env(false);
    let mut v = Amdvi::init(&mut rig.primary(), &env, AmdOptions::default()).unwrap();
    let d = v.create_domain(&mut rig.primary()).unwrap();
    v.attach(&mut rig.primary(), NIC, Attachment::Domain(d)).unwrap();
    let iova = v.map(&mut rig.primary(), d, 0x2000_0000, 0x2000, true, false).unwrap();
    assert_eq!(rig.dma(NIC, iova + 0x1008, Access::Read), Ok(0x2000_1008));
    assert!(rig.dma(NIC, iova, Access::Write).is_err(), "read-only mapping");
    assert!(rig.dma(NIC, iova + 0x10_0000, Access::Read).is_err(), "unmapped");
    assert!(rig.dma(DISK, iova, Access::Read).is_err(), "a device nobody attached is blocked");
    v.unmap(&mut rig.primary(), d, iova, 0x2000).unwrap();
    assert!(rig.dma(NIC, iova + 0x1008, Access::Read).is_err(), "INVALIDATE_IOMMU_PAGES dropped the cached entry");
}

/// An unmap whose size ends inside a page clears that page too (the range's pages, rounded up), as the
/// invalidation after it covers it: no leaf is left live behind a released IOVA.
#[test]
fn an_unmap_ending_inside_a_page_clears_that_page_too() {
    let mut rig = Rig::new(Snp::Off);
    let env = rig.env(false);
    let mut v = Amdvi::init(&mut rig.primary(), &env, AmdOptions::default()).unwrap();
    let d = v.create_domain(&mut rig.primary()).unwrap();
    v.attach(&mut rig.primary(), NIC, Attachment::Domain(d)).unwrap();
    let iova = v.map(&mut rig.primary(), d, 0x2000_0000, 0x2000, true, true).unwrap();
    assert_eq!(rig.dma(NIC, iova + 0x1008, Access::Read), Ok(0x2000_1008));
    v.unmap(&mut rig.primary(), d, iova, 0x1800).unwrap();
    assert!(rig.dma(NIC, iova, Access::Read).is_err());
    assert!(rig.dma(NIC, iova + 0x1008, Access::Read).is_err(), "the second page, half inside the size, is gone");
}

#[test]
fn adopt_keeps_old_dma_translating_until_reattach_with_and_without_snp() {
    for snp in [Snp::Off, Snp::ShutdownOk, Snp::ShutdownFailed] {
        let mut rig = Rig::new(snp);
        let (old, ids) = primary(&mut rig);
        let (mut v, report) = crash(&mut rig, Policy::Adopt).unwrap();
        assert_eq!(report.outcome, AmdOutcome::Adopted, "{snp:?}");
        assert_eq!(rig.locked_writes(), 0, "{snp:?}: no write reached a locked register");
        for id in &ids {
            assert!(report.reserved_domain_ids.contains(id) && v.domain_id_used(*id));
        }
        for &(devid, iova, pa) in &old {
            assert_eq!(rig.dma(devid, iova, Access::Write), Ok(pa), "{snp:?}: {devid:#x} keeps translating");
        }
        let d = v.create_domain(&mut rig.crash()).unwrap();
        assert!(!ids.contains(&v.domain(d).unwrap().id), "old domain IDs are never handed out again");
        watched(&mut rig, &old, |p| v.attach(p, DISK, Attachment::Domain(d))).unwrap();
        let buf = CRASH.start + 0x900_0000;
        let iova = v.map(&mut rig.crash(), d, buf, 0x1000, true, true).unwrap();
        assert_eq!(rig.dma(DISK, iova, Access::Read), Ok(buf), "{snp:?}: the new domain works");
        for &(devid, oiova, pa) in &old {
            if devid == DISK {
                assert!(
                    rig.dma(devid, oiova, Access::Write).is_err(),
                    "{snp:?}: old IOVAs of the re-attached disk fault"
                );
                assert_ne!(oiova, iova);
            } else {
                assert_eq!(rig.dma(devid, oiova, Access::Write), Ok(pa));
            }
        }
        assert_eq!(rig.locked_writes(), 0, "{snp:?}: attach wrote no locked register");
    }
}

#[test]
fn resets_work_unless_snp_locked_the_registers() {
    for snp in [Snp::Off, Snp::ShutdownOk] {
        let mut rig = Rig::new(snp);
        let (old, _) = primary(&mut rig);
        let (_, r) = crash(&mut rig, Policy::ResetAbort).unwrap();
        assert_eq!(r.outcome, AmdOutcome::Reset);
        for &(devid, iova, _) in &old {
            assert!(rig.dma(devid, iova, Access::Write).is_err(), "{snp:?}: reset-abort blocks {devid:#x}");
        }
        let mut rig = Rig::new(snp);
        let (old, _) = primary(&mut rig);
        crash(&mut rig, Policy::ResetBypass).unwrap();
        for &(devid, iova, _) in &old {
            assert_eq!(rig.dma(devid, iova, Access::Write), Ok(iova), "{snp:?}: reset-bypass lands on the IOVA");
        }
    }
    // SNP on and shutdown failed: the new bases are ignored, so the unit never runs our commands.
    for policy in [Policy::ResetAbort, Policy::ResetBypass] {
        let mut rig = Rig::new(Snp::ShutdownFailed);
        primary(&mut rig);
        let e = crash(&mut rig, policy).err().unwrap();
        assert!(rig.locked_writes() > 0, "{policy}: the reset's writes to the bases were ignored (and counted)");
        // The symptom "[PATCH v3 4/4] iommu/amd: Fix host kdump support for SNP" reports (its text: the unit
        // test of `AmdError`'s Display).
        assert!(matches!(e, AmdError::CompletionWaitTimeout { .. }), "{policy}: {e}");
    }
}

/// Adopt with one piece of the old state broken; without SNP the crash kernel falls back to a reset
/// with the reason, with SNP it stops with it (nothing else can work).
fn refused(break_it: impl Fn(&mut Rig), want: impl Fn(&Refusal) -> bool) {
    refused_on(&[Snp::Off, Snp::ShutdownFailed], break_it, want)
}

fn refused_on(snps: &[Snp], break_it: impl Fn(&mut Rig), want: impl Fn(&Refusal) -> bool) {
    for &snp in snps {
        let mut rig = Rig::new(snp);
        primary(&mut rig);
        // Break the state the crashed kernel left, with the registers unlocked for the moment.
        rig.unit.set_snp_lock(false);
        break_it(&mut rig);
        match crash(&mut rig, Policy::Adopt) {
            Ok((_, r)) => {
                assert_eq!(snp, Snp::Off);
                match &r.outcome {
                    AmdOutcome::FellBack(why) => assert!(want(why), "{why}"),
                    o => panic!("expected a fallback, got {o:?}"),
                }
            }
            Err(AmdError::ReuseFailedWithSnp(why)) => {
                assert_eq!(snp, Snp::ShutdownFailed);
                assert!(want(&why), "{why}");
                assert_eq!(rig.locked_writes(), 0, "a refusal under SNP writes no locked register");
            }
            Err(e) => panic!("{snp:?}: {e}"),
        }
    }
}

#[test]
fn each_reuse_check_broken_gives_its_reason() {
    refused(
        |rig| {
            let t = DevTableBase::from_bits(rig.primary().read64(off::DEV_TABLE_BASE));
            rig.primary().write64(off::DEV_TABLE_BASE, DevTableBase::from_table(t.table(), 8192).into_bits());
        },
        |r| matches!(r, Refusal::DevTableSize { found: 8192, .. }),
    );
    refused(
        |rig| {
            let t = DevTableBase::from_bits(rig.primary().read64(off::DEV_TABLE_BASE));
            rig.primary().write64(off::DEV_TABLE_BASE, DevTableBase::from_table(CRASH.start, t.bytes()).into_bits());
        },
        |r| matches!(r, Refusal::DevTable(_)),
    );
    // The rings are reused only under SNP (their registers are locked); without it they are replaced.
    let snp = &[Snp::ShutdownFailed];
    refused_on(
        snp,
        |rig| rig.primary().write64(off::CMD_BUF_BASE, RingBase::from_ring(0, 9).into_bits()),
        |r| matches!(r, Refusal::BaseZero { what: "command buffer" }),
    );
    refused_on(
        snp,
        |rig| rig.primary().write64(off::CMD_BUF_BASE, RingBase::from_ring(5 * GIB, 9).into_bits()),
        |r| matches!(r, Refusal::BufferNotRam { what: "command buffer", .. }),
    );
    refused_on(
        snp,
        |rig| rig.primary().write64(off::EVENT_LOG_BASE, RingBase::from_ring(CRASH.start + 0x1000, 9).into_bits()),
        |r| matches!(r, Refusal::BufferInCrashRegion { what: "event log", .. }),
    );
}

/// Without SNP the crashed kernel's ring registers are not trusted at all: adoption gives the unit fresh
/// rings of its own (Linux's kdump kernel remaps the old ones only under SNP), so a ring base left at 0 or
/// in the crash region costs nothing, and the old ring pages are never written.
#[test]
fn without_snp_adoption_replaces_the_rings_whatever_their_registers_say() {
    for bad in [0, CRASH.start + 0x1000] {
        let mut rig = Rig::new(Snp::Off);
        let (old, _) = primary(&mut rig);
        let cmd = RingBase::from_bits(rig.primary().read64(off::CMD_BUF_BASE)).ring();
        let page = |rig: &Rig| {
            let mut b = vec![0u8; 8192];
            rig.mem.read(cmd, &mut b).unwrap();
            b
        };
        let before = page(&rig);
        rig.primary().write64(off::CMD_BUF_BASE, RingBase::from_ring(bad, 9).into_bits());
        rig.primary().write64(off::EVENT_LOG_BASE, RingBase::from_ring(bad, 9).into_bits());
        let (_, r) = crash(&mut rig, Policy::Adopt).unwrap();
        assert_eq!(r.outcome, AmdOutcome::Adopted, "ring base {bad:#x}");
        let now = RingBase::from_bits(rig.primary().read64(off::CMD_BUF_BASE)).ring();
        assert!(now != bad && now != cmd && CRASH.contains(&now), "a fresh ring of the crash kernel's: {now:#x}");
        assert_eq!(page(&rig), before, "the old ring is not written");
        for &(devid, iova, pa) in &old {
            assert_eq!(rig.dma(devid, iova, Access::Write), Ok(pa), "adopted translations stay live");
        }
    }
}

#[test]
fn a_malformed_dte_refuses_that_device_only() {
    let mut rig = Rig::new(Snp::Off);
    let (old, _) = primary(&mut rig);
    let dt = DevTableBase::from_bits(rig.primary().read64(off::DEV_TABLE_BASE)).table();
    let at = dt + 32 * DISK as u64;
    let mut q = [0u64; 4];
    for (i, w) in q.iter_mut().enumerate() {
        *w = rig.mem.read_u64(at + 8 * i as u64).unwrap();
    }
    let bad = Dte([q[0] | 1 << 63, q[1], q[2], q[3]]);
    rig.mem.write_u64(at, bad.0[0]).unwrap();
    let (_, r) = crash(&mut rig, Policy::Adopt).unwrap();
    assert_eq!(r.outcome, AmdOutcome::Adopted);
    assert!(matches!(r.problems.as_slice(), [DteProblem::ReservedBits { devid: DISK, .. }]), "{:?}", r.problems);
    assert!(!r.adopted.contains(&DISK) && r.adopted.contains(&NIC));
    let nic = old.iter().find(|o| o.0 == NIC).unwrap();
    assert_eq!(rig.dma(NIC, nic.1, Access::Write), Ok(nic.2));
    let _ = DteQw1::new();
}

#[test]
fn containment_sends_every_iova_into_the_scratch_region() {
    let mut rig = Rig::new(Snp::ShutdownFailed);
    let (old, _) = primary(&mut rig);
    let (mut v, _) = crash(&mut rig, Policy::AdoptScratch).unwrap();
    watched(&mut rig, &old, |p| v.contain(p, NIC)).unwrap();
    assert_eq!(rig.locked_writes(), 0, "adoption and containment wrote no locked register");
    let region = v.scratch_region().unwrap();
    assert!(CRASH.contains(&region.start));
    assert_eq!(v.scratch_frames(), 512 + 3, "the region and three shared tables");
    for &(devid, iova, pa) in &old {
        let got = rig.dma(devid, iova + 8, Access::Write);
        if devid == NIC {
            assert_eq!(got, Ok(region.start + ((iova >> 12) % 512) * 4096 + 8));
        } else {
            assert_eq!(got, Ok(pa + 8));
        }
    }
}

#[test]
fn under_sme_every_address_carries_the_c_bit_and_adoption_reads_through_it() {
    // An SME host's kernel gives the unit every address with `sme_me_mask` set (Linux `iommu_virt_to_phys`,
    // `__sme_set` in `iommu_v1_map_pages`); the unit and the crash kernel strip it (`iommu_memremap`).
    let mut rig = Rig::new(Snp::ShutdownFailed);
    let (maps, _) = primary(&mut rig);
    for reg in [off::DEV_TABLE_BASE, off::CMD_BUF_BASE, off::EVENT_LOG_BASE, off::EXCL_BASE] {
        assert_eq!(rig.primary().read64(reg) & C_BIT, C_BIT, "register {reg:#x}");
    }
    let dte = rig.dte(DISK);
    assert_eq!(dte.pt_root() & C_BIT, C_BIT, "the DTE's root");
    let root = dte.pt_root() & !C_BIT;
    let v1 = iommu_driver::amdvi::V1 { c_bit: C_BIT };
    let w = iommu_driver::walk::walk(&rig.mem, &v1, root, 3, iommu_driver::walk::WalkLimits::default());
    assert!(w.issues.is_empty() && !w.runs.is_empty(), "{:?}", w.issues);
    let plain = iommu_driver::walk::walk(&rig.mem, &V1_PLAIN, root, 3, iommu_driver::walk::WalkLimits::default());
    assert!(!plain.issues.is_empty(), "taken literally, the table pointers are not RAM");

    let (_, r) = crash(&mut rig, Policy::Adopt).unwrap();
    assert_eq!(r.outcome, AmdOutcome::Adopted);
    assert!(r.adopted.contains(&DISK) && r.adopted.contains(&NIC), "{:?}", r.adopted);
    for &(devid, iova, pa) in &maps {
        assert_eq!(rig.dma(devid, iova, Access::Write), Ok(pa), "old DMA of {devid:#x} still lands on its page");
    }
    assert_eq!(rig.locked_writes(), 0);
}

/// The v1 format of a kernel without SME.
const V1_PLAIN: iommu_driver::amdvi::V1 = iommu_driver::amdvi::V1 { c_bit: 0 };

#[test]
fn snp_follows_the_hardware_not_the_crash_kernels_mem_encrypt() {
    // A crash kernel booted without `mem_encrypt` on a host whose SNP shutdown failed: the unit is still locked.
    let mut rig = Rig::new(Snp::ShutdownFailed);
    let (old, _) = primary(&mut rig);
    rig.panic();
    let env = BootEnv { mem_encrypt: false, ..rig.env(true) };
    let (v, r) = Amdvi::init_crash(&mut rig.crash(), &env, AmdOptions::default(), Policy::Adopt).unwrap();
    assert_eq!(r.outcome, AmdOutcome::Adopted);
    assert!(v.snp());
    assert_eq!(rig.locked_writes(), 0);
    for &(devid, iova, pa) in &old {
        assert_eq!(rig.dma(devid, iova, Access::Write), Ok(pa));
    }
}

#[test]
fn the_completion_wait_sequence_continues_from_the_old_page() {
    let mut rig = Rig::new(Snp::ShutdownFailed);
    primary(&mut rig);
    let spa = ExclusionBase::from_bits(rig.primary().read64(off::EXCL_BASE)).address();
    assert_eq!(spa & C_BIT, C_BIT, "the kernel names the page with its SME bit (Linux `iommu_set_cwwb_range`)");
    let page = spa & !C_BIT;
    // The crashed kernel had run a thousand waits.
    rig.mem.write_u64(page, 1000).unwrap();
    let (_, r) = crash(&mut rig, Policy::Adopt).unwrap();
    assert_eq!(r.outcome, AmdOutcome::Adopted);
    assert!(rig.mem.read_u64(page).unwrap() > 1000, "every wait of the crash kernel stored a new value");
    assert_eq!(rig.locked_writes(), 0);
}

#[test]
fn a_completion_wait_page_at_zero_is_refused() {
    let mut rig = Rig::new(Snp::ShutdownFailed);
    primary(&mut rig);
    rig.unit.set_snp_lock(false);
    rig.primary().write64(off::EXCL_BASE, ExclusionBase::from_address(0).into_bits());
    let r = crash(&mut rig, Policy::Adopt);
    assert!(
        matches!(&r, Err(AmdError::ReuseFailedWithSnp(why)) if **why == Refusal::BaseZero { what: "completion-wait page" }),
        "{:?}",
        r.as_ref().map(|x| &x.1.outcome)
    );
    assert_eq!(rig.locked_writes(), 0);
}

/// DISK's DTE made to use a root table copied into the crash kernel's region (the unit walks it).
fn disk_root_in_crash_region(rig: &mut Rig) -> u16 {
    let dte = rig.dte(DISK);
    let moved = CRASH.start + 0x20_0000;
    let mut page = [0u8; 4096];
    let c_bit = rig.unit.config().c_bit;
    rig.mem.read(dte.pt_root() & !c_bit, &mut page).unwrap();
    rig.mem.write(moved, &page).unwrap();
    let at = rig.dte_at(DISK);
    let new = Dte::translated(moved | c_bit, dte.mode(), dte.domain_id(), true, true);
    rig.mem.write_u64(at, new.0[0]).unwrap();
    dte.domain_id()
}

#[test]
fn a_refused_entry_is_rewritten_to_block_and_its_domain_id_reserved() {
    for snp in [Snp::Off, Snp::ShutdownFailed] {
        let mut rig = Rig::new(snp);
        let (old, _) = primary(&mut rig);
        let id = disk_root_in_crash_region(&mut rig);
        let disk = old.iter().find(|o| o.0 == DISK).copied().unwrap();
        assert_eq!(rig.dma(DISK, disk.1, Access::Write), Ok(disk.2), "{snp:?}: the unit walks the moved root");
        let (v, r) = crash(&mut rig, Policy::Adopt).unwrap();
        assert_eq!(r.outcome, AmdOutcome::Adopted);
        assert!(matches!(r.problems.as_slice(), [DteProblem::PageTableInCrashRegion { devid: DISK, .. }]));
        assert_eq!(r.blocked, [DISK]);
        assert!(rig.dma(DISK, disk.1, Access::Write).is_err(), "{snp:?}: the refused entry no longer translates");
        assert!(v.domain_id_used(id), "{snp:?}: its domain ID is never handed out");
        assert_eq!(rig.locked_writes(), 0, "{snp:?}");
    }
}

#[test]
fn a_mapping_into_the_crash_region_refuses_the_device_and_pass_through_is_reported() {
    let mut rig = Rig::new(Snp::Off);
    let env = rig.env(false);
    let (old, _) = primary(&mut rig);
    // DISK's tables also map a page the crash kernel will own (its DTE names a domain whose tables the
    // primary built; add the leaf by hand).
    let dte = rig.dte(DISK);
    let mut frames = 0;
    iommu_driver::walk::map_range(
        &mut rig.primary(),
        &iommu_driver::amdvi::V1::default(),
        dte.pt_root(),
        3,
        0x7000_0000,
        CRASH.start + 0x5000,
        1,
        true,
        true,
        &mut frames,
    )
    .unwrap();
    let _ = env;
    let (_, r) = crash(&mut rig, Policy::Adopt).unwrap();
    assert!(
        matches!(r.problems.as_slice(), [DteProblem::PageInCrashRegion { devid: DISK, iova: 0x7000_0000, .. }]),
        "{:?}",
        r.problems
    );
    assert_eq!(r.blocked, [DISK]);
    assert_eq!(r.unconfined, [BULK], "pass-through reaches all of memory, and the report says so");
    for &(devid, iova, pa) in &old {
        let got = rig.dma(devid, iova, Access::Write);
        if devid == DISK {
            assert!(got.is_err());
        } else {
            assert_eq!(got, Ok(pa));
        }
    }
}

#[test]
fn live_dte_updates_show_the_walker_only_the_old_or_new_entry_and_keep_interrupt_remapping() {
    for snp in [Snp::Off, Snp::ShutdownFailed] {
        let mut rig = Rig::new(snp);
        let (old, _) = primary(&mut rig);
        // Interrupt remapping on both devices, as Linux sets it up.
        for devid in [NIC, DISK] {
            let at = rig.dte_at(devid);
            let dte = rig.dte(devid).with_int_remap(0x3f00_0000 + devid as u64 * 0x1000, 8);
            rig.mem.write_u64(at + 16, dte.0[2]).unwrap();
        }
        let irq = [rig.dte(NIC).0[2], rig.dte(DISK).0[2]];
        // A function of NIC's on NIC's tables, contained first so the scratch region exists.
        const NIC_FN1: u16 = NIC + 1;
        let (from, to) = (rig.dte_at(NIC), rig.dte_at(NIC_FN1));
        for i in 0..4 {
            let w = rig.mem.read_u64(from + 8 * i).unwrap();
            rig.mem.write_u64(to + 8 * i, w).unwrap();
        }
        let (mut v, _) = crash(&mut rig, Policy::AdoptScratch).unwrap();
        let d = v.create_domain(&mut rig.crash()).unwrap();
        let disk = old.iter().find(|o| o.0 == DISK).copied().unwrap();
        let nic = old.iter().find(|o| o.0 == NIC).copied().unwrap();
        // The attach: the unit fetches DISK's DTE after every write, caching what it walks.
        let probes = vec![Probe::write(DISK as u32, disk.1, vec![disk.2])];
        let mut p = StaleFetchPlatform::new(rig.crash(), probes);
        v.attach(&mut p, DISK, Attachment::Domain(d)).unwrap();
        assert!(p.writes > 0);
        assert_eq!(p.violations, [], "{snp:?}");
        assert!(rig.dma(DISK, disk.1, Access::Write).is_err(), "{snp:?}: no translation of the old tables survives");
        // Containment, fetched the same way.
        v.contain(&mut rig.crash(), NIC_FN1).unwrap();
        let scratch = v.scratch_region().unwrap().start + ((nic.1 >> 12) % 512) * 4096;
        let probes = vec![Probe::write(NIC as u32, nic.1, vec![nic.2, scratch])];
        let mut p = StaleFetchPlatform::new(rig.crash(), probes);
        v.contain(&mut p, NIC).unwrap();
        assert_eq!(p.violations, [], "{snp:?}");
        assert_eq!(rig.dma(NIC, nic.1, Access::Write), Ok(scratch));
        assert_eq!([rig.dte(NIC).0[2], rig.dte(DISK).0[2]], irq, "{snp:?}: interrupt remapping kept");
        assert_eq!(rig.locked_writes(), 0, "{snp:?}");
    }
}

#[test]
fn without_iasup_adoption_flushes_every_domains_translations() {
    let cfg = AmdviConfig { efr: AmdviConfig::default().efr.with_ia_sup(false), ..AmdviConfig::default() };
    let mut rig = Rig::with(Snp::Off, cfg);
    let (old, _) = primary(&mut rig);
    // The crashed kernel unmapped NIC's first buffer and crashed before its (lazy) flush: the IOTLB still
    // holds the translation.
    let nic = old.iter().find(|o| o.0 == NIC).copied().unwrap();
    let root = rig.dte(NIC).pt_root();
    iommu_driver::walk::unmap_range(&mut rig.primary(), &iommu_driver::amdvi::V1::default(), root, 3, nic.1, 1)
        .unwrap();
    assert_eq!(rig.dma(NIC, nic.1, Access::Write), Ok(nic.2), "stale, until flushed");
    let (_, r) = crash(&mut rig, Policy::Adopt).unwrap();
    assert_eq!(r.outcome, AmdOutcome::Adopted);
    assert!(rig.dma(NIC, nic.1, Access::Write).is_err(), "the crash kernel sees what the tables say");
}

#[test]
fn containment_covers_every_iova_the_device_can_send() {
    const WIDE: u16 = 0x0030;
    let mut rig = Rig::new(Snp::Off);
    primary(&mut rig);
    // A device on a 4-level table (48-bit IOVAs), as Linux builds for a wide DMA mask.
    let root = 0x1f00_0000;
    let at = rig.dte_at(WIDE);
    let dte = Dte::translated(root, PagingMode::from_bits(4), 77, true, true);
    for (i, w) in dte.0.iter().enumerate() {
        rig.mem.write_u64(at + 8 * i as u64, *w).unwrap();
    }
    let (mut v, _) = crash(&mut rig, Policy::AdoptScratch).unwrap();
    v.contain(&mut rig.crash(), WIDE).unwrap();
    v.contain(&mut rig.crash(), BULK).unwrap();
    let region = v.scratch_region().unwrap();
    for (devid, iova) in [(WIDE, (1u64 << 39) + 0x5000), (WIDE, (1 << 47) + 0x1000), (BULK, (1 << 52) + 0x2000)] {
        let got = rig.dma(devid, iova, Access::Write);
        assert!(got.is_ok_and(|pa| region.contains(&pa)), "{devid:#x} {iova:#x}: {got:?}");
    }
}

#[test]
fn the_exclusion_range_is_off_after_adoption_so_containment_holds() {
    let mut rig = Rig::new(Snp::Off);
    let (old, _) = primary(&mut rig);
    let (first, last) = (CRASH.start, CRASH.start + 16 * MIB - 1);
    rig.primary()
        .write64(off::EXCL_BASE, ExclusionBase::from_address(first).with_ex_en(true).with_allow(true).into_bits());
    rig.primary().write64(off::EXCL_LIMIT, ExclusionLimit::from_address(last).into_bits());
    assert_eq!(rig.dma(NIC, first + 0x3000, Access::Write), Ok(first + 0x3000), "excluded: untranslated");
    let (mut v, r) = crash(&mut rig, Policy::AdoptScratch).unwrap();
    assert_eq!(r.exclusion_disabled, Some((first, last)));
    watched(&mut rig, &old, |p| v.contain(p, NIC)).unwrap();
    let region = v.scratch_region().unwrap();
    let got = rig.dma(NIC, first + 0x3000, Access::Write);
    assert!(got.is_ok_and(|pa| region.contains(&pa)), "{got:?}");
}

#[test]
fn devices_sharing_a_domain_id_on_different_tables_are_split() {
    let mut rig = Rig::new(Snp::Off);
    let (old, ids) = primary(&mut rig);
    // DISK's DTE names NIC's domain ID with its own tables.
    let at = rig.dte_at(DISK);
    let q1 = DteQw1::from_bits(rig.dte(DISK).0[1]).with_domain_id(ids[0]);
    rig.mem.write_u64(at + 8, q1.into_bits()).unwrap();
    let nic = old.iter().find(|o| o.0 == NIC).copied().unwrap();
    let disk = old.iter().find(|o| o.0 == DISK && o.1 == nic.1).copied().expect("both domains start at one IOVA");
    assert_ne!(nic.2, disk.2);
    let (v, r) = crash(&mut rig, Policy::Adopt).unwrap();
    assert!(matches!(r.split_domain_ids.as_slice(), [(DISK, old, _)] if *old == ids[0]), "{:?}", r.split_domain_ids);
    assert!(v.domain_id_used(r.split_domain_ids[0].2));
    assert_eq!(rig.dma(NIC, nic.1, Access::Write), Ok(nic.2));
    assert_eq!(rig.dma(DISK, disk.1, Access::Write), Ok(disk.2), "DISK reads its own tables, not NIC's cached entry");
    assert_eq!(rig.dma(NIC, nic.1, Access::Write), Ok(nic.2));
}

#[test]
fn attach_before_reset_old_dma_never_lands_in_the_new_domains_buffers() {
    for snp in [Snp::Off, Snp::ShutdownFailed] {
        let mut rig = Rig::new(snp);
        let (old, _) = primary(&mut rig);
        let (mut v, _) = crash(&mut rig, Policy::Adopt).unwrap();
        let d = v.create_domain(&mut rig.crash()).unwrap();
        watched(&mut rig, &old, |p| v.attach(p, DISK, Attachment::Domain(d))).unwrap();
        for i in 0..64 {
            v.map(&mut rig.crash(), d, CRASH.start + 0x900_0000 + i * 0x1000, 0x1000, true, true).unwrap();
        }
        for &(devid, iova, _) in old.iter().filter(|o| o.0 == DISK) {
            assert!(rig.dma(devid, iova, Access::Write).is_err(), "{snp:?}: old IOVA {iova:#x} faults");
        }
        assert_eq!(rig.locked_writes(), 0, "{snp:?}");
    }
}

#[test]
fn the_audit_sees_an_exclusion_range_over_the_crash_region() {
    use iommu_driver::audit::{audit, Verdict};
    use iommu_driver::survey::{scan_amdvi, Budget, Problem, Work};
    let mut rig = Rig::new(Snp::Off);
    primary(&mut rig);
    // No pass-through device: the tables alone are safe.
    let at = rig.dte_at(BULK);
    for (i, w) in Dte::blocked(false).0.iter().enumerate() {
        rig.mem.write_u64(at + 8 * i as u64, *w).unwrap();
    }
    let env = BootEnv { crash_region: None, ..rig.env(true) };
    let judge = |rig: &mut Rig| {
        let scan = scan_amdvi(&mut rig.crash(), &env, &mut Work::new(Budget::default()));
        (audit(&scan, &env.ram, &[CRASH], &[]), scan)
    };
    assert_eq!(judge(&mut rig).0.verdict(), Verdict::Safe);
    let (first, last) = (CRASH.start, CRASH.start + 16 * MIB - 1);
    rig.primary()
        .write64(off::EXCL_BASE, ExclusionBase::from_address(first).with_ex_en(true).with_allow(true).into_bits());
    rig.primary().write64(off::EXCL_LIMIT, ExclusionLimit::from_address(last).into_bits());
    let (a, scan) = judge(&mut rig);
    assert_eq!(a.verdict(), Verdict::Unsafe);
    assert!(scan.problems.iter().any(|p| matches!(p, Problem::ExclusionRange { allow: true, .. })), "{scan:?}");
    let nic = a.devices.iter().find(|d| d.id == NIC as u32).unwrap();
    assert!(nic.threats.iter().any(|t| t.phys == first), "{nic:?}");
}

#[test]
fn a_walk_at_its_bound_is_a_refusal_not_a_pass() {
    use iommu_driver::walk::{reach, Reach};
    let mut rig = Rig::new(Snp::Off);
    primary(&mut rig);
    let env = rig.env(true);
    let root = rig.dte(NIC).pt_root();
    let v1 = &iommu_driver::amdvi::V1::default();
    // NIC's 3-level table is three tables deep on its one mapping.
    let mut budget = 100;
    assert_eq!(reach(&rig.mem, v1, &env, root, 3, &mut budget), None);
    assert_eq!(budget, 97, "the walk read three tables");
    let mut budget = 2;
    assert_eq!(reach(&rig.mem, v1, &env, root, 3, &mut budget), Some(Reach::Bound { tables: 2 }));
    assert_eq!(budget, 0);
    assert_eq!(reach(&rig.mem, v1, &env, root, 3, &mut budget), Some(Reach::Bound { tables: 0 }), "spent: refuse");
}

/// `map_at`: the device's DMA at the chosen IOVAs lands on the same physical addresses (a one-to-one domain
/// for a kdump kernel whose DMA API is direct); IOVAs outside what was mapped fault, and a range past the
/// three-level table's 39 bits is refused.
#[test]
fn map_at_gives_a_one_to_one_domain_and_nothing_else() {
    let mut rig = Rig::new(Snp::Off);
    let env = rig.env(false);
    let mut v = Amdvi::init(&mut rig.primary(), &env, AmdOptions::default()).unwrap();
    let d = v.create_domain(&mut rig.primary()).unwrap();
    let ram = 0x1_2f00_0000u64;
    v.map_at(&mut rig.primary(), d, ram, ram, 0x4000, true, true).unwrap();
    v.attach(&mut rig.primary(), DISK, Attachment::Domain(d)).unwrap();
    for off in [0, 0x1008, 0x3ff8] {
        assert_eq!(rig.dma(DISK, ram + off, Access::Write), Ok(ram + off));
    }
    assert!(rig.dma(DISK, ram + 0x4000, Access::Read).is_err());
    assert!(rig.dma(DISK, ram - 0x1000, Access::Read).is_err());
    let past = (1u64 << 39) - 0x1000;
    assert!(matches!(
        v.map_at(&mut rig.primary(), d, past, 0x1000, 0x2000, true, true),
        Err(AmdError::BadRange { .. })
    ));
    assert!(matches!(
        v.map_at(&mut rig.primary(), d, ram + 0x800, ram, 0x1000, true, true),
        Err(AmdError::BadRange { .. })
    ));
}
