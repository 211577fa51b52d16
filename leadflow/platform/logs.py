"""No personal data or secrets in logs: leads are logged by id; uvicorn's access log, which Leadflow does not
write itself, has addresses masked (a lead is looked up by email in the URL: `GET /v1/leads/ada@acme.test`)
and so have secrets in query strings (`/dashboard?key=…`); httpx, which logs every URL it calls (a Slack
webhook's URL is its secret), speaks only of failures; and the processes Leadflow starts mask addresses in
every record they write, tracebacks included.

Masking takes time linear in the text (a request line is the client's to make as long as the server takes),
and a message or argument longer than MAX_LOGGED_CHARS is cut with a marker after masking."""

from __future__ import annotations

import logging
import re

# An email (`@` or its URL-encoding `%40`), wherever it appears. Its local part is only tried from the start
# of a run of local-part characters (the lookbehind): tried from every position of a long run, as it once
# was, the search is quadratic (a 15,000-character path took 3 s to mask, holding the API's event loop).
_EMAIL = re.compile(r"(?<![^\s/?&=#@%])[^\s/?&=#@%]*+(?:@|%40)[^\s/?&=#]++", re.IGNORECASE)
# An E.164 phone number (`+` or `%2B`).
_PHONE = re.compile(r"(?:\+|%2B)\d{7,15}", re.IGNORECASE)
# The value of a secret in a query string (an API key in an old `/dashboard?key=…` bookmark).
_SECRET_PARAMETER = re.compile(r"(?<=[?&])((?:api_?)?key|token|secret|password)=[^&#\s]*+", re.IGNORECASE)
REDACTED = "[redacted]"
MAX_LOGGED_CHARS = 2_000  # per message and per argument (the path of a request line)


def redact(text: str) -> str:
    """`text` with its emails, phone numbers and secret query parameters masked, in linear time."""
    text = _EMAIL.sub(REDACTED, text)
    text = _PHONE.sub(REDACTED, text)
    return _SECRET_PARAMETER.sub(rf"\1={REDACTED}", text)


def bounded(text: str) -> str:
    """`text` cut to MAX_LOGGED_CHARS, saying how much was left out."""
    if len(text) <= MAX_LOGGED_CHARS:
        return text
    return f"{text[:MAX_LOGGED_CHARS]}…[{len(text) - MAX_LOGGED_CHARS} more characters]"


class RedactPersonalData(logging.Filter):
    """Masks emails, phone numbers and secrets in a record: its message and, when it carries one, its
    traceback (a provider's refusal can quote the address: `450 <ada@acme.test>: try later`, and Temporal logs
    a failed activity with its whole exception chain); its message and arguments are bounded in length."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = bounded(redact(record.msg))
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
    return bounded(redact(argument if isinstance(argument, str) else str(argument)))


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
