"""The dashboard: server-rendered pages under /dashboard (Jinja2 templates in this package, SVG charts drawn
by `charts`), behind the API's keys.

A script sends `Authorization: Bearer <key>`. A browser signs in with the form at /dashboard/login (never
with a key in the address, which would be written to logs and the browser's history): that sets an HttpOnly,
SameSite=Lax cookie naming the key's digest, signed with the secret key and valid for 12 hours, never the key
itself; `Secure` whenever LEADFLOW_PUBLIC_URL (or the request) is https. Revoking the key ends its sessions
at once. Sign-in attempts are rate-limited per client address.

Every form that changes something (sign in, sign out) carries a CSRF token: a random value in a cookie of its
own, signed with the secret key into the form (a signed double-submit cookie); a POST without both, or with
a token for another value, is refused with 403. Pages carry a Content-Security-Policy that allows no script
at all (charts are inline SVG) and no framing.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, FastAPI, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import select

from leadflow import reports
from leadflow.content.templates import TemplateRenderError
from leadflow.http.apikeys import Caller, Keyring
from leadflow.http.ratelimit import RateLimiter, retry_after_header
from leadflow.intake.tracking.model import RateLimit
from leadflow.leads.views import find_lead, lead_document, preview_context
from leadflow.platform import clock
from leadflow.platform.runtime import Runtime
from leadflow.platform.store.models import Lead
from leadflow.reports.dashboard import charts

COOKIE = "leadflow_dashboard"
CSRF_COOKIE = "leadflow_csrf"
COOKIE_AGE = 12 * 3600
TEMPLATES = Path(__file__).parent / "templates"
SIGN_IN_ATTEMPTS = RateLimit(per_minute=6, burst=10)  # per client address: 10 at once, then one per 10 s
# No script at all; inline styles (the page's own and an email's in the preview, which inherits the policy);
# images from the page's origin, data: or https (an email's pictures); forms post only here; never framed.
POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data: https:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class NeedsLogin(Exception):
    """No valid key in the request: the browser is shown the sign-in form."""


@dataclass(frozen=True)
class Sessions:
    """Who may see the dashboard: a request with an API key, or a browser with a session cookie."""

    keyring: Keyring
    signer: URLSafeTimedSerializer
    csrf_signer: URLSafeTimedSerializer

    def token(self, caller: Caller) -> str:
        return str(self.signer.dumps(caller.digest))

    def caller_of_token(self, token: str) -> Caller | None:
        try:
            digest = self.signer.loads(token, max_age=COOKIE_AGE)
        except BadSignature:
            return None
        return self.keyring.caller_by_digest(digest) if isinstance(digest, str) else None

    def caller(self, request: Request) -> Caller | None:
        """Blocking: reads the store."""
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            return self.keyring.caller(header[7:].strip())
        return self.caller_of_token(request.cookies.get(COOKIE, ""))

    def csrf_token(self, nonce: str) -> str:
        return str(self.csrf_signer.dumps(nonce))

    def csrf_valid(self, request: Request, token: str) -> bool:
        """Whether a form's `token` was signed here for the nonce in this browser's CSRF cookie."""
        nonce = request.cookies.get(CSRF_COOKIE, "")
        try:
            signed = self.csrf_signer.loads(token, max_age=COOKIE_AGE)
        except BadSignature:
            return False
        return bool(nonce) and isinstance(signed, str) and hmac.compare_digest(signed, nonce)


def _environment() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), trim_blocks=True
    )
    environment.filters.update(
        percent=reports.percent,
        duration=reports.duration,
        when=lambda moment: "–" if moment is None else f"{moment:%Y-%m-%d %H:%M}",
    )
    return environment


def install(app: FastAPI, runtime: Runtime, keyring: Keyring) -> None:
    """Add the dashboard's routes to the API, open to the holders of the keys `keyring` knows."""
    secret = runtime.settings.resolved_secret_key
    sessions = Sessions(
        keyring,
        URLSafeTimedSerializer(secret, salt="leadflow-dashboard"),
        URLSafeTimedSerializer(secret, salt="leadflow-dashboard-csrf"),
    )
    secure_cookies = runtime.settings.resolved_public_url.startswith("https://")
    pages = _environment()
    router = APIRouter(prefix="/dashboard", include_in_schema=False)
    sign_ins = RateLimiter(time.monotonic)

    def cookie_options(request: Request) -> dict[str, Any]:
        return {
            "httponly": True,
            "samesite": "lax",
            "secure": secure_cookies or request.url.scheme == "https",
            "path": "/dashboard",
        }

    def render(
        request: Request,
        page: str,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        """The page, with the CSRF token its forms carry (and the cookie it pairs with, once per browser)."""
        nonce = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
        body = pages.get_template(page).render(csrf_token=sessions.csrf_token(nonce), **context)
        response = HTMLResponse(body, status_code, {"Content-Security-Policy": POLICY, **(headers or {})})
        if request.cookies.get(CSRF_COOKIE) != nonce:
            response.set_cookie(CSRF_COOKIE, nonce, **cookie_options(request))
        return response

    def signed_in(request: Request, response: Response, caller: Caller) -> Response:
        response.set_cookie(COOKIE, sessions.token(caller), max_age=COOKIE_AGE, **cookie_options(request))
        return response

    @app.exception_handler(NeedsLogin)
    async def needs_login(request: Request, _: NeedsLogin) -> HTMLResponse:
        query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "key"])
        target = request.url.path + (f"?{query}" if query else "")
        problem = (
            "Keys are not accepted in the address (it ends up in logs and the browser's history): "
            "sign in here."
            if "key" in request.query_params
            else None
        )
        return render(request, "login.html", status.HTTP_401_UNAUTHORIZED, next=target, problem=problem)

    async def guard(request: Request) -> None:
        """Returns when the request may see the page."""
        if await asyncio.to_thread(sessions.caller, request) is None:
            raise NeedsLogin()

    async def posted_form(request: Request) -> dict[str, str]:
        form = parse_qs((await request.body()).decode(errors="replace"))
        return {name: values[0] for name, values in form.items()}

    @router.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request, next: str = "/dashboard") -> HTMLResponse:
        return render(request, "login.html", next=_local(next), problem=None)

    @router.post("/login", response_model=None)
    async def login(request: Request) -> Response:
        form = await posted_form(request)
        target = _local(form.get("next", "/dashboard"))
        client = request.client.host if request.client else "unknown"
        wait = sign_ins.retry_after(f"sign-in:{client}", SIGN_IN_ATTEMPTS)
        if wait:
            seconds = retry_after_header(wait)
            return render(
                request,
                "login.html",
                status.HTTP_429_TOO_MANY_REQUESTS,
                {"Retry-After": seconds},
                next=target,
                problem=f"Too many sign-in attempts from this address: try again in {seconds} s.",
            )
        if not sessions.csrf_valid(request, form.get("csrf_token", "")):
            return render(request, "login.html", status.HTTP_403_FORBIDDEN, next=target, problem=FORM_EXPIRED)
        caller = await asyncio.to_thread(sessions.keyring.caller, form.get("key", ""))
        if caller is None:
            return render(
                request,
                "login.html",
                status.HTTP_401_UNAUTHORIZED,
                next=target,
                problem="That key is not one of this installation's API keys.",
            )
        return signed_in(request, RedirectResponse(target, status.HTTP_303_SEE_OTHER), caller)

    @router.post("/logout", response_model=None)
    async def logout(request: Request) -> Response:
        if not sessions.csrf_valid(request, (await posted_form(request)).get("csrf_token", "")):
            return render(request, "error.html", status.HTTP_403_FORBIDDEN, message=FORM_EXPIRED)
        response = RedirectResponse("/dashboard/login", status.HTTP_303_SEE_OTHER)
        response.delete_cookie(COOKIE, **cookie_options(request))
        return response

    @router.get("", response_model=None)
    async def overview(request: Request, since: str = "30d") -> Response:
        await guard(request)
        try:
            period = reports.Period.last(since, clock.now())
        except ValueError as problem:
            return render(request, "error.html", status.HTTP_400_BAD_REQUEST, message=str(problem))

        def read() -> reports.Report:
            with runtime.db.read() as session:
                return reports.build_report(session, period)

        report = await asyncio.to_thread(read)
        return render(request, "overview.html", report=report, since=since, charts=_overview_charts(report))

    @router.get("/leads/{reference}", response_model=None)
    async def lead_page(request: Request, reference: str) -> Response:
        await guard(request)

        def read() -> dict[str, Any] | None:
            with runtime.db.read() as session:
                lead = find_lead(session, reference)
                if lead is None:
                    return None
                history = reports.score_history(session, lead.id)
                return {"lead": lead_document(session, lead), "history": history}

        found = await asyncio.to_thread(read)
        if found is None:
            return render(request, "error.html", status.HTTP_404_NOT_FOUND, message=f"No lead {reference!r}.")
        chart = charts.line([(at, float(score)) for at, score in found["history"]], "Score over time")
        return render(request, "lead.html", lead=found["lead"], history=found["history"], score_chart=chart)

    @router.get("/sequences/{sequence_id}", response_model=None)
    async def sequence_page(request: Request, sequence_id: str) -> Response:
        await guard(request)
        period = reports.Period.last("all", clock.now())

        def read() -> reports.Sequences:
            with runtime.db.read() as session:
                return reports.sequences(session, period)

        found = await asyncio.to_thread(read)
        report = next((s for s in found.sequences if s.sequence == sequence_id), None)
        definition = runtime.content.sequences.get(sequence_id)
        if report is None and definition is None:
            return render(
                request, "error.html", status.HTTP_404_NOT_FOUND, message=f"No sequence {sequence_id!r}."
            )
        steps = report.steps if report else []
        if not steps and definition is not None:
            steps = [
                reports.StepRow(str(i), reports.step_label(step.model_dump(mode="json", by_alias=True)))
                for i, step in enumerate(definition.steps)
            ]
        top = [step for step in steps if "." not in step.step]
        diagram = charts.sequence_diagram(
            [(step.label, step.at_now, step.entered - step.at_now) for step in top], f"Sequence {sequence_id}"
        )
        return render(
            request,
            "sequence.html",
            sequence_id=sequence_id,
            name=definition.name if definition else sequence_id,
            report=report,
            steps=steps,
            diagram=diagram,
            splits=[s for s in found.splits if s.sequence == sequence_id],
        )

    @router.get("/preview", response_model=None)
    async def preview(request: Request, template: str = "", lead: str = "") -> Response:
        await guard(request)
        library = runtime.content.templates
        names = library.names("email")

        def read() -> tuple[list[tuple[int, str]], dict[str, Any] | None, str]:
            with runtime.db.read() as session:
                choices = [
                    (lead_id, email or str(lead_id))
                    for lead_id, email in session.execute(
                        select(Lead.id, Lead.email).order_by(Lead.score.desc(), Lead.id).limit(200)
                    )
                ]
                found = find_lead(session, lead) if lead else None
                return (
                    choices,
                    preview_context(session, found, "email", template) if found else None,
                    (found.email or "") if found else "",
                )

        choices, context, email = await asyncio.to_thread(read)
        rendered, problem = None, None
        if template and template not in names:
            problem = f"No email template {template!r}."
        elif template and lead and context is None:
            problem = f"No lead {lead!r}."
        elif template and context is not None:
            try:
                rendered = library.render_email(template, context)
            except TemplateRenderError as error:
                problem = str(error)
        return render(
            request,
            "preview.html",
            names=names,
            choices=choices,
            template=template,
            lead=lead,
            email=email,
            rendered=rendered,
            problem=problem,
        )

    app.include_router(router)


