"""Runs Dovecot Pigeonhole's test scripts (``tests/**/*.svtest`` of a checkout given by
path; none of its files are part of Pochta) against Pochta's interpreter, with a
test-only subset of its ``vnd.dovecot.testsuite`` extension:

    .venv/bin/python -m tests.sieve.pigeonhole /path/to/pigeonhole [FILE ...]

Implemented: ``test``, ``test_set`` (message, with the envelope taken from its
Return-Path/Sender/From and Envelope-To/To as Pigeonhole does; envelope.from/to/auth),
``test_fail``, ``test_script_compile`` (as the active script, with its includes from
``included/`` and ``included-global/``: sieve/includes.py), ``test_script_run``,
``test_error`` (every compile error Pochta reports, plus Pigeonhole's closing
"compilation failed" one),
``test_result_action``, ``test_result_execute`` (the result carried out: stores into
the runner's folders; redirects, vacation replies, notifications and rejection DSNs
built by Pochta's own code into an outbox; a stored message keeps its flags, with
the attachment keyword delivery adds, and
"INBOX." names are read as Dovecot's test store reads them), ``test_message :smtp N`` /
``:folder F N`` (that message, and its envelope, become the one under test, a stored
one with its flags; as a command, a message that is not there fails the test),
``test_result_reset``,
``test_mailbox_create``, ``test_imap_metadata_set`` (the METADATA the mboxmetadata
tests read), ``test_config_set`` for settings with a Pochta equivalent
(``recipient_delimiter`` of one character, ``sieve_user_email``, ``sieve_max_cpu_time``
in seconds, ``sieve_extlists_list`` dict files as lists, ``sieve_include_max_includes``,
``sieve_include_max_nesting_depth``, ``sieve_variables_max_scope_count``; others are
ignored).
``test_binary_save``/``_load`` pickle the compiled script (Pochta has no binary
format). ``test_multiscript`` runs the scripts as Pochta's before/user/after sequence.

A file passes when it compiles and every ``test`` block in it passes; a file of
``failures/`` (Pigeonhole runs them with ``-F``) when every test in it fails, or it does
not compile, and none failed by an exception of the interpreter itself.
"""

from __future__ import annotations

import dataclasses
import pickle
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pochta.mail.attachments import attachment_keyword
from pochta.services.rejection import rejection_message
from pochta.services.sieve import (
    imap_flags,
    redirect_body,
    redirect_loop,
    redirect_sender,
)
from pochta.sieve import (
    EXTENSIONS,
    Context,
    Limits,
    Result,
    Script,
    SieveEnvelope,
    SieveMessage,
    SieveRuntimeError,
    SieveSyntaxError,
    compile_script,
)
from pochta.sieve.address import envelope_path
from pochta.sieve.autoreply import (
    VacationRules,
    build_notification,
    build_vacation,
    notification_sender,
    notify_refusal,
    vacation_plan,
)
from pochta.sieve.compiler import _MATCH, Spec
from pochta.sieve.execute import store_refusal
from pochta.sieve.grammar import Command, Test
from pochta.sieve.includes import check, drive
from pochta.sieve.interpreter import (
    Discard,
    Interpreter,
    Notify,
    Redirect,
    Reject,
    Store,
    Vacation,
    _Match,
    _Stop,
)
from pochta.sieve.sequence import combine, run_sequence
from pochta.sieve.verdict import HeaderVerdict, Kind, header_verdict
from pochta.storage.interfaces import Envelope

