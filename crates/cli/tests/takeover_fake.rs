//! `handover takeover` on a fake kdump kernel: a directory holding proc/, sys/ and a plain file as dev/mem.
//! Every refusal the command promises exits 2 with its cause, before anything is written; and when it does
//! run, nothing outside the window and the unit's registers changes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use iommu_driver::{MemError, MemErrorKind, PhysMem};
use iommu_dump::write_core;

/// The fake machine: the crashed kernel's RAM 0x10000-0x30000, the window 0x40000-0x50000 (reserved with
/// memmap=), the kdump kernel's RAM 0x60000-0x80000, the VT-d unit's registers at 0x80000, dev/mem 1 MiB.
const OLD: std::ops::Range<u64> = 0x1_0000..0x3_0000;
const WINDOW: std::ops::Range<u64> = 0x4_0000..0x5_0000;
const REGS: u64 = 0x8_0000;
const DEVMEM: usize = 0x10_0000;

struct Zeros;
impl PhysMem for Zeros {
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        if OLD.contains(&pa) {
            buf.fill(0);
            Ok(())
        } else {
            Err(MemError { addr: pa, kind: MemErrorKind::NotRam })
        }
    }
    fn write(&mut self, pa: u64, _: &[u8]) -> Result<(), MemError> {
        Err(MemError { addr: pa, kind: MemErrorKind::ReadOnly })
    }
}

struct Fake {
    root: PathBuf,
}

const IOMEM: &str = "\
00000000-0000ffff : Reserved
00040000-0004ffff : Reserved
00060000-0007ffff : System RAM
00080000-00080fff : reserved
";

