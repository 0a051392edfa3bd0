#!/usr/bin/env python3
"""Turn QEMU 10.0's SMMUv3 trace log into the translations QEMU's IOTLB still holds.

usage: smmuv3_oracle.py TRACE.log [--upto BYTES] > oracle.tsv      (summary on stderr)

Reads the log of `-trace events=...,file=TRACE.log` (lines "[PID@SEC.USEC:]event args") in file order,
up to BYTES (the log size when the VM was paused), and models QEMU's SMMU IOTLB (hw/arm/smmu-common.c:
one entry per (ASID, VMID, IOVA aligned to the entry's size, granule, level)):
  smmu_iotlb_insert asid vmid addr tg level     -> an entry is filled (after a page-table walk); its size
                                                   is that of a level-`level` entry of granule 2^(2 tg + 10)
  smmuv3_translate_success sid iova translated perm stage
                                                -> the translation that caused the fill (the next one
                                                   inside the new entry): gives the stream id, the frame
                                                   (translated minus the offset in the entry) and the
                                                   permission (1 r, 2 w, 3 rw); later ones that hit a
                                                   live entry of the same ASID add their stream id
and drops entries exactly as QEMU does:
  smmu_iotlb_inv_all (CMD_TLBI_NSNH_ALL, size limit), smmu_reset_exit  -> all
  smmu_iotlb_inv_asid_vmid asid vmid (CMD_TLBI_NH_ASID)                 -> that ASID and VMID
  smmu_iotlb_inv_vmid / smmu_iotlb_inv_vmid_s1 vmid                     -> that VMID (s1: ASID >= 0)
  smmuv3_range_inval vmid asid addr tg num_pages ttl leaf stage (CMD_TLBI_NH_VA(A), CMD_TLBI_S2_IPA) ->
      stage 1: if ttl and num_pages == 1 and asid >= 0 and the exact entry (asid, vmid, addr, tg, ttl)
      exists, only it; else every entry of the ASID (any if -1) and VMID (any if -1) whose range holds
      addr or that lies in [addr, addr + num_pages << granule); stage 2 the same on entries with ASID -1
  smmuv3_cmdq_cfgi_ste sid / smmuv3_cmdq_cfgi_cd sid / ..._ste_range      -> the stream ids' rows (QEMU
      only drops its config cache; the driver follows a STE/CD change with a TLB invalidation anyway:
      safe side)

Output: TSV, header "sid iova phys size perm domain", hex, sorted: one row per (stream id, live entry);
iova aligned to size, phys = frame of the entry, domain = ASID for stage-1 entries (VMID for stage 2).
"""
import re, sys
from collections import Counter

LINE = re.compile(r'^(?:\d+@[0-9.]+:)?(smmu\w+)\s?(.*)$')


def kv(args, key):
    m = re.search(r'\b' + key + r'=\s*(-?0x[0-9a-fA-F]+|-?\d+)', args)
    return int(m.group(1), 0) if m else None


