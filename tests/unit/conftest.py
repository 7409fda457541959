"""Unit tests never see the developer's ROUTEGRAPH_* settings."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ROUTEGRAPH_"):
            monkeypatch.delenv(name)
