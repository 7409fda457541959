"""Per-entry timeouts: ``timeout_s`` in the pool file, backend defaults, the settings' override, and real
calls to a slow OpenAI-compatible endpoint where one entry times out and another does not."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.config import Settings
from app.pool import EndpointError, ModelEntry, Pool, PoolError, configured_pool, load_pool, transport
from app.pool.pool import DEFAULT_TIMEOUT_S

DELAY_S = 0.6


class _SlowChat(BaseHTTPRequestHandler):
    """/v1/chat/completions answering "ok" after DELAY_S: a model busy on a loaded CPU."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        time.sleep(DELAY_S)
        body = {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }
        payload = json.dumps(body).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the impatient client has gone: as it should

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def slow_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowChat)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def entry(name: str, **fields: Any) -> ModelEntry:
    values: dict[str, Any] = {
        "price_in": 0.1,
        "price_out": 0.2,
        "descriptor": f"{name}.",
        "backend": "openai",
    }
    values.setdefault("base_url", "http://127.0.0.1:9/v1")
    return ModelEntry(name=name, **{**values, **fields})


def pool_file(tmp_path: Path, **router: Any) -> Path:
    raw = {
        "router": {"name": "R", "base_url": "http://h/v1", "price_in": 0, "price_out": 0, "descriptor": "r"},
        "models": [{"name": "M", "backend": "llamacpp", "gguf": "smollm2-135m", "price_in": 0, "price_out": 0,
                    "descriptor": "m", "timeout_s": 12.5}],
    }  # fmt: skip
    raw["router"].update(router)
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_timeout_s_is_read_from_the_pool_file(tmp_path: Path) -> None:
    pool = load_pool(pool_file(tmp_path))
    assert pool.get("M").timeout_s == 12.5 and pool.timeout_for(pool.get("M")) == 12.5
    assert pool.router.timeout_s is None and pool.timeout_for(pool.router) == DEFAULT_TIMEOUT_S["openai"]


@pytest.mark.parametrize("bad", [0, -1, ".inf", "soon"])
def test_a_bad_timeout_names_the_entry_and_field(tmp_path: Path, bad: Any) -> None:
    path = pool_file(tmp_path)
    path.write_text(path.read_text().replace("timeout_s: 12.5", f"timeout_s: {bad}"))
    with pytest.raises(PoolError, match=r"models\[0\] \(M\)\.timeout_s"):
        load_pool(path)


def test_backend_defaults_give_local_cpu_models_longer_than_hosted_apis() -> None:
    pool = Pool(entry("Api"), [entry("Local", backend="llamacpp", gguf="x.gguf", base_url=None)])
    assert pool.timeout_for(pool.get("Local")) == DEFAULT_TIMEOUT_S["llamacpp"] == 300
    assert pool.timeout_for(pool.router) == DEFAULT_TIMEOUT_S["openai"] == 60
    assert DEFAULT_TIMEOUT_S["llamacpp"] > DEFAULT_TIMEOUT_S["vllm"] > DEFAULT_TIMEOUT_S["openai"]


def test_the_settings_override_applies_only_to_entries_without_their_own(tmp_path: Path) -> None:
    pool = configured_pool(Settings(request_timeout_s=30), load_pool(pool_file(tmp_path)))
    assert pool.timeout_for(pool.router) == 30 and pool.timeout_for(pool.get("M")) == 12.5
    unset = configured_pool(Settings(), load_pool(pool_file(tmp_path)))
    assert unset.timeout_for(unset.router) == 60


def test_each_client_gets_its_entrys_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    made: dict[str, float] = {}
    real = transport.make_client

    def spy(entry: ModelEntry, base_url: str, kind: str, max_tokens: int, timeout_s: float) -> Any:
        made[entry.name] = timeout_s
        return real(entry, base_url, kind, max_tokens, timeout_s)

    monkeypatch.setattr(transport, "make_client", spy)
    pool = Pool(entry("Router", timeout_s=90), [entry("Quick", timeout_s=5), entry("Default")])

    async def clients() -> None:
        for name in ("Router", "Quick", "Default"):
            pool._client(pool.get(name), 16, "chat")

    asyncio.run(clients())
    assert made == {"Router": 90, "Quick": 5, "Default": 60}


def test_a_slow_model_times_out_alone(slow_url: str) -> None:
    # Both entries call the same slow endpoint: only the one whose timeout is shorter than the model's
    # time fails, so a slow pool model no longer takes the router's timeout with it.
    pool = Pool(
        entry("Router", base_url=slow_url, timeout_s=5),
        [entry("Impatient", base_url=slow_url, timeout_s=0.2)],
    )

    async def main() -> tuple[Any, BaseException | None]:
        routed = await pool.generate("Router", [("human", "hi")], max_tokens=4)
        try:
            await pool.ask("Impatient", "hi", max_tokens=4)
        except EndpointError as exc:
            return routed, exc
        return routed, None

    started = time.monotonic()
    routed, failure = asyncio.run(main())
    assert routed.text == "ok" and routed.latency_s >= DELAY_S
    assert isinstance(failure, EndpointError) and "timed out" in failure.reason
    assert time.monotonic() - started < DELAY_S * 2 + 1
