"""``tact explain RECIPIENT``: the recipient's state and why each pending touch would be sent,
deferred or dropped now, in words a marketer can read, with the model's numbers."""

from __future__ import annotations

from datetime import datetime

from scheduler.attention import AttentionState, decayed, engagement_rate, from_row
from scheduler.decision import RecipientView, Touch, decide, touch_terms
from scheduler.engine import Engine
from scheduler.value import estimate, rested

# What each reason code means, in a sentence (docs/attention-model.md has the same list).
REASONS = {
    "value_ok": "worth the recipient's attention now (net value at or above the threshold)",
    "value_below_threshold": "not worth their attention even when rested (net value below the threshold)",
    "fatigue": "worth sending once the recipient has rested, not now",
    "quiet_hours": "inside quiet hours, local time",
    "send_window": "outside the campaign's send window, local time",
    "frequency_cap": "a safety cap on marketing touches per period or their spacing",
    "open_request": "the recipient has an open request with us, or wrote to us recently",
    "no_consent": "no opt-in for marketing on this channel",
    "unsubscribed": "the recipient opted out on this channel",
    "suppressed": "the address is suppressed (hard bounce) or the recipient complained",
    "exited": "the recipient left the campaign (exit event)",
    "skipped": "a skip_if event for this step was seen",
    "step_removed": "the step no longer exists in the campaign file",
    "expired": "past its scheduled time plus max_defer",
    "transactional": "transactional: sent without the value rule",
    "always": "the campaign's policy is always: sent without the value rule",
    "holdout": "the recipient is in the fixed-cadence holdout group",
    "explore": "chosen at random for offline evaluation (see propensity)",
    "fixed": "the attention model is off: fixed cadence",
    "provider_error": "the provider failed or refused the message",
    "no_address": "the recipient has no address for this channel",
    "template_error": "the template could not be rendered",
    "unknown_recipient": "the recipient is unknown",
}
VERBS = {"send": "would be sent", "defer": "would be deferred", "drop": "would be dropped"}


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"


