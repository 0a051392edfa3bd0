//! Invalidation: the register interface (CCMD, IOTLB register; spec 6.5.1, 10.4.7–10.4.8) and the
//! invalidation queue (spec 6.5.2).
//!
//! The queue is a ring of 128- or 256-bit descriptors in memory, latched from IQA when GCMD.QIE enabled
//! it. Writing IQT makes the unit fetch and execute descriptors from IQH up to IQT right then, at most
//! one queue's worth per write. A descriptor of unknown type or with a reserved bit set stops the queue
//! with FSTS.IQE: IQH keeps pointing at it and nothing more is fetched until software clears IQE and
//! writes IQT again (spec 6.5.2.10; Linux `qi_check_fault`).

use iommu_platform::PhysMem;
use iommu_spec::vtd::{
    desc_type, granularity, iqei, off, Ccmd, ContextCacheInv, DescType, DevTlbInv, Fsts, IecInv, IotlbInv, IotlbReg,
    IqPtr, Iva, PasidCacheInv, PasidIotlbInv, WaitInv,
};

use super::VtdModel;
use crate::mem::PhysMemory;

/// Every bit a descriptor layout defines; anything else in the low 128 bits is reserved.
const ALL_TYPE: DescType = DescType(0xf);
const CC_FIELDS: u128 =
    ContextCacheInv::new().with_ty(ALL_TYPE).with_g(3).with_did(u16::MAX).with_sid(u16::MAX).with_fm(3).into_bits();
const IOTLB_FIELDS: u128 = IotlbInv::new()
    .with_ty(ALL_TYPE)
    .with_g(3)
    .with_dw(true)
    .with_dr(true)
    .with_did(u16::MAX)
    .with_am(0x3f)
    .with_ih(true)
    .with_addr(u64::MAX >> 12)
    .into_bits();
const DEVTLB_FIELDS: u128 = DevTlbInv::new()
    .with_ty(ALL_TYPE)
    .with_pfsid_lo(0xf)
    .with_qdep(0x1f)
    .with_sid(u16::MAX)
    .with_pfsid_hi(0xfff)
    .with_s(true)
    .with_addr(u64::MAX >> 12)
    .into_bits();
const IEC_FIELDS: u128 = IecInv::new().with_ty(ALL_TYPE).with_g(true).with_im(0x1f).with_iidx(u16::MAX).into_bits();
const WAIT_FIELDS: u128 = WaitInv::new()
    .with_ty(ALL_TYPE)
    .with_iflag(true)
    .with_sw(true)
    .with_fence(true)
    .with_pd(true)
    .with_status_data(u32::MAX)
    .with_status_addr_hi(u64::MAX >> 2)
    .into_bits();
const PC_FIELDS: u128 =
    PasidCacheInv::new().with_ty(ALL_TYPE).with_g(3).with_did(u16::MAX).with_pasid(0xf_ffff).into_bits();
const PIOTLB_FIELDS: u128 = PasidIotlbInv::new()
    .with_ty(ALL_TYPE)
    .with_g(3)
    .with_did(u16::MAX)
    .with_pasid(0xf_ffff)
    .with_am(0x3f)
    .with_ih(true)
    .with_addr(u64::MAX >> 12)
    .into_bits();

/// One fetched descriptor: the 128 bits every type uses and, in 256-bit mode, the upper half.
#[derive(Clone, Copy, Debug)]
struct Desc {
    lo: u128,
    hi: u128,
}

type Iqei = u8;

fn check(lo: u128, fields: u128) -> Result<(), Iqei> {
    if lo & !fields != 0 {
        Err(iqei::RESERVED_FIELD)
    } else {
        Ok(())
    }
}

impl VtdModel {
    /// After a CCMD write with ICC set (spec 10.4.7): invalidate, report the granularity done in CAIG,
    /// clear ICC. While queued invalidation is on, the register interface is not to be used; like QEMU
    /// the model then ignores the request, leaving ICC set.
    pub(super) fn write_ccmd(&mut self) {
        let c = Ccmd::from_bits(self.regs.get64(off::CCMD));
        if !c.icc() || self.gsts().qies() {
            return;
        }
        let done = match c.cirg() {
            granularity::GLOBAL => {
                self.caches.context_global();
                granularity::GLOBAL
            }
            granularity::DOMAIN => {
                self.caches.context_domain(c.did());
                granularity::DOMAIN
            }
            granularity::DEVICE_OR_PAGE => {
                self.caches.context_device(c.sid(), c.fm());
                granularity::DEVICE_OR_PAGE
            }
            _ => 0,
        };
        if done != 0 {
            self.counters.context_invalidations += 1;
        }
        self.regs.set64(off::CCMD, c.with_icc(false).with_caig(done).into_bits());
    }

