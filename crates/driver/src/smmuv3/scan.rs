//! A read-only look at the stream table an SMMUv3 is using (what the v6 kdump adoption reads first),
//! validating every descriptor as hostile input: linear and 2-level tables, STEs, and for stage-1 streams
//! the context descriptor for substream 0.

use alloc::vec::Vec;
use core::fmt;

use iommu_spec::smmuv3::pgtable::{ia_bits, s1_start_level, s2_concat_tables, s2_start_level};
use iommu_spec::smmuv3::{cd_l1_index, cd_l2_index};
use iommu_spec::smmuv3::{
    off, Cd, CdL1Desc, Config, Cr0, Idr1, L1Desc, S1Fmt, Ste, StrtabBase, StrtabBaseCfg, StrtabFmt,
};

use super::walk::{Stage, Vmsa};
use crate::{BootEnv, MemError, Mmio, PhysMem};

/// STEs a scan will visit at most (2^20, 64 MiB of linear table or that many 2-level entries).
pub const MAX_STES: u64 = 1 << 20;
/// Level-1 descriptors a scan will read at most.
pub const MAX_L1: u64 = 1 << 20;

/// How a valid, non-abort stream translates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SteKind {
    /// Config bypass: the stream reaches all of memory.
    Bypass,
    /// Stage 1 through the CD for substream 0: tables at `ttb0`.
    Stage1 {
        /// CD.TTB0: physical address of the stage-1 top-level table.
        ttb0: u64,
        /// How to walk it: start level and input size from CD.T0SZ.
        walk: Vmsa,
        /// CD.ASID: the tag TLB entries are invalidated by (`CMD_TLBI_NH_ASID`).
        asid: u16,
    },
    /// Stage 2 only: tables at `s2ttb`.
    Stage2 {
        /// STE.S2TTB: physical address of the stage-2 top-level table.
        s2ttb: u64,
        /// How to walk it: start level from STE.S2SL0, input size from S2T0SZ.
        walk: Vmsa,
        /// STE.S2VMID: the tag TLB entries are invalidated by (`CMD_TLBI_S12_VMALL`).
        vmid: u16,
    },
    /// Stage 1 with TTB0 walks disabled (CD.EPD0): every access faults.
    Blocked {
        /// CD.ASID, still the tag any cached entries carry.
        asid: u16,
    },
}

/// A stream the stream table lets through: what adoption keeps live and the audit walks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScannedSte {
    /// The StreamID indexing the STE.
    pub sid: u32,
    /// How it translates.
    pub kind: SteKind,
    /// The STE as read, for adoption to keep or rewrite in place.
    pub ste: Ste,
}

/// A descriptor that cannot be trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SteProblem {
    /// A valid L1 descriptor with reserved bits set: its level-2 table is not used.
    L1Reserved {
        /// The descriptor's index in the level-1 table.
        index: u64,
        /// The descriptor as read.
        raw: u64,
    },
    /// The L1 descriptor's span is not the SPLIT + 1 a 2-level table of this SPLIT has (the kdump series' check).
    L1Span {
        /// The descriptor's index in the level-1 table.
        index: u64,
        /// Its SPAN field.
        span: u8,
        /// SPLIT + 1.
        want: u8,
    },
    /// A level-2 stream table, context-descriptor table, CD or page-table root outside RAM.
    TableNotRam {
        /// The stream it was met for (the first stream of a level-2 table).
        sid: u32,
        /// Which structure.
        what: &'static str,
        /// Its physical address.
        addr: u64,
    },
    /// Such a structure inside the crash kernel's region, which the crash kernel is about to reuse.
    TableInCrashRegion {
        /// The stream it was met for (the first stream of a level-2 table).
        sid: u32,
        /// Which structure.
        what: &'static str,
        /// Its physical address.
        addr: u64,
    },
    /// An STE, CD or CD L1 descriptor could not be read.
    Unreadable {
        /// The stream it was met for.
        sid: u32,
        /// Which structure.
        what: &'static str,
        /// Why the read failed.
        err: MemError,
    },
    /// A valid STE with reserved bits or reserved encodings set: its meaning to the SMMU is unknown.
    SteReserved {
        /// The StreamID.
        sid: u32,
    },
    /// Config values this driver does not walk (nested), or stage-2 concatenated tables.
    SteUnsupported {
        /// The StreamID.
        sid: u32,
        /// STE.Config as read.
        config: u8,
    },
    /// A stage-1 STE whose CD for substream 0 has V clear: the SMMU reports C_BAD_CD and translates
    /// nothing, a state this driver does not adopt.
    CdInvalid {
        /// The StreamID.
        sid: u32,
    },
    /// The CD's T0SZ (stage 1) or the STE's S2SL0 (stage 2) gives no start level the 4 KiB granule walk
    /// has.
    BadInputSize {
        /// The StreamID.
        sid: u32,
        /// The input-size field as read (T0SZ or S2T0SZ).
        t0sz: u8,
    },
    /// The tables map `iova` to `addr`, inside the crash kernel's region (found by the walk at insertion).
    PageInCrashRegion {
        /// The StreamID.
        sid: u32,
        /// The IOVA mapped there.
        iova: u64,
        /// The physical address it reaches, inside the region.
        addr: u64,
    },
    /// The walk at insertion hit its bound before seeing all of the stream's tables.
    WalkBound {
        /// The StreamID.
        sid: u32,
        /// Tables read before the bound.
        tables: u32,
    },
}

