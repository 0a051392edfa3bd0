//! Intel VT-d (Virtualization Technology for Directed I/O, spec rev. 4.x): registers (chapter 11), root,
//! context and PASID structures (9.1–9.6), second-level paging entries (9.8), interrupt-remapping table
//! entries and MSI formats (5.1, 9.10, 9.11), invalidation descriptors (6.5.2) and fault records (11.4.14).
//!
//! Names follow the spec and Linux's `drivers/iommu/intel/iommu.h`.

pub mod context;
pub mod fault;
pub mod inv;
pub mod irte;
pub mod pasid;
pub mod pte;
pub mod regs;
pub mod root;

pub use context::{
    ContextEntry, ScalableContextEntry, TranslationType, CONTEXT_ENTRIES, CONTEXT_ENTRY_SIZE, SM_CONTEXT_ENTRIES,
    SM_CONTEXT_ENTRY_SIZE,
};
pub use fault::{FaultReason, FaultRecord};
pub use inv::{
    desc_type, granularity, pasid_cache_granularity, pasid_iotlb_granularity, ContextCacheInv, DescType, DevTlbInv,
    IecInv, IotlbInv, PasidCacheInv, PasidIotlbInv, WaitInv,
};
pub use irte::{
    is_interrupt_address, DeliveryMode, Irte, MsiAddrCompat, MsiAddrRemap, MsiData, PostedIrte, SourceValidation,
    IRTE_SIZE, LINUX_IRTA_S, MSI_ADDR_BASE, MSI_ADDR_MASK,
};
pub use pasid::{
    pasid_dir_index, pasid_table_index, PasidDirEntry, PasidEntry, PasidEntryQw0, PasidEntryQw1, PasidEntryQw2, Pgtt,
    PASID_DIR_ENTRIES_PER_PAGE, PASID_ENTRY_SIZE, PASID_TABLE_ENTRIES,
};
pub use pte::{agaw_levels, level_index, level_size, levels_width, FlPte, SlPte, PTES_PER_TABLE};
pub use regs::{
    iqei, off, Cap, Ccmd, Ecap, EventCtl, Fsts, Gcmd, Gsts, Ics, IotlbReg, IqPtr, Iqa, Iqer, Irta, Iva, Pmen, RtAddr,
    Ver,
};
pub use root::{from_qwords, to_qwords, RootEntry, ScalableRootEntry, ROOT_ENTRIES, ROOT_ENTRY_SIZE};

/// A PCI requester ID, under the name the VT-d spec uses.
pub use crate::Rid as SourceId;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_id_fields() {
        let s = SourceId::new(0x3a, 0x1f, 7);
        assert_eq!(s.0, 0x3aff);
        assert_eq!((s.bus(), s.dev(), s.func(), s.devfn()), (0x3a, 0x1f, 7, 0xff));
        assert_eq!(format!("{}", SourceId(0x0010)), "00:02.0");
    }

    extern crate std;
    use std::format;
}
