//! The command queue (IHI 0070 3.5, 4.1–4.7, 6.3.25–6.3.27; QEMU `smmuv3_cmdq_consume`).
//!
//! A ring of 16-byte commands in memory at CMDQ_BASE. Writing CMDQ_PROD (or enabling CMDQEN, or acknowledging
//! CMDQ_ERR) makes the SMMU consume commands from CONS up to PROD right then, at most one queue's worth per
//! trigger. CONS advances past a command once it has completed, so when a CMD_SYNC is consumed every earlier
//! command has taken effect.
//!
//! An illegal command (unknown opcode, a command for a feature IDR0 does not advertise, SSec = 1 on the
//! non-secure queue, a reserved CMD_SYNC.CS) or a command that cannot be read stops the queue (4.1.3): CONS stays
//! on it with CONS.ERR = CERROR_ILL or CERROR_ABT, GERROR.CMDQ_ERR toggles active, and nothing more is consumed
//! until software acknowledges CMDQ_ERR through GERRORN; consumption then restarts at CONS, re-reading the
//! command there (Linux `arm_smmu_cmdq_skip_err` overwrites it with a CMD_SYNC first).

use iommu_platform::PhysMem;
use iommu_spec::smmuv3::{
    cfgi_range_span, opcode, CmdqError, Command, Gerror, Opcode, QueueBase, QueuePtr, StreamDw0, SyncCmd, SyncCs,
    TlbiScope, CMDQ_ENT_SIZE,
};

use super::cache::{Scope, TlbTag};
use super::Smmuv3Model;
use crate::mem::PhysMemory;

type CmdResult = Result<(), CmdqError>;

impl Smmuv3Model {
    /// Consume commands from CONS to PROD while CMDQEN is set and no CMDQ_ERR is active.
    pub(super) fn process_cmdq(&mut self, mem: &mut PhysMemory) {
        if !self.regs.cr0ack().cmdqen() || self.gerror_active().cmdq_err() {
            return;
        }
        let q = QueueBase::from_bits(self.regs.cmdq_base);
        let log2 = q.log2size().min(self.cfg.cmdqs) as u32;
        let prod = QueuePtr(self.regs.cmdq_prod);
        for _ in 0..(1u32 << log2) {
            let cons = QueuePtr(self.regs.cmdq_cons);
            if iommu_spec::smmuv3::queue_empty(prod, cons, log2) {
                return;
            }
            let pa = q.base().wrapping_add(cons.index(log2) as u64 * CMDQ_ENT_SIZE);
            let mut raw = [0u8; CMDQ_ENT_SIZE as usize];
            if mem.read(pa, &mut raw).is_err() {
                return self.cmdq_error(mem, CmdqError::Abt);
            }
            let mut w = [0u64; 2];
            for (dst, chunk) in w.iter_mut().zip(raw.chunks_exact(8)) {
                let mut b = [0u8; 8];
                b.copy_from_slice(chunk);
                *dst = u64::from_le_bytes(b);
            }
            if let Err(e) = self.execute(mem, w) {
                return self.cmdq_error(mem, e);
            }
            self.counters.commands += 1;
            // The hardware's new CONS: index and wrap advanced, ERR cleared.
            self.regs.cmdq_cons = cons.next(log2).0;
        }
    }

    /// Stop on the command at CONS (4.1.3).
    fn cmdq_error(&mut self, mem: &mut PhysMemory, e: CmdqError) {
        self.counters.cmdq_errors += 1;
        self.regs.cmdq_cons = QueuePtr(self.regs.cmdq_cons).with_err(e).0;
        self.raise_gerror(mem, Gerror::new().with_cmdq_err(true));
    }

