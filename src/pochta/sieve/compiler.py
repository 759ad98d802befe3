"""Sieve checker: a parsed script against the commands, tests and tags of the extensions
it requires (RFC 5228 §3.2: using an extension that was not required is an error).

``compile_script`` returns a ``Script`` whose nodes carry their arguments by role
(``node.extra["tags"]`` and ``node.extra["pos"]``), so the interpreter never re-reads
raw argument lists. Errors carry the line (``SieveSyntaxError``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .address import redirect_address
from .grammar import Argument, Command, Number, SieveSyntaxError, Strings, Tag, Test, parse
from .notify_check import from_problem, method_problem, option_problem

# What ManageSieve's SIEVE capability and ``require`` accept.
EXTENSIONS: frozenset[str] = frozenset({
    "fileinto", "reject", "ereject", "envelope", "encoded-character", "imap4flags",
    "body", "variables", "vacation", "vacation-seconds", "relational",
    "comparator-i;ascii-numeric", "comparator-i;octet", "comparator-i;ascii-casemap",
    "comparator-i;unicode-casemap",
    "subaddress", "copy", "include", "date", "index", "editheader", "mailbox",
    "mboxmetadata", "servermetadata", "duplicate", "enotify", "spamtest", "spamtestplus",
    "virustest", "environment", "regex", "ihave", "special-use", "mime", "foreverypart",
    "extracttext", "replace", "enclose", "extlists", "imapsieve",
})

# comparator -> the capability a script requires for it (RFC 5228 §2.7.3); like
# Pigeonhole, i;unicode-casemap (RFC 5051) also works without (scripts move unchanged)
COMPARATORS = {"i;octet": None, "i;ascii-casemap": None, "i;unicode-casemap": None,
               "i;ascii-numeric": "comparator-i;ascii-numeric"}
# Fields whose value is an address list or a mailbox (RFC 5322 §3.6.2-3.6.6, RFC 8098
# §2.1, RFC 2076 and the de facto ones delivery agents write): the address test reads
# these (RFC 5228 §5.1: "MUST restrict the address test to headers that contain
# addresses"). Return-Path and Envelope-To are left to the envelope test.
ADDRESS_HEADERS = frozenset({
    "from", "sender", "reply-to", "to", "cc", "bcc", "resent-from", "resent-sender",
    "resent-to", "resent-cc", "resent-bcc", "resent-reply-to",
    "disposition-notification-to", "mail-followup-to", "mail-reply-to", "delivered-to",
    "x-original-to", "x-original-from", "apparently-to", "errors-to", "return-receipt-to",
    "read-receipt-to", "x-confirm-reading-to", "for-approval", "for-handling",
    "for-comment", "x-admin", "abuse-reports-to", "x-complaints-to", "x-report-abuse-to",
    "x-beenthere", "return-receipt-requested", "registered-mail-reply-requested-by",
})
ENVELOPE_PARTS = frozenset({"from", "to", "auth"})
# foreverypart loops inside each other, in one script or through include: each level
# walks every part below the one above, so the work grows as parts ** depth
MAX_PART_LOOPS = 4
# RFC 5463 §4: extensions that change how a script is read (its strings) cannot be
# enabled part-way through it, so ihave is false for them
NOT_BY_IHAVE = frozenset({"encoded-character", "variables"})
# RFC 5229 §6: names of at least 32 characters, match variables ${1} to ${9} at least;
# Pigeonhole's bounds (a longer name, a higher index is a compile error)
MAX_VARIABLE_NAME = 64
MAX_MATCH_VARIABLE = 32
RELATIONS = ("gt", "ge", "lt", "le", "eq", "ne")
DATE_PARTS = ("year", "month", "day", "date", "julian", "hour", "minute", "second", "time",
              "iso8601", "std11", "zone", "weekday")


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on any one script and any one run (each exceeded with a clear error)."""

    max_script_size: int = 256 * 1024  # bytes of source
    max_actions: int = 32  # fileinto, redirect, keep, vacation, notify, ... per run
    max_redirects: int = 4  # redirect actions per message
    max_include_depth: int = 10  # RFC 6609 §3.2: nesting of include
    max_includes: int = 64  # scripts one run may include in all
    max_header_edits: int = 64  # addheader/deleteheader per run
    max_notifications: int = 10  # notify actions per run; 0: notify is refused
    max_header_value: int = 2048  # bytes of the value addheader adds
    max_cpu_seconds: float = 5.0  # one run (checked before each test, e.g. a slow regex)
    # RFC 5229 §4: a variable's value is cut to this many bytes of UTF-8, never inside a
    # character (nor inside one escape of :quotewildcard, :quoteregex or :encodeurl)
    max_variable_size: int = 4096
    # RFC 5229 §6 (at least 128): distinct variables one script sets, counted when it is
    # compiled (Pigeonhole's sieve_variables_max_scope_count)
    max_variables: int = 255


@dataclass(frozen=True, slots=True)
class IncludeSite:
    """One include command: what it names, where, and its :optional/:once."""

    location: str  # personal | global
    name: str
    line: int
    optional: bool
    once: bool


@dataclass(slots=True)
class Script:
    name: str
    commands: list[Command]
    requires: frozenset[str]
    includes: list[tuple[str, str]] = field(default_factory=list)  # (personal|global, name)
    size: int = 0
    include_sites: list[IncludeSite] = field(default_factory=list)  # in source order


