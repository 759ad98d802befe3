"""The process's cache of parsed messages (server/imap_cache.py PartCache): concurrent
misses of one message read and parse it once, and its byte count stays exact, so the
cache keeps working after a folder is deleted, created again and filled again (the
imaptest stress pattern; a count that grew with every concurrent miss made the cache keep
almost nothing after a few runs)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pochta.proto.imap import bodystructure as bs
from pochta.server import imap_message
from pochta.server.imap_cache import PartCache
from pochta.storage.interfaces import MailboxInfo, MessageMeta
from tests.conftest import Server
from tests.imap.helpers import Client, connect


def _box(id_: int = 1, validity: int = 1) -> MailboxInfo:
    return MailboxInfo(id_, 1, "stressbox", validity, 1, 1, None, False)


def _message(i: int, size: int = 100) -> bytes:
    head = f"From: a@example.test\r\nSubject: m{i}\r\nMessage-ID: <{i}@x>\r\n\r\n".encode()
    return head + b"x" * (size - len(head))


def _held(cache: PartCache) -> int:
    return sum(size for _, size in cache.parts.values())


async def test_concurrent_misses_load_and_parse_once() -> None:
    parses: list[int] = []
    real_parse = bs.parse

    def parse(data: bytes, *args: Any, **kw: Any) -> bs.Part:
        parses.append(len(data))
        return real_parse(data, *args, **kw)

    cache = PartCache(max_bytes=16 << 10, parse=parse)
    loads: list[int] = []

    async def fetch_all(box: MailboxInfo, uid: int, data: bytes) -> list[bs.Part | None]:
        async def load() -> bytes:
            loads.append(uid)
            await asyncio.sleep(0.001)  # a segment read in a thread: others run meanwhile
            return data

        meta = MessageMeta(uid, 100 + uid, len(data), 1.0, frozenset(), 1)
        return await asyncio.gather(*(cache.get(box, meta, load) for _ in range(10)))

    parts = await fetch_all(_box(), 1, _message(1))
    assert loads == [1] and len(parses) == 1
    assert all(p is parts[0] for p in parts)
    assert cache.size == _held(cache) == 100
    assert not cache.loading
    # churn past the bound: the count stays the bytes really held, the cache stays full
    for rnd in range(1, 6):
        for uid in range(1, 40):
            await fetch_all(_box(rnd, rnd), uid, _message(uid, 1000))
        assert cache.size == _held(cache) <= cache.max_bytes
        assert len(cache.parts) == 16  # 16 KB of 1,000-byte messages
    assert len(loads) == 1 + 5 * 39


async def test_failed_or_cancelled_reader_lets_waiters_read() -> None:
    cache = PartCache()
    meta = MessageMeta(1, 7, 100, 1.0, frozenset(), 1)
    started = asyncio.Event()

    async def failing() -> bytes:
        started.set()
        await asyncio.sleep(0.01)
        raise OSError("disk")

    async def good() -> bytes:
        return _message(1)

    first = asyncio.create_task(cache.get(_box(), meta, failing))
    await started.wait()
    second = await cache.get(_box(), meta, good)  # waits for the first, then reads itself
    with pytest.raises(OSError):
        await first
    assert second is not None and second.raw == _message(1)
    assert cache.size == 100 and not cache.loading

    meta2 = MessageMeta(2, 8, 100, 1.0, frozenset(), 1)
    started.clear()

    async def slow() -> bytes:
        started.set()
        await asyncio.sleep(10)
        return _message(2)

    reader = asyncio.create_task(cache.get(_box(), meta2, slow))
    await started.wait()
    waiter = asyncio.create_task(cache.get(_box(), meta2, good))
    await asyncio.sleep(0)
    reader.cancel()  # the reading client went away: the waiter still gets its answer
    part = await asyncio.wait_for(waiter, 2)
    assert part is not None and part.raw == _message(1)
    assert not cache.loading
    with pytest.raises(asyncio.CancelledError):
        await reader


async def _fill(c: Client, messages: list[bytes]) -> None:
    for msg in messages:
        resp = await c.cmd(b"APPEND stressbox {%d+}\r\n" % len(msg) + msg)
        assert b"OK" in resp[-1], resp


async def test_fetch_reads_each_message_once_across_delete_and_recreate(
    imap_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six clients FETCH the same messages at once, in a folder deleted, created and
    filled again with the same messages three times. Right after the APPENDs only the
    big messages are read from the store (APPEND kept the others' bytes); with the cache
    emptied (a restart), each message is read once however many clients miss it together
    (big ones too, whose reads run in a thread); the cache's count is the bytes it
    holds."""
    # FETCH's reads of message bytes (the store's read_blob is also called by the
    # background search-text keeper on PostgreSQL)
    reads: list[int] = []
    real_load = imap_message._load

    async def load(s: Any, meta: MessageMeta) -> bytes | None:
        reads.append(meta.blob_id)
        return await real_load(s, meta)

    monkeypatch.setattr(imap_message, "_load", load)
    # small ones stored in the index; big ones (over 64 KB) in segment files
    messages = [_message(i, 3000) for i in range(4)] + [_message(i, 90_000) for i in range(4, 8)]
    clients = [connect(imap_server) for _ in range(6)]
    cs = [await c.__aenter__() for c in clients]

    async def fetch_everywhere() -> None:
        answers = await asyncio.gather(
            *(c.cmd("FETCH 1:* (BODYSTRUCTURE BODY.PEEK[])") for c in cs))
        for resp in answers:
            assert b"OK" in resp[-1]
            bodies = [line for line in resp if b" FETCH (" in line]
            assert len(bodies) == len(messages)
            for line, msg in zip(bodies, messages, strict=True):
                assert line.endswith(b"{%d}\r\n" % len(msg) + msg + b")\r\n")

    try:
        for c in cs:
            await c.login()
        for _round in range(3):
            await cs[0].cmd("DELETE stressbox")
            assert b"OK" in (await cs[0].cmd("CREATE stressbox"))[-1]
            await _fill(cs[0], messages)
            for c in cs:
                assert b"OK" in (await c.cmd("SELECT stressbox"))[-1]
            reads.clear()
            await fetch_everywhere()
            assert len(reads) == 4  # only the big ones: spooled to a file as they came
            cache = imap_server.ctx.imap_parts = PartCache()
            reads.clear()
            await fetch_everywhere()
            assert len(reads) == len(messages), reads
            assert cache.size == _held(cache) == sum(map(len, messages))
    finally:
        for client in clients:
            await client.__aexit__(None, None, None)


async def test_fetch_rfc822_of_cached_message(imap_server: Server) -> None:
    """RFC822 and BODY[] send the whole message from the cached part (FETCH passes the
    part alone): the same octets right after APPEND, and read again after a restart."""
    msg = _message(1, 2000)
    async with connect(imap_server) as c:
        await c.login()
        assert b"OK" in (await c.cmd("CREATE stressbox"))[-1]
        await _fill(c, [msg])
        await c.cmd("SELECT stressbox")
        for _ in range(2):
            resp = await c.cmd("FETCH 1 (RFC822 BODY.PEEK[] RFC822.SIZE)")
            literal = b"{%d}\r\n" % len(msg) + msg
            assert resp[0].startswith(b"* 1 FETCH (RFC822 " + literal + b" BODY[] " + literal
                                      + b" RFC822.SIZE %d" % len(msg)), resp  # FLAGS the first time
            imap_server.ctx.imap_parts = PartCache()
