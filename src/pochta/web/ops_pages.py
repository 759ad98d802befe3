"""The operations pages of the web admin and self-service (issue 19), beside admin.py:

* ``/admin/log``: the mail log (services/eventlog.py), searched by queue id or address,
  newest first, 100 a page;
* queue hold and release (the queue page's buttons);
* DKIM rotation on the domain page: make a new key, show its DNS record, switch signing to
  it once DNS shows it, retire the old key (the web twin of ``pochta dkim
  rotate|activate|remove``), and the live DNS check of every record (web/dnscheck.py);
* ``/account/app-passwords``: the user's app passwords (services/app_passwords.py);
* ``/account/filters``: the user's Sieve scripts (edit, check, activate) and a vacation
  form that writes a script.

Every value is escaped with ``esc`` where it enters the page; every POST passes the CSRF
check of ``WebApp.guard``.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

from ..http.core import Request, Response
from ..services import app_passwords
from ..storage.interfaces import AlreadyExists, NotFound, StoreError
from ..storage.interfaces_ops import ACCEPTED, BOUNCED, DELIVERED, REFUSED, MailEvent
from ..storage.interfaces_sieve import ScriptActive
from ..storage.interfaces_web import WebSession
from .dnscheck import RecordCheck, check_records
from .html import esc, form, hbar_chart, hidden, table

if TYPE_CHECKING:
    from .admin import WebApp

LOG_PAGE = 100
MAX_QUERY = 320
MAX_SCRIPT = 64 * 1024
VACATION_SCRIPT = "vacation"
STATUS_CLASS = {"ok": "ok", "different": "warn", "missing": "fail", "error": "fail",
                "unchecked": "warn"}


def _when(ts: float | None) -> str:
    if not ts:
        return "never"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _sieve_string(text: str) -> str:
    """A Sieve quoted string (RFC 5228 §2.4.2: backslash escapes quote and backslash)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def vacation_script(subject: str, body: str, days: int, addresses: list[str]) -> str:
    """The script of the vacation form (RFC 5230)."""
    args = f":days {days} "
    if subject:
        args += f":subject {_sieve_string(subject)} "
    if addresses:
        args += ":addresses [" + ", ".join(_sieve_string(a) for a in addresses) + "] "
    text = body.replace("\r\n", "\n")
    # a multi-line string ends at a line holding only "."; dot-stuff lines starting with "."
    lines = ["." + line if line.startswith(".") else line for line in text.split("\n")]
    return ('require ["vacation"];\n# made by the vacation form of the account page\n'
            f"vacation {args}text:\n" + "\n".join(lines) + "\n.\n;\n")


