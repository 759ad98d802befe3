"""``pochta sieve``: an admin stores, checks, activates and tests a user's filter, through
the real console script."""

from __future__ import annotations

from pathlib import Path

from tests.test_admin_cli import _add_user, inst, pochta  # noqa: F401

SCRIPT = """require ["fileinto", "imap4flags", "vacation"];
if header :contains "List-Id" "dev.lists" { fileinto "Lists"; stop; }
if header :contains "subject" "urgent" { addflag "\\\\Flagged"; }
vacation "away";
"""


def test_put_list_get_activate_check_test(inst: Path, tmp_path: Path) -> None:  # noqa: F811
    _add_user(inst, "alice@example.org")
    c = str(inst)
    script = tmp_path / "filters.sieve"
    script.write_text(SCRIPT)
    r = pochta("-c", c, "sieve", "put", "alice@example.org", str(script), "--activate")
    assert r.returncode == 0 and "stored 'filters' (active)" in r.stdout, r.stderr
    r = pochta("-c", c, "sieve", "list", "alice@example.org")
    assert r.stdout.split() == ["filters", str(len(SCRIPT)), "bytes", "ACTIVE"]
    assert pochta("-c", c, "sieve", "get", "alice@example.org").stdout == SCRIPT
    r = pochta("-c", c, "sieve", "check", "alice@example.org")
    assert r.returncode == 0 and "compiles" in r.stdout
    msg = tmp_path / "m.eml"
    msg.write_text("From: a@b.test\nTo: alice@example.org\nSubject: urgent!\n\nhi\n")
    r = pochta("-c", c, "sieve", "test", "alice@example.org", str(msg), "--from", "a@b.test")
    assert r.returncode == 0, r.stderr
    assert "action:    vacation every 604800s: 'away'" in r.stdout
    assert "action:    keep INBOX flags=\\Flagged (implicit)" in r.stdout
    msg.write_text("From: a@b.test\nList-Id: <dev.lists.x>\nSubject: x\n\nhi\n")
    r = pochta("-c", c, "sieve", "test", "alice@example.org", str(msg))
    assert "action:    fileinto Lists" in r.stdout and "vacation" not in r.stdout


def test_errors_are_clear(inst: Path, tmp_path: Path) -> None:  # noqa: F811
    _add_user(inst, "alice@example.org")
    c = str(inst)
    bad = tmp_path / "bad.sieve"
    bad.write_text('require "fileinto";\n\nfileinto "x"\n')
    r = pochta("-c", c, "sieve", "put", "alice@example.org", str(bad))
    assert r.returncode == 1
    assert r.stderr.strip() == (f'error: {bad}: line 4: expected ";" after command '
                                "fileinto but found end of script")
    r = pochta("-c", c, "sieve", "check", "alice@example.org", str(bad))
    assert r.returncode == 1 and "line 4" in r.stderr
    bad.write_text('frobnicate;\nkeep :nope;\n')
    r = pochta("-c", c, "sieve", "check", "alice@example.org", str(bad))
    assert r.returncode == 1
    assert r.stderr.splitlines() == [f"error: {bad}: line 1: unknown command frobnicate",
                                     "  line 2: unknown tagged argument ':nope' for the keep "
                                     "command (its tags need a require first)", "  2 errors"]
    r = pochta("-c", c, "sieve", "activate", "alice@example.org", "nope")
    assert r.returncode == 1 and "no script 'nope'" in r.stderr
    r = pochta("-c", c, "sieve", "list", "nobody@example.org")
    assert r.returncode == 1 and "no account nobody@example.org" in r.stderr
    # a script that fails at run time: test says so and shows the fallback
    loop = tmp_path / "loop.sieve"
    loop.write_text('require "include";\ninclude "loop";\n')
    assert pochta("-c", c, "sieve", "put", "alice@example.org", str(loop),
                  "--activate").returncode == 0
    msg = tmp_path / "m.eml"
    msg.write_text("Subject: x\n\nhi\n")
    r = pochta("-c", c, "sieve", "test", "alice@example.org", str(msg))
    assert r.returncode == 2
    assert "error:     include loop: loop -> loop" in r.stdout
    assert "keep INBOX (the fallback)" in r.stdout


