#!/usr/bin/env python3
"""Cross-check an SMMUv3 capture: walk stream table -> STE -> CD -> stage-1 tables in memory.elf and
compare with oracle.tsv.

usage: smmuv3_check.py DIR [--pages FILE]   (reads DIR/regs.txt, DIR/memory.elf, DIR/oracle.tsv)

DIR is a capture (smmuv3.sh OUTDIR) or a trimmed fixture. Registers at base 0x09050000: STRTAB_BASE
(0x80; address bits 51:6), STRTAB_BASE_CFG (0x88; LOG2SIZE 5:0, SPLIT 10:6, FMT 17:16: 0 linear,
1 two-level). Two-level: L1 descriptor (L2Ptr 51:6, Span 4:0) at base + (sid >> SPLIT) * 8, STE at
L2Ptr + (sid & (2^SPLIT - 1)) * 64. STE: V, Config (0 abort, 4 bypass, 5 stage 1, 6 stage 2, 7 both),
S1Fmt, S1ContextPtr, S1CDMax, S1DSS. CD of substream 0 (single CD if S1CDMax = 0, else linear table
or two-level with 64 CDs per 4 KiB leaf table): T0SZ, TG0, EPD0, V, IPS, ASID, TTB0. Stage-1 walk,
4 KiB granule: start level from T0SZ, table/block/page descriptors, output address 47:12, permission
from AP[2] (bit 7: read-only), as QEMU 10.0 caches it. Every valid STE is listed by Config (abort,
bypass, translate). --pages FILE writes the 4 KiB pages a trimmed fixture needs: the L1 table, every
L2 table (or, linear, every stream-table page) holding a valid STE, every CD page and every stage-1
table page of the translating STEs (whole trees, not leaf data pages).
Exit status 0 if at least one oracle entry matches and none is unreadable, 1 otherwise.
"""
import os, sys
from collections import Counter
sys.dont_write_bytecode = True          # no __pycache__ beside the scripts
from capmem import ElfMem, regs, read_oracle, write_pages

BASE = 0x09050000
OA = 0x0000fffffffff000
CONFIG = {0: 'abort', 4: 'bypass', 5: 'S1', 6: 'S2', 7: 'S1+S2'}


