"""Segment rules and send-time pacing are pure functions of what is known about a lead and the time."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import yaml
from pydantic import ValidationError

from leadflow.messaging.model import FrequencyCap, QuietHours, SendingPolicy
from leadflow.messaging.send_policy import cap_reopens_at, next_allowed_send, next_window_opening, quiet_until
from leadflow.scoring.model import Thresholds
from leadflow.scoring.score import EventFact
from leadflow.scoring.temperature import temperature_of
from leadflow.segments.evaluation import (
    LeadFacts,
    absence_windows,
    entering_event,
    evaluate_segments,
    holds,
    next_membership_change,
    reads_the_lead,
)
from leadflow.segments.model import Segment
from leadflow.sequences.model import SendWindow, Sequence

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)  # a Wednesday


def segment(text: str) -> Segment:
    return Segment.model_validate(yaml.safe_load(text))


def event(number: int, kind: str, ago: timedelta, **properties: object) -> EventFact:
    return EventFact(number, kind, NOW - ago, dict(properties))


EVENT_PAGES = segment(
    """
id: event_pages
name: Event pages
entry:
  count: {event: page_viewed, where: {url: {glob: '/events/*'}}, at_least: 3, within: 7d}
exit: {event: event_registered}
"""
)
ABANDONED = segment(
    """
id: abandoned
name: Abandoned
entry:
  absence:
    after: {event: form_started}
    missing: {event: form_submitted}
    same: [form]
    within: 30m
"""
)


def facts(events: list[EventFact], new: set[int], **lead: object) -> LeadFacts:
    return LeadFacts(now=NOW, events=tuple(events), new_event_ids=frozenset(new), **lead)  # type: ignore[arg-type]


def test_three_event_page_views_within_seven_days_enter_and_registering_leaves() -> None:
    views = [
        event(1, "page_viewed", timedelta(days=8), url="/events/summit"),
        event(2, "page_viewed", timedelta(days=3), url="/events/summit/agenda"),
        event(3, "page_viewed", timedelta(days=2), url="/blog/events/recap"),  # not an /events/ page
        event(4, "page_viewed", timedelta(days=1), url="/EVENTS/summit"),
    ]
    assert evaluate_segments([EVENT_PAGES], set(), facts(views, {4})).entered == []  # 2 in the window
    fourth = [*views, event(5, "page_viewed", timedelta(hours=1), url="/events/faq")]
    changes = evaluate_segments([EVENT_PAGES], set(), facts(fourth, {5}))
    [entry] = changes.entered
    assert entry.segment.id == "event_pages" and changes.joined == ["event_pages"]
    assert entry.event == fourth[-1]  # the view that made it three: the sequence's templates see it
    registered = [*fourth, event(6, "event_registered", timedelta(0))]
    assert evaluate_segments([EVENT_PAGES], {"event_pages"}, facts(registered, {6})).left == ["event_pages"]


def test_a_form_started_and_not_submitted_within_30_minutes_is_decided_when_the_window_closes() -> None:
    started = event(1, "form_started", timedelta(minutes=31), form="demo")
    other_form = event(2, "form_submitted", timedelta(minutes=20), form="newsletter")
    closed = LeadFacts(now=NOW, events=(started, other_form), closed_windows=frozenset({1}))
    assert holds(ABANDONED.entry, closed)
    submitted = event(3, "form_submitted", timedelta(minutes=5), form="demo")
    assert not holds(ABANDONED.entry, LeadFacts(NOW, (started, submitted), closed_windows=frozenset({1})))
    # Not decided by any later event: only when its window closes (or an old event arrives late).
    assert not holds(ABANDONED.entry, LeadFacts(NOW, (started, other_form), new_event_ids=frozenset({2})))
    just_started = event(4, "form_started", timedelta(minutes=1), form="demo")
    [window] = absence_windows([ABANDONED], [just_started], NOW)
    assert (window.event_id, window.closes_at) == (4, just_started.occurred_at + timedelta(minutes=30))
    assert absence_windows([ABANDONED], [started], NOW) == []  # its window is already over
    # The form started is what made the lead enter: its templates can name the form.
    assert entering_event(ABANDONED.entry, closed) == started


REGULARS = segment(
    """
id: regulars
name: Regulars
entry:
  all:
    - count: {event: page_viewed, where: {url: {glob: '/events/*'}}, at_least: 3, within: 7d}
    - not: {stage: sql}
exit:
  any:
    - event: event_registered
    - count: {event: page_viewed, where: {url: {glob: '/events/*'}}, at_most: 2, within: 7d}
