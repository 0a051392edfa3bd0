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
//! `elfcorehdr=`), `sys/firmware/acpi/tables/{DMAR,IVRS,IORT}`, on device-tree machines `proc/device-tree`
//! (the SMMUv3 node, the window as a `no-map` reserved-memory node, `linux,elfcorehdr`), `sys/class/iommu`,
//! `sys/bus/pci/devices`, and `dev/mem`.
//!
//! Past discovery (the register block's size, which firmware table or tree node names the unit) nothing
//! here depends on the IOMMU's kind: the hand-over goes through `iommu_driver::contract`.

use std::fs::File;
use std::io::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args as ClapArgs;
use iommu_driver::contract::{
    boot_crash, writes_in_place, Attachment, BootOptions, CrashOutcome, DeviceId, IommuDriver, Perm,
};
use iommu_driver::{BootEnv, Policy};
use iommu_dump::{acpi, ElfCore, Firmware, IommuKind};
use iommu_linux::{devtree, iomem};
use iommu_linux::{DevMem, LinuxPlatform, MappedPhys, MappedRegs, Mmio};
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
    /// translations (adopt) or is contained (adopt-scratch). Without it: every mass-storage function (PCI
    /// base class 01) with no driver bound, since any of them may hold the dump target, which no driver has
    /// named yet when `takeover` runs.
    #[arg(long)]
    pub needed: Vec<String>,
    /// The IOMMU kind; with --base it names the unit, else it picks the ACPI table (first found otherwise).
    #[arg(long, value_parser = ["vtd", "amdvi", "smmuv3"])]
    pub iommu: Option<String>,
    /// The unit's MMIO base, overriding discovery (ACPI DMAR/IVRS/IORT, or an arm,smmu-v3 device-tree node); needs --iommu.
    #[arg(long, value_parser = parse_u64, requires = "iommu")]
    pub base: Option<u64>,
    /// The frame window START-END (`/proc/iomem` syntax); by default the `memmap=SIZE$START` on the kernel
    /// command line, else the device tree's `no-map` reserved-memory node named `handover-window@...`.
    #[arg(long, value_parser = parse_region)]
    pub window: Option<Range<u64>>,
    /// How memory is reached through dev/mem: `pread` (x86), `mmap` (arm64, where read() serves only the
    /// kernel's own RAM), or `auto`: pread if it can read the window, else mmap.
    #[arg(long, default_value = "auto", value_parser = ["auto", "pread", "mmap"])]
    pub mem_access: String,
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
    /// The requester ID: VT-d source ID, AMD-Vi device ID; SMMUv3 stream IDs come from it through the host
    /// bridge's `iommu-map` ([`Ready::device_id`]; with ACPI, an identity IORT mapping as QEMU's is assumed).
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
    /// Where `needed` came from: `--needed`, or the default.
    pub needed_from: &'static str,
    /// Device-tree machines: the host bridges' `iommu-map` entries naming the unit (requester ID → stream
    /// ID); `None` where the IDs are the requester IDs themselves (VT-d source IDs, AMD-Vi device IDs).
    pub iommu_map: Option<Vec<(u32, devtree::IommuMapEntry)>>,
    pub functions: Vec<Bdf>,
    /// AMD-Vi: device table entries as Linux sizes the table from IVRS (the crashed kernel's size, which
    /// adoption requires); `None` without an IVRS.
    pub amd_dev_table_entries: Option<u32>,
    /// The crashed kernel's SME encryption bit, from `/proc/vmcore`'s VMCOREINFO (`NUMBER(sme_mask)`): the
    /// bit its AMD-Vi addresses carry; 0 when it does not say.
    pub sme_mask: u64,
}

impl Ready {
    /// The ID the unit knows function `b` by, if it is behind the unit.
    pub fn device_id(&self, b: Bdf) -> Option<DeviceId> {
        let rid = u32::from(b.rid());
        match &self.iommu_map {
            Some(map) => devtree::stream_id(map, rid).map(DeviceId),
            None => Some(DeviceId(rid)),
        }
    }
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

/// The function's sysfs `class` (`0x010802`) names a mass-storage controller: PCI base class 01.
fn mass_storage(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("class"))
        .ok()
        .and_then(|c| u32::from_str_radix(c.trim().trim_start_matches("0x"), 16).ok())
        .is_some_and(|c| c >> 16 == 0x01)
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
    let notes = core.notes().or_else(|e| refuse(format!("{}: notes: {e}", vmcore.display())))?;
    let sme_mask = match iommu_dump::VmcoreInfo::from_notes(&notes).and_then(|i| i.sme_mask()) {
        Some(Ok(m)) => m,
        Some(Err(e)) => return refuse(format!("{}: {e}", vmcore.display())),
        None => 0,
    };
    if old_ram.is_empty() {
        return refuse(format!("{}: no PT_LOAD segments (no crashed kernel's RAM)", vmcore.display()));
    }
    let tree = iomem::read(&root.join("proc/iomem")).or_else(|e| refuse(e.to_string()))?;
    let cmdline = read_text(&root.join("proc/cmdline"), "the kernel command line")?;

