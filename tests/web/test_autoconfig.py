"""Client autoconfiguration and the MTA-STS policy: fetched with curl, parsed as XML/plist."""

from __future__ import annotations

import plistlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator

import pytest

from pochta.web.autoconfig import AUTODISCOVER_RESPONSE
from tests.conftest import Instance, need_tool, run_tool
from tests.web.helpers import WebServer, web_server


def ports(web: WebServer) -> dict[str, int]:
    return {"imap": web.server.port("imap", "implicit"),
            "pop3": web.server.port("pop3", "implicit"),
            "smtp": web.server.port("submission", "implicit")}


async def curl(web: WebServer, path: str, *args: str) -> tuple[int, str]:
    port = web.server.port("http", "implicit")
    code, out = await run_tool(need_tool("curl"), "-sS", "--cacert", str(web.server.cert),
                               "--resolve", f"mail.example.test:{port}:127.0.0.1",
                               *args, f"https://mail.example.test:{port}{path}")
    return code, out


async def test_thunderbird_well_known_with_curl(web: WebServer) -> None:
    code, out = await curl(web, "/.well-known/autoconfig/mail/config-v1.1.xml"
                           "?emailaddress=alice%40example.test")
    assert code == 0, out
    root = ET.fromstring(out)  # noqa: S314
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    provider = root.find("emailProvider")
    assert provider is not None and provider.get("id") == "example.test"
    assert provider.findtext("domain") == "example.test"
    # ports come from the configured (here: ephemeral) listeners, implicit TLS first
    config = web.server.ctx.config
    found = {}
    for server in [*provider.findall("incomingServer"), *provider.findall("outgoingServer")]:
        assert server.findtext("hostname") == config.hostname
        assert server.findtext("socketType") == "SSL"
        assert server.findtext("authentication") == "password-cleartext"
        assert server.findtext("username") == "alice@example.test"
        found[server.get("type")] = int(server.findtext("port") or 0)
    assert set(found) == {"imap", "pop3", "smtp"}


async def test_thunderbird_autoconfig_host(web: WebServer) -> None:
    reply = await web.call("GET", "/mail/config-v1.1.xml",
                           {"Host": "autoconfig.example.test"}, tls=False)
    assert reply.status == 200
    root = ET.fromstring(reply.body)  # noqa: S314
    assert root.findtext("emailProvider/domain") == "example.test"
    assert root.findtext("emailProvider/incomingServer/username") == "%EMAILADDRESS%"
    # a domain this server does not serve, or a bad address: nothing
    reply = await web.call("GET", "/mail/config-v1.1.xml", {"Host": "autoconfig.other.example"})
    assert reply.status == 404
    reply = await web.call("GET", "/mail/config-v1.1.xml?emailaddress=not-an-address")
    assert reply.status == 404


AUTODISCOVER_REQUEST = b"""<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>Alice@Example.test</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>
"""


async def test_outlook_autodiscover_pox_with_curl(web: WebServer) -> None:
    code, out = await curl(web, "/Autodiscover/Autodiscover.xml", "-X", "POST",
                           "-H", "Content-Type: text/xml", "--data-binary",
                           AUTODISCOVER_REQUEST.decode())
    assert code == 0, out
    root = ET.fromstring(out)  # noqa: S314
    ns = {"r": AUTODISCOVER_RESPONSE}
    account = root.find("*/r:Account", ns)
    assert account is not None
    assert account.findtext("r:Action", namespaces=ns) == "settings"
    protocols = {p.findtext("r:Type", namespaces=ns): p
                 for p in account.findall("r:Protocol", ns)}
    assert set(protocols) == {"IMAP", "POP3", "SMTP"}
    smtp = protocols["SMTP"]
    assert smtp.findtext("r:Port", namespaces=ns) == str(ports(web)["smtp"])
    assert smtp.findtext("r:LoginName", namespaces=ns) == "alice@example.test"
    assert smtp.findtext("r:Encryption", namespaces=ns) == "SSL"


