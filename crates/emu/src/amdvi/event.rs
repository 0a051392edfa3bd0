//! The event log (spec 2.5, 3.4.3; QEMU `amdvi_log_event`): a ring of 16-byte entries in memory that the unit fills
//! at the tail and software drains from the head.
//!
//! An event is written only while Control.EventLogEn is set, the logger runs (EventLogRun) and Status.EventOverflow
//! is clear. A full ring (the tail one entry behind the head) sets EventOverflow, stops the logger and drops the
//! event; Linux restarts logging by clearing the overflow and toggling EventLogEn (`amd_iommu_restart_event_logging`).
//! Status.EventLogInt is set for every event written, and for an overflow; the interrupt itself is sent (counted)
//! only with Control.EventIntEn, as QEMU sets the status bit and lets the MSI enable decide.

use iommu_platform::PhysMem;
use iommu_spec::amdvi::{Event, RingPtr, EVENT_SIZE};

use super::regs::Reg;
use super::AmdviModel;
use crate::mem::PhysMemory;

impl AmdviModel {
    /// Write `ev` at the event tail. Returns whether it reached the log.
    pub(super) fn log_event(&mut self, mem: &mut PhysMemory, ev: Event) -> bool {
        let ctl = self.control();
        let st = self.status();
        if !st.event_log_run() || st.event_overflow() {
            self.counters.events_dropped += 1;
            return false;
        }
        let ring = self.event_ring();
        // Pointer indexes beyond the ring wrap: the unit uses the low bits the ring size needs.
        let entries = ring.entries();
        let head = RingPtr::from_bits(self.regs.get(Reg::EventHead)).index() as u32 % entries;
        let tail = RingPtr::from_bits(self.regs.get(Reg::EventTail)).index() as u32 % entries;
        let next = (tail + 1) % entries;
        if next == head {
            self.evt_run = false;
            self.set_status(st.with_event_overflow(true).with_event_log_int(true));
            self.event_interrupt(ctl.event_int_en());
            self.counters.events_dropped += 1;
            return false;
        }
        let pa = self.mem_pa(ring.ring()).wrapping_add(tail as u64 * EVENT_SIZE);
        if mem.write_u128(pa, ev.encode()).is_err() {
            // The log is not in RAM: the write goes nowhere (a master abort on the fabric).
            self.counters.events_dropped += 1;
            return false;
        }
        self.regs.set(Reg::EventTail, RingPtr::from_index(next).into_bits());
        self.set_status(st.with_event_log_int(true));
        self.event_interrupt(ctl.event_int_en());
        self.counters.events_logged += 1;
        true
    }

    fn event_interrupt(&mut self, enabled: bool) {
        if enabled {
            self.counters.event_interrupts += 1;
        }
    }
}
