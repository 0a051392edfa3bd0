//! VT-d remapping-unit registers (spec chapter 11). Offsets are bytes from the unit's MMIO base.

use bitfield_struct::bitfield;

/// Register offsets (spec 11.4, Linux `DMAR_*_REG`).
pub mod off {
    /// Version Register, 32-bit (`DMAR_VER_REG`), see [`super::Ver`].
    pub const VER: usize = 0x000;
    /// Capability Register, 64-bit (`DMAR_CAP_REG`), see [`super::Cap`].
    pub const CAP: usize = 0x008;
    /// Extended Capability Register, 64-bit (`DMAR_ECAP_REG`), see [`super::Ecap`].
    pub const ECAP: usize = 0x010;
    /// Global Command Register, 32-bit (`DMAR_GCMD_REG`), see [`super::Gcmd`].
    pub const GCMD: usize = 0x018;
    /// Global Status Register, 32-bit (`DMAR_GSTS_REG`), see [`super::Gsts`].
    pub const GSTS: usize = 0x01c;
    /// Root Table Address Register, 64-bit (`DMAR_RTADDR_REG`), see [`super::RtAddr`].
    pub const RTADDR: usize = 0x020;
    /// Context Command Register, 64-bit (`DMAR_CCMD_REG`), see [`super::Ccmd`].
    pub const CCMD: usize = 0x028;
    /// Fault Status Register, 32-bit (`DMAR_FSTS_REG`), see [`super::Fsts`].
    pub const FSTS: usize = 0x034;
    /// Fault Event Control Register, 32-bit (`DMAR_FECTL_REG`), see [`super::EventCtl`].
    pub const FECTL: usize = 0x038;
    /// Fault Event Data Register: the fault interrupt's MSI data, 32-bit (`DMAR_FEDATA_REG`).
    pub const FEDATA: usize = 0x03c;
    /// Fault Event Address Register: MSI address bits 31:2, 32-bit (`DMAR_FEADDR_REG`).
    pub const FEADDR: usize = 0x040;
    /// Fault Event Upper Address Register: MSI address bits 63:32 (`DMAR_FEUADDR_REG`).
    pub const FEUADDR: usize = 0x044;
    /// Advanced Fault Log Register, 64-bit (`DMAR_AFLOG_REG`); only with CAP.AFL (deprecated).
    pub const AFLOG: usize = 0x058;
    /// Protected Memory Enable Register, 32-bit (`DMAR_PMEN_REG`): EPM (bit 31), PRS (bit 0).
    pub const PMEN: usize = 0x064;
    /// Protected Low-Memory Base Register, 32-bit (`DMAR_PLMBASE_REG`).
    pub const PLMBASE: usize = 0x068;
    /// Protected Low-Memory Limit Register, 32-bit (`DMAR_PLMLIMIT_REG`).
    pub const PLMLIMIT: usize = 0x06c;
    /// Protected High-Memory Base Register, 64-bit (`DMAR_PHMBASE_REG`).
    pub const PHMBASE: usize = 0x070;
    /// Protected High-Memory Limit Register, 64-bit (`DMAR_PHMLIMIT_REG`).
    pub const PHMLIMIT: usize = 0x078;
    /// Invalidation Queue Head Register, 64-bit (`DMAR_IQH_REG`), see [`super::IqPtr`].
    pub const IQH: usize = 0x080;
    /// Invalidation Queue Tail Register, 64-bit (`DMAR_IQT_REG`), see [`super::IqPtr`].
    pub const IQT: usize = 0x088;
    /// Invalidation Queue Address Register, 64-bit (`DMAR_IQA_REG`), see [`super::Iqa`].
    pub const IQA: usize = 0x090;
    /// Invalidation Completion Status Register, 32-bit (`DMAR_ICS_REG`), see [`super::Ics`].
    pub const ICS: usize = 0x09c;
    /// Invalidation Event Control Register, 32-bit (`DMAR_IECTL_REG`), see [`super::EventCtl`].
    pub const IECTL: usize = 0x0a0;
    /// Invalidation Event Data Register: MSI data, 32-bit (`DMAR_IEDATA_REG`).
    pub const IEDATA: usize = 0x0a4;
    /// Invalidation Event Address Register: MSI address bits 31:2 (`DMAR_IEADDR_REG`).
    pub const IEADDR: usize = 0x0a8;
    /// Invalidation Event Upper Address Register: MSI address bits 63:32 (`DMAR_IEUADDR_REG`).
    pub const IEUADDR: usize = 0x0ac;
    /// Invalidation Queue Error Record Register, 64-bit (`DMAR_IQER_REG`), see [`super::Iqer`].
    pub const IQER: usize = 0x0b0;
    /// Interrupt Remapping Table Address Register, 64-bit (`DMAR_IRTA_REG`).
    pub const IRTA: usize = 0x0b8;

