"""`pochta doctor` probes ManageSieve listeners (RFC 5804): greeting and capabilities,
STARTTLS, no SASL before TLS, the SIEVE list, and with --sieve-user a CHECKSCRIPT round
trip; a port where another protocol answers, or a wrong password, is a failure."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import json
from pathlib import Path
from typing import Any

from pochta.config import Config
from pochta.diag.doctor import cmd_doctor
from pochta.diag.managesieve import probe_managesieve
from tests.conftest import Instance, Server, start_instance

from .schema import DOCTOR, assert_valid
from .test_doctor import live_config

LISTENERS = [
    {"role": "mta", "port": 0, "tls": "starttls", "address": "127.0.0.1"},
    {"role": "managesieve", "port": 0, "tls": "starttls", "address": "127.0.0.1"},
    {"role": "managesieve", "port": 0, "tls": "implicit", "address": "127.0.0.1"},
]


async def _doctor(cfg: Config, server: Server, password_file: Path | None) -> tuple[int, Any]:
    args = argparse.Namespace(cafile=str(server.cert), no_dns=True, timeout=5.0, json=True,
                              sieve_user="alice@example.test" if password_file else None,
                              password_env=None, password_file=str(password_file or ""))
    buf = io.StringIO()

    def target() -> int:
        with contextlib.redirect_stdout(buf):
            return cmd_doctor(args, cfg)

    rc = await asyncio.to_thread(target)
    return rc, json.loads(buf.getvalue())


async def test_doctor_probes_managesieve(instance: Instance, tmp_path: Path) -> None:
    server = await start_instance(instance, listeners=LISTENERS)
    try:
        cfg = live_config(server)
        secret = tmp_path / "pw"
        secret.write_text("alice-pass\n")
        rc, doc = await _doctor(cfg, server, secret)
        assert_valid(doc, DOCTOR)
        sieve = [f for f in doc["findings"] if f["check"] == "managesieve"]
        assert all(f["status"] == "ok" for f in sieve), sieve
        text = "\n".join(f["message"] for f in sieve)
        starttls, implicit = server.port("managesieve", "starttls"), server.port(
            "managesieve", "implicit")
        assert f"managesieve:{starttls} offers STARTTLS" in text
        assert f"managesieve:{starttls} (starttls) answers: Pochta" in text
        assert f"managesieve:{implicit} (implicit) answers: Pochta" in text
        assert text.count("extensions delivery accepts") == 2
        assert text.count("CHECKSCRIPT accepts a valid script and names the line") == 2
        assert not any(f["check"] == "auth-tls" and f["status"] == "fail"
                       for f in doc["findings"])

        # a wrong password: the round trip fails, the exit status says so
        secret.write_text("wrong\n")
        rc, doc = await _doctor(cfg, server, secret)
        assert rc == 1
        assert any(f["status"] == "fail" and "login as alice@example.test failed" in
                   f["message"] for f in doc["findings"])

        # another protocol on a managesieve port (the MTA): not a ManageSieve server
        mta = server.port("mta")
        wrong = dataclasses.replace(cfg.listeners[1], port=mta)
        rc, doc = await _doctor(dataclasses.replace(cfg, listeners=[wrong]), server, None)
        assert rc == 1
        assert any(f["status"] == "fail" and f["check"] == "managesieve" and
                   f"managesieve:{mta}" in f["message"] for f in doc["findings"])
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()


async def test_probe_flags_a_closed_port() -> None:
    found = await probe_managesieve("127.0.0.1", 1, "starttls", 2.0)
    assert [f.status for f in found] == ["fail"]
    assert "cannot connect to managesieve:1" in found[0].message
