"""What the learning tests share: a one-step marketing campaign and an engine on it, ticked at
``NOW`` after sends logged ten days before."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scheduler import Engine

CAMPAIGN = """
id = "news"
kind = "marketing"
[trigger]
event = "signed_up"
[[steps]]
id = "issue"
after = "0m"
channel = "email"
subject = "News"
text = "News"
"""

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def learning_engine(database_url: str, directory: Path, attention: dict[str, Any]) -> Engine:
    """An engine with the news campaign, memory adapters, no holdout and ``attention``."""
    directory.mkdir(exist_ok=True)
    (directory / "news.toml").write_text(CAMPAIGN)
    return Engine.from_config(
        None,
        database_url=database_url,
        channels={"email": "memory", "sms": "memory"},
        campaigns_dir=str(directory),
        attention={"holdout": 0.0, **attention},
    )
