//! What one simulated crash reports: counts, and the reasons as typed values (text only in JSON).

use std::fmt;

use iommu_driver::contract::Summary;
use iommu_driver::{DriverError, EntryRefusal};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::kernel::KernelError;

/// A typed reason. A run carries the value; JSON carries its text, and a run read back from JSON has only
/// the text. Two reasons are equal when their texts are.
#[derive(Clone, Debug)]
pub enum Reason<T> {
    /// The value itself, from a run made in this process.
    Typed(T),
    /// Only its `Display` text, from a run read back from JSON.
    Text(String),
}

impl<T> Reason<T> {
    /// The typed value, for a run made in this process.
    pub fn typed(&self) -> Option<&T> {
        match self {
            Reason::Typed(t) => Some(t),
            Reason::Text(_) => None,
        }
    }
}

impl<T> From<T> for Reason<T> {
    fn from(t: T) -> Self {
        Reason::Typed(t)
    }
}

impl<T: fmt::Display> fmt::Display for Reason<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Typed(t) => t.fmt(f),
            Reason::Text(s) => f.write_str(s),
        }
    }
}

impl<T: fmt::Display> PartialEq for Reason<T> {
    fn eq(&self, o: &Self) -> bool {
        self.to_string() == o.to_string()
    }
}

impl<T: fmt::Display> Eq for Reason<T> {}

impl<T: fmt::Display> Serialize for Reason<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de, T> Deserialize<'de> for Reason<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Reason::Text)
    }
}

