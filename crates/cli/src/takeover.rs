//! `handover takeover`: the crash kernel's IOMMU hand-over, run for real from a kdump kernel's initramfs
//! (its own IOMMU driver off, no device driver bound yet) on the unit the crashed kernel left live.
//!
//! It checks that it may touch the unit (refusing with exit 2 otherwise), runs the driver's crash boot
//! under `--policy` through the userspace platform of `iommu-linux`, contains every other adopted device
//! under `adopt-scratch`, and prepares each `--needed` device for the kdump kernel's own driver: a
//! function-level reset through sysfs (which stops the DMA the crashed kernel started), then a fresh domain
//! mapping exactly the kdump kernel's own RAM one-to-one, since with its IOMMU driver off its DMA API is
//! direct (bus address = physical address).
//!
//! What it reads, all under `--root` (default `/`, a fake tree in tests): `proc/vmcore` (the crashed
//! kernel's RAM: its `PT_LOAD` ranges), `proc/iomem`, `proc/cmdline` (`memmap=SIZE$START`, the window;
//! `elfcorehdr=`), `sys/firmware/acpi/tables/{DMAR,IVRS,IORT}`, `sys/class/iommu`, `sys/bus/pci/devices`,
//! and `dev/mem`.

use std::fs::File;
use std::io::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args as ClapArgs;
use iommu_driver::{amdvi, smmuv3, vtd, BootEnv, Policy};
use iommu_dump::{acpi, ElfCore, Firmware, IommuKind};
use iommu_linux::iomem;
use iommu_linux::{LinuxPlatform, MappedRegs, Mmio};
use serde_json::{json, Value};

use crate::audit::parse_region;
use crate::inspect::parse_u64;

#[derive(ClapArgs, Debug, Clone)]
pub struct Args {
    /// reset-abort, reset-bypass, adopt or adopt-scratch.
    #[arg(long)]
    pub policy: Policy,
    /// A PCI function the kdump kernel needs (`0000:00:04.0` or `00:04.0`; repeatable): reset, then given a
    /// domain that maps the kdump kernel's RAM one-to-one. Every other adopted device keeps its old
    /// translations (adopt) or is contained (adopt-scratch).
    #[arg(long)]
    pub needed: Vec<String>,
    /// The IOMMU kind; with --base it names the unit, else it picks the ACPI table (first found otherwise).
    #[arg(long, value_parser = ["vtd", "amdvi", "smmuv3"])]
    pub iommu: Option<String>,
    /// The unit's MMIO base, when no ACPI table names it (device-tree machines); needs --iommu.
    #[arg(long, value_parser = parse_u64, requires = "iommu")]
    pub base: Option<u64>,
    /// The frame window START-END (`/proc/iomem` syntax); by default the `memmap=SIZE$START` on the kernel command line.
    #[arg(long, value_parser = parse_region)]
    pub window: Option<Range<u64>>,
    /// Where proc/, sys/ and dev/mem are found.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Log every register, memory and frame access to this file.
    #[arg(long)]
    pub log: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// Why `takeover` would not touch the unit (exit 2).
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal(pub String);

fn refuse<T>(why: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(why.into()))
}

/// A PCI function: segment 0 only (the units here are all on segment 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bdf {
    pub bus: u8,
    pub dev: u8,
    pub func: u8,
}

impl Bdf {
    pub fn parse(s: &str) -> Option<Bdf> {
        let t = s.strip_prefix("0000:").unwrap_or(s);
        let (bus, rest) = t.split_once(':')?;
        let (dev, func) = rest.split_once('.')?;
        let short = |x: &str, n: usize| !x.is_empty() && x.len() <= n && x.bytes().all(|c| c.is_ascii_hexdigit());
        if !(short(bus, 2) && short(dev, 2) && short(func, 1)) {
            return None;
        }
        let bus = u8::from_str_radix(bus, 16).ok()?;
        let dev = u8::from_str_radix(dev, 16).ok().filter(|&d| d < 32)?;
        let func = u8::from_str_radix(func, 16).ok().filter(|&f| f < 8)?;
        Some(Bdf { bus, dev, func })
    }
    /// The requester ID: VT-d source ID, AMD-Vi device ID, and the SMMUv3 stream ID under an identity IORT
    /// mapping (QEMU's).
    pub fn rid(self) -> u16 {
        (self.bus as u16) << 8 | (self.dev as u16) << 3 | self.func as u16
    }
    pub fn sysfs_name(self) -> String {
        format!("0000:{:02x}:{:02x}.{}", self.bus, self.dev, self.func)
    }
}

