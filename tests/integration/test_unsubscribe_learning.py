"""The engine learns how often its audience really unsubscribes or complains, against the p_u
the configured settings give each send, keeps the ratio in the database and (with
``unsubscribe_learning = "apply"``) decides with the scaled base rate — on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from scheduler import Engine
from scheduler.calibration import LEARNED_UNSUBSCRIBE_KEY
from scheduler.config import AttentionSettings
from scheduler.explain import explain_recipient
from scheduler.store import event_t, send_log_t
from scheduler.value import unsubscribe_p
from tests.integration.learning_scenario import NOW, learning_engine

SENDS = 20000
BASE = {"email": 0.002, "sms": 0.005}  # the configured base rates, pinned so the figures below hold


def make_engine(database_url: str, directory: Path, **attention: Any) -> Engine:
    defaults = {"kappa_learning": "off", "unsubscribe_learning": "apply", "unsubscribe_base": BASE}
    return learning_engine(database_url, directory, {**defaults, **attention})


def log_sends(engine: Engine, true_ratio: float, *, sends: int = SENDS, seed: int = 5) -> float:
    """Email sends ten days ago at varied fatigue, asset and relevance, each drawing an
    unsubscribe (or now and then a complaint) with ``true_ratio`` times the configured p_u;
    return the p_u they sum to."""
    rng = random.Random(seed)
    params = AttentionSettings(unsubscribe_base=BASE)
    rows, events, expected = [], [], 0.0
    for touchpoint in range(1, sends + 1):
        fatigue, asset, relevance = rng.uniform(0.0, 6.0), rng.uniform(0.1, 0.9), rng.uniform(0.0, 1.0)
        p_u = unsubscribe_p("email", fatigue, asset, relevance, params)
        expected += p_u
        at = NOW - timedelta(days=10, minutes=touchpoint)
        recipient = f"r{touchpoint % 500}"
        rows.append({
            "at": at, "touchpoint_id": touchpoint, "recipient_id": recipient, "campaign_id": "news",
            "step_id": "issue", "channel": "email", "kind": "marketing", "decision": "sent",
            "reason": "value_ok", "fatigue": fatigue, "engagement_p": 0.1, "asset": asset, "relevance": relevance,
        })  # fmt: skip
        if rng.random() < true_ratio * p_u:
            kind = "complained" if rng.random() < 0.1 else "unsubscribed"
            events.append({
                "event_id": f"e{touchpoint}", "recipient_id": recipient, "type": kind,
                "at": at + timedelta(hours=5), "channel": "email", "touchpoint_id": touchpoint,
                "properties": {}, "applied_at": at + timedelta(hours=5),
            })  # fmt: skip
    with engine.store.transaction() as connection:
        connection.execute(send_log_t.insert(), rows)
        connection.execute(event_t.insert(), events)
    return expected


def test_an_audience_that_unsubscribes_less_lowers_the_base_rate(database_url: str, tmp_path: Path) -> None:
    """Fewer unsubscribes than the settings predict scale ``unsubscribe_base`` down, by the
    ratio of observed to expected with the prior's pseudo-count; the fit is kept in meta."""
    engine = make_engine(database_url, tmp_path / "campaigns")
    try:
        expected = log_sends(engine, true_ratio=0.3)
        with capture_logs() as logs:
            engine.tick(at=NOW)
        stored = json.loads(engine.store.get_meta(LEARNED_UNSUBSCRIBE_KEY) or "{}")["email"]
        assert stored["touches"] == SENDS
        assert stored["expected"] == round(expected, 2)
        assert stored["ratio"] == round((stored["observed"] + 20.0) / (expected + 20.0), 4)
        assert 0.2 < stored["ratio"] < 0.5
        assert stored["applied"] is True
        base = engine.settings.attention.unsubscribe_base_for("email")
        assert abs(base - 0.002 * stored["ratio"]) < 1e-6
        assert engine.settings.attention.unsubscribe_base_for("sms") == 0.005  # nothing sent: as configured
        learned = [entry for entry in logs if entry["event"] == "unsubscribe_learned"]
        assert [(entry["email"], entry["applied"]) for entry in learned] == [(round(stored["ratio"], 3), True)]
    finally:
        engine.close()


def test_an_audience_that_unsubscribes_more_raises_it_and_a_restart_keeps_it(database_url: str, tmp_path: Path) -> None:
    """More unsubscribes than predicted raise the base rate; a new engine on the same database
    decides with it (and `tact explain` says it was learned) without refitting within a day."""
    first = make_engine(database_url, tmp_path / "campaigns")
    try:
        log_sends(first, true_ratio=3.0)
        first.tick(at=NOW)
        learned = first.settings.attention.unsubscribe_base_for("email")
        assert 0.004 < learned < 0.008
    finally:
        first.close()
    second = make_engine(database_url, tmp_path / "campaigns")
    try:
        second.upsert_recipients([{"id": "r0", "email": "r0@example.com"}])
        report = explain_recipient(second, "r0", at=NOW)
        assert report is not None
        assert f"unsubscribe base rate: email {learned:.4f} (learned), sms 0.0050" in report
        with capture_logs() as logs:
            second.tick(at=NOW + timedelta(hours=1))
        assert not [entry for entry in logs if entry["event"] == "unsubscribe_learned"]
        assert second.settings.attention.unsubscribe_base_for("email") == learned
    finally:
        second.close()


def test_measuring_keeps_the_configured_base_and_says_what_the_answers_suggest(
    database_url: str, tmp_path: Path
) -> None:
    """``unsubscribe_learning = "measure"`` keeps the fit but decides with the
    configured base rate; ``tact explain`` shows both."""
    engine = make_engine(database_url, tmp_path / "campaigns", unsubscribe_learning="measure")
    try:
        log_sends(engine, true_ratio=0.3)
        engine.tick(at=NOW)
        assert engine.settings.attention.unsubscribe_base_for("email") == 0.002
        fit = json.loads(engine.store.get_meta(LEARNED_UNSUBSCRIBE_KEY) or "{}")["email"]
        assert fit["applied"] is False
        assert fit["base"] < 0.001
        engine.upsert_recipients([{"id": "r0", "email": "r0@example.com"}])
        report = explain_recipient(engine, "r0", at=NOW)
        assert report is not None
        assert f"unsubscribe base rate: email 0.0020 (answers suggest {fit['base']:.4f}), sms 0.0050" in report
    finally:
        engine.close()


def test_learning_off_keeps_the_configured_base(database_url: str, tmp_path: Path) -> None:
    """``unsubscribe_learning = "off"`` never fits, whatever the send log says."""
    off = make_engine(database_url, tmp_path / "off", unsubscribe_learning="off")
    try:
        log_sends(off, true_ratio=0.3)
        off.tick(at=NOW)
        assert off.store.get_meta(LEARNED_UNSUBSCRIBE_KEY) is None
        assert off.settings.attention.unsubscribe_base_for("email") == 0.002
    finally:
        off.close()


def test_too_few_sends_learn_nothing(database_url: str, tmp_path: Path) -> None:
    """Fewer sends than ``learn_min_touches`` leave the base rate as configured."""
    scarce = make_engine(database_url, tmp_path / "campaigns")
    try:
        log_sends(scarce, true_ratio=0.3, sends=500)
        scarce.tick(at=NOW)
        assert scarce.store.get_meta(LEARNED_UNSUBSCRIBE_KEY) is None
        assert scarce.settings.attention.unsubscribe_base_for("email") == 0.002
    finally:
        scarce.close()
