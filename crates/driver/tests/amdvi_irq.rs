//! Interrupt remapping across the crash on AMD-Vi: the interrupt tables stay in place with the reused device
//! table (also under a failed SNP shutdown, the base registers locked); attach and containment never touch a
//! DTE's interrupt half; new entries take free slots; hostile interrupt halves and entries are refused and made
//! inert in the unit.

use iommu_driver::amdvi::{AmdOptions, Amdvi, Attachment};
use iommu_driver::irq::{IrqHandover, IrqTarget, IrtRefusal, MsiMessage};
use iommu_driver::{BootEnv, Mmio, PhysMem, Policy};
use iommu_emu::snp::{SnpCommand, SnpFirmware};
use iommu_emu::{AmdviConfig, AmdviModel, EmuPlatform, FrameRegion, Interrupt, InterruptRemap, PhysMemory};
use iommu_spec::amdvi::{off, DevTableBase, Dte, IntCtl, IrteGa};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const CRASH: std::ops::Range<u64> = (3 * GIB)..(3 * GIB + 256 * MIB);
const NIC: u16 = 0x0010;
const DISK: u16 = 0x0018;

struct Rig {
    mem: PhysMemory,
    unit: AmdviModel,
    fw: SnpFirmware,
    primary: FrameRegion,
    crash: FrameRegion,
    snp: bool,
}

impl Rig {
    fn new(snp: bool) -> Self {
        Rig {
            mem: PhysMemory::contiguous(0..4 * GIB),
            unit: AmdviModel::new(if snp { AmdviConfig::snp() } else { AmdviConfig::default() }),
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
            mem_encrypt: self.snp,
            c_bit: 0,
        }
    }
    fn primary(&mut self) -> EmuPlatform<'_, AmdviModel> {
        EmuPlatform::new(&mut self.unit, &mut self.mem, &mut self.primary)
    }
    fn crash(&mut self) -> EmuPlatform<'_, AmdviModel> {
        EmuPlatform::new(&mut self.unit, &mut self.mem, &mut self.crash)
    }
    fn dte_at(&mut self, devid: u16) -> u64 {
        DevTableBase::from_bits(self.primary().read64(off::DEV_TABLE_BASE)).table() + 32 * devid as u64
    }
    fn dte(&mut self, devid: u16) -> Dte {
        let at = self.dte_at(devid);
        Dte([0, 1, 2, 3].map(|i| self.mem.read_u64(at + 8 * i).unwrap()))
    }
    fn raise(&mut self, devid: u16, m: MsiMessage) -> Interrupt {
        self.unit.interrupt(&mut self.mem, devid as u32, m.addr, m.data)
    }
}

/// The primary kernel (SNP hosts: SNP_INIT locks the base registers): the NIC and the disk each with an
/// interrupt and a DMA domain.
fn primary(rig: &mut Rig) -> (MsiMessage, MsiMessage) {
    let env = rig.env(false);
    let mut v = Amdvi::init(&mut rig.primary(), &env, AmdOptions::default()).unwrap();
    if rig.snp {
        assert!(rig.fw.command(SnpCommand::InitEx).ok());
        rig.unit.set_snp_lock(rig.fw.iommu_locked());
    }
    let mut msgs = Vec::new();
    for (devid, vector) in [(NIC, 0x30), (DISK, 0x31)] {
        let d = v.create_domain(&mut rig.primary()).unwrap();
        v.attach(&mut rig.primary(), devid, Attachment::Domain(d)).unwrap();
        let m = v.alloc_irq(&mut rig.primary(), devid, IrqTarget { apic_id: 1, vector }).unwrap().unwrap();
        assert_eq!(rig.raise(devid, m), Interrupt::Delivered { dest: 1, vector, remapped: true });
        msgs.push(m);
    }
    (msgs[0], msgs[1])
}

fn crash(rig: &mut Rig, policy: Policy) -> Amdvi {
    // SNP hosts: the shutdown at panic failed, so the lock stays.
    let env = rig.env(true);
    Amdvi::init_crash(&mut rig.crash(), &env, AmdOptions::default(), policy).unwrap().0
}

#[test]
fn adopt_keeps_tables_in_place_through_attach_and_containment() {
    for snp in [false, true] {
        let mut rig = Rig::new(snp);
        let (nic, disk) = primary(&mut rig);
        let nic_q2 = rig.dte(NIC).0[2];
        let mut v = crash(&mut rig, Policy::Adopt);
        assert_eq!(*v.irq_handover(), IrqHandover::Kept { live: 2, refused: vec![], tables_refused: vec![] });
        v.contain(&mut rig.crash(), NIC).unwrap();
        let d = v.create_domain(&mut rig.crash()).unwrap();
        v.attach(&mut rig.crash(), DISK, Attachment::Domain(d)).unwrap();
        assert_eq!(rig.dte(NIC).0[2], nic_q2, "containment kept the interrupt half");
        assert_eq!(rig.raise(NIC, nic), Interrupt::Delivered { dest: 1, vector: 0x30, remapped: true }, "snp {snp}");
        assert_eq!(rig.raise(DISK, disk), Interrupt::Delivered { dest: 1, vector: 0x31, remapped: true });
        // The crash kernel's disk driver gets a new entry in the disk's table, beside the live one.
        let new = v.alloc_irq(&mut rig.crash(), DISK, IrqTarget { apic_id: 0, vector: 0x40 }).unwrap().unwrap();
        assert_ne!(new, disk);
        assert_eq!(rig.raise(DISK, new), Interrupt::Delivered { dest: 0, vector: 0x40, remapped: true });
        assert_eq!(rig.raise(DISK, disk), Interrupt::Delivered { dest: 1, vector: 0x31, remapped: true });
    }
}