"""
)


def test_a_count_segment_is_left_when_its_window_slides_past_with_no_new_event() -> None:
    views = [
        event(1, "page_viewed", timedelta(days=2), url="/events/summit"),
        event(2, "page_viewed", timedelta(days=1), url="/events/summit/agenda"),
        event(3, "page_viewed", timedelta(hours=1), url="/pricing"),  # not an event page
        event(4, "page_viewed", timedelta(0), url="/events/faq"),
    ]
    [entry] = evaluate_segments([REGULARS], set(), facts(views, {3, 4})).entered
    assert entry.event == views[3]
    # A member: leaves the moment the first view is 7 days old (2 left in the window), with no event.
    leaves = next_membership_change([REGULARS], {"regulars"}, facts(views, set()))
    assert leaves == views[0].occurred_at + timedelta(days=7)
    later = LeadFacts(now=leaves, events=tuple(views))
    assert evaluate_segments([REGULARS], {"regulars"}, later).left == ["regulars"]
    assert (
        evaluate_segments([REGULARS], {"regulars"}, replace(later, now=leaves - timedelta(seconds=1))).left
        == []
    )
    # A fourth view on day 6 keeps it in until the second one is 7 days old.
    fifth = [*views, event(5, "page_viewed", -timedelta(days=4), url="/events/summit")]
    assert next_membership_change([REGULARS], {"regulars"}, facts(fifth, set())) == views[
        1
    ].occurred_at + timedelta(days=7)
    # Not a member: time alone only lowers the count, so nothing can change and no timer is needed; and a
    # segment without a count never changes by time alone.
    assert next_membership_change([REGULARS], set(), facts(views, set())) is None
    assert next_membership_change([EVENT_PAGES, ABANDONED], {"event_pages"}, facts(views, set())) is None


def test_a_segment_entered_by_time_alone_once_a_window_empties() -> None:
    dormant = segment(
        """
id: dormant
name: Gone quiet
entry:
  all:
    - count: {event: page_viewed, at_least: 1}
    - count: {event: page_viewed, at_most: 0, within: 30d}
"""
    )
    views = [event(1, "page_viewed", timedelta(days=10)), event(2, "page_viewed", timedelta(days=3))]
    moment = next_membership_change([dormant], set(), facts(views, set()))
    assert moment == views[1].occurred_at + timedelta(days=30)
    [entry] = evaluate_segments([dormant], set(), LeadFacts(now=moment, events=tuple(views))).entered
    assert entry.event == views[1]  # the latest view counted by the rule


def test_property_score_temperature_stage_and_all_any_not() -> None:
    rule = segment(
        """
id: x
name: X
entry:
  all:
    - any: [{property: country, in: [US, CA]}, {property: company_size, gte: 500}]
    - score: 40
    - not: {stage: {in: [sql, customer]}}
    - temperature: {in: [warm, hot]}
