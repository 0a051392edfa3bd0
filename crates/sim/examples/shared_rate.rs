//! The bench's shared-unit rows alone (`handover bench`'s "shared 1 thread / 2 threads"), `ROUNDS` times (3) for
//! each IOMMU, with `OPS` (10M) requests per thread and run: a target for profiling the two-thread figure.
//! `ONLY=vtd|amdvi|smmuv3`.
//!
//! `cargo run --release -p iommu-sim --example shared_rate`

use iommu_emu::SharedUnit;
use iommu_sim::unit::IommuKind;

/// The allocator `handover` runs with, so the profile is the bench's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let ops: u64 = std::env::var("OPS").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000_000);
    let rounds: u64 = std::env::var("ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let only = std::env::var("ONLY").unwrap_or_default();
    for kind in IommuKind::ALL {
        if !only.is_empty() && !kind.name().starts_with(&only[..]) {
            continue;
        }
        let (mem, unit, base, rid) = iommu_sim::bench::translate_rig(kind);
        let twin = SharedUnit::new(unit.clone(), mem.snapshot());
        let shared = SharedUnit::new(unit, mem);
        let local = |i: u64| base + ((i / 512) % 4096) * 4096 + (i % 512) * 8;
        for _ in 0..rounds {
            let r = iommu_sim::bench::shared_rates(&shared, &twin, rid, ops, local);
            println!(
                "{:>7} 1 thread {:.3e}/s  2 threads {:.3e}/s  {:.2}x  (2 units {:.2}x, arithmetic {:.2}x)",
                kind.name(),
                r.one,
                r.two,
                r.two_over_one,
                r.apart_over_one,
                r.arith_2_over_1
            );
        }
    }
}
