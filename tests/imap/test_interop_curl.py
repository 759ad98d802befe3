"""Interop: curl's IMAP client (imaps://) lists, fetches and runs UID SEARCH against us."""

from __future__ import annotations

import pytest

from pochta.storage.interfaces import Envelope, LocalTarget
from tests.conftest import Server, need_tool, run_tool
from tests.imap.helpers import MESSAGE

pytestmark = pytest.mark.interop


async def _deliver(server: Server, n: int) -> None:
    account = await server.store.get_account("alice@example.test")
    assert account is not None
    for i in range(n):
        await server.store.accept(MESSAGE.replace(b"Hello there", b"Curl %d" % i),
                                  Envelope(sender=""), [LocalTarget(account.id, "INBOX")])


def _curl(server: Server, path: str, *extra: str) -> list[str]:
    url = f"imaps://127.0.0.1:{server.port('imap', 'implicit')}/{path}"
    return [need_tool("curl"), "-sS", "--cacert", str(server.cert), "--resolve",
            f"mail.example.test:{server.port('imap', 'implicit')}:127.0.0.1",
            "-u", "alice@example.test:alice-pass", *extra,
            url.replace("127.0.0.1", "mail.example.test")]


async def test_curl_list(imap_server: Server) -> None:
    code, out = await run_tool(*_curl(imap_server, ""))
    assert code == 0, out
    lines = out.splitlines()
    assert any(line.startswith("* LIST") and line.endswith(" INBOX") for line in lines), out
    # the special-use folders created for every new account
    assert any("\\Sent" in line and "Sent" in line for line in lines), out
    assert any("\\Trash" in line for line in lines), out


async def test_curl_fetch_message(imap_server: Server) -> None:
    await _deliver(imap_server, 2)
    code, out = await run_tool(*_curl(imap_server, "INBOX/;UID=2"))
    assert code == 0, out
    assert "Subject: Curl 1" in out and "Body text line one." in out, out
    assert "Curl 0" not in out


async def test_curl_uid_search_all(imap_server: Server) -> None:
    await _deliver(imap_server, 3)
    code, out = await run_tool(*_curl(imap_server, "INBOX", "-X", "UID SEARCH ALL"))
    assert code == 0, out
    assert out.strip() == "* SEARCH 1 2 3", out
    code, out = await run_tool(*_curl(imap_server, "INBOX", "-X", "UID SEARCH SUBJECT \"Curl 2\""))
    assert code == 0, out
    assert out.strip() == "* SEARCH 3", out


async def test_curl_wrong_password_fails(imap_server: Server) -> None:
    argv = _curl(imap_server, "")
    argv[argv.index("alice@example.test:alice-pass")] = "alice@example.test:nope"
    code, out = await run_tool(*argv)
    assert code != 0, out
    assert "Login denied" in out or "login" in out.lower(), out
