"""The development mail catcher: an SMTP server (aiosmtpd) that keeps every email as a .eml file.

`leadflow mail` lists them and `leadflow mail show N` prints one; they survive restarts.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class _KeepEveryMessage:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._counter = itertools.count()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        name = f"{time.time_ns()}-{next(self._counter):06d}.eml"
        partial = self.directory / f".{name}.part"
        partial.write_bytes(envelope.original_content or envelope.content)
        partial.rename(self.directory / name)  # readers never see half a message
        return "250 Message accepted for delivery"


class MailCatcher:
    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int = 1025) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._controller = Controller(_KeepEveryMessage(directory), hostname=host, port=port)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


@dataclass(frozen=True)
class CaughtMail:
    number: int
    path: Path
    message: EmailMessage

    @property
    def summary(self) -> dict[str, str]:
        return {key: str(self.message.get(key, "")) for key in ("Date", "From", "To", "Subject")}

    def body(self, subtype: str) -> str:
        part = self.message.get_body(preferencelist=(subtype,))
        return part.get_content() if part else ""


def caught_mail(directory: Path) -> list[CaughtMail]:
    """Every kept email, oldest first, numbered from 1."""
    paths = sorted(directory.glob("[!.]*.eml")) if directory.exists() else []
    return [
        CaughtMail(number, path, message_from_bytes(path.read_bytes(), policy=policy.default))
        for number, path in enumerate(paths, start=1)
    ]
