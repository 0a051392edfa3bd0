//! Test rig for the AMD-Vi model: a unit over 64 MiB of RAM, programmed at raw MMIO offsets the way Linux's
//! `drivers/iommu/amd/init.c` does, with tables written as raw entries built from the `iommu-spec` layouts.
//!
//! The other `amdvi_*` tests include this file with `#[path]`; on its own it is an empty test crate.
#![allow(dead_code)]

use iommu_driver::PhysMem;
use iommu_emu::{dma_read, dma_write, Access, AmdviConfig, AmdviModel, DmaOutcome, Iommu, MmioDevice, PhysMemory};
use iommu_emu::{FaultInfo, Translation};
use iommu_spec::amdvi::{
    from_qwords, level_index, off, CompletionWait, Control, DevTableBase, Dte, Event, IoPte, PagingMode, RingBase,
    RingPtr, Status, CMD_SIZE, EVENT_SIZE,
};

pub const RAM: u64 = 64 << 20;
/// Leaf permissions (IR, IW).
pub type Rw = (bool, bool);
pub const RW: Rw = (true, true);
pub const RO: Rw = (true, false);
/// Linux's full-size device table (2 MiB, 65536 entries): sparse memory makes it free.
pub const DEV_TABLE: u64 = 0x100_0000;
/// Command buffer and event log, 512 entries (8 KiB) each, as Linux sizes them.
pub const CMD_BUF: u64 = 0x20_0000;
pub const EVT_LOG: u64 = 0x21_0000;
/// The completion-wait semaphore page (Linux `cmd_sem`).
pub const SEM: u64 = 0x22_0000;
/// Page-table pages come from here; data pages are chosen by the tests below 16 MiB.
pub const TABLES: u64 = 32 << 20;

pub struct Rig {
    pub mem: PhysMemory,
    pub iommu: AmdviModel,
    next_table: u64,
    sem_seq: u64,
}

impl Rig {
    /// A unit out of reset, nothing programmed.
    pub fn bare(cfg: AmdviConfig) -> Self {
        Rig { mem: PhysMemory::contiguous(0..RAM), iommu: AmdviModel::new(cfg), next_table: TABLES, sem_seq: 0 }
    }

    /// A unit programmed like Linux's `early_enable_iommu`: device table, command buffer, event log, then
    /// EventLogEn, CmdBufEn and IommuEn.
    pub fn new(cfg: AmdviConfig) -> Self {
        let mut rig = Rig::bare(cfg);
        rig.w64(off::DEV_TABLE_BASE, DevTableBase::from_table(DEV_TABLE, 2 << 20).into_bits());
        rig.w64(off::CMD_BUF_BASE, RingBase::from_ring(CMD_BUF, RingBase::LINUX_LEN).into_bits());
        rig.w64(off::EVENT_LOG_BASE, RingBase::from_ring(EVT_LOG, RingBase::LINUX_LEN).into_bits());
        rig.enable(Control::new().with_event_log_en(true).with_cmd_buf_en(true).with_iommu_en(true));
        rig
    }

    pub fn linux() -> Self {
        Rig::new(AmdviConfig::default())
    }

    pub fn r32(&mut self, off: usize) -> u32 {
        self.iommu.mmio_read(&mut self.mem, off, 4) as u32
    }
    pub fn r64(&mut self, off: usize) -> u64 {
        self.iommu.mmio_read(&mut self.mem, off, 8)
    }
    pub fn w32(&mut self, off: usize, v: u32) {
        self.iommu.mmio_write(&mut self.mem, off, 4, v as u64)
    }
    pub fn w64(&mut self, off: usize, v: u64) {
        self.iommu.mmio_write(&mut self.mem, off, 8, v)
    }

    pub fn control(&mut self) -> Control {
        Control::from_bits(self.r64(off::CONTROL))
    }
    pub fn status(&mut self) -> Status {
        Status::from_bits(self.r64(off::STATUS))
    }

    /// Read-modify-write Control, setting `bits` (Linux `iommu_feature_enable`).
    pub fn enable(&mut self, bits: Control) {
        let c = self.r64(off::CONTROL) | bits.into_bits();
        self.w64(off::CONTROL, c);
    }
    /// Read-modify-write Control, clearing `bits` (Linux `iommu_feature_disable`).
    pub fn disable(&mut self, bits: Control) {
        let c = self.r64(off::CONTROL) & !bits.into_bits();
        self.w64(off::CONTROL, c);
    }

    /// A zeroed page for page tables.
    pub fn page(&mut self) -> u64 {
        let pa = self.next_table;
        self.next_table += 0x1000;
        self.mem.zero_page(pa).unwrap();
        pa
    }

    pub fn set_dte(&mut self, devid: u16, dte: Dte) {
        self.mem.write(DEV_TABLE + devid as u64 * 32, &dte.to_le_bytes()).unwrap();
    }

    pub fn dte(&mut self, devid: u16) -> Dte {
        let mut b = [0u8; 32];
        self.mem.read(DEV_TABLE + devid as u64 * 32, &mut b).unwrap();
        Dte::from_le_bytes(&b)
    }

    /// A translating DTE for `devid` in `domain` with a fresh `mode`-level table; returns the root.
    pub fn attach(&mut self, devid: u16, domain: u16, mode: u8) -> u64 {
        let root = self.page();
        self.set_dte(devid, Dte::translated(root, PagingMode::from_bits(mode), domain, true, true));
        root
    }

