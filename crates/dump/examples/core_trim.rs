//! Look inside an ELF core, or trim it to the pages holding given physical addresses.
//!
//! ```text
//! cargo run -p iommu-dump --example core_trim -- dump.core                      # segments, RAM map
//! cargo run -p iommu-dump --example core_trim -- dump.core small.core 0xf0000 … # keep those pages
//! ```
//!
//! The notes (CPU state, VMCOREINFO) are kept, so the small core is still a core of that machine.

use std::collections::BTreeSet;
use std::process::ExitCode;

use iommu_dump::{write_core_for, Arch, ElfCore, PAGE_SIZE};

fn parse_addr(s: &str) -> Result<u64, String> {
    let hex = s.strip_prefix("0x").unwrap_or(s);
    u64::from_str_radix(hex, 16).map_err(|e| format!("{s:?} is not a hex address: {e}"))
}

fn run(args: &[String]) -> Result<(), String> {
    let [input, rest @ ..] = args else {
        return Err("usage: core_trim IN.core [OUT.core ADDR...]".into());
    };
    let core = ElfCore::open(input).map_err(|e| e.to_string())?;
    let Some((output, addrs)) = rest.split_first() else {
        println!("{input}: e_machine {}, {} bytes", core.machine(), core.file_len());
        for s in core.segments() {
            println!(
                "  segment {:>3}: {:#014x}..{:#014x} ({:#x} bytes in file)",
                s.index,
                s.paddr,
                s.range().end,
                s.filesz
            );
        }
        println!("  shadowed segments: {:?}", core.shadowed());
        println!("  RAM: {:x?}", core.ram_ranges());
        println!("  notes: {} bytes", core.notes().map_err(|e| e.to_string())?.len());
        return Ok(());
    };
    let pages: BTreeSet<u64> =
        addrs.iter().map(|a| parse_addr(a).map(|a| a & !(PAGE_SIZE - 1))).collect::<Result<_, _>>()?;
    let arch = Arch::from_machine(core.machine());
    let notes = core.notes().map_err(|e| e.to_string())?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(output).map_err(|e| format!("{output}: {e}"))?);
    let summary = write_core_for(arch, &core, &pages, Some(&notes), &mut out).map_err(|e| e.to_string())?;
    println!(
        "{output}: {} pages in {} segments, skipped {:x?}",
        summary.pages_written, summary.segments, summary.pages_skipped
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("core_trim: {e}");
            ExitCode::FAILURE
        }
    }
}
