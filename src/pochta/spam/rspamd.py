"""A client of rspamd's HTTP protocol: ``POST /checkv2`` on the normal worker (the message
as the body, the envelope in headers: From, Rcpt, IP, Helo, User, Queue-Id) and
``/learnspam``/``/learnham`` on the controller. HTTP/1.1 over asyncio streams, one request
per connection (rspamd closes or keeps alive; we read to Content-Length either way).

Actions (rspamd's ``action``): reject, soft reject, rewrite subject, add header, greylist,
no action.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("pochta.spam")


class RspamdError(Exception):
    """rspamd did not answer, or not with a usable reply."""


@dataclass(frozen=True, slots=True)
class RspamdResult:
    action: str
    score: float
    required_score: float
    symbols: tuple[str, ...]
    smtp_message: str = ""
    subject: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


async def _post(url: str, path: str, body: bytes, headers: Sequence[tuple[str, str]],
                timeout: float) -> tuple[int, bytes]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80

    async def run() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}",
                    f"Content-Length: {len(body)}", "Connection: close"]
            head += [f"{k}: {v}" for k, v in headers]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("utf-8") + body)
            await writer.drain()
            status_line = await reader.readline()
            try:
                status = int(status_line.split()[1])
            except (IndexError, ValueError):
                raise RspamdError(f"bad HTTP status line {status_line[:80]!r}") from None
            length: int | None = None
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            data = await (reader.readexactly(length) if length is not None else reader.read())
            return status, data
        finally:
            writer.close()

    try:
        return await asyncio.wait_for(run(), timeout)
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        raise RspamdError(f"{url}{path}: {exc or type(exc).__name__}") from exc


class RspamdClient:
    def __init__(self, url: str, timeout: float, controller: str = "", password: str = ""
                 ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.controller = controller.rstrip("/")
        self.password = password
        self.failures = 0  # unanswered checks since start (logged and counted)

    async def check(self, message: bytes, *, sender: str, recipients: Sequence[str],
                    ip: str, helo: str, user: str | None, queue_id: str = "",
                    hostname: str = "") -> RspamdResult:
        headers = [("From", sender or "<>"), ("IP", ip), ("Helo", helo or "unknown"),
                   ("Pass", "all")]
        headers += [("Rcpt", r) for r in recipients]
        if user:
            headers.append(("User", user))
        if queue_id:
            headers.append(("Queue-Id", queue_id))
        if hostname:
            headers.append(("MTA-Name", hostname))
        try:
            status, body = await _post(self.url, "/checkv2", message, headers, self.timeout)
            if status != 200:
                raise RspamdError(f"/checkv2 answered HTTP {status}: {body[:200]!r}")
            data = json.loads(body)
            if not isinstance(data, dict) or "action" not in data:
                raise RspamdError(f"/checkv2: no action in {body[:200]!r}")
        except (RspamdError, ValueError) as exc:
            self.failures += 1
            raise RspamdError(str(exc)) from exc
        symbols = data.get("symbols") or {}
        messages = data.get("messages") or {}
        return RspamdResult(
            action=str(data["action"]),
            score=float(data.get("score", 0.0)),
            required_score=float(data.get("required_score", 0.0)),
            symbols=tuple(sorted(symbols)) if isinstance(symbols, dict) else (),
            smtp_message=str(messages.get("smtp_message", "")) if isinstance(
                messages, dict) else "",
            subject=str(data.get("subject", "")),
            raw=data,
        )

    async def learn(self, message: bytes, spam: bool) -> bool:
        """Teach rspamd's statistics (controller ``/learnspam`` or ``/learnham``)."""
        if not self.controller:
            return False
        headers = [("Password", self.password)] if self.password else []
        path = "/learnspam" if spam else "/learnham"
        try:
            status, body = await _post(self.controller, path, message, headers, self.timeout)
        except RspamdError as exc:
            log.warning("rspamd learn failed: %s", exc)
            return False
        if status != 200:
            log.warning("rspamd %s answered HTTP %d: %s", path, status, body[:200])
            return False
        return True
