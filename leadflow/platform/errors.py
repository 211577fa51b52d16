"""The one error base: what Leadflow raises on purpose, and the one mapping of it to an HTTP answer and to a
Temporal activity failure.

A `LeadflowError` says, on its class, what it means to the two places that meet it:
- `http_status`: the answer an API request gets (`{"detail": "<the message>"}` with that status); None when
  the error is never a client's doing (it stays a 500);
- `retryable`: whether an activity that meets it tries again. Not retryable means the same input fails the
  same way on every attempt (a broken template, nobody to assign): the activity fails at once, and the
  workflow handles it (a sequence skips the step, a lead's hand-off waits for its next event).

Activities raise `activity_failure(error)`; its `type` is the error's class name, so a workflow that must tell
failures apart compares with `failure_type(TheClass)`, never with a string typed again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

from temporalio.exceptions import ApplicationError


class LeadflowError(Exception):
    """The base of the errors Leadflow raises on purpose."""

    http_status: ClassVar[int | None] = None
    retryable: ClassVar[bool] = False


def failure_type(error: type[BaseException]) -> str:
    """The `type` of the ApplicationError an activity raises for `error` (its class name)."""
    return error.__name__


def activity_failure(error: LeadflowError, next_retry_delay: timedelta | None = None) -> ApplicationError:
    """The failure an activity raises for `error`: non-retryable unless the error's class says otherwise;
    `next_retry_delay` when the peer said how long to wait (a provider's Retry-After)."""
    return ApplicationError(
        str(error),
        type=failure_type(type(error)),
        non_retryable=not error.retryable,
        next_retry_delay=next_retry_delay,
    )