# tag -> (value kind "" | "s" | "l" | "n", extension needed or None, exclusive group)
_T = tuple[str, str | None, str]
_MATCH: dict[str, _T] = {
    "is": ("", None, "match"), "contains": ("", None, "match"), "matches": ("", None, "match"),
    "regex": ("", "regex", "match"), "value": ("s", "relational", "match"),
    "count": ("s", "relational", "match"), "comparator": ("s", None, "comparator"),
    "list": ("", "extlists", "match"),  # RFC 6134 §2.4: the keys name lists
}
_ADDR: dict[str, _T] = {
    "all": ("", None, "part"), "localpart": ("", None, "part"), "domain": ("", None, "part"),
    "user": ("", "subaddress", "part"), "detail": ("", "subaddress", "part"),
}
_INDEX: dict[str, _T] = {"index": ("n", "index", "index"), "last": ("", "index", "last")}
_ZONE: dict[str, _T] = {"zone": ("s", None, "zone"), "originalzone": ("", None, "zone")}
# RFC 5703 §4: header, address and exists look at MIME part headers
_MIME: dict[str, _T] = {"mime": ("", "mime", "mime"), "anychild": ("", "mime", "anychild")}
_MIME_OPT: dict[str, _T] = {"type": ("", "mime", "mimeopt"), "subtype": ("", "mime", "mimeopt"),
                            "contenttype": ("", "mime", "mimeopt"),
                            "param": ("l", "mime", "mimeopt")}
_MODIFIERS: dict[str, _T] = {m: ("", "variables", "mod" + str(p)) for m, p in (
    ("lower", 40), ("upper", 40), ("lowerfirst", 30), ("upperfirst", 30),
    ("quotewildcard", 20), ("quoteregex", 20), ("length", 10))}
_MODIFIERS["encodeurl"] = ("", "enotify", "mod15")  # RFC 5435 §6


@dataclass(frozen=True, slots=True)
class Spec:
    ext: str | None  # extension that defines the command or test
    pos: str  # positional kinds: s (string), l (string list), n (number); "?" = optional
    tags: dict[str, _T]
    tests: int = 0  # 0 none, 1 exactly one, -1 a list of at least one
    block: bool = False  # takes a block (if/elsif/else; test-only extensions)


def _spec(ext: str | None, pos: str, *tag_maps: dict[str, _T], tests: int = 0) -> Spec:
    tags: dict[str, _T] = {}
    for m in tag_maps:
        tags.update(m)
    return Spec(ext, pos, tags, tests)


COMMANDS: dict[str, Spec] = {
    "require": _spec(None, "l"),
    "if": _spec(None, "", tests=1), "elsif": _spec(None, "", tests=1), "else": _spec(None, ""),
    "stop": _spec(None, ""),
    "keep": _spec(None, "", {"flags": ("l", "imap4flags", "flags")}),
    "discard": _spec(None, ""),
    "redirect": _spec(None, "s", {"copy": ("", "copy", "copy")}),
    "fileinto": _spec("fileinto", "s", {"copy": ("", "copy", "copy"),
                                        "flags": ("l", "imap4flags", "flags"),
                                        "create": ("", "mailbox", "create"),
                                        "specialuse": ("s", "special-use", "specialuse")}),
    "error": _spec("ihave", "s"),  # RFC 5463 §5
    "foreverypart": Spec("foreverypart", "", {"name": ("s", None, "name")}, block=True),
    "break": _spec("foreverypart", "", {"name": ("s", None, "name")}),
    "extracttext": _spec("extracttext", "s", _MODIFIERS, {"first": ("n", None, "first")}),
    "replace": _spec("replace", "s", {"mime": ("", None, "mime"),
                                      "subject": ("s", None, "subject"),
                                      "from": ("s", None, "from")}),
    "enclose": _spec("enclose", "s", {"subject": ("s", None, "subject"),
                                      "headers": ("l", None, "headers")}),
    "reject": _spec("reject", "s"),
    "ereject": _spec("ereject", "s"),
    "setflag": _spec("imap4flags", "s?l"),
    "addflag": _spec("imap4flags", "s?l"),
    "removeflag": _spec("imap4flags", "s?l"),
    "set": _spec("variables", "ss", _MODIFIERS),
    "vacation": _spec("vacation", "s", {
        "days": ("n", None, "period"), "seconds": ("n", "vacation-seconds", "period"),
        "subject": ("s", None, "subject"), "from": ("s", None, "from"),
        "addresses": ("l", None, "addresses"), "mime": ("", None, "mime"),
        "handle": ("s", None, "handle")}),
    "notify": _spec("enotify", "s", {
        "from": ("s", None, "from"), "importance": ("s", None, "importance"),
        "options": ("l", None, "options"), "message": ("s", None, "message")}),
    "include": _spec("include", "s", {
        "personal": ("", None, "location"), "global": ("", None, "location"),
        "once": ("", None, "once"), "optional": ("", None, "optional")}),
    "return": _spec("include", ""),
    "global": _spec("include", "l"),
    "addheader": _spec("editheader", "ss", {"last": ("", None, "last")}),
    # RFC 5293 §5: deleteheader has :index/:last of its own (no require "index")
    "deleteheader": _spec("editheader", "sl?", _MATCH, {
        "index": ("n", None, "index"), "last": ("", None, "last")}),
}

