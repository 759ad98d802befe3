"""Errors and limits of the Sieve compiler and interpreter: what a user sees when a
script goes wrong (each error with its line) and the bounds a script cannot pass."""

from __future__ import annotations

import pytest

from pochta.sieve import (
    Context,
    Limits,
    Result,
    SieveEnvelope,
    SieveMessage,
    SieveRuntimeError,
    SieveSyntaxError,
    compile_script,
    evaluate,
)
from pochta.sieve.address import envelope_path
from pochta.sieve.execute import store_refusal

MSG = (b"From: alice@example.org\r\nTo: bob@example.com\r\nSubject: hello\r\n"
       b"Content-Type: text/plain\r\n\r\nhi\r\n")
ENV = SieveEnvelope("alice@example.org", "bob@example.com")


def run(source: str, limits: Limits | None = None, data: bytes = MSG,
        env: SieveEnvelope = ENV, **ctx: object) -> Result:
    limits = limits or Limits()
    return evaluate(compile_script(source, limits=limits), SieveMessage(data), env,
                    Context("bob@example.com", limits=limits, **ctx))  # type: ignore[arg-type]


def errors(source: str) -> list[str]:
    with pytest.raises(SieveSyntaxError) as info:
        compile_script(source)
    return info.value.lines()


def variable(source: str, name: str, limits: Limits | None = None) -> str:
    """The value a script leaves in ``name``, read back with a string test."""
    result = run(source + f'\nif string :matches "${{{name}}}" "*" '
                 f'{{ addheader "X-Out" "${{1}}"; }}',
                 limits)
    return result.message.headers("x-out")[0] if result.message.headers("x-out") else ""


def test_variable_values_are_cut_at_the_byte_limit_on_a_character_boundary() -> None:
    limits = Limits(max_variable_size=10)
    req = 'require ["variables", "editheader"];\n'
    assert variable(req + 'set "a" "0123456789abc";', "a", limits) == "0123456789"
    # "é" is two bytes: the ninth and tenth bytes would split the next one
    assert variable(req + 'set "a" "12345678é";', "a", limits) == "12345678é"
    assert variable(req + 'set "a" "123456789é";', "a", limits) == "123456789"


def test_escaping_modifiers_never_cut_inside_an_escape() -> None:
    limits = Limits(max_variable_size=10)
    req = 'require ["variables", "enotify", "editheader"];\n'
    # each "@" becomes "%40": three whole escapes fit in 10 bytes, not a fourth half
    assert variable(req + 'set :encodeurl "a" "@@@@@@";', "a", limits) == "%40%40%40"
    # "\\*" pairs: five fit, not a lone backslash
    assert variable(req + 'set :quotewildcard "a" "******";', "a", limits) == "\\*" * 5


def _fires(test: str, header: str) -> bool:
    data = b"X-A: " + header.encode() + b"\r\n\r\nbody\r\n"
    result = run(f'require "fileinto";\nif {test} {{ fileinto "Hit"; }}', data=data)
    return any(getattr(a, "mailbox", "") == "Hit" for a in result.actions)


def test_unicode_casemap_compares_titlecased_decomposed_text() -> None:
    cmp = ':comparator "i;unicode-casemap"'
    assert _fires(f'header :is {cmp} "X-A" "tèst"', "TÈST")
    # a precomposed È and E + combining grave are the same text (RFC 5051 §2)
    assert _fires(f'header :is {cmp} "X-A" "te\u0300st"', "TÈST")
    assert _fires(f'header :contains {cmp} "X-A" "ÈS"', "a tèst")
    assert _fires(f'header :matches {cmp} "X-A" "*TÈ?T"', "a tèst")
    assert not _fires(f'header :is {cmp} "X-A" "test"', "TÈST")
    # i;ascii-casemap folds A-Z only: È and è stay different
    assert not _fires('header :is "X-A" "tèst"', "TÈST")
    assert not _fires('header :matches "X-A" "tè*"', "TÈST")