    /// Validate and execute one command.
    fn execute(&mut self, mem: &mut PhysMemory, raw: [u64; 2]) -> CmdResult {
        let ill = Err(CmdqError::Ill);
        let (s1, s2, hyp) = (self.cfg.stage1, self.cfg.stage2, self.cfg.hyp);
        let cmd = Command::decode(raw);
        // Configuration commands name non-secure streams only on this (the non-secure) queue.
        let cfgi = matches!(cmd, Command::CfgiSte { .. } | Command::CfgiSteRange { .. } | Command::CfgiAll)
            || matches!(cmd, Command::CfgiCd { .. } | Command::CfgiCdAll { .. });
        if cfgi {
            if StreamDw0::from_bits(raw[0]).ssec() {
                return ill;
            }
            self.counters.cfgi_commands += 1;
        }
        let c = &mut self.caches;
        match cmd {
            // Prefetches are hints (4.2): nothing to do.
            Command::PrefetchConfig { .. } => {}
            Command::Other(r) if opcode(r) == Opcode::PrefetchAddr => {}
            Command::CfgiSte { sid, .. } => c.cfgi_ste_range(sid, 1),
            Command::CfgiSteRange { sid, range } => {
                let (first, count) = cfgi_range_span(sid, range);
                c.cfgi_ste_range(first, count);
            }
            Command::CfgiAll => c.cfg_all(),
            Command::CfgiCd { sid, ssid, .. } => c.cfgi_cd(sid, Some(ssid)),
            Command::CfgiCdAll { sid } => c.cfgi_cd(sid, None),
            Command::Sync(s) => return self.sync(mem, s),
            _ => {
                // TLB maintenance (4.4): stage-1 commands need S1P, stage-2 ones S2P, EL2 ones HYP (QEMU answers
                // the first two the same way; it ignores EL2 commands).
                let legal = match cmd {
                    Command::TlbiNhAll { .. }
                    | Command::TlbiNhAsid { .. }
                    | Command::TlbiNhVa { .. }
                    | Command::TlbiNhVaa { .. } => s1,
                    Command::TlbiEl2All | Command::TlbiEl2Asid { .. } | Command::TlbiEl2Va { .. } => s1 && hyp,
                    Command::Other(r) if opcode(r) == Opcode::TlbiEl2Vaa => s1 && hyp,
                    Command::TlbiS12Vmall { .. } | Command::TlbiS2Ipa { .. } => s2,
                    Command::TlbiNsnhAll => true,
                    _ => false,
                };
                if !legal {
                    return ill;
                }
                self.counters.tlbi_commands += 1;
                self.tlbi(cmd);
            }
        }
        Ok(())
    }

    /// Apply a legal TLB invalidation: the TLB entries it covers, then the walk cache's paths (see `cache`).
    fn tlbi(&mut self, cmd: Command) {
        let ril = self.cfg.range_invalidation;
        let c = &mut self.caches;
        let nh = |vmid: u16| move |t: &TlbTag| !t.el2 && t.vmid == vmid && t.asid.is_some();
        let el2 = |t: &TlbTag| t.el2;
        match cmd {
            // Stage-1 entries of a VMID (NH_ALL), or of one ASID in it (NH_ASID, global entries kept).
            Command::TlbiNhAll { vmid } => {
                c.tlb_select(|t| if nh(vmid)(t) { Scope::All } else { Scope::Keep });
                c.walk_drop(nh(vmid));
            }
            Command::TlbiNhAsid { vmid, asid } => {
                c.tlb_select(|t| if nh(vmid)(t) && t.asid == Some(asid) { Scope::NonGlobal } else { Scope::Keep });
                c.walk_drop(|t| nh(vmid)(t) && t.asid == Some(asid));
            }
            // One VA (or range) of an ASID, plus global entries of any ASID in the VMID.
            Command::TlbiNhVa { vmid, asid, addr, scope } => {
                let (first, last) = tlbi_span(addr, scope, ril);
                c.tlb_select_range(
                    |t| match (nh(vmid)(t), t.asid == Some(asid)) {
                        (true, true) => Scope::All,
                        (true, false) => Scope::GlobalOnly,
                        _ => Scope::Keep,
                    },
                    first,
                    last,
                );
                if !scope.leaf {
                    c.walk_drop_range_of(TlbTag { el2: false, vmid, asid: Some(asid) }, first, last);
                }
            }
            Command::TlbiNhVaa { vmid, addr, scope } => {
                let (first, last) = tlbi_span(addr, scope, ril);
                c.tlb_select_range(|t| if nh(vmid)(t) { Scope::All } else { Scope::Keep }, first, last);
                if !scope.leaf {
                    c.walk_drop_range(nh(vmid), first, last);
                }
            }
            Command::TlbiEl2All => {
                c.tlb_select(|t| if t.el2 { Scope::All } else { Scope::Keep });
                c.walk_drop(el2);
            }
            Command::TlbiEl2Asid { asid } => {
                c.tlb_select(|t| if t.el2 && t.asid == Some(asid) { Scope::NonGlobal } else { Scope::Keep });
                c.walk_drop(|t| t.el2 && t.asid == Some(asid));
            }
            Command::TlbiEl2Va { asid, addr, scope } => {
                let (first, last) = tlbi_span(addr, scope, ril);
                c.tlb_select_range(
                    |t| match (t.el2, t.asid == Some(asid)) {
                        (true, true) => Scope::All,
                        (true, false) => Scope::GlobalOnly,
                        _ => Scope::Keep,
                    },
                    first,
                    last,
                );
                if !scope.leaf {
                    c.walk_drop_range(|t| t.el2 && t.asid == Some(asid), first, last);
                }
            }
            Command::Other(r) if opcode(r) == Opcode::TlbiEl2Vaa => {
                let d = Command::decode([(r[0] & !0xff) | Opcode::TlbiEl2Va.0 as u64, r[1]]);
                if let Command::TlbiEl2Va { addr, scope, .. } = d {
                    let (first, last) = tlbi_span(addr, scope, ril);
                    c.tlb_select_range(|t| if t.el2 { Scope::All } else { Scope::Keep }, first, last);
                    if !scope.leaf {
                        c.walk_drop_range(el2, first, last);
                    }
                }
            }
            // Every entry of a VMID, stage 1, stage 2 and combined (4.4.5).
            Command::TlbiS12Vmall { vmid } => {
                c.tlb_select(|t| if !t.el2 && t.vmid == vmid { Scope::All } else { Scope::Keep });
                c.walk_drop(|t| !t.el2 && t.vmid == vmid);
            }
            // Stage-2-only entries of an IPA (4.4.6); combined entries wait for a stage-1 invalidation, and no
            // stage-2 path is cached.
            Command::TlbiS2Ipa { vmid, ipa, scope } => {
                let (first, last) = tlbi_span(ipa, scope, ril);
                let s2 = move |t: &TlbTag| !t.el2 && t.vmid == vmid && t.asid.is_none();
                c.tlb_select_range(|t| if s2(t) { Scope::All } else { Scope::Keep }, first, last);
            }
            // Every non-secure, non-EL2 entry (4.4.7).
            Command::TlbiNsnhAll => {
                c.tlb_select(|t| if t.el2 { Scope::Keep } else { Scope::All });
                c.walk_drop(|t| !t.el2);
            }
            _ => {}
        }
    }

