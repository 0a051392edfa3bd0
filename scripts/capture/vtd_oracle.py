#!/usr/bin/env python3
"""Turn QEMU's intel-iommu trace log into the translations QEMU's IOTLB still holds.

usage: vtd_oracle.py TRACE.log [--upto BYTES] > oracle.tsv      (summary on stderr)

Reads the log written by `-trace events=...,file=TRACE.log` (QEMU 10 "log" trace backend, lines
"[PID@SEC.USEC:]event args"), in file order, up to BYTES (the log size when the VM was paused).
  vtd_iotlb_page_update  sid 0x.. iova 0x.. slpte 0x.. domain 0x..   -> a translation enters the IOTLB
  vtd_dmar_translate     dev BB:DD.FF iova .. -> gpa .. mask 0x..     -> gives the page size of a
                         superpage slpte (bit 7 set); slptes without bit 7 are 4 KiB leaves
and drops a translation again on anything that removes it (or may remove it) from QEMU's IOTLB:
  vtd_inv_desc_iotlb_global, vtd_iotlb_reset, vtd_reg_dmar_root (SRTP), vtd_dmar_enable (TE change),
  vtd_reset_exit, vtd_context_cache_reset, vtd_inv_desc_cc_global, vtd_inv_desc_cc_domain  -> all
  vtd_inv_desc_iotlb_domain DID / vtd_inv_desc_iotlb_pasid ...DID...     -> that domain's entries
  vtd_inv_desc_iotlb_pages DID addr mask(am) / ..._pasid_pages           -> entries of DID overlapping
                                                                            [addr, addr + 4K << am)
  vtd_inv_desc_cc_device BB:DD.F / vtd_inv_desc_cc_devices sid fmask     -> that device's entries
  vtd_inv_desc "type p-iotlb high QW1 low QW0" (QEMU 10 traces PASID-based IOTLB invalidations, which
                         Linux uses for first-level domains, only as this raw descriptor):
                         G = QW0 bits 5:4, DID = QW0 bits 31:16; G 2 -> that domain's entries,
                         G 3 -> entries of DID overlapping [QW1 & ~0xfff, + 4K << (QW1 & 0x3f))
(context-cache invalidations do not clear QEMU's IOTLB, but the VT-d spec has software follow them
with an IOTLB flush anyway, so dropping is the safe side: the oracle may miss entries, never keep a
stale one). For each (sid, iova page) only the last translation counts.

Output: TSV, header "sid iova phys size perm domain", hex numbers, sorted by sid then iova.
"""
import re, sys
from collections import Counter

LINE = re.compile(r'^(?:\d+@[0-9.]+:)?(vtd_\w+)\s?(.*)$')
HEX = lambda s: int(s, 16)
ADDR_MASK = 0x000ffffffffff000  # slpte bits 51:12


def kv(args, key):
    m = re.search(r'\b' + key + r'\s+(0x[0-9a-fA-F]+|\d+)', args)
    if not m:
        return None
    return int(m.group(1), 0)