/// Why a run lost its dump, or what went wrong on the way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The primary kernel's normal IOMMU boot failed: no crash was staged (a broken machine, not a policy's
    /// failure).
    PrimaryInit(DriverError),
    /// The primary kernel could not bring up its NIC, disk or copy engine.
    PrimarySetup(KernelError),
    /// The primary kernel's driver failed while servicing its devices before the panic.
    PrimaryWorkload(KernelError),
    /// `boot_crash` returned an error: the crash kernel has no IOMMU and writes no dump.
    CrashInit(DriverError),
    /// The crash kernel could not map or start the disk after resetting it.
    DiskProbe(KernelError),
    /// The dump did not finish in time.
    DumpStalled {
        /// Pages of old memory not yet submitted to the disk.
        pages_left: usize,
        /// Writes submitted and not yet completed.
        in_flight: usize,
    },
    /// Submitting or reaping a dump write failed in the crash kernel's disk driver.
    DumpWrite(KernelError),
    /// The disk completed writes with an error status.
    DiskErrors(u64),
    /// A blocked DMA on a platform where that is fatal (PCIe completion timeout → AER → second panic).
    /// `before_init`: it came before the crash kernel's IOMMU init ran, while the crashed kernel's tables
    /// alone decided (no policy acts yet).
    FatalAbort {
        /// The device whose DMA was blocked (`nic`, `disk`, `bulk`).
        device: String,
        /// The DMA's purpose on the device (e.g. `rx-data`, `bulk-dst`).
        what: &'static str,
        /// The faulting IOVA, or the physical address a translation gave that is not memory.
        iova: u64,
        /// The abort came before the crash kernel's IOMMU init.
        before_init: bool,
    },
    /// DMA the crash kernel did not ask for wrote its own memory.
    CrashKernelWritten {
        /// Distinct 4 KiB pages of the `crashkernel=` region hit.
        pages: u64,
    },
    /// With interrupt remapping on, the IO-APIC timer did not reach the crash kernel's CPU on its vector: Linux's
    /// `check_timer` panics ("timer doesn't work through Interrupt-remapped IO-APIC"), a second panic. `after`:
    /// the IOMMU init error Linux logged and went on from (the completion waits a locked unit never serves).
    TimerCheck {
        /// Where the timer interrupt went instead (another APIC or vector, blocked, or written to memory).
        got: String,
        /// The IOMMU init error logged before, if the init failed and Linux went on.
        after: Option<DriverError>,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::PrimaryInit(e) => write!(f, "primary kernel IOMMU init failed: {e}"),
            Failure::PrimarySetup(e) => write!(f, "primary kernel device setup failed: {e}"),
            Failure::PrimaryWorkload(e) => write!(f, "primary kernel workload failed: {e}"),
            Failure::CrashInit(e) => write!(f, "crash kernel IOMMU init failed: {e}"),
            Failure::DiskProbe(e) => write!(f, "crash kernel disk probe failed: {e}"),
            Failure::DumpStalled { pages_left, in_flight } => {
                write!(f, "dump write stalled ({pages_left} pages left, {in_flight} in flight)")
            }
            Failure::DumpWrite(e) => write!(f, "dump write failed: {e}"),
            Failure::DiskErrors(n) => write!(f, "{n} dump writes failed on the disk"),
            Failure::FatalAbort { device, what, iova, before_init } => {
                write!(f, "fatal DMA abort: {device} {what} at {iova:#x} (AER, second panic)")?;
                if *before_init {
                    f.write_str(", before the crash kernel's IOMMU init")?;
                }
                Ok(())
            }
            Failure::CrashKernelWritten { pages } => {
                write!(f, "crash kernel's own memory written by DMA ({pages} pages)")
            }
            Failure::TimerCheck { got, after } => {
                write!(f, "timer doesn't work through Interrupt-remapped IO-APIC (the timer {got}; second panic)")?;
                match after {
                    Some(e) => write!(f, ", after the IOMMU init error: {e}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// DMA operations by what the IOMMU did with them, counted from the crash on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmaCounts {
    /// Translated through tables (old or new).
    pub translated: u64,
    /// Blocked by the IOMMU (recorded fault).
    pub faulted: u64,
    /// Faulted on a platform where an aborted DMA is fatal (the first one ends the crash kernel).
    pub aborted: u64,
    /// Landed on the scratch page.
    pub redirected: u64,
    /// Went through untranslated (translation off).
    pub untranslated: u64,
}

/// Interrupt messages the devices sent, counted from the crash on, by where they went: to the CPU and vector
/// the kernel that programmed the device asked for, blocked by the unit (an interrupt-remapping fault), or
/// somewhere else (another vector or CPU, a CPU that is not running: lost to whoever waits for it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IrqCounts {
    /// Reached the CPU and vector the programming kernel expected.
    pub delivered: u64,
    /// Blocked by the unit's interrupt remapping.
    pub blocked: u64,
    /// Delivered to another CPU or vector, or a write that is not the expected doorbell and EventID: lost.
    pub misrouted: u64,
}

/// Old-memory pages changed between the crash and the capture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedPages {
    /// In device buffers: expected.
    pub buffers: u64,
    /// In the IOMMU's own structures that hand-over reuses in place (AMD-Vi's device table, command buffer,
    /// event log): written by the unit and the crash kernel, not by DMA.
    pub iommu: u64,
    /// Everywhere else: corruption of the vmcore.
    pub other: u64,
}

/// The result of one run.
#[derive(Clone, Debug, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The IOMMU kind's name (`vtd`, `amdvi`, `smmuv3`).
    pub iommu: String,
    /// The crash kernel's policy, by its command-line name (`adopt`, `reset-abort`, ...).
    pub policy: String,
    /// The seed of the run's randomness (the panic's tick among them).
    pub seed: u64,
    /// Tick of the panic.
    pub crash_tick: u64,
    /// The crash kernel wrote a dump: no [`Failure`], including no DMA into its own region. A captured
    /// dump may still be corrupt; see [`Outcome::vmcore_intact`].
    pub captured: bool,
    /// Why it did not, or what went wrong on the way.
    pub failure: Option<Reason<Failure>>,
    /// How the crash kernel's IOMMU init went: adopted, reset, fell back (with the reason).
    pub iommu_init: Reason<Summary>,
    /// Every DMA from the panic on, by what the IOMMU did with it.
    pub dma: DmaCounts,
    /// Interrupt messages since the panic.
    #[serde(default)]
    pub irq: IrqCounts,
    /// Old-memory pages (outside the crash region) that differ between the crash instant and the end of the
    /// run.
    pub changed_pages: ChangedPages,
    /// DMA writes that landed in the crashed kernel's memory after the crash kernel's IOMMU init: what
    /// containment is for.
    pub old_memory_writes_after_init: u64,
    /// Pages of the crash kernel's own region written by devices other than through its new mappings.
    pub crashkernel_pages_written: u64,
    /// Of those, pages written before the crash kernel's IOMMU init ran (between the panic and the init no
    /// policy acts: the crashed kernel's tables decide).
    pub crashkernel_pages_written_before_init: u64,
    /// Devices whose old translation the crash kernel kept live.
    pub adopted_devices: u64,
    /// Old table entries the crash kernel refused to adopt (the device is blocked instead), each with why.
    pub refused_entries: Vec<Reason<EntryRefusal>>,
    /// Wall-clock time of the crash kernel's IOMMU init (not part of a run's identity: it is measured).
    pub adopt_ns: u64,
    /// Memory the crash kernel's IOMMU init allocated, in bytes ([`Outcome::init_frames`] × 4 KiB).
    pub adopt_bytes: u64,
    /// 4 KiB frames the crash kernel's IOMMU init (with the bus probe) allocated from its region.
    pub init_frames: u64,
    /// Bytes of the crashed kernel's IOMMU structures the init read.
    pub init_bytes_read: u64,
    /// Pages spent on scratch containment.
    pub scratch_frames: u64,
    /// Devices the crash kernel brought up and used.
    pub usable_devices: Vec<String>,
    /// Pages of old memory written to the disk as the dump.
    pub dump_pages: u64,
    /// Of those, pages whose copy on the disk differs from memory at the crash instant: a corrupt vmcore.
    pub dump_pages_differing: u64,
    /// The dump was written and matches memory at the crash instant, page for page.
    pub vmcore_intact: bool,
    /// Faults injected (`--inject`), by name as [`crate::inject::Faults::names`] gives them.
    pub inject: Vec<String>,
    /// Every injected fault applied to this IOMMU and configuration; when not, the run does not test it.
    pub inject_applied: bool,
    /// Why the faults that did not apply did not, one clause each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inject_reason: Option<String>,
}

