"""`pochta doctor` against a running Pochta (and against the sink posing as an MTA)."""

from __future__ import annotations

import dataclasses
from typing import Any

from pochta.config import Config
from pochta.diag.doctor import cmd_doctor, relay_battery, relay_test
from pochta.diag.sink import Sink, SinkOptions
from pochta.dns import MX
from pochta.policy import records
from tests.conftest import Instance, Server, start_instance

from .schema import DOCTOR, assert_valid


def live_config(server: Server, **changes: Any) -> Config:
    """The server's config with the listeners' real (OS-chosen) ports."""
    cfg = server.ctx.config
    listeners = [dataclasses.replace(lst, port=server.port(lst.role, lst.tls))
                 for lst in cfg.listeners]
    return dataclasses.replace(cfg, listeners=listeners, **changes)


def publish_records(server: Server, cfg: Config) -> None:
    from pochta.policy.records import services_from_listeners

    r = server.resolver
    for rec in records.records_for("example.test", cfg.hostname, [],
                                   services=services_from_listeners(cfg.listeners)):
        if rec.type == "MX":
            r.mx_records.setdefault(rec.name, []).append(MX(10, rec.value.split()[1][:-1]))
        elif rec.type == "TXT":
            r.txt_records.setdefault(rec.name, []).append(rec.value)


async def run_doctor_cli(cfg: Config, server: Server, *extra: str) -> tuple[int, Any]:
    """cmd_doctor in a thread with its DNS pointed at the server's static resolver."""
    import argparse
    import asyncio
    import contextlib
    import io
    import json

    from pochta.diag import common

    args = argparse.Namespace(cafile=str(server.cert), no_dns="--no-dns" in extra,
                              timeout=5.0, json=True)
    buf = io.StringIO()
    old = common.make_resolver
    common.make_resolver = lambda *a, **k: server.resolver
    try:
        def target() -> int:
            with contextlib.redirect_stdout(buf):
                return cmd_doctor(args, cfg)

        rc = await asyncio.to_thread(target)
    finally:
        common.make_resolver = old
    return rc, json.loads(buf.getvalue())


async def test_doctor_healthy_install(running_server: Server) -> None:
    cfg = live_config(running_server)
    publish_records(running_server, cfg)
    rc, doc = await run_doctor_cli(cfg, running_server)
    assert_valid(doc, DOCTOR)
    problems = [f for f in doc["findings"] if f["status"] in ("warn", "fail")
                and f["check"] != "reach"]
    assert problems == []
    # a test instance on 127.0.0.1: reachable from this machine only, which is reported
    reach = [f for f in doc["findings"] if f["check"] == "reach"]
    assert len(reach) == 7 and all(f["status"] == "warn" for f in reach), reach
    assert "no other machine can connect" in reach[0]["message"]
    assert 'address = "*"' in reach[0]["fix"]
    assert rc == 1
    by: dict[str, list[Any]] = {}
    for f in doc["findings"]:
        by.setdefault(f["check"], []).append(f)
    assert len([f for f in by["listener"] if f["message"].endswith(")") or "answers" in
                f["message"]]) >= 7
    relay = by["relay"]
    assert len(relay) == 5 and all(f["status"] == "ok" for f in relay), relay
    assert {f["message"].split(" RCPT")[0] for f in relay} == {
        "external recipient", "percent hack", "bang path", "source route",
        "quoted local part with @"}
    auth = by["auth-tls"]
    assert len(auth) == 4 and all(f["status"] == "ok" for f in auth)  # the STARTTLS ports
    assert any("MX mail.example.test" in f["message"] for f in by["dns"])
    assert by["queue"][0]["message"].startswith("0 pending")
    assert by["certificate"][0]["status"] == "ok"


async def test_doctor_reports_missing_dns(running_server: Server) -> None:
    cfg = live_config(running_server)
    rc, doc = await run_doctor_cli(cfg, running_server)
    assert rc == 1
    dns = [f for f in doc["findings"] if f["check"] == "dns"]
    mx = next(f for f in dns if " MX " in f["message"])
    assert mx["status"] == "fail" and "IN MX 10 mail.example.test." in mx["fix"]
    assert any(f["status"] == "warn" and "v=spf1" in f["message"] for f in dns)


async def test_doctor_listener_down(running_server: Server) -> None:
    cfg = live_config(running_server)
    dead = dataclasses.replace(cfg.listeners[0], role="imap", port=1, tls="implicit")
    cfg = dataclasses.replace(cfg, listeners=[*cfg.listeners, dead])
    rc, doc = await run_doctor_cli(cfg, running_server, "--no-dns")
    assert rc == 1
    assert any(f["status"] == "fail" and f["message"].startswith("imap:1 ")
               for f in doc["findings"])
    assert not any(f["check"] == "dns" for f in doc["findings"])


