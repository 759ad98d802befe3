"""Sieve evaluator (RFC 5228 and extensions): a compiled script, a message, its envelope and
a context in; a list of actions out. No I/O.

Facts the evaluator cannot know (has the duplicate extension seen this id?) are asked
for by raising ``NeedLookup(key)``: the caller finds the answer, puts it in
``Context.known`` and runs the script again. Runs are deterministic and have no effects
until the caller acts on the ``Result``, so a rerun is safe (and rare: one per
``duplicate`` test at most).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import email
import email.message
import email.policy
import hashlib
import re
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.utils import formataddr, getaddresses, parsedate_to_datetime
from functools import lru_cache
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from ..mail.addresses import normalize_login
from .address import redirect_address
from .compiler import (
    EXTENSIONS,
    MAX_PART_LOOPS,
    NOT_BY_IHAVE,
    Limits,
    Script,
    folder_name_problem,
    header_name_problem,
    strings_of,
)
from .grammar import Command, Test
from .message import MimePart, SieveMessage, header_params

# --- inputs and outputs ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SieveEnvelope:
    sender: str  # "" for the null reverse-path
    recipient: str  # the address this delivery is for (envelope "to")
    auth: str | None = None  # the authenticated submitter, if any


@dataclass(slots=True)
class Context:
    user: str  # the account's own address
    addresses: frozenset[str] = frozenset()  # every address of the account (vacation)
    now: float = 0.0
    tz_offset_minutes: int = 0  # the zone date tests use without :zone
    environment: dict[str, str] = field(default_factory=dict)  # RFC 5183 items
    spam_score: int | None = None  # RFC 5235: 1..10, None = not tested
    spam_percent: int | None = None  # 0..100 (spamtestplus)
    virus_score: int | None = None  # 1..5, None = not tested
    mailboxes: frozenset[str] | None = None  # the account's mailbox names (mailbox ext)
    known: dict[str, bool] = field(default_factory=dict)  # answers to NeedLookup
    scripts: dict[tuple[str, str], Script | None] = field(default_factory=dict)  # includes
    limits: Limits = field(default_factory=Limits)
    subaddress_separator: str = "+"
    # commands and tests of a test-only extension: name -> fn(interpreter, node)
    handlers: dict[str, Callable[[Interpreter, Command | Test], object]] = field(
        default_factory=dict)
    extensions: frozenset[str] = EXTENSIONS  # what ihave finds (RFC 5463)
    # RFC 6154 attribute (lower case) -> the account's mailbox with it (special-use)
    special_use: dict[str, str] = field(default_factory=dict)
    # answers to NeedLookup("metadata:<mailbox>") ("" = the server): entry -> value;
    # None: no such mailbox (RFC 5490 §3)
    metadata: dict[str, dict[str, str] | None] = field(default_factory=dict)
    # answers to NeedLookup("list:<name>"): the list's members, None: no such list
    lists: dict[str, frozenset[str] | None] = field(default_factory=dict)
    flags: frozenset[str] = frozenset()  # imapsieve (RFC 6785 §3.3): the message's flags
    protected_headers: frozenset[str] = frozenset()  # lower case; editheader leaves them


@dataclass(frozen=True, slots=True)
class Store:
    """keep / fileinto: file the message into ``mailbox`` with ``flags``."""

    mailbox: str
    flags: frozenset[str] = frozenset()
    create: bool = False
    implicit: bool = False
    special_use: str | None = None  # RFC 8579: the mailbox with this attribute instead
    keep: bool = False  # the keep command (not fileinto "INBOX"): how a result names it
    # the message as it was when the action ran, when editheader had changed it by then
    # (RFC 5293 §7: actions use the current header); None: as received
    data: bytes | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Redirect:
    address: str
    copy: bool = False
    data: bytes | None = field(default=None, compare=False, repr=False)  # as Store.data


@dataclass(frozen=True, slots=True)
class Reject:
    reason: str
    extended: bool = False  # ereject (RFC 5429 §2.1)


@dataclass(frozen=True, slots=True)
class Discard:
    pass


@dataclass(frozen=True, slots=True)
class Vacation:
    reason: str
    seconds: int
    subject: str | None = None
    from_: str | None = None
    addresses: tuple[str, ...] = ()
    mime: bool = False
    handle: str = ""


@dataclass(frozen=True, slots=True)
class Notify:
    method: str
    from_: str | None = None
    importance: str = "2"
    options: tuple[str, ...] = ()
    message: str | None = None


Action = Store | Redirect | Reject | Discard | Vacation | Notify


@dataclass(slots=True)
class Result:
    actions: list[Action]
    message: SieveMessage  # with the header edits (RFC 5293) applied
    track: list[tuple[str, float]] = field(default_factory=list)  # duplicate ids to record
    warnings: list[str] = field(default_factory=list)  # not fatal, for the log

    def describe(self) -> list[str]:
        out = []
        for a in self.actions:
            if isinstance(a, Store):
                flags = f" flags={' '.join(sorted(a.flags))}" if a.flags else ""
                what = "keep" if a.mailbox == "INBOX" else "fileinto"
                out.append(f"{what} {a.mailbox}{flags}{' (implicit)' if a.implicit else ''}")
            elif isinstance(a, Redirect):
                out.append(f"redirect {a.address}{' :copy' if a.copy else ''}")
            elif isinstance(a, Reject):
                out.append(f"{'ereject' if a.extended else 'reject'} {a.reason!r}")
            elif isinstance(a, Discard):
                out.append("discard")
            elif isinstance(a, Vacation):
                out.append(f"vacation every {a.seconds}s: {a.reason[:60]!r}")
            else:
                out.append(f"notify {a.method}")
        if self.message.edited:
            out.append("(header edited)")
        return out


def merge_actions(actions: Iterable[Action]) -> list[Action]:
    """One copy per mailbox (RFC 5228 §2.10.3: keep and fileinto "INBOX" are one; the
    last flags win, a keep names it), one redirect per address, one reject (the first:
    a later script of a sequence cannot take it back)."""
    merged: list[Action] = []
    boxes: dict[str, int] = {}
    targets: set[str] = set()
    rejected = False
    for a in actions:
        if isinstance(a, Store):
            key = a.mailbox.upper() if a.mailbox.upper() == "INBOX" else a.mailbox
            if key in boxes:
                old = merged[boxes[key]]
                assert isinstance(old, Store)
                merged[boxes[key]] = Store(old.mailbox, a.flags if not a.implicit
                                           else old.flags, old.create or a.create,
                                           special_use=old.special_use,
                                           keep=old.keep or a.keep, data=old.data)
                continue
            boxes[key] = len(merged)
        elif isinstance(a, Redirect):
            key = normalize_login(a.address)
            if key in targets:
                continue
            targets.add(key)
        elif isinstance(a, Reject):
            if rejected:
                continue
            rejected = True
        merged.append(a)
    return merged


class SieveRuntimeError(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


class NeedLookup(Exception):
    """The run needs ``Context.known[key]`` (is this duplicate id already recorded?),
    ``Context.metadata[mailbox]`` (key ``metadata:<mailbox>``) or ``Context.lists[name]``
    (key ``list:<name>``)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class _Stop(Exception):
    pass


class _Return(Exception):
    pass


class _Break(Exception):
    def __init__(self, name: str | None) -> None:
        super().__init__(name)
        self.name = name




# --- comparators and match types (RFC 5228 §2.7, RFC 4790, RFC 5231) -----------------------

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _casemap(s: str) -> str:
    return s.translate(_ASCII_LOWER)


@lru_cache(maxsize=4096)
def _folded_set(keys: tuple[str, ...]) -> frozenset[str]:
    return frozenset(_casemap(k) for k in keys)


def _title(c: str) -> str:
    t = c.title()
    return t if len(t) == 1 else c  # the simple mapping: one character stays one


