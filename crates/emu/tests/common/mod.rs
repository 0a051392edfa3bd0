//! Test rig: a VT-d unit over 64 MiB of RAM, with helpers that write raw table entries built from the
//! `iommu-spec` layouts, the way a driver would.
#![allow(dead_code)]

use iommu_driver::PhysMem;
use iommu_emu::{
    dma_read, dma_write, Access, DmaOutcome, FrameRegion, Iommu, MmioDevice, PhysMemory, Translation, VtdConfig,
    VtdModel,
};
use iommu_spec::vtd::{
    level_index, off, to_qwords, ContextEntry, Gcmd, Gsts, IqPtr, Iqa, PasidDirEntry, PasidEntry, RootEntry, RtAddr,
    ScalableContextEntry, ScalableRootEntry, SlPte, TranslationType,
};

pub const RAM: u64 = 64 << 20;
/// Leaf permissions (R, W).
pub type Rw = (bool, bool);
pub const RW: Rw = (true, true);
pub const RO: Rw = (true, false);

/// Table pages come from here; data pages are chosen by the tests below 32 MiB.
pub const TABLES: std::ops::Range<u64> = (32 << 20)..(48 << 20);

pub struct Rig {
    pub mem: PhysMemory,
    pub vtd: VtdModel,
    pub frames: FrameRegion,
}

impl Rig {
    pub fn new(cfg: VtdConfig) -> Self {
        Rig { mem: PhysMemory::contiguous(0..RAM), vtd: VtdModel::new(cfg), frames: FrameRegion::new(TABLES) }
    }

    pub fn modern() -> Self {
        Rig::new(VtdConfig::default())
    }

    pub fn legacy() -> Self {
        Rig::new(VtdConfig::legacy_only())
    }

    pub fn r32(&mut self, off: usize) -> u32 {
        self.vtd.mmio_read(&mut self.mem, off, 4) as u32
    }
    pub fn r64(&mut self, off: usize) -> u64 {
        self.vtd.mmio_read(&mut self.mem, off, 8)
    }
    pub fn w32(&mut self, off: usize, v: u32) {
        self.vtd.mmio_write(&mut self.mem, off, 4, v as u64)
    }
    pub fn w64(&mut self, off: usize, v: u64) {
        self.vtd.mmio_write(&mut self.mem, off, 8, v)
    }

    pub fn gsts(&mut self) -> Gsts {
        Gsts::from_bits(self.r32(off::GSTS))
    }

    /// Write GCMD as Linux does: the persistent state of GSTS plus `cmd`'s bits.
    pub fn gcmd(&mut self, cmd: Gcmd) {
        let st = self.gsts().persistent_cmd();
        self.w32(off::GCMD, st.into_bits() | cmd.into_bits());
    }

    /// A zeroed table page.
    pub fn page(&mut self) -> u64 {
        let pa = self.frames.alloc().expect("table pages");
        self.mem.zero_page(pa).unwrap();
        pa
    }

    /// RTADDR <- `root`, GCMD.SRTP, then TE on.
    pub fn enable(&mut self, root: u64, smt: bool) {
        self.w64(off::RTADDR, RtAddr::from_table(root, smt).into_bits());
        self.gcmd(Gcmd::new().with_srtp(true));
        assert!(self.gsts().rtps());
        self.gcmd(Gcmd::new().with_te(true));
        assert!(self.gsts().tes());
    }

    pub fn translate(&mut self, sid: u16, iova: u64, access: Access) -> Translation {
        self.vtd.translate(&mut self.mem, sid as u32, iova, access)
    }

    pub fn phys(&mut self, sid: u16, iova: u64, access: Access) -> Option<u64> {
        match self.translate(sid, iova, access) {
            Translation::Ok { phys } => Some(phys),
            Translation::Fault(_) => None,
        }
    }

    /// The fault code of a translation that must fault.
    pub fn fault_code(&mut self, sid: u16, iova: u64, access: Access) -> u16 {
        match self.translate(sid, iova, access) {
            Translation::Fault(f) => f.code,
            Translation::Ok { phys } => panic!("expected a fault, got {phys:#x}"),
        }
    }

    pub fn dma_write(&mut self, sid: u16, iova: u64, data: &[u8]) -> DmaOutcome {
        dma_write(&mut self.vtd, &mut self.mem, sid as u32, iova, data)
    }

    pub fn dma_read(&mut self, sid: u16, iova: u64, buf: &mut [u8]) -> DmaOutcome {
        dma_read(&mut self.vtd, &mut self.mem, sid as u32, iova, buf)
    }

    // ---- legacy tables ----

    /// Point root entry `bus` of `root` at a (new if needed) context table and return the table.
    pub fn legacy_ctx_table(&mut self, root: u64, bus: u8) -> u64 {
        let re = RootEntry::from_bits(self.mem.read_u128(root + bus as u64 * 16).unwrap());
        if re.present() {
            return re.context_table();
        }
        let ct = self.page();
        let re = RootEntry::new().with_context_table(ct);
        self.mem.write_u128(root + bus as u64 * 16, re.into_bits()).unwrap();
        ct
    }

    pub fn set_legacy_context(&mut self, root: u64, sid: u16, ce: ContextEntry) {
        let ct = self.legacy_ctx_table(root, (sid >> 8) as u8);
        self.mem.write_u128(ct + (sid & 0xff) as u64 * 16, ce.into_bits()).unwrap();
    }

