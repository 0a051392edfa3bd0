//! Queued-invalidation descriptors (spec 6.5.2). Each is 128 bits (qw0 low, qw1 high); in 256-bit mode
//! (IQA.DW) qw2 and qw3 follow and are reserved for these types.

use bitfield_struct::bitfield;

/// Descriptor type, qw0 bits 3:0 (bits 11:9 extend it and must be zero for these types).
#[open_enum::open_enum]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum DescType {
    /// Context-cache invalidate (`QI_CC_TYPE`).
    ContextCache = 1,
    /// IOTLB invalidate (`QI_IOTLB_TYPE`).
    Iotlb = 2,
    /// Device-TLB invalidate, an ATS invalidation to the endpoint (`QI_DIOTLB_TYPE`).
    DevTlb = 3,
    /// Interrupt entry cache invalidate (`QI_IEC_TYPE`).
    InterruptEntryCache = 4,
    /// Invalidation wait: completes once earlier descriptors have (`QI_IWD_TYPE`).
    Wait = 5,
    /// PASID-based IOTLB invalidate, scalable mode (`QI_EIOTLB_TYPE`).
    PasidIotlb = 6,
    /// PASID-cache invalidate, scalable mode (`QI_PC_TYPE`).
    PasidCache = 7,
    /// PASID-based device-TLB invalidate (`QI_DEIOTLB_TYPE`).
    PasidDevTlb = 8,
}

crate::open_enum_bits!(DescType, u8, 4);

/// The type of a raw descriptor.
pub const fn desc_type(qw0: u64) -> DescType {
    DescType::from_bits(qw0 as u8)
}

/// Invalidation granularity of context-cache and IOTLB descriptors.
pub mod granularity {
    /// Every entry.
    pub const GLOBAL: u8 = 1;
    /// Every entry of one domain ID.
    pub const DOMAIN: u8 = 2;
    /// Context cache: device-selective. IOTLB: page-selective within a domain.
    pub const DEVICE_OR_PAGE: u8 = 3;
}

/// Context-cache invalidate descriptor (6.5.2.2).
#[bitfield(u128)]
#[derive(PartialEq, Eq)]
pub struct ContextCacheInv {
    /// Type (bits 3:0).
    #[bits(4)]
    pub ty: DescType,
    /// G (bits 5:4): granularity, see [`granularity`].
    #[bits(2)]
    pub g: u8,
    #[bits(10)]
    __: u16,
    /// DID (bits 31:16): domain of a domain- or device-selective request.
    pub did: u16,
    /// SID (bits 47:32): source ID of a device-selective request.
    pub sid: u16,
    /// Function mask: ignore the low FM bits of the devfn.
    #[bits(2)]
    pub fm: u8,
    #[bits(78)]
    __: u128,
}

/// IOTLB invalidate descriptor (6.5.2.3).
#[bitfield(u128)]
#[derive(PartialEq, Eq)]
pub struct IotlbInv {
    /// Type (bits 3:0).
    #[bits(4)]
    pub ty: DescType,
    /// G (bits 5:4): granularity, see [`granularity`].
    #[bits(2)]
    pub g: u8,
    /// Drain writes.
    pub dw: bool,
    /// Drain reads.
    pub dr: bool,
    #[bits(8)]
    __: u8,
    /// DID (bits 31:16): domain of a domain- or page-selective request.
    pub did: u16,
    #[bits(32)]
    __: u32,
    /// Address mask: invalidate `2^AM` pages.
    #[bits(6)]
    pub am: u8,
    /// Invalidation hint: leaf entries only.
    pub ih: bool,
    #[bits(5)]
    __: u8,
    /// ADDR (bits 127:76): page address, aligned to `2^AM` pages.
    #[bits(52)]
    pub addr: u64,
}

