"""``[sieve]``: filtering at final delivery, its limits, vacation and redirect rules."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .autoreply import VacationRules
from .compiler import Limits
from .verdict import HeaderVerdict, Kind


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True)
class SieveConfig:
    enabled: bool = field(default=True, metadata=_doc(
        "run each local recipient's active Sieve script at final delivery"))
    max_script_size: int = field(default=256 * 1024, metadata=_doc(
        "bytes of one script (ManageSieve PUTSCRIPT refuses larger ones)"))
    max_scripts: int = field(default=32, metadata=_doc("scripts per account"))
    max_actions: int = field(default=32, metadata=_doc(
        "actions one run may take (keep, fileinto, redirect, ...); more is an error"))
    max_redirects: int = field(default=4, metadata=_doc("redirect actions per message"))
    max_include_depth: int = field(default=10, metadata=_doc(
        "nesting of include (RFC 6609); deeper (an include loop) is an error"))
    fileinto_autocreate: bool = field(default=False, metadata=_doc(
        "fileinto a mailbox that does not exist creates it; false: only with :create "
        "(RFC 5490), else the message is kept in INBOX"))
    vacation_min_days: float = field(default=1.0, metadata=_doc(
        "shortest :days/:seconds period of vacation replies, in days (RFC 5230 §4.1)"))
    vacation_max_days: float = field(default=30.0, metadata=_doc(
        "longest :days period of vacation replies"))
    vacation_default_subject: str = field(default="Automated reply", metadata=_doc(
        "Subject of a vacation reply without :subject to a message without one"))
    vacation_subject_template: str = field(default="Auto: %{subject}", metadata=_doc(
        "Subject of a vacation reply without :subject; %{subject} is the original's"))
    vacation_alias_recipient: bool = field(default=True, metadata=_doc(
        "the address the message was sent to (RCPT TO: an alias of the user) counts as "
        "the user's own for vacation (RFC 5230 §4.5); false: only the account's address "
        "and :addresses (no replies to mail for a big alias like all@)"))
    vacation_check_recipient: bool = field(default=True, metadata=_doc(
        "answer only messages whose To/Cc/Bcc name one of the user's addresses (RFC 5230 "
        "§4.5 SHOULD); false: also mail that reached the user as Bcc or through a list"))
    vacation_to_header_ignore_envelope: bool = field(default=False, metadata=_doc(
        "the reply's To: shows the original's Sender/From even when the envelope sender "
        "(where the reply goes) differs, e.g. an SRS or VERP address"))
    vacation_send_from_recipient: bool = field(default=False, metadata=_doc(
        "envelope sender of vacation replies: the address the reply comes from instead of "
        "<> (the null sender RFC 5230 §5.1 asks for); bounces of the reply then reach the "
        "user, and receivers that refuse <> from a non-MX host take it"))
    notify_sender: str = field(default="user", metadata=_doc(
        "envelope sender of mailto notifications (RFC 5436): user (the :from address "
        "when it is the user's own, else the user's address: bounces reach the user, SPF "
        "passes for our domain) or null (<>); always <> when the message that triggered "
        "it came from <>"))
    redirect_sender: str = field(default="srs", metadata=_doc(
        "envelope sender of redirected copies: srs (the message's sender rewritten to an "
        "SRS0 address of ours when its domain is not ours: SPF passes at the next hop and "
        "bounces go back to the sender; the secret and domain are [transport_security]'s "
        "srs_secret_file and srs_domain), recipient (the redirecting user: SPF passes, "
        "bounces go to the user), account (the account's own address, when mail came "
        "through an alias), <address> (one address of ours that takes the bounces), null "
        "(<>: bounces are lost) or original (unchanged; SPF fails at the next hop unless "
        "[transport_security] srs is on); a message from <> is always redirected from <>"))
    script_cache_seconds: float = field(default=2.0, metadata=_doc(
        "how long a process reuses an account's active script before reading it again; "
        "ManageSieve changes apply at once in the process that made them, changes from "
        "`pochta sieve` or another worker within this time (0: read on every delivery)"))
    global_dir: str = field(default="sieve-global", metadata=_doc(
        "folder (relative to the config file) of scripts that include :global names"))
    protected_headers: list[str] = field(default_factory=list, metadata=_doc(
        "header fields editheader (RFC 5293) may neither add nor delete, besides the "
        "trace fields it never touches (Received, Auto-Submitted, Return-Path), e.g. "
        "['Authentication-Results', 'X-Spam-Status']; Subject cannot be protected"))
    before: list[str] = field(default_factory=list, metadata=_doc(
        "scripts (NAME for NAME.sieve in global_dir) run for every account before its own "
        "script, e.g. spam into Junk; the next script runs only while the message would "
        "still be kept implicitly (Pigeonhole's sieve_before)"))
    after: list[str] = field(default_factory=list, metadata=_doc(
        "scripts run after the account's own, when it kept the message implicitly "
        "(Pigeonhole's sieve_after)"))
    lists_dir: str = field(default="sieve-lists", metadata=_doc(
        "folder (relative to the config file) of extlists lists (RFC 6134): NAME.txt for "
        "everyone, ADDRESS/NAME.txt for one account; one address or @domain a line"))

    max_cpu_seconds: float = field(default=5.0, metadata=_doc(
        "longest run of one script on one message (checked before each rule's test); longer is "
        "an error and the message is kept in INBOX"))
    max_variable_size: int = field(default=4096, metadata=_doc(
        "bytes of one Sieve variable's value (RFC 5229 §4); a longer value is cut at a "
        "character boundary"))
    max_variables: int = field(default=255, metadata=_doc(
        "distinct variables one script may set (RFC 5229 §6 asks for at least 128), "
        "checked when the script is compiled: ManageSieve refuses a script with more"))

    max_notifications: int = field(default=10, metadata=_doc(
        "enotify notifications one run may send (RFC 5435); 0 refuses scripts that "
        "use notify"))

    spamtest_header: str = field(default="", metadata=_doc(
        "spamtest (RFC 5235) from a content filter's header instead of Pochta's own "
        "verdict: NAME (its value) or NAME:REGEX (the regex's first group), e.g. "
        "'X-Spam-Status:score=(-?[0-9.]+)' for SpamAssassin, 'X-Spam-Score' for rspamd; "
        "the first (topmost) field counts; empty: Pochta's own verdict"))
    spamtest_type: str = field(default="score", metadata=_doc(
        "what spamtest_header holds: score (a number against spamtest_max_value or "
        "spamtest_max_header), strlen (a run like '*****') or text (spamtest_text_values)"))
    spamtest_max_header: str = field(default="", metadata=_doc(
        "NAME or NAME:REGEX of the header with the score that counts as certain spam "
        "(SpamAssassin: 'X-Spam-Status:required=(-?[0-9.]+)')"))
    spamtest_max_value: float = field(default=0.0, metadata=_doc(
        "the score that counts as certain spam when there is no spamtest_max_header"))
    spamtest_text_values: list[str] = field(default_factory=list, metadata=_doc(
        "for type text: N=TEXT entries, N from 0 to 10 (e.g. ['1=No', '10=Yes'])"))
    virustest_header: str = field(default="", metadata=_doc(
        "virustest (RFC 5235) from a virus scanner's header, as spamtest_header"))
    virustest_type: str = field(default="text", metadata=_doc(
        "score, strlen or text, as spamtest_type"))
    virustest_max_header: str = field(default="", metadata=_doc(
        "as spamtest_max_header, for virustest"))
    virustest_max_value: float = field(default=0.0, metadata=_doc(
        "as spamtest_max_value, for virustest"))
    virustest_text_values: list[str] = field(default_factory=list, metadata=_doc(
        "for type text: N=TEXT entries, N from 0 to 5 (1 clean ... 5 infected)"))

    def vacation_rules(self) -> VacationRules:
        return VacationRules(self.vacation_default_subject, self.vacation_subject_template,
                             self.vacation_check_recipient,
                             self.vacation_to_header_ignore_envelope)

    def header_verdict(self, kind: Kind) -> HeaderVerdict | None:
        """The configured spamtest/virustest header verdict, None when not configured;
        ValueError when the settings are invalid."""
        header = getattr(self, f"{kind}_header")
        if not header:
            return None
        return HeaderVerdict.configure(
            kind, header, getattr(self, f"{kind}_type"), getattr(self, f"{kind}_max_header"),
            getattr(self, f"{kind}_max_value"), getattr(self, f"{kind}_text_values"))

    def limits(self) -> Limits:
        return Limits(max_script_size=self.max_script_size, max_actions=self.max_actions,
                      max_redirects=self.max_redirects,
                      max_include_depth=self.max_include_depth,
                      max_cpu_seconds=self.max_cpu_seconds,
                      max_variable_size=self.max_variable_size,
                      max_variables=self.max_variables,
                      max_notifications=self.max_notifications)


def check(cfg: SieveConfig) -> list[str]:
    problems = []
    for name in ("max_script_size", "max_scripts", "max_actions", "max_include_depth",
                 "max_variable_size"):
        if getattr(cfg, name) <= 0:
            problems.append(f"sieve.{name}: must be positive")
    if cfg.max_variables < 128:
        problems.append("sieve.max_variables: must be at least 128 (RFC 5229 §6)")
    if cfg.max_notifications < 0:
        problems.append("sieve.max_notifications: must be >= 0")
    if cfg.max_redirects < 0:
        problems.append("sieve.max_redirects: must be >= 0")
    if not 0 <= cfg.vacation_min_days <= cfg.vacation_max_days:
        problems.append("sieve.vacation_min_days: must be from 0 to vacation_max_days")
    if cfg.max_cpu_seconds <= 0:
        problems.append("sieve.max_cpu_seconds: must be positive")
    if cfg.script_cache_seconds < 0:
        problems.append("sieve.script_cache_seconds: must be >= 0")
    for name in cfg.protected_headers:
        if not re.fullmatch(r"[!-9;-~]+", name) or name.lower() == "subject":
            problems.append(f"sieve.protected_headers: {name!r} is not a header field name "
                            "that can be protected")
    for name in (*cfg.before, *cfg.after):
        if not name or "/" in name or "\\" in name or name.startswith("."):
            problems.append(f"sieve.before/after: {name!r} is not a script name")
    if cfg.notify_sender not in ("user", "null"):
        problems.append("sieve.notify_sender: must be user or null")
    explicit = cfg.redirect_sender.startswith("<") and cfg.redirect_sender.endswith(">") \
        and cfg.redirect_sender.count("@") == 1 and " " not in cfg.redirect_sender
    if cfg.redirect_sender not in ("srs", "recipient", "account", "original", "null") \
            and not explicit:
        problems.append("sieve.redirect_sender: must be srs, recipient, account, original, "
                        "null or <address>")
    for kind in ("spamtest", "virustest"):
        try:
            cfg.header_verdict(kind)
        except ValueError as exc:
            problems.append(f"sieve.{kind}_header: {exc}")
    return problems
