"""Checkpoints and resume on PostgreSQL: the checkpointer uses the trace store's own database.

Needs ROUTEGRAPH_TEST_POSTGRES_URL (``.ci/run`` sets it); skipped without it.
"""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from app.config import Settings
from app.service import RouteGraphService
from app.service.checkpointer import postgres_conninfo
from storage import maintenance
from storage.models import utcnow
from tests.postgres import postgres_url
from tests.unit.test_resume import QUESTION, assert_complete, failing_on_second_think

pytestmark = pytest.mark.integration


def checkpoint_threads(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.scalars(text("SELECT DISTINCT thread_id FROM checkpoints")))
    finally:
        engine.dispose()


def test_failed_run_resumes_from_postgres_checkpoints() -> None:
    url = postgres_url()
    pool = failing_on_second_think()
    with RouteGraphService.create(Settings(database_url=url), pool=pool, start_servers=False) as service:
        failed = service.ask(QUESTION)
        assert failed.status == "failed"
        assert checkpoint_threads(url) == [f"run-{failed.run_id}"]
        result = service.resume(failed.run_id)
        assert_complete(service, result, ["think", "route", "think"])
        assert checkpoint_threads(url) == []
        # An interrupted run's checkpoints go when it is pruned.
        pool_again = failing_on_second_think()
        with RouteGraphService.create(
            Settings(database_url=url), pool=pool_again, start_servers=False
        ) as other:
            second = other.ask(QUESTION)
            assert checkpoint_threads(url) == [f"run-{second.run_id}"]
            assert maintenance.prune(other.sessions, utcnow()) == 2
            assert checkpoint_threads(url) == []


def test_conninfo_keeps_credentials_and_options() -> None:
    conninfo = postgres_conninfo("postgresql+psycopg://u:p%40ss@db.example:6543/traces?sslmode=require")
    assert conninfo == "postgresql://u:p%40ss@db.example:6543/traces?sslmode=require"
