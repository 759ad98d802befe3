"""Splits the client byte stream into IMAP commands (RFC 9051 §2.2, §4.3; RFC 7888).

A command is one or more lines; a line ending in ``{n}``, ``{n+}`` or ``~{n}`` announces a
literal of n octets that follows the CRLF, after which the command line continues.
Synchronizing literals need a ``+`` continuation from the server first; the framer asks
for it with a ``NeedContinuation`` event and the driver writes it, so a literal that is
refused is never uploaded.

Limits are checked when a literal is announced, before any of it is buffered: the driver's
``literal_limit`` sees the command so far (``CommandSoFar``) and may refuse. A refused
non-synchronizing literal is already on its way, so the framer asks the driver to close
the connection rather than read (and buffer) it (RFC 7888 §4).

A literal may also be *spooled*: the driver's ``spool(so_far, size)`` may hand back a
``LiteralSink`` (APPEND's big message: a private temporary file), and the literal's octets
go to it as they arrive instead of into memory; the command then carries the sink in
``RawCommand.spooled`` and an empty placeholder in ``literals``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

# ends of a line that announce a literal: "{12}", "{12+}", "~{12}" (RFC 3516 literal8)
_LITERAL_RE = re.compile(rb"(~?)\{(\d{1,20})([+-]?)\}\r?\n\Z")


class LiteralSink(Protocol):
    """Where a spooled literal's octets go (the driver's temporary file)."""

    def write(self, data: bytes) -> None: ...

    def finish(self) -> None:
        """Every octet was written."""

    def discard(self) -> None:
        """Drop what was written (the command was abandoned or is done)."""


@dataclass(frozen=True, slots=True)
class RawCommand:
    """One complete command: ``lines[i]`` (CRLF stripped) is followed by ``literals[i]``
    (b"" when that literal was spooled: ``spooled`` maps its index to the sink)."""

    lines: tuple[bytes, ...]
    literals: tuple[bytes, ...]
    spooled: tuple[tuple[int, LiteralSink], ...] = ()

    def discard_spooled(self) -> None:
        for _, sink in self.spooled:
            sink.discard()

    @property
    def first_line(self) -> bytes:
        return self.lines[0]


@dataclass(frozen=True, slots=True)
class NeedContinuation:
    """The client waits for ``+`` before sending a synchronizing literal."""


@dataclass(frozen=True, slots=True)
class FramingError:
    """The command was abandoned; reply ``tag BAD/NO text`` (``close``: then say BYE)."""

    tag: bytes
    response: bytes  # e.g. b"BAD line too long" or b"NO [TOOBIG] ..."
    close: bool = False


FramerEvent = RawCommand | NeedContinuation | FramingError


@dataclass(frozen=True, slots=True)
class CommandSoFar:
    """What a command holds when its next literal is announced."""

    first_line: bytes
    literals: int  # literals already read
    size: int  # bytes so far: command text and literals
    largest: int  # the largest literal so far (0 if none)
    spooled: int = 0  # bytes of literals written to a sink (not in memory)


def tag_of(line: bytes) -> bytes:
    """The tag of a (possibly partial) command line, or ``*`` if it has none usable."""
    tag = line.split(b" ", 1)[0].strip()
    if not tag or not re.fullmatch(rb"[\x21-\x7e]{1,64}", tag) or any(
        c in tag for c in b'(){%*"\\+'
    ):
        return b"*"
    return tag


@dataclass
class Framer:
    """Feed bytes, pull events. ``literal_limit(so_far, size)`` returns None to accept a
    literal of ``size`` octets or a response (``b"NO [TOOBIG] ..."``) to refuse it.
    ``max_line`` bounds the command text (literals excluded); the driver may change it
    between commands (a smaller one before login)."""

    max_line: int = 65536
    literal_limit: Callable[[CommandSoFar, int], bytes | None] | None = None
    # a command whose first octets earn a larger ``max_line`` (ID before login)
    line_limit: Callable[[bytes], int] | None = None
    spool: Callable[[CommandSoFar, int], LiteralSink | None] | None = None
    _sink: LiteralSink | None = None  # the literal being read goes there
    _spooled: list[tuple[int, LiteralSink]] = field(default_factory=list)
    _buf: bytearray = field(default_factory=bytearray)
    _lines: list[bytes] = field(default_factory=list)
    _literals: list[bytes] = field(default_factory=list)
    _literal_wanted: int = -1  # >= 0 while reading a literal
    _line_bytes: int = 0  # command text so far (literals excluded)
    _literal_bytes: int = 0  # literals so far
    _largest: int = 0  # the largest literal so far
    _spooled_bytes: int = 0
    _discarding: bool = False  # skipping the rest of an over-long line
    _sink_size: int = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def discard_buffer(self) -> None:
        """STARTTLS: plaintext pipelined after the command must not be used (RFC 9051 §6.2.1)."""
        self._buf.clear()

    def next_line(self) -> bytes | None:
        """A raw line without literal processing (AUTHENTICATE responses, IDLE's DONE).
        Returns None if incomplete; over-long lines come back truncated to ``max_line``."""
        nl = self._buf.find(b"\n")
        if nl < 0:
            if len(self._buf) > self.max_line:
                line = bytes(self._buf[: self.max_line])
                self._buf.clear()
                self._discarding = True
                return line
            return None
        line = bytes(self._buf[:nl])
        del self._buf[: nl + 1]
        if self._discarding:
            self._discarding = False
            return self.next_line()
        return line.rstrip(b"\r")

    def next_event(self) -> FramerEvent | None:
        while True:
            if self._literal_wanted >= 0 and self._sink is not None:
                take = min(len(self._buf), self._literal_wanted)
                if take:
                    self._sink.write(bytes(self._buf[:take]))
                    del self._buf[:take]
                    self._literal_wanted -= take
                    self._literal_bytes += take
                if self._literal_wanted:
                    return None
                self._sink.finish()
                self._spooled.append((len(self._literals), self._sink))
                self._literals.append(b"")
                self._largest = max(self._largest, self._sink_size)
                self._spooled_bytes += self._sink_size
                self._sink = None
                self._literal_wanted = -1
                continue
            if self._literal_wanted >= 0:
                if len(self._buf) < self._literal_wanted:
                    return None
                self._literals.append(bytes(self._buf[: self._literal_wanted]))
                self._literal_bytes += self._literal_wanted
                self._largest = max(self._largest, self._literal_wanted)
                del self._buf[: self._literal_wanted]
                self._literal_wanted = -1
                continue
            nl = self._buf.find(b"\n")
            if self._discarding:
                if nl < 0:
                    self._buf.clear()
                    return None
                del self._buf[: nl + 1]
                self._discarding = False
                continue
            if nl < 0:
                if self._line_bytes + len(self._buf) > self._max_line_of(
                        self._lines[0] if self._lines else bytes(self._buf[:64])):
                    first = self._lines[0] if self._lines else bytes(self._buf[:200])
                    self._reset()
                    self._buf.clear()
                    self._discarding = True
                    return FramingError(tag_of(first), b"BAD line too long")
                return None
            raw = bytes(self._buf[: nl + 1])
            del self._buf[: nl + 1]
            self._line_bytes += len(raw)
            if self._line_bytes > self._max_line_of(self._lines[0] if self._lines else raw):
                first = self._lines[0] if self._lines else raw
                self._reset()
                return FramingError(tag_of(first), b"BAD line too long")
            m = _LITERAL_RE.search(raw)
            if m is None:
                self._lines.append(raw.rstrip(b"\r\n"))
                cmd = RawCommand(tuple(self._lines), tuple(self._literals),
                                 tuple(self._spooled))
                self._spooled = []
                self._reset()
                return cmd
            line = raw[: m.start()] + raw[m.start() : m.end()].rstrip(b"\r\n")
            self._lines.append(line)
            size = int(m.group(2))
            sync = m.group(3) == b""
            first = self._lines[0]
            refusal = None
            if self.literal_limit is not None:
                so_far = CommandSoFar(first, len(self._literals),
                                      self._line_bytes + self._literal_bytes, self._largest,
                                      self._spooled_bytes)
                refusal = self.literal_limit(so_far, size)
            if refusal is not None:
                self._reset()
                if sync:
                    # the client has not sent the literal: nothing to skip (RFC 9051 §7.5)
                    return FramingError(tag_of(first), refusal)
                # a non-synchronizing literal is already on its way (RFC 7888 §4)
                return FramingError(tag_of(first), refusal, close=True)
            self._literal_wanted = size
            if self.spool is not None and size:
                so_far = CommandSoFar(first, len(self._literals),
                                      self._line_bytes + self._literal_bytes, self._largest,
                                      self._spooled_bytes)
                self._sink = self.spool(so_far, size)
                self._sink_size = size
            if sync:
                return NeedContinuation()

    def _max_line_of(self, first: bytes) -> int:
        if self.line_limit is None:
            return self.max_line
        return max(self.max_line, self.line_limit(first))

    def abandon(self) -> None:
        """The connection is gone: drop a command in progress (and its spooled literals)."""
        self._reset()

    def _reset(self) -> None:
        if self._sink is not None:
            self._sink.discard()
            self._sink = None
        for _, sink in self._spooled:
            sink.discard()
        self._spooled = []
        self._lines = []
        self._literals = []
        self._literal_wanted = -1
        self._line_bytes = 0
        self._literal_bytes = 0
        self._largest = 0
        self._spooled_bytes = 0
