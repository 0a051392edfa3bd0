//! The VT-d register file (spec chapter 11) as bytes with per-byte writable and write-1-to-clear masks,
//! the compact scheme of QEMU's `vtd_define_long`/`vtd_define_quad` tables (hw/i386/intel_iommu.c).
//!
//! Masks are per byte, so a 32-bit access to either half of a 64-bit register behaves exactly like the
//! matching part of a 64-bit access. Bits in neither mask are read-only to software: reserved bits are
//! never set and read 0; status bits are changed only by the model through the raw setters.

use iommu_spec::mask64;
use iommu_spec::vtd::{off, Ccmd, EventCtl, FaultRecord, Fsts, Ics, IotlbReg, IqPtr, Iqa, Irta, Iva, RtAddr};

use super::VtdConfig;

/// All ones in a 52-bit address field (bits 63:12). Layout setters refuse wider values.
const ADDR52: u64 = (1 << 52) - 1;

/// Bytes of register state with software-write semantics.
#[derive(Clone, Debug)]
pub(crate) struct RegFile {
    csr: Vec<u8>,
    wmask: Vec<u8>,
    w1c: Vec<u8>,
}

impl RegFile {
    fn new(size: usize) -> Self {
        RegFile { csr: vec![0; size], wmask: vec![0; size], w1c: vec![0; size] }
    }

    /// Define a `size`-byte register at `off` with its reset value and masks.
    fn define(&mut self, off: usize, size: usize, init: u64, wmask: u64, w1c: u64) {
        for i in 0..size {
            let shift = 8 * i as u32;
            self.csr[off + i] = (init >> shift) as u8;
            self.wmask[off + i] = (wmask >> shift) as u8;
            self.w1c[off + i] = (w1c >> shift) as u8;
        }
    }

    /// Whether `[off, off + size)` lies inside the file.
    pub(crate) fn in_range(&self, off: usize, size: usize) -> bool {
        off.checked_add(size).is_some_and(|end| end <= self.csr.len())
    }

    /// A software read: the stored bits (reserved bits are stored as 0).
    pub(crate) fn read(&self, off: usize, size: usize) -> u64 {
        let mut v = 0u64;
        for i in (0..size).rev() {
            v = v << 8 | self.csr[off + i] as u64;
        }
        v
    }

    /// A software write: writable bits take `val`, write-1-to-clear bits written as 1 clear, every
    /// other bit keeps its value.
    pub(crate) fn write(&mut self, off: usize, size: usize, val: u64) {
        for i in 0..size {
            let b = (val >> (8 * i as u32)) as u8;
            let o = off + i;
            let kept = self.csr[o] & !self.wmask[o];
            self.csr[o] = (kept | (b & self.wmask[o])) & !(b & self.w1c[o]);
        }
    }

    /// The model's own reads and writes, ignoring the masks.
    pub(crate) fn get32(&self, off: usize) -> u32 {
        self.read(off, 4) as u32
    }
    pub(crate) fn get64(&self, off: usize) -> u64 {
        self.read(off, 8)
    }
    pub(crate) fn set32(&mut self, off: usize, v: u32) {
        self.set(off, 4, v as u64);
    }
    pub(crate) fn set64(&mut self, off: usize, v: u64) {
        self.set(off, 8, v);
    }
    fn set(&mut self, off: usize, size: usize, v: u64) {
        for i in 0..size {
            self.csr[off + i] = (v >> (8 * i as u32)) as u8;
        }
    }
    /// Set and clear bits of a 32-bit register.
    pub(crate) fn update32(&mut self, off: usize, clear: u32, set: u32) {
        let v = (self.get32(off) & !clear) | set;
        self.set32(off, v);
    }
}

