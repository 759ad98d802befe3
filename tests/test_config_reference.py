"""docs/config.md is generated from the config classes: a test fails when it is stale."""

from __future__ import annotations

from pathlib import Path

from pochta.config import reference


def test_docs_config_md_is_the_generated_reference() -> None:
    doc = Path(__file__).parents[1] / "docs" / "config.md"
    assert doc.read_text(encoding="utf-8") == reference() + "\n", (
        "docs/config.md is stale: regenerate it with `pochta config-reference > docs/config.md`"
    )
