//! The AMD Secure Processor's SEV-SNP firmware, as far as a panicking host and its crash kernel meet it:
//! platform init and shutdown, guest contexts bound to ASIDs, the cache-flush bookkeeping of
//! SNP_DECOMMISSION → WBINVD → SNP_DF_FLUSH → SNP_SHUTDOWN_EX, and the IOMMU lock that SNP enforcement
//! puts on the AMD-Vi base registers.
//!
//! Command IDs and status codes are the firmware ABI's (Linux `include/linux/psp-sev.h`,
//! `include/uapi/linux/psp-sev.h`). The flush rules paraphrase SNP ABI (AMD 56860) §8.13 as Kalra quotes it.

mod status;

use std::collections::{BTreeMap, BTreeSet};

pub use status::SevStatus;

/// Firmware command IDs (Linux `enum sev_cmd`).
pub mod cmd_id {
    /// Initialise SNP on the platform (legacy form, without the extended buffer).
    pub const SNP_INIT: u32 = 0x081;
    /// Shut SNP down (legacy form, without options).
    pub const SNP_SHUTDOWN: u32 = 0x082;
    /// Flush the data fabric's write buffers after WBINVD on every marked core.
    pub const SNP_DF_FLUSH: u32 = 0x084;
    /// Initialise SNP with an extended parameter buffer.
    pub const SNP_INIT_EX: u32 = 0x085;
    /// Shut SNP down with options (IOMMU_SNP_SHUTDOWN among them).
    pub const SNP_SHUTDOWN_EX: u32 = 0x086;
    /// Destroy a guest context and release its ASID.
    pub const SNP_DECOMMISSION: u32 = 0x090;
    /// Bind an ASID to a guest context.
    pub const SNP_ACTIVATE: u32 = 0x091;
    /// Create a guest context in a firmware page.
    pub const SNP_GCTX_CREATE: u32 = 0x093;
}

/// A command as the host issues it (its buffer decoded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SnpCommand {
    /// SNP_INIT_EX: enable SNP, initialise the RMP, turn on IOMMU SNP enforcement.
    InitEx,
    /// SNP_GCTX_CREATE: a guest context at this page.
    GctxCreate {
        /// System physical address of the guest-context page.
        gctx: u64,
    },
    /// SNP_ACTIVATE: bind `asid` to the guest context.
    Activate {
        /// The guest context's page.
        gctx: u64,
        /// The ASID its vCPUs will run with.
        asid: u32,
    },
    /// SNP_DECOMMISSION: destroy the guest context, free its ASID, mark its cores for WBINVD.
    Decommission {
        /// The guest context's page.
        gctx: u64,
    },
    /// SNP_DF_FLUSH: data-fabric flush; requires every marked core to have executed WBINVD since marking.
    DfFlush,
    /// SNP_SHUTDOWN_EX; `iommu` is IOMMU_SNP_SHUTDOWN (dword 1 bit 0), which Linux always sets.
    ShutdownEx {
        /// IOMMU_SNP_SHUTDOWN: also turn IOMMU SNP enforcement off, unlocking the AMD-Vi base registers.
        iommu: bool,
    },
}

impl SnpCommand {
    /// The command ID written to CMDRESP ([`cmd_id`]).
    pub const fn id(self) -> u32 {
        match self {
            SnpCommand::InitEx => cmd_id::SNP_INIT_EX,
            SnpCommand::GctxCreate { .. } => cmd_id::SNP_GCTX_CREATE,
            SnpCommand::Activate { .. } => cmd_id::SNP_ACTIVATE,
            SnpCommand::Decommission { .. } => cmd_id::SNP_DECOMMISSION,
            SnpCommand::DfFlush => cmd_id::SNP_DF_FLUSH,
            SnpCommand::ShutdownEx { .. } => cmd_id::SNP_SHUTDOWN_EX,
        }
    }
    /// The ABI's name for the command.
    pub const fn name(self) -> &'static str {
        match self {
            SnpCommand::InitEx => "SNP_INIT_EX",
            SnpCommand::GctxCreate { .. } => "SNP_GCTX_CREATE",
            SnpCommand::Activate { .. } => "SNP_ACTIVATE",
            SnpCommand::Decommission { .. } => "SNP_DECOMMISSION",
            SnpCommand::DfFlush => "SNP_DF_FLUSH",
            SnpCommand::ShutdownEx { .. } => "SNP_SHUTDOWN_EX",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Guest {
    asid: Option<u32>,
    /// Cores a vCPU of this guest has run on (VMRUN with its ASID).
    ran_on: BTreeSet<usize>,
}

/// The SNP firmware state. Cheap to clone and hashable, so an explorer can deduplicate states.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SnpFirmware {
    cores: usize,
    /// Cores sharing a last-level cache: decommission marks whole CCXs (the ABI's "every core of every CCX
    /// the guest had been activated on").
    cores_per_ccx: usize,
    initialised: bool,
    guests: BTreeMap<u64, Guest>,
    /// Cores marked by a decommission that have not executed WBINVD since.
    needs_wbinvd: BTreeSet<usize>,
    /// A decommission happened and no successful DF_FLUSH since.
    df_flush_pending: bool,
    /// IOMMU SNP enforcement: the AMD-Vi base registers are locked while it is on.
    iommu_enforced: bool,
}

impl SnpFirmware {
    /// Firmware before SNP_INIT_EX on a machine of `cores` cores, `cores_per_ccx` to a last-level cache
    /// (0 is taken as 1).
    pub fn new(cores: usize, cores_per_ccx: usize) -> Self {
        SnpFirmware {
            cores,
            cores_per_ccx: cores_per_ccx.max(1),
            initialised: false,
            guests: BTreeMap::new(),
            needs_wbinvd: BTreeSet::new(),
            df_flush_pending: false,
            iommu_enforced: false,
        }
    }