impl SteProblem {
    /// The StreamID the problem is about; `None` for an L1 descriptor (a span of streams).
    pub fn sid(&self) -> Option<u32> {
        match self {
            SteProblem::L1Reserved { .. } | SteProblem::L1Span { .. } => None,
            SteProblem::TableNotRam { sid, .. }
            | SteProblem::TableInCrashRegion { sid, .. }
            | SteProblem::Unreadable { sid, .. }
            | SteProblem::SteReserved { sid }
            | SteProblem::SteUnsupported { sid, .. }
            | SteProblem::CdInvalid { sid }
            | SteProblem::BadInputSize { sid, .. }
            | SteProblem::PageInCrashRegion { sid, .. }
            | SteProblem::WalkBound { sid, .. } => Some(*sid),
        }
    }
}

impl fmt::Display for SteProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SteProblem::L1Reserved { index, raw } => write!(f, "L1 descriptor {index}: reserved bits set ({raw:#x})"),
            SteProblem::L1Span { index, span, want } => {
                write!(f, "L1 descriptor {index}: SPAN {span}, expected {want}")
            }
            SteProblem::TableNotRam { sid, what, addr } => write!(f, "stream {sid:#x}: {what} {addr:#x} outside RAM"),
            SteProblem::TableInCrashRegion { sid, what, addr } => {
                write!(f, "stream {sid:#x}: {what} {addr:#x} inside the crash kernel's region")
            }
            SteProblem::Unreadable { sid, what, err } => write!(f, "stream {sid:#x}: {what} unreadable: {err}"),
            SteProblem::SteReserved { sid } => write!(f, "stream {sid:#x}: STE reserved bits set"),
            SteProblem::SteUnsupported { sid, config } => {
                write!(f, "stream {sid:#x}: STE config {config:#05b} not walked")
            }
            SteProblem::CdInvalid { sid } => write!(f, "stream {sid:#x}: context descriptor 0 not valid"),
            SteProblem::BadInputSize { sid, t0sz } => write!(f, "stream {sid:#x}: input size T0SZ {t0sz} not walkable"),
            SteProblem::PageInCrashRegion { sid, iova, addr } => {
                write!(f, "stream {sid:#x}: IOVA {iova:#x} maps {addr:#x}, inside the crash kernel's region")
            }
            SteProblem::WalkBound { sid, tables } => {
                write!(f, "stream {sid:#x}: page-table walk stopped at its bound after {tables} tables")
            }
        }
    }
}

