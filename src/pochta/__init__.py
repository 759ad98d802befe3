"""Pochta: a complete mail server in Python."""

from __future__ import annotations

import sys
from pathlib import Path

__version__ = "0.1.0"


def drop_stale_native_build(package: Path) -> None:
    """`make native` compiles the IMAP hot path with mypyc: each listed module gets a
    compiled twin next to its source (``src/pochta/.native`` lists them), and Python
    imports the twin instead of the source. A twin older than its source would run old
    code after an edit or a checkout: then the whole build goes (compiled modules call
    each other directly) and Python runs the sources until `make native` builds again."""
    listing = package / ".native"
    try:
        names = listing.read_text().split()
    except OSError:
        return  # not built: pure Python
    src = package.parent
    built = [src / name for name in names]
    # the group's shared library (src/<hash>__mypyc...so) has no source of its own
    sources = [so.with_name(so.name.split(".", 1)[0] + ".py") for so in built
               if so.parent != src]
    try:
        current = (max(p.stat().st_mtime for p in sources)
                   <= min(so.stat().st_mtime for so in built))
    except (OSError, ValueError):  # a file gone, an empty listing
        current = False
    if current:
        return
    try:
        for so in built:
            so.unlink(missing_ok=True)
        listing.unlink(missing_ok=True)
    except OSError as exc:
        print(f"pochta: the compiled modules are older than their sources and cannot be "
              f"removed ({exc}): run `make native` or `make pure`", file=sys.stderr)
        return
    print("pochta: compiled modules older than their sources were removed; running the "
          "sources (`make native` compiles them again)", file=sys.stderr)


drop_stale_native_build(Path(__file__).parent)
