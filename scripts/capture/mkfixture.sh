#!/bin/bash
# mkfixture.sh amdvi|smmuv3 CAPTURE_DIR FIXTURE_DIR
#
# Trim a capture (amdvi.sh / smmuv3.sh OUTDIR) into a fixture for the repository: FIXTURE_DIR gets
# regs.txt, oracle.tsv, meta.txt (copied) and memory.elf, an ELF core holding only the 4 KiB pages of the
# IOMMU structures (KIND_check.py --pages: device table / stream table, CD and page-table pages; see the
# header of each checker), written by the project's trimming tool:
#   cargo run -q -p iommu-dump --example core_trim -- IN OUT ADDR...
# Then the checker runs again on the fixture: every oracle entry must still resolve, from the trimmed
# core alone. Fails if the trimmed core is 1 MiB or more.
#
# mkfixture.sh vtd-pt CAPTURE_DIR FIXTURE_DIR
#   A VT-d pass-through capture (GUEST_ARGS=iommu.passthrough=1 vtd.sh legacy|scalable OUTDIR) has no oracle
#   (QEMU does not translate pass-through DMA) and nothing for a checker to list pages from: the pages are
#   the ones `handover inspect --save-fixture` reads (root table, context tables; the ACPI tables are not
#   read with --base). FIXTURE_DIR gets memory.elf, regs.txt and meta.txt; then vtd_check.py --expect-pt
#   must still find e1000e (0x0010) and nvme (0x0018) pass-through in the trimmed core.
#   Env: HANDOVER: a built `handover` binary instead of `cargo run -q -p handover --`.
#
# mkfixture.sh vtd CAPTURE_DIR FIXTURE_DIR
#   A VT-d capture with an oracle (vtd.sh legacy|scalable|scalable-fl OUTDIR): trimmed the same way, to the
#   pages `handover inspect --save-fixture` reads (root, context, PASID directory and table pages, and every
#   page-table page its walks visit); FIXTURE_DIR also gets oracle.tsv, and vtd_check.py must then resolve
#   every oracle entry from the trimmed core alone.
# Env: CORE_TRIM: a built core_trim binary to use instead of `cargo run` (e.g. when the work tree does
# not build); CARGO_TARGET_DIR as usual for cargo.
set -euo pipefail
HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
KIND=${1:-}; CAP=${2:-}; FIX=${3:-}
die() { echo "mkfixture.sh: ERROR: $*" >&2; exit 1; }
case "$KIND" in amdvi|smmuv3|vtd-pt|vtd) ;; *) echo "usage: $0 amdvi|smmuv3|vtd-pt|vtd CAPTURE_DIR FIXTURE_DIR" >&2; exit 2;; esac
[ -n "$FIX" ] || { echo "usage: $0 amdvi|smmuv3|vtd-pt|vtd CAPTURE_DIR FIXTURE_DIR" >&2; exit 2; }
if [ "$KIND" = vtd ]; then
  for f in memory.elf regs.txt oracle.tsv meta.txt; do [ -s "$CAP/$f" ] || die "missing $CAP/$f"; done
  CAP=$(cd "$CAP" && pwd); mkdir -p "$FIX"; FIX=$(cd "$FIX" && pwd)
  rm -f "$FIX/memory.elf"
  H=(cargo run -q -p handover --); [ -z "${HANDOVER:-}" ] || H=("$HANDOVER")
  (cd "$HERE/../.." && timeout 1800 "${H[@]}" inspect --dump "$CAP/memory.elf" --regs "$CAP/regs.txt" --iommu vtd \
     --base 0xfed90000 --save-fixture "$FIX/memory.elf") > /dev/null || die "handover inspect --save-fixture failed"
  [ -s "$FIX/memory.elf" ] || die "handover inspect wrote no $FIX/memory.elf"
  cp "$CAP/regs.txt" "$CAP/oracle.tsv" "$FIX/"
  SIZE=$(stat -c %s "$FIX/memory.elf")
  [ "$SIZE" -lt 1048576 ] || die "trimmed core is $SIZE bytes (limit 1 MiB)"
  python3 "$HERE/vtd_check.py" "$FIX" > "$FIX/check.tmp" 2>&1 \
    || { cat "$FIX/check.tmp" >&2; rm -f "$FIX/check.tmp"; die "the trimmed fixture does not resolve the oracle"; }
  grep -q ', 0 do not$' "$FIX/check.tmp" || { cat "$FIX/check.tmp" >&2; rm -f "$FIX/check.tmp"; die "some oracle entries do not resolve in the trimmed core"; }
  {
    cat "$CAP/meta.txt"
    echo "fixture_memory: trimmed by \`handover inspect --iommu vtd --base 0xfed90000 --save-fixture\` to the pages it read ($SIZE bytes)"
    echo "fixture_check: $(tail -1 "$FIX/check.tmp")"
  } > "$FIX/meta.txt"
  sed 's/^/  fixture: /' "$FIX/check.tmp"; rm -f "$FIX/check.tmp"
  echo "mkfixture.sh: $FIX: memory.elf $SIZE bytes"
  exit 0