@lru_cache(maxsize=4096)
def _unicode_casemap(s: str) -> str:
    """i;unicode-casemap (RFC 5051 §2): each character titlecased, then the whole string
    in Unicode normalization form KD, so "TÈST", "tèst" and "te\u0300st" compare equal."""
    return unicodedata.normalize("NFKD", "".join(_title(c) for c in s))


def _numeric(s: str) -> float:
    """i;ascii-numeric (RFC 4790 §9.1): the leading digits; none = positive infinity."""
    m = re.match(r"\d+", s)
    return float(int(m.group())) if m else float("inf")


@lru_cache(maxsize=4096)
def _wildcard(pattern: str, fold: bool | str) -> re.Pattern[str]:
    """:matches (RFC 5228 §2.7.1): * and ?, backslash quotes; groups for match variables."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "*":
            out.append("(.*?)")
        elif c == "?":
            out.append("(.)")
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL | _flags(fold))


def _flags(fold: bool | str) -> int:
    """i;ascii-casemap folds A-Z only (RFC 4790 §9.2); i;unicode-casemap ("unicode"),
    run on NFKD text, every case pair."""
    if fold == "unicode":
        return re.IGNORECASE
    return re.IGNORECASE | re.ASCII if fold else 0


@lru_cache(maxsize=1024)
def _regex(pattern: str, fold: bool | str) -> re.Pattern[str]:
    return re.compile(pattern, re.DOTALL | (re.IGNORECASE if fold else 0))


_RELATIONS: dict[str, Callable[[int], bool]] = {
    "gt": lambda c: c > 0, "ge": lambda c: c >= 0, "lt": lambda c: c < 0,
    "le": lambda c: c <= 0, "eq": lambda c: c == 0, "ne": lambda c: c != 0,
}


def _cmp(a: str, b: str, comparator: str) -> int:
    if comparator == "i;ascii-numeric":
        x, y = _numeric(a), _numeric(b)
    elif comparator == "i;ascii-casemap":
        x2, y2 = _casemap(a), _casemap(b)
        return (x2 > y2) - (x2 < y2)
    elif comparator == "i;unicode-casemap":
        x2, y2 = _unicode_casemap(a), _unicode_casemap(b)
        return (x2 > y2) - (x2 < y2)
    else:
        return (a > b) - (a < b)
    return (x > y) - (x < y)


@dataclass(frozen=True, slots=True)
class _Match:
    kind: str  # is, contains, matches, regex, value, count
    relation: str
    comparator: str

    @classmethod
    def of(cls, tags: dict[str, object]) -> _Match:
        comparator = str(tags.get("comparator", "i;ascii-casemap"))
        for kind in ("contains", "matches", "regex", "list"):
            if kind in tags:
                return cls(kind, "", comparator)
        for kind in ("value", "count"):
            if kind in tags:
                return cls(kind, str(tags[kind]).lower(), comparator)
        return cls("is", "", comparator)


# --- the evaluator --------------------------------------------------------------------------

_VAR = re.compile(r"\$\{([^{}]*)\}")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
# RFC 5293 §6: Received and Auto-Submitted are never deleted (a script may add its own);
# the Return-Path delivery writes and the redirect loop mark are never touched
_NO_DELETE = frozenset({"received", "auto-submitted"})
_NO_EDIT = frozenset({"return-path", "x-sieve-redirected-from"})
_HEADER_NAME = re.compile(r"[!-9;-~]+\Z")
MAX_VARIABLES = 512


_ESCAPES: dict[str, Callable[[str], str]] = {
    "quotewildcard": lambda c: "\\" + c if c in "*?\\" else c,
    "quoteregex": lambda c: "\\" + c if c in "\\^$.|?*+()[]{}" else c,
    # RFC 5435 §6: all but RFC 3986's unreserved characters, as UTF-8 octets
    "encodeurl": lambda c: quote(c, safe="-._~"),
}


def _truncate_utf8(value: str, limit: int) -> str:
    """``value`` cut to at most ``limit`` bytes of UTF-8, at a character boundary."""
    if len(value) * 4 <= limit:
        return value
    raw = value.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return value
    return raw[:limit].decode("utf-8", "ignore")


class _Frame:
    """One script's local state (RFC 6609: each included script has its own variables)."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.variables: dict[str, str] = {}
        self.globals: set[str] = set()
        self.uses_variables = "variables" in script.requires