/// Why the stream table as a whole cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StrtabRefusal {
    /// STRTAB_BASE names physical address 0: no kernel programmed it.
    BaseZero,
    /// LOG2SIZE beyond IDR1.SIDSIZE, SPLIT beyond LOG2SIZE, or a table too large to scan.
    BadConfig {
        /// STRTAB_BASE_CFG.LOG2SIZE as read.
        log2size: u8,
        /// STRTAB_BASE_CFG.SPLIT as read.
        split: u8,
        /// IDR1.SIDSIZE: the StreamID width the SMMU has.
        sidsize: u8,
    },
    /// The table (the linear table, or the level-1 table) is not RAM.
    NotRam {
        /// The table's physical address.
        addr: u64,
        /// Its size, from STRTAB_BASE_CFG.
        bytes: u64,
    },
    /// The table overlaps the crash kernel's region: the SMMU would read STEs the crash kernel overwrites.
    InCrashRegion {
        /// The table's physical address.
        addr: u64,
        /// Its size, from STRTAB_BASE_CFG.
        bytes: u64,
    },
    /// An L1 descriptor of the table could not be read.
    Unreadable(MemError),
    /// STRTAB_BASE_CFG.FMT 2 or 3.
    ReservedFormat {
        /// STRTAB_BASE_CFG.FMT as read.
        fmt: u8,
    },
}

impl fmt::Display for StrtabRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StrtabRefusal::BaseZero => f.write_str("STRTAB_BASE is zero"),
            StrtabRefusal::BadConfig { log2size, split, sidsize } => {
                write!(f, "STRTAB_BASE_CFG LOG2SIZE {log2size} SPLIT {split} does not fit SIDSIZE {sidsize}")
            }
            StrtabRefusal::NotRam { addr, bytes } => write!(f, "stream table {addr:#x}+{bytes:#x} is not RAM"),
            StrtabRefusal::InCrashRegion { addr, bytes } => {
                write!(f, "stream table {addr:#x}+{bytes:#x} overlaps the crash kernel's region")
            }
            StrtabRefusal::Unreadable(e) => write!(f, "stream table unreadable: {e}"),
            StrtabRefusal::ReservedFormat { fmt } => write!(f, "STRTAB_BASE_CFG.FMT {fmt} is reserved"),
        }
    }
}

impl core::error::Error for SteProblem {}
impl core::error::Error for StrtabRefusal {}

/// What a read of the stream table found: the registers it followed, the streams let through, the
/// descriptors refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StrtabScan {
    /// CR0 as read: whether SMMUEN was set.
    pub cr0: Cr0,
    /// STRTAB_BASE as read: the table's address.
    pub base: StrtabBase,
    /// STRTAB_BASE_CFG as read: format, LOG2SIZE, SPLIT.
    pub cfg: StrtabBaseCfg,
    /// Every stream that passed the checks and is neither abort nor invalid, by StreamID.
    pub streams: Vec<ScannedSte>,
    /// The descriptors refused, with the reason.
    pub problems: Vec<SteProblem>,
}

fn check_table(env: &BootEnv, sid: u32, what: &'static str, addr: u64, bytes: u64) -> Result<(), SteProblem> {
    if !env.in_ram(addr, bytes) {
        return Err(SteProblem::TableNotRam { sid, what, addr });
    }
    if env.in_crash_region(addr, bytes) {
        return Err(SteProblem::TableInCrashRegion { sid, what, addr });
    }
    Ok(())
}

/// Each non-zero L1 descriptor of the `entries` at `base`, with its index, read 512 at a time (a zero
/// descriptor is invalid: there is nothing to check). `unreadable` turns a failed read into `f`'s error.
pub(super) fn each_l1<E>(
    hw: &impl PhysMem,
    base: u64,
    entries: u64,
    unreadable: impl Fn(MemError) -> E,
    mut f: impl FnMut(u64, u64) -> Result<(), E>,
) -> Result<(), E> {
    let mut chunk = [0u8; 4096];
    let mut first = 0u64;
    // A sparse L1 table (up to 2^17 descriptors, mostly zero) lent as one page for its zero frames is read once.
    let mut zeros = crate::walk::LentRepeat::new();
    while first < entries {
        let n = (entries - first).min(512);
        let at = base
            .checked_add(8 * first)
            .ok_or_else(|| unreadable(MemError { addr: base, kind: crate::MemErrorKind::NotRam }))?;
        // A whole page in place where memory lends it, else a copy (zeros past the last descriptor: skipped).
        let lent = hw.lend_page(at).filter(|_| n == 512);
        if zeros.repeats(lent) {
            first += n;
            continue;
        }
        let buf: &[u8; 4096] = match lent {
            Some(page) => page,
            None => {
                let (descriptors, past) = chunk.split_at_mut(8 * n as usize);
                hw.read(at, descriptors).map_err(&unreadable)?;
                past.fill(0);
                &chunk
            }
        };
        // Most descriptors of a sparse table are zero: skipped a run of cache lines at a time.
        let mut any = false;
        crate::walk::each_nonzero_qword(buf, |i, raw| {
            any = true;
            f(first + i as u64, raw)
        })?;
        if !any {
            zeros.remember(lent);
        }
        first += n;
    }
    Ok(())
}

