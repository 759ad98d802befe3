"""8-bit to 7-bit downgrade for servers without 8BITMIME (RFC 6152 §3: convert, or bounce).

Only bodies are converted (to quoted-printable); 8-bit header fields cannot be downgraded
here, so such messages return ``None`` and the caller bounces them (5.6.3).
"""

from __future__ import annotations

import email
import email.policy
import io
import quopri
from email.generator import BytesGenerator

from pochta.proto.smtp.client import has_8bit, header_section


def downgrade_8bit(message: bytes) -> bytes | None:
    if has_8bit(header_section(message)):
        return None
    policy = email.policy.compat32.clone(linesep="\r\n")
    msg = email.message_from_bytes(message, policy=policy)
    for part in msg.walk():
        if part.is_multipart():
            continue
        cte = str(part.get("Content-Transfer-Encoding", "7bit")).strip().lower()
        if cte in ("base64", "quoted-printable"):
            continue
        raw = part.get_payload(decode=True)
        if not isinstance(raw, bytes) or not has_8bit(raw):
            continue
        encoded = quopri.encodestring(raw.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")
        del part["Content-Transfer-Encoding"]
        part["Content-Transfer-Encoding"] = "quoted-printable"
        part.set_payload(encoded.decode("ascii"))
    buf = io.BytesIO()
    BytesGenerator(buf, mangle_from_=False, maxheaderlen=0, policy=policy).flatten(msg)
    out = buf.getvalue()
    return None if has_8bit(out) else out
