//! The SMMUv3 driver: normal boot (Linux `arm_smmu_device_reset`), a 2-level stream table where IDR0
//! allows (else linear), stage-1 domains with one CD and an ASID each, bypass STEs for identity devices.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use iommu_spec::smmuv3::{
    l1_index, l2_index, mair_idx, off, span_for_split, Cd, Command, Cr0, Gbpa, Idr0, Idr1, L1Desc, QueueBase, S1Dss,
    S1Fmt, StLevel, Ste, StrtabBase, StrtabBaseCfg, StrtabFmt, TlbiScope,
};

use super::cmdq::CmdQueue;
use super::SmmuError;
use crate::ids::IdAllocator;
use crate::iova::IovaAllocator;
use crate::{FrameAlloc, Mmio, Platform};

/// StreamID bits a level-2 table resolves (Linux `STRTAB_SPLIT`).
pub const SPLIT: u8 = 8;
/// Command and event queues: 2^8 entries.
pub const QUEUE_LOG2: u8 = 8;
/// Stage-1 input size: T0SZ 16 = 48 bits, a 4-level walk from level 0 (Linux's default for DMA domains).
pub const T0SZ: u8 = 16;
/// Level-1 entries this driver allocates at most (Linux `STRTAB_MAX_L1_ENTRIES`).
pub const MAX_L1_ENTRIES: u64 = 1 << 17;
const CR_SPINS: u32 = 100_000;
/// Our stage-1 walks: T0SZ 16, a 4-level walk from level 0.
const S1_WALK: super::Vmsa = super::Vmsa { stage: super::Stage::One, start: 0, ia_bits: 48 };

pub use crate::contract::{Attachment, DomainId};

/// A DMA domain: a stage-1 context descriptor with its own ASID, the page table it points at, and its IOVA
/// space (Linux's `arm_smmu_domain` with a stage-1 `arm_smmu_ctx_desc`).
#[derive(Clone, Debug)]
pub struct Domain {
    /// The ASID its CD carries and `CMD_TLBI_NH_ASID` names.
    pub asid: u16,
    /// Physical address of its context descriptor, which its masters' STEs point at (S1ContextPtr).
    pub cd: u64,
    /// Physical address of the stage-1 top-level table (CD.TTB0).
    pub ttb0: u64,
    /// The IOVAs handed out and reserved in it.
    pub iova: IovaAllocator,
}

/// A master's (stream's) state in this driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MasterState {
    /// On this kernel's STE: a domain of ours, or bypass (identity).
    Attached(Attachment),
    /// Translating through the crashed kernel's STE; attach deferred. `asid` of its CD, if stage 1.
    Adopted {
        /// The ASID of its CD, if stage 1: TLB entries tagged with it are invalidated when the stream moves.
        asid: Option<u16>,
        /// How the adopted STE translates.
        kind: super::SteKind,
    },
    /// Contained: every old IOVA points at the scratch region.
    Contained,
    /// Its STE failed the checks at insertion and was rewritten to abort.
    Refused,
}

/// The driver for one SMMUv3.
pub struct Smmuv3 {
    /// IDR0 as read at boot: stream-table levels, ASID and VMID widths, coherency, stages.
    pub idr0: Idr0,
    /// IDR1 as read at boot: SIDSIZE and the queue sizes.
    pub idr1: Idr1,
    pub(super) two_level: bool,
    pub(super) log2size: u8,
    pub(super) strtab: u64,
    /// Level-2 tables by L1 index (ours, or the crashed kernel's once a master in them was inserted).
    pub(super) l2: L2Tables,
    pub(super) cmdq: Option<CmdQueue>,
    pub(super) asids: IdAllocator,
    pub(super) domains: Vec<Option<Domain>>,
    pub(super) masters: BTreeMap<u32, MasterState>,
    /// L1 descriptors adoption cleared as untrusted: their streams abort until contained or attached.
    pub(super) cleared_l1: alloc::collections::BTreeSet<u64>,
    pub(super) translating: bool,
    pub(super) iova_holes: Vec<core::ops::Range<u64>>,
    pub(super) scratch: Option<(u64, u64, u16, u64)>,
    /// Frames taken from the platform for the stream table, queues, context descriptors and page tables.
    pub frames_allocated: u64,
    /// Bytes of the crashed kernel's tables mapped by adoption (L1 table, L2 tables as masters arrive).
    pub adopted_bytes: u64,
    /// Bytes of the crashed kernel's page tables the walks at insertion read (a page a table).
    pub walked_bytes: u64,
    /// Page-table pages the walks at insertion may still read (see [`crate::walk::ADOPT_TABLE_BUDGET`]).
    pub(super) walk_budget: usize,
    /// The walks' scratch, kept from one insertion to the next rather than allocated for each master.
    pub(super) walk_bufs: crate::walk::WalkBuffers,
}