/// The register block's length: what `dev/mem` is mapped for and every register access is checked against.
fn block_len(kind: IommuKind) -> u64 {
    match kind {
        IommuKind::Vtd => 0x1000,
        // The MMIO block QEMU and Linux map (`MMIO_REG_END_OFFSET` rounds up to 16 KiB).
        IommuKind::Amdvi => 0x4000,
        // Register pages 0 and 1, 64 KiB each (SMMUv3 spec 6.1).
        IommuKind::Smmuv3 => 0x2_0000,
    }
}

/// What the checks found: everything the hand-over itself needs.
#[derive(Debug)]
pub struct Ready {
    pub kind: IommuKind,
    pub base: u64,
    pub origin: String,
    pub window: Range<u64>,
    pub old_ram: Vec<Range<u64>>,
    pub own_ram: Vec<Range<u64>>,
    pub needed: Vec<Bdf>,
    pub functions: Vec<Bdf>,
    /// AMD-Vi: device table entries as Linux sizes the table from IVRS (the crashed kernel's size, which
    /// adoption requires); `None` without an IVRS.
    pub amd_dev_table_entries: Option<u32>,
}

/// Linux `find_last_devid_from_ivhd` + `tbl_size`: the last device ID the unit's IVHD entries name (an
/// "all devices" entry means 0xffff), and the device table as a power-of-two number of pages of 32-byte
/// entries for it.
fn amd_dev_table_entries_of(ivhd: &iommu_dump::acpi::ivrs::Ivhd) -> u32 {
    use iommu_dump::acpi::ivrs::DeviceEntry as E;
    let mut last = 0u32;
    for e in &ivhd.entries {
        let id = match e {
            E::All { .. } => 0xffff,
            E::Select { devid, .. } | E::Alias { devid, .. } | E::Extended { devid, .. } => *devid,
            E::Range { end, .. } | E::AliasRange { end, .. } | E::ExtendedRange { end, .. } => *end,
            _ => 0,
        };
        last = last.max(u32::from(id));
    }
    let bytes = ((last + 1) * 32).next_multiple_of(4096).next_power_of_two();
    bytes / 32
}

/// `memparse`: a number (0x hex or decimal) with an optional K/M/G/T suffix.
fn memparse(s: &str) -> Option<u64> {
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1u64 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        'T' | 't' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    parse_u64(num).ok()?.checked_mul(mult)
}

/// `memmap=SIZE$START` (e820 reserved) on a command line, as a range.
pub fn window_from_cmdline(cmdline: &str) -> Option<Range<u64>> {
    cmdline.split_whitespace().filter_map(|w| w.strip_prefix("memmap=")).find_map(|v| {
        let (size, start) = v.split_once('$')?;
        let (size, start) = (memparse(size)?, memparse(start)?);
        Some(start..start.checked_add(size)?)
    })
}

/// `elfcorehdr=[SIZE@]START`: where the kdump kernel reads the crashed kernel's ELF headers from.
fn elfcorehdr(cmdline: &str) -> Option<u64> {
    let v = cmdline.split_whitespace().find_map(|w| w.strip_prefix("elfcorehdr="))?;
    memparse(v.rsplit_once('@').map_or(v, |(_, a)| a))
}

fn read_text(p: &Path, what: &str) -> Result<String, Refusal> {
    std::fs::read_to_string(p).or_else(|e| refuse(format!("{what}: {}: {e}", p.display())))
}

