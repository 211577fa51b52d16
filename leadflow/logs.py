"""No personal data in logs: leads are logged by id; uvicorn's access log, which Leadflow does not write
itself, has addresses masked (a lead is looked up by email in the URL: `GET /v1/leads/ada@acme.test`); and
httpx, which logs every URL it calls (a Slack webhook's URL is its secret), speaks only of failures."""

from __future__ import annotations

import logging
import re

# An email (`@` or its URL-encoding `%40`) and an E.164 phone number (`+` or `%2B`), wherever they appear.
_PII = re.compile(r"[^\s/?&=#@%]*(?:@|%40)[^\s/?&=#]+|(?:\+|%2B)\d{7,15}", re.IGNORECASE)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    return _PII.sub(REDACTED, text)


class RedactPersonalData(logging.Filter):
    """Masks emails and phone numbers in a record's arguments (uvicorn formats the request line from them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        elif isinstance(record.msg, str) and not record.args:
            record.msg = redact(record.msg)
        return True


def redact_access_log() -> None:
    """Mask personal data in uvicorn's access log, however the API is served (idempotent)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(existing, RedactPersonalData) for existing in access.filters):
        access.addFilter(RedactPersonalData())


def configure_logging() -> None:
    """INFO for Leadflow's processes (`leadflow worker`, `leadflow api`); Temporal and httpx only warn."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("temporalio").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
