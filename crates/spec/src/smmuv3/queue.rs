//! SMMUv3 queues (spec 3.5, 6.3.25–6.3.33): the CMDQ/EVTQ/PRIQ base registers and the producer/consumer
//! index arithmetic with its wrap flag.

use bitfield_struct::bitfield;

/// CMDQ_BASE, EVTQ_BASE and PRIQ_BASE (6.3), 64-bit.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct QueueBase {
    /// The queue holds `2^LOG2SIZE` entries (at most IDR1.CMDQS/EVTQS/PRIQS).
    #[bits(5)]
    pub log2size: u8,
    /// Queue address bits 51:5 (`Q_BASE_ADDR_MASK`); the queue is aligned to its size.
    #[bits(47)]
    pub addr: u64,
    #[bits(10)]
    __: u16,
    /// Read-allocate (CMDQ) or write-allocate (EVTQ, PRIQ) hint (`Q_BASE_RWA`).
    pub rwa: bool,
    #[bits(1)]
    __: u8,
}

impl QueueBase {
    /// Physical address of the queue, 32-byte aligned (the SMMU aligns it further to the queue size).
    pub const fn base(self) -> u64 {
        self.addr() << 5
    }
    /// The register for a queue at `pa` of `2^log2size` entries with the RA/WA hint `rwa`; out-of-range
    /// inputs are truncated to their fields.
    pub const fn from_base(pa: u64, log2size: u8, rwa: bool) -> Self {
        QueueBase::new().with_addr((pa >> 5) & crate::mask64(46, 0)).with_log2size(log2size & 0x1f).with_rwa(rwa)
    }
    /// Entries in the queue: `2^LOG2SIZE`.
    pub const fn entries(self) -> u32 {
        1 << self.log2size()
    }
    /// Bytes of a queue of entries of `entry_size` bytes.
    pub const fn bytes(self, entry_size: u64) -> u64 {
        (self.entries() as u64) * entry_size
    }
    /// Set bits of the value in the reserved bits 61:52 and 63.
    pub const fn reserved_bits(self) -> u64 {
        self.into_bits() & (crate::mask64(61, 52) | 1 << 63)
    }
}

/// Entry size of the command queue, in bytes.
pub const CMDQ_ENT_SIZE: u64 = 16;
/// Entry size of the event queue, in bytes.
pub const EVTQ_ENT_SIZE: u64 = 32;
/// Entry size of the PRI queue, in bytes.
pub const PRIQ_ENT_SIZE: u64 = 16;
/// Largest architected log2 queue size (IDR1.CMDQS/EVTQS/PRIQS ≤ 19).
pub const QUEUE_MAX_LOG2: u32 = 19;

/// CMDQ_CONS.ERR (6.3.27, `CMDQ_ERR_CERROR_*`): why the command at CONS failed.
#[open_enum::open_enum]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CmdqError {
    /// CERROR_NONE: no error.
    None = 0,
    /// Illegal command: unknown opcode, reserved field, unsupported for this SMMU.
    Ill = 1,
    /// Abort on fetching the command.
    Abt = 2,
    /// ATC invalidation completion failed before a CMD_SYNC.
    AtcInvSync = 3,
}
crate::open_enum_bits!(CmdqError, u8, 7);

/// A queue producer or consumer index register (PROD/CONS, 6.3.26–6.3.33) for a queue of `2^log2size` entries:
/// the index in bits `log2size-1:0`, the wrap flag at bit `log2size`, the overflow flag at bit 31 (EVTQ/PRIQ
/// PROD; overflow acknowledge in CONS) and, in CMDQ_CONS, the error code in bits 30:24.
///
/// `log2size` above [`QUEUE_MAX_LOG2`] is clamped so the arithmetic never reaches bit 24.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct QueuePtr(pub u32);

impl QueuePtr {
    /// Overflow flag, bit 31 (`Q_OVERFLOW_FLAG`).
    pub const OVF: u32 = 1 << 31;