/// Every check that decides whether the unit may be touched, without touching it.
pub fn check(a: &Args) -> Result<Ready, Refusal> {
    let root = &a.root;
    let vmcore = root.join("proc/vmcore");
    if !vmcore.exists() {
        return refuse(format!("not a kdump kernel: no {}", vmcore.display()));
    }
    let core = ElfCore::open(&vmcore).or_else(|e| refuse(format!("{}: {e}", vmcore.display())))?;
    let old_ram = core.ram_ranges();
    if old_ram.is_empty() {
        return refuse(format!("{}: no PT_LOAD segments (no crashed kernel's RAM)", vmcore.display()));
    }
    let tree = iomem::read(&root.join("proc/iomem")).or_else(|e| refuse(e.to_string()))?;
    let cmdline = read_text(&root.join("proc/cmdline"), "the kernel command line")?;

    // The unit: --base, or the ACPI table the firmware gave this kernel.
    let want = a.iommu.as_deref().and_then(|n| n.parse::<IommuKind>().ok());
    let mut amd_dev_table_entries = None;
    let (kind, base, origin) = match (a.base, want) {
        (Some(b), Some(k)) => (k, b, "--base".to_string()),
        _ => {
            let Some((_, p)) = acpi::sysfs_table(&root.join(acpi::SYSFS_TABLES), want) else {
                return refuse("no IOMMU: no DMAR, IVRS or IORT in sys/firmware/acpi/tables (give --iommu and --base)");
            };
            let bytes = std::fs::read(&p).or_else(|e| refuse(format!("{}: {e}", p.display())))?;
            let fw = Firmware::from_bytes(&bytes).or_else(|e| refuse(format!("{}: {e}", p.display())))?;
            let Some(u) = fw.units().into_iter().next() else {
                return refuse(format!("{}: names no unit", p.display()));
            };
            if let Firmware::Ivrs(ivrs) = &fw {
                amd_dev_table_entries = ivrs.effective_ivhds().find(|h| h.base == u.base).map(amd_dev_table_entries_of);
            }
            (u.kind, u.base, u.origin)
        }
    };
    let block =
        base..base.checked_add(block_len(kind)).ok_or_else(|| Refusal(format!("unit base {base:#x} overflows")))?;

    // A kernel driver owns the unit: it registered an IOMMU device, or claimed the registers by name.
    let class = root.join("sys/class/iommu");
    if let Ok(rd) = std::fs::read_dir(&class) {
        let names: Vec<String> = rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into()).collect();
        if !names.is_empty() {
            return refuse(format!(
                "a kernel IOMMU driver owns the unit: {} lists {} (boot the kdump kernel with it off)",
                class.display(),
                names.join(", ")
            ));
        }
    }
    if let Some(e) = iomem::overlapping(&tree, &block).find(|e| !e.name.eq_ignore_ascii_case("reserved")) {
        return refuse(format!(
            "a kernel driver owns the unit's registers: {:?} claims {:#x}-{:#x} in /proc/iomem",
            e.name,
            e.range.start,
            e.range.end - 1
        ));
    }

    // The window: present, page aligned, reserved, not the kdump kernel's RAM, not the crashed kernel's RAM,
    // not the ELF headers the kdump kernel reads /proc/vmcore from.
    let window = match a.window.clone().or_else(|| window_from_cmdline(&cmdline)) {
        Some(w) => w,
        None => return refuse("no frame window: no memmap=SIZE$START on the kernel command line and no --window"),
    };
    if !window.start.is_multiple_of(4096) || !window.end.is_multiple_of(4096) || window.start >= window.end {
        return refuse(format!("window {:#x}-{:#x}: empty or not 4 KiB aligned", window.start, window.end));
    }
    iomem::check_window(&tree, &window).or_else(|e| refuse(e.to_string()))?;
    if let Some(r) = old_ram.iter().find(|r| r.start < window.end && window.start < r.end) {
        return refuse(format!(
            "window {:#x}-{:#x} overlaps the crashed kernel's RAM {:#x}-{:#x} (a PT_LOAD of /proc/vmcore)",
            window.start, window.end, r.start, r.end
        ));
    }
    if let Some(h) = elfcorehdr(&cmdline).filter(|h| window.contains(h)) {
        return refuse(format!("window {:#x}-{:#x} holds elfcorehdr={h:#x}", window.start, window.end));
    }
    if window.start < block.end && block.start < window.end {
        return refuse("the window overlaps the unit's registers");
    }
    let own_ram = iomem::system_ram(&tree);

    // PCI functions, and the needed ones with no driver bound (a bound driver is already doing DMA).
    let pci = root.join("sys/bus/pci/devices");
    let mut functions: Vec<Bdf> = std::fs::read_dir(&pci)
        .map(|rd| rd.filter_map(|e| e.ok()).filter_map(|e| Bdf::parse(&e.file_name().to_string_lossy())).collect())
        .unwrap_or_default();
    functions.sort();
    let mut needed = Vec::new();
    for n in &a.needed {
        let Some(b) = Bdf::parse(n) else { return refuse(format!("--needed {n:?}: not a PCI function BB:DD.F")) };
        let dir = pci.join(b.sysfs_name());
        if !dir.exists() {
            return refuse(format!("--needed {n}: no {}", dir.display()));
        }
        if dir.join("driver").exists() {
            return refuse(format!("--needed {n}: a driver is already bound ({}/driver)", dir.display()));
        }
        needed.push(b);
    }
    Ok(Ready { kind, base, origin, window, old_ram, own_ram, needed, functions, amd_dev_table_entries })
}

