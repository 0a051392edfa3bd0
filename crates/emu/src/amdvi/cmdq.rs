//! The command buffer (spec 2.4, 3.4.2): a ring of 16-byte commands in memory, executed from the head to the tail
//! while Control.IommuEn and CmdBufEn are set and the processor runs, right when software writes the tail (or
//! enables the ring with commands already posted), at most one ring's worth per trigger.
//!
//! A command with an opcode the unit does not implement or advertise, or with a reserved bit set, logs
//! ILLEGAL_COMMAND_ERROR with the command's physical address and stops the processor (Status.CmdBufRun clears); a
//! failed fetch or completion store logs COMMAND_HARDWARE_ERROR and stops it too. The head keeps pointing at the
//! failed command. Software restarts the processor by clearing and setting CmdBufEn (after fixing head and tail
//! while it is stopped, as Linux's `amd_iommu_reset_cmd_buffer` does).
//!
//! With SNP enforcement on, COMPLETION_WAIT stores go to the Completion Store (CWWB) window that the locked
//! Exclusion Base and Limit registers name (SNP series; Linux `iommu_set_cwwb_range` writes its `cmd_sem` page to
//! both). Public sources leave the hardware's check of a store address outside the window unconfirmed; the model
//! treats such a command as illegal (ILLEGAL_COMMAND_ERROR, processor stopped, nothing stored), so a crash kernel
//! that waits on a fresh semaphore page times out as the SNP series describes, and the event log says why.

use iommu_platform::PhysMem;
use iommu_spec::amdvi::{
    cmd_opcode, cmd_reserved_bits, CmdOpcode, CompletionWait, Event, EventFlags, InvalidateDevice,
    InvalidateIommuPages, RingPtr, CMD_SIZE,
};

use super::regs::Reg;
use super::AmdviModel;
use crate::mem::PhysMemory;

/// Why a command stopped the processor.
enum CmdError {
    /// ILLEGAL_COMMAND_ERROR.
    Illegal,
    /// COMMAND_HARDWARE_ERROR at this address (a completion store that is not memory).
    Hardware(u64),
}

/// EventFlags.Type 1, master abort: the access that no target claimed (the layout crate's reading of the spec).
const MASTER_ABORT: u8 = 1;

impl AmdviModel {
    /// Fetch and execute commands from the head to the tail (QEMU `amdvi_cmdbuf_run`).
    pub(super) fn process_commands(&mut self, mem: &mut PhysMemory) {
        let ctl = self.control();
        if !(ctl.iommu_en() && ctl.cmd_buf_en() && self.cmd_run) {
            return;
        }
        let ring = self.cmd_ring();
        // Pointer indexes beyond the ring wrap: the unit uses the low bits the ring size needs.
        let entries = ring.entries();
        let tail = RingPtr::from_bits(self.regs.get(Reg::CmdTail)).index() as u32 % entries;
        let mut head = RingPtr::from_bits(self.regs.get(Reg::CmdHead)).index() as u32 % entries;
        for _ in 0..entries {
            if head == tail {
                break;
            }
            let pa = self.mem_pa(ring.ring()).wrapping_add(head as u64 * CMD_SIZE);
            let result = match mem.read_u128(pa) {
                Ok(raw) => self.execute(mem, raw),
                Err(_) => Err(CmdError::Hardware(pa)),
            };
            if let Err(e) = result {
                self.cmd_run = false;
                self.counters.command_errors += 1;
                let ev = match e {
                    CmdError::Illegal => Event::IllegalCommandError { address: pa },
                    CmdError::Hardware(address) => {
                        Event::CommandHardwareError { address, flags: EventFlags::new().with_ty(MASTER_ABORT) }
                    }
                };
                self.log_event(mem, ev);
                return;
            }
            self.counters.commands += 1;
            head = (head + 1) % entries;
            self.regs.set(Reg::CmdHead, RingPtr::from_index(head).into_bits());
        }
    }

    /// Validate and execute one command (spec 2.4.1–2.4.7).
    fn execute(&mut self, mem: &mut PhysMemory, raw: u128) -> Result<(), CmdError> {
        // Unknown opcodes (0, PREFETCH_IOMMU_PAGES, 9..15) have no layout: illegal.
        match cmd_reserved_bits(raw) {
            Some(0) => {}
            _ => return Err(CmdError::Illegal),
        }
        let efr = self.cfg.efr_register();
        match cmd_opcode(raw) {
            CmdOpcode::CompletionWait => self.completion_wait(mem, CompletionWait::from_bits(raw))?,
            CmdOpcode::InvalidateDevTabEntry => {
                let devid = InvalidateDevice::from_bits(raw).device_id();
                self.caches.dte_invalidate(devid);
                self.irq.dte_invalidate(devid);
                self.counters.dte_invalidations += 1;
            }
            CmdOpcode::InvalidateIommuPages => {
                let c = InvalidateIommuPages::from_bits(raw);
                // Guest (GN = 1) translations are not modelled: nothing of them is cached. PDE = 1 asks for cached
                // directory entries of the range too (see `cache`).
                if !c.gn() {
                    let (first, last) = c.covered();
                    self.caches.iotlb_range(c.domain_id(), first, last);
                    if c.pde() {
                        self.caches.pde_invalidate(c.domain_id(), first, last);
                    }
                }
                self.counters.iotlb_invalidations += 1;
            }
            // No device IOTLB (ATS) is modelled: validated, nothing to drop.
            CmdOpcode::InvalidateIotlbPages => {}
            CmdOpcode::InvalidateInterruptTable => {
                self.irq.table_invalidate(InvalidateDevice::from_bits(raw).device_id());
                self.counters.irt_invalidations += 1;
            }
            CmdOpcode::CompletePprRequest if efr.ppr_sup() => {}
            CmdOpcode::InvalidateIommuAll if efr.ia_sup() => {
                self.caches.invalidate_all();
                self.irq.clear();
                self.counters.all_invalidations += 1;
            }
            // PPR or INVALIDATE_IOMMU_ALL on a unit that does not advertise them.
            _ => return Err(CmdError::Illegal),
        }
        Ok(())
    }

    /// COMPLETION_WAIT (spec 2.4.1): every earlier command has completed (they run in order), so store the data if
    /// S and raise Status.ComWaitInt if I (the interrupt only with Control.ComWaitIntEn). Neither S nor I is a plain
    /// barrier (QEMU accepts it too). F (flush queue) has nothing to flush.
    fn completion_wait(&mut self, mem: &mut PhysMemory, c: CompletionWait) -> Result<(), CmdError> {
        if c.s() {
            let addr = self.mem_pa(c.store_address());
            if self.snp_locked && !self.in_completion_store(addr) {
                return Err(CmdError::Illegal);
            }
            mem.write_u64(addr, c.store_data()).map_err(|_| CmdError::Hardware(addr))?;
            self.counters.completion_stores += 1;
        }
        if c.i() {
            let st = self.status();
            self.set_status(st.with_com_wait_int(true));
            if self.control().com_wait_int_en() {
                self.counters.com_wait_interrupts += 1;
            }
        }
        Ok(())
    }
}
