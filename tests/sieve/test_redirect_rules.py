"""Redirect as carried out: the envelope sender by [sieve] redirect_sender (every
mode), the X-Sieve-Redirected-From mark of the account, and loops recognised through
any of the user's addresses (the RCPT alias or the account's). End to end over SMTP."""

from __future__ import annotations

import pytest

from pochta.services.sieve import redirect_body, redirect_loop, redirect_sender
from pochta.sieve import SieveMessage
from tests.conftest import Instance, Server, start_instance
from tests.sieve.test_e2e import LISTENERS, mailbox, queued_to, smtp, upload


@pytest.mark.parametrize(("mode", "sender", "expected"), [
    ("original", "s@remote.test", "s@remote.test"),
    ("srs", "s@remote.test", "s@remote.test"),  # the service rewrites it afterwards
    ("recipient", "s@remote.test", "sales@example.test"),
    ("account", "s@remote.test", "alice@example.test"),
    ("<bounces@example.test>", "s@remote.test", "bounces@example.test"),
    ("null", "s@remote.test", ""),
    ("account", "", ""),  # a bounce stays a bounce
    ("<bounces@example.test>", "", ""),
])
def test_envelope_sender_modes(mode: str, sender: str, expected: str) -> None:
    assert redirect_sender(mode, sender, "sales@example.test", "alice@example.test") \
        == expected


def test_mark_and_loops() -> None:
    body = redirect_body(b"Return-Path: <s@remote.test>\r\nSubject: x\r\n\r\nhi\r\n",
                         "alice@example.test")
    assert body.startswith(b"X-Sieve-Redirected-From: <alice@example.test>\r\nSubject:")
    marked = SieveMessage(body)
    assert redirect_loop(marked, {"sales@example.test", "Alice@Example.TEST"})
    assert not redirect_loop(marked, {"bob@example.test"})
    # an address is compared whole, not as a substring
    assert not redirect_loop(marked, {"ice@example.test"})


async def test_redirect_through_an_alias_over_smtp(instance: Instance) -> None:
    srv: Server = await start_instance(
        instance, listeners=LISTENERS, sieve={"redirect_sender": "<bounces@example.test>"})
    try:
        await srv.store.add_alias("sales@example.test", ["alice@example.test"])
        await upload(srv, "alice@example.test", "alice-pass",
                     'redirect "alice@elsewhere.test";\n')
        mail = "From: boss@corp.test\nTo: sales@example.test\nSubject: s\n\nhi\n"
        assert (await smtp(srv, "boss@corp.test", ["sales@example.test"], mail))[0] == 250
        [(sender, rcpt, data)] = await queued_to(srv)
        assert (sender, rcpt) == ("bounces@example.test", "alice@elsewhere.test")
        assert data.startswith(b"X-Sieve-Redirected-From: <alice@example.test>\r\n")
        # it comes back (through the alias): recognised as a loop, kept instead
        assert (await smtp(srv, "boss@corp.test", ["sales@example.test"],
                           data.decode().replace("\r\n", "\n")))[0] == 250
        assert len(await queued_to(srv)) == 1
        assert len(await mailbox(srv, "alice@example.test", "INBOX")) == 1
    finally:
        await srv.running.close(grace=1.0)
        await srv.store.close()


@pytest.mark.parametrize("mode", ["sometimes", "<no-at>", "<a b@example.test>"])
def test_bad_modes_are_config_errors(instance: Instance, mode: str) -> None:
    from pochta.config import ConfigError

    with pytest.raises(ConfigError):
        instance.config(sieve={"redirect_sender": mode})
