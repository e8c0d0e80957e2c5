"""The operator's documents stay true to Settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from smilingsteps.config import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("document", ["README.md", ".env.example"])
def test_every_setting_is_documented(document: str) -> None:
    text = (ROOT / document).read_text()
    missing = [name for name in Settings.model_fields if f"`{name}`" not in text and f"{name}=" not in text]
    assert missing == []
