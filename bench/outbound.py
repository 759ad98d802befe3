"""Outbound delivery throughput: Pochta's queue worker vs Postfix relaying the same load.

N queued 2 KB messages (default 10,000), one recipient each, spread over 10 destination
domains d0.test .. d9.test, all delivered to one Postfix ``smtp-sink`` on 127.0.0.1:2626.

Pochta: a fresh instance (bench/pochta_instance.sh, listener ports moved from 2xxx to 4xxx
so they do not collide with other benchmark servers) gets a static ``[[routes]]`` entry per
domain; the queue is filled through ``SQLiteStore.accept`` while the server is stopped, then
``pochta serve`` starts and the clock runs until every queue row is ``delivered``.

Postfix (the refstack on 12525): ``transport_maps`` sends d0..d9.test to
``smtp:[127.0.0.1]:2626`` and ``defer_transports = smtp`` holds the mail while it is
injected with ``sendmail`` (so ``mynetworks`` stays empty); the clock starts at
``defer_transports =`` + ``postfix reload`` + ``postqueue -f`` and stops when the queue no
longer holds any of the messages. The changed main.cf settings are restored at the end.

    .venv/bin/python bench/outbound.py --rounds 2 --systems pochta postfix \
        [--queue poll_interval=1 --queue per_destination=20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POCHTA = ROOT / ".venv" / "bin" / "pochta"
SINK_PORT = 2626
DOMAINS = 10
POSTFIX_KEYS = ("transport_maps", "defer_transports")
SPOOL = Path("/var/spool/postfix")


def message(i: int) -> bytes:
    head = (b"From: Bench <bench@example.test>\r\nTo: user%d@d%d.test\r\n"
            b"Subject: outbound %d\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
            b"Message-ID: <ob%d@example.test>\r\n\r\n" % (i, i % DOMAINS, i, i))
    line = b"x" * 76 + b"\r\n"
    body = line * ((2048 - len(head)) // len(line))
    return head + body


def cpu_seconds(pid: int) -> float:
    """User+system CPU of pid and its reaped children (/proc/PID/stat fields 14-17)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += cpu_seconds(pid)
    return total


def postfix_pids() -> list[int]:
    master = int((SPOOL / "pid" / "master.pid").read_text().split()[0])
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True,
                         check=True).stdout
    kids = [int(p) for p, pp in (ln.split() for ln in out.splitlines()) if int(pp) == master]
    return [master, *kids]


# --- the sink ---------------------------------------------------------------------------


