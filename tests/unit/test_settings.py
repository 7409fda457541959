"""Settings: defaults, the YAML file, ROUTEGRAPH_* variables and their priority, and errors that name the
real source of a bad value (moved out of test_pool.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.config import PROJECT_ROOT, ConfigError, Settings, load_settings

POOLS = PROJECT_ROOT / "pools"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for key in list(os.environ):
        if key.startswith("ROUTEGRAPH_"):
            monkeypatch.delenv(key)
    return monkeypatch


def test_settings_defaults(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.budget_usd == 0.01
    assert settings.max_turns == 4
    assert settings.pool_file == POOLS / "local.yaml"


def test_env_var_sets_the_budget(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ROUTEGRAPH_BUDGET_USD", "0.25")
    clean_env.setenv("ROUTEGRAPH_MAX_TURNS", "2")
    settings = load_settings()
    assert settings.budget_usd == 0.25
    assert settings.max_turns == 2
    assert Settings().budget_usd == 0.25


@pytest.mark.parametrize(
    ("variable", "value"), [("BUDGET_USD", "cheap"), ("BUDGET_USD", "0"), ("MAX_TURNS", "99")]
)
def test_invalid_env_value_is_a_config_error(
    clean_env: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    clean_env.setenv(f"ROUTEGRAPH_{variable}", value)
    with pytest.raises(
        ConfigError, match=rf"{variable.lower()} \(environment variable ROUTEGRAPH_{variable}\)"
    ):
        load_settings()


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity"])
@pytest.mark.parametrize("variable", ["BUDGET_USD", "REQUEST_TIMEOUT_S", "REWARD_ALPHA"])
def test_a_non_finite_number_is_refused(clean_env: pytest.MonkeyPatch, variable: str, value: str) -> None:
    clean_env.setenv(f"ROUTEGRAPH_{variable}", value)
    with pytest.raises(ConfigError, match=rf"ROUTEGRAPH_{variable}.*finite"):
        load_settings()


def test_a_non_finite_number_in_the_config_file_is_refused(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "routegraph.yaml"
    path.write_text("budget_usd: .inf\n")
    with pytest.raises(ConfigError, match=rf"budget_usd \(config file {re.escape(str(path))}\).*finite"):
        load_settings(config_file=path)


def test_a_bad_variable_is_not_blamed_on_a_valid_config_file(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "routegraph.yaml"
    path.write_text("budget_usd: 0.5\nmax_turns: 3\n")
    clean_env.setenv("ROUTEGRAPH_MAX_TURNS", "abc")
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=path)
    message = str(caught.value)
    assert "max_turns (environment variable ROUTEGRAPH_MAX_TURNS)" in message
    assert str(path) not in message
    # Both wrong: each problem names its own source.
    path.write_text("budget_usd: -1\n")
    clean_env.setenv("ROUTEGRAPH_CONFIG", str(path))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert f"budget_usd (config file {path})" in message
    assert "max_turns (environment variable ROUTEGRAPH_MAX_TURNS)" in message


def test_yaml_config_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "routegraph.yaml"
    path.write_text("budget_usd: 0.5\nmax_turns: 3\npool_file: pools/router_r1_api.yaml\n")
    settings = load_settings(config_file=path)
    assert (settings.budget_usd, settings.max_turns) == (0.5, 3)
    assert settings.pool_file == Path("pools/router_r1_api.yaml")
    assert load_settings(config_file=path, max_turns=5).max_turns == 5  # explicit overrides win


def test_env_var_beats_the_config_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "routegraph.yaml"
    path.write_text("budget_usd: 0.5\nmax_turns: 3\n")
    clean_env.setenv("ROUTEGRAPH_BUDGET_USD", "0.2")
    settings = load_settings(config_file=path)
    assert (settings.budget_usd, settings.max_turns) == (0.2, 3)
    clean_env.setenv("ROUTEGRAPH_CONFIG", str(path))
    settings = load_settings()
    assert (settings.budget_usd, settings.max_turns) == (0.2, 3)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("budget_usd: [unclosed\n", "is not valid YAML"),
        ("- a\n- list\n", "must hold a mapping"),
        ("budget_usd: !!float\n", "is not valid YAML"),
        ("budget_usd: !!timestamp 2020-99-99\n", "is not valid YAML"),
    ],
)
def test_corrupt_config_file_names_the_path(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, content: str, fragment: str
) -> None:
    path = tmp_path / "routegraph.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=fragment) as caught:
        load_settings(config_file=path)
    assert str(path) in str(caught.value)
    clean_env.setenv("ROUTEGRAPH_CONFIG", str(path))
    with pytest.raises(ConfigError, match=fragment):
        load_settings()


def test_config_file_with_bad_values_names_the_file_and_field(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "routegraph.yaml"
    path.write_text("budget_usd: -1\ncolour: blue\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=path)
    message = str(caught.value)
    assert str(path) in message
    assert "budget_usd" in message
    assert "colour" in message


def test_missing_config_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_file=tmp_path / "absent.yaml")
    clean_env.setenv("ROUTEGRAPH_CONFIG", str(tmp_path / "absent.yaml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()