EXT = "vnd.dovecot.testsuite"
DEBUG = "vnd.dovecot.debug"  # test-only here: debug_log writes nowhere
LIMITS = Limits()  # Pochta's defaults (Pigeonhole's are the same: 32 actions, 4 redirects)
COMMANDS = {
    "test": Spec(EXT, "s", {}, block=True),
    "test_set": Spec(EXT, "ss", {}),
    "test_fail": Spec(EXT, "s", {}),
    "test_config_set": Spec(EXT, "ss", {}),
    "test_config_unset": Spec(EXT, "s", {}),
    "test_config_reload": Spec(EXT, "", {"extension": ("s", None, "extension")}),
    "test_result_reset": Spec(EXT, "", {}),
    "test_result_print": Spec(EXT, "", {}),
    "test_mailbox_create": Spec(EXT, "s", {}),
    "test_message": Spec(EXT, "n", {"smtp": ("", None, "source"),
                                     "folder": ("s", None, "source")}),
    "test_message_print": Spec(EXT, "", {}),
    "test_binary_save": Spec(EXT, "s", {}),
    "test_binary_load": Spec(EXT, "s", {}),
    "test_imap_metadata_set": Spec(EXT, "ss", {"mailbox": ("s", None, "mailbox")}),
    "debug_log": Spec(DEBUG, "s", {}),
}
TESTS = {
    "test_message": COMMANDS["test_message"],
    "test_script_compile": Spec(EXT, "s", {}),
    "test_script_run": Spec(EXT, "", {"append_result": ("", None, "append")}),
    "test_multiscript": Spec(EXT, "l", {}),
    "test_error": Spec(EXT, "l?", {**_MATCH, "index": ("n", None, "index")}),
    "test_result_action": Spec(EXT, "l", {**_MATCH, "index": ("n", None, "index")}),
    "test_result_execute": Spec(EXT, "", {}),
}


class _Fail(Exception):
    pass


@dataclass
class _State:
    directory: Path
    # None: a path test_set gave that does not parse
    envelope: dict[str, str | None] = field(default_factory=lambda: {"from": "", "to": ""})
    compiled: Script | None = None
    errors: list[str] = field(default_factory=list)
    result: Result | None = None
    scripts: dict[tuple[str, str], Script | None] = field(default_factory=dict)
    mailboxes: set[str] = field(default_factory=lambda: {"INBOX"})
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)
    sent: list[tuple[str, str, bytes]] = field(default_factory=list)  # (from, to, message)
    folders: dict[str, list[bytes]] = field(default_factory=dict)
    stored_flags: dict[str, list[frozenset[str]]] = field(default_factory=dict)  # as folders
    config: dict[str, str] = field(default_factory=dict)
    binaries: dict[str, bytes] = field(default_factory=dict)
    done: set[object] = field(default_factory=set)  # _done_key of what was carried out
    original: bytes | None = None  # the message under test as received (no edits)
    fail_handler: Callable[[Interpreter, Command | Test], object] | None = None
    passed: int = 0
    failed: list[str] = field(default_factory=list)
    crashed: bool = False  # an exception of the interpreter itself, not a Sieve error


def _action_name(action: object) -> str:
    if isinstance(action, Store):
        return "keep" if action.keep or action.implicit else "store"
    return {Redirect: "redirect", Reject: "reject", Discard: "discard",
            Vacation: "vacation", Notify: "notify"}.get(type(action), "?")


