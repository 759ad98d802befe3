"""A cursor over one framed command, and the small grammar rules of RFC 9051 §9.

Raises ``ParseError`` (never anything else) on bad syntax; the session turns it into BAD.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass

from pochta.proto.imap.framer import LiteralSink, RawCommand
from pochta.proto.imap.mutf7 import decode_mutf7

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_ATOM_SPECIALS = set('(){ %*"\\]') | {chr(c) for c in range(0x20)} | {"\x7f"}
_LITERAL_TAIL = re.compile(r"~?\{\d+[+-]?\}\Z")
_DATE_RE = re.compile(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})\Z")
_DATETIME_RE = re.compile(
    r"([ \d]\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)\Z"
)


class ParseError(Exception):
    """Bad command syntax; the message is safe to show to the client."""


@dataclass(frozen=True, slots=True)
class Date:
    year: int
    month: int
    day: int

    def ordinal(self) -> tuple[int, int, int]:
        return (self.year, self.month, self.day)


def decode_command(raw: RawCommand) -> list[str]:
    """The command text as str; NUL and invalid UTF-8 are refused (RFC 9051 §9)."""
    out = []
    for line in raw.lines:
        if b"\x00" in line:
            raise ParseError("NUL in command")
        try:
            out.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            raise ParseError("invalid UTF-8 in command") from None
    return out


class Reader:
    def __init__(self, raw: RawCommand, utf8: bool = True) -> None:
        self.lines = decode_command(raw)
        self.literals = raw.literals
        self.spooled = dict(raw.spooled)
        self.i = 0  # line index
        self.pos = 0
        self.utf8 = utf8  # mailbox names are UTF-8 (IMAP4rev2/UTF8=ACCEPT), else modified UTF-7

    # --- low level -------------------------------------------------------------------
    @property
    def line(self) -> str:
        return self.lines[self.i]

    def peek(self, n: int = 1) -> str:
        return self.line[self.pos : self.pos + n]

    def at_end(self) -> bool:
        return self.i == len(self.lines) - 1 and self.pos >= len(self.line)

    def end(self) -> None:
        if not self.at_end():
            raise ParseError("unexpected extra arguments")

    def sp(self) -> None:
        if self.peek() != " ":
            raise ParseError("expected a space")
        self.pos += 1

    def maybe_sp(self) -> bool:
        if self.peek() == " ":
            self.pos += 1
            return True
        return False

    def expect(self, text: str) -> None:
        if self.line[self.pos : self.pos + len(text)].upper() != text.upper():
            raise ParseError(f"expected {text}")
        self.pos += len(text)

    def accept(self, text: str) -> bool:
        if self.line[self.pos : self.pos + len(text)].upper() == text.upper():
            self.pos += len(text)
            return True
        return False

    def _take_while(self, ok: set[str], extra: str = "") -> str:
        start = self.pos
        line = self.line
        while self.pos < len(line) and (line[self.pos] not in ok or line[self.pos] in extra):
            self.pos += 1
        return line[start : self.pos]

    # --- tokens ----------------------------------------------------------------------
    def atom(self, allow: str = "") -> str:
        """atom; ``allow`` lists atom-specials accepted here (e.g. "]" for ASTRING-CHAR)."""
        word = self._take_while(_ATOM_SPECIALS, allow)
        if not word:
            raise ParseError("expected an atom")
        return word

    def tag(self) -> str:
        word = self.atom()
        if "+" in word:
            raise ParseError("bad tag")
        return word

    def number(self, nonzero: bool = False) -> int:
        start = self.pos
        while self.pos < len(self.line) and self.line[self.pos].isdigit():
            self.pos += 1
        digits = self.line[start : self.pos]
        if not digits or not digits.isascii():
            raise ParseError("expected a number")
        value = int(digits)
        if value > 2**63 - 1 or (nonzero and value == 0):
            raise ParseError("number out of range")
        return value

    def _literal(self) -> bytes | None:
        if not self.is_literal_next():
            return None
        if self.i in self.spooled:
            raise ParseError("literal too large here")
        data = self.literals[self.i]
        self.i += 1
        self.pos = 0
        return data

    def string_bytes(self) -> bytes:
        """quoted or literal, as bytes."""
        if self.peek() == '"':
            return self._quoted().encode("utf-8")
        data = self._literal()
        if data is None:
            raise ParseError("expected a string")
        return data

    def _quoted(self) -> str:
        self.pos += 1
        out: list[str] = []
        line = self.line
        while self.pos < len(line):
            c = line[self.pos]
            self.pos += 1
            if c == '"':
                return "".join(out)
            if c == "\\":
                if self.pos >= len(line) or line[self.pos] not in '"\\':
                    raise ParseError("bad escape in quoted string")
                c = line[self.pos]
                self.pos += 1
            elif c in "\r\n":
                raise ParseError("CR/LF in quoted string")
            out.append(c)
        raise ParseError("unterminated quoted string")

    def message(self) -> bytes | LiteralSink:
        """APPEND's message: a string, or the sink a big literal was spooled to."""
        if self.is_literal_next() and self.i in self.spooled:
            sink = self.spooled[self.i]
            self.i += 1
            self.pos = 0
            return sink
        return self.string_bytes()

    def string(self) -> str:
        if self.peek() == '"':
            return self._quoted()
        return _utf8(self.string_bytes())

    def is_literal_next(self) -> bool:
        # anchored at the cursor: searching the whole line for every string made a command
        # of many strings quadratic (SEARCH FROM q FROM q ...)
        line = self.line
        if self.pos >= len(line) or line[self.pos] not in "{~":
            return False
        return _LITERAL_TAIL.match(line, self.pos) is not None and self.i < len(self.literals)

    def astring(self) -> str:
        if self.peek() == '"' or self.is_literal_next():
            return self.string()
        return self.atom(allow="]")

    def nstring(self) -> str | None:
        if self.accept("NIL"):
            return None
        return self.string()

    def mailbox(self) -> str:
        """A mailbox name: INBOX is case-insensitive (RFC 9051 §5.1)."""
        name = self.astring()
        if not self.utf8:
            name = decode_mutf7(name)
        return normalize_mailbox(name)

    def list_mailbox(self) -> str:
        """list-mailbox: astring plus the wildcards % and *."""
        if self.peek() == '"' or self.is_literal_next():
            name = self.string()
        else:
            name = self.atom(allow="]%*")
        return name if self.utf8 else decode_mutf7(name)

    def flag(self) -> str:
        if self.accept("\\"):
            if self.accept("*"):
                return "\\*"
            return "\\" + self.atom().capitalize()
        return self.atom()

    def flag_list(self) -> list[str]:
        self.expect("(")
        flags: list[str] = []
        if self.accept(")"):
            return flags
        while True:
            flags.append(self.flag())
            if self.accept(")"):
                return flags
            self.sp()

    def paren_list(self, limit: int = 1000) -> list[str]:
        """( atom *(SP atom) ) of at most ``limit`` astrings."""
        self.expect("(")
        out: list[str] = []
        if self.accept(")"):
            return out
        while True:
            if len(out) >= limit:
                raise ParseError(f"list too long (at most {limit} items)")
            out.append(self.astring())
            if self.accept(")"):
                return out
            self.sp()

    def date(self) -> Date:
        quoted = self.peek() == '"'
        text = self._quoted() if quoted else self.atom()
        m = _DATE_RE.fullmatch(text)
        if not m or m.group(2).capitalize() not in MONTHS:
            raise ParseError("bad date")
        return Date(int(m.group(3)), MONTHS.index(m.group(2).capitalize()) + 1, int(m.group(1)))

    def date_time(self) -> float:
        """RFC 9051 date-time ("17-Jul-1996 02:44:25 -0700") as POSIX seconds."""
        if self.peek() != '"':
            raise ParseError("expected a quoted date-time")
        m = _DATETIME_RE.fullmatch(self._quoted())
        if not m or m.group(2).capitalize() not in MONTHS:
            raise ParseError("bad date-time")
        day, mon, year = int(m.group(1)), MONTHS.index(m.group(2).capitalize()) + 1, int(m.group(3))
        hh, mm, ss = int(m.group(4)), int(m.group(5)), int(m.group(6))
        if not (1 <= day <= 31 and hh < 24 and mm < 60 and ss < 61):
            raise ParseError("bad date-time")
        offset = (int(m.group(8)) * 60 + int(m.group(9))) * 60
        if m.group(7) == "-":
            offset = -offset
        return float(calendar.timegm((year, mon, day, hh, mm, ss, 0, 0, 0)) - offset)


def _utf8(data: bytes) -> str:
    if b"\x00" in data:
        raise ParseError("NUL in string")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("invalid UTF-8 in string") from None


def normalize_mailbox(name: str) -> str:
    if name.upper() == "INBOX":
        return "INBOX"
    if name.upper().startswith("INBOX/"):
        return "INBOX" + name[5:]
    return name


def valid_mailbox_name(name: str) -> bool:
    """Names we create: no empty levels, no control characters, no wildcards."""
    if not name or len(name) > 512 or name.startswith("/") or name.endswith("/") or "//" in name:
        return False
    return not any(c in "%*" or ord(c) < 0x20 or ord(c) == 0x7F for c in name)
