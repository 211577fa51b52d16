"""Email over SMTP with aiosmtplib; `LEADFLOW_SMTP_URL` is smtp://[user:pass@]host[:port][?starttls=true]
or smtps://… for implicit TLS."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from leadflow.channels import OutgoingEmail, PermanentDeliveryError, TemporaryDeliveryError


class SmtpEmailChannel:
    def __init__(self, url: str, sender: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError(f"LEADFLOW_SMTP_URL must start with smtp:// or smtps://, not {url!r}")
        options = {key: values[-1].lower() for key, values in parse_qs(parts.query).items()}
        self.sender = sender
        self.hostname = parts.hostname or "127.0.0.1"
        self.port = parts.port or (465 if parts.scheme == "smtps" else 25)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.use_tls = parts.scheme == "smtps"
        self.start_tls = options.get("starttls") in ("true", "1", "yes")

    def compose(self, email: OutgoingEmail) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = email.to
        message["Subject"] = email.subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = email.message_id
        for name, value in email.headers.items():
            message[name] = value
        message.set_content(email.text)
        message.add_alternative(email.html, subtype="html")
        return message

    async def send(self, email: OutgoingEmail) -> str:
        """Hand the message to the SMTP server; returns its Message-ID."""
        try:
            await aiosmtplib.send(
                self.compose(email),
                hostname=self.hostname,
                port=self.port,
                username=self.username,
                password=self.password,
                use_tls=self.use_tls,
                start_tls=self.start_tls,
                timeout=30,
            )
        except aiosmtplib.SMTPRecipientsRefused as refused:
            codes = [error.code for error in refused.recipients]
            if all(400 <= code < 500 for code in codes):
                raise TemporaryDeliveryError(str(refused)) from refused
            raise PermanentDeliveryError(str(refused)) from refused
        except aiosmtplib.SMTPResponseException as error:
            if 400 <= error.code < 500:
                raise TemporaryDeliveryError(f"SMTP {error.code}: {error.message}") from error
            raise PermanentDeliveryError(f"SMTP {error.code}: {error.message}") from error
        except (aiosmtplib.SMTPException, OSError) as error:
            raise TemporaryDeliveryError(f"SMTP server unreachable: {error}") from error
        return email.message_id
