//! The kdump-compressed and flattened readers on files the test writer builds: every compression, what
//! is and is not in the dump, and every refusal of a hostile header or page.

use std::collections::BTreeMap;

use iommu_driver::{MemError, MemErrorKind, PhysMem};
use iommu_dump::kdump::{Compression, KdumpError, PageError};
use iommu_dump::{Counting, Dump, DumpError, FlatError, Format, KdumpCore};
use proptest::prelude::*;
use proptest::sample::Index;

use crate::builder::pattern;
use crate::fuzz::{config, edgy};
use crate::kdump_build::{self as kb, flatten, note, put_u32, put_u64, Built, Kdump, LZO, SNAPPY, ZLIB, ZSTD};

const NC: MemErrorKind = MemErrorKind::NotCaptured;

/// Pages of every kind: compressible, incompressible (stored raw), zero (shared), half-and-half.
fn pages() -> BTreeMap<u64, Vec<u8>> {
    let mut noise = Vec::with_capacity(4096);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..4096 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.push((x >> 24) as u8);
    }
    let mut half = pattern(5, 4096);
    half[2048..].fill(0);
    BTreeMap::from([
        (1, pattern(1, 4096)),
        (2, noise),
        (3, vec![0; 4096]),
        (4, pattern(9, 4096)),
        (9, vec![0; 4096]),
        (10, half),
        (63, pattern(200, 4096)),
    ])
}

fn sample(compression: u32) -> Kdump {
    Kdump { compression, pages: pages(), filtered: [5, 6].into(), ..Kdump::default() }
}

fn open(file: Vec<u8>) -> Dump {
    Dump::from_bytes(file).expect("opens")
}

fn read(mem: &impl PhysMem, pa: u64, len: usize) -> Result<Vec<u8>, MemError> {
    let mut buf = vec![0xaa; len];
    mem.read(pa, &mut buf).map(|()| buf)
}

fn kdump(d: &Dump) -> &KdumpCore {
    match d {
        Dump::Kdump { core, .. } => core,
        other => panic!("not kdump: {other:?}"),
    }
}

/// Every page reads back as written; filtered, absent and out-of-range pages are not captured.
fn check_pages(d: &Dump, want: &BTreeMap<u64, Vec<u8>>) {
    for (&pfn, page) in want {
        assert_eq!(read(d, pfn * 4096, 4096).unwrap(), *page, "pfn {pfn}");
    }
    for pfn in [0u64, 5, 6, 7, 62, 64, 1 << 40] {
        assert_eq!(read(d, pfn * 4096 + 8, 8), Err(MemError { addr: pfn * 4096 + 8, kind: NC }), "pfn {pfn}");
    }
    // A read across two dumped pages, and one that runs from a dumped page into a filtered one.
    let cross = read(d, 2 * 4096 - 4, 8).unwrap();
    assert_eq!((&cross[..4], &cross[4..]), (&want[&1][4092..], &want[&2][..4]));
    assert_eq!(read(d, 5 * 4096 - 4, 8), Err(MemError { addr: 5 * 4096, kind: NC }));
    assert_eq!(d.damage(), (vec![], 0), "nothing damaged");
}

#[test]
fn each_compression_reads_back_every_page_and_nothing_else() {
    for c in [ZLIB, LZO, SNAPPY, ZSTD, 0] {
        let built = sample(c).build();
        if c != 0 {
            assert_eq!(built.compressed, 4, "compression {c:#x}: the noise page and the zero pages stay raw");
        }
        let d = open(built.file);
        assert_eq!(d.format(), Format::Kdump { flattened: false });
        let expect = match c {
            ZLIB => Compression::Zlib,
            LZO => Compression::Lzo,
            SNAPPY => Compression::Snappy,
            ZSTD => Compression::Zstd,
            _ => Compression::None,
        };
        assert_eq!(d.compression(), Some(expect));
        check_pages(&d, &pages());
    }
}

#[test]
fn the_flattened_form_reads_like_the_file_it_rearranges_to() {
    for c in [ZLIB, LZO] {
        let built = sample(c).build();
        for record in [1000, 4096, 1 << 20] {
            let d = open(flatten(&built.file, record));
            assert_eq!(d.format(), Format::Kdump { flattened: true });
            check_pages(&d, &pages());
        }
    }
}