/// Build the register file of a unit with `cfg`'s capabilities (spec 11.4; masks after QEMU's
/// `vtd_init`, narrowed or widened where the capabilities say so).
pub(crate) fn define(cfg: &VtdConfig) -> RegFile {
    let mut r = RegFile::new(cfg.mmio_size);
    let ecap = cfg.ecap;
    r.define(off::VER, 4, cfg.ver as u64, 0, 0);
    r.define(off::CAP, 8, cfg.cap.into_bits(), 0, 0);
    r.define(off::ECAP, 8, ecap.into_bits(), 0, 0);
    // GCMD is write-only: it stores nothing and reads 0; its writes are acted on by the model.
    r.define(off::GCMD, 4, 0, 0, 0);
    r.define(off::GSTS, 4, 0, 0, 0);
    // SMT is writable only on units that can do scalable mode; bit 11 (historic RTT) reads 0.
    let rta = RtAddr::new().with_rta(ADDR52).with_smt(ecap.smts());
    r.define(off::RTADDR, 8, 0, rta.into_bits(), 0);
    // CAIG is hardware's answer, not writable.
    let ccmd = Ccmd::new().with_icc(true).with_cirg(3).with_fm(3).with_sid(0xffff).with_did(0xffff);
    r.define(off::CCMD, 8, 0, ccmd.into_bits(), 0);
    // PPF and FRI are computed by the model; the overflow and error bits are W1C.
    r.define(off::FSTS, 4, 0, 0, Fsts::W1C as u64);
    // Interrupt mask set at reset (spec 11.4.10); IP is hardware's.
    let im = EventCtl::new().with_im(true).into_bits() as u64;
    r.define(off::FECTL, 4, im, im, 0);
    r.define(off::FEDATA, 4, 0, 0xffff_ffff, 0);
    r.define(off::FEADDR, 4, 0, mask64(31, 2), 0);
    // The upper address halves exist only with extended interrupt mode (x2APIC).
    let upper = if ecap.eim() { 0xffff_ffff } else { 0 };
    r.define(off::FEUADDR, 4, 0, upper, 0);
    // No advanced fault log (CAP.AFL = 0) and no protected memory regions (PLMR = PHMR = 0): the
    // registers read 0 and ignore writes.
    r.define(off::AFLOG, 8, 0, 0, 0);
    r.define(off::PMEN, 4, 0, 0, 0);
    r.define(off::PLMBASE, 4, 0, 0, 0);
    r.define(off::PLMLIMIT, 4, 0, 0, 0);
    r.define(off::PHMBASE, 8, 0, 0, 0);
    r.define(off::PHMLIMIT, 8, 0, 0, 0);
    // IQH belongs to hardware; IQT to software.
    r.define(off::IQH, 8, 0, 0, 0);
    let iqt = IqPtr::new().with_qh(0x7fff);
    r.define(off::IQT, 8, 0, iqt.into_bits(), 0);
    let iqa = Iqa::new().with_iqa(ADDR52).with_dw(true).with_qs(7);
    r.define(off::IQA, 8, 0, iqa.into_bits(), 0);
    r.define(off::ICS, 4, 0, 0, Ics::new().with_iwc(true).into_bits() as u64);
    r.define(off::IECTL, 4, im, im, 0);
    r.define(off::IEDATA, 4, 0, 0xffff_ffff, 0);
    r.define(off::IEADDR, 4, 0, mask64(31, 2), 0);
    r.define(off::IEUADDR, 4, 0, upper, 0);
    r.define(off::IQER, 8, 0, 0, 0);
    let irta = Irta::new().with_irta(ADDR52).with_s(0xf).with_eime(ecap.eim());
    r.define(off::IRTA, 8, 0, irta.into_bits(), 0);
    let iva = Iva::new().with_addr(ADDR52).with_ih(true).with_am(0x3f);
    r.define(off::iva(ecap.iro()), 8, 0, iva.into_bits(), 0);
    // IAIG is hardware's answer.
    let iotlb = IotlbReg::new().with_ivt(true).with_iirg(3).with_dr(true).with_dw(true).with_did(0xffff);
    r.define(off::iotlb(ecap.iro()), 8, 0, iotlb.into_bits(), 0);
    // Fault recording registers: read-only but for F, which software clears by writing 1.
    let f_hi = (FaultRecord::new().with_f(true).into_bits() >> 64) as u64;
    for n in 0..cfg.cap.fault_records() {
        let base = off::frcd(cfg.cap.fro(), n);
        r.define(base, 8, 0, 0, 0);
        r.define(base + 8, 8, 0, 0, f_hi);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_apply_per_byte() {
        let mut r = RegFile::new(16);
        r.define(0, 8, 0x00ff_0000_0000_00f0, 0x0000_ffff_0000_ff00, 0x00ff_0000_0000_0000);
        r.write(0, 8, u64::MAX);
        assert_eq!(r.read(0, 8), 0x0000_ffff_0000_fff0, "w1c cleared, rw set, ro kept");
        r.write(4, 4, 0x00ff_ffff);
        assert_eq!(r.read(0, 8), 0x0000_ffff_0000_fff0, "w1c of a clear bit is a no-op");
        r.write(4, 4, 0);
        assert_eq!(r.read(0, 8), 0x0000_0000_0000_fff0, "upper half alone");
        assert!(r.in_range(8, 8) && !r.in_range(9, 8) && !r.in_range(usize::MAX, 8));
    }
}