def _handlers(state: _State) -> dict[str, object]:
    def args(node: Command | Test) -> tuple[dict[str, object], list[object]]:
        tags, pos = node.extra["tags"], node.extra["pos"]
        assert isinstance(tags, dict) and isinstance(pos, list)
        return tags, pos

    def test_block(it: Interpreter, node: Command | Test) -> None:
        _, pos = args(node)
        name = it._s(pos[0])
        assert isinstance(node, Command) and node.block is not None
        saved = it.actions, it.implicit_keep
        it.actions, it.implicit_keep = [], True
        it.redirects = it.edits = 0  # each test is a run of its own
        try:
            it._block(node.block)
            state.passed += 1
        except _Stop:
            state.passed += 1  # stop ends the test and the whole script
            raise
        except _Fail as exc:
            state.failed.append(f"{name}: {exc}")
        except SieveRuntimeError as exc:
            state.failed.append(f"{name}: runtime error {exc}")
        except Exception as exc:  # an interpreter bug shows as a failed test, not a crash
            state.failed.append(f"{name}: {type(exc).__name__} {exc}")
            state.crashed = True
        finally:
            it.actions, it.implicit_keep = saved

    def test_set(it: Interpreter, node: Command | Test) -> None:
        _, pos = args(node)
        what, value = it._s(pos[0]).lower(), it._s(pos[1])
        if what == "message":
            it.msg = SieveMessage(value.encode("utf-8"))
            state.original = it.msg.data
            it.flags = set()  # a new message has none
            # as Pigeonhole's testsuite: the envelope comes from the message
            sender = next((a for h in ("return-path", "sender", "from")
                           for a in it.msg.addresses(h) if a), "MAILER-DAEMON")
            rcpt = next((a for h in ("envelope-to", "to") for a in it.msg.addresses(h) if a),
                        "recipient@example.com")
            state.envelope = {"from": sender, "to": rcpt}
            it.env = SieveEnvelope(sender, rcpt)
            _apply_verdict(state, it)
        elif what.startswith("envelope."):
            # envelope.auth is a login, not an SMTP path; an unparsable path is no
            # address at all: envelope tests skip it, as they skip a missing "auth"
            state.envelope[what[9:]] = (value if what == "envelope.auth"
                                        else envelope_path(value))
            it.env = SieveEnvelope(state.envelope.get("from", ""),  # type: ignore[arg-type]
                                   state.envelope.get("to", ""),  # type: ignore[arg-type]
                                   state.envelope.get("auth"))
        # other settings (message.smtp.from, ...) are ignored

    def test_fail(it: Interpreter, node: Command | Test) -> None:
        _, pos = args(node)
        raise _Fail(it._s(pos[0]))

    state.fail_handler = test_fail  # a sub-test's test_fail fails the test running it

    def ignore(it: Interpreter, node: Command | Test) -> None:
        return None

    def mailbox_create(it: Interpreter, node: Command | Test) -> None:
        _, pos = args(node)
        state.mailboxes.add(_box(it._s(pos[0])))
        it.ctx.mailboxes = frozenset(state.mailboxes)

    def result_execute(it: Interpreter, node: Command | Test) -> bool:
        """Carry out the result as delivery would: stores into the runner's folders,
        and the messages Pochta would send (redirects, vacation replies, notifications,
        rejection DSNs) built by Pochta's own code, kept for ``test_message :smtp``.
        A script's result stays listed after it is carried out (an appended one then
        carries out only what it added); else the test's own actions are the result."""
        pending = [] if state.result is None else [
            a for a in state.result.actions if _done_key(a) not in state.done]
        if pending and state.result is not None:
            state.errors = _execute(state, pending, state.result.message, it.env)
        else:
            try:
                res = it._finish()  # merged, with the implicit keep, as delivery runs it
            except SieveRuntimeError:
                return False
            state.errors = _execute(state, res.actions, res.message, it.env)
            it.actions, it.implicit_keep = [], True
            it.redirects = it.edits = 0
        it.ctx.mailboxes = frozenset(state.mailboxes)  # what :create made, as the store
        return not state.errors  # delivery logs these and keeps the message in INBOX

    def multiscript(it: Interpreter, node: Command | Test) -> bool:
        """Pochta's sequence of scripts (``[sieve] before``, the user's, ``after``)
        run and carried out as one delivery."""
        _, pos = args(node)
        scripts = []
        for name in it._l(pos[0]):
            path = state.directory / name
            try:
                scripts.append(compile_script(path.read_text("utf-8"), path.stem,
                                              _limits(state)))
            except (OSError, UnicodeDecodeError, SieveSyntaxError):
                return False
        try:
            res = run_sequence(scripts, it.msg, it.env, _run_context(state))
        except SieveRuntimeError:
            return False
        state.errors = _execute(state, res.actions, res.message, it.env)
        it.ctx.mailboxes = frozenset(state.mailboxes)
        return not state.errors

    def message(it: Interpreter, node: Command | Test) -> bool:
        tags, pos = args(node)
        index = int(str(pos[0]))
        # as a command (not a test) a message that is not there fails the test
        missing = _Fail("no such message") if isinstance(node, Command) else None
        if "folder" in tags:
            box = _box(it._s(tags["folder"]))
            stored = state.folders.get(box, [])
            if not 0 <= index < len(stored):
                if missing:
                    raise missing
                return False
            it.msg = SieveMessage(stored[index])
            state.original = it.msg.data
            # the message's flags, as imapsieve starts a run (RFC 6785 §3.3)
            it.flags = set(state.stored_flags[box][index])
            return True
        if not 0 <= index < len(state.sent):
            if missing:
                raise missing
            return False
        sender, rcpt, data = state.sent[index]
        it.msg = SieveMessage(data)
        state.original = it.msg.data
        it.env = SieveEnvelope(sender, rcpt)
        return True

    def result_reset(it: Interpreter, node: Command | Test) -> None:
        state.result = None
        state.done.clear()
        state.sent.clear()
        it.actions, it.implicit_keep = [], True
        it.redirects = it.edits = 0

    def binary_save(it: Interpreter, node: Command | Test) -> None:
        """Pochta has no binary script format: the compiled script is pickled, so a
        load runs what the round trip kept."""
        _, pos = args(node)
        if state.compiled is None:
            raise _Fail("no compiled script to save")
        state.binaries[it._s(pos[0])] = pickle.dumps(state.compiled)

    def binary_load(it: Interpreter, node: Command | Test) -> None:
        _, pos = args(node)
        data = state.binaries.get(it._s(pos[0]))
        if data is None:
            raise _Fail("no such binary")
        state.compiled = pickle.loads(data)  # noqa: S301 - our own bytes

    def config_set(it: Interpreter, node: Command | Test) -> None:
        """Pigeonhole settings with a Pochta equivalent take effect; the rest are kept
        (and ignored)."""
        _, pos = args(node)
        key, value = it._s(pos[0]), it._s(pos[1]).replace("${tst.path}", str(state.directory))
        state.config[key] = value
        if key == "recipient_delimiter" and len(value) == 1:  # Pochta: one separator
            it.ctx.subaddress_separator = value
        elif key == "sieve_user_email":
            it.ctx.user = value
        elif key == "sieve_editheader_header":
            # Pigeonhole's per-field forbid_add/forbid_delete: Pochta protects a field
            # from both (the files set both)
            it.ctx.protected_headers = frozenset(value.lower().split())
        it.limits = it.ctx.limits = _limits(state)

    def config_reload(it: Interpreter, node: Command | Test) -> None:
        _apply_verdict(state, it)

    def config_unset(it: Interpreter, node: Command | Test) -> None:
        _, pos = args(node)
        state.config.pop(it._s(pos[0]), None)
        it.limits = it.ctx.limits = _limits(state)

    def metadata_set(it: Interpreter, node: Command | Test) -> None:
        """The IMAP METADATA store of the test account (RFC 5464 entry names)."""
        tags, pos = args(node)
        mailbox = it._s(tags["mailbox"]) if "mailbox" in tags else ""
        entry, value = it._s(pos[0]).lower(), it._s(pos[1])
        if not entry.startswith(("/private/", "/shared/")):
            raise _Fail(f"invalid metadata entry {entry}")
        state.metadata.setdefault(mailbox, {})[entry] = value
        it.ctx.metadata = _Metadata(state)

    def script_compile(it: Interpreter, node: Command | Test) -> bool:
        """Compiled as Pigeonhole's testsuite does, as the active script: with its
        includes (``included/``, ``included-global/``), a missing one or a loop an error."""
        _, pos = args(node)
        path = state.directory / it._s(pos[0])
        state.errors, state.compiled = [], None  # the result stays (append_result)
        limits = _limits(state)

        def compile_(source: str, name: str) -> Script:
            # a sub-test may use the testsuite too (test_fail), as in Pigeonhole
            return compile_script(source, name, limits, EXTENSIONS | {EXT, DEBUG},
                                  COMMANDS, TESTS)

        try:
            # the test's own file is none of the included/ scripts (a loop is an include
            # of one of those)
            checked = drive(check(path.read_text("utf-8"), ("test file", path.stem), limits,
                                  compile_), lambda key: _include_source(state, key))
            checked.raise_errors(strict=True)
            state.compiled = checked.script
        except (OSError, UnicodeDecodeError) as exc:
            state.errors = [str(exc)]
        except SieveSyntaxError as exc:
            # Pigeonhole's test_error sees each message without its location, and a
            # failed compile ends with one more error, the summary
            state.errors = [*(e.message for e in exc.errors), "script compilation failed"]
        return state.compiled is not None

    def script_run(it: Interpreter, node: Command | Test) -> bool:
        """``:append_result``: the script runs as the next of a sequence (Pochta's
        before/user/after scripts) after the result so far."""
        tags, _ = args(node)
        if state.compiled is None:
            return False
        state.original = it.msg.render()
        try:
            res = Interpreter(it.msg.fork(), it.env, _run_context(state)).run(state.compiled)
        except SieveRuntimeError as exc:
            state.errors = [str(exc)]
            return False
        if "append_result" in tags and state.result is not None:
            state.result = combine(state.result, res)
        else:
            state.result = res
            state.done.clear()
        state.errors = list(res.warnings)
        return True

    def error(it: Interpreter, node: Command | Test) -> bool:
        tags, pos = args(node)
        keys = it._l(pos[0]) if pos[0] is not None else []
        values = list(state.errors)
        index = tags.get("index")
        if isinstance(index, int):
            values = values[index - 1:index] if 0 < index <= len(values) else []
        return it._match(values, keys, _Match.of(tags), set_vars=False)

    def result_action(it: Interpreter, node: Command | Test) -> bool:
        tags, pos = args(node)
        if state.result is None:
            return False
        # Pigeonhole adds the implicit keep when the result is executed, not to the list
        names = [_action_name(a) for a in state.result.actions
                 if not (isinstance(a, Store) and a.implicit)]
        index = tags.get("index")
        if isinstance(index, int):
            names = names[index - 1:index] if 0 < index <= len(names) else []
        return it._match(names, it._l(pos[0]), _Match.of(tags), set_vars=False)

    return {
        "test": test_block, "test_set": test_set, "test_fail": test_fail,
        "test_config_set": config_set, "test_config_unset": config_unset,
        "test_config_reload": config_reload,
        "test_result_reset": result_reset, "test_result_print": ignore,
        "test_mailbox_create": mailbox_create, "test_message_print": ignore,
        "test_message": message, "test_binary_save": binary_save,
        "test_binary_load": binary_load, "test_imap_metadata_set": metadata_set,
        "debug_log": ignore,
        "test_multiscript": multiscript,
        "test_script_compile": script_compile, "test_script_run": script_run,
        "test_error": error, "test_result_action": result_action,
        "test_result_execute": result_execute,
    }