/// The level-2 table behind each L1 index in use. Linux keeps an array of `num_l1_ents` pointers
/// (`arm_smmu_init_strtab_2lvl`), 1 MiB for the 2^17 descriptors a crash kernel may adopt; here the array comes in
/// chunks of 512 made as their first index is used, so memory follows the level-2 tables in use (a 4 KiB chunk
/// at most for each) and finding a table is two indexed loads, not a search. A slot holds the L1 descriptor this
/// driver trusts for the index (never zero: its SPAN is not), zero where none is known.
#[derive(Default)]
pub(super) struct L2Tables {
    chunks: Vec<Option<alloc::boxed::Box<[u64; L2_CHUNK]>>>,
}

const L2_CHUNK: usize = 512;

impl L2Tables {
    /// The level-2 table recorded for L1 index `index`.
    pub(super) fn get(&self, index: u64) -> Option<u64> {
        let chunk = self.chunks.get(usize::try_from(index / L2_CHUNK as u64).ok()?)?.as_ref()?;
        let desc = *chunk.get(index as usize % L2_CHUNK)?;
        (desc != 0).then(|| L1Desc::from_bits(desc).l2_table())
    }

    /// Record `table` behind L1 index `index` (below [`MAX_L1_ENTRIES`]); whether none was recorded before.
    pub(super) fn insert(&mut self, index: u64, table: u64) -> bool {
        let Ok(hi) = usize::try_from(index / L2_CHUNK as u64) else { return false };
        if self.chunks.len() <= hi {
            self.chunks.resize_with(hi + 1, || None);
        }
        let Some(chunk) = self.chunks.get_mut(hi) else { return false };
        let chunk = chunk.get_or_insert_with(|| alloc::boxed::Box::new([0; L2_CHUNK]));
        let Some(slot) = chunk.get_mut(index as usize % L2_CHUNK) else { return false };
        let new = *slot == 0;
        *slot = L1Desc::new_table(table, span_for_split(SPLIT as u32)).into_bits();
        new
    }
}

/// Contiguous frames, or out of memory.
pub(super) fn alloc_contiguous(hw: &mut impl FrameAlloc, pages: u64, count: &mut u64) -> Result<u64, SmmuError> {
    crate::alloc_contiguous(hw, pages, count).ok_or(SmmuError::OutOfMemory)
}

/// Write CR0 and wait for CR0ACK to match.
pub(super) fn write_cr0(hw: &mut impl Mmio, cr0: Cr0) -> Result<(), SmmuError> {
    hw.write32(off::CR0, cr0.into_bits());
    for _ in 0..CR_SPINS {
        let ack = hw.read32(off::CR0ACK);
        if ack == cr0.into_bits() {
            return Ok(());
        }
        if hw.settled() {
            break;
        }
    }
    Err(SmmuError::Cr0AckTimeout { want: cr0.into_bits(), got: hw.read32(off::CR0ACK) })
}

/// Set GBPA.ABORT (or clear it for bypass) with the UPDATE handshake (Linux `arm_smmu_update_gbpa`).
pub(super) fn write_gbpa(hw: &mut impl Mmio, abort: bool) -> Result<(), SmmuError> {
    let g = Gbpa::from_bits(hw.read32(off::GBPA)).with_abort(abort).with_update(true);
    hw.write32(off::GBPA, g.into_bits());
    for _ in 0..CR_SPINS {
        if !Gbpa::from_bits(hw.read32(off::GBPA)).update() {
            return Ok(());
        }
        if hw.settled() {
            break;
        }
    }
    Err(SmmuError::GbpaTimeout)
}

