//! A read-only look at the device table an AMD-Vi unit is using (Linux `copy_device_table` /
//! `__reuse_device_table` read the same), validating every entry as hostile input.

use alloc::vec::Vec;
use core::fmt;

use iommu_spec::amdvi::{off, Control, DevTableBase, DeviceId, Dte, Efr, PagingMode, DTE_SIZE};

use crate::{BootEnv, MemError, Mmio, PhysMem};

/// How a valid entry translates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DteKind {
    /// v1 page tables at `root`, `levels` deep.
    Translated {
        /// Physical address of the top-level table (DTE.PageTableRootPtr).
        root: u64,
        /// Levels the unit walks from it (DTE.Mode).
        levels: u32,
    },
    /// Mode 0 with IR/IW: untranslated with those permissions (IR=IW=1 is Linux's identity domain).
    PassThrough {
        /// DTE.IR: the device may read memory.
        read: bool,
        /// DTE.IW: the device may write memory.
        write: bool,
    },
    /// V=0: the unit passes the device's DMA through untranslated, with full access.
    NotValid,
}

/// One device-table entry that lets DMA through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScannedDte {
    /// The DeviceID (PCI requester ID) indexing the entry.
    pub devid: u16,
    /// DTE.DomainID: the tag the IOTLB caches its translations under, which INVALIDATE_IOMMU_PAGES names.
    pub domain: u16,
    /// How it translates.
    pub kind: DteKind,
    /// The whole 256-bit entry as read, for adoption to rewrite in place.
    pub dte: Dte,
}

/// An entry, or a run of the table, that cannot be trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DteProblem {
    /// `count` device-table pages from `first` could not be read (or are not RAM).
    TablePagesUnreadable {
        /// Physical address of the first page.
        first: u64,
        /// Pages in the run.
        count: u32,
        /// Why they could not be used.
        err: MemError,
    },
    /// A valid entry with bits set that the AMD IOMMU specification reserves: another revision's or a
    /// corrupted entry, whose meaning to this unit is unknown.
    ReservedBits {
        /// The DeviceID of the entry.
        devid: u16,
        /// The four quadwords as read.
        raw: [u64; 4],
    },
    /// Mode 7.
    ReservedMode {
        /// The DeviceID of the entry.
        devid: u16,
    },
    /// More page-table levels than EFR.HATS allows.
    TooManyLevels {
        /// The DeviceID of the entry.
        devid: u16,
        /// Levels the entry's Mode asks for.
        levels: u32,
        /// Levels the unit walks (EFR.HATS).
        max: u32,
    },
    /// The page-table root (DTE.PageTableRootPtr) is not RAM.
    PageTableNotRam {
        /// The DeviceID of the entry.
        devid: u16,
        /// The root's physical address.
        addr: u64,
    },
    /// The page-table root lies in the crash kernel's region, which the crash kernel is about to reuse.
    PageTableInCrashRegion {
        /// The DeviceID of the entry.
        devid: u16,
        /// The root's physical address.
        addr: u64,
    },
    /// The tables map a page of the crash kernel's region (found by the walk at adoption).
    PageInCrashRegion {
        /// The DeviceID of the entry.
        devid: u16,
        /// The IOVA mapped there.
        iova: u64,
        /// The physical address it reaches, inside the region.
        addr: u64,
    },
    /// The walk at adoption hit its bound before seeing all of the tables.
    WalkBound {
        /// The DeviceID of the entry.
        devid: u16,
        /// Tables read before the bound.
        tables: u32,
    },
}

impl DteProblem {
    /// The DeviceID the problem is about; `None` for a run of the table itself.
    pub fn devid(&self) -> Option<u16> {
        match self {
            DteProblem::TablePagesUnreadable { .. } => None,
            DteProblem::ReservedBits { devid, .. }
            | DteProblem::ReservedMode { devid }
            | DteProblem::TooManyLevels { devid, .. }
            | DteProblem::PageTableNotRam { devid, .. }
            | DteProblem::PageTableInCrashRegion { devid, .. }
            | DteProblem::PageInCrashRegion { devid, .. }
            | DteProblem::WalkBound { devid, .. } => Some(*devid),
        }
    }