    /// IVA register: `ECAP.IRO * 16`.
    pub const fn iva(iro: u16) -> usize {
        iro as usize * 16
    }
    /// IOTLB invalidate register: `ECAP.IRO * 16 + 8`.
    pub const fn iotlb(iro: u16) -> usize {
        iro as usize * 16 + 8
    }
    /// Fault recording register `n` (128 bits): `CAP.FRO * 16 + 16 * n`.
    pub const fn frcd(fro: u16, n: usize) -> usize {
        fro as usize * 16 + 16 * n
    }
}

/// VER (11.4.1).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Ver {
    /// MIN (bits 3:0): minor version.
    #[bits(4)]
    pub min: u8,
    /// MAX (bits 7:4): major version.
    #[bits(4)]
    pub max: u8,
    #[bits(24)]
    __: u32,
}

/// CAP (11.4.2), read-only.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct Cap {
    /// Number of domain IDs: `2^(4 + 2*ND)`.
    #[bits(3)]
    pub nd: u8,
    /// AFL (bit 3): advanced fault logging.
    pub afl: bool,
    /// Required write-buffer flushing (GCMD.WBF).
    pub rwbf: bool,
    /// PLMR (bit 5): protected low-memory region.
    pub plmr: bool,
    /// PHMR (bit 6): protected high-memory region.
    pub phmr: bool,
    /// Caching mode: not-present entries may be cached (tagged with DID 0).
    pub cm: bool,
    /// Supported adjusted guest address widths: bit n = AGAW n (n+2 levels).
    #[bits(5)]
    pub sagaw: u8,
    #[bits(3)]
    __: u8,
    /// Maximum guest address width minus one.
    #[bits(6)]
    pub mgaw: u8,
    /// ZLR (bit 22): zero-length DMA reads to write-only pages allowed.
    pub zlr: bool,
    /// ISOCH (bit 23): isochronous remapping units (deprecated).
    pub isoch: bool,
    /// Fault-recording register offset, in 16-byte units.
    #[bits(10)]
    pub fro: u16,
    /// Second-level large page support: bit 0 = 2 MiB, bit 1 = 1 GiB.
    #[bits(4)]
    pub sllps: u8,
    #[bits(1)]
    __: u8,
    /// Page-selective invalidation.
    pub psi: bool,
    /// Number of fault-recording registers minus one.
    pub nfr: u8,
    /// Maximum address mask value for page-selective invalidation.
    #[bits(6)]
    pub mamv: u8,
    /// DWD (bit 54): write draining on IOTLB invalidation.
    pub dwd: bool,
    /// DRD (bit 55): read draining on IOTLB invalidation.
    pub drd: bool,
    /// FL1GP (bit 56): first-level 1 GiB pages.
    pub fl1gp: bool,
    #[bits(2)]
    __: u8,
    /// PI (bit 59): posted interrupts.
    pub pi: bool,
    /// FL5LP (bit 60): first-level 5-level paging.
    pub fl5lp: bool,
    /// ECMDS (bit 61): enhanced command interface (ECMD registers).
    pub ecmds: bool,
    /// ESIRTPS (bit 62): SIRTP itself invalidates the interrupt entry cache.
    pub esirtps: bool,
    /// SRTP itself invalidates all translation caches.
    pub esrtps: bool,
}

impl Cap {
    /// Number of domain IDs the unit supports.
    pub const fn domain_count(self) -> u32 {
        let nd = if self.nd() > 6 { 6 } else { self.nd() as u32 };
        1 << (4 + 2 * nd)
    }
    /// Number of fault recording registers.
    pub const fn fault_records(self) -> usize {
        self.nfr() as usize + 1
    }
    /// Whether AGAW `agaw` (levels = agaw + 2) is supported.
    pub const fn supports_agaw(self, agaw: u8) -> bool {
        agaw < 5 && self.sagaw() & (1 << agaw) != 0
    }
}

