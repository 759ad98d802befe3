"""The HTTP/1.1 server core: bytes in, whole requests out; responses in, bytes out. No I/O.

HTTP/1.1 framing (request line, header block, Content-Length, chunked bodies, keep-alive,
pipelining, ``Expect: 100-continue``) is done by h11 (python-hyper/h11), the reference
sans-IO implementation: framing is where hand-written HTTP servers get request smuggling
wrong, and h11 rejects every ambiguous framing (both Content-Length and chunked, bad
chunk sizes, obsolete line folding). This module adds what a server that faces the
Internet needs on top: a limit on the request head (431), on the body (413, checked
against Content-Length before reading a byte and while a chunked body arrives), and
whole-request objects. The driver (server/http.py) adds the clock: a deadline for the
head and for the body, so a slow client cannot hold a connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

import h11

DEFAULT_MAX_HEAD = 16 * 1024  # request line and headers; nginx's default is 1 KiB + 4x8 KiB
DEFAULT_MAX_BODY = 10 * 1024 * 1024

REASONS = {
    200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 303: "See Other",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
    411: "Length Required", 413: "Content Too Large", 415: "Unsupported Media Type",
    422: "Unprocessable Content", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 503: "Service Unavailable",
}


class HTTPError(Exception):
    """The client sent something we refuse: answer ``status`` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class Request:
    method: str
    target: str
    headers: list[tuple[str, str]]  # names in lower case, in arrival order
    body: bytes = b""
    path: str = ""
    query: dict[str, str] = field(default_factory=dict)
    scheme: str = "http"  # set by the driver: "https" on an implicit-TLS listener
    peer_ip: str = ""

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


class NeedData:
    """``next_request`` needs more bytes."""


NEED_DATA = NeedData()


class Closed:
    """The client closed the connection (or it must be closed: no keep-alive)."""


CLOSED = Closed()


class ServerCore:
    """One connection's server side. Feed bytes with ``receive_data`` (b"" at EOF), take
    requests from ``next_request``, answer each with ``respond`` before the next."""

    def __init__(self, max_head: int = DEFAULT_MAX_HEAD, max_body: int = DEFAULT_MAX_BODY,
                 server_name: str = "Pochta") -> None:
        self.max_body = max_body
        self.max_head = max_head
        self.server_name = server_name
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head)
        self._request: Request | None = None
        self._body = bytearray()
        self._out = bytearray()
        self.in_head = True  # waiting for (the rest of) a request head; else in a body

    def receive_data(self, data: bytes) -> None:
        self._conn.receive_data(data)

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def idle(self) -> bool:
        """Between requests, nothing of the next one received yet."""
        return self._request is None and self._conn.their_state is h11.IDLE

    def next_request(self) -> Request | NeedData | Closed:
        """The next whole request; raises ``HTTPError`` for one we refuse."""
        while True:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                message = str(exc) or "malformed request"
                if "exceeds" in message or "size" in message.lower():
                    status = 431
                raise HTTPError(status, message) from None
            if event is h11.NEED_DATA:
                return NEED_DATA
            if event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
                return CLOSED
            if isinstance(event, h11.Request):
                self.in_head = False
                self._start(event)
            elif isinstance(event, h11.Data):
                if len(self._body) + len(event.data) > self.max_body:
                    raise HTTPError(413, f"request body larger than {self.max_body} bytes")
                self._body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert self._request is not None
                self._request.body = bytes(self._body)
                self._body.clear()
                self.in_head = True
                return self._request

    def _start(self, event: h11.Request) -> None:
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1"))
                   for k, v in event.headers]
        target = event.target.decode("latin-1")
        parts = urlsplit(target)
        request = Request(event.method.decode("ascii"), target, headers,
                          path=unquote(parts.path),
                          query=dict(parse_qsl(parts.query, keep_blank_values=True)))
        head = len(target) + sum(len(k) + len(v) + 4 for k, v in headers)
        if head > self.max_head:  # h11 only limits a head that arrives in pieces
            raise HTTPError(431, f"request head larger than {self.max_head} bytes")
        if request.header("transfer-encoding") is not None and request.header(
                "content-length") is not None:
            # RFC 9112 §6.1: may be a smuggling attempt; h11 would go by Transfer-Encoding,
            # a proxy in front of us might not
            raise HTTPError(400, "both Transfer-Encoding and Content-Length")
        length = request.header("content-length")
        if length is not None and int(length) > self.max_body:
            raise HTTPError(413, f"request body larger than {self.max_body} bytes")
        self._request = request
        if (request.header("expect") or "").lower() == "100-continue":
            self._out += self._conn.send(h11.InformationalResponse(status_code=100,
                                                                   headers=[])) or b""

    def respond(self, response: Response, close: bool = False) -> None:
        """Queue the answer to the current request (or, after an ``HTTPError``, to a
        request that could not be read)."""
        headers = [("Server", self.server_name), ("Content-Type", response.content_type),
                   ("Content-Length", str(len(response.body))), *response.headers]
        if close:
            headers.append(("Connection", "close"))
        reason = REASONS.get(response.status, "")
        self._request = None
        try:
            self._out += self._conn.send(h11.Response(
                status_code=response.status, headers=headers, reason=reason)) or b""
            if response.body:
                self._out += self._conn.send(h11.Data(data=response.body)) or b""
            self._out += self._conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            # the request could not be parsed at all: write the answer by hand
            lines = [f"HTTP/1.1 {response.status} {reason}"]
            lines += [f"{k}: {v}" for k, v in headers if k != "Connection"]
            lines.append("Connection: close")
            self._out += ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body
            return
        if close:
            return
        if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            self._conn.start_next_cycle()

    @property
    def must_close(self) -> bool:
        """After ``respond``: the connection cannot carry another request."""
        return self._conn.our_state is not h11.IDLE
