#!/usr/bin/env python3
"""Writes the hand-built seeds of corpus/audit_* and corpus/adopt_* (the layouts are in src/bodies.rs);
the other corpora are copies of files in ../fixtures."""
import os, shutil, struct

here = os.path.dirname(os.path.abspath(__file__))
fx = os.path.join(here, "..", "fixtures")

def put(target, name, data):
    d = os.path.join(here, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

def q(*v):
    return b"".join(struct.pack("<Q", x) for x in v)

def mem(pages):
    """pages: {page index: {byte offset: u64}} -> bytes from physical 0."""
    out = bytearray(4096 * (max(pages) + 1))
    for p, ents in pages.items():
        for off, v in ents.items():
            out[p * 4096 + off:p * 4096 + off + 8] = struct.pack("<Q", v)
    return bytes(out)

BUDGET = bytes([64, 64, 64, 64])
# VT-d legacy mode (VT-d spec 3.4): root table at 0, bus 0's context table at 0x1000, device 00:02.0 on
# domain 1 with 4-level second-level tables at 0x2000.. mapping IOVA 0 to `leaf`.
for name, leaf in (("legacy-safe", 0x10_0000), ("legacy-crash", 0x8000)):
    regs = q(0x10, (0b100 << 8) | 2, 0, 1 << 31, 0)
    m = mem({0: {0: 0x1001}, 1: {0x10 * 16: 0x2001, 0x10 * 16 + 8: 2 | (1 << 8)},
             2: {0: 0x3003}, 3: {0: 0x4003}, 4: {0: 0x5003}, 5: {0: leaf | 3, 8: (leaf + 0x1000) | 3}})
    put("audit_vtd", name, BUDGET + regs + m)
put("audit_vtd", "translation-off", BUDGET + q(0x10, 0x402, 0, 0, 0))
# AMD-Vi (AMD IOMMU spec 2.2.2, 2.2.3): a one-page device table at 0, device 0x10 with 3-level tables.
for name, leaf in (("safe", 0x10_0000), ("crash", 0x8000)):
    rw = 3 << 61
    regs = q(0, 1, 0)
    m = mem({0: {0x10 * 32: 1 | 2 | (3 << 9) | 0x1000 | rw, 0x10 * 32 + 8: 1},
             1: {0: 0x2000 | (2 << 9) | 1 | rw}, 2: {0: 0x3000 | (1 << 9) | 1 | rw}, 3: {0: leaf | 1 | rw}})
    put("audit_amdvi", name, BUDGET + regs + m)
put("audit_amdvi", "disabled", BUDGET + q(0, 0, 0))
# SMMUv3 (SMMUv3 spec 5.2): linear stream table at 0, 16 STEs, STE 1 bypass, STE 2 abort.
regs = q(0, 1, 0, 0, 4)
put("audit_smmuv3", "linear", BUDGET + regs + mem({0: {64: 1 | (0b100 << 1), 128: 1}}))
put("audit_smmuv3", "gbpa-abort", BUDGET + q(0, 0, 1 << 20, 0, 0))
# Adoption: options byte only (the primary kernel's tables as built), then one rewritten entry.
put("adopt_vtd", "legacy", bytes([0]))
put("adopt_vtd", "scalable", bytes([1]))
put("adopt_vtd", "scalable-first-level", bytes([3]))
put("adopt_vtd", "rewrite", bytes([1]) + struct.pack("<HHQ", 1, 0x80, 0xc000_0003))
put("adopt_amdvi", "as-built", bytes([0]))
put("adopt_amdvi", "rewrite", bytes([0]) + struct.pack("<HHQ", 0, 0x200, 0xc000_0001))
put("adopt_smmuv3", "as-built", bytes([0]))
put("adopt_smmuv3", "rewrite", bytes([0]) + struct.pack("<HHQ", 0, 0x400, 0xc000_0001))

for t, files in {
    "acpi_tables": ["acpi/q35-vtd-dmar.bin", "acpi/q35-amdvi-ivrs.bin", "acpi/q35-vtd-rsdt.bin"],
    "regs_text": ["vtd-legacy/regs.txt", "amdvi/regs.txt", "smmuv3/regs.txt", "vtd-scalable/regs.txt"],
    "dump_open": ["vtd-passthrough/memory.elf"],
}.items():
    for f in files:
        shutil.copy(os.path.join(fx, f), os.path.join(here, "corpus", t, f.replace("/", "-")))
# The compressed formats' headers and first pages (a cut dump is hostile input too).
for f in ("amdvi/memory.kdump-zlib", "amdvi/memory.kdump-flat", "amdvi/memory.kdump-lzo"):
    with open(os.path.join(fx, f), "rb") as src:
        put("dump_open", f.replace("/", "-") + "-head", src.read(16384))
