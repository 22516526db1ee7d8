"""``tact explain RECIPIENT``: the recipient's state and why each pending touch would be sent,
deferred or dropped now, in words a marketer can read."""

from __future__ import annotations

from datetime import datetime

from scheduler.attention import AttentionState, decayed, from_row
from scheduler.decision import RecipientView, Touch, decide
from scheduler.engine import Engine


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"


def explain_recipient(engine: Engine, recipient_id: str, at: datetime | None = None, last: int = 10) -> str | None:
    """A readable report, or None when the recipient is unknown."""
    profile = engine.store.recipient_profile(recipient_id)
    if profile is None:
        return None
    now = at or engine.clock()
    settings = engine.settings
    row = profile["attention"]
    state = from_row(row) if row else AttentionState.initial(settings.attention)
    state = decayed(state, now, settings.attention)
    consent = {channel: c["status"] for channel, c in profile["consent"].items()}
    lines = [
        f"Recipient {recipient_id}  (value {profile['value']:g}, time zone {profile['timezone'] or settings.timezone})",
        f"  email {profile['email'] or '-'}   phone {profile['phone'] or '-'}",
        "Consent: " + ", ".join(
            f"{channel} {consent.get(channel) or settings.consent.default_for(channel) + ' (default)'}"
            for channel in settings.channels
        ),
        f"Attention now: asset {state.asset:.2f}, expectation {state.expectation:.2f}, fatigue {state.fatigue:.2f}"
        + (", open support request" if state.open_request else "")
        + (", complained — all marketing suppressed" if state.complained_at else "")
        + (f", suppressed ({profile['suppressed_reason']})" if profile["suppressed_at"] else ""),
    ]  # fmt: skip
    view = RecipientView(
        id=recipient_id, timezone=profile["timezone"], value=profile["value"],
        consent=consent, suppressed=profile["suppressed_at"] is not None,
    )  # fmt: skip
    enrollments = {e["id"]: e for e in profile["enrollments"]}
    lines.append("Pending touches:" if profile["pending"] else "Pending touches: none")
    for touchpoint in profile["pending"]:
        campaign = engine.catalog.get(touchpoint["campaign_id"])
        step = campaign.step(touchpoint["step_id"]) if campaign else None
        head = f"  {touchpoint['campaign_id']}/{touchpoint['step_id']} due {_when(touchpoint['due_at'])}"
        if campaign is None or step is None:
            lines.append(f"{head}: would be dropped (step_removed)")
            continue
        enrollment = enrollments.get(touchpoint["enrollment_id"], {})
        touch = Touch(
            campaign=campaign, step=step, scheduled_at=touchpoint["scheduled_at"],
            enrollment_state=enrollment.get("state", "active"), seen_events=enrollment.get("seen_events") or (),
        )  # fmt: skip
        decision = decide(touch, view, state, now, settings)
        verb = {"send": "would be sent", "defer": "would be deferred", "drop": "would be dropped"}[decision.decision]
        until = f" until {_when(decision.deferred_until)}" if decision.deferred_until else ""
        lines.append(f"{head}: if due now, {verb} ({decision.reason}){until}")
    rows = list(engine.store.send_log_rows({"recipient": recipient_id}, limit=last, descending=True))
    lines.append(f"Last {len(rows)} decisions:" if rows else "No decisions yet.")
    for entry in rows:
        numbers = ", ".join(
            f"{name} {entry[name]:.3f}"
            for name in ("asset", "fatigue", "value", "net_value")
            if entry[name] is not None
        )
        until = f" until {_when(entry['deferred_until'])}" if entry["deferred_until"] else ""
        lines.append(
            f"  {_when(entry['at'])}  {entry['campaign_id']}/{entry['step_id']} {entry['channel'] or ''}: "
            f"{entry['decision']} ({entry['reason']}){until}  [{numbers}]"
        )
    return "\n".join(lines)
