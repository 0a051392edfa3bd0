//! Finding the tables in a dump: the RSDP in the BIOS area or the EBDA, the RSDT or XSDT, a table by
//! signature; the real QEMU q35 layout; and a sweep of garbage through every parser.

use iommu_dump::acpi::rsdp::MAX_TABLE_LEN;
use iommu_dump::acpi::{Acpi, AcpiError, Firmware, IommuKind, Listed, RsdpProblem, Sig};
use iommu_dump::ElfCore;
use proptest::prelude::*;
use proptest::sample::{select, Index};

use crate::acpi::{real, sample_iort};
use crate::acpi_build::*;
use crate::builder::{core, put_at, Ph, ET_CORE};
use crate::fuzz::config;

/// Where QEMU's SeaBIOS put the tables in the captures (fixtures/acpi/README.md).
const RSDP: u64 = 0xf5240;
const VTD_RSDT: u64 = 0x7ffe23d5;
const VTD_DMAR: u64 = 0x7ffe2335;
const AMD_RSDT: u64 = 0x7ffe2416;
const AMD_IVRS: u64 = 0x7ffe2346;

/// A 4 KiB page's address, and bytes to place at addresses inside it.
type Page = (u64, Vec<(u64, Vec<u8>)>);

/// A core holding `pages`, zero where nothing was placed.
fn core_of(pages: &[Page]) -> ElfCore {
    let base = 64 + 56 * pages.len();
    let phdrs: Vec<Ph> =
        pages.iter().enumerate().map(|(i, (pa, _))| Ph::load((base + i * 4096) as u64, *pa, 4096, 4096)).collect();
    let mut file = core(ET_CORE, &phdrs, base + 4096 * pages.len());
    for (i, (pa, items)) in pages.iter().enumerate() {
        for (addr, bytes) in items {
            put_at(&mut file, base + i * 4096 + (addr - pa) as usize, bytes);
        }
    }
    ElfCore::from_bytes(file).unwrap()
}

fn q35(prefix: &str, rsdt: u64, table_at: u64, table: &str) -> ElfCore {
    core_of(&[
        (0xf5000, vec![(RSDP, real(&format!("{prefix}-rsdp.bin")))]),
        (0x7ffe2000, vec![(rsdt, real(&format!("{prefix}-rsdt.bin"))), (table_at, real(table))]),
    ])
}

#[test]
fn the_q35_dumps_lead_from_the_bios_area_to_their_iommu() {
    let mem = q35("q35-vtd", VTD_RSDT, VTD_DMAR, "q35-vtd-dmar.bin");
    let acpi = Acpi::load(&mem, None).unwrap();
    assert_eq!((acpi.rsdp.addr, acpi.rsdp.revision, acpi.rsdp.xsdt), (RSDP, 0, None));
    assert_eq!(&acpi.rsdp.oem_id, b"BOCHS ");
    assert_eq!((acpi.root, acpi.root_addr, acpi.entries.len()), (Sig::RSDT, VTD_RSDT, 6));
    assert!(acpi.entries.contains(&VTD_DMAR));
    let fw = Firmware::find(&mem, None, None).unwrap();
    assert_eq!(fw.kind(), IommuKind::Vtd);
    assert_eq!(fw.units()[0].base, 0xfed90000);
    // The RSDT lists no IVRS; the error says what it does list.
    let e = Firmware::find(&mem, None, Some(IommuKind::Amdvi)).unwrap_err();
    assert!(matches!(e, AcpiError::NoTable { sig: Sig::IVRS, root: Sig::RSDT, root_addr: VTD_RSDT, .. }), "{e}");
    assert!(
        matches!(&e, AcpiError::NoTable { present, .. } if present.found.contains(&Sig::DMAR)),
        "lists what it has: {e:?}"
    );

    let mem = q35("q35-amdvi", AMD_RSDT, AMD_IVRS, "q35-amdvi-ivrs.bin");
    let fw = Firmware::find(&mem, Some(RSDP), None).unwrap();
    assert_eq!(fw.units().iter().map(|u| (u.kind, u.base)).collect::<Vec<_>>(), [(IommuKind::Amdvi, 0xfed80000)]);
}