def test_before_script_and_a_broken_user_script(inst: Path, tmp_path: Path) -> None:  # noqa: F811
    """With [sieve] before, `sieve test` names the admin's scripts, and a user's script
    that cannot be loaded is left out while the admin's still decide."""
    _add_user(inst, "alice@example.org")
    c = str(inst)
    (inst.parent / "sieve-global").mkdir(exist_ok=True)
    (inst.parent / "sieve-global" / "spam.sieve").write_text(
        'require "fileinto";\nif header :is "X-Spam-Flag" "YES" { fileinto "Junk"; }\n')
    text = inst.read_text()
    sieve_table = '[sieve]\nbefore = ["spam"]\n'
    inst.write_text(text.replace("[sieve]\n", sieve_table, 1) if "[sieve]\n" in text
                    else text + "\n" + sieve_table)
    loop = tmp_path / "loop.sieve"
    loop.write_text('require "include";\ninclude "loop";\n')
    assert pochta("-c", c, "sieve", "put", "alice@example.org", str(loop),
                  "--activate").returncode == 0
    msg = tmp_path / "m.eml"
    msg.write_text("X-Spam-Flag: YES\nSubject: x\n\nhi\n")
    r = pochta("-c", c, "sieve", "test", "alice@example.org", str(msg))
    assert "around:    before spam; after -" in r.stdout, r.stdout + r.stderr
    assert "error:     include loop: loop -> loop" in r.stdout
    assert "action:    fileinto Junk" in r.stdout and "fallback" not in r.stdout
    assert r.returncode == 2


def test_test_reads_the_envelope_as_smtp_paths(inst: Path, tmp_path: Path) -> None:  # noqa: F811
    _add_user(inst, "alice@example.org")
    c = str(inst)
    script = tmp_path / "env.sieve"
    script.write_text('require ["envelope", "fileinto"];\n'
                      'if envelope :domain :is "from" "relay.example" { fileinto "Bad"; }\n'
                      'if envelope :localpart :is "from" "bob" { fileinto "Bob"; }\n')
    msg = tmp_path / "m.eml"
    msg.write_text("Subject: x\n\nhi\n")
    # the source route is dropped (RFC 5321 §4.1.2)
    r = pochta("-c", c, "sieve", "test", "alice@example.org", str(msg), "--script",
               str(script), "--from", "<@relay.example:bob@b.test>")
    assert r.returncode == 0, r.stderr
    assert "envelope from: <bob@b.test>" in r.stdout
    assert "action:    fileinto Bob" in r.stdout and "Bad" not in r.stdout
    r = pochta("-c", c, "sieve", "test", "alice@example.org", str(msg), "--script",
               str(script), "--from", "<<bob@b.test>")
    assert r.returncode == 1
    assert "'<<bob@b.test>' is not an SMTP path" in r.stderr


def test_check_reports_include_problems(inst: Path, tmp_path: Path) -> None:  # noqa: F811
    """`sieve check` compiles the script with what it includes: for the active script a
    missing one or a loop is an error, for a file a warning."""
    _add_user(inst, "alice@example.org")
    c = str(inst)
    main = tmp_path / "main.sieve"
    main.write_text('require "include";\ninclude "lists";\n')
    r = pochta("-c", c, "sieve", "check", "alice@example.org", str(main))
    assert r.returncode == 0, r.stderr
    assert r.stderr == (f'warning: {main}: line 2: included personal script "lists" '
                        "does not exist\n")
    assert pochta("-c", c, "sieve", "put", "alice@example.org", str(main),
                  "--activate").returncode == 0
    r = pochta("-c", c, "sieve", "check", "alice@example.org")
    assert r.returncode == 1
    assert r.stderr == ("error: active script 'main': line 2: included personal script "
                        '"lists" does not exist\n')
    lists = tmp_path / "lists.sieve"
    lists.write_text('require "include";\ninclude "main";\n')
    assert pochta("-c", c, "sieve", "put", "alice@example.org", str(lists)).returncode == 0
    r = pochta("-c", c, "sieve", "check", "alice@example.org")
    assert r.returncode == 1 and "include loop: main -> lists -> main" in r.stderr, r.stderr
    lists.write_text("keep;\n")
    assert pochta("-c", c, "sieve", "put", "alice@example.org", str(lists)).returncode == 0
    r = pochta("-c", c, "sieve", "check", "alice@example.org")
    assert r.returncode == 0 and r.stdout == (
        "ok: active script 'main' compiles (requires: include), with 1 included\n"), r.stdout