def start_sink() -> subprocess.Popen[bytes]:
    sink = subprocess.Popen(["smtp-sink", "-u", "postfix", f"127.0.0.1:{SINK_PORT}", "1000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    if sink.poll() is not None:
        raise SystemExit(f"smtp-sink did not start (port {SINK_PORT} busy?)")
    return sink


# --- Pochta -----------------------------------------------------------------------------


async def fill_pochta(data_dir: Path, count: int, batch: int = 200) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from pochta.storage.interfaces import Envelope, RemoteRecipient
    from pochta.storage.sqlite import SQLiteStore

    store = await SQLiteStore.open(data_dir, commit_interval=0.05)
    try:
        env = Envelope(sender="bench@example.test")
        for start in range(0, count, batch):
            await asyncio.gather(*(
                store.accept(message(i), env, [],
                             [RemoteRecipient(f"user{i}@d{i % DOMAINS}.test")])
                for i in range(start, min(count, start + batch))))
    finally:
        await store.close()


def run_pochta(work: Path, count: int, queue: list[str], timeout: float) -> dict[str, object]:
    inst = work / "pochta"
    subprocess.run([str(ROOT / "bench" / "pochta_instance.sh"), str(inst)], check=True,
                   stdout=subprocess.DEVNULL)
    cfg = inst / "pochta.toml"
    text = cfg.read_text().replace("port = 2", "port = 4")
    routes = "".join(f'\n[[routes]]\ndomain = "d{d}.test"\nhost = "127.0.0.1"\n'
                     f'port = {SINK_PORT}\ntls = "none"\n' for d in range(DOMAINS))
    text += routes
    if queue:
        text += "\n[queue]\n" + "".join(f"{kv}\n" for kv in queue)
    cfg.write_text(text)
    t = time.monotonic()
    asyncio.run(fill_pochta(inst / "data", count))
    print(f"  pochta: queued {count} in {time.monotonic() - t:.1f} s", flush=True)
    db = sqlite3.connect(f"file:{inst / 'data' / 'pochta.db'}?mode=ro", uri=True, timeout=30)
    log = open(work / "pochta-serve.log", "wb")  # noqa: SIM115
    t0 = time.monotonic()
    proc = subprocess.Popen([str(POCHTA), "-c", str(cfg), "serve"], stdout=log, stderr=log)
    first = None
    done = 0
    try:
        while time.monotonic() - t0 < timeout:
            try:
                done = db.execute(
                    "SELECT count(*) FROM queue WHERE state='delivered'").fetchone()[0]
            except sqlite3.OperationalError:
                done = 0
            if done and first is None:
                first = time.monotonic() - t0
            if done >= count:
                break
            if proc.poll() is not None:
                raise SystemExit(f"pochta serve exited; see {work / 'pochta-serve.log'}")
            time.sleep(0.1)
        elapsed = time.monotonic() - t0
        cpu = cpu_seconds(proc.pid)
        states = dict(db.execute("SELECT state, count(*) FROM queue GROUP BY state").fetchall())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()
        db.close()
    return {"system": "pochta", "queue": queue, "delivered": done, "seconds": elapsed,
            "first_delivery_s": first, "msg_per_s": done / elapsed, "cpu_s": cpu,
            "states": states}


# --- Postfix ----------------------------------------------------------------------------


def postconf(*args: str) -> str:
    return subprocess.run(["postconf", *args], capture_output=True, text=True,
                          check=True).stdout


def queue_files(*dirs: str) -> int:
    return sum(len(files) for d in dirs for _, _, files in os.walk(SPOOL / d))


def run_postfix(count: int, timeout: float) -> dict[str, object]:
    transport = ", ".join(f"d{d}.test=smtp:[127.0.0.1]:{SINK_PORT}" for d in range(DOMAINS))
    postconf("-e", f"transport_maps = inline:{{{transport}}}", "defer_transports = smtp")
    subprocess.run(["postfix", "reload"], check=True, capture_output=True)
    base = queue_files("deferred", "active", "incoming", "maildrop")

    def inject(i: int) -> None:
        subprocess.run(["sendmail", "-i", "-f", "bench@example.test",
                        f"user{i}@d{i % DOMAINS}.test"], input=message(i), check=True)

    t = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(inject, range(count)))
    while queue_files("deferred") < base + count or queue_files("maildrop", "incoming") > 0:
        if time.monotonic() - t > timeout:
            raise SystemExit("postfix: injected mail did not reach the deferred queue")
        time.sleep(0.5)
    print(f"  postfix: queued {count} in {time.monotonic() - t:.1f} s", flush=True)
    time.sleep(2)
    pids = postfix_pids()
    cpu0 = tree_cpu(pids)
    t0 = time.monotonic()
    postconf("-e", "defer_transports =")
    subprocess.run(["postfix", "reload"], check=True, capture_output=True)
    subprocess.run(["postqueue", "-f"], check=True)
    left = count
    while time.monotonic() - t0 < timeout:
        left = queue_files("deferred", "active", "incoming") - base
        if left <= 0:
            break
        time.sleep(0.1)
    elapsed = time.monotonic() - t0
    # Postfix's smtp/qmgr processes are children of master; reaped ones count in master's
    # cutime/cstime only once master waits for them, so this is a lower bound.
    cpu = tree_cpu(postfix_pids()) - cpu0
    done = count - max(left, 0)
    return {"system": "postfix", "delivered": done, "seconds": elapsed,
            "msg_per_s": done / elapsed, "cpu_s_lower_bound": cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--systems", nargs="+", default=["pochta", "postfix"])
    ap.add_argument("--queue", action="append", default=[],
                    help="a [queue] line for Pochta, e.g. poll_interval=1 (repeatable)")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/pochta-outbound-bench"))
    ap.add_argument("--results", type=Path, default=None, help="append JSON lines here")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    saved = {k: postconf("-h", k).strip() for k in POSTFIX_KEYS}
    sink = start_sink()
    try:
        for rnd in range(args.rounds):
            for system in args.systems:
                if system == "pochta":
                    res = run_pochta(args.workdir, args.count, args.queue, args.timeout)
                else:
                    res = run_postfix(args.count, args.timeout)
                res["round"] = rnd + 1
                line = json.dumps(res)
                print(line, flush=True)
                if args.results:
                    with args.results.open("a") as f:
                        f.write(line + "\n")
    finally:
        sink.terminate()
        sink.wait(10)
        postconf("-e", *(f"{k} = {v}" for k, v in saved.items()))
        subprocess.run(["postfix", "reload"], capture_output=True)


if __name__ == "__main__":
    main()
