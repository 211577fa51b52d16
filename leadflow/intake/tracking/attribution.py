"""First-touch and last-touch source: where a lead came from, from its page views.

A page view is a *touch* when it carries UTM parameters or a referrer from another host; its source is
`utm_source`, else the referrer's host. Direct visits and clicks within the site are not touches. The first
touch is the earliest, the last touch the latest; both are recomputed from all of a lead's events on each
rescore, so an identity merge (which moves the anonymous history to the lead) updates them too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from leadflow.scoring.score import EventFact

UTM = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")


def touch_of(event: EventFact) -> dict[str, Any] | None:
    """The source of a page view, or None for a direct or internal visit."""
    if event.type != "page_viewed":
        return None
    properties = event.properties
    utm = {name.removeprefix("utm_"): str(properties[name]) for name in UTM if properties.get(name)}
    referrer = str(properties.get("referrer") or "")
    referrer_host = urlsplit(referrer).hostname or ""
    page_host = urlsplit(str(properties.get("url") or "")).hostname or ""
    external = bool(referrer_host) and referrer_host != page_host
    if not utm and not external:
        return None
    return {
        "source": utm.get("source") or referrer_host,
        **{name: value for name, value in utm.items() if name != "source"},
        "referrer": referrer if external else None,
        "landing_page": properties.get("url"),
        "at": event.occurred_at.isoformat(),
    }


def first_and_last_touch(events: Iterable[EventFact]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    touches = [
        touch
        for event in sorted(events, key=lambda e: (e.occurred_at, e.id))
        if (touch := touch_of(event)) is not None
    ]
    return (touches[0], touches[-1]) if touches else (None, None)
