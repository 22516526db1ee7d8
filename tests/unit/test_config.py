"""Configuration: the example file, environment variables, overrides and errors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel

from scheduler.config import Settings, load_settings
from scheduler.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.toml"


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(_keys(annotation, f"{prefix}{name}."))
        else:
            keys.append(prefix + name)
    return keys


def test_example_config_states_the_defaults() -> None:
    """config.example.toml loads to exactly the built-in defaults."""
    loaded = load_settings(EXAMPLE).model_dump()
    defaults = Settings().model_dump()
    defaults["campaigns_dir"] = loaded["campaigns_dir"]
    assert loaded == defaults


def test_example_config_documents_every_key() -> None:
    """Every setting's name appears in config.example.toml."""
    text = EXAMPLE.read_text()
    missing = [key for key in _keys(Settings) if key.rsplit(".", 1)[-1] not in text]
    assert missing == []


def test_environment_overrides_file_and_nests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TACT_ variables with __ nesting win over the file; other file values stay."""
    config = tmp_path / "tact.toml"
    config.write_text(
        '[engine]\ntick_interval = "5s"\nbatch_size = 100\n[channels.email]\nadapter = "file"\npath = "x.jsonl"\n'
    )
    monkeypatch.setenv("TACT_ENGINE__TICK_INTERVAL", "2s")
    monkeypatch.setenv("TACT_CHANNELS__EMAIL__API_KEY", "k")
    settings = load_settings(config)
    assert settings.engine.tick_interval == timedelta(seconds=2)
    assert settings.engine.batch_size == 100
    assert settings.channels["email"] == {"adapter": "file", "path": "x.jsonl", "api_key": "k"}


def test_keyword_overrides_merge_into_sections(tmp_path: Path) -> None:
    """A keyword override changes one key of a section and keeps the file's others."""
    config = tmp_path / "tact.toml"
    config.write_text("[attention]\nbeta = 0.3\n")
    settings = load_settings(config, attention={"theta": 0.05})
    assert settings.attention.theta == 0.05
    assert settings.attention.beta == 0.3


def test_relative_campaigns_dir_follows_the_file(tmp_path: Path) -> None:
    """A relative campaigns_dir in a file is resolved against the file's directory."""
    config = tmp_path / "conf" / "tact.toml"
    config.parent.mkdir()
    config.write_text('campaigns_dir = "camps"\n')
    assert load_settings(config).campaigns_dir == tmp_path / "conf" / "camps"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[engine]\ntick_intervall = '1s'\n", "engine.tick_intervall: unknown key"),
        ("[engine]\ntick_interval = 'soon'\n", "engine.tick_interval"),
        ("[database\n", "tact.toml"),
        ("[attention]\nkappa_bounds = [1.5, 0.1]\n", "attention.kappa_bounds must be"),
        ("[attention]\nunsubscribe_ratio_bounds = [10.0, 0.1]\n", "attention.unsubscribe_ratio_bounds must be"),
    ],
)
def test_bad_config_names_the_problem(tmp_path: Path, text: str, expected: str) -> None:
    """Unknown keys, bad values and TOML syntax errors raise ConfigError naming the key."""
    config = tmp_path / "tact.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        load_settings(config)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    """A config path that does not exist is reported, not ignored."""
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")
