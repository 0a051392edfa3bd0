#!/usr/bin/env python3
"""Minimal QMP client for vtd.sh (QEMU started with -qmp unix:SOCK,server=on,wait=off).

usage: qmp.py SOCK [--timeout S] COMMAND...
  hmp 'TEXT'        run a human-monitor command, print its output exactly as the monitor prints it
  stop | cont       pause / resume the guest
  status            print the run state (e.g. "paused", "running")
  dump FILE         dump-guest-memory (ELF, no paging) to FILE; waits until written
  dump-as FMT FILE  dump-guest-memory in format FMT (kdump-zlib, kdump-lzo, kdump-snappy: makedumpfile's
                    flattened format; kdump-raw-zlib, kdump-raw-lzo, kdump-raw-snappy: kdump-compressed)
  quit              ask QEMU to exit
Several commands may follow each other on one connection, e.g. `qmp.py S stop status`.
Exit status 1 with a message on stderr on any QMP error, closed socket or timeout.
"""
import json, os, socket, sys, time


class QMPError(Exception):
    pass


class QMP:
    def __init__(self, path, timeout):
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        greeting = self._recv()
        if "QMP" not in greeting:
            raise QMPError("no QMP greeting: %r" % greeting)
        self.execute("qmp_capabilities")

    def _recv(self):
        deadline = time.time() + self.timeout
        while b"\n" not in self.buf:
            if time.time() > deadline:
                raise QMPError("timeout waiting for QMP reply")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise QMPError("QMP socket closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def execute(self, cmd, **args):
        msg = {"execute": cmd}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self._recv()
            if "event" in r:          # asynchronous events (STOP, RESUME, ...) are skipped
                continue
            if "error" in r:
                raise QMPError("%s: %s" % (cmd, r["error"].get("desc", r["error"])))
            return r.get("return")


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    path, args = argv[1], argv[2:]
    timeout = 120.0
    if args[0] == "--timeout":
        timeout, args = float(args[1]), args[2:]
    try:
        q = QMP(path, timeout)
        while args:
            cmd, args = args[0], args[1:]
            if cmd == "hmp":
                out = q.execute("human-monitor-command", **{"command-line": args[0]})
                args = args[1:]
                sys.stdout.write(out.replace("\r\n", "\n"))
            elif cmd in ("stop", "cont"):
                q.execute(cmd)
            elif cmd == "status":
                print(q.execute("query-status")["status"])
            elif cmd == "dump":
                q.execute("dump-guest-memory", paging=False, protocol="file:" + os.path.abspath(args[0]))
                args = args[1:]
            elif cmd == "dump-as":
                q.execute("dump-guest-memory", paging=False, format=args[0],
                          protocol="file:" + os.path.abspath(args[1]))
                args = args[2:]
            elif cmd == "quit":
                try:
                    q.execute("quit")
                except QMPError:
                    pass                  # the socket may close before the reply arrives
            else:
                raise QMPError("unknown command %r" % cmd)
        sys.stdout.flush()
    except (OSError, QMPError, ValueError) as e:
        print("qmp.py: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
