"""The tls-exporter detection in pochta/tlsbinding.py: on a Python whose private
PySSLSocket layout differs, channel binding turns itself off with a log line instead of
crashing or computing garbage. A wrong layout is simulated by moving the word the SSL*
is read from, or by handing the exporter another connection's SSL*."""

from __future__ import annotations

import base64
import ctypes
import logging
import ssl

import pytest

from pochta import tlsbinding
from pochta.tlsbinding import _Exporter, _memory_pair, channel_bindings
from tests.conftest import Instance, start_instance
from tests.e2e.smtpclient import RawClient


def test_exporter_works_on_this_python() -> None:
    exp = _Exporter()
    assert exp.available, exp.reason
    server, client = _memory_pair()
    assert server.version() == "TLSv1.3"
    [binding] = channel_bindings(server)
    assert binding.type == "tls-exporter" and len(binding.data) == 32
    assert exp.export(client) == binding.data


# word 2: the socket weakref (NULL for memory BIOs); 4: the SSLContext; 5: two small
# fields (not a pointer); 6: the owner weakref; 40: past the end of the object
@pytest.mark.parametrize("word", [0, 1, 2, 4, 5, 6, 7, 40])
def test_wrong_struct_offset_disables_binding(
        word: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(_Exporter, "SSL_POINTER_WORD", word)
    with caplog.at_level(logging.WARNING, logger="pochta.tls"):
        exp = _Exporter()
    assert not exp.available
    assert "PySSLSocket" in exp.reason  # a failed check, or the child crashed
    assert any("tls-exporter disabled" in r.getMessage() for r in caplog.records)
    monkeypatch.setattr(tlsbinding, "_exporter", exp)
    assert tlsbinding.exporter_status() == (False, exp.reason)
    server, _ = _memory_pair()
    assert channel_bindings(server) == ()  # TLS 1.3: no binding at all


def test_foreign_ssl_pointer_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pointer that is a real SSL*, but not this connection's, fails the app-data
    check; and if that check were skipped, the self-test would notice."""
    exp = _Exporter()
    assert exp.available
    other, _ = _memory_pair()
    foreign = exp._ssl_pointer(other._sslobj)  # type: ignore[attr-defined]
    assert foreign is not None
    server, _ = _memory_pair()
    monkeypatch.setattr(ctypes.c_void_p, "from_address",
                        classmethod(lambda cls, address: cls(foreign)))
    assert exp._ssl_pointer(server._sslobj) is None  # type: ignore[attr-defined]
    monkeypatch.undo()

    monkeypatch.setattr(_Exporter, "_ssl_pointer", lambda self, inner: foreign)
    broken = _Exporter(isolated=False)
    assert not broken.available and "same value" in broken.reason


def test_self_test_mismatch_disables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Garbage that differs between the two ends (simulated) is caught at first use."""
    real = _Exporter.export
    calls = {"n": 0}

    def flaky(self: _Exporter, tls: ssl.SSLObject | ssl.SSLSocket) -> bytes | None:
        calls["n"] += 1
        out = real(self, tls)
        return None if out is None else bytes([calls["n"]]) + out[1:]

    monkeypatch.setattr(_Exporter, "export", flaky)
    exp = _Exporter(isolated=False)
    assert not exp.available and "different values" in exp.reason


async def test_plus_not_offered_when_detection_fails(
        instance: Instance, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``[auth] scram_plus`` on but the layout check failing: no -PLUS on TLS 1.3,
    the server keeps running and SCRAM-SHA-256 / PLAIN still work."""
    monkeypatch.setattr(_Exporter, "SSL_POINTER_WORD", 4)
    monkeypatch.setattr(tlsbinding, "_exporter", _Exporter())
    server = await start_instance(instance, auth={"scram_plus": True})
    try:
        c = await RawClient.connect(server.port("submission", "implicit"), server.client_ssl())
        await c.reply()
        _, ehlo = await c.cmd("EHLO laptop")
        assert "AUTH SCRAM-SHA-256 PLAIN LOGIN" in ehlo and "-PLUS" not in ehlo
        code, _ = await c.cmd("AUTH SCRAM-SHA-256-PLUS biwsbj1hbGljZSxyPTEyMzQ=")
        assert code == 504
        token = base64.b64encode(b"\0alice@example.test\0alice-pass").decode()
        assert (await c.cmd(f"AUTH PLAIN {token}"))[0] == 235
        await c.close()
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()


def test_crashing_self_test_child_disables(monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """Reading a wrong word may crash outright (OpenSSL follows pointers inside what it
    takes for an SSL*): that happens in the self-test child, never in the server."""
    import subprocess

    def crashed(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        assert cmd[-1] == str(_Exporter.SSL_POINTER_WORD)
        return subprocess.CompletedProcess(cmd, -11, b"", b"Fatal Python error")

    monkeypatch.setattr(subprocess, "run", crashed)
    with caplog.at_level(logging.WARNING, logger="pochta.tls"):
        exp = _Exporter()
    assert not exp.available and "crashed (signal 11)" in exp.reason
    assert any("tls-exporter disabled" in r.getMessage() for r in caplog.records)