def _limits(state: _State) -> Limits:
    """Pigeonhole's settings with a ``Limits`` equivalent."""
    limits = LIMITS
    cpu = state.config.get("sieve_max_cpu_time", "")  # e.g. "2s"
    if cpu.endswith("s") and cpu[:-1].isdigit():
        limits = dataclasses.replace(limits, max_cpu_seconds=float(cpu[:-1]))
    size = state.config.get("sieve_variables_max_variable_size",
                            state.config.get("sieve_variables_max_value_size", ""))
    if size.isdigit():
        limits = dataclasses.replace(limits, max_variable_size=int(size))
    header = state.config.get("sieve_editheader_max_header_size", "")
    if header.isdigit():
        limits = dataclasses.replace(limits, max_header_value=int(header))
    for key, attr in (("sieve_include_max_includes", "max_includes"),
                      ("sieve_include_max_nesting_depth", "max_include_depth"),
                      ("sieve_variables_max_scope_count", "max_variables")):
        if state.config.get(key, "").isdigit():
            limits = dataclasses.replace(limits, **{attr: int(state.config[key])})
    notify = state.config.get("sieve_notify_max_notifications", "")
    if notify.isdigit():
        limits = dataclasses.replace(limits, max_notifications=int(notify))
    return limits


def _box(name: str) -> str:
    """A mailbox name as Pigeonhole's test store reads it: INBOX, and INBOX as the
    first level under its separator ".", in any case (RFC 9051 §5.1; Pochta's own
    separator is "/", storage/rules.py normalize_mailbox_name)."""
    if name.upper() == "INBOX" or name.upper().startswith("INBOX."):
        return "INBOX" + name[5:]
    return name


