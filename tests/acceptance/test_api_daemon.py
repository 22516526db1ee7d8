"""The HTTP API of a running ``tact run`` process, end to end, as an integrating system uses it."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.acceptance.conftest import Daemon, Workspace

if TYPE_CHECKING:
    StartDaemon = Callable[[Workspace], Daemon]

TOKEN = "crm-secret-token"

WELCOME = """\
id = "welcome"
name = "Welcome"
kind = "marketing"

[trigger]
event = "signed_up"

[[steps]]
id = "hello"
after = "0m"
channel = "email"
subject = "Hello {{ recipient.first_name }}"
text = "Hello {{ recipient.first_name }}, welcome aboard."
value = 0.9
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def signing_key() -> ec.EllipticCurvePrivateKey:
    """The key SendGrid would sign its event webhook with; its public half goes in the config."""
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def api_workspace(bare_workspace: Workspace, signing_key: ec.EllipticCurvePrivateKey) -> tuple[Workspace, str]:
    """A workspace with the API on a free port, a bearer token, a webhook key and the welcome campaign."""
    workspace = bare_workspace
    (workspace.campaigns / "welcome.toml").write_text(WELCOME, encoding="utf-8")
    public_der = signing_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    port = free_port()
    config = workspace.config.read_text(encoding="utf-8")
    config = config.replace("[api]\nenabled = false\n", f'[api]\nenabled = true\nhost = "127.0.0.1"\nport = {port}\n')
    config = config.replace(
        '[channels.email]\nadapter = "file"\n',
        f'[channels.email]\nadapter = "file"\nwebhook_public_key = "{base64.b64encode(public_der).decode()}"\n',
    )
    config += f'\n[api.tokens]\ncrm = "{TOKEN}"\n\n[quiet_hours]\nenabled = false\n\n[attention]\nholdout = 0.0\n'
    workspace.config.write_text(config, encoding="utf-8")
    workspace.ok("db", "upgrade")
    return workspace, f"http://127.0.0.1:{port}"


def signed_sendgrid_post(
    client: httpx.Client, key: ec.EllipticCurvePrivateKey, events: list[dict[str, Any]]
) -> httpx.Response:
    body = json.dumps(events).encode()
    timestamp = str(int(time.time()))
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    headers = {
        "Content-Type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
    }
    return client.post("/webhooks/sendgrid", content=body, headers=headers)


def test_recipient_event_send_click_and_state_through_the_api(
    start_daemon: StartDaemon, api_workspace: tuple[Workspace, str], signing_key: ec.EllipticCurvePrivateKey
) -> None:
    """Posted recipient and signed_up event enroll; the touch goes out; a signed click moves the asset."""
    workspace, base_url = api_workspace
    daemon = start_daemon(workspace)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=base_url, timeout=10) as client:
        daemon.wait_for(lambda: _ready(client), what="/readyz to answer 200")
        recipient = {"id": "r-1", "email": "ann@example.com", "first_name": "Ann", "consent": {"email": "opted_in"}}
        added = client.post("/v1/recipients", json=[recipient], headers=auth)
        assert added.status_code == 200, added.text
        assert added.json()["accepted"] == 1
        event = {"id": "signup-r-1", "recipient_id": "r-1", "type": "signed_up"}
        recorded = client.post("/v1/events", json=[event], headers=auth)
        assert recorded.status_code == 200, recorded.text
        assert recorded.json()["accepted"] == 1

        sent = daemon.wait_for(lambda: workspace.outbox("email") or None, what="the welcome email in the outbox")
        message = sent[0]
        assert (message["recipient_id"], message["step_id"]) == ("r-1", "hello")
        before = client.get("/v1/recipients/r-1", headers=auth).json()

        click = {
            "email": "ann@example.com", "timestamp": int(time.time()), "event": "click",
            "sg_event_id": "sg-click-1", "sg_message_id": "sg-1.filter", "url": "https://acme.example/start",
            "touchpoint_id": message["touchpoint_id"], "idempotency_key": message["idempotency_key"],
        }  # fmt: skip
        clicked = signed_sendgrid_post(client, signing_key, [click])
        assert clicked.status_code == 200, clicked.text
        assert signed_sendgrid_post(client, signing_key, [click]).status_code == 200  # a provider retry

        def moved() -> dict[str, Any] | None:  # events apply at the start of the next tick
            profile: dict[str, Any] = client.get("/v1/recipients/r-1", headers=auth).json()
            return profile if profile["attention"]["asset"] > before["attention"]["asset"] else None

        after = daemon.wait_for(moved, what="the click to raise the attention asset")
    assert daemon.stop() == 0, daemon.describe()

    assert [d["decision"] for d in after["recent_decisions"]] == ["sent"]
    assert workspace.sql("SELECT count(*) FROM event WHERE type = 'clicked'") == [(1,)]


def _ready(client: httpx.Client) -> bool | None:
    try:
        return client.get("/readyz").status_code == 200 or None
    except httpx.TransportError:
        return None
