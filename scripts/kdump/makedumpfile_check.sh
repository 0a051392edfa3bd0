#!/bin/bash
# makedumpfile_check.sh VMCORE REGS vtd|amdvi|smmuv3 BASE OUTFILE
#
# A real vmcore (the ELF /proc/vmcore a kdump kernel of the rig wrote: takeover.sh with KEEP_VMCORE=FILE, which
# also saves the unit's registers as the crash left them in OUTDIR/regs.txt), filtered and compressed as
# distributions keep it: `makedumpfile -c -d 31` (zlib) and `-l -d 31` (lzo), dump level 31 dropping zero, cache,
# user and free pages with the crashed kernel's own VMCOREINFO. `handover inspect --json` must give the same bytes
# from each as from the ELF core: the IOMMU's tables are kernel pages no dump level drops. Writes OUTFILE (sizes,
# dump level, identical or not); exits 1 on a difference. HANDOVER [target/release/handover]. makedumpfile runs on
# this host, not inside the kdump kernel: the input is the kdump kernel's /proc/vmcore, byte for byte.
# MAKEDUMPFILE_CMD [makedumpfile]: the command to run instead, e.g. an arm64 build for an arm64 vmcore
# ("qemu-aarch64-static -L ROOT ROOT/usr/bin/makedumpfile": makedumpfile filters only its own architecture's).
set -euo pipefail
HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
[ $# = 5 ] || { echo "usage: $0 VMCORE REGS vtd|amdvi|smmuv3 BASE OUTFILE" >&2; exit 2; }
VMCORE=$1; REGS=$2; KIND=$3; BASE=$4; OUTFILE=$5
H=${HANDOVER:-$HERE/../../target/release/handover}
read -r -a MDF <<< "${MAKEDUMPFILE_CMD:-makedumpfile}"
[ ${#MDF[@]} -gt 0 ] && command -v "${MDF[0]}" >/dev/null || { echo "makedumpfile_check.sh: no ${MDF[0]:-makedumpfile} (apt-get install makedumpfile)" >&2; exit 2; }
[ -x "$H" ] || { echo "makedumpfile_check.sh: no $H (cargo build --release)" >&2; exit 2; }
T=$(mktemp -d /tmp/makedumpfile-check.XXXXXX); trap 'rm -rf "$T"' EXIT
inspect() { "$H" inspect "$1" --regs "$REGS" --iommu "$KIND" --base "$BASE" --json; }
inspect "$VMCORE" > "$T/elf.json"
rc=0
{
  echo "makedumpfile: $(timeout 60 "${MDF[@]}" -v 2>&1 | head -1)"
  echo "vmcore (ELF, the kdump kernel's /proc/vmcore): $(stat -c %s "$VMCORE") bytes; inspect --json $(wc -c < "$T/elf.json") bytes"
  for opt in -c -l; do
    out="$T/vmcore$opt"
    timeout 1800 "${MDF[@]}" $opt -d 31 "$VMCORE" "$out" > "$T/mdf.log" 2>&1 || { echo "makedumpfile $opt -d 31 failed: $(tail -1 "$T/mdf.log")"; rc=1; continue; }
    if inspect "$out" > "$T/k.json" 2> "$T/k.err" && cmp -s "$T/elf.json" "$T/k.json"; then
      echo "makedumpfile $opt -d 31: $(stat -c %s "$out") bytes: inspect --json identical to the ELF core's"
    else
      echo "makedumpfile $opt -d 31: $(stat -c %s "$out") bytes: inspect --json DIFFERS ($(head -1 "$T/k.err"))"; rc=1
    fi
  done
} > "$OUTFILE"   # (not a pipe: rc must stay in this shell)
cat "$OUTFILE"
exit $rc
