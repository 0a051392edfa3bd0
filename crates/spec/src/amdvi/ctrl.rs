//! The AMD-Vi Control, Extended Feature and Extended Feature 2 registers (spec 3.4.4, 3.4.7; Linux `CONTROL_*`
//! and `FEATURE_*`). Offsets are in [`super::regs::off`].

use bitfield_struct::bitfield;

/// Control.InvTimeOut values (Linux `CTRL_INV_TO_*`): the device-IOTLB invalidation timeout.
pub mod inv_timeout {
    /// 000b: no timeout.
    pub const NONE: u8 = 0;
    /// 001b: 1 ms.
    pub const MS_1: u8 = 1;
    /// 010b: 10 ms.
    pub const MS_10: u8 = 2;
    /// 011b: 100 ms.
    pub const MS_100: u8 = 3;
    /// 100b: 1 s (`CTRL_INV_TO_1S`).
    pub const S_1: u8 = 4;
    /// 101b: 10 s.
    pub const S_10: u8 = 5;
    /// 110b: 100 s; 111b is reserved.
    pub const S_100: u8 = 6;
}

/// IOMMU Control Register (3.4.4). Bit names follow the spec; Linux's `CONTROL_*` bit numbers in comments.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct Control {
    /// IommuEn (`CONTROL_IOMMU_EN`, 0): translation and remapping on.
    pub iommu_en: bool,
    /// HtTunEn (1).
    pub ht_tun_en: bool,
    /// EventLogEn (2).
    pub event_log_en: bool,
    /// EventIntEn (3).
    pub event_int_en: bool,
    /// ComWaitIntEn (`CONTROL_COMWAIT_EN`, 4).
    pub com_wait_int_en: bool,
    /// InvTimeOut (7:5), see [`inv_timeout`].
    #[bits(3)]
    pub inv_timeout: u8,
    /// PassPW (8).
    pub pass_pw: bool,
    /// ResPassPW (9).
    pub res_pass_pw: bool,
    /// Coherent (10): the IOMMU's table walks snoop.
    pub coherent: bool,
    /// Isoc (11).
    pub isoc: bool,
    /// CmdBufEn (12).
    pub cmd_buf_en: bool,
    /// PPRLogEn (13).
    pub ppr_log_en: bool,
    /// PprIntEn (14).
    pub ppr_int_en: bool,
    /// PPREn (15).
    pub ppr_en: bool,
    /// GTEn (16): guest translation.
    pub gt_en: bool,
    /// GAEn (17): 128-bit IRTEs / guest virtual APIC.
    pub ga_en: bool,
    /// CRW (21:18).
    #[bits(4)]
    pub crw: u8,
    /// SmiFEn (22).
    pub smif_en: bool,
    /// SlfWBdis (23).
    pub slf_wb_dis: bool,
    /// SmiFLogEn (24).
    pub smif_log_en: bool,
    /// GAMEn (27:25); Linux sets bit 25 (`CONTROL_GAM_EN`) for vAPIC mode.
    #[bits(3)]
    pub gam_en: u8,
    /// GALogEn (28).
    pub ga_log_en: bool,
    /// GAIntEn (29).
    pub ga_int_en: bool,
    /// DualPprLogEn (31:30).
    #[bits(2)]
    pub dual_ppr_log_en: u8,
    /// DualEventLogEn (33:32).
    #[bits(2)]
    pub dual_event_log_en: u8,
    /// DevTblSegEn (36:34).
    #[bits(3)]
    pub dev_tbl_seg_en: u8,
    /// PrivAbrtEn (38:37).
    #[bits(2)]
    pub priv_abrt_en: u8,
    /// PprAutoRspEn (39).
    pub ppr_auto_rsp_en: bool,
    /// MarcEn (40).
    pub marc_en: bool,
    /// BlkStopMrkEn (41).
    pub blk_stop_mrk_en: bool,
    /// PprAutoRspAon (42).
    pub ppr_auto_rsp_aon: bool,
    /// NumIntRemapMode (44:43, Linux `CONTROL_NUM_INT_REMAP_MODE`): 1 = 2048 IRTEs per device.
    #[bits(2)]
    pub num_int_remap_mode: u8,
    /// EPHEn (45).
    pub eph_en: bool,
    /// HADUpdate (47:46).
    #[bits(2)]
    pub had_update: u8,
    /// GDUpdateDis (48).
    pub gd_update_dis: bool,
    #[bits(1)]
    __: u8,
    /// XTEn (50): x2APIC interrupt remapping.
    pub xt_en: bool,
    /// IntCapXTEn (51): the IOMMU's own interrupts in x2APIC format.
    pub int_cap_xt_en: bool,
    #[bits(2)]
    __: u8,
    /// GAUpdateDis (54).
    pub ga_update_dis: bool,
    #[bits(3)]
    __: u8,
    /// GCR3TRPMode (58, Linux `CONTROL_GCR3TRPMODE`).
    pub gcr3trp_mode: bool,
    /// IRTCacheDis (59): writable only where supported.
    pub irt_cache_dis: bool,
    #[bits(1)]
    __: u8,
    /// SNPAVICEn (61, Linux `CONTROL_SNPAVIC_EN`).
    pub snp_avic_en: bool,
    #[bits(2)]
    __: u8,
}

