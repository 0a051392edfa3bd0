//! Every interleaving of a panic-path protocol on N CPUs, explored over deduplicated states.
//!
//! CPU 0 panics; CPUs 1..N run vCPUs of an SNP guest that has run on every core. The NMI reaches each of
//! them separately; a CPU in the guest first leaves it (VM exit) and saves guest state, one step at a time,
//! then runs the protocol's NMI callback and is counted stopped when the callback returns. Every step of
//! every CPU interleaves with every other. The state graph is a DAG (each step advances a program), so
//! the number of complete interleavings and their outcomes are counted by dynamic programming over it,
//! and the shortest failing interleaving is found breadth-first.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use iommu_emu::snp::{SevStatus, SnpCommand, SnpFirmware};

use super::protocol::{Action, Protocol};

/// Steps a VM exit takes to save guest state (each a point where another CPU may act).
const SAVE_STEPS: u8 = 2;
/// The guest context every scenario runs.
const GCTX: u64 = 0x7_0000;
const ASID: u32 = 1;

const V_DECOMMISSION_DURING_SAVE: u8 = 1;
const V_DF_FLUSH_WITH_MARKS: u8 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Phase {
    InGuest,
    Exiting { saves_left: u8 },
    Callback { pc: u8 },
    Stopped,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    fw: SnpFirmware,
    cpu0_pc: u8,
    kexec: bool,
    others: Vec<Phase>,
    nmi_sent: bool,
    arrived: u8,
    last_arrival: Option<u8>,
    decommissioned: bool,
    released: bool,
    violations: u8,
    timed_out: bool,
}

/// What one step did, for traces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The CPU that moved: 0 panics, the others were running guest vCPUs.
    pub cpu: u8,
    /// The action and what the firmware answered, e.g. `SNP_DECOMMISSION → SUCCESS`.
    pub what: String,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cpu{}: {}", self.cpu, self.what)
    }
}

/// Counts over complete interleavings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Complete interleavings (saturating: the count grows combinatorially with the CPUs).
    pub interleavings: u128,
    /// Those that end with the firmware shut down and the IOMMU unlocked: the crash kernel can take it over.
    pub shutdown_ok: u128,
    /// Those that end with the firmware still initialised or the IOMMU still locked.
    pub shutdown_failed: u128,
    /// Those in which a guest was decommissioned while a CPU was still in it or saving its state, or
    /// `DF_FLUSH` ran while a core still needed `WBINVD`.
    pub safety_violations: u128,
    /// Those in which the panicking CPU never reached kexec.
    pub no_kexec: u128,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.interleavings = self.interleavings.saturating_add(o.interleavings);
        self.shutdown_ok = self.shutdown_ok.saturating_add(o.shutdown_ok);
        self.shutdown_failed = self.shutdown_failed.saturating_add(o.shutdown_failed);
        self.safety_violations = self.safety_violations.saturating_add(o.safety_violations);
        self.no_kexec = self.no_kexec.saturating_add(o.no_kexec);
    }
}

/// The result of exploring one protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exploration {
    /// The protocol's name.
    pub protocol: &'static str,
    /// CPUs modelled, the panicking one included.
    pub cpus: usize,
    /// Distinct states reached (the memo's size), a measure of the search's cost.
    pub states: usize,
    /// Outcomes over every complete interleaving.
    pub tally: Tally,
    /// The shortest interleaving with a safety violation, a failed shutdown or no kexec, if any.
    pub counterexample: Option<Vec<Step>>,
    /// Whether that interleaving's failure was a safety violation, and which.
    pub counterexample_violation: Option<&'static str>,
}

impl State {
    fn initial(cpus: usize) -> Self {
        // Four cores per CCX, as on current EPYC parts; decommission marks whole CCXs.
        let mut fw = SnpFirmware::new(cpus, 4);
        fw.command(SnpCommand::InitEx);
        fw.command(SnpCommand::GctxCreate { gctx: GCTX });
        fw.command(SnpCommand::Activate { gctx: GCTX, asid: ASID });
        for core in 0..cpus {
            fw.vmrun(core, ASID);
        }
        State {
            fw,
            cpu0_pc: 0,
            kexec: false,
            others: vec![Phase::InGuest; cpus.saturating_sub(1)],
            nmi_sent: false,
            arrived: 0,
            last_arrival: None,
            decommissioned: false,
            released: false,
            violations: 0,
            timed_out: false,
        }
    }

