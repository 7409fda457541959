"""The evaluation harness on a hand-written 10-item sample with a scripted pool: no servers, no network."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from langchain_core.messages import BaseMessage
from typer.testing import CliRunner

from app import cli
from app.config import Settings
from app.evaluation import baselines, data, report, runner
from app.pool import Pool
from app.service import RouteGraphService
from tests.fakes import BIG, ROUTER, SMALL, fake, make_fake_pool, message_text

# Items 0-5 QA, 6-7 math, 8-9 multiple choice. Small-LM is right on 0, 1, 2, 6; Big-LM on 2-5, 7, 8;
# nobody on 9. So Small 0.4, Big 0.6 and the oracle 0.9: above every single model by construction.
ROWS = [
    {"id": f"q{k}", "question": f"item-{k}: which city is number {k}?", "answers": [f"City{k}"]}
    for k in range(6)
] + [
    {"id": "q6", "question": "item-6: what is 40 + 2?", "answers": ["42"], "task": "math"},
    {"id": "q7", "question": "item-7: what is 5 * 7?", "answers": ["35"], "task": "math"},
    {
        "id": "q8",
        "question": "item-8: what moves a sailboat?",
        "answers": ["B"],
        "choices": {"A": "rocks", "B": "wind", "C": "ice"},
    },
    {
        "id": "q9",
        "question": "item-9: where do fish live?",
        "answers": ["A"],
        "choices": {"A": "water", "B": "trees", "C": "sky"},
    },
]
RIGHT = {0: "City0", 1: "City1", 2: "City2", 3: "City3", 4: "City4", 5: "City5", 6: "42", 7: "35", 8: "B"}
SMALL_RIGHT, BIG_RIGHT = {0, 1, 2, 6}, {2, 3, 4, 5, 7, 8}


def _item_number(text: str) -> int:
    found = re.findall(r"item-(\d+)", text)
    assert found, text
    return int(found[-1])


def answer_for(right: set[int], name: str, k: int) -> str:
    if k in right:
        return RIGHT[k]
    return "C" if k >= 8 else f"wrong-{name}-{k}"


def model_reply(right: set[int], name: str) -> Callable[[list[BaseMessage]], str]:
    return lambda messages: answer_for(right, name, _item_number(message_text(messages[-1])))


def router_reply(messages: list[BaseMessage]) -> str:
    """Prompt-router picks Big-LM; Router-R1 asks Big-LM then answers what it said; R2 plans one subtask."""
    transcript = " ".join(message_text(m) for m in messages)
    if "You route questions to language models" in transcript:
        return f"{BIG}"
    if "break hard questions" in transcript:
        k = _item_number(transcript)
        return json.dumps({"subtasks": [{"id": "1", "text": f"Solve item-{k}", "depends_on": []}]})
    if "combine the answers" in transcript:
        k = _item_number(transcript)
        return RIGHT[k] if k in SMALL_RIGHT else "unknown"
    k = _item_number(transcript)
    if f"{BIG}: item-{k}" in transcript:
        return f"<think>done</think>\n<answer> {answer_for(BIG_RIGHT, 'big', k)} </answer>"
    return f"<think>ask</think>\n<search> {BIG}: item-{k} </search>"


def eval_pool() -> Pool:
    return make_fake_pool(
        {
            ROUTER: [router_reply] * 500,
            SMALL: [model_reply(SMALL_RIGHT, "small")] * 500,
            BIG: [model_reply(BIG_RIGHT, "big")] * 500,
        }
    )


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "sample.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


@pytest.fixture
def service(tmp_path: Path) -> Iterator[RouteGraphService]:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/t.db", r2_allocation="cheapest")
    with RouteGraphService.create(settings, pool=eval_pool(), start_servers=False) as svc:
        yield svc


def run(service: RouteGraphService, sample: Path, out: Path, methods: str = "all", **kw: object) -> dict:
    dataset = data.load_dataset(str(sample), kw.pop("limit", None))  # type: ignore[arg-type]
    expanded = baselines.expand_methods(methods, service.pool)
    return asyncio.run(runner.run_eval(service, dataset, expanded, out, **kw))  # type: ignore[arg-type]


def accuracy(records: list[dict]) -> float:
    return sum(r["correct"] for r in records) / len(records)


def test_dataset_tasks_prompts_and_metrics(sample: Path) -> None:
    dataset = data.load_dataset(str(sample))
    assert dataset.name == "sample" and len(dataset.items) == 10
    assert [i.task for i in dataset.items] == ["qa"] * 6 + ["math"] * 2 + ["choice"] * 2
    assert "B. wind" in dataset.items[8].prompt and "letter" in dataset.items[8].prompt
    item = dataset.items[6]
    scores = runner.score(item, "The answer is 42.")
    assert scores["primary"] == "numeric" and scores["correct"] == 1.0 and scores["em"] == 0.0
    assert runner.score(dataset.items[8], "B. wind")["correct"] == 1.0
    assert runner.score(dataset.items[0], "city0")["em"] == 1.0


def test_a_math_item_asks_for_steps_and_an_answer_line(sample: Path) -> None:
    """Small models answer a bare 'give the number' with a guess (Qwen-1.5B: 0/20 GSM8K tuning items);
    a few steps and an ``Answer:`` line is what they get right, and what the answer is read from."""
    item = data.load_dataset(str(sample)).items[6]
    assert item.task == "math" and "Answer: <number>" in item.prompt
    reply = "She earns 12/60 = 0.2 a minute.\n0.2 x 50 = 10.\nAnswer: 10"
    assert baselines.stated_answer(item, reply) == "10"


def test_every_method_runs_and_the_oracle_bounds_the_single_models(
    service: RouteGraphService, sample: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    results = run(service, sample, out, concurrency=3, seed=7)
    assert list(results) == [
        f"single:{SMALL}",
        f"single:{BIG}",
        "cheapest",
        "largest",
        "random",
        "prompt-router",
        "router-r1",
        "r2-reasoner",
        "oracle",
    ]
    assert all(len(records) == 10 for records in results.values()), {m: len(r) for m, r in results.items()}
    assert accuracy(results[f"single:{SMALL}"]) == pytest.approx(0.4)
    assert accuracy(results[f"single:{BIG}"]) == pytest.approx(0.6)
    assert accuracy(results["oracle"]) == pytest.approx(0.9)
    assert accuracy(results["oracle"]) >= max(accuracy(results[f"single:{m}"]) for m in (SMALL, BIG))
    # The oracle takes the cheapest correct model: Small-LM on item 2 where both are right.
    oracle = {r["id"]: r for r in results["oracle"]}
    assert oracle["q2"]["picked"] == SMALL and oracle["q3"]["picked"] == BIG
    assert results["cheapest"] == [
        {**r, "method": "cheapest", "picked": SMALL, "reused": True} for r in results[f"single:{SMALL}"]
    ]
    assert accuracy(results["largest"]) == pytest.approx(0.6)
    assert accuracy(results["prompt-router"]) == pytest.approx(0.6)  # the router always picks Big-LM
    assert all(r["calls"] == 2 and r["models"] == [BIG, ROUTER] for r in results["prompt-router"])
    assert accuracy(results["router-r1"]) == pytest.approx(0.6)
    assert all(r["status"] == "ok" for m in results.values() for r in m), [
        (r["method"], r["error"]) for m in results.values() for r in m if r["status"] != "ok"
    ]
    # Every item of every calling method is a stored run with the gold answer as "eval" feedback.
    rec = results["router-r1"][3]
    run_row = service.get_run(rec["run_id"])
    assert run_row is not None and run_row.graph == "router-r1"
    (feedback,) = service.feedback_for(rec["run_id"])
    assert feedback.label == "gold" and feedback.source == "eval" and feedback.gold_answer == "City3"
    direct_run = service.get_run(results[f"single:{BIG}"][0]["run_id"])
    assert direct_run is not None and direct_run.graph == f"single:{BIG}" and len(direct_run.hops) == 1
    assert (
        direct_run.total_cost == pytest.approx(results[f"single:{BIG}"][0]["cost"])
        and direct_run.total_cost > 0
    )


def test_random_baseline_is_seeded(service: RouteGraphService, sample: Path) -> None:
    dataset = data.load_dataset(str(sample))
    picks = [baselines.picked_model("random", service.pool, i, 3, "s") for i in dataset.items]
    assert picks == [baselines.picked_model("random", service.pool, i, 3, "s") for i in dataset.items]
    assert set(picks) == {SMALL, BIG}


def test_resume_skips_finished_items(service: RouteGraphService, sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    run(service, sample, out, f"single:{SMALL},router-r1", limit=4)
    small, router = fake(service.pool, SMALL), fake(service.pool, ROUTER)
    assert len(small.calls) == 4 and len(router.calls) == 8
    run(service, sample, out, f"single:{SMALL},router-r1")
    assert len(small.calls) == 10 and len(router.calls) == 20  # only the 6 new items were asked
    results = run(service, sample, out, f"single:{SMALL},router-r1")
    assert len(small.calls) == 10 and len(router.calls) == 20
    assert len(results["router-r1"]) == 10
    lines = runner.results_file(out, f"single:{SMALL}").read_text().splitlines()
    assert len(lines) == 10 and len({json.loads(line)["id"] for line in lines}) == 10


def test_report_renders_tables_and_pareto_front(
    service: RouteGraphService, sample: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    run(service, sample, out)
    built = report.write_report(out)
    text = (out / "report.md").read_text()
    for method in ("single:Small-LM", "single:Big-LM", "cheapest", "oracle", "router-r1", "prompt-router"):
        assert f"| {method} |" in text
    assert "## sample" in text and "## Average" in text and "| Avg. |" in text
    assert re.search(r"\| oracle \| 0\.900 \| 0\.900 \|", text), text
    assert "oracle" in built.pareto and f"single:{SMALL}" in built.pareto
    assert f"single:{BIG}" not in built.pareto and "prompt-router" not in built.pareto
    assert (out / "report_cost_accuracy.html").is_file()
    assert "Pareto front" in text


def test_pareto_front() -> None:
    points = {"a": (1.0, 0.5), "b": (2.0, 0.7), "c": (2.5, 0.6), "d": (0.5, 0.2), "e": (1.0, 0.5)}
    assert report.pareto_front(points) == ["d", "a", "e", "b"]


def test_data_sources(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "gsm8k_mini.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": "a", "question": "1+1?", "answers": ["2"]}]), path)
    (item,) = data.load_dataset(str(path)).items
    assert item.task == "math" and item.answers == ["2"]
    nq = data.load_dataset("nq", limit=3)
    assert nq.name == "nq" and len(nq.items) == 3 and nq.items[0].task == "qa"
    later = data.load_dataset("nq", limit=2, skip=2)  # a disjoint slice: tuning and evaluation apart
    assert [i.id for i in later.items] == [i.id for i in data.load_dataset("nq", limit=4).items[2:]]
    with pytest.raises(data.DataError, match="no such file"):
        data.load_dataset("nope")
    with pytest.raises(data.DataError, match="local Hugging Face cache"):
        data.load_dataset("hf:routegraph-test/surely-not-cached")


def test_cli_report_and_errors(service: RouteGraphService, sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    run(service, sample, out, f"single:{SMALL}")
    cli_runner = CliRunner()
    result = cli_runner.invoke(cli.app, ["eval", "report", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "report.md").is_file()
    result = cli_runner.invoke(cli.app, ["eval", "--graph", "all"])
    assert result.exit_code == 2
    result = cli_runner.invoke(cli.app, ["eval", "report", str(tmp_path / "missing")])
    assert result.exit_code == 2


def test_normalisation_option_rescores_and_is_named_in_the_report(
    service: RouteGraphService, tmp_path: Path
) -> None:
    # Small-LM answers "City0" / "City1"; the golds carry guillemets and an ideographic full stop, which
    # only the lenient variant removes.
    items = [
        data.EvalItem("u0", ROWS[0]["question"], ["«City0»"]),
        data.EvalItem("u1", ROWS[1]["question"], ["City1。"]),
    ]
    dataset = data.Dataset("curly-golds", items)
    out, method = tmp_path / "results", [f"single:{SMALL}"]
    lenient = asyncio.run(runner.run_eval(service, dataset, method, out, normalize="unicode"))[method[0]]
    assert [(r["em"], r["f1"], r["normalize"]) for r in lenient] == [(1.0, 1.0, "unicode")] * 2
    assert [r["sub_em"] for r in lenient] == [1.0, 1.0]
    built = report.write_report(out)
    assert built.normalizations == {"unicode": [method[0]]}
    assert "lenient `unicode` normalisation" in (out / "report.md").read_text()
    calls = len(fake(service.pool, SMALL).calls)
    # The same results directory, official scoring: re-scored from the stored answers, nobody asked again.
    official = asyncio.run(runner.run_eval(service, dataset, method, out))[method[0]]
    assert len(fake(service.pool, SMALL).calls) == calls
    # Officially 'city0' vs '«city0»' / 'city1。': no equal string, no shared token, gold not inside.
    assert [(r["em"], r["f1"], r["sub_em"], r["normalize"]) for r in official] == [
        (0.0, 0.0, 0.0, "official")
    ] * 2
    report.write_report(out)
    text = (out / "report.md").read_text()
    assert "official SQuAD v1.1 scores" in text and "unicode" not in text


def test_cli_refuses_an_unknown_normalisation() -> None:
    result = CliRunner().invoke(cli.app, ["eval", "--data", "nq", "--normalize", "nfkc"])
    assert result.exit_code == 2 and "official, unicode" in result.output


def test_report_names_mixed_normalisations() -> None:
    mixed = report.Report([], {}, [], normalizations={"official": ["oracle"], "unicode": ["router-r1"]})
    note = report.normalization_note(mixed)
    assert "Mixed normalisations" in note and "`unicode`: router-r1" in note and "`official`: oracle" in note
