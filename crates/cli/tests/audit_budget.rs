//! The amplification input: a 13 KiB core whose 65 536 devices share one page table that points at itself
//! from every entry (33.5 M cycles to report). `audit` does the work its budget allows — table pages read,
//! problems kept — and says `incomplete`; memory follows the budget, not the repetition.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use iommu_driver::{MemError, MemErrorKind, PhysMem};
use iommu_dump::write_core;
use iommu_spec::vtd::{ContextEntry, RootEntry, SlPte, TranslationType};
use serde_json::Value;

struct Pages(BTreeMap<u64, Vec<u8>>);

impl PhysMem for Pages {
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let page = pa & !0xfff;
        match self.0.get(&page) {
            Some(p) if (pa - page) as usize + buf.len() <= 4096 => {
                buf.copy_from_slice(&p[(pa - page) as usize..][..buf.len()]);
                Ok(())
            }
            _ => Err(MemError { addr: pa, kind: MemErrorKind::NotRam }),
        }
    }
    fn write(&mut self, pa: u64, _: &[u8]) -> Result<(), MemError> {
        Err(MemError { addr: pa, kind: MemErrorKind::ReadOnly })
    }
}

const ROOT: u64 = 0x1000_0000;
const CONTEXT: u64 = 0x1000_1000;
const PT: u64 = 0x1000_2000;

#[test]
fn sixty_five_thousand_devices_sharing_a_self_referencing_table_cost_the_budget_and_are_incomplete() {
    let mut root = vec![0u8; 4096];
    for bus in 0..256 {
        root[bus * 16..bus * 16 + 16]
            .copy_from_slice(&RootEntry::new().with_context_table(CONTEXT).into_bits().to_le_bytes());
    }
    let ce = ContextEntry::new()
        .with_present(true)
        .with_tt(TranslationType::MultiLevel)
        .with_aw(2)
        .with_did(1)
        .with_page_table(PT);
    let context: Vec<u8> = (0..256).flat_map(|_| ce.into_bits().to_le_bytes()).collect();
    let pt: Vec<u8> = (0..512).flat_map(|_| SlPte::entry(PT, true, true).into_bits().to_le_bytes()).collect();
    let mem = Pages(BTreeMap::from([(ROOT, root), (CONTEXT, context), (PT, pt)]));
    let dir = std::env::temp_dir().join(format!("handover-budget-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (core, regs) = (dir.join("amplify.elf"), dir.join("regs.txt"));
    let mut f = std::fs::File::create(&core).unwrap();
    write_core(&mem, &BTreeSet::from([ROOT, CONTEXT, PT]), None, &mut f).unwrap();
    assert!(std::fs::metadata(&core).unwrap().len() < 24 << 10);
    // The vtd-legacy capture's VER, CAP and ECAP; translation on; the root table above.
    std::fs::write(
        &regs,
        format!(
            "00000000fed90000: 0x00000010\n00000000fed90008: 0x00d2008c222f0606\n00000000fed90010: 0x0000000000f00f4a\n\
             00000000fed9001c: 0xc7000000\n00000000fed90020: {ROOT:#018x}\n"
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_handover"))
        .arg("audit")
        .arg(&core)
        .args(["--iommu", "vtd", "--base", "0xfed90000", "--ram", "0-0x7fffffff", "--crashkernel", "256M@0x30000000"])
        .args(["--max-pages", "4096", "--max-problems", "4096", "--json", "--regs"])
        .arg(&regs)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "incomplete");
    let devices = v["units"][0]["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 65536);
    assert!(devices.iter().all(|d| d["verdict"] == "incomplete"));
    let work = &v["work"];
    assert!(work["pages"].as_u64().unwrap() <= 4096, "{work}");
    assert!(work["problems"].as_u64().unwrap() <= 4096, "{work}");
    assert!(work["problems_dropped"].as_u64().unwrap() > 4096, "the rest were counted: {work}");
    assert_eq!(work["exhausted"], true);
    let kept: usize = devices.iter().map(|d| d["notes"].as_array().unwrap().len()).sum();
    assert!(kept <= 4096, "{kept} problems printed");
}
