"""Rules: segments' entry and exit, sequences' branches (counts, absences, properties, score, stage, …)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from leadflow.content.conditions import PropertyFilter, PropertyTest
from leadflow.content.fields import EVENT_TYPE, Duration, Strict


class EventTrigger(Strict):
    """An event of this type whose properties pass `where`."""

    event: str = Field(pattern=EVENT_TYPE)
    where: PropertyFilter = Field(default_factory=dict)


class CountSpec(EventTrigger):
    at_least: int | None = Field(default=None, ge=0)
    at_most: int | None = Field(default=None, ge=0)
    within: Duration | None = None  # the sliding window ending now; none: all of the lead's history

    @model_validator(mode="after")
    def _bounded(self) -> CountSpec:
        if self.at_least is None and self.at_most is None:
            raise ValueError("a count needs at_least or at_most")
        if self.at_least is not None and self.at_most is not None and self.at_most < self.at_least:
            raise ValueError(
                f"at_most ({self.at_most}) is below at_least ({self.at_least}): it can never match"
            )
        return self


class AbsenceSpec(Strict):
    after: EventTrigger
    missing: EventTrigger
    within: Duration
    same: list[str] = Field(default_factory=list, description="properties the follow-up must share")


class EventRule(EventTrigger):
    """In a segment: one of the events that just arrived. In a branch: an event seen since enrollment."""


class CountRule(Strict):
    count: CountSpec


class AbsenceRule(Strict):
    """A trigger not followed by the expected event within the window; decided by a durable timer."""

    absence: AbsenceSpec


class PropertyRule(PropertyTest):
    property: str


class ScoreRule(Strict):
    score: PropertyTest | int  # a number means "at least"


TemperatureName = Literal["cold", "warm", "hot"]
StageName = Literal["subscriber", "lead", "mql", "sql", "opportunity", "customer", "recycled"]
TEMPERATURES: tuple[str, ...] = get_args(TemperatureName)
STAGES: tuple[str, ...] = get_args(StageName)


class TemperatureRule(Strict):
    temperature: PropertyTest | TemperatureName


class StageRule(Strict):
    stage: PropertyTest | StageName


class ReachableRule(Strict):
    """The lead can be messaged on this channel now, as the send would decide: an address (its email, a phone,
    a browser's push subscription) that is not suppressed (bounced, opted out), and consent not withdrawn
    (granted, for a channel that needs it: sms and push by default). Read from the store when the branch
    runs, so it says what consent really records, not what a property claims."""

    reachable: Literal["email", "sms", "push"]


class AllRule(Strict):
    all: list[Rule] = Field(min_length=1)


class AnyRule(Strict):
    any: list[Rule] = Field(min_length=1)


class NotRule(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True)

    not_: Rule = Field(alias="not")


RULE_KINDS = {
    "event": "EventRule",
    "count": "CountRule",
    "absence": "AbsenceRule",
    "property": "PropertyRule",
    "score": "ScoreRule",
    "temperature": "TemperatureRule",
    "stage": "StageRule",
    "reachable": "ReachableRule",
    "all": "AllRule",
    "any": "AnyRule",
    "not": "NotRule",
}
_RULE_ATTRIBUTES = {"not_": "not"}


def _kind_by_key(kinds: dict[str, str], aliases: dict[str, str]) -> Any:
    """A rule or step is known by its key (`count:`, `send:`), so a mistake inside it is reported for that
    kind; a parsed model (a snapshot re-validated) is known by its class."""

    def kind(value: Any) -> str | None:
        if isinstance(value, BaseModel):
            return type(value).__name__ if type(value).__name__ in kinds.values() else None
        if isinstance(value, dict):
            keys = [aliases.get(key, key) for key in value]
            return next((kinds[key] for key in keys if key in kinds), None)
        return None

    return kind


def _union(kinds: dict[str, str], members: dict[str, Any], what: str) -> Any:
    return Annotated[
        Union[tuple(Annotated[members[name], Tag(name)] for name in kinds.values())],  # noqa: UP007
        Discriminator(
            _kind_by_key(kinds, _RULE_ATTRIBUTES),
            custom_error_type=f"unknown_{what}",
            custom_error_message=f"a {what} is one of: {', '.join(kinds)}",
        ),
    ]


if TYPE_CHECKING:  # what a type checker sees: the union pydantic validates with a discriminator below
    Rule = (
        EventRule
        | CountRule
        | AbsenceRule
        | PropertyRule
        | ScoreRule
        | TemperatureRule
        | StageRule
        | ReachableRule
        | AllRule
        | AnyRule
        | NotRule
    )
else:
    Rule = _union(
        RULE_KINDS,
        {
            "EventRule": EventRule,
            "CountRule": CountRule,
            "AbsenceRule": AbsenceRule,
            "PropertyRule": PropertyRule,
            "ScoreRule": ScoreRule,
            "TemperatureRule": TemperatureRule,
            "StageRule": StageRule,
            "ReachableRule": ReachableRule,
            "AllRule": AllRule,
            "AnyRule": AnyRule,
            "NotRule": NotRule,
        },
        "rule",
    )
for _model in (AllRule, AnyRule, NotRule):
    _model.model_rebuild()
