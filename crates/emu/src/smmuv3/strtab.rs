//! Configuration lookup (IHI 0070 chapter 5; QEMU `smmu_find_ste`, `decode_ste`, `decode_cd`): the stream table
//! (linear or 2-level), the STE, and the context descriptor that serves non-substream traffic.
//!
//! Choices where the spec leaves room, each documented at its rule: STRTAB_BASE and the L2 pointers are used as
//! written (no alignment down to the table size); a reserved SPLIT is used as written, as QEMU does; an STE or
//! CD field the model cannot honour (stall, big-endian walks, hardware AF/dirty updates, a granule other than
//! 4 KiB, a stage IDR0 does not advertise) makes the structure ILLEGAL (C_BAD_STE / C_BAD_CD) rather than
//! silently ignored.

use iommu_platform::PhysMem;
use iommu_spec::smmuv3::{
    ia_bits, l1_index, l2_index, linear_ste_offset, pa_bits, s1_start_level, s2_concat_tables, s2_start_level, Cd,
    CdL1Desc, EventClass, EventId, Granule, L1Desc, S1Dss, S1Fmt, Ste, StrtabBase, StrtabBaseCfg, StrtabFmt, Strw,
    CD_SIZE, L1_DESC_SIZE, STE_SIZE, T0SZ_MAX, T0SZ_MIN,
};

use super::event::Fault;
use super::translate::{S1Cfg, S2Cfg};
use super::Smmuv3Model;
use crate::mem::PhysMemory;

/// A decoded, valid STE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SteState {
    /// Config = abort: terminate without an event.
    Abort,
    /// Config = bypass.
    Bypass,
    Translate(TransCfg),
}

/// A translating STE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TransCfg {
    pub s1: Option<S1Src>,
    pub s2: Option<S2Cfg>,
    /// TLB tag: STE.S2VMID (0 in the EL2 regime or without stage 2 support).
    pub vmid: u16,
    /// STE.STRW = EL2.
    pub el2: bool,
    /// STE.PRIVCFG = 0b11 forces privileged (5.2). Otherwise the model treats incoming DMA as unprivileged, as a
    /// PCIe request without a PASID prefix carries no privilege; Linux sets AP[1] on every leaf, so both work with
    /// its tables.
    pub privileged: bool,
}

/// Where stage 1 of non-substream traffic comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum S1Src {
    /// CD 0 of the table at `ptr` (an IPA when stage 2 is on too).
    Cd { ptr: u64, fmt: S1Fmt },
    /// S1DSS = bypass: stage 1 is skipped.
    Bypass,
    /// S1DSS = terminate: F_STREAM_DISABLED.
    Terminate,
}

fn bad_ste() -> Fault {
    Fault::config(EventId::CBadSte)
}

fn bad_cd() -> Fault {
    Fault::config(EventId::CBadCd)
}

fn words<const N: usize>(bytes: &[u8]) -> [u64; N] {
    let mut w = [0u64; N];
    for (dst, chunk) in w.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        *dst = u64::from_le_bytes(b);
    }
    w
}

impl Smmuv3Model {
    /// The configuration of `sid`, through the STE cache.
    pub(super) fn stream_config(&mut self, mem: &PhysMemory, sid: u32) -> Result<SteState, Fault> {
        if let Some(s) = self.caches.ste_get(sid) {
            self.counters.ste_hits += 1;
            return Ok(s);
        }
        self.counters.ste_misses += 1;
        let ste = self.fetch_ste(mem, sid)?;
        let s = self.decode_ste(&ste)?;
        self.caches.ste_put(sid, s);
        Ok(s)
    }

    /// Find and read the STE of `sid` (5.1, 6.3.24).
    pub(super) fn fetch_ste(&self, mem: &PhysMemory, sid: u32) -> Result<Ste, Fault> {
        let base = StrtabBase::from_bits(self.regs.strtab_base).table();
        let cfg = StrtabBaseCfg::from_bits(self.regs.strtab_base_cfg);
        // A StreamID beyond the table or beyond SIDSIZE: C_BAD_STREAMID, recorded only with CR2.RECINVSID
        // (6.3.12).
        let log2 = (cfg.log2size() as u32).min(self.cfg.sidsize as u32);
        if log2 < 32 && sid >> log2 != 0 {
            return Err(Fault { record: self.regs.cr2().recinvsid(), ..Fault::config(EventId::CBadStreamid) });
        }
        let ste_pa = match cfg.fmt() {
            StrtabFmt::Linear => base.wrapping_add(linear_ste_offset(sid)),
            StrtabFmt::TwoLevel if self.cfg.two_level_strtab => {
                let split = cfg.split() as u32;
                let l1_pa = base.wrapping_add(l1_index(sid, split) as u64 * L1_DESC_SIZE);
                let l1 = mem.read_u64(l1_pa).map_err(|_| Fault::fetch(EventId::FSteFetch, l1_pa))?;
                let l1 = L1Desc::from_bits(l1);
                // SPAN = 0: no level-2 table, C_BAD_STREAMID (5.1.2; QEMU).
                if !l1.valid() {
                    return Err(Fault::config(EventId::CBadStreamid));
                }
                // Beyond the 2^(SPAN-1) STEs the level-2 table holds: treated as an invalid STE (QEMU).
                let l2 = l2_index(sid, split) as u64;
                if l2 >= l1.l2_entries() {
                    return Err(bad_ste());
                }
                l1.l2_table().wrapping_add(l2 * STE_SIZE)
            }
            // 2-level without IDR0.ST_LEVEL, or a reserved FMT: no table can be found for any StreamID.
            _ => return Err(Fault::config(EventId::CBadStreamid)),
        };
        let mut raw = [0u8; STE_SIZE as usize];
        mem.read(ste_pa, &mut raw).map_err(|_| Fault::fetch(EventId::FSteFetch, ste_pa))?;
        Ok(Ste(words(&raw)))
    }