impl Smmuv3 {
    /// Translation is on and through this kernel's or adopted STEs (false under `reset-bypass` and `off`:
    /// CR0.SMMUEN clear with GBPA bypass).
    pub fn translating(&self) -> bool {
        self.translating
    }
    /// What the driver knows of stream `sid`, if anything.
    pub fn master(&self, sid: u32) -> Option<MasterState> {
        self.masters.get(&sid).copied()
    }
    /// The domain behind handle `d`, while it exists.
    pub fn domain(&self, d: DomainId) -> Option<&Domain> {
        self.domains.get(d.0).and_then(|x| x.as_ref())
    }
    /// Whether ASID `asid` is taken, by this kernel or reserved from the crashed one.
    pub fn asid_used(&self, asid: u16) -> bool {
        self.asids.is_used(asid as u32)
    }
    /// IOVA ranges every domain created from now on keeps unused (PCI windows, the MSI doorbell range).
    pub fn reserve_iova_holes(&mut self, holes: &[core::ops::Range<u64>]) {
        self.iova_holes = holes.to_vec();
    }

    pub(super) fn blank(hw: &mut impl Mmio) -> Self {
        let idr0 = Idr0::from_bits(hw.read32(off::IDR0));
        let idr1 = Idr1::from_bits(hw.read32(off::IDR1));
        let mut asids = IdAllocator::new(if idr0.asid16() { 1 << 16 } else { 1 << 8 }, 1);
        asids.reserve(0);
        Smmuv3 {
            idr0,
            idr1,
            two_level: idr0.st_level() == StLevel::TwoLevel,
            log2size: idr1.sidsize().min(32),
            strtab: 0,
            l2: L2Tables::default(),
            cmdq: None,
            asids,
            domains: Vec::new(),
            masters: BTreeMap::new(),
            cleared_l1: alloc::collections::BTreeSet::new(),
            translating: false,
            iova_holes: Vec::new(),
            scratch: None,
            frames_allocated: 0,
            adopted_bytes: 0,
            walked_bytes: 0,
            walk_budget: crate::walk::ADOPT_TABLE_BUDGET,
            walk_bufs: crate::walk::WalkBuffers::default(),
        }
    }

    /// Normal boot (and the full reset of `reset-abort`): abort through GBPA, disable, program an empty
    /// stream table and our queues, invalidate everything, enable with event queue on.
    pub fn init(hw: &mut impl Platform) -> Result<Self, SmmuError> {
        let mut v = Self::fresh(hw, true)?;
        v.enable(hw, true)?;
        Ok(v)
    }

    pub(super) fn fresh(hw: &mut impl Platform, evtq_on: bool) -> Result<Self, SmmuError> {
        let mut v = Self::blank(hw);
        write_gbpa(hw, true)?;
        write_cr0(hw, Cr0::new())?;
        // Errors the crashed kernel left active (a CMDQ_ERR at its queue's head) outlive the reset: acknowledged
        // now, with every queue off (acknowledging CMDQ_ERR restarts the queue, SMMUv3 7.1), or the first
        // CMD_SYNC on the new queue reads as failed.
        let ge = hw.read32(off::GERROR);
        hw.write32(off::GERRORN, ge);
        let mut n = 0;
        let (base, cfg) = if v.two_level {
            v.log2size = v.log2size.max(SPLIT);
            let l1 = (1u64 << (v.log2size - SPLIT)).min(MAX_L1_ENTRIES);
            v.log2size = SPLIT + l1.trailing_zeros() as u8;
            let pages = (l1 * 8).div_ceil(4096);
            let t = alloc_contiguous(hw, pages, &mut n)?;
            (t, StrtabBaseCfg::new().with_fmt(StrtabFmt::TwoLevel).with_split(SPLIT).with_log2size(v.log2size))
        } else {
            v.log2size = v.log2size.min(12);
            let pages = ((1u64 << v.log2size) * 64).div_ceil(4096);
            let t = alloc_contiguous(hw, pages, &mut n)?;
            // Not walked until STRTAB_BASE names it and SMMUEN is set.
            write_abort_stes(hw, t, 1u64 << v.log2size)?;
            (t, StrtabBaseCfg::new().with_fmt(StrtabFmt::Linear).with_log2size(v.log2size))
        };
        v.strtab = base;
        hw.write64(off::STRTAB_BASE, StrtabBase::from_table(base, true).into_bits());
        hw.write32(off::STRTAB_BASE_CFG, cfg.into_bits());
        let cmdq = alloc_contiguous(hw, 1, &mut n)?;
        let evtq = alloc_contiguous(hw, 2, &mut n)?;
        v.frames_allocated += n;
        v.start_cmdq(hw, cmdq)?;
        let qb = QueueBase::from_base(evtq, QUEUE_LOG2, true);
        hw.write64(off::EVTQ_BASE, qb.into_bits());
        hw.write32(off::EVTQ_PROD, 0);
        hw.write32(off::EVTQ_CONS, 0);
        let cr0 = Cr0::from_bits(hw.read32(off::CR0)).with_evtqen(evtq_on);
        write_cr0(hw, cr0)?;
        v.submit(hw, &[Command::CfgiAll, Command::TlbiNsnhAll])?;
        Ok(v)
    }

