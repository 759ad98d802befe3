"""Batch API throughput: recipients accepted (queued and fsynced, events recorded) per
second through ``POST /v1/messages/batch``.

A fresh instance (bench/pochta_instance.sh, every listener port moved from 2xxx to 5xxx so
it collides with no other benchmark server) gets an API key, a static route sending the
recipient domains to ``smtp-sink`` on 127.0.0.1:5626 (so the queue worker delivers while
the batches arrive, as in production), and ``pochta serve``. The client sends N
recipients (default 100,000) as batches of 1,000 template recipients with per-recipient
variables, over C keep-alive HTTPS connections (default 4), and the clock runs from the
first request to the last reply. The store is then checked: N accepted events, N queue
rows.

    .venv/bin/python bench/sending_api.py --recipients 100000 --connections 4 [--dkim]
        [--stream bulk] [--plain-http]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POCHTA = ROOT / ".venv" / "bin" / "pochta"
SINK_PORT = 5626


def setup(workdir: Path, dkim: bool) -> tuple[str, int, int]:
    env = {**os.environ, "POCHTA": str(POCHTA)}
    subprocess.run(["bash", str(ROOT / "bench" / "pochta_instance.sh"), str(workdir)],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    cfg = workdir / "pochta.toml"
    text = cfg.read_text()
    for old in ("2525", "2587", "2465", "2143", "2993", "2110", "2995", "2080", "2443"):
        text = text.replace(f"port = {old}", f"port = 5{old[1:]}")
    if dkim:
        text = text.replace("[dkim]\nverify = false\nsign = false", "[dkim]\nverify = false")
    text += (f'\n[[routes]]\ndomain = "remote.test"\nhost = "127.0.0.1"\nport = {SINK_PORT}\n'
             'tls = "none"\n\n[queue]\nconcurrency = 20\n')
    cfg.write_text(text)
    key = subprocess.run([str(POCHTA), "-c", str(cfg), "apikey", "add", "example.test",
                          "--scope", "send,events"], check=True, capture_output=True,
                         text=True).stdout.strip()
    return key, 5443, 5080


def batch(start: int, size: int, stream: str) -> bytes:
    return json.dumps({
        "template": {"from": "News <news@example.test>", "subject": "Hello {{name}}",
                     "text": "Dear {{name}},\n\nyour number is {{n}}.\n" + "x" * 1500,
                     "tags": ["bench"], "stream": stream},
        "recipients": [{"to": f"user{i}@remote.test", "variables": {"name": f"U{i}", "n": i}}
                       for i in range(start, start + size)]}).encode()


def client(port: int, key: str, jobs: list[int], size: int, stream: str, tls: bool,
           errors: list[str]) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn: http.client.HTTPConnection = (
        http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=120) if tls
        else http.client.HTTPConnection("127.0.0.1", port, timeout=120))
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    for start in jobs:
        conn.request("POST", "/v1/messages/batch", body=batch(start, size, stream),
                     headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 202:
            errors.append(f"{resp.status} {body[:200]!r}")
    conn.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipients", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--workdir", default="/tmp/pochta-sending-bench")
    ap.add_argument("--dkim", action="store_true", help="sign every copy (the default "
                    "benchmark instance has DKIM signing off)")
    ap.add_argument("--stream", default="transactional")
    ap.add_argument("--plain-http", action="store_true")
    ap.add_argument("--drain", action="store_true", help="also wait until every copy is "
                    "delivered to smtp-sink (delivered events recorded) and time that")
    args = ap.parse_args()
    workdir = Path(args.workdir)
    key, https_port, http_port = setup(workdir, args.dkim)
    sink = subprocess.Popen(["smtp-sink", "-u", "postfix", "-c", f"127.0.0.1:{SINK_PORT}",
                             "1000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = (workdir / "server.log").open("w")  # open while the server runs
    server = subprocess.Popen([str(POCHTA), "-c", str(workdir / "pochta.toml"), "serve"],
                              stdout=subprocess.DEVNULL, stderr=log)
    try:
        import socket

        for _ in range(300):  # until the server listens
            try:
                socket.create_connection(("127.0.0.1", http_port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        starts = list(range(0, args.recipients, args.batch))
        per = [starts[i::args.connections] for i in range(args.connections)]
        errors: list[str] = []
        port = http_port if args.plain_http else https_port
        t0 = time.monotonic()
        threads = [threading.Thread(target=client, args=(port, key, jobs, args.batch,
                                                         args.stream, not args.plain_http,
                                                         errors)) for jobs in per]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.monotonic() - t0
        if errors:
            print("errors:", errors[:3], file=sys.stderr)
        db = sqlite3.connect(workdir / "data" / "pochta.db")
        drained = None
        delivered_at_accept_end = db.execute(
            "SELECT count(*) FROM queue WHERE state = 'delivered'").fetchone()[0]
        if args.drain:
            while True:
                done = db.execute("SELECT count(*) FROM sending_events WHERE kind = "
                                  "'delivered'").fetchone()[0]
                if done >= args.recipients:
                    break
                time.sleep(0.05)
            drained = time.monotonic() - t0
        accepted = db.execute("SELECT count(*) FROM sending_events WHERE kind = 'accepted'"
                              ).fetchone()[0]
        queued = db.execute("SELECT count(*) FROM queue").fetchone()[0]
        print(json.dumps({"recipients": args.recipients, "batch": args.batch,
                          "connections": args.connections, "dkim": args.dkim,
                          "stream": args.stream, "tls": not args.plain_http,
                          "seconds": round(took, 2),
                          "recipients_per_s": round(args.recipients / took),
                          "accepted_events": accepted, "queue_rows": queued,
                          "errors": len(errors),
                          **({"delivered_all_after_s": round(drained, 2),
                              "end_to_end_msg_per_s": round(args.recipients / drained),
                              "delivered_when_accepting_ended": delivered_at_accept_end,
                              "delivery_msg_per_s_after_accepting": round(
                                  (args.recipients - delivered_at_accept_end)
                                  / max(drained - took, 0.001))}
                             if drained else {})}))
        return 0 if not errors and accepted == args.recipients else 1
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        sink.terminate()
        sink.wait(10)
        log.close()


if __name__ == "__main__":
    raise SystemExit(main())
