"""Evaluate routers on recorded outcomes: sweep each router's knob, tabulate, find the Pareto front, plot.

Cost axis: the chosen model's price in USD per 1M tokens (input and output averaged), per query, averaged;
the estimated USD per 1,000 queries (token estimate of ``Pool.recorded``) is reported beside it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from app.bench.data import Query, price
from app.bench.routers import Router, SingleModel
from app.pool import Pool


@dataclass(frozen=True)
class Point:
    """One router at one knob value over a set of queries."""

    label: str
    knob: float
    score: float
    price: float
    usd_per_1k: float
    calls: dict[str, int]
    by_task: dict[str, tuple[float, float, int]] = field(default_factory=dict)
    """task → (mean score, mean price, queries)."""
    ids: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    query_scores: tuple[float, ...] = ()
    query_prices: tuple[float, ...] = ()
    """Per query, in order: what the bootstrap intervals and the shifted views resample and re-weight."""
    chosen: tuple[str, ...] = ()
    query_costs: tuple[float, ...] = ()

    def restrict(self, ids: Sequence[str]) -> Point:
        """The same picks on a subset of its queries (``ids``, in that order): no routing again."""
        where = {qid: i for i, qid in enumerate(self.ids)}
        rows = [where[qid] for qid in ids]
        return from_queries(
            self.label, self.knob, [self.ids[i] for i in rows], [self.tasks[i] for i in rows],
            [self.query_scores[i] for i in rows], [self.query_prices[i] for i in rows],
            [self.chosen[i] for i in rows], [self.query_costs[i] for i in rows],
        )  # fmt: skip


def from_queries(
    label: str,
    knob: float,
    ids: Sequence[str],
    tasks: Sequence[str],
    scores: Sequence[float],
    prices: Sequence[float],
    chosen: Sequence[str],
    costs: Sequence[float],
) -> Point:
    """A point from per-query records (means, call counts and the per-task table derived from them)."""
    n = max(1, len(ids))
    by_task: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for task, score, cost in zip(tasks, scores, prices, strict=True):
        by_task[task].append((score, cost))
    return Point(
        label=label,
        knob=knob,
        score=sum(scores) / n,
        price=sum(prices) / n,
        usd_per_1k=1000 * sum(costs) / n,
        calls=dict(Counter(chosen).most_common()),
        by_task={
            t: (sum(s for s, _ in v) / len(v), sum(p for _, p in v) / len(v), len(v))
            for t, v in sorted(by_task.items())
        },
        ids=tuple(ids),
        tasks=tuple(tasks),
        query_scores=tuple(scores),
        query_prices=tuple(prices),
        chosen=tuple(chosen),
        query_costs=tuple(costs),
    )


async def evaluate(router: Router, queries: Sequence[Query], pool: Pool) -> Point:
    """Route every query, 'call' the pick through the pool (recorded outcome) and average."""
    candidates = pool.models
    scores: list[float] = []
    prices: list[float] = []
    costs: list[float] = []
    chosen: list[str] = []
    for query in queries:
        name = await router.achoose(query, candidates)
        entry = pool.get(name)
        result = await pool.ask(entry.name, query.question)
        scores.append(result.score if result.score is not None else 0.0)
        prices.append(price(entry))
        costs.append(result.cost)
        chosen.append(entry.name)
    return from_queries(
        router.label, router.knob, [q.id for q in queries], [q.task for q in queries],
        scores, prices, chosen, costs,
    )  # fmt: skip


async def sweep(router: Router, queries: Sequence[Query], pool: Pool) -> list[Point]:
    points = []
    router.prepare(queries)
    for knob in router.knobs:
        router.knob = knob
        points.append(await evaluate(router, queries, pool))
    router.knob = router.knobs[0]
    return points


def pareto(points: Sequence[Point]) -> list[Point]:
    """Points no other point beats on both score (higher) and price (lower), by increasing price."""
    front: list[Point] = []
    for p in sorted(points, key=lambda p: (p.price, -p.score)):
        if not front or p.score > front[-1].score:
            front.append(p)
    return front


@dataclass(frozen=True)
class Summary:
    """RouteLLM-style: cost saving at 95% of the best single model's score, and score at its cost."""

    best_single: Point
    saving_at_95: dict[str, float | None]
    """router → 1 − (cheapest price reaching 0.95 × best single score) / best single price; None if never."""
    score_at_best_cost: dict[str, float | None]
    """router → best score at a price ≤ the best single model's price; None if no point is that cheap."""


def summarise(curves: dict[str, list[Point]]) -> Summary:
    singles = [p for label, pts in curves.items() if label.startswith("single:") for p in pts]
    best = max(singles, key=lambda p: (p.score, -p.price))
    saving: dict[str, float | None] = {}
    at_cost: dict[str, float | None] = {}
    for label, pts in curves.items():
        if label.startswith("single:"):
            continue
        good = [p.price for p in pts if p.score >= 0.95 * best.score]
        saving[label] = 1 - min(good) / best.price if good and best.price else None
        cheap = [p.score for p in pts if p.price <= best.price + 1e-12]
        at_cost[label] = max(cheap) if cheap else None
    return Summary(best, saving, at_cost)


def _fmt(value: float | None, pct: bool = False) -> str:
    if value is None:
        return "—"
    return f"{100 * value:.1f}%" if pct else f"{value:.3f}"


def _calls(point: Point, total: int) -> str:
    return ", ".join(f"{name} {100 * n / total:.0f}%" for name, n in point.calls.items())


def headline(points: Sequence[Point]) -> Point:
    """The point a table row shows: the first knob value (λ = 0, maximum quality)."""
    return points[0]


