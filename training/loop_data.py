"""The learning loop's questions and training rows, pure: slices of the samples, the table of what each pool
model answered, the questions worth training on, and the warm-start and GRPO rows built from them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.evaluation.baselines import oracle_record
from app.evaluation.data import Dataset, EvalItem, load_dataset
from app.pool import Pool
from graphs.answers import answer_format
from graphs.router_r1 import rules
from training.data import grpo_row, router_prompt

Key = tuple[str, str]
"""(dataset, item id): how the evaluation harness keys its records."""
Records = Mapping[Key, dict[str, Any]]

_SLICE = re.compile(r"^(?P<name>[^\[\]]+?)(?:\[(?P<start>\d*):(?P<stop>\d*)\])?$")
THOUGHTS = {
    "number": "A maths problem: the cheapest model likely to solve it.",
    "choice": "A multiple-choice question: the cheapest model likely to get it right.",
    "span": "A factual question: the cheapest model likely to know it.",
}
"""The warm start's thought per answer format: one line, no tag, within the step grammar's 100 characters
whatever the pool's names (the model is named in the route call that follows)."""
PICKS = ("disagree", "all")


@dataclass(frozen=True)
class Slice:
    """Items ``start`` to ``stop`` (exclusive; None: to the end) of a sample name or QA file."""

    name: str
    start: int = 0
    stop: int | None = None

    def __str__(self) -> str:
        return f"{self.name}[{self.start}:{'' if self.stop is None else self.stop}]"


def parse_slice(spec: str) -> Slice:
    """``gsm8k[120:240]``, ``csqa[70:]`` or a bare name (every item).

    >>> parse_slice("gsm8k[120:240]")
    Slice(name='gsm8k', start=120, stop=240)
    """
    match = _SLICE.match(spec.strip())
    if match is None:
        raise ValueError(f"{spec!r} is not a slice: write name[start:stop], e.g. gsm8k[120:240]")
    start = int(match["start"] or 0)
    stop = int(match["stop"]) if match["stop"] else None
    if stop is not None and stop <= start:
        raise ValueError(f"{spec!r} selects no items: its stop is not after its start")
    return Slice(match["name"].strip(), start, stop)


def load_slice(part: Slice) -> Dataset:
    """The slice's items (a DataError names an unknown sample or a bad file); a slice of none is refused."""
    limit = None if part.stop is None else part.stop - part.start
    dataset = load_dataset(part.name, limit=limit, skip=part.start)
    if not dataset.items:
        raise ValueError(f"{part} selects no items: {part.name} has fewer than {part.start + 1}")
    return dataset


def check_disjoint(train: Sequence[Dataset], held_out: Sequence[Dataset]) -> None:
    """Refuse a held-out question that is also a training question (same text, whatever the file)."""
    seen = {item.prompt.strip() for dataset in train for item in dataset.items}
    for dataset in held_out:
        shared = [item.id for item in dataset.items if item.prompt.strip() in seen]
        if shared:
            raise ValueError(
                f"held-out {dataset.name} items {shared[:5]} are training questions too: "
                "make the slices disjoint"
            )


def outcome_table(singles: Mapping[str, Records], models: Sequence[str]) -> dict[Key, dict[str, Any]]:
    """Per question, every pool model's ``single:<model>`` record; questions some model has not answered
    (a failed call) are left out: whether the pool disagrees on them is not known."""
    keys = set.intersection(*(set(singles.get(f"single:{m}", {})) for m in models)) if models else set()
    return {key: {f"single:{m}": singles[f"single:{m}"][key] for m in models} for key in sorted(keys)}


@dataclass(frozen=True)
class Picked:
    kept: list[Key]
    all_right: int
    all_wrong: int

    @property
    def considered(self) -> int:
        return len(self.kept) + self.all_right + self.all_wrong


def pick(table: Mapping[Key, Mapping[str, dict[str, Any]]], mode: str = "disagree") -> Picked:
    """The questions to train on. ``disagree``: those where at least one pool model was right and one wrong;
    on the others every route gives the same outcome, so a GRPO group there has no reward spread at α=0
    and teaches nothing. ``all``: every question (to measure what that costs)."""
    if mode not in PICKS:
        raise ValueError(f"pick must be one of {', '.join(PICKS)}, not {mode!r}")
    kept, all_right, all_wrong = [], 0, 0
    for key, records in table.items():
        right = [r["correct"] >= 1.0 for r in records.values()]
        if all(right):
            all_right += 1
        elif not any(right):
            all_wrong += 1
        if mode == "all" or (any(right) and not all(right)):
            kept.append(key)
    return Picked(kept=kept, all_right=all_right, all_wrong=all_wrong)


def first_step(question: str, model: str) -> str:
    """The router's first step routing ``question`` to ``model``, exactly as the serving grammar shapes it:
    a one-line thought, then the question passed on whole."""
    thought = THOUGHTS[answer_format(question)]
    return f"<think> {thought} </think>\n<search> {model}: {rules.passed_on(question)} </search>"


def warm_start_rows(
    items: Mapping[Key, EvalItem], table: Mapping[Key, Mapping[str, dict[str, Any]]], pool: Pool
) -> list[dict[str, Any]]:
    """SFT rows (prompt-completion): for each question its first step to the cheapest model that answered
    it right in the stored runs (the oracle's pick; the cheapest model where none did). Only the router's
    step is a target: the information and the relayed answer are the environment's."""
    rows = []
    for key, item in items.items():
        chosen = oracle_record(dict(table[key]), pool)
        assert chosen is not None  # every question in the table has single-model records
        completion = [{"role": "assistant", "content": first_step(item.prompt, chosen["picked"])}]
        rows.append({"prompt": router_prompt(item.prompt, pool.models), "completion": completion})
    return rows


def grpo_rows(items: Mapping[Key, EvalItem], pool: Pool) -> list[dict[str, Any]]:
    return [grpo_row(item.prompt, item.answers, pool.models) for item in items.values()]


def source_runs(records: Sequence[Records], keys: Sequence[Key]) -> list[int]:
    """The stored runs behind ``keys`` in any of ``records`` (a training run's provenance), in id order."""
    wanted = set(keys)
    return sorted(
        {int(r["run_id"]) for recs in records for k, r in recs.items() if k in wanted and r.get("run_id")}
    )
