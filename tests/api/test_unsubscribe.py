"""Unsubscribe links over HTTP against a real uvicorn server, on SQLite and PostgreSQL: the GET page
never unsubscribes, the RFC 8058 one-click POST does at once, forged tokens find nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa

from adapters.memory import MemoryAdapter
from scheduler import Engine
from scheduler.store import event_t, touchpoint_t
from scheduler.tokens import TokenSigner
from tests.api.conftest import served

PUBLIC_URL = "https://tact.example.com"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}

NEWS = """
id = "news"
kind = "marketing"
policy = "always"
[trigger]
event = "signed_up"
[[steps]]
id = "hello"
after = "0m"
channel = "email"
subject = "Hello"
text = "Hello. Unsubscribe: {{ unsubscribe_url }}"
"""


@pytest.fixture
def engine(database_url: str, tmp_path: Path) -> Iterator[Engine]:
    """An engine with memory adapters, the ``news`` campaign, and ana opted in to email and SMS."""
    campaigns = tmp_path / "campaigns"
    campaigns.mkdir()
    (campaigns / "news.toml").write_text(NEWS)
    engine = Engine.from_config(
        None,
        database_url=database_url,
        channels={"email": "memory", "sms": "memory"},
        campaigns_dir=str(campaigns),
        api={"public_url": PUBLIC_URL},
        attention={"holdout": 0.0},
        quiet_hours={"enabled": False},
        caps={"enabled": False},
    )
    engine.upsert_recipients(
        [{"id": "ana", "email": "ana@example.com", "consent": {"email": "opted_in", "sms": "opted_in"}}]
    )
    yield engine
    engine.close()


@pytest.fixture
def touchpoint_id(engine: Engine) -> int:
    """ana's touchpoint in the ``news`` campaign."""
    engine.enroll("news", ["ana"])
    with engine.store.engine.connect() as connection:
        return int(connection.execute(sa.select(touchpoint_t.c.id)).scalar_one())


def consent(engine: Engine, channel: str) -> str:
    profile = engine.store.recipient_profile("ana")
    assert profile is not None
    return str(profile["consent"][channel]["status"])


def event_ids(engine: Engine) -> list[str]:
    with engine.store.engine.connect() as connection:
        return list(connection.execute(sa.select(event_t.c.event_id).order_by(event_t.c.id)).scalars())


def assert_no_cookie_and_no_redirect(response: httpx.Response) -> None:
    assert "set-cookie" not in response.headers
    assert not response.is_redirect


def test_the_page_names_the_scope_and_never_unsubscribes(engine: Engine, touchpoint_id: int) -> None:
    """GET shows a self-contained page naming the channel, with a form posting back; consent stays."""
    token = engine.signer.sign(touchpoint_id, "email")
    with served(engine) as client:
        for _ in range(2):
            response = client.get(f"/u/{token}")
            assert response.status_code == 200
    page = response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "marketing email" in page
    assert '<form method="post">' in page
    assert "<script" not in page and "<link" not in page and "src=" not in page and "http" not in page
    assert_no_cookie_and_no_redirect(response)
    assert consent(engine, "email") == "opted_in"
    assert event_ids(engine) == []


def test_the_page_of_an_all_channels_token_says_all_marketing(engine: Engine, touchpoint_id: int) -> None:
    """A token scoped to ``all`` names all marketing messages."""
    with served(engine) as client:
        response = client.get(f"/u/{engine.signer.sign(touchpoint_id, 'all')}")
    assert response.status_code == 200
    assert "all marketing messages" in response.text


def test_one_click_unsubscribes_before_the_answer(engine: Engine, touchpoint_id: int) -> None:
    """An RFC 8058 POST opts out of the token's channel by the time the 200 arrives; SMS is untouched."""
    token = engine.signer.sign(touchpoint_id, "email")
    with served(engine) as client:
        response = client.post(f"/u/{token}", data=ONE_CLICK)
        assert response.status_code == 200
        assert consent(engine, "email") == "opted_out"
    assert response.headers["content-type"].startswith("text/plain")
    assert_no_cookie_and_no_redirect(response)
    assert consent(engine, "sms") == "opted_in"
    assert event_ids(engine) == [f"unsubscribe:{touchpoint_id}:email"]


def test_one_click_sent_as_multipart_form_data_unsubscribes(engine: Engine, touchpoint_id: int) -> None:
    """RFC 8058 allows multipart/form-data too; such a POST unsubscribes and gets the plain answer."""
    token = engine.signer.sign(touchpoint_id, "email")
    with served(engine) as client:
        response = client.post(f"/u/{token}", files={"List-Unsubscribe": (None, "One-Click")})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert consent(engine, "email") == "opted_out"


