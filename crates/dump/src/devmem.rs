//! IOMMU registers read live from physical memory (`/dev/mem`), for an audit run inside the crash kernel.
//!
//! A kdump kernel booted with its IOMMU driver off (`intel_iommu=off`, `amd_iommu=off`) leaves the unit
//! as the crashed kernel programmed it, so the registers a decode needs ([`required_registers`]) can be
//! read where they are instead of from a snapshot. Each register is one positioned `read` of exactly its
//! width at its address (no mmap): x86's `/dev/mem` copies an aligned 4- or 8-byte read with a single
//! access of that width, which is what an IOMMU's MMIO expects.
//!
//! What the kernel allows: `read` on x86 `/dev/mem` ends at the top of the kernel's own RAM
//! (`high_memory`): MMIO above it gives `EFAULT`, so the crash kernel needs RAM above the unit's base
//! (`crashkernel=...,high` on a machine with RAM above 4 GiB). With `STRICT_DEVMEM`, RAM is refused and,
//! with `IO_STRICT_DEVMEM`, so is MMIO a driver has claimed (`EPERM`): keep the IOMMU driver, and the
//! interrupt-remapping code that also claims a VT-d unit (`intremap=off`), off.
//!
//! The values are returned as QEMU monitor `xp` lines, which [`RegSnapshot::parse`] reads: the same
//! text can be saved and given to a later run as `--regs`.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use iommu_platform::PhysMem;

use crate::acpi::rsdp::MAX_TABLE_LEN;
use crate::acpi::{AcpiError, Firmware, IommuKind, Unit};
use crate::hw::{required_registers, UnitQuery};
use crate::RegSnapshot;

/// Why the registers could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DevmemError {
    /// The memory device (normally `/dev/mem`) could not be opened: not root, or no such device.
    #[error("{path}: {source}")]
    Open {
        /// The device's path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A register read failed; `EFAULT` and `EPERM` get a hint at the kernel limit behind them (see the
    /// module docs).
    #[error("{path}: reading {kind} {name} ({size} bytes at {addr:#x}): {source}{}", hint(.source))]
    Read {
        /// The device's path.
        path: PathBuf,
        /// The unit's kind.
        kind: IommuKind,
        /// The register's spec name.
        name: &'static str,
        /// Physical address read: the unit's base plus the register's offset.
        addr: u64,
        /// Register width, bytes (4 or 8).
        size: usize,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The raw ACPI table file ([`UnitQuery::acpi`]) could not be read.
    #[error("{path}: {source}")]
    Acpi {
        /// The table file's path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The table (from the file, or found through the RSDP in memory) gave no units.
    #[error("{origin}: {source}")]
    Table {
        /// The table file's path, or "the dump" for the tables found in memory.
        origin: String,
        /// What the table parser or the search refused.
        source: AcpiError,
    },
    /// A base was given without a kind: which registers to read depends on the kind.
    #[error("--base needs --iommu to know which registers to read")]
    NoKind,
    /// A unit's base plus a register offset is past 2^64 - 1 (a hostile table's base).
    #[error("{kind} unit at {base:#x}: a register address overflows")]
    Overflow {
        /// The unit's kind.
        kind: IommuKind,
        /// The unit's MMIO base.
        base: u64,
    },
}

fn hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(14) => " (EFAULT: x86 /dev/mem reads stop at the top of this kernel's RAM; give it RAM above the unit, e.g. crashkernel=SIZE,high)",
        Some(1) => " (EPERM: STRICT_DEVMEM refuses a region a driver claimed; boot with the IOMMU driver and intremap off)",
        _ => "",
    }
}

/// The units to read, from `--base` and `--iommu`, a raw table file, or the ACPI tables in `mem`.
pub fn units(q: &UnitQuery, mem: &impl PhysMem) -> Result<Vec<Unit>, DevmemError> {
    if let Some(base) = q.base {
        let kind = q.kind.ok_or(DevmemError::NoKind)?;
        return Ok(vec![Unit { kind, base, segment: 0, origin: "--base".into() }]);
    }
    let fw = if let Some(path) = &q.acpi {
        let mut buf = Vec::new();
        File::open(path)
            .and_then(|f| f.take(u64::from(MAX_TABLE_LEN)).read_to_end(&mut buf))
            .map_err(|source| DevmemError::Acpi { path: path.clone(), source })?;
        Firmware::from_bytes(&buf).map_err(|source| DevmemError::Table { origin: path.display().to_string(), source })
    } else {
        Firmware::find(mem, q.rsdp, q.kind).map_err(|source| DevmemError::Table { origin: "the dump".into(), source })
    }?;
    Ok(fw.units())
}

/// Reads every register a decode of each unit needs from `path` (normally `/dev/mem`), as monitor text.
pub fn read_registers(path: &Path, units: &[Unit]) -> Result<String, DevmemError> {
    let f = File::open(path).map_err(|source| DevmemError::Open { path: path.into(), source })?;
    let mut text = String::new();
    for u in units {
        for &(name, off, size) in required_registers(u.kind) {
            let addr = u.base.checked_add(off as u64).ok_or(DevmemError::Overflow { kind: u.kind, base: u.base })?;
            let mut buf = [0u8; 8];
            f.read_exact_at(&mut buf[..size], addr).map_err(|source| DevmemError::Read {
                path: path.into(),
                kind: u.kind,
                name,
                addr,
                size,
                source,
            })?;
            let _ = writeln!(text, "{addr:016x}: 0x{:0w$x}", u64::from_le_bytes(buf), w = size * 2);
        }
    }
    Ok(text)
}

/// [`read_registers`] as a snapshot, with the text it was parsed from.
pub fn snapshot(path: &Path, units: &[Unit]) -> Result<(RegSnapshot, String), DevmemError> {
    let text = read_registers(path, units)?;
    // The text is made above, one well-formed line per register: it always parses.
    let snap = RegSnapshot::parse(&text).unwrap_or_default();
    Ok((snap, text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_each_register_at_its_width_into_a_snapshot() {
        let base = 0x1000u64;
        let mut img = vec![0u8; 0x2000];
        for (i, b) in img.iter_mut().enumerate() {
            *b = i as u8;
        }
        let path = std::env::temp_dir().join(format!("devmem-test-{}", std::process::id()));
        File::create(&path).and_then(|mut f| f.write_all(&img)).unwrap();
        let unit = Unit { kind: IommuKind::Vtd, base, segment: 0, origin: "test".into() };
        let (snap, text) = snapshot(&path, std::slice::from_ref(&unit)).unwrap();
        let far = Unit { base: 0x10_0000, ..unit.clone() };
        let past_end = read_registers(&path, std::slice::from_ref(&far));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(past_end, Err(DevmemError::Read { name: "VER", addr: 0x10_0000, .. })), "{past_end:?}");
        assert_eq!(text.lines().count(), required_registers(IommuKind::Vtd).len());
        for &(_, off, size) in required_registers(IommuKind::Vtd) {
            let a = base as usize + off;
            let want = img[a..a + size].iter().rev().fold(0u64, |v, &b| v << 8 | u64::from(b));
            let got = if size == 8 { snap.read64(a as u64) } else { snap.read32(a as u64).map(u64::from) };
            assert_eq!(got, Some(want), "offset {off:#x}");
        }
        assert!(matches!(read_registers(Path::new("/nonexistent/mem"), &[unit]), Err(DevmemError::Open { .. })));
    }
}
