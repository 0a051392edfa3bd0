//! Hostile input for the SMMUv3 model: garbage STEs, CDs, L1 descriptors and page tables (random and mutated from
//! valid ones), garbage register values and commands, under every configuration shape. Nothing may panic or loop;
//! the sweep must reach the deep paths (checked through the variety of outcomes it sees).

#[path = "smmuv3_rig.rs"]
mod rig;

use std::collections::BTreeSet;

use iommu_driver::PhysMem;
use iommu_emu::{Access, MmioDevice, Smmuv3Config, Translation};
use iommu_spec::smmuv3::{
    off, Cd, Command, Config, S1Dss, S1Fmt, Ste, SteDw0, StrtabBaseCfg, StrtabFmt, SyncCmd, TlbiScope, CMDQ_ENT_SIZE,
    STE_SIZE,
};
use rig::{Rig, CMDQ, S2_SL0, S2_T0SZ, STRTAB, T0SZ, TABLES};

/// xorshift64*: deterministic, seedable.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// A word that is often a plausible pointer into the table window, with random flag bits.
    fn word(&mut self) -> u64 {
        match self.below(4) {
            0 => self.next(),
            1 => (TABLES.start + self.below(1 << 20)) & !0x7 | self.below(8) | self.next() & 0xfff0_0000_0000_0ff0,
            2 => (TABLES.start + (self.below(256) << 12)) | 3,
            _ => self.below(1 << 12),
        }
    }
}

fn random_config(r: &mut Rng) -> Smmuv3Config {
    let (stage1, stage2) = match r.below(3) {
        0 => (true, false),
        1 => (false, true),
        _ => (true, true),
    };
    Smmuv3Config {
        sidsize: [0, 1, 8, 16, 31, 32][r.below(6) as usize],
        ssidsize: [0, 1, 8, 20][r.below(4) as usize],
        two_level_strtab: r.chance(50),
        stage1,
        stage2,
        coherent: r.chance(50),
        msi: r.chance(50),
        hyp: r.chance(30),
        range_invalidation: r.chance(50),
        cmdqs: r.below(20) as u8,
        evtqs: r.below(20) as u8,
        oas: r.below(6) as u8,
        tlb_capacity: 1 + r.below(64) as usize,
        cfg_cache_capacity: 1 + r.below(8) as usize,
    }
}

/// A rig with streams 1 (stage 1), 2 (stage 2), 3 (nested), 4 (bypass) built validly on a linear table.
fn valid_rig(cfg: Smmuv3Config) -> (Rig, Vec<u64>) {
    let mut rig = Rig::new(cfg);
    rig.strtab_linear(4);
    rig.queues();
    let t1 = rig.page();
    let ste1 = rig.s1_ste(1, t1);
    rig.set_ste_linear(1, ste1);
    for i in 0..8u64 {
        rig.map_s1(t1, i << 12, 0x30_0000 + (i << 12), if i == 4 { 2 } else { 3 }, i % 3 != 0);
    }
    let t2 = rig.s2_root();
    rig.set_ste_linear(2, Ste::s2(2, t2, S2_T0SZ, S2_SL0, 5));
    rig.map_s2(t2, 0, 0, 1, (true, true));
    rig.map_s2(t2, 0x4000_0000, 0x20_0000, 2, (true, false));
    let cd = rig.page();
    rig.write_words(cd, &Cd::s1(3, t1, T0SZ, 5, 0).0);
    let mut ste3 = Ste::s2(3, t2, S2_T0SZ, S2_SL0, 5);
    ste3.0[0] = SteDw0::new().with_v(true).with_config(Config::Nested).with_s1contextptr(cd >> 6).into_bits();
    rig.set_ste_linear(3, ste3);
    rig.set_ste_linear(4, Ste::bypass());
    rig.enable();
    // Every word the walks may read: the STEs, the CD page, the table pages.
    let mut words: Vec<u64> = (0..5 * STE_SIZE / 8).map(|i| STRTAB + i * 8).collect();
    for p in TABLES.start..TABLES.start + 24 * 0x1000 {
        if p % 8 == 0 && rig.mem.page(p >> 12).is_some() {
            words.push(p);
        }
    }
    (rig, words)
}