def explain_recipient(engine: Engine, recipient_id: str, at: datetime | None = None, last: int = 10) -> str | None:
    """A readable report, or None when the recipient is unknown."""
    profile = engine.store.recipient_profile(recipient_id)
    if profile is None:
        return None
    now = at or engine.clock()
    learned = engine.load_learned()  # decide as the running engine does
    settings = engine.settings
    params = settings.attention
    row = profile["attention"]
    state = from_row(row) if row else AttentionState.initial(params)
    state = decayed(state, now, params)
    consent = {channel: c["status"] for channel, c in profile["consent"].items()}
    rates = ", ".join(f"{channel} {engagement_rate(state, channel, params):.1%}" for channel in settings.channels)
    waiting = [o for o in state.outcomes if o.pending]
    lines = [
        f"Recipient {recipient_id}  (value {profile['value']:g}, time zone {profile['timezone'] or settings.timezone})",
        f"  email {profile['email'] or '-'}   phone {profile['phone'] or '-'}",
        "Consent: " + ", ".join(
            f"{channel} {consent.get(channel) or settings.consent.default_for(channel) + ' (default)'}"
            for channel in settings.channels
        ),
        f"Attention now: asset {state.asset:.2f} (trust built so far, 0-1; starts at {params.asset_start:g}), "
        f"expectation {state.expectation:.2f}, fatigue {state.fatigue:.2f}",
        f"  engagement rate {rates}; {len(waiting)} touch(es) awaiting an answer"
        + (", open support request" if state.open_request else "")
        + (", complained: all marketing suppressed" if state.complained_at else "")
        + (f", suppressed ({profile['suppressed_reason']})" if profile["suppressed_at"] else ""),
    ]  # fmt: skip
    fits = engine.learned_fits() if params.kappa_learning != "off" else {}

    def weight(channel: str) -> str:
        if channel in learned:
            return f"{channel} {params.kappa_for(channel):.2f} (learned)"
        if channel in fits:
            return f"{channel} {params.kappa_for(channel):.2f} (answers suggest {fits[channel]['kappa']:.2f})"
        return f"{channel} {params.kappa_for(channel):.2f}"

    lines.append("  fatigue weight kappa: " + ", ".join(weight(channel) for channel in settings.channels))
    risks = engine.learned_unsubscribe() if params.unsubscribe_learning != "off" else {}

    def risk(channel: str) -> str:
        base = f"{channel} {params.unsubscribe_base_for(channel):.4f}"
        if channel not in risks:
            return base
        if params.unsubscribe_learning == "apply":
            return f"{base} (learned)"
        return f"{base} (answers suggest {risks[channel]['base']:.4f})"

    lines.append("  unsubscribe base rate: " + ", ".join(risk(channel) for channel in settings.channels))
    if state.interests:
        top = sorted(state.interests.items(), key=lambda item: -item[1])[:5]
        lines.append("  interests: " + ", ".join(f"{topic} {level:.2f}" for topic, level in top))
    view = RecipientView(
        id=recipient_id, timezone=profile["timezone"], value=profile["value"],
        consent=consent, suppressed=profile["suppressed_at"] is not None,
    )  # fmt: skip
    enrollments = {e["id"]: e for e in profile["enrollments"]}
    lines.append(f"Pending touches, if due at {_when(now)}:" if profile["pending"] else "Pending touches: none")
    for touchpoint in profile["pending"]:
        campaign = engine.catalog.get(touchpoint["campaign_id"])
        step = campaign.step(touchpoint["step_id"]) if campaign else None
        head = f"  {touchpoint['campaign_id']}/{touchpoint['step_id']} (due {_when(touchpoint['due_at'])})"
        if campaign is None or step is None:
            lines.append(f"{head}: would be dropped: {REASONS['step_removed']} (step_removed)")
            continue
        enrollment = enrollments.get(touchpoint["enrollment_id"], {})
        touch = Touch(
            campaign=campaign, step=step, scheduled_at=touchpoint["scheduled_at"],
            enrollment_state=enrollment.get("state", "active"), seen_events=enrollment.get("seen_events") or (),
            key=touchpoint["idempotency_key"],
        )  # fmt: skip
        decision = decide(touch, view, state, now, settings)
        until = f" until {_when(decision.deferred_until)}" if decision.deferred_until else ""
        why = REASONS.get(decision.reason, decision.reason)
        lines.append(f"{head}: {VERBS[decision.decision]}{until}: {why} ({decision.reason})")
        terms = touch_terms(touch, view)
        parts = estimate(state, terms, now, params)
        rest = estimate(rested(state), terms, now, params)
        lines.append(
            f"      engagement chance {parts.engagement_p:.1%}, relevance {parts.relevance:.2f}, "
            f"benefit {parts.benefit:.4f} - unsubscribe risk {parts.unsubscribe_p:.2%} x loss {parts.loss:.2f} "
            f"+ asset change {params.lambda_asset:g} x {terms.recipient_value:g} x {parts.asset_change:+.4f} "
            f"= net value {parts.net_value:+.4f} (threshold {params.theta:g}; rested {rest.net_value:+.4f})"
        )
    rows = list(engine.store.send_log_rows({"recipient": recipient_id}, limit=last, descending=True))
    lines.append(f"Last {len(rows)} decisions (newest first):" if rows else "No decisions yet.")
    for entry in rows:
        numbers = ", ".join(
            f"{name} {entry[name]:.3f}"
            for name in ("asset", "fatigue", "engagement_p", "net_value", "propensity")
            if entry[name] is not None
        )
        until = f" until {_when(entry['deferred_until'])}" if entry["deferred_until"] else ""
        lines.append(
            f"  {_when(entry['at'])}  {entry['campaign_id']}/{entry['step_id']} {entry['channel'] or ''}: "
            f"{entry['decision']} ({entry['reason']}){until}  [{numbers}]"
        )
    return "\n".join(lines)
