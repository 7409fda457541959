"""The learning loop's pure parts (slices, picking, warm-start targets, the report, recipe checks) and its
command's refusals; no model is loaded and no server started here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from app.cli import app
from app.config import PROJECT_ROOT
from app.evaluation.data import EvalItem, load_dataset
from app.evaluation.intervals import bootstrap
from app.evaluation.qa_file import DataError
from graphs.router_r1 import prompts, rules
from storage import db
from tests.fakes import BIG, SMALL, make_fake_pool
from training import loop_eval
from training.common import load_recipe
from training.loop import Clock, LoopRecipe, absolute_url, finished
from training.loop_data import (
    THOUGHTS,
    Slice,
    check_disjoint,
    first_step,
    grpo_rows,
    load_slice,
    outcome_table,
    parse_slice,
    pick,
    source_runs,
    warm_start_rows,
)
from training.loop_report import LoopResults, render, summary
from training.rewards import route_step

RECIPES = Path(__file__).resolve().parents[2] / "training" / "recipes"
runner = CliRunner()


# -- slices ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("gsm8k[120:240]", Slice("gsm8k", 120, 240)),
        ("csqa[70:]", Slice("csqa", 70, None)),
        ("nq", Slice("nq", 0, None)),
        ("data/my file.jsonl[:5]", Slice("data/my file.jsonl", 0, 5)),
    ],
)
def test_slices_parse(spec: str, expected: Slice) -> None:
    assert parse_slice(spec) == expected


@pytest.mark.parametrize(
    ("spec", "says"),
    [("gsm8k[", "not a slice"), ("gsm8k[a:b]", "not a slice"), ("gsm8k[5:2]", "selects no items")],
)
def test_bad_slices_are_refused(spec: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_slice(spec)


def test_a_slice_loads_its_items_and_one_past_the_end_is_refused() -> None:
    items = load_slice(parse_slice("csqa[20:23]")).items
    assert [i.id for i in items] == [i.id for i in load_dataset("csqa").items[20:23]]
    with pytest.raises(ValueError, match=r"csqa\[500:\] selects no items"):
        load_slice(parse_slice("csqa[500:]"))
    with pytest.raises(DataError):
        load_slice(parse_slice("no-such-sample[0:3]"))


def test_held_out_questions_may_not_be_training_questions() -> None:
    train = [load_slice(parse_slice("csqa[10:20]"))]
    check_disjoint(train, [load_slice(parse_slice("csqa[20:30]"))])
    with pytest.raises(ValueError, match="training questions too"):
        check_disjoint(train, [load_slice(parse_slice("csqa[15:25]"))])


# -- what the pool answered, and what is kept --------------------------------------------------------------
def record(correct: float, cost: float = 1e-5, run_id: int = 1, model: str = SMALL) -> dict[str, Any]:
    """One ``single:<model>`` record of the evaluation harness (the fields the loop reads)."""
    return {"method": f"single:{model}", "correct": correct, "cost": cost, "run_id": run_id}


def test_only_questions_where_the_pool_disagrees_are_kept() -> None:
    singles = {
        f"single:{SMALL}": {("d", "1"): record(1), ("d", "2"): record(0), ("d", "3"): record(1)},
        f"single:{BIG}": {
            ("d", "1"): record(1),
            ("d", "2"): record(0),
            ("d", "3"): record(0),
            ("d", "4"): record(1),
        },
    }
    table = outcome_table(singles, [SMALL, BIG])
    assert sorted(table) == [("d", "1"), ("d", "2"), ("d", "3")]  # d/4: one model never answered it
    picked = pick(table)
    assert (picked.kept, picked.all_right, picked.all_wrong, picked.considered) == ([("d", "3")], 1, 1, 3)
    assert pick(table, "all").kept == [("d", "1"), ("d", "2"), ("d", "3")]
    with pytest.raises(ValueError, match="pick must be one of"):
        pick(table, "some")


def test_the_warm_start_targets_the_cheapest_model_that_was_right_as_the_grammar_shapes_the_step() -> None:
    pool = make_fake_pool()
    item = load_dataset("csqa", limit=1, skip=30).items[0]
    table = {
        ("csqa", item.id): {
            f"single:{SMALL}": record(0, cost=1e-6),
            f"single:{BIG}": record(1, cost=9e-6, model=BIG),
        }
    }
    rows = warm_start_rows({("csqa", item.id): item}, table, pool)
    step = rows[0]["completion"][0]["content"]
    assert rows[0]["prompt"][-1]["content"].endswith(f"Question: {item.prompt.strip()}\n")
    assert route_step(step, pool.names) == BIG  # one think, one route to a known model, nothing after
    action = prompts.parse_action(step, pool.names)
    assert action.query == rules.passed_on(item.prompt)  # the question whole, lines and all
    thought = step.split("<think>")[1].split("</think>")[0].strip()
    assert len(thought) <= rules.THOUGHT_MAX_CHARS and "\n" not in thought and "<" not in thought
    assert step.endswith(" </search>") and "<information>" not in step and "<answer>" not in step


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("What is 2 + 3?\nWork it out, then end with a line 'Answer: <number>'.", "maths"),
        ("Capital of France?", "factual"),
    ],
)
def test_the_thought_says_what_kind_of_question_it_is(question: str, kind: str) -> None:
    assert kind in first_step(question, SMALL)


def test_every_thought_fits_the_step_grammar() -> None:
    for thought in THOUGHTS.values():
        assert len(f" {thought} ") <= rules.THOUGHT_MAX_CHARS and "<" not in thought and "\n" not in thought


def test_grpo_rows_and_provenance() -> None:
    pool = make_fake_pool()
    item = EvalItem(id="1", question="Capital of France?", answers=["Paris"])
    (row,) = grpo_rows({("d", "1"): item}, pool)
    assert (row["answers"], row["models"], row["question"]) == (["Paris"], pool.names, item.prompt)
    records = [
        {("d", "1"): record(1, run_id=7), ("d", "2"): record(1, run_id=8)},
        {("d", "1"): record(0, run_id=3)},
    ]
    assert source_runs(records, [("d", "1")]) == [3, 7]


# -- recipe ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["loop_smoke.yaml", "loop_cpu.yaml", "loop_gpu.yaml"])
def test_shipped_loop_recipes_load(name: str) -> None:
    recipe = load_recipe(LoopRecipe, RECIPES / name)
    assert recipe.train and recipe.held_out and recipe.serve_alpha in recipe.alphas
    assert recipe.use_vllm is (name == "loop_gpu.yaml")
    specs = [parse_slice(s) for s in recipe.train + recipe.held_out + recipe.report_only]
    check_disjoint(
        [load_slice(s) for s in specs[: len(recipe.train)]],
        [load_slice(s) for s in specs[len(recipe.train) :]],
    )


def test_list_overrides_and_bad_values() -> None:
    recipe = load_recipe(
        LoopRecipe, None, {"alphas": "0,0.3", "train": "csqa[70:80],gsm8k[1:5]", "serve_alpha": "0.3"}
    )
    assert (recipe.alphas, recipe.train, recipe.serve_alpha) == (
        [0.0, 0.3],
        ["csqa[70:80]", "gsm8k[1:5]"],
        0.3,
    )
    for bad, says in [
        ({"alpha": "0.2"}, "not loop keys"),
        ({"data": "data/nq_open_dev300.jsonl"}, "not loop keys"),
        ({"alphas": "1.5"}, r"must lie in \[0, 1\]"),
        ({"serve_alpha": "0.5"}, "not one of alphas"),
        ({"pick": "best"}, "pick must be one of"),
        ({"held_out": ""}, "needs train and held_out"),
    ]:
        with pytest.raises(ValueError, match=says):
            load_recipe(LoopRecipe, None, bad)


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["max_stepz=3"], "max_stepz"),
        (["train=csqa[500:600]"], "selects no items"),
        (["held_out=nosuch[0:3]"], "nosuch"),
        (["held_out=csqa[76:78]"], "training questions too"),
    ],
)
def test_the_command_refuses_bad_input_in_one_line(overrides: list[str], says: str) -> None:
    result = runner.invoke(app, ["train", "loop", "--recipe", str(RECIPES / "loop_smoke.yaml"), *overrides])
    assert result.exit_code == 2, result.output
    assert says in result.output and "Traceback" not in result.output


def test_relative_sqlite_urls_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert absolute_url("sqlite:///runs/x.db") == f"sqlite:///{tmp_path}/runs/x.db"
    for unchanged in ("sqlite:////abs/x.db", "sqlite:///:memory:", "postgresql+psycopg://u@h/db", None):
        assert absolute_url(unchanged) == unchanged


def test_the_clock_sums_each_stage_over_invocations(tmp_path: Path) -> None:
    for _ in range(2):
        clock = Clock(tmp_path / "timings.json")
        with clock("collect"):
            pass
    assert list(Clock(tmp_path / "timings.json").spent) == ["collect"]


def test_a_finished_stage_is_found_by_its_checkpoint(tmp_path: Path) -> None:
    factory = db.session_factory(db.make_engine(f"sqlite:///{tmp_path}/t.db"))
    stage = tmp_path / "grpo-alpha0"
    assert finished(factory, stage) is None
    (stage / "final").mkdir(parents=True)
    (stage / "final" / "router.gguf").write_bytes(b"GGUF")
    run_id = db.create_training_run(factory, "grpo", {}, [1, 2])
    assert finished(factory, stage) is None  # not finished yet
    db.finish_training_run(factory, run_id, status="ok", checkpoint=str(stage / "final" / "router.gguf"))
    done = finished(factory, stage)
    assert done is not None and done["training_run_id"] == run_id


# -- the report --------------------------------------------------------------------------------------------
def run_records(
    correct: list[float], cost: float, reward: float | None = None, **extra: Any
) -> dict[Any, Any]:
    return {
        ("csqa", str(i)): {
            "correct": c,
            "cost": cost,
            "pool_cost": cost / 2,
            "calls": 2,
            "reward": c if reward is None else reward,
            "format_error": False,
            "ended_by": None,
            **extra,
        }
        for i, c in enumerate(correct)
    }


def results(trained_cost: float = 1e-5) -> LoopResults:
    from training.loop_data import Picked

    steps = [
        {
            "step": 1,
            "reward": 0.25,
            "accuracy": 0.3,
            "cost": 2e-5,
            "format_rate": 0.9,
            "frac_reward_zero_std": 0.5,
        },
        {
            "step": 2,
            "reward": 0.5,
            "accuracy": 0.5,
            "cost": 1e-5,
            "format_rate": 1.0,
            "frac_reward_zero_std": 0.0,
        },
    ]
    return LoopResults(
        command="routegraph train loop --recipe training/recipes/loop_cpu.yaml",
        machine="x86_64 CPU (2 cores)",
        pool_file="pools/local.yaml",
        train=["csqa[70:100]"],
        held_out=["csqa[20:70]"],
        report_only=[],
        picked=Picked(kept=[("csqa", "a")], all_right=3, all_wrong=5),
        picked_by_dataset={"csqa": 1},
        sft={
            "training_run_id": 1,
            "checkpoint": "/x/sft/final",
            "steps": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}],
        },
        grpo={
            0.0: {"training_run_id": 2, "checkpoint": "/x/a0/router.gguf", "steps": steps},
            0.3: {"training_run_id": 3, "checkpoint": "/x/a3/router.gguf", "steps": steps[:1]},
        },
        routers={
            "untrained": run_records([0.0] * 40, 4e-5, reward=-1.0),
            "α=0": run_records([1.0] * 30 + [0.0] * 10, 3e-5, routed=[BIG]),
            "α=0.3": run_records([1.0] * 20 + [0.0] * 20, trained_cost, routed=[SMALL]),
        },
        baselines={"single:Big-LM": run_records([1.0] * 40, 5e-5)},
        held_out_sets=["csqa"],
        timings={"collect": 60.0, "grpo α=0": 600.0},
        this_run_s=660.0,
        served="GRPO α=0 → `/x/a0/router.gguf`",
        router_yaml=f"{PROJECT_ROOT}/runs/loop/router.yaml",
    )


def test_the_report_shows_the_signal_the_intervals_and_the_sweep() -> None:
    shown = results()
    text = render(shown)
    assert "| 1 | 0.2500 | 0.3000 | 2e-05 | 0.9000 | 0.5000 |" in text  # a step: reward … zero-spread share
    trained = shown.routers["α=0"]
    accuracy = bootstrap([trained[k]["correct"] for k in sorted(trained)])  # with its interval
    assert f"| router-r1 · α=0 | 40 | {accuracy} | 3e-05 | 1.5e-05 | 0.750 | 0.0% | 0.0% |" in text
    assert "| single:Big-LM | 40 | 1.000 [1.000, 1.000] |" in text
    assert "| α=0 − untrained | held-out | 40 | 0.750 [" in text and "| yes |" in text
    assert "| 0.3 | 0.500 | 1e-05 | 5e-06 | 2.00 | Small-LM 100% |" in text
    assert "α=0.3 spends less than α=0: $1e-05 vs $3e-05 a question" in text
    assert "difference $-2e-05 [-2e-05, -2e-05]" in text  # paired: every question saved the same
    assert "(pool calls $5e-06 vs $1.5e-05)" in text
    assert "at an accuracy difference of -0.250 [" in text  # the accuracy it gives up, paired
    assert "zero reward spread: 33.3% on average over 3 steps" in text
    assert "GRPO α=0: training run 2 → `/x/a0/router.gguf`" in text
    assert "Wall time of the whole loop: 11.0 min (within 60 minutes)" in text
    assert "Settings: `runs/loop/router.yaml`" in text  # inside the project: shown relative to it
    assert "1 were kept (1 csqa); every model was right on 3 and wrong on 5" in text
    assert "α=0.3 spends not clearly less than α=0" in render(results(trained_cost=9e-5))


def test_summary_of_no_answered_question_is_none() -> None:
    assert summary({}, [("csqa", "1")]) is None


@pytest.mark.parametrize(
    ("current", "labels", "note"),
    [
        (False, ["untrained", "α=0"], "not evaluated"),
        (None, ["untrained", "α=0"], "evaluated once"),  # the tiny pool's router is the model to train
    ],
)
def test_which_routers_the_evaluation_answers_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, current: Any, labels: list[str], note: str
) -> None:
    asked: list[str] = []

    def answer(serving: Any, checkpoint: Any, questions: Any, methods: Any, folder: Path, log: Any) -> Any:
        asked.append(folder.name)
        return {"router-r1": {}}

    monkeypatch.setattr(loop_eval, "answer", answer)
    serving = loop_eval.Serving(
        pool_file=PROJECT_ROOT / "pools" / "tiny.yaml",
        database_url=None,
        response_max_tokens=64,
        max_turns=2,
        local_threads=1,
        request_timeout_s=None,
        concurrency=1,
    )
    trained = {0.0: {"checkpoint": "/x/router.gguf", "training_run_id": 7}}
    _, routers, notes = loop_eval.evaluate(serving, [], "smollm2-135m", current, trained, tmp_path)
    assert list(routers) == labels
    assert asked[0] == "pool" and asked[-1] == "alpha-0-training-run-7"
    assert any(note in n for n in notes)