#[test]
fn ram_ranges_come_from_the_first_bitmap() {
    let d = open(sample(ZLIB).build().file);
    // Dumped 1-4, 9, 10, 63 and filtered 5, 6: RAM is 1..7, 9..11, 63..64.
    assert_eq!(d.ram_ranges().unwrap(), [0x1000..0x7000, 0x9000..0xb000, 0x3f000..0x40000]);
}

#[test]
fn machine_and_notes_come_from_the_headers() {
    let prstatus = note("CORE", 1, &[0; 392]);
    let k = Kdump { notes: prstatus.clone(), machine: "", ..sample(ZLIB) };
    let d = open(k.build().file);
    assert_eq!(d.notes().unwrap(), prstatus);
    assert_eq!(d.machine(), 183, "an arm64 NT_PRSTATUS when utsname is empty");
    let d = open(Kdump { notes: note("CORE", 1, &[0; 336]), machine: "", ..sample(ZLIB) }.build().file);
    assert_eq!(d.machine(), 62);
    assert_eq!(open(sample(ZLIB).build().file).machine(), 62, "utsname.machine x86_64");
    assert_eq!(open(Kdump { machine: "", ..sample(ZLIB) }.build().file).machine(), 0, "nothing says");
}

#[test]
fn zero_pages_may_share_one_descriptor_target() {
    let built = sample(ZLIB).build();
    assert_eq!(built.layout[&3].1, built.layout[&9].1, "pfns 3 and 9 point at the same zero page");
    check_pages(&open(built.file), &pages());
}

fn page_error(file: Vec<u8>, pfn: u64) -> PageError {
    let d = open(file);
    assert_eq!(read(&d, pfn * 4096, 8), Err(MemError { addr: pfn * 4096, kind: NC }), "a damaged page is not read");
    let (damage, count) = d.damage();
    assert_eq!(count, 1);
    let err = kdump(&d).page(pfn).unwrap_err();
    assert_eq!(damage[0], err);
    assert_eq!(err.pfn(), pfn, "names the pfn: {err:?}");
    err
}

/// Damage a decoder can see: zlib's adler-32, the LZO end marker, snappy's length preamble, the zstd
/// frame magic. (A flipped literal in a stream without a checksum, lzo, snappy, zstd as makedumpfile
/// writes it, decodes to other bytes: no reader can tell.)
#[test]
fn a_corrupt_compressed_page_is_an_error_naming_its_pfn_and_offset() {
    for c in [ZLIB, LZO, SNAPPY, ZSTD] {
        let built = sample(c).build();
        let (_, off, size, flags) = built.layout[&4];
        assert_eq!(flags, c);
        let mut f = built.file.clone();
        let at = if c == ZLIB || c == LZO { off + size - 2 } else { off };
        for b in &mut f[at..at + 2] {
            *b ^= 0x5a;
        }
        let err = page_error(f, 4);
        assert!(matches!(err, PageError::Decompress { pfn: 4, offset, .. } if offset == off as u64), "{c:#x}: {err}");

        // The same stream cut short by its descriptor's size.
        let mut f = built.file.clone();
        put_u32(&mut f, built.layout[&4].0 + 8, (size / 2) as u32);
        assert!(matches!(page_error(f, 4), PageError::Decompress { pfn: 4, .. }), "{c:#x}");
    }
}

#[test]
fn impossible_descriptors_are_errors_naming_the_pfn() {
    let built = sample(ZLIB).build();
    let (d4, ..) = built.layout[&4];
    type Corrupt<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;
    let cases: [(&str, Corrupt); 7] = [
        ("data in the headers", Box::new(|f| put_u64(f, d4, 0))),
        ("data in the descriptor table", Box::new(move |f| put_u64(f, d4, (built.descs + 8) as u64))),
        ("data past the end", Box::new(|f| put_u64(f, d4, u64::MAX - 8))),
        ("negative offset", Box::new(|f| put_u64(f, d4, 1 << 63))),
        ("two compressions", Box::new(|f| put_u32(f, d4 + 12, ZLIB | LZO))),
        ("size over a page", Box::new(|f| put_u32(f, d4 + 8, 4097))),
        ("raw page not a page long", Box::new(|f| put_u32(f, d4 + 12, 0))),
    ];
    for (what, corrupt) in cases {
        let mut f = built.file.clone();
        corrupt(&mut f);
        let err = page_error(f, 4);
        assert!(
            matches!(err, PageError::Descriptor { pfn: 4, index: 3, offset, .. } if offset == d4 as u64),
            "{what}: {err}"
        );
    }
}

