"""The sans-IO HTTP/1.1 core: every input whole and byte by byte, limits, framing errors."""

from __future__ import annotations

import pytest

from pochta.http.core import CLOSED, NEED_DATA, HTTPError, Request, Response, ServerCore

GET = b"GET /v1/events?tag=a%20b&limit=5 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"
POST = (b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 11\r\n\r\n{\"a\": [1]}\n")
CHUNKED = (b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")


def feed(core: ServerCore, data: bytes, bytewise: bool) -> list[Request]:
    out: list[Request] = []
    chunks = [data[i:i + 1] for i in range(len(data))] if bytewise else [data]
    for chunk in chunks:
        core.receive_data(chunk)
        while True:
            got = core.next_request()
            if isinstance(got, Request):
                out.append(got)
                core.respond(Response(200, b"{}"))
                continue
            break
    return out


@pytest.mark.parametrize("bytewise", [False, True])
def test_requests_whole_and_byte_by_byte(bytewise: bool) -> None:
    core = ServerCore()
    reqs = feed(core, GET + POST + CHUNKED, bytewise)  # pipelined
    assert [r.method for r in reqs] == ["GET", "POST", "POST"]
    assert reqs[0].path == "/v1/events" and reqs[0].query == {"tag": "a b", "limit": "5"}
    assert reqs[0].header("ACCEPT") == "*/*"
    assert reqs[1].body == b'{"a": [1]}\n'
    assert reqs[2].body == b"hello world"
    out = core.data_to_send()
    assert out.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert b"Content-Length: 2\r\n" in out


def test_head_limit_answers_431() -> None:
    core = ServerCore(max_head=1024)
    core.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000)
    with pytest.raises(HTTPError) as err:
        core.next_request()
    assert err.value.status == 431
    core.respond(Response(431, b"{}"), close=True)
    assert core.data_to_send().startswith(b"HTTP/1.1 431 ")


def test_body_limit_by_content_length_before_reading_it() -> None:
    core = ServerCore(max_body=100)
    core.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n")
    with pytest.raises(HTTPError) as err:
        core.next_request()
    assert err.value.status == 413


def test_body_limit_while_a_chunked_body_arrives() -> None:
    core = ServerCore(max_body=100)
    core.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert core.next_request() is NEED_DATA
    with pytest.raises(HTTPError) as err:
        for _ in range(5):
            core.receive_data(b"32\r\n" + b"x" * 50 + b"\r\n")
            assert core.next_request() is NEED_DATA
    assert err.value.status == 413


@pytest.mark.parametrize("bad", [
    # both framings: a smuggling attempt
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",  # no Host
    b"\x00\x01\x02 garbage\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
])
def test_bad_framing_is_refused_with_400(bad: bytes) -> None:
    core = ServerCore()
    core.receive_data(bad)
    with pytest.raises(HTTPError) as err:
        core.next_request()
    assert err.value.status == 400
    core.respond(Response(400, b"{}"), close=True)
    out = core.data_to_send()
    assert out.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in out


def test_expect_100_continue() -> None:
    core = ServerCore()
    core.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                      b"Expect: 100-continue\r\n\r\n")
    assert core.next_request() is NEED_DATA
    assert core.data_to_send() == b"HTTP/1.1 100 \r\n\r\n"
    core.receive_data(b"ok")
    req = core.next_request()
    assert isinstance(req, Request) and req.body == b"ok"


def test_connection_close_and_eof() -> None:
    core = ServerCore()
    core.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert isinstance(core.next_request(), Request)
    core.respond(Response(200))
    assert core.must_close
    other = ServerCore()
    other.receive_data(b"")
    assert other.next_request() is CLOSED


def test_obsolete_line_folding_is_unfolded() -> None:
    """RFC 9112 §5.2: a server either refuses it or replaces it with a space."""
    core = ServerCore()
    core.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n\r\n")
    req = core.next_request()
    assert isinstance(req, Request) and req.header("x-a") == "one two"
