"""A segment: its entry and exit rules."""

from __future__ import annotations

from pydantic import Field

from leadflow.content.fields import IDENTIFIER, Strict
from leadflow.segments.rules import Rule


class Segment(Strict):
    """Who is in it. Entry and exit are evaluated each time the lead's events arrive, when an absence window
    closes and when a count's window slides past; a lead without an `exit` rule stays a member once it
    entered."""

    id: str = Field(pattern=IDENTIFIER)
    name: str
    description: str = ""
    entry: Rule
    exit: Rule | None = None