class OpsPages:
    def __init__(self, app: WebApp) -> None:
        self.app = app
        self.ctx = app.ctx

    # -- admin: the mail log -------------------------------------------------------------

    async def log(self, request: Request, _: dict[str, str], s: WebSession) -> Response:
        query = request.query.get("q", "").strip()[:MAX_QUERY]
        try:
            before = int(request.query.get("before", "")) if request.query.get("before") \
                else None
        except ValueError:
            before = None
        events = await self.ctx.store.search_mail_events(query, before, LOG_PAGE)
        days = self.ctx.config.web.log_days
        kept = f"kept {days} days" if days else "kept forever"
        rows = [self._event_row(e) for e in events]
        body = (f'<form method="get" action="/admin/log" class="inline">'
                f'<input name="q" value="{esc(query)}" size="40" '
                'placeholder="queue id or address"> <button type="submit">Search</button>'
                "</form>"
                "<p>SMTP, IMAP and POP3 sessions, accepted messages, deliveries and bounces, "
                "newest first"
                f" ({esc(kept)}).</p>"
                + table(["Time (UTC)", "Event", "Queue id", "From", "To", "Client",
                         "Verdict", "Detail"], rows, "log"))
        if len(events) == LOG_PAGE:
            body += (f'<p><a class="older" href="/admin/log?q={esc(quote(query))}'
                     f'&amp;before={events[-1].id}">Older events</a></p>')
        if not events:
            body += "<p>No events" + (f" for {esc(query)}" if query else "") + ".</p>"
        return self.app._page(s, "Mail log", body, request)

    @staticmethod
    def _event_row(e: MailEvent) -> list[str]:
        def link(value: str) -> str:
            if not value:
                return ""
            return f'<a href="/admin/log?q={esc(quote(value))}">{esc(value)}</a>'

        return [esc(_when(e.ts)), esc(e.kind), link(e.message_id), link(e.sender),
                link(e.recipient), esc(e.client_ip), esc(e.tag),
                f"<small>{esc(e.detail)}</small>"]

    async def dashboard_charts(self) -> str:
        """Spam verdicts and top senders and receivers of the last 24 hours, from the
        mail log (aggregates in the store: GROUP BY over an index on the time)."""
        store = self.ctx.store
        since = time.time() - 86400
        counts, senders, receivers = await asyncio.gather(
            store.count_mail_events(since),
            store.top_mail_addresses(ACCEPTED, "sender", since),
            store.top_mail_addresses(ACCEPTED, "recipient", since))
        verdicts = [("ham (inbox)", counts.get((ACCEPTED, "ham"), 0)),
                    ("spam (junk folder)", counts.get((ACCEPTED, "spam"), 0)),
                    ("spam (refused)", counts.get((REFUSED, "spam"), 0)),
                    ("not judged", counts.get((ACCEPTED, ""), 0))]
        sent = sum(n for (kind, _), n in counts.items() if kind == DELIVERED)
        bounced = sum(n for (kind, _), n in counts.items() if kind == BOUNCED)
        return ("<h2>Spam verdicts (last 24 hours, per recipient)</h2>"
                + hbar_chart([(k, float(v)) for k, v in verdicts], "spam verdicts")
                + f"<p>Delivered to other servers: {sent}; bounced: {bounced} "
                "(last 24 hours).</p>"
                + "<h2>Top senders (last 24 hours)</h2>"
                + hbar_chart([(a, float(n)) for a, n in senders], "top senders")
                + "<h2>Top receivers (last 24 hours)</h2>"
                + hbar_chart([(a, float(n)) for a, n in receivers], "top receivers"))

    # -- admin: queue hold ---------------------------------------------------------------

    async def queue_hold(self, request: Request, _: dict[str, str], s: WebSession
                         ) -> Response:
        try:
            item_id = int(request.query.get("id", ""))
        except ValueError:
            return await self.app._error(self.app.queue, request, s, "No such item.")
        store = self.ctx.store
        if request.path.endswith("/hold"):
            if not await store.hold_queue_items([item_id]):
                return await self.app._error(self.app.queue, request, s,
                                             "No such item waiting.")
            return redirect("/admin/queue?done=held")
        if not await store.release_held_queue_items([item_id]):
            return await self.app._error(self.app.queue, request, s, "No such held item.")
        await store.reschedule_queue_items([item_id], time.time())
        self.ctx.queue_wakeup.set()
        return redirect("/admin/queue?done=released")

    # -- admin: DKIM rotation and the live DNS check ---------------------------------------

    async def dns_section(self, domain: str, records: list[object], s: WebSession) -> str:
        """The live check of every record and the DKIM keys with their actions."""
        from ..policy import dkim
        from ..policy.records import DNSRecord

        recs = [r for r in records if isinstance(r, DNSRecord)]
        checks = await check_records(recs, self.ctx.resolver)
        rows = [[f"<code>{esc(c.record.name)}</code>", esc(c.record.type),
                 f'<span class="{STATUS_CLASS[c.status]}">{esc(c.status)}</span>',
                 "<br>".join(f"<code>{esc(f)}</code>" for f in c.found) or "<i>nothing</i>",
                 f"<code>{esc(c.record.value)}</code>"] for c in checks]
        body = ("<h2>What DNS says now</h2><p>Looked up just now through this server's "
                "resolver.</p>"
                + table(["Name", "Type", "Status", "DNS now", "Should be"], rows, "dnscheck"))
        data = self.ctx.config.data_path
        keys = dkim.load_keys(data, domain)
        active = set(dkim.active_selectors(data, domain))
        published = {c.record.name: c.status == "ok" for c in checks
                     if c.record.value.startswith("v=DKIM1")}
        krows = []
        for k in sorted(keys, key=lambda k: (k.selector, k.algorithm)):
            sel = hidden("selector", k.selector)
            if k.selector in active:
                state, actions = "signing", ""
            else:
                state = "published" if published.get(k.dns_name) else "not in DNS yet"
                actions = form(f"/admin/domains/{domain}/dkim/activate", s.csrf, sel,
                               "Switch signing to this key")
                actions += " " + form(f"/admin/domains/{domain}/dkim/remove", s.csrf, sel,
                                      "Retire", danger=True)
            krows.append([esc(k.selector), esc(k.algorithm), esc(state),
                          f"<code>{esc(k.dns_name)}</code>", actions])
        body += ("<h2>DKIM keys</h2><p>To rotate: make a new key, publish its TXT record "
                 "(above), switch signing to it once DNS shows it, and retire the old key a "
                 "few days later (then delete its record).</p>"
                 + table(["Selector", "Algorithm", "State", "DNS name", ""], krows, "dkim")
                 + form(f"/admin/domains/{domain}/dkim/rotate", s.csrf, "",
                        "Make a new key (rotate)"))
        return body

    async def dkim_action(self, request: Request, params: dict[str, str], s: WebSession
                          ) -> Response:
        from ..policy import dkim, records
        from ..policy.records import services_from_listeners

        domain = params["name"].lower()
        if not await self.ctx.store.has_domain(domain):
            return self.app._page(s, "No such domain", "", request, status=404)
        data = self.ctx.config.data_path
        action = request.path.rsplit("/", 1)[-1]
        back = f"/admin/domains/{domain}"
        selector = request.query.get("selector", "")

        async def fail(message: str) -> Response:
            return await self.app._error(
                lambda r, _p, sess: self.app.domain_records(r, {"name": domain}, sess),
                request, s, message)

        try:
            if action == "rotate":
                algs = sorted({k.algorithm for k in dkim.signing_keys(data, domain)}) or [
                    dkim.ALGORITHMS[0]]
                for alg in algs:  # an RSA key takes a while: not on the event loop
                    await asyncio.to_thread(dkim.generate_key, data, domain,
                                            dkim.new_selector(data, domain, alg), alg)
                return redirect(f"{back}?done=dkim-new")
            if action == "activate":
                keys = [k for k in dkim.load_keys(data, domain) if k.selector == selector]
                if not keys:
                    return await fail(f"No key with selector {selector}.")
                wanted = records.records_for(
                    domain, self.ctx.config.hostname, keys,
                    services=services_from_listeners(self.ctx.config.listeners))
                checks: list[RecordCheck] = await check_records(
                    [r for r in wanted if r.value.startswith("v=DKIM1")], self.ctx.resolver)
                if not checks or any(c.status != "ok" for c in checks):
                    return await fail(f"DNS does not show the key {selector} yet: publish "
                                      "its TXT record first (receivers could not verify "
                                      "mail signed with it).")
                dkim.activate(data, domain, selector)
                return redirect(f"{back}?done=dkim-switched")
            dkim.remove_key(data, domain, selector)
            return redirect(f"{back}?done=dkim-retired")
        except dkim.DKIMError as exc:
            return await fail(str(exc))

    # -- self-service: app passwords -------------------------------------------------------

    async def app_passwords(self, request: Request, _: dict[str, str], s: WebSession,
                            error: str = "", secret: str = "", name: str = "") -> Response:
        account = await self.ctx.store.get_account(s.principal.split(":", 1)[1])
        if account is None:
            return redirect("/login")
        body = ""
        if secret:
            body += (f'<div class="notice" role="status"><p>The app password for '
                     f"<b>{esc(name)}</b> (shown only now; enter it as the password in the "
                     f'device\'s mail settings):</p><p><code id="secret" class="secret">'
                     f"{esc(secret)}</code> "
                     '<button class="copy" type="button" data-copy="secret">Copy</button>'
                     "</p></div>")
        rows = [[esc(p.name), esc(_when(p.created)), esc(_when(p.last_used)),
                 form("/account/app-passwords/revoke", s.csrf, hidden("name", p.name),
                      "Revoke", danger=True)]
                for p in await self.ctx.store.list_app_passwords(account.id)]
        body += ("<p>An app password lets one device (a phone, a mail program) read and send "
                 "mail over IMAP, POP3, SMTP and ManageSieve without knowing your main "
                 "password. Revoke it when the device is lost. It cannot log in here.</p>"
                 + table(["Device", "Created (UTC)", "Last used (UTC)", ""], rows, "apppw")
                 + "<h2>New app password</h2>"
                 + form("/account/app-passwords/add", s.csrf,
                        '<input name="name" placeholder="e.g. phone" maxlength="64" '
                        "required> ", "Create"))
        return self.app._page(s, "App passwords", body, request, error=error,
                              status=400 if error else 200)

    async def app_password_add(self, request: Request, _: dict[str, str], s: WebSession
                               ) -> Response:
        account = await self.ctx.store.get_account(s.principal.split(":", 1)[1])
        if account is None:
            return redirect("/login")
        name = request.query.get("name", "")
        try:
            secret = await app_passwords.create(self.ctx.store, account, name)
        except ValueError as exc:
            return await self.app_passwords(request, {}, s, error=str(exc))
        except AlreadyExists:
            return await self.app_passwords(request, {}, s,
                                            error="You have an app password of that name.")
        return await self.app_passwords(request, {}, s, secret=secret,
                                        name=app_passwords.check_name(name))

    async def app_password_revoke(self, request: Request, _: dict[str, str], s: WebSession
                                  ) -> Response:
        account = await self.ctx.store.get_account(s.principal.split(":", 1)[1])
        if account is None:
            return redirect("/login")
        try:
            await self.ctx.store.revoke_app_password(account.id, request.query.get("name", ""))
        except NotFound:
            return await self.app_passwords(request, {}, s, error="No such app password.")
        return redirect("/account/app-passwords?done=app-password-revoked")

    # -- self-service: Sieve filters and vacation ----------------------------------------

    async def filters(self, request: Request, _: dict[str, str], s: WebSession,
                      error: str = "", source: str | None = None) -> Response:
        store = self.ctx.store
        account = await store.get_account(s.principal.split(":", 1)[1])
        if account is None:
            return redirect("/login")
        scripts = await store.list_sieve_scripts(account.id)
        name = request.query.get("name", "") or next(
            (i.name for i in scripts if i.active), "filters")
        if source is None:
            source = await store.get_sieve_script(account.id, name) or ""
        rows = []
        for info in scripts:
            actions = f'<a href="/account/filters?name={esc(quote(info.name))}">Edit</a> '
            if not info.active:
                actions += form("/account/filters/activate", s.csrf,
                                hidden("name", info.name), "Activate") + " "
                actions += form("/account/filters/delete", s.csrf, hidden("name", info.name),
                                "Delete", danger=True)
            else:
                actions += form("/account/filters/deactivate", s.csrf, "", "Deactivate")
            rows.append([esc(info.name), "active" if info.active else "", esc(info.size),
                         actions])
        body = ("<p>Filters run on every message delivered to you (Sieve, RFC 5228). One "
                "script is active at a time.</p>"
                + table(["Script", "", "Bytes", ""], rows, "scripts")
                + f"<h2>Edit {esc(name)}</h2>"
                + form("/account/filters/save", s.csrf,
                       f'<div class="stack"><label>Name<br><input name="name" '
                       f'value="{esc(name)}" maxlength="128" required></label>'
                       '<label>Script<br><textarea name="source" rows="14" cols="80" '
                       f'spellcheck="false">{esc(source)}</textarea></label>'
                       '<label><input type="checkbox" name="activate" value="1" checked> '
                       "make it the active script</label></div>", "Check and save",
                       inline=False)
                + "<h2>Vacation reply</h2><p>Writes and activates the script "
                f"<code>{VACATION_SCRIPT}</code> (it replaces the active script).</p>"
                + form("/account/filters/vacation", s.csrf,
                       '<div class="stack"><label>Subject<br><input name="subject" '
                       'size="60" maxlength="200" value="Out of office"></label>'
                       '<label>Message<br><textarea name="body" rows="5" cols="60" required>'
                       "</textarea></label><label>Reply to each sender at most every "
                       '<input name="days" size="3" value="7"> days</label>'
                       '<label>Also my addresses (comma-separated aliases)<br>'
                       '<input name="addresses" size="60"></label></div>',
                       "Turn the vacation reply on", inline=False))
        return self.app._page(s, "Filters", body, request, error=error,
                              status=400 if error else 200)

    async def _save(self, account_id: int, name: str, source: str, activate: bool) -> None:
        """Compile (SieveSyntaxError names the line), store, and activate."""
        sieve = self.ctx.delivery.sieve
        if sieve is not None:
            sieve.compile(source)
        else:
            from ..sieve import compile_script

            compile_script(source, limits=self.ctx.config.sieve.limits())
        await self.ctx.store.put_sieve_script(account_id, name, source)
        if activate:
            await self.ctx.store.set_active_sieve_script(account_id, name)
        if sieve is not None:
            sieve.forget(account_id)  # delivery in this process sees it at once

    async def filter_action(self, request: Request, _: dict[str, str], s: WebSession
                            ) -> Response:
        from ..sieve import SieveSyntaxError

        store = self.ctx.store
        account = await store.get_account(s.principal.split(":", 1)[1])
        if account is None:
            return redirect("/login")
        action = request.path.rsplit("/", 1)[-1]
        name = request.query.get("name", "").strip()
        source = request.query.get("source", "").replace("\r\n", "\n")
        try:
            if action == "save":
                if not name or len(name) > 128 or not name.isprintable():
                    return await self.filters(request, {}, s, "Name the script.", source)
                if len(source.encode()) > MAX_SCRIPT:
                    return await self.filters(request, {}, s, "The script is too long "
                                              f"(at most {MAX_SCRIPT} bytes).", source)
                await self._save(account.id, name, source, request.query.get("activate")
                                 == "1")
                return redirect(f"/account/filters?name={quote(name)}&done=filter-saved")
            if action == "vacation":
                try:
                    days = int(request.query.get("days", "7"))
                    if not 1 <= days <= 365:
                        raise ValueError
                except ValueError:
                    return await self.filters(request, {}, s, "Days: a number from 1 to 365.")
                addresses = [a.strip() for a in request.query.get("addresses", "").split(",")
                             if a.strip()]
                body = request.query.get("body", "")
                if not body.strip() or len(body) > 8000:
                    return await self.filters(request, {}, s, "Write the reply (at most 8000 "
                                              "characters).")
                script = vacation_script(request.query.get("subject", "")[:200], body, days,
                                         addresses)
                await self._save(account.id, VACATION_SCRIPT, script, True)
                return redirect(f"/account/filters?name={VACATION_SCRIPT}&done=vacation-on")
            if action == "activate":
                await store.set_active_sieve_script(account.id, name)
            elif action == "deactivate":
                await store.set_active_sieve_script(account.id, None)
            else:
                await store.delete_sieve_script(account.id, name)
            sieve = self.ctx.delivery.sieve
            if sieve is not None:
                sieve.forget(account.id)
            return redirect("/account/filters?done=filter-changed")
        except SieveSyntaxError as exc:
            return await self.filters(request, {}, s, f"The script was not saved: {exc}",
                                      source)
        except (NotFound, ScriptActive, StoreError) as exc:
            return await self.filters(request, {}, s, str(exc) or "Not possible.")


def redirect(location: str) -> Response:
    return Response(303, b"", "text/plain", [("Location", location)])
