//! The fuzz targets (`fuzz/`, run with cargo-fuzz on nightly) as plain tests on stable: each target's body
//! over every file of its committed corpus, `fuzz/corpus/<target>/`. A body panics when an oracle fails.

#[path = "../../../fuzz/src/bodies.rs"]
mod bodies;

use std::path::Path;

#[test]
fn every_fuzz_target_passes_over_its_committed_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for (name, body) in bodies::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{name}: no corpus in {}", dir.display());
        for f in files {
            let data = std::fs::read(&f).unwrap();
            eprintln!("{name}: {}", f.display());
            body(&data);
        }
    }
}
