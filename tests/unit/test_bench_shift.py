"""Task-shift evaluation, bootstrap intervals, calibration and the new routers on a 50-query slice."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import numpy as np
import pytest

from app.bench import run, shift
from app.bench.calibrate import Calibrated, achieved, calibrate, load_router_config, solve_knob
from app.bench.data import Query, load_queries, price, split, stratified
from app.bench.embeddings import Embeddings
from app.bench.leaderboard import sweep
from app.bench.predictors import pick
from app.bench.registry import EMBEDDED
from app.evaluation import intervals
from app.pool import ModelEntry, Pool, load_pool

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data/routing_outcomes/train.jsonl"
POOL = ROOT / "pools/recorded_9llm.yaml"


@pytest.fixture(scope="module")
def pool() -> Pool:
    return load_pool(POOL)


@pytest.fixture(scope="module")
def queries() -> list[Query]:
    return load_queries(DATA)


# -- leave-one-task-out -----------------------------------------------------------------------------------
def test_leave_one_task_out_never_leaks_the_held_out_task(queries: list[Query]) -> None:
    folds = shift.leave_one_task_out(queries)
    assert [t for t, _, _ in folds] == sorted({q.task for q in queries})
    for task, train, test in folds:
        assert test and all(q.task == task for q in test)
        assert all(q.task != task for q in train)
        assert len(train) + len(test) == len(queries)
        assert not {q.id for q in train} & {q.id for q in test}
    assert sorted(q.id for _, _, test in folds for q in test) == sorted(q.id for q in queries)


def test_leave_one_task_out_needs_two_tasks(queries: list[Query]) -> None:
    with pytest.raises(ValueError, match="two tasks"):
        shift.leave_one_task_out([q for q in queries if q.task == "gsm8k"])


def test_loto_fits_each_fold_without_its_task(pool: Pool, queries: list[Query]) -> None:
    seen: list[tuple[set[str], set[str]]] = []

    class Spy(run.RandomRouter):
        def fit(self, train, candidates):  # type: ignore[no-untyped-def]
            self._train_tasks = {q.task for q in train}

        def prepare(self, qs):  # type: ignore[no-untyped-def]
            seen.append((self._train_tasks, {q.task for q in qs}))

    sample = stratified(queries, 42)
    curves = asyncio.run(shift.loto_curves(lambda: [Spy()], sample, pool))
    assert len(seen) == 14 and all(not train & test for train, test in seen)
    pooled = curves["random"][0]
    assert sorted(pooled.ids) == sorted(q.id for q in sample)


def test_mix_weights_make_tasks_count_equally() -> None:
    tasks = ["a"] * 6 + ["b"] * 2
    w = shift.mix_weights(tasks)
    assert w[:6].sum() == pytest.approx(w[6:].sum())
    assert w.mean() == pytest.approx(1.0)
    given = shift.mix_weights(tasks, {"a": 1.0, "b": 3.0})
    assert given[6:].sum() == pytest.approx(3 * given[:6].sum())
    with pytest.raises(ValueError, match="no queries"):
        shift.mix_weights(tasks, {"c": 1.0})
    assert shift.parse_mix("a=1, b=3") == {"a": 1.0, "b": 3.0}
    with pytest.raises(ValueError, match="task=weight"):
        shift.parse_mix("a:1")


# -- intervals --------------------------------------------------------------------------------------------
def test_bootstrap_interval_on_a_constructed_example() -> None:
    # 400 coin flips with mean 0.5: the 95% interval is about ±1.96·0.5/√400 = ±0.049.
    values = [0.0, 1.0] * 200
    ci = intervals.bootstrap(values, draws=2000)
    assert ci.mean == 0.5
    assert ci.low == pytest.approx(0.451, abs=0.012) and ci.high == pytest.approx(0.549, abs=0.012)
    assert intervals.bootstrap([0.7] * 50).low == pytest.approx(0.7)  # no spread, no width


def test_paired_interval_sees_a_consistent_small_gain() -> None:
    # b wins on every query by 0.02 while both vary a lot across queries: pairing cancels the variance.
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 1, 300)
    diff = intervals.paired(a + 0.02, a)
    assert diff.mean == pytest.approx(0.02) and diff.above_zero
    unpaired_low = intervals.bootstrap(a + 0.02).low - intervals.bootstrap(a).high
    assert unpaired_low < 0  # unpaired, the two intervals overlap
    tie = intervals.paired([1.0, 0.0] * 100, [0.0, 1.0] * 100)
    assert not tie.above_zero and tie.low < 0 < tie.high


def test_weighted_bootstrap_uses_the_weights() -> None:
    ci = intervals.bootstrap([1.0, 0.0], weights=[3.0, 1.0], draws=200)
    assert ci.mean == pytest.approx(0.75)
    with pytest.raises(ValueError, match="weights"):
        intervals.bootstrap([1.0, 0.0], weights=[1.0])


# -- calibration ------------------------------------------------------------------------------------------
def test_solve_knob_hits_a_target_where_the_answer_is_known() -> None:
    # Three models at $1, $2, $4. Predicted: the $4 model is better by d_i on query i (d spread over 0..0.5),
    # the others worthless. With λ on price/max price the $4 model is picked iff d_i > λ·(4 − 1)/4,
    # so a target price p needs a share s = (p − 1)/3 of queries on the $4 model: λ = quantile(d, 1 − s)·4/3.
    n = 1000
    d = np.linspace(0.0, 0.5, n)
    predicted = np.stack([np.full(n, 0.5), np.full(n, 0.0), 0.5 + d], axis=1)
    prices = np.array([1.0, 2.0, 4.0])
    lam, reached = solve_knob(predicted, prices, target=2.5, metric="price")
    assert reached == pytest.approx(2.5, rel=0.01)
    assert lam == pytest.approx(np.quantile(d, 0.5) * 4 / 3, rel=0.03)
    share_lam, share = solve_knob(predicted, prices, target=0.25, metric="share_strong")
    assert share == pytest.approx(0.25, abs=0.01) and share_lam > lam
    # λ = 0: the best predicted, except the one tie (d = 0), which goes to the cheaper model.
    assert achieved(predicted, prices, 0.0, "price") == pytest.approx((999 * 4 + 1) / 1000)


def test_pick_prefers_the_cheaper_of_equal_values() -> None:
    assert pick(np.array([0.5, 0.5]), np.array([2.0, 1.0]), 0.0) == 1


def _entry(name: str, cost: float) -> ModelEntry:
    return ModelEntry(
        name=name, backend="recorded", outcomes="x.jsonl", price_in=cost, price_out=cost, descriptor="d"
    )


def test_calibrate_on_a_synthetic_outcome_table_reaches_the_target() -> None:
    # Two kinds of query told apart by their words: on "hard" ones only the $1 model succeeds, on "easy"
    # ones both do. The cheapest routing that loses nothing sends hard to $1, easy to $0.1: with 30% hard
    # queries its price is 0.3·1 + 0.7·0.1 = 0.37, which is the target asked for.
    models = [_entry("cheap", 0.1), _entry("strong", 1.0)]
    table = []
    for i in range(300):
        hard = i % 10 < 3
        words = "prove the theorem about primes" if hard else "what colour is the sky"
        scores = {"cheap": 0.0 if hard else 1.0, "strong": 1.0}
        table.append(Query(str(i), "t", f"{words} #{i}", scores))
    embeddings = Embeddings("hashing")
    config = calibrate("knn-emb", table, models, target_price=0.37, embeddings=embeddings, folds=3)
    assert config.cv_achieved == pytest.approx(0.37, rel=0.02) and config.knob < 1
    # Nothing lies between routing well (0.37) and sending all to the cheap model (0.1): 0.15 gets 0.1.
    assert calibrate(
        "knn-emb", table, models, target_price=0.15, embeddings=embeddings, folds=3
    ).cv_achieved == (pytest.approx(0.1))
    router = Calibrated("knn-emb", "price", 0.37, embeddings, folds=3)
    router.fit(table[:200], models)
    picks = [router.choose(q, models) for q in table[200:]]
    assert picks == ["strong" if q.scores["cheap"] == 0.0 else "cheap" for q in table[200:]]


def test_router_config_round_trips_and_bad_configs_are_named(tmp_path: Path, queries: list[Query]) -> None:
    pool = load_pool(POOL)
    config = calibrate(
        "knn-emb", stratified(queries, 120), pool.models, target_price=0.3,
        embeddings=Embeddings("hashing"), folds=3,
    )  # fmt: skip
    path = config.save(tmp_path / "router.yaml")
    assert load_router_config(path) == config
    (tmp_path / "bad.yaml").write_text("router: knn-emb\nknob: fast\n")
    with pytest.raises(ValueError, match=r"bad\.yaml"):
        load_router_config(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="does not exist"):
        load_router_config(tmp_path / "none.yaml")


# -- the new routers on a 50-query slice ------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(EMBEDDED))
def test_each_new_router_runs_and_its_knob_moves_price_monotonically(
    name: str, pool: Pool, queries: list[Query]
) -> None:
    train, dev = split(queries)
    router = EMBEDDED[name](embeddings=Embeddings("hashing"))  # type: ignore[call-arg]
    router.fit(stratified(train, 140), pool.models)
    points = asyncio.run(sweep(router, stratified(dev, 50), run.recorded_pool(POOL, DATA)))
    assert len(points) == len(router.knobs) > 1
    prices = [p.price for p in points]
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(prices)), prices
    assert prices[0] > prices[-1]
    cheapest = min(price(m) for m in pool.models)
    assert prices[-1] < 2 * cheapest + 0.1  # at λ = 1 the router leans on the cheap models
