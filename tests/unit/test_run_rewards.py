"""Router-R1 rewards stored for runs that get a gold answer (user, evaluation or dataset feedback)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from app import cli
from app.config import DEFAULT_POOL, Settings
from app.pool import Pool
from app.service import RouteGraphService
from graphs.router_r1.rewards import RewardConfig, score_trajectory
from storage import datasets, db
from tests.fakes import BIG, ROUTER, SMALL, fake, make_fake_pool, think_answer, think_route

QUESTION = "What is the capital of France?"


def make_service(tmp_path: Path, pool: Pool, **settings: Any) -> RouteGraphService:
    config = Settings(database_url=f"sqlite:///{tmp_path}/t.db", **settings)
    return RouteGraphService.create(config, pool=pool, start_servers=False)


def route_answer(model: str = SMALL, answer: str = "Paris") -> Pool:
    return make_fake_pool({ROUTER: [think_route(model, "capital?"), think_answer(answer)], model: ["Paris."]})


def parts(reward: Any) -> tuple[float, float, float, float]:
    return (reward.format, reward.outcome, reward.cost, reward.total)


def test_gold_feedback_stores_the_reward_with_its_config(tmp_path: Path) -> None:
    with make_service(tmp_path, route_answer()) as service:
        run_id = service.ask(QUESTION).run_id
        assert service.rewards_for(run_id) == []  # nothing to score before a gold answer
        feedback_id = service.add_feedback(run_id, "gold", "Paris")
        (reward,) = service.rewards_for(run_id)
    # Well-formed (0), right (1), the only run so far (cost 0.5), alpha 0: total = outcome + format.
    assert parts(reward) == (0.0, 1.0, 0.5, 1.0)
    assert reward.reward_config == {
        "reward": "router_r1",
        "alpha": 0.0,
        "metric": "em",
        "window": 256,
        "feedback_id": feedback_id,
        "answers": ["Paris"],
        "reference_runs": 0,
    }


def test_wrong_answer_scores_format_only(tmp_path: Path) -> None:
    with make_service(tmp_path, route_answer(answer="Lyon")) as service:
        run_id = service.ask(QUESTION).run_id
        service.add_feedback(run_id, "gold", "Paris", source="eval")
        (reward,) = service.rewards_for(run_id)
    assert parts(reward) == (0.0, 0.0, 0.5, 0.0)


def test_malformed_trajectory_scores_minus_one(tmp_path: Path) -> None:
    pool = make_fake_pool({ROUTER: ["It is Paris.", "Paris"]})  # no <think>: a forced answer
    with make_service(tmp_path, pool) as service:
        run_id = service.ask(QUESTION).run_id
        service.add_feedback(run_id, "gold", "Paris")
        (reward,) = service.rewards_for(run_id)
    assert (reward.format, reward.outcome) == (-1.0, 1.0)
    assert reward.total == 0.0  # right: (1 + -1) * (1 - alpha)


def test_cost_is_weighed_against_recent_runs_with_alpha(tmp_path: Path) -> None:
    pool = make_fake_pool(
        {
            ROUTER: [
                think_route(BIG, "capital?"),
                think_answer("Paris"),  # an expensive run
                think_answer("Paris"),  # the cheapest: no route call
                think_route(BIG, "the capital city of the French Republic, please?"),
                think_answer("Paris"),  # the most expensive
            ],
            BIG: ["Paris.", "Paris, the capital of France, on the Seine."],
        }
    )
    with make_service(tmp_path, pool, reward_alpha=0.5, reward_metric="f1") as service:
        runs = [service.ask(QUESTION) for _ in range(3)]
        assert runs[1].total_cost < runs[0].total_cost < runs[2].total_cost
        for run in runs[1:]:
            service.add_feedback(run.run_id, "gold", "Paris")
        (cheapest,) = service.rewards_for(runs[1].run_id)
        (dearest,) = service.rewards_for(runs[2].run_id)
    # The cheapest run is compared with the one before it; the dearest with both before it.
    assert cheapest.reward_config["reference_runs"] == 1 and cheapest.cost == 1.0
    assert cheapest.total == pytest.approx((1.0 + 0.0) * 0.5 + 1.0 * 0.5)
    assert dearest.reward_config["reference_runs"] == 2 and dearest.cost == 0.0
    assert dearest.total == pytest.approx((1.0 + 0.0) * 0.5 + 0.0 * 0.5)
    assert (dearest.reward_config["alpha"], dearest.reward_config["metric"]) == (0.5, "f1")


def test_only_finished_router_r1_runs_with_a_gold_answer_are_scored(tmp_path: Path) -> None:
    down = httpx.ConnectError("down")
    pool = make_fake_pool(
        {ROUTER: [think_route(SMALL, "capital?"), down, think_answer("Paris")], SMALL: ["Paris."]}
    )
    with make_service(tmp_path, pool) as service:
        failed = service.ask(QUESTION)
        service.add_feedback(failed.run_id, "gold", "Paris")
        service.add_feedback(failed.run_id, "correct")
        assert service.rewards_for(failed.run_id) == []  # not finished: nothing to score yet
        # Finished by a resume, it is scored against the gold answer it got meanwhile.
        assert service.resume(failed.run_id).status == "ok"
        (reward,) = service.rewards_for(failed.run_id)
        assert parts(reward) == (0.0, 1.0, 0.5, 1.0)
        direct = service.record_direct("q", graph=f"single:{SMALL}", hops=[], answer="Paris")
        service.add_feedback(direct.run_id, "gold", "Paris")
        assert service.rewards_for(direct.run_id) == []


def test_dataset_gold_answers_are_scored_once(tmp_path: Path) -> None:
    with make_service(tmp_path, route_answer()) as service:
        run_id = service.ask(QUESTION).run_id
        rows = [{"question": QUESTION, "answers": ["paris", "Paris, France"]}]
        datasets.import_qa(service.sessions, rows)
        assert service.score_labelled() == 1
        assert service.score_labelled() == 0  # already scored against this gold answer
        (reward,) = service.rewards_for(run_id)
        assert reward.outcome == 1.0 and reward.reward_config["answers"] == ["paris", "Paris, France"]
        datasets.import_qa(service.sessions, [{"question": QUESTION, "answers": ["Lyon"]}])
        assert service.score_labelled() == 1
        assert [r.outcome for r in service.rewards_for(run_id)] == [1.0, 0.0]


def test_import_qa_command_scores_the_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    monkeypatch.setenv("ROUTEGRAPH_DATABASE_URL", url)
    monkeypatch.setenv("ROUTEGRAPH_POOL_FILE", str(DEFAULT_POOL))
    pool = route_answer()
    with make_service(tmp_path, pool) as service:
        run_id = service.ask(QUESTION).run_id
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": QUESTION, "answers": ["Paris"]}) + "\n")
    result = CliRunner().invoke(cli.app, ["traces", "import-qa", str(qa)])
    assert result.exit_code == 0, result.output
    assert "1 attached" in result.output and "1 runs scored" in result.output
    factory = db.session_factory(db.make_engine(url))
    assert [r.total for r in db.rewards_for(factory, run_id)] == [1.0]
    assert fake(pool, ROUTER).remaining == 0


def test_score_trajectory_matches_the_training_rewards() -> None:
    trajectory = (
        "<think>x</think>\n<search> M: q </search>\n<information>y</information>\n<answer> y </answer>"
    )
    config = RewardConfig(alpha=0.25)
    scored = score_trajectory(trajectory, ["y"], 0.0004, ["M"], config, recent_costs=[0.0001, 0.0009])
    assert (scored.format, scored.outcome) == (0.0, 1.0)
    assert 0.0 < scored.cost < 1.0
    assert scored.total == pytest.approx(1.0 * 0.75 + scored.cost * 0.25)
