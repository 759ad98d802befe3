"""The interpreter against the examples of RFC 5228 and of the extension RFCs, plus the
limits and errors (with line numbers)."""

from __future__ import annotations

import pytest

from pochta.sieve import (
    Context,
    Discard,
    Limits,
    NeedLookup,
    Notify,
    Redirect,
    Reject,
    Result,
    SieveEnvelope,
    SieveMessage,
    SieveRuntimeError,
    SieveSyntaxError,
    Store,
    Vacation,
    compile_script,
    evaluate,
)

MSG = (b"Return-Path: <coyote@desert.example.org>\r\n"
       b"Date: Tue, 1 Apr 1997 09:06:31 -0800 (PST)\r\n"
       b"From: coyote@desert.example.org\r\n"
       b"To: roadrunner@acme.example.com\r\n"
       b"Cc: Boss <boss+work@acme.example.com>\r\n"
       b"Subject: I have a present for you\r\n"
       b"X-Caffeine: C8H10N4O2\r\n"
       b"X-Score: 12\r\n"
       b"Message-ID: <1@desert.example.org>\r\n"
       b"\r\n"
       b"Look, I'm sorry about the whole anvil thing, and I really\r\n"
       b"didn't mean to try and drop it on you from the top of the\r\n"
       b"cliff.  I want to try to make it up to you.\r\n")

ENV = SieveEnvelope("coyote@desert.example.org", "roadrunner+acme@acme.example.com")


def run(source: str, data: bytes = MSG, env: SieveEnvelope = ENV,
        ctx: Context | None = None) -> Result:
    return evaluate(compile_script(source), SieveMessage(data), env,
                    ctx or Context("roadrunner@acme.example.com", now=860_000_000.0))


def stores(result: Result) -> list[tuple[str, frozenset[str]]]:
    return [(a.mailbox, a.flags) for a in result.actions if isinstance(a, Store)]


def test_implicit_keep_and_discard() -> None:
    assert stores(run("")) == [("INBOX", frozenset())]
    assert run("discard;").actions == []
    assert stores(run("keep; keep;")) == [("INBOX", frozenset())]


def test_rfc5228_example_8_3() -> None:
    # RFC 5228 §9 example, shortened
    script = """
    require "fileinto";
    if header :is "Sender" "owner-ietf-mta-filters@imc.org" {
        fileinto "filter";
    } elsif address :DOMAIN :is ["From", "To"] "example.com" {
        keep;
    } elsif anyof (NOT address :all :contains ["To", "Cc", "Bcc"] "me@example.com",
                   header :matches "subject" ["*make*money*fast*", "*university*dipl*mas*"]) {
        fileinto "spam";
    } else {
        fileinto "personal";
    }"""
    assert stores(run(script)) == [("spam", frozenset())]
    to_me = MSG.replace(b"roadrunner@acme.example.com", b"me@example.com")
    assert stores(run(script, to_me)) == [("INBOX", frozenset())]  # domain example.com


def test_match_types_and_comparators() -> None:
    assert stores(run('if header :contains "subject" "PRESENT" { discard; }')) == []
    assert stores(run('if header :contains :comparator "i;octet" "subject" "PRESENT" '
                      '{ discard; }')) != []
    assert stores(run('if header :matches "subject" "I have ? present*" { discard; }')) == []
    # a backslash quotes the next character (here a plain "2")
    assert stores(run('if header :matches "x-caffeine" "C8H10N4O\\\\2" { discard; }')) == []
    assert stores(run('if header :matches "x-caffeine" "C8H10N4O\\\\*" { discard; }')) != []
    assert stores(run('if exists ["From", "Date"] { discard; }')) == []
    assert stores(run('if exists ["From", "X-Nope"] { discard; }')) != []
    assert stores(run('if size :over 100 { discard; }')) == []
    assert stores(run('if size :under 1K { discard; }')) == []
    assert stores(run('if not true { discard; }')) != []


def test_address_parts_envelope_and_subaddress() -> None:
    script = """require ["envelope", "subaddress", "fileinto"];
    if envelope :detail "to" "acme" { fileinto "acme"; }
    if address :user "cc" "boss" { fileinto "boss"; }
    if address :detail "cc" "work" { fileinto "work"; }
    if envelope :domain "from" "desert.example.org" { fileinto "desert"; }
    if address :localpart "from" "nobody" { fileinto "never"; }
    """
    assert [m for m, _ in stores(run(script))] == ["acme", "boss", "work", "desert"]
    # :detail of an address without "+" does not match even "" (RFC 5233 §4)
    assert stores(run('require "subaddress"; if address :detail "to" "" { discard; }')) != []
    assert stores(run('require "envelope"; if envelope :all :is "from" "" { discard; }',
                      env=SieveEnvelope("", "x@y"))) == []


