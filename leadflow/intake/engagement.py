"""Routes people and providers reach without an API key, each authenticated by a signature instead:
the open pixel, click redirects and the unsubscribe link (HMAC-signed tokens: leadflow.messaging.links), and
Twilio's inbound-message and status webhooks (X-Twilio-Signature, checked with Twilio's RequestValidator).

Everything they learn becomes an event through the normal ingestion path (stored once, with its outbox row,
so the lead's workflow sees it): email_opened, email_clicked, unsubscribed, subscribed, sms_replied,
sms_bounced.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from uuid import uuid4

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from leadflow.http.inputs import unstorable
from leadflow.http.refusals import refusals, request_body
from leadflow.intake.ingest import EventIn, store_events
from leadflow.messaging import consent
from leadflow.messaging.delivery import BOUNCES, SUPPRESSING, record_bounce
from leadflow.messaging.links import PIXEL_GIF
from leadflow.messaging.providers.sms import PERMANENT_CODES
from leadflow.platform import clock
from leadflow.platform.runtime import Runtime
from leadflow.platform.store.models import Consent, ConsentChange, InboundMessage, Lead, Message
from leadflow.platform.store.upsert import insert_ignoring_conflicts

STOP_WORDS = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"}
START_WORDS = {"START", "UNSTOP"}
HELP_WORDS = {"HELP", "INFO"}
NOT_FOUND = "no such link"
# What a person who follows a broken or forged link in an email sees: a page, not JSON.
LINK_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": NOT_FOUND, "content": {"text/html": {}}}
}
NO_CACHE = {"Cache-Control": "no-store, max-age=0"}
MAX_SID = 64  # Twilio's ids are 34 characters
MAX_SMS_UNITS = 1_600  # Twilio's longest message body, in UTF-16 code units: its event fits the store's bound
# Twilio's message statuses in the order they happen; a final one (delivered, undelivered, failed) is never
# replaced by an earlier one arriving late or replayed. `read` (WhatsApp, RCS) comes after delivery.
DELIVERY_ORDER = {
    "accepted": 0,
    "scheduled": 0,
    "queued": 1,
    "sending": 2,
    "sent": 3,
    "delivered": 4,
    "undelivered": 4,
    "failed": 4,
    "read": 5,
    "canceled": 4,
}


class TwilioCallback(BaseModel):
    """The form fields of Twilio's webhooks that Leadflow reads (it sends more, all text, all signed)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, str] = Field(init=False)

    sender: str = Field("", alias="From", description="the number that texted (inbound messages)")
    text: str = Field("", alias="Body", description="what they wrote (inbound messages)")
    message_sid: str = Field("", alias="MessageSid")
    sms_sid: str = Field("", alias="SmsSid", description="the older name of MessageSid")
    message_status: str = Field("", alias="MessageStatus", description="delivery reports: queued, sent, …")
    error_code: str = Field("", alias="ErrorCode", description="delivery reports: why it failed")


# Read by the routes themselves: the signature covers every field, including those not documented here.
TWILIO_CALLBACK = {
    **request_body(TwilioCallback, "application/x-www-form-urlencoded"),
    "parameters": [
        {
            "name": "X-Twilio-Signature",
            "in": "header",
            "required": True,
            "description": "Twilio's signature of our public URL and the form (else 403)",
            "schema": {"type": "string"},
        }
    ],
}


