"""The operations pages (web/ops_pages.py) over HTTPS: the mail log with search and pages,
queue hold and release, DKIM rotation and the live DNS check, app passwords (used by
imaplib, smtplib and poplib, refused by the web login, revoked at once), Sieve filters and
the vacation form; with the security checks (CSRF on every new form, escaping, users vs
admins)."""

from __future__ import annotations

import asyncio
import html
import imaplib
import io
import poplib
import re
import smtplib
import ssl
import sys
import time

import pytest

from pochta.cli import main
from pochta.dns import MX
from pochta.policy import dkim
from pochta.policy.records import services_from_listeners
from pochta.services.eventlog import event_log
from pochta.storage.interfaces import Envelope, RemoteRecipient
from pochta.storage.interfaces_ops import NewMailEvent
from tests.conftest import Instance, storage_toml
from tests.web.helpers import Client, WebServer

EVIL = "<script>alert('x')</script>"


def tls_client(web: WebServer) -> ssl.SSLContext:
    return web.server.client_ssl()


async def test_mail_log_records_smtp_and_searches(admin: Client, web: WebServer) -> None:
    port = web.server.port("submission", "implicit")

    def send() -> None:
        with smtplib.SMTP_SSL("127.0.0.1", port, context=tls_client(web), timeout=30) as s:
            s.login("alice@example.test", "alice-pass")
            s.sendmail("alice@example.test", ["bob@example.test"],
                       b"From: alice@example.test\r\nSubject: hi\r\n\r\nhello\r\n")

    await asyncio.to_thread(send)
    await asyncio.sleep(0.1)  # the session summary is written when the session ends
    await event_log(web.server.ctx.store).flush()
    events = await web.store.search_mail_events("bob@example.test")
    accepted = [e for e in events if e.kind == "accepted"]
    assert len(accepted) == 1 and accepted[0].sender == "alice@example.test"
    queue_id = accepted[0].message_id
    sessions = [e for e in await web.store.search_mail_events("alice@example.test")
                if e.kind == "session"]
    assert sessions and "submission" in sessions[0].detail
    page = await admin.get(f"/admin/log?q={queue_id}")
    assert page.status == 200 and queue_id in page.text and "bob@example.test" in page.text
    # bob's IMAP and POP3 sessions too (server/sessionlog.py); a failed login is not one
    imap_port, pop_port = web.server.port("imap", "implicit"), web.server.port("pop3",
                                                                              "implicit")

    def read() -> None:
        with imaplib.IMAP4_SSL("127.0.0.1", imap_port, ssl_context=tls_client(web)) as m:
            m.login("bob@example.test", "bob-pass")
            m.select("INBOX")
        with (imaplib.IMAP4_SSL("127.0.0.1", imap_port, ssl_context=tls_client(web)) as m,
              pytest.raises(imaplib.IMAP4.error)):
            m.login("bob@example.test", "wrong")
        pop = poplib.POP3_SSL("127.0.0.1", pop_port, context=tls_client(web))
        pop.user("bob@example.test")
        pop.pass_("bob-pass")
        pop.quit()

    await asyncio.to_thread(read)
    details: list[str] = []
    for _ in range(100):  # each is written when the server has ended its session
        await event_log(web.server.ctx.store).flush()
        details = sorted(e.detail.split(" ")[0] for e in
                         await web.store.search_mail_events("bob@example.test")
                         if e.kind == "session")
        if len(details) >= 2:
            break
        await asyncio.sleep(0.05)
    assert details == ["imap", "pop3"], details
    page = await admin.get("/admin/log?q=bob@example.test")
    assert "imap user=bob@example.test tls=TLSv1" in page.text
    # a value from mail is escaped where it is shown
    await web.store.record_mail_events([NewMailEvent(time.time(), "bounced", "EVIL1",
                                                     f"x{EVIL}@evil.test", "a@b.test",
                                                     detail=f"550 {EVIL}")])
    page = await admin.get("/admin/log?q=EVIL1")
    assert EVIL not in page.text and html.escape(EVIL, quote=True) in page.text
    page = await admin.get(f"/admin/log?q={EVIL}")  # the query too
    assert page.status == 200 and EVIL not in page.text


