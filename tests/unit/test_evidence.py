"""Evidence for the LLM router: neighbours without the query itself, the paragraph, training rows, prompts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from langchain_core.messages import BaseMessage

from app.bench.data import Query, load_queries, split, stratified
from app.bench.embeddings import Embeddings
from app.bench.evidence import Evidence, EvidenceLLMRouter
from app.pool import ModelEntry, Pool, load_pool
from tests.fakes import make_fake_pool, message_text
from training.allocate import grpo_rows, sft_rows
from training.rewards import route_step

ROOT = Path(__file__).resolve().parents[2]


def _entry(name: str, cost: float) -> ModelEntry:
    return ModelEntry(
        name=name, backend="recorded", outcomes="x.jsonl", price_in=cost, price_out=cost, descriptor="d"
    )


MODELS = [_entry("Small-LM", 0.1), _entry("Big-LM", 0.9)]
# Maths questions: only Big-LM is right. Trivia: both are, so the cheap one is the better value.
TRAIN = [
    Query(str(i), task, f"{text} {i}", {"Small-LM": small, "Big-LM": 1.0})
    for i, (task, text, small) in enumerate(
        [("gsm8k", "compute the sum of the primes below", 0.0)] * 6
        + [("trivia_qa", "which painter was born in the city of", 1.0)] * 6
    )
]


def test_a_train_query_is_not_its_own_neighbour() -> None:
    evidence = Evidence(Embeddings("hashing"), k=1).fit(TRAIN[:2], MODELS)
    # Two train queries: each one's single neighbour is the other, never itself.
    different = [Query("0", "gsm8k", TRAIN[0].question, {"Small-LM": 0.0, "Big-LM": 1.0}),
                 Query("1", "gsm8k", TRAIN[1].question, {"Small-LM": 1.0, "Big-LM": 0.0})]  # fmt: skip
    evidence.fit(different, MODELS)
    assert evidence.means(different).tolist() == [[1.0, 0.0], [0.0, 1.0]]
    fresh = Query("new", "gsm8k", TRAIN[0].question, {})
    assert evidence.means([fresh]).tolist() == [[0.0, 1.0]]  # a new query may match any train query


def test_paragraph_ranks_by_value_and_names_the_neighbours() -> None:
    evidence = Evidence(Embeddings("hashing"), k=3, lam=0.05).fit(TRAIN, MODELS)
    maths, trivia = (
        Query("m", "gsm8k", "compute the sum of the primes below 50", {}),
        Query("t", "trivia_qa", "which painter was born in the city of Delft", {}),
    )
    texts = evidence.texts([maths, trivia])
    assert texts["m"].startswith("compute the sum of the primes below 50\n\nEvidence: mean recorded score on")
    assert "3 most similar past queries, best value first: Big-LM 1.00 ($0.90); Small-LM 0.00" in texts["m"]
    assert "best value first: Small-LM 1.00 ($0.10); Big-LM 1.00 ($0.90)" in texts["t"]
    assert evidence.top_choice([maths, trivia]) == {"m": "Big-LM", "t": "Small-LM"}
    with pytest.raises(RuntimeError, match="not fitted"):
        Evidence(Embeddings("hashing")).means([maths])


def test_training_rows_with_evidence_target_its_best_value_model() -> None:
    evidence = Evidence(Embeddings("hashing"), k=3).fit(TRAIN, MODELS)
    rows = sft_rows(TRAIN, MODELS, lam=0.05, limit=4, evidence=evidence)
    for row in rows:
        shown = row["prompt"][1]["content"]
        assert "Evidence: mean recorded score on the 3 most similar past queries" in shown
        chosen = route_step(row["completion"][0]["content"], ["Small-LM", "Big-LM"])
        assert chosen == ("Big-LM" if "primes" in shown else "Small-LM")
    plain = sft_rows(TRAIN, MODELS, lam=0.05, limit=4)
    assert all("Evidence:" not in row["prompt"][1]["content"] for row in plain)
    grpo = grpo_rows(TRAIN, MODELS, limit=3, evidence=evidence)
    assert len(grpo) == 3 and all("Evidence:" in r["prompt"][1]["content"] for r in grpo)


def test_evidence_router_shows_the_evidence_in_its_prompt() -> None:
    pool = load_pool(ROOT / "pools/recorded_9llm.yaml")
    train, dev = split(load_queries(ROOT / "data/routing_outcomes/train.jsonl"))
    seen: list[str] = []

    def route(messages: list[BaseMessage]) -> str:
        seen.append(message_text(messages[-1]))
        return "<think>evidence says so</think>\n<search> gemma-2-9b-it: the question above </search>"

    scripted = make_fake_pool({"Fake-Router": [route] * 3})
    routed = Pool(scripted.router, pool.models, client_factory=scripted.client_factory)
    router = EvidenceLLMRouter(routed, Evidence(Embeddings("hashing"), k=5))
    router.fit(stratified(train, 140), pool.models)
    head = stratified(dev, 3)
    router.prepare(head)
    assert [asyncio.run(router.achoose(q, pool.models)) for q in head] == ["gemma-2-9b-it"] * 3
    assert all("Evidence: mean recorded score on the 5 most similar past queries" in s for s in seen)
    assert np.all([q.question.strip()[:40] in s for q, s in zip(head, seen, strict=True)])
