#!/usr/bin/env python3
"""Cross-check an AMD-Vi capture: walk the device table and I/O page tables in memory.elf and compare
with oracle.tsv.

usage: amdvi_check.py DIR [--pages FILE]   (reads DIR/regs.txt, DIR/memory.elf, DIR/oracle.tsv)

DIR is a capture (amdvi.sh OUTDIR) or a trimmed fixture. The device table base comes from MMIO offset
0x0 (base 0xfed80000; size field bits 8:0 = 4 KiB pages - 1). For each device of the oracle, its DTE
(V, TV, Mode, root, IR/IW, DomainID) and, per oracle entry, a walk of the v1 host page table: Mode
levels, NextLevel per PDE (levels may be skipped), NextLevel 0 = leaf of that level's size, 7 = a
page-size-encoded PTE (size from the run of 1s above bit 12 of its address). The walk gives the frame,
page size and the leaf's IR/IW (what QEMU 10.0 caches as the entry's permission; it checks the upper
levels' IR/IW only against the access); the DTE gives the domain id.
--pages FILE writes the 4 KiB page addresses a trimmed fixture needs: the device-table pages holding the
DTE of every device that translates (Mode 1..6), and every page-table page of those devices (whole
trees, not the leaf data pages). Exit status 0 if at least one entry matches and none is unreadable
from the dump, 1 otherwise (entries that disagree are reported, not fatal: a PTE cleared but not yet
invalidated at the instant of the pause is possible).
"""
import os, sys
from collections import Counter
sys.dont_write_bytecode = True          # no __pycache__ beside the scripts
from capmem import ElfMem, regs, read_oracle, write_pages

BASE = 0xfed80000
A = 0x000ffffffffff000


def dte(mem, dt, devid):
    d = mem.qs(dt + devid * 32, 4)
    return dict(raw=d, v=d[0] & 1, tv=(d[0] >> 1) & 1, mode=(d[0] >> 9) & 7, root=d[0] & A,
                ir=(d[0] >> 61) & 1, iw=(d[0] >> 62) & 1, dom=d[1] & 0xffff)


def perm(e):
    return ('r' if e >> 61 & 1 else '') + ('w' if e >> 62 & 1 else '')


def large_size(e):
    b = 12
    while (e >> b) & 1:
        b += 1
    return 1 << (b + 1)


def walk(mem, d, iova):
    """-> (frame, size, leaf perm, and-of-all-levels perm, levels visited) or a reason string."""
    lvl, tbl, acc = d['mode'], d['root'], perm(d['raw'][0])
    path = []
    if iova >> min(64, 12 + 9 * lvl):
        return 'IOVA beyond the %d-level table' % lvl
    while True:
        idx = (iova >> (12 + 9 * (lvl - 1))) & 0x1ff
        e = mem.q(tbl + idx * 8)
        path.append(lvl)
        if not e & 1:
            return 'not present at level %d (entry %#x)' % (lvl, e)
        acc = ''.join(c for c in acc if c in perm(e))
        nl = (e >> 9) & 7
        if nl == 0:
            size = 1 << (12 + 9 * (lvl - 1))
            return (e & A & ~(size - 1), size, perm(e), acc or '-', path)
        if nl == 7:
            size = large_size(e)
            return (e & A & ~(size - 1), size, perm(e), acc or '-', path)
        if nl >= lvl:
            return 'bad NextLevel %d at level %d' % (nl, lvl)
        lvl, tbl = nl, e & A


def tree_pages(mem, root, lvl, out):
    """Add every table page of the tree at root (level lvl) to out; -> number of leaf PTEs."""
    out.add(root)
    leaves = 0
    for i, e in enumerate(mem.qs(root, 512)):
        if not e & 1:
            continue
        nl = (e >> 9) & 7
        if nl in (0, 7):
            leaves += 1
        elif nl < lvl:
            leaves += tree_pages(mem, e & A, nl, out)
    return leaves


