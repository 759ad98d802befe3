"""The error hierarchy (pochta/errors.py): every member's reply in each protocol, the
temporary failure for anything else, and the SMTP catalogue as the only source of the
SMTP driver's replies."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pochta import errors
from pochta.proto.imap.session import ImapServerSession, SessionLimits
from pochta.proto.pop3 import replies as pop3_replies
from pochta.proto.smtp import replies as smtp_replies
from pochta.services import sieve
from pochta.storage import interfaces, interfaces_sieve

SRC = Path(errors.__file__).parent

# (error, SMTP reply line, IMAP tagged response, POP3 response, ManageSieve (code, text))
CASES: list[tuple[errors.PochtaError, bytes, bytes, bytes, tuple[str | None, str]]] = [
    (errors.PochtaError("bug"),
     b"451 4.3.0 Local error in processing, try again later\r\n",
     b"a NO [SERVERBUG] Internal error\r\n",
     b"-ERR [SYS/TEMP] Local error in processing, try again later\r\n",
     ("TRYLATER", "Local error in processing, try again later")),
    (errors.StoreError("db gone"),
     b"451 4.3.0 Temporary storage failure, try again\r\n",
     b"a NO [SERVERBUG] Operation failed\r\n",
     b"-ERR [SYS/TEMP] Temporary storage failure, try again later\r\n",
     ("TRYLATER", "Temporary storage failure, try again")),
    (errors.StorageFull("ENOSPC"),
     b"452 4.3.1 Insufficient system storage\r\n",
     b"a NO [LIMIT] Insufficient system storage\r\n",
     b"-ERR [SYS/TEMP] Insufficient system storage\r\n",
     ("TRYLATER", "Insufficient system storage")),
    (errors.QuotaExceeded("over"),
     b"552 5.2.2 Mailbox full\r\n",
     b"a NO [OVERQUOTA] Over quota\r\n",
     b"-ERR [SYS/TEMP] Temporary storage failure, try again later\r\n",
     ("QUOTA", "Over quota")),
    (errors.NotFound("mailbox 7"),
     b"451 4.3.0 Temporary storage failure, try again\r\n",
     b"a NO [NONEXISTENT] No such mailbox or message\r\n",
     b"-ERR [SYS/TEMP] Temporary storage failure, try again later\r\n",
     ("NONEXISTENT", "There is no script by that name")),
    (errors.ScriptActive("x"),
     b"451 4.3.0 Temporary storage failure, try again\r\n",
     b"a NO [SERVERBUG] Operation failed\r\n",
     b"-ERR [SYS/TEMP] Temporary storage failure, try again later\r\n",
     ("ACTIVE", "You may not delete the active script")),
    (errors.AuthFailed("bad password"),
     b"535 5.7.8 Authentication credentials invalid\r\n",
     b"a NO [AUTHENTICATIONFAILED] Authentication failed\r\n",
     b"-ERR [AUTH] Authentication failed\r\n",
     (None, "Authentication failed")),
    (errors.AuthLockedOut("locked"),
     b"454 4.7.0 Too many failed authentications, try again later\r\n",
     b"a NO [UNAVAILABLE] Too many failed logins, try again later\r\n",
     b"-ERR [SYS/TEMP] Too many failed logins, try again later\r\n",
     ("TRYLATER", "Too many failed logins, try again later")),
    (errors.MaildropInUse("alice"),
     b"451 4.3.0 Local error in processing, try again later\r\n",
     b"a NO [SERVERBUG] Internal error\r\n",
     b"-ERR [IN-USE] Maildrop is locked by another POP3 session\r\n",
     ("TRYLATER", "Local error in processing, try again later")),
    (errors.SenderNotOwned("eve@example.org", "alice@example.org"),
     b"553 5.7.1 <eve@example.org>: Sender address rejected: not owned by user "
     b"alice@example.org\r\n",
     b"a NO [SERVERBUG] Internal error\r\n",
     b"-ERR [SYS/TEMP] Local error in processing, try again later\r\n",
     ("TRYLATER", "Local error in processing, try again later")),
    (errors.RecipientRateLimited(1000),
     b"452 4.7.1 Rate limit: more than 1000 recipients per hour\r\n",
     b"a NO [SERVERBUG] Internal error\r\n",
     b"-ERR [SYS/TEMP] Local error in processing, try again later\r\n",
     ("TRYLATER", "Local error in processing, try again later")),
    (errors.SieveRejected("Go\naway \x07"),
     b"550 5.7.1 Go away ?\r\n",
     b"a NO [SERVERBUG] Internal error\r\n",
     b"-ERR [SYS/TEMP] Local error in processing, try again later\r\n",
     ("TRYLATER", "Local error in processing, try again later")),
]


def _imap_bytes(exc: Exception) -> bytes:
    core = ImapServerSession(SessionLimits())
    core.fail("a", errors.imap_error_for(exc))
    return core.data_to_send()


@pytest.mark.parametrize(("exc", "smtp", "imap", "pop3", "sieve_reply"), CASES,
                         ids=[type(c[0]).__name__ for c in CASES])
def test_each_error_knows_its_reply(
    exc: errors.PochtaError, smtp: bytes, imap: bytes, pop3: bytes,
    sieve_reply: tuple[str | None, str],
) -> None:
    assert errors.smtp_reply_for(exc).to_bytes() == smtp
    assert _imap_bytes(exc) == imap
    assert errors.pop3_reply_for(exc).to_bytes() == pop3
    assert errors.managesieve_reply_for(exc) == sieve_reply


@pytest.mark.parametrize("exc", [RuntimeError("x"), KeyError("k"), AssertionError()])
def test_anything_else_is_the_temporary_failure(exc: Exception) -> None:
    assert errors.smtp_reply_for(exc) is smtp_replies.LOCAL_ERROR
    assert _imap_bytes(exc) == b"a NO [SERVERBUG] Internal error\r\n"
    assert errors.pop3_reply_for(exc) is pop3_replies.TEMPORARY_FAILURE
    assert errors.managesieve_reply_for(exc)[0] == "TRYLATER"


def test_the_message_of_an_error_is_not_shown() -> None:
    """str(exc) is for the log: it may name paths or SQL; replies never carry it."""
    secret = "/var/lib/pochta/db.sqlite: disk I/O error"
    exc = errors.StoreError(secret)
    assert secret not in errors.smtp_reply_for(exc).text
    assert secret.encode() not in _imap_bytes(exc)
    assert secret not in errors.pop3_reply_for(exc).text


def test_store_and_service_errors_are_members() -> None:
    for cls in (interfaces.StoreError, interfaces.NotFound, interfaces.AlreadyExists,
                interfaces.QuotaExceeded, interfaces.StorageFull, interfaces.StorageCorrupt,
                interfaces_sieve.ScriptActive, sieve.SieveRejected, sieve.SieveLoadError):
        assert issubclass(cls, errors.PochtaError), cls


def test_the_errors_replies_are_catalogue_entries() -> None:
    smtp = set(smtp_replies.catalogue().values())
    pop3 = {v for v in vars(pop3_replies).values() if isinstance(v, pop3_replies.ErrReply)}
    for cls in _members():
        assert cls.smtp in smtp, cls
        assert cls.pop3 in pop3, cls


def _members() -> list[type[errors.PochtaError]]:
    found: list[type[errors.PochtaError]] = [errors.PochtaError]
    i = 0
    while i < len(found):
        found += found[i].__subclasses__()
        i += 1
    return found


def test_the_smtp_driver_builds_no_reply_of_its_own() -> None:
    """Every reply of server/smtp.py comes from proto/smtp/replies.py."""
    tree = ast.parse((SRC / "server" / "smtp.py").read_text())
    built = [node.lineno for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
             and node.func.id == "Reply"]
    assert built == []
    raw = [node.lineno for node in ast.walk(tree)
           if isinstance(node, ast.Constant) and isinstance(node.value, str)
           and node.value[:4] in ("421 ", "451 ", "550 ", "250 ")]
    assert raw == []


def test_one_class_called_reply_in_proto_smtp() -> None:
    where = [path.name for path in (SRC / "proto" / "smtp").glob("*.py")
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.ClassDef) and node.name == "Reply"]
    assert where == ["replies.py"]