    /// The same problem, for `devid` (devices on one table share one walk).
    pub fn with_devid(mut self, to: u16) -> Self {
        match &mut self {
            DteProblem::TablePagesUnreadable { .. } => {}
            DteProblem::ReservedBits { devid, .. }
            | DteProblem::ReservedMode { devid }
            | DteProblem::TooManyLevels { devid, .. }
            | DteProblem::PageTableNotRam { devid, .. }
            | DteProblem::PageTableInCrashRegion { devid, .. }
            | DteProblem::PageInCrashRegion { devid, .. }
            | DteProblem::WalkBound { devid, .. } => *devid = to,
        }
        self
    }
}

impl fmt::Display for DteProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = |d: &u16| DeviceId(*d);
        match self {
            DteProblem::TablePagesUnreadable { first, count, err } => {
                write!(f, "device table pages {first:#x}+{count}: {err}")
            }
            DteProblem::ReservedBits { devid, raw } => {
                write!(
                    f,
                    "{}: DTE reserved bits set ({:#x} {:#x} {:#x} {:#x})",
                    id(devid),
                    raw[0],
                    raw[1],
                    raw[2],
                    raw[3]
                )
            }
            DteProblem::ReservedMode { devid } => write!(f, "{}: DTE mode 7 is reserved", id(devid)),
            DteProblem::TooManyLevels { devid, levels, max } => {
                write!(f, "{}: {levels} page-table levels, EFR.HATS allows {max}", id(devid))
            }
            DteProblem::PageTableNotRam { devid, addr } => write!(f, "{}: page table {addr:#x} outside RAM", id(devid)),
            DteProblem::PageTableInCrashRegion { devid, addr } => {
                write!(f, "{}: page table {addr:#x} inside the crash kernel's region", id(devid))
            }
            DteProblem::PageInCrashRegion { devid, iova, addr } => {
                write!(f, "{}: IOVA {iova:#x} maps {addr:#x}, inside the crash kernel's region", id(devid))
            }
            DteProblem::WalkBound { devid, tables } => {
                write!(f, "{}: page-table walk stopped at its bound after {tables} tables", id(devid))
            }
        }
    }
}

/// Why the device table as a whole cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DevTableRefusal {
    /// DEV_TABLE_BASE names physical address 0: no kernel programmed it.
    Zero,
    /// Not wholly RAM (checked page by page only when inspecting).
    NotRam {
        /// The table's physical address.
        addr: u64,
        /// Its size, from DEV_TABLE_BASE.Size.
        bytes: u64,
    },
    /// The table overlaps the crash kernel's region: the unit would read a table the crash kernel overwrites.
    InCrashRegion {
        /// The table's physical address.
        addr: u64,
        /// Its size, from DEV_TABLE_BASE.Size.
        bytes: u64,
    },
}

impl fmt::Display for DevTableRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DevTableRefusal::Zero => f.write_str("device table base is zero"),
            DevTableRefusal::NotRam { addr, bytes } => write!(f, "device table {addr:#x}+{bytes:#x} is not RAM"),
            DevTableRefusal::InCrashRegion { addr, bytes } => {
                write!(f, "device table {addr:#x}+{bytes:#x} overlaps the crash kernel's region")
            }
        }
    }
}

impl core::error::Error for DteProblem {}
impl core::error::Error for DevTableRefusal {}

/// What the scan found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevTableScan {
    /// The Control register as read: IommuEn and the enables of the rings.
    pub control: Control,
    /// DEV_TABLE_BASE as read: the table's address and size.
    pub table: DevTableBase,
    /// Every entry that lets DMA through and passed the checks, by DeviceID.
    pub devices: Vec<ScannedDte>,
    /// The entries and table pages refused, with the reason: their DMA will not be adopted.
    pub problems: Vec<DteProblem>,
    /// Device-table pages read.
    pub pages_read: u32,
    /// DeviceIDs of the entries with V and IV set, valid or refused, in order: the ones whose interrupt half
    /// adoption must check, found here so it need not read the whole table again.
    pub irq: Vec<u16>,
}