    const fn shift(log2size: u32) -> u32 {
        if log2size > QUEUE_MAX_LOG2 {
            QUEUE_MAX_LOG2
        } else {
            log2size
        }
    }
    /// The pointer from an index and wrap flag.
    pub const fn new(index: u32, wrap: bool, log2size: u32) -> Self {
        let s = Self::shift(log2size);
        QueuePtr((index & ((1 << s) - 1)) | (wrap as u32) << s)
    }
    /// Entry index (`Q_IDX`).
    pub const fn index(self, log2size: u32) -> u32 {
        self.0 & ((1 << Self::shift(log2size)) - 1)
    }
    /// Wrap flag (`Q_WRP`).
    pub const fn wrap(self, log2size: u32) -> bool {
        self.0 & (1 << Self::shift(log2size)) != 0
    }
    /// Index and wrap together, the value that counts modulo twice the queue size.
    pub const fn index_wrap(self, log2size: u32) -> u32 {
        self.0 & ((2 << Self::shift(log2size)) - 1)
    }
    /// The overflow flag (EVTQ/PRIQ PROD: entries were lost) or its acknowledgement (CONS).
    pub const fn ovf(self) -> bool {
        self.0 & Self::OVF != 0
    }
    /// CMDQ_CONS.ERR, bits 30:24 (`CMDQ_CONS_ERR`).
    pub const fn err(self) -> CmdqError {
        CmdqError::from_bits((self.0 >> 24) as u8)
    }
    /// The pointer with ERR (bits 30:24) set to `err`.
    pub const fn with_err(self, err: CmdqError) -> Self {
        QueuePtr(self.0 & !(0x7f << 24) | ((err.0 as u32) & 0x7f) << 24)
    }
    /// The pointer `n` entries on, toggling the wrap flag when the index passes the end. The overflow flag is
    /// kept; the error field and other bits are dropped.
    pub const fn advance(self, n: u32, log2size: u32) -> Self {
        let s = Self::shift(log2size);
        let iw = self.index_wrap(log2size).wrapping_add(n) & ((2 << s) - 1);
        QueuePtr(iw | (self.0 & Self::OVF))
    }
    /// The next entry.
    pub const fn next(self, log2size: u32) -> Self {
        self.advance(1, log2size)
    }
}

/// Whether the queue is empty: same index, same wrap.
pub const fn queue_empty(prod: QueuePtr, cons: QueuePtr, log2size: u32) -> bool {
    prod.index_wrap(log2size) == cons.index_wrap(log2size)
}

/// Whether the queue is full: same index, different wrap.
pub const fn queue_full(prod: QueuePtr, cons: QueuePtr, log2size: u32) -> bool {
    prod.index(log2size) == cons.index(log2size) && prod.wrap(log2size) != cons.wrap(log2size)
}

/// Entries between CONS and PROD (0 when empty, `2^log2size` when full).
pub const fn queue_used(prod: QueuePtr, cons: QueuePtr, log2size: u32) -> u32 {
    let s = QueuePtr::shift(log2size);
    prod.index_wrap(log2size).wrapping_sub(cons.index_wrap(log2size)) & ((2 << s) - 1)
}

