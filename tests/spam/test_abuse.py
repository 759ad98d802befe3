"""A compromised account: it submits mail to addresses that bounce; it is held (451 4.7.1
at MAIL FROM) before its 501st message, the postmaster is told, and release lifts it."""

from __future__ import annotations

import asyncio
import smtplib

import pytest

from tests.conftest import Instance
from tests.queue.sink import Sink
from tests.spam.helpers import last_message, server_with


async def test_account_sending_to_bouncing_addresses_is_held(instance: Instance) -> None:
    sink = Sink()
    for n in range(500):
        sink.rcpt_replies[f"u{n}@remote.test"] = b"550 5.1.1 No such user\r\n"
    sink_port = await sink.start()
    try:
        async with server_with(
            instance, run_queue=True,
            submission={"messages_per_hour": 100000, "recipients_per_hour": 100000},
            routes=[{"domain": "remote.test", "host": "127.0.0.1", "port": sink_port,
                     "tls": "none"}],
        ) as server:
            await server.store.add_alias("postmaster@example.test", ["alice@example.test"])
            port = server.port("submission", "implicit")

            def spam_run() -> tuple[int, str]:
                sent = 0
                with smtplib.SMTP_SSL("127.0.0.1", port, timeout=30,
                                      context=server.client_ssl()) as c:
                    c.login("bob@example.test", "bob-pass")
                    for n in range(500):
                        try:
                            c.sendmail("bob@example.test", [f"u{n}@remote.test"],
                                       b"From: bob@example.test\r\nSubject: buy\r\n\r\nbuy\r\n")
                        except smtplib.SMTPSenderRefused as exc:
                            return sent, f"{exc.smtp_code} {exc.smtp_error.decode()}"
                        sent += 1
                        if n % 25 == 24:
                            import time

                            time.sleep(0.2)  # a bot pauses too; lets the bounces come in
                return sent, ""

            sent, refusal = await asyncio.to_thread(spam_run)
            assert refusal.startswith("451 4.7.1 Account held"), (sent, refusal)
            assert 50 <= sent < 500
            hold = await server.store.account_hold("bob@example.test")
            assert hold is not None and "bounced" in hold.reason
            notice, _ = await last_message(server, "alice@example.test")
            assert b"Subject: Account bob@example.test held" in notice
            assert b"pochta user release bob@example.test" in notice
            # release: submissions flow again
            gate = server.ctx.spam
            was, _ = await gate.abuse.release("bob@example.test")
            assert was

            def one() -> None:
                with smtplib.SMTP_SSL("127.0.0.1", port, timeout=30,
                                      context=server.client_ssl()) as c:
                    c.login("bob@example.test", "bob-pass")
                    c.sendmail("bob@example.test", ["alice@example.test"],
                               b"From: bob@example.test\r\nSubject: sorry\r\n\r\nok\r\n")

            await asyncio.to_thread(one)
    finally:
        await sink.close()


async def test_volume_hold_holds_queued_mail_and_release_frees_it(
        instance: Instance, capsys: pytest.CaptureFixture[str]) -> None:
    abuse = {"max_messages": 3}
    async with server_with(instance, abuse=abuse, submission={"messages_per_hour": 1000},
                           routes=[{"domain": "remote.test", "host": "127.0.0.1",
                                    "port": 9, "tls": "none"}]) as server:
        port = server.port("submission", "implicit")

        def run() -> int:
            sent = 0
            with smtplib.SMTP_SSL("127.0.0.1", port, timeout=30,
                                  context=server.client_ssl()) as c:
                c.login("bob@example.test", "bob-pass")
                for n in range(10):
                    try:
                        c.sendmail("bob@example.test", [f"x{n}@remote.test"],
                                   b"From: bob@example.test\r\nSubject: x\r\n\r\nx\r\n")
                    except smtplib.SMTPSenderRefused:
                        break
                    sent += 1
            return sent

        assert await asyncio.to_thread(run) == 4  # the 4th goes over 3 and holds
        queued = await server.store.list_queue()
        import time

        assert len(queued) == 4 and all(i.next_attempt > time.time() + 86400 for i in queued)
        from pochta.cli import main

        cfg_file = instance.dir / "pochta.toml"
        cfg_file.write_text(f'hostname = "mail.example.test"\ndata_dir = '
                            f'"{server.ctx.config.data_path}"\n')
        rc = await asyncio.to_thread(main, ["-c", str(cfg_file), "spam", "holds"])
        assert rc == 0
        rc = await asyncio.to_thread(main, ["-c", str(cfg_file), "user", "release",
                                            "bob@example.test"])
        assert rc == 0
        out = capsys.readouterr().out
        assert "bob@example.test\theld since" in out and "messages in 3600 s" in out
        assert "bob@example.test released; 4 queued message(s) are due now" in out
        queued = await server.store.list_queue()
        assert all(i.next_attempt <= time.time() for i in queued)
        assert await server.store.account_hold("bob@example.test") is None