def main(argv):
    if len(argv) not in (2, 4) or (len(argv) == 4 and argv[2] != '--pages'):
        sys.exit(__doc__)
    d = argv[1]
    r = regs(os.path.join(d, 'regs.txt'), BASE)
    if 0 not in r or 0x18 not in r:
        sys.exit('amdvi_check: no device table base (0xfed80000) / control (0xfed80018) in regs.txt')
    mem = ElfMem(os.path.join(d, 'memory.elf'))
    dt, dt_size = r[0] & A, ((r[0] & 0x1ff) + 1) << 12
    ctrl = r[0x18]
    print('DevTabBase=%#x (table %#x, %d KiB, %d DTEs) Control=%#x (IommuEn=%d) EFR=%#x'
          % (r[0], dt, dt_size >> 10, dt_size // 32, ctrl, ctrl & 1, r.get(0x30, 0)))
    rows = read_oracle(os.path.join(d, 'oracle.tsv'))
    ok, bad, why, ex = Counter(), Counter(), Counter(), []
    unreadable = 0
    dtes = {}
    for sid, iova, phys, size, prm, dom in rows:
        try:
            if sid not in dtes:
                dtes[sid] = dte(mem, dt, sid)
            t = dtes[sid]
            if not (t['v'] and t['tv']) or t['mode'] in (0, 7):
                res = 'DTE V=%d TV=%d Mode=%d: no translation' % (t['v'], t['tv'], t['mode'])
            else:
                res = walk(mem, t, iova)
        except KeyError as e:
            res = 'unreadable: %s' % e
            unreadable += 1
        if isinstance(res, str):
            bad[sid] += 1; why[res.split(' (')[0]] += 1
            if len(ex) < 5:
                ex.append('%#06x %#x: %s' % (sid, iova, res))
            continue
        diffs = []
        if res[0] != phys: diffs.append('phys %#x' % res[0])
        if res[1] != size: diffs.append('size %#x' % res[1])
        if res[2] != prm: diffs.append('perm %s' % res[2])
        if t['dom'] != dom: diffs.append('domain %#x' % t['dom'])
        if diffs:
            bad[sid] += 1; why['differs: ' + ' '.join(x.split()[0] for x in diffs)] += 1
            if len(ex) < 5:
                ex.append('%#06x %#x: oracle %#x/%#x/%s/%#x, walk %s' % (sid, iova, phys, size, prm, dom, ', '.join(diffs)))
        else:
            ok[sid] += 1
            if res[3] != res[2]:
                why['note: upper levels restrict %s to %s' % (res[2], res[3])] += 1
    sizes = Counter(x[3] for x in rows)
    for sid in sorted(set(ok) | set(bad)):
        t = dtes.get(sid)
        desc = ('DTE %s V=%d TV=%d Mode=%d root=%#x IR=%d IW=%d DomainID=%#x'
                % ('/'.join('%#x' % x for x in t['raw']), t['v'], t['tv'], t['mode'], t['root'], t['ir'], t['iw'], t['dom'])) if t else '?'
        print('sid %#06x (%02x:%02x.%d): %s' % (sid, sid >> 8, (sid >> 3) & 31, sid & 7, desc))
        print('   oracle entries: %d match the walk, %d do not' % (ok[sid], bad[sid]))
    print('   oracle page sizes: ' + ', '.join('%#x x%d' % x for x in sorted(sizes.items())))
    for k, n in why.most_common():
        print('   %s x%d' % (k if k.startswith('note') else 'mismatch reason: ' + k, n))
    for e in ex:
        print('   e.g. ' + e)
    if len(argv) == 4:
        pages = set(mem.pages)          # what the oracle walks read, plus:
        mem.track = False
        ndev = 0
        for devid in range(dt_size // 32):
            if devid % 128 == 0:        # skip whole device-table pages that are not in a trimmed dump
                try:
                    mem.read(dt + devid * 32, 8)
                except KeyError:
                    continue
            t = dte(mem, dt, devid)
            if t['v'] and t['tv'] and t['mode'] not in (0, 7):
                ndev += 1
                pages.add((dt + devid * 32) & ~0xfff)
                leaves = tree_pages(mem, t['root'], t['mode'], pages)
                print('   translating device %#06x: DomainID %#x Mode %d, %d leaf PTEs' % (devid, t['dom'], t['mode'], leaves))
        write_pages(argv[3], pages)
        print('   pages read: ' + ' '.join('%#x' % x for x in sorted(pages)))
        print('   fixture pages: %d (%d translating devices) -> %s' % (len(pages), ndev, argv[3]))
    print('amdvi_check: %d of %d oracle entries match the table walk, %d do not'
          % (sum(ok.values()), len(rows), sum(bad.values())))
    return 0 if ok and not unreadable else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv))
