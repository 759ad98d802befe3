"""`pochta send` against `pochta sink` (fault injection) and against Pochta itself."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from pochta.diag.sink import Sink, SinkOptions, parse_fault
from tests.conftest import Server

from .helpers import run_cli, run_json
from .schema import SEND, SINK_MESSAGE, SINK_SUMMARY, assert_valid

SinkFactory = Callable[..., Any]


@pytest.fixture
async def make_sink(tmp_path: Path) -> AsyncIterator[SinkFactory]:
    sinks: list[Sink] = []

    async def start(*faults: str, **kw: Any) -> tuple[Sink, int]:
        parsed = []
        for f in faults:
            kind, _, spec = f.partition(":")
            parsed.append(parse_fault(kind, spec))
        opts = SinkOptions(port=0, faults=parsed, **kw)
        sink = Sink(opts)
        port = await sink.start()
        sinks.append(sink)
        return sink, port

    yield start
    for s in sinks:
        await s.close()


def send_args(port: int, *extra: str) -> list[str]:
    return ["send", "--server", f"127.0.0.1:{port}", "--from", "tester@client.test",
            "--to", "rcpt@sink.test", "--ehlo", "client.test", "--timeout", "5", *extra]


async def test_send_to_sink_json_schema_and_transcript(make_sink: SinkFactory) -> None:
    sink, port = await make_sink()
    rc, doc = await run_json(*send_args(port, "--header", "Subject: hello sink"))
    assert rc == 0
    assert_valid(doc, SEND)
    assert doc["ok"] is True and doc["error"] is None
    assert doc["message_reply"]["code"] == 250
    assert [r["code"] for r in doc["recipients"]] == [250]
    steps = [s["step"] for s in doc["steps"]]
    assert steps == ["connect", "banner", "ehlo", "mail", "rcpt", "data"]
    sent = [x["line"] for x in doc["transcript"] if x["dir"] == "->"]
    assert sent[0] == "EHLO client.test"
    assert "Subject: hello sink" in sent
    assert sent[-1] == "QUIT"
    assert sink.records[0].sender == "tester@client.test"
    assert sink.records[0].recipients == ["rcpt@sink.test"]


async def test_human_output_has_markers_and_timings(make_sink: SinkFactory) -> None:
    _, port = await make_sink()
    rc, out = await run_cli(*send_args(port))
    assert rc == 0
    assert "-> MAIL FROM:<tester@client.test>" in out
    assert "<- 250 2.0.0 Ok: queued as SINK1" in out
    assert "steps: connect" in out and " ms" in out
    assert "result: OK" in out


async def test_every_second_message_451(make_sink: SinkFactory) -> None:
    sink, port = await make_sink("reply:data=451@2")
    results = []
    for _ in range(4):
        results.append(await run_json(*send_args(port)))
    assert [rc for rc, _ in results] == [0, 1, 0, 1]
    second = results[1][1]
    assert second["message_reply"]["code"] == 451
    assert "451" in second["error"]
    assert [r.reply for r in sink.records] == [250, 451, 250, 451]
    assert sink.stats.accepted == 2 and sink.stats.refused == 2


async def test_rcpt_refused_partially(make_sink: SinkFactory) -> None:
    sink, port = await make_sink("reply:rcpt=550@2")
    rc, doc = await run_json(*send_args(port, "--to", "second@sink.test",
                                        "--to", "third@sink.test"))
    assert rc == 1
    assert [r["code"] for r in doc["recipients"]] == [250, 550, 250]
    assert "second@sink.test" in doc["error"]
    assert doc["message_reply"]["code"] == 250  # the others got the message
    assert sink.records[0].recipients == ["rcpt@sink.test", "third@sink.test"]


async def test_all_rcpts_refused_no_data(make_sink: SinkFactory) -> None:
    sink, port = await make_sink("reply:rcpt=550")
    rc, doc = await run_json(*send_args(port))
    assert rc == 1
    assert "every recipient was refused" in doc["error"]
    assert not any(x["line"] == "DATA" for x in doc["transcript"])
    assert sink.records == []


async def test_disconnect_is_connection_failure(make_sink: SinkFactory) -> None:
    _, port = await make_sink("disconnect:mail")
    rc, doc = await run_json(*send_args(port))
    assert rc == 3
    assert "closed" in doc["error"] or "connection" in doc["error"]


async def test_delay_beyond_timeout(make_sink: SinkFactory) -> None:
    _, port = await make_sink("delay:mail=3")
    rc, doc = await run_json(*send_args(port)[:-2], "--timeout", "0.5")
    assert rc == 3
    assert "timeout" in doc["error"]


async def test_greeting_fault(make_sink: SinkFactory) -> None:
    _, port = await make_sink("reply:connect=554")
    rc, doc = await run_json(*send_args(port))
    assert rc == 1
    assert "refused the session" in doc["error"] and "554" in doc["error"]


async def test_ehlo_fault_falls_back_to_helo(make_sink: SinkFactory) -> None:
    _, port = await make_sink("reply:ehlo=502")
    rc, doc = await run_json(*send_args(port))
    assert rc == 0
    sent = [x["line"] for x in doc["transcript"] if x["dir"] == "->"]
    assert sent[:2] == ["EHLO client.test", "HELO client.test"]


async def test_connection_refused_exit_3() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc, doc = await run_json(*send_args(port))
    assert rc == 3
    assert doc["error"].startswith("cannot connect")


async def test_quit_after_rcpt(make_sink: SinkFactory) -> None:
    sink, port = await make_sink()
    rc, doc = await run_json(*send_args(port, "--quit-after", "rcpt"))
    assert rc == 0
    sent = [x["line"] for x in doc["transcript"] if x["dir"] == "->"]
    assert sent[-2:] == ["RCPT TO:<rcpt@sink.test>", "QUIT"]
    assert sink.records == []


async def test_pipelining_sends_batch_before_replies(make_sink: SinkFactory) -> None:
    _, port = await make_sink()
    rc, doc = await run_json(*send_args(port, "--pipeline"))
    assert rc == 0
    lines = [(x["dir"], x["line"]) for x in doc["transcript"] if x["dir"] != "**"]
    i = next(n for n, (d, t) in enumerate(lines) if d == "->" and t.startswith("MAIL FROM"))
    assert lines[i + 1] == ("->", "RCPT TO:<rcpt@sink.test>")
    assert lines[i + 2] == ("->", "DATA")
    assert lines[i + 3][0] == "<-"


async def test_chunking_and_dot_stuffing_saved_eml(make_sink: SinkFactory,
                                                   tmp_path: Path) -> None:
    sink, port = await make_sink(save=tmp_path / "eml")
    raw = tmp_path / "raw.eml"
    raw.write_bytes(b"Subject: dots\n\n.leading dot\n..two\nend\n")
    for extra in (["--chunking"], []):
        rc, doc = await run_json(*send_args(port, "--data-file", str(raw), *extra))
        assert rc == 0, doc["error"]
    bdat = [x["line"] for x in doc["transcript"] if x["line"].startswith("BDAT")]
    assert bdat == []  # the second run used DATA
    files = sorted((tmp_path / "eml").glob("*.eml"))
    assert len(files) == 2
    for f in files:
        body = f.read_bytes()
        assert body.endswith(b"\r\n.leading dot\r\n..two\r\nend\r\n")
        assert body.startswith(b"Return-Path: <tester@client.test>\r\n")
    assert sink.records[0].saved == str(files[0]) or sink.records[0].saved == str(files[1])


async def test_chunking_uses_bdat(make_sink: SinkFactory) -> None:
    _, port = await make_sink()
    rc, doc = await run_json(*send_args(port, "--chunking"))
    assert rc == 0
    assert any(x["line"].startswith("BDAT ") and x["line"].endswith(" LAST")
               for x in doc["transcript"])
    assert not any(x["line"] == "DATA" for x in doc["transcript"])


async def test_maildir_and_starttls_auth(make_sink: SinkFactory, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    sink, port = await make_sink(save=tmp_path / "md", format="maildir", tls="starttls")
    monkeypatch.setenv("SINK_PW", "s3cret-pass")
    rc, doc = await run_json(*send_args(port, "--tls", "starttls", "--auth", "LOGIN",
                                        "--auth-user", "anyone", "--password-env",
                                        "SINK_PW"))
    assert rc == 0, doc["error"]
    assert doc["tls"]["verified"] is False
    assert "self-signed" in doc["tls"]["verify_error"]
    assert doc["tls"]["certificate"]["subject"] == "CN=sink.invalid"
    text = json.dumps(doc["transcript"])
    assert "s3cret-pass" not in text
    assert base64.b64encode(b"s3cret-pass").decode() not in text
    assert "<redacted: password>" in text
    new = list((tmp_path / "md" / "new").iterdir())
    assert len(new) == 1 and list((tmp_path / "md" / "tmp").iterdir()) == []
    assert sink.records[0].auth == "anyone"
    assert sink.records[0].tls.startswith("TLSv1.")


async def test_tls_verify_stops_on_self_signed(make_sink: SinkFactory) -> None:
    sink, port = await make_sink(tls="starttls")
    rc, doc = await run_json(*send_args(port, "--tls", "starttls", "--tls-verify"))
    assert rc == 1
    assert "self-signed" in doc["error"]
    assert sink.records == []


async def test_starttls_required_but_missing(make_sink: SinkFactory) -> None:
    _, port = await make_sink()
    rc, doc = await run_json(*send_args(port, "--tls", "starttls"))
    assert rc == 1
    assert "does not offer STARTTLS" in doc["error"]


async def test_implicit_tls_and_keylog(make_sink: SinkFactory, tmp_path: Path) -> None:
    sink, port = await make_sink(tls="implicit", keylog=str(tmp_path / "server.keys"))
    keylog = tmp_path / "client.keys"
    rc, doc = await run_json(*send_args(port, "--tls", "implicit", "--keylog", str(keylog)))
    assert rc == 0, doc["error"]
    assert doc["tls"]["version"].startswith("TLSv1.")
    content = keylog.read_text()
    assert "CLIENT_HANDSHAKE_TRAFFIC_SECRET" in content or "CLIENT_RANDOM" in content
    assert (tmp_path / "server.keys").read_text()
    assert sink.records[0].tls


async def test_sink_cli_json_lines(tmp_path: Path) -> None:
    from pochta.diag.sink import free_port

    port = free_port()
    sink_task = asyncio.create_task(run_cli("sink", "--listen", f"127.0.0.1:{port}",
                                            "--count", "2", "--json", "--duration", "20"))
    for _ in range(100):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            break
        except OSError:
            await asyncio.sleep(0.05)
    assert (await run_json(*send_args(port)))[0] == 0
    assert (await run_json(*send_args(port, "--to", "x@sink.test")))[0] == 0
    rc, out = await asyncio.wait_for(sink_task, 20)
    assert rc == 0
    docs = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert [d["type"] for d in docs] == ["message", "message", "summary"]
    for d in docs[:2]:
        assert_valid(d, SINK_MESSAGE)
    assert_valid(docs[2], SINK_SUMMARY)
    assert docs[2]["messages"] == 2 and docs[2]["recipients"] == 3


async def test_sink_human_lines(tmp_path: Path) -> None:
    from pochta.diag.sink import free_port

    port = free_port()
    sink_task = asyncio.create_task(run_cli("sink", "--listen", f"127.0.0.1:{port}",
                                            "--count", "1", "--fault", "rcpt=452@2"))
    for _ in range(100):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            break
        except OSError:
            await asyncio.sleep(0.05)
    rc, _ = await run_json(*send_args(port, "--to", "b@sink.test"))
    assert rc == 1
    rc, out = await asyncio.wait_for(sink_task, 20)
    assert rc == 0
    assert "listening on 127.0.0.1" in out
    assert "#1" in out and "to=<rcpt@sink.test>" in out
    assert "1 messages (1 accepted, 0 refused), 1 recipients" in out
    assert "msg/s" in out


@pytest.mark.parametrize("bad", ["--fault=data=200", "--fault=bogus=451", "--delay=mail=x",
                                 "--disconnect=mail=3"])
async def test_sink_usage_errors(bad: str) -> None:
    rc, _ = await run_cli("sink", bad)
    assert rc == 2


# --- against Pochta itself -------------------------------------------------------------


async def test_send_to_pochta_mta_verified_tls(running_server: Server) -> None:
    port = running_server.port("mta")
    rc, doc = await run_json("send", "--server", f"127.0.0.1:{port}", "--from",
                             "someone@elsewhere.test", "--to", "bob@example.test",
                             "--tls", "starttls", "--tls-verify", "--cafile",
                             str(running_server.cert), "--ehlo", "client.elsewhere.test")
    assert rc == 0, doc["error"]
    assert_valid(doc, SEND)
    assert doc["tls"]["verified"] is True and doc["tls"]["verify_error"] == ""
    assert "mail.example.test" in doc["tls"]["certificate"]["sans"]
    assert doc["message_reply"]["text"].startswith("2.0.0")


async def test_send_to_pochta_refused_relay(running_server: Server) -> None:
    port = running_server.port("mta")
    rc, doc = await run_json("send", "--server", f"127.0.0.1:{port}", "--from",
                             "someone@elsewhere.test", "--to", "victim@other.test",
                             "--tls", "none", "--ehlo", "client.elsewhere.test")
    assert rc == 1
    assert doc["recipients"][0]["code"] >= 500


async def test_send_submission_auth_plain_redacted(running_server: Server,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    port = running_server.port("submission", "starttls")
    monkeypatch.setenv("ALICE_PW", "alice-pass")
    base = ["send", "--server", f"127.0.0.1:{port}", "--from", "alice@example.test",
            "--to", "bob@example.test", "--tls", "starttls", "--auth", "--auth-user",
            "alice@example.test", "--password-env", "ALICE_PW", "--ehlo", "client.test"]
    rc, doc = await run_json(*base)
    assert rc == 0, doc["error"]
    blob = base64.b64encode(b"\0alice@example.test\0alice-pass").decode()
    text = json.dumps(doc)
    assert blob not in text and "alice-pass" not in text
    assert "AUTH PLAIN <redacted" in text
    rc, doc = await run_json(*base, "--show-secrets")
    assert rc == 0
    assert f"AUTH PLAIN {blob}" in [x["line"] for x in doc["transcript"]]


async def test_send_submission_bad_password(running_server: Server,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    port = running_server.port("submission", "implicit")
    monkeypatch.setenv("ALICE_PW", "wrong-pass")
    rc, doc = await run_json("send", "--server", f"127.0.0.1:{port}", "--from",
                             "alice@example.test", "--to", "bob@example.test", "--tls",
                             "implicit", "--auth", "PLAIN", "--auth-user",
                             "alice@example.test", "--password-env", "ALICE_PW")
    assert rc == 1
    assert "authentication failed" in doc["error"]


async def test_send_usage_errors() -> None:
    rc, _ = await run_cli("send", "--to", "a@b.test", "--auth")
    assert rc == 2
    rc, _ = await run_cli("send", "--to", "a@b.test", "--server", "h:99999")
    assert rc == 2


async def test_quit_after_data_sends_no_content(make_sink: SinkFactory) -> None:
    sink, port = await make_sink()
    rc, doc = await run_json(*send_args(port, "--quit-after", "data"))
    assert rc == 0
    assert [x["line"] for x in doc["transcript"] if x["dir"] == "->"][-1] == "DATA"
    assert doc["steps"][-1]["step"] == "data" and doc["steps"][-1]["code"] == 354
    await asyncio.sleep(0.1)
    assert sink.records == []


async def test_pipelined_mail_refused(make_sink: SinkFactory) -> None:
    sink, port = await make_sink("reply:mail=550")
    rc, doc = await run_json(*send_args(port, "--pipeline"))
    assert rc == 1
    assert doc["error"].startswith("MAIL FROM refused: 550")
    assert sink.records == []


async def test_attachment_is_mime(make_sink: SinkFactory, tmp_path: Path) -> None:
    _, port = await make_sink(save=tmp_path / "out")
    att = tmp_path / "report.pdf"
    att.write_bytes(b"%PDF-1.4 binary \x00\xff")
    rc, _ = await run_json(*send_args(port, "--attach", str(att), "--body", "see attached"))
    assert rc == 0
    import email

    saved = next((tmp_path / "out").glob("*.eml")).read_bytes()
    msg = email.message_from_bytes(saved)
    assert msg.get_content_type() == "multipart/mixed"
    parts = [p for p in msg.walk() if p.get_filename()]
    assert parts[0].get_filename() == "report.pdf"
    assert parts[0].get_payload(decode=True) == b"%PDF-1.4 binary \x00\xff"
