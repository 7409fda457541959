"""Process settings: the only module that reads environment variables.

Values come, in increasing priority, from defaults, an optional YAML file (``ROUTEGRAPH_CONFIG`` or the
``config_file`` argument) and ``ROUTEGRAPH_*`` environment variables.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POOL = PROJECT_ROOT / "pools" / "local.yaml"


def shown_path(path: str | Path) -> str:
    """A file as people read it: relative to the project when it is inside it, else as given."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(PROJECT_ROOT)) if resolved.is_relative_to(PROJECT_ROOT) else str(path)


DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "routegraph"

_FILE_VALUES: ContextVar[dict[str, Any] | None] = ContextVar("routegraph_config_file_values", default=None)
"""Values ``load_settings`` read from the YAML file, applied below the environment in priority."""


class ConfigError(ValueError):
    """The settings file or environment holds a value routegraph cannot use."""


YAML_FAILURES: tuple[type[Exception], ...] = (
    yaml.YAMLError,
    ValueError,
    TypeError,
    IndexError,
    RecursionError,
)
"""What ``yaml.safe_load`` raises for text that is not valid YAML: its own errors, and those its
constructors let through (``!!float`` with no value: IndexError; ``!!int x``: ValueError; ``[[[[…``
nested thousands deep: RecursionError)."""