def test_unicode_casemap_match_variables_keep_the_message_text() -> None:
    data = "X-A: Grüße aus Köln\r\n\r\nbody\r\n".encode()
    result = run('require ["variables", "editheader"];\n'
                 'if header :matches :comparator "i;unicode-casemap" "X-A" "GRÜSSE*" '
                 '{ addheader "X-Got" "no"; }\n'
                 'if header :matches :comparator "i;unicode-casemap" "X-A" "grüße aus *" '
                 '{ addheader "X-Got" "${1}"; }', data=data)
    assert result.message.headers("x-got") == ["Köln"]


def test_action_and_redirect_limits_name_the_policy_and_the_line() -> None:
    many = 'require "fileinto";\n' + "".join(f'fileinto "box{i}";\n' for i in range(5))
    with pytest.raises(SieveRuntimeError) as info:
        run(many, Limits(max_actions=4))
    assert info.value.line == 6
    assert "total number of actions exceeds policy limit (4 per message)" in str(info.value)
    storm = "".join(f'redirect :copy "u{i}@example.net";\n' for i in range(3))
    with pytest.raises(SieveRuntimeError) as info:
        run('require "copy";\n' + storm, Limits(max_redirects=2))
    assert info.value.line == 4
    assert "number of redirect actions exceeds policy limit (2 per message)" in str(
        info.value)


def test_store_refusals_explain_why_the_message_stays_in_inbox() -> None:
    missing = store_refusal("Lists/Frop", exists=False, may_create=False)
    assert missing is not None
    assert "'Lists/Frop'" in missing and "does not exist" in missing
    assert ":create" in missing and "kept in INBOX" in missing
    assert store_refusal("Lists/Frop", exists=False, may_create=True) is None
    assert store_refusal("Lists/Frop", exists=True, may_create=False) is None
    assert store_refusal("inbox", exists=False, may_create=False) is None
    # :create never makes a name IMAP could not show
    for bad in ("foo//bar", "/top", "trailing/", "wild*", "ctl\x01"):
        refusal = store_refusal(bad, exists=False, may_create=True)
        assert refusal is not None and "invalid mailbox name" in refusal


@pytest.mark.parametrize(("path", "address"), [
    ("<bob@example.org>", "bob@example.org"),
    ("bob@example.org", "bob@example.org"),
    ("<>", ""),
    # RFC 5321 §4.1.2: a source route is accepted and ignored
    ("<@relay.example:bob@example.org>", "bob@example.org"),
    ("<@a.example,@b.example:bob@example.org>", "bob@example.org"),
    # RFC 5321 §4.1.1.3: Postmaster (and daemons) without a domain
    ("<postmaster>", "postmaster"),
    # what real mail carries: dots anywhere, "_" and "-" in host labels, UTF-8
    ("..taro...yamada.@example.jp", "..taro...yamada.@example.jp"),
    ("bob@_dmarc-.example", "bob@_dmarc-.example"),
    ("jörg@bücher.example", "jörg@bücher.example"),
    ('"bob smith"@example.org', '"bob smith"@example.org'),
])
def test_envelope_paths_sieve_reads(path: str, address: str) -> None:
    assert envelope_path(path) == address


@pytest.mark.parametrize("path", [
    "<<bob@example.org>", "bob@example.org>", "<bob@example.org", "<bob example.org>",
    "<bob@@example.org>", "bob@", "<relay.example:bob@example.org>",
    "<@.example:bob@example.org>", "<@a..example:bob@example.org>",
    "<@relay.examplebob@example.org>", "<@a.example,b.example:bob@example.org>",
    "<@a.example,@b.example,bob@example.org>",
])
def test_envelope_paths_that_are_not_paths(path: str) -> None:
    assert envelope_path(path) is None