#[test]
fn rsdp_refusals() {
    // A dump without the BIOS area (the trimmed fixtures): the error says the pages are missing.
    let e = Acpi::load(&core_of(&[(0x7ffe2000, vec![])]), None).unwrap_err();
    assert_eq!(e, AcpiError::NoRsdp { rejected: None, missing_pages: 32, searched_pages: 32 });
    // A signature whose checksum fails is named, and not used.
    let mut rsdp = real("q35-vtd-rsdp.bin");
    rsdp[16] ^= 0x40;
    let mem = core_of(&[(0xf5000, vec![(RSDP, rsdp)])]);
    let e = Acpi::load(&mem, None).unwrap_err();
    assert!(matches!(e, AcpiError::NoRsdp { rejected: Some(RSDP), missing_pages: 31, .. }), "{e}");
    assert!(matches!(Acpi::load(&mem, Some(RSDP)), Err(AcpiError::Rsdp { problem: RsdpProblem::Checksum { .. }, .. })));
    let e = Acpi::load(&mem, Some(RSDP + 16)).unwrap_err();
    assert_eq!(e, AcpiError::Rsdp { addr: RSDP + 16, problem: RsdpProblem::Signature });
    let e = Acpi::load(&mem, Some(0x1000)).unwrap_err();
    assert!(matches!(e, AcpiError::Rsdp { problem: RsdpProblem::Unreadable(_), .. }), "{e}");
}

/// An ACPI 2.0 RSDP naming both roots.
fn rsdp_v2(rsdt: u32, xsdt: u64) -> Vec<u8> {
    let mut r = Le::new().bytes(b"RSD PTR ").u8(0).bytes(b"HNDOVR").u8(2).u32(rsdt).u32(36).u64(xsdt).u8(0).zeros(3).0;
    r[8] = 0u8.wrapping_sub(r[..20].iter().fold(0u8, |s, b| s.wrapping_add(*b)));
    r[32] = 0u8.wrapping_sub(r.iter().fold(0u8, |s, b| s.wrapping_add(*b)));
    r
}

fn xsdt(entries: &[u64]) -> Vec<u8> {
    table(b"XSDT", 1, &entries.iter().flat_map(|e| e.to_le_bytes()).collect::<Vec<_>>())
}

fn rsdt(entries: &[u32]) -> Vec<u8> {
    table(b"RSDT", 1, &entries.iter().flat_map(|e| e.to_le_bytes()).collect::<Vec<_>>())
}

/// An arm64-like layout: the RSDP in the EBDA, an XSDT (with a null entry) listing an IORT, and an RSDT
/// listing a DMAR for the fallback.
fn ebda_layout(xsdt_bytes: Vec<u8>) -> ElfCore {
    core_of(&[
        (0x0, vec![(0x40e, 0x9fc0u16.to_le_bytes().to_vec())]),
        (0x9f000, vec![(0x9fc00, rsdp_v2(0x10_0100, 0x10_0000))]),
        (
            0x10_0000,
            vec![
                (0x10_0000, xsdt_bytes),
                (0x10_0100, rsdt(&[0x10_0400])),
                (0x10_0200, sample_iort()),
                (0x10_0400, real("q35-vtd-dmar.bin")),
            ],
        ),
    ])
}

#[test]
fn the_xsdt_is_preferred_and_the_rsdt_is_the_fallback() {
    let mem = ebda_layout(xsdt(&[0, 0x10_0200]));
    let acpi = Acpi::load(&mem, None).unwrap();
    assert_eq!((acpi.rsdp.addr, acpi.rsdp.revision, acpi.rsdp.xsdt), (0x9fc00, 2, Some(0x10_0000)));
    assert_eq!((acpi.root, acpi.entries.as_slice()), (Sig::XSDT, &[0x10_0200][..]), "null entries skipped");
    let fw = Firmware::find(&mem, None, None).unwrap();
    assert_eq!(fw.units().iter().map(|u| (u.kind, u.base)).collect::<Vec<_>>(), [(IommuKind::Smmuv3, 0x0905_0000)]);
    // A broken XSDT: the RSDT serves.
    let mut bad = xsdt(&[0x10_0200]);
    bad[40] ^= 1;
    let mem = ebda_layout(bad);
    let acpi = Acpi::load(&mem, None).unwrap();
    assert_eq!((acpi.root, acpi.root_addr), (Sig::RSDT, 0x10_0100));
    assert_eq!(Firmware::find(&mem, None, None).unwrap().kind(), IommuKind::Vtd);
    // A listed table too large to be a table, and one the dump lacks.
    let huge = Le::new().bytes(b"DMAR").u32(MAX_TABLE_LEN + 1).zeros(28).0;
    let mem = core_of(&[
        (0x9f000, vec![(0x9fc00, rsdp_v2(0, 0x10_0000))]),
        (0x10_0000, vec![(0x10_0000, xsdt(&[0x10_0200, 0x5000_0000])), (0x10_0200, huge)]),
    ]);
    let acpi = Acpi::load(&mem, Some(0x9fc00)).unwrap();
    let e = acpi.find(&mem, Sig::DMAR).unwrap_err();
    assert_eq!(e, AcpiError::TooLarge { table: Sig::DMAR, length: MAX_TABLE_LEN + 1, max: MAX_TABLE_LEN });
    let e = acpi.find(&mem, Sig::IORT).unwrap_err();
    let AcpiError::NoTable { present, .. } = e else { panic!("{e:?}") };
    assert_eq!(
        present,
        Listed { found: vec![Sig::DMAR], not_in_dump: 1 },
        "the listed table the dump lacks is counted"
    );
}