async def test_mail_log_pages(admin: Client, web: WebServer) -> None:
    await web.store.record_mail_events([
        NewMailEvent(1000.0 + n, "delivered", f"Q{n}", "s@example.test", f"r{n}@x.test",
                     detail=f"event number {n}.") for n in range(150)])
    page = await admin.get("/admin/log?q=s@example.test")
    assert page.text.count("event number") == 100 and "event number 149." in page.text
    older = re.search(r'class="older" href="([^"]+)"', page.text)
    assert older is not None
    page = await admin.get(html.unescape(older.group(1)))
    assert page.text.count("event number") == 50 and "event number 49." in page.text
    assert "event number 50." not in page.text and 'class="older"' not in page.text
    assert (await admin.get("/admin/log?before=junk")).status == 200


async def test_queue_hold_and_release(admin: Client, web: WebServer) -> None:
    store = web.store
    await store.accept(b"Subject: held one\r\n\r\nx\r\n", Envelope(sender="a@example.test"),
                       [], [RemoteRecipient("r@remote.test")])
    (item,) = await store.list_queue()
    await admin.get("/admin/queue")
    reply = await admin.post("/admin/queue/hold", {"id": str(item.id)})
    assert (reply.status, reply.headers["location"]) == (303, "/admin/queue?done=held")
    assert await store.held_queue_ids() == {item.id}
    assert await store.claim_queue_items(time.time() + 1e6, 10, "t:1:x", 60) == []
    page = await admin.get("/admin/queue")
    assert "<td>held</td>" in page.text and "/admin/queue/release" in page.text
    assert (await admin.post("/admin/queue/hold", {"id": str(item.id)})).status == 400
    reply = await admin.post("/admin/queue/release", {"id": str(item.id)})
    assert reply.status == 303 and await store.held_queue_ids() == set()
    claimed = await store.claim_queue_items(time.time() + 1, 10, "t:1:x", 60)
    assert [i.id for i in claimed] == [item.id]


def cli(monkeypatch: pytest.MonkeyPatch, instance: Instance, *argv: str) -> int:
    config = instance.dir / "pochta.toml"
    if not config.exists():
        config.write_text(f'hostname = "mail.example.test"\ndata_dir = "data"\n'
                          f'[tls]\ncert = "{instance.cert}"\nkey = "{instance.key}"\n'
                          + storage_toml(instance.raw_config.get("storage", {})))
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    return main(["-c", str(config), *argv])