class Interpreter:
    def __init__(self, message: SieveMessage, envelope: SieveEnvelope, ctx: Context) -> None:
        self.msg = message
        self.env = envelope
        self.ctx = ctx
        self.limits = ctx.limits
        self.actions: list[Action] = []
        self.implicit_keep = True
        self.flags: set[str] = set(ctx.flags)  # imap4flags internal variable
        self.global_vars: dict[str, str] = {}
        self.match_vars: list[str] = []
        self.track: list[tuple[str, float]] = []
        self.warnings: list[str] = []
        self.included_once: set[tuple[str, str]] = set()
        self.includes = 0
        self.redirects = 0
        self.edits = 0
        self.frame: _Frame | None = None
        self.part: int | None = None  # the current MIME part inside foreverypart
        self.loops: list[str | None] = []  # names of the foreverypart loops we are in
        self.deadline = time.monotonic() + self.limits.max_cpu_seconds

    # --- entry ----------------------------------------------------------------------------

    def run(self, script: Script) -> Result:
        with contextlib.suppress(_Stop):
            self._run_script(script, depth=0)
        return self._finish()

    def _run_script(self, script: Script, depth: int) -> None:
        outer = self.frame
        self.frame = _Frame(script)
        try:
            self._block(script.commands)
        except _Return:
            pass
        finally:
            self.frame = outer

    def _finish(self) -> Result:
        rejects = [a for a in self.actions if isinstance(a, Reject)]
        if rejects:
            others = [a for a in self.actions
                      if isinstance(a, (Store, Redirect, Vacation)) and not
                      (isinstance(a, Redirect) and a.copy)]
            if others:
                raise SieveRuntimeError(0, "reject cannot be combined with keep, fileinto, "
                                        "redirect or vacation (RFC 5429 §2.1)")
        actions = list(self.actions)
        if self.implicit_keep:
            actions.append(Store("INBOX", frozenset(self.flags), implicit=True,
                                 data=self._snapshot()))
        return Result(merge_actions(actions), self.msg, self.track, self.warnings)

    def _snapshot(self) -> bytes | None:
        """The message for an action taken now: None while it is as received."""
        return self.msg.render() if self.msg.edited else None

    def _add(self, action: Action, line: int) -> None:
        if len(self.actions) >= self.limits.max_actions:
            raise SieveRuntimeError(line, f"total number of actions exceeds policy limit "
                                    f"({self.limits.max_actions} per message)")
        self.actions.append(action)

    # --- commands -------------------------------------------------------------------------

    def _block(self, commands: list[Command]) -> None:
        """Run a block through its compiled form (``_compile_block``), built on first use
        and kept in the first command's ``extra`` (a command is in one block only)."""
        if not commands:
            return
        key = "run+variables" if self.frame is not None and self.frame.uses_variables else "run"
        memo = commands[0].extra.get(key)
        run = memo.fn if isinstance(memo, _Compiled) else None
        if run is None:
            run = _compile_block(commands, key != "run")
            commands[0].extra[key] = _Compiled(run)
        run(self)

    def _over_time(self, line: int) -> None:
        if time.monotonic() > self.deadline:
            raise SieveRuntimeError(line, f"the script ran longer than "
                                    f"{self.limits.max_cpu_seconds:g} seconds")

    def _command(self, cmd: Command) -> None:
        tags, pos = strings_of(cmd)
        name, line = cmd.name, cmd.line
        if name == "require":
            return
        if name == "stop":
            raise _Stop
        if name == "keep":
            self._add(Store("INBOX", self._flags_tag(tags), keep=True,
                            data=self._snapshot()), line)
            self.implicit_keep = False
        elif name == "discard":
            self.implicit_keep = False
        elif name == "fileinto":
            mailbox = self._s(pos[0])
            problem = folder_name_problem(mailbox)
            if problem is not None:
                raise SieveRuntimeError(line, f"fileinto: {problem}")
            self._add(Store(mailbox, self._flags_tag(tags), bool(tags.get("create")),
                            special_use=self._opt(tags, "specialuse"),
                            data=self._snapshot()), line)
            if not tags.get("copy"):
                self.implicit_keep = False
        elif name == "redirect":
            raw = self._s(pos[0])
            address = redirect_address(raw)
            if address is None:
                raise SieveRuntimeError(line, f"redirect: invalid address {raw.strip()!r}")
            self.redirects += 1
            if self.redirects > self.limits.max_redirects:
                raise SieveRuntimeError(line, f"number of redirect actions exceeds policy "
                                        f"limit ({self.limits.max_redirects} per message)")
            self._add(Redirect(address, bool(tags.get("copy")), self._snapshot()), line)
            if not tags.get("copy"):
                self.implicit_keep = False
        elif name in ("reject", "ereject"):
            if any(isinstance(a, Reject) for a in self.actions):
                raise SieveRuntimeError(line, "more than one reject")
            self._add(Reject(self._s(pos[0]), name == "ereject"), line)
            self.implicit_keep = False
        elif name in ("setflag", "addflag", "removeflag"):
            self._flag_command(name, pos)
        elif name == "set":
            self._set(tags, pos)
        elif name == "vacation":
            self._vacation(tags, pos, line)
        elif name == "notify":
            method = self._s(pos[0])
            self._notify_limit(line)
            if _mailto(method) is None:
                raise SieveRuntimeError(line, f"notify: unsupported or invalid method "
                                        f"{method!r} (only mailto: is supported)")
            self._add(Notify(
                method, self._opt(tags, "from"), self._opt(tags, "importance") or "2",
                tuple(self._l(tags.get("options", []))), self._opt(tags, "message")), line)
        elif name == "include":
            self._include(tags, pos, line)
        elif name == "return":
            raise _Return
        elif name == "global":
            assert self.frame is not None
            for var in self._l(pos[0]):
                if not _VAR_NAME.match(var):
                    raise SieveRuntimeError(line, f"global: invalid variable name {var!r}")
                self.frame.globals.add(var.lower())
        elif name == "error":  # RFC 5463 §5: the script fails with this message
            raise SieveRuntimeError(line, f"error: {self._s(pos[0])}")
        elif name == "foreverypart":
            self._foreverypart(cmd, tags)
        elif name == "break":
            raise _Break(self._opt(tags, "name"))
        elif name == "extracttext":
            self._extracttext(tags, pos)
        elif name == "replace":
            self._replace(tags, pos, line)
        elif name == "enclose":
            self._enclose(tags, pos, line)
        elif name == "addheader":
            self._addheader(tags, pos, line)
        elif name == "deleteheader":
            self._deleteheader(tags, pos, line)
        elif name in self.ctx.handlers:
            self.ctx.handlers[name](self, cmd)
        else:  # pragma: no cover - the checker knows every command
            raise SieveRuntimeError(line, f"unknown command {name}")

    # --- MIME (RFC 5703) ---------------------------------------------------------------

    def _foreverypart(self, cmd: Command, tags: dict[str, object]) -> None:
        """§3: the parts below the current one, depth first; at the top level the
        message itself comes first (as in Pigeonhole)."""
        if len(self.loops) >= MAX_PART_LOOPS:
            raise SieveRuntimeError(cmd.line, f"foreverypart nested deeper than "
                                    f"{MAX_PART_LOOPS}")
        parts = self.msg.mime_parts()
        start, end = (0, len(parts)) if self.part is None else (
            self.part + 1, parts[self.part].end)
        name = self._opt(tags, "name")
        saved = self.part
        self.loops.append(name)
        try:
            for i in range(start, end):
                self.part = i
                try:
                    assert cmd.block is not None
                    self._block(cmd.block)
                except _Break as b:
                    if b.name is None or b.name == name:
                        break
                    raise
        finally:
            self.part = saved
            self.loops.pop()

    def _current_part(self) -> MimePart:
        return self.msg.mime_parts()[self.part or 0]

    def _extracttext(self, tags: dict[str, object], pos: list[object]) -> None:
        """§7: the text of the current part (empty unless it is text/*)."""
        part = self._current_part()
        text = part.text or ""
        if part.content_type == "text/html":  # as body :text does (RFC 5173 §5.2)
            text = re.sub(r"<[^>]*>", "", text)
        first = tags.get("first")
        if isinstance(first, int):
            text = text[:first]
        self._set({k: v for k, v in tags.items() if k != "first"}, [pos[0], text],
                  literal=True)

    def _replace(self, tags: dict[str, object], pos: list[object], line: int) -> None:
        """§5: the current part (or the whole message) becomes ``text``."""
        text = self._s(pos[0])
        if tags.get("mime"):
            new = email.message_from_bytes(text.replace("\r\n", "\n").encode("utf-8"),
                                           policy=email.policy.compat32)
        else:
            new = email.message.Message()
            new["Content-Type"] = 'text/plain; charset="utf-8"'
            new["Content-Transfer-Encoding"] = "8bit"
            new.set_payload(text.encode("utf-8"))
        if self.part is None or self.part == 0:
            root = copy.deepcopy(self.msg.parsed())
            for header in ("Content-Type", "Content-Transfer-Encoding",
                           "Content-Disposition", "MIME-Version"):
                del root[header]
            for k, v in new.items():
                root[k] = v
            root.set_payload(new.get_payload())
            if "subject" in tags:
                del root["Subject"]
                root["Subject"] = self._s(tags["subject"])
            if "from" in tags:
                del root["From"]
                root["From"] = self._s(tags["from"])
        else:
            root = copy.deepcopy(self.msg.parsed())
            target = list(root.walk())[self.part]
            for k in list(target.keys()):
                del target[k]
            for k, v in new.items():
                target[k] = v
            target.set_payload(new.get_payload())
        self._edit(line)
        self.msg = self.msg.replaced(_as_bytes(root))

    def _enclose(self, tags: dict[str, object], pos: list[object], line: int) -> None:
        """§6: a new message whose first part is ``text`` and second the message."""
        original = self.msg.render()
        boundary = "----=_Enclose_" + hashlib.sha256(original).hexdigest()[:24]
        subject = self._opt(tags, "subject")
        if subject is None:
            subject = (self.msg.headers("subject") or [""])[0]
        keep = {"from", "to", "cc", "date", "message-id", "return-path", "received"}
        kept = [f"{n}:{raw}" for lower, n, raw in self.msg.fields if lower in keep]
        extra = [h for h in self._l(tags.get("headers", [])) if ":" in h]
        head = "\r\n".join([*kept, *extra, f"Subject: {subject}", "MIME-Version: 1.0",
                             f'Content-Type: multipart/mixed; boundary="{boundary}"'])
        body = (f"\r\n\r\n--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                f"{self._s(pos[0])}\r\n--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n")
        self._edit(line)
        self.msg = self.msg.replaced(head.encode("utf-8", "replace") + body.encode(
            "utf-8", "replace") + original + f"\r\n--{boundary}--\r\n".encode())

    def _mime_values(self, header: str, tags: dict[str, object]) -> list[str]:
        """Values of ``header`` in the current part (and its descendants with
        :anychild), reduced by :type/:subtype/:contenttype/:param (RFC 5703 §4.2)."""
        parts = self.msg.mime_parts()
        here = self.part or 0
        scope = parts[here:parts[here].end] if tags.get("anychild") else [parts[here]]
        out: list[str] = []
        for part in scope:
            for value in part.headers(header):
                main, params = header_params(value)
                if "type" in tags:
                    out.append(main.partition("/")[0])
                elif "subtype" in tags:
                    out.append(main.partition("/")[2])
                elif "contenttype" in tags:
                    out.append(main)
                elif "param" in tags:
                    out.extend(params[p.lower()] for p in self._l(tags["param"])
                               if p.lower() in params)
                else:
                    out.append(value)
        return out

    def _flags_tag(self, tags: dict[str, object]) -> frozenset[str]:
        if "flags" in tags:
            return frozenset(_split_flags(self._l(tags["flags"])))
        return frozenset(self.flags)

    def _flag_command(self, name: str, pos: list[object]) -> None:
        """RFC 5232 §5: flags are a space-separated set, first occurrence kept in order."""
        var = pos[0]
        new = _split_flags(self._l(pos[1]))
        current = sorted(self.flags) if var is None else _split_flags([self._get_var(str(var))])
        if name == "setflag":
            current = new
        elif name == "addflag":
            current = _split_flags(current + new)
        else:
            lowered = {f.lower() for f in new}
            current = [f for f in current if f.lower() not in lowered]
        if var is None:
            self.flags = set(current)
        else:
            self._set_var(str(var), " ".join(current))

    def _set(self, tags: dict[str, object], pos: list[object], literal: bool = False
             ) -> None:
        value = str(pos[1]) if literal else self._s(pos[1])
        # RFC 5229 §4.1: modifiers apply in order of precedence, highest first
        for mod in ("lower", "upper", "lowerfirst", "upperfirst", "quotewildcard",
                    "quoteregex", "encodeurl", "length"):
            if mod not in tags:
                continue
            if mod == "lower":
                value = value.lower()
            elif mod == "upper":
                value = value.upper()
            elif mod == "lowerfirst":
                value = value[:1].lower() + value[1:]
            elif mod == "upperfirst":
                value = value[:1].upper() + value[1:]
            elif mod in ("quotewildcard", "quoteregex", "encodeurl"):
                # each character escaped on its own, so the size limit cuts between
                # escapes, never inside one
                value = self._escape(value, _ESCAPES[mod])
            else:
                value = str(len(value))
        self._set_var(str(pos[0]), value)

    def _notify_limit(self, line: int) -> None:
        limit = self.limits.max_notifications
        if limit == 0:  # the limit changed after the script was compiled
            raise SieveRuntimeError(line, "local policy prohibits the use of a notify action")
        if sum(isinstance(a, Notify) for a in self.actions) >= limit:
            raise SieveRuntimeError(line, f"number of notify actions exceeds policy limit "
                                    f"({limit} per message)")

    def _escape(self, value: str, escape: Callable[[str], str]) -> str:
        room = self.limits.max_variable_size
        out = []
        for ch in value:
            unit = escape(ch)
            room -= len(unit.encode("utf-8", "surrogatepass"))
            if room < 0:
                break
            out.append(unit)
        return "".join(out)

    def _vacation(self, tags: dict[str, object], pos: list[object], line: int) -> None:
        if any(isinstance(a, Vacation) for a in self.actions):
            raise SieveRuntimeError(line, "more than one vacation action")
        if "seconds" in tags:
            seconds = int(str(tags["seconds"]))
        else:
            seconds = int(str(tags.get("days", 7))) * 86400
        reason = self._s(pos[0])
        handle = self._opt(tags, "handle")
        if handle is None:
            # RFC 5230 §4.2: without :handle, the reason, subject and from identify it
            handle = hashlib.sha256("\x00".join(
                (reason, self._opt(tags, "subject") or "", self._opt(tags, "from") or "")
            ).encode()).hexdigest()[:32]
        self._add(Vacation(
            reason, seconds, self._opt(tags, "subject"), self._opt(tags, "from"),
            tuple(self._l(tags.get("addresses", []))), bool(tags.get("mime")), handle), line)

    def _include(self, tags: dict[str, object], pos: list[object], line: int) -> None:
        location = "global" if tags.get("global") else "personal"
        key = (location, str(pos[0]))
        if tags.get("once") and key in self.included_once:
            return
        self.included_once.add(key)
        script = self.ctx.scripts.get(key)
        if script is None:
            if tags.get("optional"):
                return
            raise SieveRuntimeError(line, f"include: {location} script {key[1]!r} not found")
        self.includes += 1
        if self.includes > self.limits.max_includes:
            raise SieveRuntimeError(line, f"too many includes: the limit is "
                                    f"{self.limits.max_includes}")
        depth = self._depth + 1
        if depth > self.limits.max_include_depth:
            raise SieveRuntimeError(line, f"include nested deeper than "
                                    f"{self.limits.max_include_depth} (an include loop?)")
        self._depth = depth
        try:
            self._run_script(script, depth)
        finally:
            self._depth = depth - 1

    _depth = 0

    def _addheader(self, tags: dict[str, object], pos: list[object], line: int) -> None:
        name, value = self._s(pos[0]), self._s(pos[1])
        if not _HEADER_NAME.match(name):
            raise SieveRuntimeError(line, f"addheader: {header_name_problem(name)}")
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > self.limits.max_header_value:
            raise SieveRuntimeError(line, f"addheader: value {value[:40]!r}... is too large "
                                    f"({size} bytes, the limit is "
                                    f"{self.limits.max_header_value})")
        if any(c in value for c in "\r\n\x00"):
            # RFC 5322 §2.2.3: a line break before white space is folding (unfold it);
            # a trailing one (a text: value) goes, any other becomes a space
            value = re.sub(r"\r?\n(?=[ \t])", "", value.rstrip("\r\n"))
            value = re.sub(r"[\r\n\x00]+", " ", value)
        self._edit(line)
        if self._protected(name, delete=False):
            return
        self.msg.add_header(name, value, bool(tags.get("last")))

    def _deleteheader(self, tags: dict[str, object], pos: list[object], line: int) -> None:
        name = self._s(pos[0])
        if not _HEADER_NAME.match(name):
            raise SieveRuntimeError(line, f"deleteheader: {header_name_problem(name)}")
        self._edit(line)
        if self._protected(name, delete=True):
            return
        values = self.msg.headers(name)
        keep = [True] * len(values)
        index = tags.get("index")
        candidates = list(range(len(values)))
        if isinstance(index, int):
            i = len(values) - index if tags.get("last") else index - 1
            candidates = [i] if 0 <= i < len(values) else []
        patterns = None if pos[1] is None else self._l(pos[1])
        match = _Match.of(tags)
        for i in candidates:
            if patterns is None or self._match([values[i]], patterns, match, set_vars=False):
                keep[i] = False
        if not all(keep):
            self.msg.delete_headers(name, keep)

    def _protected(self, name: str, delete: bool) -> bool:
        """Fields editheader leaves alone (the edit is silently skipped), and the ones
        the admin protects ([sieve] protected_headers: a filter's verdict a script must
        not forge or remove); Subject never is."""
        lower = name.lower()
        if lower in _NO_EDIT or (delete and lower in _NO_DELETE):
            return True
        return lower in self.ctx.protected_headers and lower != "subject"

    def _edit(self, line: int) -> None:
        self.edits += 1
        if self.edits > self.limits.max_header_edits:
            raise SieveRuntimeError(line, f"too many header edits: the limit is "
                                    f"{self.limits.max_header_edits}")

    # --- variables (RFC 5229) -------------------------------------------------------------

    def _s(self, value: object) -> str:
        s = str(value)
        if self.frame is not None and self.frame.uses_variables and "${" in s:
            return self._expand(s)
        return s

    def _opt(self, tags: dict[str, object], name: str) -> str | None:
        v = tags.get(name)
        return None if v is None else self._s(v)

    def _l(self, value: object) -> list[str]:
        items: list[str] = value if isinstance(value, list) else [str(value)]
        if self.frame is None or not self.frame.uses_variables:
            return items  # constants: the checker's list itself (never modified)
        return [self._s(v) for v in items]

    def _expand(self, s: str) -> str:
        def repl(m: re.Match[str]) -> str:
            name = m.group(1)
            if name.isdigit():
                n = int(name)
                return self.match_vars[n] if n < len(self.match_vars) else ""
            if not _VAR_NAME.match(name):
                return m.group(0)
            return self._get_var(name)

        return _VAR.sub(repl, s)

    def _get_var(self, name: str) -> str:
        lower = name.lower()
        assert self.frame is not None
        if lower.startswith("global."):
            return self.global_vars.get(lower[7:], "")
        if lower in self.frame.globals:
            return self.global_vars.get(lower, "")
        if lower.startswith("env."):
            return self.ctx.environment.get(lower[4:], "")
        return self.frame.variables.get(lower, "")

    def _set_var(self, name: str, value: str) -> None:
        lower = name.lower()
        value = _truncate_utf8(value, self.limits.max_variable_size)
        assert self.frame is not None
        if lower.startswith("global."):
            self.global_vars[lower[7:]] = value
        elif lower in self.frame.globals:
            self.global_vars[lower] = value
        else:
            if lower not in self.frame.variables and len(self.frame.variables) >= MAX_VARIABLES:
                raise SieveRuntimeError(0, f"more than {MAX_VARIABLES} variables")
            self.frame.variables[lower] = value

    # --- tests ----------------------------------------------------------------------------

    def _test(self, test: Test) -> bool:
        """Any test, by its name and arguments (compiled blocks call it for the tests
        ``_compile_test`` leaves to it)."""
        self._over_time(test.line)
        name = test.name
        if name == "true":
            return True
        if name == "false":
            return False
        if name == "not":
            return not self._test(test.tests[0])
        if name == "allof":
            return all(self._test(t) for t in test.tests)
        if name == "anyof":
            return any(self._test(t) for t in test.tests)
        tags, pos = strings_of(test)
        match = test.extra.get("match")
        if not isinstance(match, _Match):
            match = test.extra["match"] = _Match.of(tags)
        if name == "header":
            if tags.get("mime"):
                values = [v for h in self._l(pos[0]) for v in self._mime_values(h, tags)]
                return self._match(values, self._l(pos[1]), match)
            values = [v for h in self._l(pos[0]) for v in self._indexed(self.msg.headers(h),
                                                                        tags)]
            return self._match(values, self._l(pos[1]), match)
        if name == "address":
            part = _part(tags)
            values = []
            for h in self._l(pos[0]):
                found = (self.msg.addresses(h) if not tags.get("mime") else
                         [a for _, a in getaddresses(self._mime_values(h, tags))])
                for a in self._indexed(found, tags):
                    p = self._address_part(a, part)
                    if p is not None:
                        values.append(p)
            return self._match(values, self._l(pos[1]), match)
        if name == "envelope":
            part = _part(tags)
            values = []
            for which in self._l(pos[0]):
                which = which.lower()
                addr = {"from": self.env.sender, "to": self.env.recipient,
                        "auth": self.env.auth}.get(which)
                if addr is None:
                    continue
                p = "" if addr == "" and part != "detail" else self._address_part(addr, part)
                if p is not None:
                    values.append(p)
            return self._match(values, self._l(pos[1]), match)
        if name == "exists":
            if tags.get("mime"):
                return all(self._mime_values(h, tags) for h in self._l(pos[0]))
            return all(self.msg.headers(h) for h in self._l(pos[0]))
        if name == "ihave":
            return all(e in self.ctx.extensions and e not in NOT_BY_IHAVE
                       for e in self._l(pos[0]))
        if name == "specialuse_exists":
            uses = [u.lower() for u in self._l(pos[1])]
            if pos[0] is None:
                return all(u in self.ctx.special_use for u in uses)
            box = _mailbox_key(self._s(pos[0]))
            return all(_mailbox_key(self.ctx.special_use.get(u, "\x00")) == box for u in uses)
        if name == "valid_ext_list":
            return all(self._list(n) is not None for n in self._l(pos[0]))
        if name == "size":
            limit = int(str(pos[0]))
            return self.msg.size > limit if "over" in tags else self.msg.size < limit
        if name == "body":
            if "raw" in tags:
                raw = self.msg.raw_body
                bodies = [raw.decode("utf-8", "replace")] if raw else []
            elif "content" in tags:
                bodies = self.msg.body_parts(tuple(self._l(tags["content"])))
            else:
                bodies = self.msg.body_parts(("text",), as_text=True)
            # RFC 5173 §6: the body test sets no match variables
            return self._match(bodies, self._l(pos[0]), match, set_vars=False)
        if name == "string":
            values = self._l(pos[0])
            if match.kind == "count":
                values = [v for v in values if v]
            return self._match(values, self._l(pos[1]), match)
        if name == "hasflag":
            if pos[0] is None:
                flags = sorted(self.flags)
            else:
                flags = _split_flags([self._get_var(v) for v in self._l(pos[0])])
            return self._match(flags, _split_flags(self._l(pos[1])), match)
        if name in ("date", "currentdate"):
            return self._date(name, tags, pos, match)
        if name == "mailboxexists":
            boxes = self.ctx.mailboxes or frozenset()
            return all(_mailbox_key(b) in boxes for b in self._l(pos[0]))
        if name in ("metadata", "servermetadata", "metadataexists", "servermetadataexists"):
            return self._metadata(name, pos, match)
        if name == "duplicate":
            return self._duplicate(tags)
        if name == "valid_notify_method":
            return all(_mailto(u) is not None for u in self._l(pos[0]))
        if name == "notify_method_capability":
            if _mailto(self._s(pos[0])) is None:
                return False
            if self._s(pos[1]).lower() != "online":
                return False
            return self._match(["maybe"], self._l(pos[2]), match)
        if name == "environment":
            item = self._s(pos[0]).lower()
            if item not in self.ctx.environment:
                return False
            return self._match([self.ctx.environment[item]], self._l(pos[1]), match)
        if name == "spamtest":
            if "percent" in tags:
                value = "0" if self.ctx.spam_percent is None else str(self.ctx.spam_percent)
            else:
                value = "0" if self.ctx.spam_score is None else str(self.ctx.spam_score)
            return self._match([value], [self._s(pos[0])], match)
        if name == "virustest":
            value = "0" if self.ctx.virus_score is None else str(self.ctx.virus_score)
            return self._match([value], [self._s(pos[0])], match)
        if name in self.ctx.handlers:
            return bool(self.ctx.handlers[name](self, test))
        raise SieveRuntimeError(test.line, f"unknown test {name}")  # pragma: no cover

    def _metadata(self, name: str, pos: list[object], match: _Match) -> bool:
        """RFC 5490 §3-§4: IMAP METADATA entries (RFC 5464) of a mailbox or the server,
        as the account sees them: a missing entry or mailbox is false."""
        server = name.startswith("server")
        mailbox = "" if server else _mailbox_key(self._s(pos[0]))
        key = "metadata:" + mailbox
        if mailbox not in self.ctx.metadata:
            raise NeedLookup(key)
        entries = self.ctx.metadata[mailbox]
        if entries is None:
            return False
        rest = pos if server else pos[1:]
        if name.endswith("exists"):
            return all(e.lower() in entries for e in self._l(rest[0]))
        value = entries.get(self._s(rest[0]).lower())
        if value is None:
            return False
        return self._match([value], self._l(rest[1]), match)

    def _list(self, name: str) -> frozenset[str] | None:
        """RFC 6134: the members of an external list (lower case); None: no such list."""
        if name not in self.ctx.lists:
            raise NeedLookup("list:" + name)
        return self.ctx.lists[name]

    def _in_list(self, value: str, names: list[str]) -> bool:
        """An address or string is in a list when it is a member, or its domain is
        (a member ``@domain``)."""
        v = value.strip().lower()
        domain = "@" + v.rpartition("@")[2] if "@" in v else None
        for n in names:
            members = self._list(n)
            if members and (v in members or (domain is not None and domain in members)):
                return True
        return False

    @staticmethod
    def _indexed(values: list[str], tags: dict[str, object]) -> list[str]:
        index = tags.get("index")
        if not isinstance(index, int):
            return values
        i = len(values) - index if tags.get("last") else index - 1
        return [values[i]] if 0 <= i < len(values) else []

    def _address_part(self, address: str, part: str) -> str | None:
        return _address_part(address, part, self.ctx.subaddress_separator)

    def _duplicate(self, tags: dict[str, object]) -> bool:
        if "uniqueid" in tags:
            unique = self._s(tags["uniqueid"])
        else:
            header = self._s(tags.get("header", "Message-ID"))
            values = self.msg.headers(header)
            if not values:
                return False
            unique = values[0].strip()
        handle = self._opt(tags, "handle") or ""
        key = "dup:" + hashlib.sha256(f"{handle}\x00{unique}".encode()).hexdigest()
        seconds = float(str(tags.get("seconds", 7 * 86400)))
        if key not in self.ctx.known:
            raise NeedLookup(key)
        if not any(k == key for k, _ in self.track):
            self.track.append((key, seconds))
        return self.ctx.known[key]

    def _date(self, name: str, tags: dict[str, object], pos: list[object],
              match: _Match) -> bool:
        zone = tags.get("zone")
        if name == "currentdate":
            when = dt.datetime.fromtimestamp(self.ctx.now, dt.UTC)
            part, keys = self._s(pos[0]), self._l(pos[1])
            candidates = [when]
        else:
            part, keys = self._s(pos[1]), self._l(pos[2])
            candidates = []
            header = self._s(pos[0]).lower()
            for value in self._indexed(self.msg.headers(header), tags):
                if header == "received":  # RFC 5260 §4.1: the date after the last ";"
                    value = value.rpartition(";")[2]
                try:
                    parsed = parsedate_to_datetime(value)
                except (TypeError, ValueError, IndexError):
                    continue
                if parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=dt.UTC)
                candidates.append(parsed)
            if not candidates and match.kind != "count":
                return False  # (:count compares 0, RFC 5260 §4)
        values: list[str] = []
        for when in candidates:
            if zone is not None:
                when = when.astimezone(_zone(self._s(zone)))
            elif not tags.get("originalzone"):
                when = when.astimezone(dt.timezone(dt.timedelta(
                    minutes=self.ctx.tz_offset_minutes)))
            got = _date_part(when, part.lower())
            if got is None:
                return False
            values.append(got)
        return self._match(values, keys, match)

    # --- matching -------------------------------------------------------------------------

    def _match(self, values: list[str], keys: list[str], m: _Match,
               set_vars: bool = True) -> bool:
        comparator = m.comparator
        if m.kind == "list":
            for v in values:
                if self._in_list(v, keys):
                    # RFC 6134 §2.4: ${0} is the value found in the list
                    if set_vars and self.frame is not None and self.frame.uses_variables:
                        self.match_vars = [v]
                    return True
            return False
        if m.kind == "count":
            count = str(len(values))
            rel = _RELATIONS[m.relation]
            return any(rel(_cmp(count, k, comparator)) for k in keys)
        if m.kind == "value":
            rel = _RELATIONS[m.relation]
            return any(rel(_cmp(v, k, comparator)) for v in values for k in keys)
        fold: bool | str = comparator == "i;ascii-casemap"
        if comparator == "i;unicode-casemap":
            if m.kind in ("is", "contains"):
                values = [_unicode_casemap(v) for v in values]
                keys = [_unicode_casemap(k) for k in keys]
            else:  # patterns: case-blind matching of the decomposed forms
                fold = "unicode"
                values = [unicodedata.normalize("NFKD", v) for v in values]
                keys = [unicodedata.normalize("NFKD", k) for k in keys]
        if m.kind == "is":
            if comparator == "i;ascii-numeric":
                return any(_cmp(v, k, comparator) == 0 for v in values for k in keys)
            if fold:
                lowered = _folded_set(tuple(keys))
                return any(_casemap(v) in lowered for v in values)
            return any(v in keys for v in values)
        if m.kind == "contains":
            if fold:
                lk = _folded_set(tuple(keys))
                return any(k in lv for lv in map(_casemap, values) for k in lk)
            return any(k in v for v in values for k in keys)
        for k in keys:
            if m.kind == "matches":
                pattern = _wildcard(k, fold)
            else:
                try:
                    pattern = _regex(k, fold)
                except re.error as err:
                    # draft-ietf-sieve-regex §3: a bad pattern made at run time is an
                    # error to report; the test stays false and the script goes on
                    warning = f"invalid regular expression {k!r} ({err}): the test is false"
                    if warning not in self.warnings:
                        self.warnings.append(warning)
                    continue
            for v in values:
                found = pattern.match(v) if m.kind == "matches" else pattern.search(v)
                if found is not None:
                    if set_vars and self.frame is not None and self.frame.uses_variables:
                        # RFC 5229 §3.2: ${1}..${9} at least; higher ones MAY be
                        # supported, and a pattern with more groups expects them
                        groups = [found.group(0)] + [g or "" for g in found.groups()]
                        if fold == "unicode":  # composed again, as the message had them
                            groups = [unicodedata.normalize("NFC", g) for g in groups]
                        self.match_vars = groups
                    return True
        return False