FORM_EXPIRED = "This form has expired or did not come from this dashboard: reload the page and try again."


def _local(target: str) -> str:
    """Only redirect within the dashboard (never to another site named in a form)."""
    return target if target.startswith("/dashboard") and "//" not in target else "/dashboard"


def _overview_charts(report: reports.Report) -> dict[str, Any]:
    funnel = report.funnel
    weeks = funnel.weekly
    return {
        "funnel": charts.funnel([(s.name, s.leads, s.conversion) for s in funnel.stages], "Funnel"),
        "weekly": charts.bars(
            [week[5:] for week, _, _ in weeks],
            {"MQL": [mql for _, mql, _ in weeks], "SQL": [sql for _, _, sql in weeks]},
            "MQL and SQL per week",
        ),
        "time_to_sql": charts.bars(
            [label for label, _ in funnel.time_to_sql_histogram],
            {"leads": [n for _, n in funnel.time_to_sql_histogram]},
            "Time from lead to SQL",
        ),
        "scores": charts.bars(
            [label for label, _ in report.scoring.score_distribution],
            {"leads": [n for _, n in report.scoring.score_distribution]},
            "Score distribution",
            height=180,
        ),
        "sequences": {
            sequence.sequence: charts.bars(
                [
                    f"{step.step}. {step.label}" if len(sequence.steps) <= 4 else step.step
                    for step in sequence.steps
                ],
                {
                    "entered": [step.entered for step in sequence.steps],
                    "sent": [step.sent for step in sequence.steps],
                    "opened": [step.opened for step in sequence.steps],
                    "clicked": [step.clicked for step in sequence.steps],
                },
                f"Sequence {sequence.sequence} per step",
            )
            for sequence in report.sequences.sequences
        },
    }
