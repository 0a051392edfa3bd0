//! Properties over garbage and mutated inputs: parsing and reading never panic, and what is refused is
//! refused with a typed error.

use std::cell::Cell;

use iommu_driver::{Mmio, PhysMem};
use iommu_dump::{write_core, ElfCore, RegSnapshot, RegsError, SnapshotMmio};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::{FileFailurePersistence, RngAlgorithm, RngSeed};

use crate::builder::{core, pattern, put_at, Ph, ET_CORE, PT_NOTE};

/// The properties' configuration: `cases` cases, and a failing case's seed saved in
/// `<test file>.proptest-regressions` next to the test's source, replayed first on the next run.
pub fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        // A third less generation time than the default ChaCha; the inputs need no cryptographic quality.
        rng_algorithm: RngAlgorithm::XorShift,
        // A fixed seed: every run sweeps the same cases, so a coverage claim passes or fails the same way each time
        // (new cases come from the fuzz targets).
        rng_seed: RngSeed::Fixed(0x4841_4e44_4f56_4552),
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    }
}

/// A value that is often at an edge: 0, all ones, the top bit, near a power of two, or small.
pub fn edgy() -> impl Strategy<Value = u64> + Clone {
    prop_oneof![
        select(vec![0, u64::MAX, u64::MAX - 7, 1 << 63, u32::MAX as u64]),
        (0..64u32, 0..3u64).prop_map(|(shift, less)| (1u64 << shift).wrapping_sub(less)),
        0..0x1000u64,
        any::<u64>(),
    ]
}

/// One change to a file: at an index into the whole file or into its first 0xf0 bytes (the ELF and
/// program headers, where the numbers are), a byte or an edge value's eight bytes.
#[derive(Clone, Debug)]
struct Edit {
    whole_file: bool,
    at: Index,
    patch: Patch,
}

#[derive(Clone, Debug)]
enum Patch {
    Byte(u8),
    Word(u64),
}

fn edit() -> impl Strategy<Value = Edit> {
    (
        prop::bool::weighted(0.25),
        any::<Index>(),
        prop_oneof![any::<u8>().prop_map(Patch::Byte), edgy().prop_map(Patch::Word)],
    )
        .prop_map(|(whole_file, at, patch)| Edit { whole_file, at, patch })
}

fn apply(f: &mut Vec<u8>, edits: &[Edit], truncate: Option<Index>) {
    for e in edits {
        let span = if e.whole_file { f.len() } else { 0xf0.min(f.len()) };
        if span == 0 {
            continue;
        }
        let at = e.at.index(span);
        match e.patch {
            Patch::Byte(b) => f[at] = b,
            Patch::Word(w) if at + 8 <= f.len() => put_at(f, at, &w.to_le_bytes()),
            Patch::Word(_) => {}
        }
    }
    if let Some(t) = truncate {
        let len = t.index(f.len().max(1));
        f.truncate(len);
    }
}

/// An ELF core's input: random bytes, or a valid core (as built, or as `write_core` trims it) edited.
#[derive(Clone, Debug)]
enum CoreInput {
    Random(Vec<u8>),
    Edited { trimmed: bool, edits: Vec<Edit>, truncate: Option<Index> },
}

fn core_input() -> impl Strategy<Value = CoreInput> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..300).prop_map(CoreInput::Random),
        2 => (any::<bool>(), prop::collection::vec(edit(), 1..=4), prop::option::weighted(0.125, any::<Index>()))
            .prop_map(|(trimmed, edits, truncate)| CoreInput::Edited { trimmed, edits, truncate }),
    ]
}

/// Reads all over the address space and around each segment's edges, `len` bytes at a time.
fn poke(mem: &ElfCore, reads: &[(u64, usize)]) {
    let mut buf = [0; 64];
    let edges = mem.segments().iter().flat_map(|s| [s.paddr, s.range().end.wrapping_sub(3)]);
    let lens = reads.iter().map(|r| r.1).cycle();
    for (a, n) in edges.zip(lens).chain(reads.iter().copied()) {
        let _ = mem.read(a, &mut buf[..n]);
    }
    let _ = (mem.ram_ranges(), mem.notes());
}