/// A well-formed command of a random kind with random operands.
fn random_command(r: &mut Rng) -> [u64; 2] {
    let (sid, vmid, asid) = (r.below(1 << 10) as u32, r.below(4) as u16, r.below(4) as u16);
    let scope = TlbiScope {
        leaf: r.chance(50),
        ttl: 0,
        tg: r.below(4) as u8,
        num: r.below(32) as u8,
        scale: r.below(32) as u8,
    };
    let addr = r.next();
    let cmd = match r.below(12) {
        0 => Command::CfgiSte { sid, leaf: true },
        1 => Command::CfgiSteRange { sid, range: r.below(32) as u8 },
        2 => Command::CfgiAll,
        3 => Command::CfgiCd { sid, ssid: 0, leaf: true },
        4 => Command::TlbiNhAsid { vmid, asid },
        5 => Command::TlbiNhVa { vmid, asid, addr, scope },
        6 => Command::TlbiS2Ipa { vmid, ipa: addr, scope },
        7 => Command::TlbiS12Vmall { vmid },
        8 => Command::TlbiNsnhAll,
        9 => Command::TlbiEl2All,
        10 => Command::PrefetchConfig { sid, ssid: None },
        _ => Command::Sync(SyncCmd::msi(r.word() & !3, r.next() as u32)),
    };
    cmd.encode()
}

fn outcome(t: Translation) -> u16 {
    match t {
        Translation::Ok { .. } => 0,
        Translation::Fault(f) => f.code,
    }
}

#[test]
fn mutated_structures_never_panic_and_reach_every_outcome() {
    let mut seen = BTreeSet::new();
    for seed in 0..120 {
        let mut r = Rng::new(seed);
        let cfg = Smmuv3Config { ssidsize: [0, 8][r.below(2) as usize], ..Smmuv3Config::default() };
        let (mut rig, words) = valid_rig(cfg);
        for round in 0..60 {
            // Corrupt a few words: flip bits, or replace with garbage.
            for _ in 0..1 + r.below(3) {
                let pa = words[r.below(words.len() as u64) as usize];
                let old = rig.mem.read_u64(pa).unwrap();
                let new = if r.chance(60) { old ^ 1 << r.below(64) } else { r.word() };
                rig.mem.write_u64(pa, new).unwrap();
            }
            if r.chance(70) {
                rig.cmds(&[Command::CfgiAll, Command::TlbiNsnhAll, Command::Sync(SyncCmd::poll())]);
            }
            if round % 17 == 0 {
                rig.smmu.set_caching(r.chance(50));
            }
            for _ in 0..6 {
                let sid = 1 + r.below(5) as u32;
                let iova = match r.below(3) {
                    0 => r.below(8) << 12 | r.below(0x1000),
                    1 => 0x4000_0000 + r.below(1 << 21),
                    _ => r.next(),
                };
                let access = if r.chance(50) { Access::Read } else { Access::Write };
                seen.insert(outcome(rig.translate(sid, iova, access)));
            }
            rig.events();
        }
        let c = *rig.smmu.counters();
        assert!(c.events_recorded + c.events_suppressed + c.events_dropped <= c.faults, "seed {seed}: {c:?}");
    }
    // Success, silent abort, C_BAD_STE, C_BAD_CD, F_WALK_EABT, F_TRANSLATION, F_ADDR_SIZE, F_ACCESS, F_PERMISSION
    // at least.
    for code in [0, 0x101, 0x04, 0x0a, 0x0b, 0x10, 0x11, 0x12, 0x13] {
        assert!(seen.contains(&code), "outcome {code:#x} never reached: {seen:x?}");
    }
}

