"""Schema migrations: upgrade from empty and from the previous revision, downgrade, refusals.

Every test takes ``store_url``: a SQLite file here; tests/integration/test_store_postgres.py runs the same
tests against PostgreSQL by overriding that fixture.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from storage import db
from storage.models import Base

OLD_TABLES = {"runs", "hops", "feedback", "model_responses", "training_runs"}
WHEN = datetime(2025, 5, 1, 12, 0, 0)


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'traces.db'}"


def open_bare(url: str) -> Engine:
    return db.make_engine(url, upgrade=False)


def tables(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(inspect(connection).get_table_names())


def columns(engine: Engine, table: str) -> set[str]:
    with engine.connect() as connection:
        return {column["name"] for column in inspect(connection).get_columns(table)}


def schema_diff(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def fill_initial_schema(engine: Engine) -> None:
    """Rows as the 0001 schema holds them: a run with two hops, feedback, a cached response."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO runs (question, graph, status, answer, total_cost, input_tokens, "
                "output_tokens, latency_s, created_at) VALUES ('Capital of France?', 'router-r1', 'ok', "
                "'Paris', 3.0, 30, 4, 1.5, :when)"
            ),
            {"when": WHEN},
        )
        for index in (0, 1):
            connection.execute(
                text(
                    'INSERT INTO hops (run_id, "index", node, input_tokens, output_tokens, cost, latency_s) '
                    "VALUES (1, :index, 'think', 15, 2, 1.5, 0.5)"
                ),
                {"index": index},
            )
        connection.execute(
            text(
                "INSERT INTO feedback (run_id, label, gold_answer, source, created_at) "
                "VALUES (1, 'gold', 'Paris', 'user', :when)"
            ),
            {"when": WHEN},
        )
        connection.execute(
            text(
                "INSERT INTO model_responses (key, model, prompt_hash, response_text, input_tokens, "
                "output_tokens, created_at) VALUES ('k', 'Small', 'h', 'Paris', 1, 1, :when)"
            ),
            {"when": WHEN},
        )


def assert_initial_rows_kept(engine: Engine) -> None:
    factory = db.session_factory(engine)
    run = db.get_run(factory, 1)
    assert run is not None
    assert (run.question, run.answer, run.total_cost, run.created_at) == (
        "Capital of France?",
        "Paris",
        3.0,
        WHEN,
    )
    assert [hop.index for hop in run.hops] == [0, 1]  # not cascade-deleted by a table copy
    assert [(f.label, f.gold_answer) for f in db.feedback_for(factory, 1)] == [("gold", "Paris")]
    with engine.connect() as connection:
        assert connection.execute(text("SELECT response_text FROM model_responses")).scalar() == "Paris"


# -- upgrades ----------------------------------------------------------------------------------------------
def test_upgrade_from_empty_reaches_head_matching_the_models(store_url: str) -> None:
    engine = db.make_engine(store_url)
    try:
        assert db.current_revision(engine) == db.head_revision()
        assert tables(engine) == set(Base.metadata.tables) | {"alembic_version"}
        assert schema_diff(engine) == []
        # Reopening an up-to-date store changes nothing.
        db.make_engine(store_url).dispose()
        assert db.current_revision(engine) == db.head_revision()
    finally:
        engine.dispose()


def test_upgrade_from_the_previous_revision_keeps_the_data(store_url: str) -> None:
    bare = open_bare(store_url)
    db.upgrade_store(bare, "0001")
    assert db.current_revision(bare) == "0001"
    assert tables(bare) == OLD_TABLES | {"alembic_version"}
    fill_initial_schema(bare)
    bare.dispose()

    engine = db.make_engine(store_url)
    try:
        assert db.current_revision(engine) == db.head_revision()
        assert {"graph_version", "router_checkpoint"} <= columns(engine, "runs")
        assert "rewards" in tables(engine)
        assert schema_diff(engine) == []
        assert_initial_rows_kept(engine)
        factory = db.session_factory(engine)
        run = db.get_run(factory, 1)
        assert run is not None and (run.graph_version, run.router_checkpoint) == (None, None)
        new = db.create_run(factory, question="q", graph="router-r1", graph_version="0.1.0")
        stored = db.get_run(factory, new)
        assert stored is not None and stored.graph_version == "0.1.0"
    finally:
        engine.dispose()


