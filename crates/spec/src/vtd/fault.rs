//! Fault recording (spec 7.1, 11.4.14): 128-bit fault records and the fault reasons they carry.

use bitfield_struct::bitfield;

/// A fault recording register, FRCD (11.4.14).
#[bitfield(u128)]
#[derive(PartialEq, Eq)]
pub struct FaultRecord {
    #[bits(12)]
    __: u16,
    /// Faulting page address, bits 63:12.
    #[bits(52)]
    pub fi: u64,
    /// Source ID of the faulting request.
    pub sid: u16,
    #[bits(15)]
    __: u16,
    /// PASID present.
    pub pp: bool,
    /// Fault reason.
    #[bits(8)]
    pub fr: FaultReason,
    /// PASID value.
    #[bits(20)]
    pub pasid: u32,
    #[bits(2)]
    __: u8,
    /// Type: 1 = read request, 0 = write request.
    pub t: bool,
    /// Fault: the record is valid. Write 1 to clear.
    pub f: bool,
}

impl FaultRecord {
    /// FI as an address: the faulting page (bits 63:12), or for interrupt faults the index in 63:48.
    pub const fn address(self) -> u64 {
        self.fi() << 12
    }
    /// For an interrupt-remapping fault (0x20–0x26): FI bits 63:48 hold the interrupt index and 47:12 are
    /// clear (spec 11.4.14).
    pub const fn interrupt_index(self) -> u16 {
        (self.address() >> 48) as u16
    }
    /// The record with FI holding interrupt index `index` in bits 63:48 (bits 47:12 clear).
    pub const fn with_interrupt_index(self, index: u16) -> Self {
        self.with_fi((index as u64) << 36)
    }
    /// Whether the reason is one of the interrupt-remapping faults.
    pub const fn is_interrupt_fault(self) -> bool {
        matches!(self.fr().0, 0x20..=0x27)
    }
    /// Byte offset within the record of the dword holding F (software clears it with a 32-bit write).
    pub const F_DWORD: usize = 12;
    /// Bit of F within that dword (record bit 127).
    pub const F_BIT_IN_DWORD: u32 = 31;
}

