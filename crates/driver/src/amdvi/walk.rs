//! AMD-Vi v1 host page tables (AMD IOMMU spec 2.2.3) for the shared walker: PR, NextLevel with level
//! skipping, NextLevel-7 page sizes, IR/IW.

use iommu_spec::amdvi::{level_index, level_size, IoPte, NEXT_LEVEL_LEAF, NEXT_LEVEL_SIZED};

use crate::walk::{Entry, Format, Writer};

/// The v1 format. Every address in an entry may carry the host's SME encryption bit (Linux writes table
/// pointers with `iommu_virt_to_phys` and leaves with `__sme_set(paddr)` in `iommu_v1_map_pages`): decoding
/// strips `c_bit`, writing sets it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct V1 {
    /// The SME encryption bit, 0 without SME ([`crate::BootEnv::c_bit`]).
    pub c_bit: u64,
}

impl V1 {
    /// Entries as the kernels of `env` write them.
    pub fn of(env: &crate::BootEnv) -> V1 {
        V1 { c_bit: env.c_bit }
    }
}

impl Format for V1 {
    fn decode(&self, raw: u64, level: u32, iova: u64) -> Entry {
        let pte = IoPte::from_bits(raw);
        if !pte.present() {
            return Entry::Absent;
        }
        if pte.reserved_bits() != 0 {
            return Entry::Bad;
        }
        let slot = level_size(level);
        match pte.next_level() {
            NEXT_LEVEL_LEAF => {
                // A natural-size page at this level: its address is aligned to the level's size.
                let phys = pte.phys() & !self.c_bit;
                if phys & (slot - 1) != 0 {
                    return Entry::Bad;
                }
                Entry::Leaf { phys, read: pte.ir(), write: pte.iw() }
            }
            NEXT_LEVEL_SIZED => {
                // A page of an encoded size, replicated over the slots it spans (Linux `PAGE_SIZE_PTE`):
                // the slot's share of it starts at the page base plus the slot's offset in the page.
                let size = pte.sized_leaf_size();
                if size <= slot || size > level_size(level + 1) {
                    return Entry::Bad;
                }
                Entry::Leaf {
                    phys: (pte.page_base(size) & !self.c_bit) + (iova & (size - 1) & !(slot - 1)),
                    read: pte.ir(),
                    write: pte.iw(),
                }
            }
            next => {
                Entry::Table { table: pte.phys() & !self.c_bit, level: next as u32, read: pte.ir(), write: pte.iw() }
            }
        }
    }
    fn slot_size(&self, level: u32) -> u64 {
        level_size(level)
    }
    fn index(&self, iova: u64, level: u32) -> usize {
        level_index(iova, level)
    }
}

impl Writer for V1 {
    /// A PDE naming the next level down, IR and IW set (Linux `PM_LEVEL_PDE`).
    fn table_entry(&self, table: u64, level: u32) -> u64 {
        IoPte::pde(table | self.c_bit, (level - 1) as u8).into_bits()
    }
    fn leaf_entry(&self, pa: u64, read: bool, write: bool) -> u64 {
        IoPte::leaf(pa | self.c_bit, read, write).into_bits()
    }
}