def test_notify_literals_are_checked_when_the_script_is_compiled() -> None:
    head = 'require "enotify";\n'
    cases = [
        ('notify "xmpp:bob@example.org";', "unsupported notification method 'xmpp'"),
        ('notify "bob@example.org";', "has no scheme"),
        ('notify "mailto:bob@example.org;?subject=x";', "'bob@example.org;' is not an email"),
        ('notify "mailto:bob@example.org?sub<ject=x";', "is not name=value of URI"),
        ('notify "mailto:bob@example.org?subject:=x";', "'subject:' is not a header field"),
        ('notify "mailto:bob%23example.org";', "'bob#example.org' is not an email"),
        ('notify "mailto:?to=eve%23example.org";', "'eve#example.org' is not an email"),
        ('notify "mailto:?subject=hi";', "no recipient"),
        ('notify :from "bob#example.org" "mailto:a@example.org";', ":from 'bob#example.org'"),
        ('notify :from "" "mailto:a@example.org";', "notify :from '' is not"),
        ('notify :options "" "mailto:a@example.org";', "empty option"),
        ('notify :options "_x=1" "mailto:a@example.org";', "invalid option name in '_x=1'"),
        ('notify :options "x=1\r\n2" "mailto:a@example.org";', "has a line break"),
    ]
    for line, expected in cases:
        found = errors(head + line)
        assert len(found) == 1 and found[0].startswith("line 2: notify"), found
        assert expected in found[0], (line, found)
    # one error per command, each with its line
    assert [e.split(":")[0] for e in errors(
        head + 'notify "x:y";\nnotify "mailto:a";\n')] == ["line 2", "line 3"]
    # what is valid compiles, a %2C separates recipients, variables wait for the run
    compile_script(head + 'notify :from "me@example.org" :options "a.b-c=d" '
                   '"mailto:a@example.org%2Cb@example.org?cc=c@example.org&subject=Hi%20there";')
    compile_script('require ["enotify", "variables"];\nset "u" "a@example.org";\n'
                   'notify "mailto:${u}";')


def test_notify_limits() -> None:
    five = 'require "enotify";\n' + "".join(
        f'notify "mailto:u{i}@example.net";\n' for i in range(5))
    assert len(run(five, Limits(max_notifications=5)).actions) == 6  # and the keep
    with pytest.raises(SieveRuntimeError) as info:
        run(five, Limits(max_notifications=4))
    assert info.value.line == 6
    assert "number of notify actions exceeds policy limit (4 per message)" in str(info.value)
    # 0: the operator forbids notify; a script using it is refused at upload ...
    with pytest.raises(SieveSyntaxError) as err:
        compile_script(five, limits=Limits(max_notifications=0))
    assert "line 2: local policy prohibits the use of a notify action" in err.value.lines()
    # ... and one compiled before the change fails at its run
    script = compile_script(five)
    with pytest.raises(SieveRuntimeError, match="prohibits the use of a notify"):
        evaluate(script, SieveMessage(MSG), ENV,
                 Context("bob@example.com", limits=Limits(max_notifications=0)))


def test_editheader_literals_are_checked_when_the_script_is_compiled() -> None:
    found = errors('require ["editheader", "encoded-character"];\n'
                   'addheader "X-Ok" "tab\tis fine";\n'
                   'addheader "X-Bad:" "v";\n'
                   'deleteheader "X Bad";\n'
                   'addheader "X-Ok" "bell${hex:07}";\n'
                   'addheader "X-Ok" "nul${hex:00}";\n'
                   'deleteheader :last "X-Ok";\n'
                   'addheader "X-Ok" ["a list"];\n')
    assert found == [
        "line 3: addheader: field name 'X-Bad:' is invalid (printable US-ASCII characters "
        "but colon and space, RFC 5322 §3.6.8)",
        "line 4: deleteheader: field name 'X Bad' is invalid (printable US-ASCII characters "
        "but colon and space, RFC 5322 §3.6.8)",
        "line 5: addheader: value 'bell\\x07' is invalid (control character U+0007, "
        "RFC 5322 §3.2.5)",
        "line 6: addheader: value 'nul\\x00' is invalid (it contains a NUL character)",
        "line 7: deleteheader: the :last tag cannot be specified without the :index tag",
        "line 8: the addheader command expects a string as argument 2 (value), but a "
        "string list was found",
    ]


def test_a_name_built_at_run_time_is_checked_when_the_command_runs() -> None:
    with pytest.raises(SieveRuntimeError) as info:
        run('require ["editheader", "variables"];\nset "h" "X-Bad:";\naddheader "${h}" "v";')
    assert info.value.line == 3
    assert "addheader: field name 'X-Bad:' is invalid" in str(info.value)


