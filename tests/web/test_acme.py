"""ACME (RFC 8555) against Debian's pebble test CA on loopback: HTTP-01 answered by our
http listener, a certificate issued and renewed, hot-reloaded by a TLS listener while an
established connection goes on."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from pochta.tlsutil import generate_self_signed
from pochta.web.acme import due, renew_if_due
from tests.conftest import ALL_LISTENERS, Instance, need_tool, start_instance
from tests.web.helpers import WebServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Pebble:
    directory: str
    ca_file: Path
    http_port: int


@pytest.fixture
def pebble(tmp_path: Path) -> Iterator[Pebble]:
    pebble_bin, chall_bin = need_tool("pebble"), need_tool("pebble-challtestsrv")
    cert, key = tmp_path / "pebble-cert.pem", tmp_path / "pebble-key.pem"
    generate_self_signed("localhost", cert, key)
    acme_port, http_port, dns_port = free_port(), free_port(), free_port()
    config = {"pebble": {
        "listenAddress": f"127.0.0.1:{acme_port}",
        "managementListenAddress": f"127.0.0.1:{free_port()}",
        "certificate": str(cert), "privateKey": str(key),
        "httpPort": http_port, "tlsPort": free_port(),
        "ocspResponderURL": "", "externalAccountBindingRequired": False}}
    (tmp_path / "pebble.json").write_text(json.dumps(config))
    # mock DNS: every name is 127.0.0.1
    chall = subprocess.Popen(
        [chall_bin, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
         "-dns01", f"127.0.0.1:{dns_port}", "-http01", "", "-https01", "", "-tlsalpn01", "",
         "-management", f"127.0.0.1:{free_port()}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PATH": "/usr/bin:/bin"}
    with open(tmp_path / "pebble.log", "wb") as log:
        server = subprocess.Popen([pebble_bin, "-config", str(tmp_path / "pebble.json"),
                                   "-dnsserver", f"127.0.0.1:{dns_port}"], env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", acme_port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("pebble did not start") from None
                time.sleep(0.1)
        yield Pebble(f"https://127.0.0.1:{acme_port}/dir", cert, http_port)
    finally:
        for proc in (server, chall):
            proc.terminate()
            proc.wait(10)


@pytest.fixture
async def acme_web(instance: Instance, pebble: Pebble, tmp_path: Path
                   ) -> AsyncIterator[WebServer]:
    # a private copy of the certificate files: ACME writes over them
    cert, key = tmp_path / "server-cert.pem", tmp_path / "server-key.pem"
    shutil.copy(instance.cert, cert)
    shutil.copy(instance.key, key)
    listeners = [dict(x, address="127.0.0.1") for x in ALL_LISTENERS] + [
        {"role": "http", "port": pebble.http_port, "tls": "none", "address": "127.0.0.1"},
        {"role": "http", "port": 0, "tls": "implicit", "address": "127.0.0.1"}]
    server = await start_instance(
        instance, listeners=listeners, tls={"cert": str(cert), "key": str(key)},
        acme={"directory_url": pebble.directory, "ca_bundle": str(pebble.ca_file),
              "email": "postmaster@example.test"})
    try:
        yield WebServer(server)
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()


def peer_cert(port: int) -> tuple[bytes, ssl.SSLSocket]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    sock.recv(1000)  # the IMAP greeting
    return der, sock


def file_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


async def test_issue_renew_and_hot_reload(acme_web: WebServer) -> None:
    ctx = acme_web.server.ctx
    cert_path = ctx.config.path(ctx.config.tls.cert)
    port = acme_web.server.port("imap", "implicit")
    old_der, old_conn = await asyncio.to_thread(peer_cert, port)
    # the self-signed certificate has years left: not due, nothing ordered
    assert not due(cert_path, ctx.config.acme.renew_days)
    assert not await renew_if_due(ctx, ctx.acme_challenges)
    # renew when fewer than 100,000 days are left: due now
    ctx.config = dataclasses.replace(
        ctx.config, acme=dataclasses.replace(ctx.config.acme, renew_days=100000))
    assert await renew_if_due(ctx, ctx.acme_challenges)
    assert ctx.acme_challenges.served >= 3  # pebble fetched each name's HTTP-01 answer
    issued = file_cert(cert_path)
    assert "Pebble" in issued.issuer.rfc4514_string()
    san = issued.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {
        "mail.example.test", "mta-sts.example.test", "autoconfig.example.test"}
    # new handshakes get the new certificate; the established connection goes on
    new_der, new_conn = await asyncio.to_thread(peer_cert, port)
    assert new_der != old_der
    assert x509.load_der_x509_certificate(new_der).serial_number == issued.serial_number

    def noop(sock: ssl.SSLSocket) -> bytes:
        sock.sendall(b"a1 NOOP\r\n")
        return sock.recv(1000)

    assert (await asyncio.to_thread(noop, old_conn)).startswith(b"a1 OK")
    old_conn.close()
    new_conn.close()
    # renew again (same ACME account): another certificate
    assert await renew_if_due(ctx, ctx.acme_challenges)
    assert file_cert(cert_path).serial_number != issued.serial_number
    assert (acme_web.server.ctx.config.data_path / "acme" / "account.pem").exists()
    # challenges are forgotten once the order is done
    reply = await acme_web.call("GET", "/.well-known/acme-challenge/whatever", tls=False)
    assert reply.status == 404
