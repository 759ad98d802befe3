#!/usr/bin/env python3
"""Server memory with N idle SMTP clients connected.

Opens ``--conns`` connections to an SMTP server, reads each greeting, sends ``EHLO`` (so
the session is past the greeting timeout and waits under the 300 s command timeout,
RFC 5321 4.5.3.2), then holds them all open. It reports the server process tree's RSS
and PSS (``/proc/<pid>/smaps_rollup``) before, with all connections open, and after they
are closed, the difference per connection, and the server CPU used while they sat idle.

    bench/idle_memory.py --port 2525 --pid $(pgrep -f 'pochta-bench/pochta.toml serve')

The client raises its own fd limit (soft to hard); the server needs ``ulimit -n`` above
``--conns`` too, and its ``limits.max_connections(_per_ip)`` and
``limits.mta_max_connections(_per_ip)`` above ``--conns``
(bench/pochta_instance.sh sets 5000).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import time
from typing import Any

CLK = os.sysconf("SC_CLK_TCK")


def tree(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                data = f.read().decode(errors="replace")
        except OSError:
            continue
        ppid = int(data[data.rindex(")") + 2:].split()[1])
        parents.setdefault(ppid, []).append(int(p))
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(parents.get(pid, []))
    return out


def memory_kb(root: int) -> dict[str, int]:
    """Summed Rss and Pss (KiB) of the process tree."""
    total = {"rss_kb": 0, "pss_kb": 0, "procs": 0}
    for pid in tree(root):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    key, _, rest = line.partition(":")
                    if key in ("Rss", "Pss"):
                        total[key.lower() + "_kb"] += int(rest.split()[0])
            total["procs"] += 1
        except OSError:
            continue
    return total


def cpu_s(root: int) -> float:
    total = 0
    for pid in tree(root):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                data = f.read().decode(errors="replace")
        except OSError:
            continue
        total += sum(int(x) for x in data[data.rindex(")") + 2:].split()[11:15])
    return total / CLK


async def open_one(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    greeting = await reader.readline()
    if not greeting.startswith(b"220"):
        raise ConnectionError(f"greeting {greeting[:80]!r}")
    writer.write(b"EHLO idle-client.example.net\r\n")
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed during EHLO")
        if line[3:4] == b" ":
            if not line.startswith(b"250"):
                raise ConnectionError(f"EHLO reply {line[:80]!r}")
            break
    return reader, writer


async def run(args: argparse.Namespace) -> dict[str, Any]:
    pid = args.pid
    res: dict[str, Any] = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "port": args.port,
                           "conns": args.conns}
    await asyncio.sleep(1)
    res["before"] = memory_kb(pid)
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    errors: list[str] = []
    t0 = time.monotonic()
    sem = asyncio.Semaphore(args.batch)

    async def opener() -> None:
        async with sem:
            try:
                conns.append(await open_one(args.host, args.port))
            except (OSError, ConnectionError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:160])

    await asyncio.gather(*(opener() for _ in range(args.conns)))
    res["open_s"] = round(time.monotonic() - t0, 2)
    res["open_ok"] = len(conns)
    res["open_errors"] = len(errors)
    res["error_samples"] = sorted(set(errors))[:5]
    await asyncio.sleep(args.settle)
    res["with_conns"] = memory_kb(pid)
    c0 = cpu_s(pid)
    await asyncio.sleep(args.idle)
    res["idle_cpu_share"] = round((cpu_s(pid) - c0) / args.idle, 4)
    # still connected? a server that timed us out would have sent 421 and closed
    alive = sum(1 for r, _ in conns if not r.at_eof())
    res["still_open_after_idle"] = alive
    for _, w in conns:
        w.close()
    await asyncio.gather(*(w.wait_closed() for _, w in conns), return_exceptions=True)
    await asyncio.sleep(args.settle)
    res["after_close"] = memory_kb(pid)
    n = max(1, len(conns))
    res["per_conn_kb"] = {
        k: round((res["with_conns"][k] - res["before"][k]) / n, 1)
        for k in ("rss_kb", "pss_kb")
    }
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=2525)
    p.add_argument("--pid", type=int, required=True, help="server (root) process id")
    p.add_argument("--conns", type=int, default=1000)
    p.add_argument("--batch", type=int, default=50, help="connections opened at once")
    p.add_argument("--settle", type=float, default=3.0, help="seconds before measuring")
    p.add_argument("--idle", type=float, default=10.0, help="seconds to measure idle CPU")
    p.add_argument("--label", default="")
    p.add_argument("--results", help="append the JSON result to this file")
    args = p.parse_args()
    if not (args.host.startswith("127.") or args.host == "::1"):
        raise SystemExit("idle_memory: loopback targets only")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.conns + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    res = asyncio.run(run(args))
    res["label"] = args.label or f"port{args.port}"
    line = json.dumps(res)
    print(line)
    if args.results:
        with open(args.results, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