def test_relational_and_numeric() -> None:
    script = """require ["relational", "comparator-i;ascii-numeric"];
    if header :value "gt" :comparator "i;ascii-numeric" "x-score" "10" { discard; }"""
    assert run(script).actions == []
    script = """require ["relational", "comparator-i;ascii-numeric"];
    if address :count "ge" :comparator "i;ascii-numeric" ["to", "cc"] "3" { discard; }"""
    assert run(script).actions != []
    script = """require ["relational", "comparator-i;ascii-numeric"];
    if address :count "eq" :comparator "i;ascii-numeric" ["to", "cc"] "2" { discard; }"""
    assert run(script).actions == []


def test_imap4flags() -> None:
    # RFC 5232 §7 (shortened)
    script = r"""require ["imap4flags", "fileinto"];
    if size :over 100 { setflag "\\Deleted"; }
    if header :contains "from" "coyote" { addflag ["\\Answered", "$MDNSent"]; }
    if hasflag :contains "MDNSent" { fileinto :flags "\\Seen" "seen"; }
    removeflag "\\Deleted";
    """
    assert stores(run(script)) == [("seen", frozenset({"\\Seen"}))]
    kept = run(script.replace('fileinto :flags "\\\\Seen" "seen";', "keep;"))
    # keep takes the flags of its moment: \\Deleted was removed only afterwards
    assert stores(kept) == [("INBOX", frozenset({"\\Deleted", "\\Answered", "$MDNSent"}))]


def test_variables_and_match_variables() -> None:
    script = r"""require ["variables", "fileinto"];
    if header :matches "subject" "I have * present for *" {
        set :upperfirst "who" "${2}";
        set "box" "gifts/${1}/${who}";
    }
    set :length "n" "${box}";
    set :lower :upperfirst "name" "BOSS";
    fileinto "${box}-${n}-${name}";
    if string :is "${unknown}" "" { fileinto "empty"; }
    """
    assert [m for m, _ in stores(run(script))] == ["gifts/a/You-11-Boss", "empty"]


def test_regex() -> None:
    script = r"""require ["regex", "variables", "fileinto"];
    if header :regex "subject" "^I (have) .* (you)$" { fileinto "${1}-${2}"; }"""
    assert [m for m, _ in stores(run(script))] == ["have-you"]


def test_body() -> None:
    assert run('require "body"; if body :contains "anvil" { discard; }').actions == []
    assert run('require "body"; if body :raw :contains "anvil thing" { discard; }'
               ).actions == []
    assert run('require "body"; if body :content "image" :contains "anvil" { discard; }'
               ).actions != []


def test_date_and_index() -> None:
    script = """require ["date", "index", "relational", "fileinto"];
    if date :originalzone "date" "year" "1997" { fileinto "y97"; }
    if date :zone "+0000" "date" "hour" "17" { fileinto "h17"; }
    if date :index 1 :originalzone "date" "weekday" "2" { fileinto "tuesday"; }
    if currentdate :zone "+0000" "date" "1997-04-02" { fileinto "now"; }
    """
    assert [m for m, _ in stores(run(script))] == ["y97", "h17", "tuesday", "now"]


def test_editheader() -> None:
    script = """require ["editheader", "fileinto"];
    addheader "X-Filtered" "yes";
    deleteheader "x-caffeine";
    deleteheader "received";
    if header :is "x-filtered" "yes" { fileinto "edited"; }"""
    result = run(script)
    out = result.message.render()
    assert out.startswith(b"X-Filtered: yes\r\n")
    assert b"X-Caffeine" not in out and b"anvil" in out
    assert stores(result) == [("edited", frozenset())]


