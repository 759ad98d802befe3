#!/usr/bin/env python3
"""A local DNS server for the screening benchmark (the machine has no network): answers
the client's rDNS (127.0.0.1 <-> localhost.bench.test), NXDOMAIN for everything else (so
DNS list queries get a negative answer), TTL 300.

    bench/dns_local.py 127.0.0.2 53      # until killed
"""

from __future__ import annotations

import socket
import sys

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

ANSWERS = {
    ("1.0.0.127.in-addr.arpa.", dns.rdatatype.PTR): "localhost.bench.test.",
    ("localhost.bench.test.", dns.rdatatype.A): "127.0.0.1",
}


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, port))
    while True:
        wire, peer = sock.recvfrom(4096)
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # not a DNS query
            continue
        response = dns.message.make_response(query)
        q = query.question[0]
        answer = ANSWERS.get((q.name.to_text().lower(), q.rdtype))
        if answer is not None:
            response.answer.append(dns.rrset.from_text(q.name, 300, dns.rdataclass.IN,
                                                       q.rdtype, answer))
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        sock.sendto(response.to_wire(), peer)


if __name__ == "__main__":
    main()
