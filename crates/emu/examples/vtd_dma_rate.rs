//! DMA throughput through the VT-d model, with and without its caches.
//!
//! `cargo run --release -p iommu-emu --example vtd_dma_rate [ops]`

use std::time::Instant;

use iommu_driver::PhysMem;
use iommu_emu::{dma_write, MmioDevice, PhysMemory, VtdConfig, VtdModel};
use iommu_spec::vtd::{level_index, off, ContextEntry, Gcmd, RootEntry, RtAddr, SlPte, TranslationType};

const PAGES: u64 = 4096;
const SID: u32 = 0x0010;

fn main() {
    let ops: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(2_000_000);
    for caching in [true, false] {
        let (mut mem, mut vtd) = setup();
        vtd.set_caching(caching);
        let data = [0x5au8; 64];
        let mut x: u64 = 1;
        let start = Instant::now();
        for _ in 0..ops {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let iova = ((x >> 20) % PAGES) << 12 | (x >> 8) & 0xfc0;
            assert!(dma_write(&mut vtd, &mut mem, SID, iova, &data).is_done());
        }
        let secs = start.elapsed().as_secs_f64();
        let c = vtd.counters();
        println!(
            "caching {caching:5}: {ops} DMA writes of 64 B in {secs:.3} s = {:.2} M/s \
             (IOTLB hits {}, walks {}, pages written {})",
            ops as f64 / secs / 1e6,
            c.iotlb_hits,
            c.walks,
            mem.stats().pages_materialised
        );
    }
}

/// 4-level tables mapping IOVA page n to physical page 0x100000 + n for one device.
fn setup() -> (PhysMemory, VtdModel) {
    let mut mem = PhysMemory::contiguous(0..1 << 30);
    let mut vtd = VtdModel::new(VtdConfig::legacy_only());
    let mut next = 0x1000_0000u64;
    let mut page = || {
        next += 0x1000;
        next
    };
    let root = page();
    let ctx = page();
    let pt = page();
    mem.write_u128(root, RootEntry::new().with_context_table(ctx).into_bits()).unwrap();
    let ce = ContextEntry::new()
        .with_present(true)
        .with_tt(TranslationType::MultiLevel)
        .with_page_table(pt)
        .with_aw(2)
        .with_did(1);
    mem.write_u128(ctx + (SID as u64 & 0xff) * 16, ce.into_bits()).unwrap();
    for n in 0..PAGES {
        let iova = n << 12;
        let mut table = pt;
        for level in (2..=4).rev() {
            let slot = table + level_index(iova, level) as u64 * 8;
            let pte = SlPte::from_bits(mem.read_u64(slot).unwrap());
            table = if pte.present() {
                pte.phys()
            } else {
                let t = page();
                mem.write_u64(slot, SlPte::entry(t, true, true).into_bits()).unwrap();
                t
            };
        }
        let leaf = SlPte::entry(0x10_0000 + iova, true, true);
        mem.write_u64(table + level_index(iova, 1) as u64 * 8, leaf.into_bits()).unwrap();
    }
    vtd.mmio_write(&mut mem, off::RTADDR, 8, RtAddr::from_table(root, false).into_bits());
    vtd.mmio_write(&mut mem, off::GCMD, 4, Gcmd::new().with_srtp(true).into_bits() as u64);
    vtd.mmio_write(&mut mem, off::GCMD, 4, Gcmd::new().with_te(true).into_bits() as u64);
    (mem, vtd)
}