/// `N` little-endian words at `at`, in one read (an STE or CD is 64 bytes: one bounds check and one copy, not
/// eight).
fn read_words<const N: usize>(hw: &impl PhysMem, at: u64) -> Result<[u64; N], MemError> {
    const { assert!(N <= 8, "at most 64 bytes") };
    let mut bytes = [0u8; 64];
    let buf = &mut bytes[..8 * N];
    hw.read(at, buf)?;
    let mut w = [0u64; N];
    for (x, q) in w.iter_mut().zip(buf.chunks_exact(8)) {
        *x = u64::from_le_bytes([q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7]]);
    }
    Ok(w)
}

/// Read the stream table STRTAB_BASE/STRTAB_BASE_CFG name. Abort STEs (Linux's default for every stream
/// without a domain) and invalid ones are not listed. Bounded by [`MAX_L1`] and [`MAX_STES`].
pub fn scan(hw: &mut (impl Mmio + PhysMem), env: &BootEnv) -> Result<StrtabScan, StrtabRefusal> {
    let cr0 = Cr0::from_bits(hw.read32(off::CR0));
    let idr1 = Idr1::from_bits(hw.read32(off::IDR1));
    let base = StrtabBase::from_bits(hw.read64(off::STRTAB_BASE));
    let cfg = StrtabBaseCfg::from_bits(hw.read32(off::STRTAB_BASE_CFG));
    let (log2size, split, sidsize) = (cfg.log2size(), cfg.split(), idr1.sidsize());
    let bad = StrtabRefusal::BadConfig { log2size, split, sidsize };
    if base.table() == 0 {
        return Err(StrtabRefusal::BaseZero);
    }
    if log2size > sidsize.min(32) {
        return Err(bad);
    }
    let mut out = StrtabScan { cr0, base, cfg, streams: Vec::new(), problems: Vec::new() };
    let table = base.table();
    if cfg.fmt() == StrtabFmt::TwoLevel {
        if split > log2size || (1u64 << (log2size - split)) > MAX_L1 {
            return Err(bad);
        }
        let l1_entries = 1u64 << (log2size - split);
        let bytes = l1_entries * 8;
        if !env.in_ram(table, bytes) {
            return Err(StrtabRefusal::NotRam { addr: table, bytes });
        }
        if env.in_crash_region(table, bytes) {
            return Err(StrtabRefusal::InCrashRegion { addr: table, bytes });
        }
        let want_span = split + 1;
        let mut visited = 0u64;
        each_l1(&*hw, table, l1_entries, StrtabRefusal::Unreadable, |index, raw| {
            let l1 = L1Desc::from_bits(raw);
            if !l1.valid() {
                return Ok(());
            }
            if l1.reserved_bits() != 0 {
                out.problems.push(SteProblem::L1Reserved { index, raw });
                return Ok(());
            }
            if l1.span() != want_span {
                out.problems.push(SteProblem::L1Span { index, span: l1.span(), want: want_span });
                return Ok(());
            }
            let first = (index << split) as u32;
            if let Err(p) = check_table(env, first, "L2 stream table", l1.l2_table(), l1.l2_bytes()) {
                out.problems.push(p);
                return Ok(());
            }
            for i in 0..l1.l2_entries() {
                visited += 1;
                if visited > MAX_STES {
                    return Err(bad.clone());
                }
                scan_ste(&*hw, env, first + i as u32, l1.l2_table() + 64 * i, &mut out);
            }
            Ok(())
        })?;
    } else if cfg.fmt() == StrtabFmt::Linear {
        let entries = 1u64 << log2size;
        if entries > MAX_STES {
            return Err(bad);
        }
        let bytes = entries * 64;
        if !env.in_ram(table, bytes) {
            return Err(StrtabRefusal::NotRam { addr: table, bytes });
        }
        if env.in_crash_region(table, bytes) {
            return Err(StrtabRefusal::InCrashRegion { addr: table, bytes });
        }
        for sid in 0..entries {
            scan_ste(hw, env, sid as u32, table + 64 * sid, &mut out);
        }
    } else {
        // A reserved FMT: the SMMU finds no STE for any StreamID (the model's reading), so there is no table.
        return Err(StrtabRefusal::ReservedFormat { fmt: cfg.fmt().0 });
    }
    Ok(out)
}

