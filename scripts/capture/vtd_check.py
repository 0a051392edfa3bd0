#!/usr/bin/env python3
"""Cross-check a VT-d capture: walk the tables in memory.elf from RTADDR and compare with oracle.tsv.

usage: vtd_check.py OUTDIR      (reads OUTDIR/regs.txt, OUTDIR/memory.elf, OUTDIR/oracle.tsv)
       vtd_check.py OUTDIR --expect-pt SID[,SID...]
         (pass-through capture: print each SID's context; exit 0 only if every one is pass-through,
          legacy TT=2 or scalable PGTT=4; the oracle is not read)

Handles legacy mode (RTADDR.TTM=00: root -> context -> second-level tables) and scalable mode
(TTM=01: scalable root -> 256-bit context -> PASID directory -> PASID entry (RID_PASID) ->
second-level tables). Prints each present device's context (TT/AW/DID, PGTT for scalable mode),
then for every oracle entry whether the walk gives the same page frame, size and permissions.
Exit status 0 if at least one entry matches (disagreeing entries are reported: a guest that was
unmapping at the instant of the pause can legitimately have a cleared PTE not yet invalidated),
1 if none matches.
"""
import os, re, struct, sys
from collections import Counter

ADDR = 0x000ffffffffff000


class ElfMem:
    """Physical memory of a QEMU dump-guest-memory ELF core (PT_LOAD segments by p_paddr)."""
    def __init__(self, path):
        self.f = open(path, 'rb')
        h = self.f.read(64)
        if h[:4] != b'\x7fELF' or h[4] != 2:
            raise SystemExit('%s: not an ELF64 core' % path)
        phoff, = struct.unpack_from('<Q', h, 0x20)
        phentsize, phnum = struct.unpack_from('<HH', h, 0x36)
        self.loads = []
        for i in range(phnum):
            self.f.seek(phoff + i * phentsize)
            typ, _, off, _, pa, fsz, _, _ = struct.unpack('<IIQQQQQQ', self.f.read(56))
            if typ == 1:
                self.loads.append((pa, fsz, off))

    def read(self, pa, n):
        for base, size, off in self.loads:
            if base <= pa and pa + n <= base + size:
                self.f.seek(off + pa - base)
                return self.f.read(n)
        raise KeyError('physical address %#x not in the dump' % pa)

    def q(self, pa):
        return struct.unpack('<Q', self.read(pa, 8))[0]


def regs(path):
    out = {}
    for line in open(path):
        m = re.match(r'^([0-9a-f]+): (0x[0-9a-f]+)', line.strip())
        if m:
            out[int(m.group(1), 16) - 0xfed90000] = int(m.group(2), 16)
    return out


