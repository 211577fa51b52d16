"""Signed links in emails: the open pixel, click redirects and the unsubscribe link.

Each link carries an HMAC-signed token (itsdangerous) naming the message or lead it belongs to, so a forged
or altered link is refused (404) before anything is recorded, and nobody can unsubscribe someone else.

A click redirect to one of the sites in sites.yaml also hands the page a short-lived signed proof
(`?lf_proof=…`): the snippet sends it back with the browser's anonymous id, which proves that this browser
opened an email to the lead (a public identify proves nothing: leadflow.intake.identity).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from itsdangerous import BadSignature, TimestampSigner, URLSafeSerializer, URLSafeTimedSerializer

from leadflow.platform import clock

OPEN, CLICK, UNSUBSCRIBE, PROOF = "open", "click", "unsubscribe", "proof"
PROOF_PARAMETER = "lf_proof"  # leadflow.js reads it by this name
# Long enough for the page to load after the redirect (or the visitor to answer a consent banner on it),
# short enough that a proof copied from an address bar or a log is soon worthless.
PROOF_MAX_AGE = timedelta(minutes=15)
PIXEL_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
_LINK = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"']+)\2""", re.IGNORECASE)


@dataclass(frozen=True)
class Open:
    message_id: int
    lead_id: int


@dataclass(frozen=True)
class Click:
    message_id: int
    lead_id: int
    url: str
    link: int  # the link's position in the email, so two links to one page count apart


@dataclass(frozen=True)
class Unsubscribe:
    lead_id: int
    channel: str


class _ClockSigner(TimestampSigner):
    """Dates proofs by leadflow's clock (tests move it), not the system's."""

    def get_timestamp(self) -> int:
        return int(clock.now().timestamp())


class Tracker:
    def __init__(self, secret_key: str, public_url: str) -> None:
        self.public_url = public_url.rstrip("/")
        # One serializer per kind: a token made for one purpose never verifies for another.
        self._signers = {
            kind: URLSafeSerializer(secret_key, salt=f"leadflow-{kind}")
            for kind in (OPEN, CLICK, UNSUBSCRIBE)
        }
        self._proofs = URLSafeTimedSerializer(secret_key, salt=f"leadflow-{PROOF}", signer=_ClockSigner)

    def _token(self, kind: str, payload: list[Any]) -> str:
        return str(self._signers[kind].dumps(payload))

    def _payload(self, kind: str, token: str) -> list[Any] | None:
        try:
            payload = self._signers[kind].loads(token)
        except BadSignature:
            return None
        return payload if isinstance(payload, list) else None

    def unsubscribe_url(self, lead_id: int, channel: str = "email") -> str:
        return f"{self.public_url}/u/{self._token(UNSUBSCRIBE, [lead_id, channel])}"

    def open_url(self, message_id: int, lead_id: int) -> str:
        return f"{self.public_url}/t/o/{self._token(OPEN, [message_id, lead_id])}"

    def click_url(self, message_id: int, lead_id: int, url: str, link: int) -> str:
        return f"{self.public_url}/t/c/{self._token(CLICK, [message_id, lead_id, url, link])}"

    def read_open(self, token: str) -> Open | None:
        match self._payload(OPEN, token):
            case [int(message_id), int(lead_id)]:
                return Open(message_id, lead_id)
        return None

    def read_click(self, token: str) -> Click | None:
        match self._payload(CLICK, token):
            case [int(message_id), int(lead_id), str(url), int(link)]:
                return Click(message_id, lead_id, url, link)
        return None

    def read_unsubscribe(self, token: str) -> Unsubscribe | None:
        match self._payload(UNSUBSCRIBE, token):
            case [int(lead_id), str(channel)]:
                return Unsubscribe(lead_id, channel)
        return None

    def with_proof(self, url: str, lead_id: int, message_id: int) -> str:
        """`url` with a proof that whoever opens it got message `message_id`, an email to `lead_id`."""
        scheme, netloc, path, query, fragment = urlsplit(url)
        token = self._proofs.dumps([lead_id, message_id])
        # The destination's own query stays as it was written; the token is URL-safe.
        query = (f"{query}&" if query else "") + f"{PROOF_PARAMETER}={token}"
        return urlunsplit((scheme, netloc, path, query, fragment))

    def read_proof(self, token: str) -> int | None:
        """The lead a proof was made for, if it is genuine and younger than PROOF_MAX_AGE."""
        try:
            payload = self._proofs.loads(token, max_age=int(PROOF_MAX_AGE.total_seconds()))
        except BadSignature:  # SignatureExpired is one too
            return None
        match payload:
            case [int(lead_id), int(_)]:
                return lead_id
        return None

    def tracked_html(self, body: str, message_id: int, lead_id: int, untracked: tuple[str, ...] = ()) -> str:
        """`body` with every web link sent through the click redirect and an open pixel at its end."""
        position = 0

        def redirect(match: re.Match[str]) -> str:
            nonlocal position
            url = html.unescape(match[3])
            if url.startswith(untracked):
                return match[0]
            position += 1
            tracked = html.escape(self.click_url(message_id, lead_id, url, position))
            return f"{match[1]}{match[2]}{tracked}{match[2]}"

        pixel = f'<img src="{html.escape(self.open_url(message_id, lead_id))}" width="1" height="1" alt="">'
        tracked = _LINK.sub(redirect, body)
        if "</body>" in tracked:
            return tracked.replace("</body>", f"{pixel}</body>", 1)
        return f"{tracked}\n{pixel}"