    /// Point CMDQ_BASE at `base` and enable the queue, SMMUEN as it is (CMDQ_BASE may change while SMMUEN=1
    /// but not while CMDQEN=1: SMMUv3 6.3.26).
    pub(super) fn start_cmdq(&mut self, hw: &mut impl Platform, base: u64) -> Result<(), SmmuError> {
        let cr0 = Cr0::from_bits(hw.read32(off::CR0));
        write_cr0(hw, cr0.with_cmdqen(false))?;
        let qb = QueueBase::from_base(base, QUEUE_LOG2, true);
        hw.write64(off::CMDQ_BASE, qb.into_bits());
        hw.write32(off::CMDQ_PROD, 0);
        hw.write32(off::CMDQ_CONS, 0);
        self.cmdq = Some(CmdQueue::new(qb));
        write_cr0(hw, cr0.with_cmdqen(true))
    }

    pub(super) fn enable(&mut self, hw: &mut impl Platform, on: bool) -> Result<(), SmmuError> {
        let cr0 = Cr0::from_bits(hw.read32(off::CR0)).with_smmuen(on);
        write_cr0(hw, cr0)?;
        self.translating = on;
        Ok(())
    }

    pub(super) fn submit(&mut self, hw: &mut impl Platform, cmds: &[Command]) -> Result<(), SmmuError> {
        match self.cmdq.as_mut() {
            Some(q) => q.submit(hw, cmds),
            None => Ok(()),
        }
    }

    /// Where `sid`'s STE lives, allocating its level-2 table only where the L1 descriptor names none (SPAN or
    /// L2Ptr 0). A descriptor the crashed kernel left naming a table is live in hardware: replacing it would
    /// abort every other stream in its span, so that table is used (when it still passes the checks adoption
    /// made) or the attach is refused.
    pub(super) fn ste_slot(&mut self, hw: &mut impl Platform, sid: u32) -> Result<u64, SmmuError> {
        if (sid as u64) >> self.log2size != 0 {
            return Err(SmmuError::BadStreamId(sid));
        }
        if !self.two_level {
            return Ok(self.strtab + 64 * sid as u64);
        }
        let l1 = l1_index(sid, SPLIT as u32) as u64;
        let l2 = match self.l2.get(l1) {
            Some(t) => t,
            None => {
                let at = self.strtab + 8 * l1;
                let old = L1Desc::from_bits(hw.read_u64(at)?);
                if old.span() != 0 && old.l2_table() != 0 {
                    if old.reserved_bits() != 0 || old.span() != SPLIT + 1 {
                        return Err(SmmuError::L1Untrusted { index: l1, raw: old.into_bits() });
                    }
                    self.l2.insert(l1, old.l2_table());
                    self.adopted_bytes += old.l2_bytes();
                    return Ok(old.l2_table() + 64 * l2_index(sid, SPLIT as u32) as u64);
                }
                let mut n = 0;
                let pages = ((1u64 << SPLIT) * 64).div_ceil(4096);
                let t = alloc_contiguous(hw, pages, &mut n)?;
                self.frames_allocated += n;
                // Not reachable until the L1 descriptor below names it.
                write_abort_stes(hw, t, 1u64 << SPLIT)?;
                hw.write_u64(at, L1Desc::new_table(t, span_for_split(SPLIT as u32)).into_bits())?;
                self.submit(hw, &[Command::CfgiSte { sid, leaf: false }])?;
                self.l2.insert(l1, t);
                t
            }
        };
        Ok(l2 + 64 * l2_index(sid, SPLIT as u32) as u64)
    }

