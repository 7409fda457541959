"""Fixtures that start the real embedded llama.cpp servers (bundled SmolLM2-135M and Gemma-3-270M)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import PROJECT_ROOT, Settings
from app.pool import Pool, load_pool
from app.service import RouteGraphService


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # No request_timeout_s: each pool entry waits its backend's default (llama.cpp: 300 s), so a model
    # server restarting beside a call on a loaded 2-core machine does not time the router out.
    return Settings(database_url=f"sqlite:///{tmp_path / 'traces.db'}")


@pytest.fixture(scope="session")
def local_pool_file() -> Path:
    return PROJECT_ROOT / "pools" / "tiny.yaml"


@pytest.fixture
def split_pool(local_pool_file: Path) -> Pool:
    """SmolLM2 routes, Gemma answers: two servers, so either can be killed alone."""
    base = load_pool(local_pool_file)
    return Pool(base.router, [base.get("Gemma-3-270M")], source=local_pool_file)


@pytest.fixture
def local_service(settings: Settings, local_pool_file: Path) -> Iterator[RouteGraphService]:
    service = RouteGraphService.create(settings, pool=load_pool(local_pool_file))
    try:
        yield service
    finally:
        service.close()
