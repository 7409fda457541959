"""Pool files, cost arithmetic and settings: no servers, no network."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.config import PROJECT_ROOT, shown_path
from app.pool import EndpointError, ModelEntry, Pool, PoolError, load_pool
from tests.fakes import BIG, ROUTER, SMALL, fake, make_fake_pool

POOLS = PROJECT_ROOT / "pools"

ROUTER_R1_PRICES = {
    "Qwen2.5-7B-Instruct": 0.30,
    "LLaMA-3.1-8B-Instruct": 0.18,
    "LLaMA-3.1-70B-Instruct": 0.88,
    "Mistral-7B-Instruct": 0.20,
    "Mixtral-8x22B-Instruct": 1.20,
    "Gemma-2-27B-Instruct": 0.80,
}


# -- shipped pool files -------------------------------------------------------------------------------------
def test_local_pool_is_three_instruct_models_priced_by_size() -> None:
    pool = load_pool(POOLS / "local.yaml")
    assert pool.source == POOLS / "local.yaml"
    assert (
        pool.router.name == "Qwen2.5-Coder-0.5B-Router" and pool.router.gguf == "qwen2.5-coder-0.5b-instruct"
    )
    assert pool.names == ["SmolLM2-135M", "Qwen-0.5B", "Qwen-1.5B"]
    assert all(m.backend == "llamacpp" and m.gguf and m.mode == "chat" for m in pool.all_entries())
    prices = [(m.price_in, m.price_out) for m in pool.models]
    assert prices == sorted(prices) and len(set(prices)) == 3  # notional prices rise with size
    assert pool.cheapest().name == "SmolLM2-135M" and pool.most_expensive().name == "Qwen-1.5B"
    assert pool.router.gguf == pool.get("Qwen-0.5B").gguf  # the router shares the 0.5B model's server


def test_tiny_pool_loads() -> None:
    pool = load_pool(POOLS / "tiny.yaml")
    assert pool.source == POOLS / "tiny.yaml"
    assert pool.router.name == "SmolLM2-135M-Router"
    assert pool.router.backend == "llamacpp"
    assert pool.names == ["SmolLM2-135M-Instruct", "Gemma-3-270M"]
    assert all(m.backend == "llamacpp" and m.gguf for m in pool.all_entries())
    smol, gemma = pool.models
    assert (smol.price_in, smol.price_out, smol.mode) == (0.05, 0.10, "chat")
    assert (gemma.price_in, gemma.price_out, gemma.mode) == (0.10, 0.20, "completion")
    assert gemma.prompt_template is not None and "{query}" in gemma.prompt_template
    assert gemma.stop == ["\n"]
    assert pool.cheapest() is smol
    assert pool.most_expensive() is gemma


def test_router_r1_api_pool_has_the_paper_prices() -> None:
    pool = load_pool(POOLS / "router_r1_api.yaml")
    assert pool.router.name == "Router-R1-Qwen2.5-3B"
    assert pool.router.backend == "vllm"
    assert pool.router.hf_model
    assert pool.names == list(ROUTER_R1_PRICES)
    for name, price in ROUTER_R1_PRICES.items():
        entry = pool.get(name)
        assert (entry.price_in, entry.price_out) == (price, price), name
        assert entry.backend == "openai"
        assert entry.base_url and entry.base_url.startswith("https://")
        assert entry.api_key_env == "NVIDIA_API_KEY"
        assert entry.model_id and entry.served_id == entry.model_id
        assert entry.descriptor.strip()
    assert pool.cheapest().name == "LLaMA-3.1-8B-Instruct"
    assert pool.most_expensive().name == "Mixtral-8x22B-Instruct"


def test_snapshot_records_prices_and_source() -> None:
    pool = load_pool(POOLS / "router_r1_api.yaml")
    snap = pool.snapshot()
    assert snap["source"] == str(POOLS / "router_r1_api.yaml")
    assert snap["router"]["name"] == "Router-R1-Qwen2.5-3B"
    assert {m["name"]: m["price_in"] for m in snap["models"]} == ROUTER_R1_PRICES


# -- bad pool files -----------------------------------------------------------------------------------------
def _entry(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "base_url": "http://fake.invalid/v1",
        "price_in": 0.1,
        "price_out": 0.2,
        "descriptor": f"{name} test model",
        **fields,
    }


def _pool(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"router": _entry("R"), "models": [_entry("A"), _entry("B")]}
    raw.update(changes)
    return raw


def _without(entry: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != key}


BAD_POOLS: list[tuple[str, Any, list[str]]] = [
    # (case id, file content (str written verbatim, anything else dumped as YAML), fragments of the message)
    ("invalid-yaml", "router: [unclosed\nmodels: {", ["not valid YAML"]),
    # PyYAML's constructors raise IndexError / ValueError / RecursionError on these (found by fuzzing).
    ("empty-float-tag", "router: !!float\n", ["not valid YAML"]),
    ("bad-int-tag", "router: !!int x\n", ["not valid YAML"]),
    ("too-deep", "[" * 5000, ["not valid YAML"]),
    ("not-a-mapping", "- just\n- a list\n", ["mapping", "router", "models"]),
    ("empty-file", "", ["mapping"]),
    ("missing-router", {"models": [_entry("A")]}, ["router", "Field required"]),
    ("empty-models", _pool(models=[]), ["models", "at least 1"]),
    (
        "negative-price",
        _pool(models=[_entry("A"), _entry("B", price_in=-1)]),
        ["models[1] (B).price_in", "0"],
    ),
    ("missing-descriptor", _pool(models=[_without(_entry("A"), "descriptor")]), ["models[0] (A).descriptor"]),
    ("unknown-field", _pool(models=[_entry("A", colour="blue")]), ["models[0] (A).colour", "Extra inputs"]),
    ("duplicate-name", _pool(models=[_entry("Same"), _entry("same")]), ["models", "'same' appears twice"]),
    (
        "openai-without-base-url",
        _pool(models=[_without(_entry("A"), "base_url")]),
        ["models[0] (A)", "backend 'openai' needs a base_url"],
    ),
    (
        "llamacpp-without-gguf",
        _pool(router=_entry("R", backend="llamacpp", base_url=None)),
        ["router", "backend 'llamacpp' needs gguf"],
    ),
    (
        "vllm-without-hf-model",
        _pool(models=[_entry("A", backend="vllm")]),
        ["models[0] (A)", "backend 'vllm' needs hf_model"],
    ),
    (
        "template-without-query",
        _pool(models=[_entry("A", mode="completion", prompt_template="Q: {question}\nA:")]),
        ["models[0] (A)", "prompt_template must contain {query}"],
    ),
    ("bad-backend", _pool(models=[_entry("A", backend="ollama")]), ["models[0] (A).backend"]),
    ("bad-name", _pool(models=[_entry("has space")]), ["models[0] (has space).name"]),
    # Not a number a budget can be compared with: YAML's .inf / .nan, or the strings.
    ("infinite-latency", _pool(models=[_entry("A", latency_s=float("inf"))]), ["(A).latency_s", "finite"]),
    ("nan-latency", _pool(models=[_entry("A", latency_s="nan")]), ["(A).latency_s", "finite"]),
    ("nan-price", _pool(router=_entry("R", price_out=float("nan"))), ["router.price_out", "finite"]),
    (
        "infinite-price",
        "router: {name: R, base_url: u, price_in: .inf, price_out: 0, descriptor: d}\n"
        "models: [{name: A, base_url: u, price_in: 0, price_out: 0, descriptor: d}]\n",
        ["router.price_in", "finite"],
    ),
]


@pytest.mark.parametrize(("content", "fragments"), [c[1:] for c in BAD_POOLS], ids=[c[0] for c in BAD_POOLS])
def test_bad_pool_file_names_file_field_and_reason(
    tmp_path: Path, content: Any, fragments: list[str]
) -> None:
    path = tmp_path / "pool.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
    with pytest.raises(PoolError) as caught:
        load_pool(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_missing_pool_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(PoolError, match="does not exist") as caught:
        load_pool(path)
    assert str(path) in str(caught.value)


def test_pool_error_is_a_value_error() -> None:
    assert issubclass(PoolError, ValueError)


def test_completion_template_with_query_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "pool.yaml"
    raw = _pool(models=[_entry("A", mode="completion", prompt_template="Q: {query}\nA:", stop=["\n"])])
    path.write_text(yaml.safe_dump(raw))
    assert load_pool(path).get("a").prompt_template == "Q: {query}\nA:"


# -- cost arithmetic ----------------------------------------------------------------------------------------
def _model(name: str, price_in: float, price_out: float) -> ModelEntry:
    return ModelEntry.model_validate(_entry(name, price_in=price_in, price_out=price_out))


@pytest.mark.parametrize(
    ("price_in", "price_out", "tokens_in", "tokens_out", "expected"),
    [
        (0.30, 0.60, 1000, 500, 0.0006),  # 1000 * 0.30e-6 + 500 * 0.60e-6
        (0.30, 0.30, 1_000_000, 0, 0.30),
        (0.18, 0.18, 0, 1_000_000, 0.18),
        (1.20, 1.20, 2500, 1500, 0.0048),  # 4000 tokens at $1.20/M
        (0.0, 0.0, 10_000, 10_000, 0.0),
        (0.88, 0.88, 0, 0, 0.0),
    ],
)
def test_entry_cost(
    price_in: float, price_out: float, tokens_in: int, tokens_out: int, expected: float
) -> None:
    assert _model("M", price_in, price_out).cost(tokens_in, tokens_out) == pytest.approx(expected, abs=1e-15)


def test_pool_cost_uses_the_named_entry_and_the_router() -> None:
    pool = Pool(_model("R", 0.05, 0.10), [_model("A", 0.30, 0.60), _model("B", 1.0, 2.0)])
    assert pool.get("a").cost(1000, 500) == pytest.approx(0.0006)
    assert pool.get("B").cost(1000, 500) == pytest.approx(0.002)
    assert pool.get("R").cost(1000, 500) == pytest.approx(0.0001)


def test_cheapest_and_most_expensive_sum_both_prices_and_break_ties_by_name() -> None:
    pool = Pool(
        _model("R", 0.0, 0.0),
        [
            _model("Mid", 0.5, 0.5),
            _model("InHeavy", 2.0, 0.1),
            _model("Zed", 0.1, 0.2),
            _model("Abe", 0.2, 0.1),
        ],
    )
    assert pool.cheapest().name == "Abe"  # ties with Zed at 0.3; names decide
    assert pool.most_expensive().name == "InHeavy"
    assert pool.cheapest().name != pool.router.name  # the router is not a candidate


def test_get_is_case_insensitive_and_finds_the_router() -> None:
    pool = load_pool(POOLS / "router_r1_api.yaml")
    assert pool.get("llama-3.1-8b-instruct").name == "LLaMA-3.1-8B-Instruct"
    assert pool.get("  GEMMA-2-27B-INSTRUCT ").name == "Gemma-2-27B-Instruct"
    assert pool.get("router-r1-qwen2.5-3b") is pool.router
    assert pool.find("mistral-7b-instruct") is not None
    assert pool.find("Router-R1-Qwen2.5-3B") is None  # find looks at candidates only


def test_get_unknown_name_lists_the_pool() -> None:
    pool = load_pool(POOLS / "tiny.yaml")
    with pytest.raises(
        PoolError, match=r"unknown model 'GPT-5'; the pool has SmolLM2-135M-Instruct, Gemma-3-270M"
    ):
        pool.get("GPT-5")


# -- endpoints and calls through the fake pool ---------------------------------------------------------
def test_base_url_prefers_a_bound_endpoint_and_fails_for_unstarted_local_models() -> None:
    pool = load_pool(POOLS / "tiny.yaml")
    with pytest.raises(EndpointError, match="no server is running"):
        pool.base_url(pool.router)
    pool.bind_endpoint("smollm2-135m-router", "http://127.0.0.1:9999/v1/")
    assert pool.base_url(pool.router) == "http://127.0.0.1:9999/v1"
    copy = pool.with_router(pool.router)
    assert copy.base_url(copy.router) == "http://127.0.0.1:9999/v1"


def test_pool_chat_reports_tokens_cost_and_finish_reason() -> None:
    pool = make_fake_pool({SMALL: ["The capital is Paris. </search> trailing"]})
    entry = pool.get(SMALL)
    call = asyncio.run(
        pool.chat(
            entry,
            [("system", "be brief"), ("human", "capital of France?")],
            max_tokens=32,
            stop=["</search>"],
        )
    )
    assert call.model == SMALL
    assert call.text == "The capital is Paris. "
    assert call.finish_reason == "stop"
    assert (call.input_tokens, call.output_tokens) == (5, 4)
    assert call.cost == pytest.approx(entry.cost(5, 4))
    recorded = fake(pool, SMALL).calls[0]
    assert recorded.stop == ["</search>"]
    assert recorded.kwargs == {"extra_body": None}
    assert recorded.texts == ["be brief", "capital of France?"]


def test_pool_ask_sends_the_system_prompt_and_wraps_failures() -> None:
    pool = make_fake_pool({BIG: ["Rome", ConnectionError("connection refused")]})

    async def run() -> None:
        call = await pool.ask(BIG, "capital of Italy?", system="answer briefly")
        assert call.text == "Rome"
        with pytest.raises(EndpointError) as caught:
            await pool.ask(BIG, "again?")
        assert caught.value.model == BIG
        assert caught.value.reason.startswith("cannot connect")

    asyncio.run(run())
    assert [c.texts for c in fake(pool, BIG).calls] == [["answer briefly", "capital of Italy?"], ["again?"]]
    assert fake(pool, ROUTER).calls == []


def test_a_pool_file_is_shown_relative_to_the_project_when_inside_it(tmp_path: Path) -> None:
    assert shown_path(PROJECT_ROOT / "pools" / "local.yaml") == "pools/local.yaml"
    outside = tmp_path / "mine.yaml"
    assert shown_path(outside) == str(outside)