type Hw = LinuxPlatform<MappedRegs, File>;

/// Open the unit's registers and the window through `dev/mem`; a refusal if either cannot be reached.
pub fn open_platform(root: &Path, r: &Ready) -> Result<Hw, Refusal> {
    let devmem = root.join("dev/mem");
    let regs = MappedRegs::open(&devmem, r.base, block_len(r.kind))
        .or_else(|e| refuse(format!("{}: cannot map the unit's registers at {:#x}: {e}", devmem.display(), r.base)))?;
    let mem = File::options()
        .read(true)
        .write(true)
        .open(&devmem)
        .or_else(|e| refuse(format!("{}: {e}", devmem.display())))?;
    let mut probe = [0u8; 8];
    use std::os::unix::fs::FileExt;
    mem.read_exact_at(&mut probe, r.window.start)
        .or_else(|e| refuse(format!("{}: cannot read the window at {:#x}: {e}", devmem.display(), r.window.start)))?;
    let mut hw =
        LinuxPlatform::new(regs, mem, r.window.clone(), r.old_ram.clone()).or_else(|e| refuse(e.to_string()))?;
    // A unit that reads as all ones (or all zeros) is not there: the mapping reaches nothing.
    let probe_reg = match r.kind {
        IommuKind::Vtd => hw.read64(iommu_spec::vtd::off::CAP),
        IommuKind::Amdvi => hw.read64(iommu_spec::amdvi::off::EXT_FEATURES),
        IommuKind::Smmuv3 => hw.read32(iommu_spec::smmuv3::off::IDR0) as u64,
    };
    if probe_reg == 0 || probe_reg == u64::MAX || probe_reg == u32::MAX as u64 || hw.counts().errors > 0 {
        return refuse(format!("{}: the unit's registers at {:#x} read {probe_reg:#x}", devmem.display(), r.base));
    }
    Ok(hw)
}

/// The crashed kernel's structures an adopting AMD-Vi or SMMUv3 driver writes in place (device table, command
/// buffer, event log, completion-wait semaphore; stream table): the only old memory a policy may write.
fn in_place_structures(kind: IommuKind, hw: &mut Hw, policy: Policy) -> Vec<(Range<u64>, &'static str)> {
    use iommu_spec::amdvi::{off as aoff, DevTableBase, ExclusionBase, RingBase};
    use iommu_spec::smmuv3::{off as soff, StrtabBase, StrtabBaseCfg, StrtabFmt};
    if !matches!(policy, Policy::Adopt | Policy::AdoptScratch) {
        return Vec::new();
    }
    let mut out = Vec::new();
    match kind {
        IommuKind::Vtd => {}
        IommuKind::Amdvi => {
            let dt = DevTableBase::from_bits(hw.read64(aoff::DEV_TABLE_BASE));
            out.push((dt.table()..dt.table().saturating_add(dt.bytes()), "device table"));
            let cb = RingBase::from_bits(hw.read64(aoff::CMD_BUF_BASE));
            out.push((cb.ring()..cb.ring().saturating_add(cb.bytes()), "command buffer"));
            let el = RingBase::from_bits(hw.read64(aoff::EVENT_LOG_BASE));
            out.push((el.ring()..el.ring().saturating_add(el.bytes()), "event log"));
            let sem = ExclusionBase::from_bits(hw.read64(aoff::EXCL_BASE)).address();
            if sem != 0 {
                out.push((sem..sem.saturating_add(4096), "completion-wait page"));
            }
        }
        IommuKind::Smmuv3 => {
            let base = StrtabBase::from_bits(hw.read64(soff::STRTAB_BASE)).table();
            let cfg = StrtabBaseCfg::from_bits(hw.read32(soff::STRTAB_BASE_CFG));
            // The whole table the registers describe: linear (64-byte STEs) or the L1 descriptors; L2 tables are
            // found through L1 by the driver and stay read-only here unless they lie inside.
            let bytes = if cfg.fmt() == StrtabFmt::TwoLevel {
                (1u64 << cfg.log2size().saturating_sub(cfg.split()).min(20)) * 8
            } else {
                (1u64 << cfg.log2size().min(20)) * 64
            };
            out.push((base..base.saturating_add(bytes.next_multiple_of(4096)), "stream table"));
        }
    }
    out
}

