"""What GRPO and SFT share: recipes, the pool and trace store, the model, metrics logging, Ctrl-C, export."""

from __future__ import annotations

import dataclasses
import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from app.config import PROJECT_ROOT, load_settings
from app.pool import Pool, load_pool
from app.pool.local_servers import BUNDLED, LocalServers, gguf_path
from storage import db
from storage.cache import SqlResponseCache

R = TypeVar("R")


@dataclass
class Recipe:
    """What every training recipe names; GRPO and SFT recipes add their own fields and defaults."""

    model: str = "smollm2-135m"
    """A bundled GGUF name, a .gguf path, or a Hugging Face checkpoint (directory or hub id)."""
    pool_file: str = "pools/local.yaml"
    data: str = "data/nq_open_dev300.jsonl"
    limit: int | None = 32
    seed: int = 0
    output_dir: str = "runs/train"
    database_url: str | None = None
    replay: str = "prefer"
    """Replay cache mode for pool calls: off, prefer or only (only: no server is started)."""
    max_steps: int = 3
    learning_rate: float = 1e-5
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    use_lora: bool = False
    lora_r: int = 16
    use_cpu: bool = True
    bf16: bool = False
    save_steps: int = 0
    """Checkpoint every N steps (0: only at the end and on Ctrl-C)."""
    export_gguf: bool = True
    """Write the trained router as GGUF for the embedded llama.cpp server (LLaMA-architecture routers)."""
    train_last_layers: int = 0
    """Only the last N transformer blocks (and the final norm) learn; 0: all of them."""

    def trainer_args(self) -> dict[str, Any]:
        """The ``TrainingArguments`` every trainer takes from a recipe."""
        return {
            "output_dir": self.output_dir,
            "max_steps": self.max_steps,
            "learning_rate": self.learning_rate,
            "per_device_train_batch_size": self.per_device_train_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "use_cpu": self.use_cpu,
            "bf16": self.bf16,
            "logging_steps": 1,
            "save_strategy": "steps" if self.save_steps else "no",
            "save_steps": self.save_steps or 500,
            "report_to": "none",
            "seed": self.seed,
        }


