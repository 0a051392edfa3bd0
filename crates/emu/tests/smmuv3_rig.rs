//! Test rig for the SMMUv3 model: an SMMU over 64 MiB of RAM, programmed at raw MMIO offsets the way Linux's
//! `arm_smmu_device_reset` does, with stream tables, CDs and page tables written as raw words built from the
//! `iommu-spec` layouts.
//!
//! The other `smmuv3_*` tests include this file with `#[path]`; on its own it is an empty test crate.
#![allow(dead_code)]

use iommu_driver::PhysMem;
use iommu_emu::{
    dma_write, Access, DmaOutcome, FaultInfo, FrameRegion, Iommu, MmioDevice, PhysMemory, Smmuv3Config, Smmuv3Model,
    Translation,
};
use iommu_spec::smmuv3::{
    level_index, mair_idx, off, s2_memattr, Cd, Command, Cr0, Cr2, Event, L1Desc, QueueBase, QueuePtr, S1Pte, S2Pte,
    Ste, StrtabBase, StrtabBaseCfg, StrtabFmt, SyncCmd, TableDesc, CMDQ_ENT_SIZE, EVTQ_ENT_SIZE, STE_SIZE,
};

pub const RAM: u64 = 64 << 20;
/// Command queue: 256 entries (4 KiB).
pub const CMDQ: u64 = 0x10_0000;
pub const CMDQ_LOG2: u8 = 8;
/// Event queue: 16 entries (512 bytes), small enough to overflow in a test.
pub const EVTQ: u64 = 0x11_0000;
pub const EVTQ_LOG2: u8 = 4;
/// Where CMD_SYNC MSIs and interrupt MSIs land.
pub const MSI: u64 = 0x12_0000;
/// Stream tables (up to 4 MiB: a full 16-bit linear table).
pub const STRTAB: u64 = 0x40_0000;
/// Table pages come from here; data pages are chosen by the tests below 4 MiB or above 48 MiB.
pub const TABLES: std::ops::Range<u64> = (32 << 20)..(48 << 20);
/// Linux's stage-1 T0SZ for a 48-bit IOVA space.
pub const T0SZ: u8 = 16;
/// The stage-2 geometry of [`Rig::map_s2`].
pub const S2_T0SZ: u8 = 24;
pub const S2_SL0: u8 = 1;

pub struct Rig {
    pub mem: PhysMemory,
    pub smmu: Smmuv3Model,
    pub frames: FrameRegion,
}

impl Rig {
    pub fn new(cfg: Smmuv3Config) -> Self {
        Rig { mem: PhysMemory::contiguous(0..RAM), smmu: Smmuv3Model::new(cfg), frames: FrameRegion::new(TABLES) }
    }

    pub fn r32(&mut self, off: usize) -> u32 {
        self.smmu.mmio_read(&mut self.mem, off, 4) as u32
    }
    pub fn r64(&mut self, off: usize) -> u64 {
        self.smmu.mmio_read(&mut self.mem, off, 8)
    }
    pub fn w32(&mut self, off: usize, v: u32) {
        self.smmu.mmio_write(&mut self.mem, off, 4, v as u64)
    }
    pub fn w64(&mut self, off: usize, v: u64) {
        self.smmu.mmio_write(&mut self.mem, off, 8, v)
    }

    /// Write CR0 and wait for CR0ACK, as `arm_smmu_write_reg_sync` does.
    pub fn cr0(&mut self, v: Cr0) {
        self.w32(off::CR0, v.into_bits());
        assert_eq!(self.r32(off::CR0ACK), v.into_bits(), "CR0ACK follows CR0");
    }

    pub fn cr0_now(&mut self) -> Cr0 {
        Cr0::from_bits(self.r32(off::CR0))
    }

    /// A zeroed table page.
    pub fn page(&mut self) -> u64 {
        let pa = self.frames.alloc().expect("table pages");
        self.mem.zero_page(pa).unwrap();
        pa
    }

    pub fn write_words(&mut self, pa: u64, words: &[u64]) {
        for (i, w) in words.iter().enumerate() {
            self.mem.write_u64(pa + i as u64 * 8, *w).unwrap();
        }
    }

