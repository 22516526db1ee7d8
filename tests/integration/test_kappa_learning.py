"""The engine learns κ from its own send log and the events that answered it, keeps it in the
database, and (with ``kappa_learning = "apply"``) decides with it — on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import math
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from scheduler import Engine
from scheduler.calibration import LEARNED_KAPPA_KEY
from scheduler.explain import explain_recipient
from scheduler.store import event_t, send_log_t
from tests.integration.learning_scenario import NOW, learning_engine


def make_engine(database_url: str, directory: Path, **attention: Any) -> Engine:
    return learning_engine(database_url, directory, {"kappa_learning": "apply", **attention})


def log_answered_sends(engine: Engine, true_kappa: float, *, recipients: int = 300, seed: int = 3) -> int:
    """Sent touches ten days ago, logged with the p̂ of κ 0.5, answered at ``true_kappa``."""
    rng = random.Random(seed)
    sends, events = [], []
    touchpoint = 0
    for index in range(recipients):
        base = rng.uniform(0.1, 0.6)
        for _ in range(8):
            touchpoint += 1
            fatigue = rng.uniform(0.0, 3.0)
            at = NOW - timedelta(days=10, minutes=touchpoint)
            sends.append({
                "at": at, "touchpoint_id": touchpoint, "recipient_id": f"r{index}", "campaign_id": "news",
                "step_id": "issue", "channel": "email", "kind": "marketing", "decision": "sent",
                "reason": "value_ok", "fatigue": fatigue, "engagement_p": 0.2 * math.exp(-0.5 * fatigue),
            })  # fmt: skip
            if rng.random() < base * math.exp(-true_kappa * fatigue):
                events.append({
                    "event_id": f"e{touchpoint}", "recipient_id": f"r{index}", "type": "clicked",
                    "at": at + timedelta(hours=2), "channel": "email", "touchpoint_id": touchpoint,
                    "properties": {}, "applied_at": at + timedelta(hours=2),
                })  # fmt: skip
    with engine.store.transaction() as connection:
        connection.execute(send_log_t.insert(), sends)
        connection.execute(event_t.insert(), events)
    return len(sends)


def test_tick_learns_kappa_from_answered_sends(database_url: str, tmp_path: Path) -> None:
    """An audience whose answers fall off steeply with fatigue raises κ; the fit is kept in meta."""
    engine = make_engine(database_url, tmp_path / "campaigns")
    try:
        logged = log_answered_sends(engine, true_kappa=2.4)
        with capture_logs() as logs:
            engine.tick(at=NOW)
        kappa = engine.settings.attention.kappa_for("email")
        assert 0.6 < kappa <= 1.5
        stored = json.loads(engine.store.get_meta(LEARNED_KAPPA_KEY) or "{}")
        assert stored["email"]["touches"] == logged
        assert stored["email"]["kappa"] == round(kappa, 4)
        assert stored["email"]["history"][-1] == [NOW.isoformat(), kappa]
        learned = [entry for entry in logs if entry["event"] == "kappa_learned"]
        assert [(entry["email"], entry["applied"]) for entry in learned] == [(round(kappa, 3), True)]
        assert engine.settings.attention.kappa == 0.5  # the configured value is the prior, unchanged
    finally:
        engine.close()


def test_a_restarted_engine_decides_with_the_learned_kappa(database_url: str, tmp_path: Path) -> None:
    """A new engine on the same database uses the κ last learned, without refitting within a day."""
    first = make_engine(database_url, tmp_path / "campaigns")
    try:
        log_answered_sends(first, true_kappa=0.2)
        first.tick(at=NOW)
        learned = first.settings.attention.kappa_for("email")
        assert learned < 0.5
    finally:
        first.close()
    second = make_engine(database_url, tmp_path / "campaigns")
    try:
        second.upsert_recipients([{"id": "r0", "email": "r0@example.com"}])
        report = explain_recipient(second, "r0", at=NOW)
        assert report is not None
        assert f"fatigue weight kappa: email {learned:.2f} (learned), sms 0.50" in report
        assert second.load_learned() == {"email": learned}
        with capture_logs() as logs:
            second.tick(at=NOW + timedelta(hours=1))
        assert not [entry for entry in logs if entry["event"] == "kappa_learned"]
        assert second.settings.attention.kappa_for("email") == learned
    finally:
        second.close()


def test_measuring_keeps_the_configured_kappa_and_says_what_the_answers_suggest(
    database_url: str, tmp_path: Path
) -> None:
    """``kappa_learning = "measure"`` fits and keeps the fit, but decides with the
    configured κ; ``tact explain`` shows both."""
    engine = make_engine(database_url, tmp_path / "campaigns", kappa_learning="measure")
    try:
        log_answered_sends(engine, true_kappa=2.4)
        engine.tick(at=NOW)
        assert engine.settings.attention.kappa_for("email") == 0.5
        fit = json.loads(engine.store.get_meta(LEARNED_KAPPA_KEY) or "{}")["email"]
        assert fit["applied"] is False
        assert fit["kappa"] > 0.6
        assert fit["history"][-1] == [NOW.isoformat(), 0.5]  # the κ in force, not the suggestion
        engine.upsert_recipients([{"id": "r0", "email": "r0@example.com"}])
        report = explain_recipient(engine, "r0", at=NOW)
        assert report is not None
        assert f"fatigue weight kappa: email 0.50 (answers suggest {fit['kappa']:.2f}), sms 0.50" in report
    finally:
        engine.close()


def test_learning_off_keeps_the_configured_kappa(database_url: str, tmp_path: Path) -> None:
    """``kappa_learning = "off"`` never fits, whatever the send log says."""
    off = make_engine(database_url, tmp_path / "campaigns", kappa_learning="off")
    try:
        log_answered_sends(off, true_kappa=2.4)
        off.tick(at=NOW)
        assert off.settings.attention.kappa_for("email") == 0.5
        assert off.store.get_meta(LEARNED_KAPPA_KEY) is None
    finally:
        off.close()


def test_too_few_sends_learn_nothing(database_url: str, tmp_path: Path) -> None:
    """Fewer answered sends than ``learn_min_touches`` leave κ as configured."""
    scarce = make_engine(database_url, tmp_path / "campaigns")
    try:
        log_answered_sends(scarce, true_kappa=2.4, recipients=20)  # 160 touches: fewer than learn_min_touches
        scarce.tick(at=NOW)
        assert scarce.settings.attention.kappa_for("email") == 0.5
        assert scarce.store.get_meta(LEARNED_KAPPA_KEY) is None
    finally:
        scarce.close()


def test_sends_outside_the_window_are_not_learned_from(database_url: str, tmp_path: Path) -> None:
    """Touches older than ``learn_window``, or still inside their outcome window, are left out."""
    engine = make_engine(database_url, tmp_path / "campaigns", learn_window="5d")
    try:
        log_answered_sends(engine, true_kappa=2.4)  # ten days ago: outside a five-day window
        engine.tick(at=NOW)
        assert engine.store.get_meta(LEARNED_KAPPA_KEY) is None
        assert engine.settings.attention.kappa_for("email") == 0.5
        engine.tick(at=NOW - timedelta(days=10) + timedelta(hours=12))  # answers not in yet
        assert engine.store.get_meta(LEARNED_KAPPA_KEY) is None
    finally:
        engine.close()


def test_only_the_latest_touches_are_read(database_url: str, tmp_path: Path) -> None:
    """``learn_max_touches`` bounds the fit to the most recent sends."""
    engine = make_engine(database_url, tmp_path / "campaigns", learn_max_touches=1500)
    try:
        log_answered_sends(engine, true_kappa=0.5)
        engine.tick(at=NOW)
        stored = json.loads(engine.store.get_meta(LEARNED_KAPPA_KEY) or "{}")
        assert stored["email"]["touches"] == 1500
    finally:
        engine.close()
