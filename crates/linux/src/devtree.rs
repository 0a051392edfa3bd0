//! What `handover takeover` needs from the device tree Linux exposes at `/proc/device-tree` (one directory per
//! node, one file per property, values big-endian): on machines without ACPI (QEMU's arm64 `virt`) the
//! SMMUv3 is a node whose `compatible` lists `arm,smmu-v3` (Linux `arm_smmu_of_match`), its registers the
//! node's `reg`, and the stream ID of each PCI function the host bridge's `iommu-map` (Linux `of_map_id`);
//! the frame window a `no-map` child of `/reserved-memory` (devicetree-specification, "Reserved Memory"), and
//! the kdump kernel's ELF headers `/chosen/linux,elfcorehdr` (Linux `early_init_dt_check_for_elfcorehdr`).
//!
//! The tree is input the kernel copied from firmware and kexec-tools: every walk is bounded in depth and
//! nodes, every value checked for length and cell counts, every address computed with checked arithmetic;
//! failures are [`DtError`]s naming the file.

use std::ops::Range;
use std::path::{Path, PathBuf};

/// Directories visited at most by one search.
pub const MAX_NODES: usize = 4096;
/// Deepest node looked at.
pub const MAX_DEPTH: usize = 16;
/// Largest property read.
pub const MAX_PROP: u64 = 4096;

/// Why the device tree could not answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DtError {
    /// A node or property could not be read, or a property has the wrong shape (not one cell, not a file,
    /// an `iommu-map` entry that is empty or wraps, `#iommu-cells` other than 1).
    #[error("{path}: {what}")]
    Io {
        /// The file or directory under `/proc/device-tree`.
        path: PathBuf,
        /// What was wrong with it.
        what: String,
    },
    /// A `reg`-style property (or `iommu-map`) whose length is not a multiple of its entry size.
    #[error("{path}: {len} bytes is not a whole number of ({addr_cells}+{size_cells})-cell entries")]
    BadReg {
        /// The property file.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// Address cells per entry (the parent's `#address-cells`).
        addr_cells: u32,
        /// Size cells per entry (the parent's `#size-cells`).
        size_cells: u32,
    },
    /// `#address-cells` or `#size-cells` other than 1 or 2 (a 64-bit address never needs more).
    #[error("{path}: #address-cells/#size-cells {value} (1 or 2 supported)")]
    BadCells {
        /// The property file.
        path: PathBuf,
        /// The cell count it holds.
        value: u32,
    },
    /// A `reg` entry of size 0, or whose end does not fit in 64 bits.
    #[error("{path}: region {start:#x}+{size:#x} overflows or is empty")]
    BadRange {
        /// The property file.
        path: PathBuf,
        /// The entry's address.
        start: u64,
        /// The entry's size in bytes.
        size: u64,
    },
    /// A property larger than [`MAX_PROP`], not read.
    #[error("{path}: property longer than {MAX_PROP} bytes")]
    TooLong {
        /// The property file.
        path: PathBuf,
    },
    /// A walk that went past [`MAX_NODES`] directories or [`MAX_DEPTH`] levels.
    #[error("{root}: more than {MAX_NODES} nodes or deeper than {MAX_DEPTH}")]
    TooBig {
        /// Where the walk started.
        root: PathBuf,
    },
}

fn io(path: &Path, e: impl std::fmt::Display) -> DtError {
    DtError::Io { path: path.to_path_buf(), what: e.to_string() }
}

/// A property's bytes, or `None` when the node has no such property.
fn prop(node: &Path, name: &str) -> Result<Option<Vec<u8>>, DtError> {
    let p = node.join(name);
    let meta = match std::fs::symlink_metadata(&p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&p, e)),
    };
    if !meta.is_file() {
        return Err(io(&p, "not a property file"));
    }
    if meta.len() > MAX_PROP {
        return Err(DtError::TooLong { path: p });
    }
    std::fs::read(&p).map(Some).map_err(|e| io(&p, e))
}