/// The driver of whichever kind: one small function boots it and the methods below are all the hand-over
/// uses, so it can be switched to the driver's common contract in one place.
enum Drv {
    Vtd(vtd::Vtd),
    Amdvi(amdvi::Amdvi),
    Smmuv3(smmuv3::Smmuv3),
}

/// What the crash boot did, in common terms.
struct Booted {
    drv: Drv,
    outcome: String,
    /// The policy was carried out (adopted, or reset as asked); false when adoption fell back to a reset.
    as_asked: bool,
    adopted: Vec<u32>,
    problems: Vec<String>,
}

fn crash_boot(r: &Ready, hw: &mut Hw, env: &BootEnv, policy: Policy, masters: &[u32]) -> Result<Booted, String> {
    let kind = r.kind;
    let s = |e: &dyn std::fmt::Display| e.to_string();
    match kind {
        IommuKind::Vtd => {
            let (v, r) = vtd::Vtd::init_crash(hw, env, vtd::VtdOptions::default(), policy).map_err(|e| s(&e))?;
            let (outcome, as_asked) = match &r.outcome {
                vtd::HandoverOutcome::NotLive => ("not live: translation was off; booted normally".into(), false),
                vtd::HandoverOutcome::Reset => (format!("reset ({policy})"), true),
                vtd::HandoverOutcome::Adopted => (format!("adopted {} devices", r.adopted.len()), true),
                vtd::HandoverOutcome::FellBack(why) => (format!("fell back to reset-abort: {why}"), false),
            };
            let adopted = r.adopted.iter().map(|&x| x as u32).collect();
            let problems = r.problems.iter().map(|p| p.to_string()).collect();
            Ok(Booted { drv: Drv::Vtd(v), outcome, as_asked, adopted, problems })
        }
        IommuKind::Amdvi => {
            let mut opts = amdvi::AmdOptions::default();
            if let Some(n) = r.amd_dev_table_entries {
                opts.dev_table_entries = n;
            }
            let (v, r) = amdvi::Amdvi::init_crash(hw, env, opts, policy).map_err(|e| s(&e))?;
            let (outcome, as_asked) = match &r.outcome {
                amdvi::AmdOutcome::NotLive => ("not live: translation was off; booted normally".into(), false),
                amdvi::AmdOutcome::Reset => (format!("reset ({policy})"), true),
                amdvi::AmdOutcome::Adopted => (format!("reused the old structures, adopted {}", r.adopted.len()), true),
                amdvi::AmdOutcome::FellBack(why) => (format!("fell back to reset-abort: {why}"), false),
            };
            let adopted = r.adopted.iter().map(|&x| x as u32).collect();
            let problems = r.problems.iter().map(|p| p.to_string()).collect();
            Ok(Booted { drv: Drv::Amdvi(v), outcome, as_asked, adopted, problems })
        }
        IommuKind::Smmuv3 => {
            let (mut v, r) = smmuv3::Smmuv3::init_crash(hw, env, policy).map_err(|e| s(&e))?;
            let (mut adopted, mut problems) = (Vec::new(), Vec::new());
            for &sid in masters {
                match v.insert_master(hw, env, sid) {
                    Ok(Some(_)) => adopted.push(sid),
                    Ok(None) => {}
                    Err(p) => problems.push(p.to_string()),
                }
            }
            let (outcome, as_asked) = match &r.outcome {
                smmuv3::SmmuOutcome::NotLive => ("not live: SMMUEN was off; booted normally".into(), false),
                smmuv3::SmmuOutcome::Reset => (format!("reset ({policy})"), true),
                smmuv3::SmmuOutcome::Adopted => {
                    (format!("adopted the stream table, {} masters live", adopted.len()), true)
                }
                smmuv3::SmmuOutcome::FellBack(why) => (format!("fell back to reset-abort: {why}"), false),
            };
            Ok(Booted { drv: Drv::Smmuv3(v), outcome, as_asked, adopted, problems })
        }
    }
}

impl Drv {
    fn contain(&mut self, hw: &mut Hw, sid: u32) -> Result<(), String> {
        match self {
            Drv::Vtd(v) => v.contain(hw, sid as u16).map_err(|e| e.to_string()),
            Drv::Amdvi(v) => v.contain(hw, sid as u16).map_err(|e| e.to_string()),
            Drv::Smmuv3(v) => v.contain(hw, sid).map_err(|e| e.to_string()),
        }
    }

