"""The committed campaign JSON Schema matches the model, and the examples satisfy it."""

from __future__ import annotations

import importlib.util
import json
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = ROOT / "campaigns" / "campaign.schema.json"
EXAMPLES = sorted((ROOT / "campaigns").glob("*.toml"))


def load_generator() -> ModuleType:
    """Import scripts/gen_schema.py, which is not part of a package."""
    spec = importlib.util.spec_from_file_location("gen_schema", ROOT / "scripts" / "gen_schema.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def committed_schema() -> dict[str, Any]:
    """The schema file as committed."""
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return loaded


def test_committed_schema_is_up_to_date() -> None:
    """campaigns/campaign.schema.json is exactly what the generator writes."""
    expected = load_generator().schema_text()
    actual = SCHEMA_PATH.read_text(encoding="utf-8")
    assert actual == expected, "campaigns/campaign.schema.json is out of date: run `python scripts/gen_schema.py`"


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    """The schema itself is valid under its meta-schema."""
    schema = committed_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_there_are_examples_to_check() -> None:
    """The shipped example campaigns are found."""
    assert [path.name for path in EXAMPLES] == [
        "newsletter.toml",
        "order-followup.toml",
        "trial-onboarding.toml",
        "upgrade-offer.toml",
        "weekly-digest.toml",
    ]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_example_campaign_satisfies_the_schema(path: Path) -> None:
    """Each shipped campaign validates against the schema and declares it."""
    text = path.read_text(encoding="utf-8")
    assert text.startswith("#:schema ./campaign.schema.json\n")
    errors = list(Draft202012Validator(committed_schema()).iter_errors(tomllib.loads(text)))
    assert errors == []


def test_schema_rejects_a_misspelled_key() -> None:
    """Editors flag unknown keys: the schema forbids them."""
    campaign = {"trigger": {"event": "x"}, "steps": [{"id": "a", "chanel": "email", "text": "x"}]}
    assert not Draft202012Validator(committed_schema()).is_valid(campaign)


def test_schema_checks_durations_and_times() -> None:
    """Durations and clock times are strings with the loader's notation."""
    validator = Draft202012Validator(committed_schema())
    step = {"id": "a", "channel": "email", "text": "x"}
    good = {"trigger": {"event": "x"}, "send_window": {"start": "09:00", "end": "24:00"}}
    assert validator.is_valid({**good, "steps": [{**step, "after": "1d12h"}]})
    assert not validator.is_valid({**good, "steps": [{**step, "after": "2 days"}]})
    assert not validator.is_valid({**good, "send_window": {"start": "9am"}, "steps": [step]})