/// Device-TLB invalidate descriptor (6.5.2.5).
#[bitfield(u128)]
#[derive(PartialEq, Eq)]
pub struct DevTlbInv {
    /// Type (bits 3:0).
    #[bits(4)]
    pub ty: DescType,
    #[bits(8)]
    __: u8,
    /// PFSID bits 3:0 (bits 15:12): the physical function's source ID, for SR-IOV VFs.
    #[bits(4)]
    pub pfsid_lo: u8,
    /// MIP/QDEP (bits 20:16): the device's ATS invalidate queue depth.
    #[bits(5)]
    pub qdep: u8,
    #[bits(11)]
    __: u16,
    /// SID (bits 47:32): source ID of the endpoint.
    pub sid: u16,
    #[bits(4)]
    __: u8,
    /// PFSID bits 15:4 (bits 63:52).
    #[bits(12)]
    pub pfsid_hi: u16,
    /// Size: the range is encoded in the lowest clear address bit.
    pub s: bool,
    #[bits(11)]
    __: u16,
    /// ADDR (bits 127:76): the untranslated address, bits 63:12.
    #[bits(52)]
    pub addr: u64,
}

/// Interrupt entry cache invalidate descriptor (6.5.2.7).
#[bitfield(u128)]
#[derive(PartialEq, Eq)]
pub struct IecInv {
    /// Type (bits 3:0).
    #[bits(4)]
    pub ty: DescType,
    /// 0 global, 1 index-selective.
    pub g: bool,
    #[bits(22)]
    __: u32,
    /// IM (bits 31:27): index mask, `2^IM` entries from IIDX.
    #[bits(5)]
    pub im: u8,
    /// IIDX (bits 47:32): interrupt index of an index-selective request.
    pub iidx: u16,
    #[bits(80)]
    __: u128,
}

/// Invalidation wait descriptor (6.5.2.8).
#[bitfield(u128)]
#[derive(PartialEq, Eq)]
pub struct WaitInv {
    /// Type (bits 3:0).
    #[bits(4)]
    pub ty: DescType,
    /// Interrupt flag: set ICS.IWC on completion.
    pub iflag: bool,
    /// Status write: store `status_data` at `status_addr` on completion.
    pub sw: bool,
    /// Fence: later descriptors wait for this one.
    pub fence: bool,
    /// Page-request drain.
    pub pd: bool,
    #[bits(24)]
    __: u32,
    /// Status Data (bits 63:32), written with SW = 1.
    pub status_data: u32,
    #[bits(2)]
    __: u8,
    /// Status address bits 63:2.
    #[bits(62)]
    pub status_addr_hi: u64,
}

impl WaitInv {
    /// Status Address, dword aligned: where SW = 1 writes the status data.
    pub const fn status_addr(self) -> u64 {
        self.status_addr_hi() << 2
    }
    /// A wait descriptor that writes `data` to `addr` (dword aligned), as Linux's `qi_submit_sync` builds.
    pub const fn status_write(addr: u64, data: u32) -> Self {
        WaitInv::new()
            .with_ty(DescType::Wait)
            .with_sw(true)
            .with_fence(true)
            .with_status_data(data)
            .with_status_addr_hi(addr >> 2)
    }
}

/// Granularity of PASID-cache invalidate descriptors (G, bits 5:4).
pub mod pasid_cache_granularity {
    /// Every PASID entry cached with this DID.
    pub const DOMAIN: u8 = 0;
    /// The entry of one PASID with this DID.
    pub const PASID: u8 = 1;
    /// Every PASID entry.
    pub const GLOBAL: u8 = 3;
}

/// Granularity of PASID-based IOTLB invalidate descriptors (G, bits 5:4; 0 and 1 are reserved).
pub mod pasid_iotlb_granularity {
    /// Every translation of one PASID with this DID (and the paging-structure caches of both).
    pub const PASID: u8 = 2;
    /// `2^AM` pages of one PASID with this DID.
    pub const PAGES: u8 = 3;
}

