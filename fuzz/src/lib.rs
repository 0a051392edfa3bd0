//! The fuzz targets' bodies (`bodies.rs`, shared with `crates/cli/tests/fuzz_corpus.rs`).
#![forbid(unsafe_code)]

mod bodies;
pub use bodies::*;
