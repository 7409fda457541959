"""Report sections for the shifted views: each router against the best single model, with 95% intervals.

A view is a set of curves (router → points over its knob) plus optional per-query weights (the re-weighted
mix). Every score carries a bootstrap interval; a router "beats" the best single model when the paired
interval of its difference lies above 0; "to oracle" is how far it goes from the best single model's score
to the oracle's (0% = no better than the best single model, 100% = the oracle).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.bench.leaderboard import Point
from app.evaluation import intervals

PRICE_SHARE = 0.5
"""The issue's operating point: at most half the best single model's price."""


@dataclass(frozen=True)
class View:
    name: str
    curves: dict[str, list[Point]]
    weights: np.ndarray | None = None

    def score(self, p: Point) -> float:
        return float(np.average(p.query_scores, weights=self.weights))

    def price(self, p: Point) -> float:
        return float(np.average(p.query_prices, weights=self.weights))

    @property
    def n(self) -> int:
        return len(next(iter(self.curves.values()))[0].query_scores)

    def best_single(self) -> Point:
        singles = [pts[0] for label, pts in self.curves.items() if label.startswith("single:")]
        if not singles:
            raise ValueError(f"view {self.name!r} has no single-model rows to compare against")
        return max(singles, key=lambda p: (self.score(p), -self.price(p)))


@dataclass(frozen=True)
class Row:
    """One router at one knob, compared with the view's best single model."""

    label: str
    point: Point
    score: intervals.Interval
    price: float
    diff: intervals.Interval
    to_oracle: float | None


def compare(view: View, point: Point, best: Point, oracle: Point | None) -> Row:
    score = intervals.bootstrap(point.query_scores, view.weights)
    diff = intervals.paired(point.query_scores, best.query_scores, view.weights)
    gap = view.score(oracle) - view.score(best) if oracle else 0.0
    to_oracle = (score.mean - view.score(best)) / gap if oracle and gap > 0 else None
    return Row(point.label, point, score, view.price(point), diff, to_oracle)


def cheap_best(view: View, points: Sequence[Point], cap: float) -> Point | None:
    """The sweep's best-scoring point at a price ≤ cap (chosen on the test queries: optimistic)."""
    cheap = [p for p in points if view.price(p) <= cap + 1e-12]
    return max(cheap, key=lambda p: (view.score(p), -view.price(p))) if cheap else None


def rows(view: View) -> tuple[Point, list[Row]]:
    """The best single model, then per router: its first knob, and (with a sweep) its best point ≤ cap."""
    best = view.best_single()
    oracle = view.curves["oracle"][0] if "oracle" in view.curves else None
    cap = PRICE_SHARE * view.price(best)
    out = []
    for label, pts in view.curves.items():
        if label.startswith("single:") and pts[0] is not best:
            continue
        out.append(compare(view, pts[0], best, oracle))
        cheap = cheap_best(view, pts, cap) if len(pts) > 1 else None
        if cheap is not None and cheap is not pts[0]:
            out.append(compare(view, cheap, best, oracle))
    return best, out


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def view_table(view: View) -> list[str]:
    best, table = rows(view)
    lines = [
        f"### {view.name} ({view.n} queries)",
        "",
        f"Best single model: {best.label}, {intervals.bootstrap(best.query_scores, view.weights)} at "
        f"${view.price(best):.3f}/1M; the ≤ {100 * PRICE_SHARE:.0f}% price point is ≤ "
        f"${PRICE_SHARE * view.price(best):.3f}.",
        "",
        "| router | λ | score [95% CI] | $/1M | Δ vs best single [paired 95% CI] | beats | to oracle |",
        "|---|---:|---|---:|---|:---:|---:|",
    ]
    for r in table:
        beats = "yes" if r.diff.above_zero else ("worse" if r.diff.high < 0 else "no")
        lines.append(
            f"| {r.label} | {r.point.knob:.3g} | {r.score} | {r.price:.3f} | {r.diff.mean:+.3f} "
            f"[{r.diff.low:+.3f}, {r.diff.high:+.3f}] | {beats} | {_pct(r.to_oracle)} |"
        )
    return [*lines, ""]


def side_by_side(views: Sequence[View], labels: Sequence[str]) -> list[str]:
    """One row per router: its best point at ≤ half the best single price in each view (Δ with CI)."""
    head = "| router | " + " | ".join(v.name for v in views) + " |"
    lines = [head, "|---|" + "---|" * len(views)]
    for label in labels:
        cells = []
        for view in views:
            pts = view.curves.get(label)
            best = view.best_single()
            point = cheap_best(view, pts, PRICE_SHARE * view.price(best)) if pts else None
            if point is None:
                cells.append("—")
                continue
            row = compare(view, point, best, view.curves.get("oracle", [None])[0])
            mark = " **beats**" if row.diff.above_zero else ""
            cells.append(
                f"{row.score.mean:.3f} @ ${row.price:.2f}, Δ {row.diff.mean:+.3f} "
                f"[{row.diff.low:+.3f}, {row.diff.high:+.3f}]{mark}, λ={point.knob:.3g}"
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def calibration_table(views: Sequence[View], labels: Sequence[str]) -> list[str]:
    """Calibrated routers: their target (price, or share of calls to the top price tier) vs what they
    reached on each view's test queries, and their score."""
    lines = [
        "| router (target) | " + " | ".join(f"{v.name}: reached (vs target), score" for v in views) + " |"
    ]
    lines.append("|---|" + "---|" * len(views))
    for label in labels:
        cells = []
        for view in views:
            pts = view.curves.get(label)
            if not pts:
                cells.append("—")
                continue
            top = max(max(p.query_prices) for ps in view.curves.values() for p in ps)
            point = pts[0]
            if "$" in label:
                target, got = float(label.rsplit("$", 1)[1]), view.price(point)
                shown = f"${got:.3f}"
            else:
                target = float(label.rsplit("@", 1)[1].split("%")[0]) / 100
                strong = (np.asarray(point.query_prices) >= top - 1e-12).astype(float)
                got = float(np.average(strong, weights=view.weights))
                shown = f"{100 * got:.0f}% strong"
            off = f" ({100 * (got / target - 1):+.0f}%)" if target else ""
            cells.append(f"{shown}{off}, {view.score(point):.3f} at ${view.price(point):.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*lines, ""]