/// PASID-cache invalidate descriptor (6.5.2.4).
#[bitfield(u128)]
#[derive(PartialEq, Eq)]
pub struct PasidCacheInv {
    /// Type (bits 3:0).
    #[bits(4)]
    pub ty: DescType,
    /// 0 all PASIDs of a DID, 1 one PASID, 3 global.
    #[bits(2)]
    pub g: u8,
    #[bits(10)]
    __: u16,
    /// DID (bits 31:16).
    pub did: u16,
    /// PASID (bits 51:32).
    #[bits(20)]
    pub pasid: u32,
    #[bits(76)]
    __: u128,
}

/// PASID-based IOTLB invalidate descriptor (6.5.2.6).
#[bitfield(u128)]
#[derive(PartialEq, Eq)]
pub struct PasidIotlbInv {
    /// Type (bits 3:0).
    #[bits(4)]
    pub ty: DescType,
    /// G (bits 5:4): see [`pasid_iotlb_granularity`].
    #[bits(2)]
    pub g: u8,
    #[bits(10)]
    __: u16,
    /// DID (bits 31:16).
    pub did: u16,
    /// PASID (bits 51:32).
    #[bits(20)]
    pub pasid: u32,
    #[bits(12)]
    __: u16,
    /// AM (bits 69:64): address mask, `2^AM` pages.
    #[bits(6)]
    pub am: u8,
    /// IH (bit 70): invalidation hint, leaf entries only.
    pub ih: bool,
    #[bits(5)]
    __: u8,
    /// ADDR (bits 127:76): page address, aligned to `2^AM` pages.
    #[bits(52)]
    pub addr: u64,
}

impl PasidCacheInv {
    /// Every cached PASID entry (Linux `qi_flush_pasid_cache(iommu, 0, QI_PC_GLOBAL, 0)`).
    pub const fn global() -> Self {
        PasidCacheInv::new().with_ty(DescType::PasidCache).with_g(pasid_cache_granularity::GLOBAL)
    }
    /// Every PASID entry cached with `did`.
    pub const fn domain(did: u16) -> Self {
        PasidCacheInv::new().with_ty(DescType::PasidCache).with_g(pasid_cache_granularity::DOMAIN).with_did(did)
    }
    /// The entry of `pasid` cached with `did` (Linux `pasid_cache_invalidation_with_pasid`).
    pub const fn of_pasid(did: u16, pasid: u32) -> Self {
        PasidCacheInv::new()
            .with_ty(DescType::PasidCache)
            .with_g(pasid_cache_granularity::PASID)
            .with_did(did)
            .with_pasid(pasid)
    }
}

impl PasidIotlbInv {
    /// Every translation of `pasid` in `did` (Linux `qi_flush_piotlb` with `npages == -1`).
    pub const fn of_pasid(did: u16, pasid: u32) -> Self {
        PasidIotlbInv::new()
            .with_ty(DescType::PasidIotlb)
            .with_g(pasid_iotlb_granularity::PASID)
            .with_did(did)
            .with_pasid(pasid)
    }
    /// `2^am` pages from `addr` (aligned to that size) of `pasid` in `did`.
    pub const fn pages(did: u16, pasid: u32, addr: u64, am: u8, ih: bool) -> Self {
        PasidIotlbInv::new()
            .with_ty(DescType::PasidIotlb)
            .with_g(pasid_iotlb_granularity::PAGES)
            .with_did(did)
            .with_pasid(pasid)
            .with_am(am)
            .with_ih(ih)
            .with_addr(addr >> 12)
    }
}

