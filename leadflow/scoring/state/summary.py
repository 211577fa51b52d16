"""The stored, bounded summary of a lead's events: one state per behavior rule, and the lead's."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from leadflow.scoring.state.plan import TAIL_KEPT, FoldPlan, Key, micros, moment


@dataclass
class RuleState:
    n: int = 0  # matching events folded
    last: Key | None = None  # the latest of them
    head: list[Key] = field(default_factory=list)  # bands: the earliest events, which the bands reward
    recent: list[Key] = field(default_factory=list)  # the newest (age windows: all still inside them)
    block: int = 0  # events in neither list, shown together
    block_last: Key | None = None
    block_sum: float = 0.0  # half-life: sum of 0.5**((ref - ti) / h) over the block, else unused
    ref: int = 0  # the block sum's reference time (microseconds)

    def as_json(self) -> list[Any]:
        return [
            self.n,
            self.last,
            self.head,
            self.recent,
            self.block,
            self.block_last,
            self.block_sum,
            self.ref,
        ]

    @classmethod
    def from_json(cls, data: list[Any]) -> RuleState:
        n, last, head, recent, block, block_last, block_sum, ref = data
        return cls(
            n,
            tuple(last) if last else None,
            [tuple(k) for k in head],
            [tuple(k) for k in recent],
            block,
            tuple(block_last) if block_last else None,
            block_sum,
            ref,
        )


@dataclass
class ScoringState:
    fingerprint: str
    since: int | None  # the lead's scoring_since when built (microseconds)
    cursor: int = 0  # every event of the lead with an id up to this one is folded
    as_of: int = 0  # the latest `now` folded at: a state is never used at an earlier time
    rules: list[RuleState] = field(default_factory=list)
    counts: list[list[Key]] = field(default_factory=list)  # per segment count: its decisive events
    facts: dict[int, list[Any]] = field(default_factory=dict)  # those events: id -> [type, us, properties]
    hand_off: list[bool] = field(default_factory=list)  # per "hand off now" rule: an event matched it
    first_touch: list[Any] | None = None  # [key, touch]
    last_touch: list[Any] | None = None
    # The latest date of the events seen dated after `as_of`: they are folded when they come due (`due`).
    pending_until: int = 0
    tail: list[int] = field(default_factory=list)  # the ids of the last events folded (see `missed`)

    @classmethod
    def empty(cls, plan: FoldPlan, since: datetime | None) -> ScoringState:
        return cls(
            plan.fingerprint,
            micros(since) if since else None,
            rules=[RuleState() for _ in plan.model.behavior],
            counts=[[] for _ in plan.counts],
            hand_off=[False for _ in plan.model.hand_off_now],
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "cursor": self.cursor,
            "as_of": self.as_of,
            "rules": [rule.as_json() for rule in self.rules],
            "counts": self.counts,
            "facts": {str(k): v for k, v in self.facts.items()},
            "hand_off": self.hand_off,
            "touch": [self.first_touch, self.last_touch],
            "pending_until": self.pending_until,
            "tail": self.tail,
        }

    @classmethod
    def from_json(cls, fingerprint: str, data: dict[str, Any]) -> ScoringState:
        first, last = data["touch"]
        return cls(
            fingerprint,
            data["since"],
            data["cursor"],
            data["as_of"],
            [RuleState.from_json(rule) for rule in data["rules"]],
            [[tuple(k) for k in keys] for keys in data["counts"]],
            {int(k): v for k, v in data["facts"].items()},
            data["hand_off"],
            first,
            last,
            data["pending_until"],
            data["tail"],
        )

    def due(self, now: datetime) -> tuple[datetime, datetime] | None:
        """The dates (after, up to) of the events already seen that come due by `now`, when some may: they
        were dated later than the state's time when folded, and are read again then (not kept here, so
        that a lead's events dated ahead cost nothing until their time)."""
        at = micros(now)
        if self.pending_until <= self.as_of or at <= self.as_of:
            return None
        return moment(self.as_of), now

    def mark_folded(self, event_ids: Iterable[int]) -> None:
        self.tail = sorted({*self.tail, *event_ids})[-TAIL_KEPT:]
        if self.tail:
            self.cursor = max(self.cursor, self.tail[-1])

    def missed(self, event_id: int) -> bool:
        """Whether an event behind the cursor was never folded: on PostgreSQL a transaction can commit an
        event after one with a higher id was folded. The last TAIL_KEPT folds are remembered to tell."""
        return bool(self.tail) and event_id >= self.tail[0] and event_id not in self.tail

    def matches(self, plan: FoldPlan, since: datetime | None) -> bool:
        return self.fingerprint == plan.fingerprint and self.since == (micros(since) if since else None)
