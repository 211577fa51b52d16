"""SMS over Twilio with the twilio library's async client.

`LEADFLOW_TWILIO_API_BASE` moves the REST API (a proxy, or the loopback server the tests run): the library
builds https://api.twilio.com/… URLs, and the HTTP client below rewrites their origin and nothing else.
"""

from __future__ import annotations

from contextvars import ContextVar
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from leadflow.messaging.providers import PermanentDeliveryError, TemporaryDeliveryError
from leadflow.platform import clock

TWILIO_ORIGIN = "https://api.twilio.com"
# Twilio error codes that say the number itself cannot receive our messages (https://www.twilio.com/docs/api/errors).
PERMANENT_CODES = {
    21610: "opted_out",  # the recipient replied STOP
    21211: "invalid_number",  # not a valid phone number
    21614: "invalid_number",  # not a mobile number
    21612: "invalid_number",  # not reachable from our sender
    30003: "invalid_number",  # unreachable handset (status callback)
    30005: "invalid_number",  # unknown destination (status callback)
    30006: "invalid_number",  # landline or unreachable carrier (status callback)
    30004: "opted_out",  # message blocked by the recipient (status callback)
}


# The Retry-After of the last answer in this task: TwilioRestException does not carry the headers.
_retry_after: ContextVar[float | None] = ContextVar("twilio_retry_after", default=None)


class _ApiBaseHttpClient(AsyncTwilioHttpClient):
    def __init__(self, api_base: str) -> None:
        super().__init__(pool_connections=True, timeout=30)
        self.api_base = api_base.rstrip("/")

    async def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        if self.api_base != TWILIO_ORIGIN:
            parts = urlsplit(url)
            url = self.api_base + parts.path + (f"?{parts.query}" if parts.query else "")
        response = await super().request(method, url, *args, **kwargs)
        _retry_after.set(retry_after_seconds((response.headers or {}).get("Retry-After")))
        return response


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header's delay (RFC 9110: seconds, or an HTTP date), None when absent or unreadable."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((moment - clock.now()).total_seconds(), 0.0)


class TwilioSmsChannel:
    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        sender: str = "",
        messaging_service_sid: str = "",
        api_base: str = TWILIO_ORIGIN,
    ) -> None:
        if not (sender or messaging_service_sid):
            raise ValueError("set LEADFLOW_TWILIO_FROM or LEADFLOW_TWILIO_MESSAGING_SERVICE_SID to send SMS")
        self.account_sid, self.auth_token = account_sid, auth_token
        self.sender, self.messaging_service_sid, self.api_base = sender, messaging_service_sid, api_base
        self._client: Client | None = None

    def _connected(self) -> Client:
        # aiohttp wants a running event loop for its session: create the client on first use, not at import.
        if self._client is None:
            http = _ApiBaseHttpClient(self.api_base)
            self._client = Client(self.account_sid, self.auth_token, http_client=http)
        return self._client

    async def send(self, to: str, body: str, status_callback: str = "") -> str:
        """Send `body` to `to`; returns Twilio's message SID."""
        origin: dict[str, Any] = (
            {"messaging_service_sid": self.messaging_service_sid}
            if self.messaging_service_sid
            else {"from_": self.sender}
        )
        callback: dict[str, Any] = {"status_callback": status_callback} if status_callback else {}
        try:
            message = await self._connected().messages.create_async(to=to, body=body, **origin, **callback)
        except TwilioRestException as error:
            raise classify(error, _retry_after.get()) from error
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise TemporaryDeliveryError(f"Twilio unreachable: {error!r}") from error
        return str(message.sid)

    async def close(self) -> None:
        if self._client is not None:
            http = self._client.http_client
            self._client = None
            assert isinstance(http, AsyncTwilioHttpClient)
            await http.close()


def classify(error: TwilioRestException, retry_after: float | None = None) -> Exception:
    """Rate limits, server errors and our own credentials (fixable by an operator) are retried, not sooner
    than Twilio's Retry-After; a number that cannot take our messages is permanent and suppresses it; any
    other refusal is permanent."""
    described = f"Twilio {error.status} error {error.code}: {error.msg}"
    if error.code in PERMANENT_CODES:
        return PermanentDeliveryError(described, PERMANENT_CODES[error.code])
    if error.status == 429 or error.status >= 500 or error.status in (401, 403):
        return TemporaryDeliveryError(described, retry_after)
    return PermanentDeliveryError(described)
