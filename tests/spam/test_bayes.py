"""The learning filter: precision and recall on a generated held-out set, cold start,
explain, and training end to end (IMAP MOVE into Junk, then mail filed to Junk)."""

from __future__ import annotations

import asyncio
import imaplib
import random
import time
from pathlib import Path

import pytest

from pochta.spam.bayes import LearningFilter, classify, tokenize
from pochta.spam.cli import read_folder
from pochta.storage.sqlite import SQLiteStore
from tests.conftest import USERS, Instance
from tests.spam.corpus import corpus, message
from tests.spam.helpers import last_message, send, server_with


def test_tokens_and_cold_classifier() -> None:
    toks = tokenize(b"From: <a@promo.biz>\r\nSubject: Cheap pills\r\nReceived: x\r\n\r\n"
                    b"<b>Click</b> https://win.click/x now\r\n")
    assert {"subject:cheap", "from-domain:promo.biz", "url:win.click", "click"} <= set(toks)
    assert not any(t.startswith("received") for t in toks)
    assert classify(toks, {}, 0, 0).score == 0.5


async def test_precision_and_recall_on_held_out_mail(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path)
    filt = LearningFilter(store, 20)
    try:
        for data, spam in corpus(seed=1, count=400):
            await filt.train(7, data, spam)
        tp = fp = fn = tn = 0
        held_out = corpus(seed=2, count=400)
        started = time.perf_counter()
        for data, spam in held_out:
            verdict = await filt.score(7, data)
            assert verdict.score is not None
            said_spam = verdict.score >= 0.95
            tp += said_spam and spam
            fp += said_spam and not spam
            fn += not said_spam and spam
            tn += not said_spam and not spam
        per_message = (time.perf_counter() - started) / len(held_out)
        precision = tp / (tp + fp)
        recall = tp / (tp + fn)
        print(f"\nbayes: trained 400, held-out 400: precision={precision:.3f} "
              f"recall={recall:.3f} fp={fp} fn={fn} time/message={per_message * 1000:.2f} ms")
        assert precision >= 0.99 and recall >= 0.8
    finally:
        await store.close()


async def test_imap_move_into_junk_trains_and_files_to_junk(
        instance: Instance, tmp_path: Path) -> None:
    spam = {"bayes_min_trained": 5}
    async with server_with(instance, spam=spam) as server:
        port = server.port("mta")
        train = corpus(seed=3, count=24)
        for data, _ in train:
            assert (await send(port, data))[0] == 250
        bob = await server.store.get_account("bob@example.test")
        assert bob is not None

        def move_spam() -> None:
            imap = imaplib.IMAP4("127.0.0.1", server.port("imap", "starttls"))
            imap.starttls(server.client_ssl())
            imap.login("bob@example.test", USERS["bob@example.test"])
            imap.select("INBOX")
            _, found = imap.uid("SEARCH", "HEADER", "Message-ID", "True@gen")
            uids = found[0].decode().split()
            assert len(uids) == 12
            assert imap.uid("MOVE", ",".join(uids), "Junk")[0] == "OK"
            imap.logout()

        await asyncio.get_running_loop().run_in_executor(None, move_spam)
        assert await server.store.bayes_totals(bob.id) == (12, 0)
        # ham is learnt by moving out of Junk, or with $NotJunk: mark the INBOX ones
        inbox = await server.store.get_mailbox(bob.id, "INBOX")
        assert inbox is not None
        uids = [m.uid for m in await server.store.list_messages(inbox.id)]
        from pochta.storage.interfaces import FlagMode

        await server.ctx.store.store_flags(inbox.id, uids, frozenset({"$NotJunk"}),
                                           FlagMode.ADD)
        assert await server.store.bayes_totals(bob.id) == (12, 12)
        # new spam now goes to Junk with $Junk and an X-Spam-Bayes header
        rng = random.Random(9)
        assert (await send(port, message(rng, True, 1000)))[0] == 250
        data, flags = await last_message(server, mailbox="Junk")
        assert "$Junk" in flags and b"X-Spam-Bayes: " in data
        assert b"X-Spam-Status: Yes, bayes=" in data
        assert (await send(port, message(rng, False, 1001)))[0] == 250
        data, flags = await last_message(server)
        assert b"X-Spam-Status: No, bayes=" in data and "$Junk" not in flags
        # moving a message out of Junk unlearns it as spam and learns it as ham
        junk = await server.store.get_mailbox(bob.id, "Junk")
        assert junk is not None
        first = (await server.store.list_messages(junk.id))[0].uid
        await server.ctx.store.move_messages(junk.id, [first], inbox.id)
        assert await server.store.bayes_totals(bob.id) == (11, 13)


