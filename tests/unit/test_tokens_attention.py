"""Unsubscribe tokens and the attention state's decay and send updates (pure code)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scheduler.attention import AttentionState, decayed, from_row, on_send, to_row
from scheduler.config import AttentionSettings
from scheduler.decision import in_holdout
from scheduler.tokens import TokenSigner

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PARAMS = AttentionSettings()


def test_token_round_trips_and_carries_no_personal_data() -> None:
    """A signed token verifies to its touchpoint and scope and contains neither in clear."""
    signer = TokenSigner({"k1": b"secret"}, "k1")
    token = signer.sign(12345, "email")
    assert signer.verify(token) is not None
    assert signer.verify(token).touchpoint_id == 12345  # type: ignore[union-attr]
    assert "12345" not in token and "email" not in token


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1],
        lambda t: t + "x",
        lambda t: "k2" + t[2:],
        lambda t: t.replace(".", "", 1),
        lambda t: "",
    ],
)
def test_forged_or_truncated_tokens_are_refused(mangle: object) -> None:
    """Truncated, extended, re-keyed or malformed tokens do not verify."""
    signer = TokenSigner({"k1": b"secret"}, "k1")
    token = signer.sign(7, "all")
    assert signer.verify(mangle(token)) is None  # type: ignore[operator]


def test_rotated_keys_still_verify_old_tokens() -> None:
    """After rotation, tokens signed with the previous key still verify; new ones use the new key."""
    old = TokenSigner({"k1": b"one"}, "k1").sign(9, "sms")
    rotated = TokenSigner({"k1": b"one", "k2": b"two"}, "k2")
    assert rotated.verify(old) is not None
    assert rotated.sign(9, "sms").startswith("k2.")


def test_fatigue_halves_every_half_life_and_asset_returns_to_rest() -> None:
    """Fatigue halves per half-life; the asset drifts halfway back to its start per half-life."""
    state = AttentionState(updated_at=AT, asset=0.9, expectation=0.2, fatigue=4.0)
    later = decayed(state, AT + PARAMS.fatigue_half_life, PARAMS)
    assert later.fatigue == pytest.approx(2.0)
    much_later = decayed(state, AT + PARAMS.asset_half_life, PARAMS)
    assert much_later.asset == pytest.approx(0.5 + 0.4 / 2)


def test_send_adds_channel_fatigue_and_remembers_the_send() -> None:
    """A send adds the channel's fatigue weight and is kept for the caps; old sends age out."""
    state = AttentionState.initial(PARAMS)
    first = on_send(
        state,
        channel="email",
        kind="marketing",
        topics=["tips"],
        at=AT,
        params=PARAMS,
        keep=timedelta(days=7),
    )
    second = on_send(
        first,
        channel="sms",
        kind="marketing",
        topics=[],
        at=AT + timedelta(days=8),
        params=PARAMS,
        keep=timedelta(days=7),
    )
    assert first.fatigue == pytest.approx(1.0)
    assert first.topic_last_sent["tips"] == AT
    assert [s.channel for s in second.recent_sends] == ["sms"]
    assert second.fatigue == pytest.approx(1.0 * 2 ** (-8 * 24 / 72) + 2.5)


def test_state_survives_the_database_row_format() -> None:
    """to_row and from_row round-trip the state."""
    state = on_send(
        AttentionState.initial(PARAMS),
        channel="email",
        kind="marketing",
        topics=["a"],
        at=AT,
        params=PARAMS,
        keep=timedelta(days=7),
    )
    assert from_row({"recipient_id": "r", **to_row(state)}) == state


def test_holdout_membership_is_stable_and_near_its_fraction() -> None:
    """The holdout is a stable hash: the same id always lands the same way, about 5 % hold out."""
    ids = [f"r{i}" for i in range(20_000)]
    members = [rid for rid in ids if in_holdout(rid, 0.05)]
    assert 0.04 < len(members) / len(ids) < 0.06
    assert members == [rid for rid in ids if in_holdout(rid, 0.05)]
    assert not any(in_holdout(rid, 0.0) for rid in ids[:100])
