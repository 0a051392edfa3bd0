//! The command buffer as software drives it: commands written at the tail, the tail register bumped, and
//! a COMPLETION_WAIT whose store into our semaphore says the unit has done everything before it (Linux
//! `iommu_completion_wait`).

use iommu_spec::amdvi::{off, CompletionWait, RingPtr, Status};

use super::AmdError;
use crate::{Mmio, PhysMem};

/// Reads of the semaphore before a wait counts as timed out (Linux `LOOP_TIMEOUT`, bounded).
pub const WAIT_SPINS: u32 = 100_000;

#[derive(Clone, Copy, Debug)]
pub struct CmdRing {
    pub base: u64,
    pub entries: u32,
    pub tail: u32,
    /// The 8-byte completion-wait store target (under SNP: inside the completion-store window).
    pub sem: u64,
    /// The SME encryption bit the store address carries (Linux `build_completion_wait`), 0 without SME.
    pub c_bit: u64,
    pub seq: u64,
    pub submitted: u64,
}

impl CmdRing {
    pub fn new(base: u64, entries: u32, sem: u64, c_bit: u64) -> Self {
        CmdRing { base, entries: entries.max(2), tail: 0, sem, c_bit, seq: 0, submitted: 0 }
    }

    /// Write `cmds` and a COMPLETION_WAIT, bump the tail, wait for the store.
    pub fn submit(&mut self, hw: &mut (impl Mmio + PhysMem), cmds: &[u128]) -> Result<(), AmdError> {
        let chunk = (self.entries as usize / 2).max(1);
        if cmds.len() + 1 >= self.entries as usize {
            for c in cmds.chunks(chunk) {
                self.submit(hw, c)?;
            }
            return Ok(());
        }
        self.seq = self.seq.wrapping_add(1);
        let wait = CompletionWait::store(self.sem | self.c_bit, self.seq).into_bits();
        for c in cmds.iter().copied().chain(core::iter::once(wait)) {
            hw.write_u128(self.base + self.tail as u64 * 16, c)?;
            self.tail = (self.tail + 1) % self.entries;
            self.submitted += 1;
        }
        hw.write64(off::CMD_TAIL, RingPtr::from_index(self.tail).into_bits());
        for _ in 0..WAIT_SPINS {
            if hw.read_u64(self.sem)? == self.seq {
                return Ok(());
            }
            let st = Status::from_bits(hw.read64(off::STATUS));
            if !st.cmd_buf_run() {
                return Err(AmdError::CommandError { status: st.into_bits() });
            }
            if hw.settled() {
                break;
            }
        }
        Err(AmdError::CompletionWaitTimeout { head: hw.read64(off::CMD_HEAD), tail: hw.read64(off::CMD_TAIL) })
    }
}
