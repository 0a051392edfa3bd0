//! VMSAv8-64 translation tables with a 4 KiB granule (Arm ARM D8; SMMUv3 uses them for both stages) for
//! the shared walker. Arm numbers levels 0 (top) to 3 (last); the walker counts 1 = last, so a walk
//! starting at Arm level `s` has `4 - s` levels.

use iommu_spec::smmuv3::mair_idx;
use iommu_spec::smmuv3::pgtable::{desc_kind, level_index, level_size, DescKind};
use iommu_spec::smmuv3::pte::{block_low_bits, leaf_output, S1Pte, S2Pte, TableDesc};

use crate::walk::{Entry, Format, Writer};

/// Which stage's leaf permissions apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Stage 1: `AP[2:1]`, unprivileged requests (PCIe DMA without a privileged PASID).
    One,
    /// Stage 2: S2AP.
    Two,
}

/// A walk of `ia_bits` input bits from Arm level `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vmsa {
    /// Which stage's permission encoding the descriptors use (stage-1 AP or stage-2 S2AP).
    pub stage: Stage,
    /// The Arm level the walk starts at (0 to 3), from T0SZ or S2SL0.
    pub start: u32,
    /// Input address bits the table translates (64 - T0SZ, or 64 - S2T0SZ).
    pub ia_bits: u32,
}

impl Vmsa {
    /// Walker levels for this walk.
    pub fn levels(&self) -> u32 {
        4 - self.start.min(3)
    }
    fn arm(level: u32) -> u32 {
        4u32.saturating_sub(level)
    }
}

impl Format for Vmsa {
    fn decode(&self, raw: u64, level: u32, _iova: u64) -> Entry {
        let arm = Self::arm(level);
        match desc_kind(raw, arm) {
            DescKind::Invalid => Entry::Absent,
            DescKind::Reserved => Entry::Bad,
            DescKind::Table => {
                let t = TableDesc::from_bits(raw);
                let lim = if self.stage == Stage::One { t.limit(false) } else { iommu_spec::smmuv3::pte::Perm::RW };
                Entry::Table { table: t.next_table(), level: level - 1, read: lim.read, write: lim.write }
            }
            DescKind::Block | DescKind::Page => {
                if block_low_bits(raw, arm) != 0 {
                    return Entry::Bad;
                }
                let p = match self.stage {
                    Stage::One => S1Pte::from_bits(raw).perm(false),
                    Stage::Two => S2Pte::from_bits(raw).perm(),
                };
                Entry::Leaf { phys: leaf_output(raw, arm), read: p.read, write: p.write }
            }
        }
    }
    fn slot_size(&self, level: u32) -> u64 {
        level_size(Self::arm(level))
    }
    fn index(&self, iova: u64, level: u32) -> usize {
        level_index(iova, Self::arm(level), self.start, self.ia_bits) as usize
    }
}

impl Writer for Vmsa {
    fn table_entry(&self, table: u64, _level: u32) -> u64 {
        TableDesc::to(table).into_bits()
    }
    /// A stage-1 page as Linux's io-pgtable writes it (this project's domains are stage 1).
    fn leaf_entry(&self, pa: u64, _read: bool, write: bool) -> u64 {
        S1Pte::leaf(pa, 3, mair_idx::CACHE, write).into_bits()
    }
}