def _include_source(state: _State, key: tuple[str, str]) -> str | None:
    folder = "included" if key[0] == "personal" else "included-global"
    try:
        return (state.directory / folder / f"{key[1]}.sieve").read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _run_context(state: _State) -> Context:
    return Context("user@example.com", limits=_limits(state),
                   mailboxes=frozenset(state.mailboxes), scripts=state.scripts,
                   metadata=_Metadata(state), lists=_Lists(state), known=_Known(),
                   handlers={"test_fail": state.fail_handler} if state.fail_handler else {})


def _done_key(action: object) -> object:
    """What an action carried out is, so an appended result does not do it again."""
    if isinstance(action, Store):
        return ("store", action.mailbox.upper() if action.mailbox.upper() == "INBOX"
                else action.mailbox)
    if isinstance(action, Redirect):
        return ("redirect", action.address.lower())
    return id(action)


def _execute(state: _State, actions: Sequence[object], message: SieveMessage,
             env: SieveEnvelope) -> list[str]:
    """The result carried out; the errors delivery would log."""
    state.done.update(_done_key(a) for a in actions)
    user = state.config.get("sieve_user_email") or env.recipient or "user@example.com"
    # an action taken before any edit has data None: the message as received
    data = state.original if state.original is not None else message.render()
    notified: set[str] = set()
    errors: list[str] = []
    for action in actions:
        if isinstance(action, Store):
            # as delivery does: :create makes the mailbox, a refused one means INBOX
            name = _box(action.mailbox)
            refusal = store_refusal(name, name in state.mailboxes, action.create)
            if refusal is not None:
                errors.append(refusal)
            elif action.create:
                state.mailboxes.add(name)
            # a refused one is kept as received (RFC 5293 §7), as delivery does
            box, kept = (name, action.data or data) if refusal is None else ("INBOX", data)
            state.folders.setdefault(box, []).append(kept)
            # and the attachment keyword delivery adds ([imap] attachment_keywords)
            state.stored_flags.setdefault(box, []).append(
                imap_flags(action.flags) | {attachment_keyword(kept)})
        elif isinstance(action, Redirect):
            _redirect(state, action, message, action.data or data, env)
        elif isinstance(action, Vacation):
            _vacation(state, action, message, env)
        elif isinstance(action, Notify):
            if notify_refusal(message) is None:
                built = build_notification(action, message, user, "mail.example.com",
                                           1_700_000_000.0, notified)
                if built is not None:
                    # Pigeonhole's sieve_notify_mailto_envelope_from: Pochta has only
                    # "user" (its default) and <>
                    sender = notification_sender(action, env.sender, [user])
                    for to in built[0]:
                        state.sent.append((sender, to, built[1]))
        elif isinstance(action, Reject) and env.sender:
            dsn = rejection_message(action, Envelope(sender=env.sender),
                                    env.recipient or user, "mail.example.com", "test", data,
                                    1_700_000_000.0)
            state.sent.append(("", env.sender, dsn))
    return errors


