#!/bin/bash
# audit.sh vtd|amdvi OUTDIR
#
# `handover audit` inside a real Linux kdump kernel, end to end, under QEMU (TCG): boot a Debian kernel
# with an emulated IOMMU (vtd: q35 + intel-iommu; amdvi: q35 + amd-iommu,intremap=off,pt=off), crashkernel=
# reserved and a kdump kernel + initrd loaded with `kexec -p`; let e1000e and nvme do DMA; panic; in the
# kdump kernel run the static `handover audit --dump /proc/vmcore --regs-devmem --acpi DMAR|IVRS` on what
# the crashed kernel left. See README.md beside this file. Writes to OUTDIR:
#   audit-N.json, audit-N.txt  the audit (JSON and human) for crash-kernel region N, as printed in the
#                              kdump kernel; audit-N.cmd its command line and exit status
#   regs-devmem-N.txt          the registers the kdump kernel read from /dev/mem (monitor `xp` format)
#   regs-monitor.txt           the same unit's registers read by the host through the QEMU monitor while the
#                              crashed kernel was paused just before its panic (cross-check)
#   console.log                the serial console of both kernels;  summary.txt  what ran, checks, timings
# Needs: root, what scripts/capture/setup.sh installs (run if the kernel is missing), kexec-tools (installed
# with apt-get when missing), cargo with the x86_64-unknown-linux-gnu target. Env (defaults in brackets):
#   CAPTURE_WORK [$HOME/.cache/handover-capture/work]  KVER [6.12.95+deb12-amd64]  QEMU [qemu-system-x86_64]
#   MEM [3G]: RAM above 4 GiB is needed (see README.md: x86 /dev/mem reads stop at the kdump kernel's top of RAM)
#   CRASHKERNEL [256M,high]  GUEST_ARGS [] extra words for the crashing kernel (e.g. iommu.passthrough=1)
#   KDUMP_ARGS [vtd: intel_iommu=off intremap=off; amdvi: amd_iommu=off] the kdump kernel's IOMMU words
#   HANDOVER_STATIC [build it]: a static x86_64 `handover` to use instead of building one
#   BOOT_TIMEOUT [300] s to HO-LOADED; KDUMP_TIMEOUT [300] s from there to HO-KDUMP-DONE; QEMU_TIMEOUT [900]
#   PANIC_DELAY [3] s of DMA between HO-LOADED and the panic (guest time; the host pauses inside it)
set -euo pipefail
KDIR=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
REPO=$(cd "$KDIR/../.." && pwd)
HERE=$REPO/scripts/capture           # lib.sh and qmp.py
PROG=audit.sh
KIND=${1:-}; OUT=${2:-}
case "$KIND" in vtd|amdvi) ;; *) echo "usage: $0 vtd|amdvi OUTDIR" >&2; exit 2;; esac
[ -n "$OUT" ] && [ $# = 2 ] || { echo "usage: $0 vtd|amdvi OUTDIR" >&2; exit 2; }
source "$HERE/lib.sh"
KDUMP_TIMEOUT=${KDUMP_TIMEOUT:-300}

W=${CAPTURE_WORK:-$HOME/.cache/handover-capture/work}
KVER=${KVER:-6.12.95+deb12-amd64}
KROOT=$W/kernels/$KVER
KERNEL=$KROOT/boot/vmlinuz-$KVER
NVME_IMG=$W/nvme.img
QEMU=${QEMU:-qemu-system-x86_64}
MEM=${MEM:-3G}
CRASHKERNEL=${CRASHKERNEL:-256M,high}
GUEST_ARGS=${GUEST_ARGS:-}
PANIC_DELAY=${PANIC_DELAY:-3}
case "$KIND" in
  vtd)   BASE=0xfed90000; TABLE=DMAR
         IOMMU_DEV=(-machine q35,kernel-irqchip=split -device intel-iommu,intremap=on); IOPT="intel_iommu=on"
         KDUMP_ARGS=${KDUMP_ARGS:-intel_iommu=off intremap=off reserve=$BASE,0x1000 iomem=relaxed}
         REGS=(0x0:w 0x8:g 0x10:g 0x18:w 0x1c:w 0x20:g 0x28:g 0x34:w 0x38:w 0x80:g 0x88:g 0x90:g 0x9c:w 0xb0:g 0xb8:g);;
  amdvi) BASE=0xfed80000; TABLE=IVRS
         IOMMU_DEV=(-machine q35 -device amd-iommu,intremap=off,pt=off); IOPT=""
         KDUMP_ARGS=${KDUMP_ARGS:-amd_iommu=off}
         REGS=(0x0:g 0x8:g 0x10:g 0x18:g 0x20:g 0x28:g 0x30:g 0x2000:g 0x2008:g 0x2010:g 0x2018:g 0x2020:g);;
