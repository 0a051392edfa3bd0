//! Device-tree discovery on a fake `/proc/device-tree` laid out as QEMU's arm64 `virt` machine gives it
//! (SMMUv3 at 0x09050000, a no-map window, kexec's `linux,elfcorehdr`), and the same tree made hostile.

use std::path::{Path, PathBuf};

use iommu_linux::devtree::{self, DtError};

struct Tree(PathBuf);

impl Tree {
    fn new(name: &str) -> Tree {
        let p = std::env::temp_dir().join(format!("iommu-linux-dt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tree(p)
    }
    fn prop(&self, node: &str, name: &str, v: &[u8]) -> &Self {
        let d = self.0.join(node);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), v).unwrap();
        self
    }
    /// The `virt` layout: root cells 2/2, the SMMU, the window, /chosen.
    fn virt(name: &str) -> Tree {
        let t = Tree::new(name);
        t.prop("", "#address-cells", &cells(&[2])).prop("", "#size-cells", &cells(&[2]));
        t.prop("smmuv3@9050000", "compatible", b"arm,smmu-v3\0");
        t.prop("smmuv3@9050000", "reg", &cells(&[0, 0x0905_0000, 0, 0x2_0000]));
        t.prop("pcie@10000000", "compatible", b"pci-host-ecam-generic\0");
        t.prop("pcie@10000000", "reg", &cells(&[0x40, 0x1000_0000, 0, 0x1000_0000]));
        t.prop("pcie@10000000", "iommu-map", &cells(&[0, 0x8005, 0, 0x1_0000]));
        t.prop("smmuv3@9050000", "phandle", &cells(&[0x8005]));
        t.prop("smmuv3@9050000", "#iommu-cells", &cells(&[1]));
        t.prop("reserved-memory", "#address-cells", &cells(&[2])).prop("reserved-memory", "#size-cells", &cells(&[2]));
        t.prop("reserved-memory/handover-window@70000000", "reg", &cells(&[0, 0x7000_0000, 0, 0x80_0000]));
        t.prop("reserved-memory/handover-window@70000000", "no-map", b"");
        t.prop("reserved-memory/cma@50000000", "reg", &cells(&[0, 0x5000_0000, 0, 0x100_0000]));
        t.prop("chosen", "linux,elfcorehdr", &cells(&[0, 0x6fe0_0000, 0, 0x1_0000]));
        t
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cells(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|c| c.to_be_bytes()).collect()
}

#[test]
fn the_smmu_the_no_map_window_and_the_elf_headers_are_found_as_virt_lays_them_out() {
    let t = Tree::virt("virt");
    let units = devtree::smmuv3_units(t.path()).unwrap();
    assert_eq!(units.len(), 1);
    assert_eq!(units[0].1, 0x0905_0000..0x0907_0000);
    assert!(units[0].0.ends_with("smmuv3@9050000"));
    let nomap = devtree::no_map_reserved(t.path()).unwrap();
    assert_eq!(nomap, vec![("handover-window@70000000".to_string(), 0x7000_0000..0x7080_0000)], "cma is not no-map");
    assert_eq!(devtree::elfcorehdr(t.path()).unwrap(), Some(0x6fe0_0000..0x6fe1_0000));
}

#[test]
fn a_tree_without_them_finds_nothing_and_cell_defaults_follow_the_specification() {
    let t = Tree::new("empty");
    t.prop("soc/smmu@1000", "compatible", b"arm,smmu-v2\0arm,mmu-500\0");
    assert_eq!(devtree::smmuv3_units(t.path()).unwrap(), vec![]);
    assert_eq!(devtree::no_map_reserved(t.path()).unwrap(), vec![]);
    assert_eq!(devtree::elfcorehdr(t.path()).unwrap(), None);
    // No cells named: #address-cells 2, #size-cells 1 (12-byte entries).
    t.prop("soc/iommu@2000", "compatible", b"vendor,x\0arm,smmu-v3\0");
    t.prop("soc/iommu@2000", "reg", &cells(&[0, 0x2000, 0x2_0000]));
    let units = devtree::smmuv3_units(t.path()).unwrap();
    assert_eq!(units.iter().map(|u| u.1.clone()).collect::<Vec<_>>(), vec![0x2000..0x2_2000]);
}

#[test]
fn hostile_trees_are_refused_naming_the_file() {
    let t = Tree::virt("badreg");
    t.prop("smmuv3@9050000", "reg", &cells(&[0, 0x0905_0000, 0]));
    let e = devtree::smmuv3_units(t.path()).unwrap_err();
    assert!(
        matches!(&e, DtError::BadReg { len: 12, addr_cells: 2, size_cells: 2, path } if path.ends_with("reg")),
        "{e}"
    );

    let t = Tree::virt("wrap");
    t.prop("smmuv3@9050000", "reg", &cells(&[0xffff_ffff, 0xffff_f000, 0, 0x2_0000]));
    assert!(matches!(devtree::smmuv3_units(t.path()), Err(DtError::BadRange { .. })), "end wraps");
    t.prop("smmuv3@9050000", "reg", &cells(&[0, 0x0905_0000, 0, 0]));
    assert!(matches!(devtree::smmuv3_units(t.path()), Err(DtError::BadRange { size: 0, .. })), "empty");

    let t = Tree::virt("cells");
    t.prop("", "#address-cells", &cells(&[3]));
    assert!(matches!(devtree::smmuv3_units(t.path()), Err(DtError::BadCells { value: 3, .. })));
    t.prop("", "#address-cells", &[0, 2]);
    assert!(matches!(devtree::smmuv3_units(t.path()), Err(DtError::Io { .. })), "a short cell");

    let t = Tree::virt("long");
    t.prop("reserved-memory/handover-window@70000000", "reg", &vec![0u8; 8192]);
    assert!(matches!(devtree::no_map_reserved(t.path()), Err(DtError::TooLong { .. })));

    let t = Tree::new("deep");
    let deep: String = (0..devtree::MAX_DEPTH + 2).map(|i| format!("n{i}/")).collect();
    t.prop(&deep, "compatible", b"arm,smmu-v3\0");
    assert!(matches!(devtree::smmuv3_units(t.path()), Err(DtError::TooBig { .. })), "bounded depth");
}

/// A node linking back to the root (a tree that repeats itself) is not followed.
#[test]
fn a_symlink_loop_is_not_followed() {
    let t = Tree::virt("loop");
    std::os::unix::fs::symlink(t.path(), t.path().join("pcie@10000000/again")).unwrap();
    assert_eq!(devtree::smmuv3_units(t.path()).unwrap().len(), 1);
}

/// `virt`'s `iommu-map = <0 &smmu 0 0x10000>`: stream ID = requester ID; an offset map, a mask, a map naming
/// another IOMMU, and malformed maps as Linux `of_map_id` reads them.
#[test]
fn stream_ids_follow_the_host_bridges_iommu_map() {
    let t = Tree::virt("imap");
    let smmu = t.path().join("smmuv3@9050000");
    let map = devtree::iommu_map(t.path(), &smmu).unwrap();
    assert_eq!(map.len(), 1);
    assert_eq!(devtree::stream_id(&map, 0x20), Some(0x20));
    assert_eq!(devtree::stream_id(&map, 0xffff), Some(0xffff));
    assert_eq!(devtree::stream_id(&map, 0x1_0000), None, "past the entry");

    // A second host bridge sending bus 0 to stream IDs from 0x4000 through another IOMMU's entry first.
    t.prop("pcie@20000000", "iommu-map", &cells(&[0, 0x9999, 0, 0x100, 0x100, 0x8005, 0x4000, 0x100]));
    t.prop("pcie@20000000", "iommu-map-mask", &cells(&[0xff00]));
    let map = devtree::iommu_map(t.path(), &smmu).unwrap();
    assert_eq!(map.len(), 2, "the entry naming phandle 0x9999 is not this SMMU's");
    assert!(map.contains(&(0xff00, devtree::IommuMapEntry { rid_base: 0x100, sid_base: 0x4000, len: 0x100 })));

    std::fs::remove_file(t.path().join("pcie@20000000/iommu-map-mask")).unwrap();
    t.prop("pcie@20000000", "iommu-map", &cells(&[0, 0x8005, 0xffff_fff8, 0x10]));
    let map = devtree::iommu_map(t.path(), &smmu).unwrap();
    let only: Vec<_> = map.iter().copied().filter(|m| m.1.sid_base == 0xffff_fff8).collect();
    assert_eq!(devtree::stream_id(&only, 0x7), Some(u32::MAX));
    assert_eq!(devtree::stream_id(&only, 0x8), None, "stream ID overflows");

    t.prop("pcie@20000000", "iommu-map", &cells(&[0, 0x8005, 0]));
    assert!(matches!(devtree::iommu_map(t.path(), &smmu), Err(DtError::BadReg { .. })), "not 4-cell entries");
    t.prop("pcie@20000000", "iommu-map", &cells(&[0xffff_fff0, 0x8005, 0, 0x20]));
    assert!(matches!(devtree::iommu_map(t.path(), &smmu), Err(DtError::Io { .. })), "requester IDs wrap");
    std::fs::remove_dir_all(t.path().join("pcie@20000000")).unwrap();

    t.prop("smmuv3@9050000", "#iommu-cells", &cells(&[2]));
    assert!(devtree::iommu_map(t.path(), &smmu).is_err(), "SMMUv3 specifiers are one cell");
    std::fs::remove_file(smmu.join("phandle")).unwrap();
    assert_eq!(devtree::iommu_map(t.path(), &smmu).unwrap(), vec![], "no phandle: nothing can name it");
}
