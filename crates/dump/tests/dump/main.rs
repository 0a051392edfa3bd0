//! Integration tests of iommu-dump, one binary (one link) for all of them.

mod builder;
mod elf_core;
mod fuzz;
mod real;
mod regs;
mod trim;
