"""DNS lists of domains (spam/domainlists.py): RHSBL for the sender's domains, URIBL for
the links in the text, through a resolver we control; then over SMTP: Junk, a refusal,
answers that are not listings, a list that cannot answer, and a proven allowed sender."""

from __future__ import annotations

from pochta.dns import StaticResolver
from pochta.spam.dnsbl import DNSListCache, parse_site
from pochta.spam.domainlists import MAX_DOMAINS, check, link_domains, sender_domains
from tests.conftest import Instance
from tests.spam.helpers import last_message, send, server_with

HTML = (b"From: <offers@shop.example>\r\nSubject: deal\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/plain\r\n\r\nSee www.Cheap-Pills.example today\r\n--b\r\n"
        b"Content-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        b'<a href=3D"https://click.track.example.co.uk/x?y=3D1">buy</a>\r\n'
        b'<img src=3D"cid:logo"> http://192.0.2.1/raw\r\n--b--\r\n')


def test_domains_of_links_and_senders() -> None:
    assert link_domains(HTML) == ["cheap-pills.example", "click.track.example.co.uk",
                                  "example.co.uk"]
    assert sender_domains("bounce@mail.shop.example", ["offers@shop.example", "x@bad"]) == [
        "mail.shop.example", "shop.example"]
    assert sender_domains("", []) == []


async def test_check_weights_patterns_and_limits() -> None:
    resolver = StaticResolver()
    resolver.a_records.update({
        "cheap-pills.example.uribl.test": ["127.0.0.2"],
        "shop.example.dbl.test": ["127.0.1.2"],
        "mail.shop.example.dbl.test": ["127.255.255.254"],  # DBL's "query refused" code
        "shop.example.other.test": ["10.0.0.1"],  # not in 127/8: never a listing
    })
    resolver.fail.add("example.co.uk.uribl.test")  # SERVFAIL: no hit, logged
    cache = DNSListCache(resolver, 60)
    rhsbl = [parse_site("dbl.test=127.0.1.[2..99]*2"), parse_site("other.test")]
    uribl = [parse_site("uribl.test")]
    verdict = await check(sender_domains("bounce@mail.shop.example", []),
                          link_domains(HTML), rhsbl, uribl, cache)
    assert sorted((h.zone, h.domain) for h in verdict.hits) == [
        ("dbl.test", "shop.example"), ("uribl.test", "cheap-pills.example")]
    assert verdict.score == 3.0  # 2 + 1: each site once
    # thousands of links are at most MAX_DOMAINS questions per site
    many = [f"d{i}.example" for i in range(500)]
    before = len(resolver.queries)
    await check([], many, [], uribl, cache)
    assert len(resolver.queries) - before == MAX_DOMAINS


async def test_over_smtp(instance: Instance) -> None:
    spam = {"rhsbl_sites": ["dbl.test=127.0.1.[2..99]"], "uribl_sites": ["uribl.test"],
            "bayes": False}
    async with server_with(instance, spam=spam) as server:
        server.resolver.a_records.update({
            "cheap-pills.example.uribl.test": ["127.0.0.2"],
            "spammer.example.dbl.test": ["127.0.1.2"],
            "refused.example.dbl.test": ["127.255.255.254"],
        })
        port = server.port("mta")
        assert (await send(port, HTML))[0] == 250  # a listed link: Junk
        data, flags = await last_message(server, mailbox="Junk")
        assert "$Junk" in flags
        assert b"X-Spam-Domain-Lists: uribl.test=cheap-pills.example" in data
        assert b"X-Spam-Status: Yes, domainlists=1" in data
        clean = b"From: <a@fine.example>\r\nSubject: hi\r\n\r\nsee https://fine.example/\r\n"
        assert (await send(port, clean))[0] == 250
        data, flags = await last_message(server)
        assert "$Junk" not in flags and b"X-Spam-Domain-Lists" not in data
        # the sender's domain: listed; DBL's error code is not a listing
        assert (await send(port, clean, sender="x@spammer.example"))[0] == 250
        bob = await server.store.get_account("bob@example.test")
        assert bob is not None
        junk = await server.store.get_mailbox(bob.id, "Junk")
        assert junk is not None and len(await server.store.list_messages(junk.id)) == 2
        assert (await send(port, clean, sender="x@refused.example"))[0] == 250
        _, flags = await last_message(server)
        assert "$Junk" not in flags
    # refuse instead of Junk
    async with server_with(instance, spam=dict(spam, domain_list_action="reject")) as server:
        server.resolver.a_records["cheap-pills.example.uribl.test"] = ["127.0.0.2"]
        code, text = await send(server.port("mta"), HTML)
        assert (code, text) == (550, "5.7.1 Message refused: cheap-pills.example is listed "
                                     "by uribl.test")