    fn scratch_region(&self) -> Option<Range<u64>> {
        match self {
            Drv::Vtd(v) => v.scratch_region(),
            Drv::Amdvi(v) => v.scratch_region(),
            Drv::Smmuv3(v) => v.scratch_region(),
        }
    }

    /// A fresh domain mapping `ram` one-to-one (read and write), and `sid` attached to it. Returns what the
    /// device can now reach, in words.
    fn identity_domain(&mut self, hw: &mut Hw, sid: u32, ram: &[Range<u64>]) -> Result<String, String> {
        match self {
            Drv::Vtd(v) => {
                if !v.translating() {
                    return Ok("untranslated: translation is off (reset-bypass), the device reaches all memory".into());
                }
                let d = v.create_domain(hw).map_err(|e| e.to_string())?;
                let bytes = identity(ram, |start, len| {
                    v.map_at(hw, d, start, start, len, true, true).map_err(|e| e.to_string())
                })?;
                v.attach(hw, sid as u16, vtd::Attachment::Domain(d)).map_err(|e| e.to_string())?;
                Ok(format!(
                    "domain {} mapping the kdump kernel's RAM one-to-one ({} MiB)",
                    v.domain(d).map_or(0, |x| x.did),
                    bytes >> 20
                ))
            }
            Drv::Amdvi(v) => {
                if !v.translating() {
                    return Ok("untranslated: translation is off (reset-bypass), the device reaches all memory".into());
                }
                let d = v.create_domain(hw).map_err(|e| e.to_string())?;
                let bytes = identity(ram, |start, len| {
                    v.map_at(hw, d, start, start, len, true, true).map_err(|e| e.to_string())
                })?;
                v.attach(hw, sid as u16, amdvi::Attachment::Domain(d)).map_err(|e| e.to_string())?;
                Ok(format!(
                    "domain {} mapping the kdump kernel's RAM one-to-one ({} MiB)",
                    v.domain(d).map_or(0, |x| x.id),
                    bytes >> 20
                ))
            }
            // The SMMUv3 driver hands out IOVAs from an allocator only (no map at a chosen IOVA), so the
            // kdump kernel's direct DMA cannot be given its one-to-one domain yet.
            Drv::Smmuv3(_) => Err("the SMMUv3 driver has no map at a chosen IOVA: no one-to-one domain".into()),
        }
    }
}

/// Map each range of `ram`, shrunk to whole pages, one-to-one with `map_at(start, len)`; the bytes mapped.
fn identity(ram: &[Range<u64>], mut map_at: impl FnMut(u64, u64) -> Result<(), String>) -> Result<u64, String> {
    let mut bytes = 0u64;
    for r in ram {
        let (start, end) = (r.start.next_multiple_of(4096), r.end & !0xfff);
        if start < end {
            map_at(start, end - start)?;
            bytes += end - start;
        }
    }
    Ok(bytes)
}