def entry_size(tg, level):
    g = tg * 2 + 10 if tg else 12
    return 1 << (g + (3 - level) * (g - 3))


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    path, upto = argv[1], None
    if len(argv) > 3 and argv[2] == '--upto':
        upto = int(argv[3])
    with open(path, 'rb') as f:
        data = f.read() if upto is None else f.read(upto)
    text = data.decode('utf-8', 'replace')
    text = text[:text.rfind('\n') + 1]          # ignore a half-written last line

    live = {}          # key (asid, vmid, iova, tg, level) -> dict(size, phys, perm, stage, sids)
    pending = None     # key of the last insert still waiting for its translate_success
    sid_asid = {}      # stream id -> (asid, vmid) seen at a fill
    stats, dropped, notes = Counter(), Counter(), Counter()

    def drop(pred, why):
        nonlocal live
        keep = {k: v for k, v in live.items() if not pred(k, v)}
        if len(live) - len(keep):
            dropped[why] += len(live) - len(keep)
        live = keep

    def overlaps(k, v, addr, mask):
        # QEMU: (info->iova & ~entry->addr_mask) == entry->iova || (entry->iova & ~info->mask) == info->iova
        return (addr & ~(v['size'] - 1)) == k[2] or (k[2] & ~mask) == addr

    for line in text.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        ev, args = m.groups()
        stats[ev] += 1
        if ev == 'smmu_iotlb_insert':
            asid, vmid, addr, tg, lvl = (kv(args, x) for x in ('asid', 'vmid', 'addr', 'tg', 'level'))
            key = (asid, vmid, addr, tg, lvl)
            live[key] = dict(size=entry_size(tg, lvl), phys=None, perm=None, stage=None, sids=set())
            pending = key
        elif ev == 'smmuv3_translate_success':
            sid, iova, tr, perm, stage = (kv(args, x) for x in ('sid', 'iova', 'translated', 'perm', 'stage'))
            if pending is not None and pending in live:
                v = live[pending]
                if pending[2] <= iova < pending[2] + v['size']:
                    v.update(phys=tr - (iova - pending[2]), perm=perm, stage=stage)
                    v['sids'].add(sid)
                    sid_asid[sid] = pending[:2]
                    pending = None
                    continue
                notes['translate_success not inside the entry just filled'] += 1
            pending = None
            # an IOTLB hit: add the stream id to the live entry of its ASID that holds the IOVA
            aid = sid_asid.get(sid)
            for k, v in live.items():
                if aid and k[:2] == aid and k[2] <= iova < k[2] + v['size'] and v['phys'] is not None:
                    if v['phys'] + (iova - k[2]) != tr:
                        notes['hit with another frame than the fill'] += 1
                    v['sids'].add(sid)
                    break
        elif ev in ('smmu_iotlb_inv_all', 'smmu_reset_exit'):
            drop(lambda k, v: True, ev)
        elif ev == 'smmu_iotlb_inv_asid_vmid':
            asid, vmid = kv(args, 'asid'), kv(args, 'vmid')
            drop(lambda k, v: k[0] == asid and k[1] == vmid, ev)
        elif ev == 'smmu_iotlb_inv_vmid':
            vmid = kv(args, 'vmid')
            drop(lambda k, v: k[1] == vmid, ev)
        elif ev == 'smmu_iotlb_inv_vmid_s1':
            vmid = kv(args, 'vmid')
            drop(lambda k, v: k[1] == vmid and k[0] >= 0, ev)
        elif ev == 'smmuv3_range_inval':
            vmid, asid, addr, tg, n, ttl, stage = (kv(args, x) for x in ('vmid', 'asid', 'addr', 'tg', 'num_pages', 'ttl', 'stage'))
            g = tg * 2 + 10 if tg else 12
            mask = (n << g) - 1
            if stage == 1:
                exact = (asid, vmid, addr, tg, ttl)
                if ttl and n == 1 and asid >= 0 and exact in live:
                    del live[exact]
                    dropped[ev + '(exact)'] += 1
                else:
                    drop(lambda k, v: (asid < 0 or k[0] == asid) and (vmid < 0 or k[1] == vmid)
                         and overlaps(k, v, addr, mask), ev)
            else:
                exact = (-1, vmid, addr, tg, ttl)
                if ttl and n == 1 and exact in live:
                    del live[exact]
                    dropped[ev + '(exact)'] += 1
                else:
                    drop(lambda k, v: k[0] < 0 and k[1] == vmid and overlaps(k, v, addr, mask), ev)
        elif ev in ('smmuv3_cmdq_cfgi_ste', 'smmuv3_cmdq_cfgi_cd'):
            mm = re.search(r'(?:streamid|sid)=\s*(0x[0-9a-fA-F]+)', args)
            sid = int(mm.group(1), 16) if mm else None
            for k, v in live.items():
                if sid is None or sid in v['sids']:
                    dropped[ev] += len(v['sids']) if sid is None else 1
                    v['sids'] = set() if sid is None else v['sids'] - {sid}
        elif ev == 'smmuv3_cmdq_cfgi_ste_range':
            mm = re.search(r'start=(0x[0-9a-f]+) - end=(0x[0-9a-f]+)', args)
            lo, hi = (int(mm.group(1), 16), int(mm.group(2), 16)) if mm else (0, 0xffffffff)
            for k, v in live.items():
                gone = {s for s in v['sids'] if lo <= s <= hi}
                dropped[ev] += len(gone)
                v['sids'] -= gone

    rows = []
    for k, v in live.items():
        if v['phys'] is None:
            notes['live entry without a translate_success'] += 1
            continue
        dom = k[0] if v['stage'] == 1 else k[1]
        for sid in v['sids']:
            rows.append((sid, k[2], v['phys'] & ~(v['size'] - 1), v['size'],
                         {1: 'r', 2: 'w', 3: 'rw'}.get(v['perm'], '-'), dom, v['stage']))
    rows.sort()
    print('sid\tiova\tphys\tsize\tperm\tdomain')
    per_sid = Counter()
    for sid, iova, phys, size, perm, dom, _ in rows:
        per_sid[sid] += 1
        print('%#06x\t%#x\t%#x\t%#x\t%s\t%#x' % (sid, iova, phys, size, perm, dom))
    err = sys.stderr
    print('smmuv3_oracle: %d IOTLB fills traced, %d entries live at the pause, %d rows; stages %s'
          % (stats['smmu_iotlb_insert'], len(live), len(rows),
             ', '.join('%s=%d' % x for x in sorted(Counter(r[6] for r in rows).items())) or '-'), file=err)
    print('smmuv3_oracle: events: ' + ', '.join('%s=%d' % x for x in sorted(stats.items())), file=err)
    print('smmuv3_oracle: dropped by: ' + (', '.join('%s=%d' % x for x in sorted(dropped.items())) or 'nothing'), file=err)
    if notes:
        print('smmuv3_oracle: notes: ' + ', '.join('%s=%d' % x for x in sorted(notes.items())), file=err)
    print('smmuv3_oracle: per sid: ' + ', '.join('%#06x=%d' % x for x in sorted(per_sid.items())), file=err)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
