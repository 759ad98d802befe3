"""The IMAP server driver: moves bytes between the connection and the sans-IO session
core (``proto/imap/session.py``), runs the timeouts, and answers each ``Command`` event
with its handler (``imap_commands.COMMANDS``), which calls the store and formats the
responses.

``dispatch`` is the command boundary: a handler's ``ImapError`` becomes its tagged NO/BAD
in ``ImapServerSession.fail``; a Pochta error (pochta/errors.py: the store's, the
services') becomes the NO with its response code (``[NONEXISTENT]``, ``[OVERQUOTA]``,
``[LIMIT]``...); any other exception is logged with its traceback and answered
``NO [SERVERBUG]`` (RFC 5530 §3), and the session goes on.

Entry point: ``handle_imap(conn, ctx, listener)``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING

from ..config import Listener
from ..errors import PochtaError, StorageFull, StoreError, imap_error_for
from ..proto.imap.errors import ImapError
from ..proto.imap.parser import ParseError
from ..proto.imap.session import NEED_DATA, Closed, Command, State
from .imap_auth import capabilities
from .imap_commands import COMMANDS
from .imap_session import CloseSession, ImapSession
from .listener import Connection
from .sessionlog import record_session

if TYPE_CHECKING:
    from .context import ServerContext

log = logging.getLogger("pochta.imap")

__all__ = ["CloseSession", "ImapSession", "handle_imap", "run_session"]


async def run_session(s: ImapSession) -> None:
    s.send(s.core.greeting(capabilities(s), s.ctx.config.hostname))
    started = time.monotonic()
    try:
        while True:
            event = s.core.next_event()
            if event is NEED_DATA:
                await s.flush()
                try:
                    await s.read_more(s.timeout)
                except TimeoutError:
                    s.core.timed_out()
                    return
                continue
            if isinstance(event, Closed):
                return
            if isinstance(event, Command):
                await dispatch(s, event)
                s.core.after_command()
                await s.flush()  # a pipelining client must read what it asked for
            # IdleDone / SaslResponse arrive only inside their handlers
    except CloseSession:
        return
    except TimeoutError:
        s.core.timed_out()
        return
    finally:
        s.core.connection_lost()
        for hook in s.on_close:  # NOTIFY's watchers
            hook()
        if s.watcher is not None:
            s.watcher.close()
        with contextlib.suppress(ConnectionError, OSError):
            await s.flush()
        if s.account is not None:  # the web admin's mail log (services/eventlog.py)
            record_session(s.ctx.store, "imap", s.account.address, s.conn, started)


async def dispatch(s: ImapSession, cmd: Command) -> None:
    handler = COMMANDS[cmd.name]
    try:
        await handler(s, cmd.tag, cmd.args, cmd.uid)
    except (ImapError, ParseError) as exc:
        s.core.fail(cmd.tag, exc)
    except PochtaError as exc:
        if isinstance(exc, StorageFull):
            log.warning("conn %s: storage full: %s", s.conn.conn_id, exc)
        elif isinstance(exc, StoreError):
            log.info("store error: %s", exc)
        else:
            log.info("%s refused: %s", cmd.name, exc)
        s.core.fail(cmd.tag, exc.imap_error())
    except (CloseSession, TimeoutError, ConnectionError):
        raise
    except Exception as exc:
        # a bug must not take the connection down without a word (RFC 9051 §7.1.3)
        log.exception("IMAP command failed")
        s.core.fail(cmd.tag, imap_error_for(exc))
    finally:
        cmd.raw.discard_spooled()  # APPEND's temporary file, if any
    if s.state is State.LOGOUT:
        s.unselect()


async def handle_imap(
    conn: Connection, ctx: ServerContext, listener: Listener
) -> None:
    """The asyncio entry point of the ``imap`` role. Tests may shorten the autologout
    with ``ctx.imap_idle_timeout`` (config insists on >= 30 min)."""
    await run_session(ImapSession(conn, ctx, listener, idle_timeout=ctx.imap_idle_timeout))
