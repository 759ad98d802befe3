"""The web admin (``/admin``) and the users' self-service page (``/account``).

Sessions: ``POST /login`` with a web admin's name (``pochta admin add``) or a mail
account's address. A new random session id is made at every login (an id known before the
login is never promoted: no session fixation); the store keeps its SHA-256. The cookie is
``HttpOnly; SameSite=Strict; Path=/`` and, unless ``[web] secure_cookies = false``,
``Secure`` with the ``__Host-`` prefix (the browser then refuses it from plain HTTP or
another host). The login form itself is protected by a double-submit token (a cookie and
a form field that must match), so another site cannot log a visitor in to its account.

CSRF: every POST after login carries the session's token in the form (``csrf``), checked
in constant time; an ``Origin`` header naming another host is refused as well.

Throttling: web logins go through the same brute-force limiter as IMAP/SMTP logins
(services/auth.py): wrong passwords are delayed, then the IP (or the name from that IP) is
locked out for ``[auth] lockout_seconds``; admins are counted as ``admin:NAME``.

Admin pages: dashboard, domains (+ DNS records), accounts (add, password, quota, disable,
aliases), the queue (list, retry, delete), doctor. Users: change password, see quota.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.header
import functools
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from ..diag.doctor import DoctorOptions, run_doctor
from ..http.core import Request, Response
from ..http.router import Router
from ..mail.addresses import (
    AddressError,
    normalize_address,
    normalize_alias_source,
    normalize_domain,
    split_address,
)
from ..mail.headers import header_values, split_header
from ..metrics import METRICS
from ..passwords import derive_scram, dummy_hash, hash_password, verify_password
from ..policy import dkim, records
from ..services.auth import normalize_address as login_key
from ..storage.interfaces import AlreadyExists, NotFound, QueueState, StoreError
from ..storage.interfaces_web import WebSession
from .html import ADMIN_NAV, CSS, JS, USER_NAV, bar_chart, esc, form, hidden, page, table
from .ops_pages import OpsPages
from .sender_pages import NOTICES as SENDER_NOTICES
from .sender_pages import SenderPages

if TYPE_CHECKING:
    from ..context import AppContext

DOMAIN = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
                    r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
MIN_PASSWORD = 8
MAX_FORM_FIELDS = 50
QUEUE_PAGE = 500
ACCOUNTS_PAGE = 500

Handler = Callable[[Request, dict[str, str]], Awaitable[Response]]
Page = Callable[[Request, dict[str, str], WebSession], Awaitable[Response]]

NOTICES = {
    "domain-added": "Domain added.", "domain-removed": "Domain removed.",
    "account-added": "Account added.", "password-set": "Password changed.",
    "quota-set": "Quota changed.", "disabled": "Account disabled.", "enabled": "Account enabled.",
    "alias-added": "Alias added.", "alias-removed": "Alias removed.",
    "retried": "The item will be tried again now.", "deleted": "Queue item deleted.",
    # ops_pages.py
    "held": "The item is held: it will not be delivered until released.",
    "released": "The item is released and will be tried now.",
    "dkim-new": "New DKIM key made: publish its TXT record, then switch signing to it.",
    "dkim-switched": "Signing switched to the new key.", "dkim-retired": "Key retired.",
    "app-password-revoked": "App password revoked: it no longer logs in.",
    "filter-saved": "Script saved.", "filter-changed": "Done.",
    "vacation-on": "The vacation reply is on.",
    **SENDER_NOTICES,  # sender_pages.py
}


class Stop(Exception):
    """Answer ``response`` now (redirect, refusal)."""

    def __init__(self, response: Response) -> None:
        super().__init__()
        self.response = response


def redirect(location: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(303, b"", "text/plain", [("Location", location), *(headers or [])])


def _hash(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


def _cookies(request: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in request.headers:
        if name != "cookie":
            continue
        for part in value.split(";"):
            key, sep, val = part.strip().partition("=")
            if sep and key not in out:
                out[key] = val
    return out


def _form(request: Request) -> dict[str, str]:
    ctype = (request.header("content-type") or "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise Stop(page("Bad request", "<p>Send the form.</p>", status=415))
    try:
        pairs = parse_qsl(request.body.decode("utf-8"), keep_blank_values=True,
                          max_num_fields=MAX_FORM_FIELDS, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise Stop(page("Bad request", "<p>Unreadable form.</p>", status=400)) from None
    return dict(pairs)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _subject(data: bytes) -> str:
    """The decoded Subject of a message (headers only)."""
    raw = (header_values(split_header(data[:65536])[0], "Subject") or [""])[0]
    try:
        return str(email.header.make_header(email.header.decode_header(raw)))
    except (ValueError, LookupError, UnicodeError):
        return raw


class WebApp:
    def __init__(self, ctx: AppContext) -> None:

        self.ctx = ctx
        self.ops = OpsPages(self)
        self.senders = SenderPages(self)
        self.settings = ctx.config.web
        secure = self.settings.secure_cookies
        self.cookie = "__Host-pochta-session" if secure else "pochta-session"
        self.pre_cookie = "__Host-pochta-login" if secure else "pochta-login"
        self._dummy: str | None = None
        self._ip_locks: dict[str, asyncio.Lock] = {}
        self._ip_waiting: dict[str, int] = {}

    # -- cookies and sessions ------------------------------------------------------------

    def _plain_http(self, request: Request) -> Response | None:
        """Passwords and session cookies never cross plain HTTP (unless the admin turned
        secure cookies off for a test listener)."""
        if request.scheme == "https" or not self.settings.secure_cookies:
            return None
        return page("HTTPS only", "<p>The web admin and the account pages are served over "
                    "HTTPS only: use the server's https address.</p>", status=403)

    def _set_cookie(self, name: str, value: str, max_age: int) -> tuple[str, str]:
        attrs = f"{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"
        if self.settings.secure_cookies:
            attrs += "; Secure"
        return ("Set-Cookie", attrs)

    async def session(self, request: Request) -> WebSession | None:
        value = _cookies(request).get(self.cookie, "")
        if not value or len(value) > 100:
            return None
        return await self.ctx.store.get_web_session(_hash(value), time.time())

    def _check_origin(self, request: Request) -> None:
        origin = request.header("origin")
        if origin is None:
            return
        host = (request.header("host") or "").lower()
        if urlsplit(origin).netloc.lower() != host:
            raise Stop(page("Forbidden", "<p>Cross-site request refused.</p>", status=403))

    def _check_csrf(self, request: Request, session: WebSession, fields: dict[str, str]
                    ) -> None:
        self._check_origin(request)
        given = fields.get("csrf", "")
        if not hmac.compare_digest(given.encode(), session.csrf.encode()):
            raise Stop(page("Forbidden", "<p>The form has expired or did not come from "
                            "this site (CSRF token missing or wrong). Reload the page and "
                            "try again.</p>", status=403))

    def guard(self, kind: str, fn: Page) -> Handler:
        """Wrap a page: a session of ``kind`` ("admin" or "user") is required; a POST
        needs the session's CSRF token."""

        async def handler(request: Request, params: dict[str, str]) -> Response:
            refused = self._plain_http(request)
            if refused is not None:
                return refused
            try:
                session = await self.session(request)
                if session is None:
                    return redirect("/login")
                if not session.principal.startswith(f"{kind}:"):
                    return page("Forbidden", "<p>This page is not for your account.</p>",
                                who=session.principal.split(":", 1)[1], csrf=session.csrf,
                                nav=USER_NAV if kind == "admin" else ADMIN_NAV, status=403)
                if request.method == "POST":
                    fields = _form(request)
                    self._check_csrf(request, session, fields)
                    request.query = {**request.query, **fields}
                return await fn(request, params, session)
            except Stop as stop:
                return stop.response

        return handler

    def _page(self, session: WebSession, title: str, body: str, request: Request,
              error: str = "", status: int = 200) -> Response:
        kind, who = session.principal.split(":", 1)
        notice = NOTICES.get(request.query.get("done", ""), "")
        return page(title, body, who=who, csrf=session.csrf,
                    nav=ADMIN_NAV if kind == "admin" else USER_NAV, notice=notice,
                    error=error, status=status)

    # -- login and logout ----------------------------------------------------------------

    async def login_page(self, request: Request, _: dict[str, str], error: str = "",
                         status: int = 200) -> Response:
        refused = self._plain_http(request)
        if refused is not None:
            return refused
        token = secrets.token_urlsafe(24)
        body = f"""<form method="post" action="/login" class="stack login">
{hidden("csrf", token)}
<label>Name or mail address<br><input name="username" autocomplete="username" required
 autofocus></label>
<label>Password<br><input name="password" type="password" autocomplete="current-password"
 required></label>
<button type="submit">Log in</button></form>
<p>Administrators log in with their admin name; mail users with their address.</p>"""
        return page("Log in", body, error=error, status=status,
                    headers=[self._set_cookie(self.pre_cookie, token, 3600)])

    async def login(self, request: Request, params: dict[str, str]) -> Response:
        refused = self._plain_http(request)
        if refused is not None:
            return refused
        try:
            fields = _form(request)
            self._check_origin(request)
        except Stop as stop:
            return stop.response
        pre = _cookies(request).get(self.pre_cookie, "")
        if not pre or not hmac.compare_digest(fields.get("csrf", "").encode(), pre.encode()):
            return await self.login_page(request, params, "The login form expired; try "
                                         "again.", 403)
        username = fields.get("username", "").strip()
        password = fields.get("password", "")
        ip = request.peer_ip
        auth = self.ctx.authenticator
        if "@" in username:
            key = login_key(username)
            if not await auth.allowed(ip, key):
                return await self._locked(request, params)
            account = await auth.check_password(username, password, ip, app_passwords=False)
            principal = f"user:{account.address}" if account is not None else ""
        else:
            # one admin check at a time per client address: parallel guesses cannot all
            # be verified before the first failure is counted (and the lockout applies)
            lock = self._ip_locks.setdefault(ip, asyncio.Lock())
            self._ip_waiting[ip] = self._ip_waiting.get(ip, 0) + 1
            try:
                async with lock:
                    key = login_key(f"admin:{username}")
                    if not await auth.allowed(ip, key):
                        return await self._locked(request, params)
                    admin = await self.ctx.store.get_admin(username) if username else None
                    stored = (admin.password_hash if admin is not None
                              else await self._dummy_hash())
                    ok = await asyncio.to_thread(functools.partial(
                        verify_password, stored, password, hasher=self.ctx.authenticator.hasher))
                    if admin is not None and ok:
                        auth.limiter.record_success(ip, key)
                        principal = f"admin:{admin.name}"
                    else:
                        await auth.register_failure(ip, key,
                                                    "wrong web admin name or password")
                        principal = ""
            finally:
                self._ip_waiting[ip] -= 1
                if not self._ip_waiting[ip]:  # nobody holds or waits for it
                    del self._ip_waiting[ip], self._ip_locks[ip]
        if not principal:
            return await self.login_page(request, params, "Wrong name or password.", 401)
        session_id = secrets.token_urlsafe(32)
        now = time.time()
        await self.ctx.store.purge_web_sessions(now)
        await self.ctx.store.create_web_session(WebSession(
            _hash(session_id), principal, secrets.token_urlsafe(32), now,
            now + self.settings.session_seconds))
        target = "/admin" if principal.startswith("admin:") else "/account"
        return redirect(target, [self._set_cookie(self.cookie, session_id,
                                                  self.settings.session_seconds),
                                 self._set_cookie(self.pre_cookie, "", 0)])

    async def _locked(self, request: Request, params: dict[str, str]) -> Response:
        METRICS.inc("pochta_auth_failures_total", role="http")
        return await self.login_page(request, params, "Too many failed logins from your "
                                     "address: try again later.", 429)

    async def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = await asyncio.to_thread(
                functools.partial(dummy_hash, hasher=self.ctx.authenticator.hasher))
        return self._dummy

    async def logout(self, request: Request, _: dict[str, str]) -> Response:
        try:
            session = await self.session(request)
            if session is not None:
                self._check_csrf(request, session, _form(request))
                await self.ctx.store.delete_web_session(session.id_hash)
        except Stop as stop:
            return stop.response
        return redirect("/login", [self._set_cookie(self.cookie, "", 0)])

    async def root(self, request: Request, _: dict[str, str]) -> Response:
        session = await self.session(request)
        if session is None:
            return redirect("/login")
        return redirect("/admin" if session.principal.startswith("admin:") else "/account")

    async def static(self, request: Request, params: dict[str, str]) -> Response:
        files = {"pochta.css": (CSS, "text/css; charset=utf-8"),
                 "pochta.js": (JS, "text/javascript; charset=utf-8")}
        found = files.get(params["name"])
        if found is None:
            return Response(404, b"not found\n", "text/plain; charset=utf-8")
        return Response(200, found[0].encode(), found[1],
                        [("Cache-Control", "max-age=3600"), ("X-Content-Type-Options",
                                                              "nosniff")])

    # -- admin: dashboard ----------------------------------------------------------------

    async def dashboard(self, request: Request, _: dict[str, str], s: WebSession) -> Response:
        store = self.ctx.store
        # count queries in the store: the page costs the same with 10 or 10,000 accounts
        states, _oldest = await store.queue_summary()
        cards = [("Domains", await store.count_domains()),
                 ("Accounts", await store.count_accounts()),
                 ("Queue: pending", states.get(QueueState.PENDING.value, 0)),
                 ("Queue: deferred", states.get(QueueState.DEFERRED.value, 0)),
                 ("Queue: failed", states.get(QueueState.FAILED.value, 0)),
                 ("Accepted (since start)", int(METRICS.total("pochta_messages_accepted_total"))),
                 ("Refused (since start)", int(METRICS.total("pochta_messages_refused_total"))),
                 ("Delivered (since start)",
                  int(METRICS.value("pochta_deliveries_total", result="delivered"))),
                 ("Bounced (since start)",
                  int(METRICS.value("pochta_deliveries_total", result="bounced"))),
                 ("Login failures (since start)",
                  int(METRICS.total("pochta_auth_failures_total")))]
        body = '<div class="cards">' + "".join(
            f'<div class="card"><b>{esc(v)}</b>{esc(k)}</div>' for k, v in cards) + "</div>"
        hours = METRICS.per_hour("pochta_messages_accepted_total")
        points = [(datetime.fromtimestamp(h, UTC).strftime("%H:00"), v) for h, v in hours]
        body += ("<h2>Messages accepted per hour (UTC, last 24 hours)</h2>"
                 + bar_chart(points, label="messages accepted per hour"))
        body += await self.ops.dashboard_charts()
        return self._page(s, "Dashboard", body, request)

    # -- admin: domains ------------------------------------------------------------------

    async def domains(self, request: Request, _: dict[str, str], s: WebSession) -> Response:
        rows = []
        for d in await self.ctx.store.list_domains():
            remove = form("/admin/domains/remove", s.csrf, hidden("domain", d), "Remove",
                          danger=True).replace(
                "<form ", f'<form data-confirm="Remove {esc(d)}?" ', 1)
            rows.append([f'<a href="/admin/domains/{esc(d)}">{esc(d)}</a>',
                         f'<a href="/admin/domains/{esc(d)}">DNS records</a>', remove])
        body = table(["Domain", "", ""], rows)
        body += "<h2>Add a domain</h2>" + form(
            "/admin/domains/add", s.csrf,
            '<input name="domain" placeholder="example.org" required> ', "Add domain")
        return self._page(s, "Domains", body, request)

    async def domain_add(self, request: Request, _: dict[str, str], s: WebSession) -> Response:
        try:
            domain = normalize_domain(request.query.get("domain", "").strip())
            if not DOMAIN.match(domain):
                raise ValueError(f"{domain!r}")
            await self.ctx.store.add_domain(domain)
        except (AddressError, ValueError) as exc:
            return await self._error(self.domains, request, s, f"Not a domain name: {exc}")
        except AlreadyExists:
            return await self._error(self.domains, request, s, "That domain exists already.")
        return redirect(f"/admin/domains/{domain}?done=domain-added")

    async def domain_remove(self, request: Request, _: dict[str, str], s: WebSession
                            ) -> Response:
        domain = request.query.get("domain", "")
        if await self.ctx.store.list_accounts(domain):
            return await self._error(self.domains, request, s,
                                     f"{domain} still has accounts: remove them first.")
        try:
            await self.ctx.store.remove_domain(domain)
        except (NotFound, StoreError) as exc:
            return await self._error(self.domains, request, s, str(exc))
        return redirect("/admin/domains?done=domain-removed")

    async def domain_records(self, request: Request, params: dict[str, str], s: WebSession
                             ) -> Response:
        domain = params["name"].lower()
        if not await self.ctx.store.has_domain(domain):
            return self._page(s, "No such domain", "", request, status=404)
        config = self.ctx.config
        keys = dkim.load_keys(config.data_path, domain)
        recs = records.records_for(domain, config.hostname, keys,
                                   rua=config.dmarc.report_address,
                                   services=records.services_from_listeners(config.listeners))
        rows = []
        for i, r in enumerate(recs):
            rows.append([f"<code>{esc(r.name)}</code>", esc(r.type),
                         f'<code id="rec{i}">{esc(r.value)}</code> '
                         f'<button class="copy" type="button" data-copy="rec{i}">Copy</button>',
                         esc(r.note)])
        zone = records.zone_lines(recs)
        body = (f"<p>Publish these records in the DNS zone of <b>{esc(domain)}</b>. "
                "The Doctor page compares them with what DNS says now.</p>"
                + table(["Name", "Type", "Value", "Why"], rows, "records")
                + '<h2>As zone-file lines</h2><pre id="zone">' + esc(zone) + "</pre>"
                + '<button class="copy" type="button" data-copy="zone">Copy all</button>')
        if not keys:
            body += ("<p>No DKIM key yet: <code>pochta dkim generate "
                     f"{esc(domain)}</code> makes one.</p>")
        body += await self.ops.dns_section(domain, list(recs), s)
        return self._page(s, f"DNS records for {domain}", body, request)

    # -- admin: accounts -----------------------------------------------------------------

    async def accounts(self, request: Request, _: dict[str, str], s: WebSession,
                       error: str = "") -> Response:
        store = self.ctx.store
        domain = request.query.get("domain") or None
        accounts = (await store.list_accounts(domain))[:ACCOUNTS_PAGE]
        rows = []
        for a in accounts:
            used = await store.account_usage(a.id)
            quota = _size(a.quota_bytes) if a.quota_bytes else "unlimited"
            share = f" ({100 * used / a.quota_bytes:.0f}%)" if a.quota_bytes else ""
            addr = hidden("address", a.address)
            actions = " ".join([
                form("/admin/accounts/password", s.csrf,
                     addr + '<input name="password" type="password" placeholder="new password"'
                     ' autocomplete="new-password" required minlength="8"> ', "Set password"),
                form("/admin/accounts/quota", s.csrf,
                     addr + f'<input name="quota_mb" size="6" value="'
                     f'{a.quota_bytes // 1048576 if a.quota_bytes else 0}"> MiB ', "Set quota"),
                form("/admin/accounts/disable", s.csrf,
                     addr + hidden("disabled", "0" if a.disabled else "1"),
                     "Enable" if a.disabled else "Disable", danger=not a.disabled),
            ])
            rows.append([esc(a.address), f"{esc(_size(used))} of {esc(quota)}{esc(share)}",
                         "disabled" if a.disabled else "active", actions])
        body = table(["Address", "Usage", "State", "Actions"], rows, "accounts")
        body += "<h2>Add an account</h2>" + form(
            "/admin/accounts/add", s.csrf,
            '<input name="address" placeholder="user@example.org" required> '
            '<input name="password" type="password" placeholder="password" required '
            'minlength="8" autocomplete="new-password"> ', "Add account")
        aliases = await store.list_aliases(domain)
        arows = [[esc(al.source), esc(", ".join(al.targets)),
                  form("/admin/aliases/remove", s.csrf, hidden("source", al.source), "Remove",
                       danger=True)] for al in aliases]
        body += "<h2>Aliases</h2>" + table(["Alias", "Delivers to", ""], arows, "aliases")
        body += form("/admin/aliases/add", s.csrf,
                     '<input name="source" placeholder="sales@example.org or @example.org" '
                     'required> <input name="targets" placeholder="a@example.org, b@…" '
                     'required> ', "Add alias")
        return self._page(s, "Accounts", body, request, error=error,
                          status=400 if error else 200)

    async def _error(self, view: Page, request: Request, s: WebSession, message: str
                     ) -> Response:
        response = await view(request, {}, s)
        # re-render with the message (the view shows request state only)
        body = response.body.replace(
            b"</h1>", b'</h1><p class="error" role="alert">' + esc(message).encode() + b"</p>",
            1)
        return Response(400, body, response.content_type, response.headers)

    def _password(self, value: str) -> str:
        if len(value) < MIN_PASSWORD:
            raise ValueError(f"a password has at least {MIN_PASSWORD} characters")
        return value

    async def account_add(self, request: Request, _: dict[str, str], s: WebSession
                          ) -> Response:
        store = self.ctx.store
        try:
            address = normalize_address(request.query.get("address", "").strip())
            password = self._password(request.query.get("password", ""))
        except (AddressError, ValueError) as exc:
            return await self._error(self.accounts, request, s, str(exc))
        if not await store.has_domain(split_address(address)[1]):
            return await self._error(self.accounts, request, s,
                                     f"{split_address(address)[1]} is not a local domain.")
        hasher = self.ctx.authenticator.hasher  # [auth] argon2_*
        hashed, scram = await asyncio.to_thread(lambda: (hash_password(password, hasher=hasher),
                                                         derive_scram(password)))
        try:
            await store.add_account(address, hashed, scram)
        except AlreadyExists:
            return await self._error(self.accounts, request, s, f"{address} exists already.")
        return redirect("/admin/accounts?done=account-added")

    async def account_password(self, request: Request, _: dict[str, str], s: WebSession
                               ) -> Response:
        address = request.query.get("address", "")
        try:
            password = self._password(request.query.get("password", ""))
        except ValueError as exc:
            return await self._error(self.accounts, request, s, str(exc))
        hasher = self.ctx.authenticator.hasher  # [auth] argon2_*
        hashed, scram = await asyncio.to_thread(lambda: (hash_password(password, hasher=hasher),
                                                         derive_scram(password)))
        try:
            await self.ctx.store.set_password(address, hashed, scram)
        except NotFound:
            return await self._error(self.accounts, request, s, f"No account {address}.")
        await self.ctx.store.delete_web_sessions_of(f"user:{address}")
        return redirect("/admin/accounts?done=password-set")

    async def account_quota(self, request: Request, _: dict[str, str], s: WebSession
                            ) -> Response:
        try:
            mib = int(request.query.get("quota_mb", ""))
            if mib < 0:
                raise ValueError
        except ValueError:
            return await self._error(self.accounts, request, s,
                                     "The quota is a number of MiB (0: unlimited).")
        try:
            await self.ctx.store.update_account(request.query.get("address", ""),
                                                quota_bytes=mib * 1048576)
        except NotFound as exc:
            return await self._error(self.accounts, request, s, str(exc))
        return redirect("/admin/accounts?done=quota-set")

    async def account_disable(self, request: Request, _: dict[str, str], s: WebSession
                              ) -> Response:
        address = request.query.get("address", "")
        disabled = request.query.get("disabled") == "1"
        try:
            await self.ctx.store.update_account(address, disabled=disabled)
        except NotFound as exc:
            return await self._error(self.accounts, request, s, str(exc))
        if disabled:
            await self.ctx.store.delete_web_sessions_of(f"user:{address}")
        return redirect(f"/admin/accounts?done={'disabled' if disabled else 'enabled'}")

    async def alias_add(self, request: Request, _: dict[str, str], s: WebSession) -> Response:
        try:
            targets = [normalize_address(t.strip())
                       for t in request.query.get("targets", "").split(",") if t.strip()]
            source = normalize_alias_source(request.query.get("source", ""))
            domain = source.rpartition("@")[2]
        except AddressError as exc:
            return await self._error(self.accounts, request, s, str(exc))
        if not targets:
            return await self._error(self.accounts, request, s, "Name at least one target.")
        if not await self.ctx.store.has_domain(domain):
            return await self._error(self.accounts, request, s,
                                     f"{domain} is not a local domain.")
        try:
            await self.ctx.store.add_alias(source, targets)
        except (AlreadyExists, StoreError) as exc:
            return await self._error(self.accounts, request, s, str(exc) or "alias exists")
        return redirect("/admin/accounts?done=alias-added")

    async def alias_remove(self, request: Request, _: dict[str, str], s: WebSession
                           ) -> Response:
        try:
            await self.ctx.store.remove_alias(request.query.get("source", ""))
        except NotFound as exc:
            return await self._error(self.accounts, request, s, str(exc))
        return redirect("/admin/accounts?done=alias-removed")

    # -- admin: queue --------------------------------------------------------------------

    async def queue(self, request: Request, _: dict[str, str], s: WebSession) -> Response:
        items = sorted(await self.ctx.store.list_queue(), key=lambda i: i.created)
        waiting = [i for i in items if i.state in (QueueState.PENDING, QueueState.DEFERRED,
                                                    QueueState.FAILED)][:QUEUE_PAGE]
        held = await self.ctx.store.held_queue_ids()
        subjects: dict[int, str] = {}
        rows = []
        for item in waiting:
            if item.blob_id not in subjects:
                try:
                    subjects[item.blob_id] = _subject(await self.ctx.store.read_blob(
                        item.blob_id))
                except StoreError:
                    subjects[item.blob_id] = "(message unreadable)"
            ident = hidden("id", item.id)
            actions = form("/admin/queue/delete", s.csrf, ident, "Delete", danger=True)
            if item.id in held:  # as pochta queue release
                actions = form("/admin/queue/release", s.csrf, ident, "Release") + " " + actions
            elif item.state is not QueueState.FAILED:  # as pochta queue retry / hold
                actions = (form("/admin/queue/retry", s.csrf, ident, "Retry now") + " "
                           + form("/admin/queue/hold", s.csrf, ident, "Hold") + " " + actions)
            rows.append([esc(item.id), esc(_when(item.created)), esc(item.envelope.sender),
                         esc(item.recipient.address), f'<span class="subject">'
                         f"{esc(subjects[item.blob_id])}</span>",
                         "held" if item.id in held else esc(item.state.value),
                         esc(item.attempts), esc(_when(item.next_attempt)),
                         f"<small>{esc(item.last_reply)}</small>", actions])
        body = (f"<p>{len(waiting)} recipients waiting or failed"
                f"{' (first ' + str(QUEUE_PAGE) + ')' if len(waiting) == QUEUE_PAGE else ''}"
                ".</p>" + table(["Id", "Queued", "From", "To", "Subject", "State", "Tries",
                                 "Next try", "Last reply", ""], rows, "queue"))
        return self._page(s, "Queue", body, request)

    async def queue_retry(self, request: Request, _: dict[str, str], s: WebSession
                          ) -> Response:
        try:
            item_id = int(request.query.get("id", ""))
        except ValueError:
            return await self._error(self.queue, request, s, "No such item.")
        store = self.ctx.store
        item = next((i for i in await store.list_queue() if i.id == item_id), None)
        if item is None or item.state not in (QueueState.PENDING, QueueState.DEFERRED):
            return await self._error(self.queue, request, s, "No such item waiting.")
        await store.reschedule_queue_items([item_id], time.time())
        self.ctx.queue_wakeup.set()
        return redirect("/admin/queue?done=retried")

    async def queue_delete(self, request: Request, _: dict[str, str], s: WebSession
                           ) -> Response:
        try:
            await self.ctx.store.delete_queue_item(int(request.query.get("id", "")))
        except (ValueError, NotFound):
            return await self._error(self.queue, request, s, "No such item.")
        return redirect("/admin/queue?done=deleted")

    # -- admin: doctor -------------------------------------------------------------------

    async def doctor(self, request: Request, _: dict[str, str], s: WebSession) -> Response:
        body = ("<p>The self-test checks the configuration, the certificate, every listener, "
                "that this server is not an open relay, the DNS records of every domain and "
                "the queue (like <code>pochta doctor</code>). It takes a few seconds.</p>"
                + form("/admin/doctor", s.csrf, "", "Run the self-test"))
        if request.method == "POST":
            config = self.ctx.config
            bound = self.ctx.bound_ports  # the ports really bound
            config = dataclasses.replace(config, listeners=[
                dataclasses.replace(lst, port=bound.get(lst, lst.port))
                for lst in config.listeners])
            opts = DoctorOptions(cafile=str(config.path(config.tls.cert)), timeout=5.0,
                                 dns=request.query.get("dns", "1") != "0")
            findings = await run_doctor(config, opts, resolver=self.ctx.resolver,
                                        store=self.ctx.store)
            rows = [[f'<span class="{esc(f.status)}">{esc(f.status)}</span>', esc(f.check),
                     esc(f.message), esc(f.fix)] for f in findings]
            body += "<h2>Results</h2>" + table(["", "Check", "Result", "Fix"], rows, "doctor")
        return self._page(s, "Doctor", body, request)

    # -- self-service ----------------------------------------------------------------------

    async def account_page(self, request: Request, _: dict[str, str], s: WebSession,
                           error: str = "") -> Response:
        address = s.principal.split(":", 1)[1]
        account = await self.ctx.store.get_account(address)
        if account is None:
            return redirect("/login")
        used = await self.ctx.store.account_usage(account.id)
        quota = _size(account.quota_bytes) if account.quota_bytes else "unlimited"
        body = (f"<p>Signed in as <b>{esc(address)}</b>. Storage used: "
                f"<b>{esc(_size(used))}</b> of {esc(quota)}.</p>"
                "<h2>Change your password</h2>"
                + form("/account/password", s.csrf,
                       '<div class="stack"><label>Current password<br><input name="current" '
                       'type="password" autocomplete="current-password" required></label>'
                       '<label>New password<br><input name="password" type="password" '
                       'autocomplete="new-password" minlength="8" required></label></div>',
                       "Change password", inline=False)
                + "<p>Mail clients can configure themselves: "
                f'<a href="/apple/mail.mobileconfig?emailaddress={esc(address)}">'
                "profile for iPhone, iPad and Mac</a>.</p>")
        return self._page(s, "My account", body, request, error=error,
                          status=400 if error else 200)

    async def account_change_password(self, request: Request, _: dict[str, str],
                                      s: WebSession) -> Response:
        address = s.principal.split(":", 1)[1]
        account = await self.ctx.authenticator.check_password(
            address, request.query.get("current", ""), request.peer_ip, app_passwords=False)
        if account is None:
            return await self.account_page(request, {}, s, "The current password is wrong.")
        try:
            password = self._password(request.query.get("password", ""))
        except ValueError as exc:
            return await self.account_page(request, {}, s, str(exc))
        hasher = self.ctx.authenticator.hasher  # [auth] argon2_*
        hashed, scram = await asyncio.to_thread(lambda: (hash_password(password, hasher=hasher),
                                                         derive_scram(password)))
        await self.ctx.store.set_password(address, hashed, scram)
        # end the other sessions of this user; keep this one
        await self.ctx.store.delete_web_sessions_of(s.principal)
        await self.ctx.store.create_web_session(s)
        return redirect("/account?done=password-set")


