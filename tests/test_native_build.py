"""`make native` (mypyc): a compiled module older than its source is never imported."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import pochta
from pochta import drop_stale_native_build

SO = ".cpython-311-x86_64-linux-gnu.so"


def _tree(tmp_path: Path) -> tuple[Path, list[Path], list[Path]]:
    """A src/ tree with two compiled modules and the group's shared library, all built
    (mtime 2000) after their sources (mtime 1000)."""
    package = tmp_path / "pochta"
    (package / "server").mkdir(parents=True)
    sources = [package / "a.py", package / "server" / "b.py"]
    built = [package / f"a{SO}", package / "server" / f"b{SO}", tmp_path / f"0ab1__mypyc{SO}"]
    for f in sources + built:
        f.write_text("x")
    for f in sources:
        os.utime(f, (1000, 1000))
    for f in built:
        os.utime(f, (2000, 2000))
    (package / ".native").write_text(
        "\n".join(str(f.relative_to(tmp_path)) for f in built) + "\n")
    return package, sources, built


def test_a_current_build_stays(tmp_path: Path) -> None:
    package, _, built = _tree(tmp_path)
    drop_stale_native_build(package)
    assert all(f.exists() for f in built)
    assert (package / ".native").exists()


@pytest.mark.parametrize("edited", [0, 1])
def test_an_edited_source_removes_the_whole_build(
    tmp_path: Path, edited: int, capsys: pytest.CaptureFixture[str]
) -> None:
    package, sources, built = _tree(tmp_path)
    os.utime(sources[edited], (3000, 3000))  # edited (or checked out) after the build
    drop_stale_native_build(package)
    assert not any(f.exists() for f in built)  # the others call it natively: all go
    assert not (package / ".native").exists()
    assert all(f.exists() for f in sources)
    assert "make native" in capsys.readouterr().err


def test_a_missing_module_removes_the_build(tmp_path: Path) -> None:
    package, _, built = _tree(tmp_path)
    built[1].unlink()
    drop_stale_native_build(package)
    assert not any(f.exists() for f in built)


def test_no_listing_means_pure_python(tmp_path: Path) -> None:
    package, _, built = _tree(tmp_path)
    (package / ".native").unlink()
    drop_stale_native_build(package)
    assert all(f.exists() for f in built)  # not ours to judge: nothing listed


def test_the_listed_build_is_what_runs() -> None:
    """With `make native`'s listing (make test builds it), the IMAP modules imported are
    the compiled ones; without it (no compiler), their sources."""
    listing = Path(pochta.__file__).parent / ".native"
    from pochta.proto.imap import fetch
    from pochta.server import imap_message

    suffix = ".so" if listing.exists() else ".py"
    for module in (fetch, imap_message):
        assert module.__file__ is not None and module.__file__.endswith(suffix)
