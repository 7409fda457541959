"""Reading a pool file: YAML → validated entries → a :class:`~app.pool.pool.Pool`, every problem named by
file, field and reason (``pools/x.yaml: models[1] (Gemma-3-270M).price_in: …``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from app.config import YAML_FAILURES, Settings
from app.pool.entries import PoolError, PoolFile, router_from_checkpoint
from app.pool.pool import Pool


def load_pool(path: str | Path) -> Pool:
    """Read and validate a pool file; every problem names the file, the field and the reason."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PoolError(f"{path}: pool file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PoolError(f"{path}: cannot read the pool file ({exc})") from None
    except YAML_FAILURES as exc:
        raise PoolError(f"{path}: not valid YAML: {exc or type(exc).__name__}") from None
    if not isinstance(raw, dict):
        raise PoolError(f"{path}: a pool file is a mapping with 'router' and 'models'")
    try:
        parsed = PoolFile.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = _describe_location(raw, err["loc"])
            problems.append(f"{loc}: {err['msg']}")
        raise PoolError(f"{path}: " + "; ".join(problems)) from None
    outcome_paths: dict[str, Path] = {}
    for entry in [parsed.router, *parsed.models]:
        if entry.backend == "recorded" and entry.outcomes and not Path(entry.outcomes).is_absolute():
            # A relative outcomes path is relative to the pool file, else to the working directory.
            beside = path.parent / entry.outcomes
            if beside.exists():
                outcome_paths[entry.name.lower()] = beside
    return Pool(parsed.router, parsed.models, source=path, outcome_paths=outcome_paths)


def _describe_location(raw: dict[str, Any], loc: tuple[Any, ...]) -> str:
    """'models[1] (Gemma-3-270M).price_in' reads better than ('models', 1, 'price_in')."""
    parts: list[str] = []
    node: Any = raw
    for key in loc:
        if isinstance(key, int):
            name = node[key].get("name") if isinstance(node, list) and isinstance(node[key], dict) else None
            if parts:
                parts[-1] += f"[{key}]" + (f" ({name})" if name else "")
            else:
                parts.append(f"[{key}]")
        else:
            parts.append(str(key))
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            node = None
    return ".".join(parts) or "<root>"


def configured_pool(settings: Settings, pool: Pool | None = None) -> Pool:
    """The settings' pool (or ``pool``) with their timeout and router overrides applied: a trained router
    checkpoint, or a router endpoint served elsewhere."""
    pool = pool or load_pool(settings.pool_file)
    pool.timeout_s = settings.request_timeout_s
    if settings.router_checkpoint:
        pool = pool.with_router(router_from_checkpoint(pool.router, settings.router_checkpoint))
    if settings.router_endpoint:
        pool = pool.with_router(
            pool.router.model_copy(update={"backend": "openai", "base_url": settings.router_endpoint})
        )
    return pool
