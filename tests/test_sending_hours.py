"""Sending hours in the lead's own time zone, across midnight and daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from leadflow.consent import next_sending_time
from leadflow.settings import Settings

PARIS = ZoneInfo("Europe/Paris")


@pytest.mark.parametrize(
    ("hours", "local", "opens"),
    [
        ("08:00-21:00", datetime(2026, 3, 10, 12, 0), None),
        ("08:00-21:00", datetime(2026, 3, 10, 21, 0), datetime(2026, 3, 11, 8, 0)),
        ("08:00-21:00", datetime(2026, 3, 10, 6, 30), datetime(2026, 3, 10, 8, 0)),
        # The night of the spring change in Paris (02:00 → 03:00): still 08:00 local, 07:00 UTC.
        ("08:00-21:00", datetime(2026, 3, 28, 23, 0), datetime(2026, 3, 29, 8, 0)),
        # A window across midnight: evenings and nights only.
        ("18:00-02:00", datetime(2026, 3, 10, 1, 0), None),
        ("18:00-02:00", datetime(2026, 3, 10, 12, 0), datetime(2026, 3, 10, 18, 0)),
    ],
)
def test_a_message_outside_sending_hours_waits_for_them_to_open(
    hours: str, local: datetime, opens: datetime | None
) -> None:
    now = local.replace(tzinfo=PARIS).astimezone(UTC)
    expected = opens.replace(tzinfo=PARIS).astimezone(UTC) if opens else None
    assert next_sending_time(now, PARIS, Settings(sending_hours=hours)) == expected