def register(router: Router, ctx: AppContext) -> None:
    app = WebApp(ctx)
    router.add("GET", "/", app.root)
    router.add("GET", "/static/{name}", app.static)
    router.add("GET", "/login", app.login_page)
    router.add("POST", "/login", app.login)
    router.add("POST", "/logout", app.logout)
    admin = {
        ("GET", "/admin"): app.dashboard,
        ("GET", "/admin/domains"): app.domains,
        ("POST", "/admin/domains/add"): app.domain_add,
        ("POST", "/admin/domains/remove"): app.domain_remove,
        ("GET", "/admin/domains/{name}"): app.domain_records,
        ("GET", "/admin/accounts"): app.accounts,
        ("POST", "/admin/accounts/add"): app.account_add,
        ("POST", "/admin/accounts/password"): app.account_password,
        ("POST", "/admin/accounts/quota"): app.account_quota,
        ("POST", "/admin/accounts/disable"): app.account_disable,
        ("POST", "/admin/aliases/add"): app.alias_add,
        ("POST", "/admin/aliases/remove"): app.alias_remove,
        ("GET", "/admin/queue"): app.queue,
        ("POST", "/admin/queue/retry"): app.queue_retry,
        ("POST", "/admin/queue/delete"): app.queue_delete,
        ("GET", "/admin/doctor"): app.doctor,
        ("POST", "/admin/doctor"): app.doctor,
        # ops_pages.py
        ("GET", "/admin/log"): app.ops.log,
        ("POST", "/admin/queue/hold"): app.ops.queue_hold,
        ("POST", "/admin/queue/release"): app.ops.queue_hold,
        ("POST", "/admin/domains/{name}/dkim/rotate"): app.ops.dkim_action,
        ("POST", "/admin/domains/{name}/dkim/activate"): app.ops.dkim_action,
        ("POST", "/admin/domains/{name}/dkim/remove"): app.ops.dkim_action,
    }
    for (method, path), fn in admin.items():
        router.add(method, path, app.guard("admin", fn))
    router.add("GET", "/account", app.guard("user", app.account_page))
    router.add("POST", "/account/password", app.guard("user", app.account_change_password))
    user = {
        ("GET", "/account/app-passwords"): app.ops.app_passwords,
        ("POST", "/account/app-passwords/add"): app.ops.app_password_add,
        ("POST", "/account/app-passwords/revoke"): app.ops.app_password_revoke,
        ("GET", "/account/filters"): app.ops.filters,
        ("POST", "/account/filters/save"): app.ops.filter_action,
        ("POST", "/account/filters/vacation"): app.ops.filter_action,
        ("POST", "/account/filters/activate"): app.ops.filter_action,
        ("POST", "/account/filters/deactivate"): app.ops.filter_action,
        ("POST", "/account/filters/delete"): app.ops.filter_action,
        ("GET", "/account/senders"): app.senders.page,
        ("POST", "/account/senders/add"): app.senders.action,
        ("POST", "/account/senders/remove"): app.senders.action,
    }
    for (method, path), fn in user.items():
        router.add(method, path, app.guard("user", fn))
    from ..services.eventlog import event_log

    event_log(ctx.store, days=ctx.config.web.log_days)  # the mail log's retention
