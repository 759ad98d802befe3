"""The delivery log says whether a hop used TLS and whether its certificate was checked:
a STARTTLS downgrade must be visible in ``status=sent`` lines."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pochta.storage.sqlite import SQLiteStore

from .conftest import FakeClock
from .sink import Sink

__all__ = ["sink"]  # the fixture
from .test_worker import enqueue, make_worker, resolver_for, sink, tls_sink


def sent_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "status=sent" in r.getMessage()]


async def test_sent_line_names_tls_version_and_unverified_cert(
    store: SQLiteStore, clock: FakeClock, tls_pair: tuple[Path, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pochta")
    s = tls_sink(tls_pair)
    await s.start()
    try:
        await enqueue(store, "bob@example.net")
        await make_worker(store, clock, resolver_for("example.net"), s.port).run_once()
    finally:
        await s.close()
    (line,) = sent_lines(caplog)
    assert "to=<bob@example.net> status=sent tls=TLSv1." in line, line
    assert "cert=unverified" in line  # opportunistic TLS does not check it


async def test_sent_line_shows_plaintext_hop(
    store: SQLiteStore, clock: FakeClock, sink: Sink, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pochta")
    await enqueue(store, "bob@example.net")
    await make_worker(store, clock, resolver_for("example.net"), sink.port).run_once()
    (line,) = sent_lines(caplog)
    assert "status=sent tls=none " in line, line
