"""The learning loop's report, pure: per-step training signal, the before/after table on held-out questions
with paired bootstrap intervals, the α sweep, provenance and wall time, as Markdown."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.config import PROJECT_ROOT
from app.evaluation.intervals import Interval, bootstrap, paired
from training.loop_data import Key, Picked, Records

STEP_COLUMNS = (
    ("step", "step"),
    ("reward", "reward"),
    ("accuracy", "accuracy (EM)"),
    ("cost", "cost $"),
    ("format_rate", "format rate"),
    ("frac_reward_zero_std", "zero-spread groups"),
    ("loss", "loss"),
)
"""Per-step metrics the training run stores (TRL's names) and their column titles."""


@dataclass
class LoopResults:
    """Everything the report shows; built by :mod:`training.loop`."""

    command: str
    machine: str
    pool_file: str
    train: list[str]
    held_out: list[str]
    report_only: list[str]
    picked: Picked
    picked_by_dataset: dict[str, int]
    sft: dict[str, Any] | None
    grpo: dict[float, dict[str, Any]]
    """α → the GRPO training run's summary (training_run_id, checkpoint, steps)."""
    routers: Mapping[str, Records]
    """Router label (``untrained``, ``current``, ``α=0.2``…) → its Router-R1 records on the questions."""
    baselines: Mapping[str, Records]
    held_out_sets: list[str]
    timings: dict[str, float]
    this_run_s: float
    served: str
    router_yaml: str
    notes: list[str] = field(default_factory=list)


def trained_label(alpha: float) -> str:
    return f"α={alpha:g}"


def summary(records: Records, keys: Sequence[Key]) -> dict[str, float] | None:
    """Accuracy, mean cost (all and pool calls only), mean reward, format-error and max-turns shares."""
    rows = [records[k] for k in keys if k in records]
    if not rows:
        return None
    n = len(rows)

    def mean(name: str) -> float:
        return sum(float(r.get(name) or 0.0) for r in rows) / n

    return {
        "n": n,
        "accuracy": mean("correct"),
        "cost": mean("cost"),
        "pool_cost": mean("pool_cost"),
        "reward": mean("reward"),
        "format_errors": mean("format_error"),
        "max_turns": sum(1.0 for r in rows if str(r.get("ended_by") or "").startswith("max turns")) / n,
        "calls": mean("calls"),
    }


def difference(a: Records, b: Records, keys: Sequence[Key], column: str) -> tuple[int, Interval] | None:
    """Mean of a − b on ``column`` over the questions both answered, with its paired bootstrap interval."""
    common = [k for k in keys if k in a and k in b]
    if not common:
        return None
    return len(common), paired([float(a[k][column]) for k in common], [float(b[k][column]) for k in common])


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value else f"{value:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]


def step_table(steps: Sequence[Mapping[str, Any]]) -> list[str]:
    """One row per logged optimisation step: reward, accuracy, cost, format rate, zero-spread share, loss."""
    logged = [s for s in steps if "reward" in s or "loss" in s]
    rows = [
        [_num(s.get(key), 4) if key != "step" else str(s["step"]) for key, _ in STEP_COLUMNS] for s in logged
    ]
    return _table([title for _, title in STEP_COLUMNS], rows)


def keys_of(
    routers: Mapping[str, Records], baselines: Mapping[str, Records], datasets: Sequence[str]
) -> list[Key]:
    every = {k for recs in [*routers.values(), *baselines.values()] for k in recs}
    return sorted(k for k in every if k[0] in datasets)


def before_after(results: LoopResults, keys: Sequence[Key]) -> list[str]:
    header = [
        "router / method",
        "n",
        "accuracy [95% CI]",
        "mean cost $",
        "pool cost $",
        "reward (α=0)",
        "format errors",
        "ended by max turns",
    ]
    rows = []
    for label, records in [*results.routers.items(), *results.baselines.items()]:
        got = summary(records, keys)
        if got is None:
            continue
        is_router = label in results.routers
        rows.append(
            [
                f"{'router-r1 · ' if is_router else ''}{label}",
                str(got["n"]),
                str(bootstrap([records[k]["correct"] for k in keys if k in records])),
                _num(got["cost"]),
                _num(got["pool_cost"]),
                _num(got["reward"]) if is_router else "",
                f"{got['format_errors']:.1%}" if is_router else "",
                f"{got['max_turns']:.1%}" if is_router else "",
            ]
        )
    return _table(header, rows)


def paired_rows(results: LoopResults, scopes: Mapping[str, Sequence[Key]]) -> list[str]:
    rows = []
    for alpha in results.grpo:
        trained = results.routers.get(trained_label(alpha))
        if trained is None:
            continue
        for baseline in ("untrained", "current"):
            other = results.routers.get(baseline)
            if other is None:
                continue
            for scope, keys in scopes.items():
                accuracy = difference(trained, other, keys, "correct")
                cost = difference(trained, other, keys, "cost")
                if accuracy is None or cost is None:
                    continue
                rows.append(
                    [
                        f"{trained_label(alpha)} − {baseline}",
                        scope,
                        str(accuracy[0]),
                        str(accuracy[1]),
                        "yes" if accuracy[1].above_zero else "no",
                        f"{cost[1].mean:+.3g} [{cost[1].low:.3g}, {cost[1].high:.3g}]",
                    ]
                )
    header = [
        "comparison",
        "questions",
        "n",
        "accuracy difference [95% CI]",
        "above 0",
        "cost difference $ [95% CI]",
    ]
    return _table(header, rows)


def routed_shares(records: Sequence[dict[str, Any]]) -> str:
    """Which models the runs routed to: each model's share of the runs that called it."""
    calls = Counter(model for record in records for model in set(record.get("routed", [])))
    return ", ".join(f"{model} {count / len(records):.0%}" for model, count in sorted(calls.items()))


def alpha_sweep(results: LoopResults, keys: Sequence[Key]) -> list[str]:
    rows = []
    for alpha in sorted(results.grpo):
        records = results.routers.get(trained_label(alpha), {})
        got = summary(records, keys)
        if got is None:
            continue
        cells = [_num(got[name]) for name in ("accuracy", "cost", "pool_cost")]
        routed = routed_shares([records[k] for k in keys if k in records])
        rows.append([f"{alpha:g}", *cells, _num(got["calls"], 2), routed])
    header = ["α", "accuracy", "mean cost $", "pool cost $", "calls per run", "routed to (share of runs)"]
    return _table(header, rows)


def targets(results: LoopResults, held: Sequence[Key]) -> list[str]:
    """Issue 18's targets, each as measured here: the report claims nothing its numbers do not show."""
    lines = []
    untrained = results.routers.get("untrained", {})
    for alpha in sorted(results.grpo):
        trained = results.routers.get(trained_label(alpha), {})
        accuracy = difference(trained, untrained, held, "correct")
        mine, theirs = summary(trained, held), summary(untrained, held)
        if accuracy is None or mine is None or theirs is None:
            continue
        above = "above 0" if accuracy[1].above_zero else "not above 0"
        cheaper = "equal or lower" if mine["cost"] <= theirs["cost"] else "higher"
        lines.append(
            f"- {trained_label(alpha)} vs the untrained router on {accuracy[0]} held-out questions: "
            f"accuracy difference {accuracy[1]} ({above}); mean cost ${mine['cost']:.3g} vs "
            f"${theirs['cost']:.3g} ({cheaper}); reward {mine['reward']:.3f} vs {theirs['reward']:.3f}; "
            f"format errors {mine['format_errors']:.1%} vs {theirs['format_errors']:.1%}."
        )
    zero = results.routers.get(trained_label(0.0), {})
    base = summary(zero, held)
    for alpha in sorted(a for a in results.grpo if a > 0):
        records = results.routers.get(trained_label(alpha), {})
        got, cost_change = summary(records, held), difference(records, zero, held, "cost")
        accuracy = difference(records, zero, held, "correct")
        if got is None or base is None or cost_change is None or accuracy is None:
            continue
        cost = cost_change[1]
        verdict = "less" if cost.high < 0 else "not clearly less"  # the paired interval lies below 0
        # The pool cost is what α weighs in training; the mean cost adds the router's own tokens.
        lines.append(
            f"- α={alpha:g} spends {verdict} than α=0: ${got['cost']:.3g} vs ${base['cost']:.3g} a question, "
            f"difference ${cost.mean:.3g} [{cost.low:.3g}, {cost.high:.3g}] (pool calls "
            f"${got['pool_cost']:.3g} vs ${base['pool_cost']:.3g}), at an accuracy difference of "
            f"{accuracy[1]} on {accuracy[0]} held-out questions."
        )
    spreads = [s["frac_reward_zero_std"] for r in results.grpo.values() for s in r["steps"] if _spread(s)]
    if spreads:
        lines.append(
            f"- GRPO groups with zero reward spread: {sum(spreads) / len(spreads):.1%} on average over "
            f"{len(spreads)} steps."
        )
    total = sum(results.timings.values())
    within = "within" if total <= 3600 else "over"
    lines.append(f"- Wall time of the whole loop: {total / 60:.1f} min ({within} 60 minutes).")
    return lines


def _spread(step: Mapping[str, Any]) -> bool:
    return step.get("frac_reward_zero_std") is not None


INTRO = (
    "Stages: every pool model answers each train question (stored `single:<model>` runs, the gold answer as "
    "feedback: they fill the replay cache) and the current router answers them too; the questions where the "
    "pool disagrees are kept; an SFT warm start teaches the router to train a first step to the cheapest "
    "model that was right; GRPO per α from there, its rollouts served from the replay cache; the checkpoint "
    "is exported to GGUF and served as the router; every router answers held-out questions no stage "
    "trained on."
)


def render(results: LoopResults) -> str:
    held = keys_of(results.routers, results.baselines, results.held_out_sets)
    answered = sorted({k[0] for r in results.routers.values() for k in r})
    every = keys_of(results.routers, results.baselines, answered)
    picked = results.picked
    kept = ", ".join(f"{n} {d}" for d, n in sorted(results.picked_by_dataset.items())) or "none"
    out = [
        "# The learning loop: stored traces → GRPO → a router that answers more questions right",
        "",
        f"`{results.command}` · {results.machine} · pool `{results.pool_file}` · wall time "
        f"{sum(results.timings.values()) / 60:.1f} min in all, {results.this_run_s / 60:.1f} min in the last "
        "invocation.",
        "",
        INTRO,
        "",
        "## Data",
        "",
        f"Train: {', '.join(results.train)}. Held-out: {', '.join(results.held_out)}. Reported only: "
        f"{', '.join(results.report_only) or 'none'}.",
        "",
        f"Of {picked.considered} train questions every pool model answered, {len(picked.kept)} were kept "
        f"({kept}); every model was right on {picked.all_right} and wrong on {picked.all_wrong}.",
        "",
        "## Training",
        "",
    ]
    if results.sft is not None:
        losses = [s["loss"] for s in results.sft["steps"] if "loss" in s]
        trend = f", loss {losses[0]:.3f} → {losses[-1]:.3f}" if losses else ""
        out += [
            f"SFT warm start: training run {results.sft['training_run_id']}, {len(losses)} steps{trend}.",
            "",
        ]
    for alpha, run in sorted(results.grpo.items()):
        out += [f"### GRPO α={alpha:g}: training run {run['training_run_id']} → `{run['checkpoint']}`", ""]
        out += step_table(run["steps"])
    out += ["## Before and after: held-out questions", "", f"{len(held)} questions.", ""]
    out += before_after(results, held)
    for name in sorted(set(answered) - set(results.held_out_sets)):
        scope = [k for k in every if k[0] == name]
        out += [f"### {name} (reported only, {len(scope)} questions)", "", *before_after(results, scope)]
    out += [
        "## Paired differences",
        "",
        "Paired bootstrap 95% intervals (1,000 resamples of the questions).",
        "",
    ]
    out += paired_rows(results, {"held-out": held, "all": every})
    out += ["## α sweep (held-out)", "", *alpha_sweep(results, held)]
    out += ["## Targets", "", *targets(results, held), ""]
    out += ["## Provenance and serving", ""]
    if results.sft is not None:
        out.append(f"- SFT: training run {results.sft['training_run_id']} → `{results.sft['checkpoint']}`")
    out += [
        f"- GRPO α={a:g}: training run {r['training_run_id']} → `{r['checkpoint']}`"
        for a, r in sorted(results.grpo.items())
    ]
    out += [
        "",
        "Each training run's `source_run_ids` are the stored runs it learnt from; every evaluation run "
        "carries its router's weights in `router_checkpoint`.",
        "",
        f"Served router: {results.served}. Settings: `{results.router_yaml}` (`routegraph ask --config "
        f"{results.router_yaml} QUESTION`; the app: `ROUTEGRAPH_CONFIG={results.router_yaml}`).",
        "",
        "## Wall time",
        "",
        *_table(["stage", "minutes"], [[stage, f"{s / 60:.1f}"] for stage, s in results.timings.items()]),
        *(f"- {note}" for note in results.notes),
    ]
    # Paths as the project's reader sees them (the report is committed), not as this machine holds them.
    return "\n".join(out).rstrip().replace(f"{PROJECT_ROOT}/", "") + "\n"