fn scan_ste(hw: &impl PhysMem, env: &BootEnv, sid: u32, at: u64, out: &mut StrtabScan) {
    match read_ste(hw, env, sid, at) {
        Ok(Some(s)) => out.streams.push(s),
        Ok(None) => {}
        Err(p) => out.problems.push(p),
    }
}

pub(super) fn read_ste(hw: &impl PhysMem, env: &BootEnv, sid: u32, at: u64) -> Result<Option<ScannedSte>, SteProblem> {
    let ste = Ste(read_words::<8>(hw, at).map_err(|err| SteProblem::Unreadable { sid, what: "STE", err })?);
    if !ste.valid() || ste.config().is_abort() {
        return Ok(None);
    }
    if ste.has_reserved_bits() {
        return Err(SteProblem::SteReserved { sid });
    }
    let kind = match ste.config() {
        Config::Bypass => SteKind::Bypass,
        Config::S1Translate => {
            let dw0 = ste.dw0();
            let ptr = ste.s1_context_ptr();
            let fmt = if dw0.s1cdmax() == 0 { S1Fmt::Linear } else { dw0.s1fmt() };
            let cd_at =
                if fmt == S1Fmt::Linear {
                    ptr
                } else {
                    check_table(env, sid, "CD L1 table", ptr, 8)?;
                    let l1 =
                        CdL1Desc::from_bits(
                            hw.read_u64(ptr + 8 * cd_l1_index(0, fmt) as u64)
                                .map_err(|err| SteProblem::Unreadable { sid, what: "CD L1 descriptor", err })?,
                        );
                    l1.l2_table() + 64 * cd_l2_index(0, fmt) as u64
                };
            check_table(env, sid, "context descriptor", cd_at, 64)?;
            let cd = Cd(read_words::<8>(hw, cd_at).map_err(|err| SteProblem::Unreadable { sid, what: "CD", err })?);
            if !cd.valid() {
                return Err(SteProblem::CdInvalid { sid });
            }
            let c0 = cd.dw0();
            if c0.epd0() {
                return Ok(Some(ScannedSte { sid, kind: SteKind::Blocked { asid: cd.asid() }, ste }));
            }
            let start = s1_start_level(c0.t0sz()).ok_or(SteProblem::BadInputSize { sid, t0sz: c0.t0sz() })?;
            check_table(env, sid, "stage-1 table", cd.ttb0(), 4096)?;
            SteKind::Stage1 {
                ttb0: cd.ttb0(),
                walk: Vmsa { stage: Stage::One, start, ia_bits: ia_bits(c0.t0sz()) },
                asid: cd.asid(),
            }
        }
        Config::S2Translate => {
            let dw2 = ste.dw2();
            let start = s2_start_level(dw2.s2sl0()).ok_or(SteProblem::BadInputSize { sid, t0sz: dw2.s2t0sz() })?;
            // Concatenated start-level tables span several pages; the walker reads one page a table.
            if s2_concat_tables(dw2.s2sl0(), dw2.s2t0sz()) != Some(1) {
                return Err(SteProblem::SteUnsupported { sid, config: ste.config().0 });
            }
            check_table(env, sid, "stage-2 table", ste.s2ttb(), 4096)?;
            SteKind::Stage2 {
                s2ttb: ste.s2ttb(),
                walk: Vmsa { stage: Stage::Two, start, ia_bits: ia_bits(dw2.s2t0sz()) },
                vmid: ste.s2vmid(),
            }
        }
        c => return Err(SteProblem::SteUnsupported { sid, config: c.0 }),
    };
    Ok(Some(ScannedSte { sid, kind, ste }))
}