/// Read the device table the registers name. `strict` (a crash kernel about to use it in place) refuses a
/// table that is not wholly RAM; otherwise (a dump) unreadable pages are reported and skipped. Bounded by
/// the Size field: at most 512 pages, 65 536 entries.
pub fn scan(hw: &mut (impl Mmio + PhysMem), env: &BootEnv, strict: bool) -> Result<DevTableScan, DevTableRefusal> {
    let control = Control::from_bits(hw.read64(off::CONTROL));
    let efr = Efr::from_bits(hw.read64(off::EXT_FEATURES));
    let table = DevTableBase::from_bits(hw.read64(off::DEV_TABLE_BASE));
    let (base, bytes) = (env.old_pa(table.table()), table.bytes());
    if base == 0 {
        return Err(DevTableRefusal::Zero);
    }
    if env.in_crash_region(base, bytes) {
        return Err(DevTableRefusal::InCrashRegion { addr: base, bytes });
    }
    if strict && !env.in_ram(base, bytes) {
        return Err(DevTableRefusal::NotRam { addr: base, bytes });
    }
    let max_levels = efr.host_levels().map_or(6, |l| l as u32);
    let mut out =
        DevTableScan { control, table, devices: Vec::new(), problems: Vec::new(), pages_read: 0, irq: Vec::new() };
    // A page is looked at in place where memory lends it, else copied here.
    let mut copy = [0u8; 4096];
    // The last lent page that held nothing but quiet entries (the loop only reads `hw`, which keeps it lent).
    let mut quiet = crate::walk::LentRepeat::new();
    let per_page = (4096 / DTE_SIZE) as u32;
    for p in 0..(bytes / 4096) {
        let at = base + p * 4096;
        let lent = if env.in_ram(at, 4096) { hw.lend_page(at) } else { None };
        if quiet.repeats(lent) {
            out.pages_read += 1;
            continue;
        }
        let read = match lent {
            Some(page) => Ok(page),
            None if !env.in_ram(at, 4096) => Err(MemError { addr: at, kind: crate::MemErrorKind::NotRam }),
            None => hw.read(at, &mut copy).map(|()| &copy),
        };
        let page = match read {
            Ok(page) => page,
            Err(err) => {
                match out.problems.last_mut() {
                    Some(DteProblem::TablePagesUnreadable { first, count, .. })
                        if *first + *count as u64 * 4096 == at =>
                    {
                        *count += 1
                    }
                    _ => out.problems.push(DteProblem::TablePagesUnreadable { first: at, count: 1, err }),
                }
                continue;
            }
        };
        out.pages_read += 1;
        let found = (out.devices.len(), out.problems.len(), out.irq.len());
        // Two entries a cache line: a line of two alike quiet entries (most of a table) is skipped whole, on its
        // first quadword and an OR of the six that must be zero, without a decode. (A test of the whole page first
        // saves nothing where live entries are spread over the table: it reads every line once more.)
        for (l, line) in page.chunks_exact(64).enumerate() {
            let q0 = qw(line, 0);
            if qw(line, 1) | qw(line, 2) | qw(line, 3) | qw(line, 5) | qw(line, 6) | qw(line, 7) == 0
                && qw(line, 4) == q0
                && QUIET_QW0.contains(&q0)
            {
                continue;
            }
            for (k, q) in line.chunks_exact(32).enumerate() {
                let devid = (p as u32 * per_page + (2 * l + k) as u32) as u16;
                let dte = Dte([qw(q, 0), qw(q, 1), qw(q, 2), qw(q, 3)]);
                // Most of a device table is Linux's default entry (or zeros): `check` lets it through as nothing,
                // so it is recognised without a decode (each of them is zero past its first quadword).
                if dte.0[1] | dte.0[2] | dte.0[3] == 0 && QUIET_QW0.contains(&dte.0[0]) {
                    continue;
                }
                if dte.valid() && dte.iv() {
                    out.irq.push(devid);
                }
                match check(dte, devid, env, max_levels) {
                    Ok(Some(d)) => out.devices.push(d),
                    Ok(None) => {}
                    Err(e) => out.problems.push(e),
                }
            }
        }
        if found == (out.devices.len(), out.problems.len(), out.irq.len()) {
            quiet.remember(lent);
        }
    }
    Ok(out)
}