def load_recipe(cls: type[R], recipe_file: str | Path | None, overrides: dict[str, Any] | None = None) -> R:
    """A recipe dataclass from a flat YAML file (keys = field names) plus ``key=value`` overrides."""
    values: dict[str, Any] = {}
    if recipe_file is not None:
        loaded = yaml.safe_load(Path(recipe_file).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{recipe_file}: a recipe is a flat mapping of field names to values")
        values.update(loaded)
    values.update(overrides or {})
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(
            f"{recipe_file or 'overrides'}: unknown recipe keys {unknown}; known: {sorted(known)}"
        )
    for name, value in list(values.items()):
        default = known[name].default
        if isinstance(value, str) and isinstance(default, bool):
            values[name] = value.lower() in ("1", "true", "yes", "on")
        elif isinstance(value, str) and isinstance(default, int | float) and not isinstance(default, bool):
            values[name] = type(default)(value)
    return cls(**values)


def resolve_path(path: str) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() or candidate.exists() else PROJECT_ROOT / candidate


class TrainingSession:
    """One training run's world: pool with replay cache (and servers for misses), store, model, data."""

    def __init__(self, kind: str, recipe: Any) -> None:
        from training.checkpoints import hf_checkpoint_from_gguf

        self.kind, self.recipe = kind, recipe
        settings = load_settings(**({"database_url": recipe.database_url} if recipe.database_url else {}))
        self.factory = db.session_factory(db.make_engine(settings.database_url))
        self.pool: Pool = load_pool(resolve_path(recipe.pool_file))
        self.pool.cache, self.pool.cache_mode = SqlResponseCache(self.factory), recipe.replay
        self.servers: LocalServers | None = None
        if recipe.replay != "only":
            self.servers = LocalServers(settings)
            self.servers.start_for(self.pool)
        self.source_gguf: Path | None = None
        if recipe.model in BUNDLED or recipe.model.endswith(".gguf"):
            self.source_gguf = gguf_path(recipe.model)
            self.model_path = str(hf_checkpoint_from_gguf(self.source_gguf))
        else:
            from training.checkpoints import source_gguf

            self.model_path = recipe.model
            self.source_gguf = source_gguf(Path(recipe.model))  # checkpoints we trained remember theirs
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.tokenizer.padding_side = "left"
        self.dataset: Any = None
        self.source_run_ids: list[int] = []
        self.training_run_id = 0
        self.interrupted = False

    @classmethod
    @contextmanager
    def open(cls, kind: str, recipe: Any) -> Iterator[TrainingSession]:
        session = cls(kind, recipe)
        try:
            yield session
        finally:
            if session.servers is not None:
                session.servers.stop_all()

    # -- data -----------------------------------------------------------------------------------------
    def grpo_dataset(self, recipe: Any) -> None:
        from datasets import Dataset

        from training.data import grpo_rows_from_qa, grpo_rows_from_runs

        if recipe.data == "traces":
            rows, self.source_run_ids = grpo_rows_from_runs(self.factory, self.pool)
        else:
            rows = grpo_rows_from_qa(recipe.data, self.pool, recipe.limit, recipe.seed)
        if not rows:
            raise ValueError(f"no training rows from {recipe.data}")
        self.dataset = Dataset.from_list(rows)

    def sft_dataset(self, rows: list[dict[str, Any]]) -> None:
        from datasets import Dataset

        if not rows:
            raise ValueError("no SFT rows: no successful labelled trajectories and no synthetic source")
        self.dataset = Dataset.from_list(rows)

    def peft_config(self, use_lora: bool, r: int) -> Any:
        if not use_lora:
            return None
        from peft import LoraConfig

        return LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", task_type="CAUSAL_LM")

    def model_to_train(self, train_last_layers: int) -> Any:
        """What a trainer is given: the checkpoint's path (the trainer loads it in its own precision), or
        the model with only its last ``train_last_layers`` blocks learning (:meth:`load_model`)."""
        return self.load_model(train_last_layers) if train_last_layers else self.model_path

    def load_model(self, train_last_layers: int = 0) -> Any:
        """The model to train; with ``train_last_layers`` only the last N blocks and the final norm learn.

        Backpropagation then stops at the lowest trainable block, which is what makes ~1,000-token prompts
        trainable on a CPU; the saved checkpoint is still a whole model.
        """
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch.float32)
        if train_last_layers:
            blocks = model.model.layers
            trainable = {id(p) for block in blocks[-train_last_layers:] for p in block.parameters()}
            trainable |= {id(p) for p in model.model.norm.parameters()}
            for parameter in model.parameters():
                parameter.requires_grad = id(parameter) in trainable
        return model

    # -- metrics --------------------------------------------------------------------------------------
    def callback(self, rollout: Any = None) -> Any:
        from transformers import TrainerCallback

        session = self

        class StoreMetrics(TrainerCallback):
            """Per-step metrics into the trace store; Ctrl-C asks for a checkpoint and a clean stop."""

            def on_log(
                self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
            ) -> None:
                if not logs or ("loss" not in logs and "reward" not in logs):
                    return
                step: dict[str, Any] = {"step": state.global_step}
                step.update({k: float(v) for k, v in logs.items() if isinstance(v, int | float)})
                if "rewards/format/mean" in logs:
                    step["format_rate"] = 1.0 + float(logs["rewards/format/mean"])
                if "rewards/outcome/mean" in logs:
                    step["accuracy"] = float(logs["rewards/outcome/mean"])
                if rollout is not None and getattr(rollout, "last_costs", None):
                    step["cost"] = sum(rollout.last_costs) / len(rollout.last_costs)
                db.log_training_step(session.factory, session.training_run_id, step)

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                if session.interrupted:
                    control.should_save = True
                    control.should_training_stop = True

        return StoreMetrics()

    # -- running --------------------------------------------------------------------------------------
    def train(self, trainer: Any) -> dict[str, Any]:
        """Run the trainer; Ctrl-C saves a resumable checkpoint. Returns the run's summary."""
        config = {"kind": self.kind, **dataclasses.asdict(self.recipe)}
        self.training_run_id = db.create_training_run(self.factory, self.kind, config, self.source_run_ids)
        output = Path(self.recipe.output_dir)

        def on_interrupt(signum: int, frame: Any) -> None:
            self.interrupted = True  # the callback saves at the end of this step and stops

        previous = signal.signal(signal.SIGINT, on_interrupt)
        status = "ok"
        try:
            resume = _latest_checkpoint(output)
            trainer.train(resume_from_checkpoint=str(resume) if resume else None)
            status = "interrupted" if self.interrupted else "ok"
        except Exception:
            status = "failed"
            raise
        finally:
            signal.signal(signal.SIGINT, previous)
            final = output / "final"
            checkpoint: str | None = None
            if status != "failed":
                if self.recipe.use_lora:
                    # A whole model, the adapter merged: the next stage, export and serving load it as is.
                    trainer.model.merge_and_unload().save_pretrained(str(final))
                else:
                    trainer.save_model(str(final))
                self.tokenizer.save_pretrained(str(final))
                if self.source_gguf is not None:
                    (final / "SOURCE_GGUF").write_text(str(self.source_gguf))
                # Absolute: a router served from this file is traced back to this run by its path.
                checkpoint = str(final.resolve())
                if self.source_gguf is not None and self.recipe.export_gguf:
                    checkpoint = str(self._export(final).resolve())
            db.finish_training_run(self.factory, self.training_run_id, status=status, checkpoint=checkpoint)
        summary = self.summary()
        (output / "metrics.json").write_text(json.dumps(summary, indent=1))
        _reward_curve(summary["steps"], output / "reward_curve.html")
        return summary

    def _export(self, final: Path) -> Path:
        from training.checkpoints import export_gguf

        assert self.source_gguf is not None
        return export_gguf(final, self.source_gguf, final / "router.gguf")

    def summary(self) -> dict[str, Any]:
        run = db.get_training_run(self.factory, self.training_run_id)
        assert run is not None
        return {
            "training_run_id": run.id,
            "status": run.status,
            "checkpoint": run.checkpoint,
            "steps": (run.metrics or {}).get("steps", []),
        }


def _latest_checkpoint(output: Path) -> Path | None:
    checkpoints = sorted(output.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return checkpoints[-1] if checkpoints else None


def _reward_curve(steps: list[dict[str, Any]], out: Path) -> None:
    import plotly.graph_objects as go

    figure = go.Figure()
    for key in ("reward", "format_rate", "accuracy"):
        points = [(s["step"], s[key]) for s in steps if key in s]
        if points:
            figure.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], name=key))
    figure.update_layout(title="training curve", xaxis_title="step")
    figure.write_html(out)
