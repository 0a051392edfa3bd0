#!/usr/bin/env python3
"""The README's takeover table: each fixtures/takeover/<iommu>-<policy>/result.json beside `handover simulate`'s
prediction for the same IOMMU and policy (QEMU drops a faulted DMA, so the simulation runs with --aborts
benign; AMD-Vi without SEV-SNP, as QEMU's amd-iommu has none).

usage: takeover_table.py HANDOVER_BINARY [FIXTURES_DIR]   (prints Markdown)
"""
import glob, json, os, subprocess, sys

ORDER = ['reset-abort', 'reset-bypass', 'adopt', 'adopt-scratch']


def sim(binary, iommu):
    args = [binary, 'simulate', '--iommu', iommu, '--aborts', 'benign', '--json']
    if iommu == 'amdvi':
        args += ['--snp-shutdown', 'off']
    runs = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)['runs']
    return {r['policy']: r for r in runs}


def main():
    binary = sys.argv[1]
    fixtures = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), '../../fixtures/takeover')
    rows = []
    for path in glob.glob(os.path.join(fixtures, '*', 'result.json')):
        r = json.load(open(path))
        rows.append((r['iommu'], ORDER.index(r['policy']), r))
    predicted = {}
    print('| IOMMU | policy | QEMU: takeover | DMA after it: xlate / fault / untransl. / to scratch | dump | old pages changed: buffers / other '
          '| simulate: dump | xlate / fault / bypass / scratch | buffers / other |')
    print('|---|---|---|---|---|---|---|---|---|')
    for iommu, _, r in sorted(rows, key=lambda x: (x[0], x[1])):
        if iommu not in predicted:
            predicted[iommu] = sim(binary, iommu)
        p = predicted[iommu][r['policy']]
        t, d, dma, ch = r['takeover'], r['dump'], r['dma_after_takeover'], r['old_memory_changed_pages']
        took = ('ok' if t['ok'] else 'FAILED: ' + (t['error'] or '')) + ' — ' + (t.get('outcome') or '')
        dump = ('captured, matches' if d['matches_reference'] else 'captured, DIFFERS') if d['captured'] else 'none'
        if p['captured']:
            pdump = 'captured' if not p['changed_pages']['other'] else 'CORRUPT'
        else:
            pdump = 'LOST'
        pd = p['dma']
        fault = '%d' % dma['faulted']
        if dma.get('identity_results'):
            fault += ' (+%d denied, no event)' % dma['identity_results']
        changed = '%d / %d' % (ch['buffers'], ch['other'])
        if ch.get('iommu'):
            changed += ' (+%d iommu)' % ch['iommu']
        print('| %s | %s | %s | %d / %s / %d / %d | %s | %s | %s | %d / %d / %d / %d | %d / %d |' % (
            iommu, r['policy'], took, dma['translated'], fault, dma['untranslated'], dma.get('to_scratch', 0),
            dump, changed, pdump, pd['translated'], pd['faulted'], pd['untranslated'],
            pd['redirected'], p['changed_pages']['buffers'], p['changed_pages']['other']))


if __name__ == '__main__':
    main()
