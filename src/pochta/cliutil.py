"""What every ``pochta`` subcommand shares (the main parser in ``cli.py``, the features'
``*/cli.py`` modules): the error an operation reports, the config and store of the
command line, passwords from a prompt or standard input. A leaf below every ``cli``
module, so none of them needs to import the main one."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from .config import Config, load
from .storage.factory import open_store as open_configured_store
from .storage.interfaces import MailStore


class CLIError(Exception):
    pass


def config_path(args: argparse.Namespace) -> Path:
    return Path(args.config or os.environ.get("POCHTA_CONFIG") or "pochta.toml")


def load_config(args: argparse.Namespace) -> Config:
    return load(config_path(args))


async def open_store(config: Config) -> MailStore:
    return await open_configured_store(config)


def with_store(
    fn: Callable[[argparse.Namespace, Config, MailStore], Awaitable[int]],
) -> Callable[[argparse.Namespace, Config], int]:
    def run(args: argparse.Namespace, config: Config) -> int:
        async def main() -> int:
            store = await open_store(config)
            try:
                return await fn(args, config, store)
            finally:
                await store.close()

        return asyncio.run(main())

    return run


def pochta_command() -> str:
    """How a shell runs this very ``pochta``, for the commands we print as hints.

    ``pochta`` when the shell's PATH finds this program; otherwise the path it was
    started by (``.venv/bin/pochta`` after ``make demo``), so that a printed command
    works when pasted as printed.
    """
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is None or script.name != "pochta" or not script.exists():
        return f"{sys.executable} -m pochta"
    found = shutil.which("pochta")
    if found and Path(found).resolve() == script.resolve():
        return "pochta"
    rel = os.path.relpath(script.absolute())
    return rel if not rel.startswith("..") else str(script.absolute())


def read_password(args: argparse.Namespace) -> str:
    try:
        if getattr(args, "password_stdin", False):
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = getpass.getpass("Password: ")
            if getpass.getpass("Again: ") != password:
                raise CLIError("the passwords do not match")
    except EOFError:
        raise CLIError("no password: standard input is closed; run this in a terminal to "
                       "be asked, or pipe the password with --password-stdin") from None
    if len(password) < 8:
        raise CLIError("the password must have at least 8 characters")
    return password