impl Fake {
    fn new(name: &str) -> Fake {
        let root = std::env::temp_dir().join(format!("handover-takeover-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["proc", "sys/class/iommu", "sys/bus/pci/devices/0000:00:04.0", "sys/firmware/acpi/tables", "dev"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let pages: BTreeSet<u64> = OLD.step_by(4096).collect();
        let mut f = std::fs::File::create(root.join("proc/vmcore")).unwrap();
        write_core(&Zeros, &pages, None, &mut f).unwrap();
        std::fs::write(root.join("proc/iomem"), IOMEM).unwrap();
        std::fs::write(root.join("proc/cmdline"), "console=ttyS0 memmap=64K$0x40000 elfcorehdr=0x7f000\n").unwrap();
        std::fs::write(root.join("sys/bus/pci/devices/0000:00:04.0/reset"), "").unwrap();
        // Registers: VER, CAP (a q35 intel-iommu's), ECAP with QI, GSTS with translation on, RTADDR in old RAM.
        let mut mem = vec![0u8; DEVMEM];
        let mut reg = |off: usize, v: u64| mem[REGS as usize + off..][..8].copy_from_slice(&v.to_le_bytes());
        reg(0x0, 0x10);
        reg(0x8, 0x00d2_0082_3e22_0462);
        reg(0x10, 0x0000_0000_00f0_101e);
        reg(0x18, 0xc700_0000u64 << 32);
        reg(0x20, OLD.start);
        std::fs::write(root.join("dev/mem"), &mem).unwrap();
        Fake { root }
    }

    fn run(&self, extra: &[&str]) -> Output {
        self.run_at("0x80000", extra)
    }

    fn run_at(&self, base: &str, extra: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_handover"))
            .args(["takeover", "--policy", "adopt", "--iommu", "vtd", "--base", base, "--root"])
            .arg(&self.root)
            .args(extra)
            .output()
            .unwrap()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn refused(out: &Output, cause: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains("refused") && err.contains(cause), "want {cause:?} in: {err}");
}

fn unchanged(fake: &Fake, before: &[u8]) {
    assert_eq!(std::fs::read(fake.path("dev/mem")).unwrap(), before, "dev/mem was written");
}

/// A `VMCOREINFO` note as Linux `append_elf_note` lays it out.
fn vmcoreinfo(text: &str) -> Vec<u8> {
    iommu_dump::notes::note(b"VMCOREINFO", 0, text.as_bytes())
}

/// The crashed kernel's SME mask comes from /proc/vmcore's VMCOREINFO; one it cannot read is a refusal before
/// anything is touched (the old addresses would be misread).
#[test]
fn an_unreadable_sme_mask_in_vmcoreinfo_is_a_refusal() {
    let f = Fake::new("smemask");
    let pages: BTreeSet<u64> = OLD.step_by(4096).collect();
    let note = vmcoreinfo("OSRELEASE=6.12\nNUMBER(sme_mask)=0x8000000000000\n");
    let mut file = std::fs::File::create(f.path("proc/vmcore")).unwrap();
    write_core(&Zeros, &pages, Some(&note), &mut file).unwrap();
    let before = std::fs::read(f.path("dev/mem")).unwrap();
    refused(&f.run(&[]), "VMCOREINFO NUMBER(sme_mask)");
    unchanged(&f, &before);
}

#[test]
fn outside_a_kdump_kernel_it_refuses_no_proc_vmcore() {
    let f = Fake::new("novmcore");
    std::fs::remove_file(f.path("proc/vmcore")).unwrap();
    let before = std::fs::read(f.path("dev/mem")).unwrap();
    refused(&f.run(&[]), "not a kdump kernel");
    unchanged(&f, &before);
}

#[test]
fn a_kernel_iommu_driver_owning_the_unit_is_a_refusal() {
    let f = Fake::new("class");
    std::fs::create_dir_all(f.path("sys/class/iommu/dmar0")).unwrap();
    let before = std::fs::read(f.path("dev/mem")).unwrap();
    refused(&f.run(&[]), "kernel IOMMU driver owns the unit");
    unchanged(&f, &before);

    let f = Fake::new("claimed");
    std::fs::write(f.path("proc/iomem"), format!("{IOMEM}  00080000-00080fff : dmar0\n")).unwrap();
    refused(&f.run(&[]), "\"dmar0\" claims 0x80000-0x80fff");
}

#[test]
fn registers_dev_mem_cannot_reach_are_a_refusal() {
    let f = Fake::new("regs");
    let before = std::fs::read(f.path("dev/mem")).unwrap();
    refused(&f.run_at("0x90000", &[]), "registers at 0x90000 read 0x0");
    unchanged(&f, &before);
    std::fs::remove_file(f.path("dev/mem")).unwrap();
    refused(&f.run(&[]), "cannot map the unit's registers");
}

#[test]
fn a_window_the_kdump_kernel_uses_or_did_not_reserve_is_a_refusal() {
    let f = Fake::new("window");
    let before = std::fs::read(f.path("dev/mem")).unwrap();
    refused(&f.run(&["--window", "0x70000-0x78000"]), "overlaps the kdump kernel's own RAM");
    refused(&f.run(&["--window", "0x50000-0x58000"]), "not inside one top-level Reserved");
    refused(&f.run(&["--window", "0x20000-0x28000"]), "not inside one top-level Reserved");
    std::fs::write(f.path("proc/iomem"), format!("{IOMEM}00010000-0002ffff : Reserved\n")).unwrap();
    refused(&f.run(&["--window", "0x20000-0x28000"]), "overlaps the crashed kernel's RAM");
    std::fs::write(f.path("proc/cmdline"), "console=ttyS0 elfcorehdr=0x48000\n").unwrap();
    refused(&f.run(&[]), "no frame window");
    refused(&f.run(&["--window", "0x40000-0x50000"]), "holds elfcorehdr=0x48000");
    unchanged(&f, &before);
}

#[test]
fn a_needed_device_with_a_driver_bound_is_a_refusal() {
    let f = Fake::new("bound");
    std::fs::create_dir_all(f.path("sys/bus/pci/devices/0000:00:04.0/driver")).unwrap();
    let before = std::fs::read(f.path("dev/mem")).unwrap();
    refused(&f.run(&["--needed", "00:04.0"]), "a driver is already bound");
    refused(&f.run(&["--needed", "00:05.0"]), "no ");
    refused(&f.run(&["--needed", "00:04"]), "not a PCI function");
    unchanged(&f, &before);
}

/// The fake unit never acknowledges a command, so the crash boot stops at the first status wait; whatever
/// it wrote by then is in the window or the registers.
#[test]
fn a_run_on_a_unit_that_never_acknowledges_writes_only_the_window_and_registers() {
    let f = Fake::new("run");
    let before = std::fs::read(f.path("dev/mem")).unwrap();
    let out = f.run(&["--needed", "0000:00:04.0", "--json", "--log", f.path("log.txt").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().unwrap().contains("QIES"), "{v}");
    let after = std::fs::read(f.path("dev/mem")).unwrap();
    let changed: Vec<u64> = (0..DEVMEM).filter(|&i| before[i] != after[i]).map(|i| i as u64).collect();
    assert!(!changed.is_empty());
    let allowed = |a: &u64| WINDOW.contains(a) || (REGS..REGS + 0x1000).contains(a);
    let stray: Vec<&u64> = changed.iter().filter(|a| !allowed(a)).collect();
    assert!(stray.is_empty(), "written outside the window and registers: {stray:#x?}");
    let log = std::fs::read_to_string(f.path("log.txt")).unwrap();
    assert!(log.lines().any(|l| l.starts_with("W32 reg+0x18 <- ")), "GCMD writes are logged");
    assert!(Path::new(&f.path("sys/bus/pci/devices/0000:00:04.0/reset")).exists());
}

/// An arm64 kdump kernel as QEMU's `virt` gives it: no ACPI, the SMMUv3 a device-tree node, the window a
/// `no-map` reserved-memory node (not in /proc/iomem at all), `linux,elfcorehdr` in /chosen, memory reached
/// by mmap. The fake SMMU never acknowledges CR0, so the boot stops there; the unit and the window were found
/// from the tree, and nothing outside the window and the SMMU's registers changed.
#[test]
fn on_a_device_tree_machine_the_smmu_and_the_window_come_from_the_tree() {
    const SMMU: u64 = 0xc_0000;
    let f = Fake::new("dt");
    let cells = |v: &[u32]| v.iter().flat_map(|c| c.to_be_bytes()).collect::<Vec<u8>>();
    let dt = f.path("proc/device-tree");
    let prop = |node: &str, name: &str, v: &[u8]| {
        std::fs::create_dir_all(dt.join(node)).unwrap();
        std::fs::write(dt.join(node).join(name), v).unwrap();
    };
    prop("", "#address-cells", &cells(&[2]));
    prop("", "#size-cells", &cells(&[2]));
    prop("smmuv3@c0000", "compatible", b"arm,smmu-v3\0");
    prop("smmuv3@c0000", "reg", &cells(&[0, SMMU as u32, 0, 0x2_0000]));
    prop("smmuv3@c0000", "phandle", &cells(&[0x8005]));
    prop("smmuv3@c0000", "#iommu-cells", &cells(&[1]));
    // Bus 0 devices 0-3 only: 00:04.0 (requester ID 0x20) is not behind the SMMU.
    prop("pcie@10000000", "iommu-map", &cells(&[0, 0x8005, 0x100, 0x20]));
    prop("reserved-memory", "#address-cells", &cells(&[2]));
    prop("reserved-memory", "#size-cells", &cells(&[2]));
    prop("reserved-memory/handover-window@40000", "reg", &cells(&[0, 0x4_0000, 0, 0x1_0000]));
    prop("reserved-memory/handover-window@40000", "no-map", b"");
    prop("chosen", "linux,elfcorehdr", &cells(&[0, 0x7_f000, 0, 0x1000]));
    std::fs::write(f.path("proc/cmdline"), "console=ttyAMA0\n").unwrap();
    std::fs::write(f.path("proc/iomem"), "00060000-0007ffff : System RAM\n").unwrap();
    let mut mem = std::fs::read(f.path("dev/mem")).unwrap();
    mem[SMMU as usize..][..4].copy_from_slice(&0x0a00_0e1bu32.to_le_bytes()); // IDR0: 2-level, stage 1
    mem[SMMU as usize + 4..][..4].copy_from_slice(&0x0000_0010u32.to_le_bytes()); // IDR1: SIDSIZE 16
    std::fs::write(f.path("dev/mem"), &mem).unwrap();
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_handover"))
            .args(["takeover", "--policy", "adopt", "--json", "--root"])
            .arg(&f.root)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&["--mem-access", "mmap"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["unit"]["kind"], "smmuv3", "{v}");
    assert_eq!(v["unit"]["base"], SMMU);
    assert!(v["unit"]["origin"].as_str().unwrap().contains("device tree"), "{v}");
    assert_eq!((v["window"]["start"].as_u64(), v["window"]["end"].as_u64()), (Some(0x4_0000), Some(0x5_0000)));
    assert_eq!(v["mem_access"], "mmap");
    let after = std::fs::read(f.path("dev/mem")).unwrap();
    let stray: Vec<usize> = (0..DEVMEM)
        .filter(|&i| mem[i] != after[i])
        .filter(|&i| !WINDOW.contains(&(i as u64)) && !(SMMU..SMMU + 0x2_0000).contains(&(i as u64)))
        .collect();
    assert!(stray.is_empty(), "written outside the window and the SMMU's registers: {stray:#x?}");

    // A needed function the iommu-map does not send to the SMMU; no iommu-map at all.
    refused(&run(&["--needed", "00:04.0"]), "not behind the unit");
    prop("pcie@10000000", "iommu-map", &cells(&[0, 0x9999, 0, 0x1_0000]));
    refused(&run(&[]), "no iommu-map names it");
    prop("pcie@10000000", "iommu-map", &cells(&[0, 0x8005, 0x100, 0x28]));
    let v: serde_json::Value = serde_json::from_slice(&run(&["--needed", "00:04.0"]).stdout).unwrap();
    assert_eq!(v["needed"], serde_json::json!(["0000:00:04.0"]), "behind it once the map covers 0x20: {v}");

    // The ELF headers inside the window, a window in the kdump kernel's RAM, no SMMU node: refusals.
    prop("chosen", "linux,elfcorehdr", &cells(&[0, 0x4_8000, 0, 0x1000]));
    refused(&run(&[]), "/chosen/linux,elfcorehdr");
    prop("chosen", "linux,elfcorehdr", &cells(&[0, 0x7_f000, 0, 0x1000]));
    prop("reserved-memory/handover-window@40000", "reg", &cells(&[0, 0x6_0000, 0, 0x1_0000]));
    refused(&run(&[]), "overlaps \"System RAM\"");
    std::fs::remove_dir_all(dt.join("smmuv3@c0000")).unwrap();
    refused(&run(&[]), "no arm,smmu-v3 node");
    prop("smmuv3@c0000", "compatible", b"arm,smmu-v3\0");
    prop("smmuv3@c0000", "reg", &cells(&[0, SMMU as u32, 0]));
    refused(&run(&[]), "not a whole number of");
}

/// Without --needed, every mass-storage function (PCI class 01) with no driver bound is needed: the dump target
/// is on one of them; a NIC, or a disk whose driver already runs, is not.
#[test]
fn without_needed_every_unbound_mass_storage_function_is_needed() {
    let f = Fake::new("needed");
    let dev = |bdf: &str, class: &str, bound: bool| {
        let d = f.path(&format!("sys/bus/pci/devices/{bdf}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("class"), class).unwrap();
        if bound {
            std::fs::create_dir_all(d.join("driver")).unwrap();
        }
    };
    dev("0000:00:02.0", "0x020000\n", false);
    dev("0000:00:03.0", "0x010802\n", true);
    dev("0000:00:04.0", "0x010802\n", false);
    dev("0000:00:05.0", "0x010601\n", false);
    dev("0000:00:06.0", "garbage\n", false);
    let v: serde_json::Value = serde_json::from_slice(&f.run(&["--json"]).stdout).unwrap();
    assert_eq!(v["needed"], serde_json::json!(["0000:00:04.0", "0000:00:05.0"]), "{v}");
    assert_eq!(v["needed_from"], "mass-storage functions (PCI class 01)");
    let v: serde_json::Value = serde_json::from_slice(&f.run(&["--json", "--needed", "00:02.0"]).stdout).unwrap();
    assert_eq!(v["needed"], serde_json::json!(["0000:00:02.0"]), "an explicit --needed replaces the default");
    assert_eq!(v["needed_from"], "--needed");
}