def public_routes(runtime: Runtime, on_events_accepted: Callable[[], None] | None) -> APIRouter:
    router = APIRouter(include_in_schema=True, tags=["public"])
    tracker = runtime.tracker

    async def record(
        events: list[EventIn], also: Callable[[Any], None] | None = None, once: str = ""
    ) -> bool:
        """Store `events` (and `also`'s writes) in one transaction, then let the router deliver them. With
        `once`, a provider's message id, only the first time that id arrives: a replay writes nothing and
        answers False."""

        def write() -> int | None:
            with runtime.db.transaction() as session:
                if once and not first_arrival(session, once):
                    return None
                if also:
                    also(session)
                return store_events(session, events).accepted if events else 0

        accepted = await asyncio.to_thread(write)
        if accepted and on_events_accepted:
            on_events_accepted()
        return accepted is not None

    def message_of(message_id: int, lead_id: int) -> Message | None:
        with runtime.db.read() as session:
            message = session.get(Message, message_id)
            return message if message is not None and message.lead_id == lead_id else None

    @router.get("/t/o/{token}", response_class=Response, responses=refusals(404))
    async def email_opened(token: str) -> Response:
        """The open pixel: records `email_opened` once per message, answers a transparent GIF."""
        opened = tracker.read_open(token)
        message = await asyncio.to_thread(message_of, opened.message_id, opened.lead_id) if opened else None
        if opened is None or message is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND)
        properties = {"message_id": message.id, "template": message.template}
        await record(
            [
                EventIn(
                    id=f"lf-open-{message.id}",
                    type="email_opened",
                    lead_id=opened.lead_id,
                    properties=properties,
                )
            ]
        )
        return Response(PIXEL_GIF, media_type="image/gif", headers=NO_CACHE)

    @router.get("/t/c/{token}", status_code=status.HTTP_302_FOUND, responses=LINK_NOT_FOUND)
    async def email_clicked(token: str) -> Response:
        """A tracked link: records `email_clicked` (once per link of a message) and redirects to its page."""
        clicked = tracker.read_click(token)
        if not clicked:
            return link_not_found()
        message = await asyncio.to_thread(message_of, clicked.message_id, clicked.lead_id)
        if message is not None:  # an erased lead's old email still leads to the page, unrecorded
            properties = {"message_id": message.id, "template": message.template, "url": clicked.url}
            event_id = f"lf-click-{message.id}-{clicked.link}"
            await record(
                [EventIn(id=event_id, type="email_clicked", lead_id=clicked.lead_id, properties=properties)]
            )
        destination = clicked.url
        if message is not None and on_our_sites(runtime, destination):
            # Only to our own sites (a proof handed to anyone else's page could be used by them).
            destination = tracker.with_proof(destination, clicked.lead_id, message.id)
        return RedirectResponse(destination, status.HTTP_302_FOUND, headers=NO_CACHE)

    @router.get("/u/{token}", response_class=HTMLResponse, responses=LINK_NOT_FOUND)
    async def unsubscribe_page(token: str) -> HTMLResponse:
        """The body link: a page with one button. Opening a link changes nothing, because mail scanners
        open links too; the button (and mail clients, via RFC 8058) POST to the same address."""
        if tracker.read_unsubscribe(token) is None:
            return link_not_found()
        return HTMLResponse(
            _page("Unsubscribe", '<form method="post"><button type="submit">Unsubscribe me</button></form>')
        )

    @router.post("/u/{token}", response_class=HTMLResponse, responses=LINK_NOT_FOUND)
    async def unsubscribe(token: str) -> HTMLResponse:
        """One-click unsubscribe (RFC 8058 `List-Unsubscribe=One-Click`, or the page's button): the opt-out
        is stored before the answer, and the lead's sequences exit when its workflow sees the event."""
        target = tracker.read_unsubscribe(token)
        if target is None:
            return link_not_found()
        lead_id, channel = target.lead_id, target.channel

        def consent_changes() -> int | None:
            """None when the lead is gone or already out; else how many times its consent changed."""
            with runtime.db.read() as session:
                if session.get(Lead, lead_id) is None:
                    return None
                # One statement, so both come from one snapshot even while another click is committing.
                current, changes = session.execute(
                    select(
                        select(Consent.status)
                        .where(Consent.lead_id == lead_id, Consent.channel == channel)
                        .scalar_subquery(),
                        select(func.count(ConsentChange.id))
                        .where(ConsentChange.lead_id == lead_id, ConsentChange.channel == channel)
                        .scalar_subquery(),
                    )
                ).one()
                return None if current == consent.ConsentStatus.WITHDRAWN else int(changes)

        changes = await asyncio.to_thread(consent_changes)
        if changes is not None:
            # One opt-out per consent state: a click repeated, or sent twice at once, is stored once; after
            # the lead opts back in, the same link opts it out again.
            event_id = f"lf-unsubscribe-{lead_id}-{channel}-{changes}"
            properties = {"channel": channel, "source": "unsubscribe link"}
            await record([EventIn(id=event_id, type="unsubscribed", lead_id=lead_id, properties=properties)])
        return HTMLResponse(
            _page("Unsubscribed", f"You will receive no more {html.escape(channel)} messages from us.")
        )

    # --- Twilio -------------------------------------------------------------------------------------

    async def twilio_form(request: Request) -> dict[str, str]:
        """The webhook's parameters, once its X-Twilio-Signature proves Twilio sent them (else 403)."""
        if not runtime.settings.twilio_auth_token:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "SMS is not configured")
        try:
            params = dict(parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "the body is not UTF-8 form data") from None
        # Twilio signs the URL it was configured with: our public URL, not whatever a proxy forwarded.
        url = runtime.settings.resolved_public_url + request.url.path
        if request.url.query:
            url += f"?{request.url.query}"
        signature = request.headers.get("X-Twilio-Signature", "")
        if not RequestValidator(runtime.settings.twilio_auth_token).validate(url, params, signature):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "invalid X-Twilio-Signature")
        problem = unfit(params)
        if problem:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, problem)
        return params

    def leads_with_phone(phone: str) -> list[int]:
        with runtime.db.read() as session:
            return list(session.scalars(select(Lead.id).where(Lead.phone == phone).order_by(Lead.id)))

    @router.post(
        "/webhooks/twilio/sms",
        response_class=Response,
        responses=refusals(400, 403, 404),
        openapi_extra=TWILIO_CALLBACK,
    )
    async def sms_received(request: Request) -> Response:
        """A reply to our number: STOP words opt out, START words opt back in, HELP answers; anything else
        becomes an `sms_replied` event of every lead with that number."""
        params = await twilio_form(request)
        phone, body, sid = params.get("From", ""), params.get("Body", ""), message_sid(params)
        keyword = body.strip().upper()
        lead_ids = await asyncio.to_thread(leads_with_phone, phone)
        now = clock.now()
        reply = MessagingResponse()
        # Every branch records with once=sid: a replayed message (an old STOP sent again after a START, a
        # HELP that would be answered twice) changes nothing.
        if keyword in STOP_WORDS or keyword in START_WORDS:
            opting_out = keyword in STOP_WORDS
            kind = "unsubscribed" if opting_out else "subscribed"
            properties = {"channel": "sms", "source": f"SMS reply {keyword}"}
            events = [
                EventIn(
                    id=f"lf-sms-{sid or uuid4().hex}-{lead_id}",
                    type=kind,
                    lead_id=lead_id,
                    properties=properties,
                )
                for lead_id in lead_ids
            ]

            def the_number_itself(session: Any) -> None:
                # Also for a number we know no lead by: a STOP must hold for whoever texts from it later.
                if opting_out:
                    consent.suppress(session, "sms", phone, "opt_out", f"SMS reply {keyword}", now)
                else:
                    consent.lift_opt_out(session, "sms", phone)

            await record(events, the_number_itself, once=sid)
        elif keyword in HELP_WORDS:
            if await record([], once=sid):
                reply.message(runtime.settings.sms_help_reply)
        else:
            properties = {"body": body, "message_sid": sid}
            await record(
                [
                    EventIn(
                        id=f"lf-sms-{sid or uuid4().hex}-{lead_id}",
                        type="sms_replied",
                        lead_id=lead_id,
                        properties=properties,
                    )
                    for lead_id in lead_ids
                ],
                once=sid,
            )
        return Response(str(reply), media_type="application/xml")

    @router.post(
        "/webhooks/twilio/status",
        status_code=status.HTTP_204_NO_CONTENT,
        response_class=Response,
        responses=refusals(400, 403, 404),
        openapi_extra=TWILIO_CALLBACK,
    )
    async def sms_status(request: Request) -> Response:
        """Delivery reports: the message's delivery status; a number that cannot receive is suppressed."""
        params = await twilio_form(request)
        sid, state = message_sid(params), params.get("MessageStatus", "")
        error_code = params.get("ErrorCode", "")
        code = (
            int(error_code)
            if error_code.isascii() and error_code.isdigit() and len(error_code) < 10
            else None
        )
        if state not in DELIVERY_ORDER:
            return Response(status_code=status.HTTP_204_NO_CONTENT)  # not a status we track

        def write() -> bool:
            """Whether a bounce was recorded (an event for the router)."""
            with runtime.db.transaction() as session:
                message = session.scalars(
                    select(Message).where(Message.provider_id == sid, Message.channel == "sms")
                ).first()
                if message is None or DELIVERY_ORDER[state] < DELIVERY_ORDER.get(
                    message.delivery_status or "", -1
                ):
                    return False  # unknown, or a late or replayed callback: a status never moves backwards
                message.delivery_status = state
                message.error = f"Twilio error {code}" if code else message.error
                reason = PERMANENT_CODES.get(code) if code and state in ("failed", "undelivered") else None
                if reason:
                    consent.suppress(
                        session,
                        "sms",
                        message.recipient,
                        SUPPRESSING[reason],
                        f"Twilio error {code}",
                        clock.now(),
                    )
                if reason in BOUNCES and message.lead_id and session.get(Lead, message.lead_id):
                    record_bounce(session, message.lead_id, message.id, "sms", message.template)
                    return True
                return False

        if await asyncio.to_thread(write) and on_events_accepted:
            on_events_accepted()
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    return router


