"""The trace store's reads and writes: round trips, totals, filters, feedback and orphaned runs (its file:
test_storage_files.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from storage import db
from storage.models import Run

Factory = sessionmaker[Session]


def file_url(tmp_path: Path, name: str = "traces.db") -> str:
    return f"sqlite:///{tmp_path / name}"


@pytest.fixture(params=["file", "memory"])
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    """A fresh, empty store: a SQLite file under tmp_path, or an in-memory database."""
    url = file_url(tmp_path) if request.param == "file" else "sqlite://"
    engine = db.make_engine(url)
    request.addfinalizer(engine.dispose)
    return db.session_factory(engine)


def new_run(factory: Factory, **fields: Any) -> int:
    values: dict[str, Any] = {"question": "What is the capital of France?", "graph": "router-r1"}
    values.update(fields)
    return db.create_run(factory, **values)


HOPS: list[dict[str, Any]] = [
    {"node": "think", "model": "Router", "router_text": "<search> Small: q </search>", "cost": 1.5e-6},
    {
        "node": "route",
        "model": "Small",
        "sub_query": "q",
        "response": "Paris",
        "input_tokens": 30,
        "output_tokens": 2,
        "cost": 3.4e-6,
        "latency_s": 0.25,
        "detail": {"picked": "Small"},
    },
    {"node": "think", "model": "Router", "input_tokens": 70, "output_tokens": 9, "cost": 4.4e-6},
]


# -- writes and reads --------------------------------------------------------------------------------------
def test_round_trip(factory: Factory) -> None:
    snapshot = {"router": {"name": "Router", "price_in": 0.05}, "models": [{"name": "Small"}]}
    run_id = new_run(factory, router_model="Router", pool_snapshot=snapshot, owner="host:1")
    for index, hop in enumerate(HOPS):
        db.add_hop(factory, run_id, index, **hop)

    running = db.get_run(factory, run_id)
    assert running is not None
    assert (running.status, running.answer, running.finished_at) == ("running", None, None)

    db.finish_run(factory, run_id, status="ok", answer="Paris", error=None)
    run = db.get_run(factory, run_id)
    assert run is not None
    assert (run.id, run.question, run.graph) == (run_id, "What is the capital of France?", "router-r1")
    assert (run.status, run.answer, run.error) == ("ok", "Paris", None)
    assert run.router_model == "Router" and run.owner == "host:1"
    assert run.pool_snapshot == snapshot
    assert run.finished_at is not None and run.finished_at >= run.created_at
    assert run.latency_s == pytest.approx((run.finished_at - run.created_at).total_seconds())
    assert [h.index for h in run.hops] == [0, 1, 2]
    route = run.hops[1]
    assert (route.node, route.model, route.sub_query, route.response) == ("route", "Small", "q", "Paris")
    assert (route.input_tokens, route.output_tokens, route.latency_s) == (30, 2, 0.25)
    assert route.detail == {"picked": "Small"}
    assert run.hops[0].router_text == "<search> Small: q </search>"
    assert run.hops[0].input_tokens == 0 and run.hops[0].detail is None  # column defaults


def test_failed_run_keeps_its_error(factory: Factory) -> None:
    run_id = new_run(factory)
    db.add_hop(factory, run_id, 0, node="think", model="Router", error="unclosed <search> tag")
    db.finish_run(factory, run_id, status="failed", answer="", error="EndpointError: down")
    run = db.get_run(factory, run_id)
    assert run is not None
    assert (run.status, run.answer, run.error) == ("failed", "", "EndpointError: down")
    assert run.hops[0].error == "unclosed <search> tag"


def test_run_totals_equal_the_sum_of_hops(factory: Factory) -> None:
    run_id = new_run(factory)
    assert db.hop_sums(factory, run_id) == (0.0, 0, 0)
    for index, hop in enumerate(HOPS):
        db.add_hop(factory, run_id, index, **hop)
        run = db.get_run(factory, run_id)
        assert run is not None
        assert (run.total_cost, run.input_tokens, run.output_tokens) == pytest.approx(
            db.hop_sums(factory, run_id)
        )
    cost, tokens_in, tokens_out = db.hop_sums(factory, run_id)
    assert cost == pytest.approx(sum(h.get("cost", 0.0) for h in HOPS))
    assert (tokens_in, tokens_out) == (100, 11)
    # Another run's hops count for that run only.
    other = new_run(factory)
    db.add_hop(factory, other, 0, node="think", model="Router", input_tokens=5, output_tokens=1, cost=1.0)
    assert db.hop_sums(factory, run_id) == (pytest.approx(cost), 100, 11)
    assert db.hop_sums(factory, other) == (1.0, 5, 1)


def test_hops_come_back_ordered_by_index(factory: Factory) -> None:
    run_id = new_run(factory)
    for index in (2, 0, 3, 1):
        db.add_hop(factory, run_id, index, node=f"n{index}")
    run = db.get_run(factory, run_id)
    assert run is not None
    assert [(h.index, h.node) for h in run.hops] == [(0, "n0"), (1, "n1"), (2, "n2"), (3, "n3")]


def test_hop_index_is_unique_per_run(factory: Factory) -> None:
    run_id = new_run(factory)
    db.add_hop(factory, run_id, 0, node="think")
    with pytest.raises(IntegrityError, match="UNIQUE"):
        db.add_hop(factory, run_id, 0, node="think")
    db.add_hop(factory, new_run(factory), 0, node="think")  # the same index in another run is fine


def test_get_run_unknown_id(factory: Factory) -> None:
    assert db.get_run(factory, 12345) is None
    new_run(factory)
    assert db.get_run(factory, 12345) is None


def test_list_runs_filters(factory: Factory) -> None:
    now = datetime(2025, 6, 1, 12, 0, 0)
    ids = {
        "old-ok": new_run(factory, graph="router-r1", status="ok", created_at=now - timedelta(days=3)),
        "failed": new_run(factory, graph="router-r1", status="failed", created_at=now - timedelta(hours=1)),
        "r2": new_run(factory, graph="r2-reasoner", status="ok", created_at=now - timedelta(minutes=5)),
        "running": new_run(factory, graph="router-r1", created_at=now),
    }

    def listed(**filters: Any) -> list[int]:
        return [run.id for run in db.list_runs(factory, **filters)]

    newest_first = [ids["running"], ids["r2"], ids["failed"], ids["old-ok"]]
    assert listed() == newest_first
    assert listed(limit=2) == newest_first[:2]
    assert listed(graph="router-r1") == [ids["running"], ids["failed"], ids["old-ok"]]
    assert listed(graph="r2-reasoner") == [ids["r2"]]
    assert listed(graph="nope") == []
    assert listed(status="ok") == [ids["r2"], ids["old-ok"]]
    assert listed(status="running") == [ids["running"]]
    assert listed(since=now - timedelta(hours=2)) == [ids["running"], ids["r2"], ids["failed"]]
    assert listed(since=now - timedelta(minutes=5)) == [ids["running"], ids["r2"]]  # inclusive
    assert listed(graph="router-r1", status="ok") == [ids["old-ok"]]
    assert listed(graph="router-r1", since=now - timedelta(days=1), limit=1) == [ids["running"]]
    # Runs come back usable after their session closed (no lazy-load errors on plain columns).
    run = db.list_runs(factory, status="failed")[0]
    assert (run.question, run.graph, run.status) == ("What is the capital of France?", "router-r1", "failed")


# -- orphaned runs -----------------------------------------------------------------------------------------
def alive(*pids: int) -> Callable[[int], bool]:
    def is_alive(pid: int) -> bool:
        asked.append(pid)
        return pid in pids

    asked: list[int] = []
    is_alive.asked = asked  # type: ignore[attr-defined]
    return is_alive


def test_mark_orphaned(factory: Factory) -> None:
    dead = new_run(factory, owner="here:101")
    db.add_hop(factory, dead, 0, node="think", model="Router", cost=2e-6, input_tokens=10)
    live = new_run(factory, owner="here:202")
    elsewhere = new_run(factory, owner="there:101")
    finished = new_run(factory, owner="here:101")
    db.finish_run(factory, finished, status="ok", answer="Paris", error=None)
    is_alive = alive(202)

    assert db.mark_orphaned(factory, "here", is_alive) == 1

    runs = {run.id: run for run in db.list_runs(factory)}
    assert runs[dead].status == "failed"
    assert "interrupted" in str(runs[dead].error)
    assert runs[dead].finished_at is not None
    assert (runs[live].status, runs[live].error) == ("running", None)
    assert (runs[elsewhere].status, runs[elsewhere].error) == ("running", None)
    assert (runs[finished].status, runs[finished].answer) == ("ok", "Paris")
    assert sorted(is_alive.asked) == [101, 202]  # type: ignore[attr-defined]
    # The partial trace stays readable with its totals.
    run = db.get_run(factory, dead)
    assert run is not None and [h.node for h in run.hops] == ["think"]
    assert (run.total_cost, run.input_tokens) == (2e-6, 10)
    # A second pass finds nothing new.
    assert db.mark_orphaned(factory, "here", alive(202)) == 0


def test_mark_orphaned_keeps_an_existing_error(factory: Factory) -> None:
    run_id = new_run(factory, owner="here:7", error="budget exceeded")
    assert db.mark_orphaned(factory, "here", alive()) == 1
    run = db.get_run(factory, run_id)
    assert run is not None and (run.status, run.error) == ("failed", "budget exceeded")


@pytest.mark.parametrize("other_host", ["here-2", "her", "hXre_box", "xhere_box"])
def test_mark_orphaned_matches_the_host_exactly(factory: Factory, other_host: str) -> None:
    # Host names are compared literally: no prefix matches, and '_' or '%' are no wildcards.
    host = "here" if "_" not in other_host else "h_re_box"
    other = new_run(factory, owner=f"{other_host}:5")
    mine = new_run(factory, owner=f"{host}:5")
    assert db.mark_orphaned(factory, host, alive()) == 1
    statuses = {run.id: run.status for run in db.list_runs(factory)}
    assert statuses == {other: "running", mine: "failed"}


def test_run_model_defaults(factory: Factory) -> None:
    run_id = new_run(factory)
    with factory() as session:
        run = session.get_one(Run, run_id)
        assert (run.status, run.total_cost, run.input_tokens, run.output_tokens) == ("running", 0.0, 0, 0)
        assert run.created_at is not None and run.created_at.tzinfo is None


# -- feedback and aggregates -----------------------------------------------------------------------------
def test_feedback_round_trip_and_latest(factory: Factory) -> None:
    first, second = new_run(factory), new_run(factory)
    db.add_feedback(factory, first, "incorrect")
    db.add_feedback(factory, first, "gold", gold_answer="  Paris ")
    db.add_feedback(factory, second, "correct")
    stored = db.feedback_for(factory, first)
    assert [(f.label, f.gold_answer, f.source, f.run_id) for f in stored] == [
        ("incorrect", None, "user", first),
        ("gold", "Paris", "user", first),
    ]
    assert all(f.created_at is not None for f in stored)
    latest = db.latest_feedback(factory)
    assert {run_id: f.label for run_id, f in latest.items()} == {first: "gold", second: "correct"}
    assert db.feedback_for(factory, 999) == []
    assert [db.has_gold_answer(factory, r) for r in (first, second, 999)] == [True, False, False]


@pytest.mark.parametrize(
    ("label", "gold", "message"),
    [("maybe", None, "unknown feedback label"), ("gold", None, "gold answer"), ("gold", "  ", "gold answer")],
)
def test_bad_feedback_is_refused(factory: Factory, label: str, gold: str | None, message: str) -> None:
    run_id = new_run(factory)
    with pytest.raises(ValueError, match=message):
        db.add_feedback(factory, run_id, label, gold_answer=gold)
    assert db.feedback_for(factory, run_id) == []


def test_feedback_for_a_missing_run_is_refused(factory: Factory) -> None:
    with pytest.raises(ValueError, match="no run 42"):
        db.add_feedback(factory, 42, "correct")


def test_model_usage_sums_hops_per_model(factory: Factory) -> None:
    assert db.model_usage(factory) == []
    for _ in range(2):
        run_id = new_run(factory)
        for index, hop in enumerate(HOPS):
            db.add_hop(factory, run_id, index, **hop)
        db.add_hop(factory, run_id, len(HOPS), node="answer", cost=0.0)  # no model: left out
    usage = {row["model"]: row for row in db.model_usage(factory)}
    assert set(usage) == {"Router", "Small"}
    assert usage["Router"]["calls"] == 4 and usage["Small"]["calls"] == 2
    assert usage["Router"]["cost"] == pytest.approx(2 * (1.5e-6 + 4.4e-6))
    assert (usage["Small"]["input_tokens"], usage["Small"]["output_tokens"]) == (60, 4)
    assert (usage["Router"]["input_tokens"], usage["Router"]["output_tokens"]) == (140, 18)


def test_list_runs_filters_by_cost_model_and_until(factory: Factory) -> None:
    cheap, dear = new_run(factory), new_run(factory)
    db.add_hop(factory, cheap, 0, node="think", model="Router", cost=1e-6)
    db.add_hop(factory, dear, 0, node="route", model="Big", cost=1e-3)

    def ids(**filters: Any) -> list[int]:
        return [run.id for run in db.list_runs(factory, **filters)]

    assert ids(min_cost=1e-4) == [dear]
    assert ids(max_cost=1e-4) == [cheap]
    assert ids(model="Big") == [dear] and ids(model="Router") == [cheap] and ids(model="None") == []
    assert ids(until=datetime.now() - timedelta(days=1)) == []
    assert ids(until=datetime.now() + timedelta(days=1)) == [dear, cheap]
