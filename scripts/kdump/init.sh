#!/bin/busybox sh
# /init of both initramfs images audit.sh builds (busybox-static only). The word ho.mode= on the kernel
# command line picks the stage:
#
# ho.mode=crash  (the machine that will crash; its initrd holds kexec, the kdump kernel and its initrd)
#   load nvme and e1000e, let them do DMA through the IOMMU, note the crash kernel's regions and the RAM
#   map from /proc/iomem, load the kdump kernel with `kexec -p` (passing those on its command line as
#   ho.crash= and ho.ram=), print HO-LOADED, keep the NIC busy for HO_DELAY s (/boot/ho.delay) and panic
#   (sysrq-c). The host pauses the VM at HO-LOADED to read the registers through the monitor (cross-check).
# ho.mode=kdump  (the kdump kernel, IOMMU driver off; its initrd holds the static `handover`)
#   run `handover audit --dump /proc/vmcore --regs-devmem --acpi /sys/firmware/acpi/tables/DMAR|IVRS` once
#   per crash-kernel region, JSON and human, and print the results as HO-F lines for the host, then
#   power off. Everything goes through /dev/kmsg: the kernel's console writes are polled, while the
#   serial driver's interrupts may be lost when the crashed kernel left interrupt remapping on.
# ho.mode=takeover  (the kdump kernel of takeover.sh, IOMMU driver off; its initrd holds `handover` and the
#   nvme modules) print HO-REF and wait (the host pauses the VM and saves memory as the reference), keep
#   every PCI function but the needed one (ho.needed=) from binding a driver, run `handover takeover
#   --policy ho.policy --needed ho.needed --json`, print HO-TAKEN and wait (the host sends packets to the
#   NIC), then load nvme, which binds only the needed disk, and write /proc/vmcore to it. With
#   /etc/ho.makedumpfile in the initrd (takeover.sh MAKEDUMPFILE=), then also stream `makedumpfile -F OPTS
#   /proc/vmcore` (the flattened format, makedumpfile(8) -F) onto the disk's second namespace (nsid 2).
# Markers: HO: progress; HO-FAIL: why (the host stops); HO-LOADED; HO-F NAME: LINE (a line of an output
# file; HO-F+ NAME: the rest of a long one); HO-MDF-DONE rc=N bytes=N md5=SUM (makedumpfile's exit status, the
# bytes of its stream on namespace 2 and their md5 read back from the disk); HO-KDUMP-DONE rc=N.
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
up() { cut -d' ' -f1 /proc/uptime; }
arg() { for w in $(cat /proc/cmdline); do case "$w" in "$1"=*) echo "${w#*=}"; return;; esac; done; }
MODE=$(arg ho.mode)
case "$MODE" in kdump|takeover) exec >/dev/kmsg 2>&1;; esac
say() { echo "HO: $*"; }
fail() { echo "HO-FAIL: $*"; sleep 2; poweroff -f; while true; do sleep 3600; done; }
pfx() { while IFS= read -r l; do echo "$1$l"; done; }

say "init mode=$MODE kernel=$(uname -r) uptime=$(up)"
say "cmdline $(cat /proc/cmdline)"

