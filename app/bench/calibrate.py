"""Calibrate a router's cost knob to a target (RouteLLM's ``calibrate_threshold``) and save it as a config.

The knob λ is chosen on train by k-fold cross-validation: each fold's router predicts the queries it was
not fitted on, and λ is the value whose out-of-fold average price (or share of calls to the strongest
price tier) comes closest to the target. The router config (YAML) names the router, λ, the embedder, the
target, and the SHA-256 of the outcome file it was fitted on; ``routegraph bench recorded --router-config``
and :func:`router_from_config` load it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from app.bench.data import Query, price
from app.bench.embeddings import ENCODERS, Embeddings
from app.bench.predictors import pick
from app.bench.registry import CLASSICAL, make
from app.bench.routers import Router
from app.pool import ModelEntry

Metric = Literal["price", "share_strong"]
GRID = np.concatenate([[0.0], np.geomspace(1e-4, 8.0, 600)])
"""λ values tried: 0 (best predicted score) up to a weight under which the cheapest model always wins."""


@dataclass(frozen=True)
class RouterConfig:
    """A router at a calibrated operating point, as written to and read from YAML."""

    router: str
    knob: float
    metric: Metric
    target: float
    cv_achieved: float
    """The metric's out-of-fold value at ``knob`` on the train file."""
    encoder: str = "minilm"
    folds: int = 5
    fitted_on: str = ""
    fitted_on_sha256: str = ""
    fitted_on_queries: int = 0

    @property
    def label(self) -> str:
        unit = f"${self.target:g}" if self.metric == "price" else f"{100 * self.target:g}% strong"
        return f"{self.router}@{unit}"

    def save(self, path: Path) -> Path:
        import yaml

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(asdict(self), sort_keys=False))
        return path


def load_router_config(path: str | Path) -> RouterConfig:
    """A router config from YAML, or a ``ValueError`` naming the file and what is wrong."""
    import yaml

    path = Path(path)
    try:
        data: Any = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: router config does not exist") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a router config is a mapping (router, knob, metric, target, …)")
    try:
        config = RouterConfig(**data)
        knob, target = float(config.knob), float(config.target)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a router config ({exc})") from None
    if config.router not in CLASSICAL or config.metric not in ("price", "share_strong"):
        raise ValueError(f"{path}: router {config.router!r} / metric {config.metric!r} not known")
    if config.encoder not in ENCODERS or knob < 0 or target < 0:
        raise ValueError(f"{path}: encoder must be one of {ENCODERS}; knob and target ≥ 0")
    return config


def router_from_config(config: RouterConfig, embeddings: Embeddings | None = None) -> Router:
    """The configured router at its calibrated knob only (one operating point), labelled with its target."""
    router = make(config.router, embeddings)
    router.knobs = (float(config.knob),)
    router.knob = float(config.knob)
    router.label_override = config.label
    return router


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def achieved(predicted: np.ndarray, prices: np.ndarray, lam: float, metric: Metric) -> float:
    chosen = prices[pick(predicted, prices, lam)]
    if metric == "price":
        return float(chosen.mean())
    return float((chosen >= prices.max() - 1e-12).mean())


def solve_knob(
    predicted: np.ndarray, prices: np.ndarray, target: float, metric: Metric
) -> tuple[float, float]:
    """(λ, achieved) closest to ``target`` over :data:`GRID`; among equally close, the smallest λ."""
    values = np.array([achieved(predicted, prices, lam, metric) for lam in GRID])
    best = int(np.argmin(np.abs(values - target)))  # argmin takes the first: the smallest λ
    return float(GRID[best]), float(values[best])


def out_of_fold(
    build: Callable[[], Router],
    train: Sequence[Query],
    candidates: Sequence[ModelEntry],
    folds: int,
    seed: int,
) -> np.ndarray:
    """(train × candidates) predicted scores, each from a router fitted without that query's fold."""
    from sklearn.model_selection import KFold

    if folds < 2 or len(train) < folds:
        raise ValueError(f"calibration needs at least 2 folds and a query per fold ({len(train)} queries)")
    predicted = np.zeros((len(train), len(candidates)))
    for fit_idx, held_idx in KFold(folds, shuffle=True, random_state=seed).split(np.arange(len(train))):
        router = build()
        router.fit([train[i] for i in fit_idx], candidates)
        predict = getattr(router, "predict", None)
        if predict is None:
            raise ValueError(f"router {router.name!r} has no predicted scores to calibrate a knob on")
        predicted[held_idx] = predict([train[i] for i in held_idx])
    return predicted


def calibrate(
    router: str,
    train: Sequence[Query],
    candidates: Sequence[ModelEntry],
    *,
    target_price: float | None = None,
    target_share_strong: float | None = None,
    embeddings: Embeddings | None = None,
    folds: int = 5,
    seed: int = 0,
) -> RouterConfig:
    """The knob of ``router`` that meets the target out-of-fold on ``train`` (exactly one target given)."""
    if (target_price is None) == (target_share_strong is None):
        raise ValueError("give exactly one of target_price and target_share_strong")
    metric: Metric = "price" if target_price is not None else "share_strong"
    target = float(target_price if target_price is not None else target_share_strong)  # type: ignore[arg-type]
    if target < 0 or (metric == "share_strong" and target > 1):
        raise ValueError(f"target {target} out of range for {metric}")
    predicted = out_of_fold(lambda: make(router, embeddings), train, candidates, folds, seed)
    prices = np.array([price(m) for m in candidates])
    knob, reached = solve_knob(predicted, prices, target, metric)
    encoder = embeddings.encoder if embeddings else "minilm"
    return RouterConfig(router, knob, metric, target, reached, encoder, folds)


class Calibrated(Router):
    """A router that calibrates its own knob on whatever it is fitted on (cross-validated), then routes.

    Under leave-one-task-out each fold calibrates on its own train tasks, so no held-out query sets λ."""

    def __init__(
        self, router: str, metric: Metric, target: float, embeddings: Embeddings | None = None, folds: int = 5
    ) -> None:
        super().__init__()
        self.router, self.metric, self.target, self.folds = router, metric, target, folds
        self.embeddings = embeddings
        self.inner: Router = make(router, embeddings)
        self.config: RouterConfig | None = None
        self.label_override = RouterConfig(router, 0.0, metric, target, 0.0).label

    def fit(self, train: Sequence[Query], candidates: Sequence[ModelEntry]) -> None:
        price_target = self.target if self.metric == "price" else None
        share_target = self.target if self.metric == "share_strong" else None
        self.config = calibrate(
            self.router,
            train,
            candidates,
            target_price=price_target,
            target_share_strong=share_target,
            embeddings=self.embeddings,
            folds=self.folds,
        )
        self.inner = make(self.router, self.embeddings)
        self.inner.fit(train, candidates)
        self.inner.knob = self.knob = self.config.knob
        self.knobs = (self.knob,)

    def prepare(self, queries: Sequence[Query]) -> None:
        self.inner.prepare(queries)

    def choose(self, query: Query, candidates: Sequence[ModelEntry]) -> str:
        self.inner.knob = self.knob
        return self.inner.choose(query, candidates)
