"""The three shipped campaigns on the traffic a real browser sends: Debian's Chromium runs the real snippet on
the sample site, served by the real API, with the worker on Temporal's time-skipping server (the days a
campaign waits pass in seconds), and the messages arrive at the real peers: the SMTP server, the loopback push
service (which decrypts each notification with the browser's keys) and the loopback Twilio."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from temporalio.api.testservice.v1 import SleepRequest
from temporalio.testing import WorkflowEnvironment

from leadflow.platform import clock
from leadflow.platform.runtime import Runtime
from leadflow.platform.store.models import Enrollment, Event, Identity, Lead, Message
from tests.support.browser import Website, chromium, needs_chromium, screenshot, website
from tests.support.helpers import Inbox, channel_settings, eventually, running_stack
from tests.support.peers import VAPID, PushService, TwilioApi

pytestmark = needs_chromium
HELP_TITLE = "Coming to the event?"
HELP_EMAIL = "everything about the event in one place"
REGISTER_NUDGE = "Seats are going: register for the event"


@pytest.fixture(autouse=True)
def sqlite_only(runtime: Runtime) -> None:
    if runtime.db.dialect != "sqlite":
        pytest.skip("what the browser sends does not depend on the store: the stories run once, on SQLite")


@pytest.fixture
def settings_overrides(twilio: TwilioApi) -> dict[str, Any]:
    return channel_settings(twilio)


class ServerTime:
    """The time-skipping server's clock, which the store, the API and the activities follow
    (`clock.following`), and `skip`, which lets days pass: timers fire and what they wake runs."""

    def __init__(self, env: WorkflowEnvironment) -> None:
        self.env, self.offset = env, timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    async def sync(self) -> None:
        self.offset = await self.env.get_current_time() - datetime.now(UTC)

    async def skip(self, duration: timedelta) -> None:
        request = SleepRequest()
        request.duration.FromTimedelta(duration)
        await self.env.client.test_service.unlock_time_skipping_with_sleep(
            request, timeout=timedelta(minutes=2)
        )
        await self.sync()


@asynccontextmanager
async def campaign_site(
    runtime: Runtime, skipping: WorkflowEnvironment, inbox: Inbox
) -> AsyncIterator[tuple[Website, ServerTime]]:
    """The sample site (the shipped site's settings) and the API, with the worker on the skipping server."""
    time = ServerTime(skipping)
    await time.sync()
    with clock.following(time.now):
        async with running_stack(runtime, skipping.client, inbox) as stack, website(stack) as site:
            yield site, time


# Chromium's pushManager.subscribe() registers with Google's push service (FCM) and never settles without it
# (measured: no answer in 8 s here, with or without network). So the browser is given, in place of that one
# call, exactly what PushSubscription.toJSON() gives, pointing at the loopback push service: the rest is the
# browser's own (the permission, the service worker registered from the site's origin importing /t/sw.js,
# the snippet's request to /t/push), and the check that the snippet asked with the server's VAPID key.
STAND_IN_PUSH_SERVICE = """
(subscription) => {
  PushManager.prototype.getSubscription = function () { return Promise.resolve(null); };
  PushManager.prototype.subscribe = function (options) {
    const key = new Uint8Array(options.applicationServerKey);
    window.leadflowAskedWith = {userVisibleOnly: options.userVisibleOnly, key: btoa(String.fromCharCode(...key))};
    return Promise.resolve({toJSON: () => subscription});
  };
}
"""


def b64(raw_b64url: str) -> str:
    """Standard base64 (what btoa gives) of a base64url text."""
    raw = base64.urlsafe_b64decode(raw_b64url + "=" * (-len(raw_b64url) % 4))
    return base64.b64encode(raw).decode()


async def subscribe_to_push(page: Any) -> str:
    """Presses the sample event page's opt-in button (leadflow.push.subscribe()); its status line."""
    await page.click("#notify-me")
    status = page.locator("#push-status")
    await eventually(lambda: _settled(status), message="leadflow.push.subscribe() never settled")
    return str(await status.text_content())


async def _settled(status: Any) -> bool:
    return (await status.text_content()) not in ("", "asking…")


async def view_event_page(page: Any, site: Website, times: int) -> None:
    for _ in range(times):
        await page.goto(site.url("events.html"))
        await page.goto("about:blank")  # leaving sends the page view at once (the unload beacon)


async def download_ebook(page: Any, site: Website, email: str, first_name: str) -> None:
    await page.goto(site.url("index.html"))
    await page.fill("#ebook input[name=email]", email)
    await page.fill("#ebook input[name=first_name]", first_name)
    async with page.expect_navigation():
        await page.click("#ebook button[type=submit]")


def lead_id(runtime: Runtime, email: str | None = None, anonymous_id: str | None = None) -> int | None:
    with runtime.db.read() as session:
        if email is not None:
            return session.scalars(select(Lead.id).where(Lead.email == email)).first()
        return session.scalars(select(Identity.lead_id).where(Identity.anonymous_id == anonymous_id)).first()


def enrollments(runtime: Runtime, lead: int, sequence: str) -> list[Enrollment]:
    with runtime.db.read() as session:
        return list(
            session.scalars(
                select(Enrollment).where(Enrollment.lead_id == lead, Enrollment.sequence_id == sequence)
            )
        )


def sent(runtime: Runtime, lead: int) -> list[tuple[str, str, str]]:
    with runtime.db.read() as session:
        rows = session.scalars(select(Message).where(Message.lead_id == lead).order_by(Message.id))
        return [(row.channel, row.template, row.status) for row in rows]


def event_types(runtime: Runtime, lead: int) -> list[str]:
    with runtime.db.read() as session:
        return list(session.scalars(select(Event.type).where(Event.lead_id == lead).order_by(Event.id)))


async def anonymous_id(browser: Any) -> str:
    [cookie] = [c for c in await browser.cookies() if c["name"] == "lf_aid"]
    return str(cookie["value"])


async def test_ebook_form_in_the_browser_brings_the_ebook_email(
    runtime: Runtime, skipping: WorkflowEnvironment, inbox: Inbox, playwright: Any, tmp_path: Path
) -> None:
    async with (
        campaign_site(runtime, skipping, inbox) as (site, _),
        chromium(playwright, tmp_path / "profile") as browser,
    ):
        page = await browser.new_page()
        await download_ebook(page, site, "ebba@acme-robotics.test", "Ebba")
        [email] = await eventually(lambda: inbox.to("ebba@acme-robotics.test"), message="no ebook email")
    assert email["Subject"] == "Your ebook: The Nurture Playbook"
    assert "Ebba" in email.get_body(("html",)).get_content()


async def test_event_page_regulars_get_push_when_subscribed_through_the_snippet_else_email(
    runtime: Runtime,
    skipping: WorkflowEnvironment,
    inbox: Inbox,
    push_service: PushService,
    playwright: Any,
    tmp_path: Path,
) -> None:
    pushed = push_service.browser("chromium")
    async with (
        campaign_site(runtime, skipping, inbox) as (site, time),
        chromium(playwright, tmp_path / "subscribed") as subscribed,
        chromium(playwright, tmp_path / "by-email") as by_email,
    ):
        # An anonymous visitor allows notifications on the event page, then comes back twice.
        await subscribed.grant_permissions(["notifications"], origin=site.url("")[:-1])
        await subscribed.add_init_script(f"({STAND_IN_PUSH_SERVICE})({json.dumps(pushed.subscription())})")
        page = await subscribed.new_page()
        await page.goto(site.url("events.html"))
        assert await subscribe_to_push(page) == "subscribed: you will get our notifications in this browser"
        assert await page.evaluate("window.leadflowAskedWith") == {
            "userVisibleOnly": True,
            "key": b64(VAPID.public_key),
        }
        assert ("/t/push", 201) in site.answers
        await view_event_page(page, site, 2)
        visitor = lead_id(runtime, anonymous_id=await anonymous_id(subscribed))
        assert visitor is not None

        # A known visitor (the ebook form) who never allowed notifications views the event page three times.
        other = await by_email.new_page()
        await download_ebook(other, site, "evan@initech.test", "Evan")
        await view_event_page(other, site, 3)
        evan = await eventually(lambda: lead_id(runtime, email="evan@initech.test"))

        await eventually(
            lambda: (
                enrollments(runtime, visitor, "event_page_help")
                and enrollments(runtime, evan, "event_page_help")
            ),
            message="three views of the sample event page entered no one in event_page_help",
        )
        # The help goes out on the next weekday between 09:00 and 18:00 (UTC for these leads).
        await time.skip(timedelta(days=3))
        [(browser_name, notification)] = await eventually(
            lambda: push_service.delivered, message="no push reached the subscribed browser"
        )
        assert browser_name == "chromium" and notification["title"] == HELP_TITLE
        help_emails = await eventually(
            lambda: [m for m in inbox.to("evan@initech.test") if HELP_EMAIL in m["Subject"]],
            message="the unsubscribed regular got no help email",
        )
        assert len(help_emails) == 1
        assert ("push", "event_help", "sent") in sent(runtime, visitor)
        assert ("email", "event_help", "sent") not in sent(runtime, visitor)

        # The service worker the site serves shows what the push service delivered (pushed through DevTools:
        # the stand-in for the browser's push service).
        await show_pushed(page, site, notification)
        await screenshot(page, "campaigns-1-push-shown")


async def show_pushed(page: Any, site: Website, notification: dict[str, Any]) -> None:
    await page.goto(site.url("events.html"))
    devtools = await page.context.new_cdp_session(page)
    registrations: list[str] = []
    devtools.on(
        "ServiceWorker.workerRegistrationUpdated",
        lambda update: registrations.extend(r["registrationId"] for r in update["registrations"]),
    )
    await devtools.send("ServiceWorker.enable")
    await eventually(lambda: registrations, message="the site's service worker is not registered")
    # What the worker asks Chromium to show is recorded: headless Chromium shows the notification, but its
    # getNotifications() lists it in only about half the runs here (the worker having shown it every time).
    [worker] = await eventually(
        lambda: page.context.service_workers, message="the service worker is not running"
    )
    await worker.evaluate(
        """() => {
          const show = self.registration.showNotification.bind(self.registration);
          self.shownForTest = [];
          self.registration.showNotification = (title, options) => {
            self.shownForTest.push([title, options.body, options.data.url]);
            return show(title, options);
          };
        }"""
    )
    await devtools.send(
        "ServiceWorker.deliverPushMessage",
        {"origin": site.url("")[:-1], "registrationId": registrations[0], "data": json.dumps(notification)},
    )
    shown = await eventually(
        lambda: worker.evaluate("self.shownForTest"), message="the service worker showed no notification"
    )
    assert shown == [[notification["title"], notification["body"], notification["url"]]]


async def test_a_new_visitor_who_only_typed_an_address_gets_the_abandoned_form_reminder_then_an_sms(
    runtime: Runtime,
    skipping: WorkflowEnvironment,
    inbox: Inbox,
    twilio: TwilioApi,
    playwright: Any,
    tmp_path: Path,
) -> None:
    address = "nadia@globex.test"
    async with (
        campaign_site(runtime, skipping, inbox) as (site, time),
        chromium(playwright, tmp_path / "profile") as browser,
    ):
        page = await browser.new_page()
        await page.goto(site.url("pricing.html"))
        await page.fill("#contact input[name=email]", address)
        await page.fill("#contact input[name=company]", "Globex")
        await screenshot(page, "campaigns-2-form-typed")
        await page.goto("about:blank")  # she leaves without sending it
        nadia = await eventually(
            lambda: lead_id(runtime, email=address), message="the abandoned form did not identify her"
        )
        assert lead_id(runtime, anonymous_id=await anonymous_id(browser)) == nadia
        with runtime.db.read() as session:
            assert session.get_one(Lead, nadia).properties == {}  # the address only: nothing else she typed
        assert inbox.to(address) == []
        await time.skip(timedelta(minutes=31))
        [reminder] = await eventually(lambda: inbox.to(address), message="no abandoned-form reminder")
        assert reminder["Subject"] == "Hi, you were almost done"
        assert {"form_started", "form_abandoned", "identified"} <= set(event_types(runtime, nadia))

        # Her SMS consent and number, recorded through the API (a CRM, a call): the next day's SMS goes out
        # (sending.yaml keeps SMS out of the night: up to 11 hours more).
        api = site.stack.api
        saved = await api.post("/v1/leads", json={"email": address, "phone": "+14155550123"})
        assert saved.status_code == 200, saved.text
        consent = {"status": "granted", "source": "a call with sales"}
        assert (await api.put(f"/v1/leads/{address}/consent/sms", json=consent)).status_code == 200
        assert twilio.messages == []
        await time.skip(timedelta(days=1, hours=12))
        [sms] = await eventually(lambda: twilio.messages, message="no SMS the day after the reminder")
    assert sms["To"] == "+14155550123" and "form" in sms["Body"]


async def test_a_registrant_gets_no_more_nudges_to_register(
    runtime: Runtime, skipping: WorkflowEnvironment, inbox: Inbox, playwright: Any, tmp_path: Path
) -> None:
    address = "rita@initech.test"
    async with (
        campaign_site(runtime, skipping, inbox) as (site, time),
        chromium(playwright, tmp_path / "profile") as browser,
    ):
        page = await browser.new_page()
        await download_ebook(page, site, address, "Rita")
        await view_event_page(page, site, 3)
        rita = await eventually(lambda: lead_id(runtime, email=address))
        await eventually(
            lambda: enrollments(runtime, rita, "event_page_help"),
            message="Rita never became an event-page regular",
        )
        # She saves a seat.
        await page.goto(site.url("events.html"))
        await page.fill("#seat input[name=email]", address)
        async with page.expect_navigation():
            await page.click("#seat button[type=submit]")
        [registered] = await eventually(
            lambda: _registrations(runtime, rita), message="the registration never arrived"
        )
        assert registered["webinar"] == "growth-summit" and registered["starts_at"].endswith("16:00:00.000Z")
        await eventually(
            lambda: enrollments(runtime, rita, "event_page_help")[0].status == "converted",
            message="registering did not convert her event-page enrollment",
        )
        await view_event_page(page, site, 3)  # she keeps coming back to the page after registering
        await time.skip(timedelta(days=4))
        await time.skip(timedelta(minutes=1))
    subjects = [m["Subject"] for m in inbox.to(address)]
    assert REGISTER_NUDGE not in subjects and not any(HELP_EMAIL in subject for subject in subjects), subjects
    assert [e.status for e in enrollments(runtime, rita, "event_page_help")] == ["converted"]


def _registrations(runtime: Runtime, lead: int) -> list[dict[str, Any]]:
    with runtime.db.read() as session:
        rows = session.scalars(select(Event).where(Event.lead_id == lead, Event.type == "webinar_registered"))
        return [dict(row.properties) for row in rows]
