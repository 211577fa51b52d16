"""The send-time policy, in one place: may this message go out now, and if not, skip it or hold it until when?

Asked by every send inside the transaction that claims the message (`policy_gate`, handed to
leadflow.messaging.delivery), in this order: the lead was erased; the channel is configured; the lead has an address on
it; the address is not on the suppression list; consent (leadflow.messaging.consent keeps the records); then
sending.yaml's send windows, quiet hours and frequency caps, all in the lead's timezone (`paced_until`). Caps
count what was sent to the lead on that channel by every sequence. sending.yaml (SendingPolicy) is the one
send-time policy; its model's defaults are the defaults.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from leadflow.messaging.consent import _CONSENT_STATUS, ConsentStatus, addresses, suppression_of
from leadflow.messaging.model import FrequencyCap, QuietHours, SendingPolicy, known_zone
from leadflow.platform.runtime import Runtime
from leadflow.platform.settings import CHANNELS, Settings
from leadflow.platform.store.models import Lead, Message
from leadflow.sequences.model import WEEKDAYS, SendWindow

if TYPE_CHECKING:
    from leadflow.messaging.delivery import Gate
    from leadflow.messaging.outgoing import Recipient

# Messages that count against a frequency cap: sent, possibly sent, or being sent.
COUNTED = ("sent", "sending", "claimed", "uncertain")


class Decision(StrEnum):
    """What the send-time policy decides for one send (a Verdict's outcome)."""

    SEND = "send"
    SUPPRESSED = "suppressed"  # opted out or erased: the lead leaves its sequences
    SKIPPED = "skipped"  # this channel cannot reach the lead
    HELD = "held"  # not now: until the verdict's hold_until


@dataclass(frozen=True)
class Verdict:
    """`send`; `suppressed` (opted out or erased: the lead leaves its sequences); `skipped` (this channel
    cannot reach the lead: no address, no consent, a bounced address); `held` until `hold_until` (pacing)."""

    outcome: Decision
    reason: str = ""
    hold_until: datetime | None = None


# --- whether: who may be messaged at all --------------------------------------------------------------------


def send_verdict(
    session: Session, settings: Settings, lead: Lead | None, channel: str, address: str | None
) -> Verdict:
    """Whether `lead` may be messaged on `channel` at `address` at all, checked in this order: erased, no
    address, suppression list, consent. When: `paced_until` below."""
    if lead is None:
        return Verdict(Decision.SUPPRESSED, "the lead was erased")
    if not address:
        return Verdict(Decision.SKIPPED, f"the lead has no {_address_name(channel)}")
    suppression = suppression_of(session, channel, address)
    if suppression is not None:
        outcome = (
            Decision.SKIPPED if suppression.reason in ("bounce", "invalid_number") else Decision.SUPPRESSED
        )
        return Verdict(outcome, f"{_address_name(channel)} is on the suppression list ({suppression.reason})")
    consent = session.scalars(_CONSENT_STATUS, {"lead": lead.id, "channel": channel}).first()
    if consent == ConsentStatus.WITHDRAWN:
        return Verdict(Decision.SUPPRESSED, f"the lead opted out of {channel}")
    if consent != ConsentStatus.GRANTED and channel in settings.consent_required:
        return Verdict(Decision.SKIPPED, f"no {channel} consent recorded for the lead")
    return Verdict(Decision.SEND)


def reachable_channels(session: Session, settings: Settings, lead: Lead) -> list[str]:
    """The channels a message could reach `lead` on, as a send would decide (`reachable:` in branches):
    push when any of its browsers' subscriptions passes."""
    return [
        channel
        for channel in CHANNELS
        if any(
            send_verdict(session, settings, lead, channel, address).outcome == Decision.SEND
            for address in addresses(session, lead, channel)
        )
    ]


def _address_name(channel: str) -> str:
    return {"email": "email address", "sms": "phone number", "push": "push subscription"}[channel]


# --- when: send windows, quiet hours and frequency caps -----------------------------------------------------

DAY, WEEK = timedelta(days=1), timedelta(days=7)


def lead_zone(properties: dict[str, Any], policy: SendingPolicy) -> ZoneInfo:
    """The lead's `timezone` property when it names a real zone, else the policy's default."""
    return known_zone(properties.get("timezone")) or ZoneInfo(policy.default_timezone)


def _openings(
    start: time, end: time, zone: ZoneInfo, around: datetime
) -> Iterable[tuple[date, datetime, datetime]]:
    """Each day's (day, opening, closing) from the day before `around` on; a window may cross midnight."""
    length = datetime.combine(date.min, end) - datetime.combine(date.min, start)
    if length <= timedelta(0):
        length += DAY
    first = around.astimezone(zone).date() - DAY
    for offset in range(9):
        day = first + timedelta(days=offset)
        opening = datetime.combine(day, start, tzinfo=zone)
        yield day, opening, opening + length


def next_window_opening(window: SendWindow, zone: ZoneInfo, after: datetime) -> datetime:
    """`after` itself when it falls inside the window, else the window's next opening."""
    for day, opening, closing in _openings(window.start, window.end, zone, after):
        if WEEKDAYS[day.weekday()] not in window.days:
            continue
        if opening <= after < closing:
            return after
        if opening > after:
            return opening.astimezone(after.tzinfo)
    raise AssertionError("a window with at least one day opens within a week")  # the model forbids none


def quiet_until(quiet: QuietHours, zone: ZoneInfo, at: datetime) -> datetime | None:
    """The end of the quiet hours `at` falls in, or None when it is not quiet."""
    for _, opening, closing in _openings(quiet.start, quiet.end, zone, at):
        if opening <= at < closing:
            return closing.astimezone(at.tzinfo)
    return None


def cap_reopens_at(cap: FrequencyCap, sent: list[datetime], at: datetime) -> datetime | None:
    """When one more message fits under the rolling caps, or None when it fits now."""
    reopen: datetime | None = None
    for limit, span in ((cap.per_day, DAY), (cap.per_week, WEEK)):
        if limit is None:
            continue
        recent = sorted(moment for moment in sent if at - span < moment <= at)
        if len(recent) >= limit:
            frees = recent[len(recent) - limit] + span  # the oldest that must age out before one more fits
            reopen = max(reopen, frees) if reopen else frees
    return reopen


def next_allowed_send(
    policy: SendingPolicy, channel: str, zone: ZoneInfo, at: datetime, sent: list[datetime]
) -> datetime | None:
    """None when a message on `channel` may go out `at`; else the earliest moment it may."""
    cap = policy.frequency_caps.get(channel)  # type: ignore[call-overload]
    quiet = policy.quiet_hours if policy.quiet_hours and channel in policy.quiet_hours.channels else None
    moment = at
    for _ in range(16):  # waiting out a cap can land in quiet hours and the other way round
        later = [
            quiet_until(quiet, zone, moment) if quiet else None,
            cap_reopens_at(cap, sent, moment) if cap else None,
        ]
        pushed = max((value for value in later if value is not None), default=None)
        if pushed is None or pushed <= moment:
            break
        moment = pushed
    return None if moment == at else moment


_SENT_AT = func.coalesce(Message.sent_at, Message.created_at)
_PACED_SINCE = select(_SENT_AT).where(  # every send asks: built once
    Message.lead_id == bindparam("lead"),
    Message.channel == bindparam("channel"),
    Message.status.in_(COUNTED),  # what counts against a frequency cap, as for the settings' caps
    bindparam("since") < _SENT_AT,
)


def paced_until(
    session: Session, policy: SendingPolicy, lead: Lead, channel: str, at: datetime
) -> Verdict | None:
    """Quiet hours and frequency caps of sending.yaml, across every sequence the lead is in: None when a
    message may go out `at`, else a hold until the earliest moment it may, saying why."""
    quiet = policy.quiet_hours if policy.quiet_hours and channel in policy.quiet_hours.channels else None
    cap = policy.frequency_caps.get(channel)  # type: ignore[call-overload]
    if quiet is None and cap is None:
        return None
    since = at - WEEK - timedelta(days=1)
    sent = [
        moment if moment.tzinfo else moment.replace(tzinfo=at.tzinfo)
        for moment in session.scalars(_PACED_SINCE, {"lead": lead.id, "channel": channel, "since": since})
    ]
    zone = lead_zone(lead.properties, policy)
    allowed = next_allowed_send(policy, channel, zone, at, sent)
    if allowed is None:
        return None
    if quiet is not None and quiet_until(quiet, zone, at) is not None:
        why = f"quiet hours {quiet.start:%H:%M}-{quiet.end:%H:%M} in {zone.key} (sending.yaml)"
    else:
        why = f"{channel} frequency cap reached (sending.yaml)"
    return Verdict(Decision.HELD, why, allowed)


# --- the gate: whether, then when, for one send -------------------------------------------------------------

_LOCKED_LEAD = select(Lead).where(Lead.id == bindparam("lead")).with_for_update()


def policy_gate(runtime: Runtime, recipient: Recipient, channel: str, now: datetime) -> Gate:
    """The send-time policy for one lead and channel, run inside the claiming transaction."""

    def gate(session: Session) -> Verdict:
        if channel == "sms" and runtime.sms is None:
            return Verdict(
                Decision.SKIPPED, "SMS is not configured (set LEADFLOW_TWILIO_ACCOUNT_SID and friends)"
            )
        if channel == "push" and runtime.push is None:
            return Verdict(Decision.SKIPPED, "web push is not configured (set LEADFLOW_VAPID_PRIVATE_KEY)")
        # The row lock (PostgreSQL; SQLite already serializes writers) makes concurrent sends to one lead
        # take turns, so frequency caps hold across sequences.
        lead = session.scalars(_LOCKED_LEAD, {"lead": recipient.lead_id}).first()
        verdict = send_verdict(session, runtime.settings, lead, channel, recipient.address(channel))
        if verdict.outcome != Decision.SEND or lead is None:
            return verdict
        # When: sending.yaml's quiet hours and frequency caps (per channel, rolling, across sequences).
        return paced_until(session, runtime.content.sending, lead, channel, now) or verdict

    return gate
