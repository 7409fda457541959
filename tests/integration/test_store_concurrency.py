"""Eight processes writing runs and hops at once to one store, through ``storage.db``'s functions.

Each process opens the store itself (so the first open's migration races too), writes 50 runs of 5 hops,
and finishes each run. Every row must arrive, every run's totals must equal its hops' sums, and no
"database is locked" may surface. SQLite always; PostgreSQL when ROUTEGRAPH_TEST_POSTGRES_URL is set.
"""

from __future__ import annotations

import multiprocessing
import traceback
from pathlib import Path

import pytest
from sqlalchemy import func, select

from storage import db
from storage.models import Hop, Run
from tests.postgres import postgres_url

pytestmark = pytest.mark.integration

PROCESSES, RUNS, HOPS = 8, 50, 5


def write_runs(url: str, worker: int, start: multiprocessing.synchronize.Event) -> str | None:
    """One writer process: returns None, or the error it met (a traceback) for the parent to show."""
    try:
        start.wait(60)
        engine = db.make_engine(url)
        factory = db.session_factory(engine)
        for number in range(RUNS):
            run_id = db.create_run(
                factory, question=f"w{worker} q{number}", graph="router-r1", owner=f"test:{worker}"
            )
            for index in range(HOPS):
                db.add_hop(
                    factory,
                    run_id,
                    index,
                    node="route",
                    model=f"M{index}",
                    cost=0.001 * (index + 1),
                    input_tokens=10 + index,
                    output_tokens=worker + 1,
                )
            db.finish_run(factory, run_id, status="ok", answer=f"a{number}", error=None)
        engine.dispose()
        return None
    except Exception:
        return traceback.format_exc()


def hammer(url: str) -> None:
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        start = manager.Event()
        with context.Pool(PROCESSES) as pool:
            pending = [pool.apply_async(write_runs, (url, worker, start)) for worker in range(PROCESSES)]
            start.set()
            errors = [error for error in (p.get(timeout=300) for p in pending) if error]
    assert errors == [], "\n".join(errors)
    assert not any("locked" in error for error in errors)

    engine = db.make_engine(url)
    try:
        factory = db.session_factory(engine)
        with factory() as session:
            assert session.scalar(select(func.count(Run.id))) == PROCESSES * RUNS
            assert session.scalar(select(func.count(Hop.id))) == PROCESSES * RUNS * HOPS
            assert session.scalar(select(func.count(Run.id)).where(Run.status != "ok")) == 0
            sums = session.execute(
                select(
                    Run.id,
                    Run.total_cost,
                    Run.input_tokens,
                    Run.output_tokens,
                    func.sum(Hop.cost),
                    func.sum(Hop.input_tokens),
                    func.sum(Hop.output_tokens),
                    func.count(Hop.id),
                )
                .join(Hop, Hop.run_id == Run.id)
                .group_by(Run.id)
            ).all()
        assert len(sums) == PROCESSES * RUNS
        for run_id, cost, tokens_in, tokens_out, hop_cost, hop_in, hop_out, hops in sums:
            assert hops == HOPS, run_id
            assert cost == pytest.approx(hop_cost), run_id
            assert (tokens_in, tokens_out) == (hop_in, hop_out), run_id
    finally:
        engine.dispose()


@pytest.mark.timeout(600)
def test_eight_writer_processes_on_one_sqlite_file(tmp_path: Path) -> None:
    hammer(f"sqlite:///{tmp_path / 'traces.db'}")


@pytest.mark.timeout(600)
def test_eight_writer_processes_on_postgres() -> None:
    hammer(postgres_url())