class Smmu:
    def __init__(self, mem, r):
        self.mem = mem
        self.base = r[0x80] & 0x000fffffffffffc0
        cfg = r[0x88]
        self.log2size, self.split, self.fmt = cfg & 0x3f, (cfg >> 6) & 0x1f, (cfg >> 16) & 3
        self.desc = ('STRTAB_BASE=%#x (RA=%d) STRTAB_BASE_CFG=%#x: %s, LOG2SIZE=%d, SPLIT=%d'
                     % (r[0x80], (r[0x80] >> 62) & 1, cfg, 'two-level' if self.fmt == 1 else 'linear',
                        self.log2size, self.split))

    def ste_addr(self, sid):
        if sid >> self.log2size:
            return None, 'sid beyond LOG2SIZE'
        if self.fmt == 0:
            return self.base + sid * 64, None
        l1 = self.mem.q(self.base + (sid >> self.split) * 8)
        span = l1 & 0x1f
        idx = sid & ((1 << self.split) - 1)
        if not span or idx >> (span - 1):
            return None, 'L1 descriptor %#x does not cover the sid' % l1
        return (l1 & 0x000fffffffffffc0) + idx * 64, None

    def ste(self, sid):
        a, why = self.ste_addr(sid)
        if a is None:
            return why
        s = self.mem.qs(a, 8)
        return dict(addr=a, raw=s, v=s[0] & 1, config=(s[0] >> 1) & 7, s1fmt=(s[0] >> 4) & 3,
                    cdptr=s[0] & 0x000fffffffffffc0, cdmax=(s[0] >> 59) & 0x1f, s1dss=s[1] & 3,
                    strw=(s[1] >> 30) & 3, eats=(s[1] >> 28) & 3, vmid=s[2] & 0xffff)

    def cd(self, t, ssid=0):
        if t['cdmax'] == 0 or t['s1fmt'] == 0:
            a = t['cdptr'] + ssid * 64
        else:
            sp = 6 if t['s1fmt'] == 1 else 10
            l1 = self.mem.q(t['cdptr'] + (ssid >> sp) * 8)
            if not l1 & 1:
                return 'L1 CD descriptor %#x not valid' % l1
            a = (l1 & 0x000ffffffffff000) + (ssid & ((1 << sp) - 1)) * 64
        c = self.mem.qs(a, 8)
        return dict(addr=a, raw=c, t0sz=c[0] & 0x3f, tg0=(c[0] >> 6) & 3, epd0=(c[0] >> 14) & 1,
                    endi=(c[0] >> 15) & 1, epd1=(c[0] >> 30) & 1, v=(c[0] >> 31) & 1, ips=(c[0] >> 32) & 7,
                    aa64=(c[0] >> 41) & 1, asid=c[0] >> 48, ttb0=c[1] & 0x000ffffffffffff0)

    @staticmethod
    def start_level(t0sz):
        vab = 64 - t0sz
        return 4 - -(-(vab - 12) // 9)

    def walk(self, c, iova):
        """-> (frame, size, perm, levels) or reason."""
        if c['tg0'] != 0:
            return 'TG0=%d: only the 4 KiB granule is walked' % c['tg0']
        vab = 64 - c['t0sz']
        if iova >> vab:
            return 'IOVA beyond the %d-bit input range' % vab
        lvl, tbl = self.start_level(c['t0sz']), c['ttb0'] & OA
        aptable = 0
        while True:
            shift = 12 + 9 * (3 - lvl)
            e = self.mem.q(tbl + ((iova >> shift) & 0x1ff) * 8)
            if not e & 1:
                return 'not present at level %d (descriptor %#x)' % (lvl, e)
            if lvl < 3 and e & 2:
                aptable |= (e >> 61) & 3
                tbl, lvl = e & OA, lvl + 1
                continue
            if lvl == 3 and not e & 2:
                return 'reserved descriptor at level 3 (%#x)' % e
            if lvl == 0:
                return 'block descriptor at level 0 (%#x)' % e
            size = 1 << shift
            return (e & OA & ~(size - 1), size, 'r' if e >> 7 & 1 else 'rw', lvl, e, aptable)

    def tree_pages(self, tbl, lvl, t0sz, out):
        out.add(tbl & ~0xfff)
        n = 512
        if lvl == self.start_level(t0sz):
            n = min(512, 1 << (64 - t0sz - (12 + 9 * (3 - lvl))))
        leaves = 0
        for e in self.mem.qs(tbl, n):
            if not e & 1:
                continue
            if lvl < 3 and e & 2:
                leaves += self.tree_pages(e & OA, lvl + 1, t0sz, out)
            else:
                leaves += 1
        return leaves

    def all_stes(self):
        """-> [(sid, ste addr, L2 table addr or None, L2 table bytes)] of the readable table."""
        out = []
        if self.fmt == 0:
            skip = False
            for sid in range(1 << self.log2size):
                a = self.base + sid * 64
                if a & 0xfff == 0:
                    try:
                        self.mem.read(a, 8)
                        skip = False
                    except KeyError:
                        skip = True
                if not skip:
                    out.append((sid, a, None, 0))
        else:
            for i in range(1 << (self.log2size - self.split)):
                l1 = self.mem.q(self.base + i * 8)
                span = l1 & 0x1f
                if not span:
                    continue
                l2 = l1 & 0x000fffffffffffc0
                for j in range(1 << (span - 1)):
                    out.append(((i << self.split) | j, l2 + j * 64, l2, 64 << (span - 1)))
        return out


def main(argv):
    if len(argv) not in (2, 4) or (len(argv) == 4 and argv[2] != '--pages'):
        sys.exit(__doc__)
    d = argv[1]
    r = regs(os.path.join(d, 'regs.txt'), BASE)
    for o in (0x20, 0x80, 0x88):
        if o not in r:
            sys.exit('smmuv3_check: register %#x missing in regs.txt' % (BASE + o))
    mem = ElfMem(os.path.join(d, 'memory.elf'))
    s = Smmu(mem, r)
    print('CR0=%#x (SMMUEN=%d) IDR0=%#x IDR1=%#x (SIDSIZE=%d SSIDSIZE=%d) GBPA=%#x; %s'
          % (r[0x20], r[0x20] & 1, r.get(0, 0), r.get(4, 0), r.get(4, 0) & 0x3f, (r.get(4, 0) >> 6) & 0x1f,
             r.get(0x44, 0), s.desc))
    rows = read_oracle(os.path.join(d, 'oracle.tsv'))
    ok, bad, why, ex = Counter(), Counter(), Counter(), []
    unreadable = 0
    ctx = {}
    for sid, iova, phys, size, prm, dom in rows:
        try:
            if sid not in ctx:
                t = s.ste(sid)
                c = None
                if isinstance(t, dict) and t['v'] and t['config'] in (5, 7):
                    c = s.cd(t)
                ctx[sid] = (t, c)
            t, c = ctx[sid]
            if isinstance(t, str):
                res = t
            elif not t['v'] or t['config'] != 5:
                res = 'STE V=%d Config=%s: not walked (stage 1 only)' % (t['v'], CONFIG.get(t['config'], t['config']))
            elif isinstance(c, str):
                res = c
            elif not c['v']:
                res = 'CD not valid'
            else:
                res = s.walk(c, iova)
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
        if c['asid'] != dom: diffs.append('ASID %#x' % c['asid'])
        if diffs:
            bad[sid] += 1; why['differs: ' + ' '.join(x.split()[0] for x in diffs)] += 1
            if len(ex) < 5:
                ex.append('%#06x %#x: oracle %#x/%#x/%s/%#x, walk %s' % (sid, iova, phys, size, prm, dom, ', '.join(diffs)))
        else:
            ok[sid] += 1
            if res[5]:
                why['note: APTable %d above a matching leaf' % res[5]] += 1
            if not (res[4] >> 10) & 1:
                why['note: leaf without AF'] += 1
    for sid in sorted(set(ok) | set(bad)):
        t, c = ctx.get(sid, ('?', None))
        if isinstance(t, dict):
            desc = ('STE@%#x %s V=%d Config=%s S1Fmt=%d S1CDMax=%d S1DSS=%d S1ContextPtr=%#x STRW=%d'
                    % (t['addr'], '/'.join('%#x' % x for x in t['raw'][:4]), t['v'], CONFIG.get(t['config'], t['config']),
                       t['s1fmt'], t['cdmax'], t['s1dss'], t['cdptr'], t['strw']))
            if isinstance(c, dict):
                desc += ('; CD@%#x %#x/%#x V=%d ASID=%#x T0SZ=%d (%d-bit, start level %d) TG0=%d IPS=%d EPD0=%d EPD1=%d AA64=%d TTB0=%#x'
                         % (c['addr'], c['raw'][0], c['raw'][1], c['v'], c['asid'], c['t0sz'], 64 - c['t0sz'],
                            s.start_level(c['t0sz']), c['tg0'], c['ips'], c['epd0'], c['epd1'], c['aa64'], c['ttb0']))
            elif c:
                desc += '; CD: ' + c
        else:
            desc = t
        print('sid %#06x (%02x:%02x.%d): %s' % (sid, sid >> 8, (sid >> 3) & 31, sid & 7, desc))
        print('   oracle entries: %d match the walk, %d do not' % (ok[sid], bad[sid]))
    print('   oracle page sizes: ' + ', '.join('%#x x%d' % x for x in sorted(Counter(x[3] for x in rows).items())))
    for k, n in why.most_common():
        print('   %s x%d' % (k if k.startswith('note') else 'mismatch reason: ' + k, n))
    for e in ex:
        print('   e.g. ' + e)
    if len(argv) == 4:
        pages = set(mem.pages)
        mem.track = False
        if s.fmt == 1:                  # the whole L1 table
            pages.update(range(s.base & ~0xfff, s.base + (8 << (s.log2size - s.split)), 0x1000))
        by_config = {}
        for sid, a, l2, l2len in s.all_stes():
            try:
                t = s.ste(sid)
            except KeyError:
                continue
            if not isinstance(t, dict) or not t['v']:
                continue
            by_config.setdefault(CONFIG.get(t['config'], t['config']), []).append(sid)
            if l2 is not None:
                pages.update(range(l2 & ~0xfff, l2 + l2len, 0x1000))
            else:
                pages.add(a & ~0xfff)
            if t['config'] in (5, 7):
                c = s.cd(t)
                if isinstance(c, dict):
                    pages.add(c['addr'] & ~0xfff)
                    if t['cdmax'] and t['s1fmt']:
                        pages.add(t['cdptr'] & ~0xfff)
                    if c['v'] and c['tg0'] == 0:
                        n = s.tree_pages(c['ttb0'] & OA, s.start_level(c['t0sz']), c['t0sz'], pages)
                        print('   translating STE %#06x: ASID %#x, %d leaf descriptors' % (sid, c['asid'], n))
        for k, v in sorted(by_config.items(), key=lambda x: str(x[0])):
            print('   valid STEs with Config=%s: %d (%s)' % (k, len(v), ' '.join('%#x' % x for x in v[:12]) + (' ...' if len(v) > 12 else '')))
        write_pages(argv[3], pages)
        print('   pages read: ' + ' '.join('%#x' % x for x in sorted(pages)))
        print('   fixture pages: %d -> %s' % (len(pages), argv[3]))
    print('smmuv3_check: %d of %d oracle entries match the table walk, %d do not'
          % (sum(ok.values()), len(rows), sum(bad.values())))
    return 0 if ok and not unreadable else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv))
