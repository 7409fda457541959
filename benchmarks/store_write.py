"""Trace-store write throughput: hops/s for one writer and for 8 writer processes, and the time one
``add_hop`` adds to a graph step. SQLite file always; PostgreSQL when ROUTEGRAPH_TEST_POSTGRES_URL is set.

    .venv/bin/python benchmarks/store_write.py            # writes benchmarks/results/store.md
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage import db

RUNS, HOPS, WRITERS = 100, 5, 8
HOP = {
    "node": "route",
    "model": "Small",
    "sub_query": "q",
    "response": "Paris " * 20,
    "cost": 1e-6,
    "input_tokens": 30,
    "output_tokens": 5,
    "latency_s": 0.2,
    "detail": {"picked": "Small"},
}


def write(url: str, runs: int) -> list[float]:
    """Write ``runs`` runs of HOPS hops; the seconds each add_hop took."""
    engine = db.make_engine(url)
    factory = db.session_factory(engine)
    latencies = []
    for number in range(runs):
        run_id = db.create_run(factory, question=f"q{number}", graph="router-r1")
        for index in range(HOPS):
            started = time.perf_counter()
            db.add_hop(factory, run_id, index, **HOP)
            latencies.append(time.perf_counter() - started)
        db.finish_run(factory, run_id, status="ok", answer="Paris", error=None)
    engine.dispose()
    return latencies


def single(url: str) -> tuple[float, list[float]]:
    db.make_engine(url).dispose()
    started = time.perf_counter()
    latencies = write(url, RUNS)
    return len(latencies) / (time.perf_counter() - started), latencies


def many(url: str) -> float:
    db.make_engine(url).dispose()
    context = multiprocessing.get_context("spawn")
    with context.Pool(WRITERS) as pool:
        pool.apply(os.getpid)  # workers up before the clock starts
        started = time.perf_counter()
        results = pool.starmap(write, [(url, RUNS // 2)] * WRITERS)
        elapsed = time.perf_counter() - started
    return sum(len(r) for r in results) / elapsed


def reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def main() -> None:
    targets = []
    with tempfile.TemporaryDirectory() as tmp:
        targets.append(
            ("SQLite (WAL, synchronous=NORMAL)", f"sqlite:///{tmp}/one.db", f"sqlite:///{tmp}/many.db")
        )
        pg = os.environ.get("ROUTEGRAPH_TEST_POSTGRES_URL")
        lines = [
            "# Trace-store writes",
            "",
            f"`benchmarks/store_write.py` on {platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}. Each hop is one `storage.db.add_hop` call: its own write "
            "transaction (INSERT of the hop + in-place `UPDATE runs SET total = total + x`), committed.",
            f"Single writer: {RUNS} runs × {HOPS} hops. {WRITERS} writers: {WRITERS} spawned processes × "
            f"{RUNS // 2} runs × {HOPS} hops on one database. Targets: < 2 ms added per hop, ≥ 1,000 hops/s "
            "for one SQLite writer.",
            "",
            "| store | 1 writer hops/s | add_hop median ms | add_hop p99 ms | 8 writers hops/s (total) |",
            "|---|---:|---:|---:|---:|",
        ]
        if pg:
            targets.append(("PostgreSQL 15 (local, psycopg 3)", pg, pg))
        for name, one, eight in targets:
            if one.startswith("postgresql"):
                reset_postgres(one)
            rate, latencies = single(one)
            if eight.startswith("postgresql"):
                reset_postgres(eight)
            total = many(eight)
            ordered = sorted(latencies)
            p99 = ordered[int(len(ordered) * 0.99) - 1]
            row = (
                f"| {name} | {rate:,.0f} | {statistics.median(latencies) * 1e3:.2f} | {p99 * 1e3:.2f} "
                f"| {total:,.0f} |"
            )
            print(row, flush=True)
            lines.append(row)
    if not pg:
        lines.append("")
        lines.append("PostgreSQL: not measured (ROUTEGRAPH_TEST_POSTGRES_URL unset).")
    out = Path(__file__).resolve().parent / "results" / "store.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
