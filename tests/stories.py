"""Helpers for stories played with `leadflow simulate`'s harness on the time-skipping server: play a
script, then read what each simulated lead received and went through."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from leadflow.runtime import Runtime
from leadflow.simulation import Script, Simulation, SimulationReport, simulated_email
from leadflow.store.models import Enrollment, EnrollmentStep, Message
from tests.conftest import Inbox

DAY = timedelta(days=1)


def about(delta: timedelta, expected: timedelta) -> bool:
    """Equal but for the real seconds the activities themselves take (time skips only between timers), and the
    milliseconds between the server's clock and the one the simulation keeps in step with it."""
    return expected - timedelta(seconds=1) <= delta < expected + timedelta(minutes=1)


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


def sent_at(runtime: Runtime, number: int, template: str) -> datetime:
    with runtime.db.read() as session:
        message = session.scalars(
            select(Message).where(Message.lead_id == number, Message.template == template)
        ).one()
    assert message.sent_at is not None
    return message.sent_at