TESTS: dict[str, Spec] = {
    "true": _spec(None, ""), "false": _spec(None, ""),
    "not": _spec(None, "", tests=1),
    "allof": _spec(None, "", tests=-1), "anyof": _spec(None, "", tests=-1),
    "address": _spec(None, "ll", _MATCH, _ADDR, _INDEX, _MIME),
    "header": _spec(None, "ll", _MATCH, _INDEX, _MIME, _MIME_OPT),
    "envelope": _spec("envelope", "ll", _MATCH, _ADDR),
    "exists": _spec(None, "l", _MIME),
    "ihave": _spec("ihave", "l"),
    "specialuse_exists": _spec("special-use", "s?l"),
    "valid_ext_list": _spec("extlists", "l"),
    "size": _spec(None, "n", {"over": ("", None, "size"), "under": ("", None, "size")}),
    "body": _spec("body", "l", _MATCH, {"raw": ("", None, "transform"),
                                        "content": ("l", None, "transform"),
                                        "text": ("", None, "transform")}),
    "string": _spec("variables", "ll", _MATCH),
    "hasflag": _spec("imap4flags", "l?l", _MATCH),
    "date": _spec("date", "ssl", _MATCH, _ZONE, _INDEX),
    "currentdate": _spec("date", "sl", _MATCH, {"zone": ("s", None, "zone")}),
    "mailboxexists": _spec("mailbox", "l"),
    "metadata": _spec("mboxmetadata", "ssl", _MATCH),
    "metadataexists": _spec("mboxmetadata", "sl"),
    "servermetadata": _spec("servermetadata", "sl", _MATCH),
    "servermetadataexists": _spec("servermetadata", "l"),
    "duplicate": _spec("duplicate", "", {
        "handle": ("s", None, "handle"), "header": ("s", None, "id"),
        "uniqueid": ("s", None, "id"), "seconds": ("n", None, "seconds"),
        "last": ("", None, "last")}),
    "valid_notify_method": _spec("enotify", "l"),
    "notify_method_capability": _spec("enotify", "ssl", _MATCH),
    "environment": _spec("environment", "sl", _MATCH),
    "spamtest": _spec("spamtest", "s", _MATCH, {"percent": ("", "spamtestplus", "percent")}),
    "virustest": _spec("virustest", "s", _MATCH),
}

# What each positional argument is, for error messages.
ROLES: dict[str, tuple[str, ...]] = {
    "header": ("header names", "key list"), "address": ("header list", "key list"),
    "envelope": ("envelope part", "key list"), "exists": ("header names",),
    "string": ("source strings", "key list"), "body": ("key list",),
    "size": ("limit",), "date": ("header name", "date part", "key list"),
    "currentdate": ("date part", "key list"), "fileinto": ("folder",),
    "redirect": ("address",), "reject": ("reason",), "ereject": ("reason",),
    "set": ("name", "value"), "addheader": ("field name", "value"),
    "deleteheader": ("field name", "value patterns"), "vacation": ("reason",),
    "notify": ("method",), "include": ("script name",), "require": ("capabilities",),
    "extracttext": ("variable name",), "error": ("message",),
    "ihave": ("capabilities",), "global": ("variable names",),
}
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_USE_ATTR = re.compile(r'\\[^\x00-\x20\x7f(){%*"\\\]]+\Z')
_REFERENCE = re.compile(r"\$\{([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)+)\}")
_MATCH_REFERENCE = re.compile(r"\$\{([0-9]+)\}")
_ENCODED = re.compile(r"\$\{(hex|unicode):([^${}]*)\}", re.IGNORECASE)


def decode_encoded_characters(s: str) -> str:
    """RFC 5228 §2.4.2.4 (encoded-character): ``${hex:41 42}`` and ``${unicode:263a}``;
    a malformed sequence is left as it is."""

    def repl(m: re.Match[str]) -> str:
        parts = m.group(2).split()
        if not parts or not all(re.fullmatch(r"[0-9A-Fa-f]+", p) for p in parts):
            return m.group(0)
        if m.group(1).lower() == "hex":
            raw = bytes(int(p, 16) for p in parts if int(p, 16) < 256)
            if len(raw) != len(parts):
                return m.group(0)
            return raw.decode("utf-8", "replace")
        out = []
        for p in parts:
            cp = int(p, 16)
            if cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
                raise ValueError(f"invalid unicode character {p}")
            out.append(chr(cp))
        return "".join(out)

    return _ENCODED.sub(repl, s)


class _Quiet(SieveSyntaxError):
    """An error already reported once (an unknown tag used again): the command is
    wrong, nothing more is said."""


