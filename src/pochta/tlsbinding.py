"""TLS channel bindings for SCRAM-SHA-256-PLUS (RFC 5929, RFC 9266).

Kept apart from the authentication service: it is TLS plumbing that the socket layer
(server/listener.py) asks once per connection.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import ssl
import sys

from pochta.proto.sasl import ChannelBinding

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
# only on those CPython versions, only when the libssl already loaded into the process is
# the one the ssl module was built against, and the result is cross-checked against
# ssl's own view of the connection (protocol version). Anything unexpected: no exporter.


class _Exporter:
    """ctypes access to SSL_export_keying_material for stdlib SSL objects."""

    LABEL = b"EXPORTER-Channel-Binding"
    SSL_CTRL_GET_EXTMS_SUPPORT = 122
    VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}

    def __init__(self) -> None:
        self.lib: ctypes.CDLL | None = None
        if sys.implementation.name != "cpython" or not (3, 11) <= sys.version_info[:2] <= (3, 13):
            return
        name = ctypes.util.find_library("ssl")
        if name is None:
            return
        try:
            # RTLD_NOLOAD: only the libssl the ssl module already loaded, never another.
            lib = ctypes.CDLL(name, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
            lib.OpenSSL_version_num.restype = ctypes.c_ulong
            if lib.OpenSSL_version_num() != ssl.OPENSSL_VERSION_NUMBER:
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
        except (OSError, AttributeError):
            return
        self.lib = lib

    def export(self, tls: ssl.SSLObject | ssl.SSLSocket) -> bytes | None:
        lib = self.lib
        version = tls.version()
        if lib is None or version not in self.VERSIONS:
            return None
        inner = getattr(tls, "_sslobj", None)
        if inner is None or type(inner).__name__ != "_SSLSocket":
            return None
        word = ctypes.sizeof(ctypes.c_void_p)
        # PySSLSocket: ob_refcnt, ob_type, Socket (weakref), ssl (SSL*)
        pointer = ctypes.c_void_p.from_address(id(inner) + 3 * word).value
        if not pointer or lib.SSL_version(pointer) != self.VERSIONS[version]:
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


_exporter: _Exporter | None = None


def channel_bindings(tls: ssl.SSLObject | ssl.SSLSocket | None) -> tuple[ChannelBinding, ...]:
    """The channel bindings a TLS connection can offer SCRAM-SHA-256-PLUS (empty: do not
    advertise -PLUS). Call after the handshake, with
    ``transport.get_extra_info("ssl_object")``.

    tls-exporter (RFC 9266) when keying-material export is reachable (see above) on
    TLS 1.3, or TLS 1.2 with the extended master secret; tls-unique (RFC 5929) on TLS 1.2
    only, for older clients."""
    global _exporter
    if tls is None:
        return ()
    found: list[ChannelBinding] = []
    if _exporter is None:
        _exporter = _Exporter()
    exported = _exporter.export(tls)
    if exported is not None:
        found.append(ChannelBinding("tls-exporter", exported))
    if tls.version() == "TLSv1.2":
        unique = tls.get_channel_binding("tls-unique")
        if unique:
            found.append(ChannelBinding("tls-unique", unique))
    return tuple(found)
