# lib.sh -- shared steps of amdvi.sh and smmuv3.sh (sourced, not run). vtd.sh predates it and
# keeps its own copy of the same steps.
#
# The sourcing script sets: PROG (its name, for messages), HERE (this directory), OUT (output
# directory, absolute), and calls cap_start with the QEMU command; see amdvi.sh for the order:
#   cap_setup; cap_start QEMU ARGS...; cap_wait_ready; cap_pause; cap_regs ...; cap_dump; cap_quit
# Env: BOOT_TIMEOUT [300] s until CAP-READY, QEMU_TIMEOUT [900] s for the whole QEMU process.

die() { echo "$PROG: ERROR: $*" >&2; exit 1; }
say() { echo "$PROG: $*"; }

BOOT_TIMEOUT=${BOOT_TIMEOUT:-300}
QEMU_TIMEOUT=${QEMU_TIMEOUT:-900}

# cap_setup: scratch dir (sockets, event list; removed at exit), clean OUT, exit trap
cap_setup() {
  RUN=$(mktemp -d /tmp/iommu-capture.XXXXXX)
  QMP_SOCK=$RUN/qmp.sock
  QPID=""
  rm -f "$OUT"/{memory.elf,regs.txt,oracle.tsv,meta.txt,console.log,trace.log,check.txt,qemu.stderr,qemu-iotlb.tsv}
  trap cap_cleanup EXIT
  trap 'exit 130' INT TERM
}

cap_cleanup() {
  local rc=$?
  if [ -n "$QPID" ] && kill -0 "$QPID" 2>/dev/null; then
    python3 "$HERE/qmp.py" "$QMP_SOCK" --timeout 10 quit >/dev/null 2>&1 || true
    for _ in $(seq 20); do kill -0 "$QPID" 2>/dev/null || break; sleep 0.5; done
    kill "$QPID" 2>/dev/null || true
  fi
  rm -rf "$RUN"
  [ $rc = 0 ] || echo "$PROG: FAILED (exit $rc); partial output in $OUT" >&2
}

qmp() { python3 "$HERE/qmp.py" "$QMP_SOCK" "$@"; }

# cap_start QEMU ARGS... : run QEMU in the background under `timeout`; QPID = pid of `timeout`,
# QEMU_PID = QEMU's own pid (from -pidfile, for reading its memory)
cap_start() {
  T0=$(date +%s)
  timeout "$QEMU_TIMEOUT" "$@" -pidfile "$RUN/qemu.pid" 2>"$OUT/qemu.stderr" &
  QPID=$!
  QEMU_PID=""
}

# cap_wait_ready: bounded wait for the guest's CAP-READY; stop early on CAP-FAIL, a panic or a dead QEMU
cap_wait_ready() {
  local deadline=$(( $(date +%s) + BOOT_TIMEOUT ))
  while ! grep -a -q '^CAP-READY' "$OUT/console.log" 2>/dev/null; do
    kill -0 "$QPID" 2>/dev/null || { tail -5 "$OUT/qemu.stderr" >&2; die "QEMU exited before the guest was ready"; }
    if grep -a -q -E '^CAP-FAIL|Kernel panic' "$OUT/console.log" 2>/dev/null; then
      grep -a -E '^CAP-FAIL|Kernel panic' "$OUT/console.log" | head -3 >&2; die "guest failed (see $OUT/console.log)"
    fi
    [ "$(date +%s)" -lt "$deadline" ] || die "timeout: no CAP-READY after $BOOT_TIMEOUT s (see $OUT/console.log)"
    sleep 0.5
  done
  QEMU_PID=$(cat "$RUN/qemu.pid" 2>/dev/null) || die "QEMU wrote no pidfile"
  say "guest ready after $(( $(date +%s) - T0 )) s"
  grep -a -E '^CAP-GROUP' "$OUT/console.log" | sed 's/^/  /' || true
}

# cap_pause: QMP stop, check the state; TRACE_BYTES = trace.log size at the pause
cap_pause() {
  qmp --timeout 30 stop || die "QMP stop failed"
  local st; st=$(qmp --timeout 30 status) || die "QMP query-status failed"
  [ "$st" = paused ] || die "VM not paused after stop (status: $st)"
  TRACE_BYTES=$(stat -c %s "$OUT/trace.log")
  STOP_UPTIME=$(( $(date +%s) - T0 ))
}

cap_cont() { qmp --timeout 30 cont || die "QMP cont failed"; }

# cap_regs BASE OFF:W... : one `xp /1Wx` per register (W = w 32-bit, g 64-bit) into regs.txt
cap_regs() {
  local base=$1 r cmds=(); shift
  for r in "$@"; do cmds+=(hmp "xp /1${r#*:}x $(printf '0x%x' $(( base + ${r%:*} )))"); done
  qmp --timeout 30 "${cmds[@]}" > "$OUT/regs.txt" || die "reading registers failed"
  [ "$(grep -c -E '^[0-9a-f]{16}: 0x[0-9a-f]+$' "$OUT/regs.txt")" = $# ] || { cat "$OUT/regs.txt" >&2; die "regs.txt does not have $# xp lines"; }
}

# reg BASE OFF : value of a register from regs.txt
reg() { awk -v a="$(printf '%016x' $(( $1 + $2 )))" '$1 == a":" {print $2}' "$OUT/regs.txt"; }

cap_dump() {
  local t; t=$(date +%s.%N)
  qmp --timeout 300 dump "$OUT/memory.elf" || die "dump-guest-memory failed"
  DUMP_S=$(echo "$(date +%s.%N) - $t" | bc)
  [ "$(head -c 4 "$OUT/memory.elf" | od -An -c | tr -d ' ')" = '177ELF' ] || die "memory.elf is not an ELF file"
  cap_extra_dumps
}

# cap_extra_dumps: the same paused memory again in each format of EXTRA_DUMPS (e.g. "kdump-zlib
# kdump-raw-lzo"), as OUT/memory.FORMAT, for dumpfmt_check.sh
cap_extra_dumps() {
  local f
  for f in ${EXTRA_DUMPS:-}; do
    # A QEMU built without lzo or snappy says "... is not available now": noted, not fatal.
    qmp --timeout 900 dump-as "$f" "$OUT/memory.$f" 2> "$OUT/memory.$f.err" || { say "no $f dump: $(cat "$OUT/memory.$f.err")"; continue; }
    rm -f "$OUT/memory.$f.err"
  done
}

cap_quit() {
  qmp --timeout 30 quit || true
  for _ in $(seq 60); do kill -0 "$QPID" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$QPID" 2>/dev/null && die "QEMU did not exit after quit"
  QPID=""
  [ -s "$OUT/qemu.stderr" ] || rm -f "$OUT/qemu.stderr"
}

# cap_scrub: stdin -> stdout with this machine's paths replaced (meta.txt may be committed)
cap_scrub() {
  sed -e "s#$W#\$CAPTURE_WORK#g" -e "s#$OUT#\$OUT#g" -e 's#/tmp/iommu-capture\.[A-Za-z0-9]*#$TMPDIR#g' -e "s#$HOME#\$HOME#g"
}

# oracle_counts: "N" and per-sid counts of oracle.tsv
oracle_per_sid() { tail -n +2 "$OUT/oracle.tsv" | cut -f1 | sort | uniq -c | awk '{printf "%s=%s ", $2, $1}'; }