    /// Whether SNP is initialised (SNP_INIT_EX done, no SNP_SHUTDOWN_EX since).
    pub fn initialised(&self) -> bool {
        self.initialised
    }
    /// Whether the IOMMU's device-table, command-buffer, event-log and completion-store base registers
    /// ignore writes (AMD IOMMU spec 48882 rev 3.10 §2.12.2.1, as the SNP kdump series cites it).
    pub fn iommu_locked(&self) -> bool {
        self.iommu_enforced
    }
    /// Cores marked by SNP_DECOMMISSION that must execute WBINVD before SNP_DF_FLUSH succeeds.
    pub fn cores_needing_wbinvd(&self) -> impl Iterator<Item = usize> + '_ {
        self.needs_wbinvd.iter().copied()
    }
    /// Whether an SNP_DECOMMISSION awaits a successful SNP_DF_FLUSH (SNP_SHUTDOWN_EX fails until then).
    pub fn df_flush_pending(&self) -> bool {
        self.df_flush_pending
    }
    /// ASIDs still bound to a guest context.
    pub fn bound_asids(&self) -> impl Iterator<Item = u32> + '_ {
        self.guests.values().filter_map(|g| g.asid)
    }
    /// The ASID SNP_ACTIVATE bound to the guest context at `gctx`, if any.
    pub fn asid_of(&self, gctx: u64) -> Option<u32> {
        self.guests.get(&gctx).and_then(|g| g.asid)
    }

    /// A vCPU of the guest bound to `asid` enters (VMRUN) on `core`: the core now holds that guest's lines.
    pub fn vmrun(&mut self, core: usize, asid: u32) -> bool {
        if core >= self.cores {
            return false;
        }
        match self.guests.values_mut().find(|g| g.asid == Some(asid)) {
            Some(g) => g.ran_on.insert(core) | true,
            None => false,
        }
    }

    /// `core` executes WBINVD: clears its mark, if it has one. A WBINVD before the marking does not count.
    pub fn wbinvd(&mut self, core: usize) {
        self.needs_wbinvd.remove(&core);
    }

    /// Run one command; the status the firmware returns in CMDRESP.
    pub fn command(&mut self, c: SnpCommand) -> SevStatus {
        match c {
            SnpCommand::InitEx => {
                if self.initialised {
                    return SevStatus::INVALID_PLATFORM_STATE;
                }
                self.initialised = true;
                self.iommu_enforced = true;
                SevStatus::SUCCESS
            }
            SnpCommand::GctxCreate { gctx } => {
                if !self.initialised {
                    return SevStatus::INVALID_PLATFORM_STATE;
                }
                if self.guests.contains_key(&gctx) {
                    return SevStatus::INVALID_GUEST;
                }
                self.guests.insert(gctx, Guest { asid: None, ran_on: BTreeSet::new() });
                SevStatus::SUCCESS
            }
            SnpCommand::Activate { gctx, asid } => {
                if !self.initialised {
                    return SevStatus::INVALID_PLATFORM_STATE;
                }
                if asid == 0 {
                    return SevStatus::INVALID_ASID;
                }
                if self.guests.values().any(|g| g.asid == Some(asid)) {
                    return SevStatus::ASID_OWNED;
                }
                match self.guests.get_mut(&gctx) {
                    None => SevStatus::INVALID_GUEST,
                    Some(g) if g.asid.is_some() => SevStatus::INVALID_GUEST_STATE,
                    Some(g) => {
                        g.asid = Some(asid);
                        SevStatus::SUCCESS
                    }
                }
            }
            SnpCommand::Decommission { gctx } => {
                if !self.initialised {
                    return SevStatus::INVALID_PLATFORM_STATE;
                }
                let Some(g) = self.guests.remove(&gctx) else { return SevStatus::INVALID_GUEST };
                let ccxs: BTreeSet<usize> = g.ran_on.iter().map(|c| c / self.cores_per_ccx).collect();
                for core in 0..self.cores {
                    if ccxs.contains(&(core / self.cores_per_ccx)) {
                        self.needs_wbinvd.insert(core);
                    }
                }
                self.df_flush_pending = true;
                SevStatus::SUCCESS
            }
            SnpCommand::DfFlush => {
                if !self.initialised {
                    return SevStatus::INVALID_PLATFORM_STATE;
                }
                if !self.needs_wbinvd.is_empty() {
                    return SevStatus::WBINVD_REQUIRED;
                }
                self.df_flush_pending = false;
                SevStatus::SUCCESS
            }
            SnpCommand::ShutdownEx { iommu } => {
                if !self.initialised {
                    // Nothing to shut down; Linux only issues it when initialised.
                    return SevStatus::SUCCESS;
                }
                // As the AMD SNP kdump series reports: SHUTDOWN_EX fails while an ASID is still in use by a guest or a DF_FLUSH is
                // pending, with DFFLUSH_REQUIRED in both cases, and changes nothing.
                if self.df_flush_pending || self.guests.values().any(|g| g.asid.is_some()) {
                    return SevStatus::DFFLUSH_REQUIRED;
                }
                self.initialised = false;
                self.guests.clear();
                if iommu {
                    self.iommu_enforced = false;
                }
                SevStatus::SUCCESS
            }
        }
    }
}
