//! The AMD-Vi driver on the model: normal boot, and crash-kernel boot under each policy with DMA in flight,
//! with SEV-SNP off, on with a successful shutdown, and on with a failed one (the base registers locked).

use iommu_driver::amdvi::{AmdError, AmdOptions, AmdOutcome, Amdvi, Attachment, DteProblem, Refusal};
use iommu_driver::{BootEnv, Mmio, PhysMem, Policy};
use iommu_emu::snp::{SnpCommand, SnpFirmware};
use iommu_emu::{Access, AmdviConfig, AmdviModel, EmuPlatform, FrameRegion, Iommu, PhysMemory, Translation};
use iommu_spec::amdvi::{off, DevTableBase, Dte, DteQw1, RingBase};

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
        let cfg = if snp == Snp::Off { AmdviConfig::default() } else { AmdviConfig::snp() };
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
            c_bit: 0,
        }
    }
    fn primary(&mut self) -> EmuPlatform<'_, AmdviModel> {
        EmuPlatform::new(&mut self.unit, &mut self.mem, &mut self.primary)
    }
    fn crash(&mut self) -> EmuPlatform<'_, AmdviModel> {
        EmuPlatform::new(&mut self.unit, &mut self.mem, &mut self.crash)
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
        v.attach(&mut rig.primary(), BULK, Attachment::PassThrough).unwrap();
        dma.push((BULK, 0x3000_0000, 0x3000_0000));
    }
    for &(devid, iova, pa) in &dma {
        assert_eq!(rig.dma(devid, iova, Access::Write), Ok(pa), "primary DMA");
    }
    (dma, ids)
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

#[test]
fn adopt_keeps_old_dma_translating_until_reattach_with_and_without_snp() {
    for snp in [Snp::Off, Snp::ShutdownOk, Snp::ShutdownFailed] {
        let mut rig = Rig::new(snp);
        let (old, ids) = primary(&mut rig);
        let (mut v, report) = crash(&mut rig, Policy::Adopt).unwrap();
        assert_eq!(report.outcome, AmdOutcome::Adopted, "{snp:?}");
        for id in &ids {
            assert!(report.reserved_domain_ids.contains(id) && v.domain_id_used(*id));
        }
        for &(devid, iova, pa) in &old {
            assert_eq!(rig.dma(devid, iova, Access::Write), Ok(pa), "{snp:?}: {devid:#x} keeps translating");
        }
        let d = v.create_domain(&mut rig.crash()).unwrap();
        assert!(!ids.contains(&v.domain(d).unwrap().id), "old domain IDs are never handed out again");
        v.attach(&mut rig.crash(), DISK, Attachment::Domain(d)).unwrap();
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
        // Seed 000's symptom, word for word.
        assert!(matches!(e, AmdError::CompletionWaitTimeout { .. }), "{policy}: {e}");
        assert!(e.to_string().starts_with("Completion-Wait loop timed out"), "{e}");
    }
}

/// Adopt with one piece of the old state broken; without SNP the crash kernel falls back to a reset
/// with the reason, with SNP it stops with it (nothing else can work).
fn refused(break_it: impl Fn(&mut Rig), want: impl Fn(&Refusal) -> bool) {
    for snp in [Snp::Off, Snp::ShutdownFailed] {
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
    refused(
        |rig| rig.primary().write64(off::CMD_BUF_BASE, RingBase::from_ring(5 * GIB, 9).into_bits()),
        |r| matches!(r, Refusal::BufferNotRam { what: "command buffer", .. }),
    );
    refused(
        |rig| rig.primary().write64(off::EVENT_LOG_BASE, RingBase::from_ring(CRASH.start + 0x1000, 9).into_bits()),
        |r| matches!(r, Refusal::BufferInCrashRegion { what: "event log", .. }),
    );
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
    v.contain(&mut rig.crash(), NIC).unwrap();
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
fn the_sme_c_bit_is_stripped_from_addresses_read_back() {
    // An SME host's kernel may leave the C-bit in the addresses it programmed (Linux `iommu_memremap`
    // strips `sme_me_mask` before mapping them). Set it in the device-table base and scan.
    const C_BIT: u64 = 1 << 47;
    let mut rig = Rig::new(Snp::Off);
    primary(&mut rig);
    let raw = rig.primary().read64(off::DEV_TABLE_BASE);
    rig.primary().write64(off::DEV_TABLE_BASE, raw | C_BIT);
    let with_bit = BootEnv { c_bit: 0, ..rig.env(true) };
    let refused = iommu_driver::amdvi::scan(&mut rig.crash(), &with_bit, true);
    assert!(refused.is_err(), "taken literally, the address is not RAM");
    let stripped = BootEnv { c_bit: C_BIT, ..rig.env(true) };
    let scan = iommu_driver::amdvi::scan(&mut rig.crash(), &stripped, true).unwrap();
    assert!(scan.devices.iter().any(|d| d.devid == NIC));
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