def test_added_header_values_have_a_size_limit() -> None:
    limits = Limits(max_header_value=1024)
    big = "A" * 1500
    compile_script(f'require "editheader";\naddheader "X-Big" "{big}";')  # default 2048
    with pytest.raises(SieveSyntaxError, match=r"is too large \(1500 bytes, the limit is 1024"):
        compile_script(f'require "editheader";\naddheader "X-Big" "{big}";', limits=limits)
    source = f'require ["editheader", "variables"];\nset "v" "{big}";\naddheader "X-Big" "${{v}}";'
    assert run(source).message.headers("x-big") == [big]
    with pytest.raises(SieveRuntimeError, match=r"too large \(1500 bytes, the limit is 1024"):
        run(source, limits)


def test_variable_namespaces_need_their_extension() -> None:
    found = errors('require ["variables", "fileinto"];\n'
                   'set "x.frop" "v";\n'
                   'set "global.g" "v";\n'
                   'fileinto "${box.name}";\n'
                   'fileinto "${x}${1}${env.host}";\n')
    assert found == ['line 2: variable "x.frop": unknown namespace "x"',
                     'line 3: variable "global.g": unknown namespace "global"',
                     'line 4: variable "box.name": unknown namespace "box"']
    # with include, global.NAME is one variable (RFC 6609 §3.5), no deeper name
    found = errors('require ["variables", "include"];\n'
                   'set "global.ok" "v";\nset "global.sub.name" "v";\nset "global.12" "v";\n')
    assert [e.split(":")[0] for e in found] == ["line 3", "line 4"]
    assert "invalid name in the global namespace" in found[0]
    assert found[1] == 'line 4: invalid variable name "global.12"'


def test_global_declarations() -> None:
    # RFC 6609 §3.3: global belongs to variables
    assert errors('require "include";\nglobal "a";\n') == [
        'line 2: command global needs require "variables"']
    found = errors('require ["include", "variables"];\nglobal "a";\nglobal "a";\nkeep;\n'
                   'global "b";\nset "c" "1";\nglobal "c";\n')
    assert found == ['line 7: global: variable "c" is already used as a local variable '
                     "above; declare it global before its first use (RFC 6609 §3.3)"]


def test_include_names_follow_managesieve_script_names() -> None:
    found = errors('require ["include", "encoded-character"];\n'
                   'include "ok";\ninclude "../up";\ninclude "bell${unicode:7}";\n'
                   'include "c1${unicode:85}";\ninclude "ls${unicode:2028}";\n')
    assert [e.split(": include")[0] for e in found] == ["line 3", "line 4", "line 5",
                                                         "line 6"]
    assert "(character U+0007)" in found[1] and "(character U+2028)" in found[3]


def test_ihave_is_false_for_extensions_that_change_how_strings_read() -> None:
    # RFC 5463 §4: "The test MUST fail and the extension MUST NOT be enabled"
    source = ('require ["ihave", "fileinto"];\n'
              'if ihave "variables" { fileinto "v"; }\n'
              'if ihave "encoded-character" { fileinto "e"; }\n'
              'if ihave ["fileinto", "copy"] { fileinto "ok"; }\n')
    assert [getattr(a, "mailbox", "") for a in run(source).actions] == ["ok"]
    # the block is not compiled: it may use what only variables would define
    inert = run('require ["ihave"];\nif ihave "variables" { set "a" "b"; discard; }')
    assert [getattr(a, "implicit", False) for a in inert.actions] == [True]


def test_index_zero_list_comparators_and_special_use_attributes() -> None:
    found = errors('require ["index", "extlists", "special-use", "fileinto", "editheader"];\n'
                   'if header :index 0 "to" "x" { keep; }\n'
                   'deleteheader :index 0 "x-a";\n'
                   'if header :list :comparator "i;octet" "from" ":addrbook:default" { keep; }\n'
                   'fileinto :specialuse "Junk" "Spam";\n'
                   'if specialuse_exists ["\\\\Sent", "Sent"] { keep; }\n'
                   'fileinto :specialuse "\\\\Junk" "Spam";\n')
    assert found == [
        "line 2: header: :index 0 is invalid (the first field is 1)",
        "line 3: deleteheader: :index 0 is invalid (the first field is 1)",
        "line 4: header: the :list match type does not allow a comparator",
        "line 5: fileinto: 'Junk' is not a special-use attribute (a backslash and a name, "
        'e.g. "\\\\Junk")',
        "line 6: specialuse_exists: 'Sent' is not a special-use attribute (a backslash and "
        'a name, e.g. "\\\\Junk")',
    ]


