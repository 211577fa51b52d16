"""Loopback peers that speak the providers' protocols over real HTTP: Twilio's REST API (what the twilio
library's client sends, checked as it arrives) and a Web Push service that decrypts every notification with
the subscriber's private key, as a browser would."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import http_ece
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid

from leadflow.messaging.providers.webpush import generate_vapid_keys

VAPID = generate_vapid_keys()  # the installation's key pair in every test (settings and the push service)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, int(port)


# --- Twilio ---------------------------------------------------------------------------------------------


@dataclass
class TwilioRequest:
    path: str
    form: dict[str, str]
    auth: str | None
    at: float = field(default_factory=time.monotonic)  # when it arrived
    status: int = 201  # what it was answered


@dataclass
class TwilioApi:
    """Twilio's Messages resource: accepts a message and answers as Twilio does, or fails as told."""

    account_sid: str = "AC" + "0" * 32
    auth_token: str = "test-auth-token"
    requests: list[TwilioRequest] = field(default_factory=list)  # every request, refused ones too
    messages: list[dict[str, str]] = field(default_factory=list)  # the messages Twilio accepted
    failures: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # served first, in order
    outage: tuple[int, dict[str, Any], dict[str, str]] | None = None  # every request's answer while set
    port: int = 0

    def fail_next(self, status: int, code: int, message: str = "refused") -> None:
        self.failures.append((status, {"code": code, "message": message, "status": status}))

    def refuse_all(self, status: int, code: int, retry_after: int | None = None) -> None:
        """Answer every request with this error (and Retry-After when given) until `recover()`."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        self.outage = (status, {"code": code, "message": "unavailable", "status": status}, headers)

    def recover(self) -> None:
        self.outage = None

    async def create_message(self, request: web.Request) -> web.Response:
        form = {key: str(value) for key, value in (await request.post()).items()}
        received = TwilioRequest(request.path, form, request.headers.get("Authorization"))
        self.requests.append(received)
        if request.match_info["account"] != self.account_sid:
            received.status = 404
            return web.json_response({"code": 20404, "message": "not found", "status": 404}, status=404)
        if self.outage:
            received.status, body, headers = self.outage
            return web.json_response(body, status=received.status, headers=headers)
        if self.failures:
            received.status, body = self.failures.pop(0)
            return web.json_response(body, status=received.status)
        sid = "SM" + uuid.uuid4().hex
        self.messages.append({**form, "sid": sid})
        return web.json_response(
            {
                "sid": sid,
                "account_sid": self.account_sid,
                "to": form.get("To"),
                "from": form.get("From"),
                "body": form.get("Body"),
                "status": "queued",
                "num_segments": "1",
                "direction": "outbound-api",
                "api_version": "2010-04-01",
                "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
            },
            status=201,
        )

    def app(self) -> web.Application:
        app = web.Application()

        app.router.add_post("/2010-04-01/Accounts/{account}/Messages.json", self.create_message)
        return app


# --- Web Push -------------------------------------------------------------------------------------------


@dataclass
class Browser:
    """A browser's side of a push subscription: its key pair and auth secret."""

    endpoint: str
    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth_secret: bytes = field(default_factory=lambda: os.urandom(16))

    def subscription(self) -> dict[str, Any]:
        public = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": b64url(public), "auth": b64url(self.auth_secret)},
        }

    def decrypt(self, body: bytes) -> dict[str, Any]:
        clear = http_ece.decrypt(
            body, private_key=self.private_key, auth_secret=self.auth_secret, version="aes128gcm"
        )
        return dict(json.loads(clear))


@dataclass
class PushService:
    """A push service: checks the VAPID signature, decrypts with the browser's keys, or answers as told."""

    vapid_public_key: str = ""
    browsers: dict[str, Browser] = field(default_factory=dict)
    delivered: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (browser id, payload)
    answers: dict[str, int] = field(default_factory=dict)  # browser id → status to answer instead
    port: int = 0

    def browser(self, name: str) -> Browser:
        self.browsers[name] = Browser(f"http://127.0.0.1:{self.port}/push/{name}")
        return self.browsers[name]

    async def receive(self, request: web.Request) -> web.Response:
        name = request.match_info["browser"]
        if name in self.answers:
            return web.Response(status=self.answers[name], text="subscription state")
        authorization = request.headers.get("Authorization", "")
        if not authorization.startswith("vapid ") or not _vapid_valid(authorization, self.vapid_public_key):
            return web.Response(status=401, text="bad VAPID signature")
        if request.headers.get("Content-Encoding") != "aes128gcm" or not request.headers.get("TTL"):
            return web.Response(status=400, text="not an RFC 8291 message")
        payload = self.browsers[name].decrypt(await request.read())
        self.delivered.append((name, payload))
        return web.Response(status=201, headers={"Location": f"/messages/{uuid.uuid4().hex}"})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/push/{browser}", self.receive)
        return app


def _vapid_valid(authorization: str, public_key: str) -> bool:
    # "vapid t=<JWT>, k=<public key>": the key must be ours and the JWT signed by it.
    parts = dict(part.strip().split("=", 1) for part in authorization.removeprefix("vapid ").split(","))
    if parts.get("k") != public_key:
        return False
    return bool(Vapid.verify(authorization))
