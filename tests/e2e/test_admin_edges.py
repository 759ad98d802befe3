"""Small edges an admin meets on the first day, over real sockets (issue 13, items 7, 10)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from tests.conftest import Instance, Server, start_instance

from .smtpclient import RawClient
from .test_mta import MESSAGE, inbox, send


async def test_help_lists_only_what_works_on_the_port(running_server: Server) -> None:
    mta = await RawClient.connect(running_server.port("mta"))
    try:
        await mta.reply()
        await mta.cmd("EHLO client.test")
        code, text = await mta.cmd("HELP")
        assert code == 214 and "STARTTLS" in text and "AUTH" not in text, text
        code, _ = await mta.cmd("AUTH PLAIN")  # and indeed AUTH does not work there
        assert code == 502
    finally:
        await mta.close()
    sub = await RawClient.connect(running_server.port("submission", "implicit"),
                                  running_server.client_ssl())
    try:
        await sub.reply()
        await sub.cmd("EHLO client.test")
        code, text = await sub.cmd("HELP")
        assert code == 214 and "AUTH" in text and "STARTTLS" not in text, text
    finally:
        await sub.close()


async def test_cr_cr_lf_gets_an_explanation(running_server: Server) -> None:
    c = await RawClient.connect(running_server.port("mta"))
    try:
        await c.reply()
        code, text = await c.cmd(b"EHLO x\r")  # cmd adds CRLF: EHLO x CR CR LF
        assert code == 500 and "CR CR LF" in text and "-crlf" in text, text
        code, _ = await c.cmd("EHLO x")
        assert code == 250
    finally:
        await c.close()


async def test_received_date_has_the_real_offset(running_server: Server) -> None:
    await asyncio.to_thread(send, running_server.port("mta"), "someone@elsewhere.test",
                            ["bob@example.test"], MESSAGE)
    (message,) = await inbox(running_server, "bob@example.test")
    found = re.search(r"Received:[^;]*;\s*([^\r\n]+)", message.decode())
    assert found is not None, message
    date = found.group(1).strip()
    offset = date.rsplit(" ", 1)[1]
    assert re.fullmatch(r"[+-]\d{4}", offset) and offset != "-0000", date
    assert offset == time.strftime("%z", time.localtime())


async def test_readme_curl_imaps_fetches_a_message(running_server: Server) -> None:
    """The README's and the demo banner's curl line shows message 1, not just a LIST."""
    from pochta.cli import demo_banner
    from tests.conftest import need_tool, run_tool

    await asyncio.to_thread(send, running_server.port("mta"), "someone@elsewhere.test",
                            ["bob@example.test"], MESSAGE)
    port = running_server.port("imap", "implicit")
    banner = demo_banner(running_server.ctx.config, Path("demo/pochta.toml"))
    assert "/INBOX;UID=1' --user bob@example.test:bob-demo-pass" in banner
    rc, out = await run_tool(need_tool("curl"), "-sk", f"imaps://127.0.0.1:{port}/INBOX;UID=1",
                             "--user", "bob@example.test:bob-pass")
    assert rc == 0 and "Hello Bob" in out, out


async def test_all_addresses_listens_on_ipv4_and_ipv6(instance: Instance) -> None:
    import socket

    server = await start_instance(instance, listeners=[
        {"role": "mta", "port": 0, "tls": "starttls", "address": "*"}])
    try:
        ((_, srv),) = server.running.servers
        families = set()
        for sock in srv.sockets:
            family, port = sock.family, sock.getsockname()[1]
            host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
            reader, writer = await asyncio.open_connection(host, port)
            assert (await reader.readline()).startswith(b"220 ")
            writer.close()
            families.add(family)
        assert socket.AF_INET in families
        if socket.has_ipv6 and any(a[0] == socket.AF_INET6 for a in socket.getaddrinfo(
                None, 0, flags=socket.AI_PASSIVE, type=socket.SOCK_STREAM)):
            assert socket.AF_INET6 in families
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()