esac

[ "$(id -u)" = 0 ] || die "must run as root (kexec-tools install, setup.sh)"
[ -f "$KERNEL" ] && [ -f "$NVME_IMG" ] || "$REPO/scripts/capture/setup.sh" "$KVER" || die "scripts/capture/setup.sh failed"
command -v "$QEMU" >/dev/null || die "$QEMU not found (run scripts/capture/setup.sh)"
for t in busybox cpio modprobe python3 ldd; do command -v $t >/dev/null || die "$t not found (run scripts/capture/setup.sh)"; done
KEXEC=$(command -v kexec || true)
if [ -z "$KEXEC" ]; then
  say "installing kexec-tools (apt-get)"
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y --no-install-recommends kexec-tools >/dev/null \
    || { timeout 300 apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y --no-install-recommends kexec-tools >/dev/null; } \
    || die "cannot install kexec-tools"
  KEXEC=$(command -v kexec) || die "no kexec after installing kexec-tools"
fi

mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
T0=$(date +%s)
cap_setup
rm -f "$OUT"/{audit-*,regs-devmem-*,regs-monitor.txt,summary.txt}

# 1. the static handover
if [ -n "${HANDOVER_STATIC:-}" ]; then
  HSTATIC=$HANDOVER_STATIC
else
  say "building a static handover (cargo build --release, +crt-static)"
  (cd "$REPO" && RUSTFLAGS="-C target-feature=+crt-static" timeout 1800 cargo build -q --release -p handover \
     --target x86_64-unknown-linux-gnu) || die "static build of handover failed"
  HSTATIC=${CARGO_TARGET_DIR:-$REPO/target}/x86_64-unknown-linux-gnu/release/handover
fi
[ -x "$HSTATIC" ] || die "no executable $HSTATIC"
python3 - "$HSTATIC" <<'PY' || die "$HSTATIC is not a static x86_64 ELF (it has a PT_INTERP)"
import struct, sys
f = open(sys.argv[1], 'rb'); h = f.read(64)
assert h[:4] == b'\x7fELF' and struct.unpack_from('<H', h, 0x12)[0] == 62
phoff, = struct.unpack_from('<Q', h, 0x20); n, = struct.unpack_from('<H', h, 0x38)
f.seek(phoff); ph = f.read(56 * n)
sys.exit(1 if any(struct.unpack_from('<I', ph, 56 * i)[0] == 3 for i in range(n)) else 0)
PY

# 2. initrds: the kdump one (busybox, /init, handover), then the crashing one (busybox, /init, modules,
#    kexec and its libraries, the kdump kernel, its initrd and command line)
ST=$RUN/kdump-root
mkdir -p "$ST"/{bin,sbin,proc,sys,dev,tmp}
cp "$(command -v busybox)" "$ST/bin/busybox"; install -m 755 "$KDIR/init.sh" "$ST/init"; install -m 755 "$HSTATIC" "$ST/bin/handover"
(cd "$ST" && find . | cpio -o -H newc --quiet) > "$RUN/initrd-kdump.cpio"
ST=$RUN/crash-root
mkdir -p "$ST"/{bin,sbin,proc,sys,dev,tmp,boot,lib/modules}
cp "$(command -v busybox)" "$ST/bin/busybox"; install -m 755 "$KDIR/init.sh" "$ST/init"
: > "$ST/lib/modules/load.order"
for m in nvme e1000e; do
  modprobe -d "$KROOT" -S "$KVER" --show-depends "$m" | awk '$1=="insmod"{print $2}'
done | awk '!seen[$0]++' | while read -r ko; do
  b=$(basename "$ko"); b=${b%.xz}; b=${b%.zst}
  case "$ko" in *.xz) xz -dc "$ko" > "$ST/lib/modules/$b";; *.zst) zstd -dcq "$ko" > "$ST/lib/modules/$b";; *) cp "$ko" "$ST/lib/modules/$b";; esac
  echo "$b" >> "$ST/lib/modules/load.order"
