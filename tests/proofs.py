"""What a lead's browser gets by following a link in an email leadflow sent it: the click redirect's
`lf_proof` (leadflow.links), the only thing that makes a browser's events count for a lead it claimed."""

from __future__ import annotations

import re
from email.message import EmailMessage
from urllib.parse import parse_qs, urlsplit

import httpx
from temporalio.testing import ActivityEnvironment

from activities.sending import SendActivities
from leadflow.contracts import SendInput
from leadflow.links import PROOF_PARAMETER
from leadflow.runtime import Runtime
from tests.conftest import Inbox

EBOOK_LINK_ORIGIN = "https://leadflow.localhost"  # where the shipped ebook email's link leads


async def emailed_link(runtime: Runtime, inbox: Inbox, lead_id: int, email: str) -> str:
    """The tracked link (`/t/c/…`) of the ebook email, sent to the lead by the send activity over SMTP."""
    request = SendInput(lead_id, f"sequence-x-lead-{lead_id}:step-0", "email", "ebook_delivery", "x", 0)
    assert (await ActivityEnvironment().run(SendActivities(runtime).send_message, request)).status == "sent"
    [message] = inbox.to(email)
    assert isinstance(message, EmailMessage)
    html = message.get_body(("html",))
    assert html is not None
    found = re.search(r'href="[^"]*(/t/c/[^"]+)"', str(html.get_content()))
    assert found, "the email has no tracked link"
    return found[1].replace("&amp;", "&")


async def proof_from_click(api: httpx.AsyncClient, link: str) -> str:
    """Follow a tracked link as the reader's browser does; the proof the redirect hands the page."""
    response = await api.get(link, headers={"Authorization": ""})
    assert response.status_code == 302, response.text
    [proof] = parse_qs(urlsplit(response.headers["location"]).query)[PROOF_PARAMETER]
    return proof