async def test_cli_train_and_explain(instance: Instance, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    from pochta.cli import main
    from tests.conftest import populate

    cfg = instance.config()
    store = await SQLiteStore.open(cfg.data_path)
    await populate(store)
    await store.close()
    cfg_file = instance.dir / "pochta.toml"
    cfg_file.write_text(f'hostname = "mail.example.test"\ndata_dir = "{cfg.data_path}"\n'
                        "[spam]\nbayes_min_trained = 10\n")
    spam_dir, ham_dir = tmp_path / "spam" / "cur", tmp_path / "ham"
    spam_dir.mkdir(parents=True)
    ham_dir.mkdir()
    for i, (data, is_spam) in enumerate(corpus(seed=4, count=60)):
        (spam_dir if is_spam else ham_dir).joinpath(f"{i}.eml").write_bytes(data)
    assert len(list(read_folder(tmp_path / "spam"))) == 30
    loop = asyncio.get_running_loop()
    rc = await loop.run_in_executor(None, main, [
        "-c", str(cfg_file), "spam", "train", "bob@example.test",
        "--spam", str(tmp_path / "spam"), "--ham", str(ham_dir)])
    assert rc == 0
    assert "learnt 30 spam and 30 ham" in capsys.readouterr().out
    sample = tmp_path / "x.eml"
    sample.write_bytes(message(random.Random(5), True, 77))
    rc = await loop.run_in_executor(None, main, [
        "-c", str(cfg_file), "spam", "explain", "bob@example.test", str(sample)])
    out = capsys.readouterr().out
    assert rc == 0 and "-> Junk" in out and "tokens that decided" in out


async def test_reject_threshold_and_several_recipients(instance: Instance) -> None:
    spam = {"bayes_min_trained": 10, "bayes_reject_threshold": 0.99}
    async with server_with(instance, spam=spam) as server:
        for user in ("bob@example.test", "alice@example.test"):
            account = await server.store.get_account(user)
            assert account is not None
            for data, is_spam in corpus(seed=5, count=60):
                await server.store.bayes_train(account.id, str(hash(data)), tokenize(data),
                                               is_spam)
        rng = random.Random(11)
        port = server.port("mta")
        code, text = await send(port, message(rng, True, 1),
                                rcpts=("bob@example.test", "alice@example.test"))
        assert (code, text) == (550, "5.7.1 Message refused as spam")
        code, _ = await send(port, message(rng, False, 2),
                             rcpts=("bob@example.test", "alice@example.test"))
        assert code == 250
        data, _ = await last_message(server, "alice@example.test")
        # several recipients: no per-account score in the shared copy
        assert b"X-Spam-Bayes" not in data


async def test_what_counts_as_a_verdict(tmp_path: Path) -> None:
    """COPY into Junk is spam; Junk -> Trash and expunge (POP3 DELE) teach nothing; a
    copy out of Junk is not a verdict; $Junk/$NotJunk set by STORE are."""
    from pochta.spam.training import TrainingStore
    from pochta.storage.interfaces import Envelope, FlagMode, LocalTarget

    store = await SQLiteStore.open(tmp_path)
    try:
        account = await store.add_account("u@example.test", "x", None)
        learner = LearningFilter(store, 1)
        wrapped = TrainingStore(store, learner)
        boxes = {b.name: b.id for b in await store.list_mailboxes(account.id)}
        uids = []
        for data, _ in corpus(seed=6, count=4):
            res = await store.accept(data, Envelope("a@x.test"), [LocalTarget(account.id)])
            uids.append(res.local_uids[0][1])
        copied = await wrapped.copy_messages(boxes["INBOX"], uids[:1], boxes["Junk"])
        assert await store.bayes_totals(account.id) == (1, 0)
        await wrapped.move_messages(boxes["Junk"], [copied[0][1]], boxes["Trash"])
        await wrapped.copy_messages(boxes["Trash"], [1], boxes["Archive"])
        await wrapped.expunge(boxes["INBOX"], uids[1:2])
        assert await store.bayes_totals(account.id) == (1, 0)
        await wrapped.store_flags(boxes["INBOX"], uids[2:3], frozenset({"$NotJunk"}),
                                  FlagMode.ADD)
        await wrapped.store_flags(boxes["INBOX"], uids[3:4], frozenset({"$Junk"}),
                                  FlagMode.ADD)
        await wrapped.store_flags(boxes["INBOX"], uids[3:4], frozenset({"$Junk"}),
                                  FlagMode.REMOVE)
        assert await store.bayes_totals(account.id) == (2, 1)
        assert wrapped.trained == 3
    finally:
        await store.close()


def test_init_suggests_lists_but_enables_none() -> None:
    import tomllib

    from pochta.cli import render_config
    from pochta.config import from_dict

    text = render_config("mail.example.org", {("mta", "starttls"): 25}, "127.0.0.1")
    assert '# dnsbl_sites = ["zen.spamhaus.org' in text
    cfg = from_dict(tomllib.loads(text))
    assert cfg.screening.dnsbl_sites == [] and not cfg.greylist.enabled