#[cfg(test)]
mod tests {
    use super::each_l1;
    use crate::{MemError, MemErrorKind, PhysMem};

    /// Memory of `words`, little-endian, from address 0; reads past them fail.
    struct Words(alloc::vec::Vec<u64>);

    impl PhysMem for Words {
        fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
            for (i, b) in buf.iter_mut().enumerate() {
                let a = pa + i as u64;
                let w = self.0.get((a / 8) as usize).ok_or(MemError { addr: a, kind: MemErrorKind::NotRam })?;
                *b = w.to_le_bytes()[(a % 8) as usize];
            }
            Ok(())
        }
        fn write(&mut self, pa: u64, _: &[u8]) -> Result<(), MemError> {
            Err(MemError { addr: pa, kind: MemErrorKind::ReadOnly })
        }
    }

    #[test]
    fn each_l1_sees_every_non_zero_descriptor_across_chunks_and_names_an_unreadable_one() {
        let mut w = alloc::vec![0u64; 1100];
        for i in [0usize, 511, 512, 1023, 1024, 1099] {
            w[i] = 0x100 + i as u64;
        }
        let mem = Words(w);
        let mut seen = alloc::vec::Vec::new();
        each_l1(
            &mem,
            0,
            1100,
            |e| e,
            |i, raw| {
                seen.push((i, raw));
                Ok(())
            },
        )
        .unwrap();
        let want: alloc::vec::Vec<(u64, u64)> =
            [0u64, 511, 512, 1023, 1024, 1099].iter().map(|&i| (i, 0x100 + i)).collect();
        assert_eq!(seen, want);
        let err = each_l1(&mem, 0, 1200, |e| e, |_, _| Ok(())).unwrap_err();
        assert_eq!(err.addr, 1100 * 8, "the first byte past the table");
    }

    /// Memory that lends frame `f` as page `lent[f]` of `pool` (frames lent alike share one page); reads answer
    /// from the lent page, each counted.
    struct Lent {
        pool: alloc::vec::Vec<[u8; 4096]>,
        lent: alloc::vec::Vec<usize>,
        reads: core::cell::Cell<usize>,
    }

    impl PhysMem for Lent {
        fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
            self.reads.set(self.reads.get() + 1);
            let page = self.lend_page(pa).ok_or(MemError { addr: pa, kind: MemErrorKind::NotRam })?;
            let at = (pa % 4096) as usize;
            buf.copy_from_slice(page.get(at..at + buf.len()).ok_or(MemError { addr: pa, kind: MemErrorKind::NotRam })?);
            Ok(())
        }
        fn lend_page(&self, pa: u64) -> Option<&[u8; 4096]> {
            self.pool.get(*self.lent.get((pa / 4096) as usize)?)
        }
        fn write(&mut self, pa: u64, _: &[u8]) -> Result<(), MemError> {
            Err(MemError { addr: pa, kind: MemErrorKind::ReadOnly })
        }
    }

    /// A page lent where an all-zero page was lent before is skipped, but a page lent alike with descriptors is
    /// read each time it stands for a part of the table: every descriptor is seen, at its own index.
    #[test]
    fn each_l1_skips_only_repeats_of_a_lent_page_it_found_all_zero() {
        let mut live = [0u8; 4096];
        live[8 * 7..8 * 8].copy_from_slice(&0x1234u64.to_le_bytes());
        // Frames: zero, live, zero, live, a second (distinct) zero page, zero.
        let mem = Lent {
            pool: alloc::vec![[0; 4096], live, [0; 4096]],
            lent: alloc::vec![0, 1, 0, 1, 2, 0],
            reads: core::cell::Cell::new(0),
        };
        let mut seen = alloc::vec::Vec::new();
        each_l1(
            &mem,
            0,
            6 * 512,
            |e| e,
            |i, raw| {
                seen.push((i, raw));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, alloc::vec![(512 + 7, 0x1234), (3 * 512 + 7, 0x1234)]);
        assert_eq!(mem.reads.get(), 0, "lent pages are read in place");
    }
}
