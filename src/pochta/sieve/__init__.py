"""Sieve (RFC 5228) as a sans-IO library: ``compile_script`` (grammar.py, compiler.py),
then ``evaluate`` (interpreter.py) against a ``SieveMessage`` (message.py), an envelope
and a context; the result is a list of actions that services/sieve.py carries out."""

from __future__ import annotations

from .compiler import EXTENSIONS, Limits, Script, compile_script
from .grammar import SieveSyntaxError
from .interpreter import (
    Action,
    Context,
    Discard,
    NeedLookup,
    Notify,
    Redirect,
    Reject,
    Result,
    SieveEnvelope,
    SieveRuntimeError,
    Store,
    Vacation,
    evaluate,
    parse_mailto,
)
from .message import SieveMessage

__all__ = [
    "EXTENSIONS", "Action", "Context", "Discard", "Limits", "NeedLookup", "Notify",
    "Redirect", "Reject", "Result", "Script", "SieveEnvelope", "SieveMessage",
    "SieveRuntimeError", "SieveSyntaxError", "Store", "Vacation", "compile_script",
    "evaluate", "parse_mailto",
]
