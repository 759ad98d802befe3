"""Certificates from an ACME CA (RFC 8555) with HTTP-01, renewed before expiry and
hot-reloaded by every listener.

The protocol is the ``acme`` library's (certbot's client, with ``josepy``); it is
synchronous (``requests``), so each run is one thread. The HTTP-01 answers are served by
the http role at ``/.well-known/acme-challenge/TOKEN`` (the CA connects to port 80 of each
name: an http listener with ``tls = "none"`` on port 80 is needed).

Files: ``DATA/acme/account.pem`` (the account key), and the certificate chain and key
written over ``[tls] cert`` and ``[tls] key`` (atomically: a temporary file renamed). The
listeners keep one ``ssl.SSLContext``; ``load_cert_chain`` on it again makes every new
handshake (implicit TLS and STARTTLS) use the new certificate, while connections already
established go on with the old one: nothing is dropped.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..http.core import Request, Response
from ..http.router import Router

if TYPE_CHECKING:
    from ..config import Config
    from ..context import AppContext

log = logging.getLogger("pochta.acme")
ORDER_TIMEOUT = 90.0


@dataclass
class Challenges:
    """HTTP-01 token -> key authorization, shared by the ACME thread and the http role."""

    tokens: dict[str, str] = field(default_factory=dict)
    served: int = 0  # answers given (tests, logs)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, token: str, validation: str) -> None:
        with self.lock:
            self.tokens[token] = validation

    def get(self, token: str) -> str | None:
        with self.lock:
            return self.tokens.get(token)

    def drop(self, token: str) -> None:
        with self.lock:
            self.tokens.pop(token, None)


def not_after(cert_path: Path) -> datetime.datetime | None:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return None
    return cert.not_valid_after_utc


def due(cert_path: Path, renew_days: int, now: datetime.datetime | None = None) -> bool:
    """True when the certificate is missing, unreadable, or expires within ``renew_days``."""
    end = not_after(cert_path)
    now = now or datetime.datetime.now(datetime.UTC)
    return end is None or end - now < datetime.timedelta(days=renew_days)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _account_key(path: Path) -> Any:
    from josepy.jwk import JWKRSA  # local: the optional [acme] extra (pyproject.toml)

    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_atomic(path, key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()), 0o600)
    return JWKRSA(key=key)


def issue(config: Config, names: list[str], challenges: Challenges) -> tuple[bytes, bytes]:
    """One ACME order for ``names`` (blocking: run it in a thread). Returns the PEM
    certificate chain and the PEM private key (a new ECDSA P-256 key each time)."""
    # local: the optional [acme] extra (pyproject.toml), needed only when [acme] is set
    from acme import challenges as acme_challenges
    from acme import client, crypto_util, errors, messages

    settings = config.acme
    key = _account_key(config.data_path / "acme" / "account.pem")
    # ``verify_ssl`` goes to requests' ``verify``, which takes a CA file as well as a bool
    verify: Any = str(config.path(settings.ca_bundle)) if settings.ca_bundle else True
    net = client.ClientNetwork(key, user_agent="pochta", verify_ssl=verify)
    directory = client.ClientV2.get_directory(settings.directory_url, net)
    acme = client.ClientV2(directory, net)
    registration = messages.NewRegistration.from_data(
        email=settings.email or None, terms_of_service_agreed=True)
    try:
        net.account = acme.new_account(registration)
    except errors.ConflictError as exc:  # the key has an account already
        net.account = acme.query_registration(messages.RegistrationResource(
            uri=exc.location, body=messages.Registration()))
    cert_key = ec.generate_private_key(ec.SECP256R1())
    key_pem = cert_key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
    order = acme.new_order(crypto_util.make_csr(key_pem, names))
    tokens = []
    try:
        for authz in order.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue  # validated recently: the CA reuses the authorization
            for chall in authz.body.challenges:
                if isinstance(chall.chall, acme_challenges.HTTP01):
                    response, validation = chall.response_and_validation(key)
                    token = chall.chall.encode("token")
                    challenges.put(token, validation)
                    tokens.append(token)
                    acme.answer_challenge(chall, response)
                    break
            else:
                raise RuntimeError(f"{authz.body.identifier.value}: the CA offers no "
                                   "HTTP-01 challenge")
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=ORDER_TIMEOUT)
        order = acme.poll_and_finalize(order, deadline)
    finally:
        for token in tokens:
            challenges.drop(token)
    return order.fullchain_pem.encode(), key_pem


async def default_names(ctx: AppContext) -> list[str]:
    if ctx.config.acme.names:
        return list(ctx.config.acme.names)
    names = [ctx.config.hostname]
    for domain in await ctx.store.list_domains():
        names += [f"mta-sts.{domain}", f"autoconfig.{domain}"]
    return names


async def renew_if_due(ctx: AppContext, challenges: Challenges, force: bool = False) -> bool:
    """Issue a certificate when the current one is due (or ``force``), write it over the
    [tls] files and reload it into the listeners' TLS context. True if renewed."""
    config = ctx.config
    cert, key = config.path(config.tls.cert), config.path(config.tls.key)
    if not force and not due(cert, config.acme.renew_days):
        return False
    names = await default_names(ctx)
    log.info("acme: ordering a certificate for %s", ", ".join(names))
    chain, key_pem = await asyncio.to_thread(issue, config, names, challenges)
    _write_atomic(key, key_pem, 0o600)
    _write_atomic(cert, chain, 0o644)
    reload_tls(ctx)
    log.info("acme: new certificate for %s, valid until %s", ", ".join(names),
             not_after(cert))
    return True


def reload_tls(ctx: AppContext) -> None:
    """Load the [tls] files into the running context: new handshakes use them, existing
    connections are untouched."""
    config = ctx.config
    if ctx.ssl_context is None:
        return
    try:
        ctx.ssl_context.load_cert_chain(config.path(config.tls.cert),
                                        config.path(config.tls.key))
    except (ssl.SSLError, OSError) as exc:
        log.error("tls reload failed, keeping the old certificate: %s", exc)


async def run_acme(ctx: AppContext, challenges: Challenges) -> None:
    """The background task: check now, then every ``check_interval`` seconds. With several
    worker processes one renews (a store lock) and the others load the new files when
    they see them change."""
    owner = f"{socket.gethostname()}:{os.getpid()}"
    cert = ctx.config.path(ctx.config.tls.cert)
    loaded = _mtime(cert)
    while True:
        try:
            if await ctx.store.try_lock("acme-renewal", owner, ORDER_TIMEOUT * 2):
                try:
                    await renew_if_due(ctx, challenges)
                finally:
                    await ctx.store.unlock("acme-renewal", owner)
            if _mtime(cert) != loaded:  # renewed here or by another worker
                reload_tls(ctx)
            loaded = _mtime(cert)
        except Exception:
            log.exception("acme: renewal failed; next try in %.0f s",
                          ctx.config.acme.check_interval)
        await asyncio.sleep(ctx.config.acme.check_interval)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def register(router: Router, challenges: Challenges) -> None:

    async def answer(request: Request, params: dict[str, str]) -> Response:
        validation = challenges.get(params["token"])
        if validation is None:
            return Response(404, b"no such challenge\n", "text/plain; charset=utf-8")
        challenges.served += 1
        log.info("acme: answered the HTTP-01 challenge for %s", request.header("host"))
        return Response(200, validation.encode(), "application/octet-stream")

    router.add("GET", "/.well-known/acme-challenge/{token}", answer)
