#!/usr/bin/env python3
"""vtd_ir_check.py OUTDIR HANDOVER [--tsv FILE]

Check our decode of a VT-d capture's interrupt-remapping table against QEMU's own reads of it: every IRTE
QEMU fetched to remap an MSI (trace event vtd_ir_irte_get) must be present in `handover inspect --json`'s
decode of memory.elf with the same two quadwords, and the vector and destination QEMU delivered to
(vtd_ir_remap) must be the ones we decode. Entries we decode that no MSI used during the capture are listed
too (nothing contradicts them). Prints a summary; --tsv writes one line per index.

QEMU's vtd_ir_irte_get prints the entry's upper quadword (bits 127:64) as "low" and the lower one as "high"
(hw/i386/intel_iommu.c passes data[1] first); the check reads them that way, which the P bit (bit 0 of the
lower quadword) confirms for every entry.
"""
import json, re, subprocess, sys

def main():
    args = sys.argv[1:]
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out, handover = args[0], args[1]
    tsv = args[args.index('--tsv') + 1] if '--tsv' in args else None
    get = re.compile(rb'vtd_ir_irte_get index (\d+) low 0x([0-9a-f]+) high 0x([0-9a-f]+)')
    remap = re.compile(rb'vtd_ir_remap index (\d+) trigger \d+ vector (\d+) deliver \d+ dest 0x([0-9a-f]+) mode (\d+)')
    seen = {}   # index -> [qw0, qw1, vector, dest, uses]
    with open(f'{out}/trace.log', 'rb') as f:
        for line in f:
            m = get.search(line)
            if m:
                i = int(m[1])
                e = seen.setdefault(i, [0, 0, None, None, 0])
                e[0], e[1] = int(m[3], 16), int(m[2], 16)
                continue
            m = remap.search(line)
            if m:
                i = int(m[1])
                e = seen.setdefault(i, [0, 0, None, None, 0])
                e[2], e[3] = int(m[2]), int(m[3], 16)
                e[4] += 1
    r = subprocess.run([handover, 'inspect', '--iommu', 'vtd', '--base', '0xfed90000', '--json',
                        '--dump', f'{out}/memory.elf', '--regs', f'{out}/regs.txt'],
                       capture_output=True, check=True)
    irq = json.loads(r.stdout)['interrupts']
    ours = {e['index']: e for e in irq['entries']}
    good, bad, lines = 0, 0, []
    for i in sorted(seen):
        qw0, qw1, vec, dest, uses = seen[i]
        d = ours.get(i)
        if d is None:
            ok, why = False, 'not in our decode'
        else:
            raw = [int(d['raw'][0], 16), int(d['raw'][1], 16)]
            checks = [(raw == [qw0, qw1], 'raw quadwords differ'), (d['present'] == bool(qw0 & 1), 'present differs'),
                      (vec is None or d['vector'] == vec, 'vector differs'), (dest is None or d['dest'] == dest, 'destination differs')]
            fails = [w for ok_, w in checks if not ok_]
            ok, why = not fails, ', '.join(fails)
        good += ok
        bad += not ok
        src = d and d['source']
        lines.append(f'{i}\t{qw0:#018x}\t{qw1:#018x}\t{vec}\t{dest:#x}\t{uses}\t{src if src is None else hex(src)}\t{"match" if ok else why}'
                     if dest is not None else f'{i}\t{qw0:#018x}\t{qw1:#018x}\t-\t-\t0\t{src}\t{"match" if ok else why}')
    unused = sorted(set(ours) - set(seen))
    print(f'IRTA table {irq["tables"][0]["address"]:#x} ({irq["tables"][0]["entries"]} entries), remapping {irq["remapping"]}, '
          f'{len(ours)} entries decoded, {irq["unused"]} unused, {len(irq["unread_pages"])} pages unread')
    for i in unused:
        e = ours[i]
        print(f'  decoded, used by no MSI during the capture: index {i} source {e["source"] and hex(e["source"])} vector {e["vector"]:#x} '
              f'dest {e["dest"]:#x} present {e["present"]}')
    print(f'vtd_ir_check: {good} of {good + bad} IRTEs QEMU remapped through match our decode, {bad} do not')
    if tsv:
        with open(tsv, 'w') as f:
            f.write('index\tqw0\tqw1\tqemu_vector\tqemu_dest\tmsis\tour_source\tverdict\n')
            f.write('\n'.join(lines) + '\n')
    return 0 if bad == 0 and good > 0 else 1

if __name__ == '__main__':
    sys.exit(main())
