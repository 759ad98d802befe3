"""``pochta store copy --to postgresql://…`` moves an embedded installation into
PostgreSQL and an IMAP client synchronised before the move re-downloads nothing after it
(storage v2 issue, item 6). Always SQLite -> PostgreSQL, whatever POCHTA_TEST_BACKEND."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pochta import passwords
from pochta.storage.interfaces import (
    Envelope,
    FlagMode,
    LocalTarget,
    QueueState,
    RemoteRecipient,
)
from pochta.storage.interfaces_sending import ApiKey, Suppression
from pochta.storage.interfaces_transport import CachedSTSPolicy
from pochta.storage.postgres import PostgresStore
from pochta.storage.sqlite import SQLiteStore
from tests.conftest import CHEAP_HASHER, Instance, Server, need_tool, run_tool, start_instance
from tests.imap.test_mbsync_interop import mbsyncrc
from tests.pgcluster import PgCluster

POCHTA = str(Path(sys.executable).parent / "pochta")
ENV = Envelope(sender="a@elsewhere.test")


def run_copy(config: Path, dsn: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([POCHTA, "-c", str(config), "store", "copy", "--to", dsn],
                          capture_output=True, text=True, timeout=120)


async def fill(data: Path) -> dict[str, object]:
    store = await SQLiteStore.open(data)
    try:
        await store.add_domain("example.test")
        alice = await store.add_account("alice@example.test",
                                        passwords.hash_password("alice-pass", hasher=CHEAP_HASHER),
                                        passwords.derive_scram("alice-pass"))
        await store.add_account("bob@example.test",
                                passwords.hash_password("bob-pass", hasher=CHEAP_HASHER), None)
        await store.update_account("bob@example.test", quota_bytes=5_000_000, disabled=True)
        await store.add_alias("@example.test", ["alice@example.test"])
        await store.create_mailbox(alice.id, "Lists/pochta", subscribe=True)
        await store.set_subscribed(alice.id, "Gone", True)
        inbox = await store.get_mailbox(alice.id, "INBOX")
        assert inbox is not None
        for n in range(6):
            size = 200_000 if n == 2 else 100
            await store.accept(b"Subject: %d\r\n\r\n" % n + b"x" * size, ENV,
                               [LocalTarget(alice.id)])
        await store.store_flags(inbox.id, [1, 3], frozenset({"\\Seen", "$Label1"}),
                                FlagMode.ADD)
        await store.expunge(inbox.id, [4])
        await store.accept(b"Subject: out\r\n\r\nq\r\n", ENV, [],
                           [RemoteRecipient("x@remote.test", "SUCCESS", "rfc822;x@r.test")])
        # every other feature's state (copy.py STATE_TABLES)
        await store.put_sieve_script(alice.id, "mine", 'require "fileinto"; fileinto "x";')
        await store.set_active_sieve_script(alice.id, "mine")
        await store.remember_once(f"{alice.id}:vacation:x", 3600, time.time())
        await store.set_acl(inbox.id, "bob@example.test", "lr")
        await store.set_metadata(alice.id, inbox.id, {"/private/comment": b"mine",
                                                      "/shared/comment": b"ours"})
        await store.urlauth_key(inbox.id, create=True)
        await store.add_app_password(alice.id, "phone", b"h" * 32, 1000.0)
        await store.add_admin("root", "admin-hash", 1000.0)
        await store.set_sender_rule(alice.id, "@partner.test", "allow")
        await store.bayes_train(alice.id, "m1", ["cheap"], True)
        await store.add_api_key(ApiKey("k1", "example.test", frozenset({"send"}), b"s" * 32,
                                       1000.0, "app"))
        await store.add_suppressions([Suppression("example.test", "bulk", "gone@r.test",
                                                  "bounce", 1000.0)])
        await store.add_webhook("example.test", "https://hooks.example/x", "secret", 1000.0, 0)
        await store.put_sts_policy(CachedSTSPolicy("example.net", "7", "enforce",
                                                   ("mx.example.net",), 86400, 1000.0))
        await store.record_tls_result("2026-12-01", "example.net", "sts", ("version: STSv1",),
                                      "mx.example.net", "certificate-expired")
        return {
            "accounts": await store.list_accounts(),
            "aliases": await store.list_aliases(),
            "mailboxes": await store.list_mailboxes(alice.id),
            "subs": await store.list_subscriptions(alice.id),
            "messages": await store.list_messages(inbox.id),
            "bodies": [await store.read_blob(m.blob_id)
                       for m in await store.list_messages(inbox.id)],
            "changes": await store.changes_since(inbox.id, 1),
            "queue": await store.list_queue(),
            **await state(store, alice.id, inbox.id),
        }
    finally:
        await store.close()


async def state(store: Any, alice: int, inbox: int) -> dict[str, object]:
    """What the features other than mail keep, as each store shows it."""
    return {
        "sieve": await store.get_active_sieve_script(alice),
        "sieve memory": await store.remember_once(f"{alice}:vacation:x", 3600, time.time()),
        "acl": await store.get_acl(inbox),
        "metadata": await store.get_metadata(alice, inbox),
        "urlauth": await store.urlauth_key(inbox, create=False),
        "app passwords": [(p.name, p.created) for p in await store.list_app_passwords(alice)],
        "admins": [a.name for a in await store.list_admins()],
        "sender rules": await store.sender_rules([alice]),
        "bayes": await store.bayes_totals(alice),
        "api key": await store.get_api_key("k1"),
        "suppressions": await store.list_suppressions("example.test"),
        "webhooks": [(w.url, w.secret) for w in await store.list_webhooks("example.test")],
        "mta-sts": await store.get_sts_policy("example.net"),
        "tls results": await store.tls_results("2026-12-01"),
    }


async def test_copy_keeps_every_id_and_counter(tmp_path: Path, pg_cluster: PgCluster) -> None:
    config = tmp_path / "pochta.toml"
    config.write_text('hostname = "mail.example.test"\ndata_dir = "data"\n')
    before = await fill(tmp_path / "data")
    dsn = pg_cluster.fresh_dsn()
    done = run_copy(config, dsn)
    assert done.returncode == 0, done.stderr
    assert "6 message(s)" not in done.stdout and "5 message(s)" in done.stdout, done.stdout
    store = await PostgresStore.open(dsn)
    try:
        alice = await store.get_account("alice@example.test")
        assert alice is not None
        inbox = await store.get_mailbox(alice.id, "INBOX")
        assert inbox is not None
        after = {
            "accounts": await store.list_accounts(),
            "aliases": await store.list_aliases(),
            "mailboxes": await store.list_mailboxes(alice.id),
            "subs": await store.list_subscriptions(alice.id),
            "messages": await store.list_messages(inbox.id),
            "bodies": [await store.read_blob(m.blob_id)
                       for m in await store.list_messages(inbox.id)],
            "changes": await store.changes_since(inbox.id, 1),
            "queue": await store.list_queue(),
            **await state(store, alice.id, inbox.id),
        }
        assert after == before
        assert before["sieve"] is not None and before["urlauth"] is not None
        assert before["sieve memory"] is False  # remembered before the copy, and after it
        # life goes on where it stopped: next UID, a never-used UIDVALIDITY, new ids
        old_validities = {b.uidvalidity for b in before["mailboxes"]}  # type: ignore[attr-defined]
        box = await store.create_mailbox(alice.id, "After")
        assert box.uidvalidity > max(old_validities)
        result = await store.accept(b"Subject: new\r\n\r\nn\r\n", ENV, [LocalTarget(alice.id)])
        assert result.local_uids == ((inbox.id, inbox.uidnext),)
        (item,) = await store.claim_queue_items(time.time(), 10, "n:1:x", 60)
        await store.update_queue_item(item.id, QueueState.DELIVERED, time.time(), "250 ok")
    finally:
        await store.close()
    # the target is no longer empty: a second copy is refused
    again = run_copy(config, dsn)
    assert again.returncode == 1 and "empty" in again.stderr


def _files(base: Path) -> list[str]:
    return sorted(p.name for p in (base / "mail").rglob("*") if p.is_file()
                  and p.parent.name in ("cur", "new"))


async def test_mbsync_downloads_nothing_again_after_the_move(
    instance: Instance, pg_cluster: PgCluster, tmp_path: Path
) -> None:
    mbsync = need_tool("mbsync")
    sqlite_only = {"backend": "sqlite"}
    server: Server = await start_instance(instance, storage=sqlite_only)
    try:
        alice = await server.store.get_account("alice@example.test")
        assert alice is not None
        for n in range(4):
            await server.store.accept(b"Subject: m%d\r\n\r\nbody %d\r\n" % (n, n), ENV,
                                      [LocalTarget(alice.id, "INBOX" if n % 2 else
                                                   "Archive")])
        (tmp_path / "mail").mkdir()
        rc = mbsyncrc(tmp_path, server.port("imap", "implicit"), instance.cert)
        code, out = await run_tool(mbsync, "-c", str(rc), "-a")
        assert code == 0, out
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()
    synced = _files(tmp_path)
    assert len(synced) == 4

    config = instance.dir / "pochta.toml"
    config.write_text(f'hostname = "mail.example.test"\ndata_dir = "{instance.dir}/data"\n')
    dsn = pg_cluster.fresh_dsn()
    done = await asyncio.to_thread(run_copy, config, dsn)
    assert done.returncode == 0, done.stderr

    server = await start_instance(instance, storage={"backend": "postgresql", "dsn": dsn})
    try:
        rc = mbsyncrc(tmp_path, server.port("imap", "implicit"), instance.cert)
        code, out = await run_tool(mbsync, "-c", str(rc), "-a")
        assert code == 0, out  # a changed UIDVALIDITY would make mbsync refuse
        assert "UIDVALIDITY" not in out
        assert _files(tmp_path) == synced  # nothing downloaded again, nothing lost
        alice = await server.store.get_account("alice@example.test")
        assert alice is not None
        await server.store.accept(b"Subject: on postgres\r\n\r\nhi\r\n", ENV,
                                  [LocalTarget(alice.id)])
        code, out = await run_tool(mbsync, "-c", str(rc), "-a")
        assert code == 0, out
        assert len(_files(tmp_path)) == 5  # exactly the new one
    finally:
        await server.running.close(grace=1.0)
        await server.store.close()