async def test_autodiscover_refuses_unknown_and_dtd(web: WebServer) -> None:
    other = AUTODISCOVER_REQUEST.replace(b"Example.test", b"elsewhere.example")
    assert (await web.call("POST", "/autodiscover/autodiscover.xml", body=other)).status == 404
    bomb = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]>'
            b"<Autodiscover><Request><EMailAddress>&a;</EMailAddress></Request></Autodiscover>")
    assert (await web.call("POST", "/autodiscover/autodiscover.xml", body=bomb)).status == 400


async def test_apple_mobileconfig(web: WebServer) -> None:
    reply = await web.call("GET", "/apple/mail.mobileconfig?emailaddress=bob@example.test")
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/x-apple-aspen-config"
    assert 'filename="bob@example.test.mobileconfig"' in reply.headers["content-disposition"]
    profile = plistlib.loads(reply.body)
    assert profile["PayloadType"] == "Configuration"
    (mail,) = profile["PayloadContent"]
    assert mail["PayloadType"] == "com.apple.mail.managed"
    assert mail["EmailAccountType"] == "EmailTypeIMAP"
    assert mail["IncomingMailServerPortNumber"] == ports(web)["imap"]
    assert mail["IncomingMailServerUseSSL"] is True
    assert mail["OutgoingMailServerPortNumber"] == ports(web)["smtp"]
    assert mail["EmailAddress"] == "bob@example.test"
    again = plistlib.loads((await web.call(
        "GET", "/apple/mail.mobileconfig?emailaddress=bob@example.test")).body)
    assert again["PayloadUUID"] == profile["PayloadUUID"]  # stable: reinstall replaces
    assert (await web.call("GET", "/apple/mail.mobileconfig")).status == 404


async def test_mta_sts_policy_by_host_with_curl(web: WebServer) -> None:
    port = web.server.port("http", "implicit")
    code, out = await run_tool(need_tool("curl"), "-sS", "-i", "--cacert", str(web.server.cert),
                               "-k", "-H", "Host: mta-sts.example.test",
                               f"https://127.0.0.1:{port}/.well-known/mta-sts.txt")
    assert code == 0, out
    head, _, body = out.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200")
    assert "content-type: text/plain" in head.lower()
    assert body == ("version: STSv1\r\nmode: testing\r\nmx: mail.example.test\r\n"
                    "max_age: 604800\r\n")
    for host in ("mta-sts.elsewhere.example", "mail.example.test", "example.test"):
        reply = await web.call("GET", "/.well-known/mta-sts.txt", {"Host": host})
        assert reply.status == 404, host


@pytest.fixture
async def sts_web(instance: Instance) -> AsyncIterator[WebServer]:
    async for s in web_server(instance, web={"mta_sts_mode": "enforce",
                                             "mta_sts_domains": ["other.test"]}):
        await s.store.add_domain("other.test")
        yield s


async def test_mta_sts_only_for_enabled_domains(sts_web: WebServer) -> None:
    reply = await sts_web.call("GET", "/.well-known/mta-sts.txt",
                               {"Host": "mta-sts.other.test:443"})
    assert reply.status == 200 and "mode: enforce\r\n" in reply.text
    reply = await sts_web.call("GET", "/.well-known/mta-sts.txt",
                               {"Host": "mta-sts.example.test"})
    assert reply.status == 404


async def test_dns_records_list_rfc6186_srv() -> None:
    from pochta.policy.records import records_for

    srv = {r.name: r.value for r in records_for("example.test", "mail.example.test", [])
           if r.type == "SRV"}
    assert srv["_submissions._tcp.example.test"] == "0 1 465 mail.example.test."
    assert srv["_imaps._tcp.example.test"] == "0 1 993 mail.example.test."
    assert srv["_imap._tcp.example.test"] == "0 0 0 ."
