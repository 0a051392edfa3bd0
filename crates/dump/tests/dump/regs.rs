//! RegSnapshot on monitor text for the VT-d unit QEMU puts at 0xfed90000, and SnapshotMmio over it.

use iommu_driver::Mmio;
use iommu_dump::regs::{LineError, MmioWrite, MAX_RECORDED_WRITES};
use iommu_dump::{RegSnapshot, RegsError, SnapshotMmio};
use iommu_spec::vtd::regs::off;

const BASE: u64 = 0xfed9_0000;

/// What a capture script's session looks like: the banner, prompt echoes, 32-bit words four to a
/// line (in address order: CAP's low word at 0x08, high at 0x0c), 64-bit words, a blank line.
const MONITOR: &str = "\
QEMU 8.2.2 monitor - type 'help' for more information
(qemu) xp /4wx 0xfed90000
00000000fed90000: 0x00000010 0x00000000 0x22260206 0x00d2008c

(qemu) xp /1gx 0xfed90010
00000000fed90010: 0x0000000000f0105e
(qemu) xp /2wx 0xfed90018
00000000fed90018: 0x00000000 0xc0000000
(qemu) xp /1gx 0xfed90020
00000000fed90020: 0x000000007f9a1000
(qemu) xp /2gx 0xfed90080
00000000fed90080: 0x0000000000000120 0x0000000000000120
";

fn snap() -> RegSnapshot {
    RegSnapshot::parse(MONITOR).unwrap()
}

#[test]
fn words_of_every_width_land_at_their_addresses() {
    let s = snap();
    assert_eq!(s.read32(BASE), Some(0x10), "VER");
    assert_eq!(s.read64(BASE + off::CAP as u64), Some(0x00d2_008c_2226_0206), "CAP from two 32-bit words");
    assert_eq!(s.read32(BASE + 0x0c), Some(0x00d2_008c));
    assert_eq!(s.read64(BASE + off::ECAP as u64), Some(0xf0_105e));
    assert_eq!(s.read32(BASE + off::GSTS as u64), Some(0xc000_0000));
    assert_eq!(s.read32(BASE + off::RTADDR as u64 + 4), Some(0), "high half of a 64-bit word");
    assert_eq!(s.read64(BASE + off::IQT as u64), Some(0x120), "second value of a /2gx line");
    assert_eq!(s.len(), 0x28 + 0x10);
    let bytes = RegSnapshot::parse("00000000fed90100: 0x01 0x02 0x0403").unwrap();
    assert_eq!(bytes.read32(BASE + 0x100), Some(0x0403_0201), "byte and halfword widths");
}

#[test]
fn missing_bytes_are_none() {
    let s = snap();
    assert_eq!(s.read32(BASE + off::FSTS as u64), None);
    assert_eq!(s.read64(BASE + 0x24), None, "half captured");
    assert!(s.has(BASE + 0x20, 8));
    assert!(!s.has(BASE + 0x24, 8));
    assert!(s.has(BASE + 0x30, 0));
    assert!(!s.has(u64::MAX, 2), "wraps");
    assert!(RegSnapshot::parse("(qemu) info registers\n\n").unwrap().is_empty());
}

#[test]
fn a_repeated_register_keeps_the_later_value() {
    let text = format!("{MONITOR}(qemu) xp /1wx 0xfed9001c\n00000000fed9001c: 0x80000000\n");
    let s = RegSnapshot::parse(&text).unwrap();
    assert_eq!(s.read32(BASE + off::GSTS as u64), Some(0x8000_0000));
    // A later 32-bit word replaces only its half of an earlier 64-bit one.
    let s = RegSnapshot::parse("fed90020: 0x1111111122222222\nfed90020: 0x33333333").unwrap();
    assert_eq!(s.read64(BASE + 0x20), Some(0x1111_1111_3333_3333));
}

fn bad(text: &str) -> (usize, LineError) {
    match RegSnapshot::parse(text) {
        Err(RegsError::BadLine { line, kind }) => (line, kind),
        other => panic!("{text:?}: expected a bad line, got {other:?}"),
    }
}

