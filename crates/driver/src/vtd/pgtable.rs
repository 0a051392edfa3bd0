//! Building this driver's own second-level page tables (spec 9.8): 4 KiB leaves, intermediate tables
//! allocated on demand with R|W set as Linux does, so permissions are decided at the leaf.

use iommu_spec::vtd::{level_index, SlPte};

use super::VtdError;
use crate::{FrameAlloc, PhysMem};

/// Map the 4 KiB page at `iova` to `pa` in the `levels`-level table at `root`.
pub fn map_page(
    hw: &mut (impl PhysMem + FrameAlloc),
    root: u64,
    levels: u32,
    iova: u64,
    pa: u64,
    r: bool,
    w: bool,
) -> Result<(), VtdError> {
    let mut table = root;
    for level in (2..=levels).rev() {
        let at = table + 8 * level_index(iova, level) as u64;
        let pte = SlPte::from_bits(hw.read_u64(at)?);
        table = if pte.present() {
            pte.phys()
        } else {
            let next = hw.alloc_frame().ok_or(VtdError::OutOfMemory)?;
            hw.write_u64(at, SlPte::entry(next, true, true).into_bits())?;
            next
        };
    }
    hw.write_u64(table + 8 * level_index(iova, 1) as u64, SlPte::entry(pa, r, w).into_bits())?;
    Ok(())
}

/// Clear the leaf for `iova`; whether one was present. Intermediate tables are kept (freed with the domain).
pub fn unmap_page(hw: &mut impl PhysMem, root: u64, levels: u32, iova: u64) -> Result<bool, VtdError> {
    let mut table = root;
    for level in (2..=levels).rev() {
        let pte = SlPte::from_bits(hw.read_u64(table + 8 * level_index(iova, level) as u64)?);
        if !pte.present() {
            return Ok(false);
        }
        table = pte.phys();
    }
    let at = table + 8 * level_index(iova, 1) as u64;
    let was = SlPte::from_bits(hw.read_u64(at)?).present();
    hw.write_u64(at, 0)?;
    Ok(was)
}