    // ---- bring-up, in Linux's order ----

    /// Command and event queues programmed and enabled (SMMUEN untouched), CR2 as Linux writes it.
    pub fn queues(&mut self) {
        self.w32(off::CR2, Cr2::new().with_recinvsid(true).with_ptm(true).into_bits());
        self.w64(off::CMDQ_BASE, QueueBase::from_base(CMDQ, CMDQ_LOG2, true).into_bits());
        self.w32(off::CMDQ_PROD, 0);
        self.w32(off::CMDQ_CONS, 0);
        self.w64(off::EVTQ_BASE, QueueBase::from_base(EVTQ, EVTQ_LOG2, true).into_bits());
        self.w32(off::EVTQ_PROD, 0);
        self.w32(off::EVTQ_CONS, 0);
        let c = self.cr0_now().with_cmdqen(true).with_evtqen(true);
        self.cr0(c);
    }

    pub fn strtab_linear(&mut self, log2size: u8) {
        self.w64(off::STRTAB_BASE, StrtabBase::from_table(STRTAB, true).into_bits());
        let cfg = StrtabBaseCfg::new().with_fmt(StrtabFmt::Linear).with_log2size(log2size);
        self.w32(off::STRTAB_BASE_CFG, cfg.into_bits());
    }

    pub fn strtab_2lvl(&mut self, log2size: u8, split: u8) {
        self.w64(off::STRTAB_BASE, StrtabBase::from_table(STRTAB, true).into_bits());
        let cfg = StrtabBaseCfg::new().with_fmt(StrtabFmt::TwoLevel).with_log2size(log2size).with_split(split);
        self.w32(off::STRTAB_BASE_CFG, cfg.into_bits());
    }

    pub fn enable(&mut self) {
        let c = self.cr0_now().with_smmuen(true);
        self.cr0(c);
    }

    /// A linear table of 2^8 streams, queues on, translation on.
    pub fn linear() -> Self {
        let mut rig = Rig::new(Smmuv3Config::default());
        rig.strtab_linear(8);
        rig.queues();
        rig.enable();
        rig
    }

    pub fn set_ste_linear(&mut self, sid: u32, ste: Ste) {
        self.write_words(STRTAB + sid as u64 * STE_SIZE, &ste.0);
    }

    /// L1 descriptor `idx` of the 2-level table at STRTAB.
    pub fn set_l1(&mut self, idx: u32, desc: L1Desc) {
        self.mem.write_u64(STRTAB + idx as u64 * 8, desc.into_bits()).unwrap();
    }

    /// A stage-1 STE for a CD (written to a new page) translating through `ttb0` with ASID `asid`.
    pub fn s1_ste(&mut self, asid: u16, ttb0: u64) -> Ste {
        let cd_pa = self.page();
        self.write_words(cd_pa, &Cd::s1(asid, ttb0, T0SZ, 5, mair_idx::LINUX_MAIR).0);
        Ste::s1(cd_pa, iommu_spec::smmuv3::S1Fmt::Linear, 0, iommu_spec::smmuv3::S1Dss::Terminate)
    }

    // ---- commands and events ----

    /// Post `cmds` at PROD and write PROD, as `arm_smmu_cmdq_issue_cmdlist` does.
    pub fn submit(&mut self, cmds: &[[u64; 2]]) {
        let mut prod = QueuePtr(self.r32(off::CMDQ_PROD));
        for c in cmds {
            let pa = CMDQ + prod.index(CMDQ_LOG2 as u32) as u64 * CMDQ_ENT_SIZE;
            self.write_words(pa, c);
            prod = prod.next(CMDQ_LOG2 as u32);
        }
        self.w32(off::CMDQ_PROD, prod.0);
    }

    pub fn cmds(&mut self, cmds: &[Command]) {
        let raw: Vec<[u64; 2]> = cmds.iter().map(|c| c.encode()).collect();
        self.submit(&raw);
    }

    /// Post `cmds` and a polled CMD_SYNC, and check the queue drained.
    pub fn cmds_sync(&mut self, cmds: &[Command]) {
        let mut all = cmds.to_vec();
        all.push(Command::Sync(SyncCmd::poll()));
        self.cmds(&all);
        assert_eq!(self.r32(off::CMDQ_CONS), self.r32(off::CMDQ_PROD), "queue drained");
    }