    /// CMD_SYNC (4.7.3): every earlier command has completed by now. CS = SIG_IRQ with an MSI address (and
    /// IDR0.MSI) writes MSIData there, which is what Linux's MSI polling waits for; CS = SIG_IRQ otherwise
    /// raises the wired interrupt; CS = SIG_SEV (Linux's default even without IDR0.SEV) and SIG_NONE only let CONS
    /// move past. CS = 3 is reserved.
    fn sync(&mut self, mem: &mut PhysMemory, s: SyncCmd) -> CmdResult {
        self.counters.syncs += 1;
        match s.cs {
            SyncCs::None | SyncCs::Sev => Ok(()),
            SyncCs::Irq => {
                if self.cfg.msi && s.msiaddr != 0 {
                    if mem.write_u32(s.msiaddr, s.msidata).is_err() {
                        self.raise_gerror(mem, Gerror::new().with_msi_cmdq_abt_err(true));
                    } else {
                        self.counters.sync_msis += 1;
                    }
                } else {
                    self.counters.sync_irqs += 1;
                }
                Ok(())
            }
            _ => Err(CmdqError::Ill),
        }
    }
}

/// The input addresses a TLBI by address covers (4.4.1): with IDR3.RIL and TG ≠ 0, `(NUM+1) × 2^SCALE`
/// granules of `2^(TG×2+10)` bytes from `addr`; otherwise the one page holding `addr`.
fn tlbi_span(addr: u64, s: TlbiScope, ril: bool) -> (u64, u64) {
    let page = addr & !0xfff;
    if !ril || s.tg == 0 {
        return (page, page | 0xfff);
    }
    let granule_shift = s.tg as u32 * 2 + 10;
    let pages = (s.num as u64 + 1) << (s.scale & 0x1f);
    let bytes = pages.checked_shl(granule_shift).filter(|b| b >> granule_shift == pages).unwrap_or(u64::MAX);
    (page, page.saturating_add(bytes.saturating_sub(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlbi_spans() {
        let s = |tg, num, scale| TlbiScope { leaf: false, ttl: 0, tg, num, scale };
        assert_eq!(tlbi_span(0x1234, s(0, 0, 0), true), (0x1000, 0x1fff));
        assert_eq!(tlbi_span(0x1000, s(1, 3, 0), true), (0x1000, 0x4fff), "four 4 KiB pages");
        assert_eq!(tlbi_span(0x1000, s(1, 3, 0), false), (0x1000, 0x1fff), "no RIL: one page");
        assert_eq!(tlbi_span(0x1000, s(1, 0, 9), true), (0x1000, 0x20_0fff), "2^9 pages");
        assert_eq!(tlbi_span(0xffff_ffff_ffff_f000, s(3, 31, 31), true).1, u64::MAX, "saturates");
    }
}
