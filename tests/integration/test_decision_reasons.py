"""Every reason of the decision order (SPEC section 7), each produced by a real scenario through
``Engine.tick`` on SQLite and PostgreSQL: permission, journey, open request, timing gates, the
bypasses, holdout, value, fatigue, exploration, expiry and the fixed cadence."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest

from scheduler import Engine
from scheduler.engine import DecisionRow

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # a Monday, noon UTC

CampaignFile = tuple[str, str]  # (campaign id, TOML text)


class MakeEngine(Protocol):
    def __call__(self, *campaigns: CampaignFile, **overrides: Any) -> Engine: ...


def step(
    step_id: str,
    *,
    after: str = "0m",
    channel: str = "email",
    value: float = 0.8,
    max_defer: str = "5d",
    skip_if: tuple[str, ...] = (),
) -> str:
    """One ``[[steps]]`` table."""
    skips = ", ".join(f'"{event}"' for event in skip_if)
    return (
        f'[[steps]]\nid = "{step_id}"\nafter = "{after}"\nchannel = "{channel}"\n'
        f'subject = "{step_id}"\ntext = "{step_id}"\nvalue = {value}\nmax_defer = "{max_defer}"\n'
        f"skip_if = [{skips}]\n"
    )


def campaign(
    campaign_id: str,
    *steps: str,
    kind: str = "marketing",
    policy: str = "value",
    trigger: str = "signed_up",
    tables: str = "",
) -> CampaignFile:
    """A campaign enrolled by ``trigger``; ``tables`` holds extra tables ([exit], [send_window])."""
    head = f'id = "{campaign_id}"\nkind = "{kind}"\npolicy = "{policy}"\n[trigger]\nevent = "{trigger}"\n'
    return campaign_id, head + tables + "\n" + "".join(steps or (step("first"),))


@pytest.fixture
def make_engine(database_url: str, tmp_path: Path) -> Iterator[MakeEngine]:
    """Engines on the test's database with the given campaigns: holdout, quiet hours and caps
    off unless an override turns them on; ``attention`` overrides merge with ``holdout = 0``."""
    engines: list[Engine] = []

    def make(*campaigns: CampaignFile, **overrides: Any) -> Engine:
        directory = tmp_path / "campaigns"
        directory.mkdir()
        for campaign_id, text in campaigns:
            (directory / f"{campaign_id}.toml").write_text(text)
        overrides["attention"] = {"holdout": 0.0, **overrides.get("attention", {})}
        overrides.setdefault("quiet_hours", {"enabled": False})
        overrides.setdefault("caps", {"enabled": False})
        engine = Engine.from_config(
            None,
            database_url=database_url,
            channels={"email": "memory", "sms": "memory"},
            campaigns_dir=str(directory),
            **overrides,
        )
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


def add_recipient(engine: Engine, recipient_id: str = "r1", **fields: Any) -> None:
    record = {
        "id": recipient_id,
        "email": f"{recipient_id}@example.com",
        "phone": "+33612345678",
        "timezone": "UTC",
        "consent": {"email": "opted_in", "sms": "opted_in"},
        **fields,
    }
    report = engine.upsert_recipients([record])
    assert report.rejected == []


def event(kind: str, at: datetime, recipient_id: str = "r1", **extra: Any) -> dict[str, Any]:
    return {"id": f"{recipient_id}-{kind}-{at.isoformat()}", "recipient_id": recipient_id, "type": kind,
            "at": at.isoformat(), **extra}  # fmt: skip


def tick(engine: Engine, at: datetime) -> list[DecisionRow]:
    return engine.tick(at=at).decisions


def outcomes(rows: list[DecisionRow]) -> set[tuple[str, str, str, str]]:
    """(campaign, step, decision, reason) of each row."""
    return {(r.campaign_id, r.step_id, r.decision, r.reason) for r in rows}


def only(rows: list[DecisionRow]) -> DecisionRow:
    assert len(rows) == 1, rows
    return rows[0]


# -- 1. permission ------------------------------------------------------------------------------


def test_marketing_sms_without_opt_in_is_dropped_no_consent(make_engine: MakeEngine) -> None:
    """A marketing SMS to a recipient who never opted in to SMS (default unknown) is dropped `no_consent`."""
    engine = make_engine(campaign("promo", step("first", channel="sms")))
    add_recipient(engine, consent={"email": "opted_in"})
    engine.record_events([event("signed_up", T0)])
    row = only(tick(engine, T0))
    assert (row.decision, row.reason) == ("dropped", "no_consent")
    assert engine.adapter("sms").sent == []  # type: ignore[attr-defined]


def test_marketing_after_opt_out_is_dropped_unsubscribed(make_engine: MakeEngine) -> None:
    """A marketing email to a recipient who opted out of email is dropped `unsubscribed`."""
    engine = make_engine(campaign("promo"))
    add_recipient(engine, consent={"email": "opted_out", "sms": "opted_in"})
    engine.record_events([event("signed_up", T0)])
    row = only(tick(engine, T0))
    assert (row.decision, row.reason) == ("dropped", "unsubscribed")


def test_complaint_suppresses_marketing_but_not_transactional(make_engine: MakeEngine) -> None:
    """After a complaint, marketing is dropped `suppressed` while a transactional touch still goes."""
    engine = make_engine(campaign("promo"), campaign("receipt", kind="transactional"))
    add_recipient(engine)
    engine.record_events([event("complained", T0 - timedelta(hours=1)), event("signed_up", T0)])
    assert outcomes(tick(engine, T0)) == {
        ("promo", "first", "dropped", "suppressed"),
        ("receipt", "first", "sent", "transactional"),
    }


def test_hard_bounce_suppresses_every_touch(make_engine: MakeEngine) -> None:
    """After a hard bounce, marketing and transactional touches alike are dropped `suppressed`."""
    engine = make_engine(campaign("promo"), campaign("receipt", kind="transactional"))
    add_recipient(engine)
    engine.record_events([event("bounced", T0 - timedelta(hours=1)), event("signed_up", T0)])
    assert outcomes(tick(engine, T0)) == {
        ("promo", "first", "dropped", "suppressed"),
        ("receipt", "first", "dropped", "suppressed"),
    }
    assert engine.adapter("email").sent == []  # type: ignore[attr-defined]


# -- 2. journey ---------------------------------------------------------------------------------


def test_exit_event_drops_the_pending_touch_exited(make_engine: MakeEngine) -> None:
    """An exit event while a touch is pending drops that touch `exited` at the next tick."""
    engine = make_engine(campaign("promo", step("first", after="1d"), tables='[exit]\non_events = ["purchased"]\n'))
    add_recipient(engine)
    engine.record_events([event("signed_up", T0)])
    assert tick(engine, T0) == []
    bought = T0 + timedelta(hours=2)
    engine.record_events([event("purchased", bought)])
    row = only(tick(engine, bought))
    assert (row.step_id, row.decision, row.reason) == ("first", "dropped", "exited")


def test_skip_if_event_drops_the_step_skipped(make_engine: MakeEngine) -> None:
    """A `skip_if` event seen before a step is due drops that step `skipped`; the next still goes."""
    engine = make_engine(
        campaign("promo", step("first", after="1d", skip_if=("activated",)), step("second", after="1d"))
    )
    add_recipient(engine)
    engine.record_events([event("signed_up", T0), event("activated", T0 + timedelta(hours=2))])
    assert tick(engine, T0) == []
    assert tick(engine, T0 + timedelta(hours=2)) == []
    row = only(tick(engine, T0 + timedelta(days=1)))
    assert (row.step_id, row.decision, row.reason) == ("first", "dropped", "skipped")
    row = only(tick(engine, T0 + timedelta(days=2)))
    assert (row.step_id, row.decision, row.reason) == ("second", "sent", "value_ok")


# -- 3. open request ----------------------------------------------------------------------------


def test_open_request_defers_marketing_until_resolution_plus_cooldown(make_engine: MakeEngine) -> None:
    """An open request defers marketing, not transactional; marketing goes 48 h after resolution."""
    engine = make_engine(campaign("promo"), campaign("receipt", kind="transactional"))
    add_recipient(engine)
    engine.record_events([event("support_opened", T0 - timedelta(hours=1)), event("signed_up", T0)])
    rows = tick(engine, T0)
    assert outcomes(rows) == {
        ("promo", "first", "deferred", "open_request"),
        ("receipt", "first", "sent", "transactional"),
    }
    deferred = next(r for r in rows if r.campaign_id == "promo")
    assert deferred.deferred_until == T0 + timedelta(days=5)  # no end known: the last chance

    resolved = T0 + timedelta(hours=10)
    engine.record_events([event("support_resolved", resolved)])
    for at in (resolved, resolved + timedelta(hours=47)):
        assert all((r.decision, r.reason) == ("deferred", "open_request") for r in tick(engine, at))
    row = only(tick(engine, resolved + timedelta(hours=48)))
    assert (row.campaign_id, row.decision, row.reason) == ("promo", "sent", "value_ok")


# -- 4. send window and quiet hours -------------------------------------------------------------


def test_outside_the_send_window_defers_to_the_next_local_opening(make_engine: MakeEngine) -> None:
    """A Saturday touch for a weekday window is deferred `send_window` to Monday 09:00 Paris time."""
    window = '[send_window]\ndays = ["mon", "tue", "wed", "thu", "fri"]\nstart = "09:00"\nend = "17:00"\n'
    engine = make_engine(campaign("promo", tables=window))
    add_recipient(engine, timezone="Europe/Paris")
    saturday = datetime(2026, 6, 6, 12, 0, tzinfo=UTC)
    engine.record_events([event("signed_up", saturday)])
    row = only(tick(engine, saturday))
    monday_opening = datetime(2026, 6, 8, 7, 0, tzinfo=UTC)
    assert (row.decision, row.reason, row.deferred_until) == ("deferred", "send_window", monday_opening)
    row = only(tick(engine, monday_opening))
    assert (row.decision, row.reason) == ("sent", "value_ok")


def test_quiet_hours_defer_to_their_local_end(make_engine: MakeEngine) -> None:
    """A marketing touch due at 23:00 in New York is deferred `quiet_hours` to 08:00 there."""
    engine = make_engine(campaign("promo"), quiet_hours={"enabled": True, "start": "21:00", "end": "08:00"})
    add_recipient(engine, timezone="America/New_York")
    late_evening = datetime(2026, 6, 2, 3, 0, tzinfo=UTC)  # 23:00 EDT on Monday
    engine.record_events([event("signed_up", late_evening)])
    row = only(tick(engine, late_evening))
    morning = datetime(2026, 6, 2, 12, 0, tzinfo=UTC)
    assert (row.decision, row.reason, row.deferred_until) == ("deferred", "quiet_hours", morning)
    row = only(tick(engine, morning))
    assert (row.decision, row.reason) == ("sent", "value_ok")


# -- 5. safety caps -----------------------------------------------------------------------------


def test_frequency_cap_defers_a_touch_too_close_to_the_last(make_engine: MakeEngine) -> None:
    """A second marketing email right after the first is deferred `frequency_cap` by the 20 h gap."""
    engine = make_engine(campaign("promo", step("first"), step("second")), caps={"enabled": True})
    add_recipient(engine)
    engine.record_events([event("signed_up", T0)])
    rows = tick(engine, T0)
    assert [(r.step_id, r.decision, r.reason) for r in rows] == [
        ("first", "sent", "value_ok"),
        ("second", "deferred", "frequency_cap"),
    ]
    assert rows[1].deferred_until == T0 + timedelta(hours=20)
    row = only(tick(engine, T0 + timedelta(hours=20)))
    assert (row.step_id, row.decision, row.reason) == ("second", "sent", "value_ok")


# -- 6. bypasses --------------------------------------------------------------------------------


def test_transactional_touch_is_sent_whatever_its_value(make_engine: MakeEngine) -> None:
    """A transactional touch worth nothing by the model is sent, reason `transactional`."""
    engine = make_engine(campaign("receipt", step("first", value=0.0), kind="transactional"))
    add_recipient(engine)
    engine.record_events([event("signed_up", T0)])
    row = only(tick(engine, T0))
    assert (row.decision, row.reason) == ("sent", "transactional")


def test_always_policy_sends_marketing_whatever_its_value(make_engine: MakeEngine) -> None:
    """A marketing touch of an `always` campaign is sent though worth nothing, reason `always`."""
    engine = make_engine(campaign("promo", step("first", value=0.0), policy="always"))
    add_recipient(engine)
    engine.record_events([event("signed_up", T0)])
    row = only(tick(engine, T0))
    assert (row.decision, row.reason) == ("sent", "always")


# -- 7. holdout ---------------------------------------------------------------------------------


def test_holdout_recipient_gets_every_marketing_touch(make_engine: MakeEngine) -> None:
    """With the whole audience held out, every marketing touch is sent `holdout`, worthless or not."""
    engine = make_engine(
        campaign("worth", step("first", value=0.8)),
        campaign("worthless", step("first", value=0.0)),
        attention={"holdout": 1.0},
    )
    add_recipient(engine)
    engine.record_events([event("signed_up", T0)])
    assert outcomes(tick(engine, T0)) == {
        ("worth", "first", "sent", "holdout"),
        ("worthless", "first", "sent", "holdout"),
    }


# -- 8. value -----------------------------------------------------------------------------------


def test_valuable_touch_to_a_fresh_recipient_is_sent_value_ok(make_engine: MakeEngine) -> None:
    """A fresh recipient and a step worth 0.8 give NV ≥ θ: sent `value_ok`."""
    engine = make_engine(campaign("promo", step("first", value=0.8)))
    add_recipient(engine)
    engine.record_events([event("signed_up", T0)])
    row = only(tick(engine, T0))
    assert (row.decision, row.reason) == ("sent", "value_ok")
    assert row.net_value is not None and row.threshold is not None
    assert row.net_value >= row.threshold


@pytest.mark.parametrize(
    ("value", "attention"),
    [pytest.param(0.0, {}, id="worthless-step"), pytest.param(0.8, {"theta": 5.0}, id="high-threshold")],
)
def test_touch_below_threshold_even_rested_is_dropped(
    make_engine: MakeEngine, value: float, attention: dict[str, Any]
) -> None:
    """A touch not worth θ even to a rested recipient is dropped `value_below_threshold`."""
    engine = make_engine(campaign("promo", step("first", value=value)), attention=attention)
    add_recipient(engine)
    engine.record_events([event("signed_up", T0)])
    row = only(tick(engine, T0))
    assert (row.decision, row.reason) == ("dropped", "value_below_threshold")
    assert row.net_value is not None and row.threshold is not None
    assert row.net_value < row.threshold


def test_fatigue_defers_a_touch_until_the_recipient_has_rested(make_engine: MakeEngine) -> None:
    """A touch right after another is deferred `fatigue` to a later instant and sent then."""
    engine = make_engine(campaign("promo", step("first"), step("second", max_defer="14d")), attention={"kappa": 5.0})
    add_recipient(engine)
    engine.record_events([event("signed_up", T0)])
    rows = tick(engine, T0)
    assert [(r.step_id, r.decision, r.reason) for r in rows] == [
        ("first", "sent", "value_ok"),
        ("second", "deferred", "fatigue"),
    ]
    rested_at = rows[1].deferred_until
    assert rested_at is not None and rested_at > T0
    assert rows[1].fatigue is not None and rows[1].fatigue > 0
    row = only(tick(engine, rested_at))
    assert (row.step_id, row.decision, row.reason) == ("second", "sent", "value_ok")


def test_fatigue_drops_a_touch_that_cannot_rest_before_its_deadline(make_engine: MakeEngine) -> None:
    """When the recipient would not rest enough before `max_defer`, the touch is dropped `fatigue`."""
    engine = make_engine(campaign("promo", step("first"), step("second", max_defer="1d")), attention={"kappa": 50.0})
    add_recipient(engine)
    engine.record_events([event("signed_up", T0)])
    rows = tick(engine, T0)
    assert [(r.step_id, r.decision, r.reason) for r in rows] == [
        ("first", "sent", "value_ok"),
        ("second", "dropped", "fatigue"),
    ]


# -- exploration, expiry, fixed cadence ----------------------------------------------------------


def test_exploration_takes_the_other_action(make_engine: MakeEngine) -> None:
    """With `explore = 1` the model's send becomes a deferral and its drop a send, both `explore`."""
    engine = make_engine(
        campaign("worth", step("first", value=0.8)),
        campaign("worthless", step("first", value=0.0), trigger="joined"),
        attention={"explore": 1.0},
    )
    add_recipient(engine, "r1")
    add_recipient(engine, "r2")
    engine.record_events([event("signed_up", T0, "r1"), event("joined", T0, "r2")])
    rows = tick(engine, T0)
    assert outcomes(rows) == {
        ("worth", "first", "deferred", "explore"),
        ("worthless", "first", "sent", "explore"),
    }
    assert all(r.propensity == 1.0 for r in rows)
    deferred = next(r for r in rows if r.campaign_id == "worth")
    assert deferred.deferred_until == T0 + timedelta(hours=1)


