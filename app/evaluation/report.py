"""report.md from a results directory: Router-R1-paper-style tables and a cost-vs-accuracy Pareto plot."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any

from app.evaluation.runner import read_records

METRICS = ("accuracy", "em", "f1", "sub_em")
ORDER = ("single:", "cheapest", "largest", "random", "prompt-router", "router-r1", "r2-reasoner", "oracle")


@dataclass
class Row:
    method: str
    dataset: str
    n: int
    accuracy: float
    em: float
    f1: float
    sub_em: float
    total_cost: float
    cost_per_item: float
    pool_cost_per_item: float
    """Cost of the calls to pool models only (Router-R1's cost: the router's own tokens left out)."""
    latency_per_item: float
    calls_per_item: float
    failed: int = 0


@dataclass
class Report:
    datasets: list[str]
    rows: dict[tuple[str, str], Row]
    """(method, dataset or 'Average') → aggregate."""
    pareto: list[str]
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    normalizations: dict[str, list[str]] = field(default_factory=dict)
    """Answer normalisation of EM / F1 / Sub-EM (``official``, ``unicode``) → the methods scored with it."""

    @property
    def methods(self) -> list[str]:
        return sorted({m for m, _ in self.rows}, key=_method_key)


def _method_key(method: str) -> tuple[int, str]:
    for i, prefix in enumerate(ORDER):
        if method == prefix or (prefix.endswith(":") and method.startswith(prefix)):
            return i, method
    return len(ORDER), method


def load_results(results_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """method → its records (the last one per dataset and item)."""
    by_method: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in sorted(results_dir.glob("*.jsonl")):
        for record in read_records(path).values():
            by_method[record["method"]].append(record)
    return dict(by_method)


def _aggregate(method: str, dataset: str, records: list[dict[str, Any]]) -> Row:
    n = len(records)
    return Row(
        method=method,
        dataset=dataset,
        n=n,
        accuracy=mean(r["correct"] for r in records),
        em=mean(r["em"] for r in records),
        f1=mean(r["f1"] for r in records),
        sub_em=mean(r["sub_em"] for r in records),
        total_cost=sum(r["cost"] for r in records),
        cost_per_item=sum(r["cost"] for r in records) / n,
        pool_cost_per_item=sum(r.get("pool_cost", r["cost"]) for r in records) / n,
        latency_per_item=mean(r["latency_s"] for r in records),
        calls_per_item=mean(r["calls"] for r in records),
        failed=sum(r["status"] != "ok" for r in records),
    )


def _average(method: str, rows: list[Row]) -> Row:
    """The paper's 'Avg.': the mean over datasets of each per-dataset figure (total cost is summed)."""
    return Row(
        method=method,
        dataset="Average",
        n=sum(r.n for r in rows),
        accuracy=mean(r.accuracy for r in rows),
        em=mean(r.em for r in rows),
        f1=mean(r.f1 for r in rows),
        sub_em=mean(r.sub_em for r in rows),
        total_cost=sum(r.total_cost for r in rows),
        cost_per_item=mean(r.cost_per_item for r in rows),
        pool_cost_per_item=mean(r.pool_cost_per_item for r in rows),
        latency_per_item=mean(r.latency_per_item for r in rows),
        calls_per_item=mean(r.calls_per_item for r in rows),
        failed=sum(r.failed for r in rows),
    )


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names of the (cost, accuracy) points no other point beats (cheaper-or-equal and as accurate)."""
    front = []
    for name, (cost, acc) in points.items():
        dominated = any(
            c <= cost and a >= acc and (c < cost or a > acc)
            for other, (c, a) in points.items()
            if other != name
        )
        if not dominated:
            front.append(name)
    return sorted(front, key=lambda n: points[n])


def build(results_dir: Path) -> Report:
    by_method = load_results(results_dir)
    datasets = sorted({r["dataset"] for records in by_method.values() for r in records})
    rows: dict[tuple[str, str], Row] = {}
    for method, records in by_method.items():
        per_dataset = []
        for dataset in datasets:
            subset = [r for r in records if r["dataset"] == dataset]
            if subset:
                rows[(method, dataset)] = row = _aggregate(method, dataset, subset)
                per_dataset.append(row)
        rows[(method, "Average")] = _average(method, per_dataset)
    points = {m: (r.cost_per_item, r.accuracy) for (m, d), r in rows.items() if d == "Average"}
    normalizations: dict[str, set[str]] = defaultdict(set)
    for method, records in by_method.items():
        for record in records:  # records from before the option have no key: scored the official way
            normalizations[record.get("normalize", "official")].add(method)
    return Report(
        datasets=datasets,
        rows=rows,
        pareto=pareto_front(points),
        normalizations={k: sorted(v, key=_method_key) for k, v in sorted(normalizations.items())},
    )


def normalization_note(report: Report) -> str:
    """Which answer normalisation the EM / F1 / Sub-EM figures use; the lenient one is named loudly."""
    used = report.normalizations or {"official": []}
    if set(used) == {"official"}:
        return (
            "EM, F1 and Sub-EM are the official SQuAD v1.1 scores (ASCII punctuation removed, no Unicode "
            "normalisation), as in published tables."
        )
    lenient = (
        "the lenient `unicode` normalisation (NFKC folding, every Unicode punctuation mark removed), "
        "not the official SQuAD one: not comparable with published tables"
    )
    if set(used) == {"unicode"}:
        return f"**EM, F1 and Sub-EM use {lenient}.**"
    mixed = "; ".join(f"`{name}`: {', '.join(methods)}" for name, methods in used.items())
    return f"**Mixed normalisations** ({mixed}). `unicode` is {lenient}."


def _money(value: float) -> str:
    return f"{value:.2e}" if 0 < value < 1e-3 else f"{value:.4f}"


def markdown(report: Report, title: str = "Evaluation report", intro: str = "") -> str:
    methods, datasets = report.methods, report.datasets
    lines = [f"# {title}", "", *([intro.strip(), ""] if intro.strip() else [])]
    lines += [
        "Accuracy is each task's primary metric: exact match (QA), final-number equality (math), "
        "choice letter (multiple choice). Costs in USD at the pool's prices; 'pool $/item' leaves out the "
        "router's own tokens (Router-R1's cost), 'cost/item' counts every call.",
        "",
        normalization_note(report),
        "",
        "## Accuracy by dataset",
        "",
        "| Method | " + " | ".join(datasets) + " | Avg. | Cost/item $ |",
        "|---|" + "---:|" * (len(datasets) + 2),
    ]
    for m in methods:
        cells = [f"{report.rows[(m, d)].accuracy:.3f}" if (m, d) in report.rows else "–" for d in datasets]
        avg = report.rows[(m, "Average")]
        lines.append(
            f"| {m} | " + " | ".join(cells) + f" | {avg.accuracy:.3f} | {_money(avg.cost_per_item)} |"
        )
    for dataset in [*datasets, "Average"]:
        lines += [
            "",
            f"## {dataset}",
            "",
            "| Method | n | Acc | EM | F1 | Sub-EM | Total cost $ | Cost/item $ | Pool $/item "
            "| Latency s/item | Calls/item | Failed |",
            "|---|" + "---:|" * 11,
        ]
        for m in methods:
            r = report.rows.get((m, dataset))
            if r is None:
                continue
            lines.append(
                f"| {m} | {r.n} | {r.accuracy:.3f} | {r.em:.3f} | {r.f1:.3f} | {r.sub_em:.3f} | "
                f"{_money(r.total_cost)} | {_money(r.cost_per_item)} | {_money(r.pool_cost_per_item)} | "
                f"{r.latency_per_item:.2f} | {r.calls_per_item:.2f} | {r.failed} |"
            )
    lines += ["", "## Cost vs accuracy", "", "Pareto front (average over datasets, cheapest first): "]
    lines[-1] += ", ".join(f"**{m}**" for m in report.pareto) + "."
    lines += [""] + [
        f"- [{p.name}]({p.name})" if p.suffix != ".png" else f"![cost vs accuracy]({p.name})"
        for p in report.files
    ]
    lines += [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


def plot(report: Report, out_dir: Path, stem: str = "cost_accuracy") -> tuple[list[Path], list[str]]:
    """Interactive HTML (plotly, JS from the CDN) and a PNG (kaleido, else matplotlib, else none)."""
    import plotly.graph_objects as go

    avg = {m: report.rows[(m, "Average")] for m in report.methods}
    front = report.pareto
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[avg[m].cost_per_item for m in avg],
            y=[avg[m].accuracy for m in avg],
            mode="markers+text",
            text=list(avg),
            textposition="top center",
            name="methods",
            hovertemplate="%{text}<br>cost/item $%{x:.3g}<br>accuracy %{y:.3f}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[avg[m].cost_per_item for m in front],
            y=[avg[m].accuracy for m in front],
            mode="lines",
            line={"dash": "dash"},
            name="Pareto front",
        )
    )
    fig.update_layout(
        title="Cost vs accuracy (average over datasets)",
        xaxis_title="cost per item (USD)",
        yaxis_title="accuracy",
        template="plotly_white",
    )
    html = out_dir / f"{stem}.html"
    fig.write_html(html, include_plotlyjs="cdn")
    files, notes = [html], []
    png = out_dir / f"{stem}.png"
    try:
        fig.write_image(png, width=900, height=600)
        files.append(png)
    except Exception as exc:  # kaleido missing or without a browser
        try:
            _matplotlib_png(avg, front, png)
            files.append(png)
        except ImportError:
            notes.append(
                f"no PNG: plotly could not write one ({type(exc).__name__}) and matplotlib is absent"
            )
    return files, notes


def _matplotlib_png(avg: dict[str, Row], front: list[str], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 6))
    for method, row in avg.items():
        axes.scatter(row.cost_per_item, row.accuracy)
        axes.annotate(method, (row.cost_per_item, row.accuracy), fontsize=8)
    axes.plot([avg[m].cost_per_item for m in front], [avg[m].accuracy for m in front], "--", label="Pareto")
    axes.set_xlabel("cost per item (USD)")
    axes.set_ylabel("accuracy")
    axes.legend()
    figure.savefig(png, dpi=100)
    plt.close(figure)


def write_report(
    results_dir: Path, out: Path | None = None, *, title: str = "Evaluation report", intro: str = ""
) -> Report:
    """Build the report of ``results_dir``, draw the plot next to ``out`` (default report.md), write it."""
    out = out or results_dir / "report.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = build(results_dir)
    if not report.rows:
        raise ValueError(f"{results_dir}: no results (*.jsonl) to report on")
    report.files, report.notes = plot(report, out.parent, stem=out.stem + "_cost_accuracy")
    out.write_text(markdown(report, title, intro))
    return report