def _verdict(config: dict[str, str], kind: Kind) -> HeaderVerdict | None:
    """Pigeonhole's ``sieve_<kind>_*`` settings as Pochta's ``[sieve] <kind>_*`` ones."""
    prefix = f"sieve_{kind}_"
    header = config.get(prefix + "status_header")
    if not header:
        return None
    texts = [f"{k[len(prefix) + 11:]}={v}" for k, v in config.items()
             if k.startswith(prefix + "text_value/")]
    try:
        return HeaderVerdict.configure(
            kind, header, config.get(prefix + "status_type", "score"),
            config.get(prefix + "score_max_header", ""),
            float(config.get(prefix + "score_max_value", "0") or 0), texts)
    except ValueError:
        return None  # not configured: the test answers 0


def _apply_verdict(state: _State, it: Interpreter) -> None:
    """What the service does per message: the configured headers' spam/virus values."""
    spam, virus = _verdict(state.config, "spamtest"), _verdict(state.config, "virustest")
    it.ctx.spam_score, it.ctx.spam_percent, it.ctx.virus_score = header_verdict(
        spam, virus, it.msg)


# Pigeonhole's sieve_redirect_envelope_from as Pochta's [sieve] redirect_sender (its
# "sender" default is Pochta's "original"; Pochta's own default, srs, needs a secret)
_REDIRECT_MODES = {"": "original", "sender": "original", "recipient": "account",
                   "orig_recipient": "recipient", "user_email": "account"}


