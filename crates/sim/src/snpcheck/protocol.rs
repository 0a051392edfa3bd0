//! The panic-path designs of the x86/sev v2 thread, as data: what the panicking CPU does, and what every other CPU
//! does in the crash NMI callback after it has left the guest.

use serde::Serialize;

/// One step of a CPU's program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Panicking CPU: NMI every other CPU (`crash_smp_send_stop`).
    SendNmi,
    /// Panicking CPU: wait until every other CPU's callback has returned (the crash code counts a CPU as
    /// stopped only then). If nothing else can move, the wait times out and the CPU goes on.
    WaitStopped,
    /// Execute WBINVD on this CPU.
    Wbinvd,
    /// SNP_DECOMMISSION of every guest context still bound to an ASID.
    DecommissionAll,
    /// SNP_DF_FLUSH.
    DfFlush,
    /// SNP_SHUTDOWN_EX with IOMMU_SNP_SHUTDOWN; if it returns DFFLUSH_REQUIRED, one SNP_DF_FLUSH and a
    /// second SNP_SHUTDOWN_EX (Linux `__sev_snp_shutdown_locked`).
    ShutdownWithRetry,
    /// NMI callback: count this CPU as arrived at the rendezvous (the v2 patch's counter).
    Arrive,
    /// NMI callback: wait until every other non-panicking CPU has arrived.
    WaitAllArrived,
    /// NMI callback: the last CPU to arrive decommissions every guest.
    DecommissionIfLast,
    /// NMI callback: wait until the decommission has been done.
    WaitDecommissioned,
    /// NMI callback: spin until the panicking CPU releases the others.
    WaitReleased,
    /// Panicking CPU: release CPUs spinning in their callback.
    Release,
}

/// A named panic-path design.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Protocol {
    /// Short name the command line selects it by, e.g. `v2-sync`.
    pub name: &'static str,
    /// One line on where the design comes from and what it does.
    pub about: &'static str,
    /// The panicking CPU's program, ending in kexec to the crash kernel.
    pub panic_cpu: Vec<Action>,
    /// Every other CPU's NMI callback, after any VM exit has finished saving guest state.
    pub nmi_callback: Vec<Action>,
}

use Action::*;

/// The designs of the thread, and variants of them.
pub fn protocols() -> Vec<Protocol> {
    vec![
        Protocol {
            name: "v2-sync",
            about: "v2 patch: CPUs rendezvous in the NMI path after saving guest state; the last decommissions; \
                    all WBINVD; the panic notifier does DF_FLUSH and SHUTDOWN_EX",
            panic_cpu: vec![SendNmi, WaitStopped, Wbinvd, DfFlush, ShutdownWithRetry],
            nmi_callback: vec![Arrive, WaitAllArrived, DecommissionIfLast, WaitDecommissioned, Wbinvd],
        },
        Protocol {
            name: "last-cpu",
            about: "reorder proposal: stop the others first, then the panicking CPU decommissions last",
            panic_cpu: vec![SendNmi, WaitStopped, DecommissionAll, Wbinvd, DfFlush, ShutdownWithRetry],
            nmi_callback: vec![Wbinvd],
        },
        Protocol {
            name: "last-cpu-spin",
            about: "reorder with the others spinning in their callback until released, so they can WBINVD after \
                    the decommission; the crash code only counts them stopped when the callback returns",
            panic_cpu: vec![SendNmi, WaitStopped, DecommissionAll, Release, Wbinvd, DfFlush, ShutdownWithRetry],
            nmi_callback: vec![WaitReleased, Wbinvd],
        },
        Protocol {
            name: "wbinvd-first",
            about: "WBINVD everywhere before the decommission (a WBINVD before the marking does not count)",
            panic_cpu: vec![SendNmi, WaitStopped, Wbinvd, DecommissionAll, DfFlush, ShutdownWithRetry],
            nmi_callback: vec![Wbinvd],
        },
        Protocol {
            name: "mainline",
            about: "before the series: WBINVD in the NMI callback, WBINVD + SHUTDOWN_EX in the panic notifier, no \
                    decommission",
            panic_cpu: vec![SendNmi, WaitStopped, Wbinvd, ShutdownWithRetry],
            nmi_callback: vec![Wbinvd],
        },
        Protocol {
            name: "decommission-early",
            about: "decommission right after sending the NMIs, without waiting for the other CPUs",
            panic_cpu: vec![SendNmi, DecommissionAll, WaitStopped, Wbinvd, DfFlush, ShutdownWithRetry],
            nmi_callback: vec![Wbinvd],
        },
        Protocol {
            name: "no-shutdown",
            about: "nothing at panic: SNP stays on and the IOMMU locked; the crash kernel relies on hand-over",
            panic_cpu: vec![SendNmi, WaitStopped],
            nmi_callback: vec![],
        },
    ]
}
