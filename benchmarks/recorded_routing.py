"""Routing on recorded outcomes of 9 LLMs, in one command: every router in-mix and under task shift, with
intervals, calibration to target prices, the embedders compared, and the evidence-fed LLM router.

1. Train (``training/recipes/allocate_evidence_cpu.yaml``) the bundled router twice with the same recipe:
   without evidence (``runs/allocate_plain``) and with it (``runs/allocate_evidence``); skipped by --reuse.
2. Classical routers (TF-IDF, embedding predictors, MF, boosted trees, MLP, task prior, blend) and routers
   that calibrate λ on their own train data to target prices: in-mix (fit on train, sweep dev), leave-one-
   task-out (pooled over the 14 tasks) and dev re-weighted to a uniform task mix. Bootstrap 95% intervals.
3. The two trained LLM routers on a task-stratified dev slice, where every other router is evaluated too.
4. Embedders (MiniLM in its wheel, SmolLM2 through llama.cpp, hashed n-grams) compared on the train split.

    python benchmarks/recorded_routing.py [--reuse] [--llm-limit 70] [--no-llm]

Writes benchmarks/results/recorded_routing.md and the plots beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pickle
import platform
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

from app.bench import leaderboard, report, run
from app.bench.calibrate import out_of_fold
from app.bench.data import load_queries, price, split, stratified
from app.bench.embeddings import Embeddings
from app.bench.predictors import pick
from app.bench.registry import CLASSICAL, make
from app.bench.routers import LLMRouter
from app.config import PROJECT_ROOT, Settings
from app.evaluation import intervals
from app.pool.local_servers import LocalServers
from training import allocate

DATA = PROJECT_ROOT / "data" / "routing_outcomes" / "train.jsonl"
POOL = PROJECT_ROOT / "pools" / "recorded_9llm.yaml"
RECIPE = PROJECT_ROOT / "training" / "recipes" / "allocate_evidence_cpu.yaml"
RESULTS = Path(__file__).parent / "results"
CACHED = PROJECT_ROOT / "runs" / "recorded_routing_classical.pkl"
"""The classical stage's result, kept so that --reuse-classical rebuilds the report after LLM training."""
EMBEDDERS = CACHED.with_name("recorded_routing_embedders.md")
TIMING = CACHED.with_name("recorded_routing_timing.json")
LLM_POINTS = CACHED.with_name("recorded_routing_llm_v2.pkl")
LLM_TIMEOUT_S = 900.0
LAM = 0.05
"""λ of the LLM routers' training reward (the recipe's), where they are compared with the classical ones."""
TARGETS = [("blend", "price", 0.40), ("knn-emb", "price", 0.20), ("knn-emb", "price", 0.30),
           ("knn-emb", "price", 0.40), ("task-prior", "share_strong", 0.25)]  # fmt: skip
"""Self-calibrating routers: λ set by 3-fold cross-validation on whatever each fold fits on."""
LOTO_TARGETS = [t for t in TARGETS if t[0] != "blend"]
"""Under LOTO the blend is calibrated too rarely to pay for 56 more blend fits on 2 cores; see the report."""


def train(workdir: Path, evidence: bool) -> float:
    started = time.perf_counter()
    overrides = {
        "evidence": evidence,
        "output_dir": str(workdir),
        "database_url": f"sqlite:///{workdir}/t.db",
    }
    allocate.main(str(RECIPE), overrides)
    return time.perf_counter() - started