/// ECAP (11.4.3), read-only.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct Ecap {
    /// Page walks snoop the CPU caches.
    pub c: bool,
    /// Queued invalidation.
    pub qi: bool,
    /// Device-TLB.
    pub dt: bool,
    /// Interrupt remapping.
    pub ir: bool,
    /// EIM (bit 4): extended interrupt mode, 32-bit x2APIC destination IDs.
    pub eim: bool,
    #[bits(1)]
    __: u8,
    /// Pass-through translation type.
    pub pt: bool,
    /// Snoop control.
    pub sc: bool,
    /// IOTLB register offset, in 16-byte units.
    #[bits(10)]
    pub iro: u16,
    #[bits(2)]
    __: u8,
    /// MHMV (bits 23:20): largest handle mask for IEC invalidation.
    #[bits(4)]
    pub mhmv: u8,
    #[bits(1)]
    __: u8,
    /// MTS (bit 25): memory-type support.
    pub mts: bool,
    /// NEST (bit 26): nested translation.
    pub nest: bool,
    /// Bit 27: deferred invalidation (deprecated; Linux `ecap_dis`).
    pub dis: bool,
    #[bits(1)]
    __: u8,
    /// PRS (bit 29): page requests.
    pub prs: bool,
    /// ERS (bit 30): execute requests.
    pub ers: bool,
    /// SRS (bit 31): supervisor requests.
    pub srs: bool,
    #[bits(1)]
    __: u8,
    /// NWFS (bit 33): no-write flag.
    pub nwfs: bool,
    /// EAFS (bit 34): extended accessed flag.
    pub eafs: bool,
    /// PSS (bits 39:35): PASID size supported, PASIDs of PSS + 1 bits.
    #[bits(5)]
    pub pss: u8,
    /// PASID (bit 40): process address space IDs.
    pub pasid: bool,
    /// DIT (bit 41): device-TLB invalidation throttling.
    pub dit: bool,
    /// PDS (bit 42): page-request drain.
    pub pds: bool,
    /// Scalable-mode translation.
    pub smts: bool,
    /// VCS (bit 44): virtual command registers.
    pub vcs: bool,
    /// SLADS (bit 45): second-level accessed/dirty.
    pub slads: bool,
    /// Second-level translation (scalable mode).
    pub slts: bool,
    /// FLTS (bit 47): first-level translation (scalable mode).
    pub flts: bool,
    /// SMPWCS (bit 48): scalable-mode page walks may snoop (PASID entry PWSNP).
    pub smpwcs: bool,
    /// RPS (bit 49): RID_PASID field in scalable-mode context entries.
    pub rps: bool,
    #[bits(1)]
    __: u8,
    /// PMS (bit 51): performance monitoring.
    pub pms: bool,
    #[bits(12)]
    __: u16,
}

/// GCMD (11.4.4): software writes the whole state, persistent enables and at most one one-shot command.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Gcmd {
    #[bits(23)]
    __: u32,
    /// Compatibility-format interrupts.
    pub cfi: bool,
    /// Set interrupt remap table pointer (one-shot).
    pub sirtp: bool,
    /// Interrupt remapping enable.
    pub ire: bool,
    /// Queued invalidation enable.
    pub qie: bool,
    /// Write-buffer flush (one-shot).
    pub wbf: bool,
    /// EAFL (bit 28): enable advanced fault logging.
    pub eafl: bool,
    /// Set fault log (one-shot).
    pub sfl: bool,
    /// Set root table pointer (one-shot): latches RTADDR.
    pub srtp: bool,
    /// Translation enable.
    pub te: bool,
}

/// GSTS (11.4.5), read-only: the hardware's acknowledgement of GCMD.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Gsts {
    #[bits(23)]
    __: u32,
    /// CFIS (bit 23): compatibility-format interrupts pass.
    pub cfis: bool,
    /// IRTPS (bit 24): interrupt remapping table pointer latched.
    pub irtps: bool,
    /// IRES (bit 25): interrupt remapping enabled.
    pub ires: bool,
    /// QIES (bit 26): queued invalidation enabled.
    pub qies: bool,
    /// Reads 1 while a write-buffer flush is in progress.
    pub wbfs: bool,
    /// AFLS (bit 28): advanced fault logging enabled.
    pub afls: bool,
    /// FLS (bit 29): fault log pointer latched.
    pub fls: bool,
    /// Root table pointer latched.
    pub rtps: bool,
    /// Translation enabled.
    pub tes: bool,
}

