#!/usr/bin/env python3
"""Submission throughput: whole sessions per second over implicit TLS with AUTH PLAIN.

One session = TCP connect, TLS handshake (port 465 style), EHLO, AUTH PLAIN with an
initial response, MAIL/RCPT/DATA of one ~2 KB message, QUIT. ``--concurrency`` sessions
run at once, spread over ``--procs`` client processes (threads inside each, blocking
``smtplib``), so the client's own CPU is not held behind one GIL. The client's CPU and,
with ``--server-tree label:pid``, the server's process-tree CPU are reported per session
so you can check the client was not the bottleneck.

    # Pochta (bench/pochta_instance.sh; port 2465)
    bench/submission.py --port 2465 --user bench@example.test --password bench-pass-123 \\
        --server-tree pochta:$(pgrep -f 'pochta-bench/pochta.toml serve')
    # the Postfix+Dovecot reference (port 12465)
    bench/submission.py --port 12465 --user bench@refstack.test --password bench-secret-0 \\
        --rcpt smtpbench@refstack.test \\
        --server-tree postfix:/var/spool/postfix/pid/master.pid \\
        --server-tree dovecot:/run/dovecot/master.pid

Prints one JSON object (and appends it to ``--results`` if given).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import smtplib
import ssl
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any

CLK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Job:
    host: str
    port: int
    user: str
    password: str
    rcpt: str
    size: int
    threads: int
    deadline: float  # time.time() after which no new session starts
    start_at: float  # time.time() when every process starts its first session


def message(user: str, rcpt: str, size: int, n: int) -> bytes:
    head = (f"From: <{user}>\r\nTo: <{rcpt}>\r\nSubject: submission bench {n}\r\n"
            f"Message-ID: <bench-{os.getpid()}-{n}-{time.time_ns()}@bench.invalid>\r\n\r\n")
    line = b"x" * 76 + b"\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    return head.encode() + body


def one_session(job: Job, ctx: ssl.SSLContext, n: int) -> None:
    with smtplib.SMTP_SSL(job.host, job.port, context=ctx, timeout=60) as s:
        s.ehlo("bench-client.example.net")
        s.user, s.password = job.user, job.password
        code, resp = s.auth("PLAIN", s.auth_plain, initial_response_ok=True)
        if code != 235:
            raise smtplib.SMTPAuthenticationError(code, resp)
        s.sendmail(job.user, [job.rcpt], message(job.user, job.rcpt, job.size, n))


def worker(job: Job, out: Any) -> None:
    """One client process: ``job.threads`` threads loop sessions until the deadline."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # self-signed certificates on both servers
    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def loop() -> None:
        n = 0
        while time.time() < job.deadline:
            t = time.perf_counter()
            try:
                one_session(job, ctx, n)
                dt = time.perf_counter() - t
                with lock:
                    lat.append(dt)
            except (OSError, smtplib.SMTPException) as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
            n += 1

    time.sleep(max(0.0, job.start_at - time.time()))
    threads = [threading.Thread(target=loop) for _ in range(job.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out.put({"lat": lat, "errors": errors, "cpu": ru.ru_utime + ru.ru_stime})


def _stat(pid: int) -> tuple[int, int] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    rest = data[data.rindex(")") + 2:].split()
    return int(rest[1]), sum(int(x) for x in rest[11:15])


def tree_cpu(root: int) -> float:
    """CPU seconds of a process tree: own + reaped children + live descendants."""
    procs = {int(p): st for p in os.listdir("/proc") if p.isdigit() and (st := _stat(int(p)))}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    total, stack = 0, [root] if root in procs else []
    while stack:
        p = stack.pop()
        total += procs[p][1]
        stack.extend(children.get(p, []))
    return total / CLK


def resolve(spec: str) -> tuple[str, int]:
    label, _, ref = spec.partition(":")
    if ref.isdigit():
        return label, int(ref)
    with open(ref) as f:
        return label, int(f.read().split()[0])


def machine_busy() -> tuple[float, float]:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return (sum(v[:8]) - idle) / CLK, sum(v[:8]) / CLK


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--rcpt", help="envelope recipient (default: the user)")
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--procs", type=int, default=2, help="client processes")
    p.add_argument("--duration", type=float, default=20.0, help="seconds")
    p.add_argument("--server-tree", action="append", default=[], metavar="LABEL:PID_OR_PIDFILE")
    p.add_argument("--label", default="")
    p.add_argument("--results", help="append the JSON result to this file")
    args = p.parse_args()
    if not (args.host.startswith("127.") or args.host == "::1"):
        raise SystemExit("submission: loopback targets only")
    procs = min(args.procs, args.concurrency)
    per = [args.concurrency // procs + (1 if i < args.concurrency % procs else 0)
           for i in range(procs)]
    start_at = time.time() + 1.0
    roots = dict(resolve(s) for s in args.server_tree)
    queue: Any = mp.Queue()
    workers = [
        mp.Process(target=worker, args=(Job(
            args.host, args.port, args.user, args.password, args.rcpt or args.user,
            args.size, n, start_at + args.duration, start_at), queue))
        for n in per
    ]
    for w in workers:
        w.start()
    time.sleep(max(0.0, start_at - time.time()))
    cpu0 = {k: tree_cpu(v) for k, v in roots.items()}
    busy0, tot0 = machine_busy()
    t0 = time.monotonic()
    parts = [queue.get() for _ in workers]
    elapsed = time.monotonic() - t0
    busy1, tot1 = machine_busy()
    cpu1 = {k: tree_cpu(v) for k, v in roots.items()}
    for w in workers:
        w.join()
    lat = sorted(x for part in parts for x in part["lat"])
    errors = [e for part in parts for e in part["errors"]]
    n = len(lat)
    client_cpu = sum(part["cpu"] for part in parts)
    res: dict[str, Any] = {
        "label": args.label or f"port{args.port}",
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "port": args.port, "concurrency": args.concurrency, "procs": procs,
        "size": args.size, "elapsed_s": round(elapsed, 2),
        "sessions": n, "errors": len(errors), "error_samples": sorted(set(errors))[:5],
        "sessions_per_s": round(n / elapsed, 1),
        "latency_ms": {
            "median": round(statistics.median(lat) * 1000, 1) if lat else None,
            "p90": round(lat[int(0.9 * (n - 1))] * 1000, 1) if lat else None,
            "max": round(lat[-1] * 1000, 1) if lat else None,
        },
        "client_cpu_ms_per_session": round(client_cpu * 1000 / n, 2) if n else None,
        "server_cpu_ms_per_session": {
            k: round((cpu1[k] - cpu0[k]) * 1000 / n, 2) if n else None for k in roots
        },
        "machine_util": round((busy1 - busy0) / (tot1 - tot0), 3) if tot1 > tot0 else None,
    }
    line = json.dumps(res)
    print(line)
    if args.results:
        with open(args.results, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