def unfit(params: dict[str, str]) -> str | None:
    """Why a signed form cannot be what Twilio sends (and could not be stored), or None."""
    for (name, *_), _, reason in unstorable(params):
        return f"{name} {reason}"
    if len(message_sid(params)) > MAX_SID:
        return f"MessageSid is longer than {MAX_SID} characters: not a Twilio message id"
    if len(params.get("Body", "").encode("utf-16-le")) > 2 * MAX_SMS_UNITS:
        return f"Body is longer than a message can be ({MAX_SMS_UNITS} UTF-16 code units)"
    return None


def first_arrival(session: Session, provider_id: str) -> bool:
    """Whether this is the first time the provider's message `provider_id` arrives (noted if so)."""
    row = {"provider_id": provider_id, "received_at": clock.now()}
    return bool(
        insert_ignoring_conflicts(
            session, InboundMessage, [row], ["provider_id"], returning=[InboundMessage.id]
        )
    )


def on_our_sites(runtime: Runtime, url: str) -> bool:
    """Whether `url` is a page of a site in sites.yaml (its origin is one a site key allows)."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    return any(site.allows_origin(origin) for site in runtime.content.sites.values())


def link_not_found() -> HTMLResponse:
    return HTMLResponse(
        _page("Link not found", "This link is not valid: it may have been copied incompletely."),
        status.HTTP_404_NOT_FOUND,
        headers=NO_CACHE,
    )


def message_sid(params: dict[str, str]) -> str:
    """The message's id: `MessageSid`, or the older `SmsSid` Twilio still sends (replays share it)."""
    return params.get("MessageSid") or params.get("SmsSid") or ""


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
        f'content="width=device-width"><title>{title}</title></head>'
        f'<body style="font-family:sans-serif;max-width:32em;margin:4em auto"><h1>{title}</h1><p>{body}</p></body></html>'
    )
