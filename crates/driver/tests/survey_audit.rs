//! The common scan and the audit on hand-built VT-d tables: a budget bounds the work whatever hostile
//! tables repeat, a cycle is incomplete where a shared table is not, a live table in the crash region is
//! unsafe, and registers of another kind are incomplete.

use std::collections::BTreeMap;
use std::ops::Range;

use iommu_driver::audit::{audit, FirmwareRange, Flag, Reason, Verdict};
use iommu_driver::survey::{scan_vtd, Budget, Limit, Problem, Severity, WalkProblem, Work};
use iommu_driver::{BootEnv, MemError, MemErrorKind, Mmio, PhysMem};
use iommu_spec::vtd::{off, Cap, ContextEntry, Gsts, RootEntry, SlPte, TranslationType};

/// Sparse pages and a register file: a dump in miniature.
#[derive(Default)]
struct Machine {
    pages: BTreeMap<u64, Box<[u8; 4096]>>,
    regs: BTreeMap<usize, u64>,
}

impl PhysMem for Machine {
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let page = pa & !0xfff;
        let at = (pa - page) as usize;
        match self.pages.get(&page) {
            Some(p) if at + buf.len() <= 4096 => {
                buf.copy_from_slice(&p[at..at + buf.len()]);
                Ok(())
            }
            _ => Err(MemError { addr: pa, kind: MemErrorKind::NotRam }),
        }
    }
    fn write(&mut self, pa: u64, data: &[u8]) -> Result<(), MemError> {
        let page = pa & !0xfff;
        let at = (pa - page) as usize;
        let p = self.pages.entry(page).or_insert_with(|| Box::new([0; 4096]));
        p[at..at + data.len()].copy_from_slice(data);
        Ok(())
    }
}

impl Mmio for Machine {
    fn read32(&mut self, off: usize) -> u32 {
        // A 32-bit register may sit in the high half of a 64-bit word stored at `off - 4`.
        match self.regs.get(&off) {
            Some(v) => *v as u32,
            None => self.regs.get(&(off - 4)).map_or(0, |v| (*v >> 32) as u32),
        }
    }
    fn read64(&mut self, off: usize) -> u64 {
        self.regs.get(&off).copied().unwrap_or(0)
    }
    fn write32(&mut self, _: usize, _: u32) {}
    fn write64(&mut self, _: usize, _: u64) {}
}

const ROOT: u64 = 0x10_0000;
const CONTEXT: u64 = 0x10_1000;
const PT: u64 = 0x10_2000;
const LEAF: u64 = 0x10_3000;
const RAM: Range<u64> = 0..0x8000_0000;
/// The crash kernel's region in most tests: no table and no mapping lies in it.
const CRASH: Range<u64> = 0x3000_0000..0x3010_0000;
/// A crash kernel's region away from every table of these tests.
const ELSEWHERE: Range<u64> = 0x5000_0000..0x5010_0000;

/// A legacy-mode VT-d unit translating, 4-level tables, 256 domain IDs.
fn unit() -> Machine {
    let mut m = Machine::default();
    m.regs.insert(off::VER, 0x10);
    m.regs.insert(off::CAP, Cap::new().with_sagaw(0b100).with_nd(2).into_bits());
    m.regs.insert(off::ECAP, 0);
    m.regs.insert(off::GSTS, u64::from(Gsts::new().with_tes(true).into_bits()));
    m.regs.insert(off::RTADDR, ROOT);
    m.write(ROOT, &[0; 4096]).unwrap();
    m
}

/// Point every bus at one context table, and `devices` of its entries at the page table `pt`.
fn share_one_table(m: &mut Machine, buses: u64, devices: u64, pt: u64) {
    for bus in 0..buses {
        m.write_u128(ROOT + 16 * bus, RootEntry::new().with_context_table(CONTEXT).into_bits()).unwrap();
    }
    for devfn in 0..devices {
        let ce = ContextEntry::new()
            .with_present(true)
            .with_tt(TranslationType::MultiLevel)
            .with_aw(2)
            .with_did(1)
            .with_page_table(pt);
        m.write_u128(CONTEXT + 16 * devfn, ce.into_bits()).unwrap();
    }
}

fn env() -> BootEnv {
    BootEnv { crash_kernel: true, ram: vec![RAM], crash_region: None, mem_encrypt: false, c_bit: 0 }
}

#[test]
fn a_table_that_repeats_one_pointer_for_65536_devices_costs_the_budget_not_more() {
    let mut m = unit();
    // Every entry of the one page table points back at itself: 512 cycles a device, 33.5 M in all.
    share_one_table(&mut m, 256, 256, PT);
    for i in 0..512 {
        m.write_u64(PT + 8 * i, SlPte::entry(PT, true, true).into_bits()).unwrap();
    }
    let budget = Budget { max_pages: 4096, max_runs: 4096, max_problems: 4096, ..Budget::default() };
    let mut work = Work::new(budget);
    let scan = scan_vtd(&mut m, &env(), &mut work);
    assert_eq!(scan.devices.len(), 65536);
    assert!(work.spent.pages <= budget.max_pages, "{:?}", work.spent);
    let kept: usize = scan.problems.len() + scan.devices.iter().map(|d| d.problems.len()).sum::<usize>();
    assert!(kept as u64 <= budget.max_problems, "{kept} problems kept");
    assert_eq!(work.spent.problems, kept as u64);
    assert!(work.spent.problems_dropped > 0, "the rest were counted, not kept");
    assert!(scan.devices.iter().all(|d| d.worst == Some(Severity::Incomplete)), "every device knows it is incomplete");
    let a = audit(&scan, &[RAM], &[CRASH], &[]);
    assert_eq!(a.verdict(), Verdict::Incomplete);
    assert_eq!(a.incomplete().count(), 65536);
}

