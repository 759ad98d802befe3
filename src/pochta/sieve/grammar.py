"""Sieve lexer and parser (RFC 5228 §8): text in, a tree of commands out.

Every node carries the line it starts on, and every error names the line
(``line 3: expected ";"``), which ManageSieve (RFC 5804 §1.3) and ``pochta sieve check``
pass on to the user. Pure functions, standard library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Limits that hold for any script, whatever the configuration (the configurable ones,
# script size and actions, are in ``limits``).
MAX_NESTING = 64  # blocks and test lists inside each other
MAX_STRING_LIST = 1024


class SieveSyntaxError(Exception):
    """A script that cannot be compiled: ``line`` is 1-based. ``errors`` holds every
    error found in the script (the first is this one), in the order of the source, so
    a user sees all of them at once (RFC 5804 §2.12: CHECKSCRIPT reports the errors)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message
        self.errors: list[SieveSyntaxError] = [self]
        # what did compile (a Script: the include commands it has), so the scripts it
        # includes can be checked too
        self.partial: object | None = None

    @classmethod
    def of(cls, errors: list[SieveSyntaxError]) -> SieveSyntaxError:
        """One exception that carries ``errors`` (at least one), sorted by line."""
        ordered = sorted(errors, key=lambda e: e.line)
        first = cls(ordered[0].line, ordered[0].message)
        first.errors = [first, *ordered[1:]]
        return first

    def lines(self) -> list[str]:
        """``line N: message`` for every error."""
        return [str(e) for e in self.errors]

    def report(self) -> str:
        """Every error on its own line, and how many there are when more than one."""
        lines = self.lines()
        if len(lines) > 1:
            lines.append(f"{len(lines)} errors")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Tag:
    name: str  # lower case, without ":"
    line: int


@dataclass(frozen=True, slots=True)
class Number:
    value: int
    line: int


@dataclass(frozen=True, slots=True)
class Strings:
    """A string or a string list; ``is_list`` tells ``"a"`` from ``["a"]``."""

    values: tuple[str, ...]
    is_list: bool
    line: int


Argument = Tag | Number | Strings


@dataclass(slots=True)
class Test:
    name: str
    args: list[Argument]
    tests: list[Test]
    line: int
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(slots=True)
class Command:
    name: str
    args: list[Argument]
    tests: list[Test]
    block: list[Command] | None
    line: int
    # filled in by the checker: tag values and positional arguments by role
    extra: dict[str, object] = field(default_factory=dict)