class Walker:
    def __init__(self, mem, rtaddr):
        self.mem = mem
        self.rta = rtaddr & ADDR
        self.scalable = ((rtaddr >> 10) & 3) == 1
        self.cache = {}

    def context(self, sid):
        """-> dict(tt/pgtt, aw, did, slptptr, desc) or None/str reason."""
        if sid in self.cache:
            return self.cache[sid]
        bus, devfn = sid >> 8, sid & 0xff
        m = self.mem
        if not self.scalable:
            re_lo = m.q(self.rta + bus * 16)
            if not re_lo & 1:
                r = 'root entry not present'
            else:
                lo, hi = m.q((re_lo & ADDR) + devfn * 16), m.q((re_lo & ADDR) + devfn * 16 + 8)
                if not lo & 1:
                    r = 'context entry not present'
                else:
                    tt, aw, did = (lo >> 2) & 3, hi & 7, (hi >> 8) & 0xffff
                    r = dict(tt=tt, aw=aw, did=did, slpt=lo & ADDR,
                             desc='legacy ctx lo=%#x hi=%#x TT=%d AW=%d DID=%#x SLPTPTR=%#x' % (lo, hi, tt, aw, did, lo & ADDR))
                    if tt == 2:
                        r['pt'] = True
        else:
            half = 8 if devfn >= 128 else 0
            rent = m.q(self.rta + bus * 16 + half)
            if not rent & 1:
                r = 'scalable root entry (%s half) not present' % ('upper' if half else 'lower')
            else:
                ce = (rent & ADDR) + (devfn & 0x7f) * 32
                c0, c1 = m.q(ce), m.q(ce + 8)
                if not c0 & 1:
                    r = 'scalable context entry not present'
                else:
                    rid_pasid = c1 & 0xfffff
                    pdir = c0 & ADDR
                    pde = m.q(pdir + (rid_pasid >> 6) * 8)
                    if not pde & 1:
                        r = 'PASID directory entry not present'
                    else:
                        pe = (pde & ADDR) + (rid_pasid & 0x3f) * 64
                        p0, p1 = m.q(pe), m.q(pe + 8)
                        if not p0 & 1:
                            r = 'PASID entry not present'
                        else:
                            pgtt, aw, did = (p0 >> 6) & 7, (p0 >> 2) & 7, p1 & 0xffff
                            r = dict(tt=pgtt, aw=aw, did=did, slpt=p0 & ADDR,
                                     desc='sm ctx lo=%#x hi=%#x RID_PASID=%d PDTS=%d pasid-dir=%#x pde=%#x; '
                                          'PASID entry q0=%#x q1=%#x PGTT=%d AW=%d DID=%#x SSPTPTR=%#x'
                                          % (c0, c1, rid_pasid, (c0 >> 9) & 7, pdir, pde, p0, p1, pgtt, aw, did, p0 & ADDR))
                            if pgtt == 4:
                                r['pt'] = True
                            elif pgtt == 1:
                                # first level (x-flts=on): x86-64-format table at FLPTR, FLPM 0 = 4, 1 = 5 levels
                                p2 = m.q(pe + 16)
                                flpm = (p2 >> 2) & 3
                                r['fl'] = True
                                r['flpt'] = p2 & ADDR
                                r['levels'] = {0: 4, 1: 5}.get(flpm)
                                r['desc'] += ' q2=%#x FLPM=%d FLPTR=%#x' % (p2, flpm, p2 & ADDR)
                                if r['levels'] is None:
                                    r['unsupported'] = 'PGTT=1 with reserved FLPM=%d' % flpm
                            elif pgtt != 2:
                                r['unsupported'] = 'PGTT=%d (only first-level, 1, and second-level, 2, are walked)' % pgtt
        self.cache[sid] = r
        return r

    def translate(self, ctx, iova):
        """-> (phys_page, size, perm) or reason string."""
        if ctx.get('fl'):
            return self.translate_fl(ctx, iova)
        levels = ctx['aw'] + 2
        tbl = ctx['slpt']
        for lvl in range(levels, 0, -1):
            idx = (iova >> (12 + 9 * (lvl - 1))) & 0x1ff
            e = self.mem.q(tbl + idx * 8)
            if not e & 3:
                return 'not present at level %d (entry %#x)' % (lvl, e)
            if lvl == 1 or (lvl <= 3 and e & 0x80):
                size = 1 << (12 + 9 * (lvl - 1))
                return (e & ADDR & ~(size - 1), size, ('r' if e & 1 else '') + ('w' if e & 2 else ''))
            tbl = e & ADDR
        return 'walk fell through'

    def translate_fl(self, ctx, iova):
        """First-level walk (VT-d 9.7, x86-64 format): P bit 0, R/W bit 1 ANDed over the levels, U/S bit 2
        required (DMA without PASID is a user request), PS bit 7 at levels 2 and 3 (bit 12 is then PAT)."""
        tbl, writable = ctx['flpt'], True
        for lvl in range(ctx['levels'], 0, -1):
            idx = (iova >> (12 + 9 * (lvl - 1))) & 0x1ff
            e = self.mem.q(tbl + idx * 8)
            if not e & 1:
                return 'not present at level %d (entry %#x)' % (lvl, e)
            if not e & 4:
                return 'U/S clear at level %d (entry %#x)' % (lvl, e)
            writable = writable and bool(e & 2)
            if lvl == 1 or (lvl <= 3 and e & 0x80):
                size = 1 << (12 + 9 * (lvl - 1))
                return (e & ADDR & ~(size - 1), size, 'r' + ('w' if writable else ''))
            tbl = e & ADDR
        return 'walk fell through'


