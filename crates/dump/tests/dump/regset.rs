//! Linux's `iommu_regset` debugfs text (drivers/iommu/intel/debugfs.c, `iommu_regset_show`): the
//! fixture `fixtures/vtd-legacy/iommu_regset.txt` is that format (the kernel's `%-16s\t0x%02x\t\t0x%016llx`
//! rows, its register lists and order) filled with the vtd-legacy capture's register values.

use iommu_driver::Mmio;
use iommu_dump::regs::{LineError, RegsetUnit};
use iommu_dump::{required_registers, IommuKind, RegSnapshot, RegsError, SnapshotMmio};
use proptest::prelude::*;
use proptest::sample::{select, Index};

use crate::fuzz::config;

const BASE: u64 = 0xfed90000;

fn fixture(name: &str) -> String {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/vtd-legacy");
    std::fs::read_to_string(dir.join(name)).unwrap()
}

#[test]
fn the_regset_reads_as_the_monitor_capture_does() {
    let regset = RegSnapshot::parse(&fixture("iommu_regset.txt")).unwrap();
    let xp = RegSnapshot::parse(&fixture("regs.txt")).unwrap();
    assert_eq!(regset.units(), [RegsetUnit { name: "dmar0".into(), base: BASE }]);
    assert!(xp.units().is_empty(), "monitor text names no unit");
    // 64-bit registers, and 32-bit ones printed 16 digits wide: GCMD (0x18) must not overwrite GSTS (0x1c).
    for off in [0x08, 0x10, 0x20, 0x28, 0x80, 0x88, 0x90, 0xb8] {
        assert_eq!(regset.read64(BASE + off), xp.read64(BASE + off), "offset {off:#x}");
    }
    for off in [0x00, 0x18, 0x1c, 0x34, 0x38, 0x9c] {
        assert_eq!(regset.read32(BASE + off), xp.read32(BASE + off), "offset {off:#x}");
    }
    assert_eq!(regset.read32(BASE + 0x1c), Some(0xc700_0000), "GSTS: TES, RTPS, QIES, IRES, IRTPS");
    assert_eq!(regset.read64(BASE + 0x18), Some(0xc700_0000_0000_0000), "GCMD's row left GSTS's bytes alone");
    assert_eq!(regset.read64(BASE + 0xe30), Some(0), "VCCAP");
    let mmio = SnapshotMmio::new(regset, BASE);
    mmio.require(required_registers(IommuKind::Vtd)).unwrap();
}

#[test]
fn several_units_and_what_is_ignored() {
    let one = fixture("iommu_regset.txt");
    let two = one
        .replace("dmar0", "dmar1")
        .replace("fed90000", "fed91000")
        .replace("0x0000000001c43000", "0x0000000001234000");
    let text = format!("# cat /sys/kernel/debug/iommu/intel/iommu_regset\n{one}{two}# \n");
    let snap = RegSnapshot::parse(&text).unwrap();
    let bases: Vec<u64> = snap.units().iter().map(|u| u.base).collect();
    assert_eq!(bases, [0xfed90000, 0xfed91000]);
    assert_eq!(snap.read64(0xfed90020), Some(0x1c43000));
    assert_eq!(snap.read64(0xfed91020), Some(0x1234000));
    // The latency file's lines and the 0x prefix on a base are taken in stride.
    let snap = RegSnapshot::parse("IOMMU: dmar3 Register Base Address: 0xFED92000\nCAP\t0x08\t\t0x1\n").unwrap();
    assert_eq!(snap.units()[0].base, 0xfed92000);
    assert_eq!(snap.read64(0xfed92008), Some(1));
}

#[test]
fn unknown_names_take_the_width_their_value_needs() {
    let snap = RegSnapshot::parse(
        "IOMMU: dmar0 Register Base Address: 1000\nNEWREG\t0x300\t\t0x0000000000000005\nWIDE\t0x308\t\t0x0000000100000000\n",
    )
    .unwrap();
    assert_eq!(snap.read32(0x1300), Some(5));
    assert_eq!(snap.read64(0x1300), None, "stored as 4 bytes");
    assert_eq!(snap.read64(0x1308), Some(1 << 32));
}

fn bad(text: &str) -> (usize, LineError) {
    match RegSnapshot::parse(text) {
        Err(RegsError::BadLine { line, kind }) => (line, kind),
        other => panic!("{other:?}"),
    }
}

#[test]
fn regset_refusals_name_the_line() {
    let head = "IOMMU: dmar0 Register Base Address: fed90000\n";
    assert_eq!(bad("IOMMU: Invalid base address\n"), (1, LineError::InvalidBase));
    assert_eq!(bad("IOMMU: dmar0 Register Base Address: fedz\n"), (1, LineError::BadBase("fedz".into())));
    assert_eq!(
        bad("IOMMU: x Register Base Address: 10000000000000000\n").1,
        LineError::BadBase("10000000000000000".into())
    );
    assert_eq!(bad(&format!("CAP\t0x08\t0x0\n{head}")), (1, LineError::RowOutsideUnit));
    assert_eq!(
        bad(&format!("{head}CAP\t0x0g\t\t0x0\n")),
        (2, LineError::RowField { field: "offset", text: "0x0g".into() })
    );
    assert_eq!(
        bad(&format!("{head}CAP\t0x08\t\t0x\n")),
        (2, LineError::RowField { field: "contents", text: "0x".into() })
    );
    assert_eq!(bad(&format!("{head}CAP\t0x08\n")), (2, LineError::RowFields { count: 2 }));
    assert_eq!(bad(&format!("{head}CAP\t0x08\t0x1\textra\n")), (2, LineError::RowFields { count: 4 }));
    let top = "IOMMU: dmar0 Register Base Address: fffffffffffffff0\nCAP\t0x10\t\t0x1\n";
    assert_eq!(bad(top), (2, LineError::RowAddressOverflow { base: 0xffff_ffff_ffff_fff0, off: 0x10 }));
}

/// The fixture with up to eight bytes replaced by ones the format gives meaning to, then cut short:
/// parsing never panics, a refusal names a line of the text, and what parses can be read.
#[test]
fn mangled_regsets_never_panic() {
    let text = fixture("iommu_regset.txt");
    let alphabet = select(b"0123456789abcdefx \t\n:IOMMU\xff".to_vec());
    let edits = prop::collection::vec((any::<Index>(), alphabet), 1..=8);
    proptest!(config(2000), |(edits in edits, keep in any::<Index>())| {
        let mut b = text.as_bytes().to_vec();
        for (at, letter) in edits {
            let at = at.index(b.len());
            b[at] = letter;
        }
        b.truncate(keep.index(b.len() + 1));
        let t = String::from_utf8_lossy(&b);
        match RegSnapshot::parse(&t) {
            Ok(snap) => {
                let mut m = SnapshotMmio::new(snap.clone(), snap.units().first().map_or(0, |u| u.base));
                let _ = (m.read64(0x20), m.read32(0x1c));
            }
            Err(e) => prop_assert!(
                matches!(e, RegsError::BadLine { line, .. } if (1..=t.lines().count()).contains(&line)),
                "{e:?}"
            ),
        }
    });
}