    /// A legacy context entry translating through `pt` with `levels` levels in domain `did`.
    pub fn legacy_sl_context(pt: u64, levels: u32, did: u16) -> ContextEntry {
        ContextEntry::new()
            .with_present(true)
            .with_tt(TranslationType::MultiLevel)
            .with_page_table(pt)
            .with_aw((levels - 2) as u8)
            .with_did(did)
    }

    // ---- scalable tables ----

    /// A scalable-mode context for `sid` whose RID_PASID (0) entry is `pe`.
    pub fn set_sm_context(&mut self, root: u64, sid: u16, pe: PasidEntry, fpd: bool) {
        let bus = (sid >> 8) as u64;
        let devfn = (sid & 0xff) as u64;
        let mut re = ScalableRootEntry::from_bits(self.mem.read_u128(root + bus * 16).unwrap());
        let lower = devfn < 0x80;
        let present = if lower { re.lp() } else { re.up() };
        let ct = if present {
            if lower {
                re.lower_table()
            } else {
                re.upper_table()
            }
        } else {
            let ct = self.page();
            re = if lower { re.with_lp(true).with_lctp(ct >> 12) } else { re.with_up(true).with_uctp(ct >> 12) };
            self.mem.write_u128(root + bus * 16, re.into_bits()).unwrap();
            ct
        };
        let dir = self.page();
        let table = self.page();
        let pde = PasidDirEntry::new().with_present(true).with_ptp(table >> 12);
        self.mem.write_u64(dir, pde.into_bits()).unwrap();
        for (i, q) in pe.0.iter().enumerate() {
            self.mem.write_u64(table + i as u64 * 8, *q).unwrap();
        }
        let ce =
            ScalableContextEntry::new().with_present(true).with_fpd(fpd).with_pasiddirptr(dir >> 12).with_rid_pasid(0);
        self.mem.write_u128(ct + (devfn & 0x7f) * 32, ce.into_bits()).unwrap();
    }

    // ---- second-level tables ----

    /// Map `iova` -> `pa` in the `levels`-level table at `root` with a page at `leaf_level` (1 = 4 KiB,
    /// 2 = 2 MiB, 3 = 1 GiB). Intermediate tables are created R/W as Linux does.
    pub fn map(&mut self, root: u64, levels: u32, iova: u64, pa: u64, leaf_level: u32, rw: Rw) {
        let (r, w) = rw;
        let mut table = root;
        for level in (leaf_level + 1..=levels).rev() {
            let slot = table + level_index(iova, level) as u64 * 8;
            let pte = SlPte::from_bits(self.mem.read_u64(slot).unwrap());
            table = if pte.present() {
                pte.phys()
            } else {
                let next = self.page();
                self.mem.write_u64(slot, SlPte::entry(next, true, true).into_bits()).unwrap();
                next
            };
        }
        let leaf = SlPte::entry(pa, r, w).with_ps(leaf_level > 1);
        let slot = table + level_index(iova, leaf_level) as u64 * 8;
        self.mem.write_u64(slot, leaf.into_bits()).unwrap();
    }

    /// The slot of the level-`leaf_level` entry of `iova` (the table path must exist).
    pub fn pte_slot(&mut self, root: u64, levels: u32, iova: u64, leaf_level: u32) -> u64 {
        let mut table = root;
        for level in (leaf_level + 1..=levels).rev() {
            let pte = SlPte::from_bits(self.mem.read_u64(table + level_index(iova, level) as u64 * 8).unwrap());
            table = pte.phys();
        }
        table + level_index(iova, leaf_level) as u64 * 8
    }

    // ---- invalidation queue ----

    /// Enable QI on a one-page queue at a new page (IQT <- 0, IQA, GCMD.QIE), as Linux does.
    pub fn enable_qi(&mut self, wide: bool) -> u64 {
        let q = self.page();
        self.w64(off::IQT, 0);
        let iqa = Iqa::new().with_iqa(q >> 12).with_dw(wide).with_qs(0);
        self.w64(off::IQA, iqa.into_bits());
        self.gcmd(Gcmd::new().with_qie(true));
        assert!(self.gsts().qies());
        q
    }

    /// Append 128-bit descriptors (zero-extended in 256-bit mode) at IQT and write the new tail.
    pub fn submit(&mut self, descs: &[u128]) {
        let iqa = Iqa::from_bits(self.r64(off::IQA));
        let wide = iqa.dw();
        let size = iqa.descriptor_size() as u64;
        let entries = iqa.entries() as u16;
        let mut tail = IqPtr::from_bits(self.r64(off::IQT)).index(wide);
        for d in descs {
            let pa = iqa.base() + tail as u64 * size;
            let [lo, hi] = to_qwords(*d);
            self.mem.write_u64(pa, lo).unwrap();
            self.mem.write_u64(pa + 8, hi).unwrap();
            if wide {
                self.mem.write_u128(pa + 16, 0).unwrap();
            }
            tail = (tail + 1) % entries;
        }
        self.w64(off::IQT, IqPtr::from_index(tail, wide).into_bits());
    }

    pub fn iqh(&mut self) -> u16 {
        let wide = Iqa::from_bits(self.r64(off::IQA)).dw();
        IqPtr::from_bits(self.r64(off::IQH)).index(wide)
    }
}

/// A legacy second-level setup: root table with `sid` translated through a new `levels`-level table
/// in domain `did`; translation enabled. Returns (root, page-table root).
pub fn legacy_rig(levels: u32, sid: u16, did: u16) -> (Rig, u64, u64) {
    let mut rig = Rig::legacy();
    let root = rig.page();
    let pt = rig.page();
    rig.set_legacy_context(root, sid, Rig::legacy_sl_context(pt, levels, did));
    rig.enable(root, false);
    (rig, root, pt)
}
