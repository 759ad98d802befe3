"""Each account's own allow and block lists of senders (spam/senderlists.py): the rules
in isolation, then end to end over SMTP with the learning filter deciding first, and the
command line."""

from __future__ import annotations

import asyncio
import random
import re

import pytest

from pochta.policy.dkim import DKIMResult
from pochta.policy.dmarc import DMARCResult
from pochta.policy.inbound import InboundVerdict
from pochta.policy.spf import SPFResult
from pochta.spam.bayes import tokenize
from pochta.spam.senderlists import (
    BadPattern,
    decide,
    from_addresses,
    from_authenticated,
    normalize_pattern,
)
from pochta.storage.interfaces_spam import SenderRule
from pochta.storage.sqlite import SQLiteStore
from tests.conftest import Instance
from tests.spam.corpus import corpus, message
from tests.spam.helpers import last_message, send, server_with


def test_patterns() -> None:
    assert normalize_pattern(" News@Shop.Example ") == "news@shop.example"
    assert normalize_pattern("Partner.Example") == "@partner.example"
    assert normalize_pattern("@partner.example.") == "@partner.example"
    assert normalize_pattern("Jörg@Bücher.Example") == "jörg@bücher.example"
    for bad in ("", "@", "a@b@c", "two words@x.example", "x" * 400 + "@a.example", "a@.x",
                '<script>alert("x")</script>', "a<b>@x.example", "@x.example;drop"):
        with pytest.raises(BadPattern):
            normalize_pattern(bad)


def test_the_most_specific_rule_decides() -> None:
    rules = [SenderRule("@partner.example", "allow"), SenderRule("spam@partner.example",
                                                                 "block"),
             SenderRule("@shop.example", "block"), SenderRule("@eu.shop.example", "allow")]
    assert decide(rules, ["ann@partner.example"], "", True) == "allow"
    assert decide(rules, ["ann@partner.example"], "", False) is None  # not proven
    assert decide(rules, ["spam@partner.example"], "", True) == "block"  # address wins
    assert decide(rules, ["x@news.shop.example"], "", True) == "block"  # subdomain
    assert decide(rules, ["x@eu.shop.example"], "", True) == "allow"  # longer domain wins
    assert decide(rules, ["x@notshop.example"], "", True) is None
    # the envelope sender blocks, it never allows (anyone may write any return path)
    assert decide(rules, ["x@other.example"], "bounce@shop.example", True) == "block"
    assert decide(rules, ["x@other.example"], "ann@partner.example", True) is None
    # the same pattern on both lists cannot happen (one list per pattern); equal
    # specificity from two Froms: block
    assert decide([SenderRule("@a.example", "allow"), SenderRule("@b.example", "block")],
                  ["x@a.example", "y@b.example"], "", True) == "block"


def test_from_addresses_and_proof() -> None:
    head = (b"Subject: x\r\nFrom: \"Ann, Partner\" <Ann@Partner.Example>,\r\n"
            b" bob@b.example\r\nTo: <c@example.test>\r\n\r\n")
    assert from_addresses(head) == ["ann@partner.example", "bob@b.example"]
    spf_pass = SPFResult("pass", "mail.partner.example")
    verdict = InboundVerdict(b"", b"", "accept", None, None, spf_pass, [], None)
    assert from_authenticated(verdict, "partner.example")  # relaxed: same org domain
    assert not from_authenticated(verdict, "other.example")
    dkim = [DKIMResult("pass", "partner.example")]
    no_record = InboundVerdict(b"", b"", "accept", None, None, None, dkim,
                               DMARCResult("none", "partner.example"))
    assert from_authenticated(no_record, "partner.example")  # no DMARC record: DKIM
    failed = InboundVerdict(b"", b"", "accept", None, None, spf_pass, dkim,
                            DMARCResult("fail", "partner.example"))
    assert not from_authenticated(failed, "partner.example")  # DMARC said no
    assert not from_authenticated(None, "partner.example")


