"""Erased means erased: after `DELETE /v1/leads/{ref}` no byte of the person is left on the installation's
disks. A real installation in real processes on a temporary data folder (the Temporal dev server on its
database file, `python worker.py`, `leadflow api`, the SQLite store, their log files) takes a lead with a
distinctive address, phone, properties and a tracked URL carrying a token, runs a sequence whose first email
is refused for a while (a 451 quoting the address), then sent, and whose second bounces (a 550 quoting the
address); the lead is erased over HTTP, the servers are stopped (their WALs checkpointed), and every file under
the data folder is searched, byte for byte, for every form of the person's data that is cheap to spell."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from aiosmtpd.controller import Controller

from leadflow.platform.settings import Settings
from tests.support.drill import TemporalServer, Workers
from tests.support.helpers import API_KEY, eventually, free_port

EMAIL = "Zephyrine.Quarterstaff@erasure-probe.test"
PHONE = "+14155550199"
PROPERTIES = {"first_name": "Zephyrine", "company": "Quokkaworks Fabrication", "hobby": "glassblowing-7731"}
TOKEN = "tkn7Q3xZ9vLpWq"
URL = f"https://landing.test/offer?token={TOKEN}"
SECRETS = [EMAIL, PHONE, *PROPERTIES.values(), URL, TOKEN]

CONTENT = {
    "scoring.yaml": "thresholds: {mql: 1000, sql: 2000}\nevent_types: [offer_viewed]\n",
    "sales.yaml": "salespeople:\n  - {name: Ann, email: ann@sales.test}\n",
    "sending.yaml": "default_timezone: UTC\n",
    "segments/offer.yaml": "id: offer\nname: Offer viewers\nentry: {event: offer_viewed}\n",
    # The branch reads the lead (a snapshot activity) and the entering event's properties.
    "templates/sequences/offer.yaml": (
        "id: offer\nname: Offer\nsegment: offer\nsteps:\n"
        "  - send: {channel: email, template: offer}\n"
        "  - branch:\n"
        "      if: {property: company, exists: true}\n"
        "      then:\n"
        "        - send: {channel: email, template: offer_again}\n"
    ),
    "templates/email/offer.j2": (
        "{% block subject %}Your offer{% endblock %}"
        "{% block html %}<p>Hi {{ lead.first_name | default('there') }}: "
        "{{ event.properties.url | default('') }}</p>{% endblock %}"
    ),
    "templates/email/offer_again.j2": (
        "{% block subject %}Your offer again{% endblock %}"
        "{% block html %}<p>Hi {{ lead.first_name | default('there') }}</p>{% endblock %}"
    ),
}


class RefusingMailServer:
    """The SMTP peer: the person's address is refused for a while (451, quoting it), then accepted once, then
    refused for good (550, quoting it), as mail servers word their refusals."""

    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()
        self.accepted: list[str] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        self.attempts[address] += 1
        if self.attempts[address] == 1:
            return f"451 4.2.0 <{address}>: mailbox busy, try again later"
        if len(self.accepted) >= 1:
            return f"550 5.1.1 <{address}>: no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.accepted.extend(envelope.rcpt_tos)
        return "250 OK"


def spellings(secret: str) -> set[bytes]:
    """The forms a value takes in files: as is, case-folded, URL-encoded, JSON-escaped, base64 (at each of
    the three alignments, without the edge characters that depend on the neighbours), and a phone's digits."""
    forms = {
        secret,
        secret.lower(),
        secret.upper(),
        quote(secret, safe=""),
        quote(secret),
        secret.replace("/", "\\/"),
    }
    if secret.startswith("+"):
        forms.add(secret[1:])
    found = {form.encode() for form in forms}
    for form in (secret, secret.lower()):
        for shift in range(3):
            encoded = base64.b64encode(b"\0" * shift + form.encode())
            found.add(encoded[4 : -4 if len(encoded) > 12 else None])
            found.add(base64.urlsafe_b64encode(b"\0" * shift + form.encode())[4:-4])
    return {form for form in found if len(form) >= 8}


