#!/usr/bin/env python3
"""Turn QEMU 10.0's amd-iommu trace log (+ its IOTLB read at the pause) into the translations QEMU
still holds.

usage: amdvi_oracle.py TRACE.log [--upto BYTES] [--qemu-iotlb FILE] > oracle.tsv   (summary on stderr)
       amdvi_oracle.py TRACE.log --upto BYTES --count-sids          (prints: N_SIDS N_ENTRIES)

Reads the log of `-trace events=...,file=TRACE.log` (lines "[PID@SEC.USEC:]event args") in file order,
up to BYTES (the log size when the VM was paused), and models QEMU's AMD-Vi IOTLB (hw/i386/amd_iommu.c,
one entry per (device id, 4 KiB IOVA page)):
  amdvi_cache_update domid D devid: BB:DD.F gpa IOVA hpa FRAME  -> the entry (devid, IOVA >> 12) is filled
                                     (traced before QEMU's size-limit reset, so an amdvi_iotlb_reset that
                                     follows it keeps that one entry: QEMU inserts it after the reset)
  amdvi_iotlb_reset, amdvi_all_inval                            -> all entries go
  amdvi_pages_inval D               (INVALIDATE_IOMMU_PAGES)    -> every entry of domain D goes (QEMU 10.0
                                     ignores the address range of the command)
  amdvi_iotlb_inval                 (INVALIDATE_IOTLB_PAGES)    -> all (its trace names nothing; only
                                     sent for ATS devices, none here)
  amdvi_devtab_inval BB:DD.F        (INVALIDATE_DEVTAB_ENTRY)   -> that device's entries (QEMU keeps
                                     them, but the driver follows a DTE change with a domain flush: safe side)
The trace has neither the permissions nor the page size of an entry: --qemu-iotlb (amdvi_iotlb_scan.py's
read of QEMU's hash table at the pause) supplies them. An entry is output only if the trace model and
QEMU's table both hold it with the same domain and frame; disagreements are counted on stderr.

Output: TSV, header "sid iova phys size perm domain", hex, sorted: sid = device id, iova = the IOVA page
aligned to the entry's page size, phys = QEMU's translated_addr (the frame of that page), size, perm
(r / w / rw), domain = the domain id QEMU took from the DTE. Entries of one large page are merged.
"""
import re, sys
from collections import Counter

LINE = re.compile(r'^(?:\d+@[0-9.]+:)?(amdvi_\w+)\s?(.*)$')
BDF = re.compile(r'([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])')


def bdf(s):
    m = BDF.search(s)
    if not m:
        return None
    b, d, f = (int(x, 16) for x in m.groups())
    return (b << 8) | (d << 3) | f


def kv(args, key):
    m = re.search(r'\b' + key + r'\s+(0x[0-9a-fA-F]+)', args)
    return int(m.group(1), 16) if m else None


def model(text):
    live = {}                 # (devid, gfn) -> (domid, hpa)
    stats, dropped = Counter(), Counter()
    prev = None               # previous event name
    last_key = None           # key of the last amdvi_cache_update

    def drop(pred, why):
        nonlocal live
        keep = {k: v for k, v in live.items() if not pred(k, v)}
        if len(live) - len(keep):
            dropped[why] += len(live) - len(keep)
        live = keep

    for line in text.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        ev, args = m.groups()
        stats[ev] += 1
        if ev == 'amdvi_cache_update':
            devid, dom, gpa, hpa = bdf(args), kv(args, 'domid'), kv(args, 'gpa'), kv(args, 'hpa')
            last_key = (devid, gpa >> 12)
            live[last_key] = (dom, hpa)
        elif ev == 'amdvi_iotlb_reset':
            saved = live.get(last_key) if prev == 'amdvi_cache_update' else None
            drop(lambda k, v: True, ev)
            if saved:
                live[last_key] = saved
        elif ev == 'amdvi_all_inval':
            drop(lambda k, v: True, ev)
        elif ev == 'amdvi_pages_inval':
            dom = kv(args, 'domain')
            if dom is None:
                drop(lambda k, v: True, ev + '(unparsed)')
            else:
                drop(lambda k, v: v[0] == dom, ev)
        elif ev == 'amdvi_iotlb_inval':
            drop(lambda k, v: True, ev)
        elif ev == 'amdvi_devtab_inval':
            devid = bdf(args)
            drop(lambda k, v: devid is None or k[0] == devid, ev)
        prev = ev
    return live, stats, dropped


def main(argv):
    args = argv[1:]
    if not args:
        sys.exit(__doc__)
    path, upto, qiotlb, count_only = args[0], None, None, False
    i = 1
    while i < len(args):
        if args[i] == '--upto':
            upto = int(args[i + 1]); i += 2
        elif args[i] == '--qemu-iotlb':
            qiotlb = args[i + 1]; i += 2
        elif args[i] == '--count-sids':
            count_only = True; i += 1
        else:
            sys.exit(__doc__)
    with open(path, 'rb') as f:
        data = f.read() if upto is None else f.read(upto)
    text = data.decode('utf-8', 'replace')
    text = text[:text.rfind('\n') + 1]          # ignore a half-written last line
    live, stats, dropped = model(text)
    if count_only:
        print(len({k[0] for k in live}), len(live))
        return 0
    err = sys.stderr
    print('amdvi_oracle: %d IOTLB fills traced, %d entries still valid by the trace'
          % (stats['amdvi_cache_update'], len(live)), file=err)
    print('amdvi_oracle: events: ' + ', '.join('%s=%d' % x for x in sorted(stats.items())), file=err)
    print('amdvi_oracle: dropped by: ' + (', '.join('%s=%d' % x for x in sorted(dropped.items())) or 'nothing'), file=err)
    if qiotlb is None:
        sys.exit('amdvi_oracle: --qemu-iotlb is needed for permissions and page sizes')
    q = {}
    for l in open(qiotlb).read().splitlines()[1:]:
        devid, gfn, dom, perms, taddr, pmask = (int(x, 16) for x in l.split('\t'))
        q[(devid, gfn)] = (dom, perms, taddr, pmask)
    both = set(live) & set(q)
    differ = [k for k in both if live[k] != (q[k][0], q[k][2])]
    print('amdvi_oracle: QEMU IOTLB at the pause: %d entries; %d also in the trace model (%d of them with another '
          'domain/frame), %d only in QEMU, %d only in the trace model'
          % (len(q), len(both), len(differ), len(set(q) - set(live)), len(set(live) - set(q))), file=err)
    rows = {}
    for k in sorted(both - set(differ)):
        dom, perms, taddr, pmask = q[k]
        iova = (k[1] << 12) & ~pmask
        rows[(k[0], iova)] = (taddr, pmask + 1, {1: 'r', 2: 'w', 3: 'rw'}[perms], dom)
    print('sid\tiova\tphys\tsize\tperm\tdomain')
    per_sid = Counter()
    for (sid, iova), (phys, size, perm, dom) in sorted(rows.items()):
        per_sid[sid] += 1
        print('%#06x\t%#x\t%#x\t%#x\t%s\t%#x' % (sid, iova, phys, size, perm, dom))
    print('amdvi_oracle: %d oracle rows (entries of one large page merged); per sid: %s'
          % (len(rows), ', '.join('%#06x=%d' % x for x in sorted(per_sid.items()))), file=err)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