async def test_lists_over_the_filter_end_to_end(instance: Instance) -> None:
    spam = {"bayes_min_trained": 10, "bayes_junk_threshold": 0.6}
    async with server_with(instance, spam=spam) as server:
        bob = await server.store.get_account("bob@example.test")
        assert bob is not None
        for data, is_spam in corpus(seed=5, count=60):
            await server.store.bayes_train(bob.id, str(hash(data)), tokenize(data), is_spam)
        port = server.port("mta")
        rng = random.Random(21)

        offer = re.sub(rb"From: <[^>]*>", b"From: <offers@best-deals.top>",
                       message(rng, True, 1))  # the filter scores it 0.80: Junk

        # the filter alone: spam to Junk
        assert (await send(port, offer))[0] == 250
        _, flags = await last_message(server, mailbox="Junk")
        assert "$Junk" in flags
        lists = server.ctx.spam.sender_lists
        await lists.set(bob.id, "@best-deals.top", "allow")
        # allowed, but nothing proves the From: still Junk (a From anyone can write)
        assert (await send(port, offer, sender="offers@best-deals.top"))[0] == 250
        junk = await server.store.get_mailbox(bob.id, "Junk")
        assert junk is not None and len(await server.store.list_messages(junk.id)) == 2
        # SPF passes for the domain: proven, so out of Junk
        server.resolver.txt_records["best-deals.top"] = ["v=spf1 ip4:127.0.0.1 -all"]
        assert (await send(port, offer, sender="offers@best-deals.top"))[0] == 250
        data, flags = await last_message(server)
        assert "$Junk" not in flags and b"offers@best-deals.top" in data
        assert b"X-Spam-Status: Yes" in data  # what the filter said stays visible
        # a block: ham from a partner goes to Junk; by the envelope sender too
        ham = message(rng, False, 4)
        assert (await send(port, ham))[0] == 250
        _, flags = await last_message(server)
        assert "$Junk" not in flags
        await lists.set(bob.id, normalize_pattern("Bounces.Example"), "block")
        assert (await send(port, ham, sender="x@mail.bounces.example"))[0] == 250
        _, flags = await last_message(server, mailbox="Junk")
        assert "$Junk" in flags and len(await server.store.list_messages(junk.id)) == 3
        # lists are each account's own: alice gets the same message in her INBOX
        assert (await send(port, ham, sender="x@mail.bounces.example",
                           rcpts=("alice@example.test",)))[0] == 250
        _, flags = await last_message(server, "alice@example.test")
        assert "$Junk" not in flags


async def test_command_line(instance: Instance, capsys: pytest.CaptureFixture[str]) -> None:
    from pochta.cli import main
    from tests.conftest import populate

    cfg = instance.config()
    store = await SQLiteStore.open(cfg.data_path)
    await populate(store)
    await store.close()
    cfg_file = instance.dir / "pochta.toml"
    cfg_file.write_text(f'hostname = "mail.example.test"\ndata_dir = "{cfg.data_path}"\n')
    loop = asyncio.get_running_loop()

    async def pochta(*argv: str) -> tuple[int, str]:
        rc = await loop.run_in_executor(None, main, ["-c", str(cfg_file), *argv])
        return rc, capsys.readouterr().out

    rc, out = await pochta("spam", "lists", "bob@example.test")
    assert (rc, out) == (0, "bob@example.test has no allow or block list\n")
    assert (await pochta("spam", "allow", "bob@example.test", "Partner.Example"))[0] == 0
    assert (await pochta("spam", "block", "bob@example.test", "news@shop.example"))[0] == 0
    rc, out = await pochta("spam", "lists", "bob@example.test")
    assert out == "allow\t@partner.example\nblock\tnews@shop.example\n"
    rc, out = await pochta("spam", "block", "bob@example.test", "not an address")
    assert rc == 2 and "is not an address or @domain" in out
    assert (await pochta("spam", "unlist", "bob@example.test", "@partner.example"))[0] == 0
    rc, out = await pochta("spam", "unlist", "bob@example.test", "@partner.example")
    assert rc == 1 and "is on no list" in out
    with pytest.raises(SystemExit, match=r"no account nobody@example\.test"):
        await pochta("spam", "allow", "nobody@example.test", "@x.example")