    /// Map `iova` -> `pa` in the `mode`-level table at `root` with `leaf` placed at `leaf_level`. Directory entries
    /// are created with IR/IW like Linux's `PM_LEVEL_PDE`.
    pub fn map_entry(&mut self, root: u64, mode: u32, iova: u64, leaf_level: u32, leaf: IoPte) {
        let table = self.table_for(root, mode, iova, leaf_level);
        self.mem.write_u64(table + level_index(iova, leaf_level) as u64 * 8, leaf.into_bits()).unwrap();
    }

    /// Map a natural-size page (4 KiB at level 1, 2 MiB at 2, 1 GiB at 3).
    pub fn map(&mut self, root: u64, mode: u32, iova: u64, pa: u64, leaf_level: u32, (ir, iw): Rw) {
        self.map_entry(root, mode, iova, leaf_level, IoPte::leaf(pa, ir, iw));
    }

    /// The table at `leaf_level` on the path of `iova`, creating the path.
    pub fn table_for(&mut self, root: u64, mode: u32, iova: u64, leaf_level: u32) -> u64 {
        let mut table = root;
        for level in (leaf_level + 1..=mode).rev() {
            let slot = table + level_index(iova, level) as u64 * 8;
            let pde = IoPte::from_bits(self.mem.read_u64(slot).unwrap());
            table = if pde.present() {
                pde.phys()
            } else {
                let next = self.page();
                self.mem.write_u64(slot, IoPte::pde(next, (level - 1) as u8).into_bits()).unwrap();
                next
            };
        }
        table
    }

    // ---- DMA ----

    pub fn translate(&mut self, devid: u16, iova: u64, access: Access) -> Translation {
        self.iommu.translate(&mut self.mem, devid as u32, iova, access)
    }

    pub fn phys(&mut self, devid: u16, iova: u64, access: Access) -> Option<u64> {
        match self.translate(devid, iova, access) {
            Translation::Ok { phys } => Some(phys),
            Translation::Fault(_) => None,
        }
    }

    pub fn fault(&mut self, devid: u16, iova: u64, access: Access) -> FaultInfo {
        match self.translate(devid, iova, access) {
            Translation::Fault(f) => f,
            Translation::Ok { phys } => panic!("expected a fault at {iova:#x}, got {phys:#x}"),
        }
    }

    pub fn dma_write(&mut self, devid: u16, iova: u64, data: &[u8]) -> DmaOutcome {
        dma_write(&mut self.iommu, &mut self.mem, devid as u32, iova, data)
    }

    pub fn dma_read(&mut self, devid: u16, iova: u64, buf: &mut [u8]) -> DmaOutcome {
        dma_read(&mut self.iommu, &mut self.mem, devid as u32, iova, buf)
    }

    // ---- command buffer ----

    /// Append commands at the tail and write the new tail with a 32-bit write, as Linux's `iommu_queue_command`.
    pub fn submit(&mut self, cmds: &[u128]) {
        let ring = RingBase::from_bits(self.r64(off::CMD_BUF_BASE));
        let mut tail = RingPtr::from_bits(self.r64(off::CMD_TAIL)).index() as u32;
        for c in cmds {
            self.mem.write_u128(ring.ring() + tail as u64 * CMD_SIZE, *c).unwrap();
            tail = (tail + 1) % ring.entries();
        }
        self.w32(off::CMD_TAIL, RingPtr::from_index(tail).into_bits() as u32);
    }

    /// A COMPLETION_WAIT storing the next sequence number at [`SEM`] (Linux `build_completion_wait`); returns it.
    pub fn next_wait(&mut self) -> (u128, u64) {
        self.sem_seq += 1;
        (CompletionWait::store(SEM, self.sem_seq).into_bits(), self.sem_seq)
    }

    /// Submit `cmds` then a completion wait; whether the semaphore arrived (Linux `iommu_completion_wait`).
    pub fn run(&mut self, cmds: &[u128]) -> bool {
        let (wait, seq) = self.next_wait();
        let mut all = cmds.to_vec();
        all.push(wait);
        self.submit(&all);
        self.mem.read_u64(SEM).unwrap() == seq
    }

    pub fn cmd_head(&mut self) -> u32 {
        RingPtr::from_bits(self.r64(off::CMD_HEAD)).index() as u32
    }

    // ---- event log ----

    /// Drain the event log from head to tail, as Linux's `iommu_poll_events`.
    pub fn events(&mut self) -> Vec<Event> {
        let ring = RingBase::from_bits(self.r64(off::EVENT_LOG_BASE));
        let tail = RingPtr::from_bits(self.r64(off::EVENT_TAIL)).index() as u32;
        let mut head = RingPtr::from_bits(self.r64(off::EVENT_HEAD)).index() as u32;
        let mut out = Vec::new();
        while head != tail {
            let pa = ring.ring() + head as u64 * EVENT_SIZE;
            let raw = from_qwords([self.mem.read_u64(pa).unwrap(), self.mem.read_u64(pa + 8).unwrap()]);
            out.push(Event::decode(raw));
            head = (head + 1) % ring.entries();
            self.w32(off::EVENT_HEAD, RingPtr::from_index(head).into_bits() as u32);
        }
        out
    }
}