def markdown(
    curves: dict[str, list[Point]],
    n_queries: int,
    title: str,
    subset: dict[str, list[Point]] | None = None,
    n_subset: int = 0,
) -> str:
    summary = summarise(curves)
    best = summary.best_single
    lines = [
        f"# {title}",
        "",
        f"{n_queries} dev queries. Score: mean recorded score in [0, 1]. Price: mean USD per 1M tokens of the"
        " chosen model (in/out averaged). $/1k q: estimated USD per 1,000 queries (input = chars/4, output ="
        " 256 tokens). Rows show each router at its first knob value (λ = 0); the sweep is below.",
        "",
        "## Overall",
        "",
        "| router | score | $/1M | $/1k q | calls per model |",
        "|---|---:|---:|---:|---|",
    ]
    for label, pts in curves.items():
        p = headline(pts)
        lines.append(
            f"| {label} | {p.score:.3f} | {p.price:.3f} | {p.usd_per_1k:.3f} | {_calls(p, n_queries)} |"
        )
    lines += [
        "",
        f"## RouteLLM summary (best single model: {best.label}, "
        f"score {best.score:.3f} at ${best.price:.2f}/1M)",
        "",
        "| router | cost saving at 95% of best single score | score at best single's cost |",
        "|---|---:|---:|",
    ]
    for label in summary.saving_at_95:
        lines.append(
            f"| {label} | {_fmt(summary.saving_at_95[label], pct=True)} "
            f"| {_fmt(summary.score_at_best_cost[label])} |"
        )
    lines += ["", "## Knob sweeps (λ on normalised price)", "", "| router | λ | score | $/1M | $/1k q |"]
    lines.append("|---|---:|---:|---:|---:|")
    for label, pts in curves.items():
        if len(pts) > 1:
            lines += [
                f"| {label} | {p.knob:g} | {p.score:.3f} | {p.price:.3f} | {p.usd_per_1k:.3f} |" for p in pts
            ]
    front = pareto([p for label, pts in curves.items() if label != "oracle" for p in pts])
    lines += [
        "",
        "Pareto front (oracle excluded): "
        + "; ".join(f"{p.label} λ={p.knob:g} ({p.score:.3f} @ ${p.price:.3f})" for p in front),
    ]
    if subset:
        lines += _subset_table(subset, n_subset)
    lines += ["", "## Per task (score / $/1M)", ""]
    tasks = sorted({t for pts in curves.values() for t in headline(pts).by_task})
    lines.append("| router | " + " | ".join(tasks) + " |")
    lines.append("|---|" + "---:|" * len(tasks))
    for label, pts in curves.items():
        cells = headline(pts).by_task
        row = [f"{cells[t][0]:.2f} / {cells[t][1]:.2f}" if t in cells else "—" for t in tasks]
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _subset_table(subset: dict[str, list[Point]], n: int) -> list[str]:
    summary = summarise(subset)
    best = summary.best_single
    lines = [
        "",
        f"## LLM routers on a task-stratified slice of {n} dev queries (every router on the same slice)",
        "",
        f"Best single model on this slice: {best.label}, score {best.score:.3f} at ${best.price:.2f}/1M.",
        "",
        "| router | λ | score | $/1M | saving at 95% of best single | score at best single's cost "
        "| calls per model |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for label, pts in subset.items():
        saving, at_cost = summary.saving_at_95.get(label), summary.score_at_best_cost.get(label)
        for p in pts:
            lines.append(
                f"| {label} | {p.knob:g} | {p.score:.3f} | {p.price:.3f} | {_fmt(saving, pct=True)} "
                f"| {_fmt(at_cost)} | {_calls(p, n)} |"
            )
            saving = at_cost = None  # a curve's summary is shown once, on its first row
    return lines


def plot(curves: dict[str, list[Point]], out: Path, title: str, stem: str = "recorded_routing") -> list[Path]:
    """Cost-vs-score plot (plotly HTML; PNG too when kaleido is installed). Returns the files written."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for label, pts in curves.items():
        if label.startswith("single:"):
            continue
        fig.add_trace(
            go.Scatter(
                x=[p.price for p in pts],
                y=[p.score for p in pts],
                mode="lines+markers" if len(pts) > 1 else "markers",
                name=label,
                text=[f"λ={p.knob:g}" for p in pts],
            )
        )
    singles = [headline(pts) for label, pts in curves.items() if label.startswith("single:")]
    fig.add_trace(
        go.Scatter(
            x=[p.price for p in singles],
            y=[p.score for p in singles],
            mode="markers+text",
            name="single models",
            text=[p.label.removeprefix("single:") for p in singles],
            textposition="top center",
            marker={"symbol": "diamond", "size": 9},
        )
    )
    front = pareto([p for label, pts in curves.items() if label != "oracle" for p in pts])
    fig.add_trace(
        go.Scatter(
            x=[p.price for p in front],
            y=[p.score for p in front],
            mode="lines",
            name="Pareto front (no oracle)",
            line={"dash": "dash", "color": "black"},
        )
    )
    fig.update_layout(
        title=title, xaxis_title="mean price of chosen model (USD / 1M tokens)", yaxis_title="mean score"
    )
    out.mkdir(parents=True, exist_ok=True)
    html = out / f"{stem}.html"
    fig.write_html(html, include_plotlyjs="cdn")
    written = [html]
    try:
        png = out / f"{stem}.png"
        fig.write_image(png)
        written.append(png)
    except Exception:  # no kaleido / no Chrome: HTML only
        pass
    return written


def select_singles(pool: Pool) -> list[Router]:
    return [SingleModel(m.name) for m in pool.models]