class Settings(BaseSettings):
    """Everything a routegraph process is configured with."""

    # allow_inf_nan: a budget or timeout of inf / nan would pass gt=0 (or fail it with a puzzling message).
    model_config = SettingsConfigDict(env_prefix="ROUTEGRAPH_", extra="forbid", allow_inf_nan=False)

    data_dir: Path = Field(
        default=DEFAULT_DATA_DIR,
        description="Where routegraph keeps its files: the default trace store and prepared model weights.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL of the trace store (default: SQLite file traces.db in data_dir; "
        "Postgres works too).",
    )
    pool_file: Path = Field(default=DEFAULT_POOL, description="YAML file describing the model pool.")
    router_endpoint: str | None = Field(
        default=None, description="Overrides the base_url of the pool's router entry (e.g. a vLLM server)."
    )
    router_checkpoint: str | None = Field(
        default=None,
        description="A trained router replacing the pool's: a .gguf (llama.cpp) or HF checkpoint (vLLM).",
    )
    budget_usd: float = Field(default=0.01, gt=0, description="Spend limit for one question, in USD.")
    max_turns: int = Field(default=4, ge=1, le=16, description="Route calls allowed before a forced answer.")
    min_routes: int = Field(
        default=1, ge=0, description="Route calls required before answering (grammar-enforced routers only)."
    )
    response_max_tokens: int = Field(default=512, ge=1, description="Cap on a pool model's reply.")
    router_max_tokens: int = Field(default=320, ge=8, description="Cap on one router generation step.")
    r2_allocation: str = Field(
        default="router",
        pattern=r"^(router|cheapest|strongest|fixed:.+)$",
        description="R2-Reasoner allocation: router, cheapest, strongest or fixed:<model>.",
    )
    r2_escalate: bool = Field(default=False, description="R2-Reasoner: re-run a failed subtask one tier up.")
    r2_max_subtasks: int = Field(
        default=4, ge=1, le=8, description="R2-Reasoner: most subtasks per question."
    )
    r2_aggregator: str | None = Field(
        default=None, description="R2-Reasoner: pool entry composing the final answer (default: the router)."
    )
    replay: Literal["off", "prefer", "only"] = Field(
        default="off",
        description="Replay cache: off (always call; answers are still recorded), prefer (recorded answer "
        "when the identical request was made before), only (never call a model; a miss is an error).",
    )
    reward_alpha: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Router-R1 reward stored for runs with a gold answer: cost share of a right answer.",
    )
    reward_metric: Literal["em", "f1"] = Field(
        default="em", description="Router-R1 reward's outcome metric: exact match (em) or token F1 (f1)."
    )
    request_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="Per-call timeout for pool entries without their own timeout_s (unset: each backend's "
        "default, app.pool.pool.DEFAULT_TIMEOUT_S).",
    )
    cache_dir: Path = Field(
        default=DEFAULT_DATA_DIR / "cache",
        description="Derived data kept between runs (query embeddings keyed by text hash).",
    )
    # Half the cores, not all: llama.cpp's threads wait for each other at every layer, so a server whose
    # threads outnumber the free cores stalls whenever anything else runs (the router's server and a pool
    # model's, the browser, a training job). With 2 threads on 2 cores and one core busy, the app's first
    # answer took 109 s; with 1 thread, 18 s (benchmarks/results/app_ready.md).
    local_threads: int = Field(
        default_factory=lambda: max(1, (os.cpu_count() or 2) // 2),
        ge=1,
        description="CPU threads for each embedded llama.cpp server (default: half the cores).",
    )
    # Four slots of 4,096 tokens: one per subtask of an R2-Reasoner wave (r2_max_subtasks), which llama.cpp
    # then decodes as one batch (benchmarks/results/r2_parallel.md: 1.35x over sequential, 1.09x with 2).
    local_ctx: int = Field(default=16384, ge=512, description="Context (all slots) of each embedded server.")
    local_parallel: int = Field(default=4, ge=1, description="Parallel slots of each embedded server.")
    local_restart_backoff_s: float = Field(
        default=1.0, gt=0, description="Wait before restarting a dead embedded server; doubles per restart."
    )
    local_restart_attempts: int = Field(
        default=5, ge=0, description="Restarts of one embedded server per 10 minutes (0: not supervised)."
    )
    log_dir: Path = Field(
        default_factory=lambda: Path(os.environ.get("TMPDIR") or "/tmp") / "routegraph-servers",
        description="Where the embedded model servers write their logs.",
    )
    api_key: str | None = Field(
        default=None, description="Bearer token `routegraph serve` requires (none: the server is open)."
    )
    server_max_body_bytes: int = Field(default=1_000_000, ge=1024, description="Largest request body.")
    # One run per llama.cpp slot (local_parallel): a run beyond that would only wait inside llama.cpp, where
    # its timeout ticks, instead of in the server's queue, where it does not.
    server_max_concurrency: int = Field(default=4, ge=1, description="Graph runs the server runs at once.")
    server_max_queue: int = Field(
        default=64,
        ge=0,
        description="Requests that may wait for a run slot; beyond that the server says 429.",
    )

    @model_validator(mode="after")
    def _default_database_in_data_dir(self) -> Settings:
        # Unset: the SQLite file follows data_dir, so one variable moves everything routegraph writes.
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir.expanduser() / 'traces.db'}"
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        file_values = _FILE_VALUES.get()
        yaml_file = os.environ.get("ROUTEGRAPH_CONFIG")
        if file_values is not None:
            sources.append(InitSettingsSource(settings_cls, init_kwargs=file_values))
        elif yaml_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings, turning any invalid or unreadable value into a ``ConfigError`` naming its source."""
    file_values: dict[str, Any] = {}
    yaml_file = config_file if config_file is not None else os.environ.get("ROUTEGRAPH_CONFIG")
    if yaml_file:
        path = Path(yaml_file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        file_values = _read_yaml(path)
    # The file's values rank below ROUTEGRAPH_* variables, as documented above: not init arguments.
    token = _FILE_VALUES.set(file_values)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(map(str, error["loc"])) or "settings"
            name = str(error["loc"][0]) if error["loc"] else ""
            source = _source_of(name, overrides, file_values, yaml_file)
            problems.append(f"{field} ({source}): {error['msg']}")
        raise ConfigError(f"invalid settings: {'; '.join(problems)}") from exc
    finally:
        _FILE_VALUES.reset(token)


def _source_of(
    field: str, overrides: dict[str, Any], file_values: dict[str, Any], yaml_file: str | Path | None
) -> str:
    """Where a field's value came from, in the sources' order of priority: an argument (a command's
    option), a ROUTEGRAPH_* variable, the config file; else a check of several values together."""
    if field in overrides:
        return "command option"
    variable = f"ROUTEGRAPH_{field.upper()}"
    # pydantic-settings matches variable names case-insensitively.
    named = next((name for name in os.environ if name.upper() == variable), None) if field else None
    if named is not None:
        return f"environment variable {named}"
    if field in file_values:
        return f"config file {yaml_file}"
    return "these values together"


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except YAML_FAILURES as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(f"config file {path} is not valid YAML: {reason}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of setting names to values")
    return data


def secret_from_env(name: str | None) -> str | None:
    """Read an API key from the environment variable a pool entry names (keys never live in files)."""
    return os.environ.get(name) if name else None