    /// Rewrite the live STE of `sid` at `at` to `target` so that the SMMU, which may fetch it at any moment
    /// (SMMUv3 3.21.3), only ever sees the old entry, the new one, or one it may legally act on (Linux
    /// `arm_smmu_write_entry`): qwords the current Config ignores first; then, if one used qword changes, that
    /// qword alone (a hitless update); if several, V cleared in qword 0 (the stream aborts), qwords 1-7, then
    /// qword 0. Every step is followed by CFGI_STE and CMD_SYNC.
    pub(super) fn update_ste(
        &mut self,
        hw: &mut impl Platform,
        sid: u32,
        at: u64,
        target: &Ste,
    ) -> Result<(), SmmuError> {
        let mut cur = [0u64; 8];
        for (i, w) in cur.iter_mut().enumerate() {
            *w = hw.read_u64(at + 8 * i as u64)?;
        }
        let (cur_used, tgt_used) = (ste_used(&Ste(cur)), ste_used(target));
        let mut unused = cur;
        for (i, w) in unused.iter_mut().enumerate() {
            if cur_used & (1 << i) == 0 {
                *w = target.0[i];
            }
        }
        let diff =
            (0..8).filter(|&i| tgt_used & (1 << i) != 0 && unused[i] != target.0[i]).fold(0u8, |m, i| m | 1 << i);
        if diff.count_ones() == 1 {
            let critical = diff.trailing_zeros() as usize;
            self.ste_step(hw, sid, at, &mut cur, &unused, 0..8)?;
            self.ste_step(hw, sid, at, &mut cur, &target.0, critical..critical + 1)?;
            self.ste_step(hw, sid, at, &mut cur, &target.0, 0..8)
        } else if diff != 0 {
            let mut broken = cur;
            broken[0] = 0;
            self.ste_step(hw, sid, at, &mut cur, &broken, 0..1)?;
            self.ste_step(hw, sid, at, &mut cur, &target.0, 1..8)?;
            self.ste_step(hw, sid, at, &mut cur, &target.0, 0..1)
        } else {
            self.ste_step(hw, sid, at, &mut cur, &target.0, 0..8)
        }
    }

    /// Write the qwords of `words` in `range` that differ from `cur`, then CFGI_STE + CMD_SYNC if any did
    /// (Linux `entry_set`).
    fn ste_step(
        &mut self,
        hw: &mut impl Platform,
        sid: u32,
        at: u64,
        cur: &mut [u64; 8],
        words: &[u64; 8],
        range: core::ops::Range<usize>,
    ) -> Result<(), SmmuError> {
        let mut changed = false;
        for i in range {
            if cur[i] != words[i] {
                hw.write_u64(at + 8 * i as u64, words[i])?;
                cur[i] = words[i];
                changed = true;
            }
        }
        if changed {
            self.submit(hw, &[Command::CfgiSte { sid, leaf: true }])?;
        }
        Ok(())
    }

    /// A new, empty DMA domain: a fresh ASID, a CD and an empty stage-1 table.
    pub fn create_domain(&mut self, hw: &mut impl Platform) -> Result<DomainId, SmmuError> {
        let asid = self.asids.alloc().ok_or(SmmuError::OutOfAsids)? as u16;
        let mut n = 0;
        let cd = alloc_contiguous(hw, 1, &mut n)?;
        let ttb0 = alloc_contiguous(hw, 1, &mut n)?;
        self.frames_allocated += n;
        let c = Cd::s1(asid, ttb0, T0SZ, 5, mair_idx::LINUX_MAIR);
        for (i, w) in c.0.iter().enumerate() {
            hw.write_u64(cd + 8 * i as u64, *w)?;
        }
        let iova = IovaAllocator::with_holes(0x1000, 1 << 32, &self.iova_holes);
        self.domains.push(Some(Domain { asid, cd, ttb0, iova }));
        Ok(DomainId(self.domains.len() - 1))
    }

