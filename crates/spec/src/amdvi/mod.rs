//! AMD I/O Virtualization Technology (AMD-Vi, AMD IOMMU spec 48882 rev 3.x): MMIO registers (3.4; Control and the
//! feature registers in `ctrl`), the device table entry (2.2.2), v1 host I/O page tables (2.2.3), command buffer
//! entries (2.4), event log entries (2.5) and interrupt remapping table entries (2.2.5).
//!
//! Names follow the spec and Linux's `drivers/iommu/amd/amd_iommu_types.h`. Where the spec text is unclear
//! (docs/handover.md#model-choices) about a layout, the item says what was checked and where: Linux's header,
//! QEMU's `hw/i386/amd_iommu.h` (including its 2025 update of the DTE reserved masks "to the latest definition in
//! spec 2.2.2.1"), or VirtualBox's `include/VBox/iommu-amd.h`, a bit-by-bit transcription of the spec.
//!
//! Every command and event entry is 16 bytes. The types here view them as one `u128` whose low quadword is the
//! entry's first eight bytes, so "dw1 bits 31:28" (the opcode and the event code) is bits 63:60.

pub mod cmd;
pub mod ctrl;
pub mod dte;
pub mod event;
pub mod irte;
pub mod pte;
pub mod regs;

pub use cmd::{
    cmd_opcode, cmd_reserved_bits, inv_address, inv_range, invalidate_iommu_all, CmdOpcode, CompletePprRequest,
    CompletionWait, InvalidateDevice, InvalidateIommuPages, InvalidateIotlbPages, CMD_SIZE, INV_ALL_PAGES_ADDRESS,
};
pub use ctrl::{inv_timeout, Control, Efr, Efr2};
pub use dte::{Dte, DteQw0, DteQw1, DteQw2, DteQw3, IntCtl, PagingMode, DTE_SIZE, MAX_DTE_ENTRIES};
pub use event::{Event, EventCode, EventEntry, EventFlags, COMMAND_ADDRESS_MASK, EVENT_SIZE};
pub use irte::{
    IntType, Irte32, IrteGa, IrteGaHi, IrteGaLo, IRTE32_SIZE, IRTE_GA_SIZE, IRTE_INDEX_MASK, LINUX_INT_TAB_LEN,
};
pub use pte::{
    leaf_layout, level_index, level_shift, level_size, mode_for_iova, mode_max_iova, skipped_iova_bits, skipped_levels,
    IoPte, NEXT_LEVEL_LEAF, NEXT_LEVEL_SIZED, PAGE_SIZES_V1, PTES_PER_TABLE,
};
pub use regs::{
    in_completion_store, off, CmdBufBase, CompletionStoreBase, CompletionStoreLimit, DevTableBase, EventLogBase,
    ExclusionBase, ExclusionLimit, GaLogBase, PprLogBase, RingBase, RingPtr, Status, SNP_LOCKED,
};

/// A PCI requester ID, under the name the AMD-Vi spec uses.
pub use crate::Rid as DeviceId;

/// A 16-byte entry (command or event) as the two little-endian quadwords it is stored as.
pub const fn to_qwords(v: u128) -> [u64; 2] {
    [v as u64, (v >> 64) as u64]
}

/// The inverse of [`to_qwords`].
pub const fn from_qwords(q: [u64; 2]) -> u128 {
    q[0] as u128 | (q[1] as u128) << 64
}

/// A 16-byte entry as the four dwords the spec's figures (and Linux's `data[4]`) number 0..3.
pub const fn to_dwords(v: u128) -> [u32; 4] {
    [v as u32, (v >> 32) as u32, (v >> 64) as u32, (v >> 96) as u32]
}

/// The inverse of [`to_dwords`].
pub const fn from_dwords(d: [u32; 4]) -> u128 {
    d[0] as u128 | (d[1] as u128) << 32 | (d[2] as u128) << 64 | (d[3] as u128) << 96
}

/// Bits `hi:lo` (inclusive) as a `u128` mask.
pub(crate) const fn mask128(hi: u32, lo: u32) -> u128 {
    (u128::MAX >> (127 - hi)) & (u128::MAX << lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_id_fields() {
        let d = DeviceId::new(0x3a, 0x1f, 7);
        assert_eq!(d.0, 0x3aff);
        assert_eq!((d.bus(), d.dev(), d.func(), d.devfn()), (0x3a, 0x1f, 7, 0xff));
        assert_eq!(format!("{}", DeviceId(0x0010)), "00:02.0");
        assert_eq!(format!("{}", DeviceId(0xffff)), "ff:1f.7");
        assert_eq!(DeviceId(0x0100).dte_offset(), 0x2000);
        assert_eq!(DeviceId::new(0, 0x20, 8), DeviceId(0), "out-of-range dev/func are masked");
    }

    #[test]
    fn word_views_round_trip() {
        let v = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128;
        assert_eq!(to_qwords(v), [0xfedc_ba98_7654_3210, 0x0123_4567_89ab_cdef]);
        assert_eq!(to_dwords(v), [0x7654_3210, 0xfedc_ba98, 0x89ab_cdef, 0x0123_4567]);
        assert_eq!(from_qwords(to_qwords(v)), v);
        assert_eq!(from_dwords(to_dwords(v)), v);
        assert_eq!(mask128(127, 0), u128::MAX);
        assert_eq!(mask128(75, 67), 0x1ffu128 << 67);
    }

    extern crate std;
    use std::format;
}
