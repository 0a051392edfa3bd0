#!/bin/bash
# smmuv3.sh OUTDIR
#
# Capture a real Linux guest's Arm SMMUv3 state for the handover project: boot a Debian arm64 kernel
# under QEMU (virt,iommu=smmuv3, cortex-a57, TCG) with an e1000e NIC and an NVMe disk on the PCIe root
# bus behind the SMMU; wait until the guest's drivers are up and DMA happened; pause the VM and write
# to OUTDIR:
#   memory.elf   guest physical memory (dump-guest-memory ELF core, ~2 GiB; keep it out of the repo)
#   regs.txt     SMMUv3 registers at MMIO base 0x09050000, one `xp` monitor line per register
#   oracle.tsv   translations QEMU's SMMU IOTLB still holds when paused (smmuv3_oracle.py, trace events)
#   meta.txt     kernel, QEMU version and command line, MMIO base, oracle counts, walk check, date
#   console.log  guest serial console;  trace.log  QEMU's smmu* trace events;  check.txt  smmuv3_check.py
# Needs what setup.sh installs (qemu-system-arm and the arm64 kernel included). Env (defaults in brackets):
#   CAPTURE_WORK [$HOME/.cache/handover-capture/work]   KVER [6.12.95+deb12-arm64]
#   KERNEL [$CAPTURE_WORK/kernels/$KVER/boot/vmlinuz-$KVER]   INITRD [$CAPTURE_WORK/initrd-$KVER.cpio]
#   NVME_IMG [$CAPTURE_WORK/nvme.img]   QEMU [qemu-system-aarch64]   MEM [2G]
#   NVFLUSH [1100] NVMe flush commands per guest CPU after the reads (they fetch every queue-ring page again)
#   BOOT_TIMEOUT [300] s until the guest prints CAP-READY;  SETTLE [1] s of idling before the pause
#   QEMU_TIMEOUT [900] s hard limit for the whole QEMU process
#   EXTRA_DUMPS [] the paused memory again in these dump-guest-memory formats (kdump-zlib, kdump-raw-lzo, ...)
#     as OUTDIR/memory.FORMAT, for dumpfmt_check.sh
set -euo pipefail
HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
PROG=smmuv3.sh
OUT=${1:-}
[ -n "$OUT" ] && [ $# = 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
source "$HERE/lib.sh"

W=${CAPTURE_WORK:-$HOME/.cache/handover-capture/work}
KVER=${KVER:-6.12.95+deb12-arm64}
KERNEL=${KERNEL:-$W/kernels/$KVER/boot/vmlinuz-$KVER}
INITRD=${INITRD:-$W/initrd-$KVER.cpio}
NVME_IMG=${NVME_IMG:-$W/nvme.img}
QEMU=${QEMU:-qemu-system-aarch64}
MEM=${MEM:-2G}
SETTLE=${SETTLE:-1}
NVFLUSH=${NVFLUSH:-1100}
BASE=0x09050000

command -v "$QEMU" >/dev/null || die "$QEMU not found (run scripts/capture/setup.sh)"
command -v python3 >/dev/null || die "python3 not found"
for f in "$KERNEL" "$INITRD" "$NVME_IMG"; do [ -f "$f" ] || die "missing $f (run scripts/capture/setup.sh, or set KERNEL/INITRD/NVME_IMG)"; done
"$QEMU" -machine virt,help 2>/dev/null | grep -q 'iommu=' || die "$QEMU: machine virt has no iommu property"

mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
cap_setup

cat > "$RUN/events" <<'EV'
smmu_iotlb_insert
smmu_iotlb_inv_all
smmu_iotlb_inv_asid_vmid
smmu_iotlb_inv_vmid
smmu_iotlb_inv_vmid_s1
smmu_reset_exit
smmuv3_translate_success
smmuv3_translate_abort
smmuv3_translate_bypass
smmuv3_range_inval
smmuv3_cmdq_tlbi_nh
smmuv3_cmdq_tlbi_nsnh
smmuv3_cmdq_tlbi_nh_asid
smmuv3_cmdq_tlbi_s12_vmid
smmuv3_cmdq_cfgi_ste
smmuv3_cmdq_cfgi_ste_range
smmuv3_cmdq_cfgi_cd
smmuv3_record_event
smmuv3_cmdq_consume_error
EV

APPEND="console=ttyAMA0 iommu.strict=1 iommu.passthrough=0 panic=-1 cap.nvflush=$NVFLUSH"
# e1000e at 00:02.0 (stream id 0x0010), nvme at 00:03.0 (0x0018) on the PCIe root bus of virt, whose
# iommu-map sends every RID to the SMMUv3 (stream id = RID); nvme.img is only read (snapshot=on)
QARGS=(-machine virt,iommu=smmuv3 -cpu cortex-a57 -accel tcg -m "$MEM" -smp 2 -nodefaults -display none
       -netdev user,id=n0,restrict=on -device e1000e,netdev=n0,addr=02.0
       -drive "file=$NVME_IMG,if=none,id=d0,format=raw,snapshot=on" -device nvme,drive=d0,serial=cap0,addr=03.0
       -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND"
       -serial "file:$OUT/console.log" -qmp "unix:$QMP_SOCK,server=on,wait=off"
       -trace "events=$RUN/events,file=$OUT/trace.log" -no-reboot)
say "kernel=$KVER; booting (TCG, about 15 s to CAP-READY)"
cap_start "$QEMU" "${QARGS[@]}"
cap_wait_ready
sleep "$SETTLE"
cap_pause

# 32-bit registers one /1wx each (the model answers 64-bit reads of them with 0), 64-bit ones /1gx
cap_regs $BASE 0x0:w 0x4:w 0x8:w 0xc:w 0x10:w 0x14:w 0x20:w 0x24:w 0x28:w 0x2c:w 0x44:w 0x60:w 0x64:w \
  0x80:g 0x88:w 0x90:g 0x98:w 0x9c:w 0xa0:g 0x100a8:w 0x100ac:w
CR0=$(reg $BASE 0x20); STRTAB=$(reg $BASE 0x80); STRTAB_CFG=$(reg $BASE 0x88)
(( CR0 & 1 )) || die "CR0=$CR0: the guest did not enable the SMMU (SMMUEN)"
cap_dump
QEMU_VER=$("$QEMU" --version | head -1)
cap_quit

python3 "$HERE/smmuv3_oracle.py" "$OUT/trace.log" --upto "$TRACE_BYTES" > "$OUT/oracle.tsv" 2> "$RUN/oracle.err" \
  || { cat "$RUN/oracle.err" >&2; die "smmuv3_oracle.py failed"; }
sed 's/^/  /' "$RUN/oracle.err"
NORACLE=$(( $(wc -l < "$OUT/oracle.tsv") - 1 ))
NSIDS=$(tail -n +2 "$OUT/oracle.tsv" | cut -f1 | sort -u | wc -l)
[ "$NORACLE" -gt 0 ] || die "oracle.tsv is empty (no translation survived; see trace.log)"
set +e
python3 "$HERE/smmuv3_check.py" "$OUT" > "$OUT/check.txt" 2>&1; CHECK_RC=$?
set -e
sed 's/^/  /' "$OUT/check.txt"

{
  echo "iommu: smmuv3 (QEMU virt,iommu=smmuv3, default stage=1)"
  echo "kernel: $KVER ($(grep -a -m1 -o 'Linux version [^ ]* [^ ]*' "$OUT/console.log" || echo '?'))"
  echo "kernel_image: $KERNEL"
  echo "initrd: $INITRD"
  echo "guest_cmdline: $APPEND"
  echo "qemu: $QEMU_VER"
  echo "qemu_cmdline: $QEMU $(printf '%q ' "${QARGS[@]}")"
  echo "mmio_base: $BASE"
  echo "regs_order: IDR0 0x0, IDR1 0x4, IDR2 0x8, IDR3 0xc, IDR4 0x10, IDR5 0x14, CR0 0x20, CR0ACK 0x24, CR1 0x28, CR2 0x2c, GBPA 0x44, GERROR 0x60, GERRORN 0x64 (/1wx), STRTAB_BASE 0x80 (/1gx), STRTAB_BASE_CFG 0x88 (/1wx), CMDQ_BASE 0x90 (/1gx), CMDQ_PROD 0x98, CMDQ_CONS 0x9c (/1wx), EVTQ_BASE 0xa0 (/1gx), EVTQ_PROD 0x100a8, EVTQ_CONS 0x100ac (/1wx)"
  echo "cr0: $CR0  strtab_base: $STRTAB  strtab_base_cfg: $STRTAB_CFG"
  echo "devices: e1000e 00:02.0 sid 0x0010, nvme 00:03.0 sid 0x0018"
  echo "oracle_domain: ASID of the stage-1 entry (from the CD; every oracle entry is stage 1)"
  echo "oracle_source: smmu_iotlb_insert + smmuv3_translate_success and invalidation trace events up to the pause"
  echo "oracle_entries: $NORACLE"
  echo "oracle_per_sid: $(oracle_per_sid)"
  echo "oracle_trace_bytes: $TRACE_BYTES (trace.log events up to the pause)"
  echo "walk_check: $(tail -1 "$OUT/check.txt") (smmuv3_check.py exit $CHECK_RC)"
  echo "paused_at: ${STOP_UPTIME}s after QEMU start; dump took ${DUMP_S}s"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} | cap_scrub > "$OUT/meta.txt"

[ "$NSIDS" -ge 2 ] || die "oracle covers only $NSIDS device(s); expected e1000e and nvme"
[ $CHECK_RC = 0 ] || die "walk check failed: $(tail -1 "$OUT/check.txt")"
grep -q ', 0 do not$' "$OUT/check.txt" || echo "$PROG: WARNING: some oracle entries disagree with the table walk (see $OUT/check.txt)" >&2
say "done in $(( $(date +%s) - T0 )) s: $OUT ($NORACLE oracle entries)"