/// `#address-cells` or `#size-cells` of `node` (for its children), or the specification's default.
fn cells(node: &Path, name: &str, default: u32) -> Result<u32, DtError> {
    let Some(v) = prop(node, name)? else { return Ok(default) };
    let p = node.join(name);
    let b: [u8; 4] = v.as_slice().try_into().map_err(|_| io(&p, format!("{} bytes, not one cell", v.len())))?;
    let n = u32::from_be_bytes(b);
    if !(1..=2).contains(&n) {
        return Err(DtError::BadCells { path: p, value: n });
    }
    Ok(n)
}

/// A big-endian number of 1 or 2 cells.
fn number(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |acc, &x| acc << 8 | u64::from(x))
}

/// The `reg` (or other address/size list) property `name` of `node`, in its parent's cell sizes
/// (`#address-cells` 2, `#size-cells` 1 when the parent names none: devicetree-specification 2.3.5).
pub fn regions(parent: &Path, node: &Path, name: &str) -> Result<Vec<Range<u64>>, DtError> {
    let (ac, sc) = (cells(parent, "#address-cells", 2)?, cells(parent, "#size-cells", 1)?);
    let Some(v) = prop(node, name)? else { return Ok(Vec::new()) };
    let entry = ((ac + sc) * 4) as usize;
    if v.is_empty() || !v.len().is_multiple_of(entry) {
        return Err(DtError::BadReg { path: node.join(name), len: v.len(), addr_cells: ac, size_cells: sc });
    }
    v.chunks(entry)
        .map(|e| {
            let (a, s) = e.split_at(ac as usize * 4);
            let (start, size) = (number(a), number(s));
            match start.checked_add(size) {
                Some(end) if size > 0 => Ok(start..end),
                _ => Err(DtError::BadRange { path: node.join(name), start, size }),
            }
        })
        .collect()
}

/// Every node under `root` (with its parent) for which `keep` says yes, in a bounded walk that follows no
/// symlink.
fn nodes(
    root: &Path,
    mut keep: impl FnMut(&Path) -> Result<bool, DtError>,
) -> Result<Vec<(PathBuf, PathBuf)>, DtError> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    let mut seen = 0usize;
    while let Some((dir, depth)) = stack.pop() {
        seen += 1;
        if seen > MAX_NODES || depth > MAX_DEPTH {
            return Err(DtError::TooBig { root: root.to_path_buf() });
        }
        let rd = std::fs::read_dir(&dir).map_err(|e| io(&dir, e))?;
        let mut children = Vec::new();
        for e in rd {
            let e = e.map_err(|e| io(&dir, e))?;
            let ft = e.file_type().map_err(|x| io(&e.path(), x))?;
            if ft.is_dir() {
                children.push(e.path());
            }
        }
        children.sort();
        for c in children.into_iter().rev() {
            if keep(&c)? {
                out.push((c.clone(), dir.clone()));
            }
            stack.push((c, depth + 1));
        }
    }
    Ok(out)
}

/// Every node under `root` whose `compatible` lists `compat`, with its parent.
pub fn compatible(root: &Path, compat: &str) -> Result<Vec<(PathBuf, PathBuf)>, DtError> {
    nodes(root, |c| Ok(prop(c, "compatible")?.is_some_and(|v| v.split(|&b| b == 0).any(|s| s == compat.as_bytes()))))
}

/// One `iommu-map` entry (devicetree binding `pci-iommu.yaml`): requester IDs `rid_base..rid_base+len` reach
/// the IOMMU as stream IDs from `sid_base` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IommuMapEntry {
    /// First PCI requester ID (bus << 8 | devfn) of the range, after `iommu-map-mask`.
    pub rid_base: u32,
    /// Stream ID that `rid_base` is given at the SMMU.
    pub sid_base: u32,
    /// Number of consecutive requester IDs mapped (never 0).
    pub len: u32,
}

