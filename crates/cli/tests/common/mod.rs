//! Helpers shared by the CLI's integration tests.

use std::os::unix::fs::FileExt;
use std::path::Path;

/// A sparse file standing for `/dev/mem`: each register of monitor `xp` text (`regs.txt` of a capture) at its
/// physical address, little-endian, in the width its hex digits give.
pub fn devmem_from_monitor(regs: &Path, devmem: &Path) {
    let f = std::fs::File::create(devmem).unwrap();
    for line in std::fs::read_to_string(regs).unwrap().lines() {
        let (addr, val) = line.split_once(": 0x").unwrap();
        let addr = u64::from_str_radix(addr, 16).unwrap();
        let bytes = u64::from_str_radix(val.trim(), 16).unwrap().to_le_bytes();
        f.write_all_at(&bytes[..val.trim().len() / 2], addr).unwrap();
    }
}