#[test]
fn an_incomplete_dump_lacks_the_pages_it_never_wrote() {
    let built = sample(ZLIB).build();
    let mut f = built.file.clone();
    put_u32(&mut f, 424, ZLIB | kb::INCOMPLETE);
    let (d10, ..) = built.layout[&10];
    f[d10..d10 + kb::DESC].fill(0);
    let d = open(f.clone());
    assert_eq!(read(&d, 10 * 4096, 8), Err(MemError { addr: 10 * 4096, kind: NC }));
    assert_eq!(d.damage().1, 0, "absent, not damaged");
    assert_eq!(read(&d, 4096, 4096).unwrap(), pages()[&1]);
    // Without the flag, a zeroed descriptor is damage.
    put_u32(&mut f, 424, ZLIB);
    assert!(matches!(page_error(f, 10), PageError::Descriptor { pfn: 10, .. }));
}

fn refuse(file: Vec<u8>) -> DumpError {
    Dump::from_bytes(file).expect_err("must be refused")
}

#[test]
fn hostile_headers_are_refused_with_the_field_named() {
    let good = sample(ZLIB).build().file;
    type Expect = fn(&DumpError) -> bool;
    let cases: [(usize, u64, usize, Expect); 9] = [
        (8, 0x0600_0000, 4, |e| matches!(e, DumpError::Kdump(KdumpError::Version { version: 0x0600_0000 }))),
        (428, 4095, 4, |e| matches!(e, DumpError::Kdump(KdumpError::BlockSize { block_size: 4095 }))),
        (428, 1 << 20, 4, |e| matches!(e, DumpError::Kdump(KdumpError::BlockSize { .. }))),
        (432, 0, 4, |e| matches!(e, DumpError::Kdump(KdumpError::SubHeaderSize { blocks: 0 }))),
        (432, 0x7fff_ffff, 4, |e| matches!(e, DumpError::Kdump(KdumpError::BitmapOutsideFile { .. }))),
        (436, u32::MAX as u64, 4, |e| matches!(e, DumpError::Kdump(KdumpError::BitmapOutsideFile { .. }))),
        (4096 + 96, u64::MAX, 8, |e| {
            matches!(e, DumpError::Kdump(KdumpError::BitmapTooSmall { max_mapnr: u64::MAX, bits: 32768 }))
        }),
        (4096 + 56, u64::MAX - 4000, 8, |e| matches!(e, DumpError::Kdump(KdumpError::Notes { .. }))),
        (4096 + 12, 1, 4, |e| matches!(e, DumpError::Kdump(KdumpError::Split { .. }))),
    ];
    for (at, value, width, is_expected) in cases {
        let mut f = good.clone();
        if width == 4 {
            put_u32(&mut f, at, value as u32);
        } else {
            put_u64(&mut f, at, value);
        }
        let err = refuse(f);
        assert!(is_expected(&err), "field at {at} = {value:#x}: {err}");
    }
}

#[test]
fn a_truncated_file_is_refused_or_reads_as_not_captured_never_panics() {
    let built = sample(ZLIB).build();
    let f = &built.file;
    assert!(matches!(refuse(f[..300].to_vec()), DumpError::Kdump(KdumpError::Truncated { len: 300 })));
    assert!(matches!(refuse(f[..5000].to_vec()), DumpError::Kdump(KdumpError::Truncated { len: 5000 })));
    let in_bitmap = refuse(f[..built.bitmap + 10].to_vec());
    assert!(matches!(in_bitmap, DumpError::Kdump(KdumpError::BitmapOutsideFile { .. })), "{in_bitmap}");
    // Cut inside the descriptors: the headers are whole, later pages are damage naming their pfn.
    let d = open(f[..built.descs + 2 * kb::DESC + 4].to_vec());
    assert_eq!(read(&d, 4096, 8).map(|_| ()), Err(MemError { addr: 4096, kind: NC }), "its data is cut off");
    assert!(matches!(kdump(&d).page(4).unwrap_err(), PageError::Read { pfn: 4, what: "page descriptor", .. }));
    // Cut inside the data: pages before the cut read, the rest do not.
    let (_, off10, ..) = built.layout[&10];
    let d = open(f[..off10 + 3].to_vec());
    assert_eq!(read(&d, 4096, 4096).unwrap(), pages()[&1]);
    assert!(matches!(kdump(&d).page(10).unwrap_err(), PageError::Descriptor { pfn: 10, .. }));
}

