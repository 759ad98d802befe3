"""What to open in the firewall for a set of listeners, as ``pochta init --standard-ports``
prints it (contrib/systemd/README.md has the same table)."""

from __future__ import annotations

from collections.abc import Mapping

PURPOSE = {
    "mta": "SMTP from other mail servers: open to everyone",
    "submission": "mail submission by your users",
    "imap": "IMAP for your users",
    "pop3": "POP3 for your users",
    "managesieve": "ManageSieve (filters) for your users",
    "http": "HTTPS (web admin, autoconfig, MTA-STS policy)",
}


def firewall_lines(ports: Mapping[tuple[str, str], int]) -> list[str]:
    """Lines naming each port to open and why, plus nftables and ufw one-liners."""
    lines = ["open these TCP ports in the firewall (incoming):"]
    for (role, tls), port in sorted(ports.items(), key=lambda item: item[1]):
        how = {"implicit": "implicit TLS", "starttls": "STARTTLS"}.get(tls, tls)
        lines.append(f"  {port:>5}/tcp  {PURPOSE.get(role, role)} ({how})")
    numbers = ", ".join(str(p) for p in sorted(set(ports.values())))
    lines += [
        f"  nftables: tcp dport {{ {numbers} }} accept",
        f"  ufw:      ufw allow {numbers.replace(' ', '')}/tcp",
        "and allow outgoing TCP port 25 (the queue delivers to other servers there; many "
        "cloud providers block it until asked)",
    ]
    return lines
