//! Nanoseconds per operation of the paths behind `handover bench`'s translation figures, on the same machine as
//! the bench (one device, 4096 mapped pages, built by the real driver): a front-cache hit, the locality
//! workload, 8-byte memory reads, 8-byte `dma_read` and `dma_read_reference` (front cache off, as the bench's baseline), a full walk with caches off. Each
//! figure is the best of `REPS` (7) runs of `OPS` (1M) operations. `ONLY=vtd|amdvi|smmuv3` and `SEL=hit|loc|memrd|
//! memrd_pages|dma|dmaref|walk` narrow it, so `valgrind --tool=cachegrind` can count instructions per operation
//! (run with `REPS=1`, `OPS=0` and `OPS=100000`, subtract, divide; the walk runs a tenth of `OPS`; the empty loop
//! runs only when `SEL` is unset, so a selected figure counts its own loop alone).
//!
//! `cargo run --release -p iommu-sim --example translate_costs`

use iommu_driver::PhysMem;
use iommu_emu::{Access, Iommu};
use iommu_sim::bench::used;
use iommu_sim::unit::IommuKind;
use std::time::Instant;

/// The allocator `handover` runs with, so the profile is the bench's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const GIB: u64 = 1 << 30;
/// The best nanoseconds per operation over `REPS` runs of `ops` operations; NaN (printed `-`) when `ops` is 0.
fn best(ops: u64, mut op: impl FnMut(u64)) -> f64 {
    if ops == 0 {
        return f64::NAN;
    }
    let mut b = f64::MAX;
    let reps: u64 = std::env::var("REPS").ok().and_then(|s| s.parse().ok()).unwrap_or(7);
    for r in 0..reps {
        let t = Instant::now();
        for i in r * ops..(r + 1) * ops {
            op(i)
        }
        b = b.min(t.elapsed().as_secs_f64() * 1e9 / ops as f64);
    }
    b
}
fn main() {
    let ops: u64 = std::env::var("OPS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let only = std::env::var("ONLY").unwrap_or_default();
    for kind in IommuKind::ALL {
        if !only.is_empty() && !kind.name().starts_with(&only[..]) {
            continue;
        }
        let sel = std::env::var("SEL").unwrap_or_default();
        let on = |n: &str| sel.is_empty() || sel == n;
        let (mut mem, mut unit, base, rid) = iommu_sim::bench::translate_rig(kind);
        let local = |i: u64| base + ((i / 512) % 4096) * 4096 + (i % 512) * 8;
        let mut sum = 0u64;
        let hit = best(if on("hit") { ops } else { 0 }, |_| {
            sum = sum.wrapping_add(used(unit.translate(&mut mem, rid, std::hint::black_box(base), Access::Read)));
        });
        let loc = best(if on("loc") { ops } else { 0 }, |i| {
            sum = sum.wrapping_add(used(unit.translate(&mut mem, rid, local(i), Access::Read)));
        });
        let phys = used(unit.translate(&mut mem, rid, base, Access::Read));
        let memrd = best(if on("memrd") { ops } else { 0 }, |i| {
            let mut b = [0u8; 8];
            let _ = mem.read(phys + (i % 512) * 8, &mut b);
            sum = sum.wrapping_add(u64::from_le_bytes(b));
        });
        let memrd_pages = best(if on("memrd_pages") { ops } else { 0 }, |i| {
            let mut b = [0u8; 8];
            let _ = mem.read(4 * GIB + ((i / 512) % 4096) * 4096 + (i % 512) * 8, &mut b);
            sum = sum.wrapping_add(u64::from_le_bytes(b));
        });
        let dma = best(if on("dma") { ops } else { 0 }, |i| {
            let mut b = [0u8; 8];
            let _ = iommu_emu::dma_read(&mut unit, &mut mem, rid, local(i), &mut b);
            sum = sum.wrapping_add(u64::from_le_bytes(b));
        });
        unit.set_front_cache(false);
        let dmaref = best(if on("dmaref") { ops } else { 0 }, |i| {
            let mut b = [0u8; 8];
            let _ = iommu_emu::dma::dma_read_reference(&mut unit, &mut mem, rid, local(i), &mut b);
            sum = sum.wrapping_add(u64::from_le_bytes(b));
        });
        unit.set_front_cache(true);
        unit.set_caching(false);
        let walk = best(if on("walk") { ops / 10 } else { 0 }, |i| {
            let iova = base + (i.wrapping_mul(2654435761) % 4096) * 4096;
            sum = sum.wrapping_add(used(unit.translate(&mut mem, rid, iova, Access::Read)));
        });
        unit.set_caching(true);
        let empty = best(if sel.is_empty() { ops } else { 0 }, |i| {
            sum = sum.wrapping_add(std::hint::black_box(i));
        });
        std::hint::black_box(sum);
        let f = |x: f64| if x.is_nan() { "-".to_string() } else { format!("{x:.2}") };
        println!(
            "{:7} ns/op: hit {} locality {} memread8 {} memread8-pages {} dma_read8 {} ref {} walk {} empty {}",
            kind.name(),
            f(hit),
            f(loc),
            f(memrd),
            f(memrd_pages),
            f(dma),
            f(dmaref),
            f(walk),
            f(empty)
        );
    }
}