def test_foreverypart_names_nesting_and_extracttext() -> None:
    head = 'require ["foreverypart", "extracttext", "variables"];\n'
    found = errors(head + 'foreverypart :name "outer" {\n'
                   '  foreverypart { break :name "outer"; }\n'  # fine: an enclosing loop
                   '  break :name "inner";\n'
                   '  extracttext "0";\n'
                   '  extracttext "${x}";\n'
                   '  extracttext "ok";\n'
                   '}\n')
    assert found == [
        'line 4: break :name "inner": no enclosing foreverypart loop has that name',
        'line 5: extracttext: invalid variable name "0"',
        'line 6: extracttext: invalid variable name "${x}"',
    ]
    deep = head + "foreverypart {\n" * 5 + "keep;\n" + "}\n" * 5
    assert errors(deep) == ["line 6: foreverypart nested deeper than 4 loops"]
    compile_script(head + "foreverypart {\n" * 4 + "keep;\n" + "}\n" * 4)
    assert errors('require ["extracttext", "variables"];\nkeep;\n') == [
        'line 1: require "extracttext" needs "foreverypart" required too']


def test_folder_names_that_are_not_text() -> None:
    head = 'require ["fileinto", "encoded-character", "variables"];\n'
    assert errors(head + 'fileinto "${hex:ff}rop";\nfileinto "";\n') == [
        "line 2: fileinto: invalid folder name '\ufffdrop' (not valid UTF-8)",
        "line 3: fileinto: empty folder name"]
    # built at run time: the run fails there (and delivery keeps the message)
    with pytest.raises(SieveRuntimeError) as info:
        run(head + 'set "box" "${hex:c3}x";\nfileinto "${box}";')
    assert info.value.line == 3 and "(not valid UTF-8)" in str(info.value)
    assert run(head + 'fileinto "Gr${hex:c3 bc}n";').actions[0].mailbox == "Grün"  # type: ignore[union-attr]


def test_address_reads_address_fields_and_envelope_known_parts() -> None:
    found = errors('require ["envelope", "variables"];\n'
                   'if address :is ["To", "Reply-To", "Disposition-Notification-To"] "a" '
                   '{ keep; }\n'
                   'if address :is ["to", "Subject"] "a" { keep; }\n'
                   'if envelope :is ["from", "to", "auth"] "a" { keep; }\n'
                   'if envelope :is "orcpt" "a" { keep; }\n'
                   'set "h" "subject";\nif address :is "${h}" "a" { keep; }\n')
    assert found == [
        "line 3: header 'Subject' is not allowed in the address test: it holds no "
        "addresses (use the header test)",
        'line 5: envelope: unknown envelope part "orcpt" (expected "from", "to" or "auth")',
    ]


def test_an_if_without_its_block_still_has_its_test_checked() -> None:
    assert errors('require "imap4flags";\nif setflag;\nif hasflag :frop "x";\n') == [
        # the command's own error first, then its test's (Pigeonhole's order)
        "line 2: if needs a block { ... }",
        "line 2: cannot use command 'setflag' as a test",
        "line 3: if needs a block { ... }",
        "line 3: unknown tagged argument ':frop' for the hasflag test (it accepts "
        ":comparator, :contains, :is, :matches)",
    ]


def test_an_unknown_name_is_reported_at_its_first_use_only() -> None:
    # an unknown command, a command of an extension not required, and an unknown tag
    # (per command: the same tag on another command is its own error)
    assert errors('frob 1;\nfrob 2;\nif true { frob 3; }\nfileinto "a";\nfileinto "b";\n'
                  'keep :nope;\nkeep :nope;\ndiscard :nope;\n') == [
        "line 1: unknown command frob",
        'line 4: command fileinto needs require "fileinto"',
        "line 6: unknown tagged argument ':nope' for the keep command (its tags need a "
        "require first)",
        "line 8: unknown tagged argument ':nope' for the discard command (it takes no "
        "tags)",
    ]


