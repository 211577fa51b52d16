"""Benchmark: email throughput through aiosmtplib (connection reuse vs one connection per message) and the
send latency of each channel, end to end.

- SMTP: N emails through `SmtpEmailChannel` to an aiosmtpd server in its own process (a sink), with the pool
  on (connections reused) and off (`?pool=0`: connect, EHLO, send, QUIT for each message), sequentially and
  with concurrent senders.
- Latency per channel (email to the same sink, SMS to a loopback Twilio API with the real twilio client, web
  push to a loopback push service that decrypts each message): the `send_message` activity alone (render,
  policy, claim, provider call, record), and a one-step sequence workflow on a Temporal dev server from
  start to the peer having the message.

Figures go to stdout as JSON, progress to stderr.

    .venv/bin/python bench/channels.py > result.json
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from leadflow.platform.converter import data_converter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ingest_and_speed_to_lead import print_figures  # the bench's own folder is on sys.path

from activities.sending import SendActivities
from leadflow.cli.dev import temporal_cli
from leadflow.content.loader import load_content
from leadflow.contracts import SendInput, SequenceInput
from leadflow.intake.ingest import EventIn, LeadIn, ingest_events, upsert_lead
from leadflow.messaging.model import SendingPolicy
from leadflow.messaging.providers import OutgoingEmail
from leadflow.messaging.providers.email import SmtpEmailChannel
from leadflow.messaging.push_subscriptions import BrowserSubscription, PushSubscriptionIn, save_subscription
from leadflow.platform.runtime import Runtime
from leadflow.platform.settings import PROJECT_ROOT, Settings
from leadflow.platform.store import Database
from leadflow.sequences.model import Sequence
from tests.support.peers import VAPID, PushService, TwilioApi, serve
from worker import running_worker
from workflows.sequence import SequenceWorkflow

log = logging.getLogger("bench")
TEMPLATES = {"email": "ebook_delivery", "sms": "webinar_reminder", "push": "new_playbook_chapter"}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sink_smtp_server(port: int) -> subprocess.Popen[bytes]:
    """aiosmtpd in its own process (its own core), accepting and discarding every message."""
    return subprocess.Popen(
        [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}", "-c", "aiosmtpd.handlers.Sink"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_for_port(port: int) -> None:
    for _ in range(100):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


# --- SMTP throughput -----------------------------------------------------------------------------------


async def emails_per_second(port: int, pool: int, emails: int, concurrency: int) -> dict[str, float]:
    """Wall-clock rate, and the sender's CPU per email (steadier than the rate on a shared machine)."""
    channel = SmtpEmailChannel(f"smtp://127.0.0.1:{port}?pool={pool}", "Bench <bench@leadflow.test>")
    queue: asyncio.Queue[int] = asyncio.Queue()
    for number in range(emails):
        queue.put_nowait(number)
    html = "<p>" + "Lorem ipsum dolor sit amet. " * 40 + "</p>"  # a typical 1–2 kB marketing body

    async def sender() -> None:
        while not queue.empty():
            number = queue.get_nowait()
            email = OutgoingEmail(
                f"lead{number}@bench.test", f"Bench #{number}", html, html, f"<{number}@bench>"
            )
            await channel.send(email)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await channel.close()
    return {
        "emails_per_s": round(emails / elapsed, 1),
        "sender_cpu_ms_per_email": round(cpu / emails * 1000, 3),
    }


async def smtp_throughput(port: int, emails: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for concurrency in (1, 8):
        figures = results[f"concurrency_{concurrency}"] = {}
        for label, pool in (("reused_connections", concurrency), ("connection_per_message", 0)):
            figures[label] = await emails_per_second(port, pool, emails, concurrency)
            log.info("SMTP %s, %d sender(s): %s", label, concurrency, figures[label])
        reused, fresh = figures["reused_connections"], figures["connection_per_message"]
        figures["speedup"] = round(reused["emails_per_s"] / fresh["emails_per_s"], 2)
    return results


# --- latency per channel --------------------------------------------------------------------------------


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def make_leads(runtime: Runtime, push_service: PushService, count: int) -> list[int]:
    ids = []
    for number in range(count):
        email = f"lead{number}@bench.test"
        lead, _ = upsert_lead(
            runtime.db, LeadIn(email=email, phone=f"+1415555{number:04d}", properties={"first_name": "Ben"})
        )
        consent = {"channel": "sms", "source": "bench"}
        ingest_events(
            runtime.db, [EventIn(id=f"sms-{number}", type="subscribed", lead_id=lead.id, properties=consent)]
        )
        browser = push_service.browser(f"b{number}")
        save_subscription(
            runtime.db,
            PushSubscriptionIn(
                lead_id=lead.id, subscription=BrowserSubscription.model_validate(browser.subscription())
            ),
        )
        ids.append(lead.id)
    return ids


async def activity_latency(runtime: Runtime, leads: list[int], channel: str) -> dict[str, float]:
    activities, samples = SendActivities(runtime), []
    for lead_id in leads:
        request = SendInput(lead_id, f"activity-{channel}-{lead_id}", channel, TEMPLATES[channel], "bench", 0)
        started = time.perf_counter()
        result = await ActivityEnvironment().run(activities.send_message, request)
        samples.append(time.perf_counter() - started)
        assert result.status == "sent", result
    return percentiles(samples)


async def workflow_latency(
    env: WorkflowEnvironment, runtime: Runtime, leads: list[int], channel: str, delivered: Callable[[], int]
) -> dict[str, float]:
    """From starting a one-step sequence to the peer holding the message."""
    one_step = Sequence.model_validate(
        {
            "id": f"bench-{channel}",
            "name": "bench",
            "segment": "ebook_downloaders",
            "steps": [{"send": {"channel": channel, "template": TEMPLATES[channel]}}],
        }
    )
    samples = []
    for lead_id in leads:
        before = delivered()
        started = time.perf_counter()
        await env.client.start_workflow(
            SequenceWorkflow.run,
            SequenceInput(lead_id, one_step),
            id=f"bench-{channel}-{lead_id}-{time.monotonic_ns()}",
            task_queue=runtime.settings.task_queue,
        )
        await until(lambda before=before: delivered() > before)  # type: ignore[misc]
        samples.append(time.perf_counter() - started)
    return percentiles(samples)


async def dev_server_writing_to_stderr() -> WorkflowEnvironment:
    """A Temporal dev server whose banner goes to stderr: stdout is for the JSON figures only."""
    stdout = os.dup(1)
    os.dup2(2, 1)  # the server process inherits file descriptor 1
    try:
        return await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_cli(),
            data_converter=data_converter,
            ui=False,
            dev_server_log_level="error",
        )
    finally:
        os.dup2(stdout, 1)
        os.close(stdout)


