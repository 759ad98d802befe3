"""The web admin and self-service pages over HTTPS: functions and security (CSRF, session
fixation, throttling, separation of admins and users, escaping of values from mail)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import pytest

from pochta.passwords import hash_password
from pochta.storage.interfaces import Envelope, QueueState, RemoteRecipient
from tests.conftest import CHEAP_HASHER, Instance
from tests.web.conftest import ADMIN
from tests.web.helpers import Client, WebServer, web_server

EVIL = "<script>alert('x')</script> & <b>bold</b>"


async def test_login_cookie_flags_and_logout(web: WebServer) -> None:
    client = Client(web)
    page = await client.get("/login")
    assert page.status == 200
    assert "default-src 'none'" in page.headers["content-security-policy"]
    reply = await client.login(*ADMIN)
    assert reply.status == 303
    (cookie,) = [c for c in client.set_cookies if c.startswith("__Host-pochta-session=")]
    for flag in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/"):
        assert flag in cookie
    assert "Domain=" not in cookie
    dash = await client.get("/admin")
    assert dash.status == 200 and "Dashboard" in dash.text and "<svg" in dash.text
    session_cookie = client.cookies["__Host-pochta-session"]
    assert (await client.post("/logout", {})).status == 303
    # the old cookie no longer opens anything
    client.cookies["__Host-pochta-session"] = session_cookie
    reply = await client.get("/admin")
    assert reply.status == 303 and reply.headers["location"] == "/login"


async def test_pages_need_a_session(web: WebServer) -> None:
    client = Client(web)
    for path in ("/admin", "/admin/domains", "/admin/queue", "/account"):
        reply = await client.get(path)
        assert (reply.status, reply.headers["location"]) == (303, "/login"), path
    reply = await client.request("POST", "/admin/domains/add", {"domain": "evil.test"})
    assert reply.status == 303
    assert not await web.store.has_domain("evil.test")


async def test_wrong_password(web: WebServer) -> None:
    client = Client(web)
    reply = await client.login("root", "wrong-password")
    assert reply.status == 401 and "Wrong name or password" in reply.text
    assert "__Host-pochta-session" not in client.cookies
    assert (await client.login("nobody", "whatever-pass")).status == 401


async def test_domains_and_dns_records(admin: Client, web: WebServer) -> None:
    await admin.get("/admin/domains")
    reply = await admin.post("/admin/domains/add", {"domain": "New-Domain.test"})
    assert (reply.status, reply.headers["location"]) == (
        303, "/admin/domains/new-domain.test?done=domain-added")
    assert await web.store.has_domain("new-domain.test")
    page = await admin.get("/admin/domains/new-domain.test")
    assert page.status == 200
    assert "new-domain.test.\t3600\tIN\tMX\t10 mail.example.test." in page.text.replace(
        "&#x27;", "'")
    assert "_submissions._tcp.new-domain.test" in page.text
    assert "v=spf1 mx -all" in page.text
    await admin.get("/admin/domains")
    reply = await admin.post("/admin/domains/add", {"domain": "not a domain!"})
    assert reply.status == 400
    await admin.get("/admin/domains")
    reply = await admin.post("/admin/domains/remove", {"domain": "new-domain.test"})
    assert reply.status == 303 and not await web.store.has_domain("new-domain.test")
    await admin.get("/admin/domains")
    reply = await admin.post("/admin/domains/remove", {"domain": "example.test"})
    assert reply.status == 400 and "still has accounts" in reply.text


async def test_accounts(admin: Client, web: WebServer) -> None:
    auth = web.server.ctx.authenticator
    await admin.get("/admin/accounts")
    reply = await admin.post("/admin/accounts/add", {"address": "carol@example.test",
                                                     "password": "carol-pass-1"})
    assert reply.status == 303
    assert await auth.check_password("carol@example.test", "carol-pass-1", "192.0.2.9")
    page = await admin.get("/admin/accounts")
    assert "carol@example.test" in page.text
    reply = await admin.post("/admin/accounts/add", {"address": "dan@nowhere.test",
                                                     "password": "dan-pass-12"})
    assert reply.status == 400 and "not a local domain" in reply.text
    await admin.get("/admin/accounts")
    reply = await admin.post("/admin/accounts/add", {"address": "eve@example.test",
                                                     "password": "short"})
    assert reply.status == 400 and "at least 8" in reply.text
    # password reset
    await admin.get("/admin/accounts")
    assert (await admin.post("/admin/accounts/password", {
        "address": "carol@example.test", "password": "new-carol-pass"})).status == 303
    assert await auth.check_password("carol@example.test", "new-carol-pass", "192.0.2.9")
    assert not await auth.check_password("carol@example.test", "carol-pass-1", "192.0.2.9")
    # quota, shown with usage
    await admin.get("/admin/accounts")
    assert (await admin.post("/admin/accounts/quota", {
        "address": "carol@example.test", "quota_mb": "50"})).status == 303
    account = await web.store.get_account("carol@example.test")
    assert account is not None and account.quota_bytes == 50 * 1048576
    assert "0 B of 50.0 MiB (0%)" in (await admin.get("/admin/accounts")).text
    # disable and enable
    assert (await admin.post("/admin/accounts/disable", {
        "address": "carol@example.test", "disabled": "1"})).status == 303
    assert not await auth.check_password("carol@example.test", "new-carol-pass", "192.0.2.9")
    await admin.get("/admin/accounts")
    await admin.post("/admin/accounts/disable", {"address": "carol@example.test",
                                                 "disabled": "0"})
    assert await auth.check_password("carol@example.test", "new-carol-pass", "192.0.2.9")
    # aliases
    await admin.get("/admin/accounts")
    assert (await admin.post("/admin/aliases/add", {
        "source": "sales@example.test",
        "targets": "alice@example.test, bob@example.test"})).status == 303
    alias = await web.store.get_alias("sales@example.test")
    assert alias is not None and set(alias.targets) == {"alice@example.test",
                                                        "bob@example.test"}
    page = await admin.get("/admin/accounts")
    assert "sales@example.test" in page.text
    assert (await admin.post("/admin/aliases/remove",
                             {"source": "sales@example.test"})).status == 303
    assert await web.store.get_alias("sales@example.test") is None


async def queue_message(web: WebServer, subject: str) -> int:
    data = (f"From: alice@example.test\r\nTo: x@remote.test\r\nSubject: {subject}\r\n\r\n"
            "hello\r\n").encode()
    await web.store.accept(data, Envelope(sender="alice@example.test"), [],
                           [RemoteRecipient("x@remote.test")])
    (item,) = [i for i in await web.store.list_queue() if i.state is QueueState.PENDING]
    return int(item.id)


async def test_queue_escapes_and_retries(admin: Client, web: WebServer) -> None:
    item_id = await queue_message(web, EVIL)
    later = time.time() + 3600
    await web.store.reschedule_queue_items([item_id], later)
    page = await admin.get("/admin/queue")
    assert page.status == 200
    assert "<script>alert" not in page.text and "<b>bold</b>" not in page.text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;bold" in page.text
    assert "x@remote.test" in page.text
    reply = await admin.post("/admin/queue/retry", {"id": str(item_id)})
    assert (reply.status, reply.headers["location"]) == (303, "/admin/queue?done=retried")
    (item,) = await web.store.list_queue()
    assert item.next_attempt <= time.time() and item.attempts == 0
    await admin.get("/admin/queue")
    assert (await admin.post("/admin/queue/delete", {"id": str(item_id)})).status == 303
    assert await web.store.list_queue() == []


async def test_encoded_subject_is_decoded_then_escaped(admin: Client, web: WebServer) -> None:
    await queue_message(web, "=?utf-8?b?PHNjcmlwdD7Qn9GA0LjQstC10YI8L3NjcmlwdD4=?=")
    page = await admin.get("/admin/queue")
    assert "&lt;script&gt;Привет&lt;/script&gt;" in page.text
    assert "<script>Привет" not in page.text


async def test_csrf_required_on_every_state_change(admin: Client, web: WebServer) -> None:
    item_id = await queue_message(web, "q")
    changes = [("/admin/domains/add", {"domain": "csrf.test"}),
               ("/admin/domains/remove", {"domain": "example.test"}),
               ("/admin/accounts/add", {"address": "m@example.test", "password": "mallory-1"}),
               ("/admin/accounts/password", {"address": "alice@example.test",
                                             "password": "hijacked-pass"}),
               ("/admin/accounts/quota", {"address": "alice@example.test", "quota_mb": "1"}),
               ("/admin/accounts/disable", {"address": "alice@example.test", "disabled": "1"}),
               ("/admin/aliases/add", {"source": "x@example.test", "targets": "m@evil.test"}),
               ("/admin/queue/retry", {"id": str(item_id)}),
               ("/admin/queue/delete", {"id": str(item_id)}),
               ("/admin/doctor", {}),
               ("/logout", {})]
    for path, fields in changes:
        for token in ("", "forged-token"):
            reply = await admin.post(path, fields, csrf=token)
            assert reply.status == 403, (path, token)
    # a right token from another site (Origin) is refused too
    await admin.get("/admin/domains")
    reply = await admin.request("POST", "/admin/domains/add",
                                {"domain": "csrf.test", "csrf": admin.csrf()},
                                {"Origin": "https://evil.example"})
    assert reply.status == 403
    assert not await web.store.has_domain("csrf.test")
    assert (await web.store.list_queue())[0].id == item_id
    account = await web.store.get_account("alice@example.test")
    assert account is not None and not account.disabled and not account.quota_bytes
    # and the session still works
    assert (await admin.get("/admin")).status == 200


async def test_login_form_needs_its_token(web: WebServer) -> None:
    """Login CSRF: another site cannot log a visitor in (to an account it controls)."""
    client = Client(web)
    reply = await client.request("POST", "/login", {"username": ADMIN[0],
                                                    "password": ADMIN[1], "csrf": "x"})
    assert reply.status == 403 and "__Host-pochta-session" not in client.cookies


async def test_session_fixation(web: WebServer) -> None:
    client = Client(web)
    planted = "attacker-chosen-session-id-0123456789"
    client.cookies["__Host-pochta-session"] = planted
    reply = await client.login(*ADMIN)
    assert reply.status == 303
    fresh = client.cookies["__Host-pochta-session"]
    assert fresh != planted and len(fresh) >= 40
    attacker = Client(web, cookies={"__Host-pochta-session": planted})
    assert (await attacker.get("/admin")).status == 303  # the planted id opens nothing


@pytest.fixture
async def strict_web(instance: Instance) -> AsyncIterator[WebServer]:
    async for s in web_server(instance, auth={"failures_before_delay": 100,
                                              "failures_before_lockout": 3,
                                              "lockout_seconds": 600}):
        await s.store.add_admin(ADMIN[0], hash_password(ADMIN[1], hasher=CHEAP_HASHER), time.time())
        yield s


async def test_throttling_locks_out_after_failures(strict_web: WebServer) -> None:
    client = Client(strict_web)
    for _ in range(3):
        assert (await client.login("root", "bad-password")).status == 401
    reply = await client.login(*ADMIN)  # right password, but locked out
    assert reply.status == 429 and "Too many failed logins" in reply.text
    user = Client(strict_web)  # the same IP: mail users are locked out too
    assert (await user.login("alice@example.test", "alice-pass")).status == 429


async def test_parallel_admin_guesses_cannot_outrun_the_lockout(strict_web: WebServer
                                                                 ) -> None:
    # the requests go out on the event loop (not on executor threads, which the server
    # needs for its password checks)
    client = Client(strict_web)
    await client.get("/login")
    token, cookie = client.csrf(), "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    port = strict_web.server.port("http", "implicit")

    async def guess(n: int) -> int:
        body = urlencode({"username": "root", "password": f"guess-{n}", "csrf": token})
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=strict_web.server.client_ssl())
        writer.write((f"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n"
                      "Content-Type: application/x-www-form-urlencoded\r\n"
                      f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
                      ).encode())
        status = int((await reader.readline()).split()[1])
        writer.close()
        return status

    statuses = sorted(await asyncio.gather(*[guess(n) for n in range(12)]))
    assert statuses == [401] * 3 + [429] * 9  # locked out after 3: the rest never verified


async def test_user_self_service_and_no_admin_pages(web: WebServer) -> None:
    user = Client(web)
    reply = await user.login("alice@example.test", "alice-pass")
    assert (reply.status, reply.headers["location"]) == (303, "/account")
    page = await user.get("/account")
    assert page.status == 200 and "alice@example.test" in page.text and "unlimited" in page.text
    for path in ("/admin", "/admin/accounts", "/admin/queue", "/admin/domains/example.test"):
        assert (await user.get(path)).status == 403, path
    await user.get("/account")
    reply = await user.post("/admin/accounts/password", {"address": "bob@example.test",
                                                         "password": "taken-over-1"})
    assert reply.status == 403
    auth = web.server.ctx.authenticator
    assert await auth.check_password("bob@example.test", "bob-pass", "192.0.2.9")
    # change the own password: the current one is required
    await user.get("/account")
    reply = await user.post("/account/password", {"current": "wrong", "password": "x" * 10})
    assert reply.status == 400 and "current password is wrong" in reply.text
    reply = await user.post("/account/password", {"current": "alice-pass",
                                                  "password": "alice-new-pass"})
    assert reply.status == 303
    assert await auth.check_password("alice@example.test", "alice-new-pass", "192.0.2.9")
    assert (await user.get("/account")).status == 200  # this session survives
    # an admin cannot use the self-service page as someone
    admin = Client(web)
    await admin.login(*ADMIN)
    assert (await admin.get("/account")).status == 403


async def test_doctor_page(admin: Client) -> None:
    await admin.get("/admin/doctor")
    reply = await admin.post("/admin/doctor", {"dns": "0"})
    assert reply.status == 200
    assert "Results" in reply.text and "config is valid" in reply.text


async def test_static_files_are_local(web: WebServer) -> None:
    css = await web.call("GET", "/static/pochta.css")
    assert css.status == 200 and css.headers["content-type"].startswith("text/css")
    page = await web.call("GET", "/login")
    assert "http://" not in page.text.replace("http://www.w3.org", "")
    assert "https://" not in page.text


async def test_https_only(web: WebServer) -> None:
    for method, path in (("GET", "/login"), ("POST", "/login"), ("GET", "/admin"),
                         ("GET", "/account"), ("POST", "/admin/domains/add")):
        reply = await web.call(method, path, tls=False)
        assert reply.status == 403 and "HTTPS only" in reply.text, path
