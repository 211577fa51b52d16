"""sales.yaml: salespeople, assignment rules, notification webhooks and the follow-up."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, model_validator

from leadflow.content.conditions import PropertyFilter
from leadflow.content.fields import Strict
from leadflow.scoring.model import PositiveDuration


class Webhook(Strict):
    """A signed POST on hand-off: `slack` (an incoming-webhook message) or `json` (a generic document for a
    CRM). Signed with LEADFLOW_WEBHOOK_SECRET, never a secret in this file."""

    url: str = Field(pattern=r"^https?://\S+$")
    format: Literal["slack", "json"] = "json"


class Notify(Strict):
    """How a salesperson hears of a hand-off: email (default) and any webhooks."""

    email: bool = True
    webhooks: list[Webhook] = Field(default_factory=list)


class Salesperson(Strict):
    name: str
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    team: str = "sales"
    available: bool = True
    notify: Notify = Notify()


class AssignmentRule(Strict):
    """Leads whose properties pass `when` (territory by country, company size, industry…) go to `team`;
    the first matching rule wins, a rule without `when` takes everyone left."""

    team: str
    rule: str = ""
    when: PropertyFilter = Field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.rule or (f"{self.team} team" if self.when else f"{self.team} team (everyone else)")


class FollowUp(Strict):
    """The hand-off SLA: remind the salesperson who has not accepted, then escalate and reassign."""

    remind_after: PositiveDuration | None = timedelta(hours=2)
    escalate_after: PositiveDuration | None = timedelta(hours=4)
    escalate_to: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$")
    reassign: bool = True
    max_reassignments: int = Field(default=1, ge=0)

    @model_validator(mode="after")
    def _remind_first(self) -> FollowUp:
        if self.remind_after and self.escalate_after and self.escalate_after <= self.remind_after:
            raise ValueError("escalate_after must be later than remind_after")
        return self


class SalesTeam(Strict):
    salespeople: list[Salesperson] = Field(min_length=1)
    assignment: list[AssignmentRule] = Field(default_factory=list)
    follow_up: FollowUp = FollowUp()

    @model_validator(mode="after")
    def _teams_exist(self) -> SalesTeam:
        teams = {person.team for person in self.salespeople}
        for rule in self.assignment:
            if rule.team not in teams:
                raise ValueError(
                    f"assignment rule {rule.name!r} names team {rule.team!r}, which has no salespeople "
                    f"(teams: {', '.join(sorted(teams))})"
                )
        return self