impl Gsts {
    /// The persistent enables of this status, as a GCMD value to write back with one command added.
    pub const fn persistent_cmd(self) -> Gcmd {
        Gcmd::new()
            .with_te(self.tes())
            .with_qie(self.qies())
            .with_ire(self.ires())
            .with_cfi(self.cfis())
            .with_eafl(self.afls())
    }
}

/// RTADDR (11.4.6).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct RtAddr {
    #[bits(10)]
    __: u16,
    /// Scalable-mode root and context formats.
    pub smt: bool,
    /// Historic RTT (extended root table); reserved today.
    pub rtt: bool,
    /// Root table address, 4 KiB aligned.
    #[bits(52)]
    pub rta: u64,
}

impl RtAddr {
    /// Physical address of the root table (scalable-mode root table with SMT), 4 KiB aligned.
    pub const fn table(self) -> u64 {
        self.rta() << 12
    }
    /// The register for a root table at `pa` (bits 11:0 dropped), TTM legacy or scalable (`smt`).
    pub const fn from_table(pa: u64, smt: bool) -> Self {
        RtAddr::new().with_rta(pa >> 12).with_smt(smt)
    }
}

/// CCMD (11.4.7): register-based context-cache invalidation.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct Ccmd {
    /// DID (bits 15:0): domain for domain- and device-selective requests.
    pub did: u16,
    /// SID (bits 31:16): source ID for device-selective requests.
    pub sid: u16,
    /// FM (bits 33:32): function mask, low devfn bits ignored in SID.
    #[bits(2)]
    pub fm: u8,
    #[bits(25)]
    __: u32,
    /// Actual invalidation granularity (set by hardware).
    #[bits(2)]
    pub caig: u8,
    /// Requested granularity: 1 global, 2 domain, 3 device.
    #[bits(2)]
    pub cirg: u8,
    /// Invalidate context cache: software sets, hardware clears on completion.
    pub icc: bool,
}

/// IOTLB invalidate register (11.4.8.1), at `ECAP.IRO * 16 + 8`.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct IotlbReg {
    #[bits(32)]
    __: u32,
    /// DID (bits 47:32): domain for domain- and page-selective requests.
    pub did: u16,
    /// DW (bit 48): drain writes before completing.
    pub dw: bool,
    /// DR (bit 49): drain reads before completing.
    pub dr: bool,
    #[bits(7)]
    __: u8,
    /// Actual granularity (0 = the request failed).
    #[bits(2)]
    pub iaig: u8,
    #[bits(1)]
    __: u8,
    /// Requested granularity: 1 global, 2 domain, 3 page.
    #[bits(2)]
    pub iirg: u8,
    #[bits(1)]
    __: u8,
    /// Invalidate IOTLB: software sets, hardware clears on completion.
    pub ivt: bool,
}

/// IVA (11.4.8.2): the address for a page-selective IOTLB register invalidation.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct Iva {
    /// AM (bits 5:0): address mask, the request covers `2^AM` pages.
    #[bits(6)]
    pub am: u8,
    /// IH (bit 6): invalidation hint, leaf entries only.
    pub ih: bool,
    #[bits(5)]
    __: u8,
    /// ADDR (bits 63:12): page address, aligned to `2^AM` pages.
    #[bits(52)]
    pub addr: u64,
}

/// FSTS (11.4.9).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Fsts {
    /// Primary fault overflow (W1C).
    pub pfo: bool,
    /// Primary pending fault: some fault record has F set (read-only).
    pub ppf: bool,
    /// Advanced fault overflow (W1C).
    pub afo: bool,
    /// Advanced pending fault.
    pub apf: bool,
    /// Invalidation queue error (W1C).
    pub iqe: bool,
    /// Invalidation completion error (W1C).
    pub ice: bool,
    /// Invalidation time-out error (W1C).
    pub ite: bool,
    /// Page request overflow (W1C).
    pub pro: bool,
    /// Index of the first pending fault record.
    pub fri: u8,
    #[bits(16)]
    __: u16,
}

impl Fsts {
    /// The bits software clears by writing 1.
    pub const W1C: u32 = 0b1111_0101;
}

/// FECTL / IECTL (11.4.10, 11.4.20): the event interrupt mask and pending bits.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct EventCtl {
    #[bits(30)]
    __: u32,
    /// Interrupt pending.
    pub ip: bool,
    /// Interrupt mask.
    pub im: bool,
}