def test_reject_vacation_redirect_notify() -> None:
    r = run('require "reject"; reject "go away";')
    assert r.actions == [Reject("go away")]
    r = run('require "ereject"; ereject "go away";')
    assert r.actions == [Reject("go away", extended=True)]
    r = run('require ["copy"]; redirect :copy "a@b.test"; redirect "c@d.test";')
    assert r.actions == [Redirect("a@b.test", True), Redirect("c@d.test")]
    r = run('require "vacation"; vacation :days 3 :subject "Away" "gone fishing";')
    assert isinstance(r.actions[0], Vacation) and r.actions[0].seconds == 3 * 86400
    r = run('require "vacation-seconds"; vacation :seconds 60 "soon";')
    assert isinstance(r.actions[0], Vacation) and r.actions[0].seconds == 60
    r = run('require "enotify"; notify :importance "1" "mailto:me@x.test?subject=hi";')
    assert isinstance(r.actions[0], Notify)
    with pytest.raises(SieveRuntimeError, match="reject cannot be combined"):
        run('require ["reject", "fileinto"]; fileinto "x"; reject "no";')


def test_duplicate_asks_the_store() -> None:
    script = 'require "duplicate"; if duplicate { discard; }'
    with pytest.raises(NeedLookup) as need:
        run(script)
    ctx = Context("roadrunner@acme.example.com", known={need.value.key: True})
    assert run(script, ctx=ctx).actions == []
    ctx = Context("roadrunner@acme.example.com", known={need.value.key: False})
    result = run(script, ctx=ctx)
    assert stores(result) == [("INBOX", frozenset())]
    assert result.track == [(need.value.key, 7 * 86400.0)]


def test_include_and_global_variables() -> None:
    inner = compile_script('require ["include", "variables"]; global "box"; '
                           'set "box" "from-inner"; return; set "box" "never";', "inner")
    ctx = Context("u@x.test", scripts={("personal", "inner"): inner})
    script = """require ["include", "variables", "fileinto"];
    global "box";
    include "inner";
    include :once "inner";
    include :optional "missing";
    fileinto "${box}";"""
    assert [m for m, _ in stores(run(script, ctx=ctx))] == ["from-inner"]
    with pytest.raises(SieveRuntimeError, match="not found"):
        run('require "include"; include "missing";')


def test_environment_spamtest_mailbox() -> None:
    ctx = Context("u@x.test", environment={"name": "Pochta"}, spam_score=8,
                  mailboxes=frozenset({"INBOX", "Lists"}))
    script = """require ["environment", "spamtest", "relational",
                         "comparator-i;ascii-numeric", "mailbox", "fileinto"];
    if environment "name" "Pochta" { fileinto "env"; }
    if spamtest :value "ge" :comparator "i;ascii-numeric" "5" { fileinto "spam"; }
    if mailboxexists "Lists" { fileinto "lists"; }
    if mailboxexists "Nope" { fileinto "nope"; }"""
    assert [m for m, _ in stores(run(script, ctx=ctx))] == ["env", "spam", "lists"]


def test_encoded_character() -> None:
    script = 'require ["encoded-character", "fileinto"]; fileinto "${hex:41 42}${unicode:263a}";'
    assert [m for m, _ in stores(run(script))] == ["AB\u263a"]


@pytest.mark.parametrize(("source", "error"), [
    ("keep", 'line 1: expected ";" after command keep but found end of script'),
    ('fileinto "x";', 'line 1: command fileinto needs require "fileinto"'),
    ('require "frob";', 'line 1: unsupported extension "frob"'),
    ("keep;\nrequire \"fileinto\";", "line 2: require must come before other commands"),
    ("if true {\n keep;\n", 'line 3: missing "}" at end of script'),
    ('if header :is "a" { }',
     "line 1: the header test requires 2 positional arguments, but 1 was specified"),
    ('\n\nif header :frob "a" "b" {}', "line 3: unknown tagged argument ':frob' for the "
     "header test (it accepts :comparator, :contains, :is, :matches)"),
    ("else { keep; }", "line 1: else without a preceding if"),
    ('"unterminated', "line 1: unterminated string"),
    ("text:\nno end", 'line 1: unterminated multi-line string (missing "." line)'),
    ("/* never closed", "line 1: unterminated comment"),
    ('require "relational"; if header :value "xx" "a" "b" {}',
     'line 1: :value "xx": relation must be one of gt, ge, lt, le, eq, ne'),
    ('require "comparator-i;ascii-numeric"; if header :contains :comparator '
     '"i;ascii-numeric" "a" "b" {}', "line 1: i;ascii-numeric supports only :is, :value "
     "and :count"),
])
def test_syntax_errors_name_the_line(source: str, error: str) -> None:
    with pytest.raises(SieveSyntaxError) as exc:
        compile_script(source)
    assert str(exc.value) == error


