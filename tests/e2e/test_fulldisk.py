"""The hardening issue's full-disk experiment, on a real tiny file system.

The data directory lives on a 24 MB tmpfs that a filler file leaves almost full. SMTP
messages of 300 KB get 250 and then 4xx as the disk fills; space is freed; more mail
arrives for alice and then for bob. Every message that got 250 must then be fetched over
IMAP, byte for byte, from its owner's INBOX, and nothing from the other user. (Before the
fix, alice's messages returned bob's text.) Mounting needs root, which CI has; the
fault-injecting unit tests in tests/storage/test_fulldisk.py cover the same code without.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import os
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_BACKEND, Instance, start_instance

MB = 1024 * 1024


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    if TEST_BACKEND == "postgresql":
        pytest.skip("fills the SQLite data directory's file system; a full PostgreSQL is "
                    "tests/storage/test_postgres.py::test_a_full_tablespace_is_storage_full")
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs",
                           str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def message(tag: str) -> bytes:
    line = f"{tag} " .encode() + b"z" * 70 + b"\r\n"
    return (f"From: x@elsewhere.test\r\nSubject: {tag}\r\n\r\n".encode()
            + line * (300_000 // len(line)))


def send(port: int, rcpt: str, data: bytes) -> int:
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        try:
            client.sendmail("x@elsewhere.test", [rcpt], data)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code
        except smtplib.SMTPRecipientsRefused as exc:
            return next(iter(exc.recipients.values()))[0]
        return 250


def fetch_all(port: int, user: str, password: str) -> list[bytes]:
    imap = imaplib.IMAP4("127.0.0.1", port)
    try:
        imap.login(user, password)
        typ, data = imap.select("INBOX", readonly=True)
        assert typ == "OK", data
        count = int(data[0] or b"0")
        bodies: list[bytes] = []
        if count:
            typ, rows = imap.fetch("1:*", "(BODY.PEEK[TEXT])")
            assert typ == "OK", rows
            bodies = [row[1] for row in rows if isinstance(row, tuple)]
        return bodies
    finally:
        with contextlib.suppress(Exception):
            imap.logout()


def body_of(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[1]


async def test_full_disk_loses_and_leaks_nothing(instance: Instance, tiny_fs: Path) -> None:
    listeners = [
        {"role": "mta", "port": 0, "tls": "none", "address": "127.0.0.1"},
        {"role": "imap", "port": 0, "tls": "none", "address": "127.0.0.1"},
    ]
    server = await start_instance(instance, data_dir=str(tiny_fs / "data"),
                                  listeners=listeners)
    filler = tiny_fs / "filler"
    try:
        smtp, imap = server.port("mta"), server.port("imap")
        free = os.statvfs(tiny_fs).f_bavail * os.statvfs(tiny_fs).f_frsize
        filler.write_bytes(b"\0" * (free - 2 * MB))  # about six messages of room left
        acked: dict[str, list[bytes]] = {"alice@example.test": [], "bob@example.test": []}
        codes = []
        for n in range(12):
            data = message(f"alice-{n}")
            code = await asyncio.to_thread(send, smtp, "alice@example.test", data)
            codes.append(code)
            if code == 250:
                acked["alice@example.test"].append(data)
        assert 250 in codes and any(400 <= c < 500 for c in codes), codes
        assert not any(c >= 500 for c in codes), codes  # a full disk is temporary
        # while the disk is full, reading still works
        got = await asyncio.to_thread(fetch_all, imap, "alice@example.test", "alice-pass")
        assert got == [body_of(m) for m in acked["alice@example.test"]]

        filler.unlink()  # space comes back, in the same process
        for n in range(3):
            data = message(f"alice-after-{n}")
            assert await asyncio.to_thread(send, smtp, "alice@example.test", data) == 250
            acked["alice@example.test"].append(data)
        for n in range(6):
            data = message(f"bob-{n}")
            assert await asyncio.to_thread(send, smtp, "bob@example.test", data) == 250
            acked["bob@example.test"].append(data)

        for user, password in (("alice@example.test", "alice-pass"),
                               ("bob@example.test", "bob-pass")):
            got = await asyncio.to_thread(fetch_all, imap, user, password)
            assert got == [body_of(m) for m in acked[user]], user
        assert await server.store.verify_blobs() == []
    finally:
        with contextlib.suppress(FileNotFoundError):
            filler.unlink()
        await server.running.close(grace=1.0)
        await server.store.close()
