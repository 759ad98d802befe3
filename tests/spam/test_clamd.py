"""clamd from Debian, started by the test with a socket in a temporary directory. Debian
ships no signature database (freshclam downloads it), so the test gives clamd its own
signature of the EICAR test file (a .ndb body pattern): the scanning, clamd's mail parser
and the INSTREAM protocol are clamd's own."""

from __future__ import annotations

import asyncio
import base64
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import Instance, need_tool
from tests.spam.helpers import send, server_with

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
MSG = b"From: a@elsewhere.test\r\nSubject: hello\r\n\r\nJust a normal note.\r\n"


@pytest.fixture
async def clamd(tmp_path: Path) -> AsyncIterator[Path]:
    binary = need_tool("clamd")
    db = tmp_path / "db"
    db.mkdir()
    (db / "pochta-test.ndb").write_text(f"Pochta-Test-EICAR:0:*:{EICAR.hex()}\n")
    sock = tmp_path / "clamd.sock"
    conf = tmp_path / "clamd.conf"
    conf.write_text(f"Foreground yes\nLocalSocket {sock}\nDatabaseDirectory {db}\n"
                    f"LogFile {tmp_path}/clamd.log\nTemporaryDirectory {tmp_path}\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            if sock.exists():
                break
            if proc.poll() is not None:
                pytest.fail("clamd exited at start")
            await asyncio.sleep(0.25)
        yield sock
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_eicar_refused_at_data_clean_mail_passes(instance: Instance, clamd: Path
                                                       ) -> None:
    async with server_with(instance, spam={"clamd": str(clamd)}) as server:
        port = server.port("mta")
        code, text = await send(port, b"Subject: v\r\n\r\n" + EICAR + b"\r\n")
        assert code == 554 and "Virus found: Pochta-Test-EICAR" in text
        attached = (b"Subject: v\r\nMIME-Version: 1.0\r\n"
                    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
                    b"Content-Type: text/plain\r\n\r\nsee attached\r\n--b\r\n"
                    b"Content-Type: application/octet-stream\r\n"
                    b"Content-Transfer-Encoding: base64\r\n\r\n"
                    + base64.b64encode(EICAR) + b"\r\n--b--\r\n")
        code, text = await send(port, attached)
        assert code == 554 and "Pochta-Test-EICAR" in text
        assert (await send(port, MSG))[0] == 250


async def test_clamd_down_tempfails_or_accepts(instance: Instance, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such.sock")
    async with server_with(instance, spam={"clamd": missing}) as server:
        code, text = await send(server.port("mta"), MSG)
        assert code == 451 and "Virus scanner unavailable" in text
    async with server_with(instance, spam={"clamd": missing, "clamd_failure": "accept"}
                           ) as server:
        assert (await send(server.port("mta"), MSG))[0] == 250