crash_mode() {
  for m in $(cat /lib/modules/load.order); do insmod /lib/modules/$m 2>&1 | pfx "HO: insmod $m: "; done
  i=0
  while [ $i -lt 60 ]; do [ -b /dev/nvme0n1 ] && [ -e /sys/class/net/eth0 ] && break; sleep 0.5; i=$((i+1)); done
  [ -b /dev/nvme0n1 ] || fail "no /dev/nvme0n1 after 30 s"
  [ -e /sys/class/net/eth0 ] || fail "no eth0 after 30 s"
  for d in /sys/kernel/iommu_groups/*/devices/*; do
    [ -e "$d" ] || continue
    g=${d#/sys/kernel/iommu_groups/}; g=${g%%/*}
    echo "HO-GROUP: group=$g type=$(cat /sys/kernel/iommu_groups/$g/type) dev=$(basename $d) drv=$(basename "$(readlink $d/driver)" 2>/dev/null)"
  done
  ip link set eth0 up || fail "ip link set eth0 up"
  ip addr add 10.0.2.15/24 dev eth0
  i=0
  while [ $i -lt 20 ] && ! grep -q 1 /sys/class/net/eth0/carrier 2>/dev/null; do sleep 0.5; i=$((i+1)); done
  ping -c 3 -W 2 10.0.2.2 2>&1 | tail -1 | pfx "HO: ping: "
  dd if=/dev/nvme0n1 of=/dev/null bs=4k count=1000 iflag=direct 2>/dev/null && say "nvme: 1000 direct 4 KiB reads"
  dd if=/dev/nvme0n1 of=/dev/null bs=64k count=256 2>/dev/null && say "nvme: buffered 16 MiB read"

  # the crash kernel's regions and the RAM map, as /proc/iomem prints them (handover takes its inclusive ends)
  CRASH=$(grep ': Crash kernel$' /proc/iomem | sed 's/^ *//; s/ : .*//' | tr '\n' , | sed 's/,$//')
  RAM=$(grep -E '^[0-9a-f]+-[0-9a-f]+ : System RAM$' /proc/iomem | sed 's/ : .*//' | tr '\n' , | sed 's/,$//')
  [ -n "$CRASH" ] || fail "no 'Crash kernel' region in /proc/iomem (crashkernel= missing or too large?)"
  say "crash kernel regions $CRASH; RAM $RAM"
  KAPP="$(cat /boot/kdump.cmdline) ho.mode=kdump ho.crash=$CRASH ho.ram=$RAM"
  t0=$(up)
  kexec -p /boot/vmlinuz --initrd=/boot/initrd-kdump.cpio --append="$KAPP" 2>&1 | pfx "HO: kexec: "
  [ "$(cat /sys/kernel/kexec_crash_loaded)" = 1 ] || fail "kexec -p did not load the kdump kernel"
  say "kdump kernel loaded (uptime $t0 -> $(up)); append: $KAPP"
  echo "HO-LOADED"
  # DMA goes on until the panic: ping and read in the background
  (while true; do ping -c 1 -W 1 10.0.2.2 >/dev/null 2>&1; done) &
  (while true; do dd if=/dev/nvme0n1 of=/dev/null bs=4k count=64 iflag=direct 2>/dev/null; sleep 0.2; done) &
  sleep "$(cat /boot/ho.delay 2>/dev/null || echo 3)"
  say "panic via sysrq-c at uptime=$(up)"
  echo 1 > /proc/sys/kernel/sysrq
  echo c > /proc/sysrq-trigger
  fail "still alive after sysrq-c"
}

# emit NAME FILE: the file's lines as HO-F lines; a line longer than 800 bytes goes out in pieces, each further
# piece as an HO-F+ line the host appends to the line before (/dev/kmsg refuses a record over 1 KiB).
emit() {
  while IFS= read -r l || [ -n "$l" ]; do
    printf '%s\n' "$l" | fold -w 800 | {
      IFS= read -r p; echo "HO-F $1: $p"
      while IFS= read -r p; do echo "HO-F+ $1: $p"; done
    }
  done < "$2"
}

