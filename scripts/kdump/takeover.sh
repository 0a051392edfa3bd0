#!/bin/bash
# takeover.sh vtd|amdvi|smmuv3 POLICY OUTDIR
#
# `handover takeover` inside a real Linux kdump kernel under QEMU (TCG), DMA in flight: boot a Debian kernel
# (amd64 on q35 for vtd/amdvi, arm64 on virt for smmuv3) with the emulated IOMMU on, e1000e (00:02.0) receiving and nvme 00:03.0 reading; a second nvme (00:04.0)
# is the dump disk. Panic (sysrq-c); the kdump kernel (IOMMU driver off, frame window reserved with
# memmap=) stops at HO-REF, where the host pauses the VM and saves memory as the reference; then it runs
# `handover takeover --policy POLICY --needed 0000:00:04.0`, the host sends UDP packets to the NIC (whose
# receive ring the crashed kernel left posted), and the kdump kernel loads nvme (bound to 00:04.0 only) and
# writes /proc/vmcore to it. QEMU's trace events record every translation and fault of the unit.
# Writes to OUTDIR:
#   result.json      the issue's result (takeover_result.py): takeover ok/error, DMA after the takeover
#                    (translated / faulted / untranslated), faults, the dump against the reference, old
#                    memory pages changed
#   takeover.json    what `handover takeover --json` printed in the kdump kernel (takeover.err its stderr)
#   trace-counts.txt trace events per phase (before the reference, reference → takeover, after) and device
#   console.txt      the console lines that matter (versions, markers, takeover, dmesg excerpt)
#   console.log      both kernels' serial console;  summary.txt  what ran
# The 3 GiB reference and the vmcore stay in the scratch directory and are deleted.
# Needs what audit.sh needs (root, setup.sh's QEMU and kernel, kexec-tools, cargo); smmuv3 also dtc and Debian's
# arm64 kexec-tools and qemu-user-static, downloaded on first use (README.md). Env as audit.sh, and:
#   WINDOW [vtd/amdvi: 0x76000000, inside the low crash-kernel region, reserved with memmap=; smmuv3:
#          0x70000000, above the crash region, a no-map reserved-memory node]: the 8 MiB frame window's start
#   TAKEOVER_ARGS: more `handover takeover` options, comma-separated
#   UDP_PACKETS [60] packets sent to the NIC after the takeover; KDUMP_TIMEOUT [900]
#   KEEP_VMCORE [] a file to keep the written /proc/vmcore in (an ELF core with the crashed kernel's VMCOREINFO);
#          the unit's registers at the reference pause (before the kdump kernel touched it) go to OUTDIR/regs.txt
#          either way, so `handover inspect KEEP_VMCORE --regs OUTDIR/regs.txt` decodes what the crash left
#   MAKEDUMPFILE [] makedumpfile options, e.g. "-c -d 31": the kdump initrd also gets Debian's makedumpfile and
#          its libraries (vtd/amdvi: the host's; smmuv3: Debian MDF_SUITE [sid]'s arm64 build, downloaded once,
#          with its own arm64 libraries and loader; it refuses this kernel's vmcore, see below), the dump disk
#          00:04.0 a second namespace (nsid 2, MDF_DISK_SIZE [128M], its own raw image), and after the ELF dump
#          the kdump kernel streams `makedumpfile -F OPTS /proc/vmcore` (flattened format) onto it (init.sh
#          mdf_stream, MDF_TIMEOUT [600] s); its exit status, length and md5 come back in HO-MDF-DONE, the
#          stream is kept as OUTDIR/makedumpfile.flat (checked against that md5; makedumpfile_kdump_check.sh
#          compares it with the ELF core) and its messages as OUTDIR/makedumpfile.err.
#          A namespace, not a third PCI function: any function is behind the unit, and the takeover under test
#          prepares only the needed one.
set -euo pipefail
KDIR=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
REPO=$(cd "$KDIR/../.." && pwd)
HERE=$REPO/scripts/capture
PROG=takeover.sh
KIND=${1:-}; POLICY=${2:-}; OUT=${3:-}
usage() { echo "usage: $0 vtd|amdvi|smmuv3 reset-abort|reset-bypass|adopt|adopt-scratch OUTDIR" >&2; exit 2; }
case "$KIND" in vtd|amdvi|smmuv3) ;; *) usage;; esac
case "$POLICY" in reset-abort|reset-bypass|adopt|adopt-scratch) ;; *) usage;; esac
[ -n "$OUT" ] && [ $# = 3 ] || usage
source "$HERE/lib.sh"
KDUMP_TIMEOUT=${KDUMP_TIMEOUT:-900}
QEMU_TIMEOUT=${QEMU_TIMEOUT:-1800}

W=${CAPTURE_WORK:-$HOME/.cache/handover-capture/work}
if [ "$KIND" = smmuv3 ]; then ARCH=arm64; else ARCH=amd64; fi
if [ $ARCH = arm64 ]; then
  KVER=${KVER:-6.12.95+deb12-arm64}; QEMU=${QEMU:-qemu-system-aarch64}; MEM=${MEM:-2G}
  # a fixed crash region: the frame window is reserved in the kdump kernel's device tree, at a known address
  CRASHKERNEL=${CRASHKERNEL:-256M@0x60000000}; WINDOW=${WINDOW:-0x70000000}; CONSOLE=ttyAMA0
else
  KVER=${KVER:-6.12.95+deb12-amd64}; QEMU=${QEMU:-qemu-system-x86_64}; MEM=${MEM:-3G}
  CRASHKERNEL=${CRASHKERNEL:-256M,high}; WINDOW=${WINDOW:-0x76000000}; CONSOLE=ttyS0
fi
KROOT=$W/kernels/$KVER
KERNEL=$KROOT/boot/vmlinuz-$KVER
NVME_IMG=$W/nvme.img
PANIC_DELAY=${PANIC_DELAY:-3}
UDP_PACKETS=${UDP_PACKETS:-60}
UDP_PORT=$(( 20000 + $$ % 20000 ))
NEEDED=0000:00:04.0
case "$KIND" in
  vtd)   BASE=0xfed90000
         REGS=(0x0:w 0x8:g 0x10:g 0x18:w 0x1c:w 0x20:g 0x28:g 0x34:w 0x38:w 0x80:g 0x88:g 0x90:g 0x9c:w 0xb0:g 0xb8:g)
         IOMMU_DEV=(-machine q35,kernel-irqchip=split -device intel-iommu,intremap=on); IOPT="intel_iommu=on"
         KDUMP_ARGS=${KDUMP_ARGS:-intel_iommu=off intremap=off reserve=$BASE,0x1000 iomem=relaxed}
         EVENTS="vtd_dmar_translate vtd_dmar_fault vtd_fault_disabled vtd_dmar_enable vtd_switch_address_space vtd_reg_dmar_root vtd_inv_qi_enable";;
  amdvi) BASE=0xfed80000
         REGS=(0x0:g 0x8:g 0x10:g 0x18:g 0x20:g 0x28:g 0x30:g 0x2000:g 0x2008:g 0x2010:g 0x2018:g 0x2020:g)
         IOMMU_DEV=(-machine q35 -device amd-iommu,intremap=off,pt=off); IOPT=""
         KDUMP_ARGS=${KDUMP_ARGS:-amd_iommu=off iomem=relaxed}
         EVENTS="amdvi_translation_result amdvi_page_fault amdvi_dte_get_fail amdvi_iotlb_hit amdvi_mmio_write amdvi_control_status";;
  # arm64 virt: the SMMUv3 driver is built in; initcall_blacklist keeps it from probing, so the unit stays
  # enabled with the crashed kernel's tables. An MSI is a DMA write to the GICv2m doorbell, which the needed
  # device's one-to-one domain (RAM only) does not map: the kdump kernel uses INTx (pci=nomsi). The PCI host
  # bridge names the SMMU in iommu-map; fw_devlink=permissive lets it probe without the SMMU's driver.
  smmuv3) BASE=0x09050000
         REGS=(0x0:w 0x4:w 0x8:w 0xc:w 0x10:w 0x14:w 0x20:w 0x24:w 0x28:w 0x2c:w 0x44:w 0x60:w 0x64:w
               0x80:g 0x88:w 0x90:g 0x98:w 0x9c:w 0xa0:g 0x100a8:w 0x100ac:w)
         IOMMU_DEV=(-machine virt,iommu=smmuv3 -cpu cortex-a57); IOPT=""
         KDUMP_ARGS=${KDUMP_ARGS:-initcall_blacklist=arm_smmu_driver_init pci=nomsi fw_devlink=permissive iomem=relaxed}
         EVENTS="smmuv3_translate_success smmuv3_translate_abort smmuv3_translate_bypass smmuv3_translate_disable smmuv3_record_event smmuv3_cmdq_consume_error smmuv3_write_mmio";;