/// Free entries for the producer. A PROD more than a queue ahead of CONS (corrupt) reads as no space.
pub const fn queue_space(prod: QueuePtr, cons: QueuePtr, log2size: u32) -> u32 {
    let size = 1u32 << QueuePtr::shift(log2size);
    size.saturating_sub(queue_used(prod, cons, log2size))
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_base_layout() {
        let q = QueueBase::from_base(0x4000_0000, 8, true);
        assert_eq!(q.into_bits(), 1 << 62 | 0x4000_0000 | 8);
        assert_eq!(q.base(), 0x4000_0000);
        assert_eq!(q.entries(), 256);
        assert_eq!(q.bytes(CMDQ_ENT_SIZE), 4096);
        assert_eq!(q.bytes(EVTQ_ENT_SIZE), 8192);
        assert_eq!(QueueBase::from_bits(0x000f_ffff_ffff_ffe0).base(), 0x000f_ffff_ffff_ffe0);
        for bit in 0..64u32 {
            let res = (52..62).contains(&bit) || bit == 63;
            assert_eq!(QueueBase::from_bits(1 << bit).reserved_bits() != 0, res, "bit {bit}");
        }
    }

    #[test]
    fn queue_pointer_fields() {
        // log2size 8: index 7:0, wrap 8.
        let p = QueuePtr(0x8000_01ff);
        assert_eq!(p.index(8), 0xff);
        assert!(p.wrap(8));
        assert!(p.ovf());
        assert_eq!(QueuePtr::new(0x1ff, false, 8), QueuePtr(0xff), "index masked to the queue");
        let cons = QueuePtr(5 | 2 << 24);
        assert_eq!(cons.err(), CmdqError::Abt);
        assert_eq!(cons.index(8), 5);
        assert_eq!(QueuePtr(0x7f << 24).err(), CmdqError(0x7f));
        assert_eq!(QueuePtr(3).with_err(CmdqError::AtcInvSync).0, 3 << 24 | 3);
        assert_eq!(QueuePtr(3 << 24 | 3).with_err(CmdqError::None).0, 3);
    }

    #[test]
    fn queue_wrap_arithmetic_at_the_boundary() {
        let l = 2; // four entries
        let last = QueuePtr::new(3, false, l);
        assert_eq!(last.next(l), QueuePtr::new(0, true, l), "passing the end toggles wrap");
        assert_eq!(QueuePtr::new(3, true, l).next(l), QueuePtr::new(0, false, l));
        assert_eq!(QueuePtr(QueuePtr::OVF | 3 | 1 << 24).next(l), QueuePtr(QueuePtr::OVF | 4), "OVF kept, ERR dropped");
        assert_eq!(QueuePtr::new(1, false, l).advance(6, l), QueuePtr::new(3, true, l));
        assert_eq!(QueuePtr::new(1, false, l).advance(8, l), QueuePtr::new(1, false, l), "two laps");

        let (p0, c0) = (QueuePtr::new(0, false, l), QueuePtr::new(0, false, l));
        assert!(queue_empty(p0, c0, l) && !queue_full(p0, c0, l));
        assert_eq!((queue_used(p0, c0, l), queue_space(p0, c0, l)), (0, 4));
        let full = QueuePtr::new(0, true, l);
        assert!(queue_full(full, c0, l) && !queue_empty(full, c0, l));
        assert_eq!((queue_used(full, c0, l), queue_space(full, c0, l)), (4, 0));
        // Producer wrapped, consumer not: PROD (1, w) CONS (3, !w) holds entries 3, 0.
        let (p, c) = (QueuePtr::new(1, true, l), QueuePtr::new(3, false, l));
        assert_eq!((queue_used(p, c, l), queue_space(p, c, l)), (2, 2));
        // Fill one at a time from an arbitrary start: full exactly after 2^l entries.
        let mut p = QueuePtr::new(2, true, l);
        let c = p;
        for n in 0..4 {
            assert!(!queue_full(p, c, l));
            assert_eq!(queue_used(p, c, l), n);
            p = p.next(l);
        }
        assert!(queue_full(p, c, l));
        // A corrupt PROD "behind" CONS on the same lap reads as over-full, never as space.
        let (p, c) = (QueuePtr::new(0, false, l), QueuePtr::new(3, false, l));
        assert_eq!(queue_space(p, c, l), 0);
        // Hostile log2size: clamped, no shift overflow, ERR and OVF untouched.
        let p = QueuePtr(u32::MAX);
        assert_eq!(p.index(40), (1 << QUEUE_MAX_LOG2) - 1);
        assert!(p.wrap(31));
        assert_eq!(p.next(63).0 & 0x7f00_0000, 0);
    }
    #[test]
    fn queue_registers_round_trip_any_raw_value() {
        for raw in [0u64, u64::MAX, 0x5555_5555_5555_5555, 0xdead_beef_0bad_f00d] {
            assert_eq!(QueueBase::from_bits(raw).into_bits(), raw);
            assert_eq!(QueuePtr::new(raw as u32, false, 31).0 & !((1 << QUEUE_MAX_LOG2) - 1), 0);
        }
    }
}
