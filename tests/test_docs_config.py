"""The documentation's configuration examples stay true: every ```toml block in README.md
and docs/*.md loads with the real config loader, every table named in docs/config.md is
one the loader knows, and docs/config.md is what ``pochta config-reference`` prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pochta.config import ConfigError, load, reference

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```toml\n(.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for i, m in enumerate(BLOCK.finditer(doc.read_text(encoding="utf-8"))):
            found.append((f"{doc.relative_to(ROOT)}#{i}", m.group(1)))
    return found


def _load(tmp_path: Path, text: str) -> None:
    if not re.search(r"^hostname\s*=", text, re.M):
        text = 'hostname = "mail.example.test"\n' + text
    path = tmp_path / "pochta.toml"
    path.write_text(text, encoding="utf-8")
    load(path)


def test_docs_have_toml_examples() -> None:
    names = [name for name, _ in _blocks()]
    assert any(n.startswith("docs/outbound.md") for n in names), names


@pytest.mark.parametrize(("name", "text"), _blocks(), ids=[n for n, _ in _blocks()])
def test_toml_example_loads(name: str, text: str, tmp_path: Path) -> None:
    _load(tmp_path, text)


def test_outbound_tls_policy_example_is_the_real_key(tmp_path: Path) -> None:
    text = (ROOT / "docs/outbound.md").read_text(encoding="utf-8")
    assert "[[queue.tls_policies]]" in text
    with pytest.raises(ConfigError, match="tls_policies: unknown setting"):
        _load(tmp_path, '[[tls_policies]]\ndomain = "bank.example"\nlevel = "verify"\n')


def test_config_reference_is_current_and_names_real_tables(tmp_path: Path) -> None:
    doc = (ROOT / "docs/config.md").read_text(encoding="utf-8")
    assert doc.strip() == reference().strip(), "regenerate: pochta config-reference"
    tables = re.findall(r"^## (\[\[?[a-z_.]+\]\]?)$", doc, re.M)
    assert "[[queue.tls_policies]]" in tables
    for table in tables:
        try:
            _load(tmp_path, table + "\n")
        except ConfigError as exc:  # a required key may be missing, never the table
            assert "unknown setting" not in str(exc), (table, exc)


def test_docs_and_bench_name_no_machine_paths() -> None:
    """The shared benchmark folder is ``../shared`` beside the checkout; docs and bench
    help texts say so instead of naming one machine's absolute paths."""
    files = [*DOCS, *sorted((ROOT / "bench").iterdir())]
    bad = [f"{f.relative_to(ROOT)}:{n}" for f in files if f.is_file()
           for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1)
           if re.search(r"/work/(shared|main|wt-)", line)]
    assert not bad, bad
