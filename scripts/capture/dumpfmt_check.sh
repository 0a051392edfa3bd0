#!/bin/bash
# dumpfmt_check.sh OUTDIR IOMMU BASE
#
# One paused guest, dumped by QEMU's dump-guest-memory as an ELF core (memory.elf) and in the other formats
# a capture script wrote with EXTRA_DUMPS (memory.kdump-zlib: makedumpfile's flattened format; memory.kdump-raw-*:
# kdump-compressed): `handover inspect --json` must give the same decode from every one of them, since they
# hold the same memory. Writes OUTDIR/dumpfmt.txt (formats, sizes, identical or not) and exits 1 on a
# difference. HANDOVER [target/release/handover] is the binary to run.
#   e.g.  EXTRA_DUMPS="kdump-zlib kdump-raw-lzo kdump-raw-snappy" scripts/capture/amdvi.sh /tmp/cap-amdvi
#         scripts/capture/dumpfmt_check.sh /tmp/cap-amdvi amdvi 0xfed80000
set -euo pipefail
HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
OUT=${1:-}; KIND=${2:-}; BASE=${3:-}
[ $# = 3 ] || { echo "usage: $0 OUTDIR vtd|amdvi|smmuv3 BASE" >&2; exit 2; }
H=${HANDOVER:-$HERE/../../target/release/handover}
[ -x "$H" ] || { echo "dumpfmt_check.sh: no $H (cargo build --release)" >&2; exit 2; }
cd "$OUT"
ls memory.kdump-* >/dev/null 2>&1 || { echo "dumpfmt_check.sh: no memory.kdump-* in $OUT (EXTRA_DUMPS)" >&2; exit 2; }
inspect() { "$H" inspect "$1" --regs regs.txt --iommu "$KIND" --base "$BASE" --json; }
inspect memory.elf > inspect-elf.json
rc=0
{
  echo "qemu: $(grep -m1 '^qemu:' meta.txt 2>/dev/null | cut -d' ' -f2- || echo unknown)"
  echo "memory.elf: $(stat -c %s memory.elf) bytes; inspect --json: $(wc -c < inspect-elf.json) bytes, $(grep -o '"sid"' inspect-elf.json | wc -l) devices"
  for e in memory.kdump-*.err; do
    [ -e "$e" ] && echo "${e%.err}: not written: $(cat "$e")"
  done
  for f in memory.kdump-*; do
    case "$f" in *.err) continue;; esac
    t0=$(date +%s.%N)
    if ! inspect "$f" > "inspect-${f#memory.}.json" 2> "inspect-${f#memory.}.err"; then
      echo "$f: $(stat -c %s "$f") bytes: inspect failed: $(head -1 "inspect-${f#memory.}.err")"; rc=1; continue
    fi
    s=$(echo "$(date +%s.%N) - $t0" | bc)
    if cmp -s inspect-elf.json "inspect-${f#memory.}.json"; then
      echo "$f: $(stat -c %s "$f") bytes: inspect --json identical to memory.elf's (${s} s)"
    else
      echo "$f: $(stat -c %s "$f") bytes: inspect --json DIFFERS from memory.elf's"; rc=1
    fi
  done
} > dumpfmt.txt   # (not a pipe: rc must stay in this shell)
cat dumpfmt.txt
exit $rc
