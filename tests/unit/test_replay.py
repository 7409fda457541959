"""The pool's replay cache on a real SQLite trace store: off records, prefer replays, only never calls."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from langchain_core.outputs import Generation, LLMResult

from app.config import Settings
from app.pool import CallResult, EndpointError, ModelEntry, Pool
from app.service import RouteGraphService
from storage import db
from storage.cache import SqlResponseCache
from tests.fakes import (
    FAKE_BASE_URL,
    ROUTER,
    SMALL,
    fake,
    fake_entry,
    make_fake_pool,
    think_answer,
    think_route,
)

QUESTION = "What is the capital of France?"


@pytest.fixture
def cache(tmp_path: Path) -> SqlResponseCache:
    return SqlResponseCache(db.session_factory(db.make_engine(f"sqlite:///{tmp_path}/replay.db")))


def cached_pool(cache: SqlResponseCache, mode: str, replies: list[str]) -> Pool:
    pool = make_fake_pool({SMALL: replies})
    pool.cache, pool.cache_mode = cache, mode  # type: ignore[assignment]
    return pool


def ask(pool: Pool, query: str, **options: Any) -> CallResult:
    return asyncio.run(pool.ask(SMALL, query, **options))


def same_answer(a: CallResult, b: CallResult) -> bool:
    return (a.model, a.text, a.input_tokens, a.output_tokens, a.cost, a.finish_reason) == (
        b.model,
        b.text,
        b.input_tokens,
        b.output_tokens,
        b.cost,
        b.finish_reason,
    )


def test_off_calls_every_time_and_records(cache: SqlResponseCache) -> None:
    pool = cached_pool(cache, "off", ["Paris.", "Paris again.", "Madrid."])
    first = ask(pool, "capital of France?")
    second = ask(pool, "capital of France?")
    assert (first.text, second.text) == ("Paris.", "Paris again.")  # both live
    assert (first.cache, second.cache) == ("miss", "miss")
    assert len(fake(pool, SMALL).calls) == 2
    # Recorded each time; the second identical put is a duplicate key and keeps the first copy.
    assert cache.count() == 1
    ask(pool, "capital of Spain?")
    assert cache.count() == 2  # a new request adds a row


def test_no_cache_reports_none(cache: SqlResponseCache) -> None:
    pool = make_fake_pool({SMALL: ["Paris."]})
    assert ask(pool, "capital of France?").cache is None
    assert cache.count() == 0


def test_prefer_serves_the_second_identical_request_from_the_cache(cache: SqlResponseCache) -> None:
    pool = cached_pool(cache, "prefer", ["Paris.", "never used"])
    first = ask(pool, "capital of France?", system="Be brief.")
    second = ask(pool, "capital of France?", system="Be brief.")
    assert first.cache == "miss" and second.cache == "hit"
    assert len(fake(pool, SMALL).calls) == 1  # the model was not called again
    assert same_answer(first, second)  # same text, tokens, cost and finish reason
    assert second.text == "Paris." and second.cost > 0
    assert cache.count() == 1


def test_prefer_replays_across_pools_sharing_the_store(cache: SqlResponseCache) -> None:
    recorded = ask(cached_pool(cache, "off", ["Paris."]), "capital of France?")
    fresh = cached_pool(cache, "prefer", [])  # an empty script: any live call would fail
    replayed = ask(fresh, "capital of France?")
    assert replayed.cache == "hit" and same_answer(recorded, replayed)
    assert fake(fresh, SMALL).calls == []


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"query": "capital of France?"}, {"query": "capital of Spain?"}),  # different prompt
        ({"query": "q", "max_tokens": 64}, {"query": "q", "max_tokens": 65}),  # different max_tokens
        ({"query": "q", "system": "Be brief."}, {"query": "q", "system": "Be long."}),  # different system
        ({"query": "q"}, {"query": "q", "system": "Be brief."}),  # a system message added
        ({"query": "Paris"}, {"query": "paris"}),  # case is not normalised
    ],
)
def test_prefer_misses_on_a_different_request(
    cache: SqlResponseCache, first: dict[str, Any], second: dict[str, Any]
) -> None:
    pool = cached_pool(cache, "prefer", ["one", "two"])
    a, b = ask(pool, **first), ask(pool, **second)
    assert (a.cache, b.cache) == ("miss", "miss")
    assert (a.text, b.text) == ("one", "two")
    assert len(fake(pool, SMALL).calls) == 2
    assert cache.count() == 2


def test_prefer_misses_on_a_different_model(cache: SqlResponseCache) -> None:
    pool = make_fake_pool({SMALL: ["small"], "Big-LM": ["big"]})
    pool.cache, pool.cache_mode = cache, "prefer"
    small = asyncio.run(pool.ask(SMALL, "q"))
    big = asyncio.run(pool.ask("Big-LM", "q"))
    assert (small.text, big.text) == ("small", "big")
    assert (small.cache, big.cache) == ("miss", "miss")


def test_prefer_hits_on_spacing_only_differences_in_chat(cache: SqlResponseCache) -> None:
    pool = cached_pool(cache, "prefer", ["Paris.", "never used"])
    first = ask(pool, "capital  of\nFrance? \n\n", system=" Be   brief. ")
    second = ask(pool, "  capital of \nFrance?\t", system="Be brief.")
    assert (first.cache, second.cache) == ("miss", "hit")
    assert len(fake(pool, SMALL).calls) == 1
    assert same_answer(first, second)


def test_a_line_break_makes_another_request(cache: SqlResponseCache) -> None:
    """Choices one per line and the same choices on one line are read differently by a model."""
    pool = cached_pool(cache, "prefer", ["A", "B"])
    lines = ask(pool, "Which?\nA. sky\nB. blood")
    one_line = ask(pool, "Which? A. sky B. blood")
    assert (lines.cache, one_line.cache) == ("miss", "miss")
    assert (lines.text, one_line.text) == ("A", "B")


def test_prefer_hits_for_chat_messages_differing_only_in_spacing(cache: SqlResponseCache) -> None:
    pool = cached_pool(cache, "prefer", ["Paris.", "never used"])
    entry = pool.get(SMALL)
    first = asyncio.run(pool.chat(entry, [("human", "a\n\n  b ")], max_tokens=32))
    second = asyncio.run(pool.chat(entry, [("human", "a\nb")], max_tokens=32))
    assert (first.cache, second.cache) == ("miss", "hit")


def test_prefer_misses_on_different_stop(cache: SqlResponseCache) -> None:
    pool = cached_pool(cache, "prefer", ["one", "two"])
    entry = pool.get(SMALL)
    first = asyncio.run(pool.chat(entry, [("human", "q")], max_tokens=32, stop=["</a>"]))
    second = asyncio.run(pool.chat(entry, [("human", "q")], max_tokens=32, stop=["</b>"]))
    assert (first.cache, second.cache) == ("miss", "miss")


def test_only_replays_a_recorded_request(cache: SqlResponseCache) -> None:
    recorded = ask(cached_pool(cache, "off", ["Paris."]), "capital of France?")
    pool = cached_pool(cache, "only", [])
    replayed = ask(pool, "capital of France?")
    assert replayed.cache == "hit" and same_answer(recorded, replayed)
    assert fake(pool, SMALL).calls == []


def test_only_refuses_an_unrecorded_request(cache: SqlResponseCache) -> None:
    pool = cached_pool(cache, "only", ["would answer if asked"])
    with pytest.raises(EndpointError, match="replay cache") as caught:
        ask(pool, "capital of France?")
    assert caught.value.model == SMALL
    assert fake(pool, SMALL).calls == []  # never called a model
    assert cache.count() == 0  # nothing recorded


# -- completion mode ----------------------------------------------------------------------------------


class FakeCompletionLLM:
    """Just enough of a LangChain LLM for ``Pool.complete``: records prompts, answers from a script."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)
        self.prompts: list[str] = []

    async def agenerate(self, prompts: list[str], stop: Any = None, **kwargs: Any) -> LLMResult:
        self.prompts.extend(prompts)
        text = self.replies.pop(0)
        return LLMResult(
            generations=[[Generation(text=text, generation_info={"finish_reason": "stop"})]],
            llm_output={"token_usage": {"prompt_tokens": 7, "completion_tokens": 2}},
        )