kdump_mode() {
  KIND=$(arg ho.kind); CRASH=$(arg ho.crash); RAM=$(arg ho.ram)
  case "$KIND" in vtd) TABLE=DMAR;; amdvi) TABLE=IVRS;; *) fail "ho.kind=$KIND: expected vtd or amdvi";; esac
  [ -r /proc/vmcore ] || fail "no /proc/vmcore"
  [ -r /sys/firmware/acpi/tables/$TABLE ] || fail "no /sys/firmware/acpi/tables/$TABLE"
  [ -n "$CRASH" ] || fail "no ho.crash= on the command line"
  say "vmcore $(stat -c %s /proc/vmcore) bytes; $TABLE $(stat -c %s /sys/firmware/acpi/tables/$TABLE) bytes; crash regions $CRASH"
  RAMARGS=""
  for r in $(echo "$RAM" | tr , ' '); do RAMARGS="$RAMARGS --ram $r"; done
  n=0; worst=0
  for ck in $(echo "$CRASH" | tr , ' '); do
    t0=$(up)
    # the registers first: --regs-devmem reads them before anything else, and echoes them to stderr
    /bin/handover audit --dump /proc/vmcore --regs-devmem --acpi /sys/firmware/acpi/tables/$TABLE --iommu $KIND \
      --crashkernel "$ck" $RAMARGS --json > /tmp/audit.json 2> /tmp/regs-devmem.txt
    rc=$?
    /bin/handover audit --dump /proc/vmcore --regs-devmem --acpi /sys/firmware/acpi/tables/$TABLE --iommu $KIND \
      --crashkernel "$ck" $RAMARGS > /tmp/audit.txt 2> /tmp/regs-devmem-2.txt
    rc2=$?
    say "audit crashkernel=$ck: exit $rc (json) $rc2 (human), uptime $t0 -> $(up)"
    cmp -s /tmp/regs-devmem.txt /tmp/regs-devmem-2.txt || say "registers changed between the two runs"
    echo "handover audit --dump /proc/vmcore --regs-devmem --acpi /sys/firmware/acpi/tables/$TABLE --iommu $KIND --crashkernel $ck$RAMARGS [--json]; exit $rc" > /tmp/cmd.txt
    emit "audit-$n.cmd" /tmp/cmd.txt
    emit "regs-devmem-$n.txt" /tmp/regs-devmem.txt
    emit "audit-$n.json" /tmp/audit.json
    emit "audit-$n.txt" /tmp/audit.txt
    [ $rc -gt $worst ] && worst=$rc
    n=$((n+1))
  done
  echo "HO-KDUMP-DONE rc=$worst"
  sleep 1
  poweroff -f
}

# nsdev N: the block device (nvme0nX) of namespace N of the one bound controller
nsdev() { for b in /sys/block/nvme0n*; do [ "$(cat "$b/nsid" 2>/dev/null)" = "$1" ] && { echo "${b##*/}"; return; }; done; }
# mdf_stream: /etc/ho.makedumpfile holds "TIMEOUT OPTS...". makedumpfile reads the crashed kernel's VMCOREINFO
# from /proc/vmcore and writes the flattened format to stdout (makedumpfile(8): -F, "for transporting the dump
# data by SSH"); tee puts the stream at the start of the dump disk's namespace 2, the host cuts it at the byte
# count.
mdf_stream() {  # mdf_stream DEV (nvme0nX: nsid 2)
  read -r tmo opts < /etc/ho.makedumpfile
  say "makedumpfile: $(makedumpfile -v 2>&1 | head -1); options -F $opts; timeout $tmo s"
  if [ -z "$1" ] || ! [ -b "/dev/$1" ]; then say "makedumpfile: no namespace 2 on the dump disk"; echo "HO-MDF-DONE rc=nodisk bytes=0 md5=none"; return; fi
  say "makedumpfile: streaming to /dev/$1 (nsid $(cat /sys/block/$1/nsid), $(cat /sys/block/$1/size) sectors), uptime $(up)"
  echo none > /tmp/mdf.rc; echo none > /tmp/tee.rc
  # tee writes the stream to the disk and counts it through wc (Debian's busybox dd prints no byte count)
  { { timeout -s KILL "$tmo" makedumpfile -F $opts /proc/vmcore 2>/tmp/mdf.err; echo $? > /tmp/mdf.rc; } \
      | tee "/dev/$1" 2>/tmp/mdf-tee.err; echo $? > /tmp/tee.rc; } | wc -c > /tmp/mdf.n
  sync
  mrc=$(cat /tmp/mdf.rc); trc=$(cat /tmp/tee.rc); n=$(tr -d ' ' < /tmp/mdf.n)
  [ -n "$n" ] || n=0
  [ -s /tmp/mdf-tee.err ] && tail -1 /tmp/mdf-tee.err | pfx "HO: makedumpfile tee (rc $trc): "
  # the progress lines are \r-separated; keep the messages
  tr '\r' '\n' < /tmp/mdf.err | grep -v -E '^ *$|\[ *[0-9.]+ ?%\]' | tail -30 > /tmp/makedumpfile.err
  emit makedumpfile.err /tmp/makedumpfile.err
  # read back from the disk, not the page cache
  echo 3 > /proc/sys/vm/drop_caches
  sum=$(head -c "$n" "/dev/$1" | md5sum | cut -d' ' -f1)
  [ "$trc" = 0 ] || mrc="$mrc,tee$trc"
  say "makedumpfile done, uptime $(up)"
  echo "HO-MDF-DONE rc=$mrc bytes=$n md5=$sum"
}

