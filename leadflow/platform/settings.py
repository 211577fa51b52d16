"""Settings from `LEADFLOW_*` environment variables, with embedded defaults that need no configuration."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

import leadflow

# The checkout (or install) root: the parent of the `leadflow` package, wherever this module sits in it.
PROJECT_ROOT = Path(leadflow.__file__).resolve().parent.parent
DEFAULT_DATA_DIR = PROJECT_ROOT / "data"


Channel = Literal["email", "sms", "push"]
CHANNELS: tuple[Channel, ...] = ("email", "sms", "push")
# The send-time policy (quiet hours, frequency caps, the default timezone) is sending.yaml's alone; these
# variables set it once, and are refused now rather than silently ignored.
RETIRED = {
    "LEADFLOW_SENDING_HOURS": "quiet_hours",
    "LEADFLOW_SENDING_HOURS_CHANNELS": "quiet_hours.channels",
    "LEADFLOW_DEFAULT_TIMEZONE": "default_timezone",
    "LEADFLOW_FREQUENCY_CAPS": "frequency_caps",
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEADFLOW_", extra="ignore")

    data_dir: Path = DEFAULT_DATA_DIR
    database_url: str = ""  # empty: SQLite file under data_dir
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = "leadflow"
    smtp_url: str = "smtp://127.0.0.1:1025"
    mail_from: str = "Leadflow <marketing@leadflow.localhost>"
    content_dir: Path = PROJECT_ROOT
    # Bootstrap API keys (comma-separated), hashed in memory at start; `leadflow keys create` stores more.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # Each API key's token bucket (per process): requests a minute on average, up to `burst` at once.
    api_rate_per_minute: int = Field(default=6000, ge=1)
    api_rate_burst: int = Field(default=1000, ge=1)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)  # larger request bodies are refused with 413
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    public_url: str = ""  # links in notifications; empty: http://api_host:api_port
    router_poll_seconds: float = 0.05
    webhook_secret: str = ""  # signs hand-off webhooks (HMAC-SHA256); webhooks are refused while empty
    webhook_timeout_seconds: float = 10.0
    secret_key: str = ""  # signs tracking and unsubscribe links; empty: generated once into data_dir
    # Email: DKIM signing when a key is given (a PEM file's path, or the PEM itself).
    dkim_private_key: str = ""
    dkim_selector: str = "leadflow"
    dkim_domain: str = ""  # empty: the domain of the From address
    # SMS over Twilio; `twilio_api_base` is where the REST API lives (a proxy, or a test double).
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    twilio_from: str = ""  # a number in E.164 form, or leave empty and give a messaging service
    twilio_messaging_service_sid: str = ""
    twilio_api_base: str = "https://api.twilio.com"
    sms_help_reply: str = "Leadflow: marketing messages. Reply STOP to opt out, START to opt back in."
    # Web push: VAPID key pair from `leadflow keys vapid`.
    vapid_private_key: str = ""
    vapid_subject: str = "mailto:marketing@leadflow.localhost"
    # TEST ONLY: accept push subscriptions at http(s)://127.0.0.1 (the test suite's loopback push service).
    # Never set it in production: it lets an API key make the server post into its own network.
    push_allow_loopback_for_tests: bool = False
    # Consent policy, checked at every send (when a message may go out is sending.yaml's: leadflow.pacing).
    consent_required: list[Channel] = Field(default_factory=lambda: ["sms", "push"])  # type: ignore[arg-type]
    workflow_id_prefix: str = ""  # lets several installations (or test runs) share one Temporal namespace
    # `leadflow dev` runs one worker in its own process and starts the others as `leadflow worker` processes:
    # Python runs one core per process.
    worker_processes: int = Field(default=1, ge=1)
    # Workflows a worker keeps in memory; the others are rebuilt from their history when they next wake.
    worker_cache_size: int = Field(default=1000, ge=0)
    # Assessments (rescoring) a worker runs at once, on threads of their own (leadflow.platform.lanes): more only
    # wait longer for the GIL and, on SQLite, for the one writer.
    assess_threads: int = Field(default=2, ge=1)
    # Workflow tasks a worker holds at once (the SDK's default is 100). A lead's task stays open while its
    # assessment waits in the lane: with fewer slots than leads busy at once, a sales-ready lead's task waits
    # on the server behind page views; with too many, a burst keeps tasks waiting in the lane past their
    # 10 s timeout, and the server hands them out again (measured: 1,000 slots tripled a 1,000-lead burst).
    worker_workflow_task_slots: int = Field(default=200, ge=1)
    # Workflows inside the Temporal SDK's sandbox, which catches non-deterministic code but costs a third of
    # a busy worker's CPU (it re-enters its importer for every payload of every activation). The test suite
    # runs every workflow in it (tests/conftest.py), and the replay tests replay recorded histories in it.
    workflow_sandbox: bool = False

    def as_environment(self) -> dict[str, str]:
        """These settings as LEADFLOW_* variables: what a process started from this one reads back."""
        environment = {}
        for name, value in self.model_dump(mode="json").items():
            if name == "api_keys":  # NoDecode: comma-separated, and secret (dumped as "**********")
                text = ",".join(key.get_secret_value() for key in self.api_keys)
            elif isinstance(value, list | dict):
                text = json.dumps(value)
            else:
                text = str(value)
            environment[f"LEADFLOW_{name.upper()}"] = text
        return environment

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @model_validator(mode="after")
    def _no_retired_policy(self) -> Settings:
        for variable, key in RETIRED.items():
            if variable in os.environ:
                raise ValueError(f"{variable} is no longer read: set `{key}` in sending.yaml instead")
        return self

    @property
    def resolved_secret_key(self) -> str:
        """The configured secret, else one generated on first use and kept in the data folder, so links in
        emails already sent keep working across restarts."""
        if self.secret_key:
            return self.secret_key
        return kept_in_data_dir(self.data_dir / "secret.key", lambda: secrets.token_urlsafe(32))

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'leadflow.db'}"

    def lead_workflow_id(self, lead_id: int) -> str:
        return f"{self.workflow_id_prefix}lead-{lead_id}"

    def sequence_workflow_id(self, sequence_id: str, lead_id: int) -> str:
        return f"{self.workflow_id_prefix}sequence-{sequence_id}-lead-{lead_id}"

    def handoff_workflow_id(self, stage_change_id: int) -> str:
        return f"{self.workflow_id_prefix}handoff-{stage_change_id}"

    @property
    def resolved_public_url(self) -> str:
        return (self.public_url or f"http://{self.api_host}:{self.api_port}").rstrip("/")


def kept_in_data_dir(path: Path, make: Callable[[], str]) -> str:
    """A secret made on first use and kept in `path` (readable by its owner only), so what was signed or
    subscribed with it keeps working across restarts."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