    fn shutdown_ok(&self) -> bool {
        !self.fw.initialised() && !self.fw.iommu_locked()
    }

    fn failed(&self) -> bool {
        self.violations != 0 || !self.shutdown_ok() || !self.kexec
    }

    fn decommission_all(&mut self) -> String {
        if self.others.iter().any(|p| matches!(p, Phase::InGuest | Phase::Exiting { .. })) {
            self.violations |= V_DECOMMISSION_DURING_SAVE;
        }
        let mut out = Vec::new();
        if self.fw.asid_of(GCTX).is_some() {
            let s = self.fw.command(SnpCommand::Decommission { gctx: GCTX });
            out.push(format!("SNP_DECOMMISSION → {}", s.name()));
        }
        self.decommissioned = true;
        if out.is_empty() {
            "nothing left to decommission".into()
        } else {
            out.join(", ")
        }
    }

    fn df_flush(&mut self) -> SevStatus {
        if self.fw.cores_needing_wbinvd().next().is_some() {
            self.violations |= V_DF_FLUSH_WITH_MARKS;
        }
        self.fw.command(SnpCommand::DfFlush)
    }

    /// Run `a` on `cpu`; `None` if it is a wait that cannot proceed.
    fn act(&mut self, cpu: u8, a: Action) -> Option<String> {
        let others = self.others.len() as u8;
        Some(match a {
            Action::SendNmi => {
                self.nmi_sent = true;
                "NMI to every other CPU".into()
            }
            Action::WaitStopped => {
                if !self.others.iter().all(|p| *p == Phase::Stopped) {
                    return None;
                }
                "all other CPUs stopped".into()
            }
            Action::Wbinvd => {
                self.fw.wbinvd(cpu as usize);
                "WBINVD".into()
            }
            Action::DecommissionAll => self.decommission_all(),
            Action::DfFlush => format!("SNP_DF_FLUSH → {}", self.df_flush().name()),
            Action::ShutdownWithRetry => {
                let s = self.fw.command(SnpCommand::ShutdownEx { iommu: true });
                if s == SevStatus::DFFLUSH_REQUIRED {
                    let d = self.df_flush();
                    let s2 = self.fw.command(SnpCommand::ShutdownEx { iommu: true });
                    format!(
                        "SNP_SHUTDOWN_EX → {}, SNP_DF_FLUSH → {}, SNP_SHUTDOWN_EX → {}",
                        s.name(),
                        d.name(),
                        s2.name()
                    )
                } else {
                    format!("SNP_SHUTDOWN_EX → {}", s.name())
                }
            }
            Action::Arrive => {
                self.arrived += 1;
                if self.arrived == others {
                    self.last_arrival = Some(cpu);
                }
                "arrives at the rendezvous".into()
            }
            Action::WaitAllArrived => {
                if self.arrived < others {
                    return None;
                }
                "sees every CPU arrived".into()
            }
            Action::DecommissionIfLast => {
                if self.last_arrival != Some(cpu) {
                    return Some("not last: leaves the decommission to the last".into());
                }
                self.decommission_all()
            }
            Action::WaitDecommissioned => {
                if !self.decommissioned {
                    return None;
                }
                "sees the decommission done".into()
            }
            Action::WaitReleased => {
                if !self.released {
                    return None;
                }
                "released".into()
            }
            Action::Release => {
                self.released = true;
                "releases the spinning CPUs".into()
            }
        })
    }