/// IQH / IQT (11.4.13, 11.4.14): a descriptor index in bits 18:4 (128-bit descriptors; 18:5 for 256-bit).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct IqPtr {
    #[bits(4)]
    __: u8,
    /// QH/QT (bits 18:4): offset in 16-byte units.
    #[bits(15)]
    pub qh: u16,
    #[bits(45)]
    __: u64,
}

impl IqPtr {
    /// The descriptor index for descriptors of `wide` (256-bit) or 128-bit size.
    pub const fn index(self, wide: bool) -> u16 {
        if wide {
            self.qh() >> 1
        } else {
            self.qh()
        }
    }
    /// The register for descriptor `index`, in 128-bit or `wide` (256-bit) descriptors.
    pub const fn from_index(index: u16, wide: bool) -> Self {
        IqPtr::new().with_qh(if wide { index << 1 } else { index })
    }
}

/// IQA (11.4.15).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct Iqa {
    /// Queue size: `2^QS` 4 KiB pages.
    #[bits(3)]
    pub qs: u8,
    #[bits(8)]
    __: u8,
    /// Descriptor width: 1 = 256-bit.
    pub dw: bool,
    /// IQA (bits 63:12): queue base address.
    #[bits(52)]
    pub iqa: u64,
}

impl Iqa {
    /// Physical address of the invalidation queue, 4 KiB aligned.
    pub const fn base(self) -> u64 {
        self.iqa() << 12
    }
    /// Number of descriptors in the queue.
    pub const fn entries(self) -> u32 {
        let bytes = 4096u32 << (self.qs() as u32);
        bytes / self.descriptor_size()
    }
    /// Bytes per descriptor: 32 with DW = 1, else 16.
    pub const fn descriptor_size(self) -> u32 {
        if self.dw() {
            32
        } else {
            16
        }
    }
}

/// ICS (11.4.16).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Ics {
    /// Invalidation wait descriptor complete (W1C).
    pub iwc: bool,
    #[bits(31)]
    __: u32,
}

/// IQER (11.4.17): the error that stopped the invalidation queue.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct Iqer {
    /// Invalidation queue error info.
    #[bits(4)]
    pub iqei: u8,
    #[bits(28)]
    __: u32,
    /// ITESID (bits 47:32): source ID of the device-TLB invalidation that timed out.
    pub itesid: u16,
    /// ICESID (bits 63:48): source ID of the device-TLB invalidation that completed in error.
    pub icesid: u16,
}

/// IQER.IQEI values (11.4.17; the numbering of Intel's register reference for IQER).
pub mod iqei {
    /// No detail (older hardware).
    pub const NOT_AVAILABLE: u8 = 0;
    /// Invalid tail pointer: IQT beyond the queue, or not aligned to a 256-bit descriptor.
    pub const INVALID_TAIL: u8 = 1;
    /// Fetching a descriptor from the queue failed.
    pub const FETCH_ERROR: u8 = 2;
    /// Invalid or unsupported descriptor type.
    pub const INVALID_TYPE: u8 = 3;
    /// A reserved field set in a descriptor of a valid type.
    pub const RESERVED_FIELD: u8 = 4;
    /// Invalid descriptor width in IQA (256-bit unsupported, or 128-bit in scalable mode).
    pub const INVALID_WIDTH: u8 = 5;
}

/// IRTA (11.4.18).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct Irta {
    /// Table size: `2^(S+1)` entries.
    #[bits(4)]
    pub s: u8,
    #[bits(7)]
    __: u8,
    /// Extended interrupt mode (x2APIC).
    pub eime: bool,
    /// IRTA (bits 63:12): interrupt remapping table address.
    #[bits(52)]
    pub irta: u64,
}

impl Irta {
    /// The interrupt-remapping table's physical address (4 KiB aligned).
    pub const fn table(self) -> u64 {
        self.irta() << 12
    }
    /// Number of IRTEs: `2^(S+1)`.
    pub const fn entries(self) -> u32 {
        2 << self.s()
    }
    /// A table at `pa` of `2^(s+1)` entries (Linux `iommu_set_irq_remapping`: `virt_to_phys(table) | mode | S`).
    pub const fn from_table(pa: u64, s: u8, eime: bool) -> Self {
        Irta::new().with_irta(pa >> 12).with_s(s & 0xf).with_eime(eime)
    }
}