def test_repeating_one_click_is_harmless(engine: Engine, touchpoint_id: int) -> None:
    """A second POST of the same link answers 200 again and stores no second event."""
    token = engine.signer.sign(touchpoint_id, "email")
    with served(engine) as client:
        statuses = [client.post(f"/u/{token}", data=ONE_CLICK).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert consent(engine, "email") == "opted_out"
    assert len(event_ids(engine)) == 1


def test_the_page_form_unsubscribes_and_confirms_in_html(engine: Engine, touchpoint_id: int) -> None:
    """Submitting the page's form unsubscribes and answers with an HTML confirmation."""
    token = engine.signer.sign(touchpoint_id, "email")
    with served(engine) as client:
        response = client.post(f"/u/{token}", data={"confirm": "yes"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "You are unsubscribed" in response.text
    assert consent(engine, "email") == "opted_out"


def test_an_all_channels_token_opts_out_of_every_channel(engine: Engine, touchpoint_id: int) -> None:
    """A token scoped to ``all`` withdraws consent on every configured channel."""
    with served(engine) as client:
        response = client.post(f"/u/{engine.signer.sign(touchpoint_id, 'all')}", data=ONE_CLICK)
    assert response.status_code == 200
    assert (consent(engine, "email"), consent(engine, "sms")) == ("opted_out", "opted_out")


@pytest.mark.parametrize("forgery", ["tampered", "other-secret", "garbage", "unknown-touchpoint"])
def test_a_forged_or_dead_token_finds_nothing(engine: Engine, touchpoint_id: int, forgery: str) -> None:
    """A token that does not verify, or names no touchpoint, answers 404 to GET and POST and changes nothing."""
    genuine = engine.signer.sign(touchpoint_id, "email")
    tokens: dict[str, str] = {
        "tampered": genuine[:-2] + ("AA" if not genuine.endswith("AA") else "BB"),
        "other-secret": TokenSigner({"k1": b"not-our-secret"}, "k1").sign(touchpoint_id, "email"),
        "garbage": "not-a-token",
        "unknown-touchpoint": engine.signer.sign(touchpoint_id + 1000, "email"),
    }
    token = tokens[forgery]
    with served(engine) as client:
        page = client.get(f"/u/{token}")
        one_click = client.post(f"/u/{token}", data=ONE_CLICK)
        form = client.post(f"/u/{token}", data={"confirm": "yes"})
    assert (page.status_code, one_click.status_code, form.status_code) == (404, 404, 404)
    assert "not valid" in page.text
    assert consent(engine, "email") == "opted_in"
    assert event_ids(engine) == []


def test_the_link_in_a_sent_message_unsubscribes(engine: Engine, touchpoint_id: int) -> None:
    """The List-Unsubscribe URL of a message the engine sent works as a one-click link."""
    engine.tick(at=datetime.now(UTC))
    adapter = engine.adapter("email")
    assert isinstance(adapter, MemoryAdapter)
    [message] = adapter.sent
    link = message.headers["List-Unsubscribe"].strip("<>")
    assert link.startswith(f"{PUBLIC_URL}/u/")
    assert message.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    with served(engine) as client:
        response = client.post(urlsplit(link).path, data=ONE_CLICK)
    assert response.status_code == 200
    assert consent(engine, "email") == "opted_out"
    assert event_ids(engine) == [f"unsubscribe:{touchpoint_id}:email"]


def test_the_page_takes_no_external_resources(engine: Engine, touchpoint_id: int) -> None:
    """Every page forbids loading anything from elsewhere and is kept out of caches and indexes."""
    with served(engine) as client:
        responses: list[httpx.Response] = [
            client.get(f"/u/{engine.signer.sign(touchpoint_id, 'email')}"),
            client.get("/u/not-a-token"),
        ]
    for response in responses:
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["referrer-policy"] == "no-referrer"


SERIES = """
id = "series"
kind = "marketing"
[trigger]
event = "joined"
[[steps]]
id = "first"
after = "0m"
channel = "email"
subject = "First"
text = "First. Unsubscribe: {{ unsubscribe_url }}"
value = 0.9
[[steps]]
id = "second"
after = "1d"
channel = "email"
subject = "Second"
text = "Second."
value = 0.9
"""


def test_after_one_click_the_next_pending_marketing_touch_is_dropped(engine: Engine, tmp_path: Path) -> None:
    """Unsubscribing through a sent message's link drops the campaign's next touch as ``unsubscribed``."""
    (tmp_path / "campaigns" / "series.toml").write_text(SERIES)
    engine.reload_campaigns()
    start = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
    engine.enroll("series", ["ana"], at=start)
    first = engine.tick(at=start).decisions
    assert [(d.step_id, d.decision) for d in first] == [("first", "sent")]
    adapter = engine.adapter("email")
    assert isinstance(adapter, MemoryAdapter)
    link = adapter.sent[-1].headers["List-Unsubscribe"].strip("<>")
    with served(engine) as client:
        assert client.post(urlsplit(link).path, data=ONE_CLICK).status_code == 200
    second = engine.tick(at=start + timedelta(days=1, hours=1)).decisions
    assert [(d.step_id, d.decision, d.reason) for d in second] == [("second", "dropped", "unsubscribed")]
    assert len(adapter.sent) == 1