    /// Validate and decode an STE (5.2). V = 0 and anything ILLEGAL give C_BAD_STE; Config with bit 2 clear
    /// aborts silently whatever bits 1:0 hold (QEMU `STE_CFG_ABORT`).
    fn decode_ste(&self, ste: &Ste) -> Result<SteState, Fault> {
        if !ste.valid() || ste.reserved_bits()[0] != 0 {
            return Err(bad_ste());
        }
        let config = ste.config();
        if config.is_abort() {
            return Ok(SteState::Abort);
        }
        if config.is_bypass() {
            return Ok(SteState::Bypass);
        }
        let (s1, s2) = (config.s1_enabled(), config.s2_enabled());
        if (s1 && !self.cfg.stage1) || (s2 && !self.cfg.stage2) {
            return Err(bad_ste());
        }
        let dw1 = ste.dw1();
        // STRW = EL2 needs IDR0.HYP and has no stage 2; other values are reserved.
        let el2 = match dw1.strw() {
            Strw::NsEl1 => false,
            Strw::El2 if self.cfg.hyp && !s2 => true,
            _ => return Err(bad_ste()),
        };
        let vmid = if el2 || !self.cfg.stage2 { 0 } else { ste.s2vmid() };
        let s1 = if s1 { Some(self.decode_s1_src(ste)?) } else { None };
        let s2 = if s2 { Some(self.decode_s2(ste, vmid)?) } else { None };
        Ok(SteState::Translate(TransCfg { s1, s2, vmid, el2, privileged: dw1.privcfg() == 3 }))
    }

    /// Stage 1 of non-substream traffic (5.2 S1CDMax, S1Fmt, S1DSS). With S1CDMax = 0 the pointer is the one
    /// CD and S1Fmt is ignored.
    fn decode_s1_src(&self, ste: &Ste) -> Result<S1Src, Fault> {
        let dw0 = ste.dw0();
        let ptr = ste.s1_context_ptr();
        let cdmax = dw0.s1cdmax();
        if cdmax == 0 {
            return Ok(S1Src::Cd { ptr, fmt: S1Fmt::Linear });
        }
        if cdmax > self.cfg.ssidsize {
            return Err(bad_ste());
        }
        let fmt = dw0.s1fmt();
        match fmt {
            S1Fmt::Linear => {}
            // 2-level CD tables need IDR0.CD2L, advertised together with substreams.
            S1Fmt::TwoLevel4K | S1Fmt::TwoLevel64K if self.cfg.ssidsize > 0 => {}
            _ => return Err(bad_ste()),
        }
        match ste.dw1().s1dss() {
            S1Dss::Terminate => Ok(S1Src::Terminate),
            S1Dss::Bypass => Ok(S1Src::Bypass),
            S1Dss::Ssid0 => Ok(S1Src::Cd { ptr, fmt }),
            _ => Err(bad_ste()),
        }
    }

