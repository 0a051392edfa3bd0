//! A deterministic sweep of garbage and mutated inputs: parsing and reading never panic.

use iommu_driver::{Mmio, PhysMem};
use iommu_dump::{write_core, ElfCore, RegSnapshot, RegsError, SnapshotMmio};

use crate::builder::{core, pattern, put_at, Ph, ET_CORE, PT_NOTE};

/// Knuth's MMIX LCG; the high bits are the good ones.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// A value that is often at an edge: 0, all ones, near a power of two, or small.
    fn edgy(&mut self) -> u64 {
        match self.below(4) {
            0 => [0, u64::MAX, u64::MAX - 7, 1 << 63][self.below(4) as usize],
            1 => (1u64 << self.below(64)).wrapping_sub(self.below(3)),
            2 => self.below(0x1000),
            _ => (self.next() << 31) ^ self.next(),
        }
    }
}

/// Reads all over the address space and around each segment's edges.
fn poke(mem: &ElfCore, rng: &mut Lcg) {
    let mut buf = [0; 64];
    let mut addrs: Vec<u64> = mem.segments().iter().flat_map(|s| [s.paddr, s.range().end.wrapping_sub(3)]).collect();
    addrs.extend((0..8).map(|_| rng.edgy()));
    for a in addrs {
        let n = rng.below(65) as usize;
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
    let mut rng = Lcg(0x5eed);
    let base = valid_core();
    let mut trimmed = Vec::new();
    write_core(&ElfCore::from_bytes(base.clone()).unwrap(), &[0x1000].into(), Some(b"abcd"), &mut trimmed).unwrap();
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..6000 {
        let input = match i % 3 {
            0 => (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
            1 | 2 => {
                let mut f = if i % 3 == 1 { base.clone() } else { trimmed.clone() };
                for _ in 0..=rng.below(4) {
                    // Mostly the header and program headers, where the numbers are.
                    let span = if rng.below(4) == 0 { f.len() as u64 } else { 0xf0.min(f.len() as u64) };
                    let at = rng.below(span);
                    if rng.below(2) == 0 {
                        f[at as usize] = rng.next() as u8;
                    } else if at as usize + 8 <= f.len() {
                        put_at(&mut f, at as usize, &rng.edgy().to_le_bytes());
                    }
                }
                if rng.below(8) == 0 {
                    f.truncate(rng.below(f.len() as u64) as usize);
                }
                f
            }
            _ => unreachable!(),
        };
        match ElfCore::from_bytes(input) {
            Ok(mem) => {
                accepted += 1;
                poke(&mem, &mut rng);
            }
            Err(e) => {
                refused += 1;
                assert!(!e.to_string().is_empty());
            }
        }
    }
    // Both paths must have been exercised, or the sweep proves nothing.
    assert!(accepted > 300 && refused > 300, "accepted {accepted}, refused {refused}");
}

#[test]
fn reg_snapshot_survives_garbage_and_mutations() {
    let mut rng = Lcg(0xfed9_0000);
    let alphabet = b"0123456789abcdefABCDEFxX: \n\t(qemu)g/,#";
    let base = "(qemu) xp /2wx 0xfed90018\n00000000fed90018: 0x00000000 0xc0000000\nfed90020: 0x000000007f9a1000\n";
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..6000 {
        let text: String = if i % 2 == 0 {
            let len = rng.below(120);
            (0..len).map(|_| alphabet[rng.below(alphabet.len() as u64) as usize] as char).collect()
        } else {
            let mut b = base.as_bytes().to_vec();
            for _ in 0..=rng.below(3) {
                let at = rng.below(b.len() as u64) as usize;
                b[at] = if rng.below(4) == 0 {
                    rng.next() as u8
                } else {
                    alphabet[rng.below(alphabet.len() as u64) as usize]
                };
            }
            String::from_utf8_lossy(&b).into_owned()
        };
        match RegSnapshot::parse(&text) {
            Ok(snap) => {
                accepted += 1;
                let mut m = SnapshotMmio::new(snap, 0xfed9_0000);
                for _ in 0..4 {
                    let off = rng.edgy() as usize;
                    let _ = (m.read32(off), m.read64(off), m.snapshot().has(rng.edgy(), rng.below(16) as usize));
                }
            }
            Err(e) => {
                refused += 1;
                assert!(matches!(e, RegsError::BadLine { .. }), "{e:?}");
            }
        }
    }
    assert!(accepted > 300 && refused > 300, "accepted {accepted}, refused {refused}");
}
