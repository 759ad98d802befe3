"""Submission to a remote domain, through the queue worker of the running server, to a
next hop reached by a static route (a recording SMTP server on loopback)."""

from __future__ import annotations

import asyncio
import smtplib

from tests.conftest import Instance, start_instance
from tests.e2e.test_mta import inbox
from tests.queue.sink import Sink


async def test_submitted_mail_is_relayed_once_via_static_route(instance: Instance) -> None:
    sink = Sink()
    sink_port = await sink.start()
    server = await start_instance(
        instance, run_queue=True,
        routes=[{"domain": "remote.test", "host": "127.0.0.1", "port": sink_port,
                 "tls": "none"}])
    try:
        port = server.port("submission", "implicit")

        def send() -> None:
            with smtplib.SMTP_SSL("127.0.0.1", port, timeout=10,
                                  context=server.client_ssl()) as c:
                c.login("alice@example.test", "alice-pass")
                c.sendmail("alice@example.test", ["carol@remote.test", "bob@example.test"],
                           b"From: alice@example.test\r\nTo: carol@remote.test\r\n"
                           b"Subject: out\r\n\r\nto the world\r\n")

        await asyncio.to_thread(send)
        for _ in range(100):
            if sink.messages:
                break
            await asyncio.sleep(0.05)
        [relayed] = sink.messages
        assert relayed.sender == "alice@example.test"
        assert relayed.rcpts == ["carol@remote.test"]
        assert not relayed.data.startswith(b"Return-Path:"), "Return-Path is for final delivery"
        assert b"with ESMTPSA" in relayed.data and relayed.data.endswith(b"to the world\r\n")
        # the local copy has its Return-Path
        [local] = await inbox(server, "bob@example.test")
        assert local.startswith(b"Return-Path: <alice@example.test>")
        for _ in range(50):
            [item] = await server.store.list_queue()
            if item.state.value == "delivered":
                break
            await asyncio.sleep(0.05)
        assert item.state.value == "delivered"
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()
        await sink.close()
