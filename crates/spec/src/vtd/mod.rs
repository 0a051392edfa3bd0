//! Intel VT-d (Virtualization Technology for Directed I/O, spec rev. 4.x): registers (chapter 11), root,
//! context and PASID structures (9.1–9.6), second-level paging entries (9.8), invalidation descriptors
//! (6.5.2) and fault records (11.4.14).
//!
//! Names follow the spec and Linux's `drivers/iommu/intel/iommu.h`.

pub mod context;
pub mod fault;
pub mod inv;
pub mod pasid;
pub mod pte;
pub mod regs;
pub mod root;

pub use context::*;
pub use fault::*;
pub use inv::*;
pub use pasid::*;
pub use pte::*;
pub use regs::*;
pub use root::*;

/// A PCI requester ID (`bus << 8 | devfn`), what VT-d calls the source ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SourceId(pub u16);

impl SourceId {
    pub const fn new(bus: u8, dev: u8, func: u8) -> Self {
        SourceId(((bus as u16) << 8) | (((dev & 0x1f) as u16) << 3) | (func & 7) as u16)
    }
    pub const fn bus(self) -> u8 {
        (self.0 >> 8) as u8
    }
    pub const fn devfn(self) -> u8 {
        self.0 as u8
    }
    pub const fn dev(self) -> u8 {
        (self.0 >> 3) as u8 & 0x1f
    }
    pub const fn func(self) -> u8 {
        self.0 as u8 & 7
    }
}

impl core::fmt::Display for SourceId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus(), self.dev(), self.func())
    }
}

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