/// The `iommu-map` entries of every node that sends requester IDs to the IOMMU node `iommu` (matched by its
/// `phandle`), with the node's `iommu-map-mask` (all ones without one). The IOMMU must have
/// `#iommu-cells` = 1, as SMMUv3 has (one cell: the stream ID).
pub fn iommu_map(root: &Path, iommu: &Path) -> Result<Vec<(u32, IommuMapEntry)>, DtError> {
    let cell = |node: &Path, name: &str| -> Result<Option<u32>, DtError> {
        let Some(v) = prop(node, name)? else { return Ok(None) };
        let b: [u8; 4] = v.as_slice().try_into().map_err(|_| io(&node.join(name), "not one cell"))?;
        Ok(Some(u32::from_be_bytes(b)))
    };
    let Some(phandle) = cell(iommu, "phandle")?.or(cell(iommu, "linux,phandle")?) else { return Ok(Vec::new()) };
    match cell(iommu, "#iommu-cells")? {
        Some(1) => {}
        other => {
            return Err(io(&iommu.join("#iommu-cells"), format!("{other:?}: one cell (a stream ID) expected")));
        }
    }
    let mut out = Vec::new();
    for (node, _) in nodes(root, |c| Ok(c.join("iommu-map").is_file()))? {
        let p = node.join("iommu-map");
        let v = prop(&node, "iommu-map")?.unwrap_or_default();
        if v.is_empty() || !v.len().is_multiple_of(16) {
            return Err(DtError::BadReg { path: p, len: v.len(), addr_cells: 1, size_cells: 3 });
        }
        let mask = cell(&node, "iommu-map-mask")?.unwrap_or(u32::MAX);
        for e in v.chunks(16) {
            let w = |i: usize| u32::from_be_bytes([e[4 * i], e[4 * i + 1], e[4 * i + 2], e[4 * i + 3]]);
            if w(1) != phandle {
                continue;
            }
            let entry = IommuMapEntry { rid_base: w(0), sid_base: w(2), len: w(3) };
            if entry.len == 0 || entry.rid_base.checked_add(entry.len - 1).is_none() {
                return Err(io(&p, format!("entry {entry:x?} is empty or wraps")));
            }
            out.push((mask, entry));
        }
    }
    Ok(out)
}

/// The stream ID `rid` reaches the IOMMU with under `map` ([`iommu_map`]): Linux `of_map_id` — the first
/// entry whose range holds `rid & mask`. `None` when no entry does (the device is not behind that IOMMU) or
/// the stream ID would overflow.
pub fn stream_id(map: &[(u32, IommuMapEntry)], rid: u32) -> Option<u32> {
    map.iter().find_map(|&(mask, e)| {
        let id = rid & mask;
        let off = id.checked_sub(e.rid_base).filter(|&o| o < e.len)?;
        e.sid_base.checked_add(off)
    })
}

/// The register blocks of every SMMUv3 in the tree (its first `reg` entry each), in path order.
pub fn smmuv3_units(root: &Path) -> Result<Vec<(PathBuf, Range<u64>)>, DtError> {
    let mut out = Vec::new();
    for (node, parent) in compatible(root, "arm,smmu-v3")? {
        let reg = regions(&parent, &node, "reg")?;
        let first = reg.into_iter().next().ok_or_else(|| io(&node.join("reg"), "no reg"))?;
        out.push((node, first));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The `no-map` children of `/reserved-memory`: (node name, range) for each of their `reg` entries.
pub fn no_map_reserved(root: &Path) -> Result<Vec<(String, Range<u64>)>, DtError> {
    let rm = root.join("reserved-memory");
    let rd = match std::fs::read_dir(&rm) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(&rm, e)),
    };
    let mut out = Vec::new();
    for (i, e) in rd.enumerate() {
        if i >= MAX_NODES {
            return Err(DtError::TooBig { root: rm });
        }
        let e = e.map_err(|x| io(&rm, x))?;
        if !e.file_type().map_err(|x| io(&e.path(), x))?.is_dir() || prop(&e.path(), "no-map")?.is_none() {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        for r in regions(&rm, &e.path(), "reg")? {
            out.push((name.clone(), r));
        }
    }
    out.sort_by_key(|x| x.1.start);
    Ok(out)
}

/// `/chosen/linux,elfcorehdr`: where a kdump kernel reads the crashed kernel's ELF headers.
pub fn elfcorehdr(root: &Path) -> Result<Option<Range<u64>>, DtError> {
    let chosen = root.join("chosen");
    if !chosen.is_dir() {
        return Ok(None);
    }
    Ok(regions(root, &chosen, "linux,elfcorehdr")?.into_iter().next())
}