def test_touch_past_its_max_defer_is_dropped_expired(make_engine: MakeEngine) -> None:
    """A touch first decided after scheduled time + `max_defer` is dropped `expired`."""
    engine = make_engine(campaign("promo", step("first", max_defer="1d")))
    add_recipient(engine)
    engine.enroll("promo", ["r1"], at=T0)
    row = only(tick(engine, T0 + timedelta(days=2)))
    assert (row.decision, row.reason) == ("dropped", "expired")


def test_model_off_sends_fixed_cadence_despite_an_open_request(make_engine: MakeEngine) -> None:
    """With the attention model off, marketing goes out `fixed`, open request and value aside."""
    engine = make_engine(
        campaign("promo", step("first", value=0.8), step("second", value=0.0, after="1d")),
        attention={"enabled": False},
    )
    add_recipient(engine)
    engine.record_events([event("support_opened", T0 - timedelta(hours=1)), event("signed_up", T0)])
    row = only(tick(engine, T0))
    assert (row.step_id, row.decision, row.reason) == ("first", "sent", "fixed")
    row = only(tick(engine, T0 + timedelta(days=1)))
    assert (row.step_id, row.decision, row.reason) == ("second", "sent", "fixed")


# -- the numbers ---------------------------------------------------------------------------------


def test_value_decision_logs_the_model_numbers(make_engine: MakeEngine) -> None:
    """A value decision's send_log row carries the model's numbers and propensity 1."""
    engine = make_engine(campaign("promo", step("first", value=0.8)))
    add_recipient(engine)
    engine.record_events([event("signed_up", T0)])
    decided = only(tick(engine, T0))
    (logged,) = list(engine.store.send_log_rows({"recipient": "r1"}))
    names = ("asset", "expectation", "fatigue", "engagement_p", "relevance", "value", "net_value", "threshold")
    for name in names:
        assert logged[name] is not None, name
        assert logged[name] == pytest.approx(getattr(decided, name)), name
    assert (logged["decision"], logged["reason"]) == ("sent", "value_ok")
    assert logged["propensity"] == 1.0
    # A fresh recipient: the model's starting state and the default prior (1 / (1 + 19)).
    assert (logged["asset"], logged["expectation"], logged["fatigue"]) == pytest.approx((0.5, 0.1, 0.0))
    assert logged["engagement_p"] == pytest.approx(0.05)
    assert (logged["relevance"], logged["value"], logged["threshold"]) == pytest.approx((0.3, 0.8, 0.0))
    assert logged["net_value"] >= logged["threshold"]
