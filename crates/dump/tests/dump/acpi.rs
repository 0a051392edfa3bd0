//! DMAR, IVRS and IORT: hand-built tables with every entry type, the real QEMU tables, and refusals that
//! name the table, the offset and the field.

use iommu_dump::acpi::dmar::{self, scope};
use iommu_dump::acpi::iort::{NodeBody, StreamOf};
use iommu_dump::acpi::ivrs::{dev, DeviceEntry};
use iommu_dump::acpi::{AcpiError, Dmar, Firmware, IommuKind, Iort, Ivrs, Problem, Sig, Table};

use crate::acpi_build::*;

pub fn real(name: &str) -> Vec<u8> {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/acpi").join(name);
    std::fs::read(path).unwrap()
}

fn parse_dmar(bytes: &[u8]) -> Result<Dmar, AcpiError> {
    Dmar::parse(&Table::parse(bytes)?)
}

fn field_err(e: AcpiError) -> (Sig, usize, &'static str, Problem) {
    match e {
        AcpiError::Field { table, offset, field, problem } => (table, offset, field, problem),
        other => panic!("expected a field error, got {other}"),
    }
}

#[test]
fn dmar_every_structure_and_scope_type() {
    let t = dmar(
        0x2f,
        dmar::INTR_REMAP | dmar::X2APIC_OPT_OUT,
        &[
            drhd(0, 1, 0xfed91000, &[scope(scope::PCI_ENDPOINT, 0, 0x80, &[(2, 0)])]),
            dmar_other(2, 8), // ATSR
            drhd(
                dmar::INCLUDE_PCI_ALL,
                0,
                0xfed90000,
                &[
                    scope(scope::IOAPIC, 8, 0xf0, &[(0x1f, 0)]),
                    scope(scope::HPET, 0, 0, &[(0x1f, 7)]),
                    scope(scope::PCI_SUB_HIERARCHY, 0, 0, &[(0x1c, 0), (0, 0)]),
                    scope(scope::ACPI_NAMESPACE, 1, 0, &[(0x15, 2)]),
                ],
            ),
            rmrr(0, 0x7c00_0000, 0x7c0f_ffff, &[scope(scope::PCI_ENDPOINT, 0, 0, &[(0x14, 0)])]),
            rmrr(0, 0x1000, 0x1000, &[]),
            dmar_other(3, 20), // RHSA
            dmar_other(4, 12), // ANDD
            dmar_other(99, 4), // unknown
        ],
    );
    let d = parse_dmar(&t).unwrap();
    assert_eq!(d.host_address_width, 48);
    assert_eq!(d.flags, dmar::INTR_REMAP | dmar::X2APIC_OPT_OUT);
    assert_eq!(d.drhds.len(), 2);
    let (a, b) = (&d.drhds[0], &d.drhds[1]);
    assert_eq!((a.segment, a.base, a.include_pci_all()), (1, 0xfed91000, false));
    assert_eq!(a.scopes[0].requester_id(), Some(0x8010));
    assert_eq!((b.segment, b.base, b.include_pci_all()), (0, 0xfed90000, true));
    let kinds: Vec<u8> = b.scopes.iter().map(|s| s.kind).collect();
    assert_eq!(kinds, [scope::IOAPIC, scope::HPET, scope::PCI_SUB_HIERARCHY, scope::ACPI_NAMESPACE]);
    assert_eq!((b.scopes[0].enumeration_id, b.scopes[0].start_bus), (8, 0xf0));
    assert_eq!(b.scopes[2].path, [(0x1c, 0), (0, 0)]);
    assert_eq!(b.scopes[2].requester_id(), None, "two hops need the bridge's bus number");
    assert_eq!(d.rmrrs.len(), 2);
    assert_eq!((d.rmrrs[0].base, d.rmrrs[0].limit, d.rmrrs[0].is_sane()), (0x7c00_0000, 0x7c0f_ffff, true));
    assert_eq!(d.rmrrs[0].scopes[0].requester_id(), Some(0x00a0));
    assert!(!d.rmrrs[1].is_sane(), "a limit that is not the end of a page");
    let skipped: Vec<u16> = d.skipped.iter().map(|s| s.kind).collect();
    assert_eq!(skipped, [2, 3, 4, 99]);
    let units = Firmware::Dmar(d).units();
    assert_eq!(
        units.iter().map(|u| (u.kind, u.base, u.segment)).collect::<Vec<_>>(),
        [(IommuKind::Vtd, 0xfed91000, 1), (IommuKind::Vtd, 0xfed90000, 0)]
    );
}

