"""Protocol trace for chosen client IPs (``[log] trace_ips``) and accounts (``[log]
trace_accounts``: from the login on, ``trace_account``), with secrets redacted.

Every line a traced client sends and every line the server answers is logged on the
``pochta.trace`` logger, so an admin can debug one user's client without turning on a
debug log for everybody. Passwords and SASL data never reach the log.

Client bytes are traced as the session reads them, which may be before the server has
answered anything (a pipelining client sends ``AUTH LOGIN``, its user name and its
password in one packet). So redaction follows the protocol state the client's own lines
set, not only the server's prompts:

- SMTP and POP3: an ``AUTH`` command (RFC 4954, RFC 5034) makes every following client
  line secret until the server answers with something other than a challenge (``334`` /
  ``+``); its initial response is secret too. POP3 ``PASS`` and ``APOP`` arguments are.
- IMAP: literals are followed octet by octet (RFC 9051 §4.3, RFC 7888), so a password
  sent as a literal, synchronizing or not, is secret however many lines it spans.
  Everything after LOGIN's user name is secret (§6.2.3); AUTHENTICATE's initial response
  (RFC 4959) and every line until the server's tagged answer to it are (§6.2.2).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Protocol

log = logging.getLogger("pochta.trace")

_SMTP_AUTH = re.compile(rb"^(AUTH\s+\S+)\s+\S+", re.IGNORECASE)  # with initial response
_AUTH_START = re.compile(rb"^AUTH\s+\S+", re.IGNORECASE)  # any SASL exchange
_POP_PASS = re.compile(rb"^(PASS|APOP\s+\S+)\s+.*$", re.IGNORECASE)
_IMAP_COMMAND = re.compile(rb"^(\S+)\s+(?:UID\s+)?(\S+)\s*", re.IGNORECASE)
_IMAP_LITERAL = re.compile(rb"~?\{(\d{1,20})[+-]?\}\Z")
# server lines that continue a literal or IDLE, not a SASL challenge
_IMAP_PLAIN_CONTINUATIONS = (b"+ Ready for literal data", b"+ idling")
MAX_LINE = 200
_KEEP = 4096  # of a client line still waiting for its end of line
_SECRET = b"***"


class Tracer:
    def __init__(self, role: str, conn_id: str, peer: str) -> None:
        self.role = role
        self.conn_id = conn_id
        self.peer = peer
        self._smtp = role in ("mta", "submission")
        self._challenged = False  # client lines are SASL data until the server says more
        self._partial = bytearray()  # a client line without its end yet (first _KEEP bytes)
        self._tail = b""  # its last bytes, where an IMAP literal is announced
        self._long = False
        # IMAP: the command being sent, which continues after each literal
        self._cmd_tag: bytes | None = None
        self._cmd_secret_rest = False  # what follows in this command is secret (LOGIN)
        self._login_user_literal = False  # LOGIN's user name is the literal being read
        self._sasl_tag: bytes | None = None  # AUTHENTICATE running under this tag
        self._literal_left = 0
        self._literal_secret = False
        self._literal_started = False
        self._literal_text = bytearray()  # a literal shown line by line (first _KEEP bytes)

    # --- input ---------------------------------------------------------------------

    def client(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end:
            if self._literal_left:
                n = min(self._literal_left, end - pos)
                self._literal(data[pos : pos + n])
                pos += n
                continue
            nl = data.find(b"\n", pos)
            if nl < 0:
                self._add_partial(data[pos:])
                return
            self._add_partial(data[pos:nl])
            pos = nl + 1
            line = bytes(self._partial).rstrip(b"\r")
            tail = self._tail.rstrip(b"\r") if self._long else line
            self._partial.clear()
            self._tail = b""
            self._long = False
            self._emit("C", self._client_line(line, tail))

    def server(self, data: bytes) -> None:
        for raw in data.split(b"\n"):
            line = raw.rstrip(b"\r")
            if not line:
                continue
            if self._smtp:
                self._challenged = line.startswith(b"334")
            elif self.role == "imap":
                self._imap_server_line(line)
            else:
                self._challenged = line.startswith(b"+ ") or line == b"+"
            self._emit("S", line)

    def redact_client(self, line: bytes) -> bytes:
        """One complete client line (without CRLF) as it is logged; updates the state."""
        return self._client_line(line, line)

    # --- client lines ---------------------------------------------------------------

    def _add_partial(self, chunk: bytes) -> None:
        room = _KEEP - len(self._partial)
        if room > 0:
            self._partial += chunk[:room]
        if len(chunk) > room:
            self._long = True
            self._tail = (self._tail + chunk)[-64:]

    def _client_line(self, line: bytes, tail: bytes) -> bytes:
        if self.role == "imap":
            return self._imap_client_line(line, tail)
        if self._challenged:
            return _SECRET
        m = _POP_PASS.match(line) if self.role == "pop3" else None
        if m:
            return m.group(1) + b" " + _SECRET
        if _AUTH_START.match(line):
            # the lines after AUTH answer its challenges, even before the server sent one
            self._challenged = True
            m = _SMTP_AUTH.match(line)
            if m:
                return m.group(1) + b" " + _SECRET
        return line

    # --- IMAP -----------------------------------------------------------------------

    def _imap_client_line(self, line: bytes, tail: bytes) -> bytes:
        if self._cmd_tag is None and (self._sasl_tag is not None or self._challenged):
            return _SECRET  # an AUTHENTICATE response (or the client's "*" cancelling it)
        literal = _IMAP_LITERAL.search(tail)
        secret_literal = False
        shown = line
        if self._cmd_tag is None:  # the first line of a command
            m = _IMAP_COMMAND.match(line)
            tag = m.group(1) if m else b"*"
            self._cmd_tag = tag
            name = m.group(2).upper() if m else b""
            if name == b"LOGIN" and m is not None:
                shown, secret_literal = self._login_first_line(line, m.end(), literal)
            elif name == b"AUTHENTICATE" and m is not None:
                self._sasl_tag = tag
                secret_literal = True  # not in the grammar; never shown
                parts = line[m.end() :].split(None, 1)
                if len(parts) > 1:  # SASL-IR (RFC 4959)
                    shown = line[: m.end()] + parts[0] + b" " + _SECRET
        elif self._cmd_secret_rest:
            shown = _SECRET if line.strip() else line
            secret_literal = True
        if literal is None:
            self._end_command()
        else:
            self._literal_left = int(literal.group(1))
            self._literal_secret = secret_literal
            self._literal_started = False
            if self._literal_left == 0:
                self._literal_done()
        return shown

    def _login_first_line(
        self, line: bytes, start: int, literal: re.Match[bytes] | None
    ) -> tuple[bytes, bool]:
        """``tag LOGIN user password``: the user name stays, the rest is secret."""
        self._cmd_secret_rest = True
        if literal is not None and literal.start() == start:
            self._login_user_literal = True  # the user name is the literal
            return line, False
        end = _astring_end(line, start)
        if end >= len(line):
            return line, True
        return line[:end] + b" " + _SECRET, True

    def _literal(self, data: bytes) -> None:
        self._literal_left -= len(data)
        self._literal_started = True
        if not self._literal_secret:
            text = self._literal_text + data
            *lines, rest = text.split(b"\n")
            for line in lines:
                self._emit("C", bytes(line).rstrip(b"\r"))
            self._literal_text = bytearray(rest[:_KEEP])
        if self._literal_left == 0:
            self._literal_done()

    def _literal_done(self) -> None:
        if self._literal_secret:
            self._emit("C", _SECRET)
        elif self._literal_text:
            self._emit("C", bytes(self._literal_text).rstrip(b"\r"))
        self._literal_text.clear()
        if self._login_user_literal:
            self._login_user_literal = False  # the password comes next: secret
        self._literal_secret = False

    def _end_command(self) -> None:
        self._cmd_tag = None
        self._cmd_secret_rest = False
        self._login_user_literal = False

    def _imap_server_line(self, line: bytes) -> None:
        if line.startswith(b"+"):
            self._challenged = not line.startswith(_IMAP_PLAIN_CONTINUATIONS)
            return
        self._challenged = False
        if self._sasl_tag is not None and line.startswith(self._sasl_tag + b" "):
            self._sasl_tag = None  # the tagged answer ends AUTHENTICATE
        tag = self._cmd_tag
        if tag is not None and line.startswith(tag + b" ") and not self._literal_started:
            # a refused synchronizing literal is never sent (RFC 9051 §7.5)
            self._literal_left = 0
            self._literal_secret = False
            self._end_command()

    def _emit(self, direction: str, line: bytes) -> None:
        text = line[:MAX_LINE].decode("utf-8", "backslashreplace")
        more = "..." if len(line) > MAX_LINE else ""
        log.info("ip=%s %s: %s%s", self.peer, direction, text, more)  # conn=: logsetup


def _astring_end(line: bytes, start: int) -> int:
    """Where the astring that begins at ``start`` ends (quoted with escapes, or atom)."""
    if line[start : start + 1] == b'"':
        i = start + 1
        while i < len(line):
            if line[i] == 0x5C:  # backslash escapes the next octet
                i += 2
                continue
            if line[i] == 0x22:
                return i + 1
            i += 1
        return len(line)
    sp = line.find(b" ", start)
    return len(line) if sp < 0 else sp


class Traced(Protocol):
    """What ``trace_account`` needs of a connection (server/listener.py Connection)."""

    conn_id: str
    peer_ip: str
    tracer: Tracer | None


def trace_account(conn: Traced, role: str, address: str, accounts: Sequence[str]) -> None:
    """Start tracing a session whose user is one of ``accounts`` (``[log]
    trace_accounts``), from the login on: what came before (the credentials) is not
    traced, and a session already traced by its IP goes on as it was."""
    if conn.tracer is not None or not accounts:
        return
    wanted = address.lower()
    if any(wanted == a.lower() for a in accounts):
        conn.tracer = Tracer(role, conn.conn_id, conn.peer_ip)
        log.info("ip=%s trace of %s session of account %s starts after its login",
                 conn.peer_ip, role, address)
