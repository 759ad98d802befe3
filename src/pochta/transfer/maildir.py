"""Maildir on disk, read for import and written for export.

Layouts read (each folder is a directory with ``cur/``, ``new/`` and ``tmp/``):

* the root of the Maildir is INBOX (Postfix, Courier, Dovecot all deliver there);
* Maildir++ (Courier, Dovecot's default): folders are hidden siblings ``.Folder`` and
  ``.Folder.Sub`` (hierarchy separator ``.``), names in modified UTF-7 (RFC 3501 §5.1.3);
  Courier's ``.INBOX.Folder`` spelling is read as ``Folder``;
* Dovecot ``LAYOUT=fs``: ``Folder/Sub/`` directories nested under the root.

A file name is ``UNIQUE[,S=size][,W=size]:2,FLAGS`` (the ``:2,`` info of
https://cr.yp.to/proto/maildir.html; Dovecot adds the physical ``S=`` and CRLF ``W=``
sizes). Flags: ``D`` \\Draft, ``F`` \\Flagged, ``P`` $Forwarded (passed), ``R``
\\Answered, ``S`` \\Seen, ``T`` \\Deleted (trashed); lower-case ``a``-``z`` are Dovecot
keywords, numbered in the Maildir root's ``dovecot-keywords`` file. A message in
``new/`` has not been seen by any client. INTERNALDATE is the file's mtime: Dovecot sets
it to the INTERNALDATE on save and restores it from the mtime, and for Postfix and Courier
it is the delivery time.

Export writes Maildir++ with Dovecot's conventions (``maildirfolder`` marker,
``dovecot-keywords``, ``,S=`` in the name, mtime = INTERNALDATE), which Dovecot, mutt,
neomutt and mbsync read as they are.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..proto.imap.mutf7 import decode_mutf7, encode_mutf7

FLAG_LETTERS = {
    "D": "\\Draft", "F": "\\Flagged", "P": "$Forwarded", "R": "\\Answered",
    "S": "\\Seen", "T": "\\Deleted",
}
LETTER_OF = {flag.lower(): letter for letter, flag in FLAG_LETTERS.items()}
KEYWORD_LETTERS = "abcdefghijklmnopqrstuvwxyz"


class MaildirError(Exception):
    """The path is not a Maildir we can read or write."""


@dataclass(frozen=True, slots=True)
class MaildirMessage:
    mailbox: str  # Pochta name, "/"-separated, INBOX for the root
    path: Path
    flags: frozenset[str]
    internaldate: float


def is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() and (path / "new").is_dir()


def read_keywords(root: Path) -> dict[str, str]:
    """Letter -> keyword from Dovecot's ``dovecot-keywords`` (lines ``N name``)."""
    out: dict[str, str] = {}
    try:
        text = (root / "dovecot-keywords").read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        number, _, name = line.partition(" ")
        if number.isdigit() and int(number) < len(KEYWORD_LETTERS) and name.strip():
            out[KEYWORD_LETTERS[int(number)]] = name.strip()
    return out


_INFO = re.compile(r"[:;!]2,([^:;!,]*)$")


def parse_flags(filename: str, keywords: dict[str, str]) -> frozenset[str]:
    """Flags of a file name's info; ``;`` and ``!`` stand for ``:`` where a file system
    forbids it (mbsync's and Windows-hosted Maildirs)."""
    match = _INFO.search(filename)
    if match is None:
        return frozenset()
    info = match[1]
    flags = set()
    for letter in info:
        if letter in FLAG_LETTERS:
            flags.add(FLAG_LETTERS[letter])
        elif letter in keywords:
            flags.add(keywords[letter])
    return frozenset(flags)


def _folder_name(parts: list[str]) -> str:
    if parts and parts[0].upper() == "INBOX" and len(parts) > 1:
        parts = parts[1:]  # Courier's ".INBOX.Folder"
    name = "/".join(decode_mutf7(p) for p in parts)
    return "INBOX" if name.upper() == "INBOX" else name