#[test]
fn garbage_tables_registers_and_commands_never_panic() {
    for seed in 0..150 {
        let mut r = Rng::new(1000 + seed);
        let cfg = random_config(&mut r);
        let mut rig = Rig::new(cfg);
        // Garbage in the table window and the command queue.
        for _ in 0..1500 {
            let pa = TABLES.start + (r.below(64 << 12) & !7);
            let w = r.word();
            rig.mem.write_u64(pa, w).unwrap();
        }
        for i in 0..64 {
            let w = if r.chance(80) { random_command(&mut r) } else { [r.word(), r.word()] };
            rig.write_words(CMDQ + i * CMDQ_ENT_SIZE, &w);
        }
        // Garbage register values, with pointers biased into the window.
        rig.w64(off::STRTAB_BASE, if r.chance(50) { TABLES.start } else { r.word() });
        let strtab_cfg = if r.chance(70) {
            StrtabBaseCfg::new()
                .with_fmt(StrtabFmt::from_bits(r.below(2) as u8))
                .with_log2size(r.below(12) as u8)
                .with_split(r.below(12) as u8)
                .into_bits()
        } else {
            r.next() as u32
        };
        rig.w32(off::STRTAB_BASE_CFG, strtab_cfg);
        rig.w32(off::CR2, r.next() as u32);
        rig.w64(off::CMDQ_BASE, if r.chance(50) { CMDQ | r.below(32) } else { r.next() });
        rig.w64(off::EVTQ_BASE, r.word() & !0x1f | r.below(32));
        rig.w32(off::EVTQ_PROD, r.next() as u32);
        rig.w32(off::EVTQ_CONS, r.next() as u32);
        rig.w32(off::IRQ_CTRL, r.next() as u32);
        rig.w64(off::GERROR_IRQ_CFG0, r.word());
        rig.w64(off::EVTQ_IRQ_CFG0, r.word());
        rig.w32(off::GBPA, r.next() as u32);
        rig.w32(off::CR0, r.next() as u32);
        for _ in 0..200 {
            match r.below(10) {
                0 => {
                    let off = r.below(0x2_0000) as usize;
                    let size = [1, 2, 4, 8, 16][r.below(5) as usize];
                    let v = r.next();
                    rig.smmu.mmio_write(&mut rig.mem, off, size, v);
                }
                1 => {
                    let off = r.below(0x2_0000) as usize;
                    let size = [4, 8][r.below(2) as usize];
                    rig.smmu.mmio_read(&mut rig.mem, off, size);
                }
                2 => rig.w32(off::CMDQ_PROD, r.next() as u32),
                3 => {
                    let ack = rig.r32(off::GERROR);
                    rig.w32(off::GERRORN, ack);
                }
                4 if seed % 10 == 0 && r.chance(5) => rig.smmu.inject_sfm_err(),
                _ => {
                    let sid = if r.chance(50) { r.below(1 << 10) as u32 } else { r.next() as u32 };
                    let iova = if r.chance(50) { r.below(1 << 32) } else { r.next() };
                    let access = if r.chance(50) { Access::Read } else { Access::Write };
                    rig.translate(sid, iova, access);
                }
            }
        }
        // The register file still reads consistently.
        assert_eq!(rig.r32(off::CR0), rig.r32(off::CR0ACK), "seed {seed}");
    }
}

#[test]
fn garbage_cd_tables_with_substreams_never_panic() {
    let mut seen = BTreeSet::new();
    for seed in 0..100 {
        let mut r = Rng::new(5000 + seed);
        let mut rig = Rig::new(Smmuv3Config { ssidsize: 20, ..Smmuv3Config::default() });
        rig.strtab_linear(4);
        rig.queues();
        rig.enable();
        for sid in 0..16u32 {
            let fmt = S1Fmt::from_bits(r.below(4) as u8);
            let dss = S1Dss::from_bits(r.below(4) as u8);
            let ptr = (TABLES.start + (r.below(32) << 12)) | r.below(64) << 6 & 0xfff;
            let mut ste = Ste::s1(ptr, fmt, r.below(32) as u8, dss);
            if r.chance(30) {
                ste.0[r.below(4) as usize] ^= 1 << r.below(64);
            }
            rig.set_ste_linear(sid, ste);
        }
        for _ in 0..800 {
            let pa = TABLES.start + (r.below(32 << 12) & !7);
            let w = r.word();
            rig.mem.write_u64(pa, w).unwrap();
        }
        for _ in 0..64 {
            let t = rig.translate(r.below(16) as u32, r.below(1 << 20), Access::Read);
            seen.insert(outcome(t));
        }
    }
    assert!(seen.len() >= 4, "{seen:x?}");
}
