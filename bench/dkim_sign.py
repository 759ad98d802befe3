"""DKIM signing cost per message: the previous signer (dkimpy: PEM re-read and parsed,
pure-Python RSA) against the current one (policy/dkim_sign.py: cached key, OpenSSL), side
by side in one run, for RSA-2048 and ed25519, on a 2 KB bulk message with
List-Unsubscribe headers. Each signature is checked with dkimpy once.

    .venv/bin/python bench/dkim_sign.py [--messages 300]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dkim as dkimpy

from pochta.policy import dkim

MESSAGE = (
    b"From: News <news@example.org>\r\nTo: ann@example.net\r\nSubject: Hello Ann\r\n"
    b"Date: Wed, 02 Dec 2026 10:00:00 +0000\r\nMessage-ID: <b1@example.org>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"List-Unsubscribe: <https://mail.example.org/unsubscribe/TOKEN>,\r\n"
    b" <mailto:bounces+ID.MAC@example.org?subject=unsubscribe>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nPrecedence: bulk\r\n\r\n"
    + b"Dear Ann,  your number is 42.\r\n" * 64
)


def dkimpy_sign(message: bytes, key: dkim.DKIMKey) -> bytes:
    """What policy/dkim.py did for every message before issue 18's change."""
    alg = b"rsa-sha256" if key.algorithm == "rsa" else b"ed25519-sha256"
    out: bytes = dkimpy.DKIM(message, linesep=b"\r\n").sign(
        key.selector.encode(), key.domain.encode(), key._dkimpy_private(),
        signature_algorithm=alg, canonicalize=(b"relaxed", b"relaxed"),
        include_headers=dkim.headers_to_sign(message))
    return out


def current_sign(message: bytes, key: dkim.DKIMKey) -> bytes:
    return dkim.sign_sync(message, [key])


def measure(fn: Callable[[bytes, dkim.DKIMKey], bytes], key: dkim.DKIMKey, n: int
            ) -> list[float]:
    times = []
    for i in range(n):
        msg = MESSAGE.replace(b"42", str(i).encode())
        t0 = time.perf_counter()
        fn(msg, key)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def check(fn: Callable[[bytes, dkim.DKIMKey], bytes], key: dkim.DKIMKey) -> None:
    record = dkim.dns_txt_record(key).encode()
    signed = fn(MESSAGE, key) + MESSAGE
    ok = dkimpy.DKIM(signed).verify(dnsfunc=lambda name, timeout=5: record)
    assert ok, f"{fn.__name__} {key.algorithm}: signature does not verify"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        keys = dkim.ensure_domain_keys(Path(tmp), "example.org")
        print("| key | signer | median ms/message | p95 ms | messages/s (one core) |")
        print("| --- | --- | ---: | ---: | ---: |")
        for key in keys:
            medians = {}
            for fn in (dkimpy_sign, current_sign):
                check(fn, key)
                n = args.messages if fn is current_sign or key.algorithm != "rsa" else max(
                    30, args.messages // 5)
                t = sorted(measure(fn, key, n))
                med = statistics.median(t)
                medians[fn.__name__] = med
                p95 = t[int(len(t) * 0.95) - 1]
                name = "dkimpy (before)" if fn is dkimpy_sign else "dkim_sign.py (now)"
                print(f"| {key.algorithm} | {name} | {med:.2f} | {p95:.2f} | "
                      f"{1000 / med:,.0f} |")
            print(f"| {key.algorithm} | speed-up | {medians['dkimpy_sign'] / medians['current_sign']:.1f}x | | |")  # noqa: E501


if __name__ == "__main__":
    main()
