"""Outbound throughput with MTA-STS and DANE caches warm vs plain opportunistic TLS, side
by side in one process (issue 20: "within 10 % of today's").

N queued 2 KB messages to d0..d9.test, MX-routed (not static routes, so the policy hook
runs) to one STARTTLS-capable recording SMTP server on loopback. Three configurations, run
in turn, round after round, each on a fresh store:

* ``plain``: today's worker (no policy hook, no TLS-RPT observer);
* ``mta-sts``: MTA-STS enforce for every domain, policy already cached in the store, TXT
  ids already checked (the warm path), the certificate verified against a test CA,
  TLS-RPT results recorded;
* ``dane``: DANE-EE for every MX host through a resolver double that answers from memory
  (the AD bit set), TLS-RPT results recorded.

    .venv/bin/python bench/outbound_tls_policy.py --messages 3000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402

from pochta.dns import MX, StaticResolver  # noqa: E402
from pochta.queue.dane import DANE, StaticDNSSECResolver, spki_of  # noqa: E402
from pochta.queue.routing import ConfigTLSPolicy  # noqa: E402
from pochta.queue.settings import QueueConfig  # noqa: E402
from pochta.queue.worker import QueueWorker  # noqa: E402
from pochta.storage.interfaces import Envelope, RemoteRecipient  # noqa: E402
from pochta.storage.interfaces_transport import CachedSTSPolicy  # noqa: E402
from pochta.storage.sqlite import SQLiteStore  # noqa: E402
from pochta.transport_security.mtasts import MTASTS, HTTPSPolicyFetcher  # noqa: E402
from pochta.transport_security.policy import TransportSecurityPolicy  # noqa: E402
from pochta.transport_security.tlsrpt import TLSResultRecorder  # noqa: E402
from tests.queue.sink import Sink  # noqa: E402
from tests.transport.pki import CA  # noqa: E402

DOMAINS = 10


def message(i: int) -> bytes:
    head = (b"From: Bench <bench@example.test>\r\nTo: user%d@d%d.test\r\n"
            b"Subject: outbound %d\r\n\r\n" % (i, i % DOMAINS, i))
    return head + (b"x" * 76 + b"\r\n") * ((2048 - len(head)) // 78)


async def one_run(kind: str, n: int, ca: CA, chain: Path, key: Path, tmp: Path) -> float:
    from pochta.tlsutil import server_context

    sink = Sink(tls_context=server_context(chain, key))
    await sink.start()
    resolver = StaticResolver()
    for d in range(DOMAINS):
        resolver.mx_records[f"d{d}.test"] = [MX(10, f"mx.d{d}.test")]
        resolver.a_records[f"mx.d{d}.test"] = ["127.0.0.1"]
        resolver.txt_records[f"_mta-sts.d{d}.test"] = ["v=STSv1; id=1"]
    store = await SQLiteStore.open(tmp / f"{kind}-{time.monotonic_ns()}")
    config = QueueConfig(smtp_port=sink.port, per_destination=4, concurrency=20,
                         messages_per_connection=100)
    kw: dict[str, object] = {}
    if kind != "plain":
        mtasts = None
        dane = None
        if kind == "mta-sts":
            for d in range(DOMAINS):
                await store.put_sts_policy(CachedSTSPolicy(
                    f"d{d}.test", "1", "enforce", (f"mx.d{d}.test",), 86400, time.time()))
            mtasts = MTASTS(store, resolver, HTTPSPolicyFetcher(resolver, port=9))
            for d in range(DOMAINS):  # warm: the TXT id was checked a moment ago
                await mtasts.policy(f"d{d}.test")
        else:
            der = x509.load_pem_x509_certificates(chain.read_bytes())[0].public_bytes(
                serialization.Encoding.DER)
            tlsa = f"3 1 1 {hashlib.sha256(spki_of(der)).hexdigest()}"
            records: dict[tuple[str, str], list[str]] = {}
            secure = set()
            for d in range(DOMAINS):
                records[(f"d{d}.test", "MX")] = [f"10 mx.d{d}.test."]
                records[(f"_{sink.port}._tcp.mx.d{d}.test", "TLSA")] = [tlsa]
                secure |= {f"d{d}.test", f"mx.d{d}.test", f"_{sink.port}._tcp.mx.d{d}.test"}
            dane = DANE(StaticDNSSECResolver(records, secure, set()), port=sink.port)
        kw = {"tls_policy": TransportSecurityPolicy(ConfigTLSPolicy([]), mtasts, dane),
              "tls_observer": TLSResultRecorder(store), "cafile": str(ca.cafile)}
    worker = QueueWorker(store, "bench.example.test", resolver, config, **kw)  # type: ignore[arg-type]
    for i in range(n):
        await store.accept(message(i), Envelope(sender="bench@example.test"), [],
                           [RemoteRecipient(f"user{i}@d{i % DOMAINS}.test")])
    start = time.perf_counter()
    while len(sink.messages) < n:
        await worker.run_once()
    elapsed = time.perf_counter() - start
    assert all(m.tls for m in sink.messages)
    await store.close()
    await sink.close()
    return n / elapsed


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        ca = CA(tmp / "ca")
        chain, key = ca.issue(*(f"mx.d{d}.test" for d in range(DOMAINS)))
        results: dict[str, list[float]] = {"plain": [], "mta-sts": [], "dane": []}
        for r in range(args.rounds):
            for kind in results:
                rate = await one_run(kind, args.messages, ca, chain, key, tmp)
                results[kind].append(rate)
                print(f"round {r + 1} {kind:8} {rate:8.1f} msg/s", flush=True)
        base = statistics.median(results["plain"])
        for kind, rates in results.items():
            med = statistics.median(rates)
            print(f"median {kind:8} {med:8.1f} msg/s  {100 * med / base:6.1f} % of plain")


if __name__ == "__main__":
    asyncio.run(main())