    /// Event records between EVTQ_CONS and EVTQ_PROD, consumed.
    pub fn events(&mut self) -> Vec<Event> {
        let l = EVTQ_LOG2 as u32;
        let prod = QueuePtr(self.r32(off::EVTQ_PROD));
        let mut cons = QueuePtr(self.r32(off::EVTQ_CONS));
        let mut out = Vec::new();
        while !iommu_spec::smmuv3::queue_empty(prod, cons, l) {
            let pa = EVTQ + cons.index(l) as u64 * EVTQ_ENT_SIZE;
            let w: Vec<u64> = (0..4).map(|i| self.mem.read_u64(pa + i * 8).unwrap()).collect();
            out.push(Event([w[0], w[1], w[2], w[3]]));
            cons = cons.next(l);
        }
        self.w32(off::EVTQ_CONS, cons.0);
        out
    }

    // ---- page tables ----

    /// Write leaf `raw` for `va` at `leaf_level` of the table rooted at `root` (start level `start`, `ia_bits`
    /// input bits), creating table descriptors on the way.
    pub fn map_raw(&mut self, root: u64, start: u32, ia_bits: u32, va: u64, leaf_level: u32, raw: u64) {
        let mut table = root;
        for level in start..leaf_level {
            let slot = table + level_index(va, level, start, ia_bits) * 8;
            let d = TableDesc::from_bits(self.mem.read_u64(slot).unwrap());
            table = if d.valid() && d.table() {
                d.next_table()
            } else {
                let next = self.page();
                self.mem.write_u64(slot, TableDesc::to(next).into_bits()).unwrap();
                next
            };
        }
        let slot = table + level_index(va, leaf_level, start, ia_bits) * 8;
        self.mem.write_u64(slot, raw).unwrap();
    }

    /// A Linux-shaped stage-1 mapping in a 48-bit (T0SZ 16, level-0) table.
    pub fn map_s1(&mut self, ttb: u64, va: u64, pa: u64, level: u32, write: bool) {
        let raw = S1Pte::leaf(pa, level, mair_idx::CACHE, write).into_bits();
        self.map_raw(ttb, 0, 48, va, level, raw);
    }

    /// A Linux-shaped stage-2 mapping in a 40-bit IPA space walked from level 1 over two concatenated tables
    /// (S2T0SZ 24, S2SL0 1: [`S2_T0SZ`], [`S2_SL0`]), as Linux lays out a stage-2 table.
    pub fn map_s2(&mut self, ttb: u64, ipa: u64, pa: u64, level: u32, rw: (bool, bool)) {
        let raw = S2Pte::leaf(pa, level, s2_memattr::OIWB, rw.0, rw.1).into_bits();
        self.map_raw(ttb, 1, 40, ipa, level, raw);
    }

    /// Two contiguous zeroed pages: a concatenated stage-2 start level.
    pub fn s2_root(&mut self) -> u64 {
        let t = self.page();
        let t2 = self.page();
        assert_eq!(t2, t + 0x1000, "concatenated tables are contiguous");
        t
    }

    // ---- DMA ----

    pub fn translate(&mut self, sid: u32, iova: u64, access: Access) -> Translation {
        self.smmu.translate(&mut self.mem, sid, iova, access)
    }

    pub fn phys(&mut self, sid: u32, iova: u64, access: Access) -> Option<u64> {
        match self.translate(sid, iova, access) {
            Translation::Ok { phys } => Some(phys),
            Translation::Fault(_) => None,
        }
    }

    /// The fault of a translation that must fault.
    pub fn fault(&mut self, sid: u32, iova: u64, access: Access) -> FaultInfo {
        match self.translate(sid, iova, access) {
            Translation::Fault(f) => f,
            Translation::Ok { phys } => panic!("expected a fault, got {phys:#x}"),
        }
    }

    pub fn dma_write(&mut self, sid: u32, iova: u64, data: &[u8]) -> DmaOutcome {
        dma_write(&mut self.smmu, &mut self.mem, sid, iova, data)
    }
}
