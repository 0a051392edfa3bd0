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

pub use context::*;
pub use fault::*;
pub use inv::*;
pub use irte::*;
pub use pasid::*;
pub use pte::*;
pub use regs::*;
pub use root::*;

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
