#!/bin/bash
# mkinitrd.sh OUT.cpio KROOT KVER [BUSYBOX]
# Build the small initramfs that vtd.sh boots: busybox-static, the guest /init (guest-init.sh) and
# the kernel modules the capture needs (nvme, e1000e, qemu_fw_cfg and their dependencies),
# decompressed and listed in load order in /lib/modules/load.order.
#   KROOT: directory where linux-image-KVER.deb was extracted with `depmod -b KROOT KVER` run on it.
set -euo pipefail
HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
OUT=$1; KROOT=$2; KVER=$3; BB=${4:-/bin/busybox}
MODS=${CAPTURE_MODS:-"qemu_fw_cfg nvme e1000e"}
[ -x "$BB" ] || { echo "mkinitrd.sh: no busybox at $BB (apt-get install busybox-static)" >&2; exit 1; }
[ -d "$KROOT/lib/modules/$KVER" ] || { echo "mkinitrd.sh: no $KROOT/lib/modules/$KVER" >&2; exit 1; }
ST=$(mktemp -d)
trap 'rm -rf "$ST"' EXIT
mkdir -p "$ST"/{bin,sbin,proc,sys,dev,tmp,lib/modules}
cp "$BB" "$ST/bin/busybox"
install -m 755 "$HERE/guest-init.sh" "$ST/init"
: > "$ST/lib/modules/load.order"
for m in $MODS; do
  modprobe -d "$KROOT" -S "$KVER" --show-depends "$m" | awk '$1=="insmod"{print $2}'
done | awk '!seen[$0]++' | while read -r ko; do
  b=$(basename "$ko"); b=${b%.xz}; b=${b%.zst}
  case "$ko" in
    *.xz)  xz -dc "$ko" > "$ST/lib/modules/$b";;
    *.zst) zstd -dcq "$ko" > "$ST/lib/modules/$b";;
    *)     cp "$ko" "$ST/lib/modules/$b";;
  esac
  echo "$b" >> "$ST/lib/modules/load.order"
done
grep -q '^nvme' "$ST/lib/modules/load.order" || { echo "mkinitrd.sh: nvme module not found for $KVER" >&2; exit 1; }
(cd "$ST" && find . | cpio -o -H newc --quiet) > "$OUT"
echo "mkinitrd.sh: built $OUT ($(du -h "$OUT" | cut -f1)); modules: $(tr '\n' ' ' < "$ST/lib/modules/load.order")"
