"""Response times of /metrics and the web admin's dashboard and pages with many accounts,
queue items and messages in the store (issue 19: dashboard under 200 ms, /metrics under
50 ms).

An in-process server on a fresh SQLite data directory (loopback, ephemeral ports): N
accounts over 10 domains, Q queued remote recipients, M locally delivered messages; then
R requests of each page over one keep-alive HTTPS connection, median and worst.

    .venv/bin/python bench/web_pages.py --accounts 10000 --queue 2000 --messages 20000
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import re
import ssl
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

from argon2 import PasswordHasher

from pochta import passwords
from pochta.config import from_dict
from pochta.server.app import build_context, start_server
from pochta.storage.interfaces import Envelope, LocalTarget, RemoteRecipient
from pochta.tlsutil import generate_self_signed


async def main(args: argparse.Namespace) -> None:
    passwords.set_hasher(PasswordHasher(time_cost=1, memory_cost=256, parallelism=1))
    work = Path(tempfile.mkdtemp(prefix="pochta-web-bench-"))
    generate_self_signed("mail.bench.test", work / "cert.pem", work / "key.pem")
    config = from_dict({
        "hostname": "mail.bench.test", "data_dir": "data", "base_dir": str(work),
        "tls": {"cert": str(work / "cert.pem"), "key": str(work / "key.pem")},
        "listeners": [{"role": "http", "port": 0, "tls": "implicit", "address": "127.0.0.1"}],
    })
    ctx = await build_context(config)
    store = ctx.store
    t0 = time.monotonic()
    pw = passwords.hash_password("bench-password")
    ids = []
    for d in range(10):
        await store.add_domain(f"d{d}.bench.test")
    for n in range(args.accounts):
        account = await store.add_account(f"user{n}@d{n % 10}.bench.test", pw, None)
        ids.append(account.id)
    msg = b"From: a@remote.test\r\nSubject: bench <b>\r\n\r\n" + b"x" * 2000 + b"\r\n"
    env = Envelope(sender="a@remote.test")
    for n in range(args.messages):
        await store.accept(msg, env, [LocalTarget(ids[n % len(ids)], "INBOX")], [])
    for n in range(args.queue):
        await store.accept(msg, env, [], [RemoteRecipient(f"r{n}@remote.test")])
    await store.add_admin("root", pw, time.time())
    print(f"store filled in {time.monotonic() - t0:.1f} s: {args.accounts} accounts, "
          f"{args.messages} messages, {args.queue} queued")
    running = await start_server(ctx, run_queue=False)
    port = running.port("http")

    def measure() -> None:
        tls = ssl.create_default_context(cafile=str(work / "cert.pem"))
        tls.check_hostname = False
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=tls)

        def call(method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            resp.read()
            return resp

        conn.request("GET", "/login")
        resp = conn.getresponse()
        page = resp.read().decode()
        pre = resp.getheader("Set-Cookie", "").split(";")[0]
        token = re.search(r'name="csrf" value="([^"]+)"', page)
        assert token
        resp = call("POST", "/login", urlencode({"username": "root",
                                                 "password": "bench-password",
                                                 "csrf": token.group(1)}).encode(),
                    {"Content-Type": "application/x-www-form-urlencoded", "Cookie": pre})
        cookies = [v.split(";")[0] for k, v in resp.getheaders() if k == "Set-Cookie"]
        session = next(c for c in cookies if c.startswith("__Host-pochta-session="))
        for path in ("/metrics", "/admin", "/admin/domains", "/admin/queue",
                     "/admin/accounts?domain=d1.bench.test"):
            times = []
            for _ in range(args.requests):
                started = time.perf_counter()
                resp = call("GET", path, headers={"Cookie": session})
                times.append((time.perf_counter() - started) * 1000)
                assert resp.status == 200, (path, resp.status)
            print(f"{path:<40} median {statistics.median(times):7.1f} ms   "
                  f"worst {max(times):7.1f} ms")

    await asyncio.to_thread(measure)
    await running.close(grace=1.0)
    await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=10000)
    parser.add_argument("--queue", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--requests", type=int, default=20)
    asyncio.run(main(parser.parse_args()))
