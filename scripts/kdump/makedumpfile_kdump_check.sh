#!/bin/bash
# makedumpfile_kdump_check.sh VMCORE OUTDIR vtd|amdvi|smmuv3 BASE OUTFILE
#
# A kdump-compressed vmcore written by makedumpfile inside the kdump kernel of the rig, as distributions send
# dumps over ssh: `KEEP_VMCORE=VMCORE MAKEDUMPFILE="-c -d 31" takeover.sh KIND POLICY OUTDIR` keeps the ELF
# /proc/vmcore the kdump kernel wrote (VMCORE), the unit's registers at the reference pause (OUTDIR/regs.txt) and
# the stream `makedumpfile -F OPTS /proc/vmcore` wrote in the same kdump kernel (OUTDIR/makedumpfile.flat, the
# flattened format of makedumpfile(8) -F, its length and md5 from the console's HO-MDF-DONE). `handover inspect
# --json` must give the same bytes from (a) the flattened stream as it is and (b) the file `makedumpfile -R`
# rebuilds from it on this host, as from (c) the ELF core of the same crash. Writes OUTFILE (makedumpfile's
# version in the guest, options, sizes, identical or DIFFERS); exits 1 on a difference. The host's makedumpfile
# only rebuilds (-R: the flattened format is the same on every architecture), so an arm64 stream needs no arm64
# makedumpfile here.
# HANDOVER [target/release/handover]. makedumpfile_check.sh is the host-side counterpart (makedumpfile run on
# this host on the ELF core).
set -euo pipefail
HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
PROG=makedumpfile_kdump_check.sh
die() { echo "$PROG: ERROR: $*" >&2; exit 2; }
[ $# = 5 ] || { echo "usage: $0 VMCORE OUTDIR vtd|amdvi|smmuv3 BASE OUTFILE" >&2; exit 2; }
VMCORE=$1; OUTDIR=$2; KIND=$3; BASE=$4; OUTFILE=$5
H=${HANDOVER:-$HERE/../../target/release/handover}
command -v makedumpfile >/dev/null || die "apt-get install makedumpfile"
[ -x "$H" ] || die "no $H (cargo build --release)"
case "$KIND" in vtd|amdvi|smmuv3) ;; *) die "KIND $KIND: vtd, amdvi or smmuv3";; esac
FLAT=$OUTDIR/makedumpfile.flat; REGS=$OUTDIR/regs.txt
for f in "$VMCORE" "$FLAT" "$REGS" "$OUTDIR/console.log" "$OUTDIR/summary.txt"; do [ -s "$f" ] || die "no $f (takeover.sh with KEEP_VMCORE= and MAKEDUMPFILE=)"; done
LINE=$(tr -d '\r' < "$OUTDIR/console.log" | grep -a -m1 '^HO-MDF-DONE') || die "no HO-MDF-DONE in $OUTDIR/console.log"
GUEST=$(tr -d '\r' < "$OUTDIR/console.log" | grep -a -m1 '^HO: makedumpfile: ' | sed 's/^HO: makedumpfile: //') || true
OPTS=$(sed -n 's/.*MAKEDUMPFILE="\([^"]*\)".*/\1/p' "$OUTDIR/summary.txt")
POLICY=$(sed -n 's/.*; policy: \([^;]*\);.*/\1/p' "$OUTDIR/summary.txt")
BYTES=$(sed -n 's/.* bytes=\([0-9]*\).*/\1/p' <<< "$LINE"); SUM=$(sed -n 's/.* md5=\([0-9a-f]*\).*/\1/p' <<< "$LINE")
[ "$(stat -c %s "$FLAT")" = "$BYTES" ] || die "$FLAT: $(stat -c %s "$FLAT") bytes, HO-MDF-DONE says $BYTES"
[ "$(md5sum < "$FLAT" | cut -d' ' -f1)" = "$SUM" ] || die "$FLAT: md5 differs from HO-MDF-DONE's $SUM"
T=$(mktemp -d /tmp/makedumpfile-kdump-check.XXXXXX); trap 'rm -rf "$T"' EXIT
inspect() { "$H" inspect "$1" --regs "$REGS" --iommu "$KIND" --base "$BASE" --json; }
inspect "$VMCORE" > "$T/elf.json" || die "handover inspect of the ELF core $VMCORE failed"
rc=0
same() {  # same LABEL FILE: inspect FILE against the ELF core's
  if inspect "$2" > "$T/k.json" 2> "$T/k.err" && cmp -s "$T/elf.json" "$T/k.json"; then
    echo "$1: $(stat -c %s "$2") bytes: inspect --json identical to the ELF core's"
  else
    echo "$1: $(stat -c %s "$2") bytes: inspect --json DIFFERS ($(head -1 "$T/k.err"))"; rc=1
  fi
}
{
  grep -E '^(kernel|qemu): ' "$OUTDIR/summary.txt" || true
  echo "makedumpfile in the kdump kernel: $GUEST"
  echo "stream: makedumpfile -F $OPTS /proc/vmcore | tee DISK (the dump disk's namespace 2); $LINE"
  [ ! -s "$OUTDIR/makedumpfile.err" ] || echo "its messages: $(tr '\n' ';' < "$OUTDIR/makedumpfile.err" | sed 's/;$//; s/;/; /g')"
  echo "vmcore (ELF, the same kdump kernel's /proc/vmcore): $(stat -c %s "$VMCORE") bytes; inspect --json $(wc -c < "$T/elf.json") bytes"
  same "(a) flattened stream (-F $OPTS) as written" "$FLAT"
  if timeout 600 makedumpfile -R "$T/rebuilt" < "$FLAT" > "$T/r.log" 2>&1; then
    same "(b) makedumpfile -R on the host ($(makedumpfile -v 2>&1 | head -1 | sed 's/^makedumpfile: //'))" "$T/rebuilt"
  else
    echo "(b) makedumpfile -R on the host failed: $(tail -1 "$T/r.log")"; rc=1
  fi
  echo "command: KEEP_VMCORE=vmcore.elf MAKEDUMPFILE=\"$OPTS\" scripts/kdump/takeover.sh $KIND $POLICY OUT; scripts/kdump/makedumpfile_kdump_check.sh vmcore.elf OUT $KIND $BASE makedumpfile-in-kdump.txt"
  echo "console (kdump kernel):"
  tr -d '\r' < "$OUTDIR/console.log" | grep -a -E '^HO: (dump written|makedumpfile)|^HO-(MDF|KDUMP)-DONE' | sed 's/^/  /'
} > "$OUTFILE"   # (not a pipe: rc must stay in this shell)
cat "$OUTFILE"
exit $rc
