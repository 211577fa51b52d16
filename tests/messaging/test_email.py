"""Email as a lead receives it: multipart from the sequence's sender, tracked links and an open pixel,
one-click unsubscribe (RFC 8058), DKIM-signed when a key is set; and the SMTP connection as configured
(STARTTLS or implicit TLS with auth, connections reused)."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import re
import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dkim
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from temporalio.testing import ActivityEnvironment

from activities.sending import SendActivities
from leadflow.contracts import SendInput, SendResult
from leadflow.intake.ingest import LeadIn, upsert_lead
from leadflow.messaging.consent import suppression_of
from leadflow.messaging.providers import OutgoingEmail, TemporaryDeliveryError
from leadflow.messaging.providers.email import SmtpEmailChannel
from leadflow.platform.runtime import Runtime
from tests.support.helpers import Inbox, free_port, settings_for_test

LEAD = "lin@initech.test"


def lead_id(runtime: Runtime) -> int:
    lead, _ = upsert_lead(runtime.db, LeadIn(email=LEAD, properties={"first_name": "Lin"}))
    return lead.id


async def send(runtime: Runtime, template: str = "ebook_delivery", step: int = 0, **extra: Any) -> SendResult:
    lead = lead_id(runtime)
    request = SendInput(
        lead, f"sequence-ebook-lead-{lead}:step-{step}", "email", template, "ebook_follow_up", step, **extra
    )
    return await ActivityEnvironment().run(SendActivities(runtime).send_message, request)


def parts(message: EmailMessage) -> dict[str, str]:
    return {part.get_content_type(): part.get_content() for part in message.walk() if not part.is_multipart()}


async def test_a_sequence_email_is_multipart_from_its_sender_with_one_click_unsubscribe(
    runtime: Runtime, inbox: Inbox
) -> None:
    result = await send(
        runtime, sender="Ada at Leadflow <ada@leadflow.test>", reply_to="ada.replies@leadflow.test"
    )
    assert result.status == "sent"
    [message] = inbox.to(LEAD)
    assert message["From"] == "Ada at Leadflow <ada@leadflow.test>"
    assert message["Reply-To"] == "ada.replies@leadflow.test"
    assert message["Message-ID"].endswith("@leadflow.test>")
    unsubscribe = message["List-Unsubscribe"].strip().strip("<>")  # a long header is folded
    assert unsubscribe.startswith("http://leadflow.test/u/")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    body = parts(message)
    assert set(body) == {"text/plain", "text/html"}
    assert unsubscribe in body["text/plain"] and f'href="{unsubscribe}"' in body["text/html"]
    assert (
        "https://leadflow.localhost/ebooks/nurture-playbook.pdf" in body["text/plain"]
    )  # text links stay plain
    assert "nurture-playbook.pdf" not in body["text/html"]  # HTML links go through the click redirect
    assert re.search(r'href="http://leadflow\.test/t/c/[^"]+"', body["text/html"])
    assert re.search(r'<img src="http://leadflow\.test/t/o/[^"]+" width="1" height="1"', body["text/html"])


async def test_a_template_without_a_text_block_gets_a_plain_text_part(runtime: Runtime, inbox: Inbox) -> None:
    await send(runtime, template="ebook_tips")
    text = parts(inbox.to(LEAD)[0])["text/plain"]
    assert "- Score what people do, not only who they are." in text
    assert "Unsubscribe: http://leadflow.test/u/" in text


async def test_a_bounced_address_is_suppressed_and_never_tried_again(runtime: Runtime, inbox: Inbox) -> None:
    inbox.reply = "550 5.1.1 no such mailbox"
    assert (await send(runtime)).status == "bounced"
    inbox.reply = None
    later = await send(runtime, template="ebook_tips", step=2)
    assert (later.status, later.reason) == ("skipped", "email address is on the suppression list (bounce)")
    assert inbox.to(LEAD) == []
    with runtime.db.read() as session:
        suppression = suppression_of(session, "email", LEAD.upper())  # addresses compare case-insensitively
    assert suppression is not None and "550" in (suppression.detail or "")


# --- DKIM -------------------------------------------------------------------------------------------------


def rsa_key() -> tuple[str, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode(), b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


@pytest.fixture
def signing(runtime: Runtime, tmp_path: Path) -> Iterator[tuple[Runtime, bytes]]:
    pem, dns_record = rsa_key()
    key_file = tmp_path / "dkim.pem"
    key_file.write_text(pem)
    settings = runtime.settings.model_copy(
        update={
            "dkim_private_key": str(key_file),
            "dkim_selector": "mail2026",
            "mail_from": "Leadflow <news@leadflow.test>",
        }
    )
    yield Runtime.assemble(settings, runtime.db, runtime.content), dns_record


async def test_emails_are_dkim_signed_over_the_unsubscribe_headers(
    signing: tuple[Runtime, bytes], inbox: Inbox
) -> None:
    runtime, dns_record = signing
    await send(runtime)
    [raw] = inbox.raw
    asked: list[bytes] = []

    def dns(name: bytes, timeout: int = 5) -> bytes:
        asked.append(name)
        return dns_record

    assert dkim.verify(raw, dnsfunc=dns)
    assert asked == [b"mail2026._domainkey.leadflow.test."]
    signature = inbox.messages[0]["DKIM-Signature"]
    signed_headers = re.search(r"h=([^;]+)", signature.replace("\r\n", "").replace(" ", ""))
    assert signed_headers and {"list-unsubscribe", "list-unsubscribe-post"} <= set(
        signed_headers[1].lower().split(":")
    )
    tampered = raw.replace(b"Subject: Your ebook", b"Subject: Your eBook")
    assert not dkim.verify(tampered, dnsfunc=dns)


# --- the connection: TLS, auth, reuse ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1; the client trusts it through `?cafile=`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


class Authenticated(Inbox):
    def __init__(self) -> None:
        super().__init__()
        self.logins: list[str] = []

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        if (auth_data.login, auth_data.password) != (b"marketing", b"s3cret/pass"):
            return AuthResult(success=False, handled=False)
        self.logins.append(auth_data.login.decode())
        return AuthResult(success=True)


@pytest.mark.parametrize("mode", ["starttls", "implicit-tls"])
async def test_the_smtp_url_configures_tls_and_authentication(
    certificate: tuple[Path, Path], mode: str
) -> None:
    cert_file, key_file = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    server, port = Authenticated(), free_port()
    # aiosmtpd knows only STARTTLS as "TLS is on"; under implicit TLS every byte is encrypted anyway.
    tls: dict[str, Any] = (
        {"tls_context": context, "require_starttls": True, "auth_require_tls": True}
        if mode == "starttls"
        else {"ssl_context": context, "auth_require_tls": False}
    )
    controller = Controller(server, hostname="127.0.0.1", port=port, authenticator=server, **tls)
    controller.start()
    try:
        scheme, option = ("smtp", "&starttls=true") if mode == "starttls" else ("smtps", "")
        url = f"{scheme}://marketing:s3cret%2Fpass@127.0.0.1:{port}?cafile={cert_file}{option}"
        channel = SmtpEmailChannel(url, "Leadflow <news@leadflow.test>")
        await channel.send(OutgoingEmail(LEAD, "Hi", "text", "<p>html</p>", "<1@leadflow.test>"))
        await channel.close()
        wrong = SmtpEmailChannel(
            url.replace("s3cret", "wrong"),
            "news@leadflow.test",
        )
        with pytest.raises(TemporaryDeliveryError):  # a refused login is the operator's to fix: retried
            await wrong.send(OutgoingEmail(LEAD, "Hi", "text", "<p>html</p>", "<2@leadflow.test>"))
        untrusted = SmtpEmailChannel(
            url.split("?")[0] + (option.replace("&", "?") or ""), "news@leadflow.test"
        )
        with pytest.raises(TemporaryDeliveryError):  # a certificate nobody vouches for is refused
            await untrusted.send(OutgoingEmail(LEAD, "Hi", "text", "<p>html</p>", "<3@leadflow.test>"))
    finally:
        controller.stop()
    assert server.logins == ["marketing"]
    assert [message["Subject"] for message in server.messages] == ["Hi"]


@pytest.mark.parametrize(("pool", "connections"), [(4, 1), (0, 5)])
async def test_connections_are_reused_unless_the_pool_is_off(
    smtp_server: tuple[Inbox, int], inbox: Inbox, pool: int, connections: int
) -> None:
    channel = SmtpEmailChannel(f"smtp://127.0.0.1:{smtp_server[1]}?pool={pool}", "news@leadflow.test")
    for number in range(5):
        await channel.send(
            OutgoingEmail(LEAD, f"#{number}", "text", "<p>html</p>", f"<{number}@leadflow.test>")
        )
    await channel.close()
    assert len(inbox.to(LEAD)) == 5
    assert len(set(inbox.peers)) == connections


def test_settings_refuse_the_retired_send_policy_variables(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sending.yaml is the one send-time policy: a variable that once set it is refused, not ignored."""
    monkeypatch.setenv("LEADFLOW_FREQUENCY_CAPS", '{"email": {"day": 3}}')
    with pytest.raises(ValueError, match="LEADFLOW_FREQUENCY_CAPS is no longer read: set `frequency_caps`"):
        settings_for_test(runtime.db, 25)