fn valid_core() -> Vec<u8> {
    let phdrs = [
        Ph { p_type: PT_NOTE, offset: 0x100, paddr: 0, filesz: 0x10, memsz: 0x10 },
        Ph::load(0x110, 0x1000, 0x40, 0x80),
        Ph::load(0x150, 0x1080, 0x20, 0x20),
    ];
    let mut f = core(ET_CORE, &phdrs, 0x170);
    put_at(&mut f, 0x100, &pattern(5, 0x70));
    f
}

#[test]
fn elf_core_survives_garbage_and_mutations() {
    let base = valid_core();
    let mut trimmed = Vec::new();
    write_core(&ElfCore::from_bytes(base.clone()).unwrap(), &[0x1000].into(), Some(b"abcd"), &mut trimmed).unwrap();
    let (accepted, refused) = (Cell::new(0), Cell::new(0));
    let reads = prop::collection::vec((edgy(), 0..=64usize), 8);
    proptest!(config(6000), |(input in core_input(), reads in reads)| {
        let bytes = match input {
            CoreInput::Random(b) => b,
            CoreInput::Edited { trimmed: t, edits, truncate } => {
                let mut f = if t { trimmed.clone() } else { base.clone() };
                apply(&mut f, &edits, truncate);
                f
            }
        };
        match ElfCore::from_bytes(bytes) {
            Ok(mem) => {
                accepted.set(accepted.get() + 1);
                poke(&mem, &reads);
            }
            Err(e) => {
                refused.set(refused.get() + 1);
                prop_assert!(!e.to_string().is_empty());
            }
        }
    });
    // Both paths must have been exercised, or the property proves nothing.
    let (accepted, refused) = (accepted.get(), refused.get());
    assert!(accepted > 300 && refused > 300, "accepted {accepted}, refused {refused}");
}

const REG_ALPHABET: &[u8] = b"0123456789abcdefABCDEFxX: \n\t(qemu)g/,#";
const REG_TEXT: &str =
    "(qemu) xp /2wx 0xfed90018\n00000000fed90018: 0x00000000 0xc0000000\nfed90020: 0x000000007f9a1000\n";

/// Register-dump text: a string over the dump's alphabet, or the QEMU `xp` sample with bytes replaced
/// (mostly from the alphabet, sometimes any byte).
fn reg_text() -> impl Strategy<Value = String> {
    let letter = select(REG_ALPHABET.to_vec());
    prop_oneof![
        prop::collection::vec(letter.clone(), 0..120).prop_map(|b| b.into_iter().map(char::from).collect()),
        prop::collection::vec((any::<Index>(), prop_oneof![1 => any::<u8>(), 3 => letter]), 1..=4).prop_map(|edits| {
            let mut b = REG_TEXT.as_bytes().to_vec();
            for (at, v) in edits {
                let at = at.index(b.len());
                b[at] = v;
            }
            String::from_utf8_lossy(&b).into_owned()
        }),
    ]
}

#[test]
fn reg_snapshot_survives_garbage_and_mutations() {
    let (accepted, refused) = (Cell::new(0), Cell::new(0));
    let reads = prop::collection::vec((edgy(), edgy(), 0..16usize), 4);
    proptest!(config(6000), |(text in reg_text(), reads in reads)| {
        match RegSnapshot::parse(&text) {
            Ok(snap) => {
                accepted.set(accepted.get() + 1);
                let mut m = SnapshotMmio::new(snap, 0xfed9_0000);
                for (off, addr, size) in reads {
                    let off = off as usize;
                    let _ = (m.read32(off), m.read64(off), m.snapshot().has(addr, size));
                }
            }
            Err(e) => {
                refused.set(refused.get() + 1);
                // A refusal names a line of the text.
                prop_assert!(
                    matches!(e, RegsError::BadLine { line, .. } if (1..=text.lines().count()).contains(&line)),
                    "{e:?}"
                );
            }
        }
    });
    let (accepted, refused) = (accepted.get(), refused.get());
    assert!(accepted > 300 && refused > 300, "accepted {accepted}, refused {refused}");
}