/// The whole hand-over on an opened platform: boot, containment, needed devices. `reset` performs a
/// function-level reset of one device (sysfs in the real run).
fn hand_over(
    r: &Ready,
    hw: &mut Hw,
    policy: Policy,
    reset: &mut dyn FnMut(Bdf) -> Result<(), String>,
) -> Result<Value, String> {
    let env = BootEnv {
        crash_kernel: true,
        ram: r.old_ram.clone(),
        // The largest range of the kdump kernel's own RAM (BootEnv holds one); the rest is not in `ram`
        // either, so a table there is refused as not RAM.
        crash_region: r.own_ram.iter().max_by_key(|x| x.end - x.start).cloned(),
        mem_encrypt: false,
        c_bit: 0,
    };
    let in_place = in_place_structures(r.kind, hw, policy);
    for (range, why) in &in_place {
        hw.allow_old_write(range.clone(), why)
            .map_err(|e| format!("{why} at {:#x}-{:#x}: {e}", range.start, range.end))?;
    }
    let masters: Vec<u32> = r.functions.iter().map(|b| b.rid() as u32).collect();
    let mut b = crash_boot(r, hw, &env, policy, &masters)?;
    let needed: Vec<u32> = r.needed.iter().map(|b| b.rid() as u32).collect();
    let mut devices = Vec::new();
    let mut failed = false;
    if policy == Policy::AdoptScratch && b.as_asked {
        for &sid in b.adopted.iter().filter(|s| !needed.contains(s)) {
            let res = b.drv.contain(hw, sid);
            failed |= res.is_err();
            devices.push(json!({"sid": sid, "action": "contained", "error": res.err()}));
        }
    } else if matches!(policy, Policy::Adopt | Policy::AdoptScratch) {
        for &sid in b.adopted.iter().filter(|s| !needed.contains(s)) {
            devices.push(json!({"sid": sid, "action": "adopted", "error": Value::Null}));
        }
    }
    for bdf in &r.needed {
        let sid = bdf.rid() as u32;
        // Reset first: after it the device has forgotten the crashed kernel's rings and buffers, so giving it
        // the new domain cannot let old DMA land in the kdump kernel's RAM.
        let res = reset(*bdf)
            .map_err(|e| format!("function-level reset: {e}"))
            .and_then(|()| b.drv.identity_domain(hw, sid, &r.own_ram));
        failed |= res.is_err();
        let (action, error) = match res {
            Ok(a) => (a, None),
            Err(e) => ("refused: left as the crash boot left it".to_string(), Some(e)),
        };
        devices.push(json!({"sid": sid, "bdf": bdf.sysfs_name(), "needed": true, "action": action, "error": error}));
    }
    let c = hw.counts();
    Ok(json!({
        "ok": !failed && hw.counts().errors == 0,
        "outcome": b.outcome,
        "as_asked": b.as_asked,
        "adopted": b.adopted,
        "problems": b.problems,
        "devices": devices,
        "in_place": in_place.iter().map(|(r, why)| json!({"start": r.start, "end": r.end, "what": why})).collect::<Vec<_>>(),
        "scratch": b.drv.scratch_region().map(|s| json!({"start": s.start, "end": s.end})),
        "window_used": {"start": hw.window_used().start, "end": hw.window_used().end, "frames": c.frames},
        "accesses": {"reg_reads": c.reg_reads, "reg_writes": c.reg_writes, "window_reads": c.window_reads,
                     "window_writes": c.window_writes, "old_reads": c.old_reads, "old_writes": c.old_writes,
                     "errors": c.errors},
        "access_errors": hw.errors().iter().map(|e| e.to_string()).collect::<Vec<_>>(),
    }))
}

/// Function-level reset through sysfs (`/sys/bus/pci/devices/BDF/reset`, Linux `reset_store`).
fn sysfs_reset(root: &Path, b: Bdf) -> Result<(), String> {
    let p = root.join("sys/bus/pci/devices").join(b.sysfs_name()).join("reset");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .and_then(|mut f| f.write_all(b"1"))
        .map_err(|e| format!("{}: {e}", p.display()))
}

fn hex_list(v: &[u32]) -> String {
    v.iter().map(|s| format!("{s:#06x}")).collect::<Vec<_>>().join(" ")
}