#[test]
fn the_budget_running_out_makes_the_rest_incomplete_not_safe() {
    let mut m = unit();
    // 16 devices on one clean 4-level chain mapping one page: safe, unless the budget stops at 6 pages.
    share_one_table(&mut m, 1, 16, PT);
    let l2 = 0x10_4000;
    let l1 = 0x10_5000;
    m.write_u64(PT, SlPte::entry(LEAF, true, true).into_bits()).unwrap();
    m.write_u64(LEAF, SlPte::entry(l2, true, true).into_bits()).unwrap();
    m.write_u64(l2, SlPte::entry(l1, true, true).into_bits()).unwrap();
    m.write_u64(l1, SlPte::entry(0x5000_0000, true, true).into_bits()).unwrap();
    let crash = [CRASH];
    let mut work = Work::new(Budget::default());
    let scan = scan_vtd(&mut m, &env(), &mut work);
    assert_eq!(audit(&scan, &[RAM], &crash, &[]).verdict(), Verdict::Safe);
    let mut work = Work::new(Budget { max_pages: 6, ..Budget::default() });
    let scan = scan_vtd(&mut m, &env(), &mut work);
    let a = audit(&scan, &[RAM], &crash, &[]);
    assert_eq!(a.verdict(), Verdict::Incomplete);
    assert!(work.spent.exhausted.is_some());
    let cut = a.devices.iter().filter(|d| d.flags.contains(&Flag::Truncated)).count();
    assert_eq!(cut, 15, "one device walked (4 pages), the next cut short, the rest not walked");
}

#[test]
fn a_table_shared_at_its_own_level_is_complete_and_one_reached_at_another_level_is_a_cycle() {
    let mut m = unit();
    share_one_table(&mut m, 1, 1, PT);
    let l3 = 0x10_4000;
    let l2 = 0x10_5000;
    m.write_u64(PT, SlPte::entry(l3, true, true).into_bits()).unwrap();
    m.write_u64(l3, SlPte::entry(l2, true, true).into_bits()).unwrap();
    m.write_u64(l2, SlPte::entry(LEAF, true, true).into_bits()).unwrap();
    // Two level-2 entries share one leaf table: the same physical reach twice.
    m.write_u64(l2 + 8, SlPte::entry(LEAF, true, true).into_bits()).unwrap();
    m.write_u64(LEAF, SlPte::entry(0x5000_0000, true, true).into_bits()).unwrap();
    let crash = [CRASH];
    let scan = scan_vtd(&mut m, &env(), &mut Work::default());
    let d = &scan.devices[0];
    assert!(
        matches!(d.problems[..], [Problem::Walk(WalkProblem::Shared { table: LEAF, level: 1 })]),
        "{:?}",
        d.problems
    );
    assert_eq!(audit(&scan, &[RAM], &crash, &[]).verdict(), Verdict::Safe);
    // A level-3 entry pointing back at the top table: the hardware would read it as a level-3 table.
    m.write_u64(l3 + 8, SlPte::entry(PT, true, true).into_bits()).unwrap();
    let scan = scan_vtd(&mut m, &env(), &mut Work::default());
    let a = audit(&scan, &[RAM], &crash, &[]);
    assert_eq!(a.verdict(), Verdict::Incomplete);
    assert!(a.devices[0].flags.contains(&Flag::Loop));
}

#[test]
fn a_page_table_inside_the_crash_region_is_unsafe() {
    let mut m = unit();
    share_one_table(&mut m, 1, 1, PT);
    let l3 = 0x3000_4000;
    m.write_u64(PT, SlPte::entry(l3, true, true).into_bits()).unwrap();
    let scan = scan_vtd(&mut m, &env(), &mut Work::default());
    let a = audit(&scan, &[RAM], &[CRASH], &[]);
    assert_eq!(a.verdict(), Verdict::Unsafe);
    assert!(a.devices[0].flags.contains(&Flag::TableInCrashKernel));
    // The context table in a second crash region: unsafe too, for the unit.
    let a = audit(&scan, &[RAM], &[0x6000_0000..0x6010_0000, CONTEXT..CONTEXT + 0x1000], &[]);
    assert_eq!(a.verdict(), Verdict::Unsafe);
    assert!(
        a.reasons.iter().any(|r| matches!(r, Reason::TableInCrashRegion { table: CONTEXT, .. })),
        "{:?}",
        a.reasons
    );
}

