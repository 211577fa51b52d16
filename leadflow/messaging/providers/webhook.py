"""Signed webhooks with httpx: a JSON body POSTed with an HMAC-SHA256 signature over the timestamp and the
body, so a receiver can check both who sent it and that it is fresh (replays of an old body are refused).

    X-Leadflow-Timestamp: 1767225600
    X-Leadflow-Signature: sha256=<hex HMAC-SHA256(secret, "1767225600." + body)>
    Idempotency-Key: handoff-12-webhook-0        (the same on every retry: receivers drop repeats)

Refusals are classified once: 408, 429 and 5xx, timeouts and connection errors are temporary (retried with
backoff by the caller), any other 4xx is permanent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import httpx

from leadflow.messaging.providers import PermanentDeliveryError, TemporaryDeliveryError

SIGNATURE_HEADER = "X-Leadflow-Signature"
TIMESTAMP_HEADER = "X-Leadflow-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
TOLERANCE_SECONDS = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(
    secret: str,
    body: bytes,
    timestamp: str | None,
    signed: str | None,
    now: float | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> bool:
    """What a receiver checks: the signature matches and the timestamp is within `tolerance` seconds."""
    if not timestamp or not signed or not timestamp.isdigit():
        return False
    if abs((now if now is not None else time.time()) - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, int(timestamp), body), signed)


class WebhookChannel:
    def __init__(self, secret: str, timeout: float = 10.0) -> None:
        self.secret = secret
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        # One pooled client: a new one per call would build a TLS context every time (milliseconds).
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        return self._client

    async def post(self, url: str, payload: dict[str, Any], idempotency_key: str) -> str:
        """POST `payload` signed; returns the receiver's request id (or the status code)."""
        if not self.secret:
            raise PermanentDeliveryError(
                "LEADFLOW_WEBHOOK_SECRET is not set: webhooks are never sent unsigned"
            )
        body = json.dumps(payload, separators=(",", ":"), default=str).encode()
        stamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(stamp),
            SIGNATURE_HEADER: signature(self.secret, stamp, body),
            IDEMPOTENCY_HEADER: idempotency_key,
            "User-Agent": "Leadflow-Webhook/1",
        }
        try:
            response = await self._http().post(url, content=body, headers=headers)
        except httpx.HTTPError as error:  # connection refused, timeout, …: the receiver may be back later
            raise TemporaryDeliveryError(f"webhook {url} unreachable: {error!r}") from error
        if response.is_success:
            return response.headers.get("x-request-id") or str(response.status_code)
        reason = f"webhook {url} answered {response.status_code}: {response.text[:200]}"
        if response.status_code in (408, 429) or response.status_code >= 500:
            raise TemporaryDeliveryError(reason)
        raise PermanentDeliveryError(reason)
