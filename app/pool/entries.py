"""The pool file's schema: one typed entry per model (a ``ModelCard`` plus how to reach it) and the file.

A pool file has a ``router`` entry (the model that routes) and ``models`` (the candidates it routes to).
Every entry is reached through an OpenAI-compatible endpoint: a hosted API (``backend: openai``), an
embedded llama.cpp server (``backend: llamacpp``) or a vLLM server (``backend: vllm``); ``backend:
recorded`` entries replay recorded scores instead of calling a model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from graphs.ports import ModelCard

Backend = Literal["openai", "llamacpp", "vllm", "recorded"]
Mode = Literal["chat", "completion"]


class PoolError(ValueError):
    """The pool file is wrong, or a model name is not in the pool."""


class ModelEntry(ModelCard):
    """One model of the pool: the card Router-R1 conditions on, and where and how it is served."""

    backend: Backend = "openai"
    base_url: str | None = None
    model_id: str | None = Field(default=None, description="Served model id; defaults to the name.")
    api_key_env: str | None = Field(default=None, description="Name of the env var holding the API key.")
    gguf: str | None = Field(default=None, description="llamacpp: a bundled model name or a .gguf path.")
    hf_model: str | None = Field(default=None, description="vllm: HF model id or checkpoint directory.")
    mode: Mode = "chat"
    prompt_template: str | None = Field(default=None, description="completion mode: few-shot, {query}.")
    stop: list[str] = Field(default_factory=list)
    outcomes: str | None = Field(
        default=None, description="recorded: JSONL of {question, scores: {served_id: score}} rows."
    )
    output_tokens: int = Field(default=256, ge=0, description="recorded: output tokens charged per call.")
    timeout_s: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="Seconds a call may take (default per backend)."
    )

    @model_validator(mode="after")
    def _backend_fields(self) -> ModelEntry:
        if self.backend == "recorded" and not self.outcomes:
            raise ValueError("backend 'recorded' needs outcomes (a recorded-outcome JSONL path)")
        if self.backend != "recorded" and self.outcomes:
            raise ValueError("outcomes is only for backend 'recorded'")
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend 'openai' needs a base_url")
        if self.backend == "llamacpp" and not self.gguf:
            raise ValueError("backend 'llamacpp' needs gguf (a bundled model name or a .gguf path)")
        if self.backend == "vllm" and not self.hf_model:
            raise ValueError("backend 'vllm' needs hf_model (HF id or checkpoint directory)")
        if (
            self.mode == "completion"
            and self.prompt_template is not None
            and "{query}" not in self.prompt_template
        ):
            raise ValueError("prompt_template must contain {query}")
        return self

    @property
    def served_id(self) -> str:
        return self.model_id or self.name

    @property
    def self_hosted(self) -> bool:
        """Served by a process routegraph starts (llama.cpp or vLLM), so decoding can be constrained."""
        return self.backend in ("llamacpp", "vllm")


class PoolFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    router: ModelEntry
    models: list[ModelEntry] = Field(min_length=1)

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ModelEntry]) -> list[ModelEntry]:
        # A field validator, so that the error is located at 'models' rather than the file's root.
        seen: set[str] = set()
        for entry in models:
            if entry.name.lower() in seen:
                raise ValueError(f"model name {entry.name!r} appears twice")
            seen.add(entry.name.lower())
        return models


def router_from_checkpoint(router: ModelEntry, checkpoint: str) -> ModelEntry:
    """The pool's router entry pointed at a trained checkpoint: GGUF on llama.cpp, else vLLM.

    Its served id names the weights (path, size and time written): the replay cache keys a call by entry
    name and served id, so a trained router asked what its untrained namesake was asked is not served
    that router's recorded reply, nor one of an earlier export to the same path.
    """
    path = Path(checkpoint).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise PoolError(f"router checkpoint {path} does not exist")
        changes: dict[str, Any] = {"backend": "llamacpp", "gguf": str(path.resolve()), "hf_model": None}
    else:
        changes = {"backend": "vllm", "hf_model": str(path.resolve()) if path.exists() else checkpoint}
    served = f"{router.name}@{_weights_id(path) if path.exists() else checkpoint}"
    return router.model_copy(update={**changes, "base_url": None, "model_id": served})


def _weights_id(path: Path) -> str:
    files = [path] if path.is_file() else [p for p in path.iterdir() if p.is_file()]
    stats = [p.stat() for p in files]
    size, written = sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)
    return f"{path.resolve()}:{size}:{written}"
