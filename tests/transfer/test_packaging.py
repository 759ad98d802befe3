"""contrib/systemd/pochta.service: systemd accepts it (``systemd-analyze verify``), it
keeps the hardening the README promises, and ``pochta init --standard-ports`` names the
ports to open."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.transfer.helpers import POCHTA

UNIT = Path(__file__).parents[2] / "contrib" / "systemd" / "pochta.service"


def unit_keys() -> dict[str, dict[str, list[str]]]:
    """Section -> key -> values (a key may repeat in a unit file)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out[section] = {}
            continue
        key, _, value = line.partition("=")
        out[section].setdefault(key, []).append(value)
    return out


def test_unit_hardening() -> None:
    keys = unit_keys()
    service = keys["Service"]
    assert service["User"] == ["pochta"] and service["Group"] == ["pochta"]
    assert service["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert service["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                       ("PrivateTmp", "yes"), ("ProtectHome", "yes"),
                       ("ReadWritePaths", "/var/lib/pochta"),
                       ("StateDirectory", "pochta"), ("UMask", "0077")):
        assert service[key] == [value], key
    assert service["ExecStart"][0].endswith("pochta serve")
    assert keys["Install"]["WantedBy"] == ["multi-user.target"]
    configparser.ConfigParser(strict=False).read_string(UNIT.read_text())


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian systemd)")
    # verify checks that ExecStart's program exists: point it at this checkout's pochta
    unit = tmp_path / "pochta.service"
    unit.write_text(UNIT.read_text().replace("/opt/pochta/.venv/bin/pochta", POCHTA))
    done = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and "pochta.service" not in done.stderr, done.stderr
    security = subprocess.run([tool, "security", "--offline=true", "--threshold=30",
                               str(unit)], capture_output=True, text=True, timeout=60)
    assert security.returncode == 0, security.stdout[-2000:]  # exposure 3.0 or better


def test_init_standard_ports_prints_firewall(tmp_path: Path) -> None:
    done = subprocess.run([POCHTA, "init", "--dir", str(tmp_path / "etc"), "--hostname",
                           "mail.example.org", "--standard-ports"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "open these TCP ports" in done.stdout
    for port in (25, 110, 143, 465, 587, 993, 995, 4190):
        assert f"{port:>5}/tcp" in done.stdout
    assert "tcp dport { 25, 110, 143, 465, 587, 993, 995, 4190 } accept" in done.stdout
    demo = subprocess.run([POCHTA, "init", "--dir", str(tmp_path / "demo"), "--hostname",
                           "mail.example.org"], capture_output=True, text=True, timeout=60)
    assert "open these TCP ports" not in demo.stdout  # loopback demo ports: nothing to open
