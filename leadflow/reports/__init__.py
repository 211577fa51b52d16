"""Reports: the funnel, sequence performance per step, the hand-off to sales and scoring health.

Everything is counted in SQL (SQLite and PostgreSQL alike): Python only receives one row per stage, step,
salesperson or week, never one per lead or event. Percentiles are picked in SQL with window functions (the
two rows around the wanted rank) and interpolated here, as `percentile_cont` would.

The period is a cohort: the funnel follows the leads *created* in it, sequence figures the enrollments
*started* in it, hand-off figures the hand-offs *assigned* in it. Weekly trends count the stage stamps made in
it. Sequence steps inside branches and A/B splits come from the enrollment journal (`enrollment_steps`),
undelivered messages from the send status and the provider's later delivery report.

One module per section: `period` (the period and shared names), `sql` (dialect differences, percentiles),
`funnel_report`, `sequence_report`, `handoff_report`, `scoring_report`, `full` (everything at once, JSON) and
`as_tables` (terminal, CSV).
"""

from leadflow.reports.as_tables import Table, duration, percent, tables
from leadflow.reports.full import Report, build_report
from leadflow.reports.funnel_report import Drop, Funnel, FunnelRow, FunnelStage, funnel, weekly_qualified
from leadflow.reports.handoff_report import Handoffs, SalespersonRow, handoffs
from leadflow.reports.period import (
    BOUNCED_STATUSES,
    CONVERT_BUCKETS,
    EVERYONE,
    FUNNEL,
    GRADES,
    HANDED_TO_SALES,
    OPTED_OUT,
    SIGNIFICANCE,
    STAGE_NAMES,
    TEMPERATURES,
    UNDELIVERED,
    Period,
)
from leadflow.reports.scoring_report import (
    SCORE_BUCKET,
    SCORE_TOP,
    HotLead,
    ScoringHealth,
    hot_leads,
    score_history,
    scoring_health,
)
from leadflow.reports.sequence_report import (
    ProportionTest,
    SequenceReport,
    Sequences,
    SplitResult,
    StepRow,
    Variant,
    sequence_definitions,
    sequences,
    step_label,
    two_proportion_test,
)
from leadflow.reports.sql import Spread, position_in, seconds_between, spreads, week_of

__all__ = [
    "BOUNCED_STATUSES",
    "CONVERT_BUCKETS",
    "EVERYONE",
    "FUNNEL",
    "GRADES",
    "HANDED_TO_SALES",
    "OPTED_OUT",
    "SCORE_BUCKET",
    "SCORE_TOP",
    "SIGNIFICANCE",
    "STAGE_NAMES",
    "TEMPERATURES",
    "UNDELIVERED",
    "Drop",
    "Funnel",
    "FunnelRow",
    "FunnelStage",
    "Handoffs",
    "HotLead",
    "Period",
    "ProportionTest",
    "Report",
    "SalespersonRow",
    "ScoringHealth",
    "SequenceReport",
    "Sequences",
    "SplitResult",
    "Spread",
    "StepRow",
    "Table",
    "Variant",
    "build_report",
    "duration",
    "funnel",
    "handoffs",
    "hot_leads",
    "percent",
    "position_in",
    "score_history",
    "scoring_health",
    "seconds_between",
    "sequence_definitions",
    "sequences",
    "spreads",
    "step_label",
    "tables",
    "two_proportion_test",
    "week_of",
    "weekly_qualified",
]
