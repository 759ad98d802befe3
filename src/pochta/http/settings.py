"""``[http]``: the HTTP listener role (sending API, unsubscribe pages, later the web admin)."""

from __future__ import annotations

from dataclasses import dataclass, field


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True)
class HTTPSettings:
    max_header_bytes: int = field(
        default=16384, metadata=_doc("request line and headers; more gets 431"))
    max_body_bytes: int = field(
        default=20_971_520,
        metadata=_doc("request body; more gets 413 (checked against Content-Length before "
                      "reading, and while a chunked body arrives)"))
    request_timeout: float = field(
        default=30.0,
        metadata=_doc("seconds from a request's first byte until it is complete (head and "
                      "body): a slow client is answered 408 and disconnected"))
    idle_timeout: float = field(
        default=60.0, metadata=_doc("seconds a kept-alive connection may wait for a request"))
    max_requests_per_connection: int = field(
        default=1000, metadata=_doc("then the connection is closed (clients reconnect)"))
    public_url: str = field(
        default="",
        metadata=_doc("the HTTPS base URL people reach this server at (unsubscribe links), "
                      'e.g. "https://mail.example.org"; empty: https://HOSTNAME with the '
                      "first implicit-TLS http listener's port"))


def check(settings: HTTPSettings) -> list[str]:
    problems = []
    for name in ("max_header_bytes", "max_body_bytes", "max_requests_per_connection"):
        if getattr(settings, name) <= 0:
            problems.append(f"http.{name}: must be positive")
    for name in ("request_timeout", "idle_timeout"):
        if getattr(settings, name) <= 0:
            problems.append(f"http.{name}: must be positive")
    if settings.public_url and not settings.public_url.startswith(("https://", "http://")):
        problems.append("http.public_url: must start with https:// (or http://)")
    return problems