esac

[ "$(id -u)" = 0 ] || die "must run as root"
MDF_OPTS=${MAKEDUMPFILE:-}; MDF_TIMEOUT=${MDF_TIMEOUT:-600}; MDF_DISK_SIZE=${MDF_DISK_SIZE:-128M}
if [ -n "$MDF_OPTS" ]; then
  case " $MDF_OPTS " in *" -F "*|*" -R "*) die "MAKEDUMPFILE: give the options without -F/-R (the stream is always flattened)";; esac
  [[ "$MDF_TIMEOUT" =~ ^[0-9]+$ ]] || die "MDF_TIMEOUT=$MDF_TIMEOUT: seconds expected"
fi
[ -f "$KERNEL" ] && [ -f "$NVME_IMG" ] || "$REPO/scripts/capture/setup.sh" "$KVER" || die "scripts/capture/setup.sh failed"
command -v "$QEMU" >/dev/null || die "$QEMU not found (run scripts/capture/setup.sh)"
for t in busybox cpio modprobe python3 ldd qemu-img $([ $ARCH = arm64 ] && echo dtc); do command -v $t >/dev/null || die "$t not found (run scripts/capture/setup.sh)"; done
KEXEC=$(command -v kexec || true)
if [ $ARCH = amd64 ] && [ -z "$KEXEC" ]; then
  say "installing kexec-tools (apt-get)"
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y --no-install-recommends kexec-tools >/dev/null \
    || die "cannot install kexec-tools"
  KEXEC=$(command -v kexec) || die "no kexec after installing kexec-tools"