impl Outcome {
    /// A run not yet made.
    pub fn new(iommu: &str, policy: iommu_driver::Policy, seed: u64) -> Self {
        Outcome {
            iommu: iommu.to_string(),
            policy: policy.name().to_string(),
            seed,
            crash_tick: 0,
            captured: false,
            failure: None,
            iommu_init: Reason::Text(String::new()),
            dma: DmaCounts::default(),
            irq: IrqCounts::default(),
            changed_pages: ChangedPages::default(),
            old_memory_writes_after_init: 0,
            crashkernel_pages_written: 0,
            crashkernel_pages_written_before_init: 0,
            adopt_ns: 0,
            adopt_bytes: 0,
            init_frames: 0,
            init_bytes_read: 0,
            adopted_devices: 0,
            refused_entries: Vec::new(),
            scratch_frames: 0,
            usable_devices: Vec::new(),
            dump_pages: 0,
            dump_pages_differing: 0,
            vmcore_intact: false,
            inject: Vec::new(),
            inject_applied: true,
            inject_reason: None,
        }
    }
}

/// Runs are equal when everything but the measured wall-clock time is.
impl PartialEq for Outcome {
    fn eq(&self, o: &Self) -> bool {
        let mut a = self.clone();
        a.adopt_ns = o.adopt_ns;
        format!("{a:?}") == format!("{o:?}")
    }
}
