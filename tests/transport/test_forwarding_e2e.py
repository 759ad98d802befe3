"""Forwarding between two Pochta instances: the forwarder (an alias to another domain)
rewrites the sender with SRS and seals with ARC; the final hop sees SPF pass for the SRS
domain (not aligned with the author's domain, no DKIM): DMARC fails, and the message is
delivered only when the final hop trusts the forwarder as an ARC sealer."""

from __future__ import annotations

import asyncio
import smtplib
from pathlib import Path

import pytest

from pochta import passwords
from pochta.policy import dkim
from pochta.storage.sqlite import SQLiteStore
from tests.conftest import CHEAP_HASHER, Instance, start_instance
from tests.e2e.test_mta import inbox
from tests.interop.test_outbound_peers import wait_delivered


@pytest.mark.parametrize("trusted", [True, False])
async def test_srs_and_arc_through_two_instances(
    instance: Instance, tmp_path: Path, trusted: bool,
) -> None:
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = Instance(other_dir, instance.cert, instance.key,
                     {**instance.raw_config, "hostname": "mx.other.test"})
    store = await SQLiteStore.open(other.config().data_path)
    await store.add_domain("other.test")
    await store.add_account("carol@other.test",
                            passwords.hash_password("carol-pass", hasher=CHEAP_HASHER), None)
    await store.close()
    keys = dkim.ensure_domain_keys(instance.config().data_path, "example.test")
    receiver = await start_instance(other, transport_security={
        "arc_trusted_sealers": ["example.test"] if trusted else []})
    forwarder = await start_instance(
        instance, run_queue=True,
        transport_security={"srs": True, "srs_domain": "example.test", "arc_seal": True},
        routes=[{"domain": "other.test", "host": "127.0.0.1", "port": receiver.port("mta"),
                 "tls": "opportunistic"}])
    try:
        await forwarder.store.add_alias("fwd@example.test", ["carol@other.test"])
        for r in (forwarder.resolver, receiver.resolver):
            r.txt_records["sender.test"] = ["v=spf1 ip4:127.0.0.1 -all"]
            r.txt_records["_dmarc.sender.test"] = ["v=DMARC1; p=reject"]
            r.txt_records["example.test"] = ["v=spf1 ip4:127.0.0.1 -all"]
            for k in keys:
                r.txt_records[k.dns_name] = [dkim.dns_txt_record(k)]

        def send() -> None:
            with smtplib.SMTP("127.0.0.1", forwarder.port("mta"), timeout=10) as c:
                c.sendmail("dave@sender.test", ["fwd@example.test"],
                           b"From: dave@sender.test\r\nTo: fwd@example.test\r\n"
                           b"Subject: via a forwarder\r\n\r\nhello\r\n")

        await asyncio.to_thread(send)
        state = await wait_delivered(forwarder)
        if trusted:
            assert state == "delivered"
            [stored] = await inbox(receiver, "carol@other.test")
            head = stored.split(b"\r\n\r\n")[0]
            assert b"Return-Path: <SRS0=" in head and b"=sender.test=dave@example.test>" in head
            assert b"ARC-Seal: i=1;" in head
            ours = head.split(b"Authentication-Results: mx.other.test")[1]
            assert b"dmarc=fail" in ours and b"arc=pass (i=1 d=example.test)" in ours
        else:
            assert state.startswith("failed")
            item = next(i for i in await forwarder.store.list_queue()
                        if i.recipient.address == "carol@other.test")
            assert item.state.value == "failed"
            assert "5.7.1" in item.last_reply and "DMARC" in item.last_reply
            assert await inbox(receiver, "carol@other.test") == []
    finally:
        for s in (forwarder, receiver):
            await s.running.close(grace=1.0)
            await s.store.close()


async def test_postfix_peer_gets_srs_sender_and_a_valid_seal(instance: Instance) -> None:
    """Postfix's smtp-sink as the next hop of forwarded mail: it is handed the SRS
    envelope sender and an ARC set that verifies."""
    import os
    import shutil
    import tempfile

    from pochta.dns import StaticResolver
    from pochta.policy import arc
    from tests.conftest import need_tool
    from tests.interop.test_outbound_peers import free_port

    sink = need_tool("smtp-sink")
    fd, name = tempfile.mkstemp(prefix="pochta-sink-", dir="/tmp")
    os.close(fd)
    dump = Path(name)
    user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(dump, "postfix")
        user = ["-u", "postfix"]
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sink, *user, "-D", str(dump), f"127.0.0.1:{port}", "10",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    keys = dkim.ensure_domain_keys(instance.config().data_path, "example.test")
    forwarder = await start_instance(
        instance, run_queue=True,
        transport_security={"srs": True, "srs_domain": "example.test", "arc_seal": True},
        routes=[{"domain": "far.test", "host": "127.0.0.1", "port": port,
                 "tls": "opportunistic"}])
    try:
        await forwarder.store.add_alias("fwd@example.test", ["dave@far.test"])

        def send() -> None:
            with smtplib.SMTP("127.0.0.1", forwarder.port("mta"), timeout=10) as c:
                c.sendmail("erin@sender.test", ["fwd@example.test"],
                           b"From: erin@sender.test\r\nSubject: to postfix\r\n\r\nhi\r\n")

        await asyncio.to_thread(send)
        assert await wait_delivered(forwarder) == "delivered"
        for _ in range(40):
            if b"X-Rcpt-Args: <dave@far.test>" in dump.read_bytes():
                break
            await asyncio.sleep(0.05)
        text = dump.read_bytes()
        assert b"X-Mail-Args: <SRS0=" in text and b"=sender.test=erin@example.test>" in text
        message = text[text.index(b"ARC-Seal:"):].replace(b"\r\n", b"\n").replace(
            b"\n", b"\r\n")
        resolver = StaticResolver(txt_records={k.dns_name: [dkim.dns_txt_record(k)]
                                               for k in keys})
        sealed = await arc.verify(message, resolver)
        assert (sealed.cv, sealed.sealer) == ("pass", "example.test")
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()
        dump.unlink()
        await forwarder.running.close(grace=1.0)
        await forwarder.store.close()