#[test]
fn malformed_address_lines_name_their_line() {
    let text = format!("{MONITOR}00000000fed90030: 0x123\n");
    let (line, kind) = bad(&text);
    assert_eq!(line, 13, "1-based, counting ignored lines");
    assert_eq!(kind, LineError::BadValue { index: 0, text: "0x123".into() });

    assert_eq!(bad("fed90000: 0x00000010 0xzz000000").1, LineError::BadValue { index: 1, text: "0xzz000000".into() });
    assert_eq!(bad("fed90000: 00000010").1, LineError::BadValue { index: 0, text: "00000010".into() });
    assert_eq!(bad("(qemu)\n00000000fed90030 0x00000000"), (2, LineError::MissingColon));
    assert_eq!(bad("00000000fed90030:   "), (1, LineError::NoValues));
    assert_eq!(bad("10000000000000000: 0x00").1, LineError::AddressTooWide("10000000000000000".into()));
    assert_eq!(bad("ffffffffffffffff: 0x0000").1, LineError::AddressOverflow { index: 0 });
    let top = RegSnapshot::parse("fffffffffffffff8: 0xffeeddccbbaa9988").unwrap();
    assert_eq!(top.read64(u64::MAX - 7), Some(0xffee_ddcc_bbaa_9988), "the last 8 bytes are addressable");
}

#[test]
fn mmio_reads_at_offsets_and_reports_the_first_missing_register() {
    let mut m = SnapshotMmio::new(snap(), BASE);
    assert_eq!(m.read64(off::CAP), 0x00d2_008c_2226_0206);
    assert_eq!(m.read32(off::GSTS), 0xc000_0000);
    assert_eq!(m.read64(off::RTADDR), 0x7f9a_1000);
    assert_eq!(m.missing(), None);
    assert_eq!(m.read32(off::FSTS), 0, "missing reads as 0");
    assert_eq!(m.missing(), Some(off::FSTS));
    assert_eq!(m.read32(off::AFLOG), 0);
    assert_eq!(m.missing(), Some(off::FSTS), "the first one is kept");

    let mut half = SnapshotMmio::new(RegSnapshot::parse("fed90020: 0x7f9a1000").unwrap(), BASE);
    assert_eq!(half.read64(off::RTADDR), 0x7f9a_1000, "the captured half is kept");
    assert_eq!(half.missing(), Some(off::RTADDR));
    let mut top = SnapshotMmio::new(snap(), u64::MAX);
    assert_eq!(top.read32(0x10), 0);
    assert_eq!(top.missing(), Some(0x10), "base + offset beyond 64 bits is missing, not a panic");
}

#[test]
fn mmio_writes_are_ignored_and_recorded() {
    let mut m = SnapshotMmio::new(snap(), BASE);
    m.write32(off::GCMD, 0x4000_0000);
    m.write64(off::RTADDR, 0xdead_b000);
    assert_eq!(m.read64(off::RTADDR), 0x7f9a_1000, "the dump does not change");
    assert_eq!(
        m.writes_attempted(),
        [
            MmioWrite { off: off::GCMD, size: 4, val: 0x4000_0000 },
            MmioWrite { off: off::RTADDR, size: 8, val: 0xdead_b000 }
        ]
    );
    for i in 0..MAX_RECORDED_WRITES + 10 {
        m.write32(off::GCMD, i as u32);
    }
    assert_eq!(m.writes_attempted().len(), MAX_RECORDED_WRITES);
    assert_eq!(m.write_count(), MAX_RECORDED_WRITES as u64 + 12);
}

#[test]
fn require_names_the_first_absent_register() {
    let m = SnapshotMmio::new(snap(), BASE);
    let needed = [("VER", off::VER, 4), ("CAP", off::CAP, 8), ("GSTS", off::GSTS, 4), ("RTADDR", off::RTADDR, 8)];
    assert_eq!(m.require(&needed), Ok(()));
    let err = m.require(&[("CAP", off::CAP, 8), ("FSTS", off::FSTS, 4), ("AFLOG", off::AFLOG, 8)]).unwrap_err();
    assert_eq!(err, RegsError::MissingRegister { name: "FSTS".into(), off: 0x34, addr: 0xfed9_0034, size: 4 });
    assert!(m.require(&[("RTADDR+4", off::RTADDR + 4, 8)]).is_err(), "partly captured is absent");
}