fi

MDF_BIN=""
# arm64: Debian's arm64 makedumpfile of MDF_SUITE [sid] with its own arm64 libc, libraries and loader from the
# same suite, downloaded once through a private apt configuration (own sources, lists and cache) into
# $W/arm64-makedumpfile. Every build tried (1.7.2 bookworm, 1.7.6 trixie, 1.7.8 sid) refuses this kernel's
# vmcore (VA_BITS=52 with 4 KiB pages: fixtures/vmcore/smmuv3/makedumpfile-refused.txt), so with smmuv3 the run
# ends with "makedumpfile in the kdump kernel failed" (exit 1) after keeping the ELF vmcore and the messages.
MDF_A64=$W/arm64-makedumpfile
if [ -n "$MDF_OPTS" ] && [ $ARCH = arm64 ]; then
  MDF_SUITE=${MDF_SUITE:-sid}; [[ "$MDF_SUITE" =~ ^[a-z-]+$ ]] || die "MDF_SUITE=$MDF_SUITE: a Debian suite name expected"
  if ! [ -x "$MDF_A64/usr/bin/makedumpfile" ] || [ "$(cat "$MDF_A64/.suite" 2>/dev/null)" != "$MDF_SUITE" ]; then
    uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null); uri=${uri:-http://deb.debian.org/debian}
    D=$W/apt/mdf-$MDF_SUITE; rm -rf "$D" "$MDF_A64" "$W/debs/arm64-makedumpfile"
    mkdir -p "$D/sources.list.d" "$D/lists/partial" "$D/cache/archives/partial" "$W/debs/arm64-makedumpfile" "$MDF_A64"
    printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nArchitectures: arm64\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$uri" "$MDF_SUITE" > "$D/sources.list.d/mdf.sources"
    printf 'Dir::Etc::SourceParts "%s/sources.list.d";\nDir::Etc::SourceList "/dev/null";\nDir::State::Lists "%s/lists";\nDir::Cache "%s/cache";\nAPT::Architectures { "amd64"; "arm64"; };\n' \
      "$D" "$D" "$D" > "$D/apt.conf"
    say "downloading makedumpfile:arm64 and its libraries from Debian $MDF_SUITE into $MDF_A64"
    APT_CONFIG=$D/apt.conf timeout 600 apt-get -o APT::Sandbox::User=root update >/dev/null || die "apt-get update ($MDF_SUITE arm64 lists) failed"
    (cd "$W/debs/arm64-makedumpfile" && APT_CONFIG=$D/apt.conf timeout 600 apt-get -o APT::Sandbox::User=root download \
       makedumpfile:arm64 libc6:arm64 libgcc-s1:arm64 libdw1t64:arm64 libelf1t64:arm64 liblzo2-2:arm64 libzstd1:arm64 \
       zlib1g:arm64 libbz2-1.0:arm64 liblzma5:arm64 >/dev/null) || die "cannot download makedumpfile:arm64 from $MDF_SUITE"
    for d in "$W/debs/arm64-makedumpfile"/*.deb; do dpkg-deb -x "$d" "$MDF_A64"; done
    [ -x "$MDF_A64/usr/bin/makedumpfile" ] || die "no usr/bin/makedumpfile in $MDF_SUITE's makedumpfile:arm64"
    echo "$MDF_SUITE" > "$MDF_A64/.suite"
  fi
  MDF_BIN=$MDF_A64/usr/bin/makedumpfile
elif [ -n "$MDF_OPTS" ]; then
  MDF_BIN=$(command -v makedumpfile || true)
  if [ -z "$MDF_BIN" ]; then
    say "installing makedumpfile (apt-get)"
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y --no-install-recommends makedumpfile >/dev/null \
      || die "cannot install makedumpfile"
    MDF_BIN=$(command -v makedumpfile) || die "no makedumpfile after installing it"
  fi
fi

# arm64: kexec (dynamic, with its libraries) and qemu-x86_64-static (runs the static x86-64 `handover` in the
# arm64 guest) from Debian's arm64 packages, downloaded through setup.sh's arm64 apt configuration
A64=$W/arm64-sysroot
if [ $ARCH = arm64 ] && { ! [ -x "$A64/sbin/kexec" ] || ! [ -x "$A64/usr/bin/qemu-x86_64-static" ]; }; then
  [ -f "$W/apt/apt-arm64.conf" ] || "$REPO/scripts/capture/setup.sh" "$KVER" || die "scripts/capture/setup.sh failed"
  say "downloading kexec-tools and qemu-user-static (arm64) into $A64"
  mkdir -p "$W/debs/arm64-sysroot" "$A64"
  (cd "$W/debs/arm64-sysroot" && APT_CONFIG=$W/apt/apt-arm64.conf timeout 600 apt-get -o APT::Sandbox::User=root download \
     kexec-tools:arm64 libc6:arm64 zlib1g:arm64 libxenmisc4.17:arm64 libxencall1:arm64 libxendevicemodel1:arm64 \
     libxenevtchn1:arm64 libxenforeignmemory1:arm64 libxengnttab1:arm64 libxentoollog1:arm64 libxentoolcore1:arm64 \
     qemu-user-static:arm64 >/dev/null) || die "cannot download the arm64 packages"
  for d in "$W/debs/arm64-sysroot"/*.deb; do dpkg-deb -x "$d" "$A64"; done
fi

mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
T0=$(date +%s)
cap_setup
rm -f "$OUT"/{result.json,takeover.json,takeover.err,trace-counts.txt,console.txt,summary.txt,trace.log,makedumpfile.flat,makedumpfile.err}
for e in $EVENTS e1000e_rx_desc_buff_write; do echo "$e"; done > "$RUN/events"

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

# 2. initrds. Both hold busybox, /init and the nvme modules; the kdump one `handover`, the crashing one
#    e1000e, kexec and its libraries, the kdump kernel, its initrd and command line.
modules() {  # modules ROOT NAME...: the modules and their dependencies, decompressed, with load.order
  local st=$1; shift; mkdir -p "$st/lib/modules"; : > "$st/lib/modules/load.order"
  for m in "$@"; do modprobe -d "$KROOT" -S "$KVER" --show-depends "$m" | awk '$1=="insmod"{print $2}'; done \
    | awk '!seen[$0]++' | while read -r ko; do
    b=$(basename "$ko"); b=${b%.xz}; b=${b%.zst}
    case "$ko" in *.xz) xz -dc "$ko" > "$st/lib/modules/$b";; *.zst) zstd -dcq "$ko" > "$st/lib/modules/$b";; *) cp "$ko" "$st/lib/modules/$b";; esac
    echo "$b" >> "$st/lib/modules/load.order"
  done
}
# needs_of ELF...: the shared libraries (and interpreter) an arm64 ELF needs, as paths under $A64 (or
# $NEEDS_ROOT), recursively
needs_of() {
  local todo=("$@") seen=" " f n p R=${NEEDS_ROOT:-$A64}
  while [ ${#todo[@]} -gt 0 ]; do
    f=${todo[0]}; todo=("${todo[@]:1}")
    for n in $(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
      case "$seen" in *" $n "*) continue;; esac; seen="$seen$n "
      p=$(find "$R/lib/" "$R/usr/lib/" -name "$n" 2>/dev/null | head -1)
      [ -n "$p" ] || die "arm64 library $n (needed by $(basename "$f")) not in $R"
      echo "$p"; todo+=("$p")
    done
  done
}
if [ $ARCH = arm64 ]; then BUSYBOX=$W/arm64root/bin/busybox; else BUSYBOX=$(command -v busybox); fi
[ -x "$BUSYBOX" ] || die "no busybox for $ARCH ($BUSYBOX; run scripts/capture/setup.sh)"
ST=$RUN/kdump-root
mkdir -p "$ST"/{bin,sbin,proc,sys,dev,tmp}
cp "$BUSYBOX" "$ST/bin/busybox"; install -m 755 "$KDIR/init.sh" "$ST/init"
if [ $ARCH = arm64 ]; then
  # the x86-64 static binary under user-mode emulation: /bin/handover runs it transparently
  install -m 755 "$HSTATIC" "$ST/bin/handover.x86_64"; install -m 755 "$A64/usr/bin/qemu-x86_64-static" "$ST/bin/qemu-x86_64"
  printf '#!/bin/sh\nexec /bin/qemu-x86_64 /bin/handover.x86_64 "$@"\n' > "$ST/bin/handover"; chmod 755 "$ST/bin/handover"
else
  install -m 755 "$HSTATIC" "$ST/bin/handover"
fi
modules "$ST" nvme
if [ -n "$MDF_OPTS" ] && [ $ARCH = arm64 ]; then
  # sid's arm64 makedumpfile with the libraries and loader of the same download (the kdump initrd holds no
  # other arm64 library): /lib/ld-linux-aarch64.so.1 (its interpreter), the rest in /lib/aarch64-linux-gnu
  install -m 755 "$MDF_BIN" "$ST/bin/makedumpfile"; mkdir -p "$ST/lib/aarch64-linux-gnu"
  for lib in $(NEEDS_ROOT=$MDF_A64 needs_of "$MDF_BIN"); do cp -L "$lib" "$ST/lib/aarch64-linux-gnu/"; done
  mv "$ST/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1" "$ST/lib/ld-linux-aarch64.so.1"
  mkdir -p "$ST/etc"; echo "$MDF_TIMEOUT $MDF_OPTS" > "$ST/etc/ho.makedumpfile"
elif [ -n "$MDF_OPTS" ]; then
  # Debian's dynamic makedumpfile, its libraries and the dynamic loader at the paths ldd names
  install -m 755 "$MDF_BIN" "$ST/bin/makedumpfile"
  for lib in $(ldd "$MDF_BIN" | awk '/=>/{print $3} /ld-linux/{print $1}'); do mkdir -p "$ST/$(dirname "$lib")"; cp -L "$lib" "$ST/$lib"; done
  mkdir -p "$ST/etc"; echo "$MDF_TIMEOUT $MDF_OPTS" > "$ST/etc/ho.makedumpfile"
fi
(cd "$ST" && find . | cpio -o -H newc --quiet) > "$RUN/initrd-kdump.cpio"
ST=$RUN/crash-root
mkdir -p "$ST"/{bin,sbin,proc,sys,dev,tmp,boot}
cp "$BUSYBOX" "$ST/bin/busybox"; install -m 755 "$KDIR/init.sh" "$ST/init"
modules "$ST" nvme e1000e
if [ $ARCH = arm64 ]; then
  cp "$A64/sbin/kexec" "$ST/sbin/kexec"; mkdir -p "$ST/lib/aarch64-linux-gnu"
  for lib in $(needs_of "$A64/sbin/kexec"); do cp -L "$lib" "$ST/lib/aarch64-linux-gnu/"; done
  cp -L "$ST/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1" "$ST/lib/ld-linux-aarch64.so.1"
  # The machine's device tree (QEMU dumpdtb: same machine, CPU, memory and CPUs) plus a no-map
  # reserved-memory node for the frame window, just above the crash region: neither kernel uses it as RAM
  # (kexec-tools copies the tree for the kdump kernel; /proc/vmcore leaves it out, not being System RAM).
  "$QEMU" "${IOMMU_DEV[@]}" -machine "dumpdtb=$RUN/virt.dtb" -accel tcg -m "$MEM" -smp 2 -nodefaults -display none \
    >/dev/null 2>&1 || die "$QEMU -machine dumpdtb failed"
  { dtc -q -I dtb -O dts "$RUN/virt.dtb"
    printf '/ { reserved-memory { #address-cells = <2>; #size-cells = <2>; ranges;\n'
    printf '  handover-window@%x { reg = <0x%x 0x%x 0x0 0x800000>; no-map; }; }; };\n' \
      $((WINDOW)) $((WINDOW >> 32)) $((WINDOW & 0xffffffff)); } > "$RUN/machine.dts"
  dtc -q -I dts -O dtb -o "$RUN/machine.dtb" "$RUN/machine.dts" || die "dtc failed on $RUN/machine.dts"
  DTB_ARGS=(-dtb "$RUN/machine.dtb")
  WINDOW_ARG=""
else
  cp "$KEXEC" "$ST/sbin/kexec"
  for lib in $(ldd "$KEXEC" | awk '/=>/{print $3} /ld-linux/{print $1}'); do mkdir -p "$ST/$(dirname "$lib")"; cp -L "$lib" "$ST/$lib"; done
  WINDOW_ARG="memmap=8M\$$WINDOW"; DTB_ARGS=()
fi
cp "$KERNEL" "$ST/boot/vmlinuz"; cp "$RUN/initrd-kdump.cpio" "$ST/boot/initrd-kdump.cpio"
# ho.mode=takeover comes first: init.sh's `arg` takes the first ho.mode= word.
KAPPEND="ho.mode=takeover console=$CONSOLE nr_cpus=1 irqpoll reset_devices printk.devkmsg=on printk.time=0 panic=-1 ho.kind=$KIND ho.policy=$POLICY ho.needed=$NEEDED${WINDOW_ARG:+ $WINDOW_ARG}${TAKEOVER_ARGS:+ ho.takeover_args=$TAKEOVER_ARGS} $KDUMP_ARGS"
echo "$KAPPEND" > "$ST/boot/kdump.cmdline"; echo "$PANIC_DELAY" > "$ST/boot/ho.delay"
(cd "$ST" && find . | cpio -o -H newc --quiet) > "$RUN/initrd-crash.cpio"
qemu-img create -q -f raw "$RUN/dump.img" 4G
DUMP_DEV=nvme,drive=d1,serial=kd1,addr=04.0; MDF_QARGS=()
if [ -n "$MDF_OPTS" ]; then
  qemu-img create -q -f raw "$RUN/mdf.img" "$MDF_DISK_SIZE"
  DUMP_DEV=$DUMP_DEV,id=nv4
  MDF_QARGS=(-drive "file=$RUN/mdf.img,if=none,id=d2,format=raw" -device nvme-ns,drive=d2,bus=nv4,nsid=2)
fi

# 3. boot; the crashing kernel panics by itself after PANIC_DELAY s of DMA
APPEND="console=$CONSOLE${IOPT:+ $IOPT} iommu.strict=1 iommu.passthrough=0 crashkernel=$CRASHKERNEL panic=-1 ho.mode=crash"
VGA=(); [ $ARCH = amd64 ] && VGA=(-vga none)
QARGS=("${IOMMU_DEV[@]}" -accel tcg -m "$MEM" -smp 2 -nodefaults "${VGA[@]}" -display none
       -netdev "user,id=n0,restrict=on,hostfwd=udp:127.0.0.1:$UDP_PORT-10.0.2.15:9" -device e1000e,netdev=n0,addr=02.0
       -drive "file=$NVME_IMG,if=none,id=d0,format=raw,snapshot=on" -device nvme,drive=d0,serial=kd0,addr=03.0
       -drive "file=$RUN/dump.img,if=none,id=d1,format=raw" -device "$DUMP_DEV" "${MDF_QARGS[@]}"
       -kernel "$KERNEL" -initrd "$RUN/initrd-crash.cpio" -append "$APPEND" "${DTB_ARGS[@]}"
       -trace "events=$RUN/events,file=$OUT/trace.log"
       -serial "file:$OUT/console.log" -qmp "unix:$QMP_SOCK,server=on,wait=off" -no-reboot)
say "$KIND $POLICY: booting $KVER (TCG, -m $MEM, crashkernel=$CRASHKERNEL, window 8M at $WINDOW)"
TB=$(date +%s)
cap_start "$QEMU" "${QARGS[@]}"

wait_for() {  # wait_for REGEX TIMEOUT: bounded; stops on HO-FAIL, an unexpected panic, a dead QEMU
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
tsize() { stat -c %s "$OUT/trace.log"; }
wait_for '^HO-LOADED' "$BOOT_TIMEOUT"
T_LOADED=$(( $(date +%s) - TB ))
TR_PANIC=$(tsize)   # (approximate: the panic follows PANIC_DELAY s later; only used to label phases)
wait_for '^HO-REF' "$BOOT_TIMEOUT"
qmp --timeout 30 stop || die "QMP stop failed"
[ "$(qmp --timeout 30 status)" = paused ] || die "VM not paused after stop"
TR_REF=$(tsize)
cap_regs $BASE "${REGS[@]}"   # the unit as the crashed kernel left it: the kdump kernel has not touched it yet
t=$(date +%s)
qmp --timeout 600 dump "$RUN/reference.elf" || die "dump-guest-memory failed"
say "reference saved in $(( $(date +%s) - t )) s ($(du -h "$RUN/reference.elf" | cut -f1)); trace at $TR_REF bytes"
cap_cont
wait_for '^HO-TAKEN' "$KDUMP_TIMEOUT"
TR_TAKEN=$(tsize)
say "takeover done: $(tr -d '\r' < "$OUT/console.log" | grep -a -m1 '^HO-TAKEN'); sending $UDP_PACKETS packets to the NIC"
python3 - "$UDP_PORT" "$UDP_PACKETS" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[2])):
    s.sendto(b'handover-takeover %d ' % i + b'x' * 512, ('127.0.0.1', int(sys.argv[1])))
    time.sleep(0.02)
PY
wait_for '^HO-KDUMP-DONE' "$KDUMP_TIMEOUT"
T_DONE=$(( $(date +%s) - TB ))
for _ in $(seq 60); do kill -0 "$QPID" 2>/dev/null || break; sleep 0.5; done
kill -0 "$QPID" 2>/dev/null && cap_quit
QPID=""
[ -s "$OUT/qemu.stderr" ] || rm -f "$OUT/qemu.stderr"

# 4. the files the kdump kernel printed, then the result
tr -d '\r' < "$OUT/console.log" | { grep -a '^HO-F[+ ]' || true; } | python3 -c '
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
BYTES=$(sed -n 's/.*bytes=\([0-9]*\).*/\1/p' <<< "$DONE_LINE")
QV=$("$QEMU" --version | head -1)
if [ -n "${KEEP_VMCORE:-}" ] && [ -n "${BYTES:-}" ]; then
  head -c "$BYTES" "$RUN/dump.img" > "$KEEP_VMCORE" || die "cannot keep the vmcore in $KEEP_VMCORE"
  say "vmcore kept: $KEEP_VMCORE ($BYTES bytes)"
fi
MDF_LINE=""; MDF_ERR=""
if [ -n "$MDF_OPTS" ]; then
  MDF_LINE=$(tr -d '\r' < "$OUT/console.log" | grep -a -m1 '^HO-MDF-DONE' || true)
  MRC=$(sed -n 's/.* rc=\([^ ]*\).*/\1/p' <<< "$MDF_LINE"); MBYTES=$(sed -n 's/.* bytes=\([0-9]*\).*/\1/p' <<< "$MDF_LINE")
  MSUM=$(sed -n 's/.* md5=\([0-9a-f]*\).*/\1/p' <<< "$MDF_LINE")
  if [ -z "$MDF_LINE" ]; then MDF_ERR="no HO-MDF-DONE line on the console (see $OUT/console.log)"
  elif ! grep -q ' dump=0 ' <<< "$DONE_LINE"; then MDF_ERR="the ELF dump failed ($DONE_LINE): nothing to compare the stream with"
  elif [ "$MRC" != 0 ] || [ "${MBYTES:-0}" = 0 ]; then MDF_ERR="makedumpfile in the kdump kernel failed: $MDF_LINE (see $OUT/makedumpfile.err)"
  else
    head -c "$MBYTES" "$RUN/mdf.img" > "$OUT/makedumpfile.flat" || die "cannot write $OUT/makedumpfile.flat"
    HSUM=$(md5sum < "$OUT/makedumpfile.flat" | cut -d' ' -f1)
    if [ "$HSUM" = "$MSUM" ]; then say "makedumpfile stream kept: $OUT/makedumpfile.flat ($MBYTES bytes, md5 as in the guest)"
    else MDF_ERR="$OUT/makedumpfile.flat: md5 $HSUM, the guest read back $MSUM"; fi
  fi
fi
OWN=$(tr -d '\r' < "$OUT/console.log" | sed -n 's/^HO: iomem \([0-9a-f]*-[0-9a-f]*\) : System RAM$/\1/p' | tr '\n' , | sed 's/,$//')
python3 "$KDIR/takeover_result.py" --kind "$KIND" --policy "$POLICY" --kernel "$KVER" --qemu "$QV" \
  --trace "$OUT/trace.log" --trace-ref "$TR_REF" --trace-taken "$TR_TAKEN" --takeover "$OUT/takeover.json" \
  --reference "$RUN/reference.elf" --disk "$RUN/dump.img" --dump-bytes "${BYTES:-0}" --done "$DONE_LINE" --own-ram "$OWN" \
  --counts "$OUT/trace-counts.txt" > "$OUT/result.json" || die "takeover_result.py failed"
{ echo "host: $QV; $PROG $KIND $POLICY"
  tr -d '\r' < "$OUT/console.log" | grep -a -E '^HO(:|-[A-Z]+)|Linux version|Kernel panic|DMAR|nvme|AER|arm-smmu|nobody cared|Disabling IRQ' \
      | grep -a -v '^HO-F[+ ]' | cut -c1-300; } > "$OUT/console.txt"
T_ALL=$(( $(date +%s) - T0 ))
{
  echo "kind: $KIND (MMIO base $BASE); policy: $POLICY; needed: $NEEDED"
  echo "kernel: $KVER (crashing kernel and kdump kernel)"
  echo "qemu: $QV"
  echo "qemu_args: ${QARGS[*]}"
  echo "crash_cmdline: $APPEND"
  echo "kdump_cmdline: $(tr -d '\r' < "$OUT/console.log" | grep -a '^HO: cmdline' | tail -1 | sed 's/^HO: cmdline //')"
  echo "trace: events $(tr '\n' ' ' < "$RUN/events"); bytes at HO-LOADED $TR_PANIC, at the reference $TR_REF, at HO-TAKEN $TR_TAKEN"
  echo "result: $DONE_LINE"
  [ -z "$MDF_OPTS" ] || echo "makedumpfile: MAKEDUMPFILE=\"$MDF_OPTS\": $(tr -d '\r' < "$OUT/console.log" | grep -a -m1 '^HO: makedumpfile: ' | sed 's/^HO: makedumpfile: //'); ${MDF_LINE:-no HO-MDF-DONE}"
  echo "times: kexec -p loaded at ${T_LOADED}s, kdump done at ${T_DONE}s after QEMU start; whole script ${T_ALL}s"
} | cap_scrub > "$OUT/summary.txt"
gzip -f "$OUT/trace.log"
cat "$OUT/result.json"
[ -z "$MDF_ERR" ] || die "$MDF_ERR"
say "done in $T_ALL s: $OUT"