def bdf_to_sid(s):
    b, d, f = (int(x, 16) for x in re.match(r'([0-9a-fA-F]+):([0-9a-fA-F]+)\.([0-9a-fA-F]+)', s).groups())
    return (b << 8) | (d << 3) | f


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    path = argv[1]
    upto = None
    if len(argv) > 3 and argv[2] == '--upto':
        upto = int(argv[3])
    with open(path, 'rb') as f:
        data = f.read() if upto is None else f.read(upto)
    text = data.decode('utf-8', 'replace')
    if upto is not None and not text.endswith('\n'):
        text = text[:text.rfind('\n') + 1]      # ignore a half-written last line

    live = {}            # (sid, iova_page) -> [sid, iova, phys, size, perm, domain]
    pending_ps = {}      # sid -> key of the last superpage update whose size is still unknown
    stats = Counter()
    dropped = Counter()
    last_update_key = None

    def drop(pred, why):
        nonlocal live
        keep = {k: v for k, v in live.items() if not pred(v)}
        n = len(live) - len(keep)
        if n:
            dropped[why] += n
        live = keep

    for line in text.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        ev, args = m.groups()
        stats[ev] += 1
        if ev == 'vtd_iotlb_page_update':
            sid, iova, slpte, dom = kv(args, 'sid'), kv(args, 'iova'), kv(args, 'slpte'), kv(args, 'domain')
            size = 4096
            if slpte & (1 << 7):
                size = 2 << 20                   # refined by the next vtd_dmar_translate of this sid
            base = iova & ~(size - 1)
            perm = ('r' if slpte & 1 else '') + ('w' if slpte & 2 else '')
            key = (sid, base)
            live[key] = [sid, base, slpte & ADDR_MASK & ~(size - 1), size, perm or '-', dom]
            last_update_key = key
            if size != 4096:
                pending_ps[sid] = (key, iova, slpte)
            continue
        if ev == 'vtd_dmar_translate':
            mt = re.match(r'dev ([0-9a-fA-F:.]+) iova (0x[0-9a-f]+) -> gpa (0x[0-9a-f]+) mask (0x[0-9a-f]+)', args)
            if mt:
                sid = bdf_to_sid(mt.group(1))
                if sid in pending_ps:
                    key, iova, slpte = pending_ps.pop(sid)
                    size = HEX(mt.group(4)) + 1
                    if key in live and size > 4096 and (HEX(mt.group(2)) & ~(size - 1)) == (iova & ~(size - 1)):
                        e = live.pop(key)
                        nkey = (sid, iova & ~(size - 1))
                        live[nkey] = [sid, nkey[1], slpte & ADDR_MASK & ~(size - 1), size, e[4], e[5]]
                        stats['superpage_sized'] += 1
            continue
        last = last_update_key
        last_update_key = None
        if ev == 'vtd_inv_desc':
            mt = re.search(r'type p-iotlb high (0x[0-9a-fA-F]+) low (0x[0-9a-fA-F]+)', args)
            if not mt:
                continue
            hi, lo = HEX(mt.group(1)), HEX(mt.group(2))
            g, dom = (lo >> 4) & 3, (lo >> 16) & 0xffff
            if g == 2:
                drop(lambda e: e[5] == dom, 'p-iotlb(pasid)')
            elif g == 3:
                lo_a = (hi & ~0xfff) & ~((4096 << (hi & 0x3f)) - 1)
                hi_a = lo_a + (4096 << (hi & 0x3f))
                drop(lambda e: e[5] == dom and e[1] < hi_a and lo_a < e[1] + e[3], 'p-iotlb(pages)')
            else:
                drop(lambda e: True, 'p-iotlb(unknown granularity)')
        elif ev == 'vtd_iotlb_reset':
            saved = live.get(last) if (last and 'size limit' in args) else None
            drop(lambda e: True, 'iotlb_reset')
            if saved:                            # QEMU inserts the traced entry after the reset
                live[last] = saved
        elif ev in ('vtd_inv_desc_iotlb_global', 'vtd_reg_dmar_root', 'vtd_dmar_enable', 'vtd_reset_exit',
                    'vtd_context_cache_reset', 'vtd_inv_desc_cc_global', 'vtd_inv_desc_cc_domain'):
            drop(lambda e: True, ev)
        elif ev in ('vtd_inv_desc_iotlb_domain', 'vtd_inv_desc_iotlb_pasid'):
            dom = kv(args, 'domain')
            if dom is None:
                drop(lambda e: True, ev + '(unparsed)')
            else:
                drop(lambda e: e[5] == dom, ev)
        elif ev in ('vtd_inv_desc_iotlb_pages', 'vtd_inv_desc_iotlb_pasid_pages'):
            dom, addr, am = kv(args, 'domain'), kv(args, 'addr'), kv(args, 'mask')
            if dom is None or addr is None or am is None:
                drop(lambda e: True, ev + '(unparsed)')
            else:
                lo = addr & ~((4096 << am) - 1)
                hi = lo + (4096 << am)
                drop(lambda e: e[5] == dom and e[1] < hi and lo < e[1] + e[3], ev)
        elif ev == 'vtd_inv_desc_cc_device':
            mt = re.search(r'([0-9a-fA-F]+:[0-9a-fA-F]+\.[0-9a-fA-F]+)', args)
            if mt:
                sid = bdf_to_sid(mt.group(1))
                drop(lambda e: e[0] == sid, ev)
            else:
                drop(lambda e: True, ev + '(unparsed)')
        elif ev == 'vtd_inv_desc_cc_devices':
            sid, fm = kv(args, 'sid'), kv(args, 'fmask')
            if sid is None or fm is None:
                drop(lambda e: True, ev + '(unparsed)')
            else:
                msk = ~{0: 0, 1: 4, 2: 6, 3: 7}[fm & 3] & 0xffff
                drop(lambda e: (e[0] & msk) == (sid & msk), ev)

    print('sid\tiova\tphys\tsize\tperm\tdomain')
    per_sid = Counter()
    for k in sorted(live):
        sid, iova, phys, size, perm, dom = live[k]
        per_sid[sid] += 1
        print('%#06x\t%#x\t%#x\t%#x\t%s\t%#x' % (sid, iova, phys, size, perm, dom))
    err = sys.stderr
    print('vtd_oracle: %d trace lines of interest, %d IOTLB updates, %d entries still valid'
          % (sum(v for k, v in stats.items() if k.startswith('vtd_')), stats['vtd_iotlb_page_update'], len(live)), file=err)
    print('vtd_oracle: events: ' + ', '.join('%s=%d' % kv_ for kv_ in sorted(stats.items())), file=err)
    print('vtd_oracle: dropped by: ' + (', '.join('%s=%d' % kv_ for kv_ in sorted(dropped.items())) or 'nothing'), file=err)
    print('vtd_oracle: per sid: ' + ', '.join('%#06x=%d' % (s, n) for s, n in sorted(per_sid.items())), file=err)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
