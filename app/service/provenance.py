"""What a run was made with, recorded on its row: the graph code's version, the router and its weights;
and the pool as people see it."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import import_module, metadata
from pathlib import Path
from typing import Any

from app.config import shown_path
from app.pool import ModelEntry, Pool
from app.pool.local_servers import BUNDLED
from app.service.registry import REGISTRY


@lru_cache(maxsize=1)
def package_version() -> str:
    try:
        return metadata.version("routegraph")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


@lru_cache(maxsize=8)
def graph_version(graph: str) -> str:
    """``<routegraph version>+g<hash>``: the hash covers the graph package's source (state, prompts,
    nodes, wiring) and the shared hop model, so an edited prompt or node gets a new version without
    anyone bumping a constant. A label that is not a graph (a baseline run) gets the package version.

    >>> graph_version("router-r1").startswith(package_version() + "+g")
    True
    """
    spec = REGISTRY.get(graph)
    if spec is None:
        return package_version()
    folder = Path(str(import_module(spec.package).__file__)).parent
    digest = hashlib.sha256()
    shared = [folder.parent / name for name in ("hops.py", "ports.py", "answers.py")]
    for source in [*sorted(folder.glob("*.py")), *shared]:
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return f"{package_version()}+g{digest.hexdigest()[:10]}"


def router_weights(router: ModelEntry) -> str | None:
    """The router's weights: a GGUF (bundled name or path), an HF checkpoint, or the served model id."""
    if router.backend == "llamacpp":
        return router.gguf
    if router.backend == "vllm":
        return router.hf_model
    if router.backend == "openai":
        return router.served_id
    return None


def router_label(router: ModelEntry) -> str:
    """The router's name, and the checkpoint it runs when that is not a bundled model."""
    weights = router.gguf if router.backend == "llamacpp" else router.hf_model
    bundled = weights in BUNDLED
    return router.name if weights is None or bundled else f"{router.name} [{weights}]"


def pool_view(pool: Pool) -> dict[str, Any]:
    """What the pool is, for people: its file (relative to the project when inside it), the router and the
    weights it runs, and every entry's prices and descriptors."""
    return {
        "file": shown_path(pool.source) if pool.source else "(built in code)",
        "router": router_label(pool.router),
        "router_weights": router_weights(pool.router),
        "entries": [
            {"role": "router" if e is pool.router else "candidate", **e.model_dump()}
            for e in pool.all_entries()
        ],
    }