/// The tables the properties start from: the real q35 ones, a sample IORT, and small built DMAR and IVRS.
fn seed_tables() -> Vec<Vec<u8>> {
    vec![
        real("q35-vtd-dmar.bin"),
        real("q35-amdvi-ivrs.bin"),
        sample_iort(),
        dmar(0x2f, 1, &[drhd(1, 0, 0xfed90000, &[scope(1, 0, 0, &[(1, 0), (2, 0)])]), rmrr(0, 0, 0xfff, &[])]),
        ivrs(0, &[ivhd(0x40, 0, 1, 0, 0, &[dev4(3, 1, 0), dev4(4, 9, 0), dev8(0x48, 0, 0, 1, 2, 1)].concat())]),
    ]
}

/// Parsing a table gives its units or a typed error that says something.
fn parses_or_refuses(t: &[u8]) -> Result<(), TestCaseError> {
    if let Err(e) = Firmware::from_bytes(t) {
        prop_assert!(!e.to_string().is_empty(), "{e:?}");
    }
    Ok(())
}

#[test]
fn truncated_tables_never_panic() {
    for seed in &seed_tables() {
        for len in 0..=seed.len() {
            parses_or_refuses(&seed[..len]).unwrap();
            // The same prefix with a header that agrees with it, so the body parsers see it.
            if len >= 36 {
                let mut t = seed[..len].to_vec();
                t[4..8].copy_from_slice(&(len as u32).to_le_bytes());
                fix_checksum(&mut t);
                parses_or_refuses(&t).unwrap();
            }
        }
    }
}

/// A change to one body byte (after the 36-byte header): any value, an edge value, or one bit flipped.
#[derive(Clone, Debug)]
enum ByteEdit {
    Set(u8),
    Flip(u8),
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        any::<u8>().prop_map(ByteEdit::Set),
        select(vec![0, 0xff, 1, 4, 8]).prop_map(ByteEdit::Set),
        (0..8u8).prop_map(ByteEdit::Flip),
    ]
}

#[test]
fn mutated_tables_with_a_good_checksum_never_panic() {
    let seeds = seed_tables();
    let edits = prop::collection::vec((any::<Index>(), byte_edit()), 1..=6);
    proptest!(config(15_000), |(seed in 0..seeds.len(), edits in edits)| {
        let mut t = seeds[seed].clone();
        for (at, edit) in edits {
            let at = 36 + at.index(t.len() - 36);
            t[at] = match edit {
                ByteEdit::Set(v) => v,
                ByteEdit::Flip(bit) => t[at] ^ (1 << bit),
            };
        }
        fix_checksum(&mut t);
        parses_or_refuses(&t)?;
    });
}

#[test]
fn random_table_bodies_never_panic() {
    let sig = select(vec![*b"DMAR", *b"IVRS", *b"IORT"]);
    proptest!(config(1500), |(sig in sig, body in prop::collection::vec(any::<u8>(), 0..200))| {
        parses_or_refuses(&table(&sig, 1, &body))?;
    });
}

#[test]
fn random_memory_never_panics_the_table_search() {
    // A BIOS page of garbage with an RSDP of a good checksum at a 16-byte boundary, pointing anywhere
    // into the page; its tail may run off the page.
    let rsdp_fields = (0..256usize, 0..4096u32, 0..4u8, prop::array::uniform16(any::<u8>()));
    proptest!(config(150), |(mut bios in prop::collection::vec(any::<u8>(), 4096), fields in rsdp_fields)| {
        let (slot, rsdt_off, revision, tail) = fields;
        let at = 16 * slot;
        let mut r = Le::new().bytes(b"RSD PTR ").u8(0).bytes(b"HNDOVR").u8(revision).u32(0xf5000 + rsdt_off).0;
        r.extend(tail);
        r[8] = 0u8.wrapping_sub(r[..20].iter().fold(0u8, |s, b| s.wrapping_add(*b)));
        let end = (at + r.len()).min(4096);
        bios[at..end].copy_from_slice(&r[..end - at]);
        let mem = core_of(&[(0xf5000, vec![(0xf5000, bios)])]);
        match Acpi::load(&mem, None) {
            Ok(acpi) => {
                if let Err(e) = acpi.find(&mem, Sig::DMAR) {
                    prop_assert!(!e.to_string().is_empty());
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        if let Err(e) = Firmware::find(&mem, None, None) {
            prop_assert!(!e.to_string().is_empty());
        }
    });
}
