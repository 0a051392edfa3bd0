//! How long the SNP panic-path checker takes: every protocol at N = 2, 3, 4 CPUs (issue: N = 4 over all
//! protocols in under a minute).

use criterion::{criterion_group, criterion_main, Criterion};
use iommu_sim::snpcheck::{explore, protocols};

fn all_protocols(c: &mut Criterion) {
    let ps = protocols();
    for cpus in [2usize, 3, 4] {
        c.bench_function(&format!("snp-check all protocols, {cpus} cpus"), |b| {
            b.iter(|| ps.iter().map(|p| explore(p, cpus).states).sum::<usize>())
        });
    }
}

criterion_group!(benches, all_protocols);
criterion_main!(benches);