class _Checker:
    def __init__(self, limits: Limits, extensions: frozenset[str],
                 commands: dict[str, Spec], tests: dict[str, Spec],
                 namespaces: frozenset[str] = frozenset()) -> None:
        self.limits = limits
        self.extensions = extensions
        self.commands = commands
        self.tests = tests
        self.requires: set[str] = set()
        self.includes: list[tuple[str, str]] = []
        self.include_sites: list[IncludeSite] = []
        self.errors: list[SieveSyntaxError] = []  # every error; checking goes on after one
        self.foreverypart = 0  # foreverypart loops around the command being checked
        self.loop_names: list[str | None] = []  # their :name values, outermost first
        self.required_at: dict[str, int] = {}  # extension -> line of its require
        self.namespaces = namespaces  # of test-only extensions, e.g. "tst"
        self.locals: set[str] = set()  # variables set before any global names them
        self.too_many = False  # the max_variables error is reported once
        self.unknown: set[str] = set()  # commands and tests reported unknown
        self.unknown_tags: set[tuple[str, str]] = set()  # (command or test, tag) reported

    def need(self, ext: str | None, what: str, line: int) -> None:
        if ext is not None and ext not in self.requires:
            raise SieveSyntaxError(line, f'{what} needs require "{ext}"')

    def block(self, commands: list[Command], top: bool) -> None:
        previous = ""
        seen_other = False
        for cmd in commands:
            misplaced = None
            if cmd.name == "require":
                if not top or seen_other:
                    misplaced = "require must come before other commands"
            else:
                seen_other = True
            if cmd.name in ("elsif", "else") and previous not in ("if", "elsif"):
                misplaced = f"{cmd.name} without a preceding if"
            self.command(cmd, misplaced)
            previous = cmd.name

    def spec_of(self, node: Command | Test, kind: str) -> Spec | None:
        """The spec of a command or test the script may use, else None with the error
        recorded. As Pigeonhole, a name that is unknown (or whose extension is not
        required, RFC 5228 §3.2) is reported at its first use only: a script that uses an
        unsupported extension's command a hundred times gets one error, not a hundred."""
        own, other = (self.commands, self.tests) if kind == "command" else (
            self.tests, self.commands)
        spec = own.get(node.name)
        problem = None
        if spec is None and node.name in other:
            self.errors.append(SieveSyntaxError(
                node.line, f"cannot use {'test' if kind == 'command' else 'command'} "
                f"'{node.name}' as a {kind}"))
            return None
        if spec is None:
            problem = f"unknown {kind} {node.name}"
        elif spec.ext is not None and spec.ext not in self.requires:
            problem = f'{kind} {node.name} needs require "{spec.ext}"'
        if problem is None:
            return spec
        if node.name not in self.unknown:
            self.unknown.add(node.name)
            self.errors.append(SieveSyntaxError(node.line, problem))
        return None

    def command(self, cmd: Command, misplaced: str | None = None) -> None:
        """Checked as Pigeonhole does (sieve-validator.c), so one mistake gives the errors
        it gives: the arguments, the sub-tests, the block, then what the command means;
        then its tests and its block are checked even when the command is wrong (not
        those of an unknown command, nor a block a command does not take)."""
        spec = self.spec_of(cmd, "command")
        if spec is None:
            return
        wants_block = cmd.name in ("if", "elsif", "else") or spec.block
        if self.structure(cmd, spec, "command", wants_block):
            try:
                if misplaced is not None:
                    raise SieveSyntaxError(cmd.line, misplaced)
                self.command_meaning(cmd)
            except SieveSyntaxError as err:
                self.errors.append(err)
        if spec.tests:
            for sub in cmd.tests:
                self.test(sub)
        if cmd.name in ("if", "elsif") and cmd.tests:
            wanted = _ihave(cmd.tests[0])
            if wanted is not None:
                # RFC 5463 §4: the block is compiled only when the extensions exist,
                # and then it may use them
                if all(e in self.extensions and e not in NOT_BY_IHAVE for e in wanted):
                    self.requires.update(wanted)
                else:
                    cmd.extra["skip_block"] = True
        if wants_block and cmd.block is not None and not cmd.extra.get("skip_block"):
            loop = cmd.name == "foreverypart"
            if loop:
                tags = cmd.extra.get("tags")
                name = tags.get("name") if isinstance(tags, dict) else None
                self.loop_names.append(name if isinstance(name, str) else None)
            self.foreverypart += loop
            self.block(cmd.block, top=False)
            self.foreverypart -= loop
            if loop:
                self.loop_names.pop()

    def structure(self, node: Command | Test, spec: Spec, kind: str,
                  wants_block: bool) -> bool:
        """Arguments, sub-tests and block; False (errors recorded) when wrong. Wrong
        arguments stop the check, but the sub-tests are checked too: a tag that lost
        its ":" reads as a test, and that is the error the user needs to see."""
        try:
            tags, pos = self.arguments(node.name, spec, node.args, node.line, kind)
        except SieveSyntaxError as err:
            if not isinstance(err, _Quiet):
                self.errors.append(err)
            extra = self.test_problem(node, spec, kind)
            if extra is not None:
                self.errors.append(extra)
            return False
        node.extra["tags"], node.extra["pos"] = tags, pos
        problem = self.test_problem(node, spec, kind)
        if problem is None and isinstance(node, Command):
            if wants_block and node.block is None:
                problem = SieveSyntaxError(node.line, f"{node.name} needs a block {{ ... }}")
            elif not wants_block and node.block is not None:
                problem = SieveSyntaxError(node.line, f"command {node.name} takes no block")
        if problem is not None:
            self.errors.append(problem)
            return False
        return True

    def test_problem(self, node: Command | Test, spec: Spec, kind: str
                     ) -> SieveSyntaxError | None:
        """The sub-tests against what the command or test takes. One that takes none
        but is followed by a name: a missing ";" (the name is a command or unknown)
        or a tag without its ":" (RFC 5228 §2.6.2), said as such."""
        name, tests, line = node.name, node.tests, node.line
        if spec.tests == 0 and tests:
            first = tests[0].name
            if first in self.tests:
                n = len(tests)
                return SieveSyntaxError(line, f"the {name} {kind} accepts no sub-tests, "
                                        f"but {n} {'was' if n == 1 else 'were'} specified")
            if first in spec.tags:
                return SieveSyntaxError(line, f"missing colon ':' before ':{first}' tag "
                                        f"in the {name} {kind}")
            if kind == "command":
                return SieveSyntaxError(line, f"missing semicolon ';' after {name} "
                                        f"command (before '{first}')")
            return SieveSyntaxError(line, f"the {name} test accepts no sub-tests, but "
                                    f"'{first}' follows it")
        if spec.tests == 1 and len(tests) != 1:
            return SieveSyntaxError(line, f"{name} needs exactly one test")
        if spec.tests == -1 and not tests:
            return SieveSyntaxError(line, f"{name} needs a list of tests")
        return None

    def command_meaning(self, cmd: Command) -> None:
        """What a well-formed command means (raises the first error)."""
        tags, pos = strings_of(cmd)
        if cmd.name in ("break", "extracttext") and not self.foreverypart:
            raise SieveSyntaxError(cmd.line, f"{cmd.name} must be inside foreverypart")
        if cmd.name == "break" and isinstance(tags.get("name"), str) and (
                tags["name"] not in self.loop_names):
            # RFC 5703 §3.2: the name must be that of an enclosing loop
            raise SieveSyntaxError(cmd.line, f'break :name "{tags["name"]}": no enclosing '
                                   "foreverypart loop has that name")
        if cmd.name == "foreverypart" and self.foreverypart >= MAX_PART_LOOPS:
            raise SieveSyntaxError(cmd.line, f"foreverypart nested deeper than "
                                   f"{MAX_PART_LOOPS} loops")
        if cmd.name == "extracttext" and "variables" not in self.requires:
            raise SieveSyntaxError(cmd.line, 'extracttext needs require "variables"')
        if cmd.name == "require":
            exts = pos[0]
            assert isinstance(exts, list)
            for ext in exts:
                if ext not in self.extensions:
                    self.errors.append(SieveSyntaxError(
                        cmd.line, f'unsupported extension "{ext}"'))
                    continue
                self.requires.add(ext)
                self.required_at.setdefault(ext, cmd.line)
                if ext == "enotify" or ext == "vacation-seconds":
                    self.requires.add("vacation" if ext == "vacation-seconds" else ext)
                if ext == "spamtestplus":
                    self.requires.add("spamtest")
        self.semantics(cmd.name, tags, pos, cmd.line)

    def test(self, t: Test) -> None:
        spec = self.spec_of(t, "test")
        if spec is None:
            return
        if self.structure(t, spec, "test", False):
            try:
                tags, pos = strings_of(t)
                self.semantics(t.name, tags, pos, t.line)
            except SieveSyntaxError as err:
                self.errors.append(err)
        if spec.tests:
            for sub in t.tests:
                self.test(sub)

    def arguments(self, name: str, spec: Spec, args: list[Argument], line: int,
                  kind_of: str = "command") -> tuple[dict[str, object], list[object]]:
        what = f"the {name} {kind_of}"
        tags: dict[str, object] = {}
        groups: dict[str, str] = {}
        positional: list[Argument] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if isinstance(arg, Tag):
                tspec = spec.tags.get(arg.name)
                if tspec is None:
                    if (name, arg.name) in self.unknown_tags:
                        raise _Quiet(arg.line, "")
                    self.unknown_tags.add((name, arg.name))  # reported once, as Pigeonhole
                    known = sorted(f":{t}" for t, (_, ext, _) in spec.tags.items()
                                   if ext is None or ext in self.requires)
                    accepts = (f"it accepts {', '.join(known)}" if known else
                               "its tags need a require first" if spec.tags else
                               "it takes no tags")
                    raise SieveSyntaxError(arg.line, f"unknown tagged argument "
                                           f"':{arg.name}' for {what} ({accepts})")
                if positional:
                    raise SieveSyntaxError(arg.line, f"unexpected tagged argument "
                                           f"':{arg.name}' for {what} (tags come before "
                                           "the other arguments)")
                kind, ext, group = tspec
                self.need(ext, f":{arg.name}", arg.line)
                if group in groups:
                    raise SieveSyntaxError(arg.line, f"{name}: :{arg.name} conflicts with "
                                           f":{groups[group]}")
                groups[group] = arg.name
                value: object = True
                if kind:
                    i += 1
                    if i >= len(args):
                        raise SieveSyntaxError(arg.line, f"{name}: :{arg.name} needs a value")
                    value = self.value(args[i], kind, f"the :{arg.name} tag of {what}")
                tags[arg.name] = value
            else:
                positional.append(arg)
            i += 1
        kinds = spec.pos
        required = [k for j, k in enumerate(kinds) if k != "?" and
                    (j + 1 >= len(kinds) or kinds[j + 1] != "?")]
        full = [k for k in kinds if k != "?"]
        if len(positional) == len(full):
            chosen = full
        elif len(positional) == len(required):
            chosen = required
            if len(full) != len(required):
                # an optional argument that is left out: keep its slot as None
                opt = next(j for j, k in enumerate(kinds) if k == "?") - 1
                slot = len([k for k in kinds[:opt] if k != "?"])
                values = [self.value(a, k, what, j, name) for j, (a, k) in enumerate(
                    zip(positional, chosen, strict=True))]
                values.insert(slot, None)
                return tags, values
        else:
            wanted = str(len(full)) if len(full) == len(required) else (
                f"{len(required)} or {len(full)}")
            found = len(positional)
            raise SieveSyntaxError(line, f"{what} requires {wanted} positional argument"
                                   f"{'' if wanted == '1' else 's'}, but {found} "
                                   f"{'was' if found == 1 else 'were'} specified")
        return tags, [self.value(a, k, what, j, name) for j, (a, k) in enumerate(
            zip(positional, chosen, strict=True))]

    @staticmethod
    def value(arg: Argument, kind: str, what: str, index: int | None = None,
              name: str = "") -> object:
        """``arg`` as ``kind``; ``index``: its place among the positional arguments."""
        found = ("a number" if isinstance(arg, Number) else f"tag :{arg.name}"
                 if isinstance(arg, Tag) else "a string list" if arg.is_list else "a string")
        # RFC 5228 §2.6.2: a list is not a string, even a list of one
        if isinstance(arg, Tag) or (kind == "n") != isinstance(arg, Number) or (
                kind == "s" and isinstance(arg, Strings) and arg.is_list):
            wanted = {"n": "a number", "s": "a string", "l": "a string list"}[kind]
            if index is None:
                raise SieveSyntaxError(arg.line, f"{what} expects {wanted}, but {found} "
                                       "was found")
            roles = ROLES.get(name, ())
            role = f" ({roles[index]})" if index < len(roles) else ""
            raise SieveSyntaxError(arg.line, f"{what} expects {wanted} as argument "
                                   f"{index + 1}{role}, but {found} was found")
        if isinstance(arg, Number):
            return arg.value
        assert isinstance(arg, Strings)
        return arg.values[0] if kind == "s" else list(arg.values)

    def decode(self, tags: dict[str, object], pos: list[object], line: int) -> None:
        """encoded-character (RFC 5228 §2.4.2.4), applied once at compile time."""
        try:
            for k, v in list(tags.items()):
                if isinstance(v, str):
                    tags[k] = decode_encoded_characters(v)
                elif isinstance(v, list):
                    tags[k] = [decode_encoded_characters(x) for x in v]
            for j, v in enumerate(pos):
                if isinstance(v, str):
                    pos[j] = decode_encoded_characters(v)
                elif isinstance(v, list):
                    pos[j] = [decode_encoded_characters(x) for x in v]
        except ValueError as exc:
            raise SieveSyntaxError(line, str(exc)) from None

    def semantics(self, name: str, tags: dict[str, object], pos: list[object],
                  line: int) -> None:
        if "encoded-character" in self.requires:
            self.decode(tags, pos, line)
        comparator = tags.get("comparator")
        if isinstance(comparator, str):
            if comparator not in COMPARATORS:
                raise SieveSyntaxError(line, f'unknown comparator "{comparator}"')
            self.need(COMPARATORS[comparator], f'comparator "{comparator}"', line)
            if comparator == "i;ascii-numeric" and ({"contains", "matches", "regex"} & tags.keys()):
                raise SieveSyntaxError(line, "i;ascii-numeric supports only :is, :value "
                                       "and :count")
        for rel in ("value", "count"):
            r = tags.get(rel)
            if isinstance(r, str) and r.lower() not in RELATIONS:
                raise SieveSyntaxError(line, f':{rel} "{r}": relation must be one of '
                                       f"{', '.join(RELATIONS)}")
        uses = [tags["specialuse"]] if "specialuse" in tags else (
            pos[-1] if name == "specialuse_exists" and isinstance(pos[-1], list) else [])
        for use in uses:
            # RFC 8579 §3 / RFC 6154 §6: use-attr = "\\" atom, e.g. "\\Junk"
            if isinstance(use, str) and "${" not in use and not _USE_ATTR.match(use):
                raise SieveSyntaxError(line, f"{name}: {use!r} is not a special-use "
                                       'attribute (a backslash and a name, e.g. "\\\\Junk")')
        if name in ("address", "envelope") and isinstance(pos[0], list):
            self.address_sources(name, pos[0], line)
        if tags.get("index") == 0:  # RFC 5260 §6, RFC 5293 §5: fields count from 1
            raise SieveSyntaxError(line, f"{name}: :index 0 is invalid (the first field is 1)")
        if "list" in tags and "comparator" in tags:
            # the list's own lookup decides how values match (RFC 6134 §2.4)
            raise SieveSyntaxError(line, f"{name}: the :list match type does not allow a "
                                   "comparator")
        if "last" in tags and "index" not in tags and name not in ("addheader", "duplicate"):
            raise SieveSyntaxError(line, f"{name}: the :last tag cannot be specified "
                                   "without the :index tag")
        if "regex" in tags and "variables" not in self.requires:
            keys = pos[-1]
            for key in keys if isinstance(keys, list) else [keys]:
                if isinstance(key, str):
                    try:
                        re.compile(key)
                    except re.error as exc:
                        raise SieveSyntaxError(line, f'invalid regex "{key}": {exc}') from None
        if name in ("date", "currentdate"):
            part = pos[-2]
            if isinstance(part, str) and "${" not in part and part.lower() not in DATE_PARTS:
                raise SieveSyntaxError(line, f'unknown date part "{part}"')
            zone = tags.get("zone")
            if isinstance(zone, str) and not re.fullmatch(r"[+-]\d{4}", zone):
                raise SieveSyntaxError(line, f'invalid :zone "{zone}" (expected +hhmm)')
        if "variables" in self.requires:
            self.references(tags, pos, line)
        if name in ("set", "extracttext"):
            var = pos[0]
            assert isinstance(var, str)
            if not _VAR_NAME.match(var) or var[0].isdigit():
                raise SieveSyntaxError(line, f'{"" if name == "set" else name + ": "}'
                                       f'invalid variable name "{var}"')
            self.variable_name(var, line, assigned=True)
            self.declare(var, line)
        if name == "global":
            # RFC 6609 §3.3: global is part of the variables model
            self.need("variables", "command global", line)
            for var in pos[0] if isinstance(pos[0], list) else []:
                if not _VAR_NAME.match(var) or var[0].isdigit() or "." in var:
                    raise SieveSyntaxError(line, f'global: invalid variable name "{var}"')
                if len(var) > MAX_VARIABLE_NAME:
                    raise SieveSyntaxError(line, f'global: variable name "{var[:20]}..." is '
                                           f"longer than {MAX_VARIABLE_NAME} characters")
                if var.lower() in self.locals:
                    raise SieveSyntaxError(line, f'global: variable "{var}" is already used '
                                           "as a local variable above; declare it global "
                                           "before its first use (RFC 6609 §3.3)")
        if name in ("setflag", "addflag", "removeflag") and pos[0] is not None and (
                not isinstance(pos[0], str) or not _VAR_NAME.match(pos[0])):
            raise SieveSyntaxError(line, f"{name}: invalid variable name")
        if name in ("setflag", "addflag", "removeflag", "hasflag") and pos[0] is not None:
            self.need("variables", f"{name} with a variable", line)
        if name == "include":
            target = pos[0]
            assert isinstance(target, str)
            if not target or "/" in target or target.startswith(".") or "${" in target:
                raise SieveSyntaxError(line, f'include: invalid script name "{target}"')
            bad = next((c for c in target if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F
                        or c in "\u2028\u2029"), None)
            if bad is not None:  # RFC 5804 §1.6: what a script name cannot contain
                raise SieveSyntaxError(line, f"include: invalid script name {target!r} "
                                       f"(character U+{ord(bad):04X})")
            location = "global" if tags.get("global") else "personal"
            if (location, target) not in self.includes:
                self.includes.append((location, target))
            self.include_sites.append(IncludeSite(location, target, line,
                                                  bool(tags.get("optional")),
                                                  bool(tags.get("once"))))
        if name == "vacation":
            days = tags.get("days")
            if isinstance(days, int) and days < 0:
                raise SieveSyntaxError(line, "vacation :days must not be negative")
            sender = tags.get("from")
            # RFC 5230 §4.4: :from is an address (name-addr or addr-spec)
            if isinstance(sender, str) and "${" not in sender and not _plausible(sender):
                raise SieveSyntaxError(line, f'vacation :from "{sender}" is not an email '
                                       "address")
        if name == "notify":
            if self.limits.max_notifications == 0:
                raise SieveSyntaxError(line, "local policy prohibits the use of a notify "
                                       "action")
            imp = tags.get("importance")
            if isinstance(imp, str) and imp not in ("1", "2", "3"):
                raise SieveSyntaxError(line, 'notify :importance must be "1", "2" or "3"')
            self.notify_arguments(tags, pos, line)
        if name in ("addheader", "deleteheader"):
            self.edit_arguments(name, pos, line)
        if name == "redirect":
            target = pos[0]
            if isinstance(target, str) and "${" not in target and not _plausible(target):
                raise SieveSyntaxError(line, f'redirect: invalid address "{target}"')
        if name == "fileinto":
            box = pos[0]
            if isinstance(box, str) and "${" not in box and (
                    problem := folder_name_problem(box)) is not None:
                raise SieveSyntaxError(line, f"fileinto: {problem}")
        if (tags.keys() & {"type", "subtype", "contenttype", "param", "anychild"}
                and "mime" not in tags):
            raise SieveSyntaxError(line, f"{name}: :anychild, :type, :subtype, :contenttype "
                                   "and :param need :mime")
        if "list" in tags and name not in ("header", "address", "envelope", "string",
                                           "body", "environment", "date", "currentdate"):
            raise SieveSyntaxError(line, f"{name}: :list is not allowed here")
        if name == "size" and not tags:
            raise SieveSyntaxError(line, "size needs :over or :under")


    def edit_arguments(self, name: str, pos: list[object], line: int) -> None:
        """RFC 5293 §4-5: a literal field name must be one (RFC 5322 §3.6.8), a literal
        value unstructured text (§3.2.5: no control characters but tab and line breaks);
        names and values built from variables are checked when the command runs."""
        field, value = pos[0], pos[1] if name == "addheader" else None
        if isinstance(field, str) and "${" not in field:
            problem = header_name_problem(field)
            if problem is not None:
                raise SieveSyntaxError(line, f"{name}: {problem}")
        if isinstance(value, str) and "${" not in value:
            problem = header_value_problem(value, self.limits.max_header_value)
            if problem is not None:
                raise SieveSyntaxError(line, f"{name}: {problem}")

    @staticmethod
    def address_sources(name: str, sources: list[str], line: int) -> None:
        """RFC 5228 §5.1: the address test reads fields that hold addresses only;
        §5.4: the envelope parts are "from" and "to" (and "auth", the submitter)."""
        allowed = ADDRESS_HEADERS if name == "address" else ENVELOPE_PARTS
        for source in sources:
            if "${" in source or source.lower() in allowed:
                continue
            if name == "address":
                raise SieveSyntaxError(line, f"header '{source}' is not allowed in the "
                                       "address test: it holds no addresses (use the "
                                       "header test)")
            raise SieveSyntaxError(line, f'envelope: unknown envelope part "{source}" '
                                   '(expected "from", "to" or "auth")')

    def declare(self, var: str, line: int) -> None:
        """A variable the script sets: its name no longer than ``MAX_VARIABLE_NAME``
        and at most ``limits.max_variables`` of them (RFC 5229 §6 lets an implementation
        bound both, at least 32 characters and 128 variables; the numbers are
        Pigeonhole's). The count is reported once, at the first one over."""
        longest = max(var.split("."), key=len)
        if len(longest) > MAX_VARIABLE_NAME:
            raise SieveSyntaxError(line, f'variable name "{longest[:20]}..." is longer than '
                                   f"{MAX_VARIABLE_NAME} characters (RFC 5229 §6)")
        lower = var.lower()
        if lower not in self.locals and len(self.locals) >= self.limits.max_variables:
            if not self.too_many:
                self.too_many = True
                raise SieveSyntaxError(line, f'variable "{var}" is one more than the '
                                       f"{self.limits.max_variables} variables a script may "
                                       "set (RFC 5229 §6)")
            return
        self.locals.add(lower)

    def variable_name(self, var: str, line: int, assigned: bool) -> None:
        """RFC 5229 §3: a name with a namespace ("global.x") needs the extension that
        defines it required ("MUST cause an error" otherwise). RFC 6609 §3.5: "global." names one
        variable, no sub-namespace."""
        if "." not in var:
            return
        space, _, rest = var.partition(".")
        known = {"global"} if "include" in self.requires else set()
        if not assigned:
            known.add("env")  # the environment items, read-only (RFC 5183 §4)
        if space.lower() not in known | self.namespaces:
            raise SieveSyntaxError(line, f'variable "{var}": unknown namespace "{space}"')
        if space.lower() == "global" and ("." in rest or rest[:1].isdigit()):
            raise SieveSyntaxError(line, f'variable "{var}": invalid name in the global '
                                   "namespace")

    def references(self, tags: dict[str, object], pos: list[object], line: int) -> None:
        """The variables a literal string names (RFC 5229 §3)."""
        for v in [*tags.values(), *pos]:
            for s in v if isinstance(v, list) else [v]:
                if isinstance(s, str) and "${" in s:
                    for m in _REFERENCE.finditer(s):
                        if not m.group(1)[0].isdigit():
                            self.variable_name(m.group(1), line, assigned=False)
                    for m in _MATCH_REFERENCE.finditer(s):
                        # RFC 5229 §3: a match variable above those supported "MUST be
                        # treated as a syntax error"
                        if int(m.group(1)) > MAX_MATCH_VARIABLE:
                            raise SieveSyntaxError(line, f"match variable ${{{m.group(1)}}} "
                                                   f"is out of range (${{0}} to "
                                                   f"${{{MAX_MATCH_VARIABLE}}})")

    @staticmethod
    def notify_arguments(tags: dict[str, object], pos: list[object], line: int) -> None:
        """RFC 5435 §3.2: literal arguments are checked when the script is compiled
        (those built from variables when the action runs)."""
        method, sender, options = pos[0], tags.get("from"), tags.get("options")
        problems = []
        if isinstance(method, str) and "${" not in method:
            problems.append(method_problem(method))
        if isinstance(sender, str) and "${" not in sender:
            problems.append(from_problem(sender))
        if isinstance(options, list):
            problems += [option_problem(o) for o in options if "${" not in o]
        first = next((p for p in problems if p is not None), None)
        if first is not None:
            raise SieveSyntaxError(line, f"notify: {first}" if not first.startswith(
                "notify") else first)


