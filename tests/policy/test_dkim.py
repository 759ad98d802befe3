"""DKIM signing and verification: RFC 8463 vectors, our keys, tampering, key problems."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import dkim as dkimpy
import pytest

from pochta.dns import StaticResolver
from pochta.policy import dkim

DATA = Path(__file__).resolve().parent.parent / "data" / "policy"

# RFC 8463 Appendix A.2
RFC8463_KEYS = {
    "brisbane._domainkey.football.example.com": [
        "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    ],
    "test._domainkey.football.example.com": [
        "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWR"
        "iGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutAC"
        "DfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3"
        "Ip3G+2kryOTIKT+l/K4w3QIDAQAB"
    ],
}

MESSAGE = (
    b"From: Alice Example <alice@example.org>\r\n"
    b"To: bob@example.net\r\n"
    b"Cc: carol@example.net\r\n"
    b"Subject: Quarterly numbers\r\n"
    b"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n"
    b"Message-ID: <q1@example.org>\r\n"
    b"List-Id: <staff.example.org>\r\n"
    b"Received: from somewhere by mx.example.org\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Numbers  are  up.\r\n"
    b"\r\n"
    b"\r\n"
)


def rfc8463() -> bytes:
    return (DATA / "rfc8463-a3.eml").read_bytes()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> list[dkim.DKIMKey]:
    data = tmp_path_factory.mktemp("data")
    return dkim.ensure_domain_keys(data, "example.org")


def resolver_for(keys: list[dkim.DKIMKey]) -> StaticResolver:
    return StaticResolver(txt_records={k.dns_name: [dkim.dns_txt_record(k)] for k in keys})


async def test_rfc8463_vectors_verify() -> None:
    res = await dkim.verify(rfc8463(), StaticResolver(txt_records=RFC8463_KEYS))
    assert [(r.result, r.algorithm, r.selector) for r in res] == [
        ("pass", "ed25519-sha256", "brisbane"),
        ("pass", "rsa-sha256", "test"),
    ]
    assert res[0].domain == "football.example.com"
    assert res[0].b == "/gCrinpc"


async def test_rfc8463_tampered_body_fails() -> None:
    msg = rfc8463().replace(b"We lost the game.", b"We won the game.")
    res = await dkim.verify(msg, StaticResolver(txt_records=RFC8463_KEYS))
    assert [(r.result, r.reason) for r in res] == [("fail", "body hash did not verify")] * 2


async def test_rfc8463_tampered_header_fails() -> None:
    msg = rfc8463().replace(b"Subject: Is dinner ready?", b"Subject: Is lunch ready?")
    res = await dkim.verify(msg, StaticResolver(txt_records=RFC8463_KEYS))
    assert [r.result for r in res] == ["fail", "fail"]
    assert res[0].reason == "signature did not verify"


async def test_relaxed_canonicalisation_tolerates_whitespace_changes() -> None:
    msg = rfc8463().replace(b"Subject: Is dinner ready?", b"Subject:   Is dinner   ready?")
    msg = msg.replace(b"Joe.\r\n", b"Joe.   \r\n\r\n\r\n")
    res = await dkim.verify(msg, StaticResolver(txt_records=RFC8463_KEYS))
    assert [r.result for r in res] == ["pass", "pass"]


async def test_key_problems() -> None:
    msg = rfc8463()
    # no key at all
    res = await dkim.verify(msg, StaticResolver())
    assert [r.result for r in res] == ["permerror", "permerror"]
    assert "no key" in res[0].reason
    # SERVFAIL: temperror, not a failure
    res = await dkim.verify(
        msg, StaticResolver(txt_records=RFC8463_KEYS,
                            fail={"test._domainkey.football.example.com"})
    )
    assert [r.result for r in res] == ["pass", "temperror"]
    # revoked (empty p=)
    keys = dict(RFC8463_KEYS)
    keys["brisbane._domainkey.football.example.com"] = ["v=DKIM1; k=ed25519; p="]
    res = await dkim.verify(msg, StaticResolver(txt_records=keys))
    assert (res[0].result, res[0].reason) == ("permerror", "key revoked")
    # key type does not match a=
    keys["brisbane._domainkey.football.example.com"] = RFC8463_KEYS[
        "test._domainkey.football.example.com"
    ]
    res = await dkim.verify(msg, StaticResolver(txt_records=keys))
    assert res[0].result == "permerror"
    # garbage key
    keys["brisbane._domainkey.football.example.com"] = ["v=DKIM1; k=ed25519; p=!!!"]
    res = await dkim.verify(msg, StaticResolver(txt_records=keys))
    assert res[0].result == "permerror"
    assert res[1].result == "pass"


async def test_malformed_signatures_are_permerrors() -> None:
    base = rfc8463()
    for bad in (b"DKIM-Signature: v=1\r\n", b"DKIM-Signature: ;;;==\r\n",
                b"DKIM-Signature: v=1; a=rsa-sha256; d=x.example; s=s; h=to; bh=AA==; b=AA==\r\n"):
        res = await dkim.verify(bad + base, StaticResolver(txt_records=RFC8463_KEYS))
        assert res[0].result == "permerror"
        assert [r.result for r in res[1:]] == ["pass", "pass"]


async def test_unsigned_and_garbage_messages() -> None:
    assert await dkim.verify(MESSAGE, StaticResolver()) == []
    assert await dkim.verify(b"", StaticResolver()) == []
    assert await dkim.verify(b"\x00\xff garbage\r\n\r\n", StaticResolver()) == []


async def test_sign_then_verify_both_algorithms(keys: list[dkim.DKIMKey]) -> None:
    assert [k.algorithm for k in keys] == ["rsa", "ed25519"]
    headers = await dkim.sign(MESSAGE, keys)
    assert headers.count(b"DKIM-Signature:") == 2
    assert headers.endswith(b"\r\n")
    signed = headers + MESSAGE
    res = await dkim.verify(signed, resolver_for(keys))
    assert [(r.result, r.algorithm) for r in res] == [
        ("pass", "rsa-sha256"), ("pass", "ed25519-sha256")
    ]
    assert {r.domain for r in res} == {"example.org"}
    # independent in-process check with dkimpy's own verifier and DNS hook
    records = {k.dns_name + ".": dkim.dns_txt_record(k).encode() for k in keys}

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name.decode())

    d = dkimpy.DKIM(signed)
    assert d.verify(0, dnsfunc=dnsfunc) and d.verify(1, dnsfunc=dnsfunc)


async def test_signed_header_list_and_oversigned_from(keys: list[dkim.DKIMKey]) -> None:
    headers = await dkim.sign(MESSAGE, keys[:1])
    tags = dict(dkimpy.util.parse_tag_value(headers.split(b":", 1)[1]))
    h = [x.strip() for x in tags[b"h"].replace(b"\r\n", b"").split(b":")]
    assert h.count(b"from") == 2  # over-signed
    for name in (b"to", b"cc", b"subject", b"date", b"message-id", b"list-id",
                 b"mime-version", b"content-type"):
        assert name in h
    assert b"received" not in h
    assert tags[b"c"] == b"relaxed/relaxed"
    assert tags[b"a"] == b"rsa-sha256"
    signed = headers + MESSAGE
    # a second From added downstream breaks the signature
    forged = signed.replace(b"To: bob", b"From: mallory@evil.example\r\nTo: bob")
    res = await dkim.verify(forged, resolver_for(keys))
    assert res[0].result == "fail"
    # an added Received does not
    relayed = b"Received: from relay\r\n" + signed
    assert (await dkim.verify(relayed, resolver_for(keys)))[0].result == "pass"


async def test_sign_requires_from(keys: list[dkim.DKIMKey]) -> None:
    with pytest.raises(dkim.DKIMError):
        await dkim.sign(b"To: x@example.org\r\n\r\nbody\r\n", keys)
    assert await dkim.sign(MESSAGE, []) == b""


def test_key_storage_layout_and_rotation(tmp_path: Path) -> None:
    keys = dkim.ensure_domain_keys(tmp_path, "Example.COM", bits=1024)
    assert {(k.domain, k.algorithm) for k in keys} == {("example.com", "rsa"),
                                                       ("example.com", "ed25519")}
    for k in keys:
        assert k.path == tmp_path / "dkim" / "example.com" / f"{k.selector}.{k.algorithm}.pem"
        assert k.path.stat().st_mode & 0o777 == 0o600
    assert dkim.load_keys(tmp_path) == sorted(keys)
    # idempotent
    assert dkim.ensure_domain_keys(tmp_path, "example.com") == keys
    rsa_old = keys[0]
    new = dkim.generate_key(tmp_path, "example.com",
                            dkim.new_selector(tmp_path, "example.com", "rsa"), "rsa", 1024)
    assert new.selector != rsa_old.selector
    # not active until activated
    assert dkim.signing_keys(tmp_path, "example.com") == keys
    active = dkim.activate(tmp_path, "example.com", new.selector)
    assert [k.selector for k in active] == [new.selector, keys[1].selector]
    assert len(dkim.load_keys(tmp_path, "example.com")) == 3  # old key kept
    with pytest.raises(dkim.DKIMError):
        dkim.generate_key(tmp_path, "example.com", new.selector, "ed25519")
    with pytest.raises(dkim.DKIMError):
        dkim.generate_key(tmp_path, "example.com", "bad selector!", "rsa")
    with pytest.raises(dkim.DKIMError):
        dkim.generate_key(tmp_path, "../etc", "s1", "rsa")
    with pytest.raises(dkim.DKIMError):
        dkim.activate(tmp_path, "example.com", "nope")


def test_dns_txt_record_shapes(keys: list[dkim.DKIMKey]) -> None:
    rsa_rec = dkim.dns_txt_record(keys[0])
    assert rsa_rec.startswith("v=DKIM1; k=rsa; p=MIIBIjAN")  # 2048-bit SPKI
    ed_rec = dkim.dns_txt_record(keys[1])
    assert ed_rec.startswith("v=DKIM1; k=ed25519; p=") and len(ed_rec.split("p=")[1]) == 44


OPENDKIM_TESTMSG = shutil.which("opendkim-testmsg") or (
    "/usr/sbin/opendkim-testmsg" if Path("/usr/sbin/opendkim-testmsg").exists() else None
)


@pytest.mark.interop
@pytest.mark.skipif(OPENDKIM_TESTMSG is None, reason="opendkim-tools is not installed")
async def test_opendkim_signs_we_verify(keys: list[dkim.DKIMKey], tmp_path: Path) -> None:
    """An independent signer (libopendkim) with our stored RSA key; we verify."""
    assert OPENDKIM_TESTMSG is not None
    rsa_key = keys[0]
    proc = subprocess.run(
        [OPENDKIM_TESTMSG, "-C", "-d", rsa_key.domain, "-s", rsa_key.selector,
         "-k", str(rsa_key.path), "-t", str(tmp_path)],
        input=MESSAGE, capture_output=True, timeout=30, check=True,
    )
    signed = proc.stdout
    assert signed.startswith(b"DKIM-Signature:")
    res = await dkim.verify(signed, resolver_for(keys))
    assert [(r.result, r.selector) for r in res] == [("pass", rsa_key.selector)]
    tampered = signed.replace(b"Numbers  are  up.", b"Numbers are down")
    assert (await dkim.verify(tampered, resolver_for(keys)))[0].result == "fail"


def _can_make_namespace() -> bool:
    if OPENDKIM_TESTMSG is None or shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "-n", "-m", "true"], capture_output=True, timeout=10)
    return probe.returncode == 0


@pytest.mark.interop
@pytest.mark.skipif(not _can_make_namespace(),
                    reason="needs opendkim-tools and root to make a network namespace")
@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
async def test_opendkim_verifies_our_signatures(
    keys: list[dkim.DKIMKey], tmp_path: Path, algorithm: str
) -> None:
    """libopendkim verifies what we sign. It reads keys from DNS, so it runs in a private
    network namespace whose resolv.conf points at a tiny DNS server on its own loopback."""
    import json
    import sys

    assert OPENDKIM_TESTMSG is not None
    key = next(k for k in keys if k.algorithm == algorithm)
    (tmp_path / "table.json").write_text(json.dumps({key.dns_name: [dkim.dns_txt_record(key)]}))
    (tmp_path / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:2 attempts:1\n")
    signed = await dkim.sign(MESSAGE, [key]) + MESSAGE
    (tmp_path / "good.eml").write_bytes(signed)
    (tmp_path / "bad.eml").write_bytes(signed.replace(b"Numbers  are  up.", b"Numbers down"))
    other = next(k for k in keys if k.algorithm != algorithm)  # its key is not in the DNS
    (tmp_path / "nokey.eml").write_bytes(await dkim.sign(MESSAGE, [other]) + MESSAGE)
    for n, tricky in enumerate(TRICKY):  # the fast signer's corpus (dkim_sign.py)
        (tmp_path / f"tricky{n}.eml").write_bytes(await dkim.sign(tricky, [key]) + tricky)
    server = Path(__file__).with_name("dns_server.py")
    script = f"""
