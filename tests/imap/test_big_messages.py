"""Big messages over IMAP: APPEND spools the literal to a temporary file as it arrives,
FETCH sends BODY[]/BINARY[]/RFC822 (and partials, TEXT) from the store in chunks."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from pochta.server import imap_message
from tests.conftest import Server
from tests.imap.helpers import connect, joined, st

HEADER = (b"From: Bob <bob@example.test>\r\nTo: alice@example.test\r\n"
          b"Subject: big one\r\nMessage-ID: <big@example.test>\r\n\r\n")


def big_message(size: int) -> bytes:
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\r\n"
    body = line * ((size - len(HEADER)) // len(line) + 1)
    return HEADER + body[: size - len(HEADER)]


async def test_big_append_spooled_and_fetch_streamed(imap_server: Server) -> None:
    msg = big_message(3 * 1024 * 1024 + 17)
    tmp = imap_server.ctx.config.data_path / "tmp"
    async with connect(imap_server) as c:
        await c.login()
        c.n += 1
        c.send(b"t%d APPEND INBOX (\\Seen) {%d}\r\n" % (c.n, len(msg)))
        assert (await c.line()).startswith(b"+ ")
        c.send(msg[:1000])
        await asyncio.sleep(0.05)
        # the literal goes to a private file as it arrives, not to memory
        spooled = list(tmp.iterdir())
        assert len(spooled) == 1 and spooled[0].stat().st_mode & 0o777 == 0o600
        c.send(msg[1000:] + b"\r\n")
        resp = await c.read_response(f"t{c.n}")
        assert b"OK [APPENDUID" in resp[-1], resp
        assert list(tmp.iterdir()) == []  # removed after accept()
        await c.cmd("SELECT INBOX")
        resp = await c.cmd("FETCH 1 (RFC822.SIZE BODY.PEEK[])", timeout=20)
        text = joined(resp)
        assert b"RFC822.SIZE %d" % len(msg) in text
        assert text.endswith(msg + b")\r\n" + resp[-1]) or msg in text
        start = text.index(b"BODY[] {%d}\r\n" % len(msg)) + len(b"BODY[] {%d}\r\n" % len(msg))
        assert text[start : start + len(msg)] == msg
        resp = await c.cmd("FETCH 1 (BODY.PEEK[]<100.50> BODY.PEEK[HEADER.FIELDS (SUBJECT)]"
                           " ENVELOPE)")
        text = joined(resp)
        assert b"BODY[]<100> {50}\r\n" + msg[100:150] in text
        assert b"Subject: big one\r\n\r\n" in text and b'"big one"' in text
        resp = await c.cmd("FETCH 1 (BODY.PEEK[TEXT]<0.20> BINARY.PEEK[]<3145000.1000>)")
        text = joined(resp)
        assert b"BODY[TEXT]<0> {20}\r\n" + msg[len(HEADER) : len(HEADER) + 20] in text
        tail = msg[3145000:]
        assert b"BINARY[]<3145000> ~{%d}\r\n" % len(tail) in text
        resp = await c.cmd("FETCH 1 RFC822.TEXT", timeout=20)
        text = joined(resp)
        assert b"RFC822.TEXT {%d}\r\n" % (len(msg) - len(HEADER)) in text
        assert msg[len(HEADER) :] in text and st(resp).startswith(b"OK")
        # BODYSTRUCTURE needs the whole MIME structure: the message is loaded, still works
        resp = await c.cmd("FETCH 1 BODYSTRUCTURE", timeout=20)
        assert b'("TEXT" "PLAIN"' in joined(resp), resp


async def test_abandoned_append_removes_its_spool_file(imap_server: Server) -> None:
    tmp = imap_server.ctx.config.data_path / "tmp"
    async with connect(imap_server) as c:
        await c.login()
        c.send(b"a APPEND INBOX {2000000}\r\n")
        assert (await c.line()).startswith(b"+ ")
        c.send(b"x" * 100_000)
        await asyncio.sleep(0.05)
        assert len(list(tmp.iterdir())) == 1
    for _ in range(100):
        if not list(tmp.iterdir()):
            break
        await asyncio.sleep(0.02)
    assert list(tmp.iterdir()) == []


def test_streaming_thresholds_are_sane() -> None:
    assert imap_message.STREAM_ABOVE <= 1 << 20
    assert imap_message.HEADER_MAX >= 64 << 10


MEASURE = Path(__file__).resolve().parents[2] / "bench" / "imap_big_messages.py"


def test_ten_clients_25_mb_server_rss(tmp_path: Path) -> None:
    """The server process (a subprocess) grows by far less than the messages: 4 clients
    append and fetch 25 MB each at once (the bench runs 10, docs/performance.md)."""
    out = subprocess.run([sys.executable, str(MEASURE), "--clients", "4", "--mb", "25",
                          "--json"], check=True, capture_output=True, text=True,
                         timeout=600).stdout
    m = json.loads(out.strip().splitlines()[-1])
    assert m["ok"], m
    grown = m["peak_growth_mb"]
    print(f"server peak RSS grew by {grown:.1f} MB for 4 x 25 MB")
    assert grown < 40, m  # one copy of one message held in memory would be 25 MB per client