/// Extended Feature Register, EFR (3.4.7), read-only. Names from the spec as VirtualBox transcribes it, Linux
/// `FEATURE_*` for the bits Linux checks.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct Efr {
    /// PreFSup (`FEATURE_PREFETCH`).
    pub pref_sup: bool,
    /// PPRSup (`FEATURE_PPR`).
    pub ppr_sup: bool,
    /// XTSup (`FEATURE_X2APIC`).
    pub xt_sup: bool,
    /// NXSup (`FEATURE_NX`).
    pub nx_sup: bool,
    /// GTSup (`FEATURE_GT`): guest translation (v2 page tables).
    pub gt_sup: bool,
    #[bits(1)]
    __: u8,
    /// IASup (`FEATURE_IA`): INVALIDATE_IOMMU_ALL.
    pub ia_sup: bool,
    /// GASup (`FEATURE_GA`).
    pub ga_sup: bool,
    /// HESup (`FEATURE_HE`).
    pub he_sup: bool,
    /// PCSup (`FEATURE_PC`).
    pub pc_sup: bool,
    /// HATS (`FEATURE_HATS`, 11:10): host page-table levels `4 + HATS`; 3 = host translation unsupported.
    #[bits(2)]
    pub hats: u8,
    /// GATS (13:12): guest levels, 1 = 5-level.
    #[bits(2)]
    pub gats: u8,
    /// GLXSup (15:14).
    #[bits(2)]
    pub glx_sup: u8,
    /// SmiFSup (17:16).
    #[bits(2)]
    pub smif_sup: u8,
    /// SmiFRC (20:18).
    #[bits(3)]
    pub smif_rc: u8,
    /// GAMSup (23:21); Linux tests bit 21 (`FEATURE_GAM_VAPIC`).
    #[bits(3)]
    pub gam_sup: u8,
    /// DualPprLogSup (25:24).
    #[bits(2)]
    pub dual_ppr_log_sup: u8,
    #[bits(2)]
    __: u8,
    /// DualEventLogSup (29:28).
    #[bits(2)]
    pub dual_event_log_sup: u8,
    #[bits(2)]
    __: u8,
    /// PASMax (36:32).
    #[bits(5)]
    pub pas_max: u8,
    /// USSup (37).
    pub us_sup: bool,
    /// DevTblSegSup (39:38).
    #[bits(2)]
    pub dev_tbl_seg_sup: u8,
    /// PprOvrflwEarlySup (40).
    pub ppr_ovrflw_early_sup: bool,
    /// PprAutoRspSup (41).
    pub ppr_auto_rsp_sup: bool,
    /// MarcSup (43:42).
    #[bits(2)]
    pub marc_sup: u8,
    /// BlkStopMrkSup (44).
    pub blk_stop_mrk_sup: bool,
    /// PerfOptSup (45).
    pub perf_opt_sup: bool,
    /// MsiCapMmioSup (46).
    pub msi_cap_mmio_sup: bool,
    #[bits(1)]
    __: u8,
    /// GIoSup (`FEATURE_GIOSUP`, 48).
    pub gio_sup: bool,
    /// HASup (`FEATURE_HASUP`, 49).
    pub ha_sup: bool,
    /// EPHSup (`FEATURE_EPHSUP`, 50).
    pub eph_sup: bool,
    /// AttrFWSup (51).
    pub attr_fw_sup: bool,
    /// HDSup (`FEATURE_HDSUP`, 52).
    pub hd_sup: bool,
    #[bits(1)]
    __: u8,
    /// InvIotlbTypeSup (54).
    pub inv_iotlb_type_sup: bool,
    #[bits(6)]
    __: u8,
    /// GAUpdateDisSup (61).
    pub ga_update_dis_sup: bool,
    /// ForcePhyDestSup (62).
    pub force_phys_dest_sup: bool,
    /// SNPSup (`FEATURE_SNP`, 63): required for SNP; Linux then forces v1 page tables.
    pub snp_sup: bool,
}

