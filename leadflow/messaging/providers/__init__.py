"""Channels deliver one rendered message to one recipient. Provider errors are classified here, once:
TemporaryDeliveryError (retry with backoff) or PermanentDeliveryError (record, suppress, never retry); a
message that cannot even be composed raises UnsendableMessage (record, never retry).

One module per provider: `email` (SMTP with aiosmtplib), `sms` (Twilio), `webpush` (VAPID, pywebpush).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from leadflow.platform.errors import LeadflowError


class TemporaryDeliveryError(LeadflowError):
    """The provider may accept the message later (connection refused, 4xx, 429, 5xx from an HTTP API).
    `retry_after`: the seconds the provider asked us to wait first (its Retry-After), when it said."""

    retryable = True

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentDeliveryError(LeadflowError):
    """The provider will never accept it. `reason` says what that means for the address:
    `bounce`, `invalid_number` and `opted_out` suppress it, `subscription_gone` removes a push subscription,
    `rejected` (this message, not the address, was refused) changes nothing."""

    def __init__(self, message: str, reason: str = "rejected") -> None:
        super().__init__(message)
        self.reason = reason


class UnsendableMessage(LeadflowError):
    """The message cannot be composed from what is stored (an address with control characters, which an
    older version accepted): no attempt can ever send it."""


@dataclass(frozen=True)
class OutgoingEmail:
    to: str
    subject: str
    text: str
    html: str
    message_id: str
    headers: dict[str, str] = field(default_factory=dict)
    sender: str = ""  # empty: the channel's default From
    reply_to: str = ""
