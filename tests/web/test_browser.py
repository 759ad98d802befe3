"""The web pages in a real browser: Debian's chromium, headless, driven by Playwright
(no browser is downloaded: ``executable_path`` points at /usr/bin/chromium).

``POCHTA_SCREENSHOTS=1`` also writes the screenshots to docs/screenshots/ (README)."""

from __future__ import annotations

import asyncio
import os
import smtplib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from pochta.storage.interfaces import Envelope, RemoteRecipient
from tests.conftest import need_tool
from tests.web.conftest import ADMIN
from tests.web.helpers import WebServer

DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
EVIL = "<script>window.pwned=1;alert(1)</script><img src=x onerror=alert(2)>"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    chromium = need_tool("chromium")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=chromium, headless=True,
                                     args=["--no-sandbox", "--headless"])
        try:
            yield b
        finally:
            await b.close()


async def new_page(browser: Browser) -> tuple[Page, list[str]]:
    context = await browser.new_context(ignore_https_errors=True,
                                        viewport={"width": 1200, "height": 800})
    page = await context.new_page()
    dialogs: list[str] = []

    async def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        await dialog.accept()

    page.on("dialog", on_dialog)
    return page, dialogs


async def shot(page: Page, name: str, tmp_path: Path) -> None:
    await page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    if os.environ.get("POCHTA_SCREENSHOTS"):
        DOCS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(DOCS / f"{name}.png"), full_page=True)


async def login(page: Page, web: WebServer, username: str, password: str) -> None:
    await page.goto(web.url("/login"))
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")


async def test_admin_in_browser(browser: Browser, web: WebServer, tmp_path: Path) -> None:
    def send() -> None:
        with smtplib.SMTP("127.0.0.1", web.server.port("mta"), timeout=30) as client:
            client.sendmail("x@remote.test", ["alice@example.test"], b"Subject: a\r\n\r\nb\r\n")

    await asyncio.to_thread(send)  # a bar in the chart
    page, dialogs = await new_page(browser)
    await login(page, web, *ADMIN)
    assert page.url == web.url("/admin")
    assert await page.locator("svg.chart rect").count() == 24
    await shot(page, "dashboard", tmp_path)

    # add a domain and see its DNS records
    await page.click("text=Domains")
    await page.fill("form[action='/admin/domains/add'] input[name=domain]", "shop.test")
    await page.click("text=Add domain")
    assert page.url.startswith(web.url("/admin/domains/shop.test"))
    assert "Domain added." in await page.inner_text(".notice")
    records = await page.inner_text("table.records")
    assert "10 mail.example.test." in records and "_imaps._tcp.shop.test" in records
    await shot(page, "dns-records", tmp_path)

    # add a user, then reset its password
    await page.click("header >> text=Accounts")
    add = page.locator("form[action='/admin/accounts/add']")
    await add.locator("input[name=address]").fill("carol@shop.test")
    await add.locator("input[name=password]").fill("carol-first-pass")
    await add.locator("button").click()
    assert "Account added." in await page.inner_text(".notice")
    auth = web.server.ctx.authenticator
    assert await auth.check_password("carol@shop.test", "carol-first-pass", "192.0.2.1")
    row = page.locator("table.accounts tr", has_text="carol@shop.test")
    await row.locator("input[name=password]").fill("carol-second-pass")
    await row.locator("text=Set password").click()
    assert "Password changed." in await page.inner_text(".notice")
    assert await auth.check_password("carol@shop.test", "carol-second-pass", "192.0.2.1")
    await shot(page, "accounts", tmp_path)

    # a queued message whose subject is a script: shown as text, never run
    data = f"From: alice@example.test\r\nSubject: {EVIL}\r\n\r\nhi\r\n".encode()
    await web.store.accept(data, Envelope(sender="alice@example.test"), [],
                           [RemoteRecipient("someone@remote.test")])
    (item,) = await web.store.list_queue()
    await web.store.reschedule_queue_items([item.id], time.time() + 3600)
    await page.click("header >> text=Queue")
    assert await page.inner_text("table.queue .subject") == EVIL
    assert await page.evaluate("window.pwned") is None
    assert await page.locator("table.queue img").count() == 0
    await shot(page, "queue", tmp_path)
    await page.click("text=Retry now")
    assert "tried again now" in await page.inner_text(".notice")
    (item,) = await web.store.list_queue()
    assert item.next_attempt <= time.time()
    assert dialogs == []  # no alert() ran anywhere

    # the self-test page
    await page.click("header >> text=Doctor")
    await page.click("text=Run the self-test")
    await page.wait_for_selector("table.doctor")
    await shot(page, "doctor", tmp_path)

    # remove the domain's account first, then the domain (a confirm dialog is accepted)
    await page.click("header >> text=Domains")
    await page.locator("table tr", has_text="shop.test").locator("text=Remove").click()
    assert "still has accounts" in await page.inner_text(".error")
    assert dialogs == ["Remove shop.test?"]