# --- compiled blocks and tests ----------------------------------------------------------
# A block is compiled on first use into one function (with its if/elsif/else chains and
# tests): a run then calls one closure per test, with the header names, folded keys and
# patterns ready, instead of dispatching on names and tags. The values a test looks at
# (decoded, folded, address parts, body texts) are kept with the message, for every test
# and every recipient. Consecutive rules that test the same values (ten ``header
# :contains "List-Id"`` rules, eight ``address :is "from"``) are one step: the values are
# fetched once, no rule holds when there are none, and :is keys are looked up at once.
# What is not compiled here runs through ``Interpreter._test`` and ``_command``. A script
# using variables compiles apart: a string with "${" is expanded at run time, and
# :matches/:regex set the match variables (``_match`` does both).

Step = Callable[["Interpreter"], None]
Check = Callable[["Interpreter"], bool]
Values = Callable[["Interpreter"], list[str]]
Pred = Callable[[list[str]], bool]


class _Compiled:
    """A compiled block in a node's ``extra``; pickled empty (a script pickled after a
    run, as Pigeonhole's binary save does, compiles again on its next run)."""

    __slots__ = ("fn",)

    def __init__(self, fn: Step | None) -> None:
        self.fn = fn

    def __reduce__(self) -> tuple[type[_Compiled], tuple[None]]:
        return _Compiled, (None,)


