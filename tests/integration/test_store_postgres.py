"""The trace store on PostgreSQL: the storage round trips and the migration tests, against a real server.

Needs ROUTEGRAPH_TEST_POSTGRES_URL (``postgresql+psycopg://...``; ``.ci/run`` starts a server and sets
it); without it every test here is skipped with that reason. The test database is emptied before each test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from storage import db
from tests.postgres import postgres_url

# Collected here a second time, with ``factory`` / ``store_url`` below pointing them at PostgreSQL.
from tests.unit.test_migrations import (  # noqa: F401
    test_database_from_a_newer_routegraph_is_refused,
    test_database_made_by_create_all_before_migrations_is_stamped_and_upgraded,
    test_downgrade_to_the_previous_revision_and_to_base,
    test_unversioned_0002_schema_is_stamped_at_0002_and_upgraded,
    test_unversioned_current_schema_is_stamped_at_head,
    test_unversioned_foreign_tables_are_refused,
    test_upgrade_from_0002_adds_run_options,
    test_upgrade_from_empty_reaches_head_matching_the_models,
    test_upgrade_from_the_previous_revision_keeps_the_data,
)
from tests.unit.test_storage import (  # noqa: F401
    new_run,
    test_failed_run_keeps_its_error,
    test_feedback_for_a_missing_run_is_refused,
    test_feedback_round_trip_and_latest,
    test_get_run_unknown_id,
    test_hops_come_back_ordered_by_index,
    test_list_runs_filters,
    test_list_runs_filters_by_cost_model_and_until,
    test_mark_orphaned,
    test_model_usage_sums_hops_per_model,
    test_round_trip,
    test_run_model_defaults,
    test_run_totals_equal_the_sum_of_hops,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def store_url() -> str:
    return postgres_url()


@pytest.fixture
def factory(store_url: str) -> Iterator[sessionmaker[Session]]:
    engine = db.make_engine(store_url)
    try:
        yield db.session_factory(engine)
    finally:
        engine.dispose()


def test_hop_index_is_unique_per_run_on_postgres(factory: sessionmaker[Session]) -> None:
    run_id = new_run(factory)
    db.add_hop(factory, run_id, 0, node="think")
    with pytest.raises(IntegrityError, match="ix_hops_run_index"):
        db.add_hop(factory, run_id, 0, node="think")


def test_store_error_names_the_server_without_its_password() -> None:
    url = "postgresql+psycopg://routegraph:s3cret@127.0.0.1:1/nowhere"
    with pytest.raises(db.StoreError) as caught:
        db.make_engine(url)
    assert "127.0.0.1:1/nowhere" in str(caught.value) and "s3cret" not in str(caught.value)
