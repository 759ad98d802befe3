"""``/account/senders``: the user's own allow and block lists in the self-service pages,
over HTTPS with the session and CSRF checks, and what a list does to the next message."""

from __future__ import annotations

from tests.spam.helpers import last_message, send
from tests.web.helpers import Client, WebServer

EVIL = '<script>alert("x")</script>'


async def test_user_lists_senders_and_mail_follows(web: WebServer, admin: Client) -> None:
    user = Client(web)
    await user.login("bob@example.test", "bob-pass")
    page = await user.get("/account/senders")
    assert page.status == 200 and 'href="/account/senders"' in page.text
    reply = await user.post("/account/senders/add", {"pattern": "News@Shop.Example",
                                                      "action": "block"})
    assert reply.status == 303
    await user.get("/account/senders")
    reply = await user.post("/account/senders/add", {"pattern": "partner.example",
                                                      "action": "allow"})
    assert reply.status == 303
    page = await user.get("/account/senders?done=sender-allowed")
    assert "stays out of Junk" in page.text
    assert "news@shop.example" in page.text and "@partner.example" in page.text
    bob = await web.store.get_account("bob@example.test")
    assert bob is not None
    rules = (await web.store.sender_rules([bob.id]))[bob.id]
    assert [(r.pattern, r.action) for r in rules] == [("@partner.example", "allow"),
                                                      ("news@shop.example", "block")]
    # bad input: a clear error, the value escaped back into the form, nothing stored
    reply = await user.post("/account/senders/add", {"pattern": EVIL, "action": "block"})
    assert reply.status == 400 and EVIL not in reply.text and "Write an address" in reply.text
    await user.get("/account/senders")
    reply = await user.post("/account/senders/add", {"pattern": "x@y.example",
                                                      "action": "maybe"})
    assert reply.status == 400
    # without the CSRF token: refused
    await user.get("/account/senders")
    reply = await user.post("/account/senders/add", {"pattern": "z@y.example",
                                                      "action": "block"}, csrf="")
    assert reply.status == 403
    assert len((await web.store.sender_rules([bob.id]))[bob.id]) == 2
    # the next message from the blocked sender goes to Junk (the server's cache of bob's
    # lists was never filled, so it reads them now)
    msg = b"From: <news@shop.example>\r\nSubject: sale\r\n\r\nbuy\r\n"
    assert (await send(web.server.port("mta"), msg, sender="news@shop.example"))[0] == 250
    _, flags = await last_message(web.server, mailbox="Junk")
    assert "$Junk" in flags
    # remove; an admin has no such page
    await user.get("/account/senders")
    reply = await user.post("/account/senders/remove", {"pattern": "news@shop.example"})
    assert reply.status == 303
    assert [r.pattern for r in (await web.store.sender_rules([bob.id]))[bob.id]] == [
        "@partner.example"]
    assert (await admin.get("/account/senders")).status == 403
