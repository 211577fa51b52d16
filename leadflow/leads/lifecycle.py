"""A lead's lifecycle stage: subscriber (an anonymous visitor) → lead (an email is known) → MQL → SQL →
opportunity → customer, or recycled (handed back by sales, qualifies again). Stored and sent as strings: a
StrEnum compares equal to its value, so stored rows, JSON and content files read the same."""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    SUBSCRIBER = "subscriber"
    LEAD = "lead"
    MQL = "mql"
    SQL = "sql"
    OPPORTUNITY = "opportunity"
    CUSTOMER = "customer"
    RECYCLED = "recycled"
    DISQUALIFIED = "disqualified"  # a name segment rules accept; nothing sets it yet


# The funnel's order; a lead that skipped a stage (straight to SQL) has passed the ones before.
FUNNEL = (Stage.SUBSCRIBER, Stage.LEAD, Stage.MQL, Stage.SQL, Stage.OPPORTUNITY, Stage.CUSTOMER)
# What sales converts a lead to.
CONVERTED_STAGES = (Stage.OPPORTUNITY, Stage.CUSTOMER)
# Stages a lead qualifies from (to MQL, then SQL); disqualified leads never do.
QUALIFIABLE = {Stage.SUBSCRIBER, Stage.LEAD, Stage.RECYCLED}
# Stages sales can hand a lead back from.
RECYCLABLE = {Stage.MQL, Stage.SQL, Stage.OPPORTUNITY}
# A lead sales has: its marketing sequences stop unless a sequence says otherwise.
SALES_STAGES = {Stage.SQL, Stage.OPPORTUNITY, Stage.CUSTOMER}
