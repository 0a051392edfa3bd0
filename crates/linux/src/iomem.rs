//! `/proc/iomem`: the kernel's physical resource tree, one resource a line,
//! `<indent>START-END : NAME`, hex without `0x`, END inclusive, two spaces of indent per level
//! (Linux `r_show` in kernel/resource.c).
//!
//! The kdump kernel's own RAM is its top-level `System RAM`; the frame window is a range taken out of it
//! with `memmap=SIZE$START`, which e820 turns into a top-level `Reserved` resource (Linux
//! `e820__reserve_resources`). [`check_window`] accepts a window only there.

use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// At most this many lines are read: a real tree has a few hundred.
pub const MAX_ENTRIES: usize = 65536;

/// At most this many bytes are read: [`MAX_ENTRIES`] lines of a long name each.
pub const MAX_BYTES: u64 = 16 << 20;

/// One resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Exclusive end.
    pub range: Range<u64>,
    /// The resource's name, e.g. `System RAM`, `Reserved`, `Crash kernel`, or a driver's claim.
    pub name: String,
    /// 0 for a top-level resource.
    pub depth: usize,
}

/// A line that is not a resource.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IomemError {
    /// A line that does not parse as `START-END : NAME` at an even indent.
    #[error("/proc/iomem line {line}: {why}: {text:?}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What was wrong with it.
        why: &'static str,
        /// The line, cut to 120 characters.
        text: String,
    },
    /// More than [`MAX_ENTRIES`] resources.
    #[error("/proc/iomem: more than {MAX_ENTRIES} lines")]
    TooLong,
    /// Every range reads `00000000-00000000`: Linux hides addresses from readers without
    /// `CAP_SYS_ADMIN` (`r_show` in kernel/resource.c).
    #[error("/proc/iomem shows every address as 0 (read it as root)")]
    Hidden,
    /// The file could not be opened or read, is longer than [`MAX_BYTES`], or is not UTF-8.
    #[error("{}: {why}", .path.display())]
    Read {
        /// The file read.
        path: PathBuf,
        /// Why it was refused.
        why: String,
    },
}

/// Read and parse the resource tree at `path` (normally `/proc/iomem`), at most [`MAX_BYTES`] of it.
pub fn read(path: &Path) -> Result<Vec<Entry>, IomemError> {
    let fail = |why: String| IomemError::Read { path: path.into(), why };
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_BYTES + 1).read_to_end(&mut buf))
        .map_err(|e| fail(e.to_string()))?;
    if buf.len() as u64 > MAX_BYTES {
        return Err(fail(format!("longer than {MAX_BYTES} bytes")));
    }
    let text = String::from_utf8(buf).map_err(|e| fail(format!("not text: {e}")))?;
    parse(&text)
}

/// Parse the whole text.
pub fn parse(text: &str) -> Result<Vec<Entry>, IomemError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        if out.len() >= MAX_ENTRIES {
            return Err(IomemError::TooLong);
        }
        let bad = |why| IomemError::Line { line: i + 1, why, text: raw.chars().take(120).collect() };
        let indent = raw.len() - raw.trim_start_matches(' ').len();
        if indent % 2 != 0 {
            return Err(bad("odd indent"));
        }
        let (span, name) = raw.trim_start_matches(' ').split_once(" : ").ok_or_else(|| bad("no ' : '"))?;
        let (a, b) = span.split_once('-').ok_or_else(|| bad("no '-' in the range"))?;
        let start = u64::from_str_radix(a, 16).map_err(|_| bad("start is not hex"))?;
        let last = u64::from_str_radix(b, 16).map_err(|_| bad("end is not hex"))?;
        if last < start {
            return Err(bad("end below start"));
        }
        let end = last.checked_add(1).ok_or_else(|| bad("end overflows"))?;
        out.push(Entry { range: start..end, name: name.to_string(), depth: indent / 2 });
    }
    if !out.is_empty() && out.iter().all(|e| e.range.start == 0 && e.range.end == 1) {
        return Err(IomemError::Hidden);
    }
    Ok(out)
}

/// The top-level `System RAM` ranges: the running kernel's own RAM.
pub fn system_ram(entries: &[Entry]) -> Vec<Range<u64>> {
    entries.iter().filter(|e| e.depth == 0 && e.name == "System RAM").map(|e| e.range.clone()).collect()
}