    fn domain_mut(&mut self, d: DomainId) -> Result<&mut Domain, SmmuError> {
        self.domains.get_mut(d.0).and_then(|x| x.as_mut()).ok_or(SmmuError::NoSuchDomain(d.0))
    }

    /// Map `size` bytes at `pa` at a fresh IOVA; with translation off the "IOVA" is the physical address.
    pub fn map(
        &mut self,
        hw: &mut impl Platform,
        d: DomainId,
        pa: u64,
        size: u64,
        _read: bool,
        write: bool,
    ) -> Result<u64, SmmuError> {
        if !self.translating {
            return Ok(pa);
        }
        if !pa.is_multiple_of(4096) || !size.is_multiple_of(4096) || size == 0 {
            return Err(SmmuError::BadRange { iova: pa, size });
        }
        let dom = self.domain_mut(d)?;
        let iova = dom.iova.alloc(size).ok_or(SmmuError::OutOfIova { size })?;
        let ttb0 = dom.ttb0;
        self.map_pages(hw, ttb0, iova, pa, size, write)?;
        Ok(iova)
    }

    /// Write stage-1 leaves for `[iova, iova + size)` → `pa` (4 KiB pages, read always, write as asked) under `ttb0`.
    fn map_pages(
        &mut self,
        hw: &mut impl Platform,
        ttb0: u64,
        iova: u64,
        pa: u64,
        size: u64,
        write: bool,
    ) -> Result<(), SmmuError> {
        crate::walk::map_range(
            hw,
            &S1_WALK,
            ttb0,
            S1_WALK.levels(),
            iova,
            pa,
            size / 4096,
            true,
            write,
            &mut self.frames_allocated,
        )
        .map_err(|e| match e {
            crate::walk::MapError::Mem(m) => SmmuError::Mem(m),
            crate::walk::MapError::OutOfMemory => SmmuError::OutOfMemory,
            crate::walk::MapError::Occupied { iova, .. } => SmmuError::BadRange { iova, size: 4096 },
        })
    }

    /// Map at a chosen IOVA (all 4 KiB multiples, inside the 48-bit stage-1 input range): what a one-to-one
    /// domain for a kernel whose DMA API is direct needs. The range is reserved in the domain's allocator.
    /// Not-present to present needs no TLB maintenance, as in Linux's `arm_smmu_map_pages` (io-pgtable-arm
    /// writes the new entries and invalidates nothing). Without translation (bypass) DMA addresses are
    /// physical already: nothing to do, as for [`Smmuv3::map`].
    #[allow(clippy::too_many_arguments)]
    pub fn map_at(
        &mut self,
        hw: &mut impl Platform,
        d: DomainId,
        iova: u64,
        pa: u64,
        size: u64,
        _read: bool,
        write: bool,
    ) -> Result<(), SmmuError> {
        if !self.translating {
            return Ok(());
        }
        if !crate::walk::mappable(iova, pa, size, S1_WALK.ia_bits) {
            return Err(SmmuError::BadRange { iova, size });
        }
        let dom = self.domain_mut(d)?;
        dom.iova.reserve(iova, iova + size);
        let ttb0 = dom.ttb0;
        self.map_pages(hw, ttb0, iova, pa, size, write)?;
        Ok(())
    }

