"""A DNSSEC-signed test zone served by NSD and validated by unbound, both on loopback
ports of their own, started and stopped by the tests (no network, no running service).

``DNSSECLab.start(records)`` writes the zone ``dane.test`` (plus the unsigned
``insecure.test``), signs it with ``ldns-signzone`` (keys from ``ldns-keygen``),
optionally breaks chosen records after signing (their signatures no longer verify: a
bogus answer), starts ``nsd`` as the authoritative server and ``unbound`` as the
validating resolver with the zone's KSK as its trust anchor.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

TOOLS = ("nsd", "unbound", "ldns-keygen", "ldns-signzone")


def tools_missing() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None
            and not Path("/usr/sbin", t).exists()]


def _tool(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def free_port() -> int:
    # a port free for both UDP and TCP on 127.0.0.1
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


HEADER = """$ORIGIN {zone}.
$TTL 300
@ IN SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 300
@ IN NS ns.{zone}.
ns IN A 127.0.0.1
"""


@dataclass
class DNSSECLab:
    dir: Path
    nsd_port: int = 0
    unbound_port: int = 0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def resolver_address(self) -> str:
        return f"127.0.0.1:{self.unbound_port}"

    def start(self, signed: list[str], insecure: list[str], break_names: list[str]) -> None:
        """``signed``/``insecure``: zone-file lines relative to dane.test / insecure.test;
        ``break_names``: owner names in dane.test whose TLSA data is altered after
        signing."""
        d = self.dir
        d.mkdir(parents=True, exist_ok=True)
        (d / "dane.test.zone").write_text(HEADER.format(zone="dane.test") + "\n".join(signed)
                                          + "\n")
        (d / "insecure.test.zone").write_text(HEADER.format(zone="insecure.test")
                                              + "\n".join(insecure) + "\n")
        ksk = self._run("ldns-keygen", "-a", "ECDSAP256SHA256", "-k", "dane.test").strip()
        zsk = self._run("ldns-keygen", "-a", "ECDSAP256SHA256", "dane.test").strip()
        # RRSIG times are serial numbers (RFC 4034 §3.1.5): stay well within 68 years
        expire = time.strftime("%Y%m%d%H%M%S", time.gmtime(time.time() + 30 * 86400))
        incept = time.strftime("%Y%m%d%H%M%S", time.gmtime(time.time() - 3600))
        self._run("ldns-signzone", "-i", incept, "-e", expire, "dane.test.zone", ksk, zsk)
        zone = (d / "dane.test.zone.signed").read_text()
        out = []
        for line in zone.splitlines():
            parts = line.split()
            if (len(parts) >= 8 and parts[3] == "TLSA"
                    and parts[0].rstrip(".") in {n.rstrip(".") for n in break_names}):
                hexdata = parts[-1]
                flipped = ("0" if hexdata[0] != "0" else "1") + hexdata[1:]
                line = " ".join([*parts[:-1], flipped])
            out.append(line)
        (d / "dane.test.zone.signed").write_text("\n".join(out) + "\n")
        anchor = (d / f"{ksk}.key").read_text().split(";")[0].strip()
        (d / "anchor.key").write_text(anchor + "\n")
        self.nsd_port = free_port()
        (d / "nsd.conf").write_text(f"""server:
  ip-address: 127.0.0.1@{self.nsd_port}
  port: {self.nsd_port}
  do-ip6: no
  username: ""
  chroot: ""
  zonesdir: "{d}"
  pidfile: "{d}/nsd.pid"
  xfrdfile: "{d}/xfrd.state"
  zonelistfile: "{d}/zone.list"
  logfile: "{d}/nsd.log"
  server-count: 1
  verbosity: 1
remote-control:
  control-enable: no
zone:
  name: "dane.test"
  zonefile: "dane.test.zone.signed"
zone:
  name: "insecure.test"
  zonefile: "insecure.test.zone"
""")
        self.procs.append(subprocess.Popen(
            [_tool("nsd"), "-d", "-c", str(d / "nsd.conf")],
            stdout=subprocess.DEVNULL, stderr=(d / "nsd.stderr").open("wb")))
        self.unbound_port = free_port()
        (d / "unbound.conf").write_text(f"""server:
  interface: 127.0.0.1
  port: {self.unbound_port}
  do-ip6: no
  username: ""
  chroot: ""
  directory: "{d}"
  pidfile: "{d}/unbound.pid"
  use-syslog: no
  logfile: "{d}/unbound.log"
  verbosity: 1
  val-log-level: 2
  do-daemonize: no
  do-not-query-localhost: no
  qname-minimisation: no
  module-config: "validator iterator"
  trust-anchor-file: "{d}/anchor.key"
  domain-insecure: "insecure.test"
  local-zone: "test." nodefault
  local-zone: "." refuse
  local-zone: "dane.test." transparent
  local-zone: "insecure.test." transparent
  cache-max-ttl: 1
  cache-max-negative-ttl: 1
remote-control:
  control-enable: no
stub-zone:
  name: "dane.test"
  stub-addr: 127.0.0.1@{self.nsd_port}
stub-zone:
  name: "insecure.test"
  stub-addr: 127.0.0.1@{self.nsd_port}
""")
        self.procs.append(subprocess.Popen(
            [_tool("unbound"), "-d", "-c", str(d / "unbound.conf")],
            stdout=subprocess.DEVNULL, stderr=(d / "unbound.stderr").open("wb")))
        self._wait_ready()

    def _run(self, tool: str, *args: str) -> str:
        res = subprocess.run([_tool(tool), *args], cwd=self.dir, capture_output=True,
                             text=True, timeout=60, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)}: {res.stderr}")
        return res.stdout

    def _wait_ready(self) -> None:
        import dns.flags
        import dns.message
        import dns.query

        deadline = time.monotonic() + 20
        last: Exception | None = None
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args!r} exited: {self.logs()}")
            try:
                q = dns.message.make_query("dane.test", "SOA", want_dnssec=True)
                r = dns.query.udp(q, "127.0.0.1", timeout=1, port=self.unbound_port)
                if r.flags & dns.flags.AD:
                    return
                last = RuntimeError(f"SOA answer without AD: rcode {r.rcode()}")
            except Exception as exc:
                last = exc
            time.sleep(0.2)
        raise RuntimeError(f"DNSSEC lab not ready: {last}; {self.logs()}")

    def logs(self) -> str:
        out = []
        for name in ("nsd.stderr", "nsd.log", "unbound.stderr", "unbound.log"):
            p = self.dir / name
            if p.exists():
                out.append(f"--- {name}\n{p.read_text()[-2000:]}")
        return "\n".join(out)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()