def _redirect(state: _State, action: Redirect, message: SieveMessage, body: bytes,
              env: SieveEnvelope) -> None:
    """As the service: Pigeonhole's final recipient and ``sieve_user_email`` are the
    account's address, its original recipient Pochta's RCPT address."""
    cfg = state.config
    account = cfg.get("sieve_user_email") or env.recipient
    rcpt = state.envelope.get("orig_to") or env.recipient
    if redirect_loop(message, {rcpt, account, env.recipient}):
        state.folders.setdefault("INBOX", []).append(body)  # kept instead
        state.stored_flags.setdefault("INBOX", []).append(
            frozenset({attachment_keyword(body)}))
        return
    wanted = cfg.get("sieve_redirect_envelope_from", "").strip()
    mode = _REDIRECT_MODES.get(wanted, "null" if wanted == "<>" else wanted)
    sender = redirect_sender(mode, env.sender, rcpt, account)
    state.sent.append((sender, action.address, redirect_body(body, account)))


def _yes(config: dict[str, str], key: str) -> bool:
    return config.get(key, "").lower() in ("yes", "true", "1")


def _vacation(state: _State, action: Vacation, message: SieveMessage,
              env: SieveEnvelope) -> None:
    """As the service: Pigeonhole's ``sieve_user_email`` is the account's address, its
    final recipient (``envelope.to``) the account's delivery address, and its original
    one (``envelope.orig_to``) counts as Pochta's ``vacation_alias_recipient``."""
    cfg = state.config
    mine = [a for a in (cfg.get("sieve_user_email"), env.recipient) if a]
    orig = state.envelope.get("orig_to")
    if orig and _yes(cfg, "sieve_vacation_use_original_recipient"):
        mine.append(orig)
    rules = VacationRules(
        cfg.get("sieve_vacation_default_subject") or "Automated reply",
        cfg.get("sieve_vacation_default_subject_template") or "Auto: %{subject}",
        cfg.get("sieve_vacation_check_recipient", "yes").lower() not in ("no", "false", "0"),
        _yes(cfg, "sieve_vacation_to_header_ignore_envelope"))
    why, from_ = vacation_plan(message, env.sender, mine or ["user@example.com"], action,
                               rules.check_recipient)
    if why is None:
        reply = build_vacation(action, message, from_, env.sender, "mail.example.com",
                               1_700_000_000.0, rules)
        sender = from_ if _yes(cfg, "sieve_vacation_send_from_recipient") and (
            from_ in mine) else ""
        state.sent.append((sender, env.sender, reply))


class _Lists(dict[str, frozenset[str] | None]):
    """``Context.lists`` from Pigeonhole's ``sieve_extlists_list`` settings (each list a
    dict file of ``priv/sieve/extlists/<address>`` keys), as the service answers from
    its list files."""

    def __init__(self, state: _State) -> None:
        super().__init__()
        self.state = state

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> frozenset[str] | None:
        name = ":addrbook:" + key[len("urn:ietf:params:sieve:addrbook:"):] if key.startswith(
            "urn:ietf:params:sieve:addrbook:") else key
        cfg = self.state.config
        if name not in cfg.get("sieve_extlists_list", "").split():
            return None
        path = cfg.get(f"sieve_extlists_list/{name}/dict/file/path")
        if not path:
            return frozenset()
        lines = Path(path).read_text("utf-8").splitlines()
        prefix = "priv/sieve/extlists/"
        return frozenset(k[len(prefix):].lower() for k in lines[0::2] if k.startswith(prefix))


class _Runner(Interpreter):
    """The testsuite's own variables: ``${tst.path}``, the test file's folder."""

    state: _State

    def _get_var(self, name: str) -> str:
        if name.lower() == "tst.path":
            return str(self.state.directory)
        return super()._get_var(name)