def test_upgrade_from_0002_adds_run_options(store_url: str) -> None:
    bare = open_bare(store_url)
    db.upgrade_store(bare, "0002")
    fill_initial_schema(bare)
    bare.dispose()
    engine = db.make_engine(store_url)
    try:
        assert "options" in columns(engine, "runs") and schema_diff(engine) == []
        factory = db.session_factory(engine)
        old = db.get_run(factory, 1)
        assert old is not None and old.options is None
        new = db.create_run(factory, question="q", graph="router-r1", options={"budget_usd": 0.5})
        stored = db.get_run(factory, new)
        assert stored is not None and stored.options == {"budget_usd": 0.5}
        db.downgrade_store(engine, "0002")
        assert "options" not in columns(engine, "runs")
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM hops")).scalar() == 2  # not cascaded
    finally:
        engine.dispose()


def test_unversioned_0002_schema_is_stamped_at_0002_and_upgraded(store_url: str) -> None:
    bare = open_bare(store_url)
    db.upgrade_store(bare, "0002")
    with bare.begin() as connection:
        connection.execute(text("DROP TABLE alembic_version"))
    bare.dispose()
    engine = db.make_engine(store_url)
    try:
        assert db.current_revision(engine) == db.head_revision() and schema_diff(engine) == []
    finally:
        engine.dispose()


def test_downgrade_to_the_previous_revision_and_to_base(store_url: str) -> None:
    engine = db.make_engine(store_url)
    try:
        fill_initial_schema(engine)
        db.downgrade_store(engine, "0001")
        assert db.current_revision(engine) == "0001"
        assert tables(engine) == OLD_TABLES | {"alembic_version"}
        assert not {"graph_version", "router_checkpoint"} & columns(engine, "runs")
        with engine.connect() as connection:
            hops = connection.execute(text("SELECT count(*) FROM hops")).scalar()
            feedback = connection.execute(text("SELECT count(*) FROM feedback")).scalar()
        assert (hops, feedback) == (2, 1)  # the runs table was rebuilt without cascading to its hops
        db.downgrade_store(engine, "base")
        assert db.current_revision(engine) is None
        assert tables(engine) == {"alembic_version"}
    finally:
        engine.dispose()
    # And back up again.
    engine = db.make_engine(store_url)
    try:
        assert db.current_revision(engine) == db.head_revision()
    finally:
        engine.dispose()


def test_database_from_a_newer_routegraph_is_refused(store_url: str) -> None:
    engine = db.make_engine(store_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    engine.dispose()
    with pytest.raises(db.StoreError) as caught:
        db.make_engine(store_url)
    message = str(caught.value)
    assert "9999_future" in message and db.head_revision() in message and "newer routegraph" in message
    name = store_url.split("///", 1)[1] if store_url.startswith("sqlite") else store_url.rsplit("/", 1)[1]
    assert name in message
    # Left as it was.
    bare = open_bare(store_url)
    try:
        assert db.current_revision(bare) == "9999_future"
    finally:
        bare.dispose()


def test_database_made_by_create_all_before_migrations_is_stamped_and_upgraded(store_url: str) -> None:
    bare = open_bare(store_url)
    db.upgrade_store(bare, "0001")
    with bare.begin() as connection:
        connection.execute(text("DROP TABLE alembic_version"))  # what the old create_all left behind
    fill_initial_schema(bare)
    assert db.current_revision(bare) is None
    bare.dispose()

    engine = db.make_engine(store_url)
    try:
        assert db.current_revision(engine) == db.head_revision()
        assert schema_diff(engine) == []
        assert_initial_rows_kept(engine)
    finally:
        engine.dispose()


def test_unversioned_current_schema_is_stamped_at_head(store_url: str) -> None:
    bare = open_bare(store_url)
    Base.metadata.create_all(bare)
    bare.dispose()
    engine = db.make_engine(store_url)
    try:
        assert db.current_revision(engine) == db.head_revision()
    finally:
        engine.dispose()


def test_unversioned_foreign_tables_are_refused(store_url: str) -> None:
    bare = open_bare(store_url)
    with bare.begin() as connection:
        connection.execute(text("CREATE TABLE inventory (id INTEGER PRIMARY KEY)"))
    bare.dispose()
    with pytest.raises(db.StoreError, match="match no routegraph schema"):
        db.make_engine(store_url)


def test_migrations_need_no_alembic_ini_in_the_working_directory(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    engine = db.make_engine(store_url)
    engine.dispose()
    assert list(elsewhere.iterdir()) == []
    assert (db.MIGRATIONS_DIR / "env.py").is_file()


def test_in_memory_store_is_at_head() -> None:
    engine = db.make_engine("sqlite://")
    try:
        assert db.current_revision(engine) == db.head_revision()
    finally:
        engine.dispose()