@dataclass(frozen=True, slots=True)
class _Keyed:
    """A test that is a function of values only: ``pred(values(it))``, where ``key``
    names the values (equal keys, equal values while the message is not edited), and
    ``index`` is :is's keys (folded as the values) when it is one."""

    key: tuple[object, ...]
    values: Values
    pred: Pred
    index: frozenset[str] | None = None

    def check(self) -> Check:
        values, pred = self.values, self.pred
        return lambda it: pred(values(it))


def _compile_block(commands: list[Command], variables: bool) -> Step:
    steps: list[Step] = []
    rules: list[tuple[_Keyed, Step, int]] = []  # consecutive rules on the same values

    def flush() -> None:
        if len(rules) == 1:
            keyed, body, line = rules[0]
            steps.append(_chain([(keyed.check(), body, line)]))
        elif rules:
            steps.append(_group(list(rules)))
        rules.clear()

    i = 0
    while i < len(commands):
        cmd = commands[i]
        i += 1
        if cmd.name == "require":
            continue
        if cmd.name != "if":
            flush()
            steps.append(_compile_command(cmd))
            continue
        arms = [_arm(cmd, variables)]
        while i < len(commands) and commands[i].name in ("elsif", "else"):
            arms.append(_arm(commands[i], variables))
            i += 1
        test = arms[0][0]
        if len(arms) == 1 and isinstance(test, _Keyed):
            if rules and rules[0][0].key != test.key:
                flush()
            rules.append((test, arms[0][1], arms[0][2]))
            continue
        flush()
        steps.append(_chain([(_check(t), body, line) for t, body, line in arms]))
    flush()
    if len(steps) == 1:
        return steps[0]
    run = tuple(steps)

    def block(it: Interpreter) -> None:
        for step in run:
            step(it)
    return block


