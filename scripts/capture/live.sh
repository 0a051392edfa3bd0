#!/bin/bash
# live.sh vtd|amdvi OUTDIR
#
# `handover audit --live` on a running Linux guest: the preflight question "if this host panicked now, could
# its devices reach the crash kernel?", answered inside the host itself. Boots the capture guest (Debian
# kernel, QEMU TCG, e1000e + NVMe doing DMA through the emulated IOMMU) with `crashkernel=256M` reserved and
# `iomem=relaxed` (so /dev/mem reaches the IOMMU's registers, which the running IOMMU driver holds), adds a
# static `handover` to its initramfs, and has its /init run `handover audit --live` once the devices did DMA:
# memory from /proc/kcore, the unit from /sys/firmware/acpi/tables, registers from /dev/mem, the crash region
# from /proc/iomem's "Crash kernel" line. Writes to OUTDIR:
#   live.json, live.txt   the audit as the guest printed it (JSON, text);  live.rc  its exit status
#   live.err              its stderr (the defaults it took)
#   console.log           the guest's serial console;  summary.txt  kernel, QEMU, command line, verdict
# Run it twice to see both answers: translated DMA (the default) is safe; GUEST_ARGS=iommu.passthrough=1
# puts the devices in identity domains and is unsafe.
# Needs what setup.sh installs, and cargo with the x86_64-unknown-linux-gnu target (a static glibc build).
# Env: CAPTURE_WORK, KVER, KERNEL, INITRD, NVME_IMG, QEMU as vtd.sh; MEM [3G]: RAM above 4 GiB, since x86
#   /dev/mem reads stop at the top of RAM and the unit's registers sit below 4 GiB; CRASHKERNEL [256M];
#   GUEST_ARGS [] extra guest words; HANDOVER_STATIC [build it] a static x86_64 handover to use;
#   BOOT_TIMEOUT [300] s to CAP-READY; LIVE_TIMEOUT [300] s from there to CAP-LIVE-DONE; QEMU_TIMEOUT [900]
set -euo pipefail
HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PROG=live.sh
KIND=${1:-}; OUT=${2:-}
case "$KIND" in vtd|amdvi) ;; *) echo "usage: $0 vtd|amdvi OUTDIR" >&2; exit 2;; esac
[ -n "$OUT" ] && [ $# = 2 ] || { echo "usage: $0 vtd|amdvi OUTDIR" >&2; exit 2; }
source "$HERE/lib.sh"

W=${CAPTURE_WORK:-$HOME/.cache/handover-capture/work}
KVER=${KVER:-6.12.95+deb12-amd64}
KERNEL=${KERNEL:-$W/kernels/$KVER/boot/vmlinuz-$KVER}
INITRD=${INITRD:-$W/initrd-$KVER.cpio}
NVME_IMG=${NVME_IMG:-$W/nvme.img}
QEMU=${QEMU:-qemu-system-x86_64}
MEM=${MEM:-3G}
CRASHKERNEL=${CRASHKERNEL:-256M}
GUEST_ARGS=${GUEST_ARGS:-}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-300}
LIVE_TIMEOUT=${LIVE_TIMEOUT:-300}
QEMU_TIMEOUT=${QEMU_TIMEOUT:-900}
case "$KIND" in
  vtd)   IOMMU=(-machine q35,kernel-irqchip=split -device intel-iommu,intremap=on); IOPT="intel_iommu=on";;
  amdvi) IOMMU=(-machine q35 -device amd-iommu,intremap=off,pt=off); IOPT="";;
esac

command -v "$QEMU" >/dev/null || die "$QEMU not found (run scripts/capture/setup.sh)"
for f in "$KERNEL" "$INITRD" "$NVME_IMG"; do [ -f "$f" ] || die "missing $f (run scripts/capture/setup.sh)"; done
command -v cpio >/dev/null || die "cpio not found"
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
cap_setup
rm -f "$OUT"/{live.json,live.txt,live.rc,live.err,summary.txt}

if [ -n "${HANDOVER_STATIC:-}" ]; then
  HSTATIC=$HANDOVER_STATIC
