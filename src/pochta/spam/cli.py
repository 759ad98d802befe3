"""``pochta spam train|explain|holds|forget|allow|block|unlist|lists`` and
``pochta user release``.

    pochta spam train alice@example.org --spam ~/Maildir/.Junk --ham ~/Maildir/cur
    pochta spam explain alice@example.org message.eml
    pochta spam allow alice@example.org @partner.example     # never to her Junk
    pochta spam block alice@example.org news@shop.example    # always to her Junk
"""

from __future__ import annotations

import argparse
import mailbox
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..cliutil import with_store
from ..mail.addresses import normalize_address
from ..storage.interfaces import MailStore
from .abuse import AbuseGuard
from .bayes import LearningFilter, tokenize
from .senderlists import ALLOW, BLOCK, BadPattern, SenderLists, normalize_pattern

INIT_SUGGESTIONS = [
    "# Spam defence (docs/spam.md). Connection screening like postscreen: no DNS list",
    "# is used unless you name it; check each list's terms of use first, e.g.",
    "# [screening]",
    '# dnsbl_sites = ["zen.spamhaus.org=127.0.0.[2..11]*3", "bl.spamcop.net*2"]',
    '# dnswl_sites = ["list.dnswl.org=127.0.[0..255].[1..3]"]',
    "# pregreet_wait = 3.0",
    "# fcrdns = true",
    "# [greylist]",
    "# enabled = true",
    "",
]


_with_store = with_store  # the store the configuration names, through the one factory


def read_folder(path: Path) -> Iterator[bytes]:
    """Messages of a Maildir (a folder with cur/ and new/, or one such subfolder), an mbox
    file, or a folder of .eml files."""
    if path.is_file():
        for msg in mailbox.mbox(str(path), create=False):
            yield msg.as_bytes()
        return
    if (path / "cur").is_dir() or (path / "new").is_dir():
        for sub in ("cur", "new"):
            if (path / sub).is_dir():
                yield from read_folder(path / sub)
        return
    for file in sorted(path.iterdir()):
        if file.is_file():
            yield file.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


async def _account_id(store: MailStore, address: str) -> int:
    account = await store.get_account(normalize_address(address))
    if account is None:
        raise SystemExit(f"pochta: no account {address}")
    return account.id


@_with_store
async def cmd_train(args: argparse.Namespace, config: Any, store: MailStore) -> int:
    account_id = await _account_id(store, args.user)
    learner = LearningFilter(store, config.spam.bayes_min_trained)
    started = time.monotonic()
    counts = {True: 0, False: 0}
    for folders, spam in ((args.spam or [], True), (args.ham or [], False)):
        for folder in folders:
            for data in read_folder(Path(folder)):
                if await learner.train(account_id, data, spam):
                    counts[spam] += 1
    nspam, nham = await store.bayes_totals(account_id)
    print(f"learnt {counts[True]} spam and {counts[False]} ham in "
          f"{time.monotonic() - started:.1f} s; the filter now knows {nspam} spam and {nham} "
          f"ham (it acts from {config.spam.bayes_min_trained} of each)")
    return 0


@_with_store
async def cmd_explain(args: argparse.Namespace, config: Any, store: MailStore) -> int:
    account_id = await _account_id(store, args.user)
    data = Path(args.message).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    learner = LearningFilter(store, 1)
    nspam, nham = await store.bayes_totals(account_id)
    verdict = await learner.score(account_id, data, tokenize(data))
    if verdict.score is None or verdict.classification is None:
        print(f"the filter of {args.user} has learnt nothing of one class yet "
              f"({nspam} spam, {nham} ham)")
        return 1
    cfg = config.spam
    where = "Junk" if verdict.score >= cfg.bayes_junk_threshold else "INBOX"
    if nspam < cfg.bayes_min_trained or nham < cfg.bayes_min_trained:
        where = f"INBOX (the filter acts from {cfg.bayes_min_trained} of each class)"
    print(f"score {verdict.score:.4f} (0 ham .. 1 spam); learnt {nspam} spam, {nham} ham; "
          f"-> {where}")
    print("tokens that decided (spam probability):")
    for token, prob in verdict.classification.clues[: args.top]:
        print(f"  {prob:.3f}  {token}")
    return 0


