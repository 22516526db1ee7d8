"""Property-based run of every operation in Tact's OpenAPI document (schemathesis) against the
app served by a real uvicorn server on SQLite: whatever the input, no answer is a 5xx, and
every documented answer matches its response schema.

The schema is loaded from the server's ``/openapi.json``. Operations run one after another in
the document's order, each with positive and negative cases drawn from the schema and positive
cases naming data the database holds at that point: the seeded recipients, campaigns and
genuine unsubscribe tokens, and the recipients the fuzzed ``POST /v1/recipients`` stored, so
``GET /v1/recipients/{id}`` validates profiles of odd recipients, not only 404s. Provider
webhooks have secrets configured, so fuzzed requests reach signature verification. Generation
is derandomized: every run sends the same requests.

``schemathesis.pytest.from_fixture`` would fit a fixture-served app, but schemathesis 4.32.5
fails under pytest 9.2 there (it reads ``Function._nodeid``), so each operation is a Hypothesis
test of its own, built from ``APIOperation.as_strategy`` and reported as a pytest subtest.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeAlias

import pytest
import schemathesis
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error, response_schema_conformance

from scheduler import Engine
from scheduler.api.queries import encode_cursor
from scheduler.store import recipient_t, touchpoint_t
from tests.api.conftest import TOKEN, LiveServer

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
EXAMPLES_PER_OPERATION = 50
CHECKS = [not_a_server_error, response_schema_conformance]
POSITIVE = schemathesis.GenerationMode.POSITIVE
NEGATIVE = schemathesis.GenerationMode.NEGATIVE
WEBHOOKS = "/webhooks/"
"""Fuzzed webhook requests carry no valid signature: they are refused (4xx), never accepted."""
UNSUBSCRIBE_SCOPES = ("email", "sms", "all")

Operation: TypeAlias = "schemathesis.APIOperation[Any, Any, Any, Any]"
Case: TypeAlias = "schemathesis.Case[Operation]"


def sendgrid_public_key() -> str:
    """A usable SendGrid verification key (base64 DER), as SendGrid's settings show one."""
    der = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(der).decode()


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """SQLite only: what the API answers to odd input does not depend on the store."""
    return sqlite_url


@pytest.fixture
def engine(database_url: str, campaigns_dir: Path) -> Iterator[Engine]:
    """An engine like the default one (memory adapters), with webhook secrets for every provider:
    the email channel names SendGrid's, Mailgun's and Postmark's, and a Twilio channel that no
    campaign sends on holds Twilio's."""
    email = {
        "adapter": "memory",
        "webhook_public_key": sendgrid_public_key(),
        "webhook_signing_key": "mailgun-signing-key",
        "webhook_username": "hooks",
        "webhook_password": "postmark-password",
    }
    twilio = {"adapter": "twilio", "account_sid": "AC" + "0" * 32, "auth_token": "twilio-token", "from": "+15550100"}
    built = Engine.from_config(
        None,
        database_url=database_url,
        channels={"email": email, "sms": "memory", "twilio": twilio},
        campaigns_dir=str(campaigns_dir),
        api={"tokens": {"crm": TOKEN}},
        attention={"holdout": 0.0},
        quiet_hours={"enabled": False},
        caps={"enabled": False},
    )
    yield built
    built.close()


def seed(engine: Engine) -> None:
    """Two recipients, their sign-up and order events, and two ticks that leave touchpoints
    and send_log rows (sends, and a drop for want of SMS consent)."""
    engine.upsert_recipients(
        [
            {"id": "ana", "email": "ana@example.com", "phone": "+33612345678", "consent": {"sms": "opted_in"}},
            {"id": "ben", "email": "ben@example.com"},
        ]
    )
    before = T0 - timedelta(minutes=1)
    engine.record_events(
        [
            {"id": "signup-ana", "recipient_id": "ana", "type": "signed_up", "at": before},
            {"id": "signup-ben", "recipient_id": "ben", "type": "signed_up", "at": before},
            {"id": "order-ana", "recipient_id": "ana", "type": "order_placed", "at": before},
        ]
    )
    engine.tick(at=T0)
    engine.tick(at=T0 + timedelta(days=1))


@dataclass(frozen=True)
class Known:
    """What the database holds, for cases that name existing data."""

    recipient_ids: list[str]
    campaign_ids: list[str]
    cursors: list[str]
    unsubscribe_tokens: list[str]


