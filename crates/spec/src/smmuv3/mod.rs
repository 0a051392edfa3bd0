//! Arm SMMUv3 (System MMU architecture v3, IHI 0070): registers (chapter 6), stream table and STE (5.1, 5.2),
//! context descriptors (5.4), commands (4.1–4.7), event records (7.3) and the VMSAv8-64 descriptors the SMMU walks
//! with a 4 KiB granule (Arm ARM D8).
//!
//! Names follow the spec and Linux's `drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h` (`ARM_SMMU_*`, `STRTAB_STE_*`,
//! `CTXDESC_CD_*`, `CMDQ_*`, `EVTQ_*`). Structures in memory are little-endian 64-bit words ("dwN" = word N); every
//! type here works on the words as integers, and the caller does the byte order.
//!
//! There is no interrupt-remapping table here, unlike VT-d's IRTEs and AMD-Vi's interrupt tables: an MSI on Arm is
//! an ordinary write through the stream table to the GIC ITS doorbell (`GITS_TRANSLATER`), translated like any
//! DMA, and the ITS does the mapping from (DeviceID, EventID) to an interrupt. Interrupts across a crash therefore
//! survive exactly when the device's translation of the doorbell page does (Linux maps it per domain with
//! `iommu_dma_prepare_msi`): adopting the stream table keeps it, a reset does not.

pub mod cd;
pub mod cmd;
pub mod command;
pub mod event;
pub mod idr;
pub mod pgtable;
pub mod pte;
pub mod queue;
pub mod regs;
pub mod ste;
pub mod strtab;

pub use cd::{
    cd_l1_index, cd_l2_index, cd_split, Cd, CdDw0, CdL1Desc, CdTtb, CD_L2_ENTRIES_4K, CD_L2_ENTRIES_64K, CD_SIZE,
};
pub use cmd::{
    cfgi_range_span, opcode, AddrSizeDw1, CfgiLeafDw1, CfgiRangeDw1, Opcode, StreamDw0, SyncCs, SyncDw0, SyncDw1,
    TlbiDw0, TlbiDw1, ATC_INV_SIZE_ALL, CFGI_ALL_RANGE,
};
pub use command::{Command, SyncCmd, TlbiScope};
pub use event::{Event, EventClass, EventId, EvtDw0, EvtDw1};
pub use idr::{Aidr, Idr0, Idr1, Idr3, Idr5, Iidr, StLevel, StallModel, TtEndian, Ttf};
pub use pgtable::{
    block_size, desc_kind, ia_bits, level_index, level_shift, level_size, s1_start_level, s2_concat_tables,
    s2_start_level, DescKind, Granule, PTES_PER_TABLE, S2_MAX_CONCAT, T0SZ_MAX, T0SZ_MAX_STT, T0SZ_MIN,
};
pub use pte::{block_low_bits, leaf_output, mair_idx, s2_memattr, Perm, S1Pte, S2Pte, TableDesc};
pub use queue::{
    queue_empty, queue_full, queue_space, queue_used, CmdqError, QueueBase, QueuePtr, CMDQ_ENT_SIZE, EVTQ_ENT_SIZE,
    PRIQ_ENT_SIZE, QUEUE_MAX_LOG2,
};
pub use regs::{
    cr1_cache, memattr, off, Cr0, Cr1, Cr2, Gbpa, Gerror, IrqCtrl, MsiCfg0, MsiCfg2, StrtabBase, StrtabBaseCfg,
    StrtabFmt,
};
pub use ste::{Config, Eats, S1Dss, S1Fmt, Ste, SteDw0, SteDw1, SteDw2, SteDw3, Strw, STE_SIZE};
pub use strtab::{
    l1_index, l2_index, linear_ste_offset, span_for_split, L1Desc, L1_DESC_SIZE, LINUX_MAX_L1_ENTRIES, LINUX_SPLIT,
};

/// Physical-address size encodings shared by IDR5.OAS, CD.IPS and STE.S2PS (6.3.6): bits for `enc`, or `None`
/// for the reserved value 7.
pub const fn pa_bits(enc: u8) -> Option<u32> {
    match enc {
        0 => Some(32),
        1 => Some(36),
        2 => Some(40),
        3 => Some(42),
        4 => Some(44),
        5 => Some(48),
        6 => Some(52),
        _ => None,
    }
}

/// The encoding of a physical-address size of `bits` (the inverse of [`pa_bits`]), rounding up to the next
/// architected size; `None` beyond 52 bits.
pub const fn pa_enc(bits: u32) -> Option<u8> {
    let mut enc = 0;
    while enc < 7 {
        if let Some(b) = pa_bits(enc) {
            if b >= bits {
                return Some(enc);
            }
        }
        enc += 1;
    }
    None
}

/// Memory cacheability of table and queue fetches in STE.S1CIR/S1COR, STE.S2IR0/S2OR0 and CD.IR0/OR0
/// (the TCR-style encoding; `STRTAB_STE_1_S1C_CACHE_*`). CR1 uses a different encoding: see [`regs::cr1_cache`].
pub mod cache {
    /// Non-cacheable.
    pub const NC: u8 = 0;
    /// Write-back, read-allocate, write-allocate.
    pub const WBRA: u8 = 1;
    /// Write-through, read-allocate.
    pub const WT: u8 = 2;
    /// Write-back, read-allocate, no write-allocate.
    pub const WB: u8 = 3;
}

/// Shareability (`ARM_SMMU_SH_*`), used by CR1, STE, CD, MSI configuration and page-table descriptors.
pub mod sh {
    /// Non-shareable.
    pub const NSH: u8 = 0;
    /// Outer shareable.
    pub const OSH: u8 = 2;
    /// Inner shareable.
    pub const ISH: u8 = 3;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pa_size_encodings() {
        let table = [(0, 32), (1, 36), (2, 40), (3, 42), (4, 44), (5, 48), (6, 52)];
        for (enc, bits) in table {
            assert_eq!(pa_bits(enc), Some(bits));
            assert_eq!(pa_enc(bits), Some(enc));
        }
        assert_eq!(pa_bits(7), None);
        assert_eq!(pa_bits(0xff), None);
        assert_eq!(pa_enc(39), Some(2), "round up to 40 bits");
        assert_eq!(pa_enc(0), Some(0));
        assert_eq!(pa_enc(53), None);
    }
}
