"""Matrix factorisation router (RouteLLM's best): query embedding × a learned embedding per model → score.

score(q, m) = σ(w · (P_m ⊙ W e_q) + b_m): W projects the query's sentence embedding e_q, P_m is model m's
learned vector, w reads their element-wise product (RouteLLM's ``MFModel``), b_m is model m's bias. RouteLLM
trains it on pairwise wins between two models; here every candidate has a recorded score per query, so it
is fitted to all of them at once with binary cross-entropy on the scores in [0, 1].
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.bench.embeddings import Embeddings
from app.bench.predictors import _Embedded


class MFRouter(_Embedded):
    """Matrix factorisation on query embeddings; λ on normalised price as for every predictor."""

    name = "mf"

    def __init__(
        self, embeddings: Embeddings | None = None, dim: int = 64, epochs: int = 300, seed: int = 0
    ) -> None:
        super().__init__(embeddings)
        self.dim, self.epochs, self.seed = dim, epochs, seed

    def _fit(self, features: np.ndarray, targets: np.ndarray) -> None:
        import torch

        # One thread, as predictors.single_threaded() does (it cannot when torch is imported only here).
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            self._train(
                torch.tensor(features, dtype=torch.float32), torch.tensor(targets, dtype=torch.float32)
            )
        finally:
            torch.set_num_threads(before)

    def _train(self, x: Any, y: Any) -> None:
        import torch

        generator = torch.Generator().manual_seed(self.seed)
        n_models = y.shape[1]
        self._w_query = torch.nn.Parameter(torch.randn(x.shape[1], self.dim, generator=generator) * 0.05)
        self._p_model = torch.nn.Parameter(torch.randn(n_models, self.dim, generator=generator) * 0.1)
        self._w_head = torch.nn.Parameter(torch.randn(self.dim, generator=generator) * 0.1)
        # Start each model's bias at its mean score's logit: the factors then learn only the per-query part.
        mean = y.mean(dim=0).clamp(0.02, 0.98)
        self._bias = torch.nn.Parameter(torch.log(mean / (1 - mean)))
        params = [self._w_query, self._p_model, self._w_head, self._bias]
        optimiser = torch.optim.Adam(params, lr=3e-3, weight_decay=1e-4)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        for _ in range(self.epochs):  # full batch: a few thousand queries × 9 models
            optimiser.zero_grad()
            loss = loss_fn(self._logits(x), y)
            loss.backward()
            optimiser.step()

    def _logits(self, x: object) -> object:
        import torch

        assert isinstance(x, torch.Tensor)
        projected = x @ self._w_query  # (queries, dim)
        return (projected[:, None, :] * self._p_model[None]) @ self._w_head + self._bias

    def _predict(self, features: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            logits = self._logits(torch.tensor(features, dtype=torch.float32))
            assert isinstance(logits, torch.Tensor)
            return torch.sigmoid(logits).numpy()
