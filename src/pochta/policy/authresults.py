"""The ``Authentication-Results:`` header field (RFC 8601).

``build`` renders our one header from the SPF, DKIM and DMARC results; ``strip_forged``
removes header fields that claim our authserv-id before we add ours (§5: a receiver MUST
remove or rename such fields arriving from outside, since they could be forged).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pochta.mail.headers import header_fields, split_header
from pochta.policy.dkim import DKIMResult
from pochta.policy.dmarc import DMARCResult
from pochta.policy.spf import SPFResult

_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~@]+$")


def _comment(text: str) -> str:
    clean = "".join(c if c.isprintable() else " " for c in text)
    clean = clean.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return f" ({clean})" if clean else ""


def _value(text: str) -> str:
    """A pvalue: a token or addr-spec as is, anything else quoted (§2.2)."""
    if text and _TOKEN_RE.match(text) and text.count("@") <= 1:
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def spf_resinfo(spf: SPFResult) -> str:
    prop = "smtp.helo" if spf.identity == "helo" else "smtp.mailfrom"
    ident = spf.domain if spf.identity == "helo" else spf.sender
    return f"spf={spf.result}{_comment(spf.reason)} {prop}={_value(ident)}"


def dkim_resinfo(res: DKIMResult) -> str:
    out = f"dkim={res.result}{_comment(res.reason)}"
    if res.domain:
        out += f" header.d={_value(res.domain)}"
    if res.selector:
        out += f" header.s={_value(res.selector)}"
    if res.algorithm:
        out += f" header.a={_value(res.algorithm)}"
    if res.b:
        out += f" header.b={_value(res.b)}"  # RFC 6008
    return out


def dmarc_resinfo(res: DMARCResult) -> str:
    detail = f"p={res.policy or 'none'} dis={res.disposition}" if res.policy else res.reason
    return f"dmarc={res.result}{_comment(detail)} header.from={_value(res.from_domain)}"


def build(
    authserv_id: str,
    spf: SPFResult | None,
    dkim: Sequence[DKIMResult],
    dmarc: DMARCResult | None,
    extra: Sequence[str] = (),
) -> bytes:
    """One ``Authentication-Results:`` field, folded one result per line, CRLF-terminated.
    ``extra``: further resinfo, e.g. ``arc=pass`` (pochta.policy.arc)."""
    parts: list[str] = []
    if spf is not None:
        parts.append(spf_resinfo(spf))
    if dkim:
        parts.extend(dkim_resinfo(r) for r in dkim)
    else:
        parts.append("dkim=none")
    if dmarc is not None:
        parts.append(dmarc_resinfo(dmarc))
    parts.extend(extra)
    text = f"Authentication-Results: {authserv_id}"
    text += "".join(f";\r\n\t{p}" for p in parts) if parts else "; none"
    return text.encode("utf-8") + b"\r\n"


def authserv_id(field_value: bytes) -> str:
    """The authserv-id of an A-R field value (comments and whitespace skipped)."""
    text = field_value.decode("utf-8", "replace")
    text = re.sub(r"\([^()]*\)", " ", text)  # RFC 5322 comments (one level is enough)
    head = text.split(";", 1)[0].strip()
    return head.split()[0].strip('"').lower() if head else ""


def strip_forged(message: bytes, our_hostname: str) -> bytes:
    """Remove every Authentication-Results field whose authserv-id is ours."""
    ours = our_hostname.rstrip(".").lower()
    header, rest = split_header(message)
    kept = []
    for name, raw in header_fields(header):
        if (name.lower() == b"authentication-results"
                and authserv_id(raw.partition(b":")[2]).rstrip(".") == ours):
            continue
        kept.append(raw)
    return b"".join(kept) + rest
