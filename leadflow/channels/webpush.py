"""Web push: payloads encrypted for the browser (RFC 8291, aes128gcm) and sent with VAPID (RFC 8292) by
pywebpush. The key pair comes from `leadflow keys vapid`."""

from __future__ import annotations

import json
from dataclasses import dataclass

import aiohttp
from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid
from py_vapid.utils import b64urlencode
from pywebpush import WebPushException, webpush_async

from leadflow.channels import PermanentDeliveryError, TemporaryDeliveryError

TIME_TO_LIVE = 4 * 24 * 3600  # a push service keeps an undelivered message this long (seconds)


@dataclass(frozen=True)
class PushTarget:
    endpoint: str
    p256dh: str
    auth: str


@dataclass(frozen=True)
class VapidKeys:
    private_key: str  # base64url of the raw 32-byte P-256 private key (what LEADFLOW_VAPID_PRIVATE_KEY holds)
    public_key: str  # base64url of the uncompressed point: the browser's applicationServerKey


def generate_vapid_keys() -> VapidKeys:
    vapid = Vapid()
    vapid.generate_keys()
    return vapid_keys(vapid)


def vapid_keys(vapid: Vapid) -> VapidKeys:
    private = vapid.private_key.private_numbers().private_value.to_bytes(32, "big")
    public = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return VapidKeys(b64urlencode(private), b64urlencode(public))


class WebPushChannel:
    def __init__(self, private_key: str, subject: str) -> None:
        self.vapid = Vapid.from_string(private_key)
        self.keys = vapid_keys(self.vapid)
        self.subject = subject

    async def send(self, target: PushTarget, title: str, body: str, url: str = "") -> str:
        """Encrypt and send one notification; returns the push service's message location, if any."""
        payload = json.dumps({"title": title, "body": body, "url": url}, ensure_ascii=False)
        subscription = {"endpoint": target.endpoint, "keys": {"p256dh": target.p256dh, "auth": target.auth}}
        try:
            response = await webpush_async(
                subscription,
                data=payload,
                vapid_private_key=self.vapid,
                vapid_claims={"sub": self.subject},  # a new dict: pywebpush adds aud and exp to it
                ttl=TIME_TO_LIVE,
                timeout=30,
            )
        except WebPushException as error:
            raise classify(
                error.response.status if error.response is not None else None, str(error)
            ) from error
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise TemporaryDeliveryError(f"push service unreachable: {error!r}") from error
        assert isinstance(response, aiohttp.ClientResponse)
        return response.headers.get("Location", "")


def classify(status: int | None, described: str) -> Exception:
    """404 / 410: the browser dropped the subscription; 429 and 5xx: later; any other refusal is final."""
    if status in (404, 410):
        return PermanentDeliveryError(described, "subscription_gone")
    if status is None or status == 429 or status >= 500:
        return TemporaryDeliveryError(described)
    return PermanentDeliveryError(described)
