"""Supervised local servers without llama.cpp: stand-in children (tiny HTTP servers) are SIGKILLed, hung or
made to fail, and the supervisor reaps, restarts, re-binds and opens/closes circuits."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.config import Settings
from app.pool import Pool, local_servers
from app.pool.circuit import ModelDownError
from app.pool.local_servers import LocalServer, LocalServers
from app.pool.supervisor import Supervisor
from tests.unit.test_local_servers import api_entry, entry, pid_exists

# Answers 200 on every GET until terminated; 500 on /health while the file named by argv[2] exists, and
# removes that file when it starts (so a restarted child is healthy again).
STAND_IN = """
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

port, sick = int(sys.argv[1]), sys.argv[2]
if os.path.exists(sick):
    os.remove(sick)

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(500 if self.path == "/health" and os.path.exists(sick) else 200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))


def wait_for(condition: Callable[[], object], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def supervised(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *, command: str = STAND_IN, max_restarts: int = 5
) -> Iterator[tuple[Pool, LocalServers, LocalServer]]:
    """A pool whose router and one candidate share one supervised stand-in server."""
    weights = tmp_path / "m.gguf"
    weights.write_bytes(b"GGUF")
    sick = tmp_path / "sick"

    def fake_command(gguf: Path, port: int, settings: Settings) -> list[str]:
        return [sys.executable, "-c", command, str(port), str(sick)]

    monkeypatch.setattr(local_servers, "llamacpp_command", fake_command)
    pool = Pool(
        entry("Router", backend="llamacpp", gguf=str(weights)),
        [entry("Chat", backend="llamacpp", gguf=str(weights)), api_entry()],
    )
    servers = LocalServers(Settings(local_ctx=4096, local_parallel=2))
    servers.supervisor = Supervisor(backoff_s=0.3, max_restarts=max_restarts, interval_s=0.1)
    try:
        servers.start_for(pool, timeout_s=20)
        (server,) = servers.servers.values()
        yield pool, servers, server
    finally:
        servers.stop_all()


@pytest.fixture
def one_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[Pool, LocalServers, LocalServer]]:
    yield from supervised(monkeypatch, tmp_path)


def sigkill(server: LocalServer) -> int:
    """Kill the child as a crash would: nobody in this process waits for it."""
    assert server.process is not None
    pid = server.process.pid
    os.kill(pid, signal.SIGKILL)
    return pid


def test_a_killed_child_is_reaped_and_restarted_on_its_port(
    one_server: tuple[Pool, LocalServers, LocalServer],
) -> None:
    pool, _, server = one_server
    port, url = server.port, pool.base_url(pool.router)
    assert pool.context_tokens(pool.router) == 2048  # one slot's share of the context
    pid = sigkill(server)
    wait_for(lambda: not pid_exists(pid))  # reaped: no <defunct> child left behind
    outage = pool.circuits.outage("Chat")
    assert outage is not None and "killed by signal 9" in outage.reason
    wait_for(lambda: pool.circuits.outage("Router") is None)  # restarted after the backoff
    assert server.running and server.process is not None and server.process.pid != pid
    assert server.port == port and pool.base_url(pool.router) == url


def test_a_call_fails_fast_while_the_model_is_down(
    one_server: tuple[Pool, LocalServers, LocalServer],
) -> None:
    pool, _, server = one_server
    sigkill(server)
    time.sleep(0.05)  # the kernel has delivered the signal; no supervisor round has run necessarily
    started = time.monotonic()
    with pytest.raises(ModelDownError) as caught:
        pool.circuits.check("Router")  # the pool's own check before a call: the probe sees the exit
    assert time.monotonic() - started < 0.5
    assert caught.value.retry_after_s is not None and caught.value.retry_after_s >= 1
    assert caught.value.message.startswith("model Router is down, restarting; retry in ")
    assert pool.circuits.outage("Api-LM") is None  # the hosted entry is not supervised


def test_a_restart_on_a_taken_port_rebinds_the_pool(
    one_server: tuple[Pool, LocalServers, LocalServer],
) -> None:
    pool, _, server = one_server
    old_port = server.port
    pid = sigkill(server)
    wait_for(lambda: not pid_exists(pid))
    with socket.socket() as squatter:  # someone else takes the port while the server is down
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the dead one's TIME_WAIT
        squatter.bind(("127.0.0.1", old_port))
        squatter.listen()
        wait_for(lambda: pool.circuits.outage("Chat") is None)
    assert server.port != old_port
    assert pool.base_url(pool.get("Chat")) == pool.base_url(pool.router) == server.base_url


def test_a_hung_child_is_killed_and_restarted(
    one_server: tuple[Pool, LocalServers, LocalServer], tmp_path: Path
) -> None:
    pool, _, server = one_server
    assert server.process is not None
    pid = server.process.pid
    (tmp_path / "sick").touch()  # alive, but /health fails from now on
    wait_for(lambda: server.process is not None and server.process.pid != pid and server.running)
    assert not pid_exists(pid)
    wait_for(lambda: pool.circuits.outage("Router") is None)


def test_supervision_gives_up_after_its_restarts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The child serves once; every restart finds the marker its first run left and exits at once.
    once = "import os, sys\nif os.path.exists(sys.argv[2] + '.ran'): sys.exit(3)\n"
    once += "open(sys.argv[2] + '.ran', 'w').close()\n" + STAND_IN
    for pool, _, server in supervised(monkeypatch, tmp_path, command=once, max_restarts=2):
        sigkill(server)
        wait_for(lambda p=pool: (outage := p.circuits.outage("Router")) and outage.back_at is None)
        with pytest.raises(ModelDownError) as caught:
            pool.circuits.check("Chat")
        assert caught.value.retry_after_s is None
        assert "not restarting" in caught.value.message and "gave up after 2 restarts" in caught.value.message
        assert "exited with code 3" in caught.value.message  # why the last restart failed


def test_stop_all_stops_supervision_first(one_server: tuple[Pool, LocalServers, LocalServer]) -> None:
    _, servers, server = one_server
    servers.stop_all()
    assert server.process is not None and not pid_exists(server.process.pid)
    time.sleep(1.0)  # several supervisor rounds, had it still been running
    assert not server.running


def test_no_supervision_with_zero_restarts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    weights = tmp_path / "m.gguf"
    weights.write_bytes(b"GGUF")
    monkeypatch.setattr(
        local_servers,
        "llamacpp_command",
        lambda gguf, port, settings: [sys.executable, "-c", STAND_IN, str(port), str(tmp_path / "s")],
    )
    pool = Pool(entry("Router", backend="llamacpp", gguf=str(weights)), [api_entry()])
    servers = LocalServers(Settings(local_restart_attempts=0))
    try:
        servers.start_for(pool, timeout_s=20)
        assert servers.supervisor is None
        pool.circuits.check("Router")
    finally:
        servers.stop_all()