impl IecInv {
    /// Every cached interrupt entry (Linux `qi_global_iec`).
    pub const fn global() -> Self {
        IecInv::new().with_ty(DescType::InterruptEntryCache)
    }
    /// The `2^im` entries from `index` (aligned to that count), as Linux's `qi_flush_iec` sends after an IRTE
    /// changes.
    pub const fn index(index: u16, im: u8) -> Self {
        IecInv::new().with_ty(DescType::InterruptEntryCache).with_g(true).with_im(im).with_iidx(index)
    }
    /// Whether this descriptor invalidates the cached entry `idx`.
    pub const fn covers(self, idx: u32) -> bool {
        if !self.g() {
            return true;
        }
        let span = 1u64 << (self.im() as u32);
        let base = self.iidx() as u64 & !(span - 1);
        (idx as u64) >= base && (idx as u64) < base + span
    }
}

impl ContextCacheInv {
    /// Global context-cache invalidation.
    pub const fn global() -> Self {
        ContextCacheInv::new().with_ty(DescType::ContextCache).with_g(granularity::GLOBAL)
    }
    /// Domain-selective: every context entry cached under `did`.
    pub const fn domain(did: u16) -> Self {
        ContextCacheInv::new().with_ty(DescType::ContextCache).with_g(granularity::DOMAIN).with_did(did)
    }
    /// Device-selective: the entry of source ID `sid` in domain `did` (FM = 0).
    pub const fn device(did: u16, sid: u16) -> Self {
        ContextCacheInv::new()
            .with_ty(DescType::ContextCache)
            .with_g(granularity::DEVICE_OR_PAGE)
            .with_did(did)
            .with_sid(sid)
    }
}