takeover_mode() {
  KIND=$(arg ho.kind); POLICY=$(arg ho.policy); NEEDED=$(arg ho.needed)
  [ -r /proc/vmcore ] || fail "no /proc/vmcore"
  [ -n "$POLICY" ] && [ -n "$NEEDED" ] || fail "ho.policy= and ho.needed= are required"
  say "vmcore $(stat -c %s /proc/vmcore) bytes; policy $POLICY; needed $NEEDED"
  grep -v ' : PCI\| : pnp\|^    ' /proc/iomem | pfx "HO: iomem "
  echo "HO-REF"
  REFWAIT=$(arg ho.refwait); sleep "${REFWAIT:-6}"
  for d in /sys/bus/pci/devices/*; do
    [ "$(basename "$d")" = "$NEEDED" ] || echo none > "$d/driver_override" 2>/dev/null
  done
  t0=$(up)
  /bin/handover takeover --policy "$POLICY" --needed "$NEEDED" ${KIND:+--iommu $KIND} $(arg ho.takeover_args | tr , ' ') \
    --json > /tmp/takeover.json 2> /tmp/takeover.err
  rc=$?
  say "takeover exit $rc, uptime $t0 -> $(up)"
  emit takeover.json /tmp/takeover.json
  emit takeover.err /tmp/takeover.err
  echo "HO-TAKEN rc=$rc"
  sleep 4
  dumped=0; dump_rc=skipped
  if [ $rc != 2 ]; then
    for m in $(cat /lib/modules/load.order); do insmod /lib/modules/$m 2>&1 | pfx "HO: insmod $m: "; done
    i=0; D=nvme0n1
    if [ -f /etc/ho.makedumpfile ]; then
      # two namespaces: the kernel names them nvme0nX in the order its scan finds them, not by nsid (seen here:
      # nvme0n1 was nsid 2), so the ELF dump goes to the one whose sysfs nsid is 1
      while [ $i -lt 60 ]; do D=$(nsdev 1); [ -n "$D" ] && [ -n "$(nsdev 2)" ] && break; sleep 0.5; i=$((i+1)); done
      [ -n "$D" ] || D="nvme0n1 (nsid 1)"
    else
      while [ $i -lt 60 ] && ! [ -b /dev/nvme0n1 ]; do sleep 0.5; i=$((i+1)); done
    fi
    if [ -b "/dev/$D" ]; then
      say "dump disk $(cat /sys/block/$D/device/address 2>/dev/null || readlink /sys/block/$D/device/device); writing /proc/vmcore, uptime $(up)"
      dd if=/proc/vmcore of=/dev/$D bs=1M oflag=direct 2>/tmp/dd.err; dump_rc=$?
      tail -1 /tmp/dd.err | pfx "HO: dd: "
      dumped=$(stat -c %s /proc/vmcore)
      sync
      say "dump written (rc $dump_rc), uptime $(up)"
      [ -f /etc/ho.makedumpfile ] && mdf_stream "$(nsdev 2)"
    else
      say "no /dev/$D after 30 s: no dump"; dump_rc=nodisk
    fi
  fi
  [ -f /etc/ho.makedumpfile ] && [ "$dumped" = 0 ] && echo "HO-MDF-DONE rc=skipped bytes=0 md5=none"
  dmesg | grep -i -E 'DMAR|nvme|fault|AER|iommu' | tail -40 | pfx "HO: dmesg "
  echo "HO-KDUMP-DONE rc=$rc dump=$dump_rc bytes=$dumped"
  sleep 1
  poweroff -f
}

case "$MODE" in
  crash) crash_mode;;
  kdump) kdump_mode;;
  takeover) takeover_mode;;
  *) fail "ho.mode=$MODE: expected crash, kdump or takeover";;
esac