#[test]
fn hostile_flattened_records_are_refused() {
    let built = sample(ZLIB).build();
    let flat = flatten(&built.file, 4096);
    let first = 4096;
    let set = |f: &mut Vec<u8>, at: usize, v: i64| f[at..at + 8].copy_from_slice(&v.to_be_bytes());
    type Expect = fn(&FlatError) -> bool;
    let cases: [(usize, i64, Expect); 5] = [
        (first + 8, i64::MAX, |e| matches!(e, FlatError::RecordOutsideFile { index: 0, .. })),
        (first + 8, 0, |e| matches!(e, FlatError::BadRecord { index: 0, size: 0, .. })),
        (first, -5, |e| matches!(e, FlatError::BadRecord { index: 0, offset: -5, .. })),
        (first, i64::MAX, |e| matches!(e, FlatError::Overflow { index: 0, .. })),
        (16, 2, |e| matches!(e, FlatError::BadType { found: 2 })),
    ];
    for (at, v, is_expected) in cases {
        let mut f = flat.clone();
        set(&mut f, at, v);
        match refuse(f) {
            DumpError::Flat(e) => assert!(is_expected(&e), "{at}={v}: {e}"),
            other => panic!("{at}={v}: {other}"),
        }
    }
    // No end marker: the file was cut short in transit.
    let cut = refuse(flat[..flat.len() - 16].to_vec());
    assert!(matches!(cut, DumpError::Flat(FlatError::NoEndMarker { .. })), "{cut}");
    // A record moved far away leaves a hole, which reads as zeros as in the sparse file makedumpfile -R
    // writes: here over pfn 1's descriptor, which is then refused.
    let mut f = flatten(&built.file, 4096);
    let (_, off1, ..) = built.layout[&1];
    let rec = 4096 + 16 + 600 + (off1 - 464) / 4096 * (16 + 4096);
    let gap_at = i64::from_be_bytes(f[rec..rec + 8].try_into().unwrap());
    set(&mut f, rec, gap_at + (1 << 30)); // move one record far away
    let d = open(f);
    let err = kdump(&d).page(1).unwrap_err();
    assert!(matches!(err, PageError::Descriptor { pfn: 1, index: 0, .. }), "{err}");
}

/// A machine of 4 GiB (2^20 pages) with three pages dumped: opening reads the two header blocks'
/// fields and nothing else, and a page read costs its piece of the bitmap, its descriptor and its data.
#[test]
fn opening_a_large_sparse_dump_costs_its_headers_only() {
    let top = (1u64 << 20) - 1;
    let pages = BTreeMap::from([(5, pattern(1, 4096)), (0x8_0000, pattern(2, 4096)), (top, pattern(3, 4096))]);
    let k = Kdump { max_mapnr: 1 << 20, pages, ..Kdump::default() };
    let Built { file, .. } = k.build();
    assert!(file.len() > 256 << 10, "two 128 KiB bitmaps");
    let (src, stats) = Counting::new(file);
    let d = Dump::from_source(Box::new(src)).unwrap();
    assert_eq!((stats.reads(), stats.bytes()), (3, 16 + 464 + 104), "magic, disk_dump_header, kdump_sub_header");

    let before = stats.bytes();
    assert_eq!(read(&d, 5 * 4096, 8).unwrap(), pattern(1, 8));
    let first = stats.bytes() - before;
    assert!(first <= 2 * 4096 + 24 + 4096, "one bitmap piece (counted, then read), a descriptor, a page: {first}");

    let before = stats.bytes();
    assert_eq!(read(&d, top * 4096, 8).unwrap(), pattern(3, 8));
    let far = stats.bytes() - before;
    assert!(far <= 128 * 1024 + 4096 + 24 + 4096, "the bitmap up to the page, once: {far}");

    let before = stats.bytes();
    assert_eq!(read(&d, 0x8_0000 * 4096, 8).unwrap(), pattern(2, 8));
    assert!(stats.bytes() - before <= 4096 + 24 + 4096, "the prefix counts are kept");
    let before = stats.bytes();
    assert_eq!(read(&d, top * 4096 + 8, 8).unwrap(), pattern(3, 16)[8..]);
    assert_eq!(stats.bytes(), before, "a page just read is served from the page cache");
}

