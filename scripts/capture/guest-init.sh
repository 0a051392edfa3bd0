#!/bin/busybox sh
# /init of the capture initramfs (busybox-static only; built into the cpio by mkinitrd.sh).
# Loads the drivers, makes e1000e and nvme do DMA through the IOMMU, prints what the host side
# waits for, then keeps the NIC busy and idles. Markers on the serial console (ttyS0):
#   CAP: ...           progress and facts (kernel, IOMMU groups, DMAR messages)
#   CAP-READY          drivers bound and DMA done; the host may pause the VM from here on
#   CAP-FAIL: why      something the capture needs is missing; the host aborts
# Options (words on the kernel command line; vtd.sh uses none of them):
#   cap.nvflush=N      after the reads, N NVMe flush commands from each CPU (no data buffer, so the
#                      driver maps and unmaps nothing: the queue-ring translations they cause stay valid)
#   cap.traffic=flood  after CAP-READY, ping back to back (ping -A) instead of once a second
#   cap.live=1         after CAP-READY, run `/bin/handover audit --live` on this running guest (live.sh adds
#                      the binary in a second cpio) and print it: CAP-LIVE-JSON: / CAP-LIVE: lines, then
#                      CAP-LIVE-RC: N and CAP-LIVE-DONE
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "CAP: $*"; }
fail() { echo "CAP-FAIL: $*"; while true; do sleep 3600; done; }

say "init kernel=$(uname -r) arch=$(uname -m) uptime=$(up)"
NVFLUSH=0; TRAFFIC=ping; LIVE=0
for w in $(cat /proc/cmdline); do
  case "$w" in
    cap.nvflush=*) NVFLUSH=${w#cap.nvflush=};; cap.traffic=*) TRAFFIC=${w#cap.traffic=};; cap.live=*) LIVE=${w#cap.live=};;
  esac
done
say "cmdline $(cat /proc/cmdline)"
for m in $(cat /lib/modules/load.order); do
  insmod /lib/modules/$m 2>&1 | while IFS= read -r l; do say "insmod $m: $l"; done
done

# wait (bounded) for both devices to be probed
i=0
while [ $i -lt 60 ]; do
  [ -b /dev/nvme0n1 ] && [ -e /sys/class/net/eth0 ] && break
  sleep 0.5; i=$((i+1))
done
[ -b /dev/nvme0n1 ] || fail "no /dev/nvme0n1 after 30 s"
[ -e /sys/class/net/eth0 ] || fail "no eth0 after 30 s"
say "devices probed uptime=$(up)"

dmesg | grep -i -E 'DMAR|IOMMU|remapp' | while IFS= read -r l; do echo "CAP-DMESG: $l"; done
for d in /sys/kernel/iommu_groups/*/devices/*; do
  [ -e "$d" ] || continue
  g=${d#/sys/kernel/iommu_groups/}; g=${g%%/*}
  drv=$(basename "$(readlink "$d/driver")" 2>/dev/null)
  echo "CAP-GROUP: group=$g type=$(cat /sys/kernel/iommu_groups/$g/type 2>/dev/null) dev=$(basename $d) drv=$drv"
done

# NIC: link up, address for QEMU user networking, a few pings to the slirp gateway (TX + RX DMA)
ip link set eth0 up || fail "ip link set eth0 up"
ip addr add 10.0.2.15/24 dev eth0 2>/dev/null
i=0
while [ $i -lt 20 ] && ! grep -q 1 /sys/class/net/eth0/carrier 2>/dev/null; do sleep 0.5; i=$((i+1)); done
say "eth0 carrier=$(cat /sys/class/net/eth0/carrier 2>/dev/null)"
ping -c 3 -W 2 10.0.2.2 2>&1 | tail -2 | while IFS= read -r l; do say "ping: $l"; done

# NVMe: many small direct reads (one command each) so the submission/completion queue rings
# wrap and every ring page gets fetched through the IOMMU, then a buffered read
if dd if=/dev/nvme0n1 of=/dev/null bs=4k count=${CAP_NVME_CMDS:-3000} iflag=direct 2>/dev/null; then
  say "nvme: ${CAP_NVME_CMDS:-3000} direct 4 KiB reads done"
else
  say "nvme: direct reads not supported by this dd"
fi
dd if=/dev/nvme0n1 of=/dev/null bs=64k count=256 2>/dev/null && say "nvme: buffered 16 MiB read done"
if [ "$NVFLUSH" -gt 0 ] 2>/dev/null; then
  say "nvme: write_cache=$(cat /sys/block/nvme0n1/queue/write_cache 2>/dev/null) queues=$(ls -d /sys/block/nvme0n1/mq/* 2>/dev/null | wc -l)"
  # one busybox `sync -d` with the device named N times: N fdatasync()s = N flush commands, pinned to
  # each CPU in turn so that every I/O queue's rings are used
  args=$(i=0; while [ $i -lt "$NVFLUSH" ]; do echo /dev/nvme0n1; i=$((i+1)); done)
  for c in $(seq 0 $(( $(nproc) - 1 ))); do
    taskset -c "$c" sync -d $args 2>&1 | head -2 | while IFS= read -r l; do say "sync: $l"; done
  done
  say "nvme: $NVFLUSH flushes per CPU done"
fi
grep -E 'eth0|nvme' /proc/interrupts | while IFS= read -r l; do echo "CAP-IRQ: $l"; done
say "devices ready uptime=$(up)"
echo "CAP-READY"

# the preflight audit of this running host, with the NIC still pinging in the background
if [ "$LIVE" = 1 ]; then
  [ -x /bin/handover ] || fail "cap.live=1 but no /bin/handover in the initramfs"
  ( while true; do ping -c 1 -W 1 10.0.2.2 >/dev/null 2>&1; sleep 1; done ) &
  /bin/handover audit --live --json > /tmp/live.json 2> /tmp/live.err; rc=$?
  /bin/handover audit --live > /tmp/live.txt 2>/dev/null
  while IFS= read -r l; do echo "CAP-LIVE-ERR: $l"; done < /tmp/live.err
  while IFS= read -r l; do echo "CAP-LIVE: $l"; done < /tmp/live.txt
  while IFS= read -r l; do echo "CAP-LIVE-JSON: $l"; done < /tmp/live.json
  echo "CAP-LIVE-RC: $rc"
  echo "CAP-LIVE-DONE"
fi

# keep the NIC busy while the host captures: one ping a second, or back to back (cap.traffic=flood)
if [ "$TRAFFIC" = flood ]; then
  while true; do ping -A -q -c 100000 -W 1 10.0.2.2 >/dev/null 2>&1; sleep 1; done
fi
while true; do ping -c 1 -W 1 10.0.2.2 >/dev/null 2>&1; sleep 1; done
