"""Big messages never whole in memory: accept() from a spooled file and stream_blob()
in chunks (storage v2 issue, item 2)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pochta.storage.interfaces import Envelope, LocalTarget, SpooledMessage, StorageCorrupt
from pochta.storage.sqlite import SQLiteStore
from tests.storage.test_conformance import Factory, factory  # noqa: F401

ENV = Envelope(sender="a@elsewhere.test")


async def test_spooled_accept_and_streamed_reads(factory: Factory, tmp_path: Path  # noqa: F811
                                                 ) -> None:
    store = await factory(tmp_path / "data")
    await store.add_domain("example.test")
    a = await store.add_account("a@example.test", "x", None)
    for size in (10, 70_000, 3_000_001):
        spool = tmp_path / f"spool-{size}"
        body = bytes((n * 7 + size) % 251 for n in range(size))
        spool.write_bytes(body)
        prefix = b"Received: by test\r\n"
        result = await store.accept(SpooledMessage(str(spool), size, prefix), ENV,
                                    [LocalTarget(a.id)])
        whole = prefix + body
        assert await store.blob_size(result.blob_id) == len(whole)
        assert await store.read_blob(result.blob_id) == whole
        chunks = [c async for c in store.stream_blob(result.blob_id, chunk=65536)]
        assert b"".join(chunks) == whole and max(map(len, chunks)) <= 65536
        part = b"".join([c async for c in store.stream_blob(result.blob_id, 5, 1000)])
        assert part == whole[5:1005]
        box = await store.get_mailbox(a.id, "INBOX")
        assert box is not None
        assert (await store.list_messages(box.id))[-1].size == len(whole)
    await store.close()


async def test_stream_refuses_damaged_bytes_before_the_first_chunk(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path)
    await store.add_domain("example.test")
    a = await store.add_account("a@example.test", "x", None)
    result = await store.accept(b"Subject: x\r\n\r\n" + b"y" * 300_000, ENV,
                                [LocalTarget(a.id)])
    (segment,) = (tmp_path / "blobs").glob("*.seg")
    raw = bytearray(segment.read_bytes())
    raw[-10] ^= 1  # the last chunk is damaged: nothing may be given out
    segment.write_bytes(bytes(raw))
    got: list[bytes] = []
    with pytest.raises(StorageCorrupt):
        async for chunk in store.stream_blob(result.blob_id, chunk=1024):
            got.append(chunk)
    assert got == []
    await store.close()


MEASURE = r"""
import asyncio, hashlib, json, os, resource, sys
from pochta.storage.interfaces import Envelope, LocalTarget, SpooledMessage
from pochta.storage.sqlite import SQLiteStore

def rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

async def main():
    d = sys.argv[1]
    store = await SQLiteStore.open(d + "/data")
    await store.add_domain("example.test")
    a = await store.add_account("a@example.test", "x", None)
    spool = d + "/spool"
    with open(spool, "wb") as f:
        for n in range(25):
            f.write(bytes([65 + n]) * (1024 * 1024))
    before = rss_kb()
    r = await store.accept(SpooledMessage(spool, 25 * 1024 * 1024, b"X: y\r\n"),
                           Envelope("a@b.test"), [LocalTarget(a.id)])
    h = hashlib.sha256()
    async for chunk in store.stream_blob(r.blob_id):
        h.update(chunk)
    after = rss_kb()
    await store.close()
    print(json.dumps({"before_kb": before, "after_kb": after, "sha": h.hexdigest()}))

asyncio.run(main())
"""


def test_a_25_mb_message_costs_a_few_mb_of_memory(tmp_path: Path) -> None:
    """Peak RSS (VmHWM) of a process that accepts a 25 MB spooled message and streams it
    back grows by a few MB, not by the message's size."""
    out = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path)], check=True,
                         capture_output=True, text=True).stdout
    m = json.loads(out)
    expected = hashlib.sha256(b"X: y\r\n")
    for n in range(25):
        expected.update(bytes([65 + n]) * (1024 * 1024))
    assert m["sha"] == expected.hexdigest()
    grown_mb = (m["after_kb"] - m["before_kb"]) / 1024
    print(f"peak RSS grew by {grown_mb:.1f} MB for a 25 MB message")
    assert grown_mb < 8, m

