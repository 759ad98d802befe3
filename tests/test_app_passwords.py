"""App password secrets (services/app_passwords.py) and the vacation form's script
(web/ops_pages.py), without a server."""

from __future__ import annotations

from pochta.services import app_passwords
from pochta.sieve import compile_script
from pochta.web.ops_pages import vacation_script


def test_secrets_are_random_and_typed_either_way() -> None:
    made = {app_passwords.new_secret() for _ in range(200)}
    assert len(made) == 200
    for secret in made:
        assert app_passwords.looks_like(secret)
        assert len(secret) == 19 and secret.count("-") == 3
        assert not set(secret.replace("-", "")) - set(app_passwords.ALPHABET)
        digest = app_passwords.secret_hash(secret)
        assert app_passwords.secret_hash(secret.upper().replace("-", " ")) == digest
        assert app_passwords.secret_hash(secret.replace("-", "")) == digest
    # ordinary passwords are not looked up at all
    for password in ("alice-pass", "correct horse battery staple", "", "a" * 200,
                     "abcd-efgh-ijkl-mnop-qrst"):
        assert not app_passwords.looks_like(password)


def test_names() -> None:
    assert app_passwords.check_name("  my   phone ") == "my phone"
    for bad in ("", "   ", "x" * 65, "bell\x07here"):
        try:
            app_passwords.check_name(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


def test_vacation_script_compiles_and_quotes() -> None:
    script = vacation_script('He said "hi" \\o/', "Line one\n.\n..two\nend", 5,
                             ["me@example.test", 'odd"@example.test'])
    compiled = compile_script(script)
    assert "vacation" in compiled.requires
    assert ':subject "He said \\"hi\\" \\\\o/"' in script
    assert "\n..\n...two\n" in script  # dot-stuffed (RFC 5228 §2.4.2)
    assert script.rstrip().endswith(".\n;")
