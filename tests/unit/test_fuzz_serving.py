"""Property-based fuzzing (Hypothesis), bounded to a few seconds:

* the Router-R1 action parser takes any text to an action: a route call to a known model, an answer, or
  ``malformed`` with a reason (the parser's format error, which the graph turns into a forced answer) —
  never an exception;
* the server's chat-completions endpoint takes any JSON body (and any bytes) to a 2xx or a 4xx with an
  OpenAI-style error body — never a 500, never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.config import Settings
from app.server import create_app
from app.service import GRAPHS, RouteGraphService
from graphs.router_r1.prompts import TAG_PATTERN, parse_action
from tests.fakes import BIG, FAKE_BASE_URL, ROUTER, SMALL, make_fake_pool
from tests.unit.test_langchain import router_reply

KNOWN = [SMALL, BIG]
TAGS = ["<think>", "</think>", "<search>", "</search>", "<answer>", "</answer>", "<information>"]
PIECES = [*TAGS, ":", " ", "\n", SMALL, BIG, SMALL.lower(), "Gemma", "Paris", "x", "<", ">", "/"]

router_text = st.one_of(
    st.text(max_size=200),
    st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=8)), max_size=24).map("".join),
)


@settings(max_examples=400, deadline=None)
@given(router_text)
def test_any_router_text_parses_to_an_action_or_a_format_error(text: str) -> None:
    action = parse_action(text, KNOWN)  # never raises
    if action.kind == "route":
        assert action.model in KNOWN and action.query
        assert action.query == action.query.strip() and not TAG_PATTERN.search(action.query)
    elif action.kind == "answer":
        assert action.answer and action.answer == action.answer.strip()
    else:
        assert action.kind == "malformed" and action.reason


# -- the server's request schema -----------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
any_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "developer", "tool", "wizard"])},
    optional={
        "content": st.one_of(
            st.text(max_size=40),
            st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": json_values}), max_size=2),
            json_values,
        )
    },
)
user_turn = st.fixed_dictionaries({"role": st.just("user"), "content": st.text(min_size=1, max_size=60)})
# Sampling and routegraph options of the right type, in range or just out of it (``anything`` has the rest).
OPTIONS = {
    "stream": st.booleans(),
    "n": st.integers(-1, 3),
    "temperature": st.floats(-1, 3),
    "top_p": st.floats(-0.5, 1.5),
    "max_tokens": st.integers(-2, 64),
    "max_completion_tokens": st.integers(-2, 64),
    "budget_usd": st.floats(-1, 1),
    "max_turns": st.integers(-1, 20),
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans()}),
}
near_valid = st.fixed_dictionaries(
    {
        "model": st.sampled_from([*GRAPHS, SMALL, BIG, "gpt-9", ""]),
        "messages": st.tuples(st.lists(any_message, max_size=2), user_turn).map(lambda t: [*t[0], t[1]]),
    },
    optional=OPTIONS,
)
anything = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"model": st.sampled_from([*GRAPHS, SMALL, "gpt-9"]), "messages": st.lists(any_message, max_size=3)},
        optional=dict.fromkeys(OPTIONS, json_values),
    ),
)
bodies = st.one_of(near_valid, near_valid, anything)


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A server over scripted models that answer anything, forever; bounded context windows, so that the
    context-length check is exercised too."""
    pool = make_fake_pool({ROUTER: [router_reply] * 100_000, SMALL: ["Paris."] * 100_000})
    for fake_model in pool.client_factory.models.values():  # type: ignore[union-attr]
        if not fake_model.replies:
            fake_model.replies = ["Lyon."] * 100_000
    for entry in pool.all_entries():
        pool.bind_endpoint(entry.name, FAKE_BASE_URL, context_tokens=1024)
    database = tmp_path_factory.mktemp("fuzz") / "t.db"
    settings_ = Settings(database_url=f"sqlite:///{database}", max_turns=1)
    service = RouteGraphService.create(settings_, pool=pool, start_servers=False)
    try:
        with TestClient(create_app(service, max_body_bytes=20_000), raise_server_exceptions=False) as client:
            yield client
    finally:
        service.close()


def check_answer(status: int, text: str, content_type: str) -> None:
    assert status < 500, text
    assert "Traceback" not in text and 'File "' not in text
    if status >= 400:
        error = json.loads(text)["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
    elif content_type.startswith("text/event-stream"):
        events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        for payload in map(json.loads, events[:-1]):
            if "error" in payload:
                assert set(payload["error"]) == {"message", "type", "param", "code"}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bodies)
def test_any_json_body_gets_a_2xx_or_an_openai_4xx(fuzz_client: TestClient, body: Any) -> None:
    response = fuzz_client.post("/v1/chat/completions", content=json.dumps(body).encode())
    check_answer(response.status_code, response.text, response.headers.get("content-type", ""))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_any_bytes_get_an_openai_4xx(fuzz_client: TestClient, raw: bytes) -> None:
    response = fuzz_client.post("/v1/chat/completions", content=raw)
    check_answer(response.status_code, response.text, response.headers.get("content-type", ""))


def test_deeply_nested_json_is_a_400(fuzz_client: TestClient, tmp_path: Path) -> None:
    raw = b'{"model": "router-r1", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    response = fuzz_client.post("/v1/chat/completions", content=raw)
    assert response.status_code == 400
    check_answer(response.status_code, response.text, response.headers["content-type"])