def completion_pool(cache: SqlResponseCache, mode: str, llm: FakeCompletionLLM) -> Pool:
    entry = ModelEntry(
        name="Base-LM",
        base_url=FAKE_BASE_URL,
        mode="completion",
        prompt_template="Q: What is 1+1?\nA: 2\nQ: {query}\nA:",
        stop=["\nQ:"],
        price_in=1.0,
        price_out=2.0,
        descriptor="A base model prompted few-shot.",
    )

    def factory(e: ModelEntry, kind: str, max_tokens: int) -> FakeCompletionLLM:
        assert kind == "completion"
        return llm

    pool = Pool(fake_entry(ROUTER, 0.05, 0.10), [entry], client_factory=factory)
    pool.cache, pool.cache_mode = cache, mode  # type: ignore[assignment]
    return pool


def test_completion_mode_is_cached(cache: SqlResponseCache) -> None:
    llm = FakeCompletionLLM(["4", "5", "6"])
    pool = completion_pool(cache, "prefer", llm)
    first = asyncio.run(pool.ask("Base-LM", "What is 2+2?"))
    second = asyncio.run(pool.ask("Base-LM", "What is 2+2?"))
    assert (first.cache, second.cache) == ("miss", "hit")
    assert llm.prompts == ["Q: What is 1+1?\nA: 2\nQ: What is 2+2?\nA:"]  # called once, templated
    assert same_answer(first, second)
    # 7 in, 2 out at $1/$2 per 1M tokens: (7·1 + 2·2)/1e6.
    assert (second.text, second.input_tokens, second.output_tokens) == ("4", 7, 2)
    assert second.cost == pytest.approx(11e-6)


