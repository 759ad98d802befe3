"""rspamd from Debian, started by the test on loopback with a minimal config in a
temporary directory (no Redis, no network: its resolver points at a closed port): GTUBE is
refused at DATA with rspamd's reply, a normal message passes with rspamd's headers, Junk
moves reach the controller, and with rspamd stopped mail still flows (or tempfails)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pochta.spam.rspamd import RspamdClient, RspamdError
from tests.conftest import Instance, need_tool
from tests.spam.helpers import last_message, send, server_with

GTUBE = (b"From: a@elsewhere.test\r\nSubject: gtube\r\n\r\n"
         b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n")
MSG = b"From: a@elsewhere.test\r\nSubject: hello\r\n\r\nJust a normal note.\r\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Rspamd:
    proc: subprocess.Popen[bytes]
    url: str
    controller: str
    log: Path


@pytest.fixture
async def rspamd(tmp_path: Path) -> AsyncIterator[Rspamd]:
    binary = need_tool("rspamd")
    normal, controller = free_port(), free_port()
    conf = tmp_path / "rspamd.conf"
    log = tmp_path / "rspamd.log"
    conf.write_text(f"""
options {{
  pidfile = "{tmp_path}/rspamd.pid";
  dns {{ nameserver = ["127.0.0.1:1"]; timeout = 0.2s; retransmits = 1; }}
  hs_cache_dir = "{tmp_path}";
  tempdir = "{tmp_path}";
}}
logging {{ type = "file"; filename = "{log}"; level = "info"; }}
worker "normal" {{ bind_socket = "127.0.0.1:{normal}"; count = 1; }}
worker "controller" {{ bind_socket = "127.0.0.1:{controller}"; count = 1;
  secure_ip = "127.0.0.1"; }}
actions {{ reject = 15; add_header = 6; greylist = 4; }}
""")
    # -f: foreground; -i: allowed to run as root in the test container
    proc = subprocess.Popen([binary, "-f", "-i", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{normal}"
    try:
        for _ in range(120):  # first start compiles the TLD list (~10 s on a busy box)
            try:
                _r, w = await asyncio.open_connection("127.0.0.1", normal)
                w.close()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"rspamd exited: {log.read_text() if log.exists() else ''}")
                await asyncio.sleep(0.5)
        yield Rspamd(proc, url, f"http://127.0.0.1:{controller}", log)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def test_gtube_refused_normal_mail_passes_and_learning(
        instance: Instance, rspamd: Rspamd) -> None:
    spam = {"rspamd": rspamd.url, "rspamd_controller": rspamd.controller}
    async with server_with(instance, spam=spam) as server:
        port = server.port("mta")
        code, text = await send(port, GTUBE)
        assert (code, text) == (550, "5.7.1 Gtube pattern")
        code, _ = await send(port, MSG)
        assert code == 250
        data, flags = await last_message(server)
        assert b"X-Rspamd-Action: no action\r\n" in data
        assert b"X-Rspamd-Score: " in data and "$Junk" not in flags
        client = server.ctx.spam.rspamd
        assert client is not None
        assert await client.learn(MSG, spam=True)


async def test_rspamd_down_mail_still_flows_or_tempfails(instance: Instance) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with server_with(instance, spam={"rspamd": dead, "rspamd_timeout": 2.0}) as server:
        assert (await send(server.port("mta"), GTUBE))[0] == 250
        client = server.ctx.spam.rspamd
        assert client is not None and client.failures == 1
    async with server_with(instance, spam={"rspamd": dead, "rspamd_failure": "tempfail"}
                           ) as server:
        code, text = await send(server.port("mta"), MSG)
        assert code == 451 and text.startswith("4.7.1")


async def test_actions_are_honoured(instance: Instance) -> None:
    """A fake rspamd answering each action in turn (the real one's scores depend on its
    rules): soft reject -> 451, add header -> Junk, rewrite subject, greylist -> 451."""
    answers = [
        b'{"action":"soft reject","score":9,"required_score":15,"symbols":{}}',
        b'{"action":"add header","score":7,"required_score":15,"symbols":{"X":{}}}',
        b'{"action":"rewrite subject","score":7,"required_score":15,"subject":"*** SPAM ***"}',
        b'{"action":"greylist","score":4,"required_score":15}',
        b"not json",
    ]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        body = answers.pop(0)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    fake = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{fake.sockets[0].getsockname()[1]}"
    try:
        async with server_with(instance, spam={"rspamd": url}) as server:
            port = server.port("mta")
            assert (await send(port, MSG))[0] == 451
            assert (await send(port, MSG))[0] == 250
            _, flags = await last_message(server, mailbox="Junk")
            assert "$Junk" in flags
            assert (await send(port, MSG))[0] == 250
            data, _ = await last_message(server)
            assert b"Subject: *** SPAM ***\r\n" in data and b"Subject: hello" not in data
            code, text = await send(port, MSG)
            assert code == 451 and "Greylisted" in text
            assert (await send(port, MSG))[0] == 250  # garbage from rspamd: accepted
    finally:
        fake.close()
        await fake.wait_closed()


async def test_client_reports_unreachable() -> None:
    client = RspamdClient(f"http://127.0.0.1:{free_port()}", 1.0)
    with pytest.raises(RspamdError):
        await client.check(MSG, sender="", recipients=[], ip="192.0.2.1", helo="", user=None)
    assert client.failures == 1