    /// Stage 2 (5.2 S2*; QEMU `decode_ste_s2_cfg`): AArch64, little-endian, 4 KiB granule, no stall and no
    /// hardware updates; S2PS capped to OAS; an IPA size within [25, OAS] bits (T0SZ 16..=39, never wider than the
    /// output); S2SL0 consistent with it (at most 16 concatenated start tables); S2TTB within the output size.
    fn decode_s2(&self, ste: &Ste, vmid: u16) -> Result<S2Cfg, Fault> {
        if ste.reserved_bits()[2] | ste.reserved_bits()[3] != 0 {
            return Err(bad_ste());
        }
        let d = ste.dw2();
        if !d.s2aa64() || d.s2endi() || d.s2s() || d.s2ha() || d.s2hd() || d.s2tg() != Granule::Size4K {
            return Err(bad_ste());
        }
        let oas = self.cfg.oas_bits();
        let oa_bits = pa_bits(d.s2ps()).ok_or_else(bad_ste)?.min(oas);
        let t0sz = d.s2t0sz();
        if !(T0SZ_MIN..=T0SZ_MAX).contains(&t0sz) || ia_bits(t0sz) > oas {
            return Err(bad_ste());
        }
        let start = s2_start_level(d.s2sl0()).ok_or_else(bad_ste)?;
        s2_concat_tables(d.s2sl0(), t0sz).ok_or_else(bad_ste)?;
        let ttb = ste.s2ttb();
        if ttb >> oa_bits != 0 {
            return Err(bad_ste());
        }
        Ok(S2Cfg { vmid, ttb, ia_bits: ia_bits(t0sz), start, oa_bits, affd: d.s2affd(), record: d.s2r() })
    }

    /// CD 0 of `sid` decoded, through the CD cache.
    pub(super) fn context(
        &mut self,
        mem: &PhysMemory,
        sid: u32,
        t: &TransCfg,
        ptr: u64,
        fmt: S1Fmt,
    ) -> Result<S1Cfg, Fault> {
        if let Some(c) = self.caches.cd_get(sid, 0) {
            self.counters.cd_hits += 1;
            return Ok(c);
        }
        self.counters.cd_misses += 1;
        let cd = self.fetch_cd(mem, t, ptr, fmt)?;
        let c = self.decode_cd(&cd)?;
        self.caches.cd_put(sid, 0, c);
        Ok(c)
    }

    /// Read CD 0 (5.4; 5.4.2 for 2-level tables: level-1 descriptor 0, then entry 0 of its leaf). Addresses are
    /// IPAs translated by stage 2 when it is on (CLASS = CD in a stage-2 fault record).
    fn fetch_cd(&mut self, mem: &PhysMemory, t: &TransCfg, ptr: u64, fmt: S1Fmt) -> Result<Cd, Fault> {
        let cd_addr = if fmt == S1Fmt::Linear {
            ptr
        } else {
            let l1_pa = self.config_pa(mem, t, ptr)?;
            let l1 = mem.read_u64(l1_pa).map_err(|_| Fault::fetch(EventId::FCdFetch, l1_pa))?;
            let l1 = CdL1Desc::from_bits(l1);
            // An invalid level-1 CD descriptor: the SubstreamID has no CD (5.4.2).
            if !l1.v() {
                return Err(Fault::config(EventId::CBadSubstreamid));
            }
            l1.l2_table()
        };
        let cd_pa = self.config_pa(mem, t, cd_addr)?;
        let mut raw = [0u8; CD_SIZE as usize];
        mem.read(cd_pa, &mut raw).map_err(|_| Fault::fetch(EventId::FCdFetch, cd_pa))?;
        Ok(Cd(words(&raw)))
    }

    /// The physical address of a CD-table address: itself, or its stage-2 translation (which must allow reads).
    fn config_pa(&mut self, mem: &PhysMemory, t: &TransCfg, addr: u64) -> Result<u64, Fault> {
        match &t.s2 {
            None => Ok(addr),
            Some(s2) => self.s2_read(mem, s2, addr, EventClass::Cd),
        }
    }

    /// Validate and decode a CD (5.4; QEMU `decode_cd`): V, AArch64, little-endian, no stall, A = 1 (IDR0.TERM_MODEL
    /// = 1: terminated transactions always abort), no hardware AF/dirty updates (IDR0.HTTU = 0); with TTB0 walks
    /// on, a 4 KiB TG0, T0SZ 16..=39 (no IDR3.STT) and TTB0 within the IPS (capped to OAS).
    fn decode_cd(&self, cd: &Cd) -> Result<S1Cfg, Fault> {
        let d = cd.dw0();
        if !d.v() || !d.aa64() || d.endi() || d.s() || !d.a() || d.ha() || d.hd() {
            return Err(bad_cd());
        }
        let oa_bits = pa_bits(d.ips()).ok_or_else(bad_cd)?.min(self.cfg.oas_bits());
        let t0sz = d.t0sz();
        let start = if d.epd0() {
            0
        } else {
            if d.tg0() != Granule::Size4K || !(T0SZ_MIN..=T0SZ_MAX).contains(&t0sz) || cd.ttb0() >> oa_bits != 0 {
                return Err(bad_cd());
            }
            s1_start_level(t0sz).ok_or_else(bad_cd)?
        };
        Ok(S1Cfg {
            asid: d.asid(),
            ttb: cd.ttb0(),
            ia_bits: ia_bits(t0sz),
            start,
            oa_bits,
            epd0: d.epd0(),
            tbi: d.tbi() & 1 != 0,
            affd: d.affd(),
            record: d.r(),
        })
    }
}