def test_follow_up_errors_after_a_broken_command() -> None:
    assert errors('require "fileinto";\nfileinto "a"\nkeep;\nfileinto "b"\ntrue;\n'
                  'if address matches "from" "x" { stop; }\n'
                  'stop "x" true { frob; }\n') == [
        # a command that takes no test, followed by a command: a missing ";"
        "line 2: missing semicolon ';' after fileinto command (before 'keep')",
        "line 4: the fileinto command accepts no sub-tests, but 1 was specified",
        # wrong arguments, and a tag name without its ":" read as a test
        "line 6: the address test requires 2 positional arguments, but 0 were specified",
        "line 6: missing colon ':' before ':matches' tag in the address test",
        # arguments and test wrong: both said; a block stop does not take is not read
        "line 7: the stop command requires 0 positional arguments, but 1 was specified",
        "line 7: the stop command accepts no sub-tests, but 1 was specified",
    ]


def test_variable_limits_are_checked_when_the_script_is_compiled() -> None:
    long = "v" * 65
    assert errors(f'require "variables";\nset "{"v" * 64}" "ok";\nset "{long}" "x";\n'
                  'if string "${32}" "" { stop; }\nif string "${33}" "" { stop; }\n') == [
        f'line 3: variable name "{"v" * 20}..." is longer than 64 characters (RFC 5229 §6)',
        "line 5: match variable ${33} is out of range (${0} to ${32})",
    ]
    many = "".join(f'set "v{i}" "x";\n' for i in range(130))
    again = 'set "v0" "y";\n'  # setting one again is no new variable
    assert compile_script('require "variables";\n' + many + again,
                          limits=Limits(max_variables=130))
    with pytest.raises(SieveSyntaxError) as info:
        compile_script('require "variables";\n' + many + 'set "w1" "";\nset "w2" "";\n',
                       limits=Limits(max_variables=130))
    # reported once, at the first one over
    assert info.value.lines() == [
        'line 132: variable "w1" is one more than the 130 variables a script may set '
        "(RFC 5229 §6)"]


def test_includes_resolved_with_the_script() -> None:
    """sieve/includes.py: loops (:once breaks one, RFC 6609 §3.2), depth, count, and the
    follow-up line an including script gets."""
    from pochta.sieve.includes import check, drive

    scripts = {
        "self": 'require "include";\ninclude "self";\n',
        "once": 'require "include";\ninclude :once "once";\nkeep;\n',
        "d1": 'require "include";\ninclude "d2";\n', "d2": 'require "include";\ninclude "d3";\n',
        "d3": "keep;\n", "x": "keep;\n", "y": "keep;\n",
    }

    def problems(source: str, limits: Limits | None = None, strict: bool = True
                 ) -> list[str]:
        limits = limits or Limits()
        checked = drive(check(source, ("personal", "main"), limits,
                              lambda text, name: compile_script(text, name, limits)),
                        lambda key: scripts.get(key[1]))
        return [str(e) for e in checked.errors(strict)]

    head = 'require "include";\n'
    assert problems(head + 'include "once";\ninclude :optional "none";\n') == []
    assert problems(head + 'include "self";\n') == [
        'line 2: included personal script "self", line 2: include loop: self -> self',
        'line 2: included personal script "self" has errors']
    assert problems(head + 'include "none";\n', strict=False) == []
    assert problems(head + 'include "d1";\n', Limits(max_include_depth=2)) == [
        'line 2: included personal script "d1", line 2: included personal script "d2", '
        'line 2: cannot include personal script "d3": includes nest deeper than 2 levels',
        'line 2: included personal script "d1", line 2: included personal script "d2" '
        "has errors",
        'line 2: included personal script "d1" has errors']
    assert problems(head + 'include "x";\ninclude "y";\ninclude "x";\n',
                    Limits(max_includes=1)) == [
        'line 3: cannot include personal script "y": no more than 1 scripts may be included']


def test_max_variables_setting() -> None:
    from pochta.sieve.settings import SieveConfig, check

    assert SieveConfig(max_variables=300).limits().max_variables == 300
    # RFC 5229 §6: an implementation MUST support at least 128 variables
    assert check(SieveConfig(max_variables=127)) == [
        "sieve.max_variables: must be at least 128 (RFC 5229 §6)"]
    assert check(SieveConfig()) == []