#[test]
fn qemu_q35_dmar() {
    let d = parse_dmar(&real("q35-vtd-dmar.bin")).unwrap();
    assert_eq!(&d.header.oem_id, b"BOCHS ");
    assert_eq!((d.host_address_width, d.flags), (48, dmar::INTR_REMAP));
    assert_eq!(d.drhds.len(), 1);
    let u = &d.drhds[0];
    assert_eq!((u.base, u.segment, u.include_pci_all()), (0xfed90000, 0, false));
    // QEMU lists the IOAPIC and each device it built (q35 host bridge, e1000e, nvme, ICH9 LPC/SATA/SMBus).
    assert_eq!((u.scopes[0].kind, u.scopes[0].start_bus), (scope::IOAPIC, 0xff));
    let rids: Vec<_> = u.scopes[1..].iter().map(|s| s.requester_id().unwrap()).collect();
    assert_eq!(rids, [0x0000, 0x0010, 0x0018, 0x00f8, 0x00fa, 0x00fb]);
    assert!(d.rmrrs.is_empty());
    let fw = Firmware::from_bytes(&real("q35-vtd-dmar.bin")).unwrap();
    assert_eq!(fw.units()[0].base, 0xfed90000);
}

#[test]
fn dmar_refusals_name_table_offset_and_field() {
    // A zero-length structure would loop forever in a naive walk (Linux refuses it too).
    let t = dmar(0x2f, 0, &[Le::new().u16(0).u16(0).zeros(12).0]);
    let (sig, off, field, problem) = field_err(parse_dmar(&t).unwrap_err());
    assert_eq!((sig, off, field), (Sig::DMAR, 48, "DRHD Length"));
    assert_eq!(problem, Problem::TooShort { length: 0, min: 16 });
    // A DRHD claiming more bytes than the table has.
    let mut s = drhd(0, 0, 0xfed90000, &[]);
    s[2] = 0x40;
    let (_, off, field, problem) = field_err(parse_dmar(&dmar(0x2f, 0, &[s])).unwrap_err());
    assert_eq!((off, field), (48, "DRHD Length"));
    assert!(matches!(problem, Problem::PastEnd { size: 0x40, .. }), "{problem:?}");
    // A device scope running past its DRHD, and one of odd length.
    let mut sc = scope(scope::PCI_ENDPOINT, 0, 0, &[(1, 0)]);
    sc[1] = 10;
    let (_, off, field, _) = field_err(parse_dmar(&dmar(0, 0, &[drhd(0, 0, 1, &[sc.clone()])])).unwrap_err());
    assert_eq!((off, field), (64, "Device Scope Length"));
    sc[1] = 7;
    sc.push(0);
    let (sig, off, field, problem) = field_err(parse_dmar(&dmar(0, 0, &[drhd(0, 0, 1, &[sc])])).unwrap_err());
    assert_eq!((sig, off, field), (Sig::DMAR, 0x40, "Device Scope Length"));
    assert!(matches!(problem, Problem::BadLength { length: 7, .. }), "{problem:?}");
    // The header checks.
    let mut bad = real("q35-vtd-dmar.bin");
    bad[0x3a] ^= 0x01;
    let e = Table::parse(&bad).unwrap_err();
    assert!(matches!(e, AcpiError::Checksum { table: Sig::DMAR, length: 120, .. }), "{e}");
    let good = real("q35-vtd-dmar.bin");
    assert_eq!(
        Table::parse(&good[..100]).unwrap_err(),
        AcpiError::LengthPastBuffer { table: Sig::DMAR, length: 120, have: 100 }
    );
    assert_eq!(Table::parse(&good[..10]).unwrap_err(), AcpiError::ShortHeader { table: Sig::DMAR, have: 10 });
    let ivrs = Table::parse(&real("q35-amdvi-ivrs.bin")).unwrap();
    assert_eq!(Dmar::parse(&ivrs).unwrap_err(), AcpiError::WrongSignature { expected: Sig::DMAR, found: Sig::IVRS });
    let e = Firmware::from_bytes(&table(b"FAC\x01", 1, &[])).unwrap_err();
    assert_eq!(e, AcpiError::Unsupported { table: Sig(*b"FAC\x01") });
    assert_eq!(Sig(*b"FAC\x01").to_string(), "FAC\\x01", "a signature prints its non-text bytes escaped");
}