def test_limits() -> None:
    with pytest.raises(SieveSyntaxError, match="more than the limit of 1024"):
        compile_script("#" * 2000, limits=Limits(max_script_size=1024))
    many = 'require ["fileinto", "copy"];' + "".join(
        f'fileinto :copy "f{i}";' for i in range(10_000))
    with pytest.raises(SieveRuntimeError, match=r"actions exceeds policy limit \(32 "):
        run(many)
    storm = "".join(f'redirect "r{i}@x.test";' for i in range(10))
    with pytest.raises(SieveRuntimeError, match=r"redirect actions exceeds policy limit \(4 "):
        run(storm)
    deep = "if true {" * 100 + "}" * 100
    with pytest.raises(SieveSyntaxError, match="nesting deeper than 64"):
        compile_script(deep)


def test_multiline_strings_and_comments() -> None:
    script = ('require "vacation";\n# hash comment\n/* bracket\ncomment */\n'
              'vacation text:\nline one\n..dot\n.\n;\n')
    r = run(script)
    assert isinstance(r.actions[0], Vacation)
    assert r.actions[0].reason == "line one\r\n.dot\r\n"
    assert Discard() not in r.actions


BROKEN = """require ["fileinto", "nosuchext"];
if header :frob "subject" "x" { fileinto "a"; }
fileinto "b"
if true { frobnicate; keep; }
stop;
if size :over 99999999999999999999999 { keep; }
redirect 42;
"""


def test_every_compile_error_is_reported_with_its_line() -> None:
    with pytest.raises(SieveSyntaxError) as exc:
        compile_script(BROKEN)
    assert exc.value.lines() == [
        'line 1: unsupported extension "nosuchext"',
        "line 2: unknown tagged argument ':frob' for the header test (it accepts "
        ":comparator, :contains, :is, :matches)",
        # the missing ";" makes the if its test (and the block its block, which is not
        # checked: fileinto takes none, as Pigeonhole counts)
        "line 3: missing semicolon ';' after fileinto command (before 'if')",
        "line 6: number 99999999999999999999999 is too large",
        "line 7: the redirect command expects a string as argument 1 (address), but a "
        "number was found",
    ]
    assert str(exc.value) == 'line 1: unsupported extension "nosuchext"'
    assert exc.value.report().endswith("\n5 errors")
    # a parse error: the parser skips to the end of the command and goes on
    with pytest.raises(SieveSyntaxError) as parsed:
        compile_script('keep :x "a" [;\nfrobnicate;\nif true { stop }\ndiscard;\n')
    assert parsed.value.lines() == [
        'line 1: expected a string in list but found ";"',
        "line 2: unknown command frobnicate",
        'line 3: expected ";" after command stop but found "}"',
    ]
    # a script with one error still reads as before
    with pytest.raises(SieveSyntaxError) as one:
        compile_script("keep")
    assert one.value.report() == 'line 1: expected ";" after command keep but found end of script'


def test_ihave_and_error() -> None:
    # RFC 5463 §4: a block for a missing extension is not compiled, so may hold anything
    script = ('require ["ihave", "fileinto"];\n'
              'if ihave "x-unknown" { x_unknown_command :tag "x"; }\n'
              'elsif ihave "fileinto" { fileinto "known"; }\n')
    assert stores(run(script)) == [("known", frozenset())]
    with pytest.raises(SieveRuntimeError, match=r"line 2: error: giving up on \$"):
        run('require ["ihave", "variables"];\nerror "giving up on ${x}$";')


MIME_MSG = (b"From: a@b.test\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=X\r\n\r\n"
            b"--X\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nfirst text\r\n"
            b"--X\r\nContent-Type: application/zip; name=\"a.zip\"\r\n\r\nPK\r\n--X--\r\n")


def test_replace_and_enclose_rewrite_the_message() -> None:
    r = run('require ["foreverypart", "mime", "replace"];\n'
            'foreverypart { if header :mime :subtype "content-type" "zip" {\n'
            '  replace "The attachment was removed."; } }', MIME_MSG)
    out = r.message.render()
    assert b"PK" not in out and b"The attachment was removed." in out
    assert b"first text" in out and r.message.edited
    r = run('require "enclose"; enclose :subject "Quarantined" "See the attached message.";',
            MIME_MSG)
    out = r.message.render()
    assert b"Subject: Quarantined\r\n" in out and b"message/rfc822" in out
    assert b"See the attached message." in out and MIME_MSG in out