#[test]
fn registers_of_another_kind_are_incomplete_not_safe() {
    let mut m = unit();
    // AMD-Vi's device table base register sits where VT-d's VER is: reserved bits set.
    m.regs.insert(off::VER, 0x0120_2001);
    let scan = scan_vtd(&mut m, &env(), &mut Work::default());
    assert!(!scan.scanned);
    assert!(matches!(scan.problems[..], [Problem::NotThisKind { register: "VER", .. }]));
    assert_eq!(audit(&scan, &[RAM], &[CRASH], &[]).verdict(), Verdict::Incomplete);
}

#[test]
fn a_mapping_across_two_adjacent_ram_ranges_is_ram() {
    let mut m = unit();
    share_one_table(&mut m, 1, 1, PT);
    let (l3, l2, l1) = (0x10_4000, 0x10_5000, 0x10_6000);
    m.write_u64(PT, SlPte::entry(l3, true, true).into_bits()).unwrap();
    m.write_u64(l3, SlPte::entry(l2, true, true).into_bits()).unwrap();
    m.write_u64(l2, SlPte::entry(l1, true, true).into_bits()).unwrap();
    // Two pages, one each side of 0x5000_0000.
    m.write_u64(l1, SlPte::entry(0x4fff_f000, true, true).into_bits()).unwrap();
    m.write_u64(l1 + 8, SlPte::entry(0x5000_0000, true, true).into_bits()).unwrap();
    let scan = scan_vtd(&mut m, &env(), &mut Work::default());
    let halves = [0..0x5000_0000, 0x5000_0000..0x8000_0000];
    let a = audit(&scan, &halves, &[CRASH], &[]);
    assert_eq!(a.devices[0].reach.len(), 1, "{:?}", a.devices[0].reach);
    assert!(!a.devices[0].flags.contains(&Flag::OutsideRam));
    let low_half = [halves[0].clone()];
    let a = audit(&scan, &low_half, &[CRASH], &[]);
    assert!(a.devices[0].flags.contains(&Flag::OutsideRam));
    assert_eq!(a.verdict(), Verdict::Safe, "outside RAM is a flag, not a threat to the crash kernel");
}

#[test]
fn a_firmware_range_of_a_device_inside_the_crash_region_is_unsafe() {
    let mut m = unit();
    share_one_table(&mut m, 1, 1, PT);
    // An empty page table: the device maps nothing (a page missing from the dump would be incomplete).
    m.write(PT, &[0; 4096]).unwrap();
    let scan = scan_vtd(&mut m, &env(), &mut Work::default());
    let rmrr = |ids: Vec<(u32, u32)>, range: Range<u64>| FirmwareRange { source: "RMRR", ids, range };
    let away = [rmrr(vec![(0, 0)], 0x5000_0000..0x5001_0000)];
    assert_eq!(audit(&scan, &[RAM], &[CRASH], &away).verdict(), Verdict::Safe);
    let inside = [rmrr(vec![(0, 0)], 0x300f_0000..0x3020_0000)];
    let a = audit(&scan, &[RAM], &[CRASH], &inside);
    assert_eq!(a.verdict(), Verdict::Unsafe);
    assert!(a.devices[0].flags.contains(&Flag::FirmwareRange));
    let overlap = 0x300f_0000..0x3010_0000;
    assert!(
        a.reasons.iter().any(|r| matches!(r, Reason::Firmware { overlap: o, .. } if *o == overlap)),
        "{:?}",
        a.reasons
    );
}

#[test]
fn devices_past_the_budget_are_counted_and_make_the_unit_incomplete() {
    let mut m = unit();
    share_one_table(&mut m, 256, 256, PT);
    m.write(PT, &[0; 4096]).unwrap();
    let mut work = Work::new(Budget { max_devices: 1000, ..Budget::default() });
    let scan = scan_vtd(&mut m, &env(), &mut work);
    assert_eq!(scan.devices.len(), 1000);
    assert_eq!(work.spent.devices_dropped, 65536 - 1000);
    assert!(matches!(scan.problems[..], [Problem::Budget(Limit::Devices)]), "{:?}", scan.problems);
    assert_eq!(audit(&scan, &[RAM], &[CRASH], &[]).verdict(), Verdict::Incomplete);
    let scan = scan_vtd(&mut m, &env(), &mut Work::default());
    assert_eq!(scan.devices.len(), 65536);
    assert_eq!(audit(&scan, &[RAM], &[CRASH], &[]).verdict(), Verdict::Safe);
}

#[test]
fn a_root_table_the_scan_cannot_read_is_incomplete_and_unsafe_inside_the_crash_region() {
    let mut m = unit();
    m.regs.insert(off::RTADDR, 0x3000_0000);
    let scan = scan_vtd(&mut m, &env(), &mut Work::default());
    assert!(matches!(scan.problems[..], [Problem::VtdRefusal(_)]), "{:?}", scan.problems);
    assert_eq!(audit(&scan, &[RAM], &[ELSEWHERE], &[]).verdict(), Verdict::Incomplete);
    assert_eq!(audit(&scan, &[RAM], &[CRASH], &[]).verdict(), Verdict::Unsafe);
}