#[test]
fn ivrs_every_block_and_device_entry_type() {
    let mut entries = [
        dev4(dev::PAD, 0, 0),
        dev4(dev::ALL, 0, 0x01),
        dev4(dev::SELECT, 0x0010, 0x02),
        dev4(dev::RANGE_START, 0x0100, 0x03),
        dev4(dev::RANGE_END, 0x01ff, 0),
        dev8(dev::ALIAS, 0x0200, 0x04, 0, 0x0300, 0),
        dev8(dev::ALIAS_RANGE, 0x0400, 0x05, 0, 0x0500, 0),
        dev4(dev::RANGE_END, 0x04ff, 0),
        dev8(dev::EXT_SELECT, 0x0600, 0x06, 0x78, 0x3456, 0x12),
        dev8(dev::EXT_RANGE, 0x0700, 0x07, 1, 0, 0),
        dev4(dev::RANGE_END, 0x07ff, 0),
        dev8(dev::SPECIAL, 0, 0xd7, 0x21, 0x00a0, dev::SPECIAL_IOAPIC),
        dev8(dev::SPECIAL, 0, 0x00, 0x00, 0x00a5, dev::SPECIAL_HPET),
        dev4(0x05, 0, 0),          // unknown 4-byte type
        dev8(0x45, 0, 0, 0, 0, 0), // unknown 8-byte type
    ]
    .concat();
    entries.extend(
        Le::new()
            .u8(dev::ACPI_HID)
            .u16(0x00a0)
            .u8(0)
            .bytes(b"AMDI0020")
            .bytes(b"\0\0\0\0\0\0\0\0")
            .u8(2)
            .u8(3)
            .bytes(b"ID0")
            .0,
    );
    let t = ivrs(
        0x0028_0001,
        &[
            ivhd(0x10, 0x0002, 0xfeb8_0000, 0, 0, &dev4(dev::ALL, 0, 0)),
            ivhd(0x40, 0x0002, 0xfeb8_0000, 0, 0x0000_0246_77ef_22d6, &entries),
            ivmd(0x20, 0x07, 0, 0, 0xfee0_0000, 0x10_0000),
            ivmd(0x21, 0x08, 0x0018, 0, 0x7000_0000, 0x1000),
            ivmd(0x22, 0x01, 0x0100, 0x01ff, 0x7100_0000, 0x2000),
            Le::new().u8(0x50).u8(0).u16(8).u32(0).0, // an unknown block, walked past
        ],
    );
    let v = Ivrs::parse(&Table::parse(&t).unwrap()).unwrap();
    assert_eq!(v.iv_info, 0x0028_0001);
    assert_eq!(v.ivhds.len(), 2);
    assert_eq!((v.ivhds[0].efr, v.ivhds[1].efr), (None, Some(0x0000_0246_77ef_22d6)));
    let top: Vec<u8> = v.effective_ivhds().map(|h| h.kind).collect();
    assert_eq!(top, [0x40], "the highest type describes the IOMMU");
    // The entries of the second IVHD: after the first (28 bytes) and its own 40-byte fixed part.
    const E: usize = 48 + 28 + 40;
    let h = &v.ivhds[1];
    assert_eq!((h.device_id, h.cap_offset, h.base, h.segment), (2, 0x40, 0xfeb8_0000, 0));
    assert_eq!(
        h.entries,
        [
            DeviceEntry::Other { kind: dev::PAD, offset: E },
            DeviceEntry::All { dte: 1 },
            DeviceEntry::Select { devid: 0x10, dte: 2 },
            DeviceEntry::Range { start: 0x100, end: 0x1ff, dte: 3 },
            DeviceEntry::Alias { devid: 0x200, dte: 4, alias: 0x300 },
            DeviceEntry::AliasRange { start: 0x400, end: 0x4ff, dte: 5, alias: 0x500 },
            DeviceEntry::Extended { devid: 0x600, dte: 6, ext: 0x1234_5678 },
            DeviceEntry::ExtendedRange { start: 0x700, end: 0x7ff, dte: 7, ext: 1 },
            DeviceEntry::Special { handle: 0x21, devid: 0xa0, dte: 0xd7, variety: dev::SPECIAL_IOAPIC },
            DeviceEntry::Special { handle: 0, devid: 0xa5, dte: 0, variety: dev::SPECIAL_HPET },
            DeviceEntry::Other { kind: 0x05, offset: E + 76 },
            DeviceEntry::Other { kind: 0x45, offset: E + 80 },
            DeviceEntry::AcpiHid { devid: 0xa0, dte: 0, hid: *b"AMDI0020", cid: [0; 8], uid: b"ID0".to_vec() },
        ]
    );
    let m: Vec<_> = v.ivmds.iter().map(|m| (m.kind, m.flags, m.device_id, m.aux, m.start, m.length)).collect();
    assert_eq!(
        m,
        [
            (0x20, 7, 0, 0, 0xfee0_0000, 0x10_0000),
            (0x21, 8, 0x18, 0, 0x7000_0000, 0x1000),
            (0x22, 1, 0x100, 0x1ff, 0x7100_0000, 0x2000)
        ]
    );
    assert_eq!(v.skipped.len(), 1);
}