done
cp "$KEXEC" "$ST/sbin/kexec"
for lib in $(ldd "$KEXEC" | awk '/=>/{print $3} /ld-linux/{print $1}'); do mkdir -p "$ST/$(dirname "$lib")"; cp -L "$lib" "$ST/$lib"; done
cp "$KERNEL" "$ST/boot/vmlinuz"; cp "$RUN/initrd-kdump.cpio" "$ST/boot/initrd-kdump.cpio"
KAPPEND="console=ttyS0 nr_cpus=1 irqpoll reset_devices printk.devkmsg=on printk.time=0 panic=-1 ho.kind=$KIND $KDUMP_ARGS"
echo "$KAPPEND" > "$ST/boot/kdump.cmdline"; echo "$PANIC_DELAY" > "$ST/boot/ho.delay"
(cd "$ST" && find . | cpio -o -H newc --quiet) > "$RUN/initrd-crash.cpio"
say "initrds: crash $(du -h "$RUN/initrd-crash.cpio" | cut -f1), kdump $(du -h "$RUN/initrd-kdump.cpio" | cut -f1) (handover $(du -h "$HSTATIC" | cut -f1))"

# 3. boot, wait for the kdump kernel to be loaded, read the registers through the monitor, let it panic
APPEND="console=ttyS0${IOPT:+ $IOPT} iommu.strict=1 iommu.passthrough=0 crashkernel=$CRASHKERNEL panic=-1 ho.mode=crash${GUEST_ARGS:+ $GUEST_ARGS}"
QARGS=("${IOMMU_DEV[@]}" -accel tcg -m "$MEM" -smp 2 -nodefaults -vga none -display none
       -netdev user,id=n0,restrict=on -device e1000e,netdev=n0,addr=02.0
       -drive "file=$NVME_IMG,if=none,id=d0,format=raw,snapshot=on" -device nvme,drive=d0,serial=kd0,addr=03.0
       -kernel "$KERNEL" -initrd "$RUN/initrd-crash.cpio" -append "$APPEND"
       -serial "file:$OUT/console.log" -qmp "unix:$QMP_SOCK,server=on,wait=off" -no-reboot)
say "$KIND: booting $KVER (TCG, -m $MEM, crashkernel=$CRASHKERNEL)"
TB=$(date +%s)
cap_start "$QEMU" "${QARGS[@]}"

# wait_for REGEX TIMEOUT: bounded wait on the console; stops on HO-FAIL, an unexpected panic, a dead QEMU
wait_for() {
  local deadline=$(( $(date +%s) + $2 ))
  while ! grep -a -q -E "$1" "$OUT/console.log" 2>/dev/null; do
    if grep -a -q '^HO-FAIL' "$OUT/console.log" 2>/dev/null; then grep -a '^HO-FAIL' "$OUT/console.log" >&2; die "guest failed (see $OUT/console.log)"; fi
    if grep -a 'Kernel panic - not syncing' "$OUT/console.log" 2>/dev/null | grep -q -v 'sysrq triggered'; then
      grep -a 'Kernel panic - not syncing' "$OUT/console.log" | grep -v sysrq | head -2 >&2; die "unexpected kernel panic (see $OUT/console.log)"
    fi
    kill -0 "$QPID" 2>/dev/null || { tail -5 "$OUT/qemu.stderr" >&2 || true; die "QEMU exited while waiting for /$1/ (see $OUT/console.log)"; }
    [ "$(date +%s)" -lt "$deadline" ] || die "timeout: no /$1/ after $2 s (see $OUT/console.log)"
    sleep 0.3
  done
}
wait_for '^HO-LOADED' "$BOOT_TIMEOUT"
T_LOADED=$(( $(date +%s) - TB ))
qmp --timeout 30 stop || die "QMP stop failed"
[ "$(qmp --timeout 30 status)" = paused ] || die "VM not paused after stop"
cap_regs "$BASE" "${REGS[@]}"
mv "$OUT/regs.txt" "$OUT/regs-monitor.txt"
cap_cont
say "kdump kernel loaded after $T_LOADED s; registers read through the monitor; panic in $PANIC_DELAY s"
grep -a -E '^HO-GROUP|^HO: crash kernel' "$OUT/console.log" | tr -d '\r' | sed 's/^/  /'
wait_for '^HO-KDUMP-DONE' "$KDUMP_TIMEOUT"
T_DONE=$(( $(date +%s) - TB ))
for _ in $(seq 40); do kill -0 "$QPID" 2>/dev/null || break; sleep 0.5; done   # the kdump init powers off
kill -0 "$QPID" 2>/dev/null && cap_quit
QPID=""
[ -s "$OUT/qemu.stderr" ] || rm -f "$OUT/qemu.stderr"