def test_completion_prompt_whitespace_is_not_normalised(cache: SqlResponseCache) -> None:
    llm = FakeCompletionLLM(["4", "5"])
    pool = completion_pool(cache, "prefer", llm)
    entry = pool.get("Base-LM")
    first = asyncio.run(pool.complete(entry, "Q: 2+2?\nA:", max_tokens=8))
    second = asyncio.run(pool.complete(entry, "Q: 2+2?\nA: ", max_tokens=8))  # one trailing space
    assert (first.cache, second.cache) == ("miss", "miss")
    assert (first.text, second.text) == ("4", "5")


def test_completion_only_mode_refuses_unrecorded(cache: SqlResponseCache) -> None:
    llm = FakeCompletionLLM(["4"])
    pool = completion_pool(cache, "only", llm)
    with pytest.raises(EndpointError, match="replay cache"):
        asyncio.run(pool.ask("Base-LM", "What is 2+2?"))
    assert llm.prompts == []


# -- the store ----------------------------------------------------------------------------------------


def test_duplicate_put_does_not_raise(cache: SqlResponseCache) -> None:
    response = {"text": "Paris.", "input_tokens": 3, "output_tokens": 1, "finish_reason": "stop"}
    params = {"kind": "chat", "max_tokens": 16, "stop": None, "extra_body": None}
    cache.put("k1", SMALL, "h1", params, response)
    cache.put("k1", SMALL, "h1", params, {**response, "text": "Lyon."})  # the same key again
    assert cache.count() == 1
    assert cache.get("k1") == response  # the first copy is kept
    assert cache.get("absent") is None


def test_concurrent_identical_puts_do_not_raise(tmp_path: Path) -> None:
    factory = db.session_factory(db.make_engine(f"sqlite:///{tmp_path}/race.db"))
    caches = [SqlResponseCache(factory), SqlResponseCache(factory)]
    response = {"text": "x", "input_tokens": 1, "output_tokens": 1}

    async def put(c: SqlResponseCache) -> None:
        await asyncio.to_thread(c.put, "same", SMALL, "h", {"kind": "chat"}, response)

    async def both() -> None:
        await asyncio.gather(*(put(c) for c in caches * 4))

    asyncio.run(both())
    assert caches[0].count() == 1
    assert caches[1].get("same") == {**response, "finish_reason": None}


