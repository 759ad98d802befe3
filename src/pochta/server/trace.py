"""Protocol trace for chosen client IPs (``[log] trace_ips``), with secrets redacted.

Every line a traced client sends and every line the server answers is logged on the
``pochta.trace`` logger, so an admin can debug one user's client without turning on a
debug log for everybody. Passwords and SASL data never reach the log: AUTH/AUTHENTICATE
initial responses, every client line that answers a SASL challenge (SMTP ``334``,
IMAP/POP3 ``+``), IMAP LOGIN's password and POP3 PASS are replaced by ``***``.
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger("pochta.trace")

_SMTP_AUTH = re.compile(rb"^(AUTH\s+\S+)\s+\S+", re.IGNORECASE)
_IMAP_LOGIN = re.compile(rb"^(\S+\s+LOGIN\s+(?:\"(?:[^\"\\]|\\.)*\"|\S+))\s+.*$", re.IGNORECASE)
_IMAP_AUTH = re.compile(rb"^(\S+\s+AUTHENTICATE\s+\S+)\s+\S+", re.IGNORECASE)
_POP_PASS = re.compile(rb"^(PASS|APOP\s+\S+)\s+.*$", re.IGNORECASE)
MAX_LINE = 200


class Tracer:
    def __init__(self, role: str, conn_id: str, peer: str) -> None:
        self.role = role
        self.conn_id = conn_id
        self.peer = peer
        self._challenged = False  # the last server line was a SASL challenge
        self._partial = b""

    def client(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()[:4096]
        for raw in lines:
            self._emit("C", self.redact_client(raw.rstrip(b"\r")))

    def server(self, data: bytes) -> None:
        for raw in data.split(b"\n"):
            line = raw.rstrip(b"\r")
            if not line:
                continue
            if self.role in ("mta", "submission"):
                self._challenged = line.startswith(b"334 ")
            else:
                self._challenged = line.startswith(b"+ ") or line == b"+"
            self._emit("S", line)

    def redact_client(self, line: bytes) -> bytes:
        if self._challenged:
            return b"***"
        for pattern in (_SMTP_AUTH, _IMAP_LOGIN, _IMAP_AUTH, _POP_PASS):
            m = pattern.match(line)
            if m:
                return m.group(1) + b" ***"
        if self.role == "pop3" and line.upper().startswith(b"AUTH ") and line.count(b" ") >= 2:
            return b" ".join(line.split(b" ")[:2]) + b" ***"
        return line

    def _emit(self, direction: str, line: bytes) -> None:
        text = line[:MAX_LINE].decode("utf-8", "backslashreplace")
        more = "..." if len(line) > MAX_LINE else ""
        log.info("ip=%s %s: %s%s", self.peer, direction, text, more)  # conn=: logsetup
