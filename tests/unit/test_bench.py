"""Recorded-outcome pool backend, routers and leaderboard on a slice of the shipped routing outcomes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from app.bench import leaderboard, run
from app.bench.data import Query, load_queries, price, score_of, split
from app.bench.embeddings import Embeddings
from app.bench.routers import LLMRouter
from app.pool import EndpointError, ModelEntry, Pool, PoolError, load_pool
from tests.fakes import make_fake_pool

DATA = Path(__file__).resolve().parents[2] / "data/routing_outcomes/train.jsonl"
POOL = Path(__file__).resolve().parents[2] / "pools/recorded_9llm.yaml"


@pytest.fixture(scope="module")
def pool() -> Pool:
    return load_pool(POOL)


@pytest.fixture(scope="module")
def queries() -> list[Query]:
    return load_queries(DATA)


def test_recorded_score_and_cost(pool: Pool, queries: list[Query]) -> None:
    query = queries[0]
    entry = pool.get("llama-3.1-8b-instruct")
    result = asyncio.run(pool.ask(entry.name, query.question))
    assert result.score == query.scores["llama-3.1-8b-instruct"]
    assert result.text == f"[recorded outcome of {entry.name}: score {result.score:g}]"
    tokens_in = -(-len(query.question) // 4)
    assert (result.input_tokens, result.output_tokens) == (tokens_in, 256)
    assert result.cost == pytest.approx((tokens_in * 0.2 + 256 * 0.2) / 1e6)


def test_unknown_query_is_an_error_naming_model_and_file(pool: Pool) -> None:
    with pytest.raises(EndpointError, match=r"gemma-2-9b-it.*train\.jsonl"):
        asyncio.run(pool.ask("gemma-2-9b-it", "a question nobody recorded"))


def test_recorded_entry_needs_outcomes() -> None:
    with pytest.raises(ValueError, match="outcomes"):
        ModelEntry(name="x", backend="recorded", price_in=1, price_out=1, descriptor="d")


def test_missing_outcome_file_is_a_pool_error(tmp_path: Path) -> None:
    entry = ModelEntry(
        name="x",
        backend="recorded",
        outcomes=str(tmp_path / "no.jsonl"),
        price_in=1,
        price_out=1,
        descriptor="d",
    )
    pool = Pool(entry, [entry])
    with pytest.raises(PoolError, match="does not exist"):
        asyncio.run(pool.ask("x", "q"))


def test_pool_mixing_recorded_and_live_models(queries: list[Query]) -> None:
    fake = make_fake_pool({"Small-LM": ["Paris"]})
    recorded = ModelEntry(
        name="gemma-2-9b-it",
        backend="recorded",
        outcomes=str(DATA),
        price_in=0.1,
        price_out=0.1,
        descriptor="d",
    )
    mixed = Pool(fake.router, [*fake.models, recorded], client_factory=fake.client_factory)
    live = asyncio.run(mixed.ask("Small-LM", queries[3].question))
    replayed = asyncio.run(mixed.ask("gemma-2-9b-it", queries[3].question))
    assert (live.text, live.score) == ("Paris", None)
    assert replayed.score == queries[3].scores["gemma-2-9b-it"]


def test_split_is_deterministic_and_stratified(queries: list[Query]) -> None:
    train, dev = split(queries)
    assert split(queries)[1] == dev
    assert not {q.id for q in train} & {q.id for q in dev}
    assert len(dev) == pytest.approx(0.2 * len(queries), abs=14)
    assert {q.task for q in dev} == {q.task for q in queries}


def _scripted_route(messages: list) -> str:
    return "<think>cheap and general</think>\n<search> gemma-2-9b-it: answer this </search>"


def test_every_router_runs_on_a_slice(pool: Pool, queries: list[Query]) -> None:
    train, dev = split(queries)
    head = dev[:50]
    # Hashed n-grams stand in for MiniLM here: the same routers, no model to load (MiniLM: test_embeddings).
    routers = run.build(run.parse_routers("all"), pool, run.Extras(embeddings=Embeddings("hashing")))
    # The zero-shot LLM router takes any Pool: here a scripted router model over the recorded candidates.
    scripted = make_fake_pool({"Fake-Router": [_scripted_route] * 50 + ["no action"] * 50})
    routed = Pool(scripted.router, pool.models, client_factory=scripted.client_factory)
    routers = [LLMRouter(routed) if isinstance(r, LLMRouter) else r for r in routers]
    for r in routers:
        r.fit(train[:400], pool.models)
    picks: dict[str, list[str]] = {}
    for r in routers:
        picks[r.label] = [asyncio.run(r.achoose(q, pool.models)) for q in head]
        assert set(picks[r.label]) <= set(pool.names)
    assert set(picks["llm-zero-shot"]) == {"gemma-2-9b-it"}
    llm = next(r for r in routers if isinstance(r, LLMRouter))
    assert asyncio.run(llm.achoose(head[0], pool.models)) == "gemma-2-9b-it"  # malformed → cheapest
    assert llm.malformed == 1
    by_name = {m.name: m for m in pool.models}
    for i, q in enumerate(head):
        best = score_of(q, by_name[picks["oracle"][i]])
        assert all(best >= score_of(q, by_name[p[i]]) for p in picks.values())
    top, bottom = max(price(m) for m in pool.models), min(price(m) for m in pool.models)
    assert all(price(by_name[p]) == bottom for p in picks["cheapest"])
    assert all(price(by_name[p]) == top for p in picks["most-expensive"])


def test_leaderboard_writes_table_and_plot(pool: Pool, queries: list[Query], tmp_path: Path) -> None:
    train, dev = split(queries)
    routers = run.build(["single", "cheapest", "oracle", "knn"], pool)
    result = run.run_sync(routers, train[:300], dev[:40], pool, llm_limit=0)
    assert len(result.curves["knn"]) > 1
    summary = leaderboard.summarise(result.curves)
    assert summary.best_single.label.startswith("single:")
    files = run.write(result, tmp_path, "test")
    text = (tmp_path / "recorded_routing.md").read_text()
    assert "RouteLLM summary" in text and "| oracle |" in text and "Per task" in text
    assert any(f.suffix == ".html" for f in files)


def test_llm_router_that_fails_falls_back_to_the_cheapest(pool: Pool, queries: list[Query]) -> None:
    # A slow or unreachable router must not abort a leaderboard run: it is counted and falls back.
    down = make_fake_pool({"Fake-Router": [httpx.ConnectError("connection refused")]})
    router = LLMRouter(Pool(down.router, pool.models, client_factory=down.client_factory))
    cheapest = min(pool.models, key=price).name
    assert asyncio.run(router.achoose(queries[0], pool.models)) == cheapest
    assert (router.failed, router.malformed) == (1, 0)
