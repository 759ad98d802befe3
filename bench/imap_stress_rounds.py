"""imaptest stress side by side: rounds of Dovecot and one or more Pochta source trees, each
Pochta run on a fresh copy of one pristine instance, with the host's steal time per run.

A virtual machine's neighbours take CPU in bursts (up to 6 s of 40 core-seconds in a
20 s run here), so one run of each proves little: run several rounds, the servers in
turn within each, and compare round by round (docs/performance.md §13, "Session 9").

Usage (imaptest built by hand and Dovecot's reference stack up, see docs/imap.md):
  bench/pochta_instance.sh /tmp/stress-pristine       # once; ports moved to 62xxx
  python bench/imap_stress_rounds.py --rounds 6 --mbox /tmp/bench.mbox \\
      --imaptest /tmp/imaptest-src/src/imaptest --pristine /tmp/stress-pristine \\
      --port 62993 --dovecot 12993:bench@refstack.test:bench-secret-0 \\
      --pochta native=. --pochta pure=/tmp/pure [--logouts]

``--pochta NAME=DIR`` runs ``DIR/src`` (a checkout, or ``git archive REV src`` unpacked
into DIR); its compiled modules are used when ``make native`` built them there.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def steal_ticks() -> int:
    """The host's steal time so far, in clock ticks over every CPU (/proc/stat)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu "):
            return int(line.split()[8])
    return 0


def wait_port(port: int, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"nothing listens on 127.0.0.1:{port}")


def dovecot_pid() -> int:
    out = subprocess.run(["pgrep", "-f", "dovecot -c"], capture_output=True, text=True)
    pids = out.stdout.split()
    if not pids:
        sys.exit("no Dovecot master running (../shared/bench/refstack/up.sh)")
    return int(pids[0])


def stress(a: argparse.Namespace, label: str, port: int, user: str, password: str,
           pid: int) -> tuple[float, float, int]:
    """One imap_stress.py run: ops/s, server CPU-ms per op, imaptest errors."""
    cmd = [sys.executable, str(HERE / "imap_stress.py"), "--label", label, "--port", str(port),
           "--user", user, "--password", password, "--mbox", a.mbox, "--secs", str(a.secs),
           "--clients", str(a.clients), "--imaptest", a.imaptest, "--out-dir", a.out_dir,
           "--server-pid", str(pid)]
    if not a.logouts:
        cmd.append("--logout0")
    env = dict(os.environ, LD_LIBRARY_PATH="/usr/lib/dovecot")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env).stdout
    ops = re.search(r"= (\d+) ops/s, (\d+) imaptest errors", out)
    cpu = re.search(r"([\d.]+) CPU-ms per op", out)
    if ops is None or cpu is None:
        sys.exit(f"{label}: no result in\n{out}")
    return float(ops.group(1)), float(cpu.group(1)), int(ops.group(2))


def run_pochta(a: argparse.Namespace, label: str, tree: Path) -> tuple[float, float, int]:
    """A fresh copy of the pristine instance served by ``tree/src``, stressed once."""
    pristine = Path(a.pristine).resolve()
    with tempfile.TemporaryDirectory(prefix="stress-run-") as tmp:
        inst = Path(tmp) / "inst"
        shutil.copytree(pristine, inst, symlinks=True)
        config = inst / "pochta.toml"
        config.write_text(config.read_text().replace(str(pristine), str(inst)))
        env = dict(os.environ, PYTHONPATH=str(tree.resolve() / "src"))
        log = (inst / "serve.log").open("w")
        server = subprocess.Popen([sys.executable, "-m", "pochta", "-c", str(config), "serve"],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_port(a.port)
            user, password = a.user.split(":", 1)
            return stress(a, label, a.port, user, password, server.pid)
        finally:
            server.terminate()
            server.wait(30)
            log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=int, default=20)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--logouts", action="store_true", help="imaptest's default (a login per "
                    "cycle); without it logout=0")
    ap.add_argument("--mbox", required=True)
    ap.add_argument("--imaptest", default=os.environ.get("IMAPTEST", "imaptest"))
    ap.add_argument("--out-dir", default="bench/results")
    ap.add_argument("--pristine", required=True, help="a bench/pochta_instance.sh directory")
    ap.add_argument("--port", type=int, required=True, help="its implicit-TLS IMAP port")
    ap.add_argument("--user", default="bench@example.test:bench-pass-123",
                    help="USER:PASSWORD of the pristine instance")
    ap.add_argument("--dovecot", help="PORT:USER:PASSWORD of Dovecot's IMAPS")
    ap.add_argument("--pochta", action="append", default=[], metavar="NAME=DIR")
    a = ap.parse_args()
    trees = [(name, Path(path)) for name, _, path in (p.partition("=") for p in a.pochta)]
    print("round server ops/s cpu-ms/op errors steal-ticks", flush=True)
    for n in range(1, a.rounds + 1):
        runs: list[tuple[str, float]] = []
        for name in (["dovecot"] if a.dovecot else []) + [t[0] for t in trees]:
            before = steal_ticks()
            if name == "dovecot":
                port, user, password = a.dovecot.split(":", 2)
                ops, cpu, errors = stress(a, "dovecot", int(port), user, password,
                                          dovecot_pid())
            else:
                ops, cpu, errors = run_pochta(a, name, dict(trees)[name])
            runs.append((name, ops))
            print(f"{n} {name} {ops:.0f} {cpu:.3f} {errors} {steal_ticks() - before}",
                  flush=True)
        if a.dovecot:
            base = runs[0][1]
            print(f"{n} ratio " + " ".join(f"{name}/dovecot={ops / base:.2f}"
                                           for name, ops in runs[1:]), flush=True)


if __name__ == "__main__":
    main()