def test_metadata_and_lists_are_asked_for() -> None:
    script = ('require ["mboxmetadata", "extlists"];\n'
              'if allof (metadata "INBOX" "/private/x" "on", '
              'address :list "from" ":addrbook:friends") { discard; }')
    ctx = Context("roadrunner@acme.example.com")
    with pytest.raises(NeedLookup, match="metadata:INBOX"):
        run(script, ctx=ctx)
    ctx.metadata["INBOX"] = {"/private/x": "on"}
    with pytest.raises(NeedLookup, match="list::addrbook:friends"):
        run(script, ctx=ctx)
    ctx.lists[":addrbook:friends"] = frozenset({"@desert.example.org"})
    assert run(script, ctx=ctx).actions == []
    ctx.lists[":addrbook:friends"] = frozenset({"someone@else.test"})
    assert stores(run(script, ctx=ctx)) == [("INBOX", frozenset())]


def test_cpu_limit_stops_a_slow_script() -> None:
    slow = 'require "regex";\n' + 'if header :regex "subject" "^(a|aa)+$" { keep; }\n' * 50
    with pytest.raises(SieveRuntimeError, match="the script ran longer than 1e-09 seconds"):
        run(slow, ctx=Context("r@acme.example.com", limits=Limits(max_cpu_seconds=1e-9)))


def test_encodeurl_rfc5435_example() -> None:
    # RFC 5435 §6: the modifier keeps a value from adding URI parameters
    r = run('require ["enotify", "variables"];\n'
            'set :encodeurl "body_param" "Safe body&evil=evilbody";\n'
            'notify "mailto:tim@example.com?body=${body_param}";')
    [note] = [a for a in r.actions if isinstance(a, Notify)]
    assert note.method == "mailto:tim@example.com?body=Safe%20body%26evil%3Devilbody"


def test_vacation_reply_names_the_sender_and_keeps_the_subject_short() -> None:
    from pochta.sieve.autoreply import build_vacation

    msg = SieveMessage(b'From: "Stephan Bosch" <stephan@example.org>\r\nSubject: '
                       + b"x" * 400 + b"\r\nTo: nico@frop.example.org\r\n\r\nFrop\r\n")
    reply = build_vacation(Vacation("away", 86400), msg, "nico@frop.example.org",
                           "stephan@example.org", "mail.example.org", 0.0)
    reply_msg = SieveMessage(reply)
    assert reply_msg.headers("to") == ['"Stephan Bosch" <stephan@example.org>']
    [subject] = reply_msg.headers("subject")
    assert len(subject) == 256 and subject.startswith("Auto: xxx") and subject.endswith("\u2026")
    # another From than the envelope sender: the bare address
    reply = build_vacation(Vacation("away", 86400), msg, "nico@frop.example.org",
                           "bounces@list.example.org", "mail.example.org", 0.0)
    assert SieveMessage(reply).headers("to") == ["<bounces@list.example.org>"]


def test_regex_match_values_beyond_nine() -> None:
    # RFC 5229 §3.2 requires ${1}..${9}; higher ones MAY be kept, and we keep them all
    src = """require ["regex", "variables", "fileinto"];
    if header :regex "subject" "^(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)" {
        fileinto "${10}${11}-${8}";
    }"""
    assert stores(run(src)) == [("pr-a", frozenset())]


def test_mime_param_decodes_rfc2231_continuations() -> None:
    # RFC 2231 §3-4: continuations joined, charset'lang'%XX sections decoded
    data = (b"From: a@example.org\r\nContent-Type: application/x-stuff;\r\n"
            b"\ttitle*0*=utf-8'en'Caf%C3%A9%20;\r\n\ttitle*1=\"au lait\";\r\n"
            b"\tname*=us-ascii''a%20b\r\n\r\nx\r\n")
    src = """require ["mime", "fileinto"];
    if allof (header :mime :param "title" "content-type" "Caf\u00e9 au lait",
              header :mime :param "name" "content-type" "a b") { fileinto "yes"; }"""
    assert stores(run(src, data)) == [("yes", frozenset())]


def test_addheader_unfolds_a_multiline_value() -> None:
    # RFC 5293 §4 with RFC 5322 §2.2.3: CRLF before white space is folding
    src = """require ["editheader", "fileinto", "variables"];
    addheader "X-Long" text:
first line
 continued
 and more
.
;
    if header :is "x-long" "first line continued and more" { fileinto "unfolded"; }"""
    assert stores(run(src)) == [("unfolded", frozenset())]