def _arm(cmd: Command, variables: bool) -> tuple[_Keyed | Check | None, Step, int]:
    body = _compile_block(cmd.block or [], variables)
    if cmd.name == "else":
        return None, body, cmd.line
    test = cmd.tests[0]
    return _keyed(test, variables) or _compile_test(test, variables), body, cmd.line


def _check(test: _Keyed | Check | None) -> Check | None:
    return test.check() if isinstance(test, _Keyed) else test


def _chain(arms: list[tuple[Check | None, Step, int]]) -> Step:
    """if/elsif/else: the first arm whose test holds runs (the run's time limit is
    checked before each of these tests)."""
    if len(arms) == 1:
        check, body, line = arms[0]
        assert check is not None

        def if_(it: Interpreter) -> None:
            if time.monotonic() > it.deadline:
                it._over_time(line)
            if check(it):
                body(it)
        return if_

    def chain(it: Interpreter) -> None:
        for test, run, at in arms:
            if test is not None:
                if time.monotonic() > it.deadline:
                    it._over_time(at)
                if not test(it):
                    continue
            run(it)
            return
    return chain


def _group(rules: list[tuple[_Keyed, Step, int]]) -> Step:
    """Consecutive ``if`` rules (no elsif/else) whose tests look at the same values: the
    values once, none -> no rule holds (every test here is "some value matches"); the
    first rule that holds runs, then the rules after it one by one (its block may have
    edited the message)."""
    values = rules[0][0].values
    line = rules[0][2]
    singles = [_chain([(keyed.check(), body, at)]) for keyed, body, at in rules]
    first: dict[str, int] | None = None
    if all(keyed.index is not None for keyed, _, _ in rules):
        first = {}  # :is keys: the first rule each value makes true
        for n, (keyed, _, _) in enumerate(rules):
            for k in keyed.index or ():
                first.setdefault(k, n)
    preds = [(keyed.pred, at) for keyed, _, at in rules]

    def group(it: Interpreter) -> None:
        if time.monotonic() > it.deadline:
            it._over_time(line)
        got = values(it)
        if not got:
            return
        if first is not None:
            hits = [first[v] for v in got if v in first]
            if not hits:
                return
            n = min(hits)
        else:
            for n, (pred, at) in enumerate(preds):
                if n and time.monotonic() > it.deadline:
                    it._over_time(at)
                if pred(got):
                    break
            else:
                return
        rules[n][1](it)
        for single in singles[n + 1:]:
            single(it)
    return group


