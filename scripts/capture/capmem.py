"""Shared by amdvi_check.py and smmuv3_check.py: guest physical memory from a QEMU ELF core (the full
dump-guest-memory one or a trimmed fixture), with a record of the 4 KiB pages read, and regs.txt."""
import re, struct


class ElfMem:
    """Physical memory of an ELF core (PT_LOAD segments by p_paddr). `pages` collects the 4 KiB
    page addresses of every read while `track` is true."""

    def __init__(self, path):
        self.f = open(path, 'rb')
        h = self.f.read(64)
        if h[:4] != b'\x7fELF' or h[4] != 2:
            raise SystemExit('%s: not an ELF64 core' % path)
        self.machine, = struct.unpack_from('<H', h, 0x12)
        phoff, = struct.unpack_from('<Q', h, 0x20)
        phentsize, phnum = struct.unpack_from('<HH', h, 0x36)
        self.loads = []
        for i in range(phnum):
            self.f.seek(phoff + i * phentsize)
            typ, _, off, _, pa, fsz, _, _ = struct.unpack('<IIQQQQQQ', self.f.read(56))
            if typ == 1 and fsz:
                self.loads.append((pa, fsz, off))
        self.pages = set()
        self.track = True

    def read(self, pa, n):
        if self.track:
            for p in range(pa & ~0xfff, pa + n, 0x1000):
                self.pages.add(p)
        for base, size, off in self.loads:
            if base <= pa and pa + n <= base + size:
                self.f.seek(off + pa - base)
                return self.f.read(n)
        raise KeyError('physical address %#x not in the dump' % pa)

    def q(self, pa):
        return struct.unpack('<Q', self.read(pa, 8))[0]

    def qs(self, pa, n):
        return list(struct.unpack('<%dQ' % n, self.read(pa, 8 * n)))


def regs(path, base):
    """regs.txt (monitor `xp` lines, absolute addresses) -> {offset from base: value}."""
    out = {}
    for line in open(path):
        m = re.match(r'^([0-9a-f]+): (0x[0-9a-f]+)', line.strip())
        if m:
            out[int(m.group(1), 16) - base] = int(m.group(2), 16)
    return out


def read_oracle(path):
    rows = []
    for l in open(path).read().splitlines()[1:]:
        f = l.split('\t')
        rows.append((int(f[0], 16), int(f[1], 16), int(f[2], 16), int(f[3], 16), f[4], int(f[5], 16)))
    return rows


def write_pages(path, pages):
    with open(path, 'w') as f:
        for p in sorted(pages):
            f.write('%#x\n' % p)
