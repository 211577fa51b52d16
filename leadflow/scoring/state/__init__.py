"""Incremental scoring: each event of a lead is folded once into a stored, bounded summary of the lead (its
*scoring state*), so an assessment costs the same with 10 past events as with 5,000.

Per behavior rule the state keeps how many events matched, the latest, the earliest few that a rule's bands
reward (`head`), the newest few (`recent`; with age-window decay: every event still inside the windows) and,
for the rest, one block: how many and their points with half-life decay as a sum at a reference time
(sum(p * 0.5**((t - ti) / h)) = S_ref * 0.5**((t - ref) / h), exact). Per count of a segment rule it keeps the
newest events that decide the count's bounds (`at_least`, `at_most + 1`; with those, the count holds
exactly when it holds over all events), plus the first and last touch and whether a "hand off now" event
came. Fit and account points are not folded: they come from the lead and its account at each assessment.

`score_from_state` then gives what `score_lead` gives from all the events: the same score, fit, behavior
(to float rounding), grade, temperature, engagement and next change; the breakdown lists the same
contributions, except that a rule's events between its head and its recent ones are shown as one line.
Caps fold exactly because, when every contribution a cap sees has one sign, capping in time order keeps
min(cap, total) whatever the split; a model with a capped group whose rules can give both signs is not
folded (`FoldPlan.foldable`), and such leads are scored from all their events as before.

A state belongs to one model and set of segment counts (its `fingerprint`) and one `since` (recycling): when
either changes it is rebuilt from the lead's events, once. `leadflow rescore` and `score_at` still score
from all the events; tests/scoring/test_scoring_state.py checks both ways agree over random event streams.

Modules: `plan` (what a model asks the state to keep), `summary` (the state), `folding` (an event folded in)
and `reading` (the score and counts read from the state).
"""

from leadflow.scoring.state.folding import fold
from leadflow.scoring.state.plan import (
    RECENT_KEPT,
    STATE_FORMAT,
    TAIL_KEPT,
    FoldPlan,
    Key,
    RulePlan,
    count_specs,
    micros,
    moment,
    plan_of,
)
from leadflow.scoring.state.reading import count_events, hand_off_rule_index, score_from_state, touches
from leadflow.scoring.state.summary import RuleState, ScoringState

__all__ = [
    "RECENT_KEPT",
    "STATE_FORMAT",
    "TAIL_KEPT",
    "FoldPlan",
    "Key",
    "RulePlan",
    "RuleState",
    "ScoringState",
    "count_events",
    "count_specs",
    "fold",
    "hand_off_rule_index",
    "micros",
    "moment",
    "plan_of",
    "score_from_state",
    "touches",
]
