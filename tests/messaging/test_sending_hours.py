"""Quiet hours (sending.yaml) in the lead's own time zone, across midnight and daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from leadflow.messaging.model import QuietHours, SendingPolicy
from leadflow.messaging.send_policy import next_allowed_send

PARIS = ZoneInfo("Europe/Paris")


@pytest.mark.parametrize(
    ("quiet", "local", "opens"),
    [
        ((time(21), time(8)), datetime(2026, 3, 10, 12, 0), None),
        ((time(21), time(8)), datetime(2026, 3, 10, 21, 0), datetime(2026, 3, 11, 8, 0)),
        ((time(21), time(8)), datetime(2026, 3, 10, 6, 30), datetime(2026, 3, 10, 8, 0)),
        # The night of the spring change in Paris (02:00 → 03:00): still 08:00 local, 07:00 UTC.
        ((time(21), time(8)), datetime(2026, 3, 28, 23, 0), datetime(2026, 3, 29, 8, 0)),
        # Quiet by day: messages go out in the evenings and at night only.
        ((time(2), time(18)), datetime(2026, 3, 10, 1, 0), None),
        ((time(2), time(18)), datetime(2026, 3, 10, 12, 0), datetime(2026, 3, 10, 18, 0)),
    ],
)
def test_a_message_inside_quiet_hours_waits_for_them_to_end(
    quiet: tuple[time, time], local: datetime, opens: datetime | None
) -> None:
    policy = SendingPolicy(quiet_hours=QuietHours(start=quiet[0], end=quiet[1]), frequency_caps={})
    now = local.replace(tzinfo=PARIS).astimezone(UTC)
    expected = opens.replace(tzinfo=PARIS).astimezone(UTC) if opens else None
    assert next_allowed_send(policy, "sms", PARIS, now, []) == expected
    assert next_allowed_send(policy, "email", PARIS, now, []) is None  # email is not held by default
