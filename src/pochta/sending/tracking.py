"""Open and click tracking (issue 18), opt-in per domain and stream (``[[sending.tracking]]``)
and per message (the API's ``track`` field, which wins).

For a copy that is tracked, its HTML part is rewritten before DKIM signing:

* clicks: each ``<a href="http(s)://...">`` points at ``PUBLIC_URL/t/c/TOKEN``, where the
  token carries the copy's id and the original URL under an HMAC (the server's sending
  secret). The server answers a genuine token with a redirect to the URL inside it and a
  ``clicked`` event; anything else is a 404. So the endpoint is no open redirect: it only
  ever sends a browser where a message we signed pointed.
* opens: a 1x1 transparent GIF ``PUBLIC_URL/t/o/TOKEN.gif`` at the end of the body; each
  fetch of a genuine token is an ``opened`` event (mail clients that load images only;
  privacy proxies such as Apple's load them on delivery, so opens are an estimate).

Text parts, ``raw`` messages and mailto/other links are left alone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import re
from collections.abc import Callable

MAC_BYTES = 16
MAX_URL = 2000
# 1x1 transparent GIF (GIF89a)
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")

_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_ID = re.compile(r"^[0-9A-F]{6,32}$")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, kind: str, payload: bytes) -> str:
    return _b64(hmac.new(secret, kind.encode() + b"\0" + payload,
                         hashlib.sha256).digest()[:MAC_BYTES])


def open_token(secret: bytes, message_id: str) -> str:
    return f"{message_id}.{_mac(secret, 'open', message_id.encode())}"


def parse_open_token(secret: bytes, token: str) -> str | None:
    """The copy's id, or None for a token we did not make."""
    token = token.removesuffix(".gif")
    message_id, _, mac = token.partition(".")
    if not _ID.match(message_id):
        return None
    if not hmac.compare_digest(_mac(secret, "open", message_id.encode()), mac):
        return None
    return message_id


def click_token(secret: bytes, message_id: str, url: str) -> str:
    payload = f"{message_id}\n{url}".encode()
    return f"{_b64(payload)}.{_mac(secret, 'click', payload)}"


def parse_click_token(secret: bytes, token: str) -> tuple[str, str] | None:
    """(the copy's id, the URL it links to), or None for a token we did not make."""
    body, _, mac = token.partition(".")
    try:
        payload = _unb64(body)
    except ValueError:
        return None
    if not hmac.compare_digest(_mac(secret, "click", payload), mac):
        return None
    message_id, _, url = payload.decode("utf-8", "replace").partition("\n")
    return message_id, url


def rewriter(secret: bytes, base_url: str, message_id: str, opens: bool, clicks: bool
             ) -> Callable[[str], str]:
    """HTML -> HTML for one copy."""
    base = base_url.rstrip("/")

    def rewrite(text: str) -> str:
        if clicks:
            def link(m: re.Match[str]) -> str:
                url = html.unescape(m.group(3)).strip()
                if not url.lower().startswith(("http://", "https://")) or len(url) > MAX_URL:
                    return m.group(0)
                tracked = f"{base}/t/c/{click_token(secret, message_id, url)}"
                return f"{m.group(1)}{m.group(2)}{tracked}{m.group(2)}"

            text = _HREF.sub(link, text)
        if opens:
            pixel = (f'<img src="{base}/t/o/{open_token(secret, message_id)}.gif" '
                     'width="1" height="1" alt="" style="display:none">')
            ends = list(_BODY_END.finditer(text))
            if ends:
                at = ends[-1].start()
                text = text[:at] + pixel + text[at:]
            else:
                text += pixel
        return text

    return rewrite