    /// After a write to the IOTLB register with IVT set (spec 10.4.8): invalidate (page-selective uses
    /// IVA), report the granularity done in IAIG (0 = failed), clear IVT. Ignored while QI is on.
    pub(super) fn write_iotlb_reg(&mut self) {
        let reg_off = off::iotlb(self.cfg.ecap.iro());
        let t = IotlbReg::from_bits(self.regs.get64(reg_off));
        if !t.ivt() || self.gsts().qies() {
            return;
        }
        let iva = Iva::from_bits(self.regs.get64(off::iva(self.cfg.ecap.iro())));
        let done = self.iotlb_invalidate(t.iirg(), t.did(), iva.addr() << 12, iva.am(), iva.ih());
        if done != 0 {
            self.counters.iotlb_invalidations += 1;
        }
        self.regs.set64(reg_off, t.with_ivt(false).with_iaig(done).into_bits());
    }

    /// IOTLB invalidation at granularity `g`; returns the granularity done, 0 if refused. Without
    /// CAP.PSI a page request is done domain-wide (spec 6.5.1.2); a mask beyond CAP.MAMV is refused. `ih`: the
    /// invalidation hint of a page-selective request (only leaves changed).
    fn iotlb_invalidate(&mut self, g: u8, did: u16, addr: u64, am: u8, ih: bool) -> u8 {
        match g {
            granularity::GLOBAL => {
                self.caches.iotlb_global();
                granularity::GLOBAL
            }
            // Not PASID-based: first-level translations survive (see `cache`).
            granularity::DOMAIN => {
                self.caches.iotlb_domain_sl(did);
                granularity::DOMAIN
            }
            granularity::DEVICE_OR_PAGE if !self.cfg.cap.psi() => {
                self.caches.iotlb_domain_sl(did);
                granularity::DOMAIN
            }
            granularity::DEVICE_OR_PAGE if am <= self.cfg.cap.mamv() => {
                self.caches.iotlb_pages_sl(did, addr, am, ih);
                granularity::DEVICE_OR_PAGE
            }
            _ => 0,
        }
    }

    /// After an IQT write: run the queue if it is enabled.
    pub(super) fn write_iqt(&mut self, mem: &mut PhysMemory) {
        if self.iq.is_some() {
            self.process_queue(mem);
        }
    }

    /// Fetch and execute descriptors from IQH to IQT (spec 6.5.2; QEMU `vtd_fetch_inv_desc`).
    pub(super) fn process_queue(&mut self, mem: &mut PhysMemory) {
        let Some(iq) = self.iq else {
            return;
        };
        if Fsts::from_bits(self.regs.get32(off::FSTS)).iqe() {
            return;
        }
        let wide = iq.iqa.dw();
        // 256-bit descriptors need scalable-mode support; in scalable mode 128-bit descriptors are
        // invalid (spec 6.5.2).
        if (wide && !self.cfg.ecap.smts()) || (!wide && self.root.smt()) {
            return self.raise_iqe(iqei::INVALID_WIDTH);
        }
        let tail = IqPtr::from_bits(self.regs.get64(off::IQT));
        let entries = iq.iqa.entries();
        if (wide && tail.qh() & 1 != 0) || tail.index(wide) as u32 >= entries {
            return self.raise_iqe(iqei::INVALID_TAIL);
        }
        let tail = tail.index(wide) as u32;
        let size = iq.iqa.descriptor_size() as u64;
        let mut head = self.iqh_index(wide) as u32 % entries;
        // At most one lap: a full queue's worth per IQT write.
        for _ in 0..entries {
            if head == tail {
                break;
            }
            let pa = iq.iqa.base().wrapping_add(head as u64 * size);
            let mut raw = [0u8; 32];
            if mem.read(pa, &mut raw[..size as usize]).is_err() {
                return self.raise_iqe(iqei::FETCH_ERROR);
            }
            let desc = Desc {
                lo: u128::from_le_bytes(raw[..16].try_into().unwrap_or_default()),
                hi: u128::from_le_bytes(raw[16..].try_into().unwrap_or_default()),
            };
            if let Err(e) = self.execute(mem, desc) {
                return self.raise_iqe(e);
            }
            self.counters.qi_descriptors += 1;
            head = (head + 1) % entries;
            self.regs.set64(off::IQH, IqPtr::from_index(head as u16, wide).into_bits());
        }
    }

