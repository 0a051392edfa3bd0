#!/bin/bash
# vtd.sh legacy|scalable|scalable-fl OUTDIR
#
# Capture a real Linux guest's Intel VT-d state for the handover project: boot a Debian kernel under
# QEMU (q35, TCG) with an emulated Intel IOMMU (intel-iommu,intremap=on; scalable: x-scalable-mode=on
# and the guest's intel_iommu=sm_on; scalable-fl: also x-flts=on, so the unit offers first-level
# translation (ECAP.FLTS) and Linux gives its DMA domains first-level tables, PGTT=001), an e1000e NIC and an NVMe disk that do DMA through it; wait until
# the guest's drivers are up and DMA happened; pause the VM and write to OUTDIR:
#   memory.elf   guest physical memory (dump-guest-memory ELF core, ~2 GiB; keep it out of the repo)
#   regs.txt     VT-d registers at MMIO base 0xfed90000, one `xp` monitor line per register
#   oracle.tsv   translations QEMU's IOTLB still holds when paused (from trace events; vtd_oracle.py)
#   meta.txt     kernel, QEMU version and command line, MMIO base, mode, oracle counts, date, walk check
#   console.log  guest serial console;  trace.log  QEMU's vtd_* trace events;  check.txt  vtd_check.py
# Needs what setup.sh installs. Env (defaults in brackets):
#   CAPTURE_WORK [$HOME/.cache/handover-capture/work]   KVER [6.12.95+deb12-amd64]
#   KERNEL [$CAPTURE_WORK/kernels/$KVER/boot/vmlinuz-$KVER]   INITRD [$CAPTURE_WORK/initrd-$KVER.cpio]
#   NVME_IMG [$CAPTURE_WORK/nvme.img]   QEMU [qemu-system-x86_64]   MEM [2G]
#   BOOT_TIMEOUT [300] s until the guest prints CAP-READY;  SETTLE [1] s of idling before the pause
#   QEMU_TIMEOUT [900] s hard limit for the whole QEMU process
#   EXTRA_DUMPS [] the paused memory again in these dump-guest-memory formats (kdump-zlib, kdump-raw-lzo, ...)
#     as OUTDIR/memory.FORMAT, for dumpfmt_check.sh
#   GUEST_ARGS [] extra words appended to the guest command line. With `iommu.passthrough=1` or
#     `iommu=pt` among them Linux puts the devices in identity (pass-through) domains: QEMU then does not
#     translate their DMA, so there is no oracle (oracle.tsv has only its header) and the check is instead
#     that e1000e and nvme have pass-through entries (legacy TT=2, scalable PGTT=4; vtd_check.py --expect-pt)
set -euo pipefail
HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
MODE=${1:-}; OUT=${2:-}
die() { echo "vtd.sh: ERROR: $*" >&2; exit 1; }
case "$MODE" in legacy|scalable|scalable-fl) ;; *) echo "usage: $0 legacy|scalable|scalable-fl OUTDIR" >&2; exit 2;; esac
[ -n "$OUT" ] || { echo "usage: $0 legacy|scalable|scalable-fl OUTDIR" >&2; exit 2; }

W=${CAPTURE_WORK:-$HOME/.cache/handover-capture/work}
KVER=${KVER:-6.12.95+deb12-amd64}
KERNEL=${KERNEL:-$W/kernels/$KVER/boot/vmlinuz-$KVER}
INITRD=${INITRD:-$W/initrd-$KVER.cpio}
NVME_IMG=${NVME_IMG:-$W/nvme.img}
QEMU=${QEMU:-qemu-system-x86_64}
MEM=${MEM:-2G}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-300}
SETTLE=${SETTLE:-1}
QEMU_TIMEOUT=${QEMU_TIMEOUT:-900}
GUEST_ARGS=${GUEST_ARGS:-}
BASE=0xfed90000
PT=0
for w in $GUEST_ARGS; do case "$w" in iommu.passthrough=1|iommu=pt) PT=1;; iommu.passthrough=0|iommu=nopt) PT=0;; esac; done

command -v "$QEMU" >/dev/null || die "$QEMU not found (run scripts/capture/setup.sh)"
command -v python3 >/dev/null || die "python3 not found"
for f in "$KERNEL" "$INITRD" "$NVME_IMG"; do [ -f "$f" ] || die "missing $f (run scripts/capture/setup.sh, or set KERNEL/INITRD/NVME_IMG)"; done
"$QEMU" -device intel-iommu,help 2>/dev/null | grep -q x-scalable-mode || die "$QEMU has no intel-iommu x-scalable-mode property"

mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
RUN=$(mktemp -d /tmp/vtd-capture.XXXXXX)     # sockets and scratch; removed at exit
QMP_SOCK=$RUN/qmp.sock
rm -f "$OUT"/{memory.elf,regs.txt,oracle.tsv,meta.txt,console.log,trace.log,check.txt,qemu.stderr}

QPID=""
cleanup() {
  local rc=$?
  if [ -n "$QPID" ] && kill -0 "$QPID" 2>/dev/null; then
    python3 "$HERE/qmp.py" "$QMP_SOCK" --timeout 10 quit >/dev/null 2>&1 || true
    for _ in $(seq 20); do kill -0 "$QPID" 2>/dev/null || break; sleep 0.5; done
    kill "$QPID" 2>/dev/null || true
  fi
  rm -rf "$RUN"
  [ $rc = 0 ] || echo "vtd.sh: FAILED (exit $rc); partial output in $OUT" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# trace events: IOTLB fills, everything that invalidates, root pointer / TE changes, faults; interrupt
# remapping: each IRTE QEMU read and what it remapped an MSI to (the oracle of vtd_ir_check.py)
cat > "$RUN/events" <<'EV'
vtd_iotlb_page_update
vtd_iotlb_reset
vtd_dmar_translate
vtd_inv_desc
vtd_inv_desc_iotlb_global
vtd_inv_desc_iotlb_domain
vtd_inv_desc_iotlb_pages
vtd_inv_desc_iotlb_pasid
vtd_inv_desc_iotlb_pasid_pages
vtd_inv_desc_cc_global
vtd_inv_desc_cc_domain
vtd_inv_desc_cc_device
vtd_inv_desc_cc_devices
vtd_context_cache_reset
vtd_reg_dmar_root
vtd_dmar_enable
vtd_reset_exit
vtd_dmar_fault
vtd_translate_pt
vtd_ir_enable
vtd_ir_irte_get
vtd_ir_remap
vtd_ir_remap_msi
EV

IOMMU_DEV=intel-iommu,intremap=on
APPEND="console=ttyS0 intel_iommu=on iommu.strict=1 iommu.passthrough=0 panic=-1"
if [ "$MODE" != legacy ]; then
  IOMMU_DEV="$IOMMU_DEV,x-scalable-mode=on"
  [ "$MODE" = scalable ] || IOMMU_DEV="$IOMMU_DEV,x-flts=on"
  APPEND="console=ttyS0 intel_iommu=on,sm_on iommu.strict=1 iommu.passthrough=0 panic=-1"
fi
[ -z "$GUEST_ARGS" ] || APPEND="$APPEND $GUEST_ARGS"    # later words win (iommu.passthrough=1)
# e1000e at 00:02.0 (sid 0x0010), nvme at 00:03.0 (sid 0x0018); nvme.img is only read (snapshot=on)
QARGS=(-machine q35,kernel-irqchip=split -accel tcg -m "$MEM" -smp 2 -nodefaults -vga none -display none
       -device "$IOMMU_DEV"
       -netdev user,id=n0,restrict=on -device e1000e,netdev=n0,addr=02.0
       -drive "file=$NVME_IMG,if=none,id=d0,format=raw,snapshot=on" -device nvme,drive=d0,serial=cap0,addr=03.0
       -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND"
       -serial "file:$OUT/console.log" -qmp "unix:$QMP_SOCK,server=on,wait=off"
       -trace "events=$RUN/events,file=$OUT/trace.log" -no-reboot)
T0=$(date +%s)
[ $PT = 0 ] || echo "vtd.sh: pass-through guest (GUEST_ARGS=$GUEST_ARGS): no oracle, checking for pass-through entries"
echo "vtd.sh: mode=$MODE kernel=$KVER; booting (TCG, about 10 s to CAP-READY)"
timeout "$QEMU_TIMEOUT" "$QEMU" "${QARGS[@]}" 2>"$OUT/qemu.stderr" &
QPID=$!

# wait for the guest's CAP-READY (bounded); stop early on a failure marker, a panic or a dead QEMU
deadline=$(( $(date +%s) + BOOT_TIMEOUT ))
while ! grep -a -q '^CAP-READY' "$OUT/console.log" 2>/dev/null; do
  kill -0 "$QPID" 2>/dev/null || { tail -5 "$OUT/qemu.stderr" >&2; die "QEMU exited before the guest was ready"; }
  if grep -a -q -E '^CAP-FAIL|Kernel panic' "$OUT/console.log" 2>/dev/null; then
    grep -a -E '^CAP-FAIL|Kernel panic' "$OUT/console.log" | head -3 >&2; die "guest failed (see $OUT/console.log)"
  fi
  [ "$(date +%s)" -lt "$deadline" ] || die "timeout: no CAP-READY after $BOOT_TIMEOUT s (see $OUT/console.log)"
  sleep 0.5
done
echo "vtd.sh: guest ready after $(( $(date +%s) - T0 )) s"
grep -a -E '^CAP-GROUP' "$OUT/console.log" | sed 's/^/  /' || true
sleep "$SETTLE"

qmp() { python3 "$HERE/qmp.py" "$QMP_SOCK" "$@"; }
qmp --timeout 30 stop || die "QMP stop failed"
st=$(qmp --timeout 30 status) || die "QMP query-status failed"
[ "$st" = paused ] || die "VM not paused after stop (status: $st)"
TRACE_BYTES=$(stat -c %s "$OUT/trace.log")      # the oracle uses only events logged before the pause
STOP_UPTIME=$(( $(date +%s) - T0 ))

# registers: one xp per register with its own width (w = 32-bit, g = 64-bit)
xpcmds=()
for r in 0x0:w 0x8:g 0x10:g 0x18:w 0x1c:w 0x20:g 0x28:g 0x34:w 0x38:w 0x80:g 0x88:g 0x90:g 0x9c:w 0xb0:g 0xb8:g; do
  xpcmds+=(hmp "xp /1${r#*:}x $(printf '0x%x' $(( BASE + ${r%:*} )))")
done
qmp --timeout 30 "${xpcmds[@]}" > "$OUT/regs.txt" || die "reading registers failed"
CAP=$(awk -v a="$(printf '%016x' $((BASE + 8)))" '$1 == a":" {print $2}' "$OUT/regs.txt")
[ -n "$CAP" ] || die "no CAP register line in regs.txt"
FRO=$(( (CAP >> 24) & 0x3ff ))
qmp --timeout 30 hmp "xp /1gx $(printf '0x%x' $(( BASE + FRO * 16 )))" hmp "xp /1gx $(printf '0x%x' $(( BASE + FRO * 16 + 8 )))" \
  >> "$OUT/regs.txt" || die "reading the fault recording register failed"
[ "$(grep -c -E '^[0-9a-f]{16}: 0x[0-9a-f]+$' "$OUT/regs.txt")" = 17 ] || { cat "$OUT/regs.txt" >&2; die "regs.txt does not have 17 xp lines"; }
RTADDR=$(awk -v a="$(printf '%016x' $((BASE + 0x20)))" '$1 == a":" {print $2}' "$OUT/regs.txt")
GSTS=$(awk -v a="$(printf '%016x' $((BASE + 0x1c)))" '$1 == a":" {print $2}' "$OUT/regs.txt")
(( GSTS & (1 << 31) )) || die "GSTS=$GSTS: DMA remapping (TES) is not enabled in the guest"
TTM=$(( (RTADDR >> 10) & 3 ))
if [ "$MODE" != legacy ] && [ $TTM != 1 ]; then die "RTADDR=$RTADDR: guest did not enable scalable mode (TTM=$TTM)"; fi
if [ "$MODE" = legacy ] && [ $TTM != 0 ]; then die "RTADDR=$RTADDR: unexpected TTM=$TTM in legacy mode"; fi

t=$(date +%s.%N)
qmp --timeout 300 dump "$OUT/memory.elf" || die "dump-guest-memory failed"
DUMP_S=$(echo "$(date +%s.%N) - $t" | bc)
[ "$(head -c 4 "$OUT/memory.elf" | od -An -c | tr -d ' ')" = '177ELF' ] || die "memory.elf is not an ELF file"
for f in ${EXTRA_DUMPS:-}; do   # the same paused memory in other formats, for dumpfmt_check.sh
  qmp --timeout 900 dump-as "$f" "$OUT/memory.$f" 2> "$OUT/memory.$f.err" || { echo "vtd.sh: no $f dump: $(cat "$OUT/memory.$f.err")"; continue; }
  rm -f "$OUT/memory.$f.err"
done
QEMU_VER=$("$QEMU" --version | head -1)
qmp --timeout 30 quit || true
for _ in $(seq 60); do kill -0 "$QPID" 2>/dev/null || break; sleep 0.5; done
kill -0 "$QPID" 2>/dev/null && die "QEMU did not exit after quit"
QPID=""

python3 "$HERE/vtd_oracle.py" "$OUT/trace.log" --upto "$TRACE_BYTES" > "$OUT/oracle.tsv" 2> "$RUN/oracle.err" \
  || { cat "$RUN/oracle.err" >&2; die "vtd_oracle.py failed"; }
sed 's/^/  /' "$RUN/oracle.err"
NORACLE=$(( $(wc -l < "$OUT/oracle.tsv") - 1 ))
NSIDS=$(tail -n +2 "$OUT/oracle.tsv" | cut -f1 | sort -u | wc -l)
CHECK_ARGS=()
if [ $PT = 1 ]; then
  CHECK_ARGS=(--expect-pt 0x0010,0x0018)
else
  [ "$NORACLE" -gt 0 ] || die "oracle.tsv is empty (no translation survived; see trace.log)"
fi
set +e
python3 "$HERE/vtd_check.py" "$OUT" "${CHECK_ARGS[@]}" > "$OUT/check.txt" 2>&1; CHECK_RC=$?
set -e
sed 's/^/  /' "$OUT/check.txt"

{
  echo "mode: $MODE"
  echo "kernel: $KVER ($(grep -a -m1 -o 'Linux version [^ ]* [^ ]*' "$OUT/console.log" || echo '?'))"
  echo "kernel_image: $KERNEL"
  echo "initrd: $INITRD"
  echo "guest_cmdline: $APPEND"
  echo "qemu: $QEMU_VER"
  echo "qemu_cmdline: $QEMU $(printf '%q ' "${QARGS[@]}")"
  echo "mmio_base: $BASE"
  echo "regs_order: VER CAP ECAP GCMD GSTS RTADDR CCMD FSTS FECTL IQH IQT IQA ICS IQER IRTA FRCD(lo) FRCD(hi) at CAP.FRO*16=$(printf '0x%x' $((FRO*16)))"
  echo "rtaddr: $RTADDR (TTM=$TTM)"
  echo "devices: e1000e 00:02.0 sid 0x0010, nvme 00:03.0 sid 0x0018"
  echo "oracle_entries: $NORACLE"
  echo "oracle_per_sid: $(tail -n +2 "$OUT/oracle.tsv" | cut -f1 | sort | uniq -c | awk '{printf "%s=%s ", $2, $1}')"
  echo "oracle_trace_bytes: $TRACE_BYTES (trace.log events up to the pause)"
  echo "walk_check: $(tail -1 "$OUT/check.txt") (vtd_check.py ${CHECK_ARGS[*]:+${CHECK_ARGS[*]} }exit $CHECK_RC)"
  [ $PT = 0 ] || echo "passthrough: guest_cmdline asks for identity domains; QEMU does not translate pass-through DMA, so there is no oracle (oracle.tsv is only its header)"
  echo "paused_at: ${STOP_UPTIME}s after QEMU start; dump took ${DUMP_S}s"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} | sed -e "s#$W#\$CAPTURE_WORK#g" -e "s#$OUT#\$OUT#g" -e 's#/tmp/vtd-capture\.[A-Za-z0-9]*#$TMPDIR#g' > "$OUT/meta.txt"
# (meta.txt names no path of the machine that made it: it may be committed beside a fixture.)
[ -s "$OUT/qemu.stderr" ] || rm -f "$OUT/qemu.stderr"

if [ $PT = 1 ]; then
  [ $CHECK_RC = 0 ] || die "pass-through check failed: $(tail -1 "$OUT/check.txt")"
  echo "vtd.sh: done in $(( $(date +%s) - T0 )) s: $OUT (pass-through: $(tail -1 "$OUT/check.txt"))"
  exit 0
fi
[ "$NSIDS" -ge 2 ] || die "oracle covers only $NSIDS device(s); expected e1000e and nvme"
[ $CHECK_RC = 0 ] || die "walk check failed: $(tail -1 "$OUT/check.txt")"
grep -q ', 0 do not$' "$OUT/check.txt" || echo "vtd.sh: WARNING: some oracle entries disagree with the table walk (see $OUT/check.txt)" >&2
echo "vtd.sh: done in $(( $(date +%s) - T0 )) s: $OUT ($NORACLE oracle entries)"
