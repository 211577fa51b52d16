"""Channels deliver one rendered message to one recipient. Provider errors are classified here, once:
TemporaryDeliveryError (retry with backoff) or PermanentDeliveryError (record, suppress, never retry)."""

from __future__ import annotations

from dataclasses import dataclass, field


class TemporaryDeliveryError(Exception):
    """The provider may accept the message later (connection refused, 4xx)."""


class PermanentDeliveryError(Exception):
    """The provider will never accept it (bad mailbox, 5xx)."""


@dataclass(frozen=True)
class OutgoingEmail:
    to: str
    subject: str
    text: str
    html: str
    message_id: str
    headers: dict[str, str] = field(default_factory=dict)
