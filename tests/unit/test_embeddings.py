"""Query embeddings: the text-hash cache on disk, normalisation, and the real encoders (slow: load one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.bench.embeddings import Embeddings, HashingEmbedder, text_key
from app.config import Settings

TEXTS = ["What is the capital of France?", "Name the capital city of France.", "def add(a, b): return a + b"]


def test_cache_is_keyed_by_text_hash_and_survives_the_process(tmp_path: Path) -> None:
    first = Embeddings("hashing", tmp_path)
    vectors = first(TEXTS)
    assert vectors.shape == (3, 512) and first.encoded == 3
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    again = first([TEXTS[1], TEXTS[1]])
    assert first.encoded == 3 and np.array_equal(again[0], vectors[1])  # served from memory
    reopened = Embeddings("hashing", tmp_path)  # a new process would see the same file
    assert np.array_equal(reopened(TEXTS), vectors) and reopened.encoded == 0
    assert (tmp_path / "embeddings-hashing.npz").is_file()
    assert text_key("hashing", "x") != text_key("minilm", "x")  # one encoder's vectors never serve another


def test_unknown_encoder_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown embedder 'bert'"):
        Embeddings("bert")


def test_hashing_embedder_puts_similar_texts_closer() -> None:
    v = HashingEmbedder().encode(TEXTS)
    assert v[0] @ v[1] > v[0] @ v[2]


@pytest.mark.slow
def test_minilm_loads_from_its_wheel_and_tells_paraphrases_apart(tmp_path: Path) -> None:
    embeddings = Embeddings("minilm", tmp_path)
    v = embeddings(TEXTS)
    assert v.shape == (3, 384)
    assert v[0] @ v[1] > 0.7 > v[0] @ v[2]


@pytest.mark.slow
@pytest.mark.integration
def test_smollm2_embeddings_through_llamacpp(tmp_path: Path) -> None:
    embeddings = Embeddings("smollm2", tmp_path, Settings(local_parallel=1, local_ctx=4096))
    try:
        v = embeddings(TEXTS)
    finally:
        embeddings.close()
    assert v.shape[0] == 3 and v.shape[1] >= 512
    assert v[0] @ v[1] > v[0] @ v[2]