@_with_store
async def cmd_forget(args: argparse.Namespace, config: Any, store: MailStore) -> int:
    await store.bayes_forget(await _account_id(store, args.user))
    print(f"the learning filter of {args.user} starts over")
    return 0


@_with_store
async def cmd_holds(args: argparse.Namespace, config: Any, store: MailStore) -> int:
    for hold in await store.list_holds():
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(hold.since))
        print(f"{hold.address}\theld since {since} UTC\t{hold.reason}")
    return 0


@_with_store
async def cmd_release(args: argparse.Namespace, config: Any, store: MailStore) -> int:
    address = normalize_address(args.address)
    was, released = await AbuseGuard(config.abuse, store).release(address)
    if not was:
        print(f"{address} is not held")
        return 1
    print(f"{address} released; {released} queued message(s) are due now")
    return 0


@_with_store
async def cmd_list_sender(args: argparse.Namespace, config: Any, store: MailStore) -> int:
    """allow / block / unlist: change the account's own lists."""
    account_id = await _account_id(store, args.user)
    try:
        pattern = normalize_pattern(args.pattern)
    except BadPattern as exc:
        print(f"pochta: {exc}")
        return 2
    action = {"allow": ALLOW, "block": BLOCK, "unlist": None}[args.action]
    changed = await SenderLists(store).set(account_id, pattern, action)
    if action is None:
        print(f"{pattern} taken off the lists of {args.user}" if changed
              else f"{pattern} is on no list of {args.user}")
        return 0 if changed else 1
    where = "kept out of Junk (when its From is proven)" if action == ALLOW else "sent to Junk"
    print(f"mail from {pattern} to {args.user} is now {where}; running servers see it "
          "within 30 s")
    return 0


@_with_store
async def cmd_lists(args: argparse.Namespace, config: Any, store: MailStore) -> int:
    account_id = await _account_id(store, args.user)
    rules = (await store.sender_rules([account_id])).get(account_id, [])
    for rule in rules:
        print(f"{rule.action}\t{rule.pattern}")
    if not rules:
        print(f"{args.user} has no allow or block list")
    return 0


def register(sub: Any) -> None:
    spam = sub.add_parser("spam", help="the learning filter and held accounts").add_subparsers(
        dest="action", required=True)
    p = spam.add_parser("train", help="teach an account's filter from Maildir/mbox folders")
    p.add_argument("user")
    p.add_argument("--spam", action="append", metavar="DIR", help="spam (repeatable)")
    p.add_argument("--ham", action="append", metavar="DIR", help="ham (repeatable)")
    p.set_defaults(func=cmd_train)
    p = spam.add_parser("explain", help="score a message and show the tokens that decided")
    p.add_argument("user")
    p.add_argument("message", help="a message file (.eml)")
    p.add_argument("--top", type=int, default=20, help="how many tokens to show")
    p.set_defaults(func=cmd_explain)
    p = spam.add_parser("forget", help="drop what an account's filter learnt")
    p.add_argument("user")
    p.set_defaults(func=cmd_forget)
    spam.add_parser("holds", help="accounts held for unusual sending").set_defaults(
        func=cmd_holds)
    for name, what in (("allow", "keep mail from a sender out of an account's Junk"),
                       ("block", "send mail from a sender to an account's Junk"),
                       ("unlist", "take a sender off an account's lists")):
        p = spam.add_parser(name, help=what)
        p.add_argument("user")
        p.add_argument("pattern", help="an address, or @domain (with its subdomains)")
        p.set_defaults(func=cmd_list_sender)
    p = spam.add_parser("lists", help="an account's allow and block lists")
    p.add_argument("user")
    p.set_defaults(func=cmd_lists)


def register_user_release(usr: Any) -> None:
    """``pochta user release USER`` (added to the ``user`` group by pochta.cli)."""
    p = usr.add_parser("release", help="lift the hold of an account held for unusual sending")
    p.add_argument("address")
    p.set_defaults(func=cmd_release)
