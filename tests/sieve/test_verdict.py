"""spamtest/virustest from a content filter's header ([sieve] spamtest_header ...,
RFC 5235): the values of SpamAssassin's and rspamd's fields, and end to end: a message
over SMTP carrying the filter's header is filed by a script's spamtest."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pochta.config import ConfigError
from pochta.sieve import SieveMessage
from pochta.sieve.verdict import HeaderVerdict, header_verdict, scaled
from tests.conftest import Instance, Server, start_instance
from tests.sieve.test_e2e import LISTENERS, mailbox, smtp, upload

SA = HeaderVerdict.configure(
    "spamtest", "X-Spam-Status:score=(-?[0-9]+\\.[0-9]+)", "score",
    "X-Spam-Status:required=(-?[0-9]+\\.[0-9]+)")


def msg(*fields: str) -> SieveMessage:
    return SieveMessage(("\r\n".join(fields) + "\r\n\r\nbody\r\n").encode())


@pytest.mark.parametrize(("status", "score", "percent"), [
    ("No, score=-1.6 required=5.0", 1, 0),
    ("No, score=1.0 required=5.0", 2, 20),
    ("Yes, score=5.0 required=5.0", 10, 100),
    ("Yes, score=12.5 required=5.0", 10, 100),  # past the maximum: certain
])
def test_spamassassin_score_against_its_required(status: str, score: int, percent: int
                                                 ) -> None:
    m = msg(f"X-Spam-Status: {status}")
    assert header_verdict(SA, None, m) == (score, percent, None)


def test_first_field_counts_and_missing_is_untested() -> None:
    m = msg("X-Spam-Status: Yes, score=9.0 required=5.0",
            "X-Spam-Status: No, score=0.0 required=5.0")
    assert header_verdict(SA, None, m)[0] == 10
    assert header_verdict(SA, None, msg("Subject: x")) == (None, None, None)
    assert header_verdict(SA, None, msg("X-Spam-Status: garbage")) == (None, None, None)


def test_strlen_and_text_verdicts() -> None:
    level = HeaderVerdict.configure("spamtest", "X-Spam-Level", "strlen", max_value=8.0)
    assert header_verdict(level, None, msg("X-Spam-Level: ****"))[0] == 5
    assert header_verdict(level, None, msg("X-Spam-Level: *-*")) == (None, None, None)
    virus = HeaderVerdict.configure("virustest", "X-Virus-Scan:Found to be (.+)\\.",
                                    "text", text_values=["1=clean", "5=infected"])
    assert header_verdict(None, virus, msg("X-Virus-Scan: Found to be infected."))[2] == 5
    assert header_verdict(None, virus, msg("X-Virus-Scan: Found to be clean."))[2] == 1
    assert header_verdict(None, virus, msg("X-Virus-Scan: Found to be odd.")) \
        == (None, None, None)
    assert scaled(0.5, "virustest") == 3 and scaled(0.5, "spamtest", percent=True) == 50


@pytest.mark.parametrize("settings", [
    {"spamtest_header": "X-Spam:score=(", "spamtest_max_value": 5.0},  # bad regex
    {"spamtest_header": "X-Spam:score=[0-9]+", "spamtest_max_value": 5.0},  # no group
    {"spamtest_header": "X-Spam-Score"},  # a score without a maximum
    {"spamtest_header": "X-Spam", "spamtest_type": "colour"},
    {"virustest_header": "X-Virus", "virustest_text_values": ["9=infected"]},
])
def test_bad_settings_are_config_errors(instance: Instance, settings: dict[str, object]
                                        ) -> None:
    with pytest.raises(ConfigError) as err:
        instance.config(sieve=settings)
    assert any("sieve.spamtest_header" in p or "sieve.virustest_header" in p
               for p in err.value.problems), err.value.problems


SCRIPT = """require ["fileinto", "spamtest", "virustest", "relational",
    "comparator-i;ascii-numeric"];
if virustest :value "eq" :comparator "i;ascii-numeric" "5" { discard; stop; }
if spamtest :value "ge" :comparator "i;ascii-numeric" "6" { fileinto "Junk"; }
"""


@pytest.fixture
async def server(instance: Instance) -> AsyncIterator[Server]:
    srv = await start_instance(instance, listeners=LISTENERS, sieve={
        "spamtest_header": "X-Spam-Score", "spamtest_max_value": 15.0,
        "virustest_header": "X-Virus-Status", "virustest_text_values": ["1=clean",
                                                                         "5=infected"]})
    try:
        yield srv
    finally:
        await srv.running.close(grace=1.0)
        await srv.store.close()


async def test_script_files_by_the_filters_score_over_smtp(server: Server) -> None:
    await upload(server, "alice@example.test", "alice-pass", SCRIPT)
    base = "From: bob@remote.test\nTo: alice@example.test\nSubject: {}\n\nhi\n"
    # rspamd's score: 12 of 15 is spam (9 on RFC 5235's scale), 2 is not
    for score, subject in (("12.0", "pills"), ("2.0", "lunch")):
        code, _ = await smtp(server, "bob@remote.test", ["alice@example.test"],
                             f"X-Spam-Score: {score}\n" + base.format(subject))
        assert code == 250
    code, _ = await smtp(server, "bob@remote.test", ["alice@example.test"],
                         "X-Virus-Status: infected\n" + base.format("worm"))
    assert code == 250
    assert await subjects(server, "Junk") == ["pills"]
    assert await subjects(server, "INBOX") == ["lunch"]  # the infected one was discarded


async def subjects(server: Server, box: str) -> list[str]:
    out = []
    for m in await mailbox(server, "alice@example.test", box):
        data = await server.store.read_blob(m.blob_id)
        out.append(SieveMessage(data).headers("subject")[0].strip())
    return out
