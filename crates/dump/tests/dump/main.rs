//! Integration tests of iommu-dump, one binary (one link) for all of them.

mod acpi;
mod acpi_build;
mod acpi_mem;
mod builder;
mod elf_core;
mod fuzz;
mod kdump;
mod kdump_build;
mod real;
mod real_kdump;
mod regs;
mod regset;
mod trim;