/// The `Crash kernel` ranges at any depth (Linux `crashk_res` and `crashk_low_res`, both named so, inside
/// System RAM): the regions a panic's crash kernel runs in.
pub fn crash_kernel(entries: &[Entry]) -> Vec<Range<u64>> {
    entries.iter().filter(|e| e.name == "Crash kernel").map(|e| e.range.clone()).collect()
}

/// Entries of any depth that overlap `r`.
pub fn overlapping<'a>(entries: &'a [Entry], r: &'a Range<u64>) -> impl Iterator<Item = &'a Entry> + 'a {
    entries.iter().filter(move |e| e.range.start < r.end && r.start < e.range.end)
}

/// Why a window cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// The window overlaps `System RAM` at some depth: the kdump kernel's page allocator may hand those pages
    /// out while the IOMMU walks them.
    #[error("window {:#x}-{:#x} overlaps the kdump kernel's own RAM {:#x}-{:#x} (System RAM in /proc/iomem)", .window.start, .window.end, .ram.start, .ram.end)]
    OverlapsRam {
        /// The window checked.
        window: Range<u64>,
        /// The `System RAM` resource it overlaps.
        ram: Range<u64>,
    },
    /// No top-level `Reserved` resource holds the whole window.
    #[error("window {:#x}-{:#x} is not inside one top-level Reserved resource in /proc/iomem (memmap=SIZE$START on the kdump command line makes one)", .window.start, .window.end)]
    NotReserved {
        /// The window checked.
        window: Range<u64>,
    },
    /// A child of the `Reserved` resource overlaps the window: something in the kdump kernel claimed it.
    #[error("window {:#x}-{:#x} overlaps {name:?} at {:#x}-{:#x}", .window.start, .window.end, .at.start, .at.end)]
    Claimed {
        /// The window checked.
        window: Range<u64>,
        /// The claiming resource's name.
        name: String,
        /// The claiming resource's range (exclusive end).
        at: Range<u64>,
    },
}

/// The window must lie wholly inside one top-level `Reserved` resource, overlap no `System RAM`, and have
/// no resource under it (a driver or the kernel claimed part of it).
pub fn check_window(entries: &[Entry], window: &Range<u64>) -> Result<(), WindowError> {
    if let Some(ram) = overlapping(entries, window).find(|e| e.name == "System RAM") {
        return Err(WindowError::OverlapsRam { window: window.clone(), ram: ram.range.clone() });
    }
    let parent = entries
        .iter()
        .position(|e| {
            e.depth == 0 && e.name == "Reserved" && e.range.start <= window.start && window.end <= e.range.end
        })
        .ok_or_else(|| WindowError::NotReserved { window: window.clone() })?;
    let mut children = entries[parent + 1..].iter().take_while(|e| e.depth > 0);
    if let Some(c) = children.find(|c| c.range.start < window.end && window.start < c.range.end) {
        return Err(WindowError::Claimed { window: window.clone(), name: c.name.clone(), at: c.range.clone() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_names_the_file_and_refuses_what_is_not_a_bounded_text() {
        let dir = std::env::temp_dir().join(format!("iomem-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("iomem");
        std::fs::write(&p, "00001000-0009fbff : System RAM\n").unwrap();
        assert_eq!(system_ram(&read(&p).unwrap()), vec![0x1000..0x9fc00]);
        std::fs::write(&p, b"0-1 : \xff\n").unwrap();
        let not_text = read(&p);
        std::fs::File::create(&p).unwrap().set_len(MAX_BYTES + 1).unwrap();
        let too_long = read(&p);
        let absent = read(&dir.join("absent"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(&not_text, Err(IomemError::Read { why, .. }) if why.contains("not text")), "{not_text:?}");
        assert!(matches!(&too_long, Err(IomemError::Read { why, .. }) if why.contains("longer")), "{too_long:?}");
        assert!(matches!(&absent, Err(IomemError::Read { path, .. }) if path.ends_with("absent")), "{absent:?}");
    }

    #[test]
    fn crash_kernel_regions_are_found_inside_system_ram_low_and_high() {
        let tree = parse(
            "00001000-0009fbff : System RAM\n00100000-7ffdffff : System RAM\n  01000000-01ffffff : Kernel code\n  \
             6f000000-7effffff : Crash kernel\n100000000-17fffffff : System RAM\n  170000000-17fffffff : Crash kernel\n",
        )
        .unwrap();
        assert_eq!(crash_kernel(&tree), [0x6f00_0000..0x7f00_0000, 0x1_7000_0000..0x1_8000_0000]);
        assert_eq!(system_ram(&tree).len(), 3);
    }
}
