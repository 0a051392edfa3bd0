//! The SMMUv3 driver on the model: normal boot, crash-kernel boot under each policy with DMA in flight,
//! each adoption check of the v6 series broken once, the lazy-L2 re-check, and adoption memory on a sparse
//! SIDSIZE-32 table.

use iommu_driver::smmuv3::{Attachment, MasterState, Refusal, SmmuOutcome, Smmuv3, SteProblem, SPLIT};
use iommu_driver::{BootEnv, Mmio, PhysMem, Policy};
use iommu_emu::stale::{Probe, StaleFetchPlatform};
use iommu_emu::{Access, EmuPlatform, FrameRegion, Iommu, PhysMemory, Smmuv3Config, Smmuv3Model, Translation};
use iommu_spec::smmuv3::{off, s2_memattr, L1Desc, S2Pte, Ste, StrtabBase, StrtabBaseCfg, StrtabFmt};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const CRASH: std::ops::Range<u64> = (3 * GIB)..(3 * GIB + 256 * MIB);
const NIC: u32 = 0x0010;
const DISK: u32 = 0x0018;
const BULK: u32 = 0x0020;
const FAR: u32 = 0x0300;

struct Rig {
    mem: PhysMemory,
    unit: Smmuv3Model,
    primary: FrameRegion,
    crash: FrameRegion,
}

impl Rig {
    fn with(cfg: Smmuv3Config) -> Self {
        Rig {
            mem: PhysMemory::contiguous(0..4 * GIB),
            unit: Smmuv3Model::new(cfg),
            primary: FrameRegion::new(16 * MIB..512 * MIB),
            crash: FrameRegion::new(CRASH.start + 64 * MIB..CRASH.end),
        }
    }
    fn new() -> Self {
        Self::with(Smmuv3Config::default())
    }
    fn env(&self) -> BootEnv {
        BootEnv {
            crash_kernel: true,
            ram: std::iter::once(0..4 * GIB).collect(),
            crash_region: Some(CRASH),
            mem_encrypt: false,
            c_bit: 0,
        }
    }
    fn primary(&mut self) -> EmuPlatform<'_, Smmuv3Model> {
        EmuPlatform::new(&mut self.unit, &mut self.mem, &mut self.primary)
    }
    fn crash(&mut self) -> EmuPlatform<'_, Smmuv3Model> {
        EmuPlatform::new(&mut self.unit, &mut self.mem, &mut self.crash)
    }
    fn dma(&mut self, sid: u32, iova: u64, access: Access) -> Result<u64, u16> {
        match self.unit.translate(&mut self.mem, sid, iova, access) {
            Translation::Ok { phys } => Ok(phys),
            Translation::Fault(f) => Err(f.code),
        }
    }
}

/// NIC, disk and a device on another L2 table in stage-1 domains; the copy engine in bypass.
fn primary(rig: &mut Rig) -> (Vec<(u32, u64, u64)>, Vec<u16>) {
    let mut v = Smmuv3::init(&mut rig.primary()).unwrap();
    let mut dma = Vec::new();
    let mut asids = Vec::new();
    for (i, sid) in [NIC, DISK, FAR].into_iter().enumerate() {
        let d = v.create_domain(&mut rig.primary()).unwrap();
        asids.push(v.domain(d).unwrap().asid);
        v.attach(&mut rig.primary(), sid, Attachment::Domain(d)).unwrap();
        for k in 0..4u64 {
            let pa = 0x2000_0000 + (i as u64 * 16 + k) * 0x1000;
            dma.push((sid, v.map(&mut rig.primary(), d, pa, 0x1000, true, true).unwrap(), pa));
        }
    }
    v.attach(&mut rig.primary(), BULK, Attachment::Identity).unwrap();
    dma.push((BULK, 0x3000_0000, 0x3000_0000));
    for &(sid, iova, pa) in &dma {
        assert_eq!(rig.dma(sid, iova, Access::Write), Ok(pa), "primary DMA of {sid:#x}");
    }
    (dma, asids)
}

