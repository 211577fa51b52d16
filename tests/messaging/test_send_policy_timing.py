"""Sending hours, frequency caps and opt-outs over days, on the time-skipping test server with the real
activities, store, SMTP server, loopback Twilio and push service."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from leadflow.content.loader import Content
from leadflow.contracts import SequenceInput
from leadflow.http.app import create_app
from leadflow.intake.ingest import EventIn, LeadIn, ingest_events, upsert_lead
from leadflow.messaging.model import FrequencyCap, SendingPolicy
from leadflow.platform.runtime import Runtime
from leadflow.platform.store.models import Message
from leadflow.sequences.model import Sequence
from tests.support.helpers import API_KEY, Inbox, channel_settings, eventually
from tests.support.peers import PushService, TwilioApi
from worker import running_worker
from workflows.sequence import SequenceWorkflow


@pytest.fixture
def settings_overrides(twilio: TwilioApi) -> dict[str, Any]:
    return channel_settings(twilio)  # the shipped sending.yaml: quiet hours for SMS, two emails a day


def sequence(sequence_id: str, *steps: dict[str, Any]) -> Sequence:
    return Sequence.model_validate(
        {"id": sequence_id, "name": sequence_id, "segment": "ebook_downloaders", "steps": list(steps)}
    )


def email(template: str) -> dict[str, Any]:
    return {"send": {"channel": "email", "template": template}}


SMS = {"send": {"channel": "sms", "template": "webinar_reminder"}}
PUSH = {"send": {"channel": "push", "template": "new_playbook_chapter"}}


def sms_lead(runtime: Runtime, email_address: str, timezone: str) -> int:
    lead, _ = upsert_lead(
        runtime.db,
        LeadIn(
            email=email_address, phone="+14155550188", properties={"first_name": "Noor", "timezone": timezone}
        ),
    )
    consent = {"channel": "sms", "source": "webinar form"}
    ingest_events(
        runtime.db,
        [EventIn(id=f"{email_address}-sms", type="subscribed", lead_id=lead.id, properties=consent)],
    )
    return lead.id


def zone_where_it_is_late_evening(now: datetime) -> str:
    """A fixed-offset zone in which `now` is between 22:00 and 23:00: quiet hours for SMS."""
    offset = (22 - now.hour) % 24
    offset = offset if offset <= 14 else offset - 24
    return f"Etc/GMT{-offset:+d}" if offset else "UTC"  # POSIX style: Etc/GMT-3 is UTC+3


async def run(
    skipping: WorkflowEnvironment, runtime: Runtime, lead_id: int, *sequences: Sequence
) -> list[str]:
    handles = [
        await skipping.client.start_workflow(
            SequenceWorkflow.run,
            SequenceInput(lead_id, s),
            id=f"{runtime.settings.workflow_id_prefix}{s.id}-{lead_id}",
            task_queue=runtime.settings.task_queue,
        )
        for s in sequences
    ]
    return [await handle.result() for handle in handles]


def sent(runtime: Runtime, channel: str) -> list[Message]:
    with runtime.db.read() as session:
        return list(
            session.scalars(
                select(Message)
                .where(Message.channel == channel, Message.status == "sent")
                .order_by(Message.sent_at)
            )
        )


async def test_an_sms_due_at_night_waits_for_eight_in_the_morning_in_the_leads_time_zone(
    skipping: WorkflowEnvironment, runtime: Runtime, twilio: TwilioApi
) -> None:
    started = await skipping.get_current_time()
    zone = zone_where_it_is_late_evening(started)
    lead_id = sms_lead(runtime, "noor@initech.test", zone)
    async with running_worker(skipping.client, runtime):
        assert await run(skipping, runtime, lead_id, sequence("reminder", SMS)) == ["completed"]
    [message] = sent(runtime, "sms")
    assert message.sent_at is not None
    local = message.sent_at.astimezone(ZoneInfo(zone))
    assert (local.hour, local.minute) == (8, 0), local
    assert timedelta(hours=9) <= message.sent_at - started <= timedelta(hours=10)
    assert [m["Body"][:6] for m in twilio.messages] == ["Hi Noo"]


async def test_a_frequency_cap_holds_across_sequences(
    skipping: WorkflowEnvironment, runtime: Runtime, inbox: Inbox
) -> None:
    lead, _ = upsert_lead(runtime.db, LeadIn(email="ola@initech.test", properties={"first_name": "Ola"}))
    first = sequence("ebook", email("ebook_delivery"), email("ebook_tips"))
    second = sequence("webinar", email("webinar_invite"))
    async with running_worker(skipping.client, runtime):
        assert await run(skipping, runtime, lead.id, first, second) == ["completed", "completed"]
    times = [m.sent_at for m in sent(runtime, "email")]
    assert len(times) == len(inbox.to("ola@initech.test")) == 3
    assert times[0] and times[1] and times[2]
    assert times[1] - times[0] < timedelta(minutes=1)  # two a day are allowed…
    assert timedelta(days=1) <= times[2] - times[0] < timedelta(days=1, minutes=1)  # …the third waits a day


MIXED = sequence(
    "ebook_follow_up",
    email("ebook_delivery"),
    {"wait": "1d"},
    SMS,
    {"wait": "1d"},
    PUSH,
    {"wait": "1d"},
    email("webinar_invite"),
).model_copy(update={"version": "mixed"})


@pytest.fixture
def mixed_runtime(runtime: Runtime) -> Runtime:
    """The installation with an ebook follow-up on three channels, sending at any hour."""
    content: Content = runtime.content
    mixed = Content(
        content.directory,
        content.scoring,
        content.segments,
        {MIXED.id: MIXED},
        content.sales,
        content.templates,
        sending=content.sending.model_copy(update={"quiet_hours": None}),
    )
    return replace(runtime, content=mixed)


async def test_after_an_opt_out_mid_sequence_no_further_message_goes_out_on_any_channel(
    skipping: WorkflowEnvironment,
    mixed_runtime: Runtime,
    inbox: Inbox,
    twilio: TwilioApi,
    push_service: PushService,
) -> None:
    runtime = mixed_runtime
    leaving, staying = sms_lead(runtime, "lea@initech.test", "UTC"), 0
    staying_lead, _ = upsert_lead(
        runtime.db, LeadIn(email="sta@initech.test", phone="+14155550199", properties={"first_name": "Sta"})
    )
    staying = staying_lead.id
    ingest_events(
        runtime.db,
        [
            EventIn(
                id="sta-sms",
                type="subscribed",
                lead_id=staying,
                properties={"channel": "sms", "source": "form"},
            )
        ],
    )
    async with running_worker(skipping.client, runtime) as router:
        app = create_app(runtime, on_events_accepted=router.wake)
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t", headers=headers
        ) as api:
            for lead_id, name in ((leaving, "laptop-lea"), (staying, "laptop-sta")):
                subscription = {"lead_id": lead_id, "subscription": push_service.browser(name).subscription()}
                assert (await api.post("/v1/push/subscriptions", json=subscription)).status_code == 201
            ingest_events(
                runtime.db,
                [EventIn(id=f"ebook-{i}", type="ebook_downloaded", lead_id=i) for i in (leaving, staying)],
            )
            router.wake()
            first = await eventually(lambda: inbox.to("lea@initech.test"), message="no first email")
            link = first[0]["List-Unsubscribe"].strip().strip("<>")
            assert (
                await api.post(link.removeprefix(runtime.settings.resolved_public_url))
            ).status_code == 200
            handle = skipping.client.get_workflow_handle(
                runtime.settings.sequence_workflow_id(MIXED.id, leaving)
            )
            assert await handle.result() == "exited"
            await skipping.sleep(timedelta(days=4))
            other = skipping.client.get_workflow_handle(
                runtime.settings.sequence_workflow_id(MIXED.id, staying)
            )
            assert await other.result() == "completed"
    assert len(inbox.to("lea@initech.test")) == 1
    assert len(inbox.to("sta@initech.test")) == 2
    assert [m["To"] for m in twilio.messages] == ["+14155550199"]
    assert [name for name, _ in push_service.delivered] == ["laptop-sta"]


async def test_sending_yaml_alone_decides_when_messages_go_out(
    skipping: WorkflowEnvironment, runtime: Runtime, inbox: Inbox, twilio: TwilioApi
) -> None:
    """With four emails a day and no quiet hours in sending.yaml, four emails and an SMS due late in the
    evening all go out at once: no second policy with caps or sending hours of its own holds any back."""
    policy = SendingPolicy(quiet_hours=None, frequency_caps={"email": FrequencyCap(per_day=4)})
    runtime = replace(runtime, content=replace(runtime.content, sending=policy))
    started = await skipping.get_current_time()
    lead_id = sms_lead(runtime, "ivy@initech.test", zone_where_it_is_late_evening(started))
    templates = ("ebook_delivery", "ebook_tips", "webinar_invite", "webinar_reminder")
    burst = sequence("burst", *(email(template) for template in templates), SMS, email("webinar_last_nudge"))
    async with running_worker(skipping.client, runtime):
        assert await run(skipping, runtime, lead_id, burst) == ["completed"]
    times = [m.sent_at for m in sent(runtime, "email")] + [m.sent_at for m in sent(runtime, "sms")]
    assert len(times) == 6 and all(times)
    first_four = [times[i] for i in (0, 1, 2, 3, 5)]
    assert max(first_four) - started < timedelta(minutes=1), times  # four emails and the SMS: at once
    assert timedelta(days=1) <= times[4] - started < timedelta(days=1, minutes=1)  # the fifth: the cap's day
    assert len(inbox.to("ivy@initech.test")) == 5 and len(twilio.messages) == 1
