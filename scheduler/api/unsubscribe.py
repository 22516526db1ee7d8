"""Unsubscribe links: a confirmation page, and RFC 8058 one-click unsubscribe.

``GET /u/{token}`` shows a small self-contained page naming what the link unsubscribes from (one
channel's marketing, or all marketing) with a button that POSTs back to the same URL. A GET never
unsubscribes: mail scanners and link previews follow links.

``POST /u/{token}`` unsubscribes: the body is ``List-Unsubscribe=One-Click`` when a mailbox
provider sends it (RFC 8058), or the page's form. No authentication, no cookies, no redirect:
the signed token is the authority. The ``unsubscribed`` event is recorded with an id derived from
the token's touchpoint and scope, and applied before the answer, so consent reads ``opted_out``
as soon as the response arrives; repeating the request changes nothing. A one-click request gets
a plain-text answer, a browser the confirmation page. A token that does not verify, or names a
touchpoint or recipient that is not there, answers 404.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import TYPE_CHECKING, Annotated
from urllib.parse import parse_qsl

import sqlalchemy as sa
import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from scheduler.api.deps import ApiState, api_state, blocking
from scheduler.api.webhooks import record_and_apply
from scheduler.store import touchpoint_t
from scheduler.tokens import UnsubscribeClaim

if TYPE_CHECKING:
    from scheduler.engine import Engine

__all__ = ["router", "scope_label", "unsubscribe"]

log = structlog.get_logger("tact.unsubscribe")
router = APIRouter(tags=["unsubscribe"])
State = Annotated[ApiState, Depends(api_state)]

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex",
}
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#222;"
    "line-height:1.5}h1{font-size:1.4rem}button{font-size:1rem;padding:.6rem 1.2rem;border-radius:.3rem;"
    "border:1px solid #444;background:#222;color:#fff;cursor:pointer}"
)
_CHANNEL_NAMES = {"email": "marketing email", "sms": "marketing text messages (SMS)"}


def scope_label(scope: str) -> str:
    """What a token's scope unsubscribes from, in words."""
    if scope == "all":
        return "all marketing messages"
    return _CHANNEL_NAMES.get(scope, f"marketing messages on {scope}")


@router.get("/u/{token}", response_class=HTMLResponse)
async def confirmation_page(token: str, state: State) -> Response:
    """The confirmation page (unsubscribes nothing)."""
    engine = state.engine
    claim = engine.signer.verify(token)
    if claim is None or await blocking(_recipient_of, engine, claim.touchpoint_id) is None:
        return _not_found()
    label = escape(scope_label(claim.scope))
    body = (
        f"<h1>Unsubscribe</h1><p>Stop receiving {label} from us?</p>"
        '<form method="post"><input type="hidden" name="confirm" value="yes">'
        '<button type="submit">Unsubscribe</button></form>'
        "<p>Messages you asked for, such as receipts and password resets, still reach you.</p>"
    )
    return _page("Unsubscribe", body)


@router.post("/u/{token}")
async def one_click(token: str, request: Request, state: State) -> Response:
    """Unsubscribe (RFC 8058 one-click, or the confirmation page's form)."""
    engine = state.engine
    body = await request.body()
    fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    # RFC 8058 allows the field form-encoded or as multipart/form-data.
    one_click_request = fields.get("List-Unsubscribe") == "One-Click" or b"One-Click" in body
    claim = engine.signer.verify(token)
    if claim is None or not await blocking(unsubscribe, engine, claim, one_click=one_click_request):
        if one_click_request:
            return PlainTextResponse("unknown unsubscribe link\n", status_code=404, headers=PAGE_HEADERS)
        return _not_found()
    if one_click_request:
        return PlainTextResponse("unsubscribed\n", headers=PAGE_HEADERS)
    label = escape(scope_label(claim.scope))
    return _page("Unsubscribed", f"<h1>You are unsubscribed</h1><p>You will get no more {label} from us.</p>")


def unsubscribe(engine: Engine, claim: UnsubscribeClaim, *, one_click: bool) -> bool:
    """Record and apply the ``unsubscribed`` event a genuine token asks for (blocking).

    False when the token's touchpoint or its recipient no longer exists.
    """
    recipient_id = _recipient_of(engine, claim.touchpoint_id)
    if recipient_id is None:
        return False
    now: datetime = engine.clock()
    record = {
        "id": f"unsubscribe:{claim.touchpoint_id}:{claim.scope}",
        "recipient_id": recipient_id,
        "type": "unsubscribed",
        "at": now,
        "touchpoint_id": str(claim.touchpoint_id),
        "properties": {"source": "one_click" if one_click else "unsubscribe_page", "scope": claim.scope},
    }
    if claim.scope != "all":
        record["channel"] = claim.scope
    report = record_and_apply(engine, [record])
    if report.rejected:
        return False
    log.info(
        "unsubscribed",
        touchpoint_id=claim.touchpoint_id,
        scope=claim.scope,
        one_click=one_click,
        repeated=bool(report.duplicates),
    )
    return True


def _recipient_of(engine: Engine, touchpoint_id: int) -> str | None:
    with engine.store.engine.connect() as connection:
        recipient_id = connection.execute(
            sa.select(touchpoint_t.c.recipient_id).where(touchpoint_t.c.id == touchpoint_id)
        ).scalar()
    return str(recipient_id) if recipient_id is not None else None


def _page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>"
    )
    return HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)


def _not_found() -> HTMLResponse:
    return _page(
        "Link not valid",
        "<h1>This unsubscribe link is not valid</h1>"
        "<p>It may be incomplete: open the whole link from the message, or use the unsubscribe "
        "link of a more recent message.</p>",
        status_code=404,
    )