impl IotlbInv {
    /// Global IOTLB invalidation, draining reads and writes (DR = DW = 1, as Linux sets them).
    pub const fn global() -> Self {
        IotlbInv::new().with_ty(DescType::Iotlb).with_g(granularity::GLOBAL).with_dr(true).with_dw(true)
    }
    /// Domain-selective IOTLB invalidation of `did`, draining reads and writes.
    pub const fn domain(did: u16) -> Self {
        IotlbInv::new().with_ty(DescType::Iotlb).with_g(granularity::DOMAIN).with_did(did).with_dr(true).with_dw(true)
    }
    /// `2^am` pages from `addr` (aligned to that size) in domain `did`.
    pub const fn pages(did: u16, addr: u64, am: u8) -> Self {
        IotlbInv::new()
            .with_ty(DescType::Iotlb)
            .with_g(granularity::DEVICE_OR_PAGE)
            .with_did(did)
            .with_dr(true)
            .with_dw(true)
            .with_am(am)
            .with_addr(addr >> 12)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_cache_inv_fields() {
        let d = ContextCacheInv::device(0x12, 0x0108).with_fm(3);
        assert_eq!(d.into_bits(), 1 | 3 << 4 | 0x12 << 16 | 0x0108 << 32 | 3 << 48);
        assert_eq!(ContextCacheInv::global().into_bits(), 0x11);
    }

    #[test]
    fn iotlb_inv_fields() {
        let d = IotlbInv::pages(5, 0x1234_5000, 2).with_ih(true);
        let q = super::super::to_qwords(d.into_bits());
        assert_eq!(q[0], 2 | 3 << 4 | 1 << 6 | 1 << 7 | 5 << 16);
        assert_eq!(q[1], 0x1234_5000 | 1 << 6 | 2);
        assert_eq!(desc_type(q[0]), DescType::Iotlb);
    }

    #[test]
    fn wait_descriptor_fields() {
        let w = WaitInv::status_write(0xfee0_1004, 2).with_iflag(true);
        let q = super::super::to_qwords(w.into_bits());
        assert_eq!(q[0], 5 | 1 << 4 | 1 << 5 | 1 << 6 | 2 << 32);
        assert_eq!(q[1], 0xfee0_1004);
        assert_eq!(WaitInv::from_bits(w.into_bits()).status_addr(), 0xfee0_1004);
    }

    #[test]
    fn pasid_descriptors_at_spec_bits() {
        // PASID-based IOTLB (type 6): G bits 5:4, DID 31:16, PASID 51:32; qw1 AM 5:0, IH 6, ADDR 63:12.
        let p = PasidIotlbInv::pages(0x1234, 0xabcde, 0x7654_3000, 3, true);
        assert_eq!(
            super::super::to_qwords(p.into_bits()),
            [6 | 3 << 4 | 0x1234 << 16 | 0xabcde << 32, 0x7654_3000 | 1 << 6 | 3]
        );
        assert_eq!(PasidIotlbInv::of_pasid(7, 0).into_bits(), 6 | 2 << 4 | 7 << 16);
        // PASID cache (type 7): G 0 domain, 1 PASID, 3 global.
        assert_eq!(PasidCacheInv::of_pasid(9, 5).into_bits(), 7 | 1 << 4 | 9 << 16 | 5 << 32);
        assert_eq!(PasidCacheInv::domain(9).into_bits(), 7 | 9 << 16);
        assert_eq!(PasidCacheInv::global().into_bits(), 7 | 3 << 4);
    }

    #[test]
    fn pasid_descriptors_round_trip() {
        let p = PasidIotlbInv::pages(0xfffe, 0xf_ffff, 0xffff_ffff_f000, 0x3f, true);
        let d = PasidIotlbInv::from_bits(p.into_bits());
        assert_eq!(
            (d.ty(), d.g(), d.did(), d.pasid(), d.am(), d.ih(), d.addr() << 12),
            (DescType::PasidIotlb, 3, 0xfffe, 0xf_ffff, 0x3f, true, 0xffff_ffff_f000)
        );
        let rebuilt = PasidIotlbInv::pages(d.did(), d.pasid(), d.addr() << 12, d.am(), d.ih());
        assert_eq!(rebuilt, p);
        let c = PasidCacheInv::from_bits(PasidCacheInv::of_pasid(3, 0x8_0001).into_bits());
        assert_eq!((c.ty(), c.g(), c.did(), c.pasid()), (DescType::PasidCache, 1, 3, 0x8_0001));
        assert_eq!(desc_type(super::super::to_qwords(p.into_bits())[0]), DescType::PasidIotlb);
    }

    #[test]
    fn other_descriptors() {
        let d = DevTlbInv::new()
            .with_ty(DescType::DevTlb)
            .with_sid(0x300)
            .with_qdep(4)
            .with_pfsid_lo(0xa)
            .with_pfsid_hi(0xbc)
            .with_s(true)
            .with_addr(0x77);
        let q = super::super::to_qwords(d.into_bits());
        assert_eq!(q[0], 3 | 0xa << 12 | 4 << 16 | 0x300 << 32 | 0xbc << 52);
        assert_eq!(q[1], 1 | 0x77000);
        let p = PasidCacheInv::new().with_ty(DescType::PasidCache).with_g(3).with_did(9).with_pasid(0xfffff);
        assert_eq!(p.into_bits(), 7 | 3 << 4 | 9 << 16 | 0xfffff << 32);
        let i = IecInv::new().with_ty(DescType::InterruptEntryCache).with_g(true).with_im(3).with_iidx(0x40);
        assert_eq!(i.into_bits(), 4 | 1 << 4 | 3 << 27 | 0x40 << 32);
        assert_eq!(IecInv::index(0x40, 3), i);
        assert_eq!(IecInv::global().into_bits(), 4);
        assert!(IecInv::global().covers(0xffff));
        assert!(i.covers(0x47) && !i.covers(0x48) && !i.covers(0x3f));
        assert!(IecInv::index(0x43, 2).covers(0x40), "IIDX is aligned down to 2^IM");
        let pi = PasidIotlbInv::new()
            .with_ty(DescType::PasidIotlb)
            .with_g(2)
            .with_did(1)
            .with_pasid(5)
            .with_am(1)
            .with_addr(3);
        assert_eq!(super::super::to_qwords(pi.into_bits()), [6 | 2 << 4 | 1 << 16 | 5 << 32, 0x3001]);
        assert_eq!(desc_type(0xf), DescType(0xf));
    }
}