/// Run `f` on the crash kernel's platform with the unit fetching every old device's entry after each memory
/// write (the stale-fetch walker): each old IOVA may reach its old page, a page the crash kernel owns (a new
/// target being built), or be refused by a legal entry, at every moment.
fn watched<R>(
    rig: &mut Rig,
    old: &[(u32, u64, u64)],
    f: impl FnOnce(&mut StaleFetchPlatform<'_, Smmuv3Model>) -> R,
) -> R {
    let probes = old.iter().map(|&(d, iova, pa)| Probe::write(d, iova, vec![pa]).or_within(CRASH)).collect();
    let mut p = StaleFetchPlatform::new(rig.crash(), probes);
    let r = f(&mut p);
    assert!(p.writes > 0, "the update wrote memory");
    assert_eq!(p.violations, [], "a fetch in the middle of the update saw an entry it must not");
    r
}

fn crash(rig: &mut Rig, policy: Policy) -> (Smmuv3, iommu_driver::smmuv3::SmmuReport) {
    let env = rig.env();
    let (mut v, r) = Smmuv3::init_crash(&mut rig.crash(), &env, policy).unwrap();
    // The crash kernel's bus probe inserts every master it finds.
    for sid in [NIC, DISK, BULK, FAR] {
        let _ = v.insert_master(&mut rig.crash(), &env, sid);
    }
    (v, r)
}

#[test]
fn normal_boot_translates_and_unmap_invalidates() {
    let mut rig = Rig::new();
    let mut v = Smmuv3::init(&mut rig.primary()).unwrap();
    let d = v.create_domain(&mut rig.primary()).unwrap();
    v.attach(&mut rig.primary(), NIC, Attachment::Domain(d)).unwrap();
    let iova = v.map(&mut rig.primary(), d, 0x2000_0000, 0x2000, true, false).unwrap();
    assert_eq!(rig.dma(NIC, iova + 0x1008, Access::Read), Ok(0x2000_1008));
    assert!(rig.dma(NIC, iova, Access::Write).is_err(), "read-only");
    assert!(rig.dma(NIC, iova + 0x10_0000, Access::Read).is_err(), "unmapped");
    assert!(rig.dma(DISK, iova, Access::Read).is_err(), "an unattached stream aborts");
    v.unmap(&mut rig.primary(), d, iova, 0x2000).unwrap();
    assert!(rig.dma(NIC, iova + 0x1008, Access::Read).is_err(), "TLBI dropped the cached entry");
}

/// Every stream of a new stream table aborts until attached (Linux `arm_smmu_init_initial_stes`): in a level-2
/// table made for one master every other STE is the abort STE, and in a linear table every STE is; their DMA
/// is refused.
#[test]
fn streams_of_a_new_table_abort_until_attached() {
    for two_level in [true, false] {
        let mut rig = Rig::with(Smmuv3Config { two_level_strtab: two_level, ..Smmuv3Config::default() });
        let mut v = Smmuv3::init(&mut rig.primary()).unwrap();
        let d = v.create_domain(&mut rig.primary()).unwrap();
        v.attach(&mut rig.primary(), NIC, Attachment::Domain(d)).unwrap();
        let iova = v.map(&mut rig.primary(), d, 0x2000_0000, 0x1000, true, true).unwrap();
        let at = |rig: &mut Rig, sid: u32| if two_level { ste_at(rig, sid) } else { strtab(rig) + 64 * sid as u64 };
        let span = if two_level { 1u32 << SPLIT } else { 1 << 12 };
        for sid in (0..span).filter(|&s| s != NIC) {
            let ste = at(&mut rig, sid);
            let words: Vec<u64> = (0..8).map(|i| rig.mem.read_u64(ste + 8 * i).unwrap()).collect();
            assert_eq!(words, Ste::abort().0, "STE {sid:#x} (2-level: {two_level})");
        }
        assert_eq!(rig.dma(NIC, iova, Access::Read), Ok(0x2000_0000));
        assert!(rig.dma(NIC + 1, iova, Access::Read).is_err(), "2-level: {two_level}");
    }
}

#[test]
fn adopt_keeps_old_dma_translating_until_reattach() {
    let mut rig = Rig::new();
    let (old, asids) = primary(&mut rig);
    let (mut v, r) = crash(&mut rig, Policy::Adopt);
    assert_eq!(r.outcome, SmmuOutcome::Adopted);
    let cr0 = rig.crash().read32(off::CR0);
    assert_eq!(cr0 & 1, 1, "SMMUEN stayed set");
    assert_eq!(cr0 & 0b110, 0, "event and PRI queues are off in the crash kernel");
    for &(sid, iova, pa) in &old {
        assert_eq!(rig.dma(sid, iova, Access::Write), Ok(pa), "{sid:#x} keeps translating");
    }
    for a in &asids {
        assert!(v.asid_used(*a), "old ASID {a} reserved");
    }
    assert_eq!(v.unconfined(), [BULK], "the bypass master reaches all of memory, and the driver says so");
    let d = v.create_domain(&mut rig.crash()).unwrap();
    assert!(!asids.contains(&v.domain(d).unwrap().asid));
    watched(&mut rig, &old, |p| v.attach(p, DISK, Attachment::Domain(d))).unwrap();
    let buf = CRASH.start + 0x900_0000;
    let iova = v.map(&mut rig.crash(), d, buf, 0x1000, true, true).unwrap();
    assert_eq!(rig.dma(DISK, iova, Access::Read), Ok(buf));
    for &(sid, oiova, pa) in &old {
        let got = rig.dma(sid, oiova, Access::Write);
        if sid == DISK {
            assert!(got.is_err(), "old IOVA {oiova:#x} of the re-attached disk aborts");
        } else {
            assert_eq!(got, Ok(pa));
        }
    }
}

#[test]
fn resets_abort_or_bypass_old_dma() {
    let mut rig = Rig::new();
    let (old, _) = primary(&mut rig);
    crash(&mut rig, Policy::ResetAbort);
    for &(sid, iova, _) in &old {
        assert!(rig.dma(sid, iova, Access::Write).is_err(), "reset-abort aborts {sid:#x}");
    }
    let mut rig = Rig::new();
    let (old, _) = primary(&mut rig);
    crash(&mut rig, Policy::ResetBypass);
    for &(sid, iova, _) in &old {
        assert_eq!(rig.dma(sid, iova, Access::Write), Ok(iova), "reset-bypass: {sid:#x} on physical = IOVA");
    }
}

/// Break one thing, adopt: a fallback to the full reset with the reason, and no old mapping left working.
fn refused(rig_cfg: Smmuv3Config, break_it: impl Fn(&mut Rig), want: impl Fn(&Refusal) -> bool) {
    let mut rig = Rig::with(rig_cfg);
    let (old, _) = primary(&mut rig);
    break_it(&mut rig);
    let (_, r) = crash(&mut rig, Policy::Adopt);
    match &r.outcome {
        SmmuOutcome::FellBack(why) => assert!(want(why), "{why}"),
        o => panic!("expected a fallback, got {o:?}"),
    }
    for &(sid, iova, _) in &old {
        assert!(rig.dma(sid, iova, Access::Write).is_err(), "after the fallback {sid:#x} aborts");
    }
}

fn cfg(rig: &mut Rig) -> StrtabBaseCfg {
    StrtabBaseCfg::from_bits(rig.primary().read32(off::STRTAB_BASE_CFG))
}

/// Rewrite the stream-table registers as a crashed kernel could have left them (SMMUEN off for the write).
fn set_strtab(rig: &mut Rig, base: u64, cfg: StrtabBaseCfg) {
    let cr0 = rig.primary().read32(off::CR0);
    rig.primary().write32(off::CR0, cr0 & !1);
    rig.primary().write64(off::STRTAB_BASE, StrtabBase::from_table(base, true).into_bits());
    rig.primary().write32(off::STRTAB_BASE_CFG, cfg.into_bits());
    rig.primary().write32(off::CR0, cr0);
}

fn strtab(rig: &mut Rig) -> u64 {
    StrtabBase::from_bits(rig.primary().read64(off::STRTAB_BASE)).table()
}

#[test]
fn each_adoption_check_broken_falls_back_with_its_reason() {
    let d = Smmuv3Config::default;
    refused(
        d(),
        |r| {
            let (b, c) = (strtab(r), cfg(r));
            set_strtab(r, b, c.with_split(6))
        },
        |w| matches!(w, Refusal::Split { found: 6, .. }),
    );
    refused(
        d(),
        |r| {
            let (b, c) = (strtab(r), cfg(r));
            set_strtab(r, b, c.with_log2size(20))
        },
        |w| matches!(w, Refusal::Log2Size { log2size: 20, .. }),
    );
    refused(
        d(),
        |r| {
            let (b, c) = (strtab(r), cfg(r));
            set_strtab(r, b, c.with_log2size(6))
        },
        |w| matches!(w, Refusal::Log2Size { log2size: 6, .. }),
    );
    refused(
        d(),
        |r| {
            let c = cfg(r);
            set_strtab(r, 5 * GIB, c)
        },
        |w| matches!(w, Refusal::Table(_)),
    );
    refused(
        d(),
        |r| {
            let c = cfg(r);
            set_strtab(r, CRASH.start, c)
        },
        |w| matches!(w, Refusal::Table(_)),
    );
    refused(
        d(),
        |r| {
            let at = strtab(r);
            let l1 = L1Desc::from_bits(r.mem.read_u64(at).unwrap());
            r.mem.write_u64(at, l1.with_span(SPLIT + 2).into_bits()).unwrap();
        },
        |w| matches!(w, Refusal::L1Span { index: 0, .. }),
    );
    refused(d(), |r| r.unit.inject_sfm_err(), |w| matches!(w, Refusal::ServiceFailure));
    refused(Smmuv3Config { coherent: false, ..d() }, |_| {}, |w| matches!(w, Refusal::NonCoherentWalker));
}

#[test]
fn a_span_changed_after_adoption_rejects_only_that_master() {
    let mut rig = Rig::new();
    let (old, _) = primary(&mut rig);
    let env = rig.env();
    let (mut v, r) = Smmuv3::init_crash(&mut rig.crash(), &env, Policy::Adopt).unwrap();
    assert_eq!(r.outcome, SmmuOutcome::Adopted);
    // Between adoption and the bus probe, the L1 descriptor of FAR's table is corrupted.
    let at = strtab(&mut rig) + 8 * (FAR >> SPLIT) as u64;
    let l1 = L1Desc::from_bits(rig.mem.read_u64(at).unwrap());
    rig.mem.write_u64(at, l1.with_span(3).into_bits()).unwrap();
    let got = v.insert_master(&mut rig.crash(), &env, FAR);
    assert!(matches!(got, Err(SteProblem::L1Span { index: 3, span: 3, .. })), "{got:?}");
    for sid in [NIC, DISK, BULK] {
        assert!(v.insert_master(&mut rig.crash(), &env, sid).unwrap().is_some());
    }
    for &(sid, iova, pa) in old.iter().filter(|o| o.0 != FAR) {
        assert_eq!(rig.dma(sid, iova, Access::Write), Ok(pa), "{sid:#x} unaffected");
    }
}

#[test]
fn adoption_memory_follows_live_l2_tables_not_the_stream_id_space() {
    let mut sizes = Vec::new();
    for live in [2u32, 16] {
        let mut rig = Rig::with(Smmuv3Config { sidsize: 32, ..Smmuv3Config::default() });
        let mut v = Smmuv3::init(&mut rig.primary()).unwrap();
        let sids: Vec<u32> = (0..live).map(|i| i * 0x1_0000 + 0x10).collect();
        for &sid in &sids {
            let d = v.create_domain(&mut rig.primary()).unwrap();
            v.attach(&mut rig.primary(), sid, Attachment::Domain(d)).unwrap();
        }
        let env = rig.env();
        let (mut c, r) = Smmuv3::init_crash(&mut rig.crash(), &env, Policy::Adopt).unwrap();
        assert_eq!(r.outcome, SmmuOutcome::Adopted);
        let l1_bytes = r.bytes_mapped;
        for &sid in &sids {
            assert!(c.insert_master(&mut rig.crash(), &env, sid).unwrap().is_some());
        }
        let l2 = (1u64 << SPLIT) * 64;
        assert_eq!(c.adopted_bytes, l1_bytes + live as u64 * l2, "the L1 table plus one L2 table per live master");
        // Each master's walk read its domain's root table (nothing mapped below it), a page each.
        assert_eq!(c.walked_bytes, live as u64 * 4096, "one page-table page walked per live master");
        sizes.push(c.adopted_bytes);
    }
    // 2^32 stream IDs would need 256 GiB of STEs; adoption reads the L1 table and 14 more L2 tables for 14 more.
    assert_eq!(sizes[1] - sizes[0], 14 * (1 << SPLIT) * 64);
}

#[test]
fn containment_sends_every_iova_into_the_scratch_region() {
    let mut rig = Rig::new();
    let (old, _) = primary(&mut rig);
    let (mut v, _) = crash(&mut rig, Policy::AdoptScratch);
    watched(&mut rig, &old, |p| v.contain(p, NIC)).unwrap();
    let region = v.scratch_region().unwrap();
    assert!(CRASH.contains(&region.start));
    assert_eq!(v.scratch_frames(), 512 + 4 + 1, "the region, four shared tables, one CD");
    for &(sid, iova, pa) in &old {
        let got = rig.dma(sid, iova + 8, Access::Write);
        if sid == NIC {
            assert_eq!(got, Ok(region.start + ((iova >> 12) % 512) * 4096 + 8));
        } else {
            assert_eq!(got, Ok(pa + 8));
        }
    }
}

#[test]
fn linear_tables_adopt_and_their_checks_refuse() {
    let linear = || Smmuv3Config { two_level_strtab: false, ..Smmuv3Config::default() };
    let mut rig = Rig::with(linear());
    let (old, _) = primary(&mut rig);
    assert_eq!(cfg(&mut rig).fmt(), iommu_spec::smmuv3::StrtabFmt::Linear);
    let (_, r) = crash(&mut rig, Policy::Adopt);
    assert_eq!(r.outcome, SmmuOutcome::Adopted);
    for &(sid, iova, pa) in &old {
        assert_eq!(rig.dma(sid, iova, Access::Write), Ok(pa));
    }
    // Beyond SIDSIZE is not a table this hardware has.
    refused(
        linear(),
        |r| {
            let (b, c) = (strtab(r), cfg(r));
            set_strtab(r, b, c.with_log2size(17))
        },
        |w| matches!(w, Refusal::Log2Size { log2size: 17, max: 16, .. }),
    );
    refused(
        linear(),
        |r| {
            let c = cfg(r);
            set_strtab(r, CRASH.start, c)
        },
        |w| matches!(w, Refusal::Table(_)),
    );
}

/// Where `sid`'s STE lives in the crashed kernel's 2-level table.
fn ste_at(rig: &mut Rig, sid: u32) -> u64 {
    let base = strtab(rig);
    let l1 = L1Desc::from_bits(rig.mem.read_u64(base + 8 * (sid >> SPLIT) as u64).unwrap());
    l1.l2_table() + 64 * (sid as u64 & ((1 << SPLIT) - 1))
}

#[test]
fn attaching_where_no_master_was_inserted_keeps_the_live_level_2_table() {
    let mut rig = Rig::new();
    let (old, _) = primary(&mut rig);
    let env = rig.env();
    // The bus probe never inserted anyone (or every insert failed): the first attach needs an L2 slot.
    let (mut v, r) = Smmuv3::init_crash(&mut rig.crash(), &env, Policy::Adopt).unwrap();
    assert_eq!(r.outcome, SmmuOutcome::Adopted);
    let d = v.create_domain(&mut rig.crash()).unwrap();
    watched(&mut rig, &old, |p| v.attach(p, NIC, Attachment::Domain(d))).unwrap();
    for &(sid, iova, pa) in old.iter().filter(|o| o.0 != NIC) {
        assert_eq!(rig.dma(sid, iova, Access::Write), Ok(pa), "{sid:#x} shares NIC's L2 table and keeps translating");
    }
}

#[test]
fn stream_table_formats_follow_the_hardware_and_the_series() {
    let d = Smmuv3Config::default;
    // A reserved FMT names no table (the model finds no STE for any stream): never adopted as linear.
    refused(
        d(),
        |r| {
            let (b, c) = (strtab(r), cfg(r));
            set_strtab(r, b, c.with_fmt(StrtabFmt(2)))
        },
        |w| matches!(w, Refusal::Format { fmt: 2, .. }),
    );
    // Linear on 2-level hardware: the series' review calls it a bug.
    refused(
        d(),
        |r| {
            let b = strtab(r);
            set_strtab(r, b, StrtabBaseCfg::new().with_fmt(StrtabFmt::Linear).with_log2size(8))
        },
        |w| matches!(w, Refusal::Format { fmt: 0, two_level_hw: true }),
    );
    // 2-level on hardware without IDR0.ST_LEVEL.
    refused(
        Smmuv3Config { two_level_strtab: false, ..d() },
        |r| {
            let b = strtab(r);
            set_strtab(r, b, StrtabBaseCfg::new().with_fmt(StrtabFmt::TwoLevel).with_split(SPLIT).with_log2size(12))
        },
        |w| matches!(w, Refusal::Format { fmt: 1, two_level_hw: false }),
    );
}

#[test]
fn a_linear_table_as_large_as_sidsize_is_adopted_on_linear_only_hardware() {
    let mut rig = Rig::with(Smmuv3Config { two_level_strtab: false, ..Smmuv3Config::default() });
    let (old, _) = primary(&mut rig);
    // The crashed kernel sized its table to SIDSIZE (16), as Linux does on linear-only hardware.
    let (b, c) = (strtab(&mut rig), cfg(&mut rig));
    set_strtab(&mut rig, b, c.with_log2size(16));
    let (_, r) = crash(&mut rig, Policy::Adopt);
    assert_eq!(r.outcome, SmmuOutcome::Adopted, "{:?}", r.outcome);
    for &(sid, iova, pa) in &old {
        assert_eq!(rig.dma(sid, iova, Access::Write), Ok(pa));
    }
}

#[test]
fn untrusted_l1_descriptors_are_cleared_at_adoption_not_adopted() {
    for (what, bad) in [("reserved bit 5", None), ("L2Ptr 0", Some(0u64))] {
        let mut rig = Rig::new();
        let (old, _) = primary(&mut rig);
        let at = strtab(&mut rig) + 8 * (FAR >> SPLIT) as u64;
        let l1 = L1Desc::from_bits(rig.mem.read_u64(at).unwrap());
        let raw = match bad {
            None => l1.into_bits() | 1 << 5,
            Some(pa) => L1Desc::new_table(pa, SPLIT + 1).into_bits(),
        };
        rig.mem.write_u64(at, raw).unwrap();
        let (mut v, r) = crash(&mut rig, Policy::Adopt);
        assert_eq!(r.outcome, SmmuOutcome::Adopted, "{what}");
        assert_eq!(r.problems.len(), 1, "{what}: {:?}", r.problems);
        assert_eq!(L1Desc::from_bits(rig.mem.read_u64(at).unwrap()).span(), 0, "{what}: the descriptor is cleared");
        assert!(!matches!(v.master(FAR), Some(MasterState::Adopted { .. })), "{what}: FAR is not adopted");
        for &(sid, iova, pa) in &old {
            let got = rig.dma(sid, iova, Access::Write);
            if sid == FAR {
                assert!(got.is_err(), "{what}: FAR's DMA no longer reaches {pa:#x}");
            } else {
                assert_eq!(got, Ok(pa), "{what}");
            }
        }
        // A new master behind that descriptor gets a fresh level-2 table.
        let d = v.create_domain(&mut rig.crash()).unwrap();
        watched(&mut rig, &old, |p| v.attach(p, FAR, Attachment::Domain(d))).unwrap();
        assert!(L1Desc::from_bits(rig.mem.read_u64(at).unwrap()).l2_table() >= CRASH.start);
    }
}

#[test]
fn an_ste_refused_at_insert_is_made_to_abort_and_its_asid_reserved() {
    let mut rig = Rig::new();
    let (old, asids) = primary(&mut rig);
    // NIC's context descriptor moves into what becomes the crash kernel's memory.
    let at = ste_at(&mut rig, NIC);
    let mut words = [0u64; 8];
    for (i, w) in words.iter_mut().enumerate() {
        *w = rig.mem.read_u64(at + 8 * i as u64).unwrap();
    }
    let cd = Ste(words).s1_context_ptr();
    let moved = CRASH.start + 0x10_0000;
    for i in 0..8 {
        let w = rig.mem.read_u64(cd + 8 * i).unwrap();
        rig.mem.write_u64(moved + 8 * i, w).unwrap();
    }
    let ptr_field = (moved >> 6) << 6;
    words[0] = (words[0] & !(((1u64 << 46) - 1) << 6)) | ptr_field;
    rig.mem.write_u64(at, words[0]).unwrap();
    let nic = old.iter().find(|o| o.0 == NIC).copied().unwrap();
    assert_eq!(rig.dma(NIC, nic.1, Access::Write), Ok(nic.2), "the unit walks the moved CD");
    let env = rig.env();
    let (mut v, _) = Smmuv3::init_crash(&mut rig.crash(), &env, Policy::Adopt).unwrap();
    let got = v.insert_master(&mut rig.crash(), &env, NIC);
    assert!(matches!(got, Err(SteProblem::TableInCrashRegion { sid: NIC, .. })), "{got:?}");
    assert!(rig.dma(NIC, nic.1, Access::Write).is_err(), "the refused STE no longer translates");
    assert!(v.asid_used(asids[0]), "its ASID is never handed out again");
}

#[test]
fn acknowledging_a_pending_command_error_does_not_restart_the_old_queue() {
    let mut rig = Rig::new();
    let (old, _) = primary(&mut rig);
    // The crashed kernel's last command was illegal: CMDQ_ERR pending, CONS at it.
    let base = iommu_spec::smmuv3::QueueBase::from_bits(rig.primary().read64(off::CMDQ_BASE));
    let prod = rig.primary().read32(off::CMDQ_PROD);
    let l2 = base.log2size() as u32;
    let at = base.base() + 16 * iommu_spec::smmuv3::QueuePtr(prod).index(l2) as u64;
    rig.mem.write_u64(at, 0xff).unwrap();
    rig.mem.write_u64(at + 8, 0).unwrap();
    rig.primary().write32(off::CMDQ_PROD, iommu_spec::smmuv3::QueuePtr(prod).next(l2).0);
    assert!(rig.unit.gerror_active().cmdq_err(), "the illegal command raised CMDQ_ERR");
    let (_, r) = crash(&mut rig, Policy::Adopt);
    assert_eq!(r.outcome, SmmuOutcome::Adopted, "{:?}", r.outcome);
    assert!(!rig.unit.gerror_active().cmdq_err());
    for &(sid, iova, pa) in &old {
        assert_eq!(rig.dma(sid, iova, Access::Write), Ok(pa));
    }
}

/// A stream the crashed kernel put on stage 2 (a 39-bit IPA space from level 1, IPA 0..1 GiB as one block
/// at `pa`).
fn stage2_stream(rig: &mut Rig, sid: u32, pa: u64) {
    let root = 0x1f00_0000;
    rig.mem.write_u64(root, S2Pte::leaf(pa, 1, s2_memattr::OIWB, true, true).into_bits()).unwrap();
    let ste = Ste::s2(9, root, 25, 1, 5);
    let at = ste_at(rig, sid);
    for (i, w) in ste.0.iter().enumerate() {
        rig.mem.write_u64(at + 8 * i as u64, *w).unwrap();
    }
}

#[test]
fn live_ste_updates_show_the_walker_only_legal_entries() {
    const S2: u32 = 0x0028;
    let mut rig = Rig::new();
    let (old, _) = primary(&mut rig);
    stage2_stream(&mut rig, S2, 0x4000_0000);
    assert_eq!(rig.dma(S2, 0x1000, Access::Write), Ok(0x4000_1000));
    let env = rig.env();
    let (mut v, _) = crash(&mut rig, Policy::AdoptScratch);
    assert!(v.insert_master(&mut rig.crash(), &env, S2).unwrap().is_some());
    let d = v.create_domain(&mut rig.crash()).unwrap();
    let nic = old.iter().find(|o| o.0 == NIC).copied().unwrap();
    let bulk = old.iter().find(|o| o.0 == BULK).copied().unwrap();
    // Stage 2 -> stage 1, bypass -> stage 1 (attach), stage 1 -> scratch (contain): the unit fetches each
    // STE after every write; only the old target, the new one, or a legal abort may show.
    watched(&mut rig, &old, |p| v.contain(p, DISK)).unwrap();
    let region = v.scratch_region().unwrap();
    let scratch = region.start + ((nic.1 >> 12) % 512) * 4096;
    let mut writes = 0;
    for (sid, iova, targets) in
        [(S2, 0x1000, vec![0x4000_1000]), (BULK, bulk.1, vec![bulk.2]), (NIC, nic.1, vec![nic.2, scratch])]
    {
        let probes = vec![Probe::write(sid, iova, targets)];
        let mut p = StaleFetchPlatform::new(rig.crash(), probes);
        if sid == NIC {
            v.contain(&mut p, sid).unwrap();
        } else {
            v.attach(&mut p, sid, Attachment::Domain(d)).unwrap();
        }
        assert_eq!(p.violations, [], "stream {sid:#x}");
        writes += p.writes;
    }
    assert!(writes > 0);
    assert!(rig.dma(S2, 0x1000, Access::Write).is_err(), "stage 1 now: nothing mapped at 0x1000");
    assert_eq!(rig.dma(NIC, nic.1, Access::Write), Ok(scratch));
}

#[test]
fn attach_before_reset_old_dma_never_lands_in_the_new_domains_buffers() {
    let mut rig = Rig::new();
    let (old, _) = primary(&mut rig);
    let (mut v, _) = crash(&mut rig, Policy::Adopt);
    let d = v.create_domain(&mut rig.crash()).unwrap();
    watched(&mut rig, &old, |p| v.attach(p, DISK, Attachment::Domain(d))).unwrap();
    for i in 0..64 {
        v.map(&mut rig.crash(), d, CRASH.start + 0x900_0000 + i * 0x1000, 0x1000, true, true).unwrap();
    }
    for &(sid, iova, _) in old.iter().filter(|o| o.0 == DISK) {
        assert!(rig.dma(sid, iova, Access::Write).is_err(), "old IOVA {iova:#x} faults");
    }
}