impl Efr {
    /// Host page-table levels the IOMMU walks (DTE Mode up to this), or `None` when HATS = 3.
    pub const fn host_levels(self) -> Option<u8> {
        match self.hats() {
            3 => None,
            h => Some(4 + h),
        }
    }
    /// Guest virtual-APIC mode supported (Linux `FEATURE_GAM_VAPIC`, bit 21).
    pub const fn gam_vapic(self) -> bool {
        self.gam_sup() & 1 != 0
    }
}

/// Extended Feature 2 Register, EFR2 (Linux `FEATURE_*` under "Extended Feature 2 Bits").
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct Efr2 {
    #[bits(1)]
    __: u8,
    /// SEVSNPIOSup (`FEATURE_SEVSNPIO_SUP`, 1).
    pub sev_snp_io_sup: bool,
    #[bits(1)]
    __: u8,
    /// GCR3TRPModeSup (`FEATURE_GCR3TRPMODE`, 3).
    pub gcr3trp_mode_sup: bool,
    #[bits(1)]
    __: u8,
    /// SNPAVICSup (`FEATURE_SNPAVICSUP`, 7:5): 1 = guest virtual APIC usable with SNP.
    #[bits(3)]
    pub snp_avic_sup: u8,
    /// NumIntRemapSup (`FEATURE_NUM_INT_REMAP_SUP`, 9:8): 1 = 2048 IRTEs per device.
    #[bits(2)]
    pub num_int_remap_sup: u8,
    #[bits(1)]
    __: u8,
    /// HtRangeIgnore (`FEATURE_HT_RANGE_IGNORE`, 11).
    pub ht_range_ignore: bool,
    #[bits(52)]
    __: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_bits_at_linux_positions() {
        let named: [(Control, u32); 26] = [
            (Control::new().with_iommu_en(true), 0),
            (Control::new().with_ht_tun_en(true), 1),
            (Control::new().with_event_log_en(true), 2),
            (Control::new().with_event_int_en(true), 3),
            (Control::new().with_com_wait_int_en(true), 4),
            (Control::new().with_pass_pw(true), 8),
            (Control::new().with_res_pass_pw(true), 9),
            (Control::new().with_coherent(true), 10),
            (Control::new().with_isoc(true), 11),
            (Control::new().with_cmd_buf_en(true), 12),
            (Control::new().with_ppr_log_en(true), 13),
            (Control::new().with_ppr_int_en(true), 14),
            (Control::new().with_ppr_en(true), 15),
            (Control::new().with_gt_en(true), 16),
            (Control::new().with_ga_en(true), 17),
            (Control::new().with_gam_en(1), 25),
            (Control::new().with_ga_log_en(true), 28),
            (Control::new().with_ga_int_en(true), 29),
            (Control::new().with_num_int_remap_mode(1), 43),
            (Control::new().with_eph_en(true), 45),
            (Control::new().with_xt_en(true), 50),
            (Control::new().with_int_cap_xt_en(true), 51),
            (Control::new().with_ga_update_dis(true), 54),
            (Control::new().with_gcr3trp_mode(true), 58),
            (Control::new().with_irt_cache_dis(true), 59),
            (Control::new().with_snp_avic_en(true), 61),
        ];
        for (c, bit) in named {
            assert_eq!(c.into_bits(), 1 << bit, "bit {bit}");
        }
        assert_eq!(Control::new().with_inv_timeout(inv_timeout::S_100).into_bits(), 6 << 5);
        assert_eq!(Control::from_bits(0x7 << 5).inv_timeout(), 7);
        // A value read from a live kernel (Linux debugfs example): IommuEn, EventLogEn, CmdBufEn, XTEn...
        let live = Control::from_bits(0x000c_2200_0003_f48d);
        assert!(live.iommu_en() && live.event_log_en() && live.cmd_buf_en() && live.coherent());
        assert!(live.ga_en() && live.xt_en() && live.int_cap_xt_en() && !live.snp_avic_en());
    }

    #[test]
    fn efr_bits_at_linux_positions() {
        assert_eq!(Efr::new().with_pref_sup(true).into_bits(), 1 << 0);
        assert_eq!(Efr::new().with_ppr_sup(true).into_bits(), 1 << 1);
        assert_eq!(Efr::new().with_xt_sup(true).into_bits(), 1 << 2);
        assert_eq!(Efr::new().with_nx_sup(true).into_bits(), 1 << 3);
        assert_eq!(Efr::new().with_gt_sup(true).into_bits(), 1 << 4);
        assert_eq!(Efr::new().with_ia_sup(true).into_bits(), 1 << 6);
        assert_eq!(Efr::new().with_ga_sup(true).into_bits(), 1 << 7);
        assert_eq!(Efr::new().with_he_sup(true).into_bits(), 1 << 8);
        assert_eq!(Efr::new().with_pc_sup(true).into_bits(), 1 << 9);
        assert_eq!(Efr::new().with_hats(3).into_bits(), 3 << 10);
        assert_eq!(Efr::new().with_gats(3).into_bits(), 3 << 12);
        assert_eq!(Efr::new().with_glx_sup(3).into_bits(), 3 << 14);
        assert_eq!(Efr::new().with_gam_sup(1).into_bits(), 1 << 21);
        assert_eq!(Efr::new().with_pas_max(0x1f).into_bits(), 0x1f << 32);
        assert_eq!(Efr::new().with_msi_cap_mmio_sup(true).into_bits(), 1 << 46);
        assert_eq!(Efr::new().with_gio_sup(true).into_bits(), 1 << 48);
        assert_eq!(Efr::new().with_ha_sup(true).into_bits(), 1 << 49);
        assert_eq!(Efr::new().with_eph_sup(true).into_bits(), 1 << 50);
        assert_eq!(Efr::new().with_hd_sup(true).into_bits(), 1 << 52);
        assert_eq!(Efr::new().with_snp_sup(true).into_bits(), 1 << 63);
        assert_eq!(Efr::new().host_levels(), Some(4));
        assert_eq!(Efr::new().with_hats(2).host_levels(), Some(6));
        assert_eq!(Efr::new().with_hats(3).host_levels(), None);
        assert!(Efr::from_bits(1 << 21).gam_vapic());
        // QEMU's advertised EFR: PreF | PPR | IA | GT | HE | GATS=2 | HATS=2 | GA.
        let q = Efr::from_bits(1 | 2 | 1 << 6 | 1 << 4 | 1 << 8 | 2 << 12 | 2 << 10 | 1 << 7);
        assert!(q.ia_sup() && q.gt_sup() && !q.snp_sup());
        assert_eq!(q.host_levels(), Some(6));
    }

    #[test]
    fn efr2_bits() {
        assert_eq!(Efr2::new().with_snp_avic_sup(0x7).into_bits(), 0b111 << 5);
        assert_eq!(Efr2::new().with_sev_snp_io_sup(true).into_bits(), 1 << 1);
        assert_eq!(Efr2::new().with_gcr3trp_mode_sup(true).into_bits(), 1 << 3);
        assert_eq!(Efr2::new().with_num_int_remap_sup(1).into_bits(), 1 << 8);
        assert_eq!(Efr2::new().with_ht_range_ignore(true).into_bits(), 1 << 11);
    }

    #[test]
    fn round_trips() {
        for raw in [0u64, u64::MAX, 0x5555_5555_5555_5555, 0xaaaa_aaaa_aaaa_aaaa, 0xdead_beef_0bad_f00d] {
            assert_eq!(Control::from_bits(raw).into_bits(), raw);
            assert_eq!(Efr::from_bits(raw).into_bits(), raw);
            assert_eq!(Efr2::from_bits(raw).into_bits(), raw);
        }
    }
}