/// Where a mutation's eight bytes go in a kdump file: at a header field, bitmap or descriptor the reader
/// trusts (`spot` plus up to 24 bytes), or anywhere (`anywhere`). In a flattened file: anywhere after the
/// first 4 KiB, on an 8-byte boundary, over record headers and data alike.
#[derive(Clone, Debug)]
struct Mutation {
    spot: Option<(usize, usize)>,
    anywhere: Index,
    value: u64,
}

fn mutation(spots: usize) -> impl Strategy<Value = Mutation> {
    (prop::option::of((0..spots, 0..24usize)), any::<Index>(), edgy()).prop_map(|(spot, anywhere, value)| Mutation {
        spot,
        anywhere,
        value,
    })
}

/// Mutated kdump and flattened files (header fields, bitmaps, descriptors, record headers set to edge
/// values): opening, reading every page, the RAM map and the notes never panic, neither opening nor any
/// read takes more than the file's length in bytes, and a refused file is refused with an error that says why.
#[test]
fn mutated_files_never_panic() {
    let base = Kdump { notes: note("CORE", 1, &[7; 336]), ..sample(ZLIB) }.build();
    let flat = flatten(&base.file, 3000);
    let spots = [8, 424, 428, 432, 436, 440, 4096, 4096 + 12, 4096 + 48, 4096 + 56, 4096 + 96, base.bitmap, base.descs];
    let mutations = prop::collection::vec(mutation(spots.len()), 1..=3);
    proptest!(config(600), |(is_flat in prop::bool::weighted(1.0 / 3.0), mutations in mutations)| {
        let mut f = if is_flat { flat.clone() } else { base.file.clone() };
        for m in mutations {
            let at = match (is_flat, m.spot) {
                (true, _) => (4096 + m.anywhere.index(f.len() - 4096)) & !7,
                (false, Some((spot, plus))) => spots[spot] + plus,
                (false, None) => m.anywhere.index(f.len()),
            };
            let end = (at + 8).min(f.len());
            let bytes = if is_flat { m.value.to_be_bytes() } else { m.value.to_le_bytes() };
            f[at..end].copy_from_slice(&bytes[..end - at]);
        }
        let len = f.len() as u64;
        let (src, stats) = Counting::new(f);
        match Dump::from_source(Box::new(src)) {
            Ok(d) => {
                prop_assert!(stats.bytes() <= len, "opening read {} bytes of {len}", stats.bytes());
                let mut buf = vec![0u8; 4096];
                for pfn in (0..70).chain([1 << 20, u64::MAX >> 12]) {
                    let before = stats.bytes();
                    let _ = d.read(pfn << 12, &mut buf);
                    let took = stats.bytes() - before;
                    prop_assert!(took <= len, "reading pfn {pfn:#x} read {took} bytes of {len}");
                }
                let _ = (d.ram_ranges(), d.notes(), d.machine(), d.damage());
            }
            Err(e) => prop_assert!(!e.to_string().is_empty(), "{e:?}"),
        }
    });
}

/// `makedumpfile -F -E`: an ELF core in the flattened format opens as an ELF core.
#[test]
fn a_flattened_elf_core_reads_like_the_core() {
    use crate::builder::{core, put_at, Ph, ET_CORE};
    let mut file = core(ET_CORE, &[Ph::load(0x1000, 0x20_0000, 0x2000, 0x2000)], 0x3000);
    put_at(&mut file, 0x1000, &pattern(4, 0x2000));
    let d = open(flatten(&file, 0x700));
    assert_eq!(d.format(), Format::Elf { flattened: true });
    assert_eq!(read(&d, 0x20_0000, 0x2000).unwrap(), pattern(4, 0x2000));
    assert_eq!(read(&d, 0x20_2000, 1), Err(MemError { addr: 0x20_2000, kind: NC }));
}