def compare_embedders(train_queries: list, pool: run.Pool, settings: Settings) -> list[str]:
    """k-NN on each embedder, 5-fold out-of-fold on 1,400 train queries (100 per task): score at λ = 0 and
    at the λ whose price is nearest $0.40, plus the time to encode them (the cache is bypassed). SmolLM2
    through llama.cpp is timed on 56 queries only: on this shared CPU it encoded ~0.1 queries/s, so the
    1,400 would take hours (a first attempt was stopped after 143 in 20 minutes)."""
    sample = stratified(train_queries, 1400)
    prices = np.array([price(m) for m in pool.models])
    scores = np.array([[q.scores[m.served_id] for m in pool.models] for q in sample])
    lines = [
        "| embedder | queries encoded | encode s / 1k queries | k-NN score at λ=0 | k-NN score at ≈$0.40 |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, size in (("minilm", len(sample)), ("hashing", len(sample)), ("smollm2", 56)):
        fresh = Embeddings(name, None, settings)  # no cache: the time is the encoder's
        part = stratified(sample, size)
        started = time.perf_counter()
        fresh([q.question for q in part])
        per_k = 1000 * (time.perf_counter() - started) / len(part)
        if size < len(sample):
            fresh.close()
            lines.append(f"| {name} | {size} | {per_k:.0f} | — | — |")
            continue
        predicted = out_of_fold(partial(make, "knn-emb", fresh), sample, pool.models, 5, 0)
        fresh.close()
        rows = np.arange(len(sample))
        at = {lam: scores[rows, pick(predicted, prices, lam)].mean() for lam in np.linspace(0, 1, 101)}
        near = min(at, key=lambda lam: abs(prices[pick(predicted, prices, lam)].mean() - 0.40))
        lines.append(f"| {name} | {size} | {per_k:.1f} | {at[0.0]:.3f} | {at[near]:.3f} (λ={near:.2f}) |")
    return lines


def targets(views: list[report.View], subset: dict, lam: float) -> list[str]:
    lines = ["", "## Targets", ""]
    for view in views[:2]:
        best, rows = report.rows(view)
        cap = report.PRICE_SHARE * view.price(best)
        cheap = [r for r in rows if r.price <= cap + 1e-12 and not r.label.startswith(("oracle", "single"))]
        honest = [r for r in cheap if "@" in r.label]  # calibrated on train: no test-set selection
        for kind, pool_rows in (
            ("calibrated on train", honest),
            ("best sweep point (chosen on test)", cheap),
        ):
            top = max(pool_rows, key=lambda r: r.score.mean, default=None)
            if top is None:
                lines.append(f"- {view.name}, {kind}: no router at ≤ ${cap:.3f}.")
                continue
            verdict = "met" if top.diff.above_zero else "not met"
            lines.append(
                f"- {view.name}, {kind}: {top.label} λ={top.point.knob:.3g} scores {top.score} at "
                f"${top.price:.3f} (≤ 50% of {best.label}'s ${view.price(best):.2f}); Δ {top.diff.mean:+.3f} "
                f"[{top.diff.low:+.3f}, {top.diff.high:+.3f}] → beats the best single model: {verdict}; "
                f"{100 * (top.to_oracle or 0):.0f}% of the way to the oracle (target ≥ 40% in-mix)."
            )
    classical = [(label, pts) for label, pts in subset.items() if label in CLASSICAL and label != "oracle"]
    near = [min(pts, key=lambda p: abs(p.knob - lam)) for _, pts in classical]
    top_classical = max(
        (p for p in near if not p.label.startswith("single")), key=lambda p: p.score, default=None
    )
    for suffix, stage in (("", "after GRPO"), ("-sft", "after the SFT warm start")):
        if f"llm-evidence{suffix}" not in subset or f"llm-plain{suffix}" not in subset or not top_classical:
            lines.append(f"- LLM routers {stage}: not both evaluated (see the LLM slice above).")
            continue
        ev, plain = subset[f"llm-evidence{suffix}"][0], subset[f"llm-plain{suffix}"][0]
        diff = intervals.paired(ev.query_scores, plain.query_scores)
        gap = intervals.paired(ev.query_scores, top_classical.query_scores)
        verdict = "beats it" if diff.above_zero else ("worse" if diff.high < 0 else "no difference shown")
        lines += [
            f"- {stage}: evidence-fed LLM router {ev.score:.3f} at ${ev.price:.3f} vs the same router "
            f"without evidence {plain.score:.3f} at ${plain.price:.3f}: Δ {diff} → {verdict}; against the "
            f"best classical router at λ={lam:g} on the slice ({top_classical.label}, "
            f"{top_classical.score:.3f} at ${top_classical.price:.3f}): Δ {gap} → "
            f"{'within its interval' if gap.low <= 0 <= gap.high else 'outside it'}.",
        ]
    return lines


def classical(queries: list, pool: run.Pool, embeddings: Embeddings) -> run.BenchResult:
    """Every classical and self-calibrating router: in-mix on dev, leave-one-task-out, re-weighted."""
    train_queries, dev = split(queries)
    names = list(CLASSICAL)
    extras = run.Extras(embeddings=embeddings, self_calibrating=TARGETS, folds=3)
    loto_extras = run.Extras(embeddings=embeddings, self_calibrating=LOTO_TARGETS, folds=3)
    return run.run_sync(
        run.build(names, pool, extras), train_queries, dev, pool, 0, modes=run.MODES,
        loto=(lambda: run.build(names, pool, loto_extras), queries, pool),
        on_fold=lambda task: print("leave-one-task-out:", task, flush=True),
    )  # fmt: skip


def llm_slice(result: run.BenchResult, queries: list, pool: run.Pool, embeddings: Embeddings, limit: int,
              settings: Settings, stages: tuple[str, ...] = ("sft", "grpo")) -> None:  # fmt: skip
    """The trained LLM routers (without and with evidence) on a stratified dev slice; every classical
    router's picks on the same slice are read off its dev run (they route each query the same way)."""
    train_queries, dev = split(queries)
    head = stratified(dev, limit)
    ids = [q.id for q in head]
    # A loaded shared CPU takes over a minute per router call: wait rather than count a time-out (which
    # falls back to the cheapest model) as the router's choice.
    pool.timeout_s = LLM_TIMEOUT_S
    result.subset = {label: [p.restrict(ids) for p in pts] for label, pts in result.curves.items()}
    runs = PROJECT_ROOT / "runs"
    # Each router after its warm start (SFT) and after GRPO, so the stages compare as well as the prompts.
    llms: list[tuple[LLMRouter, Path]] = []
    for stage, suffix in (("sft", "-sft"), ("grpo", "")):
        if stage not in stages:
            continue
        plain_gguf = runs / "allocate_plain" / stage / "final" / "router.gguf"
        evidence_gguf = runs / "allocate_evidence" / stage / "final" / "router.gguf"
        plain = LLMRouter.trained(pool, str(plain_gguf), f"llm-plain{suffix}")
        extras = run.Extras(embeddings=embeddings, evidence_gguf=str(evidence_gguf))
        evidence = run.build(["llm-evidence"], pool, extras)[0]
        assert isinstance(evidence, LLMRouter)
        evidence._label = f"llm-evidence{suffix}"
        llms += [(plain, plain_gguf), (evidence, evidence_gguf)]
    stored = pickle.loads(LLM_POINTS.read_bytes()) if LLM_POINTS.is_file() else {}
    servers = LocalServers(settings)
    try:
        for router, weights in llms:
            # A router's slice is kept per (label, weights file and its time, slice): --reuse redoes nothing.
            if not weights.is_file():
                print(f"skipping {router.label}: {weights} is not trained yet", flush=True)
                continue
            key = f"{router.label}|{weights}|{weights.stat().st_mtime}|{limit}"
            if key not in stored:
                servers.start_for(router.pool)
                router.fit(train_queries, pool.models)
                router.prepare(head)
                point = asyncio.run(leaderboard.evaluate(router, head, pool))
                stored[key] = (point, router.malformed, router.failed)
                LLM_POINTS.write_bytes(pickle.dumps(stored))
            result.subset[router.label] = [stored[key][0]]
            result.malformed[router.label] = stored[key][1] + stored[key][2]  # either fell back
    finally:
        servers.stop_all()
    result.n_subset = len(head)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reuse", action="store_true", help="reuse the trained routers in runs/")
    parser.add_argument("--reuse-classical", action="store_true", help="reuse runs/" + CACHED.name)
    parser.add_argument("--llm-limit", type=int, default=14, help="dev queries for the LLM routers")
    parser.add_argument("--no-llm", action="store_true", help="classical routers only (no training)")
    parser.add_argument(
        "--llm-stages", default="sft,grpo", help="checkpoints of the LLM routers to evaluate: sft, grpo"
    )
    args = parser.parse_args()
    settings = Settings()
    runs = PROJECT_ROOT / "runs"
    train_s: dict[str, float] = {}
    if not args.no_llm and not args.reuse:
        train_s = {
            "without evidence": train(runs / "allocate_plain", False),
            "with evidence": train(runs / "allocate_evidence", True),
        }
    pool = run.recorded_pool(POOL, DATA)
    queries = load_queries(DATA)
    embeddings = Embeddings("minilm", settings.cache_dir, settings)
    started = time.perf_counter()
    if args.reuse_classical:
        result = pickle.loads(CACHED.read_bytes())
    else:
        result = classical(queries, pool, embeddings)
        CACHED.parent.mkdir(parents=True, exist_ok=True)
        CACHED.write_bytes(pickle.dumps(result))
    classical_s = time.perf_counter() - started
    started = time.perf_counter()
    if not args.no_llm:
        stages = tuple(x.strip() for x in args.llm_stages.split(",") if x.strip())
        llm_slice(result, queries, pool, embeddings, args.llm_limit, settings, stages)
    llm_s = time.perf_counter() - started
    started = time.perf_counter()
    if args.reuse_classical:
        embedder_lines = EMBEDDERS.read_text().splitlines()
        measured = json.loads(TIMING.read_text())
        classical_s, embed_s = measured["classical_s"], measured["embed_s"]
    else:
        embedder_lines = compare_embedders(split(queries)[0], pool, settings)
        EMBEDDERS.write_text("\n".join(embedder_lines))
        embed_s = time.perf_counter() - started
    title = f"Routing on recorded outcomes of {len(pool.models)} LLMs"
    written = run.write(result, RESULTS, title)
    views = result.views()
    text = written[0].read_text()
    text += "\n".join(
        [
            "",
            "λ of the calibrated routers (`name@target`) is chosen by 3-fold cross-validation on each "
            "router's own train data (in-mix: the train split; leave-one-task-out: the 13 other tasks of "
            "each fold), then applied to the held-out queries.",
            "",
            "## Embedders on the train split",
            "",
            *embedder_lines,
            *targets(views, result.subset, LAM),
            "",
            "## How this was made",
            "",
            f"`python benchmarks/recorded_routing.py {' '.join(sys.argv[1:])}` · "
            f"{time.strftime('%Y-%m-%d')} · "
            f"Python {platform.python_version()} · {platform.machine()}, 2 CPU cores shared with other jobs "
            "(load average 5-10 while this ran), no GPU · "
            + (", ".join(f"training {k} {v / 60:.0f} min" for k, v in train_s.items()) or "training reused")
            + f" · classical leaderboards {classical_s / 60:.0f} min, embedder comparison "
            + f"{embed_s / 60:.1f} min"
            + (f" (both reused from runs/{CACHED.name})" if args.reuse_classical else "")
            + f" · LLM slice {llm_s / 60:.0f} min"
            + ".",
            "",
        ]
    )
    written[0].write_text(text)
    embeddings.close()
    if not args.reuse_classical:
        TIMING.write_text(json.dumps({"classical_s": classical_s, "embed_s": embed_s}))
    print("wrote", ", ".join(str(p) for p in written))


if __name__ == "__main__":
    main()