#[test]
fn reset_abort_loses_the_tables_and_old_messages_arrive_as_their_raw_index() {
    let mut rig = Rig::new(false);
    let (_, disk) = primary(&mut rig);
    let v = crash(&mut rig, Policy::ResetAbort);
    assert_eq!(*v.irq_handover(), IrqHandover::Fresh);
    // The fresh device table has IV clear: the old message (address 0xFEE00000, data = IRTE index) is forwarded
    // unmapped, to APIC 0 with the index as its vector — misrouted.
    assert_eq!(rig.raise(DISK, disk), Interrupt::Delivered { dest: 0, vector: disk.data as u8, remapped: false });
}

#[test]
fn hostile_interrupt_halves_and_entries_are_made_inert() {
    let mut rig = Rig::new(false);
    let (nic, disk) = primary(&mut rig);
    // The NIC's DTE claims 4096 entries (reserved IntTabLen); the disk's entry 0 has reserved bits.
    let at = rig.dte_at(NIC);
    let q2 = rig.dte(NIC).qw2().with_int_tab_len(12);
    rig.mem.write_u64(at + 16, q2.into_bits()).unwrap();
    let root = rig.dte(DISK).int_table();
    let e = IrteGa([rig.mem.read_u64(root).unwrap(), rig.mem.read_u64(root + 8).unwrap()]);
    rig.mem.write_u64(root + 8, e.0[1] | 1 << 8).unwrap();
    let v = crash(&mut rig, Policy::Adopt);
    match v.irq_handover() {
        IrqHandover::Kept { live: 0, refused, tables_refused } => {
            assert_eq!((refused.len(), refused[0].device, refused[0].index), (1, Some(DISK), 0));
            assert!(matches!(tables_refused[..], [IrtRefusal::BadDte { device: NIC, .. }]));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rig.dte(NIC).int_ctl(), IntCtl::Abort);
    assert!(matches!(rig.raise(NIC, nic), Interrupt::Blocked(_)), "aborted, not forwarded");
    assert!(matches!(rig.raise(DISK, disk), Interrupt::Blocked(_)), "the refused entry is not live");
}

/// The DTEs whose interrupts adoption checks come from the scan, which lists only entries that let DMA through:
/// an entry that blocks DMA (Linux's default lower half) but remaps interrupts must still be found.
#[test]
fn a_dte_that_blocks_dma_still_has_its_interrupt_table_adopted() {
    let mut rig = Rig::new(false);
    let (nic, _) = primary(&mut rig);
    let at = rig.dte_at(NIC);
    rig.mem.write_u128(at, Dte::blocked(false).0[0] as u128).unwrap();
    let v = crash(&mut rig, Policy::Adopt);
    assert_eq!(*v.irq_handover(), IrqHandover::Kept { live: 2, refused: vec![], tables_refused: vec![] });
    assert_eq!(rig.raise(NIC, nic), Interrupt::Delivered { dest: 1, vector: 0x30, remapped: true });
}

#[test]
fn a_table_inside_the_crash_region_is_refused() {
    let mut rig = Rig::new(false);
    let (nic, _) = primary(&mut rig);
    let at = rig.dte_at(NIC);
    let inside = CRASH.start + 0x1000;
    let q2 = rig.dte(NIC).qw2().with_int_table_root(inside >> 6);
    rig.mem.write_u64(at + 16, q2.into_bits()).unwrap();
    let v = crash(&mut rig, Policy::Adopt);
    match v.irq_handover() {
        IrqHandover::Kept { tables_refused, .. } => {
            assert_eq!(tables_refused[..], [IrtRefusal::InCrashRegion { device: Some(NIC), addr: inside }])
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(rig.raise(NIC, nic), Interrupt::Blocked(_)));
}

#[test]
fn the_decode_reads_each_devices_table_once() {
    let mut rig = Rig::new(false);
    primary(&mut rig);
    // A second device naming the NIC's table: read once, not twice.
    let nic_q2 = rig.dte(NIC).0[2];
    let at = rig.dte_at(0x0028);
    rig.mem.write_u64(at, Dte::blocked(false).0[0]).unwrap();
    rig.mem.write_u64(at + 16, nic_q2).unwrap();
    let env = rig.env(false);
    let t = iommu_driver::irq::decode_amdvi(&mut rig.primary(), &env);
    assert!(t.remapping);
    let owners: Vec<_> = t.tables.iter().map(|&(_, d, n)| (d, n)).collect();
    assert_eq!(owners, [(Some(NIC), 512), (Some(DISK), 512)]);
    let seen: Vec<_> = t.entries.iter().map(|e| (e.source, e.index, e.vector, e.dest, e.targets_cpu())).collect();
    assert_eq!(seen, [(Some(NIC), 0, 0x30, 1, true), (Some(DISK), 0, 0x31, 1, true)]);
    assert_eq!(t.unused, 2 * 511);
}

#[test]
fn a_table_named_by_many_dtes_is_read_once_and_distinct_tables_past_the_bound_are_refused() {
    let mut rig = Rig::new(false);
    let (nic, _) = primary(&mut rig);
    // 200 devices name the NIC's table (aliases, or a hostile table repeating one pointer): read once.
    let nic_q2 = rig.dte(NIC).0[2];
    for devid in 0x100..0x100 + 200u16 {
        let at = rig.dte_at(devid);
        rig.mem.write_u64(at, Dte::blocked(false).0[0]).unwrap();
        rig.mem.write_u64(at + 16, nic_q2).unwrap();
    }
    // 200 more name distinct 2048-entry tables: more than adoption reads.
    for k in 0..200u64 {
        let devid = 0x400 + k as u16;
        let at = rig.dte_at(devid);
        rig.mem.write_u64(at, Dte::blocked(false).0[0]).unwrap();
        let q2 = Dte::default().with_int_remap(0x4000_0000 + k * 0x8000, 11).0[2];
        rig.mem.write_u64(at + 16, q2).unwrap();
    }
    let v = crash(&mut rig, Policy::Adopt);
    match v.irq_handover() {
        IrqHandover::Kept { live: 2, refused, tables_refused } => {
            assert!(refused.is_empty());
            let over: Vec<_> = tables_refused.iter().filter(|r| matches!(r, IrtRefusal::Budget { .. })).collect();
            // 128 tables of 2048 fit the bound; the NIC's and the disk's 512-entry ones took some of it.
            assert!(
                !over.is_empty() && over.len() < 200,
                "{} {:?}",
                over.len(),
                &tables_refused[..tables_refused.len().min(3)]
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rig.raise(NIC, nic), Interrupt::Delivered { dest: 1, vector: 0x30, remapped: true });
    let alias = MsiMessage { addr: nic.addr, data: nic.data };
    assert_eq!(rig.raise(0x100, alias), Interrupt::Delivered { dest: 1, vector: 0x30, remapped: true });
}

/// A table longer than a page is read a page at a time: an entry past the first page is kept or refused by its
/// own index, and a new interrupt never takes a slot a live entry there holds.
#[test]
fn entries_past_the_first_page_of_a_table_keep_their_own_indexes() {
    let mut rig = Rig::new(false);
    let (_, disk) = primary(&mut rig);
    let dte = rig.dte(DISK);
    let root = dte.int_table();
    assert!(dte.int_table_entries() >= 512, "the disk's table spans pages: {} entries", dte.int_table_entries());
    // The disk's live entry 0, copied to entry 300 (the second page); entry 400 gets reserved bits.
    let e = IrteGa([rig.mem.read_u64(root).unwrap(), rig.mem.read_u64(root + 8).unwrap()]);
    for (i, hi) in [(300u64, e.0[1]), (400, e.0[1] | 1 << 8)] {
        rig.mem.write_u64(root + 16 * i, e.0[0]).unwrap();
        rig.mem.write_u64(root + 16 * i + 8, hi).unwrap();
    }
    let mut v = crash(&mut rig, Policy::Adopt);
    match v.irq_handover() {
        IrqHandover::Kept { live: 3, refused, tables_refused } if tables_refused.is_empty() => {
            assert_eq!(refused.iter().map(|r| (r.device, r.index)).collect::<Vec<_>>(), [(Some(DISK), 400)]);
        }
        other => panic!("{other:?}"),
    }
    let at_300 = MsiMessage { data: 300, ..disk };
    assert_eq!(rig.raise(DISK, at_300), Interrupt::Delivered { dest: 1, vector: 0x31, remapped: true });
    assert!(matches!(rig.raise(DISK, MsiMessage { data: 400, ..disk }), Interrupt::Blocked(_)), "cleared in place");
    for vector in 0x40..0x50 {
        let new = v.alloc_irq(&mut rig.crash(), DISK, IrqTarget { apic_id: 0, vector }).unwrap().unwrap();
        assert!(new.data != 0 && new.data != 300, "a live slot handed out again: {new:?}");
    }
    assert_eq!(rig.raise(DISK, at_300), Interrupt::Delivered { dest: 1, vector: 0x31, remapped: true });
}