# -- through the service ------------------------------------------------------------------------------


def test_service_replays_a_repeated_question(tmp_path: Path) -> None:
    script = [think_route(SMALL, "capital of France?"), think_answer("Paris")]
    pool = make_fake_pool({ROUTER: script * 2, SMALL: ["Paris.", "Paris, live again."]})
    settings = Settings(database_url=f"sqlite:///{tmp_path}/t.db", replay="prefer")
    with RouteGraphService.create(settings, pool=pool, start_servers=False) as service:
        first = service.ask(QUESTION)
        second = service.ask(QUESTION)

    assert (first.status, first.answer) == ("ok", "Paris")
    assert (second.status, second.answer) == ("ok", "Paris")
    first_route = next(h for h in first.hops if h.node == "route")
    second_route = next(h for h in second.hops if h.node == "route")
    assert first_route.detail["cache"] == "miss"
    assert second_route.detail["cache"] == "hit"
    assert second_route.response == "Paris."  # the recorded reply, not the live 'Paris, live again.'
    assert (second_route.cost, second_route.input_tokens) == (first_route.cost, first_route.input_tokens)
    assert len(fake(pool, SMALL).calls) == 1  # the pool model was not called again
    # The router's identical steps were replayed too: it was called only during the first run.
    assert len(fake(pool, ROUTER).calls) == 2
    assert all(h.detail.get("cache") == "hit" for h in second.hops if h.model)


def test_service_replay_off_still_records(tmp_path: Path) -> None:
    script = [think_route(SMALL, "capital of France?"), think_answer("Paris")]
    pool = make_fake_pool({ROUTER: script * 2, SMALL: ["Paris.", "Paris."]})
    settings = Settings(database_url=f"sqlite:///{tmp_path}/t.db", replay="off")
    with RouteGraphService.create(settings, pool=pool, start_servers=False) as service:
        first = service.ask(QUESTION)
        second = service.ask(QUESTION)
        recorded = SqlResponseCache(service.sessions).count()

    assert [h.detail.get("cache") for h in second.hops if h.node == "route"] == ["miss"]
    assert len(fake(pool, SMALL).calls) == 2 and len(fake(pool, ROUTER).calls) == 4
    assert first.answer == second.answer == "Paris"
    assert recorded == 3  # router step 1, Small-LM, router step 2


def test_a_trained_router_is_never_served_its_untrained_namesakes_replies(
    cache: SqlResponseCache, tmp_path: Path
) -> None:
    """Same entry name, same prompt: the replay cache tells the weights apart (and a re-export at the same
    path from the export before it), so evaluating a trained router under ``prefer`` measures that router."""
    import os

    from app.pool.entries import router_from_checkpoint

    pool = make_fake_pool({ROUTER: ["untrained step", "trained step", "retrained step"]})
    pool.cache, pool.cache_mode = cache, "prefer"  # type: ignore[assignment]
    messages = [("human", QUESTION)]
    untrained = asyncio.run(pool.generate(ROUTER, messages, max_tokens=32))
    gguf = tmp_path / "router.gguf"
    gguf.write_bytes(b"GGUF one")
    trained = pool.with_router(router_from_checkpoint(pool.router, str(gguf)))
    first = asyncio.run(trained.generate(ROUTER, messages, max_tokens=32))
    again = asyncio.run(trained.generate(ROUTER, messages, max_tokens=32))
    assert (untrained.text, first.text, first.cache) == ("untrained step", "trained step", "miss")
    assert (again.text, again.cache) == ("trained step", "hit")
    gguf.write_bytes(b"GGUF two")
    os.utime(gguf, ns=(gguf.stat().st_atime_ns, gguf.stat().st_mtime_ns + 1_000_000_000))
    retrained = pool.with_router(router_from_checkpoint(pool.router, str(gguf)))
    assert asyncio.run(retrained.generate(ROUTER, messages, max_tokens=32)).text == "retrained step"
