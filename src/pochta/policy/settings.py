"""Configuration sections for the mail-authentication policy (``[dkim]``, ``[spf]``, ``[dmarc]``).

Each is a frozen dataclass with defaults and a ``doc`` per field, in the style of
``pochta.config``, so the main ``Config`` can embed them as sections unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ACTIONS = ("none", "quarantine", "reject")


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True)
class DKIMSettings:
    sign: bool = field(
        default=True,
        metadata=_doc("DKIM-sign mail submitted by authenticated users of local domains"),
    )
    algorithms: list[str] = field(
        default_factory=lambda: ["rsa", "ed25519"],
        metadata=_doc(
            "keys made for a new domain: rsa (rsa-sha256) and/or ed25519 (RFC 8463); "
            "each active key adds one signature"
        ),
    )
    rsa_bits: int = field(default=2048, metadata=_doc("RSA key size (RFC 8301: at least 1024)"))
    verify: bool = field(default=True, metadata=_doc("verify DKIM signatures on inbound mail"))


@dataclass(frozen=True)
class SPFSettings:
    check: bool = field(default=True, metadata=_doc("evaluate SPF (RFC 7208) on inbound mail"))
    fail_action: str = field(
        default="none",
        metadata=_doc(
            "what an SPF fail does on its own (DMARC decides otherwise): none, quarantine "
            "or reject"
        ),
    )


@dataclass(frozen=True)
class DMARCSettings:
    check: bool = field(default=True, metadata=_doc("evaluate DMARC (RFC 7489) on inbound mail"))
    reject_action: str = field(
        default="reject",
        metadata=_doc(
            "what p=reject does: reject (550 5.7.1 after DATA) or quarantine (Junk mailbox)"
        ),
    )
    honor_pct: bool = field(
        default=True, metadata=_doc("apply the policy to only pct% of failing messages")
    )
    quarantine_mailbox: str = field(
        default="Junk", metadata=_doc("mailbox that quarantined messages are delivered to")
    )
    report_address: str = field(
        default="",
        metadata=_doc(
            "rua address suggested by 'pochta dns records' (default: postmaster@DOMAIN)"
        ),
    )


def validate(dkim: DKIMSettings, spf: SPFSettings, dmarc: DMARCSettings) -> list[str]:
    """Problems in these sections, each naming its key (empty when all is well)."""
    problems = []
    for i, alg in enumerate(dkim.algorithms):
        if alg not in ("rsa", "ed25519"):
            problems.append(f"dkim.algorithms[{i}]: must be rsa or ed25519, got {alg!r}")
    if dkim.rsa_bits < 1024 or dkim.rsa_bits > 8192:
        problems.append("dkim.rsa_bits: must be from 1024 to 8192 (2048 recommended)")
    if spf.fail_action not in ACTIONS:
        problems.append("spf.fail_action: must be none, quarantine or reject")
    if dmarc.reject_action not in ("reject", "quarantine"):
        problems.append("dmarc.reject_action: must be reject or quarantine")
    if not dmarc.quarantine_mailbox:
        problems.append("dmarc.quarantine_mailbox: must not be empty")
    return problems