def _compile_command(cmd: Command) -> Step:
    if cmd.name == "stop":
        def stop(it: Interpreter) -> None:
            raise _Stop
        return stop
    return lambda it: it._command(cmd)


def _compile_test(test: Test, variables: bool) -> Check:
    name = test.name
    if name in ("true", "false"):
        value = name == "true"
        return lambda it: value
    if name == "not":
        inner = _compile_test(test.tests[0], variables)
        return lambda it: not inner(it)
    if name in ("allof", "anyof"):
        parts = tuple(_compile_test(t, variables) for t in test.tests)
        if name == "allof":
            return lambda it: all(part(it) for part in parts)
        return lambda it: any(part(it) for part in parts)
    keyed = _keyed(test, variables)
    if keyed is not None:
        return keyed.check()
    fast = _fast_test(test, variables)
    if fast is not None:
        return fast
    return lambda it: it._test(test)


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _constant(test: Test, variables: bool) -> tuple[dict[str, object], list[object]] | None:
    """The arguments of a header, address, envelope, exists, body or size test without
    :mime or :index whose strings need no expansion; None for other tests."""
    if test.name not in ("header", "address", "envelope", "exists", "body", "size"):
        return None
    tags, pos = strings_of(test)
    if "mime" in tags or "index" in tags:
        return None
    if variables and test.name != "size":
        strings = _strings(pos[0]) + (_strings(pos[1]) if len(pos) > 1 else [])
        if "content" in tags:
            strings += _strings(tags["content"])
        if any("${" in s for s in strings):
            return None  # expanded at run time
    return tags, pos


def _fast_test(test: Test, variables: bool) -> Check | None:
    """exists, size, and the tests ``_keyed`` leaves to ``Interpreter._match`` (other
    comparators, :count, :value, :list, match variables) with their values ready."""
    args = _constant(test, variables)
    if args is None:
        return None
    tags, pos = args
    name = test.name
    if name == "size":
        limit = int(str(pos[0]))
        if "over" in tags:
            return lambda it: it.msg.size > limit
        return lambda it: it.msg.size < limit
    names = [n.lower() for n in _strings(pos[0])]
    if name == "exists":
        if len(names) == 1:
            only = names[0]
            return lambda it: bool(it.msg.headers(only))
        return lambda it: all(it.msg.headers(h) for h in names)
    match, keys = _Match.of(tags), _strings(pos[-1])
    set_vars = variables and name != "body"  # RFC 5173 §6: body sets no match variables
    _, values = _values(name, tags, names, False)
    return lambda it: it._match(values(it), keys, match, set_vars)


def _keyed(test: Test, variables: bool) -> _Keyed | None:
    """header, address, envelope and body with a match ``_predicate`` decides."""
    if test.name not in ("header", "address", "envelope", "body"):
        return None
    args = _constant(test, variables)
    if args is None:
        return None
    tags, pos = args
    match = _Match.of(tags)
    set_vars = variables and test.name != "body"  # RFC 5173 §6
    predicate = _predicate(match, _strings(pos[-1]), set_vars)
    if predicate is None:
        return None
    fold, pred, index = predicate
    key, values = _values(test.name, tags, [n.lower() for n in _strings(pos[0])], fold)
    return _Keyed(key, values, pred, index)


def _values(name: str, tags: dict[str, object], names: list[str], fold: bool
            ) -> tuple[tuple[object, ...], Values]:
    """(a key naming the values a test looks at, what fetches them): kept with the
    message (``memo``, ``body_memo``) on first use, the envelope's computed."""
    if name == "envelope":
        return ("envelope", tuple(names), _part(tags), fold), _envelope_values(
            names, _part(tags), fold)
    key: tuple[object, ...]
    if name == "body":
        kind: object = "raw" if "raw" in tags else tuple(_strings(tags["content"])) if (
            "content" in tags) else "text"
        key = ("body", kind, fold)
    elif name == "header":
        key = ("header", tuple(names), fold)
    else:
        key = ("address", tuple(names), _part(tags), fold)
    fill = _filler(key)
    if name == "body":
        def body(it: Interpreter) -> list[str]:
            got = it.msg.body_memo.get(key)
            return got if got is not None else fill(it, key)
        return key, body
    if key[0] == "address" and key[2] in ("user", "detail"):
        def subaddress(it: Interpreter) -> list[str]:
            # the separator is the context's (it may change between runs)
            memo_key = (*key, it.ctx.subaddress_separator)
            got = it.msg.memo.get(memo_key)
            return got if got is not None else fill(it, memo_key)
        return key, subaddress

    def header(it: Interpreter) -> list[str]:
        got = it.msg.memo.get(key)
        return got if got is not None else fill(it, key)
    return key, header


def _filler(key: tuple[object, ...]) -> Callable[[Interpreter, tuple[object, ...]], list[str]]:
    """What computes the values of a key (see ``_values``) and keeps them, by
    ``memo_key``."""
    kind, fold = key[0], key[-1]

    def fill(it: Interpreter, memo_key: tuple[object, ...]) -> list[str]:
        msg = it.msg
        values: list[str]
        if kind == "body":
            what = key[1]
            if what == "raw":
                values = [msg.raw_body.decode("utf-8", "replace")] if msg.raw_body else []
            elif what == "text":
                values = msg.body_parts(("text",), as_text=True)
            else:
                assert isinstance(what, tuple)
                values = msg.body_parts(what)
        elif kind == "header":
            names = key[1]
            assert isinstance(names, tuple)
            values = [v for n in names for v in msg.headers(n)]
        else:
            names, part = key[1], key[2]
            assert isinstance(names, tuple) and isinstance(part, str)
            sep = it.ctx.subaddress_separator
            values = [p for n in names for a in msg.addresses(n)
                      if (p := _address_part(a, part, sep)) is not None]
        if fold:
            values = [v.translate(_ASCII_LOWER) for v in values]
        (msg.body_memo if kind == "body" else msg.memo)[memo_key] = values
        return values
    return fill


