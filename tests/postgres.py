"""The test PostgreSQL database: ROUTEGRAPH_TEST_POSTGRES_URL (``.ci/run`` starts one and exports it)."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import create_engine, text

ENV = "ROUTEGRAPH_TEST_POSTGRES_URL"


def postgres_url() -> str:
    """The test database's URL, emptied (public schema dropped and re-created); skips when unset."""
    url = os.environ.get(ENV)
    if not url:
        pytest.skip(f"{ENV} is not set: no PostgreSQL server to test against (.ci/run starts one)")
    reset(url)
    return url


def reset(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()