async def test_queue_hold_cli(web: WebServer, instance: Instance,
                              monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    result = await web.store.accept(b"Subject: q\r\n\r\nx\r\n", Envelope(sender="a@x.test"),
                                    [], [RemoteRecipient("r1@remote.test"),
                                         RemoteRecipient("r2@remote.test")])
    code = await asyncio.to_thread(cli, monkeypatch, instance, "queue", "hold",
                                   result.message_id)
    assert code == 0 and "2 item(s) held" in capsys.readouterr().out
    assert len(await web.store.held_queue_ids()) == 2
    await asyncio.to_thread(cli, monkeypatch, instance, "queue", "list")
    assert capsys.readouterr().out.count(" held ") == 2
    code = await asyncio.to_thread(cli, monkeypatch, instance, "queue", "release",
                                   result.message_id)
    assert code == 0 and "2 item(s) released" in capsys.readouterr().out
    assert await web.store.held_queue_ids() == set()
    assert await asyncio.to_thread(cli, monkeypatch, instance, "queue", "hold", "999") == 1


async def test_dkim_rotation_and_live_dns_check(admin: Client, web: WebServer) -> None:
    config = web.server.ctx.config
    resolver = web.server.resolver
    for key in dkim.load_keys(config.data_path, "example.test"):  # start from one key
        key.path.unlink()
    assert dkim.ensure_domain_keys(config.data_path, "example.test", ("ed25519",))
    old_sel = dkim.active_selectors(config.data_path, "example.test")
    resolver.mx_records["example.test"] = [MX(10, "mail.example.test")]
    resolver.txt_records["example.test"] = ["v=spf1 a -all"]  # not what pochta recommends
    for key in dkim.load_keys(config.data_path, "example.test"):
        resolver.txt_records[key.dns_name] = [dkim.dns_txt_record(key)]
    imaps = services_from_listeners(config.listeners)["imaps"]  # the configured port
    resolver.cname_records["autoconfig.example.test"] = ["mail.example.test."]
    resolver.srv_records["_imaps._tcp.example.test"] = [f"0 1 {imaps} MAIL.example.test"]
    resolver.srv_records["_pop3s._tcp.example.test"] = [f"0 1 {imaps + 1} mail.example.test."]
    page = await admin.get("/admin/domains/example.test")
    assert page.status == 200
    checks = dict(re.findall(r'<tr><td><code>([^<]+)</code></td><td>(?:MX|TXT|SRV|CNAME)'
                             r'</td><td><span class="\w+">(\w+)</span>', page.text))
    assert checks["_dmarc.example.test"] == "missing"
    assert checks["_imaps._tcp.example.test"] == "ok"
    assert checks["_pop3s._tcp.example.test"] == "different"
    assert checks["mta-sts.example.test"] == "missing"
    assert checks["autoconfig.example.test"] == "ok"
    assert "<code>10 mail.example.test.</code>" in page.text  # MX as DNS says it
    assert "<code>v=spf1 a -all</code>" in page.text and ">different<" in page.text
    # rotate: a new key, not signing, not in DNS yet
    reply = await admin.post("/admin/domains/example.test/dkim/rotate", {})
    assert reply.status == 303
    keys = dkim.load_keys(config.data_path, "example.test")
    new = [k for k in keys if k.selector not in old_sel]
    assert len(new) == len(old_sel)
    page = await admin.get("/admin/domains/example.test")
    assert "not in DNS yet" in page.text and new[0].dns_name in page.text
    # switching before DNS shows it is refused
    reply = await admin.post("/admin/domains/example.test/dkim/activate",
                             {"selector": new[0].selector})
    assert reply.status == 400 and "DNS does not show the key" in reply.text
    assert dkim.active_selectors(config.data_path, "example.test") == old_sel
    resolver.txt_records[new[0].dns_name] = [dkim.dns_txt_record(new[0])]
    await admin.get("/admin/domains/example.test")
    reply = await admin.post("/admin/domains/example.test/dkim/activate",
                             {"selector": new[0].selector})
    assert reply.status == 303
    assert new[0].selector in dkim.active_selectors(config.data_path, "example.test")
    # the signing key cannot be retired; the old one can
    await admin.get("/admin/domains/example.test")
    reply = await admin.post("/admin/domains/example.test/dkim/remove",
                             {"selector": new[0].selector})
    assert reply.status == 400
    reply = await admin.post("/admin/domains/example.test/dkim/remove",
                             {"selector": old_sel[0]})
    assert reply.status == 303
    assert old_sel[0] not in {k.selector for k in dkim.load_keys(config.data_path,
                                                                  "example.test")}
    # a failing resolver shows as an error, not a crash
    resolver.fail.add("_dmarc.example.test")
    page = await admin.get("/admin/domains/example.test")
    assert page.status == 200 and ">error<" in page.text


SECRET = re.compile(r'<code id="secret" class="secret">([a-z0-9-]+)</code>')


async def test_app_passwords(web: WebServer) -> None:
    user = Client(web)
    await user.login("alice@example.test", "alice-pass")
    page = await user.get("/account/app-passwords")
    assert page.status == 200
    reply = await user.post("/account/app-passwords/add", {"name": f"phone {EVIL}"})
    assert reply.status == 200 and EVIL not in reply.text
    found = SECRET.search(reply.text)
    assert found is not None
    secret = found.group(1)
    account = await web.store.get_account("alice@example.test")
    assert account is not None
    (stored,) = await web.store.list_app_passwords(account.id)
    assert secret.encode() not in stored.secret_hash and stored.last_used is None
    # shown once: the list does not show it again
    assert secret not in (await user.get("/account/app-passwords")).text
    # a duplicate name and an empty name are refused
    reply = await user.post("/account/app-passwords/add", {"name": f"phone {EVIL}"})
    assert reply.status == 400
    reply = await user.post("/account/app-passwords/add", {"name": "  "})
    assert reply.status == 400

    imap_port = web.server.port("imap", "implicit")
    smtp_port = web.server.port("submission", "implicit")
    pop_port = web.server.port("pop3", "implicit")

    def imap_login(password: str) -> bool:
        with imaplib.IMAP4_SSL("127.0.0.1", imap_port, ssl_context=tls_client(web)) as m:
            try:
                m.login("alice@example.test", password)
            except imaplib.IMAP4.error:
                return False
            return m.select("INBOX")[0] == "OK"

    def smtp_login(password: str) -> bool:
        with smtplib.SMTP_SSL("127.0.0.1", smtp_port, context=tls_client(web),
                              timeout=30) as s:
            try:
                s.login("alice@example.test", password)
            except smtplib.SMTPAuthenticationError:
                return False
            return True

    def pop_login(password: str) -> bool:
        p = poplib.POP3_SSL("127.0.0.1", pop_port, context=tls_client(web))
        try:
            p.user("alice@example.test")
            p.pass_(password)
            return True
        except poplib.error_proto:
            return False
        finally:
            p.quit()

    assert await asyncio.to_thread(imap_login, secret)
    assert await asyncio.to_thread(imap_login, secret.upper().replace("-", " "))
    assert await asyncio.to_thread(smtp_login, secret)
    assert await asyncio.to_thread(pop_login, secret)
    assert await asyncio.to_thread(imap_login, "alice-pass")  # the main password still works
    (stored,) = await web.store.list_app_passwords(account.id)
    assert stored.last_used is not None and time.time() - stored.last_used < 60
    # another account's app password is not alice's
    bob = await web.store.get_account("bob@example.test")
    assert bob is not None
    bob_client = Client(web)
    await bob_client.login("bob@example.test", "bob-pass")
    await bob_client.get("/account/app-passwords")
    reply = await bob_client.post("/account/app-passwords/add", {"name": "laptop"})
    bob_found = SECRET.search(reply.text)
    assert bob_found is not None
    assert not await asyncio.to_thread(imap_login, bob_found.group(1))
    # bob cannot revoke alice's by name: names are per account
    reply = await bob_client.post("/account/app-passwords/revoke",
                                  {"name": f"phone {EVIL}"})
    assert reply.status == 400 and len(await web.store.list_app_passwords(account.id)) == 1
    # never for the web login
    web_login = await Client(web).login("alice@example.test", secret)
    assert web_login.status == 401
    # revoked: refused at once, though it was used (and accepted) a moment ago
    page = await user.get("/account/app-passwords")
    assert "Last used" in page.text and "never" not in page.text.split("<tbody>")[1]
    reply = await user.post("/account/app-passwords/revoke", {"name": f"phone {EVIL}"})
    assert reply.status == 303
    assert not await asyncio.to_thread(imap_login, secret)
    assert not await asyncio.to_thread(smtp_login, secret)
    # CSRF on both forms
    for path, fields in (("/account/app-passwords/add", {"name": "x"}),
                         ("/account/app-passwords/revoke", {"name": "laptop"})):
        await bob_client.get("/account/app-passwords")
        assert (await bob_client.post(path, fields, csrf="")).status == 403
    assert len(await web.store.list_app_passwords(bob.id)) == 1


async def test_app_password_cli(web: WebServer, instance: Instance,
                                monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    code = await asyncio.to_thread(cli, monkeypatch, instance, "user", "app-password", "add",
                                   "bob@example.test", "tablet")
    out = capsys.readouterr().out
    assert code == 0
    secret = out.strip().splitlines()[-1]
    imap_port = web.server.port("imap", "implicit")

    def imap_login(password: str) -> bool:
        with imaplib.IMAP4_SSL("127.0.0.1", imap_port, ssl_context=tls_client(web)) as m:
            try:
                m.login("bob@example.test", password)
            except imaplib.IMAP4.error:
                return False
            return True

    assert await asyncio.to_thread(imap_login, secret)
    await asyncio.to_thread(cli, monkeypatch, instance, "user", "app-password", "list",
                            "bob@example.test")
    listed = capsys.readouterr().out
    assert listed.startswith("tablet\t") and "last used 20" in listed
    assert await asyncio.to_thread(cli, monkeypatch, instance, "user", "app-password",
                                   "revoke", "bob@example.test", "tablet") == 0
    assert not await asyncio.to_thread(imap_login, secret)
    assert await asyncio.to_thread(cli, monkeypatch, instance, "user", "app-password",
                                   "revoke", "bob@example.test", "tablet") == 1


async def test_filters_and_vacation(web: WebServer) -> None:
    user = Client(web)
    await user.login("alice@example.test", "alice-pass")
    page = await user.get("/account/filters")
    assert page.status == 200
    bad = 'require ["fileinto"];\nif header :contains "subject" "x" {\n  fileinto "A"\n}\n'
    reply = await user.post("/account/filters/save", {"name": "mine", "source": bad,
                                                      "activate": "1"})
    assert reply.status == 400 and "line 4" in reply.text and "not saved" in reply.text
    account = await web.store.get_account("alice@example.test")
    assert account is not None
    assert await web.store.get_sieve_script(account.id, "mine") is None
    # what was typed comes back escaped inside the textarea
    sneaky = f'# </textarea>{EVIL}\nkeep\n'
    reply = await user.post("/account/filters/save", {"name": "mine", "source": sneaky + "{"})
    assert reply.status == 400 and EVIL not in reply.text
    good = bad.replace('fileinto "A"\n', 'fileinto "A";\n')
    reply = await user.post("/account/filters/save", {"name": "mine", "source": good,
                                                      "activate": "1"})
    assert reply.status == 303
    assert await web.store.get_active_sieve_script(account.id) == ("mine", good)
    # the vacation form writes a script that compiles and becomes the active one
    await user.get("/account/filters")
    reply = await user.post("/account/filters/vacation", {
        "subject": 'Away "now"', "body": "I am away.\n.\nBack on Monday.", "days": "3",
        "addresses": "alice.alias@example.test"})
    assert reply.status == 303
    active = await web.store.get_active_sieve_script(account.id)
    assert active is not None and active[0] == "vacation"
    assert ":days 3" in active[1] and '"Away \\"now\\""' in active[1] and "\n..\n" in active[1]
    sieve = web.server.ctx.delivery.sieve
    assert sieve is not None
    sieve.compile(active[1])
    await user.get("/account/filters")
    reply = await user.post("/account/filters/vacation", {"body": "x", "days": "9999"})
    assert reply.status == 400
    # activate the other one, delete, deactivate
    await user.get("/account/filters")
    assert (await user.post("/account/filters/activate", {"name": "mine"})).status == 303
    await user.get("/account/filters")
    assert (await user.post("/account/filters/delete", {"name": "vacation"})).status == 303
    await user.get("/account/filters")
    assert (await user.post("/account/filters/delete", {"name": "mine"})).status == 400
    await user.get("/account/filters")
    assert (await user.post("/account/filters/deactivate", {})).status == 303
    assert await web.store.get_active_sieve_script(account.id) is None
    # CSRF
    await user.get("/account/filters")
    reply = await user.post("/account/filters/save", {"name": "x", "source": "keep;"}, csrf="")
    assert reply.status == 403 and await web.store.get_sieve_script(account.id, "x") is None


async def test_separation_and_csrf(admin: Client, web: WebServer) -> None:
    user = Client(web)
    await user.login("alice@example.test", "alice-pass")
    for path in ("/admin/log", "/admin/log?q=bob@example.test"):
        assert (await user.get(path)).status == 403
    await user.get("/account")
    for path in ("/admin/queue/hold", "/admin/queue/release",
                 "/admin/domains/example.test/dkim/rotate"):
        assert (await user.post(path, {"id": "1"})).status == 403, path
    for path in ("/account/app-passwords", "/account/filters"):
        assert (await admin.get(path)).status == 403, path
    # admin forms without the token
    await web.store.accept(b"Subject: q\r\n\r\nx\r\n", Envelope(sender="a@example.test"),
                           [], [RemoteRecipient("r@remote.test")])
    (item,) = await web.store.list_queue()
    await admin.get("/admin/queue")
    assert (await admin.post("/admin/queue/hold", {"id": str(item.id)}, csrf="")).status == 403
    assert await web.store.held_queue_ids() == set()
    data = web.server.ctx.config.data_path
    dkim.ensure_domain_keys(data, "example.test", ("ed25519",))
    before = dkim.load_keys(data, "example.test")
    reply = await admin.post("/admin/domains/example.test/dkim/rotate", {}, csrf="")
    assert reply.status == 403 and dkim.load_keys(data, "example.test") == before


async def test_dashboard_charts(admin: Client, web: WebServer) -> None:
    now = time.time()
    await web.store.record_mail_events(
        [NewMailEvent(now, "accepted", f"M{n}", "top@sender.test" if n % 3 else
                      f"{EVIL}@x.test", f"to{n % 2}@example.test",
                      tag="spam" if n % 4 == 0 else "ham") for n in range(12)]
        + [NewMailEvent(now, "refused", "", "bad@spam.test", tag="spam")])
    page = await admin.get("/admin")
    assert page.status == 200
    assert 'aria-label="spam verdicts"' in page.text and 'aria-label="top senders"' in page.text
    assert "<title>top@sender.test: 8</title>" in page.text
    assert "<title>spam (junk folder): 3</title>" in page.text
    assert "<title>spam (refused): 1</title>" in page.text
    assert "<title>ham (inbox): 9</title>" in page.text
    assert EVIL not in page.text