"""
    ).entry
    lead = {"properties": {"country": "us"}, "score": 45, "temperature": "warm", "stage": "mql"}
    assert holds(rule, facts([], set(), **lead))
    assert not holds(rule, facts([], set(), **{**lead, "stage": "sql"}))
    assert not holds(rule, facts([], set(), **{**lead, "score": 39}))
    assert holds(rule, facts([], set(), **{**lead, "properties": {"company_size": 900}}))
    assert not holds(rule, facts([], set(), **{**lead, "temperature": "cold"}))


def test_temperature_falls_back_on_the_score_when_scoring_gave_none() -> None:
    thresholds = Thresholds(mql=40, sql=80)
    assert temperature_of("HOT", 0, thresholds) == "hot"
    assert [temperature_of(None, score, thresholds) for score in (10, 40, 80)] == ["cold", "warm", "hot"]


def test_a_local_send_window_in_the_leads_timezone() -> None:
    weekdays = SendWindow.model_validate({"days": "weekdays", "start": 540, "end": "17:00"})  # YAML's 9:00
    paris = ZoneInfo("Europe/Paris")
    saturday = datetime(2026, 11, 28, 12, tzinfo=UTC)
    assert next_window_opening(weekdays, paris, saturday) == datetime(2026, 11, 30, 8, tzinfo=UTC)
    assert next_window_opening(weekdays, paris, NOW) == NOW
    evening = datetime(2026, 11, 25, 17, tzinfo=UTC)  # 18:00 in Paris
    assert next_window_opening(weekdays, paris, evening) == datetime(2026, 11, 26, 8, tzinfo=UTC)


def test_quiet_hours_and_frequency_caps_push_a_send_later() -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    quiet = QuietHours(start="21:00", end="08:00")
    late = datetime(2026, 11, 25, 13, tzinfo=UTC)  # 22:00 in Tokyo
    assert quiet_until(quiet, tokyo, late) == datetime(2026, 11, 25, 23, tzinfo=UTC)
    assert quiet_until(quiet, tokyo, NOW - timedelta(minutes=1)) is None  # 20:59 in Tokyo
    assert quiet_until(quiet, tokyo, NOW) == datetime(2026, 11, 25, 23, tzinfo=UTC)  # 21:00 sharp is quiet
    cap = FrequencyCap(per_day=2, per_week=3)
    sent = [NOW - timedelta(hours=20), NOW - timedelta(hours=2)]
    assert cap_reopens_at(cap, sent, NOW) == NOW + timedelta(hours=4)
    week = [NOW - timedelta(days=6), NOW - timedelta(days=4), NOW - timedelta(days=2)]
    assert cap_reopens_at(cap, week, NOW) == NOW + timedelta(days=1)
    policy = SendingPolicy(quiet_hours=quiet, frequency_caps={"sms": cap})
    # Two texts today: the cap frees up tomorrow at 21:00 Tokyo, which is quiet: so at 08:00 the day after.
    assert next_allowed_send(policy, "sms", tokyo, late, [late - timedelta(hours=1), late]) == datetime(
        2026, 11, 26, 23, tzinfo=UTC
    )
    assert next_allowed_send(policy, "email", tokyo, late, []) is None  # quiet hours hold sms and push


def test_a_branch_on_events_alone_needs_no_read_of_the_lead() -> None:
    """The sequence workflow skips reading the lead for a condition that only looks at events."""

    def reads(entry: str) -> bool:
        return reads_the_lead(segment(f"{{id: s, name: S, entry: {entry}}}").entry)

    assert not reads("{event: webinar_registered}")
    assert not reads(
        "{all: [{event: page_viewed}, {not: {count: {event: page_viewed, at_least: 3, within: 7d}}}]}"
    )
    assert reads("{any: [{event: webinar_registered}, {score: 50}]}")
    assert reads("{not: {property: sms_consent, equals: true}}")
    assert reads("{all: [{temperature: hot}]}") and reads("{stage: mql}")


OLD_ABANDONED_FORM = """\
id: abandoned_form
name: Abandoned form reminder
segment: abandoned_form
goal: {event: form_submitted}
steps:
  - send: {channel: email, template: form_reminder}
  - wait: 1d
  - branch:
      if: {property: sms_consent, equals: true}
      then: [{send: {channel: sms, template: form_reminder}}]
"""


def test_a_branch_on_reachable_reads_the_channels_the_store_says_and_old_snapshots_still_branch() -> None:
    """`reachable: sms` holds when the store found SMS able to reach the lead (consent, a phone, no
    suppression), whatever its properties claim; a snapshot taken before, branching on the property
    `sms_consent`, keeps branching on it for the leads enrolled in that version."""
    branch = Sequence.model_validate(
        yaml.safe_load(
            OLD_ABANDONED_FORM.replace("{property: sms_consent, equals: true}", "{reachable: sms}")
        )
    )
    condition = branch.steps[2].branch.if_  # type: ignore[union-attr]
    assert (
        reads_the_lead(condition)
        and condition == Sequence.model_validate(branch.model_dump()).steps[2].branch.if_
    )  # type: ignore[union-attr]
    claimed = LeadFacts(now=NOW, properties={"sms_consent": True})
    assert not holds(condition, claimed)
    assert holds(condition, LeadFacts(now=NOW, reachable=frozenset({"email", "sms"})))
    assert not holds(condition, LeadFacts(now=NOW, reachable=frozenset({"email", "push"})))
    old = Sequence.model_validate(yaml.safe_load(OLD_ABANDONED_FORM))
    old_condition = old.steps[2].branch.if_  # type: ignore[union-attr]
    assert holds(old_condition, claimed) and not holds(old_condition, LeadFacts(now=NOW))


def test_disqualified_is_no_stage_a_rule_can_name() -> None:
    """Nothing sets it, so a rule on it could never hold: it is refused, naming the stages there are."""
    with pytest.raises(ValidationError, match="'recycled'"):
        segment("id: gone\nname: Gone\nentry: {stage: disqualified}\n")
