//! NVMe queue entry layouts (NVMe base spec 2.0 §4.2 and §4.6) for the [`Blk`](super::Blk) model and
//! the drivers that program it: the submission and completion entries, opcodes and status codes.

/// Bytes per submission queue entry.
pub const SQE_SIZE: u64 = 64;
/// Bytes per completion queue entry.
pub const CQE_SIZE: u64 = 16;
/// Bytes per logical block (an LBA format with a 4 KiB data size).
pub const BLOCK: usize = 4096;
/// The largest queue (NVMe queue sizes are 0's-based 16-bit).
pub const MAX_QUEUE: u32 = 1 << 16;
/// The only namespace.
pub const NSID: u32 = 1;
/// The I/O submission queue's identifier reported in completions.
pub const SQID: u16 = 1;

/// NVM command set opcode: Flush.
pub const OPC_FLUSH: u8 = 0x00;
/// NVM command set opcode: Write (host memory to media).
pub const OPC_WRITE: u8 = 0x01;
/// NVM command set opcode: Read (media to host memory).
pub const OPC_READ: u8 = 0x02;

/// Generic command status codes (status code type 0, NVMe §4.6.1.2.1).
pub mod status {
    /// Successful Completion.
    pub const SUCCESS: u8 = 0x00;
    /// Invalid Command Opcode.
    pub const INVALID_OPCODE: u8 = 0x01;
    /// Invalid Field in Command (e.g. a transfer over MDTS).
    pub const INVALID_FIELD: u8 = 0x02;
    /// Data Transfer Error: a DMA of the command's data failed.
    pub const DATA_TRANSFER_ERROR: u8 = 0x04;
    /// Invalid Namespace or Format.
    pub const INVALID_NAMESPACE: u8 = 0x0b;
    /// LBA Out of Range (NVM command set specific).
    pub const LBA_OUT_OF_RANGE: u8 = 0x80;
}

/// Do Not Retry, in [`CqEntry::status`].
pub const STATUS_DNR: u16 = 1 << 14;

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le64(b: &[u8], at: usize) -> u64 {
    le32(b, at) as u64 | (le32(b, at + 4) as u64) << 32
}

/// The fields of a submission queue entry the model uses; other bytes encode as zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SqEntry {
    /// CDW0 bits 7:0.
    pub opcode: u8,
    /// CDW0 bits 31:16.
    pub cid: u16,
    /// Dword 1.
    pub nsid: u32,
    /// Dwords 6–7: the data. The model moves the whole transfer from here, IOVA-contiguous.
    pub prp1: u64,
    /// Dwords 8–9 (not used by the model).
    pub prp2: u64,
    /// CDW10–11: the starting LBA.
    pub slba: u64,
    /// CDW12 bits 15:0: number of logical blocks, 0's-based.
    pub nlb: u16,
}

impl SqEntry {
    /// Write `blocks` (1..=65536) blocks at `slba` from memory at `prp1` (the device reads memory).
    pub fn write(cid: u16, prp1: u64, slba: u64, blocks: u32) -> Self {
        Self::io(OPC_WRITE, cid, prp1, slba, blocks)
    }

    /// Read `blocks` blocks at `slba` into memory at `prp1` (the device writes memory).
    pub fn read(cid: u16, prp1: u64, slba: u64, blocks: u32) -> Self {
        Self::io(OPC_READ, cid, prp1, slba, blocks)
    }

    fn io(opcode: u8, cid: u16, prp1: u64, slba: u64, blocks: u32) -> Self {
        let nlb = blocks.clamp(1, 1 << 16) - 1;
        SqEntry { opcode, cid, nsid: NSID, prp1, prp2: 0, slba, nlb: nlb as u16 }
    }

    /// Blocks the command transfers (NLB + 1).
    pub fn blocks(&self) -> u32 {
        self.nlb as u32 + 1
    }

    /// Decode the fields the model uses from a 64-byte submission queue entry.
    pub fn from_bytes(b: &[u8; 64]) -> Self {
        SqEntry {
            opcode: b[0],
            cid: le16(b, 2),
            nsid: le32(b, 4),
            prp1: le64(b, 24),
            prp2: le64(b, 32),
            slba: le64(b, 40),
            nlb: le16(b, 48),
        }
    }

    /// Encode as [`Self::from_bytes`] reads it (other fields zero).
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut b = [0; 64];
        b[0] = self.opcode;
        b[2..4].copy_from_slice(&self.cid.to_le_bytes());
        b[4..8].copy_from_slice(&self.nsid.to_le_bytes());
        b[24..32].copy_from_slice(&self.prp1.to_le_bytes());
        b[32..40].copy_from_slice(&self.prp2.to_le_bytes());
        b[40..48].copy_from_slice(&self.slba.to_le_bytes());
        b[48..50].copy_from_slice(&self.nlb.to_le_bytes());
        b
    }
}

/// A completion queue entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CqEntry {
    /// DW0, command specific (0 for the commands modelled).
    pub dw0: u32,
    /// DW2 bits 15:0: the submission queue head after this command was fetched.
    pub sq_head: u16,
    /// DW2 bits 31:16.
    pub sq_id: u16,
    /// DW3 bits 15:0.
    pub cid: u16,
    /// DW3 bit 16: the phase tag.
    pub phase: bool,
    /// DW3 bits 31:17: SC in bits 7:0, SCT in 10:8, CRD 12:11, M 13, DNR 14.
    pub status: u16,
}

impl CqEntry {
    /// Decode a 16-byte completion queue entry.
    pub fn from_bytes(b: &[u8; 16]) -> Self {
        let dw3 = le32(b, 12);
        CqEntry {
            dw0: le32(b, 0),
            sq_head: le16(b, 8),
            sq_id: le16(b, 10),
            cid: dw3 as u16,
            phase: dw3 >> 16 & 1 == 1,
            status: (dw3 >> 17) as u16,
        }
    }

    /// Encode as [`Self::from_bytes`] reads it (DW1 reserved, zero).
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0; 16];
        b[..4].copy_from_slice(&self.dw0.to_le_bytes());
        b[8..10].copy_from_slice(&self.sq_head.to_le_bytes());
        b[10..12].copy_from_slice(&self.sq_id.to_le_bytes());
        let dw3 = self.cid as u32 | (self.phase as u32) << 16 | ((self.status & 0x7fff) as u32) << 17;
        b[12..].copy_from_slice(&dw3.to_le_bytes());
        b
    }

    /// The status code (SC).
    pub fn sc(&self) -> u8 {
        self.status as u8
    }

    /// The status code type (SCT).
    pub fn sct(&self) -> u8 {
        (self.status >> 8 & 7) as u8
    }

    /// Whether SCT and SC are both 0 (Successful Completion).
    pub fn is_success(&self) -> bool {
        self.status & 0x7ff == 0
    }
}