# 4. the files the kdump kernel printed
tr -d '\r' < "$OUT/console.log" | grep -a '^HO-F[+ ]' | python3 -c '
import sys, os
out = sys.argv[1]; files = {}
for line in sys.stdin:
    more = line.startswith("HO-F+ ")
    name, _, text = line[6 if more else 5:].rstrip("\n").partition(": ")
    if "/" in name or not name: continue
    if more and files.get(name):
        files[name][-1] += text
    else:
        files.setdefault(name, []).append(text)
for name, lines in files.items():
    open(os.path.join(out, name), "w").write("\n".join(lines) + "\n")
' "$OUT"
DONE_LINE=$(tr -d '\r' < "$OUT/console.log" | grep -a -m1 '^HO-KDUMP-DONE')
if ! [ -s "$OUT/audit-0.json" ] || ! grep -q -E 'rc=[01]$' <<< "$DONE_LINE"; then
  cat "$OUT"/regs-devmem-*.txt >&2 2>/dev/null || true
  die "handover audit failed in the kdump kernel ($DONE_LINE; its stderr is above, in $OUT/regs-devmem-N.txt)"
fi

# 5. cross-check: the registers the kdump kernel read from /dev/mem = those the monitor read before the panic
CHECK=$(python3 - "$OUT" <<'PY'
import glob, os, re, sys
def regs(p):
    out = {}
    for l in open(p):
        m = re.match(r'^([0-9a-f]{16}): 0x([0-9a-f]+)$', l.strip())
        if m: out[int(m.group(1), 16)] = (int(m.group(2), 16), len(m.group(2)) // 2)
    return out
mon = regs(os.path.join(sys.argv[1], 'regs-monitor.txt'))
for p in sorted(glob.glob(os.path.join(sys.argv[1], 'regs-devmem-*.txt'))):
    dev = regs(p); same = [a for a in dev if a in mon and mon[a] == dev[a]]
    diff = ['%#x: devmem %#x, monitor %s' % (a, dev[a][0], hex(mon[a][0]) if a in mon else 'not read') for a in dev if a not in same]
    print('%s: %d registers read, %d equal to the monitor before the panic%s' % (os.path.basename(p), len(dev), len(same), ('; differ: ' + '; '.join(diff)) if diff else ''))
PY
)
VERDICTS=$(python3 - "$OUT" <<'PY'
import glob, json, os, sys
for p in sorted(glob.glob(os.path.join(sys.argv[1], 'audit-*.json'))):
    v = json.load(open(p)); ck = v['crashkernel']
    devs = ' '.join('%#06x:%s' % (d['sid'], ','.join(d['flags']) or '-') for u in v['units'] for d in u['devices'])
    print('%s: crashkernel %#x-%#x verdict %s; sid:flags %s' % (os.path.basename(p), ck['start'], ck['end'], v['verdict'], devs))
PY
) || die "cannot read the audit JSON"
T_ALL=$(( $(date +%s) - T0 ))
{
  echo "kind: $KIND (MMIO base $BASE, ACPI $TABLE)"
  echo "kernel: $KVER (crashing kernel and kdump kernel)"
  echo "qemu: $("$QEMU" --version | head -1)"
  echo "qemu_args: ${QARGS[*]}"
  echo "crash_cmdline: $APPEND"
  echo "kdump_cmdline: $(tr -d '\r' < "$OUT/console.log" | grep -a '^HO: cmdline' | tail -1 | sed 's/^HO: cmdline //')"
  tr -d '\r' < "$OUT/console.log" | grep -a -E '^HO: (crash kernel|vmcore|audit|registers)' | sed 's/^HO: /guest: /'
  echo "$VERDICTS"
  echo "registers: $CHECK"
  echo "result: $DONE_LINE"
  echo "times: kexec -p loaded at ${T_LOADED}s, kdump audit done at ${T_DONE}s after QEMU start; whole script ${T_ALL}s"
} | cap_scrub > "$OUT/summary.txt"

echo "======== $KIND: audit inside the kdump kernel ========"
for j in "$OUT"/audit-*.json; do
  n=${j%.json}; n=${n##*-}
  echo "---- \$ $(cat "$OUT/audit-$n.cmd")"
  cat "$OUT/audit-$n.txt"
  echo "---- JSON"
  cat "$j"
done
echo "---- summary"
cat "$OUT/summary.txt"
grep -q 'differ:' <<< "$CHECK" && die "the registers read in the kdump kernel differ from the crashed kernel's"
say "done in $T_ALL s: $OUT"
