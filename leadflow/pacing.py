"""When a message may go out: local send windows, quiet hours and frequency caps, all in the lead's timezone.

sending.yaml (SendingPolicy) is the one send-time policy; its model's defaults are the defaults. `paced_until`
is the last check of the send-time gate (leadflow/outgoing.py `policy_gate`, after consent and suppression
of leadflow/consent.py): caps count what was sent to the lead on that channel by every sequence.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from leadflow.consent import COUNTED, HOLD, Verdict
from leadflow.content.models import WEEKDAYS, FrequencyCap, QuietHours, SendingPolicy, SendWindow, known_zone
from leadflow.store.models import Lead, Message

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
    return Verdict(HOLD, why, allowed)
