"""docs/config.md is the output of `pochta config-reference`: regenerate it when a key
changes (`pochta config-reference > docs/config.md`)."""

from __future__ import annotations

from pathlib import Path

from pochta.config import reference


def test_docs_config_md_is_regenerated() -> None:
    doc = Path(__file__).resolve().parent.parent / "docs" / "config.md"
    assert doc.read_text(encoding="utf-8") == reference() + "\n", (
        "docs/config.md is stale: run `pochta config-reference > docs/config.md`")
