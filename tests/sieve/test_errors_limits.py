"""Errors and limits of the Sieve compiler and interpreter: what a user sees when a
script goes wrong (each error with its line) and the bounds a script cannot pass."""

from __future__ import annotations

import pytest

from pochta.sieve import (
    Context,
    Limits,
    Result,
    SieveEnvelope,
    SieveMessage,
    SieveRuntimeError,
    SieveSyntaxError,
    compile_script,
    evaluate,
)

MSG = (b"From: alice@example.org\r\nTo: bob@example.com\r\nSubject: hello\r\n"
       b"Content-Type: text/plain\r\n\r\nhi\r\n")
ENV = SieveEnvelope("alice@example.org", "bob@example.com")


def run(source: str, limits: Limits | None = None, data: bytes = MSG,
        env: SieveEnvelope = ENV, **ctx: object) -> Result:
    limits = limits or Limits()
    return evaluate(compile_script(source, limits=limits), SieveMessage(data), env,
                    Context("bob@example.com", limits=limits, **ctx))  # type: ignore[arg-type]


def errors(source: str) -> list[str]:
    with pytest.raises(SieveSyntaxError) as info:
        compile_script(source)
    return info.value.lines()


def variable(source: str, name: str, limits: Limits | None = None) -> str:
    """The value a script leaves in ``name``, read back with a string test."""
    result = run(source + f'\nif string :matches "${{{name}}}" "*" '
                 f'{{ addheader "X-Out" "${{1}}"; }}',
                 limits)
    return result.message.headers("x-out")[0] if result.message.headers("x-out") else ""


def test_variable_values_are_cut_at_the_byte_limit_on_a_character_boundary() -> None:
    limits = Limits(max_variable_size=10)
    req = 'require ["variables", "editheader"];\n'
    assert variable(req + 'set "a" "0123456789abc";', "a", limits) == "0123456789"
    # "é" is two bytes: the ninth and tenth bytes would split the next one
    assert variable(req + 'set "a" "12345678é";', "a", limits) == "12345678é"
    assert variable(req + 'set "a" "123456789é";', "a", limits) == "123456789"


def test_escaping_modifiers_never_cut_inside_an_escape() -> None:
    limits = Limits(max_variable_size=10)
    req = 'require ["variables", "enotify", "editheader"];\n'
    # each "@" becomes "%40": three whole escapes fit in 10 bytes, not a fourth half
    assert variable(req + 'set :encodeurl "a" "@@@@@@";', "a", limits) == "%40%40%40"
    # "\\*" pairs: five fit, not a lone backslash
    assert variable(req + 'set :quotewildcard "a" "******";', "a", limits) == "\\*" * 5
