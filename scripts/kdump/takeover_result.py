#!/usr/bin/env python3
"""result.json of one takeover.sh run, from QEMU's trace, the kdump kernel's output and the two memory images.

Phases of the trace (split by its size in bytes when the host saw each marker): `crash` (up to the reference:
the crashed kernel, the panic, the kdump kernel's boot), `takeover` (from the reference to HO-TAKEN: the
hand-over itself; no packets are sent then) and `after` (from HO-TAKEN: the NIC's packets, the dump write).

dma_after_takeover: translated = successful translations of the unit in `after`; faulted = DMA faults in
`after`; untranslated = the NIC's receive-buffer writes in `after` while the unit's translation was off (the
only device-side trace that carries the DMA address; the dump disk's own untranslated DMA is not counted).
SMMUv3: QEMU traces every access that bypasses translation (`smmuv3_translate_disable`, `_bypass`), so there
`untranslated` counts those of every device but the needed one.
AMD-Vi: QEMU's `amdvi_translation_result` is printed for every lookup, and for a device table entry with
Mode 0 (Linux's blocked entry: V, TV, IR = IW = 0) it prints the input address as the result although the
access is denied (QEMU `amdvi_page_walk`, `no_remap`: permissions from the entry), and logs no event. Such
identity results of a device other than the needed one (whose domain is one-to-one) are counted as
`identity_results`, not as translated.

The reference is guest memory at HO-REF (the kdump kernel's init, before the takeover), saved with
dump-guest-memory; the vmcore is what the kdump kernel wrote to the dump disk. A page of the crashed kernel's
RAM (the vmcore's PT_LOADs) whose contents differ is `iommu` when it belongs to a structure the policy adopts
in place (takeover.json `in_place`: AMD-Vi device table, command buffer, event log, completion-wait page,
which the crash kernel and the unit write), else `buffers` when DMA reached it after the reference (a
translated address or, translation off, a NIC buffer address), else `other`. matches_reference: the vmcore
was written whole, and every differing page is one of the first two kinds.
"""
import argparse, collections, json, re, struct, sys

PAGE = 4096


def loads(f, length):
    """PT_LOAD (paddr, offset, filesz) of the ELF64 core at the start of file object f."""
    f.seek(0)
    h = f.read(64)
    if len(h) < 64 or h[:4] != b'\x7fELF' or h[4] != 2:
        raise ValueError('not an ELF64 file')
    phoff, = struct.unpack_from('<Q', h, 0x20)
    phentsize, phnum = struct.unpack_from('<HH', h, 0x36)
    if phnum > 4096 or phentsize < 56:
        raise ValueError('implausible program headers')
    f.seek(phoff)
    ph = f.read(phentsize * phnum)
    out = []
    for i in range(phnum):
        typ, = struct.unpack_from('<I', ph, i * phentsize)
        off, vaddr, paddr, filesz = struct.unpack_from('<QQQQ', ph, i * phentsize + 8)
        if typ == 1 and filesz and off + filesz <= length:
            out.append((paddr, off, filesz))
    return out


def compare(ref_path, disk_path, nbytes, targets, own, unit_pages):
    """Pages of the vmcore's PT_LOADs that differ from the reference: (buffers, other, kdump's own, pages
    compared, pages the reference lacks). `own`: the kdump kernel's own RAM, which /proc/vmcore also shows
    (x86 gives the crash kernel the low 640 KiB, which the crashed kernel kept unused); its changes are the
    kdump kernel's, not DMA's."""
    with open(ref_path, 'rb') as rf, open(disk_path, 'rb') as df:
        rf.seek(0, 2)
        ref = sorted(loads(rf, rf.tell()))
        vm = loads(df, nbytes)

        def ref_at(pa, n):
            for p, o, s in ref:
                if p <= pa and pa + n <= p + s:
                    rf.seek(o + pa - p)
                    return rf.read(n)
            return None

        seen, buffers, other, mine, unit, missing = set(), [], [], [], [], 0
        chunk = 1 << 20
        for paddr, off, size in vm:
            done = 0
            while done < size:
                n = min(chunk, size - done)
                pa = paddr + done
                df.seek(off + done)
                got = df.read(n)
                want = ref_at(pa, n)
                if want is None:
                    missing += n // PAGE
                elif got != want:
                    for i in range(0, n, PAGE):
                        if got[i:i + PAGE] != want[i:i + PAGE]:
                            page = (pa + i) & ~(PAGE - 1)
                            if page not in seen:
                                seen.add(page)
                                if any(a <= page < b for a, b in own):
                                    mine.append(page)
                                elif any(a <= page < b for a, b in unit_pages):
                                    unit.append(page)
                                else:
                                    (buffers if page in targets else other).append(page)
                done += n
        total = sum(s for _, _, s in vm) // PAGE
        return buffers, other, mine, unit, total, missing