def known(engine: Engine) -> Known:
    """The recipients, campaigns and touchpoints stored now; unsubscribe tokens are signed for
    every touchpoint and scope, plus one for a touchpoint that does not exist."""
    with engine.store.engine.connect() as connection:
        recipient_ids = sorted(connection.execute(sa.select(recipient_t.c.id)).scalars())
        touchpoint_ids = sorted(int(i) for i in connection.execute(sa.select(touchpoint_t.c.id)).scalars())
    assert touchpoint_ids, "the seed left no touchpoints"
    tokens = [engine.signer.sign(i, scope) for i in touchpoint_ids for scope in UNSUBSCRIBE_SCOPES]
    return Known(
        recipient_ids=recipient_ids,
        campaign_ids=sorted(campaign.id for campaign in engine.catalog),
        cursors=[encode_cursor(0), encode_cursor(2)],
        unsubscribe_tokens=[*tokens, engine.signer.sign(touchpoint_ids[-1] + 1000, "all")],
    )


def known_inputs(data: Known) -> dict[str, st.SearchStrategy[dict[str, Any]]]:
    """Per operation, ``as_strategy`` keyword arguments that name known data."""
    token = st.sampled_from(data.unsubscribe_tokens).map(lambda value: {"path_parameters": {"token": value}})
    send_log_query = st.fixed_dictionaries(
        {},
        optional={
            "recipient": st.sampled_from(data.recipient_ids),
            "campaign": st.sampled_from(data.campaign_ids),
            "cursor": st.sampled_from(data.cursors),
            "limit": st.integers(min_value=1, max_value=3),
        },
    )
    enrollment = st.fixed_dictionaries(
        {
            "campaign_id": st.sampled_from(data.campaign_ids),
            "recipient_ids": st.lists(st.sampled_from([*data.recipient_ids, "nobody"]), max_size=3),
        }
    )
    return {
        "GET /v1/recipients/{recipient_id}": st.sampled_from(data.recipient_ids).map(
            lambda value: {"path_parameters": {"recipient_id": value}}
        ),
        "GET /v1/send-log": send_log_query.map(lambda query: {"query": query}),
        "POST /v1/enrollments": enrollment.map(lambda body: {"body": body}),
        "GET /u/{token}": token,
        "POST /u/{token}": token,
    }


def cases(operation: Operation, data: Known) -> st.SearchStrategy[Case]:
    """Positive and negative cases of ``operation``, and positive ones naming known data."""
    strategies = [operation.as_strategy(POSITIVE), operation.as_strategy(NEGATIVE)]
    inputs = known_inputs(data).get(operation.label)
    if inputs is not None:
        strategies.append(inputs.flatmap(lambda kwargs: operation.as_strategy(POSITIVE, **kwargs)))
    return st.one_of(strategies)


def fuzz(operation: Operation, data: Known, statuses: Counter[int]) -> Callable[[], None]:
    """A Hypothesis test sending ``operation``'s cases and counting the answers' status codes."""

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(case=cases(operation, data))
    def send(case: Case) -> None:
        response = case.call_and_validate(checks=CHECKS)
        statuses[response.status_code] += 1

    return send


@pytest.mark.slow
def test_no_operation_answers_a_server_error_or_off_schema(
    engine: Engine, api: LiveServer, subtests: pytest.Subtests
) -> None:
    """Every operation answers fuzzed input without a 5xx and as its response schema says; the
    webhooks refuse it (4xx), every other operation accepts some of it (2xx)."""
    seed(engine)
    config = schemathesis.Config.from_dict(
        {
            "auth": {"openapi": {"bearer": {"bearer": TOKEN}}},
            # Every /v1 case carries the token rather than a fuzzed one: the refusals of missing
            # and wrong tokens are tested in test_v1.py.
            "generation": {"with-security-parameters": False},
        }
    )
    schema = schemathesis.openapi.from_url(f"{api.base_url}/openapi.json", config=config)
    operations: list[Operation] = [operation for methods in schema.values() for operation in methods.values()]
    assert len(operations) >= 14, f"the OpenAPI document lists only {len(operations)} operations"
    surprises = []
    for operation in operations:
        statuses: Counter[int] = Counter()
        with subtests.test(operation.label):
            fuzz(operation, known(engine), statuses)()
        if operation.path.startswith(WEBHOOKS):
            if any(not 400 <= code < 500 for code in statuses):
                surprises.append(f"{operation.label} did not refuse unsigned requests: {dict(statuses)}")
        elif not any(200 <= code < 300 for code in statuses):
            surprises.append(f"{operation.label} accepted no case: {dict(statuses)}")
    assert not surprises, "\n".join(surprises)
