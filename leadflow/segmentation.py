"""Segment entry. A segment's entry trigger is an event type with property filters."""

from __future__ import annotations

from collections.abc import Iterable

from leadflow.content.conditions import filter_holds
from leadflow.content.models import EventTrigger, Segment
from leadflow.scoring import EventFact


def trigger_matches(trigger: EventTrigger, event_type: str, properties: dict) -> bool:
    return event_type == trigger.event and filter_holds(trigger.where, properties)


def segments_entered(segments: Iterable[Segment], new_events: Iterable[EventFact]) -> list[Segment]:
    """The segments the new events qualify the lead for, in content order."""
    events = list(new_events)
    return [
        segment
        for segment in segments
        if any(trigger_matches(segment.entry, event.type, event.properties) for event in events)
    ]
