//! `handover bench`'s adoption rows for one IOMMU at one size, repeated: adoption against its pages floor, run
//! after run in the same process (each row is already a median of five), for comparing builds and as a target
//! for `perf record` and `valgrind --tool=cachegrind`. `ONLY=vtd|amdvi|smmuv3` (all three when unset), `N`
//! live devices (1000), `REPS` rows each (5), `PAGES` mapped for each SMMUv3 master (1, as `handover bench`).
//!
//! `cargo run --release -p iommu-sim --example adopt_ratio`

/// The allocator `handover` runs with, so the profile is the bench's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let var = |k: &str, d: u32| std::env::var(k).ok().and_then(|s| s.parse().ok()).unwrap_or(d);
    let (n, reps) = (var("N", 1000), var("REPS", 5));
    let only = std::env::var("ONLY").unwrap_or_default();
    let pages = var("PAGES", 1);
    let smmuv3 = move |n| iommu_sim::bench::adopt_smmuv3_mapping(n, pages);
    let rows: [(&str, &dyn Fn(u32) -> iommu_sim::bench::AdoptFigure); 3] =
        [("vtd", &iommu_sim::bench::adopt_vtd), ("amdvi", &iommu_sim::bench::adopt_amdvi), ("smmuv3", &smmuv3)];
    for (name, row) in rows {
        if !only.is_empty() && !name.starts_with(&only[..]) {
            continue;
        }
        let mut ratios = Vec::new();
        for _ in 0..reps {
            let f = row(n);
            let ratio = f.adopt_over_pages_floor;
            println!(
                "{name:>7} {n} adopt {:>8} µs floor {:>8} µs {ratio:.2}x new {} KiB read {} KiB",
                f.adopt_ns / 1000,
                f.pages_floor_ns / 1000,
                f.adopt_new_bytes / 1024,
                f.adopt_read_bytes / 1024
            );
            ratios.push(ratio);
        }
        ratios.sort_by(f64::total_cmp);
        println!("{name:>7} median {:.2}x", ratios[ratios.len() / 2]);
    }
}
