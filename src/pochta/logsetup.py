"""Logging: one line per event, as text or JSON (``[log] format``).

Every line logged while serving a connection carries that connection's id, as
``conn=ID`` after the logger name (``"conn"`` in JSON), whichever module logs it (the
protocol driver, the auth service, the store): the listener sets it in a context
variable when the connection's task starts. Ids come from ``new_connection_id``: a
random prefix drawn at start plus a counter, e.g. ``k3f9q.1c``, so they are short,
ordered within a run, and never repeat after a restart (a plain counter would).
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import secrets
import sys
import time

# The connection (and the role of its listener) whose task is running, or None.
CONNECTION: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "pochta_connection", default=None)

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32: no i, l, o, u
_RUN = "".join(secrets.choice(_ALPHABET) for _ in range(5))
_counter = itertools.count(1)


def _base32(n: int) -> str:
    out = ""
    while True:
        n, digit = divmod(n, 32)
        out = _ALPHABET[digit] + out
        if not n:
            return out


def new_connection_id() -> str:
    """``<run>.<n>``: 5 random characters for this process, then a base-32 counter."""
    return f"{_RUN}.{_base32(next(_counter))}"


def current_role() -> str:
    """The listener role (mta, submission, imap, pop3) of the running connection, or ""."""
    value = CONNECTION.get()
    return value[1] if value else ""


class ConnectionFilter(logging.Filter):
    """Adds ``record.conn`` (the connection id or "") and ``record.conn_prefix``."""

    def filter(self, record: logging.LogRecord) -> bool:
        value = CONNECTION.get()
        record.conn = value[0] if value else ""
        record.conn_prefix = f"conn={value[0]} " if value else ""
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        conn = getattr(record, "conn", "")
        if conn:
            entry["conn"] = conn
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(conn_prefix)s%(message)s"))
    handler.addFilter(ConnectionFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # asyncio reports every failed TLS handshake (port scanners, plaintext on 465) as an
    # error with a traceback; they are routine for a mail server.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