def traces(folder: Path) -> dict[str, list[str]]:
    """Each file under `folder` that holds any spelling of a secret, with the secrets found in it."""
    needles = {secret: spellings(secret) for secret in SECRETS}
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        hits = [secret for secret, forms in needles.items() if any(form in data for form in forms)]
        if hits:
            found[str(path.relative_to(folder))] = hits
    return found


@contextmanager
def api_process(settings: Settings) -> Iterator[str]:
    """`leadflow api` in its own process, its log in the data folder."""
    environment = {**settings.as_environment(), "PATH": str(Path(sys.executable).parent)}
    with (settings.data_dir / "api.log").open("ab") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "leadflow"), "api"],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{settings.api_port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@asynccontextmanager
async def installation(folder: Path, mail: RefusingMailServer) -> AsyncIterator[httpx.AsyncClient]:
    """Temporal, one worker and the API on `folder/data` until the block ends; all stopped when it ends."""
    content = folder / "content"
    for name, text in CONTENT.items():
        (content / name).parent.mkdir(parents=True, exist_ok=True)
        (content / name).write_text(text)
    smtp = Controller(mail, hostname="127.0.0.1", port=free_port())
    smtp.start()
    settings = Settings(
        data_dir=folder / "data",
        temporal_address=f"127.0.0.1:{free_port()}",
        task_queue="erase",
        smtp_url=f"smtp://127.0.0.1:{smtp.port}",
        content_dir=content,
        api_keys=[API_KEY],
        api_port=free_port(),
        public_url="http://leadflow.test",
        secret_key="erase-secret",
        router_poll_seconds=0.05,
        frequency_caps={},
    )
    settings.data_dir.mkdir(parents=True)
    temporal, workers = TemporalServer(settings), Workers(settings)
    try:
        await temporal.start()
        workers.keep(1)
        with api_process(settings) as base_url:
            async with httpx.AsyncClient(
                base_url=base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
            ) as api:
                await eventually(lambda: _answers(api), timeout=30, message="leadflow api did not start")
                yield api
    finally:
        workers.keep(0)
        temporal.stop()
        smtp.stop()


async def _answers(api: httpx.AsyncClient) -> bool:
    try:
        return (await api.get("/v1/health")).status_code == 200
    except httpx.TransportError:
        return False


async def _messages(api: httpx.AsyncClient) -> list[str]:
    lead = (await api.get(f"/v1/leads/{quote(EMAIL)}")).json()
    return sorted(item["type"] for item in lead.get("timeline", []) if item["kind"] == "message")


async def test_an_erased_lead_leaves_no_byte_on_the_installations_disks(tmp_path: Path) -> None:
    mail = RefusingMailServer()
    started = time.monotonic()
    async with installation(tmp_path, mail) as api:
        created = await api.post("/v1/leads", json={"email": EMAIL, "phone": PHONE, "properties": PROPERTIES})
        assert created.status_code in (200, 201), created.text
        posted = await api.post(
            "/v1/events",
            json={"id": "offer-1", "type": "offer_viewed", "email": EMAIL, "properties": {"url": URL}},
        )
        assert posted.status_code == 202, posted.text
        # The first email is refused once (451), then sent; the second bounces (550).
        await eventually(lambda: _messages(api), timeout=40, message="no message was recorded")
        await eventually(
            lambda: _bounced_after_one_sent(api), timeout=40, message=f"sends never settled: {mail.attempts}"
        )
        assert [address.lower() for address in mail.accepted] == [EMAIL.lower()]
        assert traces(tmp_path / "data"), "the search finds nothing even before the erase: it cannot fail"

        erased = await api.delete(f"/v1/leads/{quote(EMAIL)}")
        assert erased.status_code == 200, erased.text
        assert (await api.get(f"/v1/leads/{quote(EMAIL)}")).status_code == 404
    left = traces(tmp_path / "data")
    assert left == {}, "\n".join(f"{path}: {', '.join(found)}" for path, found in left.items())
    assert time.monotonic() - started < 90


async def _bounced_after_one_sent(api: httpx.AsyncClient) -> bool:
    return await _messages(api) == ["email_bounced", "email_sent"]
