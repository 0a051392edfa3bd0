//! The command queue as software drives it: commands at PROD, PROD written, then CMD_SYNC and a poll of
//! CONS until it has passed the sync (Linux `arm_smmu_cmdq_issue_cmdlist` with `sync`, polling mode).

use iommu_spec::smmuv3::{off, Command, Gerror, QueueBase, QueuePtr, SyncCmd};

use super::SmmuError;
use crate::{Mmio, PhysMem};

pub const SYNC_SPINS: u32 = 100_000;

#[derive(Clone, Copy, Debug)]
pub struct CmdQueue {
    pub base: u64,
    pub log2size: u32,
    pub prod: QueuePtr,
    pub submitted: u64,
}

impl CmdQueue {
    pub fn new(base: QueueBase) -> Self {
        CmdQueue { base: base.base(), log2size: base.log2size() as u32, prod: QueuePtr(0), submitted: 0 }
    }

    /// Issue `cmds` and a CMD_SYNC, and wait until the SMMU has consumed them all.
    pub fn submit(&mut self, hw: &mut (impl Mmio + PhysMem), cmds: &[Command]) -> Result<(), SmmuError> {
        let cap = (1usize << self.log2size).saturating_sub(1).max(1);
        if cmds.len() + 1 > cap {
            for c in cmds.chunks(cap / 2) {
                self.submit(hw, c)?;
            }
            return Ok(());
        }
        for c in cmds.iter().chain(core::iter::once(&Command::Sync(SyncCmd::poll()))) {
            let at = self.base + 16 * self.prod.index(self.log2size) as u64;
            let w = c.encode();
            hw.write_u64(at, w[0])?;
            hw.write_u64(at + 8, w[1])?;
            self.prod = self.prod.next(self.log2size);
            self.submitted += 1;
        }
        hw.write32(off::CMDQ_PROD, self.prod.0);
        let want = self.prod.index_wrap(self.log2size);
        for _ in 0..SYNC_SPINS {
            let cons = QueuePtr(hw.read32(off::CMDQ_CONS));
            if cons.index_wrap(self.log2size) == want {
                return Ok(());
            }
            if Gerror::active(hw.read32(off::GERROR), hw.read32(off::GERRORN)).cmdq_err() {
                return Err(SmmuError::CmdqError { cons: cons.0 });
            }
            if hw.settled() {
                break;
            }
        }
        Err(SmmuError::SyncTimeout { prod: self.prod.0, cons: hw.read32(off::CMDQ_CONS) })
    }
}
