"""TLS channel bindings for SCRAM-SHA-256-PLUS (RFC 5929, RFC 9266).

Kept apart from the authentication service: it is TLS plumbing that the socket layer
(server/listener.py) asks once per connection.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

from pochta.mail.tls import client_context
from pochta.proto.sasl import ChannelBinding
from pochta.tlsutil import generate_self_signed

# --- TLS channel binding for SCRAM-SHA-256-PLUS ------------------------------------------
#
# RFC 9266 makes tls-exporter (RFC 5705 keying-material export, label
# "EXPORTER-Channel-Binding", empty context, 32 bytes) the binding for TLS 1.3; tls-unique
# (RFC 5929) is undefined there (RFC 8446 §C.5). Python's ssl module exposes only
# tls-unique (SSLObject.get_channel_binding), and even returns it under TLS 1.3 (CPython
# issue #95341); export_keying_material is not exposed (CPython issue #82133, unmerged
# PR #25255). asyncio and uvloop both hand out a stdlib ssl.SSLObject, so pyOpenSSL's
# Connection.export_keying_material cannot be used on their connections.
#
# Workaround: call OpenSSL's SSL_export_keying_material through ctypes on the SSL* held by
# the SSLObject. That pointer is read from CPython's private PySSLSocket struct (after
# PyObject_HEAD and the weakref to the socket; unchanged in 3.11 to 3.13), so it is done
# only on those CPython versions, and only when the libssl already loaded into the process
# is the one the ssl module was built against.
#
# A Python whose layout differs would make us read the wrong word and hand OpenSSL a
# pointer that is not an SSL*, which can crash the process (OpenSSL follows pointers
# inside it) or export garbage. So the layout is proved before the server uses it:
#
# * once, at first use (at start-up when ``[auth] scram_plus`` is on), in a CHILD
#   process running the same interpreter and libssl (``_self_test_isolated``): an
#   in-memory TLS 1.3 handshake between two stdlib SSLObjects, the per-connection checks
#   below on both ends, both ends must export the same 32 bytes and a second connection
#   different ones. If the child crashes, hangs or reports a mismatch, the exporter stays
#   off in the server, which never touched the wrong memory itself.
# * per connection, in the server: the word must lie inside the object
#   (``__basicsize__``), be non-zero and aligned, not be one of the object's other known
#   fields (its SSLContext), be readable (probed with write(2) into a pipe, which fails
#   with EFAULT instead of crashing), and, the decisive check, OpenSSL's app data of that
#   SSL* must be this very PySSLSocket (CPython's _ssl.c calls SSL_set_app_data(ssl,
#   self) for every socket). Then OpenSSL's protocol version must match ssl's own view.
#
# Any failure turns the exporter off for the life of the process with one warning in the
# log: tls-exporter is then not offered, so on TLS 1.3 SCRAM-SHA-256-PLUS is not either
# (tls-unique on TLS 1.2 comes from the ssl module's public API and stays).

log = logging.getLogger("pochta.tls")


class _Exporter:
    """ctypes access to SSL_export_keying_material for stdlib SSL objects."""

    LABEL = b"EXPORTER-Channel-Binding"
    SSL_CTRL_GET_EXTMS_SUPPORT = 122
    VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
    # PySSLSocket: ob_refcnt, ob_type, Socket (weakref), ssl (SSL*): the SSL* is word 3
    SSL_POINTER_WORD = 3
    PROBE_BYTES = 64

    def __init__(self, *, isolated: bool = True) -> None:
        """``isolated``: run the self-test in a child process (the server's way); False
        runs it in this process (the child's way, and unit tests of the test itself)."""
        self.lib: ctypes.CDLL | None = None
        self.libc: ctypes.CDLL | None = None
        self.reason = "not checked yet"
        self._pipe: tuple[int, int] | None = None
        if sys.implementation.name != "cpython" or not (3, 11) <= sys.version_info[:2] <= (3, 13):
            self.reason = f"untested Python {sys.version.split()[0]}"
            return
        name = ctypes.util.find_library("ssl")
        if name is None:
            self.reason = "libssl not found"
            return
        try:
            # RTLD_NOLOAD: only the libssl the ssl module already loaded, never another.
            lib = ctypes.CDLL(name, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
            lib.OpenSSL_version_num.restype = ctypes.c_ulong
            if lib.OpenSSL_version_num() != ssl.OPENSSL_VERSION_NUMBER:
                self.reason = "the loaded libssl is not the one the ssl module was built with"
                return
            lib.SSL_export_keying_material.argtypes = [
                ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int,
            ]
            lib.SSL_export_keying_material.restype = ctypes.c_int
            lib.SSL_version.argtypes = [ctypes.c_void_p]
            lib.SSL_version.restype = ctypes.c_int
            lib.SSL_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
            lib.SSL_ctrl.restype = ctypes.c_long
            lib.SSL_get_ex_data.argtypes = [ctypes.c_void_p, ctypes.c_int]
            lib.SSL_get_ex_data.restype = ctypes.c_void_p
            libc = ctypes.CDLL(None, use_errno=True)
            libc.write.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
            libc.write.restype = ctypes.c_ssize_t
            self._pipe = os.pipe()
        except (OSError, AttributeError) as exc:
            self.reason = f"OpenSSL functions not reachable: {exc}"
            return
        self.lib, self.libc = lib, libc
        problem = self._self_test_isolated() if isolated else self._self_test()
        if problem is not None:
            self.disable(problem)
        else:
            self.reason = ""

    @property
    def available(self) -> bool:
        return self.lib is not None

    def disable(self, reason: str) -> None:
        """Turn the exporter off for good, saying why once."""
        if self.lib is not None:
            log.warning("TLS channel binding tls-exporter disabled: %s; "
                        "SCRAM-SHA-256-PLUS is not offered on TLS 1.3", reason)
        self.lib = None
        self.reason = reason
        if self._pipe is not None:
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None

    def _readable(self, address: int) -> bool:
        """Whether PROBE_BYTES at ``address`` can be read, without touching them in this
        process: the kernel answers EFAULT for an unmapped address."""
        assert self.libc is not None and self._pipe is not None
        r, w = self._pipe
        n = int(self.libc.write(w, address, self.PROBE_BYTES))
        if n > 0:
            os.read(r, n)
        return n == self.PROBE_BYTES

    def _ssl_pointer(self, inner: object) -> int | None:
        """The SSL* of a CPython ``_ssl._SSLSocket``, proved; None if not provable."""
        lib = self.lib
        assert lib is not None
        word = ctypes.sizeof(ctypes.c_void_p)
        offset = self.SSL_POINTER_WORD * word
        if type(inner).__basicsize__ < offset + word:
            return None
        pointer = ctypes.c_void_p.from_address(id(inner) + offset).value
        if not pointer or pointer % word:
            return None
        if pointer in (id(inner), id(getattr(inner, "context", None))):
            return None
        if not self._readable(pointer):
            return None
        # CPython's _ssl.c: SSL_set_app_data(self->ssl, self) (app data = ex_data index 0)
        if lib.SSL_get_ex_data(pointer, 0) != id(inner):
            return None
        return int(pointer)

    def export(self, tls: ssl.SSLObject | ssl.SSLSocket) -> bytes | None:
        lib = self.lib
        version = tls.version()
        if lib is None or version not in self.VERSIONS:
            return None
        inner = getattr(tls, "_sslobj", None)
        if inner is None or type(inner).__name__ != "_SSLSocket":
            return None
        pointer = self._ssl_pointer(inner)
        if pointer is None:
            self.disable("the SSL* read from CPython's PySSLSocket did not check out "
                         "(private struct layout differs?)")
            return None
        if lib.SSL_version(pointer) != self.VERSIONS[version]:
            self.disable("OpenSSL and the ssl module disagree on the protocol version")
            return None
        if version == "TLSv1.2" and lib.SSL_ctrl(
            pointer, self.SSL_CTRL_GET_EXTMS_SUPPORT, 0, None
        ) != 1:
            # RFC 9266 §4.2: without the extended master secret (RFC 7627) the exporter
            # is not unique to the connection.
            return None
        out = ctypes.create_string_buffer(32)
        ok = lib.SSL_export_keying_material(
            pointer, out, 32, self.LABEL, len(self.LABEL), None, 0, 1
        )
        return out.raw if ok == 1 else None

    def _self_test_isolated(self) -> str | None:
        """``_self_test`` in a child process of the same interpreter, so that reading the
        wrong memory can only crash the child."""
        src = str(Path(__file__).resolve().parents[1])
        code = ("import sys; sys.path.insert(0, sys.argv[1]); "
                "from pochta.tlsbinding import _child_self_test; "
                "sys.exit(_child_self_test(int(sys.argv[2])))")
        try:
            proc = subprocess.run(
                [sys.executable, "-c", code, src, str(self.SSL_POINTER_WORD)],
                capture_output=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"self-test process failed: {exc}"
        if proc.returncode < 0:
            return (f"self-test process crashed (signal {-proc.returncode}) reading the "
                    "SSL* from CPython's PySSLSocket (private struct layout differs?)")
        answer = proc.stdout.decode("utf-8", "replace").strip().splitlines()
        if proc.returncode != 0 or not answer:
            return f"self-test process failed (exit {proc.returncode})"
        return None if answer[-1] == "ok" else answer[-1]

    def _self_test(self) -> str | None:
        """None if the exporter works on two in-memory TLS 1.3 connections (both ends
        agree, the two connections differ), else what went wrong."""
        try:
            first = [self.export(end) for end in _memory_pair()]
            second = self.export(_memory_pair()[0])
        except (OSError, ssl.SSLError, ValueError) as exc:
            return f"self-test could not run: {exc}"
        if self.lib is None:
            return self.reason
        if first[0] is None or first[0] != first[1]:
            return "self-test: the two ends of one connection export different values"
        if second is None or second == first[0]:
            return "self-test: two connections export the same value"
        return None


def _memory_pair() -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """Server and client ends of a TLS 1.3 handshake done in memory (no socket), with a
    throwaway self-signed certificate."""


    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        generate_self_signed("selftest.invalid", cert, key, days=1)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert, key)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    client_ctx = client_context(verify=False)
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="selftest.invalid")
    done = {id(server): False, id(client): False}
    for _ in range(10):
        for end in (client, server):
            if not done[id(end)]:
                try:
                    end.do_handshake()
                    done[id(end)] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return server, client
    raise ValueError("in-memory TLS handshake did not finish")


def _child_self_test(word: int) -> int:
    """Entry point of the self-test child: prints "ok" or what went wrong."""
    _Exporter.SSL_POINTER_WORD = word
    exp = _Exporter(isolated=False)
    print("ok" if exp.available else exp.reason, flush=True)
    return 0


_exporter: _Exporter | None = None


def exporter() -> _Exporter:
    """The process's exporter, built and self-tested at first use."""
    global _exporter
    if _exporter is None:
        _exporter = _Exporter()
    return _exporter


def exporter_status() -> tuple[bool, str]:
    """(tls-exporter usable, why not) for diagnostics and tests."""
    exp = exporter()
    return exp.available, exp.reason


def channel_bindings(tls: ssl.SSLObject | ssl.SSLSocket | None) -> tuple[ChannelBinding, ...]:
    """The channel bindings a TLS connection can offer SCRAM-SHA-256-PLUS (empty: do not
    advertise -PLUS). Call after the handshake, with
    ``transport.get_extra_info("ssl_object")``.

    tls-exporter (RFC 9266) when keying-material export is reachable (see above) on
    TLS 1.3, or TLS 1.2 with the extended master secret; tls-unique (RFC 5929) on TLS 1.2
    only, for older clients."""
    if tls is None:
        return ()
    found: list[ChannelBinding] = []
    exported = exporter().export(tls)
    if exported is not None:
        found.append(ChannelBinding("tls-exporter", exported))
    if tls.version() == "TLSv1.2":
        unique = tls.get_channel_binding("tls-unique")
        if unique:
            found.append(ChannelBinding("tls-unique", unique))
    return tuple(found)
