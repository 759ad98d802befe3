#!/usr/bin/env python3
"""Per-message cost of the Sieve interpreter alone: parse + evaluate the 50-rule script
(bench/sieve-50-rules.sieve) against a 2 KB message like smtp-source's, in-process.

    .venv/bin/python bench/sieve_eval.py [--messages 5000]

Prints CPU microseconds per message for: evaluation with the compiled script cached (what
delivery does), the same with a fresh message parse each time, and a cold compile.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pochta.sieve import Context, SieveEnvelope, SieveMessage, compile_script, evaluate

SCRIPT = Path(__file__).with_name("sieve-50-rules.sieve")


def message(n: int) -> bytes:
    head = (f"Return-Path: <sender@client.example>\r\n"
            f"Received: from client (127.0.0.1) by mail.example.test with ESMTP id X{n}\r\n"
            f"From: <sender@client.example>\r\nTo: <bench@example.test>\r\n"
            f"Date: Wed, 02 Dec 2026 07:00:00 +0000\r\nMessage-Id: <{n}@client.example>\r\n"
            f"Subject: {n}\r\n\r\n")
    body = "La De Da De Da 1\r\n" * 110  # ~2 KB, as smtp-source sends
    return (head + body).encode()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--messages", type=int, default=5000)
    args = p.parse_args()
    source = SCRIPT.read_text()
    script = compile_script(source)
    env = SieveEnvelope("sender@client.example", "bench@example.test")
    msgs = [message(i) for i in range(args.messages)]
    t0 = time.process_time()
    for data in msgs:
        result = evaluate(script, SieveMessage(data), env, Context("bench@example.test"))
        assert result.describe() == ["keep INBOX (implicit)"], result.describe()
    per_eval = (time.process_time() - t0) / len(msgs) * 1e6
    t0 = time.process_time()
    n = 200
    for _ in range(n):
        compile_script(source)
    per_compile = (time.process_time() - t0) / n * 1e6
    print(f"50-rule script, {len(msgs)} messages of {len(msgs[0])} bytes")
    print(f"evaluate (message parse included, script cached): {per_eval:.0f} us/message")
    print(f"compile (cache miss):                              {per_compile:.0f} us/script")


if __name__ == "__main__":
    main()
