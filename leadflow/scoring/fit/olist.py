"""The Olist marketing funnel (8,000 MQLs, 842 won deals; see its README) as a history table: one row per
MQL with its origin, landing page and first-contact month, and whether it became a deal. The tests and the
benchmark learn from it; it is also a worked example of preparing a CRM export for `leadflow scoring fit`."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from leadflow.platform.settings import PROJECT_ROOT

MQL_FILE = "marketing_qualified_leads.csv"
DEALS_FILE = "closed_deals.csv"
# What was known when the lead arrived; every closed-deal column is filled in only for won deals.
KNOWN_AT_FIRST_CONTACT = ["origin", "landing_page_id", "first_contact_month"]


def shared_dir() -> Path:
    """Data shared by all checkouts: LEADFLOW_SHARED_DIR, else `shared/` beside the repository."""
    return Path(os.environ.get("LEADFLOW_SHARED_DIR") or PROJECT_ROOT.parent / "shared")


def olist_dir() -> Path:
    return shared_dir() / "data" / "olist"


def olist_available() -> bool:
    return (olist_dir() / MQL_FILE).is_file() and (olist_dir() / DEALS_FILE).is_file()


def deal_columns() -> list[str]:
    """The closed-deal columns (segment, revenue, …): filled in only for won deals, so they leak the outcome."""
    with (olist_dir() / DEALS_FILE).open(newline="", encoding="utf-8") as handle:
        return [name for name in next(csv.reader(handle)) if name != "mql_id"]


def write_olist_history(destination: Path, columns: Sequence[str] = KNOWN_AT_FIRST_CONTACT) -> Path:
    """Join MQLs with their closed deals into `destination` (CSV): `mql_id`, `columns`, and `converted`
    (Yes/No). `columns` are among KNOWN_AT_FIRST_CONTACT and deal_columns()."""
    with (olist_dir() / DEALS_FILE).open(newline="", encoding="utf-8") as handle:
        deals = {row["mql_id"]: row for row in csv.DictReader(handle)}
    with (olist_dir() / MQL_FILE).open(newline="", encoding="utf-8") as handle:
        mqls = list(csv.DictReader(handle))
    with destination.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["mql_id", *columns, "converted"])
        for mql in mqls:
            deal = deals.get(mql["mql_id"], {})
            known = {**mql, "first_contact_month": mql["first_contact_date"][:7]}
            writer.writerow(
                [
                    mql["mql_id"],
                    *(known.get(name, deal.get(name, "")) for name in columns),
                    "Yes" if deal else "No",
                ]
            )
    return destination