/// The entries `check` answers `None` for that fill most tables: all zeros and Linux's default (V=1, TV set
/// or, under SNP, clear), byte for byte.
#[cfg(test)]
const QUIET: [[u8; 32]; 3] = [[0; 32], Dte::blocked(false).to_le_bytes(), Dte::blocked(true).to_le_bytes()];
/// The same entries by their first quadword, which the scan compares with (the rest of each is zero).
const QUIET_QW0: [u64; 3] = [0, Dte::blocked(false).0[0], Dte::blocked(true).0[0]];
/// The little-endian quadword `i` of `b` (0 past its end).
#[inline]
fn qw(b: &[u8], i: usize) -> u64 {
    b.get(8 * i..8 * i + 8).and_then(|q| q.try_into().ok()).map_or(0, u64::from_le_bytes)
}

/// One entry: `None` when it lets no DMA through (V=1 with no translation and no permission, Linux's
/// default for every device) or is all zeros (a table page nobody wrote).
fn check(dte: Dte, devid: u16, env: &BootEnv, max_levels: u32) -> Result<Option<ScannedDte>, DteProblem> {
    if dte.0 == [0; 4] {
        return Ok(None);
    }
    let scanned = |kind| Ok(Some(ScannedDte { devid, domain: dte.domain_id(), kind, dte }));
    if !dte.valid() {
        return scanned(DteKind::NotValid);
    }
    if dte.has_reserved_bits() {
        return Err(DteProblem::ReservedBits { devid, raw: dte.0 });
    }
    if !dte.translation_valid() {
        // V=1, TV=0: DMA is refused (QEMU's reading; Linux's SNP default).
        return Ok(None);
    }
    match dte.mode() {
        PagingMode::NoTranslation => {
            if !dte.ir() && !dte.iw() {
                return Ok(None);
            }
            scanned(DteKind::PassThrough { read: dte.ir(), write: dte.iw() })
        }
        PagingMode::Reserved => Err(DteProblem::ReservedMode { devid }),
        m => {
            let levels = m.levels().unwrap_or(0);
            if levels > max_levels {
                return Err(DteProblem::TooManyLevels { devid, levels, max: max_levels });
            }
            let root = env.old_pa(dte.pt_root());
            if !env.in_ram(root, 4096) {
                return Err(DteProblem::PageTableNotRam { devid, addr: root });
            }
            if env.in_crash_region(root, 4096) {
                return Err(DteProblem::PageTableInCrashRegion { devid, addr: root });
            }
            scanned(DteKind::Translated { root, levels })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{check, QUIET, QUIET_QW0};
    use iommu_spec::amdvi::Dte;

    /// The scan skips these byte patterns undecoded: `check` must call each of them nothing, whatever the
    /// environment.
    #[test]
    fn the_entries_the_scan_skips_are_the_ones_check_calls_nothing() {
        let env = crate::BootEnv {
            crash_kernel: true,
            ram: core::iter::once(0..1 << 32).collect(),
            crash_region: Some(0..1 << 32),
            mem_encrypt: true,
            c_bit: 1 << 51,
        };
        for raw in QUIET {
            assert!(matches!(check(Dte::from_le_bytes(&raw), 7, &env, 1), Ok(None)), "{raw:x?}");
        }
        assert_eq!(Dte::from_le_bytes(&Dte::blocked(true).to_le_bytes()), Dte::blocked(true), "round trip");
    }

    /// A device table whose frames memory lends, several of them from one place (an emulator's shared default
    /// page), with pages of a live entry and of a reserved bit each lent twice in a row: the scan over lent pages
    /// finds every entry and problem a scan over copies finds, on every frame, and counts every page read.
    #[test]
    fn a_scan_over_pages_lent_from_one_place_finds_what_a_scan_over_copies_finds() {
        use super::{scan, DteKind, DteProblem};
        use crate::{MemError, MemErrorKind, Mmio, PhysMem};
        use alloc::vec::Vec;
        use iommu_spec::amdvi::{off, DevTableBase, PagingMode};

        const TABLE: u64 = 0x10_0000;
        const FRAMES: u64 = 8;
        struct Hw {
            /// Per frame of the table, which of `pool` it holds.
            frames: Vec<usize>,
            pool: Vec<[u8; 4096]>,
            lend: bool,
        }
        impl Hw {
            fn page(&self, pa: u64) -> Option<&[u8; 4096]> {
                let i = usize::try_from(pa.checked_sub(TABLE)? >> 12).ok()?;
                self.pool.get(*self.frames.get(i)?)
            }
        }
        impl Mmio for Hw {
            fn read32(&mut self, _: usize) -> u32 {
                0
            }
            fn read64(&mut self, reg: usize) -> u64 {
                match reg {
                    off::DEV_TABLE_BASE => DevTableBase::from_table(TABLE, FRAMES * 4096).into_bits(),
                    _ => 0,
                }
            }
            fn write32(&mut self, _: usize, _: u32) {}
            fn write64(&mut self, _: usize, _: u64) {}
        }
        impl PhysMem for Hw {
            fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
                let page = self.page(pa & !0xfff).ok_or(MemError { addr: pa, kind: MemErrorKind::NotRam })?;
                let at = (pa & 0xfff) as usize;
                let src = page.get(at..at + buf.len()).ok_or(MemError { addr: pa, kind: MemErrorKind::NotRam })?;
                buf.copy_from_slice(src);
                Ok(())
            }
            fn write(&mut self, pa: u64, _: &[u8]) -> Result<(), MemError> {
                Err(MemError { addr: pa, kind: MemErrorKind::ReadOnly })
            }
            fn lend_page(&self, pa: u64) -> Option<&[u8; 4096]> {
                self.page(pa).filter(|_| self.lend)
            }
        }
        let mut quiet = [0u8; 4096];
        for e in quiet.chunks_exact_mut(32) {
            e.copy_from_slice(&Dte::blocked(false).to_le_bytes());
        }
        let with = |at: usize, dte: Dte| {
            let mut p = quiet;
            p[32 * at..32 * at + 32].copy_from_slice(&dte.to_le_bytes());
            p
        };
        let live = Dte::translated(0x20_0000, PagingMode::Level3, 9, true, true);
        let mut reserved = Dte::blocked(false);
        // DTE bits 206:192 are reserved.
        reserved.0[3] = 1;
        // Frames 0-2 and 5 lend the shared quiet page, 3-4 one page with a live entry, 6-7 one with a reserved bit: a
        // page that found something is looked at again when it is lent again.
        let pool = Vec::from([quiet, with(5, live), with(9, reserved)]);
        let frames = Vec::from([0, 0, 0, 1, 1, 0, 2, 2]);
        let env = crate::BootEnv {
            crash_kernel: true,
            ram: core::iter::once(0..1 << 32).collect(),
            crash_region: None,
            mem_encrypt: false,
            c_bit: 0,
        };
        let run = |lend: bool| scan(&mut Hw { frames: frames.clone(), pool: pool.clone(), lend }, &env, true).unwrap();
        let (lent, copied) = (run(true), run(false));
        assert_eq!(lent, copied);
        assert_eq!(lent.pages_read, FRAMES as u32);
        let devids: Vec<u16> = lent.devices.iter().map(|d| d.devid).collect();
        assert_eq!(devids, [3 * 128 + 5, 4 * 128 + 5]);
        assert_eq!(lent.devices[0].kind, DteKind::Translated { root: 0x20_0000, levels: 3 });
        let refused: Vec<Option<u16>> = lent.problems.iter().map(|p| p.devid()).collect();
        assert_eq!(refused, [Some(6 * 128 + 9), Some(7 * 128 + 9)]);
        assert!(lent.problems.iter().all(|p| matches!(p, DteProblem::ReservedBits { .. })));
    }

    /// The scan compares first quadwords and checks the rest are zero: the entries that lets through are
    /// exactly the three byte patterns.
    #[test]
    fn the_quiet_entries_by_first_quadword_are_the_quiet_entries_as_bytes() {
        assert_eq!(QUIET.map(|raw| Dte::from_le_bytes(&raw)), QUIET_QW0.map(|q| Dte([q, 0, 0, 0])));
    }
}
