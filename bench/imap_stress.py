"""imaptest stress run against one IMAP server, from an empty mailbox each time.

Usage (imaptest built by hand, see docs/imap.md):
  python bench/imap_stress.py --label pochta --port 34993 --user test@example.test \
      --password pass-12345 --mbox bench.mbox [--clients 10] [--secs 30] [--logout0]

Both servers are reached over implicit TLS (imaptest ssl=any-cert) so they pay the same
TLS cost. The run uses the folder --box (default "stressbox"), deleted and re-created
before the run, so it never touches anyone's INBOX. Prints imaptest's totals line and the
mean ops/s (total operations / secs).
"""

from __future__ import annotations

import argparse
import imaplib
import os
import ssl
import subprocess
import sys
from pathlib import Path


def reset_box(host: str, port: int, user: str, password: str, box: str) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    m = imaplib.IMAP4_SSL(host, port, ssl_context=ctx)
    try:
        m.login(user, password)
        m.delete(box)
        typ, data = m.create(box)
        if typ != "OK":
            sys.exit(f"CREATE {box} failed: {data!r}")
    finally:
        m.logout()


def tree_cpu(root: int) -> float:
    """CPU seconds (user+sys, with reaped children) of a process tree: Pochta's one
    process, or Dovecot's master with its imap processes."""
    kids: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            data = Path(f"/proc/{d}/stat").read_bytes()
        except OSError:
            continue
        f = data[data.rfind(b")") + 2 :].split()
        kids.setdefault(int(f[1]), []).append(int(d))
        ticks[int(d)] = sum(int(x) for x in f[11:15])
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += ticks.get(pid, 0)
        stack.extend(kids.get(pid, []))
    return total / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--mbox", required=True)
    ap.add_argument("--box", default="stressbox")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--secs", type=int, default=30)
    ap.add_argument("--logout0", action="store_true", help="imaptest logout=0")
    ap.add_argument("--out-dir", default="bench-results")
    ap.add_argument("--imaptest", default=os.environ.get("IMAPTEST", "imaptest"))
    ap.add_argument("--server-pid", type=int, help="report the server tree's CPU per op")
    a = ap.parse_args()
    reset_box(a.host, a.port, a.user, a.password, a.box)
    cmd = [a.imaptest, f"host={a.host}", f"port={a.port}", "ssl=any-cert", f"user={a.user}",
           f"pass={a.password}", f"mbox={a.mbox}", f"box={a.box}", f"clients={a.clients}",
           f"secs={a.secs}", "seed=1"]
    if a.logout0:
        cmd.append("logout=0")
    print("+", " ".join(cmd), flush=True)
    cpu0 = tree_cpu(a.server_pid) if a.server_pid else 0.0
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace", timeout=a.secs + 120)
    cpu = tree_cpu(a.server_pid) - cpu0 if a.server_pid else 0.0
    raw = Path(a.out_dir) / f"stress-{a.label}-{'nologout' if a.logout0 else 'default'}" \
        f"-c{a.clients}.txt"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(" ".join(cmd) + "\n" + proc.stdout)
    lines = proc.stdout.splitlines()
    # "Totals:", the command names, percentages, (optional) a second percentage row, counts
    at = max((i for i, x in enumerate(lines) if x.startswith("Totals:")), default=None)
    if at is None:
        sys.exit(f"no totals in {raw}")
    names = lines[at + 1].split()
    counts = next(x for x in lines[at + 2:] if x.strip() and "%" not in x)
    totals = [int(x) for x in counts.split()[: len(names)]]
    errors = sum(1 for x in lines if x.startswith("Error"))
    total = sum(totals)
    print(" ".join(f"{n}={t}" for n, t in zip(names, totals, strict=True)))
    print(f"{a.label}: {total} ops in {a.secs} s = {total / a.secs:.0f} ops/s,"
          f" {errors} imaptest errors; raw output in {raw}")
    if a.server_pid and total:
        print(f"{a.label}: server CPU {cpu:.1f} s ({cpu / a.secs:.2f} cores),"
              f" {cpu * 1000 / total:.3f} CPU-ms per op")

if __name__ == "__main__":
    main()