class _Known(dict[str, bool]):
    """``Context.known`` for duplicate ids: the runner records none (as Pigeonhole's
    testsuite, whose duplicate store is empty), so every id is new."""

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> bool:
        return self.get(key, False)


class _Metadata(dict[str, dict[str, str] | None]):
    """``Context.metadata`` answered at once from the runner's store (the service
    answers a ``NeedLookup`` instead): a mailbox that does not exist is None."""

    def __init__(self, state: _State) -> None:
        super().__init__()
        self.state = state

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> dict[str, str] | None:
        if key and key not in self.state.mailboxes:
            return None
        return self.state.metadata.get(key, {})


@dataclass
class FileResult:
    path: str
    ok: bool
    passed: int
    failed: list[str]
    error: str | None = None


def _includes(directory: Path) -> dict[tuple[str, str], Script | None]:
    """Scripts for include: ``included/`` (personal) and ``included-global/``."""
    out: dict[tuple[str, str], Script | None] = {}
    for location, sub in (("personal", "included"), ("global", "included-global")):
        for f in sorted((directory / sub).glob("*.sieve")):
            try:
                out[(location, f.stem)] = compile_script(f.read_text("utf-8"), f.stem, LIMITS)
            except (SieveSyntaxError, UnicodeDecodeError):
                out[(location, f.stem)] = None
    return out


def run_file(path: Path) -> FileResult:
    # failures/: Pigeonhole runs these with -F, "every test expected to fail"
    expect_failure = path.parent.name == "failures"
    state = _State(path.parent)
    state.scripts = _includes(path.parent)
    try:
        script = compile_script(path.read_text("utf-8"), path.name, LIMITS,
                                EXTENSIONS | {EXT, DEBUG}, COMMANDS, TESTS,
                                frozenset({"tst"}))
    except SieveSyntaxError as exc:
        return FileResult(str(path), expect_failure, 0, [], f"does not compile: {exc}")
    ctx = Context("user@example.com", limits=LIMITS, now=1_700_000_000.0,
                  environment={"domain": "example.com", "host": "mail.example.com",
                               "location": "MDA", "name": "Pochta", "phase": "during",
                               "version": "1"},
                  mailboxes=frozenset({"INBOX"}), scripts=state.scripts,
                  metadata=_Metadata(state), lists=_Lists(state), known=_Known(),
                  handlers=_handlers(state))  # type: ignore[arg-type]
    interp = _Runner(SieveMessage(b"\r\n"), SieveEnvelope("", ""), ctx)
    interp.state = state
    try:
        interp.run(script)
    except SieveRuntimeError as exc:
        state.failed.append(f"(top level) {exc}")
    except Exception as exc:
        state.failed.append(f"(top level) {type(exc).__name__} {exc}")
        state.crashed = True
    if expect_failure:  # every test is to fail, and none by a crash
        ok = state.passed == 0 and not state.crashed
        return FileResult(str(path), ok, state.passed, state.failed)
    return FileResult(str(path), not state.failed, state.passed, state.failed)


# Files of extensions Pochta does not implement (not counted in the main figure).
NOT_IMPLEMENTED = ("extensions/vnd.dovecot/", "plugins/")


def main(argv: list[str]) -> int:
    root = Path(argv[0]) / "tests"
    files = [Path(a) for a in argv[1:]] or sorted(root.rglob("*.svtest"))
    counts: Counter[str] = Counter()
    for path in files:
        rel = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
        group = "not implemented" if any(rel.startswith(p) for p in NOT_IMPLEMENTED) \
            else "implemented"
        res = run_file(path)
        counts[group + (" pass" if res.ok else " fail")] += 1
        status = "PASS" if res.ok else "FAIL"
        print(f"{status} {rel} ({res.passed} tests passed"
              f"{', ' + str(len(res.failed)) + ' failed' if res.failed else ''})"
              f"{': ' + res.error if res.error else ''}")
        for f in res.failed[:5]:
            print(f"     - {f}")
    for group in ("implemented", "not implemented"):
        ok, bad = counts[group + " pass"], counts[group + " fail"]
        print(f"{group}: {ok} of {ok + bad} files pass")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