    // The unit: --base, or the ACPI table the firmware gave this kernel.
    let want = a.iommu.as_deref().and_then(|n| n.parse::<IommuKind>().ok());
    let mut amd_dev_table_entries = None;
    let dt = root.join("proc/device-tree");
    let mut iommu_map = None;
    let (kind, base, origin) = match (a.base, want) {
        (Some(b), Some(k)) => (k, b, "--base".to_string()),
        _ => match acpi::sysfs_table(&root.join(acpi::SYSFS_TABLES), want) {
            Some((_, p)) => {
                let bytes = std::fs::read(&p).or_else(|e| refuse(format!("{}: {e}", p.display())))?;
                let fw = Firmware::from_bytes(&bytes).or_else(|e| refuse(format!("{}: {e}", p.display())))?;
                let Some(u) = fw.units().into_iter().next() else {
                    return refuse(format!("{}: names no unit", p.display()));
                };
                if let Firmware::Ivrs(ivrs) = &fw {
                    amd_dev_table_entries =
                        ivrs.effective_ivhds().find(|h| h.base == u.base).map(amd_dev_table_entries_of);
                }
                (u.kind, u.base, u.origin)
            }
            // No ACPI table: a device-tree machine (arm64 virt) names its SMMUv3 by `compatible`.
            None if dt.is_dir() && want.is_none_or(|k| k == IommuKind::Smmuv3) => {
                let units = devtree::smmuv3_units(&dt).or_else(|e| refuse(e.to_string()))?;
                let Some((node, reg)) = units.into_iter().next() else {
                    return refuse(format!("no IOMMU: no ACPI table, and no arm,smmu-v3 node in {}", dt.display()));
                };
                if reg.end - reg.start < block_len(IommuKind::Smmuv3) {
                    return refuse(format!(
                        "{}: reg {:#x}-{:#x} is smaller than the SMMUv3's two 64 KiB register pages",
                        node.display(),
                        reg.start,
                        reg.end
                    ));
                }
                let map = devtree::iommu_map(&dt, &node).or_else(|e| refuse(e.to_string()))?;
                if map.is_empty() {
                    return refuse(format!("{}: no iommu-map names it: no PCI function is behind it", node.display()));
                }
                iommu_map = Some(map);
                (IommuKind::Smmuv3, reg.start, format!("device tree {}", node.display()))
            }
            None => return refuse(
                "no IOMMU: no DMAR, IVRS or IORT in sys/firmware/acpi/tables, no device tree (give --iommu and --base)",
            ),
        },
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
    let no_map =
        if dt.is_dir() { devtree::no_map_reserved(&dt).or_else(|e| refuse(e.to_string()))? } else { Vec::new() };
    let dt_window = || no_map.iter().find(|(n, _)| n.starts_with("handover-window")).map(|(_, r)| r.clone());
    let window = match a.window.clone().or_else(|| window_from_cmdline(&cmdline)).or_else(dt_window) {
        Some(w) => w,
        None => {
            return refuse(
                "no frame window: no memmap=SIZE$START on the kernel command line, no handover-window no-map \
                 reserved-memory node in the device tree, and no --window",
            )
        }
    };
    if !window.start.is_multiple_of(4096) || !window.end.is_multiple_of(4096) || window.start >= window.end {
        return refuse(format!("window {:#x}-{:#x}: empty or not 4 KiB aligned", window.start, window.end));
    }
    // Reserved for it: inside a `no-map` reserved-memory range of the device tree (which no kernel maps), or
    // a top-level `Reserved` of /proc/iomem (`memmap=`); and in either case not the kdump kernel's RAM.
    if no_map.iter().any(|(_, r)| r.start <= window.start && window.end <= r.end) {
        if let Some(e) = iomem::overlapping(&tree, &window).find(|e| !e.name.eq_ignore_ascii_case("reserved")) {
            return refuse(format!(
                "window {:#x}-{:#x} overlaps {:?} {:#x}-{:#x} in /proc/iomem",
                window.start,
                window.end,
                e.name,
                e.range.start,
                e.range.end - 1
            ));
        }
    } else {
        iomem::check_window(&tree, &window).or_else(|e| refuse(e.to_string()))?;
    }
    if let Some(r) = old_ram.iter().find(|r| r.start < window.end && window.start < r.end) {
        return refuse(format!(
            "window {:#x}-{:#x} overlaps the crashed kernel's RAM {:#x}-{:#x} (a PT_LOAD of /proc/vmcore)",
            window.start, window.end, r.start, r.end
        ));
    }
    if let Some(h) = elfcorehdr(&cmdline).filter(|h| window.contains(h)) {
        return refuse(format!("window {:#x}-{:#x} holds elfcorehdr={h:#x}", window.start, window.end));
    }
    let dt_hdr = if dt.is_dir() { devtree::elfcorehdr(&dt).or_else(|e| refuse(e.to_string()))? } else { None };
    if let Some(h) = dt_hdr.filter(|h| h.start < window.end && window.start < h.end) {
        return refuse(format!(
            "window {:#x}-{:#x} holds the ELF headers at {:#x}-{:#x} (/chosen/linux,elfcorehdr)",
            window.start, window.end, h.start, h.end
        ));
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
    if a.needed.is_empty() {
        needed = functions
            .iter()
            .copied()
            .filter(|b| {
                let dir = pci.join(b.sysfs_name());
                mass_storage(&dir) && !dir.join("driver").exists()
            })
            .collect();
    }
    let needed_from = if a.needed.is_empty() { "mass-storage functions (PCI class 01)" } else { "--needed" };
    let ready = Ready {
        kind,
        base,
        origin,
        window,
        old_ram,
        own_ram,
        needed,
        needed_from,
        iommu_map,
        functions,
        amd_dev_table_entries,
        sme_mask,
    };
    if let Some(b) = ready.needed.iter().find(|b| ready.device_id(**b).is_none()) {
        return refuse(format!(
            "needed {}: not behind the unit (no iommu-map entry holds its requester ID)",
            b.sysfs_name()
        ));
    }
    Ok(ready)
}

type Hw = LinuxPlatform<MappedRegs, DevMem>;

/// Open the unit's registers and the window through `dev/mem`; a refusal if either cannot be reached.
/// `mem_access`: `pread`, `mmap` or `auto` (pread if it reads the window, else mmap).
pub fn open_platform(root: &Path, r: &Ready, mem_access: &str) -> Result<Hw, Refusal> {
    use iommu_linux::PhysFile;
    let devmem = root.join("dev/mem");
    let regs = MappedRegs::open(&devmem, r.base, block_len(r.kind))
        .or_else(|e| refuse(format!("{}: cannot map the unit's registers at {:#x}: {e}", devmem.display(), r.base)))?;
    let open = |how: &str| -> Result<DevMem, String> {
        let m = match how {
            "pread" => File::options().read(true).write(true).open(&devmem).map(DevMem::Rw),
            _ => MappedPhys::open(&devmem).map(DevMem::Mapped),
        }
        .map_err(|e| format!("{how}: {e}"))?;
        let mut probe = [0u8; 8];
        m.read_at(&mut probe, r.window.start).map_err(|e| format!("{how}: {e}"))?;
        Ok(m)
    };
    let mem = match mem_access {
        "auto" => open("pread").or_else(|e| open("mmap").map_err(|f| format!("{e}; {f}"))),
        how => open(how),
    }
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

/// Map each range of `ram`, shrunk to whole pages, one-to-one with `map_at(start, len)`; the bytes mapped.
fn identity(ram: &[Range<u64>], mut map_at: impl FnMut(u64, u64) -> Result<(), String>) -> Result<u64, String> {
    let mut bytes = 0u64;
    for r in ram {
        let (start, end) = (r.start.next_multiple_of(4096), r.end & !0xfff);
        if start < end {
            map_at(start, end - start)?;
            bytes = bytes.saturating_add(end - start);
        }
    }
    Ok(bytes)
}

/// A fresh domain mapping `ram` one-to-one (read and write), and `id` attached to it; what the device can
/// now reach, in words.
fn identity_domain(
    drv: &mut dyn IommuDriver,
    hw: &mut Hw,
    id: DeviceId,
    ram: &[Range<u64>],
) -> Result<(String, Option<u32>), String> {
    if !drv.translating() {
        return Ok(("untranslated: translation is off (reset-bypass), the device reaches all memory".into(), None));
    }
    let d = drv.create_domain(hw).map_err(|e| e.to_string())?;
    let bytes = identity(ram, |start, len| drv.map_at(hw, d, start, start, len, Perm::RW).map_err(|e| e.to_string()))?;
    drv.attach(hw, id, Attachment::Domain(d)).map_err(|e| e.to_string())?;
    let tag = drv.domain_tag(d);
    let what = format!(
        "domain {} mapping the kdump kernel's RAM one-to-one ({} MiB)",
        tag.map_or_else(|| "?".to_string(), |t| t.to_string()),
        bytes >> 20
    );
    Ok((what, tag))
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
        // SME stays on in a kdump kernel of an SME host; the crashed kernel's mask says whether it was.
        mem_encrypt: r.sme_mask != 0,
        c_bit: r.sme_mask,
    };
    // The bus probe's masters: every PCI function behind the unit.
    let masters: Vec<DeviceId> = r.functions.iter().filter_map(|b| r.device_id(*b)).collect();
    let mut in_place = if matches!(policy, Policy::Adopt | Policy::AdoptScratch) {
        writes_in_place(r.kind, hw, &masters)
    } else {
        Vec::new()
    };
    // A structure outside the crashed kernel's RAM stays unwritable: the driver refuses it when it checks it.
    let mut not_allowed = Vec::new();
    in_place.retain(|(range, why)| match hw.allow_old_write(range.clone(), why) {
        Ok(()) => true,
        Err(e) => {
            not_allowed.push(e.to_string());
            false
        }
    });
    let mut opts = BootOptions::default();
    if let Some(n) = r.amd_dev_table_entries {
        opts.dev_table_entries = n;
    }
    let (mut drv, mut report) = boot_crash(r.kind, hw, &env, opts, policy).map_err(|e| e.to_string())?;
    for &id in &masters {
        let found = drv.device_found(hw, &env, id);
        report.note_found(id, found);
    }
    drv.account(&mut report);
    let as_asked = matches!(report.outcome, CrashOutcome::Reset | CrashOutcome::Adopted);
    let adopted: Vec<u32> = report.adopted.iter().map(|d| d.0).collect();
    let needed: Vec<u32> = r.needed.iter().filter_map(|b| r.device_id(*b)).map(|d| d.0).collect();
    let mut devices = Vec::new();
    let mut failed = false;
    if policy == Policy::AdoptScratch && as_asked {
        for &sid in adopted.iter().filter(|s| !needed.contains(s)) {
            let res = drv.contain(hw, DeviceId(sid)).map_err(|e| e.to_string());
            failed |= res.is_err();
            devices.push(json!({"sid": sid, "action": "contained", "error": res.err()}));
        }
    } else if matches!(policy, Policy::Adopt | Policy::AdoptScratch) {
        for &sid in adopted.iter().filter(|s| !needed.contains(s)) {
            devices.push(json!({"sid": sid, "action": "adopted", "error": Value::Null}));
        }
    }
    for bdf in &r.needed {
        // `check` refused a needed function with no ID.
        let Some(id) = r.device_id(*bdf) else { continue };
        // Reset first: after it the device has forgotten the crashed kernel's rings and buffers, so giving it
        // the new domain cannot let old DMA land in the kdump kernel's RAM.
        let res = reset(*bdf)
            .map_err(|e| format!("function-level reset: {e}"))
            .and_then(|()| identity_domain(drv.as_mut(), hw, id, &r.own_ram));
        failed |= res.is_err();
        let (action, tag, error) = match res {
            Ok((a, tag)) => (a, tag, None),
            Err(e) => ("refused: left as the crash boot left it".to_string(), None, Some(e)),
        };
        devices.push(json!({"sid": id.0, "bdf": bdf.sysfs_name(), "needed": true, "action": action,
                            "domain_tag": tag, "error": error}));
    }
    let c = hw.counts();
    let outcome = match &report.outcome {
        CrashOutcome::NotLive => "not live: translation was off; booted normally".to_string(),
        _ => report.summary().to_string(),
    };
    Ok(json!({
        "ok": !failed && hw.counts().errors == 0,
        "outcome": outcome,
        "as_asked": as_asked,
        "adopted": adopted,
        "problems": report.refused.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "devices": devices,
        "in_place": in_place.iter().map(|(r, why)| json!({"start": r.start, "end": r.end, "what": why})).collect::<Vec<_>>(),
        "in_place_not_old_ram": not_allowed,
        "scratch": drv.scratch_region().map(|s| json!({"start": s.start, "end": s.end})),
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
    let mut hw = match open_platform(&a.root, &ready, &a.mem_access) {
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
    let mem_access = hw.mem().how();
    let needed: Vec<String> = ready.needed.iter().map(|b| b.sysfs_name()).collect();
    let needed = json!(needed);
    let (out, ok) = match res {
        Ok(mut v) => {
            let ok = v["ok"].as_bool().unwrap_or(false);
            v["unit"] = unit;
            v["policy"] = json!(a.policy.name());
            v["window"] = window;
            v["mem_access"] = json!(mem_access);
            v["needed_from"] = json!(ready.needed_from);
            v["needed"] = needed;
            v["ms"] = json!(ms);
            (v, ok)
        }
        Err(e) => (
            json!({"unit": unit, "policy": a.policy.name(), "window": window, "mem_access": mem_access, "ok": false,
                   "needed": needed, "needed_from": ready.needed_from, "error": e, "ms": ms}),
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
