"""DKIM signing on submission and SPF/DKIM/DMARC verdicts on the MTA, end to end."""

from __future__ import annotations

import asyncio
import smtplib

from pochta.policy import dkim
from tests.conftest import Server
from tests.e2e.smtpclient import RawClient
from tests.e2e.test_mta import inbox


async def test_submitted_mail_is_dkim_signed_and_verifies(running_server: Server) -> None:
    data_dir = running_server.ctx.config.data_path
    keys = await asyncio.to_thread(dkim.ensure_domain_keys, data_dir, "example.test",
                                   ("rsa", "ed25519"), 1024)
    for key in keys:
        running_server.resolver.txt_records[key.dns_name] = [dkim.dns_txt_record(key)]
    port = running_server.port("submission", "implicit")

    def run() -> None:
        with smtplib.SMTP_SSL("127.0.0.1", port, timeout=10,
                              context=running_server.client_ssl()) as c:
            c.login("alice@example.test", "alice-pass")
            c.sendmail("alice@example.test", ["bob@example.test"],
                       b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\n"
                       b"Subject: signed\r\n\r\nbody\r\n")

    await asyncio.to_thread(run)
    [stored] = await inbox(running_server, "bob@example.test")
    assert stored.count(b"DKIM-Signature:") == 2
    results = await dkim.verify(stored, running_server.resolver)
    assert sorted(r.algorithm for r in results) == ["ed25519-sha256", "rsa-sha256"]
    assert all(r.result == "pass" for r in results), results


async def _send_inbound(server: Server, sender_domain: str) -> tuple[int, str]:
    c = await RawClient.connect(server.port("mta"))
    await c.reply()
    await c.cmd("EHLO mx.evil.test")
    await c.cmd(f"MAIL FROM:<ceo@{sender_domain}>")
    await c.cmd("RCPT TO:<bob@example.test>")
    await c.cmd("DATA")
    reply = await c.cmd(f"From: ceo@{sender_domain}\r\nSubject: wire money\r\n\r\nnow\r\n."
                        .encode())
    await c.close()
    return reply


async def test_dmarc_reject_policy_refuses_forged_mail(running_server: Server) -> None:
    running_server.resolver.txt_records["_dmarc.bank.test"] = ["v=DMARC1; p=reject"]
    running_server.resolver.txt_records["bank.test"] = ["v=spf1 ip4:192.0.2.1 -all"]
    code, text = await _send_inbound(running_server, "bank.test")
    assert code == 550 and text.startswith("5.7.1")
    assert await inbox(running_server, "bob@example.test") == []


async def test_dmarc_quarantine_goes_to_junk_with_auth_results(running_server: Server) -> None:
    running_server.resolver.txt_records["_dmarc.shop.test"] = ["v=DMARC1; p=quarantine"]
    code, _ = await _send_inbound(running_server, "shop.test")
    assert code == 250
    assert await inbox(running_server, "bob@example.test") == []
    account = await running_server.store.get_account("bob@example.test")
    assert account is not None
    junk = await running_server.store.get_mailbox(account.id, "Junk")
    assert junk is not None
    [meta] = await running_server.store.list_messages(junk.id)
    stored = await running_server.store.read_blob(meta.blob_id)
    assert b"Authentication-Results: mail.example.test;" in stored
    assert b"dmarc=fail" in stored
