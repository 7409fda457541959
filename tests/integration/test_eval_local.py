"""The evaluation harness end to end on the embedded pool: 5 NQ items through Router-R1, then the report."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.config import PROJECT_ROOT, Settings
from app.evaluation import data, report, runner
from app.pool import load_pool
from app.service import RouteGraphService

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_five_nq_items_through_router_r1(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'traces.db'}",
        max_turns=1,
        response_max_tokens=32,
        router_max_tokens=96,
        request_timeout_s=240,
    )
    dataset = data.load_dataset("nq", limit=5)
    out = tmp_path / "results"
    service = RouteGraphService.create(settings, pool=load_pool(PROJECT_ROOT / "pools" / "tiny.yaml"))
    try:
        results = asyncio.run(runner.run_eval(service, dataset, ["router-r1"], out, concurrency=2))
        records = results["router-r1"]
        assert len(records) == 5
        for record in records:
            assert record["status"] == "ok", record["error"]
            assert record["calls"] >= 1 and record["cost"] > 0
            (feedback,) = service.feedback_for(record["run_id"])
            assert feedback.source == "eval" and feedback.gold_answer == record["golds"][0]
    finally:
        service.close()
    built = report.write_report(out)
    text = (out / "report.md").read_text()
    assert "| router-r1 |" in text and "## nq" in text
    assert built.pareto == ["router-r1"]
    assert (out / "report_cost_accuracy.html").is_file()
