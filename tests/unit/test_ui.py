"""The Streamlit pages under AppTest, over a scripted pool and a temporary SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from app.config import PROJECT_ROOT, Settings
from app.pool import Pool
from app.service import RouteGraphService
from app.ui import resources
from tests.fakes import BIG, ROUTER, SMALL, make_fake_pool, think_answer, think_route

PAGES = PROJECT_ROOT / "app" / "ui" / "pages"
QUESTION = "What is the capital of France?"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path}/ui.db")


def use(settings: Settings, pool: Pool) -> RouteGraphService:
    service = RouteGraphService.create(settings, pool=pool, start_servers=False)
    resources.inject(service)
    return service


@pytest.fixture(autouse=True)
def _uninject() -> Iterator[None]:
    yield
    if resources._injected is not None:
        resources._injected.close()
    resources.inject(None)


def page(name: str) -> AppTest:
    app = AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=30)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def ask(app: AppTest, question: str) -> AppTest:
    app.chat_input(key="ask_input").set_value(question).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def hop_lines(app: AppTest) -> list[str]:
    return [m.value for m in app.markdown if m.value.startswith("**Hop ")]


def route_answer_pool() -> Pool:
    return make_fake_pool(
        {ROUTER: [think_route(SMALL, "capital of France?"), think_answer("Paris")], SMALL: ["Paris."]}
    )


# -- ask -----------------------------------------------------------------------------------------------------
def test_ask_renders_one_element_per_hop_with_model_and_cost(settings: Settings) -> None:
    service = use(settings, route_answer_pool())
    app = ask(page("ask"), QUESTION)
    run = service.get_run(service.list_runs(limit=1)[0].id)
    lines = hop_lines(app)
    assert len(lines) == len(run.hops) == 3
    for line, hop in zip(lines, run.hops, strict=True):
        assert f"· {hop.node}**" in line and f"`{hop.model}`" in line and f"${hop.cost:.6f}" in line
    assert f"`{SMALL}`" in lines[1]
    assert any(m.value == "**Answer:** Paris" for m in app.markdown)
    captions = [c.value for c in app.caption]
    assert any(f"Run #{run.id} · ok" in c for c in captions)
    assert any(BIG in c and "most expensive" in c for c in captions)
    assert "Sub-query: capital of France?" in captions
    # The answer comes with its numbers; the hops sit in a collapsed timeline.
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Total cost"] == f"${run.total_cost:.6f}" and metrics["Hops"] == "3"
    assert any("of what the same tokens cost on" in c and BIG in c for c in captions)
    assert not app.error and not app.warning
    # The chat history survives the next rerun.
    app.run()
    assert len(hop_lines(app)) == 3 and len(app.chat_message) == 2
    assert [e.label for e in app.expander if e.label.endswith("hops")] == ["3 hops"]


def test_budget_exceeded_shows_a_warning(settings: Settings) -> None:
    pool = make_fake_pool(
        {ROUTER: [think_route(BIG, "capital?"), think_route(SMALL, "capital?"), "Paris"], SMALL: ["Paris"]}
    )
    service = use(settings, pool)
    app = page("ask")
    app.number_input(key="ask_budget").set_value(1e-4)
    app.number_input(key="ask_max_turns").set_value(1)
    ask(app, QUESTION)
    run_id = service.list_runs(limit=1)[0].id
    warnings = [w.value for w in app.warning]
    assert any("budget exceeded" in w for w in warnings)
    assert any(f"Run #{run_id}" in w and "budget" in w for w in warnings)


def test_endpoint_down_shows_an_error_with_the_run_id(settings: Settings) -> None:
    pool = make_fake_pool(
        {ROUTER: [think_route(SMALL, "capital?"), httpx.ConnectError("Connection refused")], SMALL: ["Paris"]}
    )
    service = use(settings, pool)
    app = ask(page("ask"), QUESTION)
    run = service.get_run(service.list_runs(limit=1)[0].id)
    assert run.status == "failed" and len(run.hops) == 2  # the partial trace is stored
    errors = [e.value for e in app.error]
    assert len(errors) == 1
    assert f"Run #{run.id} failed" in errors[0] and "cannot connect" in errors[0] and ROUTER in errors[0]
    assert len(hop_lines(app)) == 2


def test_malformed_router_output_shows_a_warning(settings: Settings) -> None:
    use(settings, make_fake_pool({ROUTER: ["<think>hmm</think> It is Paris.", "Paris"]}))
    app = ask(page("ask"), QUESTION)
    assert any("router output problem" in w.value for w in app.warning)


def test_empty_question_is_refused_in_the_chat(settings: Settings) -> None:
    service = use(settings, route_answer_pool())
    app = ask(page("ask"), "   ")
    assert any("Question refused" in e.value and "empty" in e.value for e in app.error)
    assert service.list_runs() == []


# -- traces --------------------------------------------------------------------------------------------------
def two_runs(settings: Settings) -> tuple[RouteGraphService, int, int]:
    pool = make_fake_pool(
        {
            ROUTER: [think_route(SMALL, "capital?"), think_answer("Paris"), think_answer("Berlin")],
            SMALL: ["Paris"],
        }
    )
    service = use(settings, pool)
    routed = service.ask(QUESTION).run_id
    direct = service.ask("Capital of Germany?").run_id
    return service, routed, direct


def test_traces_filters_and_opens_a_run(settings: Settings) -> None:
    _, routed, direct = two_runs(settings)
    app = page("traces")
    assert app.dataframe[0].value["id"].tolist() == [direct, routed]
    app.selectbox(key="traces_model").set_value(SMALL).run()
    assert app.dataframe[0].value["id"].tolist() == [routed]
    app.selectbox(key="traces_run").set_value(routed).run()
    assert not app.exception
    assert any(m.value == "**Answer:** Paris" for m in app.markdown)
    assert len(app.get("plotly_chart")) == 1
    labels = [e.label for e in app.expander]
    assert len(labels) == 3 and SMALL in labels[1]
    app.selectbox(key="traces_status").set_value("failed").run()
    assert app.dataframe[0].value.empty


def test_traces_feedback_is_written_to_the_database(settings: Settings) -> None:
    service, routed, _ = two_runs(settings)
    app = page("traces")
    app.selectbox(key="traces_run").set_value(routed).run()
    app.radio(key="traces_label").set_value("gold")
    app.text_input(key="traces_gold").set_value("Paris")
    app.button(key="traces_save").click().run()
    assert not app.exception and any("saved" in s.value for s in app.success)
    stored = service.feedback_for(routed)
    assert [(f.label, f.gold_answer, f.source) for f in stored] == [("gold", "Paris", "user")]
    # A gold label without a gold answer is refused with a readable message.
    app.text_input(key="traces_gold").set_value("")
    app.button(key="traces_save").click().run()
    assert any("gold answer" in e.value for e in app.error)
    assert len(service.feedback_for(routed)) == 1


def test_traces_export_is_jsonl_of_the_filtered_runs(settings: Settings) -> None:
    import json

    service, routed, direct = two_runs(settings)
    lines = service.export_jsonl([r["id"] for r in service.run_rows()]).splitlines()
    runs = [json.loads(line) for line in lines]
    assert [r["id"] for r in runs] == [direct, routed]
    assert len(runs[1]["hops"]) == 3 and runs[1]["hops"][1]["model"] == SMALL


# -- pool and dashboard --------------------------------------------------------------------------------------
def test_pool_page_renders(settings: Settings) -> None:
    two_runs(settings)
    app = page("pool")
    assert set(app.dataframe[0].value["name"]) == {ROUTER, SMALL, BIG}
    assert len(app.get("plotly_chart")) == 2


def test_pool_page_names_the_training_run_behind_the_routing_checkpoint(tmp_path: Path) -> None:
    from storage import db

    gguf = tmp_path / "final" / "router.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    settings = Settings(database_url=f"sqlite:///{tmp_path}/ui.db", router_checkpoint=str(gguf))
    service = use(settings, route_answer_pool())
    assert service.pool_view()["trained_by"] is None  # no training run made it yet
    run_id = db.create_training_run(service.sessions, "grpo", {}, [3, 4, 5])
    db.log_training_step(service.sessions, run_id, {"step": 1, "reward": 0.5})
    db.finish_training_run(service.sessions, run_id, status="ok", checkpoint=str(gguf.resolve()))

    view = service.pool_view()
    assert view["router_weights"] == str(gguf.resolve())
    assert view["trained_by"]["id"] == run_id and view["trained_by"]["source_runs"] == 3
    shown = " ".join(i.value for i in page("pool").info)
    assert f"trained by training run {run_id} (grpo, 1 logged steps, from 3 stored runs)" in shown
    assert str(gguf.resolve()) in shown


def test_pool_health_check_reports_each_endpoint(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    service = use(settings, route_answer_pool())

    async def healthy(entry: object) -> bool:
        return getattr(entry, "name", "") != BIG

    monkeypatch.setattr(service.pool, "health", healthy)
    app = page("pool")
    app.button(key="pool_health").click().run()
    assert not app.exception
    assert sorted(s.value for s in app.success) == [f"{ROUTER}: up", f"{SMALL}: up"]
    assert [e.value for e in app.error] == [f"{BIG}: down"]


def test_dashboard_renders_empty_and_with_data(settings: Settings) -> None:
    service, routed, direct = two_runs(settings)
    service.add_feedback(routed, "correct")
    service.add_feedback(direct, "gold", gold_answer="Paris")  # answered Berlin: wrong
    app = page("dashboard")
    assert len(app.get("plotly_chart")) == 4
    by_graph = service.dashboard()["by_graph"]
    assert by_graph[0]["accuracy"] == pytest.approx(0.5) and by_graph[0]["judged"] == 2


def test_dashboard_without_runs(settings: Settings) -> None:
    use(settings, route_answer_pool())
    app = page("dashboard")
    assert app.info and not app.get("plotly_chart")


def test_navigation_app_runs(settings: Settings) -> None:
    use(settings, route_answer_pool())
    app = AppTest.from_file(str(PROJECT_ROOT / "streamlit_app.py"), default_timeout=30)
    app.run()
    assert not app.exception
    assert app.title[0].value == "Ask"


@pytest.mark.parametrize("name", ["ask", "traces", "pool", "dashboard"])
def test_a_service_that_cannot_start_is_a_readable_error(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROUTEGRAPH_POOL_FILE", str(tmp_path / "missing.yaml"))
    monkeypatch.setenv("ROUTEGRAPH_DATABASE_URL", f"sqlite:///{tmp_path}/ui.db")
    app = page(name)
    assert [e.value for e in app.error] == [
        f"Cannot start routegraph: {tmp_path / 'missing.yaml'}: pool file does not exist"
    ]
