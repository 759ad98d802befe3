"""Several scripts for one delivery, in order: the admin's ``[sieve] before`` scripts,
the user's active script, the admin's ``after`` scripts (Pigeonhole's sieve_before /
sieve_after, its "multiscript" execution).

Each script runs on the message as the scripts before it left it (editheader) and with
their imap4flags flags. A script's implicit keep is deferred: the next script runs only
while the message would still be kept implicitly (RFC 5228 §2.10.2), so a before script
that files spam into Junk ends the sequence, and an after script runs only when the
user's script took no decision. The actions of every script that ran are carried out
together, merged as within one script (one copy per mailbox, one redirect per
address, the first reject); the implicit keep of the last script is the only one kept.
A script's own errors end it as in a single run (the caller falls back to keep).
"""

from __future__ import annotations

from collections.abc import Sequence

from .compiler import Script
from .interpreter import (
    Context,
    Interpreter,
    Result,
    SieveEnvelope,
    Store,
    merge_actions,
)
from .message import SieveMessage


def combine(before: Result, after: Result) -> Result:
    """``after`` ran once ``before`` left the implicit keep in place: the deferred
    implicit keep goes, the actions join (merged), the message is the latest."""
    kept = [a for a in before.actions if not (isinstance(a, Store) and a.implicit)]
    return Result(merge_actions([*kept, *after.actions]), after.message,
                  [*before.track, *after.track], [*before.warnings, *after.warnings])


def keeps_implicitly(result: Result) -> bool:
    return any(isinstance(a, Store) and a.implicit for a in result.actions)


def run_sequence(scripts: Sequence[Script], message: SieveMessage,
                 envelope: SieveEnvelope, ctx: Context) -> Result:
    """Run the scripts in order (see the module's docstring); the message is not
    changed (each run edits a fork)."""
    msg = message.fork()
    flags = set(ctx.flags)
    result: Result | None = None
    for script in scripts:
        it = Interpreter(msg, envelope, ctx)
        it.flags = set(flags)
        res = it.run(script)
        result = res if result is None else combine(result, res)
        msg, flags = it.msg, it.flags
        if not keeps_implicitly(res):
            break
    if result is None:  # no script at all: the implicit keep
        return Result([Store("INBOX", frozenset(flags), implicit=True)], msg)
    return result