_FIELD_NAME = re.compile(r"[!-9;-~]+\Z")  # RFC 5322 §3.6.8 ftext


def folder_name_problem(name: str) -> str | None:
    """What makes a fileinto name unusable whatever the mailboxes (the store refuses
    the rest when the message is filed)."""
    if not name:
        return "empty folder name"
    if "\x00" in name:
        return f"invalid folder name {name!r} (NUL character)"
    if "\ufffd" in name:
        # what ${hex:..} (RFC 5228 §2.4.2.4) gives for bytes that are not UTF-8
        return f"invalid folder name {name!r} (not valid UTF-8)"
    return None


def header_name_problem(name: str) -> str | None:
    if _FIELD_NAME.match(name):
        return None
    return (f"field name {_shown(name)} is invalid (printable US-ASCII characters but "
            "colon and space, RFC 5322 §3.6.8)")


def header_value_problem(value: str, limit: int) -> str | None:
    if "\x00" in value:
        return f"value {_shown(value)} is invalid (it contains a NUL character)"
    bad = next((c for c in value if (ord(c) < 0x20 and c not in "\t\r\n")
                or ord(c) == 0x7F), None)
    if bad is not None:
        return (f"value {_shown(value)} is invalid (control character "
                f"U+{ord(bad):04X}, RFC 5322 §3.2.5)")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > limit:
        return f"value {_shown(value)} is too large ({size} bytes, the limit is {limit})"
    return None