def _envelope_values(names: list[str], part: str, fold: bool) -> Values:
    def values(it: Interpreter) -> list[str]:
        env = it.env
        out = []
        for which in names:
            addr = (env.sender if which == "from" else env.recipient if which == "to"
                    else env.auth if which == "auth" else None)
            if addr is None:
                continue
            p = "" if addr == "" and part != "detail" else _address_part(
                addr, part, it.ctx.subaddress_separator)
            if p is not None:
                out.append(p.translate(_ASCII_LOWER) if fold else p)
        return out
    return values


def _predicate(match: _Match, keys: list[str], set_vars: bool
               ) -> tuple[bool, Pred, frozenset[str] | None] | None:
    """(whether the values come folded to lower case, a function of the values, the
    folded keys of :is): the match types of RFC 5228 §2.7 on i;octet and i;ascii-casemap
    without match variables (:is and :contains never set them); None: the others, which
    ``Interpreter._match`` decides."""
    kind = match.kind
    if match.comparator not in ("i;octet", "i;ascii-casemap") or not (
            kind in ("is", "contains") or (kind in ("matches", "regex") and not set_vars)):
        return None
    fold = match.comparator == "i;ascii-casemap"
    if kind == "regex":
        try:
            patterns = [_regex(k, fold).search for k in keys]
        except re.error:  # reported at run time (``_match``): the test is false
            return None
        return False, lambda values: _any_hit(patterns, values), None
    folded = [_casemap(k) if fold else k for k in keys]
    if kind == "is":
        wanted = frozenset(folded)
        return fold, lambda values: not wanted.isdisjoint(values), wanted
    if kind == "contains":
        if len(folded) == 1:
            only = folded[0]

            def contains(values: list[str]) -> bool:
                for v in values:  # noqa: SIM110 - a loop: no generator per test
                    if only in v:
                        return True
                return False
            return fold, contains, None
        either = re.compile("|".join(re.escape(k) for k in folded)).search
        return fold, lambda values: _any_hit([either], values), None
    checks = [_wildcard_check(k, f, fold) for k, f in zip(keys, folded, strict=True)]
    return fold, lambda values: _any_hit(checks, values), None


def _any_hit(checks: Sequence[Callable[[str], object]], values: list[str]) -> bool:
    for v in values:
        for check in checks:
            if check(v):
                return True
    return False


def _wildcard_check(key: str, folded: str, fold: bool) -> Callable[[str], bool]:
    """One :matches key on a (folded) value: a key with * at its ends only is a plain
    string test; else its regular expression (``_wildcard``), which matches a value
    folded the same way (it folds A-Z only, as i;ascii-casemap does)."""
    inner = folded.strip("*")
    if not any(c in inner for c in "*?\\"):
        starts, ends = folded.startswith("*"), folded.endswith("*")
        if not inner and (starts or ends):
            return lambda v: True
        if starts and ends:
            return lambda v: inner in v
        if starts:
            return lambda v: v.endswith(inner)
        if ends:
            return lambda v: v.startswith(inner)
        return lambda v: v == inner
    pattern = _wildcard(key, fold)
    return lambda v: pattern.match(v) is not None


def _address_part(address: str, part: str, sep: str) -> str | None:
    if part == "all":
        return address
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    if part == "localpart":
        return local
    if part == "domain":
        return domain
    user, found, detail = local.partition(sep)
    if part == "user":
        return user
    return detail if found else None  # :detail without a separator fails (RFC 5233)


def _as_bytes(message: email.message.Message) -> bytes:
    data = message.as_bytes(policy=email.policy.compat32.clone(linesep="\r\n"))
    return data if b"\r\n" in data else data.replace(b"\n", b"\r\n")


def _part(tags: dict[str, object]) -> str:
    for p in ("localpart", "domain", "user", "detail"):
        if p in tags:
            return p
    return "all"


def _split_flags(items: Iterable[str]) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for item in items:
        for flag in item.split():
            if flag.lower() not in seen:
                seen.add(flag.lower())
                out.append(flag)
    return out


def _mailbox_key(name: str) -> str:
    return "INBOX" if name.upper() == "INBOX" else name


def _zone(z: str) -> dt.timezone:
    sign = -1 if z.startswith("-") else 1
    return dt.timezone(sign * dt.timedelta(hours=int(z[1:3]), minutes=int(z[3:5])))


def _date_part(d: dt.datetime, part: str) -> str | None:
    """RFC 5260 §4.2 date parts."""
    off = d.utcoffset() or dt.timedelta()
    minutes = int(off.total_seconds() // 60)
    zone = f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    if part == "year":
        return f"{d.year:04d}"
    if part == "month":
        return f"{d.month:02d}"
    if part == "day":
        return f"{d.day:02d}"
    if part == "date":
        return f"{d.year:04d}-{d.month:02d}-{d.day:02d}"
    if part == "julian":
        # Modified Julian Day: days since 1858-11-17
        return str((d.date() - dt.date(1858, 11, 17)).days)
    if part == "hour":
        return f"{d.hour:02d}"
    if part == "minute":
        return f"{d.minute:02d}"
    if part == "second":
        return f"{d.second:02d}"
    if part == "time":
        return f"{d.hour:02d}:{d.minute:02d}:{d.second:02d}"
    if part == "iso8601":
        return d.strftime("%Y-%m-%dT%H:%M:%S") + (zone[:3] + ":" + zone[3:])
    if part == "std11":
        return d.strftime("%a, %d %b %Y %H:%M:%S ") + zone
    if part == "zone":
        return zone
    if part == "weekday":
        return str((d.weekday() + 1) % 7)
    return None


@dataclass(frozen=True, slots=True)
class Mailto:
    to: tuple[str, ...]  # addresses
    headers: tuple[tuple[str, str], ...]  # the URI's other hfields (subject, body, ...)
    cc: tuple[str, ...] = ()
    # an address as the URI wrote it ("Name <addr>", RFC 6068 §2 allows a full mailbox)
    display: tuple[tuple[str, str], ...] = ()


def _mailto_addresses(value: str) -> list[tuple[str, str]] | None:
    """(address, as written) of a comma-separated list, None if one is not valid."""
    out = []
    for item in getaddresses([value]):
        name, addr = item
        if not addr:
            continue
        if "@" not in addr or " " in addr:
            return None
        out.append((addr, formataddr((name, addr)) if name else addr))
    return out


def _mailto(uri: str) -> Mailto | None:
    """RFC 5436 / RFC 6068 mailto: URIs; None if not one."""
    if not uri.lower().startswith("mailto:"):
        return None
    parts = urlsplit(uri)
    to = _mailto_addresses(unquote(parts.path))
    cc: list[tuple[str, str]] | None = []
    headers: list[tuple[str, str]] = []
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if k.lower() in ("to", "cc"):
            more = _mailto_addresses(v)
            if more is None or to is None or cc is None:
                return None
            (to if k.lower() == "to" else cc).extend(more)
        elif not _HEADER_NAME.match(k):
            return None  # RFC 6068 §2: hfname is a header field name (RFC 5322 §3.6.8)
        else:
            headers.append((k, v))
    if not to or cc is None:
        return None
    return Mailto(tuple(a for a, _ in to), tuple(headers), tuple(a for a, _ in cc),
                  tuple(to + cc))


def parse_mailto(uri: str) -> Mailto | None:
    return _mailto(uri)


def evaluate(script: Script, message: SieveMessage, envelope: SieveEnvelope,
             ctx: Context) -> Result:
    """One run; raises ``SieveRuntimeError`` (fall back to keep) or ``NeedLookup``."""
    return Interpreter(message.fork(), envelope, ctx).run(script)
