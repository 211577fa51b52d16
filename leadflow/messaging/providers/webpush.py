"""Web push: payloads encrypted for the browser (RFC 8291, aes128gcm) and sent with VAPID (RFC 8292) by
pywebpush. The key pair comes from `leadflow keys vapid`.

A push endpoint is a browser's to give, so whoever holds an API key chooses where the server posts: only
https to public hosts, checked when a subscription is stored (`endpoint_refusal`) and again at every send,
where a name that resolves to a private address is refused too (the addresses checked are the ones connected
to, so a name that changes its answer cannot slip through).
"""

from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid
from py_vapid.utils import b64urlencode
from pywebpush import WebPushException, webpush_async

from leadflow.messaging.providers import PermanentDeliveryError, TemporaryDeliveryError

TIME_TO_LIVE = 4 * 24 * 3600  # a push service keeps an undelivered message this long (seconds)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def endpoint_refusal(endpoint: str, allow_loopback: bool = False) -> str | None:
    """Why the server must not post to this push endpoint (None: it may): only https to a public host, so an
    API key cannot make the server call into its own network. `allow_loopback` (a test-only setting) admits
    http://127.0.0.1 too, for the test suite's push service."""
    parts = urlsplit(endpoint)
    host = (parts.hostname or "").rstrip(".")
    if allow_loopback and parts.scheme in ("http", "https") and host in LOOPBACK:
        return None
    if parts.scheme != "https" or not host:
        return "must be an https:// push service address"
    if host == "localhost" or host.endswith(".localhost") or ("." not in host and ":" not in host):
        return f"must be on a public host, not {host!r}"
    address = _ip_address(host)
    if address is not None and not address.is_global:
        return f"must be on a public host, not the private, loopback or link-local address {host}"
    return None


def _ip_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host names literally, in any form a resolver accepts (127.1, 0x7f.0.0.1, 2130706433)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class PrivateAddress(OSError):
    """A push service name resolved to an address in a private network."""


class PublicAddressesOnly(AbstractResolver):
    """aiohttp's resolver, refusing any name that resolves to a non-public address."""

    def __init__(self) -> None:
        self._resolver = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        resolved = await self._resolver.resolve(host, port, family)
        for entry in resolved:
            address = _ip_address(entry["host"])
            if address is None or not address.is_global:
                raise PrivateAddress(f"push service {host!r} resolves to a non-public address")
        return resolved

    async def close(self) -> None:
        await self._resolver.close()


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
    def __init__(self, private_key: str, subject: str, allow_loopback: bool = False) -> None:
        self.vapid = Vapid.from_string(private_key)
        self.keys = vapid_keys(self.vapid)
        self.subject = subject
        self.allow_loopback = allow_loopback  # test only: the test suite's loopback push service

    async def send(self, target: PushTarget, title: str, body: str, url: str = "") -> str:
        """Encrypt and send one notification; returns the push service's message location, if any."""
        refusal = endpoint_refusal(target.endpoint, self.allow_loopback)
        if refusal:  # stored by an older version: the subscription is dropped, nothing is posted
            raise PermanentDeliveryError(f"push endpoint {refusal}", "subscription_gone")
        payload = json.dumps({"title": title, "body": body, "url": url}, ensure_ascii=False)
        subscription = {"endpoint": target.endpoint, "keys": {"p256dh": target.p256dh, "auth": target.auth}}
        resolver = aiohttp.ThreadedResolver() if self.allow_loopback else PublicAddressesOnly()
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver)) as session:
                response = await webpush_async(
                    subscription,
                    data=payload,
                    vapid_private_key=self.vapid,
                    vapid_claims={"sub": self.subject},  # a new dict: pywebpush adds aud and exp to it
                    ttl=TIME_TO_LIVE,
                    timeout=30,
                    aiohttp_session=session,
                )
        except aiohttp.ClientConnectorError as error:
            if isinstance(error.os_error, PrivateAddress):
                raise PermanentDeliveryError(str(error.os_error), "subscription_gone") from error
            raise TemporaryDeliveryError(f"push service unreachable: {error!r}") from error
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
