//! Criterion benches of the figures `handover bench` prints: adoption at scale per IOMMU (the project's
//! adoption, its eager baseline and the floor are timed inside each figure function, so each sample times one
//! whole comparison) and a crash scenario per IOMMU.

use criterion::{criterion_group, criterion_main, Criterion};
use iommu_driver::Policy;
use iommu_sim::bench::{adopt_amdvi, adopt_smmuv3, adopt_vtd};
use iommu_sim::{run, IommuKind, Knobs, Scenario};

fn adoption(c: &mut Criterion) {
    let mut g = c.benchmark_group("adoption with 100 live devices (adopt + eager + floor)");
    g.sample_size(10);
    g.bench_function("vtd", |b| b.iter(|| adopt_vtd(100).adopt_new_bytes));
    g.bench_function("amdvi", |b| b.iter(|| adopt_amdvi(100).adopt_new_bytes));
    g.bench_function("smmuv3", |b| b.iter(|| adopt_smmuv3(100).adopt_new_bytes));
    g.finish();
}

fn scenarios(c: &mut Criterion) {
    let mut g = c.benchmark_group("one crash scenario, adopt");
    for kind in IommuKind::ALL {
        g.bench_function(kind.name(), |b| {
            let knobs = Knobs { iommu: kind, ..Knobs::default() };
            b.iter(|| run(&Scenario { policy: Policy::Adopt, seed: 1, knobs }).0.captured)
        });
    }
    g.finish();
}

criterion_group!(benches, adoption, scenarios);
criterion_main!(benches);
