"""Qualification in the store: rescore a lead with the pure scoring function, keep the score ledger, stamp
stage changes; recycle a lead sales handed back; rescore many leads at once.

Modules: `one_lead` (a lead rescored from its scoring state and new events; recycling), `many_leads` (leads
rescored at once, their accounts' activity, stages stamped) and `ledger` (every score kept with its model
version, and a past score recomputed).
"""

from leadflow.scoring.qualification.ledger import PastScore, score_at
from leadflow.scoring.qualification.many_leads import Rescored, rescore_many
from leadflow.scoring.qualification.one_lead import NotRecyclable, recycle, rescore

__all__ = [
    "NotRecyclable",
    "PastScore",
    "Rescored",
    "recycle",
    "rescore",
    "rescore_many",
    "score_at",
]
