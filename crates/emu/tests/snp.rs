//! The SNP firmware's panic-path rules: the order DECOMMISSION → WBINVD on every marked core → DF_FLUSH →
//! SHUTDOWN_EX works, and each wrong order fails with the status the ABI gives.

use iommu_emu::snp::{SevStatus, SnpCommand as C, SnpFirmware};

const GCTX: u64 = 0x10_0000;

/// Four cores in two CCXs; SNP up; one guest (ASID 5) that ran on core 1.
fn host() -> SnpFirmware {
    let mut fw = SnpFirmware::new(4, 2);
    assert_eq!(fw.command(C::InitEx), SevStatus::SUCCESS);
    assert!(fw.iommu_locked());
    assert_eq!(fw.command(C::GctxCreate { gctx: GCTX }), SevStatus::SUCCESS);
    assert_eq!(fw.command(C::Activate { gctx: GCTX, asid: 5 }), SevStatus::SUCCESS);
    assert!(fw.vmrun(1, 5));
    fw
}

#[test]
fn the_right_order_shuts_down_and_releases_the_iommu() {
    let mut fw = host();
    assert_eq!(fw.command(C::Decommission { gctx: GCTX }), SevStatus::SUCCESS);
    // The whole CCX of core 1 (cores 0 and 1) is marked; the other CCX is not.
    assert_eq!(fw.cores_needing_wbinvd().collect::<Vec<_>>(), vec![0, 1]);
    fw.wbinvd(0);
    fw.wbinvd(1);
    assert_eq!(fw.command(C::DfFlush), SevStatus::SUCCESS);
    assert_eq!(fw.command(C::ShutdownEx { iommu: true }), SevStatus::SUCCESS);
    assert!(!fw.iommu_locked() && !fw.initialised());
}

#[test]
fn shutdown_with_a_live_guest_needs_a_df_flush_and_changes_nothing() {
    let mut fw = host();
    let before = fw.clone();
    assert_eq!(fw.command(C::ShutdownEx { iommu: true }), SevStatus::DFFLUSH_REQUIRED);
    assert_eq!(fw, before);
    assert!(fw.iommu_locked());
}

#[test]
fn df_flush_before_the_marked_cores_wbinvd_fails() {
    let mut fw = host();
    fw.command(C::Decommission { gctx: GCTX });
    fw.wbinvd(1);
    assert_eq!(fw.command(C::DfFlush), SevStatus::WBINVD_REQUIRED, "core 0 shares the CCX and has not flushed");
    assert_eq!(fw.command(C::ShutdownEx { iommu: true }), SevStatus::DFFLUSH_REQUIRED);
    fw.wbinvd(0);
    assert_eq!(fw.command(C::DfFlush), SevStatus::SUCCESS);
    assert_eq!(fw.command(C::ShutdownEx { iommu: true }), SevStatus::SUCCESS);
}

#[test]
fn wbinvd_before_decommission_does_not_count() {
    let mut fw = host();
    for core in 0..4 {
        fw.wbinvd(core);
    }
    fw.command(C::Decommission { gctx: GCTX });
    assert_eq!(fw.command(C::DfFlush), SevStatus::WBINVD_REQUIRED);
}

#[test]
fn shutdown_after_decommission_without_df_flush_fails() {
    let mut fw = host();
    fw.command(C::Decommission { gctx: GCTX });
    fw.wbinvd(0);
    fw.wbinvd(1);
    assert_eq!(fw.command(C::ShutdownEx { iommu: true }), SevStatus::DFFLUSH_REQUIRED);
}

#[test]
fn shutdown_without_the_iommu_flag_leaves_the_iommu_locked() {
    let mut fw = SnpFirmware::new(2, 2);
    fw.command(C::InitEx);
    assert_eq!(fw.command(C::ShutdownEx { iommu: false }), SevStatus::SUCCESS);
    assert!(!fw.initialised() && fw.iommu_locked());
}

#[test]
fn state_and_argument_errors() {
    let mut fw = SnpFirmware::new(2, 1);
    assert_eq!(fw.command(C::DfFlush), SevStatus::INVALID_PLATFORM_STATE);
    assert_eq!(fw.command(C::GctxCreate { gctx: 1 }), SevStatus::INVALID_PLATFORM_STATE);
    fw.command(C::InitEx);
    assert_eq!(fw.command(C::InitEx), SevStatus::INVALID_PLATFORM_STATE, "no re-init");
    assert_eq!(fw.command(C::Decommission { gctx: 9 }), SevStatus::INVALID_GUEST);
    fw.command(C::GctxCreate { gctx: 1 });
    fw.command(C::GctxCreate { gctx: 2 });
    assert_eq!(fw.command(C::Activate { gctx: 1, asid: 0 }), SevStatus::INVALID_ASID);
    assert_eq!(fw.command(C::Activate { gctx: 1, asid: 3 }), SevStatus::SUCCESS);
    assert_eq!(fw.command(C::Activate { gctx: 2, asid: 3 }), SevStatus::ASID_OWNED);
    assert_eq!(fw.command(C::Activate { gctx: 1, asid: 4 }), SevStatus::INVALID_GUEST_STATE);
    assert!(!fw.vmrun(7, 3), "no such core");
    assert!(!fw.vmrun(0, 9), "no such ASID");
    assert_eq!(SevStatus::WBINVD_REQUIRED.to_string(), "WBINVD_REQUIRED (0x0e)");
    assert_eq!(C::ShutdownEx { iommu: true }.id(), 0x086);
}