set -e
ip link set lo up
mount --bind {tmp_path}/resolv.conf /etc/resolv.conf
{sys.executable} {server} {tmp_path}/table.json {tmp_path}/ready 25 &
srv=$!
i=0; while [ ! -f {tmp_path}/ready ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
set +e
{OPENDKIM_TESTMSG} -t {tmp_path} < {tmp_path}/good.eml > {tmp_path}/good.out 2>&1
echo "good=$?" > {tmp_path}/codes
{OPENDKIM_TESTMSG} -t {tmp_path} < {tmp_path}/bad.eml > {tmp_path}/bad.out 2>&1
echo "bad=$?" >> {tmp_path}/codes
{OPENDKIM_TESTMSG} -t {tmp_path} < {tmp_path}/nokey.eml > /dev/null 2>&1
echo "nokey=$?" >> {tmp_path}/codes
for f in {tmp_path}/tricky*.eml; do
  {OPENDKIM_TESTMSG} -t {tmp_path} < $f > $f.out 2>&1
  echo "$(basename $f .eml)=$?" >> {tmp_path}/codes
done
kill $srv 2>/dev/null || true
"""
    subprocess.run(["unshare", "-n", "-m", "sh", "-c", script], timeout=60, check=True)
    codes = dict(line.split("=") for line in (tmp_path / "codes").read_text().split())
    good_out = (tmp_path / "good.out").read_text()
    assert codes["good"] == "0", good_out
    assert good_out == ""  # silence means the signature verified
    assert codes["bad"] != "0"
    assert codes["nokey"] != "0"
    for n in range(len(TRICKY)):
        assert codes[f"tricky{n}"] == "0", (n, (tmp_path / f"tricky{n}.eml.out").read_text())


# Messages that exercise relaxed canonicalisation (RFC 6376 §3.4.2, §3.4.4): folded and
# repeated fields, whitespace runs and tabs, trailing whitespace, empty lines at the end,
# an empty body, no body at all, 8-bit text, an over-signed From.
DATE = b"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n"  # opendkim-testmsg wants one
TRICKY = [
    MESSAGE,
    b"From:alice@example.org\r\n" + DATE
    + b"Subject:   folded\r\n\t  across\r\n   three lines  \r\n"
    b"To: a@example.net\r\nCc:\tb@example.net\r\nComments: one\r\nComments: two\r\n"
    b"\r\n  lead \t and  trail \t \r\n\r\n\r\n",
    b"From: alice@example.org\r\n" + DATE + b"Subject: empty body\r\n\r\n",
    b"From: alice@example.org\r\n" + DATE + b"Subject: no header end\r\n",
    "From: Алиса <alice@example.org>\r\nDate: Mon, 02 Mar 2026 10:00:00 +0000\r\n"
    "Subject: =?utf-8?q?=D0=BF?=\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    "привет  мир\r\n".encode(),
    b"FROM: alice@example.org\r\n" + DATE + b"subject: lower-case name\r\n"
    b"List-Unsubscribe: <https://x/u>,\r\n <mailto:u@example.org>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\nbody\r\n",
]


@pytest.mark.parametrize("n", range(len(TRICKY)))
async def test_fast_signer_verified_by_dkimpy(keys: list[dkim.DKIMKey], n: int) -> None:
    """dkim_sign.py (cryptography) signs; dkimpy's verifier checks each algorithm, and the
    body hash equals the one dkimpy's own signer computes."""
    from pochta.policy import dkim_sign

    message = TRICKY[n]
    assert dkim_sign.supported(message)
    assert not dkim_sign.supported(message.replace(b"\r\n", b"\n"))
    records = {k.dns_name + ".": dkim.dns_txt_record(k).encode() for k in keys}

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name.decode())

    headers = await dkim.sign(message, keys)
    signed = headers + message
    d = dkimpy.DKIM(signed)
    assert d.verify(0, dnsfunc=dnsfunc) and d.verify(1, dnsfunc=dnsfunc)
    assert [r.result for r in await dkim.verify(signed, resolver_for(keys))] == ["pass"] * 2
    rsa_key = keys[0]
    theirs = dkimpy.DKIM(message, linesep=b"\r\n").sign(
        rsa_key.selector.encode(), rsa_key.domain.encode(), rsa_key._dkimpy_private(),
        canonicalize=(b"relaxed", b"relaxed"), include_headers=dkim.headers_to_sign(message))
    tags = [dict(dkimpy.util.parse_tag_value(h.split(b":", 1)[1]))
            for h in (b"X:" + headers.split(b"DKIM-Signature:")[1], theirs)]
    assert tags[0][b"bh"] == tags[1][b"bh"]
    # tampering breaks it
    broken = signed.replace(b"alice", b"alics", 1)
    assert not dkimpy.DKIM(broken).verify(0, dnsfunc=dnsfunc)


async def test_fast_signer_key_cache_follows_the_file(tmp_path: Path) -> None:
    from pochta.policy import dkim_sign

    [key] = dkim.ensure_domain_keys(tmp_path, "example.org", ["rsa"], bits=1024)
    first = dkim_sign.cached_private_key(key.path)
    assert dkim_sign.cached_private_key(key.path) is first
    key.path.unlink()
    [again] = dkim.ensure_domain_keys(tmp_path, "example.org", ["rsa"], bits=1024)
    if again.path == key.path:
        assert dkim_sign.cached_private_key(again.path) is not first
