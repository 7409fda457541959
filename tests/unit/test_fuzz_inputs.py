"""Property-based fuzzing of what reads users' files: the pool-file loader, the QA-file reader and
``traces import-qa``, and the trace store's probe of a SQLite file. Whatever the input, each either works
or fails with the project's own error and a message, never another exception, and never changes the file
it was given. Bounded ``max_examples`` keep the whole file a few seconds' work."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from app import cli
from app.config import DEFAULT_POOL, ConfigError
from app.evaluation.qa_file import DataError, scan_qa_file
from app.pool import Pool, PoolError, load_pool
from storage import db


def fuzz(examples: int) -> settings:
    # No deadline: the machine is shared, and a slow example is not a bug. No example database: nothing is
    # written into the checkout. The module-scoped fixtures are meant to be shared by every example.
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def written(directory: Path, name: str, content: str | bytes) -> Path:
    path = directory / name
    path.write_bytes(content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content)
    return path


# -- (a) the pool-file loader --------------------------------------------------------------------------------
YAML_TOKENS = [
    "router:", "models:", "name: A", "price_in:", "price_out:", "descriptor: d", "base_url: u", "backend:",
    " ", "  ", "\n", "\t", "- ", "{", "}", "[", "]", ",", ":", "'", '"', "#", "&a ", "*a", "<<: *a", "? ",
    "!!python/object/apply:os.system ['true']", "!!binary", "!!float", "|", ">", ".inf", ".nan", "null",
    "~", "1e309", "-1", "0", "yes", "%YAML 1.2\n", "---\n", "...\n", "\x00", "\ufeff", "é", "\\u2028",
]  # fmt: skip
yaml_ish = st.one_of(
    st.text(max_size=200),
    st.lists(st.one_of(st.sampled_from(YAML_TOKENS), st.text(max_size=4)), max_size=40).map("".join),
)
ENTRY_FIELDS = [
    "name", "backend", "base_url", "model_id", "api_key_env", "gguf", "hf_model", "mode", "prompt_template",
    "stop", "outcomes", "output_tokens", "price_in", "price_out", "latency_s", "descriptor",
    "example_performance", "colour",
]  # fmt: skip
field_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["openai", "llamacpp", "vllm", "recorded", "chat", "completion", "Q: {query}", "x.gguf"]),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
VALID_ENTRY = {
    "name": "A",
    "base_url": "http://x.invalid/v1",
    "price_in": 1,
    "price_out": 2,
    "descriptor": "d",
}
entries = st.builds(
    lambda name, changes: {**VALID_ENTRY, "name": name, **changes},
    st.text(min_size=1, max_size=8),
    st.dictionaries(st.sampled_from(ENTRY_FIELDS), field_values, max_size=4),
)
pools = st.fixed_dictionaries(
    {"router": entries, "models": st.lists(entries, max_size=3)},
    optional={"extra": field_values},
)


def assert_pool_or_pool_error(path: Path) -> None:
    before = path.read_bytes()
    try:
        result = load_pool(path)
    except (PoolError, ConfigError) as exc:
        assert str(exc).startswith(f"{path}: ") and len(str(exc)) > len(f"{path}: ")
    else:
        assert isinstance(result, Pool)
    assert path.read_bytes() == before


@fuzz(150)
@given(content=st.one_of(yaml_ish, st.binary(max_size=200)))
def test_pool_loader_on_yaml_ish_text(workdir: Path, content: str | bytes) -> None:
    assert_pool_or_pool_error(written(workdir, "pool.yaml", content))


@fuzz(150)
@given(raw=pools)
def test_pool_loader_on_entries_with_random_field_values(workdir: Path, raw: dict[str, Any]) -> None:
    assert_pool_or_pool_error(written(workdir, "pool.yaml", yaml.safe_dump(raw, allow_unicode=True)))


# -- (b) the QA-file reader and traces import-qa -------------------------------------------------------------
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(st.characters(), max_size=10)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
# Text with unpaired surrogates too: JSON can spell them (\ud800) though UTF-8 cannot store them.
# (st.text leaves surrogates out whatever its alphabet says: join the characters instead.)
any_text = st.lists(st.one_of(st.characters(), st.characters(categories=["Cs"])), max_size=12).map("".join)
qa_objects = st.fixed_dictionaries(
    {},
    optional={
        "question": st.one_of(any_text, json_values),
        "answers": st.one_of(st.lists(any_text, max_size=3), json_values),
        "answer": json_values,
        "id": st.one_of(st.integers(), any_text, json_values),
    },
)
qa_lines = st.lists(st.one_of(qa_objects, json_values).map(json.dumps), max_size=8)


def lines_to_check(content: bytes) -> list[int]:
    """The line numbers a reader must account for: every line but the blank ones (undecodable ones too)."""
    numbers = []
    for number, raw in enumerate(content.split(b"\n"), 1):
        try:
            blank = not raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
        except UnicodeDecodeError:
            blank = False
        if not blank:
            numbers.append(number)
    return numbers


def assert_every_line_accounted_for(path: Path) -> Any:
    content = path.read_bytes()
    scan = scan_qa_file(path)  # never raises for a readable file: a bad line is a rejected line
    assert path.read_bytes() == content
    numbers = sorted(
        [int(r.where.rsplit(":", 1)[1]) for r in scan.rows]
        + [int(e.where.rsplit(":", 1)[1]) for e in scan.rejected]
    )
    assert numbers == lines_to_check(content)
    for rejected in scan.rejected:
        assert str(rejected).startswith(f"{path}:") and rejected.reason
    for row in scan.rows:
        assert row.question.strip() and row.answers and all(a.strip() for a in row.answers)
        (row.question + "".join(row.answers)).encode("utf-8")  # storable
    return scan


@fuzz(150)
@given(content=st.one_of(st.binary(max_size=600), qa_lines.map(lambda ls: "\n".join(ls).encode())))
def test_qa_reader_on_arbitrary_bytes(workdir: Path, content: bytes) -> None:
    assert_every_line_accounted_for(written(workdir, "qa.jsonl", content))


@fuzz(150)
@given(lines=qa_lines)
def test_qa_reader_on_arbitrary_json_lines(workdir: Path, lines: list[str]) -> None:
    scan = assert_every_line_accounted_for(written(workdir, "qa.jsonl", "\n".join(lines) + "\n"))
    assert len(scan.rows) + len(scan.rejected) == len(lines)


@pytest.fixture(scope="module")
def store_env(workdir: Path) -> Iterator[dict[str, str]]:
    url = f"sqlite:///{workdir / 'traces.db'}"
    db.make_engine(url).dispose()
    yield {"ROUTEGRAPH_DATABASE_URL": url, "ROUTEGRAPH_POOL_FILE": str(DEFAULT_POOL)}


@fuzz(25)
@given(lines=qa_lines)
def test_import_qa_on_arbitrary_json_lines(
    workdir: Path, store_env: dict[str, str], lines: list[str]
) -> None:
    path = written(workdir, "qa.jsonl", "\n".join(lines) + "\n")
    before = path.read_bytes()
    expected = scan_qa_file(path)
    result = CliRunner().invoke(cli.app, ["traces", "import-qa", str(path)], env=store_env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == (0 if expected.rows and not expected.rejected else 1), result.output
    said = " ".join(result.output.split())  # rich wraps long lines
    assert f"imported {len(expected.rows)}, rejected {len(expected.rejected)}" in said
    assert path.read_bytes() == before


def test_reading_a_missing_qa_file_is_a_data_error(workdir: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        scan_qa_file(workdir / "absent.jsonl")


# -- (c) probing a file used as the SQLite store -------------------------------------------------------------
not_a_database = st.one_of(
    st.binary(min_size=1, max_size=2048),
    st.binary(max_size=2048).map(lambda tail: db.SQLITE_MAGIC + tail),  # the right magic, then anything
)


@fuzz(100)
@given(content=not_a_database)
def test_store_probe_refuses_arbitrary_bytes_and_leaves_them(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = written(Path(directory), "traces.db", content)
        with pytest.raises(db.StoreError) as caught:
            db.make_engine(f"sqlite:///{path}")
        assert str(path) in str(caught.value)
        assert path.read_bytes() == content
        assert os.listdir(directory) == ["traces.db"]  # no -wal, -shm or -journal made beside it