/// Fault reasons (spec 7.1.3, Linux `dma_remap_fault_reasons`).
#[open_enum::open_enum]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FaultReason {
    /// 0x1: root entry with P clear.
    RootNotPresent = 0x1,
    /// 0x2: context entry with P clear.
    ContextNotPresent = 0x2,
    /// 0x3: context entry invalid (e.g. reserved TT or an unsupported AW).
    ContextInvalid = 0x3,
    /// 0x4: input address beyond the width the context entry's AGAW (or CAP.MGAW) allows.
    AddressBeyondMgaw = 0x4,
    /// 0x5: write through a leaf (or table) entry without W.
    WriteNotAllowed = 0x5,
    /// 0x6: read through a leaf (or table) entry without R.
    ReadNotAllowed = 0x6,
    /// 0x7: a next-level table pointer could not be accessed.
    NextLevelInvalid = 0x7,
    /// 0x8: the root table address (RTADDR) could not be accessed.
    RootTableInvalid = 0x8,
    /// 0x9: the root entry's context-table pointer could not be accessed.
    ContextTableInvalid = 0x9,
    /// 0xa: root entry with a reserved bit set.
    RootReserved = 0xa,
    /// 0xb: context entry with a reserved bit set.
    ContextReserved = 0xb,
    /// 0xc: paging entry with a reserved bit set.
    PteReserved = 0xc,
    /// 0xd: a translated or translation request the context entry's TT blocks.
    TranslationTypeBlocked = 0xd,
    /// Interrupt request in remappable format with reserved fields set (QEMU `VTD_FR_IR_REQ_RSVD`).
    IrRequestReserved = 0x20,
    /// Interrupt index beyond the table size IRTA.S gives (`VTD_FR_IR_INDEX_OVER`).
    IrIndexOverflow = 0x21,
    /// IRTE with P clear (`VTD_FR_IR_ENTRY_P`).
    IrEntryNotPresent = 0x22,
    /// The IRTE could not be read through IRTA (`VTD_FR_IR_ROOT_INVAL`).
    IrTableAccess = 0x23,
    /// Present IRTE with reserved fields set (`VTD_FR_IR_IRTE_RSVD`).
    IrEntryReserved = 0x24,
    /// Compatibility-format interrupt while remapping is on and GSTS.CFIS is clear (`VTD_FR_IR_REQ_COMPAT`).
    IrCompatBlocked = 0x25,
    /// The requester failed the IRTE's source validation (`VTD_FR_IR_SID_ERR`).
    IrSourceInvalid = 0x26,
    /// 0x30: scalable mode, invalid root table address.
    SmRootTableInvalid = 0x30,
    /// 0x38: scalable mode, the root entry could not be accessed.
    SmRootAccess = 0x38,
    /// 0x39: scalable mode, root entry (LP/UP) with P clear.
    SmRootNotPresent = 0x39,
    /// 0x3a: scalable mode, root entry with a reserved bit set.
    SmRootReserved = 0x3a,
    /// 0x40: scalable mode, the context entry could not be accessed.
    SmContextAccess = 0x40,
    /// 0x41: scalable-mode context entry with P clear.
    SmContextNotPresent = 0x41,
    /// 0x42: scalable-mode context entry with a reserved bit set.
    SmContextReserved = 0x42,
    /// 0x43: scalable-mode context entry invalid (e.g. an unsupported PDTS).
    SmContextInvalid = 0x43,
    /// 0x50: the PASID directory entry could not be accessed.
    SmPasidDirAccess = 0x50,
    /// 0x51: PASID directory entry with P clear.
    SmPasidDirNotPresent = 0x51,
    /// 0x52: PASID directory entry with a reserved bit set.
    SmPasidDirReserved = 0x52,
    /// 0x58: the PASID-table entry could not be accessed.
    SmPasidEntryAccess = 0x58,
    /// 0x59: PASID-table entry with P clear.
    SmPasidEntryNotPresent = 0x59,
    /// 0x5a: PASID-table entry with a reserved bit set.
    SmPasidEntryReserved = 0x5a,
    /// 0x5b: PASID-table entry invalid (e.g. a reserved PGTT or unsupported AW).
    SmPasidEntryInvalid = 0x5b,
    /// First-level paging entry could not be accessed (QEMU `VTD_FR_FS_PAGING_ENTRY_INV`).
    SmFlAccess = 0x70,
    /// First-level paging entry with P clear.
    SmFlNotPresent = 0x71,
    /// First-level paging entry with a reserved bit set.
    SmFlReserved = 0x72,
    /// FLPTPTR of the PASID entry does not point at readable memory.
    SmFlPointer = 0x73,
    /// 0x78: a second-level paging entry could not be accessed.
    SmSlAccess = 0x78,
    /// 0x79: read or write permission denied by a second-level entry.
    SmSlPermission = 0x79,
    /// 0x7a: second-level paging entry with a reserved bit set.
    SmSlReserved = 0x7a,
    /// 0x7b: the PASID entry's second-level table pointer is invalid.
    SmSlPointer = 0x7b,
    /// 0x83: output address beyond the host address width.
    SmAddressBeyondHaw = 0x83,
    /// 0x84: second-level input address beyond the width AW allows.
    SmSlAddressBeyond = 0x84,
    /// 0x85: no write permission for a write or AtomicOp request.
    SmNoWrite = 0x85,
    /// 0x86: no read permission for a read or AtomicOp request.
    SmNoRead = 0x86,
    /// First-level input address not canonical for the paging mode (4-level: bits 63:48 must copy
    /// bit 47; 5-level: bits 63:57 copy bit 56).
    SmFlNonCanonical = 0x80,
    /// First-level privilege check failed: a user request met an entry with U/S clear.
    SmFlPrivilege = 0x81,
    /// The atomic update of a first-level A or D flag failed.
    SmFlFlagUpdate = 0x91,
}

crate::open_enum_bits!(FaultReason, u8, 8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_record_fields_at_spec_bits() {
        let r = FaultRecord::new()
            .with_fi(0x000d_eadb)
            .with_sid(0x0110)
            .with_fr(FaultReason::WriteNotAllowed)
            .with_t(false)
            .with_f(true);
        let raw = r.into_bits();
        assert_eq!(raw as u64, 0xdead_b000);
        assert_eq!((raw >> 64) as u32, 0x0110);
        assert_eq!((raw >> 96) as u32, 1 << 31 | 5);
        assert!(FaultRecord::from_bits(1u128 << 126).t());
        assert_eq!(FaultRecord::new().with_pp(true).with_pasid(0xabcde).into_bits(), 1u128 << 95 | 0xabcdeu128 << 104);
        assert_eq!(FaultRecord::from_bits(raw).address(), 0xdead_b000);
        assert_eq!(FaultRecord::from_bits(0x99u128 << 96).fr(), FaultReason(0x99));
    }

    #[test]
    fn interrupt_faults_carry_the_index_in_fi_63_48() {
        let r = FaultRecord::new().with_fr(FaultReason::IrEntryNotPresent).with_interrupt_index(0xbeef);
        assert_eq!(r.into_bits() as u64, 0xbeef << 48, "bits 47:12 clear");
        assert_eq!(r.interrupt_index(), 0xbeef);
        assert!(r.is_interrupt_fault());
        assert!(!r.with_fr(FaultReason::WriteNotAllowed).is_interrupt_fault());
        assert_eq!(FaultReason::IrRequestReserved.0, 0x20);
        assert_eq!(FaultReason::IrSourceInvalid.0, 0x26);
    }
}
