"""The tools around the embedded stack: the mail catcher and its listing, the schema command."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect
from typer.testing import CliRunner

from leadflow.cli import app
from leadflow.cli.dev.mailcatcher import MailCatcher, caught_mail
from leadflow.messaging.providers import OutgoingEmail
from leadflow.messaging.providers.email import SmtpEmailChannel
from leadflow.platform.settings import get_settings
from leadflow.platform.store import Database
from tests.support.helpers import free_port


@pytest.fixture
def settings_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("LEADFLOW_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


async def test_the_mail_catcher_keeps_every_email_and_lists_it(settings_env: Path) -> None:
    port = free_port()
    catcher = MailCatcher(settings_env / "mail", "127.0.0.1", port)
    catcher.start()
    try:
        channel = SmtpEmailChannel(f"smtp://127.0.0.1:{port}", "Leadflow <m@leadflow.localhost>")
        for number in (1, 2):
            await channel.send(
                OutgoingEmail(
                    f"lead{number}@x.test",
                    f"Hello {number}",
                    f"Plain {number}",
                    f"<p>HTML {number}</p>",
                    f"<{number}@leadflow.localhost>",
                )
            )
    finally:
        catcher.stop()
    assert [mail.summary["Subject"] for mail in caught_mail(settings_env / "mail")] == ["Hello 1", "Hello 2"]

    listing = CliRunner().invoke(app, ["mail"])
    assert listing.exit_code == 0 and "2 email(s)" in listing.output and "lead2@x.test" in listing.output
    shown = CliRunner().invoke(app, ["mail", "2"])
    assert shown.exit_code == 0 and "Subject: Hello 2" in shown.output and "Plain 2" in shown.output
    missing = CliRunner().invoke(app, ["mail", "3"])
    assert missing.exit_code == 1 and "no email number 3" in missing.output


def test_db_upgrade_creates_the_schema(settings_env: Path) -> None:
    result = CliRunner().invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    tables = set(inspect(Database(f"sqlite:///{settings_env / 'leadflow.db'}").engine).get_table_names())
    assert {
        "leads",
        "events",
        "outbox",
        "messages",
        "score_snapshots",
        "stage_changes",
        "enrollments",
    } <= tables
    assert CliRunner().invoke(app, ["db", "upgrade"]).exit_code == 0  # idempotent