# --- lexer -------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<hash>\#[^\n]*)
  | (?P<bracket>/\*.*?\*/)
  | (?P<text>text:[ \t]*(?:\#[^\n]*)?\r?\n)
  | (?P<tag>:[A-Za-z_][A-Za-z0-9_]*)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>[0-9]+[KkMmGg]?)
  | (?P<quoted>")
  | (?P<punct>[\[\](),;{}])
    """,
    re.VERBOSE | re.DOTALL,
)

_MULT = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
MAX_NUMBER = (1 << 64) - 1  # RFC 5228 §8.1 numbers are unsigned; Pigeonhole's bound
MAX_IDENTIFIER = 32  # bytes of a command, test or tag name (no extension has longer)


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # ident, tag, number, string, punct, eof
    value: str | int
    line: int


def tokenize(source: str, errors: list[SieveSyntaxError] | None = None) -> list[Token]:
    """The tokens of ``source``. Errors that leave the token stream intact (a number or
    a name too long, a stray character) go to ``errors`` when given, so the parser
    still finds the ones after them; an unterminated string or comment always raises."""
    tokens: list[Token] = []
    pos, line, n = 0, 1, len(source)

    def fail(err: SieveSyntaxError) -> None:
        if errors is None:
            raise err
        errors.append(err)

    while pos < n:
        m = _TOKEN.match(source, pos)
        if m is None:
            if source.startswith("/*", pos):
                raise SieveSyntaxError(line, "unterminated comment")
            fail(SieveSyntaxError(line, f"unexpected character {source[pos]!r}"))
            pos += 1
            continue
        kind = m.lastgroup
        text = m.group()
        if kind == "quoted":
            value, end, lines = _quoted(source, pos + 1, line)
            tokens.append(Token("string", value, line))
            line += lines
            pos = end
            continue
        if kind == "text":
            value, end, lines = _multiline(source, m.end(), line)
            tokens.append(Token("string", value, line))
            line += lines + 1
            pos = end
            continue
        if kind in ("tag", "ident") and len(text) - (kind == "tag") > MAX_IDENTIFIER:
            fail(SieveSyntaxError(line, f"name {text[:MAX_IDENTIFIER]}... is longer than "
                                  f"{MAX_IDENTIFIER} characters"))
            tokens.append(Token("error", text, line))  # the parser skips its command
        elif kind == "tag":
            tokens.append(Token("tag", text[1:].lower(), line))
        elif kind == "ident":
            tokens.append(Token("ident", text.lower(), line))
        elif kind == "number":
            digits = text[:-1] if text[-1].isalpha() else text
            value_n = MAX_NUMBER + 1 if len(digits) > 20 else (
                int(digits) * (_MULT[text[-1].lower()] if text[-1].isalpha() else 1))
            if value_n > MAX_NUMBER:
                fail(SieveSyntaxError(line, f"number {text} is too large"))
                value_n = MAX_NUMBER
            tokens.append(Token("number", value_n, line))
        elif kind == "punct":
            tokens.append(Token("punct", text, line))
        line += text.count("\n")
        pos = m.end()
    tokens.append(Token("eof", "", line))
    return tokens


def _quoted(source: str, pos: int, line: int) -> tuple[str, int, int]:
    """RFC 5228 §2.4.2: backslash escapes any character (only \\\\ and \\" are defined)."""
    out: list[str] = []
    start_line = line
    n = len(source)
    while pos < n:
        c = source[pos]
        if c == '"':
            return "".join(out), pos + 1, line - start_line
        if c == "\\" and pos + 1 < n:
            pos += 1
            c = source[pos]
        if c == "\n":
            line += 1
            if not out or out[-1] != "\r":
                out.append("\r")  # strings hold CRLF line ends (§2.4.2)
        out.append(c)
        pos += 1
    raise SieveSyntaxError(start_line, "unterminated string")


def _multiline(source: str, pos: int, line: int) -> tuple[str, int, int]:
    """``text:`` ... ``.`` (§2.4.2): lines up to a lone dot, leading dots unstuffed."""
    out: list[str] = []
    lines = 0
    n = len(source)
    while pos < n:
        end = source.find("\n", pos)
        raw = source[pos:] if end < 0 else source[pos:end]
        nxt = n if end < 0 else end + 1
        text = raw[:-1] if raw.endswith("\r") else raw
        if text == ".":
            return "".join(out), nxt, lines
        if text.startswith(".."):
            text = text[1:]
        out.append(text + "\r\n")
        lines += 1
        pos = nxt
    raise SieveSyntaxError(line, "unterminated multi-line string (missing \".\" line)")


# --- parser ------------------------------------------------------------------------------


class _Reported(SieveSyntaxError):
    """The parser met a token the lexer already reported: skip, add no error."""


class _Parser:
    def __init__(self, tokens: list[Token], errors: list[SieveSyntaxError] | None = None
                 ) -> None:
        self.tokens = tokens
        self.i = 0
        self.depth = 0
        self.errors = errors  # None: stop at the first error

    def recover(self, err: SieveSyntaxError) -> None:
        """Record ``err`` and skip to the end of the broken command: past its ";" or its
        block, or up to the "}" that closes the enclosing block."""
        if self.errors is None or len(self.errors) >= MAX_ERRORS:
            raise err
        if not isinstance(err, _Reported):
            self.errors.append(err)
        last = self.tokens[self.i - 1]
        if last.kind == "punct" and last.value == ";":  # the error was at the ";"
            return
        depth = 0
        while True:
            tok = self.peek()
            if tok.kind == "eof":
                return
            if tok.kind == "punct":
                if tok.value == "{":
                    depth += 1
                elif tok.value == "}":
                    if depth == 0:
                        return
                    depth -= 1
                    if depth == 0:
                        self.take()
                        return
                elif tok.value == ";" and depth == 0:
                    self.take()
                    return
            self.take()

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def is_punct(self, p: str) -> bool:
        tok = self.tokens[self.i]
        return tok.kind == "punct" and tok.value == p

    def expect(self, p: str) -> None:
        tok = self.take()
        if tok.kind != "punct" or tok.value != p:
            raise _error(tok, f'expected "{p}" but found {_describe(tok)}')

    def commands(self, top: bool) -> list[Command]:
        out: list[Command] = []
        while True:
            tok = self.peek()
            if tok.kind == "eof":
                if not top:
                    raise SieveSyntaxError(tok.line, 'missing "}" at end of script')
                return out
            if not top and self.is_punct("}"):
                return out
            depth = self.depth
            try:
                out.append(self.command())  # takes at least one token
            except SieveSyntaxError as err:
                if err.message.startswith("nesting deeper"):
                    raise
                self.depth = depth
                self.recover(err)
                if not top and self.peek().kind == "eof":
                    return out

    def command(self) -> Command:
        tok = self.take()
        if tok.kind != "ident":
            raise _error(tok, f"expected a command but found {_describe(tok)}")
        args, tests = self.arguments()
        block: list[Command] | None = None
        if self.is_punct("{"):
            self.take()
            self._nest(tok.line)
            block = self.commands(top=False)
            self.depth -= 1
            self.expect("}")
        else:
            nxt = self.peek()
            if not (nxt.kind == "punct" and nxt.value == ";"):
                raise _error(
                    nxt, f'expected ";" after command {tok.value} but found '
                    f"{_describe(nxt)}")
            self.take()
        return Command(str(tok.value), args, tests, block, tok.line)

    def _nest(self, line: int) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise SieveSyntaxError(line, f"nesting deeper than {MAX_NESTING} levels")

    def arguments(self) -> tuple[list[Argument], list[Test]]:
        args: list[Argument] = []
        while True:
            tok = self.peek()
            if tok.kind == "tag":
                self.take()
                args.append(Tag(str(tok.value), tok.line))
            elif tok.kind == "number":
                self.take()
                args.append(Number(int(tok.value), tok.line))
            elif tok.kind == "string":
                self.take()
                args.append(Strings((str(tok.value),), False, tok.line))
            elif self.is_punct("["):
                args.append(self.string_list())
            else:
                break
        tests: list[Test] = []
        tok = self.peek()
        if tok.kind == "ident":
            tests.append(self.test())
        elif self.is_punct("("):
            self.take()
            self._nest(tok.line)
            tests.append(self.test())
            while self.is_punct(","):
                self.take()
                tests.append(self.test())
            self.depth -= 1
            self.expect(")")
        return args, tests

    def string_list(self) -> Strings:
        start = self.take()
        values: list[str] = []
        while True:
            tok = self.take()
            if tok.kind != "string":
                raise _error(tok, f"expected a string in list but found "
                                       f"{_describe(tok)}")
            values.append(str(tok.value))
            if len(values) > MAX_STRING_LIST:
                raise SieveSyntaxError(tok.line, "string list too long")
            tok = self.take()
            if tok.kind == "punct" and tok.value == "]":
                return Strings(tuple(values), True, start.line)
            if not (tok.kind == "punct" and tok.value == ","):
                raise _error(tok, f'expected "," or "]" but found '
                                       f"{_describe(tok)}")

    def test(self) -> Test:
        tok = self.take()
        if tok.kind != "ident":
            raise _error(tok, f"expected a test but found {_describe(tok)}")
        self._nest(tok.line)
        args, tests = self.arguments()
        self.depth -= 1
        return Test(str(tok.value), args, tests, tok.line)


def _error(tok: Token, message: str) -> SieveSyntaxError:
    return (_Reported if tok.kind == "error" else SieveSyntaxError)(tok.line, message)


def _describe(tok: Token) -> str:
    if tok.kind == "eof":
        return "end of script"
    if tok.kind == "string":
        return "a string"
    if tok.kind == "tag":
        return f'tag ":{tok.value}"'
    return f'"{tok.value}"'


MAX_ERRORS = 100  # a script this broken is not worth reading further


def parse(source: str, errors: list[SieveSyntaxError] | None = None) -> list[Command]:
    """The commands of a script; raises ``SieveSyntaxError`` with the line. With
    ``errors``, every error found goes there and parsing goes on after each (the
    commands returned are then incomplete)."""
    return _Parser(tokenize(source, errors), errors).commands(top=True)
