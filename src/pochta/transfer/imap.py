"""``pochta import imap USER --from imaps://LOGIN@HOST[:PORT]``: copy a whole account from
another IMAP server, resumably.

Every selectable folder the server LISTs is copied (read-only: EXAMINE and BODY.PEEK, so
the old server's \\Seen flags and \\Recent state are not touched) with its messages'
flags (not \\Recent, which no client can set) and INTERNALDATE, through the same
``Importer`` as the file imports. Folders the server marks with an RFC 6154 special use
(\\Sent, \\Drafts, \\Trash, \\Junk, \\Archive) land in Pochta's mailbox of that use, so
"Sent Items" or "INBOX.Sent" fill "Sent".

Resuming: after each batch, the folder's UIDVALIDITY and the highest UID copied are
written to a small JSON file in ``<data_dir>/import/``; the next run fetches only UIDs above
it (RFC 9051 §2.3.1.1: UIDs only grow within one UIDVALIDITY). If the server's
UIDVALIDITY changed, that folder is read again from the start and duplicates are skipped
by content (see importer.py), so an interrupted or repeated run never doubles mail.

The client is the standard library's ``imaplib`` (blocking, run in a worker thread);
messages are fetched in batches of at most 50 messages or 16 MB, by the sizes the server
reports first, so memory stays bounded by the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import getpass
import imaplib
import json
import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ..mail.tls import client_context
from ..proto.imap.mutf7 import decode_mutf7
from ..storage.interfaces import Account, MailStore
from .body import BodyWriter
from .errors import TransferError
from .importer import Importer, ImportReport, Progress

BATCH_MESSAGES = 50
BATCH_BYTES = 16 * 1024 * 1024
SPECIAL_USE = {"\\sent": "Sent", "\\drafts": "Drafts", "\\trash": "Trash",
               "\\junk": "Junk", "\\archive": "Archive"}
_LIST = re.compile(rb'^\((?P<attrs>[^)]*)\) (?P<delim>"(?:[^"\\]|\\.)*"|NIL) ?(?P<name>.*)$',
                   re.IGNORECASE)
_UID = re.compile(rb"\bUID (\d+)", re.IGNORECASE)
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)", re.IGNORECASE)
_DATE = re.compile(rb'\bINTERNALDATE "([^"]+)"', re.IGNORECASE)
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ImapSource:
    host: str
    port: int
    implicit_tls: bool
    login: str
    password: str
    ca_file: str | None = None
    verify: bool = True

    @classmethod
    def from_args(cls, url: str, password_file: str | None, ca_file: str | None,
                  no_verify: bool, login: str | None) -> ImapSource:
        parts = urlsplit(url)
        if parts.scheme not in ("imaps", "imap") or not parts.hostname:
            raise TransferError(f"{url}: give imaps://LOGIN@HOST[:PORT] (implicit TLS) or "
                                "imap://LOGIN@HOST[:PORT] (STARTTLS)")
        user = login or (unquote(parts.username) if parts.username else None)
        if not user:
            raise TransferError("no login name: put it in the URL (imaps://LOGIN@HOST) or "
                                "give --user")
        implicit = parts.scheme == "imaps"
        try:
            port = parts.port or (993 if implicit else 143)
        except ValueError as exc:
            raise TransferError(f"{url}: {exc}") from None
        if password_file:
            try:
                password = Path(password_file).read_text(encoding="utf-8").split("\n")[0]
            except OSError as exc:
                raise TransferError(f"--password-file: {exc}") from None
            password = password.rstrip("\r")
        else:
            try:
                password = getpass.getpass(f"Password for {user} at {parts.hostname}: ")
            except EOFError:
                raise TransferError("no password: give --password-file") from None
        return cls(parts.hostname, port, implicit, user, password, ca_file, not no_verify)

    def describe(self) -> str:
        scheme = "imaps" if self.implicit_tls else "imap"
        return f"{scheme}://{self.login}@{self.host}:{self.port}"

    def state_name(self) -> str:
        raw = f"{self.login}@{self.host}:{self.port}"
        return re.sub(r"[^A-Za-z0-9@._-]", "_", raw)

    def tls_context(self) -> ssl.SSLContext:
        return client_context(self.verify, self.ca_file)

    def connect(self) -> imaplib.IMAP4:
        try:
            conn: imaplib.IMAP4
            if self.implicit_tls:
                conn = imaplib.IMAP4_SSL(self.host, self.port, ssl_context=self.tls_context(),
                                         timeout=120)
            else:
                conn = imaplib.IMAP4(self.host, self.port, timeout=120)
                conn.starttls(ssl_context=self.tls_context())  # never a password in clear
            conn.login(self.login, self.password)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise TransferError(f"{self.describe()}: {exc}") from None
        return conn


@dataclass(frozen=True, slots=True)
class RemoteFolder:
    remote: str  # the name as the server spells it (modified UTF-7)
    local: str  # the Pochta mailbox


def _unquote(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    if text.startswith('"') and text.endswith('"'):
        text = re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def parse_list(data: list[Any]) -> list[RemoteFolder]:
    folders = []
    items = list(data)
    for item in items:
        if item is None:
            continue
        if isinstance(item, tuple):  # the name came as a literal
            head, literal = item
            line = head.rsplit(b"{", 1)[0] + b'"' + literal.replace(b'"', b'\\"') + b'"'
        else:
            line = item
        match = _LIST.match(line)
        if match is None:
            continue
        attrs = {a.lower() for a in match["attrs"].decode("ascii", "replace").split()}
        if "\\noselect" in attrs or "\\nonexistent" in attrs:
            continue
        delim = _unquote(match["delim"]) if match["delim"].upper() != b"NIL" else ""
        name = _unquote(match["name"].strip())
        local = decode_mutf7(name)
        if delim and delim != "/":
            local = local.replace("/", "_").replace(delim, "/")
        special = next((SPECIAL_USE[a] for a in attrs if a in SPECIAL_USE), None)
        if local.upper() == "INBOX":
            local = "INBOX"
        elif special is not None:
            local = special
        folders.append(RemoteFolder(name, local))
    folders.sort(key=lambda f: (f.local != "INBOX", f.local))
    return folders


def _quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_internaldate(text: str) -> float:
    """``01-Jan-2024 10:00:00 +0000`` (RFC 9051 date-time)."""
    return dt.datetime.strptime(text.strip(), "%d-%b-%Y %H:%M:%S %z").timestamp()


@dataclass
class _Fetched:
    uid: int
    flags: frozenset[str]
    internaldate: float | None
    body: bytes


def parse_fetch(data: list[Any]) -> list[_Fetched]:
    """imaplib's FETCH data: (head, literal) tuples, with the rest of each response
    (items after the literal, the closing parenthesis) as the bytes that follow."""
    out: list[_Fetched] = []
    pending: list[tuple[bytes, bytes]] = []
    for item in data:
        if isinstance(item, tuple):
            pending.append((item[0], item[1]))
        elif isinstance(item, bytes) and pending:
            head, literal = pending[-1]
            pending[-1] = (head + b" " + item, literal)
    for meta, body in pending:
        uid = _UID.search(meta)
        if uid is None:
            continue
        flags = _FLAGS.search(meta)
        date = _DATE.search(meta)
        names = flags[1].decode("utf-8", "replace").split() if flags else []
        out.append(_Fetched(
            int(uid[1]),
            frozenset(f for f in names if f.lower() != "\\recent"),
            parse_internaldate(date[1].decode("ascii")) if date else None,
            body))
    return out


class ResumeState:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.folders: dict[str, dict[str, int]] = json.loads(
                path.read_text(encoding="utf-8"))["folders"]
        except FileNotFoundError:
            self.folders = {}
        except (ValueError, KeyError) as exc:
            raise TransferError(f"{path}: unreadable resume state ({exc}); remove it to "
                                "start over (duplicates are skipped)") from None

    def save(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"folders": self.folders}, indent=1), encoding="utf-8")
        os.replace(tmp, self.path)


def _ok(typ: str, data: list[Any], what: str) -> list[Any]:
    if typ != "OK":
        detail = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
        raise TransferError(f"{what}: {typ} {detail}")
    return data


async def import_imap(store: MailStore, account: Account, source: ImapSource,
                      state_dir: Path, progress: Progress,
                      spool_dir: Path | None = None) -> ImportReport:
    conn = await asyncio.to_thread(source.connect)
    state = ResumeState(state_dir / f"imap-{account.address}-{source.state_name()}.json")
    importer = Importer(store, account, progress)
    try:
        typ, data = await asyncio.to_thread(conn.list, '""', "*")
        folders = parse_list(_ok(typ, data, "LIST"))
        progress(f"{len(folders)} folder(s): " + ", ".join(f.remote for f in folders))
        for folder in folders:
            await _copy_folder(conn, folder, state, importer, progress, spool_dir)
    except imaplib.IMAP4.error as exc:  # abort: the connection broke; run again to resume
        raise TransferError(f"{source.describe()}: {exc} (run the same command again to "
                            "resume)") from None
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            await asyncio.to_thread(conn.logout)
    return importer.report


async def _copy_folder(conn: imaplib.IMAP4, folder: RemoteFolder, state: ResumeState,
                       importer: Importer, progress: Progress,
                       spool_dir: Path | None) -> None:
    typ, data = await asyncio.to_thread(conn.select, _quoted(folder.remote), True)
    _ok(typ, data, f"EXAMINE {folder.remote}")
    _, validity = conn.response("UIDVALIDITY")
    uidvalidity = int(validity[0]) if validity and validity[0] else 0
    await importer.mailbox(folder.local)
    known = state.folders.get(folder.remote)
    start = 1
    if known and known.get("uidvalidity") == uidvalidity:
        start = known["uid"] + 1
    elif known:
        progress(f"{folder.remote}: UIDVALIDITY changed; reading it again (duplicates are "
                 "skipped)")
    typ, data = await asyncio.to_thread(conn.uid, "FETCH", f"{start}:*", "(UID RFC822.SIZE)")
    sizes: list[tuple[int, int]] = []
    for line in _ok(typ, data, f"FETCH {folder.remote}"):
        if not isinstance(line, bytes):
            continue
        uid, size = _UID.search(line), _SIZE.search(line)
        if uid and size and int(uid[1]) >= start:  # "n:*" includes the last UID anyway
            sizes.append((int(uid[1]), int(size[1])))
    sizes.sort()
    before = importer.report.imported
    for batch in _batches(sizes):
        typ, data = await asyncio.to_thread(
            conn.uid, "FETCH", ",".join(str(u) for u in batch),
            "(UID FLAGS INTERNALDATE BODY.PEEK[])")
        for message in sorted(parse_fetch(_ok(typ, data, f"FETCH {folder.remote}")),
                              key=lambda m: m.uid):
            writer = BodyWriter(spool_dir)
            writer.write(message.body)
            await importer.add(folder.local, writer.finish(), message.flags,
                               message.internaldate if message.internaldate is not None
                               else dt.datetime.now(dt.UTC).timestamp())
        state.folders[folder.remote] = {"uidvalidity": uidvalidity, "uid": batch[-1]}
        state.save()
    if not sizes and folder.remote not in state.folders:
        state.folders[folder.remote] = {"uidvalidity": uidvalidity, "uid": start - 1}
        state.save()
    progress(f"{folder.remote} -> {folder.local}: {len(sizes)} new on the server, "
             f"{importer.report.imported - before} copied")


def _batches(sizes: list[tuple[int, int]]) -> list[list[int]]:
    batches: list[list[int]] = []
    current: list[int] = []
    held = 0
    for uid, size in sizes:
        if current and (len(current) >= BATCH_MESSAGES or held + size > BATCH_BYTES):
            batches.append(current)
            current, held = [], 0
        current.append(uid)
        held += size
    if current:
        batches.append(current)
    return batches