async def test_doctor_trusted_network_relay_is_info(instance: Instance) -> None:
    server = await start_instance(instance, trusted_networks=["127.0.0.0/8"])
    try:
        cfg = live_config(server)
        rc, doc = await run_doctor_cli(cfg, server, "--no-dns")
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()
    relay = {f["message"].split(" RCPT")[0]: f for f in doc["findings"] if f["check"] == "relay"}
    # loopback is trusted: relaying for it is allowed, and reported as such
    ext = relay["external recipient"]
    assert ext["status"] == "info" and "trusted_networks" in ext["message"]
    # the tricks stay refused even for a trusted client (they are not remote addresses)
    for name in ("percent hack", "bang path", "quoted local part with @"):
        assert relay[name]["status"] == "ok", relay[name]
    assert rc == 0 or all(f["status"] != "fail" for f in doc["findings"])


async def test_relay_battery_catches_open_relay() -> None:
    sink = Sink(SinkOptions(port=0))  # accepts every recipient: an open relay
    port = await sink.start()
    try:
        found = await relay_test("127.0.0.1", port, "example.test", 5.0, trusted=False)
    finally:
        await sink.close()
    assert len(found) == 5
    assert all(f.status == "fail" and "OPEN RELAY" in f.message for f in found)
    assert sink.records == []  # never a message, only RCPT probes


def test_battery_addresses() -> None:
    rcpts = [r for _, r in relay_battery("example.test")]
    assert rcpts == ["<user@other.test>", "<user%other.test@example.test>",
                     "<other.test!user@example.test>", "<@example.test:user@other.test>",
                     '<"user@other.test"@example.test>']


async def test_doctor_expiring_certificate(running_server: Server, tmp_path: Any) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from pochta.diag.doctor import check_certificate

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "other.example")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=80))
            .not_valid_after(now + datetime.timedelta(days=5))
            .sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    cfg = live_config(running_server)
    cfg = dataclasses.replace(cfg, tls=dataclasses.replace(
        cfg.tls, cert=str(tmp_path / "c.pem"), key=str(tmp_path / "missing.pem")))
    found = {(f.status, f.message.split(" ")[0]) for f in check_certificate(cfg)}
    msgs = [f.message for f in check_certificate(cfg)]
    assert ("warn", "expires") in found
    assert any("does not name mail.example.test" in m for m in msgs)
    assert any("missing" in m for m in msgs)


async def test_doctor_catch_all_is_not_an_open_relay(running_server: Server) -> None:
    """With ``@example.test`` as a catch-all, the tricks' addresses are local ones: they
    are accepted and delivered to the catch-all's mailbox, which the doctor says."""
    await running_server.store.add_alias("@example.test", ["alice@example.test"])
    cfg = live_config(running_server)
    _, doc = await run_doctor_cli(cfg, running_server, "--no-dns")
    relay = {f["message"].split(" RCPT")[0]: f for f in doc["findings"] if f["check"] == "relay"}
    assert all(f["status"] == "ok" for f in relay.values()), relay
    for name in ("percent hack", "bang path", "quoted local part with @"):
        msg = relay[name]["message"]
        assert "accepted for local delivery to alice@example.test (the catch-all " \
               "@example.test): not relayed" in msg, msg
    assert "refused" in relay["external recipient"]["message"]
    assert not any(f["status"] == "fail" for f in doc["findings"])


async def test_doctor_alias_forwarding_out_is_reported(running_server: Server) -> None:
    """A catch-all that forwards to another domain sends the mail where the admin chose,
    not where the trick asked: said as such."""
    await running_server.store.add_alias("@example.test", ["someone@elsewhere.test"])
    cfg = live_config(running_server)
    _, doc = await run_doctor_cli(cfg, running_server, "--no-dns")
    relay = {f["message"].split(" RCPT")[0]: f for f in doc["findings"] if f["check"] == "relay"}
    hack = relay["percent hack"]
    assert hack["status"] == "ok", hack
    assert "someone@elsewhere.test (an alias forwards there)" in hack["message"]


async def test_doctor_all_addresses_is_reachable(running_server: Server) -> None:
    from pochta.diag.doctor import check_reachability

    cfg = live_config(running_server)
    cfg = dataclasses.replace(cfg, listeners=[dataclasses.replace(lst, address="*")
                                              for lst in cfg.listeners])
    found = check_reachability(cfg)
    assert [f.status for f in found] == ["ok"]


async def test_doctor_inactive_dkim_key_is_not_a_failure(running_server: Server) -> None:
    """A retired (or not yet activated) selector is not published: the doctor names it
    and says how to retire it, instead of failing forever."""
    from pochta.policy import dkim

    data = running_server.ctx.config.data_path
    dkim.generate_key(data, "example.test", "old1", "ed25519")
    cfg = live_config(running_server)
    publish_records(running_server, cfg)
    _, doc = await run_doctor_cli(cfg, running_server)
    dns = [f for f in doc["findings"] if f["check"] == "dns" and "old1" in f["message"]]
    assert [f["status"] for f in dns] == ["info"], dns
    assert "pochta dkim remove example.test old1" in dns[0]["message"]
    dkim.activate(data, "example.test", "old1")  # a signing key must be published
    _, doc = await run_doctor_cli(cfg, running_server)
    dns = [f for f in doc["findings"] if f["check"] == "dns" and "old1" in f["message"]]
    assert [f["status"] for f in dns] == ["fail"], dns