    /// Unmap and invalidate at once (strict): TLBI_NH_VA per page, then CMD_SYNC. Leaf = 1: the unmap clears
    /// last-level descriptors and frees no table, so walk caches may stay (4.4.1; Linux `arm_smmu_iotlb_sync`
    /// sets Leaf, `arm_smmu_tlb_inv_walk` clears it when io-pgtable frees a table).
    pub fn unmap(&mut self, hw: &mut impl Platform, d: DomainId, iova: u64, size: u64) -> Result<(), SmmuError> {
        if !self.translating {
            return Ok(());
        }
        if !crate::walk::unmappable(iova, size, S1_WALK.ia_bits) {
            return Err(SmmuError::BadRange { iova, size });
        }
        let dom = self.domain_mut(d)?;
        let (ttb0, asid) = (dom.ttb0, dom.asid);
        dom.iova.release(iova);
        crate::walk::unmap_range(hw, &S1_WALK, ttb0, S1_WALK.levels(), iova, size.div_ceil(4096))?;
        let cmds: Vec<Command> = (0..size)
            .step_by(4096)
            .map(|off| Command::TlbiNhVa {
                vmid: 0,
                asid,
                addr: iova + off,
                scope: TlbiScope { leaf: true, ..TlbiScope::ZERO },
            })
            .collect();
        self.submit(hw, &cmds)
    }

    /// Attach `sid`. A master still on its adopted STE is switched here (the deferred attach): its old IOVAs
    /// are reserved in the new domain, and the old ASID's TLB entries invalidated.
    pub fn attach(&mut self, hw: &mut impl Platform, sid: u32, to: Attachment) -> Result<(), SmmuError> {
        if !self.translating {
            return Ok(());
        }
        let mut cmds = Vec::new();
        if let Some(MasterState::Adopted { asid, kind }) = self.masters.get(&sid).copied() {
            if let (Attachment::Domain(d), super::SteKind::Stage1 { ttb0, walk, .. }) = (to, kind) {
                let w = crate::walk::walk(
                    hw,
                    &walk,
                    ttb0,
                    walk.levels(),
                    crate::walk::WalkLimits { max_tables: 4096, max_runs: 65536 },
                );
                let dom = self.domain_mut(d)?;
                for r in &w.runs {
                    dom.iova.reserve(r.iova, r.end());
                }
            }
            if let Some(a) = asid {
                cmds.push(Command::TlbiNhAsid { vmid: 0, asid: a });
            }
        }
        let ste = match to {
            Attachment::Domain(d) => {
                let dom = self.domain(d).ok_or(SmmuError::NoSuchDomain(d.0))?;
                Ste::s1(dom.cd, S1Fmt::Linear, 0, S1Dss::Ssid0)
            }
            Attachment::Identity => Ste::bypass(),
        };
        let slot = self.ste_slot(hw, sid)?;
        self.update_ste(hw, sid, slot, &ste)?;
        if !cmds.is_empty() {
            self.submit(hw, &cmds)?;
        }
        self.masters.insert(sid, MasterState::Attached(to));
        Ok(())
    }
}

/// The qwords of `ste` the SMMU reads for its Config (Linux `arm_smmu_get_ste_used`, by whole qword): V = 0
/// or abort only qword 0; bypass qwords 0-1; stage 1 qwords 0-2 (S2VMID tags its TLB entries where stage 2
/// is implemented); stage 2 or nested qwords 0-3.
fn ste_used(ste: &Ste) -> u8 {
    let c = ste.config();
    if !ste.valid() || c.is_abort() {
        0b1
    } else if c.is_bypass() {
        0b11
    } else if c.s2_enabled() {
        0b1111
    } else {
        0b111
    }
}

/// `count` abort STEs from `at`, the state of every stream until it is attached (Linux
/// `arm_smmu_init_initial_stes`), in one fill: only for a table the SMMU cannot reach yet, as a live STE's
/// order (its valid word last, `update_ste`) is not kept. Whole pages of them where the table is made of pages,
/// so a memory that shares equal pages holds one for every level-2 table.
fn write_abort_stes(hw: &mut impl crate::PhysMem, at: u64, count: u64) -> Result<(), SmmuError> {
    let mut page = [0u8; 4096];
    for (b, w) in page.chunks_exact_mut(8).zip(Ste::abort().0.into_iter().cycle()) {
        b.copy_from_slice(&w.to_le_bytes());
    }
    let bytes = count.checked_mul(64).ok_or(crate::MemError { addr: at, kind: crate::MemErrorKind::NotRam })?;
    if at.is_multiple_of(4096) && bytes.is_multiple_of(4096) {
        Ok(hw.write_repeated(at, &page, bytes / 4096)?)
    } else {
        Ok(hw.write_repeated(at, &page[..64], count)?)
    }
}