else
  say "building a static handover (cargo build --release, +crt-static)"
  (cd "$REPO" && RUSTFLAGS="-C target-feature=+crt-static" timeout 1800 cargo build -q --release -p handover \
     --target x86_64-unknown-linux-gnu) || die "static build of handover failed"
  HSTATIC=$REPO/target/x86_64-unknown-linux-gnu/release/handover
fi
file "$HSTATIC" 2>/dev/null | grep -q -E 'static(-pie)? linked' || die "$HSTATIC is not a static binary"

# The capture initramfs, and a second cpio with /bin/handover and this checkout's guest-init.sh as /init
# (the kernel unpacks both; the later wins).
mkdir -p "$RUN/extra/bin"
cp "$HSTATIC" "$RUN/extra/bin/handover"
install -m 755 "$HERE/guest-init.sh" "$RUN/extra/init"
(cd "$RUN/extra" && find . | cpio -o -H newc --quiet) > "$RUN/extra.cpio"
cat "$INITRD" "$RUN/extra.cpio" > "$RUN/initrd.cpio"

APPEND="console=ttyS0 $IOPT iommu.strict=1 iommu.passthrough=0 panic=-1 crashkernel=$CRASHKERNEL iomem=relaxed cap.live=1"
[ -z "$GUEST_ARGS" ] || APPEND="$APPEND $GUEST_ARGS"
cap_start "$QEMU" "${IOMMU[@]}" -accel tcg -m "$MEM" -smp 2 -nodefaults -vga none -display none \
  -netdev user,id=n0,restrict=on -device e1000e,netdev=n0,addr=02.0 \
  -drive "file=$NVME_IMG,if=none,id=d0,format=raw,snapshot=on" -device nvme,drive=d0,serial=cap0,addr=03.0 \
  -kernel "$KERNEL" -initrd "$RUN/initrd.cpio" -append "$APPEND" \
  -serial "file:$OUT/console.log" -qmp "unix:$QMP_SOCK,server=on,wait=off" -no-reboot
say "$KIND: booting (TCG) with crashkernel=$CRASHKERNEL${GUEST_ARGS:+ and $GUEST_ARGS}"
cap_wait_ready
deadline=$(( $(date +%s) + LIVE_TIMEOUT ))
while ! grep -a -q '^CAP-LIVE-DONE' "$OUT/console.log" 2>/dev/null; do
  kill -0 "$QPID" 2>/dev/null || die "QEMU exited before the live audit finished"
  grep -a -q -E '^CAP-FAIL|Kernel panic' "$OUT/console.log" && die "guest failed (see $OUT/console.log)"
  [ "$(date +%s)" -lt "$deadline" ] || die "timeout: no CAP-LIVE-DONE after $LIVE_TIMEOUT s"
  sleep 0.5
done
cap_quit
# Console lines may end in \r; kernel messages may interleave: keep only the prefixed lines.
strip() { { grep -a "^$1" "$OUT/console.log" || true; } | sed -e "s/^$1//" -e 's/\r$//'; }
strip 'CAP-LIVE-JSON: ' > "$OUT/live.json"
strip 'CAP-LIVE: ' > "$OUT/live.txt"
strip 'CAP-LIVE-ERR: ' > "$OUT/live.err"
strip 'CAP-LIVE-RC: ' > "$OUT/live.rc"
python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$OUT/live.json" || die "live.json is not JSON (see console.log)"
VERDICT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["verdict"])' "$OUT/live.json")
{
  echo "kind: $KIND"
  echo "kernel: $(grep -a -m1 -o 'Linux version [^ ]* ([^)]*)' "$OUT/console.log" || echo "$KVER")"
  echo "qemu: $("$QEMU" --version | head -1)"
  echo "guest command line: $APPEND"
  echo "audit: handover audit --live (exit $(cat "$OUT/live.rc")): verdict $VERDICT"
  sed 's/^/  /' "$OUT/live.err"
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
} | cap_scrub > "$OUT/summary.txt"
cat "$OUT/summary.txt"
cat "$OUT/live.txt"