EV = re.compile(r'^(?:\d+@[\d.]+:)?(\w+) (.*)$')
HEX = re.compile(r'0x([0-9a-fA-F]+)')
BDF = re.compile(r'\b([0-9a-f]{2}):([0-9a-f]{2})[.:]([0-9a-f]{1,2})\b')


SID = re.compile(r'\b(?:sid|devid)[ =]0x([0-9a-fA-F]+)')


def sid_of(text):
    m = SID.search(text)
    if m:
        return int(m.group(1), 16)
    m = BDF.search(text)
    if not m:
        return None
    return int(m.group(1), 16) << 8 | int(m.group(2), 16) << 3 | int(m.group(3), 16)


def main():
    ap = argparse.ArgumentParser()
    for a in ['kind', 'policy', 'kernel', 'qemu', 'trace', 'takeover', 'reference', 'disk', 'done', 'counts']:
        ap.add_argument('--' + a, required=True)
    ap.add_argument('--trace-ref', type=int, required=True)
    ap.add_argument('--trace-taken', type=int, required=True)
    ap.add_argument('--dump-bytes', type=int, required=True)
    ap.add_argument('--own-ram', default='', help="the kdump kernel's System RAM, START-END,... (inclusive ends)")
    a = ap.parse_args()

    try:
        t = json.load(open(a.takeover))
    except (OSError, ValueError) as e:
        t = {'ok': False, 'error': 'no takeover output: %s' % e}
    sc = t.get('scratch') or {}
    scratch = (sc.get('start', 0), sc.get('end', 0))
    counts = collections.Counter()      # (phase, event, sid)
    faults = collections.Counter()      # (sid, iova page, reason) after the takeover
    targets = set()                     # pages DMA reached after the reference
    translated = faulted = untranslated = to_scratch = identity = 0
    needed = {d.get('sid') for d in t.get('devices', []) if d.get('needed')}
    by_sid = collections.defaultdict(collections.Counter)
    dmar_on = True
    pos = 0
    with open(a.trace, 'rb') as f:
        for raw in f:
            start = pos
            pos += len(raw)
            m = EV.match(raw.decode('utf-8', 'replace').rstrip())
            if not m:
                continue
            ev, rest = m.groups()
            phase = 'crash' if start < a.trace_ref else 'takeover' if start < a.trace_taken else 'after'
            nums = [int(x, 16) for x in HEX.findall(rest)]
            sid = sid_of(rest)
            counts[(phase, ev, '%04x' % sid if sid is not None else '-')] += 1
            if ev == 'vtd_dmar_enable':
                dmar_on = 'true' in rest or rest.strip().endswith('1')
            if ev == 'amdvi_control_status' and nums:
                dmar_on = bool(nums[-1] & 1)   # CONTROL.IommuEn
            if ev == 'smmuv3_write_mmio' and len(nums) >= 2 and nums[0] == 0x20:
                dmar_on = bool(nums[1] & 1)    # CR0.SMMUEN (offset 0x20)
            if ev in ('vtd_dmar_translate', 'amdvi_translation_result', 'smmuv3_translate_success') and phase != 'crash':
                # the translated address is the last-but-one number (vtd: iova, gpa, mask; smmuv3: sid, iova,
                # translated, perm)
                gpa = None
                if len(nums) >= 2:
                    gpa = nums[-1] if ev == 'amdvi_translation_result' else nums[-2]
                    targets.add(gpa & ~(PAGE - 1))
                if (ev == 'amdvi_translation_result' and phase == 'after' and sid not in needed
                        and len(nums) >= 2 and nums[-1] == nums[-2] & ~(PAGE - 1)):
                    identity += 1
                    by_sid['%04x' % sid if sid is not None else '-']['identity_results'] += 1
                elif phase == 'after':
                    translated += 1
                    if gpa is not None and scratch[0] <= gpa < scratch[1]:
                        to_scratch += 1
                        by_sid['%04x' % sid if sid is not None else '-']['to_scratch'] += 1
                    by_sid['%04x' % sid if sid is not None else '-']['translated'] += 1
            elif ev in ('smmuv3_translate_bypass', 'smmuv3_translate_disable') and phase != 'crash':
                # STE bypass or SMMUEN off: the device's address is used as physical. QEMU's smmuv3 traces
                # every such access, so a device other than the needed one counts as `untranslated` here
                # (VT-d and AMD-Vi trace nothing with translation off: there the NIC's buffer writes count).
                if len(nums) >= 2:
                    targets.add(nums[1] & ~(PAGE - 1))
                if phase == 'after':
                    by_sid['%04x' % sid if sid is not None else '-']['bypassed'] += 1
                    if sid not in needed:
                        untranslated += 1
            elif ev in ('vtd_dmar_fault', 'amdvi_page_fault', 'smmuv3_translate_abort') and phase == 'after':
                faulted += 1
                by_sid['%04x' % sid if sid is not None else '-']['faulted'] += 1
                addr = re.search(r'(?:addr|iova:?) ?0x([0-9a-fA-F]+)', rest)
                iova = int(addr.group(1), 16) if addr else (nums[-1] if nums else 0)
                reason = re.search(r'fault (\d+)|reason (\w+)', rest)
                faults[('%04x' % sid if sid is not None else '-', iova & ~(PAGE - 1), reason.group(0) if reason else rest[:60])] += 1
            elif ev == 'e1000e_rx_desc_buff_write' and phase != 'crash' and not dmar_on:
                if nums:
                    targets.add(nums[0] & ~(PAGE - 1))
                if phase == 'after' and a.kind != 'smmuv3':
                    untranslated += 1
                    by_sid['nic-buffer-writes']['untranslated'] += 1

    with open(a.counts, 'w') as c:
        c.write('phase\tevent\tsid\tcount\n')
        for (phase, ev, sid), n in sorted(counts.items()):
            c.write('%s\t%s\t%s\t%d\n' % (phase, ev, sid, n))

    error = t.get('error') or t.get('refused')
    if not error and not t.get('ok'):
        error = '; '.join([d.get('error') or '' for d in t.get('devices', []) if d.get('error')] + t.get('access_errors', [])) or 'incomplete'

    dump_ok = ' dump=0 ' in a.done + ' ' and a.dump_bytes > 0
    own = []
    for r in filter(None, a.own_ram.split(',')):
        lo, hi = r.split('-')
        own.append((int(lo, 16), int(hi, 16) + 1))
    unit_pages = [((x['start'] & ~(PAGE - 1)), x['end']) for x in t.get('in_place', [])]
    captured, matches, buffers, other, mine, unit, compared, missing = False, False, [], [], [], [], 0, 0
    if dump_ok:
        try:
            buffers, other, mine, unit, compared, missing = compare(a.reference, a.disk, a.dump_bytes, targets, own,
                                                                    unit_pages)
            captured = compared > 0
            matches = captured and not other and not missing
        except (OSError, ValueError) as e:
            print('takeover_result.py: comparing the dump: %s' % e, file=sys.stderr)

    result = {
        'iommu': a.kind, 'policy': a.policy, 'kernel': a.kernel, 'qemu': a.qemu,
        'takeover': {'ok': bool(t.get('ok')), 'error': error or None, 'outcome': t.get('outcome'),
                     'devices': t.get('devices', []), 'ms': t.get('ms')},
        'dma_after_takeover': {'translated': translated, 'faulted': faulted, 'untranslated': untranslated,
                               'to_scratch': to_scratch, 'identity_results': identity},
        'dma_after_takeover_by_sid': {k: dict(v) for k, v in sorted(by_sid.items())},
        'faults': [{'sid': s, 'iova': hex(i), 'reason': r, 'count': n} for (s, i, r), n in sorted(faults.items())][:50],
        'dump': {'captured': captured, 'bytes': a.dump_bytes if dump_ok else 0, 'matches_reference': matches,
                 'pages_compared': compared, 'pages_not_in_reference': missing},
        'old_memory_changed_pages': {'buffers': len(buffers), 'other': len(other), 'iommu': len(unit)},
        'kdump_own_pages_changed': len(mine),
        'other_pages': [hex(p) for p in sorted(other)[:20]],
        'kdump_done': a.done,
    }
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == '__main__':
    main()
