"""Settings from `LEADFLOW_*` environment variables, with embedded defaults that need no configuration."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = PROJECT_ROOT / "data"


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
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["dev-key"])
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    public_url: str = ""  # links in notifications; empty: http://api_host:api_port
    router_poll_seconds: float = 0.05
    webhook_secret: str = ""  # signs hand-off webhooks (HMAC-SHA256); webhooks are refused while empty
    webhook_timeout_seconds: float = 10.0
    workflow_id_prefix: str = ""  # lets several installations (or test runs) share one Temporal namespace

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
