"""A real Postfix on loopback accepts a message from Pochta, then finds no such local
user and sends a real RFC 3464 DSN to the message's return path (VERP), routed back to
Pochta's MTA port: the bounce event and the suppression appear."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pochta.storage.interfaces_sending import EventKind
from tests.conftest import Instance, need_tool, run_tool
from tests.sending.helpers import SendingServer, sending_server

pytestmark = pytest.mark.interop


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Our own master.cf (the system's may have been changed by the benchmark reference stack):
# the stock services, none chrooted.
MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
local unix - n n - - local
virtual unix - n n - - virtual
lmtp unix - - n - - lmtp
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""


def postfix_config(directory: Path, smtpd_port: int, pochta_port: int) -> None:
    (directory / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{smtpd_port}"))
    (directory / "main.cf").write_text(f"""compatibility_level = 3.6
queue_directory = {directory}/queue
data_directory = {directory}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.remote.test
mydomain = remote.test
myorigin = remote.test
mydestination = remote.test
# accept every recipient now, find out at delivery: an asynchronous bounce
local_recipient_maps =
transport_maps = inline:{{ example.test=smtp:[127.0.0.1]:{pochta_port} }}
relay_domains =
mynetworks = 127.0.0.0/8
maillog_file_prefixes = {directory}
maillog_file = {directory}/maillog
alias_maps =
alias_database =
smtpd_tls_security_level = none
smtp_tls_security_level = none
smtp_dns_support_level = disabled
""")


@pytest.fixture
async def postfix_and_pochta(instance: Instance) -> AsyncIterator[tuple[SendingServer, Path]]:
    postfix = need_tool("postfix")
    if os.geteuid() != 0:
        pytest.fail("a private Postfix instance needs root (make test runs as root)")
    directory = Path(tempfile.mkdtemp(prefix="pochta-postfix-"))
    directory.chmod(0o755)
    (directory / "queue").mkdir()
    (directory / "data").mkdir()
    shutil.chown(directory / "data", "postfix")
    smtpd_port = free_port()
    routes = [{"domain": "remote.test", "host": "127.0.0.1", "port": smtpd_port,
               "tls": "none"}]
    try:
        async for api in sending_server(instance, routes=routes):
            postfix_config(directory, smtpd_port, api.server.port("mta"))
            code, out = await run_tool("script", "-qc", f"{postfix} -c {directory} start",
                                       "/dev/null")
            assert code == 0, out
            for _ in range(100):  # master forks smtpd's listener a moment later
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", smtpd_port)
                    writer.close()
                    break
                except OSError:
                    await asyncio.sleep(0.1)
            try:
                yield api, directory
            finally:
                await run_tool("script", "-qc", f"{postfix} -c {directory} stop", "/dev/null")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def test_postfix_dsn_to_verp_becomes_bounce_and_suppression(
        postfix_and_pochta: tuple[SendingServer, Path]) -> None:
    api, directory = postfix_and_pochta
    r = await api.call("POST", "/v1/messages", {
        "from": "alice@example.test", "to": "no-such-user-4711@remote.test",
        "subject": "hello", "text": "body", "stream": "bulk"})
    [rcpt] = r.json()["recipients"]
    # Postfix accepts (250): a delivered event, then the DSN comes back
    await api.wait_events(EventKind.DELIVERED, 1, timeout=20)
    bounced = await api.wait_events(EventKind.BOUNCED, 1, timeout=30)
    log = (directory / "maillog").read_text() if (directory / "maillog").exists() else ""
    if not bounced:
        _, queue = await run_tool("find", str(directory / "queue"), "-type", "f")
        log += "\n" + queue
    assert bounced, log
    [ev] = bounced
    assert ev.message_id == rcpt["id"] and ev.recipient == "no-such-user-4711@remote.test"
    detail = json.loads(ev.detail)
    assert detail["format"] == "rfc3464" and detail["status"] == "5.1.1"
    assert detail["type"] == "hard"
    assert "unknown user" in detail["reply"]
    for _ in range(50):
        if await api.store.suppressed("example.test", "transactional",
                                      ["no-such-user-4711@remote.test"]):
            break
        await asyncio.sleep(0.1)
    [s] = await api.store.list_suppressions("example.test")
    assert s.address == "no-such-user-4711@remote.test" and s.reason == "bounce"