#[test]
fn qemu_q35_ivrs() {
    let v = Ivrs::parse(&Table::parse(&real("q35-amdvi-ivrs.bin")).unwrap()).unwrap();
    // QEMU describes its one IOMMU twice: type 10h for old kernels, 11h with the EFR image.
    assert_eq!(v.ivhds.iter().map(|h| (h.kind, h.base)).collect::<Vec<_>>(), [(0x10, 0xfed80000), (0x11, 0xfed80000)]);
    let h = v.effective_ivhds().next().unwrap();
    assert_eq!((h.kind, h.device_id, h.cap_offset), (0x11, 0x0008, 0x40));
    assert_eq!(h.efr, Some(0x29d3), "the EFR the capture's registers hold");
    let devs: Vec<_> = h
        .entries
        .iter()
        .map(|e| match e {
            DeviceEntry::Select { devid, .. } => *devid,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(devs, [0x00, 0x08, 0x10, 0x18, 0xf8, 0xfa, 0xfb]);
    let units = Firmware::from_bytes(&real("q35-amdvi-ivrs.bin")).unwrap().units();
    assert_eq!(units.len(), 1);
    assert_eq!((units[0].kind, units[0].base), (IommuKind::Amdvi, 0xfed80000));
}

#[test]
fn ivrs_refusals() {
    let parse =
        |entries: &[u8]| Ivrs::parse(&Table::parse(&ivrs(0, &[ivhd(0x11, 0, 1, 0, 0, entries)])).unwrap()).map(|_| ());
    let e = parse(&dev4(dev::RANGE_END, 5, 0)).unwrap_err();
    assert_eq!(field_err(e).3, Problem::Malformed("a range end without a start"));
    let e = parse(&dev4(dev::RANGE_START, 5, 0)).unwrap_err();
    assert_eq!(field_err(e).1, 48 + 40);
    let e = parse(&[dev4(dev::RANGE_START, 5, 0), dev4(dev::RANGE_START, 6, 0)].concat()).unwrap_err();
    assert_eq!(field_err(e).3, Problem::Malformed("a range starts inside a range"));
    let e = parse(&dev4(0x80, 0, 0)).unwrap_err();
    assert_eq!(field_err(e).2, "device entry Type");
    // An 8-byte entry with only 4 bytes left in the block.
    let e = parse(&dev4(dev::ALIAS, 0, 0)).unwrap_err();
    assert!(matches!(field_err(e).3, Problem::PastEnd { size: 8, .. }));
    // An ACPI HID entry whose UID runs past the block.
    let hid = Le::new().u8(dev::ACPI_HID).zeros(20).u8(200).0;
    assert!(parse(&hid).is_err());
    let zero = ivrs(0, &[Le::new().u8(0x10).u8(0).u16(0).u32(0).0]);
    let (_, off, field, _) = field_err(Ivrs::parse(&Table::parse(&zero).unwrap()).unwrap_err());
    assert_eq!((off, field), (48, "IVHD Length"));
}

pub fn sample_iort() -> Vec<u8> {
    // Offsets: ITS 48 (24 bytes), SMMUv3 72 (88), root complex 160 (76), RMR 236 (88), named 324.
    let smmu = node(4, &smmuv3_body(0x0905_0000), &[[0, 0xffff, 0, 48, 0]]);
    let rc = node(2, &root_complex_body(0), &[[0, 0x00ff, 0, 72, 0], [0x0100, 0x00ff, 0x100, 48, 0]]);
    let rmr = node(6, &rmr_body(&[(0x8000_0000, 0x1000), (0x8001_0000, 0x2000)]), &[[0, 0, 0x18, 72, 1]]);
    iort(&[node(0, &its_body(), &[]), smmu, rc, rmr, node(1, &named_body("\\_SB.ETH0"), &[[0, 0, 0x40, 72, 1]])])
}

#[test]
fn iort_nodes_and_requester_id_to_stream_id() {
    let t = Iort::parse(&Table::parse(&sample_iort()).unwrap()).unwrap();
    let kinds: Vec<(usize, u8)> = t.nodes.iter().map(|n| (n.offset, n.kind)).collect();
    assert_eq!(kinds, [(48, 0), (72, 4), (160, 2), (236, 6), (324, 1)]);
    let (off, smmu) = t.smmuv3s().next().unwrap();
    assert_eq!((off, smmu.base, smmu.flags, smmu.model), (72, 0x0905_0000, 1, Some(0)));
    let NodeBody::RootComplex(rc) = &t.nodes[2].body else { panic!() };
    assert_eq!((rc.segment, rc.address_limit), (0, Some(48)));
    assert_eq!(t.nodes[2].mappings[0].id_count, 0xff);
    let NodeBody::Rmr(rmr) = &t.nodes[3].body else { panic!() };
    assert_eq!(rmr.ranges, [(0x8000_0000, 0x1000), (0x8001_0000, 0x2000)]);
    assert_eq!(t.nodes[4].body, NodeBody::NamedComponent { name: "\\_SB.ETH0".into() });
    // 00:03.0 (RID 0x18) goes to the SMMUv3 at 0x09050000 with StreamID 0x18; RIDs past the first
    // range go straight to the ITS (no SMMU), and another segment has no root complex.
    assert_eq!(t.stream_of(0, 0x18), Some(StreamOf { smmu_offset: 72, smmu_base: 0x0905_0000, stream_id: 0x18 }));
    assert_eq!(t.stream_of(0, 0xff).map(|s| s.stream_id), Some(0xff));
    assert_eq!(t.stream_of(0, 0x100), None);
    assert_eq!(t.stream_of(1, 0x18), None);
    // And back: StreamID 0x18 of that SMMUv3 is 00:03.0's; 0x100 is not a root complex's (RIDs from
    // 0x100 go to the ITS), nor is any stream of another SMMU.
    assert_eq!(t.requester_of(0x0905_0000, 0x18), Some((0, 0x18)));
    assert_eq!(t.requester_of(0x0905_0000, 0x100), None);
    assert_eq!(t.requester_of(0x0906_0000, 0x18), None);
    let units = Firmware::Iort(t).units();
    assert_eq!(units.iter().map(|u| (u.kind, u.base)).collect::<Vec<_>>(), [(IommuKind::Smmuv3, 0x0905_0000)]);
}

#[test]
fn iort_refusals() {
    let good = sample_iort();
    // A node count far beyond the table: the walk stops at the table's end with an error.
    let mut t = good.clone();
    t[36..40].copy_from_slice(&u32::MAX.to_le_bytes());
    fix_checksum(&mut t);
    let (_, off, field, _) = field_err(Iort::parse(&Table::parse(&t).unwrap()).unwrap_err());
    assert_eq!((off, field), (good.len(), "node Type"));
    // The node array's offset outside the table.
    let mut t = good.clone();
    t[40..44].copy_from_slice(&0x1_0000u32.to_le_bytes());
    fix_checksum(&mut t);
    let (_, off, field, _) = field_err(Iort::parse(&Table::parse(&t).unwrap()).unwrap_err());
    assert_eq!((off, field), (40, "Offset to Array of IORT Nodes"));
    // The SMMUv3's ID mapping array reaching past its node.
    let mut t = good.clone();
    t[72 + 8..72 + 12].copy_from_slice(&2u32.to_le_bytes());
    fix_checksum(&mut t);
    let (_, _, field, problem) = field_err(Iort::parse(&Table::parse(&t).unwrap()).unwrap_err());
    assert_eq!(field, "ID mapping array");
    assert_eq!(problem, Problem::PastEnd { size: 40, end: 160 });
    // A zero-length node.
    let mut t = good;
    t[73..75].copy_from_slice(&0u16.to_le_bytes());
    fix_checksum(&mut t);
    let (_, off, _, problem) = field_err(Iort::parse(&Table::parse(&t).unwrap()).unwrap_err());
    assert_eq!((off, problem), (72, Problem::TooShort { length: 0, min: 16 }));
}