async def until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("a message never reached its peer")
        await asyncio.sleep(0.001)


class CountingInbox:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        return "250 OK"


async def channel_latency(samples: int, data_dir: Path) -> dict[str, Any]:
    twilio, push_service, inbox = TwilioApi(), PushService(vapid_public_key=VAPID.public_key), CountingInbox()
    twilio_runner, twilio.port = await serve(twilio.app())
    push_runner, push_service.port = await serve(push_service.app())
    smtp_port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    settings = Settings(
        data_dir=data_dir,
        smtp_url=f"smtp://127.0.0.1:{smtp_port}",
        content_dir=PROJECT_ROOT,
        task_queue="bench-channels",
        secret_key="bench",
        vapid_private_key=VAPID.private_key,
        push_allow_loopback_for_tests=True,  # its push service listens on http://127.0.0.1
        twilio_account_sid=twilio.account_sid,
        twilio_auth_token=twilio.auth_token,
        twilio_from="+15005550006",
        twilio_api_base=f"http://127.0.0.1:{twilio.port}",
    )
    db = Database(settings.resolved_database_url)
    db.upgrade()
    # Any hour and any number of messages will do for a benchmark: no quiet hours, no frequency caps.
    content = replace(load_content(PROJECT_ROOT), sending=SendingPolicy(quiet_hours=None, frequency_caps={}))
    runtime = Runtime.assemble(settings, db, content)
    leads = make_leads(runtime, push_service, samples * 2 + 1)
    counters: dict[str, Callable[[], int]] = {
        "email": lambda: inbox.count,
        "sms": lambda: len(twilio.messages),
        "push": lambda: len(push_service.delivered),
    }
    results: dict[str, Any] = {"activity": {}, "workflow": {}}
    try:
        for channel in TEMPLATES:
            results["activity"][channel] = await activity_latency(runtime, leads[:samples], channel)
            log.info("%s send activity: %s", channel, results["activity"][channel])
        env = await dev_server_writing_to_stderr()
        try:
            async with running_worker(env.client, runtime):
                # One unmeasured run first: the worker's first workflow task loads the sandbox (seconds).
                await workflow_latency(env, runtime, leads[-1:], "email", counters["email"])
                for channel, delivered in counters.items():
                    results["workflow"][channel] = await workflow_latency(
                        env, runtime, leads[samples:-1], channel, delivered
                    )
                    log.info("%s through a sequence workflow: %s", channel, results["workflow"][channel])
        finally:
            await env.shutdown()
    finally:
        await runtime.close()
        controller.stop()
        await twilio_runner.cleanup()
        await push_runner.cleanup()
        db.dispose()
    return results


async def main(emails: int, samples: int) -> dict[str, Any]:
    port = free_port()
    server = sink_smtp_server(port)
    try:
        await wait_for_port(port)
        throughput = await smtp_throughput(port, emails)
    finally:
        server.terminate()
        server.wait(timeout=10)
    with tempfile.TemporaryDirectory(prefix="leadflow-bench-") as folder:
        latency = await channel_latency(samples, Path(folder))
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),  # other work on the machine skews the figures
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "smtp_emails_per_second": {"emails": emails, **throughput},
        "send_latency": {"samples_per_channel": samples, **latency},
    }


def run(argv: list[str] | None = None, runner: Callable[[Awaitable[Any]], Any] = asyncio.run) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emails", type=int, default=1000, help="emails per SMTP throughput run")
    parser.add_argument("--samples", type=int, default=50, help="sends per channel for the latency figures")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("temporalio").setLevel(logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("twilio").setLevel(logging.WARNING)
    print_figures(lambda: runner(main(options.emails, options.samples)))


if __name__ == "__main__":
    run()