/// PMEN (11.4.12).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Pmen {
    /// Protected region status.
    pub prs: bool,
    #[bits(30)]
    __: u32,
    /// Enable protected memory.
    pub epm: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_fields_at_spec_bits() {
        // ND=2, SAGAW=0b10 (4-level), MGAW=47, FRO=0x22, NFR=3, PSI, SLLPS 2M|1G, raw as the spec places them.
        let raw: u64 = 2 | 0b10 << 8 | 47 << 16 | 0x22 << 24 | 0b11 << 34 | 1 << 39 | 3 << 40;
        let c = Cap::from_bits(raw);
        assert_eq!(c.nd(), 2);
        assert_eq!(c.sagaw(), 0b10);
        assert!(c.supports_agaw(1) && !c.supports_agaw(2));
        assert_eq!(c.mgaw(), 47);
        assert_eq!(c.fro(), 0x22);
        assert_eq!(c.sllps(), 0b11);
        assert!(c.psi());
        assert_eq!(c.fault_records(), 4);
        assert_eq!(c.into_bits(), raw);
        assert_eq!(Cap::new().with_fro(0x22).into_bits() >> 24 & 0x3ff, 0x22);
        assert_eq!(Cap::new().with_nfr(7).into_bits(), 7 << 40);
        assert_eq!(Cap::new().with_sllps(0b11).into_bits(), 0b11 << 34);
        assert_eq!(Cap::new().with_psi(true).into_bits(), 1 << 39);
        assert_eq!(Cap::new().with_cm(true).into_bits(), 1 << 7);
        assert_eq!(Cap::new().with_esrtps(true).into_bits(), 1 << 63);
        assert_eq!(Cap::new().with_nd(6).domain_count(), 65536);
        assert_eq!(Cap::new().with_nd(2).domain_count(), 256);
        assert_eq!(Cap::new().with_nd(7).domain_count(), 65536, "ND 7 is reserved; clamp");
    }

    #[test]
    fn ecap_fields_at_spec_bits() {
        assert_eq!(Ecap::new().with_qi(true).into_bits(), 1 << 1);
        assert_eq!(Ecap::new().with_pt(true).into_bits(), 1 << 6);
        assert_eq!(Ecap::new().with_iro(0xf).into_bits(), 0xf << 8);
        assert_eq!(Ecap::new().with_smts(true).into_bits(), 1 << 43);
        assert_eq!(Ecap::new().with_slts(true).into_bits(), 1 << 46);
        assert_eq!(Ecap::new().with_pss(19).into_bits(), 19 << 35);
    }

    #[test]
    fn gcmd_gsts_share_bit_positions() {
        let pairs: [(Gcmd, Gsts, u32); 9] = [
            (Gcmd::new().with_te(true), Gsts::new().with_tes(true), 31),
            (Gcmd::new().with_srtp(true), Gsts::new().with_rtps(true), 30),
            (Gcmd::new().with_sfl(true), Gsts::new().with_fls(true), 29),
            (Gcmd::new().with_eafl(true), Gsts::new().with_afls(true), 28),
            (Gcmd::new().with_wbf(true), Gsts::new().with_wbfs(true), 27),
            (Gcmd::new().with_qie(true), Gsts::new().with_qies(true), 26),
            (Gcmd::new().with_ire(true), Gsts::new().with_ires(true), 25),
            (Gcmd::new().with_sirtp(true), Gsts::new().with_irtps(true), 24),
            (Gcmd::new().with_cfi(true), Gsts::new().with_cfis(true), 23),
        ];
        for (c, s, bit) in pairs {
            assert_eq!(c.into_bits(), 1 << bit);
            assert_eq!(s.into_bits(), 1 << bit);
        }
        let st = Gsts::from_bits(0xffff_ffff);
        assert_eq!(st.persistent_cmd().into_bits(), (1 << 31) | (1 << 28) | (1 << 26) | (1 << 25) | (1 << 23));
    }

    #[test]
    fn rtaddr_smt_and_address() {
        let r = RtAddr::from_bits(0x1234_5000 | 1 << 10);
        assert!(r.smt());
        assert_eq!(r.table(), 0x1234_5000);
        assert_eq!(RtAddr::from_table(0xabc000, false).into_bits(), 0xabc000);
        // Low reserved bits survive a round trip.
        assert_eq!(RtAddr::from_bits(0x1234_5001).into_bits(), 0x1234_5001);
    }

    #[test]
    fn ccmd_and_iotlb_fields() {
        let c = Ccmd::new().with_icc(true).with_cirg(3).with_sid(0x0108).with_did(5).with_fm(3);
        assert_eq!(c.into_bits(), 1 << 63 | 3 << 61 | 3 << 32 | 0x0108 << 16 | 5);
        assert_eq!(Ccmd::new().with_caig(2).into_bits(), 2 << 59);
        let t = IotlbReg::new().with_ivt(true).with_iirg(2).with_did(9).with_dr(true).with_dw(true);
        assert_eq!(t.into_bits(), 1 << 63 | 2 << 60 | 1 << 49 | 1 << 48 | 9 << 32);
        assert_eq!(IotlbReg::new().with_iaig(1).into_bits(), 1 << 57);
        assert_eq!(Iva::new().with_addr(0x1234).with_am(3).with_ih(true).into_bits(), 0x0123_4000 | 1 << 6 | 3);
    }

    #[test]
    fn fsts_w1c_mask_names_the_w1c_bits() {
        let w1c = Fsts::new().with_pfo(true).with_afo(true).with_iqe(true).with_ice(true).with_ite(true).with_pro(true);
        assert_eq!(w1c.into_bits(), Fsts::W1C);
        assert_eq!(Fsts::new().with_fri(0xab).into_bits(), 0xab << 8);
    }

    #[test]
    fn iq_registers() {
        let a = Iqa::new().with_iqa(0x8_0000 >> 12).with_dw(true).with_qs(1);
        assert_eq!(a.into_bits(), 0x8_0000 | 1 << 11 | 1);
        assert_eq!(a.entries(), 256);
        assert_eq!(Iqa::new().entries(), 256);
        assert_eq!(Iqa::new().with_qs(7).entries(), 32768, "2^(QS+8) 128-bit descriptors");
        assert_eq!(IqPtr::from_index(5, false).into_bits(), 5 << 4);
        assert_eq!(IqPtr::from_index(5, true).into_bits(), 5 << 5);
        assert_eq!(IqPtr::from_bits(5 << 5).index(true), 5);
        let e = Iqer::new().with_iqei(iqei::INVALID_TAIL).with_itesid(0x10).with_icesid(0x20);
        assert_eq!(e.into_bits(), 1 | 0x10 << 32 | 0x20 << 48);
        assert_eq!(Irta::new().with_s(0xf).with_eime(true).with_irta(0x7).into_bits(), 0x7000 | 1 << 11 | 0xf);
        let irta = Irta::from_table(0x7000, 0xf, true);
        assert_eq!((irta.table(), irta.entries(), irta.eime()), (0x7000, 65536, true));
        assert_eq!(Irta::from_table(0, 0, false).entries(), 2, "S = 0: two entries");
        assert_eq!(EventCtl::new().with_im(true).with_ip(true).into_bits(), 0xc000_0000);
        assert_eq!(Pmen::new().with_epm(true).with_prs(true).into_bits(), 0x8000_0001);
    }

    #[test]
    fn offsets_from_cap_and_ecap() {
        assert_eq!(off::iva(0xf), 0xf0);
        assert_eq!(off::iotlb(0xf), 0xf8);
        assert_eq!(off::frcd(0x22, 0), 0x220);
        assert_eq!(off::frcd(0x22, 3), 0x250);
    }

    #[test]
    fn every_register_round_trips_any_raw_value() {
        for raw in [0u64, u64::MAX, 0x5555_5555_5555_5555, 0xdead_beef_0bad_f00d] {
            assert_eq!(Cap::from_bits(raw).into_bits(), raw);
            assert_eq!(Ecap::from_bits(raw).into_bits(), raw);
            assert_eq!(RtAddr::from_bits(raw).into_bits(), raw);
            assert_eq!(Ccmd::from_bits(raw).into_bits(), raw);
            assert_eq!(IotlbReg::from_bits(raw).into_bits(), raw);
            assert_eq!(Iqa::from_bits(raw).into_bits(), raw);
            assert_eq!(Iqer::from_bits(raw).into_bits(), raw);
            assert_eq!(Irta::from_bits(raw).into_bits(), raw);
            let r32 = raw as u32;
            assert_eq!(Gcmd::from_bits(r32).into_bits(), r32);
            assert_eq!(Gsts::from_bits(r32).into_bits(), r32);
            assert_eq!(Fsts::from_bits(r32).into_bits(), r32);
        }
    }
}
