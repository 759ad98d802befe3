"""The web admin and the CLI share one alias-source rule (pochta.mail.addresses): a
catch-all for an internationalised domain is keyed by its A-label, as the domain is."""

from __future__ import annotations

from tests.web.helpers import Client, WebServer


async def test_catch_all_for_an_idn_domain(admin: Client, web: WebServer) -> None:
    await admin.get("/admin/domains")
    assert (await admin.post("/admin/domains/add", {"domain": "B\u00fccher.example"})
            ).status == 303
    assert await web.store.has_domain("xn--bcher-kva.example")
    await admin.get("/admin/accounts")
    reply = await admin.post("/admin/aliases/add", {"source": "@B\u00fcCHER.example",
                                                    "targets": "alice@example.test"})
    assert reply.status == 303, reply.text
    alias = await web.store.get_alias("@xn--bcher-kva.example")
    assert alias is not None and list(alias.targets) == ["alice@example.test"]
