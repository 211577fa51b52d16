"""What activities, the API and the router share in one process: settings, store, content, channels."""

from __future__ import annotations

from dataclasses import dataclass, field

from leadflow.channels.email import SmtpEmailChannel
from leadflow.channels.webhook import WebhookChannel
from leadflow.content.loader import Content, load_content
from leadflow.settings import Settings
from leadflow.store import Database


@dataclass
class Runtime:
    settings: Settings
    db: Database
    content: Content
    email: SmtpEmailChannel
    webhooks: WebhookChannel = field(init=False)

    def __post_init__(self) -> None:
        self.webhooks = WebhookChannel(self.settings.webhook_secret, self.settings.webhook_timeout_seconds)

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        """Refuses to start on invalid content (ContentErrors) rather than run it wrongly."""
        return cls(
            settings=settings,
            db=Database(settings.resolved_database_url),
            content=load_content(settings.content_dir),
            email=SmtpEmailChannel(settings.smtp_url, settings.mail_from),
        )
