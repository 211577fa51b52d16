"""Helpers for stories played with `leadflow simulate`'s harness on the time-skipping server: play a
script, then read what each simulated lead received and went through."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from leadflow.platform.runtime import Runtime
from leadflow.platform.store.models import Enrollment, EnrollmentStep, Message
from leadflow.sequences.simulation import Script, Simulation, SimulationReport, simulated_email
from tests.support.helpers import Inbox, copy_content

DAY = timedelta(days=1)


def about(delta: timedelta, expected: timedelta) -> bool:
    """Equal but for the real seconds the activities themselves take (time skips only between timers), the
    milliseconds between the server's clock and the one the simulation keeps in step with it, and waits
    ending on the next whole minute: up to a minute, plus the later send's own milliseconds when the earlier
    one went out right on a minute (a send window opening)."""
    return expected - timedelta(seconds=1) <= delta < expected + timedelta(minutes=1, seconds=2)


async def play(
    env: WorkflowEnvironment, runtime: Runtime, sequence: str, script: dict[str, Any], leads: int
) -> SimulationReport:
    return await Simulation(env, runtime, progress=lambda _: None).run(
        sequence, Script.model_validate(script), leads
    )


def subjects(inbox: Inbox, number: int) -> list[str]:
    return [message["Subject"] for message in inbox.to(simulated_email(number))]


def enrollments(runtime: Runtime, number: int) -> list[Enrollment]:
    with runtime.db.read() as session:
        return list(
            session.scalars(select(Enrollment).where(Enrollment.lead_id == number).order_by(Enrollment.id))
        )


def journal(runtime: Runtime, number: int) -> list[tuple[str, str]]:
    with runtime.db.read() as session:
        rows = session.scalars(
            select(EnrollmentStep).where(EnrollmentStep.lead_id == number).order_by(EnrollmentStep.id)
        )
        return [(row.step, row.detail) for row in rows if row.detail]


def sent_at(runtime: Runtime, number: int, template: str, channel: str = "email") -> datetime:
    with runtime.db.read() as session:
        message = session.scalars(
            select(Message).where(
                Message.lead_id == number, Message.template == template, Message.channel == channel
            )
        ).one()
    assert message.sent_at is not None
    return message.sent_at


TESTER_SEGMENT = """\
id: trialists
name: Trialists
entry: {event: trial_started}
exit:
  event: page_viewed
  where: {url: {matches: '^/careers'}}
"""
TESTER_SEQUENCE = """\
id: trial_nurture
name: Trial nurture
segment: trialists
exit_when: {left_segment: true, handed_to_sales: false}
steps:
  - split:
      - {name: A, weight: 1, steps: [{send: {channel: email, template: variant_a}}]}
      - {name: B, weight: 1, steps: [{send: {channel: email, template: variant_b}}]}
  - wait: 1h
  - send: {channel: email, template: capped}
  - branch:
      if: {all: [{temperature: hot}, {score: {gte: 80}}]}
      then: [{send: {channel: email, template: hot}}]
      else: [{send: {channel: email, template: cold}}]
  - wait: 5d
"""


def email_template(subject: str) -> str:
    return f"{{% block subject %}}{subject}{{% endblock %}}{{% block html %}}<p>{subject}</p>{{% endblock %}}"


def trial_content(tmp_path: Path) -> Path:
    """The shipped content plus a trial sequence with a split, a capped send and a temperature branch."""
    copy_content(tmp_path)
    (tmp_path / "segments/trialists.yaml").write_text(TESTER_SEGMENT)
    (tmp_path / "templates/sequences/trial_nurture.yaml").write_text(TESTER_SEQUENCE)
    for name in ("variant_a", "variant_b", "capped", "hot", "cold"):
        (tmp_path / f"templates/email/{name}.j2").write_text(email_template(name))
    (tmp_path / "sending.yaml").write_text("frequency_caps:\n  email: {per_day: 1}\n")
    return tmp_path
