"""Whether a message has an attachment, for the ``$HasAttachment`` / ``$HasNoAttachment``
keywords a message gets when it is stored (as Dovecot's ``mail_attachment_detection_options
= add-flags``): mail clients show and search them without fetching BODYSTRUCTURE (JMAP's
``hasAttachment``, RFC 8621 §4.1.4, is the same question).

A part is an attachment, as Dovecot decides it, when its ``Content-Disposition`` is
``attachment``, or ``inline`` with a ``filename`` (RFC 2183 §2.3: a file the sender
meant to be saved, e.g. a photo shown in the text); signatures (PGP/MIME, S/MIME) are
not. Only the part headers are read, line by line, so a message on disk is scanned in
chunks and never held in memory; the body bytes are skipped.
"""

from __future__ import annotations

from email.message import Message

HAS_ATTACHMENT = "$HasAttachment"
HAS_NO_ATTACHMENT = "$HasNoAttachment"
KEYWORDS = frozenset({HAS_ATTACHMENT, HAS_NO_ATTACHMENT})
# RFC 3156 §5 (PGP/MIME), RFC 8551 §3.5.3 (S/MIME): a signed message has no attachment
_SIGNATURES = frozenset({"application/pgp-signature", "application/pkcs7-signature",
                         "application/x-pkcs7-signature"})
MAX_PARTS = 1000  # a message with more parts is read no further
MAX_HEADER = 64 * 1024  # bytes of one part's header that are read
_DIGEST_CHILD = "message/rfc822"  # RFC 2046 §5.1.5: a digest's parts default to it


class AttachmentScan:
    """Fed a message in pieces (``feed``), then ``result()``: a multipart's boundaries
    are learnt from its header, a boundary line starts a part's header, and a
    message/rfc822 part's body starts with one. In a body only lines that begin with
    "--" matter (RFC 2046 §5.1.1), found with ``bytes.find``, so the body is not split
    into lines."""

    def __init__(self) -> None:
        self._rest = b""
        self._line_start = True  # whether ``_rest`` begins a line
        self._in_header = True
        self._header: list[bytes] = []
        self._header_size = 0
        self._boundaries: dict[bytes, str] = {}  # boundary -> default type of its parts
        self._default = "text/plain"  # of the part whose header is being read
        self._parts = 0
        self.found = False

    def _stopped(self) -> bool:
        return self.found or self._parts > MAX_PARTS

    def feed(self, data: bytes) -> None:
        if self._stopped():
            return
        buf, start = self._rest + data, self._line_start
        self._rest, self._line_start = b"", True
        i, n = 0, len(buf)
        while i < n and not self._stopped():
            if self._in_header:
                j = buf.find(b"\n", i)
                if j < 0:
                    self._rest = buf[i:]
                    return
                self._header_line(buf[i:j])
                i = j + 1
                continue
            if not self._boundaries:
                return  # a single part's body: nothing after it can be a header
            if (i > 0 or start) and buf.startswith(b"--", i):
                at = i
            else:
                k = buf.find(b"\n--", i)
                if k < 0:
                    # keep what may be the start of "\n--" cut by the end of this piece
                    self._rest = buf[max(i, n - 2):]
                    self._line_start = n - i < 2 and (i > 0 or start)
                    return
                at = k + 1
            end = buf.find(b"\n", at)
            if end < 0:
                self._rest = buf[at:]
                return
            self._body_line(buf[at:end])
            i = end + 1

    def result(self) -> bool:
        if self._rest and not self._stopped():
            if self._in_header:
                self._header_line(self._rest)
            elif self._line_start:
                self._body_line(self._rest)
            self._rest = b""
        if self._in_header and self._header and not self._stopped():
            self._end_header()
        return self.found

    def _header_line(self, line: bytes) -> None:
        if line in (b"", b"\r"):
            self._end_header()
        elif self._header_size < MAX_HEADER:
            self._header.append(line)
            self._header_size += len(line)

    def _body_line(self, line: bytes) -> None:
        mark = line[2:].rstrip(b" \t\r")
        if mark in self._boundaries:  # RFC 2046 §5.1.1: a part begins
            self._default = self._boundaries[mark]
            self._in_header = True
        # a closing delimiter ("--boundary--") ends the parts: the epilogue is skipped

    def _end_header(self) -> None:
        ctype, disposition, filename, boundary = _mime_fields(self._header, self._default)
        self._header, self._header_size, self._in_header = [], 0, False
        self._default = "text/plain"
        self._parts += 1
        if ctype not in _SIGNATURES and (
                disposition == "attachment" or (disposition == "inline" and filename)):
            self.found = True
        elif ctype.startswith("multipart/") and boundary:
            self._boundaries[boundary] = (_DIGEST_CHILD if ctype == "multipart/digest"
                                          else "text/plain")
        elif ctype in ("message/rfc822", "message/global"):
            self._in_header = True  # the enclosed message's own header follows


def _mime_fields(lines: list[bytes], default: str
                 ) -> tuple[str, str | None, bool, bytes | None]:
    """(content type, disposition, whether it names a file, boundary) of a header."""
    wanted: dict[str, str] = {}
    current: str | None = None
    for raw in lines:
        line = raw.rstrip(b"\r").decode("utf-8", "surrogateescape")
        if line[:1] in (" ", "\t"):
            if current is not None:
                wanted[current] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        key = name.strip().lower()
        current = None
        if colon and key in ("content-type", "content-disposition") and key not in wanted:
            wanted[key] = value.strip()
            current = key
    raw_type = wanted.get("content-type", default).lstrip().lower()
    if "content-disposition" not in wanted and not raw_type.startswith(
            ("multipart/", "message/")):
        # neither an attachment nor a container: skip the parameter parsing (most parts)
        return raw_type.split(";", 1)[0].strip(), None, False, None
    msg = Message()
    msg.set_default_type(default)
    for key, value in wanted.items():
        msg[key] = value
    ctype = msg.get_content_type()
    boundary = msg.get_boundary()
    filename = msg.get_param("filename", header="content-disposition") is not None
    return (ctype, msg.get_content_disposition(), filename,
            boundary.encode("utf-8", "surrogateescape") if boundary else None)


def attachment_keyword(data: bytes) -> str:
    """``$HasAttachment`` or ``$HasNoAttachment`` for a message."""
    scan = AttachmentScan()
    scan.feed(data)
    return HAS_ATTACHMENT if scan.result() else HAS_NO_ATTACHMENT


def attachment_keyword_of_file(path: str, offset: int, size: int, prefix: bytes = b"",
                               chunk: int = 256 * 1024) -> str:
    """The same for a message of ``prefix`` and ``size`` bytes of a file from ``offset``
    (a spooled message), read in chunks (blocking: run it in a thread)."""
    scan = AttachmentScan()
    scan.feed(prefix)
    with open(path, "rb") as f:
        f.seek(offset)
        left = size
        while left > 0 and not scan.found:
            piece = f.read(min(chunk, left))
            if not piece:
                break
            scan.feed(piece)
            left -= len(piece)
    return HAS_ATTACHMENT if scan.result() else HAS_NO_ATTACHMENT