    fn successors(&self, p: &Protocol) -> Vec<(Step, State)> {
        let mut out = Vec::new();
        if !self.kexec {
            let mut s = self.clone();
            match p.panic_cpu.get(self.cpu0_pc as usize) {
                None => {
                    s.kexec = true;
                    out.push((Step { cpu: 0, what: "kexec into the crash kernel".into() }, s));
                }
                Some(&a) => {
                    if let Some(what) = s.act(0, a) {
                        s.cpu0_pc += 1;
                        out.push((Step { cpu: 0, what }, s));
                    }
                }
            }
        }
        for (i, phase) in self.others.iter().enumerate() {
            let cpu = i as u8 + 1;
            let mut s = self.clone();
            let what = match *phase {
                Phase::InGuest if self.nmi_sent => {
                    s.others[i] = Phase::Exiting { saves_left: SAVE_STEPS };
                    "NMI: VM exit begins".to_string()
                }
                Phase::InGuest | Phase::Stopped => continue,
                Phase::Exiting { saves_left: 0 } => {
                    s.others[i] = Phase::Callback { pc: 0 };
                    "guest state saved; enters the NMI callback".into()
                }
                Phase::Exiting { saves_left } => {
                    s.others[i] = Phase::Exiting { saves_left: saves_left - 1 };
                    "saves guest state".into()
                }
                Phase::Callback { pc } => match p.nmi_callback.get(pc as usize) {
                    None => {
                        s.others[i] = Phase::Stopped;
                        "callback returns: counted stopped, halts".into()
                    }
                    Some(&a) => match s.act(cpu, a) {
                        Some(w) => {
                            s.others[i] = Phase::Callback { pc: pc + 1 };
                            w
                        }
                        None => continue,
                    },
                },
            };
            out.push((Step { cpu, what }, s));
        }
        // Nothing can move but the panicking CPU waits for the others: its wait times out.
        if out.is_empty() && !self.kexec && p.panic_cpu.get(self.cpu0_pc as usize) == Some(&Action::WaitStopped) {
            let mut s = self.clone();
            s.cpu0_pc += 1;
            s.timed_out = true;
            out.push((Step { cpu: 0, what: "gives up waiting for the other CPUs (timeout)".into() }, s));
        }
        out
    }

    fn terminal_tally(&self) -> Tally {
        let ok = self.shutdown_ok();
        Tally {
            interleavings: 1,
            shutdown_ok: ok as u128,
            shutdown_failed: !ok as u128,
            safety_violations: (self.violations != 0) as u128,
            no_kexec: !self.kexec as u128,
        }
    }
}

fn count(s: &State, p: &Protocol, memo: &mut HashMap<State, Tally>) -> Tally {
    if let Some(t) = memo.get(s) {
        return *t;
    }
    let next = s.successors(p);
    let t = if next.is_empty() {
        s.terminal_tally()
    } else {
        let mut t = Tally::default();
        for (_, n) in &next {
            t.add(&count(n, p, memo));
        }
        t
    };
    memo.insert(s.clone(), t);
    t
}

fn shortest_failure(init: &State, p: &Protocol) -> Option<(Vec<Step>, u8)> {
    let mut parent: HashMap<State, Option<(State, Step)>> = HashMap::new();
    let mut queue = VecDeque::new();
    parent.insert(init.clone(), None);
    queue.push_back(init.clone());
    while let Some(s) = queue.pop_front() {
        let next = s.successors(p);
        if next.is_empty() {
            if s.failed() {
                let mut path = Vec::new();
                let mut cur = s.clone();
                while let Some(Some((prev, step))) = parent.get(&cur) {
                    path.push(step.clone());
                    cur = prev.clone();
                }
                path.reverse();
                return Some((path, s.violations));
            }
            continue;
        }
        for (step, n) in next {
            if !parent.contains_key(&n) {
                parent.insert(n.clone(), Some((s.clone(), step)));
                queue.push_back(n);
            }
        }
    }
    None
}

/// Explore every interleaving of `p` on `cpus` CPUs (CPU 0 panics).
pub fn explore(p: &Protocol, cpus: usize) -> Exploration {
    let init = State::initial(cpus.max(1));
    let mut memo = HashMap::new();
    let tally = count(&init, p, &mut memo);
    let failure = shortest_failure(&init, p);
    let counterexample_violation = failure.as_ref().and_then(|(_, v)| match *v {
        0 => None,
        v if v & V_DECOMMISSION_DURING_SAVE != 0 => {
            Some("SNP_DECOMMISSION while a CPU was still in or saving the guest")
        }
        _ => Some("SNP_DF_FLUSH while a marked core had not executed WBINVD"),
    });
    Exploration {
        protocol: p.name,
        cpus,
        states: memo.len(),
        tally,
        counterexample: failure.map(|(path, _)| path),
        counterexample_violation,
    }
}