def expect_pt(w, sids):
    """Print each sid's context; 0 if all are pass-through."""
    npt = 0
    for sid in sids:
        c = w.context(sid)
        pt = not isinstance(c, str) and c.get('pt', False)
        npt += pt
        print('sid %#06x (%02x:%02x.%d): %s -> %s' % (sid, sid >> 8, (sid >> 3) & 31, sid & 7,
              c if isinstance(c, str) else c['desc'], 'pass-through' if pt else 'NOT pass-through'))
    print('vtd_check: %d of %d devices have pass-through context entries' % (npt, len(sids)))
    return 0 if npt == len(sids) else 1


def main(argv):
    pt_sids = None
    if len(argv) == 4 and argv[2] == '--expect-pt':
        pt_sids = [int(x, 16) for x in argv[3].split(',')]
    elif len(argv) != 2:
        sys.exit(__doc__)
    d = argv[1]
    r = regs(os.path.join(d, 'regs.txt'))
    if 0x20 not in r:
        sys.exit('vtd_check: no RTADDR (0xfed90020) in regs.txt')
    mem = ElfMem(os.path.join(d, 'memory.elf'))
    w = Walker(mem, r[0x20])
    print('RTADDR=%#x (%s mode) GSTS=%#x' % (r[0x20], 'scalable' if w.scalable else 'legacy', r.get(0x1c, 0)))
    if pt_sids is not None:
        return expect_pt(w, pt_sids)
    rows = [l.rstrip('\n').split('\t') for l in open(os.path.join(d, 'oracle.tsv'))][1:]
    ok, bad, why = Counter(), Counter(), Counter()
    examples = []
    for sid_s, iova_s, phys_s, size_s, perm, dom_s in rows:
        sid, iova, phys, size, dom = (int(x, 16) for x in (sid_s, iova_s, phys_s, size_s, dom_s))
        ctx = w.context(sid)
        if isinstance(ctx, str):
            bad[sid] += 1; why[ctx] += 1; continue
        if 'unsupported' in ctx or ctx.get('pt'):
            bad[sid] += 1; why[ctx.get('unsupported', 'pass-through')] += 1; continue
        t = w.translate(ctx, iova)
        if isinstance(t, str):
            bad[sid] += 1; why[t.split(' (')[0]] += 1
            if len(examples) < 5:
                examples.append('%s %s: %s' % (sid_s, iova_s, t))
            continue
        reasons = []
        if t[0] != phys: reasons.append('phys %#x' % t[0])
        if t[1] != size: reasons.append('size %#x' % t[1])
        if t[2] != perm: reasons.append('perm %s' % t[2])
        if ctx['did'] != dom: reasons.append('DID %#x' % ctx['did'])
        if reasons:
            bad[sid] += 1; why['differs: ' + ' '.join(x.split()[0] for x in reasons)] += 1
            if len(examples) < 5:
                examples.append('%s %s: oracle %s/%s/%s/%s, walk %s' % (sid_s, iova_s, phys_s, size_s, perm, dom_s, ', '.join(reasons)))
        else:
            ok[sid] += 1
    for sid in sorted(set(ok) | set(bad)):
        c = w.context(sid)
        print('sid %#06x (%02x:%02x.%d): %s' % (sid, sid >> 8, (sid >> 3) & 31, sid & 7, c if isinstance(c, str) else c['desc']))
        print('   oracle entries: %d match the walk, %d do not' % (ok[sid], bad[sid]))
    for k, n in why.most_common():
        print('   mismatch reason: %s x%d' % (k, n))
    for e in examples:
        print('   e.g. ' + e)
    print('vtd_check: %d of %d oracle entries match the table walk, %d do not'
          % (sum(ok.values()), len(rows), sum(bad.values())))
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv))
