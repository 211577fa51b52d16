"""No personal data in logs: leads are logged by id; uvicorn's access log, which Leadflow does not write
itself, has addresses masked (a lead is looked up by email in the URL: `GET /v1/leads/ada@acme.test`);
httpx, which logs every URL it calls (a Slack webhook's URL is its secret), speaks only of failures; and the
processes Leadflow starts mask addresses in every record they write, tracebacks included."""

from __future__ import annotations

import logging
import re

# An email (`@` or its URL-encoding `%40`) and an E.164 phone number (`+` or `%2B`), wherever they appear.
_PII = re.compile(r"[^\s/?&=#@%]*(?:@|%40)[^\s/?&=#]+|(?:\+|%2B)\d{7,15}", re.IGNORECASE)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    return _PII.sub(REDACTED, text)


class RedactPersonalData(logging.Filter):
    """Masks emails and phone numbers in a record: its message and, when it carries one, its traceback (a
    provider's refusal can quote the address: `450 <ada@acme.test>: try later`, and Temporal logs a failed
    activity with its whole exception chain)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            # Kept a tuple of the same shape: uvicorn's access formatter unpacks it; numbers stay numbers.
            record.args = tuple(_redacted(argument) for argument in record.args)
        if record.exc_info and not record.exc_text:
            # Formatters print exc_text when it is set: the redacted text stands in for the traceback.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def _redacted(argument: object) -> object:
    if argument is None or isinstance(argument, bool | int | float):
        return argument
    return redact(argument if isinstance(argument, str) else str(argument))


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
    for handler in logging.getLogger().handlers:  # a net under every record the process writes
        mask_personal_data(handler)


def mask_personal_data(handler: logging.Handler) -> None:
    """Have `handler` write every record with its emails and phone numbers masked (idempotent)."""
    if not any(isinstance(existing, RedactPersonalData) for existing in handler.filters):
        handler.addFilter(RedactPersonalData())