    /// Validate and execute one descriptor (spec 6.5.2.1–6.5.2.8).
    fn execute(&mut self, mem: &mut PhysMemory, d: Desc) -> Result<(), Iqei> {
        // The upper half of a 256-bit descriptor is reserved for every type modelled.
        if d.hi != 0 {
            return Err(iqei::RESERVED_FIELD);
        }
        let smts = self.cfg.ecap.smts();
        match desc_type(d.lo as u64) {
            DescType::ContextCache => {
                check(d.lo, CC_FIELDS)?;
                let c = ContextCacheInv::from_bits(d.lo);
                match c.g() {
                    granularity::GLOBAL => self.caches.context_global(),
                    granularity::DOMAIN => self.caches.context_domain(c.did()),
                    granularity::DEVICE_OR_PAGE => self.caches.context_device(c.sid(), c.fm()),
                    _ => return Err(iqei::RESERVED_FIELD),
                }
                self.counters.context_invalidations += 1;
            }
            DescType::Iotlb => {
                check(d.lo, IOTLB_FIELDS)?;
                let t = IotlbInv::from_bits(d.lo);
                if self.iotlb_invalidate(t.g(), t.did(), t.addr() << 12, t.am(), t.ih()) == 0 {
                    return Err(iqei::RESERVED_FIELD);
                }
                self.counters.iotlb_invalidations += 1;
            }
            // No device-TLB is modelled: validated, then nothing to drop.
            DescType::DevTlb => check(d.lo, DEVTLB_FIELDS)?,
            DescType::InterruptEntryCache => {
                check(d.lo, IEC_FIELDS)?;
                self.iec_invalidate(IecInv::from_bits(d.lo));
            }
            DescType::Wait => {
                check(d.lo, WAIT_FIELDS)?;
                self.wait(mem, WaitInv::from_bits(d.lo))?;
            }
            DescType::PasidIotlb if smts => {
                check(d.lo, PIOTLB_FIELDS)?;
                let p = PasidIotlbInv::from_bits(d.lo);
                // Entries are tagged by DID only (see `cache`): a PASID-selective request drops the
                // domain's, first- and second-level, a page-in-PASID request those pages of the domain.
                match p.g() {
                    2 => self.caches.iotlb_domain(p.did()),
                    3 if p.am() <= self.cfg.cap.mamv() => {
                        self.caches.iotlb_pages(p.did(), p.addr() << 12, p.am(), p.ih())
                    }
                    _ => return Err(iqei::RESERVED_FIELD),
                }
                self.counters.iotlb_invalidations += 1;
            }
            DescType::PasidCache if smts => {
                check(d.lo, PC_FIELDS)?;
                let p = PasidCacheInv::from_bits(d.lo);
                match p.g() {
                    0 => self.caches.pasid_domain(p.did(), None),
                    1 => self.caches.pasid_domain(p.did(), Some(p.pasid())),
                    3 => self.caches.pasid_global(),
                    _ => return Err(iqei::RESERVED_FIELD),
                }
                self.counters.pasid_invalidations += 1;
            }
            // PASID-based device-TLB: no layout in the spec crate to validate against, and no
            // device-TLB to drop.
            DescType::PasidDevTlb if smts => {}
            _ => return Err(iqei::INVALID_TYPE),
        }
        Ok(())
    }

    /// Invalidation wait (spec 6.5.2.8). Status write (SW) stores the 32-bit data at the address; IF
    /// raises the completion event; both may be set. A fence alone (FN, neither SW nor IF) is a valid
    /// barrier (spec 7.10; Linux uses it to pad the queue after IQE) and a no-op here, since
    /// descriptors run in order. Neither SW, IF nor FN is refused, as QEMU refuses it.
    fn wait(&mut self, mem: &mut PhysMemory, w: WaitInv) -> Result<(), Iqei> {
        if !(w.sw() || w.iflag() || w.fence()) {
            return Err(iqei::RESERVED_FIELD);
        }
        if w.sw() {
            // A status address that is not memory: the write is dropped, as a write to nothing is.
            let _ = mem.write_u32(w.status_addr(), w.status_data());
        }
        if w.iflag() {
            self.inv_wait_event();
        }
        Ok(())
    }
}
