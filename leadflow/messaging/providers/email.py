"""Email over SMTP with aiosmtplib.

`LEADFLOW_SMTP_URL` is smtp://[user:pass@]host[:port][?options] or smtps://… for implicit TLS. Options:
`starttls=true` (upgrade the connection, required before auth on most servers), `cafile=/path` (trust this CA
bundle), `verify=false` (accept any certificate: only for a local test server), `pool=N` (keep up to N
connections open and reuse them; 0 opens one connection per message; default 4).

Messages are multipart (text + HTML) and DKIM-signed when a key is configured.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
import dkim

from leadflow.messaging.providers import (
    OutgoingEmail,
    PermanentDeliveryError,
    TemporaryDeliveryError,
    UnsendableMessage,
)

# Headers the DKIM signature covers; RFC 8058 requires List-Unsubscribe and List-Unsubscribe-Post among them.
SIGNED_HEADERS = [
    b"From",
    b"To",
    b"Subject",
    b"Date",
    b"Message-ID",
    b"Reply-To",
    b"MIME-Version",
    b"Content-Type",
    b"List-Unsubscribe",
    b"List-Unsubscribe-Post",
]
IDLE_SECONDS = 20  # servers drop idle clients after 30 s to 5 min: never reuse a connection near that


class _HeaderClasses(HeaderRegistry):
    """The standard library's header factory, with each header's class built once: CPython 3.11 builds a new
    class for every header of every message (a third of the time it takes to write one)."""

    def __init__(self) -> None:
        super().__init__()
        self._built: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        if key not in self._built:
            self._built[key] = super().__getitem__(name)
        return self._built[key]


SMTP_POLICY = SMTP.clone(header_factory=_HeaderClasses())


class DkimSigner:
    def __init__(self, private_key: str, selector: str, domain: str) -> None:
        pem = Path(private_key).read_text() if not private_key.lstrip().startswith("-----") else private_key
        self.key, self.selector, self.domain = pem.encode(), selector.encode(), domain.encode()

    def sign(self, message: bytes) -> bytes:
        signature = dkim.sign(message, self.selector, self.domain, self.key, include_headers=SIGNED_HEADERS)
        return signature + message


class SmtpEmailChannel:
    def __init__(self, url: str, sender: str, dkim_signer: DkimSigner | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError(f"LEADFLOW_SMTP_URL must start with smtp:// or smtps://, not {url!r}")
        options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        self.sender = sender
        self.dkim = dkim_signer
        self._connection: dict[str, Any] = {
            "hostname": parts.hostname or "127.0.0.1",
            "port": parts.port or (465 if parts.scheme == "smtps" else 25),
            "username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None,
            "use_tls": parts.scheme == "smtps",
            "start_tls": _flag(options.get("starttls")),
            "validate_certs": options.get("verify", "true").lower() not in ("false", "0", "no"),
            "cert_bundle": options.get("cafile") or None,
            "timeout": 30,
        }
        self.pool_size = int(options.get("pool", "4"))
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self._slots: asyncio.Semaphore | None = None

    def compose(self, email: OutgoingEmail) -> EmailMessage:
        message = EmailMessage(policy=SMTP_POLICY)
        message["From"] = email.sender or self.sender
        message["To"] = email.to
        if email.reply_to:
            message["Reply-To"] = email.reply_to
        message["Subject"] = email.subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = email.message_id
        for name, value in email.headers.items():
            message[name] = value
        message.set_content(email.text)
        message.add_alternative(email.html, subtype="html")
        return message

    def wire_bytes(self, email: OutgoingEmail) -> bytes:
        """The message exactly as the SMTP server receives it (signed when DKIM is configured)."""
        data = self.compose(email).as_bytes(policy=SMTP_POLICY)
        return self.dkim.sign(data) if self.dkim else data

    async def send(
        self, email: OutgoingEmail, before_data: Callable[[], Awaitable[None]] | None = None
    ) -> str:
        """Hand the message to the SMTP server; returns its Message-ID. `before_data` is awaited once the
        server has accepted the envelope, just before the message itself goes (DATA): until then a failure
        leaves nothing at the server."""
        envelope_from = parseaddr(email.sender or self.sender)[1]
        try:
            data = self.wire_bytes(email)
        except ValueError as error:  # a header the email library refuses: the same on every attempt
            raise UnsendableMessage(f"the message cannot be composed: {error}") from error
        try:
            async with self._connected() as smtp:
                await smtp.mail(envelope_from)
                await smtp.rcpt(email.to)
                if before_data is not None:
                    await before_data()
                await smtp.data(data)
        except aiosmtplib.SMTPResponseException as error:  # a refused sender, recipient or message
            if 400 <= error.code < 500:
                raise TemporaryDeliveryError(f"SMTP {error.code}: {error.message}") from error
            raise PermanentDeliveryError(f"SMTP {error.code}: {error.message}", "bounce") from error
        except (aiosmtplib.SMTPException, OSError) as error:
            raise TemporaryDeliveryError(f"SMTP server unreachable: {error}") from error
        return email.message_id

    @asynccontextmanager
    async def _connected(self) -> AsyncIterator[aiosmtplib.SMTP]:
        """A connected client: a pooled one not idle for too long, else a new one. A client that saw an
        error is closed, never handed out again."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(max(self.pool_size, 1))
        async with self._slots:
            smtp = self._fresh_idle()
            if smtp is None:
                smtp = aiosmtplib.SMTP(**self._connection)
                try:
                    await smtp.connect()
                except (aiosmtplib.SMTPException, OSError) as error:
                    # Refused TLS or login is the operator's to fix, never the recipient's fault: retry.
                    raise TemporaryDeliveryError(f"cannot connect to the SMTP server: {error}") from error
            try:
                yield smtp
            except BaseException:
                smtp.close()
                raise
            if self.pool_size and smtp.is_connected:
                self._idle.append((smtp, time.monotonic()))
            else:
                with suppress(aiosmtplib.SMTPException, OSError):
                    await smtp.quit()

    def _fresh_idle(self) -> aiosmtplib.SMTP | None:
        while self._idle:
            smtp, since = self._idle.pop()
            if smtp.is_connected and time.monotonic() - since < IDLE_SECONDS:
                return smtp
            smtp.close()
        return None

    async def close(self) -> None:
        while self._idle:
            smtp, _ = self._idle.pop()
            with suppress(aiosmtplib.SMTPException, OSError):
                await smtp.quit()


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "yes")
