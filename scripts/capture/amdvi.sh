#!/bin/bash
# amdvi.sh OUTDIR
#
# Capture a real Linux guest's AMD-Vi state for the handover project: boot a Debian kernel under QEMU
# (q35, TCG) with an emulated AMD IOMMU (amd-iommu,intremap=off,pt=off), an e1000e NIC and an NVMe disk
# that do DMA through it; wait until the guest's drivers are up and DMA happened; pause the VM and write
# to OUTDIR:
#   memory.elf      guest physical memory (dump-guest-memory ELF core, ~2 GiB; keep it out of the repo)
#   regs.txt        AMD-Vi registers at MMIO base 0xfed80000, one `xp /1gx` monitor line per register
#   oracle.tsv      translations QEMU's IOTLB still holds when paused (amdvi_oracle.py: trace events,
#                   with permissions and page sizes read from QEMU's IOTLB itself, amdvi_iotlb_scan.py)
#   meta.txt        kernel, QEMU version and command line, MMIO base, oracle counts, walk check, date
#   console.log     guest serial console;  trace.log  QEMU's amdvi_* trace events;  check.txt  amdvi_check.py
#   qemu-iotlb.tsv  QEMU's AMD-Vi IOTLB at the pause (all entries, raw)
# Needs what setup.sh installs. Env (defaults in brackets):
#   CAPTURE_WORK [$HOME/.cache/handover-capture/work]   KVER [6.12.95+deb12-amd64]
#   KERNEL [$CAPTURE_WORK/kernels/$KVER/boot/vmlinuz-$KVER]   INITRD [$CAPTURE_WORK/initrd-$KVER.cpio]
#   NVME_IMG [$CAPTURE_WORK/nvme.img]   QEMU [qemu-system-x86_64]   MEM [2G]
#   NVFLUSH [1100] NVMe flushes per guest CPU after the reads (see below)
#   BOOT_TIMEOUT [300] s until the guest prints CAP-READY;  SETTLE [1] s of idling before the first pause
#   PAUSE_TRIES [40] pauses until both devices have live translations;  QEMU_TIMEOUT [900] s for QEMU
#   EXTRA_DUMPS [] the paused memory again in these dump-guest-memory formats (kdump-zlib, kdump-raw-lzo, ...)
#     as OUTDIR/memory.FORMAT, for dumpfmt_check.sh
#
# Why the retries: QEMU 10.0's AMD-Vi model drops *all* IOTLB entries of a domain on every
# INVALIDATE_IOMMU_PAGES, and Linux (strict mode; QEMU sets NpCache, so maps flush too) sends one on
# every map and unmap. A device keeps live entries only between its last DMA and its driver's next
# map/unmap. NVMe gets them from flush commands (no data buffer: nothing is mapped), the NIC from
# back-to-back pings (cap.traffic=flood); the script pauses, and if the NIC's domain happens to have just
# been flushed, resumes the guest for a moment and pauses again.
set -euo pipefail
HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
PROG=amdvi.sh
OUT=${1:-}
[ -n "$OUT" ] && [ $# = 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
source "$HERE/lib.sh"

W=${CAPTURE_WORK:-$HOME/.cache/handover-capture/work}
KVER=${KVER:-6.12.95+deb12-amd64}
KERNEL=${KERNEL:-$W/kernels/$KVER/boot/vmlinuz-$KVER}
INITRD=${INITRD:-$W/initrd-$KVER.cpio}
NVME_IMG=${NVME_IMG:-$W/nvme.img}
QEMU=${QEMU:-qemu-system-x86_64}
MEM=${MEM:-2G}
SETTLE=${SETTLE:-1}
NVFLUSH=${NVFLUSH:-1100}
PAUSE_TRIES=${PAUSE_TRIES:-40}
BASE=0xfed80000

command -v "$QEMU" >/dev/null || die "$QEMU not found (run scripts/capture/setup.sh)"
command -v python3 >/dev/null || die "python3 not found"
for f in "$KERNEL" "$INITRD" "$NVME_IMG"; do [ -f "$f" ] || die "missing $f (run scripts/capture/setup.sh, or set KERNEL/INITRD/NVME_IMG)"; done
"$QEMU" -device amd-iommu,help 2>/dev/null | grep -q 'pt=' || die "$QEMU has no amd-iommu device with a pt property"

mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
cap_setup

cat > "$RUN/events" <<'EV'
amdvi_cache_update
amdvi_iotlb_reset
amdvi_all_inval
amdvi_pages_inval
amdvi_iotlb_inval
amdvi_devtab_inval
amdvi_page_fault
amdvi_mode_invalid
amdvi_dte_get_fail
amdvi_invalid_dte
amdvi_get_pte_hwerror
amdvi_command_error
amdvi_unhandled_command
EV

APPEND="console=ttyS0 iommu.strict=1 iommu.passthrough=0 panic=-1 cap.nvflush=$NVFLUSH cap.traffic=flood"
# e1000e at 00:02.0 (device id 0x0010), nvme at 00:03.0 (0x0018); nvme.img is only read (snapshot=on).
# pt=off: with QEMU's default pt=on the devices' DMA is not translated; intremap=on panics under TCG.
QARGS=(-machine q35 -accel tcg -m "$MEM" -smp 2 -nodefaults -vga none -display none
       -device amd-iommu,intremap=off,pt=off
       -netdev user,id=n0,restrict=on -device e1000e,netdev=n0,addr=02.0
       -drive "file=$NVME_IMG,if=none,id=d0,format=raw,snapshot=on" -device nvme,drive=d0,serial=cap0,addr=03.0
       -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND"
       -serial "file:$OUT/console.log" -qmp "unix:$QMP_SOCK,server=on,wait=off"
       -trace "events=$RUN/events,file=$OUT/trace.log" -no-reboot)
say "kernel=$KVER; booting (TCG, about 30 s to CAP-READY with the NVMe flushes)"
cap_start "$QEMU" "${QARGS[@]}"
cap_wait_ready
sleep "$SETTLE"

# pause until the trace model has live entries of at least two devices (bounded)
tries=0
while :; do
  tries=$((tries + 1))
  cap_pause
  read -r nsid nent < <(python3 "$HERE/amdvi_oracle.py" "$OUT/trace.log" --upto "$TRACE_BYTES" --count-sids) \
    || die "amdvi_oracle.py --count-sids failed"
  [ "$nsid" -ge 2 ] && break
  [ $tries -lt "$PAUSE_TRIES" ] || { say "WARNING: after $tries pauses only $nsid device(s) have live translations"; break; }
  cap_cont
  sleep "0.$(( RANDOM % 7 + 2 ))"
done
say "paused (try $tries): $nent live IOTLB entries over $nsid device(s) by the trace"

cap_regs $BASE 0x0:g 0x8:g 0x10:g 0x18:g 0x20:g 0x28:g 0x30:g 0x2000:g 0x2008:g 0x2010:g 0x2018:g 0x2020:g
DEVTAB=$(reg $BASE 0x0); CONTROL=$(reg $BASE 0x18); EFR=$(reg $BASE 0x30); STATUS=$(reg $BASE 0x2020)
(( CONTROL & 1 )) || die "Control=$CONTROL: the guest did not enable the IOMMU (IommuEn)"
(( DEVTAB >> 12 )) || die "DevTabBase=$DEVTAB: no device table"

t=$(date +%s.%N)
python3 "$HERE/amdvi_iotlb_scan.py" "$QEMU_PID" > "$OUT/qemu-iotlb.tsv" 2> "$RUN/scan.err" \
  || { cat "$RUN/scan.err" >&2; die "could not read the AMD-Vi IOTLB from QEMU's memory"; }
SCAN_S=$(echo "$(date +%s.%N) - $t" | bc)
sed 's/^/  /' "$RUN/scan.err"
cap_dump
QEMU_VER=$("$QEMU" --version | head -1)
cap_quit

python3 "$HERE/amdvi_oracle.py" "$OUT/trace.log" --upto "$TRACE_BYTES" --qemu-iotlb "$OUT/qemu-iotlb.tsv" \
  > "$OUT/oracle.tsv" 2> "$RUN/oracle.err" || { cat "$RUN/oracle.err" >&2; die "amdvi_oracle.py failed"; }
sed 's/^/  /' "$RUN/oracle.err"
NORACLE=$(( $(wc -l < "$OUT/oracle.tsv") - 1 ))
NSIDS=$(tail -n +2 "$OUT/oracle.tsv" | cut -f1 | sort -u | wc -l)
[ "$NORACLE" -gt 0 ] || die "oracle.tsv is empty (no translation survived; see trace.log)"
set +e
python3 "$HERE/amdvi_check.py" "$OUT" > "$OUT/check.txt" 2>&1; CHECK_RC=$?
set -e
sed 's/^/  /' "$OUT/check.txt"

{
  echo "iommu: amd-vi (QEMU amd-iommu, intremap=off, pt=off)"
  echo "kernel: $KVER ($(grep -a -m1 -o 'Linux version [^ ]* [^ ]*' "$OUT/console.log" || echo '?'))"
  echo "kernel_image: $KERNEL"
  echo "initrd: $INITRD"
  echo "guest_cmdline: $APPEND"
  echo "qemu: $QEMU_VER"
  echo "qemu_cmdline: $QEMU $(printf '%q ' "${QARGS[@]}")"
  echo "mmio_base: $BASE"
  echo "regs_order: DevTabBase 0x0, CmdBufBase 0x8, EventLogBase 0x10, Control 0x18, ExclBase 0x20, ExclLimit 0x28, EFR 0x30, CmdHead 0x2000, CmdTail 0x2008, EventHead 0x2010, EventTail 0x2018, Status 0x2020 (all /1gx)"
  echo "devtab_base: $DEVTAB  control: $CONTROL  efr: $EFR  status: $STATUS"
  echo "devices: e1000e 00:02.0 devid 0x0010, nvme 00:03.0 devid 0x0018"
  echo "oracle_domain: AMD domain id (DTE bits 79:64) that QEMU cached with the entry"
  echo "oracle_source: amdvi_cache_update and invalidation trace events up to the pause; perm and size from QEMU's IOTLB read at the pause (qemu-iotlb.tsv); entries of one large page merged"
  echo "qemu_iotlb_entries: $(( $(wc -l < "$OUT/qemu-iotlb.tsv") - 1 )) (one per device and 4 KiB IOVA page)"
  echo "oracle_entries: $NORACLE"
  echo "oracle_per_sid: $(oracle_per_sid)"
  echo "oracle_trace_bytes: $TRACE_BYTES (trace.log events up to the pause)"
  echo "pause_tries: $tries"
  echo "walk_check: $(tail -1 "$OUT/check.txt") (amdvi_check.py exit $CHECK_RC)"
  echo "paused_at: ${STOP_UPTIME}s after QEMU start; IOTLB scan took ${SCAN_S}s; dump took ${DUMP_S}s"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} | cap_scrub > "$OUT/meta.txt"

[ "$NSIDS" -ge 2 ] || die "oracle covers only $NSIDS device(s); expected e1000e and nvme"
[ $CHECK_RC = 0 ] || die "walk check failed: $(tail -1 "$OUT/check.txt")"
grep -q ', 0 do not$' "$OUT/check.txt" || echo "$PROG: WARNING: some oracle entries disagree with the table walk (see $OUT/check.txt)" >&2
say "done in $(( $(date +%s) - T0 )) s: $OUT ($NORACLE oracle entries)"
