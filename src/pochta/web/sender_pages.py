"""``/account/senders``: the user's own allow and block lists of senders (the web twin of
``pochta spam allow|block|unlist|lists``; the rules are spam/senderlists.py's).

Every value is escaped with ``esc`` where it enters the page; every POST passes the CSRF
check of ``WebApp.guard``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..http.core import Request, Response
from ..spam.senderlists import ALLOW, BLOCK, BadPattern, normalize_pattern
from ..storage.interfaces_web import WebSession
from .html import esc, form, hidden, table

if TYPE_CHECKING:
    from .admin import WebApp

MAX_RULES = 1000  # per account: a list is for people, not a feed
NOTICES = {
    "sender-allowed": "Mail from that sender stays out of Junk (when its sender is proven).",
    "sender-blocked": "Mail from that sender now goes to Junk.",
    "sender-removed": "Taken off your lists.",
}


class SenderPages:
    def __init__(self, app: WebApp) -> None:
        self.app = app
        self.ctx = app.ctx

    async def page(self, request: Request, _: dict[str, str], s: WebSession,
                   error: str = "", value: str = "") -> Response:
        account = await self.ctx.store.get_account(s.principal.split(":", 1)[1])
        if account is None:
            return _redirect("/login")
        rules = (await self.ctx.store.sender_rules([account.id])).get(account.id, [])
        rows = [["Allowed" if r.action == ALLOW else "Blocked", esc(r.pattern),
                 form("/account/senders/remove", s.csrf, hidden("pattern", r.pattern),
                      "Remove", danger=True)]
                for r in rules]
        body = ("<p>Mail from a <b>blocked</b> sender goes to your Junk folder, whatever "
                "the spam filter thinks. Mail from an <b>allowed</b> sender stays out of "
                "Junk, if the sending domain proves it is really theirs (DMARC, SPF or "
                "DKIM): anyone can write any From address. A sender is an address "
                "(<code>news@shop.example</code>) or a whole domain "
                "(<code>@partner.example</code>, with its subdomains). Changes count "
                "within half a minute.</p>"
                + table(["List", "Sender", ""], rows, "senders")
                + "<h2>Add a sender</h2>"
                + form("/account/senders/add", s.csrf,
                       f'<input name="pattern" value="{esc(value)}" '
                       'placeholder="news@shop.example or @partner.example" size="40" '
                       'maxlength="320" required> <select name="action">'
                       '<option value="allow">allow</option>'
                       '<option value="block">block</option></select> ', "Add"))
        return self.app._page(s, "Senders", body, request, error=error,
                              status=400 if error else 200)

    async def action(self, request: Request, _: dict[str, str], s: WebSession) -> Response:
        store = self.ctx.store
        account = await store.get_account(s.principal.split(":", 1)[1])
        if account is None:
            return _redirect("/login")
        value = request.query.get("pattern", "")
        try:
            pattern = normalize_pattern(value)
        except BadPattern:
            return await self.page(request, {}, s, "Write an address (news@shop.example) "
                                   "or a domain (@partner.example).", value[:320])
        if request.path.endswith("/remove"):
            await store.set_sender_rule(account.id, pattern, None)
            return _redirect("/account/senders?done=sender-removed")
        action = request.query.get("action", "")
        if action not in (ALLOW, BLOCK):
            return await self.page(request, {}, s, "Choose allow or block.", value)
        rules = (await store.sender_rules([account.id])).get(account.id, [])
        if len(rules) >= MAX_RULES and all(r.pattern != pattern for r in rules):
            return await self.page(request, {}, s, f"At most {MAX_RULES} senders.", value)
        await store.set_sender_rule(account.id, pattern, action)
        done = "sender-allowed" if action == ALLOW else "sender-blocked"
        return _redirect(f"/account/senders?done={done}")


def _redirect(location: str) -> Response:
    return Response(303, b"", "text/plain", [("Location", location)])