#[test]
fn a_file_of_no_known_format_is_refused_with_its_first_bytes() {
    let err = refuse(b"MZ\x90\x00 not a dump".to_vec());
    assert!(matches!(&err, DumpError::Unknown { magic } if magic.starts_with(b"MZ")), "{err}");
    assert!(matches!(refuse(Vec::new()), DumpError::Unknown { .. }));
}

/// Headers before version 6 keep `max_mapnr` in the 32-bit field of the main header, and before
/// version 4 have no notes: the fields a version does not have are not read.
#[test]
fn older_header_versions_read_the_fields_they_have() {
    let k = Kdump { notes: note("CORE", 1, &[0; 336]), machine: "", ..sample(ZLIB) };
    let mut f = k.build().file;
    put_u64(&mut f, 4096 + 96, u64::MAX); // max_mapnr_64: not there before version 6
    put_u32(&mut f, 8, 5);
    let d = open(f.clone());
    assert_eq!(kdump(&d).header().max_mapnr, 64);
    check_pages(&d, &pages());
    assert_eq!(d.machine(), 62, "notes from version 4");
    put_u32(&mut f, 8, 3);
    let d = open(f);
    assert_eq!((d.notes().unwrap(), d.machine()), (vec![], 0), "no notes before version 4");
}

/// A flattened stream of `(offset, bytes)` records, then the end marker.
fn records(recs: &[(i64, &[u8])]) -> Vec<u8> {
    let mut out = vec![0u8; 4096];
    out[..12].copy_from_slice(b"makedumpfile");
    out[16..24].copy_from_slice(&1i64.to_be_bytes());
    for (off, bytes) in recs {
        out.extend_from_slice(&off.to_be_bytes());
        out.extend_from_slice(&(bytes.len() as i64).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    out.extend_from_slice(&[0xff; 16]);
    out
}

/// What `makedumpfile -R` would leave on disk: later records overwrite earlier ones, a record inside
/// another cuts it in two, bytes no record wrote are zeros, and reading past the end fails.
#[test]
fn flattened_records_rearrange_as_on_disk() {
    use iommu_dump::{FlatFile, ReadAt};
    let f = FlatFile::new(records(&[(0, b"aaaaaaaaaa"), (3, b"bb"), (8, b"cccc"), (16, b"dd"), (1, b"e")])).unwrap();
    assert_eq!((f.records(), f.len()), (5, 18));
    let mut buf = [0u8; 18];
    f.read_exact_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"aeabbaaacccc\0\0\0\0dd");
    assert!(f.read_exact_at(17, &mut [0; 2]).is_err(), "past the end");
    assert!(f.read_exact_at(u64::MAX, &mut [0; 2]).is_err());
    assert_eq!(f.extents(), 7, "a, e, a, b, a, c, d");
}

/// A hostile stream rewriting one range again and again: the index holds what is there now, not the
/// history.
#[test]
fn rewriting_the_same_range_does_not_grow_the_index() {
    use iommu_dump::FlatFile;
    let recs: Vec<(i64, &[u8])> = (0..10_000).map(|i| (0, if i % 2 == 0 { &b"xy"[..] } else { &b"zw"[..] })).collect();
    let f = FlatFile::new(records(&recs)).unwrap();
    assert_eq!((f.records(), f.extents()), (10_000, 1));
}

/// A split dump names its pfn range from the fields its header version has: `start_pfn_64`/`end_pfn_64`
/// from version 6, `start_pfn`/`end_pfn` (sub-header offsets 16 and 24) before.
#[test]
fn a_split_dump_names_its_pfns_from_its_header_versions_fields() {
    let good = sample(ZLIB).build().file;
    for (version, start_at, end_at) in [(6u32, 4096 + 80, 4096 + 88), (5, 4096 + 16, 4096 + 24)] {
        let mut f = good.clone();
        put_u32(&mut f, 8, version);
        put_u32(&mut f, 4096 + 12, 1);
        put_u64(&mut f, start_at, 0x100);
        put_u64(&mut f, end_at, 0x200);
        let err = refuse(f);
        assert!(
            matches!(err, DumpError::Kdump(KdumpError::Split { start: 0x100, end: 0x200 })),
            "version {version}: {err}"
        );
    }
}
