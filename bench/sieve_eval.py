#!/usr/bin/env python3
"""Per-message cost of Sieve, in-process: the 50-rule script (bench/sieve-50-rules.sieve)
against 2 KB messages like smtp-source's.

    .venv/bin/python bench/sieve_eval.py [--messages 3000] [--repeat 5]

Prints CPU microseconds per message (best of --repeat passes, so other load on the
machine inflates it least) for:

- evaluate: the interpreter alone (message parsed, 50 rules, compiled script given);
- delivery: what Sieve adds to one delivery, as ``DeliveryService.deliver`` runs it
  (``SieveService.wants`` and ``accept`` for one local recipient, the active script read
  through the service's cache), with a store that answers from memory and stores nothing,
  so only Sieve's own work is counted;
- compile: a cold compile of the script.

To compare with other code, run this file with that code first on the path:
``PYTHONPATH=/tmp/old/src .venv/bin/python bench/sieve_eval.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace

from pochta.services.sieve import SieveService
from pochta.sieve import Context, SieveEnvelope, SieveMessage, compile_script, evaluate
from pochta.sieve.settings import SieveConfig
from pochta.storage.interfaces import AcceptResult, Envelope, LocalTarget, RemoteRecipient

SCRIPT = Path(__file__).with_name("sieve-50-rules.sieve")
USER = "bench@example.test"


def message(n: int) -> bytes:
    head = (f"Return-Path: <sender@client.example>\r\n"
            f"Received: from client (127.0.0.1) by mail.example.test with ESMTP id X{n}\r\n"
            f"From: <sender@client.example>\r\nTo: <bench@example.test>\r\n"
            f"Date: Wed, 02 Dec 2026 07:00:00 +0000\r\nMessage-Id: <{n}@client.example>\r\n"
            f"Subject: {n}\r\n\r\n")
    body = "La De Da De Da 1\r\n" * 110  # ~2 KB, as smtp-source sends
    return (head + body).encode()


class MemoryStore:
    """What delivery with Sieve asks of the store for mail the script keeps in INBOX."""

    def __init__(self, source: str) -> None:
        self.source = source

    async def get_active_sieve_script(self, account_id: int) -> tuple[str, str] | None:
        return "sieve-50-rules", self.source

    async def get_account_by_id(self, account_id: int) -> SimpleNamespace:
        return SimpleNamespace(id=account_id, address=USER)

    async def accept(self, data: bytes, envelope: Envelope, local: Sequence[LocalTarget],
                     remote: Sequence[RemoteRecipient], message_id: str | None = None
                     ) -> AcceptResult:
        return AcceptResult(message_id or "", 0, ())


def best(passes: int, n: int, run: Callable[[], object]) -> float:
    """CPU microseconds per message, the best of ``passes``."""
    out = float("inf")
    for _ in range(passes):
        t0 = time.process_time()
        run()
        out = min(out, (time.process_time() - t0) / n * 1e6)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--messages", type=int, default=3000)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    source = SCRIPT.read_text()
    script = compile_script(source)
    env = SieveEnvelope("sender@client.example", USER)
    msgs = [message(i) for i in range(args.messages)]

    def run_evaluate() -> None:
        for data in msgs:
            result = evaluate(script, SieveMessage(data), env, Context(USER))
            assert result.describe() == ["keep INBOX (implicit)"], result.describe()

    service = SieveService(MemoryStore(source), SieveConfig(), "mail.example.test")  # type: ignore[arg-type]
    envelope = Envelope(sender="sender@client.example")
    local = [LocalTarget(1)]
    loop = asyncio.new_event_loop()

    async def deliveries() -> None:
        for i, data in enumerate(msgs):
            assert await service.wants(local)
            await service.accept(data, envelope, local, [], f"Q{i}", {1: USER}, "127.0.0.1")

    per_eval = best(args.repeat, len(msgs), run_evaluate)
    per_delivery = best(args.repeat, len(msgs), lambda: loop.run_until_complete(deliveries()))
    per_compile = best(args.repeat, 20, lambda: [compile_script(source) for _ in range(20)])
    print(f"50-rule script, {len(msgs)} messages of {len(msgs[0])} bytes, "
          f"best of {args.repeat} passes")
    print(f"evaluate (message parse included, script compiled): {per_eval:.0f} us/message")
    print(f"delivery (what Sieve adds, store in memory):         {per_delivery:.0f} us/message")
    print(f"compile (cold):                                      {per_compile:.0f} us/script")


if __name__ == "__main__":
    main()
