#!/usr/bin/env python3
"""Read the AMD-Vi IOTLB out of a paused QEMU 10.0's own memory (/proc/PID/mem; root or the same user).

usage: amdvi_iotlb_scan.py QEMU_PID > qemu-iotlb.tsv        (summary on stderr; exit 2: table not found)

Why: QEMU 10.0's amd-iommu trace events say which (device, IOVA) got which frame in which domain
(amdvi_cache_update) but neither the permissions nor the page size of the entry, and the oracle needs
both. They are in QEMU's IOTLB, a GLib hash table (hw/i386/amd_iommu.c: s->iotlb, key = gfn |
devid << 36, value = AMDVIIOTLBEntry {u16 domid, u16 devid, u64 perms, u64 translated_addr,
u64 page_mask}). QEMU has no debug symbols here, so the table is found by its shape: the writable
anonymous mappings are searched for a GHashTable header (GLib 2.74: gsize size, gint mod, guint mask =
size - 1, nnodes, noccupied, flags, keys, hashes, values, ...) whose every occupied slot holds a key
and a value that agree with that layout (key < 2^52, perms 1..3, page_mask = 2^k - 1, page-aligned
frame; the value's devid is left uninitialised by QEMU 10.0 and not looked at). Exactly one such table must exist with at least one entry.

Output: TSV "devid gfn domid perms translated_addr page_mask", hex, one line per IOTLB entry (entries are
per 4 KiB IOVA page: a 2 MiB page that the device used at 3 places is 3 entries with the same value).
"""
import re, struct, sys

MAX_REGION = 512 << 20          # guest RAM and TCG's code buffer are bigger; GLib's heap is not


def regions(pid):
    for line in open('/proc/%d/maps' % pid):
        f = line.split()
        lo, hi = (int(x, 16) for x in f[0].split('-'))
        path = f[5] if len(f) > 5 else ''
        if f[1] == 'rw-p' and (path == '' or path == '[heap]') and hi - lo <= MAX_REGION:   # not TCG's rwx code
            yield lo, hi


class Mem:
    def __init__(self, pid):
        self.f = open('/proc/%d/mem' % pid, 'rb', buffering=0)

    def read(self, addr, n):
        self.f.seek(addr)
        return self.f.read(n)

    def q(self, addr):
        return struct.unpack('<Q', self.read(addr, 8))[0]


def header_regexes():
    # one pattern per table size (a literal prefix makes each search fast; an alternation is not)
    return [re.compile(re.escape(struct.pack('<Q', 1 << k)) + b'.{4}' + re.escape(struct.pack('<I', (1 << k) - 1)), re.DOTALL)
            for k in range(3, 20)]


def check_table(mem, t):
    """-> list of entries if the GHashTable at t is the AMD-Vi IOTLB, else None."""
    try:
        h = mem.read(t, 64)
    except OSError:
        return None
    if len(h) < 64:
        return None
    size, mod, mask, nnodes, noccupied, flags = struct.unpack_from('<QiIIII', h, 0)
    keys, hashes, values = struct.unpack_from('<QQQ', h, 32)
    if not (0 < nnodes <= noccupied <= size) or mask != size - 1 or (flags & 3) != 3:
        return None
    if not keys or not hashes or not values or (keys | hashes | values) & 7:
        return None
    try:
        hs = struct.unpack('<%dI' % size, mem.read(hashes, 4 * size))
        ks = struct.unpack('<%dQ' % size, mem.read(keys, 8 * size))
        vs = struct.unpack('<%dQ' % size, mem.read(values, 8 * size))
    except (OSError, struct.error):
        return None
    out = []
    for i in range(size):
        if hs[i] < 2:
            continue
        try:
            key = mem.q(ks[i])
            domid, devid, perms, taddr, pmask = struct.unpack('<HH4xQQQ', mem.read(vs[i], 32))
        except (OSError, struct.error):
            return None
        # (QEMU 10.0 never sets the value's devid: g_new, not g_new0; the key's is the real one)
        if perms not in (1, 2, 3) or taddr & 0xfff or pmask & (pmask + 1) or not (0xfff <= pmask < 1 << 52) \
                or key >> 52:
            return None
        out.append((key >> 36, key & ((1 << 36) - 1), domid, perms, taddr, pmask))
    return out if len(out) == nnodes else None


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__)
    pid = int(argv[1])
    mem = Mem(pid)
    rxs = header_regexes()
    found = {}
    scanned = 0
    for lo, hi in regions(pid):
        try:
            data = mem.read(lo, hi - lo)
        except OSError:
            continue
        scanned += len(data)
        for rx in rxs:
            for m in rx.finditer(data):
                t = lo + m.start()
                if t & 7 or t in found:
                    continue
                ents = check_table(mem, t)
                if ents:
                    found[t] = ents
    print('amdvi_iotlb_scan: %d MiB of QEMU memory scanned, %d candidate table(s): %s'
          % (scanned >> 20, len(found), ', '.join('%#x (%d entries)' % (t, len(e)) for t, e in found.items()) or '-'),
          file=sys.stderr)
    if len(found) != 1:
        print('amdvi_iotlb_scan: expected exactly one AMD-Vi IOTLB table', file=sys.stderr)
        return 2
    ents = next(iter(found.values()))
    print('devid\tgfn\tdomid\tperms\ttranslated_addr\tpage_mask')
    for e in sorted(ents):
        print('%#06x\t%#x\t%#x\t%d\t%#x\t%#x' % e)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
