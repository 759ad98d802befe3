"""A tiny authoritative DNS server for interop tests: TXT answers from a JSON table.

Run inside a private network namespace (``unshare -n``) on 127.0.0.1:53, so that a C
program using the system resolver (libopendkim) can read our test keys. It stops by itself
after ``lifetime`` seconds. Usage: dns_server.py TABLE.json READY_FILE [LIFETIME]
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


def main() -> None:
    table: dict[str, list[str]] = {
        k.rstrip(".").lower(): v for k, v in json.loads(Path(sys.argv[1]).read_text()).items()
    }
    lifetime = float(sys.argv[3]) if len(sys.argv) > 3 else 30.0
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 53))
    sock.settimeout(0.5)
    Path(sys.argv[2]).write_text("ready")
    deadline = time.monotonic() + lifetime
    while time.monotonic() < deadline:
        try:
            wire, peer = sock.recvfrom(4096)
        except TimeoutError:
            continue
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:  # not a DNS query: ignore it
            continue
        response = dns.message.make_response(query)
        q = query.question[0]
        name = q.name.to_text().rstrip(".").lower()
        if name in table and q.rdtype == dns.rdatatype.TXT:
            texts = []
            for value in table[name]:
                raw = value.encode()
                chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)]
                texts.append(" ".join('"' + c.decode() + '"' for c in chunks))
            response.answer.append(
                dns.rrset.from_text_list(q.name, 60, dns.rdataclass.IN, dns.rdatatype.TXT, texts)
            )
        elif name not in table:
            response.set_rcode(dns.rcode.NXDOMAIN)
        sock.sendto(response.to_wire(), peer)


if __name__ == "__main__":
    main()
