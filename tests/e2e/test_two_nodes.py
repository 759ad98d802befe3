"""Two Pochta servers on one PostgreSQL database, as two nodes behind one MX would run:
mail accepted over SMTP by node A wakes an IMAP IDLE on node B within a second, and
node B serves it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.conftest import Instance, start_instance
from tests.e2e.test_mta import MESSAGE, send
from tests.imap.helpers import PLAIN_LISTENERS, connect
from tests.pgcluster import PgCluster


async def test_smtp_on_one_node_wakes_imap_idle_on_the_other(
    pg_cluster: PgCluster, tmp_path: Path, tls_pair: tuple[Path, Path]
) -> None:
    cert, key = tls_pair
    storage = {"backend": "postgresql", "dsn": pg_cluster.fresh_dsn(), "pool_size": 4}
    nodes = []
    for name in ("a", "b"):
        raw = {"hostname": f"{name}.mail.example.test", "data_dir": "data",
               "tls": {"cert": str(cert), "key": str(key)},
               "listeners": PLAIN_LISTENERS,
               "storage": storage}
        (tmp_path / name).mkdir()
        nodes.append(await start_instance(Instance(tmp_path / name, cert, key, raw)))
    a, b = nodes
    try:
        async with connect(b) as c:
            await c.login("bob@example.test", "bob-pass")
            await c.cmd("SELECT INBOX")
            c.send(b"i IDLE\r\n")
            assert (await c.line()).startswith(b"+ ")
            refused = await asyncio.to_thread(send, a.port("mta"), "someone@elsewhere.test",
                                              ["bob@example.test"], MESSAGE)
            assert refused == {}
            got = await c.line(timeout=1.0)
            # the message's new keyword comes first: FLAGS and PERMANENTFLAGS (RFC 9051
            # §7.3.5, [imap] attachment_keywords)
            for _ in range(2):
                if got != b"* 1 EXISTS\r\n":
                    got = await c.line(timeout=1.0)
            assert got == b"* 1 EXISTS\r\n"
            await c.line()  # * 1 RECENT
            c.send(b"DONE\r\n")
            await c.read_response("i")
            body = b"".join(await c.cmd("FETCH 1 BODY[TEXT]"))
            assert b"Hello Bob" in body
    finally:
        for node in nodes:
            await node.running.close(grace=1.0)
            await node.store.close()
