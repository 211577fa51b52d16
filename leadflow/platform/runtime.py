"""What activities, the API and the router share in one process: settings, store, content, channels."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.utils import parseaddr

from leadflow.content.loader import Content, load_content
from leadflow.messaging.links import Tracker
from leadflow.messaging.providers.email import DkimSigner, SmtpEmailChannel
from leadflow.messaging.providers.sms import TwilioSmsChannel
from leadflow.messaging.providers.webhook import WebhookChannel
from leadflow.messaging.providers.webpush import WebPushChannel
from leadflow.platform.settings import Settings
from leadflow.platform.store import Database


@dataclass
class Runtime:
    settings: Settings
    db: Database
    content: Content
    email: SmtpEmailChannel
    tracker: Tracker
    sms: TwilioSmsChannel | None = None  # None: Twilio is not configured, SMS steps are skipped
    push: WebPushChannel | None = None  # None: no VAPID key, push steps are skipped
    webhooks: WebhookChannel = field(init=False)  # hand-off webhooks, signed with LEADFLOW_WEBHOOK_SECRET

    def __post_init__(self) -> None:
        self.db.address_key = self.settings.resolved_secret_key  # the suppression list's hashes are keyed
        self.webhooks = WebhookChannel(self.settings.webhook_secret, self.settings.webhook_timeout_seconds)

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        """Refuses to start on invalid content (ContentErrors) rather than run it wrongly."""
        return cls.assemble(
            settings, Database(settings.resolved_database_url), load_content(settings.content_dir)
        )

    @classmethod
    def assemble(cls, settings: Settings, db: Database, content: Content) -> Runtime:
        """The channels the settings configure, over an existing store and content."""
        signer = None
        if settings.dkim_private_key:
            domain = settings.dkim_domain or parseaddr(settings.mail_from)[1].rpartition("@")[2]
            signer = DkimSigner(settings.dkim_private_key, settings.dkim_selector, domain)
        sms = None
        if settings.twilio_account_sid:
            sms = TwilioSmsChannel(
                settings.twilio_account_sid,
                settings.twilio_auth_token,
                settings.twilio_from,
                settings.twilio_messaging_service_sid,
                settings.twilio_api_base,
            )
        push = (
            WebPushChannel(
                settings.vapid_private_key, settings.vapid_subject, settings.push_allow_loopback_for_tests
            )
            if settings.vapid_private_key
            else None
        )
        return cls(
            settings=settings,
            db=db,
            content=content,
            email=SmtpEmailChannel(settings.smtp_url, settings.mail_from, signer),
            tracker=Tracker(settings.resolved_secret_key, settings.resolved_public_url),
            sms=sms,
            push=push,
        )

    async def close(self) -> None:
        await self.email.close()
        if self.sms:
            await self.sms.close()
