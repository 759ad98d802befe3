"""``[sieve]``: filtering at final delivery, its limits, vacation and redirect rules."""

from __future__ import annotations

from dataclasses import dataclass, field

from .compiler import Limits


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
    redirect_sender: str = field(default="srs", metadata=_doc(
        "envelope sender of redirected copies: srs (the message's sender rewritten to an "
        "SRS0 address of ours when its domain is not ours: SPF passes at the next hop and "
        "bounces go back to the sender; the secret and domain are [transport_security]'s "
        "srs_secret_file and srs_domain), recipient (the redirecting user: SPF passes, "
        "bounces go to the user) or original (unchanged; SPF fails at the next hop unless "
        "[transport_security] srs is on)"))
    script_cache_seconds: float = field(default=2.0, metadata=_doc(
        "how long a process reuses an account's active script before reading it again; "
        "ManageSieve changes apply at once in the process that made them, changes from "
        "`pochta sieve` or another worker within this time (0: read on every delivery)"))
    global_dir: str = field(default="sieve-global", metadata=_doc(
        "folder (relative to the config file) of scripts that include :global names"))
    lists_dir: str = field(default="sieve-lists", metadata=_doc(
        "folder (relative to the config file) of extlists lists (RFC 6134): NAME.txt for "
        "everyone, ADDRESS/NAME.txt for one account; one address or @domain a line"))

    max_cpu_seconds: float = field(default=5.0, metadata=_doc(
        "longest run of one script on one message (checked before each test); longer is "
        "an error and the message is kept in INBOX"))
    max_variable_size: int = field(default=4096, metadata=_doc(
        "bytes of one Sieve variable's value (RFC 5229 §4); a longer value is cut at a "
        "character boundary"))

    max_notifications: int = field(default=10, metadata=_doc(
        "enotify notifications one run may send (RFC 5435); 0 refuses scripts that "
        "use notify"))

    def limits(self) -> Limits:
        return Limits(max_script_size=self.max_script_size, max_actions=self.max_actions,
                      max_redirects=self.max_redirects,
                      max_include_depth=self.max_include_depth,
                      max_cpu_seconds=self.max_cpu_seconds,
                      max_variable_size=self.max_variable_size,
                      max_notifications=self.max_notifications)


def check(cfg: SieveConfig) -> list[str]:
    problems = []
    for name in ("max_script_size", "max_scripts", "max_actions", "max_include_depth",
                 "max_variable_size"):
        if getattr(cfg, name) <= 0:
            problems.append(f"sieve.{name}: must be positive")
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
    if cfg.redirect_sender not in ("srs", "recipient", "original"):
        problems.append("sieve.redirect_sender: must be srs, recipient or original")
    return problems
