"""The compiled evaluation (interpreter.py ``_compile_block``): the same answers as the
general evaluator for every test it compiles, rules grouped by the values they look at,
values shared by the runs of one delivery, and simple mailboxes parsed without
email.utils."""

from __future__ import annotations

import itertools
import pickle
import random
import re
from email.utils import getaddresses

import pytest

from pochta.sieve import (
    Context,
    SieveEnvelope,
    SieveMessage,
    Store,
    compile_script,
    evaluate,
    grammar,
)
from pochta.sieve.interpreter import Interpreter, _compile_test, _Frame
from pochta.sieve.message import _field_lines, header_addresses

MSG = (b"Return-Path: <coyote@desert.example.org>\r\n"
       b"From: Wile E. Coyote <Coyote@Desert.example.org>\r\n"
       b"To: roadrunner@acme.example.com, \"Boss, The\" <boss+work@acme.example.com>\r\n"
       b"Cc: undisclosed-recipients:;\r\n"
       b"Subject: =?utf-8?q?Caf=C3=A9?= [ticket-7] Invoice #12 *urgent*\r\n"
       b"Subject: second subject\r\n"
       b"List-Id: Road runners <runners.lists.example.org>\r\n"
       b"X-Score: 12\r\n"
       b"X-Empty:\r\n"
       b"X-Cafe: =?utf-8?q?CAF=C3=89?= au lait\r\n"
       b"\r\n"
       b"Look, I'm sorry about the whole ANVIL thing.\r\n")

ENV = SieveEnvelope("coyote+tag@desert.example.org", "Roadrunner+acme@acme.example.com",
                    "coyote")

REQUIRE = ('require ["envelope", "body", "regex", "relational", "subaddress", '
           '"comparator-i;ascii-numeric", "fileinto", "editheader", "variables"];\n')

TESTS = [
    *(f'header {m} {c} {h} {k}' for m, c, h, k in itertools.product(
        [":is", ":contains", ":matches", ":regex", ':value "ge"', ':count "eq"'],
        ["", ':comparator "i;octet"', ':comparator "i;unicode-casemap"'],
        ['"subject"', '["Subject", "x-score"]', '"list-id"', '"x-empty"', '"x-none"',
         '"x-cafe"'],
        ['"second subject"', '["CAFÉ", "*urgent*"]', '"*[ticket-?]*"', '"café"',
         '"^[a-z]+ subject$"', '""', '"*"', '"2"', '"12"', '"*Invoice\\\\*"',
         '"*SUBJECT"', '"second*"', '"café au lait"', '"*AU LAIT"', '"caf*"'])),
    *(f'address {p} {m} {h} {k}' for p, m, h, k in itertools.product(
        ["", ":localpart", ":domain", ":user", ":detail", ":all"],
        [":is", ":contains", ":matches", ':count "ge"'],
        ['"from"', '["to", "cc"]', '"bcc"'],
        ['"coyote@desert.example.org"', '["acme.example.com", "work"]', '"boss"',
         '"*"', '"2"'])),
    *(f'envelope {p} {m} {w} {k}' for p, m, w, k in itertools.product(
        ["", ":localpart", ":domain", ":user", ":detail"],
        [":is", ":contains", ":matches", ":regex"],
        ['"from"', '["to", "auth"]', '"FROM"'],
        ['"coyote+tag@desert.example.org"', '["tag", "roadrunner"]', '"ACME.example.com"',
         '"c*"', '"^[a-z]+$"'])),
    *(f'body {t} {m} {k}' for t, m, k in itertools.product(
        [":text", ":raw", ':content "text"', ':content ""'],
        [":is", ":contains", ":matches", ":regex", ':comparator "i;octet" :contains'],
        ['"anvil"', '["ANVIL thing", "nothing"]', '"*sorry*"', '"sorry.*anvil"'])),
    'exists "x-empty"', 'exists ["from", "x-none"]', "size :over 100", "size :under 100",
]


def _interpreter(source: str, variables: bool) -> tuple[Interpreter, grammar.Test]:
    script = compile_script(REQUIRE + f"if {source} {{ keep; }}")
    test = script.commands[1].tests[0]
    it = Interpreter(SieveMessage(MSG), ENV, Context("roadrunner@acme.example.com"))
    it.frame = _Frame(script)
    it.frame.uses_variables = variables
    return it, test


@pytest.mark.parametrize("variables", [False, True])
def test_compiled_tests_answer_as_the_general_evaluator(variables: bool) -> None:
    for source in TESTS:
        it, test = _interpreter(source, variables)
        expected = it._test(test)
        vars_before = list(it.match_vars)
        it2, test2 = _interpreter(source, variables)
        assert _compile_test(test2, variables)(it2) == expected, source
        assert it2.match_vars == it.match_vars or not variables, source
        assert vars_before == it.match_vars