def _shown(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _ihave(test: Test) -> list[str] | None:
    """The extensions an ``if`` test asks for with ihave (alone or inside allof)."""
    if test.name == "ihave":
        pos = test.extra.get("pos")
        return [str(x) for x in pos[0]] if isinstance(pos, list) and isinstance(
            pos[0], list) else None
    if test.name == "allof":
        found = [_ihave(t) for t in test.tests]
        exts = [e for f in found if f is not None for e in f]
        return exts if exts else None
    return None


def _plausible(address: str) -> bool:
    return redirect_address(address) is not None


def compile_script(source: str, name: str = "", limits: Limits | None = None,
                   extensions: frozenset[str] = EXTENSIONS,
                   extra_commands: dict[str, Spec] | None = None,
                   extra_tests: dict[str, Spec] | None = None,
                   namespaces: frozenset[str] = frozenset()) -> Script:
    """Parse and check a script; raises ``SieveSyntaxError`` (with its line).
    ``extra_*``: commands and tests of a test-only extension (their evaluation is
    ``Context.handlers``)."""
    limits = limits or Limits()
    size = len(source.encode("utf-8", "surrogatepass"))
    if size > limits.max_script_size:
        raise SieveSyntaxError(1, f"script is {size} bytes, more than the limit of "
                               f"{limits.max_script_size}")
    errors: list[SieveSyntaxError] = []
    try:
        commands = parse(source, errors)
    except SieveSyntaxError as err:  # one the parser cannot go on after
        raise SieveSyntaxError.of([*errors, err]) from None
    checker = _Checker(limits, extensions, {**COMMANDS, **(extra_commands or {})},
                       {**TESTS, **(extra_tests or {})}, namespaces)
    checker.block(commands, top=True)
    errors += checker.errors
    if "extracttext" in checker.required_at and "foreverypart" not in checker.requires:
        # RFC 5703 §7: extracttext runs inside foreverypart loops only
        errors.append(SieveSyntaxError(checker.required_at["extracttext"],
                                       'require "extracttext" needs "foreverypart" '
                                       "required too"))
    script = Script(name, commands, frozenset(checker.requires), checker.includes, size,
                    checker.include_sites)
    if errors:
        failed = SieveSyntaxError.of(errors)
        failed.partial = script
        raise failed
    return script


def strings_of(node: Command | Test) -> tuple[dict[str, object], list[object]]:
    tags = node.extra["tags"]
    pos = node.extra["pos"]
    assert isinstance(tags, dict) and isinstance(pos, list)
    return tags, pos


__all__ = ["COMMANDS", "EXTENSIONS", "TESTS", "Limits", "Script", "SieveSyntaxError",
           "Strings", "compile_script"]
