"""What a lead's browser gets by following a link in an email leadflow sent it: the click redirect's
`lf_proof` (leadflow.messaging.links), the only thing that makes a browser's events count for a lead it claimed."""

from __future__ import annotations

import re
from email.message import EmailMessage
from urllib.parse import parse_qs, urlsplit

import httpx
from temporalio.testing import ActivityEnvironment

from activities.sending import SendActivities
from leadflow.contracts import SendInput, SendResult
from leadflow.messaging.links import PROOF_PARAMETER
from leadflow.platform.runtime import Runtime
from tests.support.helpers import Inbox

EMAIL_LINK_ORIGIN = "https://leadflow.localhost"  # where the shipped templates' links lead
TEMPLATE = "webinar_invite"


async def emailed_link(runtime: Runtime, inbox: Inbox, lead_id: int, email: str) -> str:
    """The tracked link (`/t/c/…`) of the webinar invitation, sent to the lead by the send activity over
    SMTP."""
    await send_invitation(runtime, lead_id)
    [message] = [message for message in inbox.to(email) if "webinar" in message["Subject"].lower()]
    assert isinstance(message, EmailMessage)
    html = message.get_body(("html",))
    assert html is not None
    found = re.search(r'href="[^"]*(/t/c/[^"]+)"', str(html.get_content()))
    assert found, "the email has no tracked link"
    return found[1].replace("&amp;", "&")


async def invite(runtime: Runtime, lead_id: int, step: int = 0) -> SendResult:
    """Send the lead the webinar invitation (as step `step` of a sequence) through the send activity."""
    request = SendInput(lead_id, f"sequence-x-lead-{lead_id}:step-{step}", "email", TEMPLATE, "x", step)
    result: SendResult = await ActivityEnvironment().run(SendActivities(runtime).send_message, request)
    return result


async def send_invitation(runtime: Runtime, lead_id: int) -> int:
    """Send the lead the webinar invitation; its message id."""
    sent = await invite(runtime, lead_id)
    assert sent.status == "sent" and sent.message_id
    return sent.message_id


def link_to_page(runtime: Runtime, message_id: int, lead_id: int, page: str) -> str:
    """The tracked link (`/t/c/…`) a link to `page` in that message carries (the shipped templates link
    to leadflow.localhost, which a test's browser cannot reach)."""
    return urlsplit(runtime.tracker.click_url(message_id, lead_id, page, 1)).path


async def proof_from_click(api: httpx.AsyncClient, link: str) -> str:
    """Follow a tracked link as the reader's browser does; the proof the redirect hands the page."""
    response = await api.get(link, headers={"Authorization": ""})
    assert response.status_code == 302, response.text
    [proof] = parse_qs(urlsplit(response.headers["location"]).query)[PROOF_PARAMETER]
    return proof
