"""A script with the scripts it includes (RFC 6609), checked as one: missing scripts,
include loops, nesting depth, the number of scripts, and the errors of each included
script, reported at the include that leads to them.

Sans-IO: ``resolve`` and ``check`` are generators that yield the (location, name) of each
script they need and are sent that script's source (None when there is none); ``drive``
and ``drive_async`` run them with a function or a coroutine (the runner, the store).

What counts as an error is the caller's choice (Pigeonhole's): a script being uploaded
may include one not uploaded yet, so a missing script or a loop is a warning then
(ManageSieve PUTSCRIPT of an inactive script, CHECKSCRIPT), and an error for a script
that is, or becomes, the active one (SETACTIVE, ``pochta sieve check``). Too deep, too
many, and included scripts that do not compile are errors always.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import TypeVar

from .compiler import Limits, Script
from .grammar import SieveSyntaxError

Key = tuple[str, str]  # (personal | global, name)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Problem:
    """``kind``: error, missing or loop; ``follow_up``: the line an including script
    gets because a script it includes has a problem (Pigeonhole reports these too)."""

    kind: str
    line: int
    message: str
    follow_up: bool = False


@dataclass(slots=True)
class Resolved:
    scripts: dict[Key, Script | None] = field(default_factory=dict)  # None: no such script
    problems: list[Problem] = field(default_factory=list)

    def errors(self, strict: bool) -> list[SieveSyntaxError]:
        """The problems that fail the script: every one when ``strict`` (the active
        script), else all but missing scripts and loops."""
        return [SieveSyntaxError(p.line, p.message) for p in self.problems
                if strict or p.kind == "error"]

    def warnings(self) -> list[str]:
        """Missing scripts and loops, as a lenient check reports them (no follow-ups)."""
        return [f"line {p.line}: {p.message}" for p in self.problems
                if p.kind != "error" and not p.follow_up]

    def raise_errors(self, strict: bool) -> None:
        errors = self.errors(strict)
        if errors:
            raise SieveSyntaxError.of(errors)


def _describe(key: Key) -> str:
    return f'{key[0]} script "{key[1]}"'


def resolve(script: Script, root: Key, limits: Limits,
            compile_: Callable[[str, str], Script]
            ) -> Generator[Key, str | None, Resolved]:
    """Every script ``script`` reaches through include, compiled with ``compile_``.
    A loop is an include of a script that is already running (``:once`` breaks it,
    RFC 6609 §3.2); the depth counts includes inside includes (``max_include_depth``),
    the count distinct scripts (``max_includes``)."""
    out = Resolved()

    def visit(current: Script, path: tuple[Key, ...]
              ) -> Generator[Key, str | None, list[Problem]]:
        found: list[Problem] = []
        for site in current.include_sites:
            key = (site.location, site.name)
            if key in path and not site.once:
                chain = " -> ".join(n for _, n in (*path[path.index(key):], key))
                found.append(Problem("loop", site.line, f"include loop: {chain}"))
                continue
            if len(path) > limits.max_include_depth:
                found.append(Problem("error", site.line, f"cannot include {_describe(key)}: "
                                     f"includes nest deeper than {limits.max_include_depth} "
                                     "levels"))
                continue
            if key in out.scripts:
                if out.scripts[key] is None and not site.optional:
                    found.append(Problem("missing", site.line,
                                         f"included {_describe(key)} does not exist"))
                continue  # checked once, where it was first included
            if len(out.scripts) >= limits.max_includes:
                found.append(Problem("error", site.line, f"cannot include {_describe(key)}: "
                                     f"no more than {limits.max_includes} scripts may be "
                                     "included"))
                continue
            source = yield key
            if source is None:
                out.scripts[key] = None
                if not site.optional:
                    found.append(Problem("missing", site.line,
                                         f"included {_describe(key)} does not exist"))
                continue
            try:
                sub = compile_(source, site.name)
            except SieveSyntaxError as exc:
                out.scripts[key] = None
                found += [Problem("error", site.line, f"included {_describe(key)}, "
                                  f"{line}") for line in exc.lines()]
                continue
            out.scripts[key] = sub
            inner = yield from visit(sub, (*path, key))
            if inner:
                # each problem, said where this script includes the one it is in, then
                # one line for the include itself (as Pigeonhole's "failed to include")
                found += [Problem(p.kind, site.line, f"included {_describe(key)}, line "
                                  f"{p.line}: {p.message}", p.follow_up) for p in inner]
                worst = next((k for k in ("error", "loop", "missing")
                              if any(p.kind == k for p in inner)), "error")
                found.append(Problem(worst, site.line, f"included {_describe(key)} has "
                                     "errors", follow_up=True))
        return found

    out.problems = yield from visit(script, (root,))
    return out


@dataclass(slots=True)
class Checked:
    """A script compiled with what it includes. ``script`` is None when it has errors of
    its own (``own``); its includes are resolved all the same, so one check reports
    every problem."""

    script: Script | None
    resolved: Resolved
    own: list[SieveSyntaxError]

    def errors(self, strict: bool) -> list[SieveSyntaxError]:
        return [*self.own, *self.resolved.errors(strict)]

    def raise_errors(self, strict: bool) -> None:
        errors = self.errors(strict)
        if errors:
            raise SieveSyntaxError.of(errors)


def check(source: str, root: Key, limits: Limits, compile_: Callable[[str, str], Script]
          ) -> Generator[Key, str | None, Checked]:
    """``source`` (the script ``root``) compiled, then its includes resolved: those of
    a script with errors too (the commands that compiled name them)."""
    own: list[SieveSyntaxError] = []
    try:
        script: Script | None = compile_(source, root[1])
        partial = script
    except SieveSyntaxError as exc:
        own, script = list(exc.errors), None
        partial = exc.partial if isinstance(exc.partial, Script) else None
    resolved = Resolved()
    if partial is not None:
        resolved = yield from resolve(partial, root, limits, compile_)
    return Checked(script, resolved, own)


def drive(gen: Generator[Key, str | None, T], source: Callable[[Key], str | None]) -> T:
    """Run ``resolve`` or ``check`` with ``source`` answering each script it needs."""
    try:
        key = next(gen)
        while True:
            key = gen.send(source(key))
    except StopIteration as done:
        result: T = done.value
        return result


async def drive_async(gen: Generator[Key, str | None, T],
                         source: Callable[[Key], Awaitable[str | None]]) -> T:
    try:
        key = next(gen)
        while True:
            key = gen.send(await source(key))
    except StopIteration as done:
        result: T = done.value
        return result