async def test_user_in_browser(browser: Browser, web: WebServer, tmp_path: Path) -> None:
    page, _ = await new_page(browser)
    await login(page, web, "alice@example.test", "alice-pass")
    assert page.url == web.url("/account")
    assert "alice@example.test" in await page.inner_text("main")
    await shot(page, "self-service", tmp_path)
    response = await page.goto(web.url("/admin/accounts"))
    assert response is not None and response.status == 403
    await page.goto(web.url("/account"))
    await page.fill("input[name=current]", "alice-pass")
    await page.fill("input[name=password]", "alice-better-pass")
    await page.click("text=Change password")
    assert "Password changed." in await page.inner_text(".notice")
    auth = web.server.ctx.authenticator
    assert await auth.check_password("alice@example.test", "alice-better-pass", "192.0.2.1")


async def test_cross_site_form_is_refused_in_browser(browser: Browser, web: WebServer
                                                     ) -> None:
    """A page on another origin posts a form to the admin: the SameSite=Strict cookie is
    not sent, and without the session's token the request would be refused anyway."""
    page, _ = await new_page(browser)
    await login(page, web, *ADMIN)
    evil = web.url("/admin/domains/add")
    await page.goto("data:text/html," + (
        f'<form method="post" action="{evil}"><input name="domain" value="evil.test">'
        '</form><script>document.forms[0].submit()</script>'))
    await page.wait_for_load_state()
    assert not await web.store.has_domain("evil.test")


async def test_operations_in_browser(browser: Browser, web: WebServer, tmp_path: Path
                                     ) -> None:
    """The mail log, hold in the queue view, the live DNS check and the charts (admin);
    app passwords, filters and the allow/block lists (user)."""
    import imaplib

    from pochta.services.eventlog import event_log

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", web.server.port("mta"), timeout=30) as client:
            client.sendmail("x@remote.test", ["alice@example.test"], b"Subject: a\r\n\r\nb\r\n")

    await asyncio.to_thread(send)
    await asyncio.sleep(0.1)
    await event_log(web.server.ctx.store).flush()
    page, dialogs = await new_page(browser)
    await login(page, web, *ADMIN)
    assert await page.locator("svg.hbars[aria-label='top senders'] rect").count() == 1
    await page.click("header >> text=Log")
    await page.fill("input[name=q]", "X@remote.test")
    await page.click("text=Search")
    log = await page.inner_text("table.log")
    assert "accepted" in log and "alice@example.test" in log
    await shot(page, "log", tmp_path)

    await web.store.accept(b"Subject: hold me\r\n\r\nx\r\n", Envelope(sender="a@example.test"),
                           [], [RemoteRecipient("r@remote.test")])
    await page.click("header >> text=Queue")
    await page.click("table.queue button:text-is('Hold')")
    assert "is held" in await page.inner_text(".notice")
    assert len(await web.store.held_queue_ids()) == 1
    await page.click("table.queue button:text-is('Release')")
    assert await web.store.held_queue_ids() == set()

    web.server.resolver.txt_records["_dmarc.example.test"] = ["v=DMARC1; p=none"]
    await page.goto(web.url("/admin/domains/example.test"))
    check = page.locator("table.dnscheck tr", has_text="_dmarc.example.test")
    assert "different" in await check.inner_text() and "p=none" in await check.inner_text()
    await shot(page, "dns-check", tmp_path)

    user, _ = await new_page(browser)
    await login(user, web, "alice@example.test", "alice-pass")
    await user.click("header >> text=App passwords")
    await user.fill("input[name=name]", "phone")
    await user.click("button:text-is('Create')")
    secret = await user.inner_text("#secret")
    await shot(user, "app-passwords", tmp_path)
    port = web.server.port("imap", "implicit")

    def imap_login() -> str:
        with imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=web.server.client_ssl()) as m:
            return str(m.login("alice@example.test", secret)[0])

    assert await asyncio.to_thread(imap_login) == "OK"
    await user.click("header >> text=Filters")
    await user.fill("textarea[name=source]", 'require ["fileinto"];\nfileinto "x"\n')
    await user.click("text=Check and save")
    assert "line 3" in await user.inner_text(".error")
    await user.fill("textarea[name=body]", "Away until Monday.")
    await user.click("text=Turn the vacation reply on")
    assert "vacation reply is on" in await user.inner_text(".notice")
    await shot(user, "filters", tmp_path)
    # the allow and block lists of senders
    await user.click("header >> text=Senders")
    await user.fill("input[name=pattern][placeholder]", "News@Shop.Example")
    await user.select_option("select[name=action]", "block")
    await user.click("button:text-is('Add')")
    assert "goes to Junk" in await user.inner_text(".notice")
    assert "news@shop.example" in await user.inner_text("table.senders")
    await user.fill("input[name=pattern][placeholder]", EVIL)
    await user.click("button:text-is('Add')")
    assert "Write an address" in await user.inner_text(".error")
    await shot(user, "senders", tmp_path)
    await user.click("table.senders button:text-is('Remove')")
    assert "Taken off your lists" in await user.inner_text(".notice")
    alice = await web.store.get_account("alice@example.test")
    assert alice is not None and await web.store.sender_rules([alice.id]) == {}
    assert dialogs == []
