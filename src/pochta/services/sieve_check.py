"""A user's script checked with the scripts it includes (RFC 6609), as ManageSieve
(PUTSCRIPT, CHECKSCRIPT, SETACTIVE) and ``pochta sieve check`` report it: the personal
scripts from the store, the global ones from ``[sieve] global_dir``
(sieve/includes.py decides what is a problem)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from ..sieve import Limits, Script, compile_script
from ..sieve.includes import Checked, Key, check, drive_async
from ..storage.interfaces_sieve import SieveStore


async def include_source(store: SieveStore, global_dir: Path | None, account_id: int,
                         key: Key) -> str | None:
    """The source of an included script; None when there is no such script."""
    location, name = key
    if location == "personal":
        return await store.get_sieve_script(account_id, name)
    if global_dir is None:
        return None
    path = global_dir / f"{name}.sieve"
    try:
        return await asyncio.to_thread(path.read_text, "utf-8")
    except (OSError, UnicodeDecodeError):
        return None


async def check_script(store: SieveStore, global_dir: Path | None, limits: Limits,
                       account_id: int, name: str, source: str,
                       compile_: Callable[[str, str], Script] | None = None) -> Checked:
    """``source`` as the account's script ``name`` (where a script it includes includes
    ``name`` again, ``source`` is that script: a loop)."""
    root = ("personal", name)

    def plain(text: str, script_name: str) -> Script:
        return compile_script(text, script_name, limits)

    async def fetch(key: Key) -> str | None:
        if key == root:
            return source
        return await include_source(store, global_dir, account_id, key)

    return await drive_async(check(source, root, limits, compile_ or plain), fetch)
