//! Crash scenarios per second on one thread, as `handover bench`'s simulation rows run them (each seed's crash
//! shared by the four policies), for one IOMMU: a target for `perf record` and `valgrind --tool=cachegrind`.
//! `ONLY=vtd|amdvi|smmuv3` (all three when unset), `N` scenarios (400), `ALONE=1` for one policy per scenario.
//!
//! `cargo run --release -p iommu-sim --example scenario_rate`

use iommu_sim::unit::IommuKind;

/// The allocator `handover` runs with, so the profile is the bench's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let n: u64 = std::env::var("N").ok().and_then(|s| s.parse().ok()).unwrap_or(400);
    let only = std::env::var("ONLY").unwrap_or_default();
    let shared = std::env::var("ALONE").map(|v| v != "1").unwrap_or(true);
    for kind in IommuKind::ALL {
        if !only.is_empty() && !kind.name().starts_with(&only[..]) {
            continue;
        }
        let f = iommu_sim::bench::simulate(kind, n, 1, shared);
        println!("{:>7} {:>9.1} scenarios/s", f.iommu, f.scenarios_per_s);
    }
}