def test_rules_on_the_same_values_are_one_step_with_the_same_result() -> None:
    # eight rules on From, the second and fourth match: the first in order wins
    rules = "".join(f'if address :is "from" ["nobody{n}@x.example", "{a}"] '
                    f'{{ fileinto "box{n}"; stop; }}\n'
                    for n, a in enumerate(["a@x", "coyote@desert.example.org", "b@x",
                                           "Coyote@desert.example.org", "c@x", "d@x"]))
    result = evaluate(compile_script('require "fileinto";\n' + rules), SieveMessage(MSG),
                      ENV, Context("r@acme.example.com"))
    assert [a.mailbox for a in result.actions if isinstance(a, Store)] == ["box1"]
    # without stop every matching rule runs, in order
    rules = rules.replace(" stop;", "")
    result = evaluate(compile_script('require "fileinto";\n' + rules), SieveMessage(MSG),
                      ENV, Context("r@acme.example.com"))
    assert [a.mailbox for a in result.actions if isinstance(a, Store)] == ["box1", "box3"]


def test_a_rule_after_an_edit_sees_the_edited_header() -> None:
    script = compile_script(
        'require ["editheader", "fileinto"];\n'
        'if header :contains "x-score" "12" { addheader "X-Score" "99"; fileinto "a"; }\n'
        'if header :contains "x-score" "99" { fileinto "b"; }\n'
        'if header :contains "x-score" "77" { fileinto "c"; }\n'
        'if header :is "x-flag" "1" { fileinto "d"; }\n'
        'if header :is "x-flag" "2" { fileinto "e"; }\n')
    message = SieveMessage(MSG)
    result = evaluate(script, message, ENV, Context("r@acme.example.com"))
    assert [a.mailbox for a in result.actions if isinstance(a, Store)] == ["a", "b"]
    # the delivery's message (and another recipient's run) never saw the edit
    assert message.headers("x-score") == ["12"]
    other = evaluate(script, message, ENV, Context("r@acme.example.com"))
    assert [a.mailbox for a in other.actions if isinstance(a, Store)] == ["a", "b"]


def test_runs_of_one_delivery_share_what_was_parsed() -> None:
    message = SieveMessage(MSG)
    first, second = message.fork(), message.fork()
    assert first.addresses("from") == ["Coyote@Desert.example.org"]
    assert second.addresses("from") is first.addresses("from")  # parsed once
    assert message.headers("Subject") is first.headers("subject")
    first.add_header("X-New", "1", last=True)
    assert first.headers("x-new") == ["1"]
    assert second.headers("x-new") == [] and message.headers("x-new") == []


def test_subaddress_separator_of_the_run_is_used() -> None:
    script = compile_script('require ["envelope", "subaddress", "fileinto"];\n'
                            'if address :detail "cc" "work" { fileinto "plus"; }\n'
                            'if address :detail "cc" "boss+work" { fileinto "none"; }\n')
    data = MSG.replace(b"Cc: undisclosed-recipients:;", b"Cc: boss+work@acme.example.com")
    message = SieveMessage(data)
    plus = evaluate(script, message, ENV, Context("r@x"))
    minus = evaluate(script, message, ENV, Context("r@x", subaddress_separator="-"))
    assert [a.mailbox for a in plus.actions if isinstance(a, Store)] == ["plus"]
    assert [a.mailbox for a in minus.actions if isinstance(a, Store)] == ["INBOX"]


def test_a_script_pickles_after_a_run() -> None:
    script = compile_script('require "fileinto";\n'
                            'if header :contains "subject" "urgent" { fileinto "u"; }\n')
    first = evaluate(script, SieveMessage(MSG), ENV, Context("r@x"))
    again = pickle.loads(pickle.dumps(script))  # noqa: S301 - our own bytes
    second = evaluate(again, SieveMessage(MSG), ENV, Context("r@x"))
    assert first.actions == second.actions == [Store("u")]


def test_simple_mailboxes_parse_as_getaddresses_does() -> None:
    rng = random.Random(5228)
    pieces = ["a", "b.c", "x_y", "Z", "1", "o'neil", "+tag", "-", ".", " ", "\t", "@", "<",
              ">", '"', ",", ";", ":", "(", ")", "[", "]", "\\", "é", "example.org",
              "Name", "John Q. Public", "=?utf-8?q?x?="]
    values = ["a@b", " <a@b> ", "Name <a.b@c.d>", "John Q. Public <john@x.example>",
              "a..b@c", "a@b.", "<a@b", "a@b>", "Name<a@b>", "\"Q\" <a@b>", "a@b, c@d",
              "(c) a@b", "a@b (c)", "grp: a@b;", "<@relay:a@b>", "o'neil@x.example"]
    values += ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 7)))
               for _ in range(5000)]
    for value in values:
        assert header_addresses(value) == [a for _, a in getaddresses([value])], value


def test_header_fields_split_as_the_definition() -> None:
    # a field ends at a line end not followed by white space (RFC 5322 §2.2.3)
    definition = re.compile(r"\r?\n(?![ \t])")
    rng = random.Random(2822)
    for _ in range(20000):
        text = "".join(rng.choice(["\r", "\n", "\r\n", " ", "\t", "A", ":", "b"])
                       for _ in range(rng.randint(0, 14)))
        assert _field_lines(text) == definition.split(text), text