fi
if [ "$KIND" = vtd-pt ]; then
  for f in memory.elf regs.txt meta.txt; do [ -s "$CAP/$f" ] || die "missing $CAP/$f"; done
  grep -q '^passthrough:' "$CAP/meta.txt" || die "$CAP is not a pass-through capture (no passthrough: line in meta.txt)"
  CAP=$(cd "$CAP" && pwd); mkdir -p "$FIX"; FIX=$(cd "$FIX" && pwd)
  rm -f "$FIX/memory.elf" "$FIX/oracle.tsv"
  H=(cargo run -q -p handover --); [ -z "${HANDOVER:-}" ] || H=("$HANDOVER")
  (cd "$HERE/../.." && timeout 1800 "${H[@]}" inspect --dump "$CAP/memory.elf" --regs "$CAP/regs.txt" --iommu vtd \
     --base 0xfed90000 --save-fixture "$FIX/memory.elf") | sed 's/^/  /' || die "handover inspect --save-fixture failed"
  [ -s "$FIX/memory.elf" ] || die "handover inspect wrote no $FIX/memory.elf"
  cp "$CAP/regs.txt" "$FIX/"
  SIZE=$(stat -c %s "$FIX/memory.elf")
  [ "$SIZE" -lt 1048576 ] || die "trimmed core is $SIZE bytes (limit 1 MiB)"
  python3 "$HERE/vtd_check.py" "$FIX" --expect-pt 0x0010,0x0018 > "$FIX/check.tmp" 2>&1 \
    || { cat "$FIX/check.tmp" >&2; rm -f "$FIX/check.tmp"; die "the trimmed fixture does not show e1000e and nvme pass-through"; }
  {
    cat "$CAP/meta.txt"
    echo "fixture_memory: trimmed by \`handover inspect --iommu vtd --base 0xfed90000 --save-fixture\` to the pages it read ($SIZE bytes)"
    echo "fixture_oracle: none. QEMU does not translate the DMA of a device whose context entry is pass-through (TT=2), so its IOTLB holds nothing to compare with; the check is the context entries themselves"
    echo "fixture_check: $(tail -1 "$FIX/check.tmp")"
  } > "$FIX/meta.txt"
  sed 's/^/  fixture: /' "$FIX/check.tmp"; rm -f "$FIX/check.tmp"
  echo "mkfixture.sh: $FIX: memory.elf $SIZE bytes, pass-through fixture"
  exit 0
fi
for f in memory.elf regs.txt oracle.tsv meta.txt; do [ -s "$CAP/$f" ] || die "missing $CAP/$f"; done
TMP=$(mktemp -d /tmp/mkfixture.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

python3 "$HERE/${KIND}_check.py" "$CAP" --pages "$TMP/pages" > "$TMP/check-full.txt" 2>&1 \
  || { cat "$TMP/check-full.txt" >&2; die "walk check of the full capture failed"; }
grep -E 'fixture pages|translating|valid STEs' "$TMP/check-full.txt" | sed 's/^ */  /'
[ -s "$TMP/pages" ] || die "no pages to keep"

mkdir -p "$FIX"
rm -f "$FIX/memory.elf"
if [ -n "${CORE_TRIM:-}" ]; then
  timeout 300 "$CORE_TRIM" "$CAP/memory.elf" "$FIX/memory.elf" $(cat "$TMP/pages") || die "core_trim failed"
else
  (cd "$HERE/../.." && timeout 1800 cargo run -q -p iommu-dump --example core_trim -- "$CAP/memory.elf" "$FIX/memory.elf" $(cat "$TMP/pages")) \
    || die "core_trim failed"
fi
cp "$CAP/regs.txt" "$CAP/oracle.tsv" "$FIX/"
SIZE=$(stat -c %s "$FIX/memory.elf")
{
  cat "$CAP/meta.txt"
  echo "fixture_memory: trimmed by core_trim to $(wc -l < "$TMP/pages") pages ($SIZE bytes): $(tr '\n' ' ' < "$TMP/pages")"
} > "$FIX/meta.txt"
[ "$SIZE" -lt 1048576 ] || die "trimmed core is $SIZE bytes (limit 1 MiB)"

python3 "$HERE/${KIND}_check.py" "$FIX" > "$TMP/check-fixture.txt" 2>&1 \
  || { cat "$TMP/check-fixture.txt" >&2; die "walk check of the trimmed fixture failed"; }
tail -1 "$TMP/check-fixture.txt" | sed 's/^/  fixture: /'
echo "fixture_walk_check: $(tail -1 "$TMP/check-fixture.txt")" >> "$FIX/meta.txt"
grep -q ', 0 do not$' "$TMP/check-fixture.txt" || die "some oracle entries do not resolve in the trimmed fixture"
echo "mkfixture.sh: $FIX: memory.elf $SIZE bytes ($(wc -l < "$TMP/pages") pages), $(( $(wc -l < "$FIX/oracle.tsv") - 1 )) oracle entries"