def find_folders(root: Path) -> list[tuple[str, Path]]:
    """Every folder of the Maildir at ``root`` as (Pochta name, directory), INBOX first."""
    if not root.exists():
        raise MaildirError(f"{root}: no such file or directory")
    if not root.is_dir():
        raise MaildirError(f"{root}: not a directory (an mbox? use pochta import mbox)")
    if not is_maildir(root):
        raise MaildirError(f"{root}: not a Maildir (no cur/ and new/ in it): give the "
                           "directory that holds cur/, new/ and the .Folder directories")
    folders: list[tuple[str, Path]] = [("INBOX", root)]
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or entry.name in ("cur", "new", "tmp"):
            continue
        if entry.name.startswith("."):
            if entry.name in (".", "..") or not is_maildir(entry):
                continue
            folders.append((_folder_name(entry.name[1:].split(".")), entry))
        else:
            folders.extend(_fs_layout(entry, [entry.name]))
    seen: set[str] = set()
    unique = []
    for name, path in folders:
        if name not in seen:
            seen.add(name)
            unique.append((name, path))
    return unique


def _fs_layout(directory: Path, parts: list[str]) -> Iterator[tuple[str, Path]]:
    """Dovecot LAYOUT=fs: nested directories; ones with cur/ and new/ are folders."""
    if is_maildir(directory):
        yield _folder_name(parts), directory
    for entry in sorted(directory.iterdir()):
        if entry.is_dir() and entry.name not in ("cur", "new", "tmp") \
                and not entry.name.startswith("."):
            yield from _fs_layout(entry, [*parts, entry.name])


def scan(root: Path) -> Iterator[MaildirMessage]:
    """Every message of every folder, oldest first within a folder."""
    keywords = read_keywords(root)
    for name, folder in find_folders(root):
        entries: list[tuple[float, str, Path]] = []
        for sub in ("cur", "new"):
            for entry in os.scandir(folder / sub):
                if not entry.is_file() or entry.name.startswith("."):
                    continue
                entries.append((entry.stat().st_mtime, entry.name, Path(entry.path)))
        entries.sort()
        for mtime, filename, path in entries:
            # new/ normally has no info, but doveadm flags leave a message there with one
            yield MaildirMessage(name, path, parse_flags(filename, keywords), mtime)


# --- writing (export) ------------------------------------------------------------------


_UNSAFE = re.compile(r"[/\x00]")


def folder_dir(root: Path, name: str) -> Path:
    """The Maildir++ directory of a Pochta mailbox name (Dovecot's default layout)."""
    if name == "INBOX":
        return root
    parts = [encode_mutf7(p) for p in name.split("/")]
    return root / ("." + ".".join(_UNSAFE.sub("_", p) for p in parts))


class MaildirWriter:
    """Writes one Maildir++ tree: ``create_folder`` then ``add`` per message."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._keywords: list[str] = []
        self._count = 0
        self._host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")

    def create_folder(self, name: str) -> Path:
        path = folder_dir(self.root, name)
        for sub in ("cur", "new", "tmp"):
            (path / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        if path != self.root:
            (path / "maildirfolder").touch()
        return path

    def _letters(self, flags: frozenset[str]) -> str:
        letters = []
        for flag in flags:
            letter = LETTER_OF.get(flag.lower())
            if letter is not None:
                letters.append(letter)
            elif not flag.startswith("\\"):
                if flag not in self._keywords and len(self._keywords) < len(KEYWORD_LETTERS):
                    self._keywords.append(flag)
                if flag in self._keywords:
                    letters.append(KEYWORD_LETTERS[self._keywords.index(flag)])
        return "".join(sorted(letters))  # the spec wants ASCII order

    async def add(self, folder: Path, chunks: AsyncIterator[bytes], flags: frozenset[str],
                  internaldate: float, uid: int) -> Path:
        """Write through tmp/ then rename into cur/ (the Maildir delivery rule), with LF
        line endings (the Maildir convention) and mtime = INTERNALDATE."""
        self._count += 1
        unique = f"{int(internaldate)}.P{os.getpid()}Q{self._count}U{uid}.{self._host}"
        tmp = folder / "tmp" / unique
        size = 0
        with open(tmp, "wb") as f:
            carry = b""
            async for chunk in chunks:
                data = carry + chunk
                carry = b""
                if data.endswith(b"\r"):
                    data, carry = data[:-1], b"\r"
                data = data.replace(b"\r\n", b"\n")
                f.write(data)
                size += len(data)
            f.write(carry)
            size += len(carry)
            f.flush()
            os.fsync(f.fileno())
        final = folder / "cur" / f"{unique},S={size}:2,{self._letters(flags)}"
        os.rename(tmp, final)
        os.utime(final, (internaldate, internaldate))
        return final

    def finish(self) -> None:
        if self._keywords:
            lines = "".join(f"{i} {k}\n" for i, k in enumerate(self._keywords))
            (self.root / "dovecot-keywords").write_text(lines, encoding="utf-8")