pub fn run(a: &Args) -> Result<ExitCode, String> {
    let refused = |why: String, json: bool| {
        if json {
            println!("{}", json!({"policy": a.policy.name(), "refused": why}));
        }
        eprintln!("handover takeover: refused: {why}");
        Ok(ExitCode::from(2))
    };
    let ready = match check(a) {
        Ok(r) => r,
        Err(Refusal(why)) => return refused(why, a.json),
    };
    let mut hw = match open_platform(&a.root, &ready) {
        Ok(h) => h,
        Err(Refusal(why)) => return refused(why, a.json),
    };
    if let Some(p) = &a.log {
        let f = File::create(p).map_err(|e| format!("{}: {e}", p.display()))?;
        hw.set_log(Box::new(std::io::BufWriter::new(f)));
    }
    let started = std::time::Instant::now();
    let root = a.root.clone();
    let res = hand_over(&ready, &mut hw, a.policy, &mut |b| sysfs_reset(&root, b));
    let ms = started.elapsed().as_millis() as u64;
    let unit = json!({"kind": ready.kind.name(), "base": ready.base, "origin": ready.origin});
    let window = json!({"start": ready.window.start, "end": ready.window.end});
    let (out, ok) = match res {
        Ok(mut v) => {
            let ok = v["ok"].as_bool().unwrap_or(false);
            v["unit"] = unit;
            v["policy"] = json!(a.policy.name());
            v["window"] = window;
            v["ms"] = json!(ms);
            (v, ok)
        }
        Err(e) => (
            json!({"unit": unit, "policy": a.policy.name(), "window": window, "ok": false, "error": e, "ms": ms}),
            false,
        ),
    };
    if a.json {
        println!("{out}");
    } else {
        print!("{}", human(&out));
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn human(v: &Value) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let u = &v["unit"];
    let _ = writeln!(
        s,
        "unit: {} at {:#x} ({}); policy {}",
        u["kind"].as_str().unwrap_or("?"),
        u["base"].as_u64().unwrap_or(0),
        u["origin"].as_str().unwrap_or("?"),
        v["policy"].as_str().unwrap_or("?")
    );
    if let Some(e) = v["error"].as_str() {
        let _ = writeln!(s, "FAILED: {e}");
        return s;
    }
    let _ = writeln!(s, "crash boot: {}", v["outcome"].as_str().unwrap_or("?"));
    let adopted: Vec<u32> =
        v["adopted"].as_array().map_or(Vec::new(), |a| a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32).collect());
    let _ = writeln!(s, "adopted: {}", if adopted.is_empty() { "none".into() } else { hex_list(&adopted) });
    for p in v["problems"].as_array().into_iter().flatten() {
        let _ = writeln!(s, "refused entry: {}", p.as_str().unwrap_or("?"));
    }
    for d in v["devices"].as_array().into_iter().flatten() {
        let sid = d["sid"].as_u64().unwrap_or(0);
        let err = d["error"].as_str().map(|e| format!(" — {e}")).unwrap_or_default();
        let _ = writeln!(s, "device {sid:#06x}: {}{err}", d["action"].as_str().unwrap_or("?"));
    }
    let w = &v["window_used"];
    let _ = writeln!(
        s,
        "window: {} frames used from {:#x}; accesses: {}; {} ms",
        w["frames"],
        w["start"].as_u64().unwrap_or(0),
        v["accesses"],
        v["ms"]
    );
    for e in v["access_errors"].as_array().into_iter().flatten() {
        let _ = writeln!(s, "access error: {}", e.as_str().unwrap_or("?"));
    }
    let _ = writeln!(s, "{}", if v["ok"].as_bool() == Some(true) { "takeover: ok" } else { "takeover: INCOMPLETE" });
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_the_reserving_memmap_on_the_command_line() {
        let c = "console=ttyS0 memmap=exactmap memmap=640K@0 memmap=8M$0x76000000 elfcorehdr=5225844K";
        assert_eq!(window_from_cmdline(c), Some(0x7600_0000..0x7680_0000));
        assert_eq!(window_from_cmdline("memmap=8M@0x76000000"), None, "@ is usable RAM, not a reservation");
        assert_eq!(window_from_cmdline("memmap=16E$0xffff000000000000"), None, "size overflows");
        assert_eq!(window_from_cmdline("memmap=1G$0xffffffffc0000001"), None, "end wraps");
        assert_eq!(elfcorehdr(c), Some(5_225_844 * 1024));
        assert_eq!(elfcorehdr("elfcorehdr=0x1000@0x7f000000"), Some(0x7f00_0000));
    }

    #[test]
    fn pci_functions_parse_with_or_without_the_segment_and_give_their_requester_id() {
        assert_eq!(Bdf::parse("0000:00:04.0").map(Bdf::rid), Some(0x20));
        assert_eq!(Bdf::parse("01:1f.7").map(Bdf::rid), Some(0x1ff));
        for bad in ["00:20.0", "00:04.8", "00:04", "100:00.0", "00:+4.0", "0001:00:04.0", ""] {
            assert_eq!(Bdf::parse(bad), None, "{bad}");
        }
        assert_eq!(Bdf::parse("00:04.0").unwrap().sysfs_name(), "0000:00:04.0");
    }

    /// QEMU's q35 amd-iommu IVRS names bus 0 only: Linux gives it an 8 KiB table (256 entries).
    #[test]
    fn the_amd_device_table_is_sized_from_the_last_device_id_the_ivrs_names() {
        let bytes =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/acpi/q35-amdvi-ivrs.bin")).unwrap();
        let Firmware::Ivrs(ivrs) = Firmware::from_bytes(&bytes).unwrap() else { panic!("not an IVRS") };
        let h = ivrs.effective_ivhds().next().unwrap();
        assert_eq!(amd_dev_table_entries_of(h), 256);
        let mut wide = h.clone();
        wide.entries.push(iommu_dump::acpi::ivrs::DeviceEntry::Select { devid: 0x0100, dte: 0 });
        assert_eq!(amd_dev_table_entries_of(&wide), 512, "0x101 entries round up to 16 KiB");
        wide.entries.push(iommu_dump::acpi::ivrs::DeviceEntry::All { dte: 0 });
        assert_eq!(amd_dev_table_entries_of(&wide), 65536);
    }
}
