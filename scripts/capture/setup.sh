#!/bin/bash
# setup.sh -- install what scripts/capture/{vtd,amdvi,smmuv3}.sh need on a Debian 12 (bookworm) amd64 host.
#   * QEMU 10 (qemu-system-x86, and qemu-system-arm for smmuv3.sh) from bookworm-backports (bookworm's
#     own 7.2 lacks nothing essential for VT-d, but the preinstalled qemu-utils here is the 10.0
#     backport and conflicts with 7.2),
#   * busybox-static, kmod, cpio, xz-utils, zstd, python3 (initrd build and helpers),
#   * the Debian kernels (linux-image-*.deb, only downloaded and extracted, never installed); a KVER
#     ending in -arm64 is an arm64 kernel (fetched through a second private apt config that adds the
#     arm64 architecture for downloads only: dpkg's architectures are not changed),
#   * busybox-static:arm64 (downloaded and extracted to $CAPTURE_WORK/arm64root) for arm64 initrds,
#   * a busybox initramfs per kernel (mkinitrd.sh) and a 64 MiB raw image for the NVMe disk.
# Everything goes to $CAPTURE_WORK (default $HOME/.cache/handover-capture/work). Needs root and
# Debian's package mirror. Idempotent: a second run only fills in what is missing. ~1-3 min.
# usage: scripts/capture/setup.sh [KVER...]
#   (default: 6.12.95+deb12-amd64 6.1.0-56-amd64 6.12.95+deb12-arm64)
set -euo pipefail
HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
W=${CAPTURE_WORK:-$HOME/.cache/handover-capture/work}
KVERS=("$@"); [ ${#KVERS[@]} -gt 0 ] || KVERS=(6.12.95+deb12-amd64 6.1.0-56-amd64 6.12.95+deb12-arm64)
die() { echo "setup.sh: ERROR: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (apt-get install)"
mkdir -p "$W/apt/sources.list.d" "$W/apt/lists/partial" "$W/debs" "$W/apt/lists-arm64/partial" "$W/apt/cache-arm64/archives/partial"

# private apt configuration = the machine's sources + bookworm-backports (system config untouched)
cp /etc/apt/sources.list.d/debian.sources "$W/apt/sources.list.d/" 2>/dev/null || die "no /etc/apt/sources.list.d/debian.sources"
uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
  "$uri" > "$W/apt/sources.list.d/backports.sources"
printf 'Dir::Etc::SourceParts "%s/apt/sources.list.d";\nDir::Etc::SourceList "/dev/null";\nDir::State::Lists "%s/apt/lists";\n' \
  "$W" "$W" > "$W/apt/apt.conf"
# the same plus the arm64 architecture, for downloading arm64 packages only (own lists and cache)
printf 'Dir::Etc::SourceParts "%s/apt/sources.list.d";\nDir::Etc::SourceList "/dev/null";\nDir::State::Lists "%s/apt/lists-arm64";\nDir::Cache "%s/apt/cache-arm64";\nAPT::Architectures { "amd64"; "arm64"; };\n' \
  "$W" "$W" "$W" > "$W/apt/apt-arm64.conf"
export APT_CONFIG=$W/apt/apt.conf DEBIAN_FRONTEND=noninteractive
NEED_ARM64=0
for v in "${KVERS[@]}"; do case "$v" in *-arm64) NEED_ARM64=1;; esac; done

if ! command -v qemu-system-x86_64 >/dev/null || ! command -v busybox >/dev/null || ! command -v cpio >/dev/null \
   || ! command -v modprobe >/dev/null || ! command -v zstd >/dev/null || ! command -v xz >/dev/null; then
  timeout 300 apt-get update >/dev/null || die "apt-get update failed"
  timeout 900 apt-get install -y --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null \
    || die "installing qemu-system-x86 from bookworm-backports failed"
  timeout 900 apt-get install -y --no-install-recommends busybox-static kmod cpio xz-utils zstd python3 >/dev/null \
    || die "installing busybox-static kmod cpio xz-utils zstd python3 failed"
fi
qemu-system-x86_64 --version | head -1
if [ $NEED_ARM64 = 1 ]; then
  if ! command -v qemu-system-aarch64 >/dev/null; then
    timeout 300 apt-get update >/dev/null || die "apt-get update failed"
    timeout 900 apt-get install -y --no-install-recommends -t bookworm-backports qemu-system-arm >/dev/null \
      || die "installing qemu-system-arm from bookworm-backports failed"
  fi
  qemu-system-aarch64 --version | head -1
  if [ ! -x "$W/arm64root/bin/busybox" ]; then
    APT_CONFIG=$W/apt/apt-arm64.conf timeout 300 apt-get update >/dev/null || die "apt-get update (arm64 lists) failed"
    (cd "$W/debs" && APT_CONFIG=$W/apt/apt-arm64.conf timeout 600 apt-get -o APT::Sandbox::User=root download busybox-static:arm64 >/dev/null) \
      || die "cannot download busybox-static:arm64"
    mkdir -p "$W/arm64root"; dpkg-deb -x "$W/debs/"busybox-static_*_arm64.deb "$W/arm64root"
  fi
fi

for v in "${KVERS[@]}"; do
  if ! ls "$W/debs/linux-image-${v}_"*.deb >/dev/null 2>&1; then
    case "$v" in
      *-arm64) [ -d "$W/apt/lists-arm64" ] && ls "$W/apt/lists-arm64/"*arm64_Packages* >/dev/null 2>&1 \
                 || APT_CONFIG=$W/apt/apt-arm64.conf timeout 300 apt-get update >/dev/null
               (cd "$W/debs" && APT_CONFIG=$W/apt/apt-arm64.conf timeout 600 apt-get -o APT::Sandbox::User=root download "linux-image-$v:arm64" >/dev/null) \
                 || die "cannot download linux-image-$v:arm64";;
      *) [ -f "$W/apt/lists/lock" ] || timeout 300 apt-get update >/dev/null
         (cd "$W/debs" && timeout 600 apt-get -o APT::Sandbox::User=root download "linux-image-$v" >/dev/null) || die "cannot download linux-image-$v";;
    esac
  fi
  kr=$W/kernels/$v
  if [ ! -f "$kr/lib/modules/$v/modules.dep" ]; then
    rm -rf "$kr"; mkdir -p "$kr"
    dpkg-deb -x "$W/debs/linux-image-${v}_"*.deb "$kr"
    depmod -b "$kr" "$v"
  fi
  # (re)build the initramfs if missing or older than the guest /init or mkinitrd.sh
  if [ ! -f "$W/initrd-$v.cpio" ] || [ "$HERE/guest-init.sh" -nt "$W/initrd-$v.cpio" ] || [ "$HERE/mkinitrd.sh" -nt "$W/initrd-$v.cpio" ]; then
    case "$v" in
      *-arm64) "$HERE/mkinitrd.sh" "$W/initrd-$v.cpio" "$kr" "$v" "$W/arm64root/bin/busybox";;
      *)       "$HERE/mkinitrd.sh" "$W/initrd-$v.cpio" "$kr" "$v";;
    esac
  fi
done
[ -f "$W/nvme.img" ] || qemu-img create -f raw "$W/nvme.img" 64M >/dev/null
echo "setup.sh: ready in $W"
