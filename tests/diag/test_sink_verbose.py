"""`pochta sink --verbose` prints the dialogue (smtp-sink -v), through the real command."""

from __future__ import annotations

import asyncio

from pochta.diag.sink import SinkOptions, free_port

from .test_downgrade import POCHTA, run_pochta


def test_default_port_is_not_the_demos() -> None:
    assert SinkOptions().port == 2526


async def test_sink_verbose_prints_every_command_and_reply() -> None:
    port = free_port()
    sink = await asyncio.create_subprocess_exec(
        POCHTA, "sink", "--listen", f"127.0.0.1:{port}", "--verbose", "--count", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        for _ in range(100):  # until it listens
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        rc, out = await run_pochta("send", "--server", f"127.0.0.1:{port}", "--from",
                                   "a@example.test", "--to", "b@example.test", "--tls", "none")
        assert rc == 0, out
        assert sink.stdout is not None
        text = (await asyncio.wait_for(sink.stdout.read(), 30)).decode()
    finally:
        if sink.returncode is None:
            sink.terminate()
        await sink.wait()
    lines = text.splitlines()
    assert any(line.startswith("[2] connect from 127.0.0.1") for line in lines), text
    for expected in ("[2] S: 220 sink.invalid ESMTP pochta sink", "[2] C: EHLO ",
                     "[2] C: MAIL FROM:<a@example.test>", "[2] C: RCPT TO:<b@example.test>",
                     "[2] C: DATA", "[2] S: 354 ", "bytes of message data)", "[2] C: QUIT",
                     "[2] S: 221 "):
        assert expected in text, (expected, text)