def test_mailto_with_an_invalid_header_name_is_not_valid() -> None:
    # RFC 6068 §2: hfname names a header field, and ":" cannot be in one (RFC 5322 §3.6.8)
    src = """require ["enotify", "fileinto"];
    if valid_notify_method "mailto:a@example.org?header:=x" { fileinto "bad"; }
    elsif valid_notify_method "mailto:a@example.org?X-Head=x" { fileinto "good"; }"""
    assert stores(run(src)) == [("good", frozenset())]


def test_redirect_address_is_an_rfc5322_mailbox() -> None:
    # RFC 5228 §4.2 / RFC 5322 §3.4: white space around tokens is allowed (CFWS), a
    # quoted local part that needs no quotes is the same address without them
    src = """redirect "  Stephan Bosch  <  stephan  @  example.org  > ";
    redirect "\\"Sirius\\"@example.net";
    redirect "\\"S[r]us\\"@example.net";
    redirect "bosch@ example.org";"""
    assert [a.address for a in run(src).actions if isinstance(a, Redirect)] == [
        "stephan@example.org", "Sirius@example.net", '"S[r]us"@example.net',
        "bosch@example.org"]
    for bad in ("stephan", "a b@example.org", "x@exa mple.org", "<a@example.org",
                "a@example.org, b@example.org"):
        with pytest.raises(SieveSyntaxError):
            compile_script(f'redirect "{bad}";')


def test_body_content_text_keeps_html_as_it_is() -> None:
    # RFC 5173 §5.2: :content "text" matches every text/* part as decoded, HTML included;
    # only :text (§5.3) takes the tags out
    data = (b"From: a@example.org\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n"
            b"--b\r\nContent-Type: text/plain\r\n\r\nplain\r\n"
            b"--b\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--b--\r\n")
    src = """require ["body", "fileinto"];
    if body :content "text" :contains "<p>html</p>" { fileinto "content"; }
    if body :text :contains "<p>" { fileinto "text-has-tags"; }"""
    assert stores(run(src, data)) == [("content", frozenset())]


def test_body_content_multipart_and_message_rfc822() -> None:
    # RFC 5173 §5.2: a matching multipart is searched in its prologue and epilogue, a
    # matching message/rfc822 in the nested header only
    data = (b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            b"the prologue\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n"
            b"From: inner@example.org\r\nSubject: hi\r\n\r\ninner body\r\n"
            b"--b--\r\nthe epilogue\r\n")
    src = """require ["body", "fileinto", "relational", "comparator-i;ascii-numeric"];
    if body :content "multipart" :contains "prologue" { fileinto "pro"; }
    if body :content "multipart" :contains "epilogue" { fileinto "epi"; }
    if body :content "multipart" :contains "--b" { fileinto "boundary"; }
    if body :content "message/rfc822" :contains "From: inner@" { fileinto "hdr"; }
    if body :content "message/rfc822" :contains "inner body" { fileinto "body"; }"""
    assert [b for b, _ in stores(run(src, data))] == ["pro", "epi", "hdr"]


def test_body_text_reads_xhtml_and_skips_unknown_encodings() -> None:
    # RFC 5173 §5.3: text is extracted from XHTML like HTML; RFC 2045 §6.4: a part with an
    # unknown Content-Transfer-Encoding is application/octet-stream, not text
    data = (b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            b"--b\r\nContent-Type: application/xhtml+xml\r\n\r\n<p>xhtml words</p>\r\n"
            b"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-frob\r\n\r\n"
            b"hidden words\r\n--b--\r\n")
    src = """require ["body", "fileinto"];
    if body :text :contains "xhtml words" { fileinto "xhtml"; }
    if body :text :contains "<p>" { fileinto "tags"; }
    if body :text :contains "hidden" { fileinto "hidden"; }"""
    assert [b for b, _ in stores(run(src, data))] == ["xhtml"]


def test_bad_regex_made_at_run_time_is_reported_and_false() -> None:
    # draft-ietf-sieve-regex §3: an invalid pattern is an error; one built from a variable
    # is only known at run time: the test is false, the script goes on, the log says why
    src = """require ["regex", "variables", "fileinto"];
    set "re" "[";
    if header :regex "to" "${re}" { fileinto "frop"; }
    if header :regex "to" "${re}" { fileinto "frop"; }"""
    result = run(src)
    assert stores(result) == [("INBOX", frozenset())]
    assert len(result.warnings) == 1 and "invalid regular expression '['" in result.warnings[0]
