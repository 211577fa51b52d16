"""The dashboard: server-rendered pages under /dashboard (Jinja2 templates in this package, SVG charts drawn
by `charts`), behind the API's keys.

A script sends `Authorization: Bearer <key>`. A browser signs in once, with the form at /dashboard/login or
by opening any page with `?key=<key>` (the key is then dropped from the address): either sets an HttpOnly,
SameSite=Strict cookie naming the key's digest, signed with the secret key and valid for 12 hours; never the
key itself. Revoking the key ends its sessions at once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, FastAPI, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import select

from leadflow import clock, reports
from leadflow.apikeys import Caller, Keyring
from leadflow.content.templates import TemplateRenderError
from leadflow.dashboard import charts
from leadflow.leads import find_lead, lead_document, preview_context
from leadflow.runtime import Runtime
from leadflow.store.models import Lead

COOKIE = "leadflow_dashboard"
COOKIE_AGE = 12 * 3600
TEMPLATES = Path(__file__).parent / "templates"


class NeedsLogin(Exception):
    """No valid key in the request: the browser is shown the sign-in form."""


@dataclass(frozen=True)
class Sessions:
    """Who may see the dashboard: a request with an API key, or a browser with a session cookie."""

    keyring: Keyring
    signer: URLSafeTimedSerializer

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
    sessions = Sessions(
        keyring, URLSafeTimedSerializer(runtime.settings.resolved_secret_key, salt="leadflow-dashboard")
    )
    pages = _environment()
    router = APIRouter(prefix="/dashboard", include_in_schema=False)

    def render(page: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(pages.get_template(page).render(**context), status_code)

    def signed_in(request: Request, response: Response, caller: Caller) -> Response:
        response.set_cookie(
            COOKIE,
            sessions.token(caller),
            max_age=COOKIE_AGE,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/dashboard",
        )
        return response

    @app.exception_handler(NeedsLogin)
    async def needs_login(request: Request, _: NeedsLogin) -> HTMLResponse:
        query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "key"])
        target = request.url.path + (f"?{query}" if query else "")
        return render("login.html", status.HTTP_401_UNAUTHORIZED, next=target, failed=False)

    async def guard(request: Request) -> Response | None:
        """None when the request may see the page; a redirect that stores the session for `?key=`."""
        supplied = request.query_params.get("key")
        if supplied is not None:
            caller = await asyncio.to_thread(sessions.keyring.caller, supplied)
            if caller is None:
                raise NeedsLogin()
            rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "key"])
            target = request.url.path + (f"?{rest}" if rest else "")
            return signed_in(request, RedirectResponse(target, status.HTTP_303_SEE_OTHER), caller)
        if await asyncio.to_thread(sessions.caller, request) is None:
            raise NeedsLogin()
        return None

    @router.get("/login", response_class=HTMLResponse)
    async def login_form(next: str = "/dashboard") -> HTMLResponse:
        return render("login.html", next=_local(next), failed=False)

    @router.post("/login", response_model=None)
    async def login(request: Request) -> Response:
        form = parse_qs((await request.body()).decode(errors="replace"))
        supplied, target = form.get("key", [""])[0], _local(form.get("next", ["/dashboard"])[0])
        caller = await asyncio.to_thread(sessions.keyring.caller, supplied)
        if caller is None:
            return render("login.html", status.HTTP_401_UNAUTHORIZED, next=target, failed=True)
        return signed_in(request, RedirectResponse(target, status.HTTP_303_SEE_OTHER), caller)

    @router.post("/logout", response_model=None)
    async def logout() -> Response:
        response = RedirectResponse("/dashboard/login", status.HTTP_303_SEE_OTHER)
        response.delete_cookie(COOKIE, path="/dashboard")
        return response

    @router.get("", response_model=None)
    async def overview(request: Request, since: str = "30d") -> Response:
        if redirect := await guard(request):
            return redirect
        try:
            period = reports.Period.last(since, clock.now())
        except ValueError as problem:
            return render("error.html", status.HTTP_400_BAD_REQUEST, message=str(problem))

        def read() -> reports.Report:
            with runtime.db.read() as session:
                return reports.build_report(session, period)

        report = await asyncio.to_thread(read)
        return render("overview.html", report=report, since=since, charts=_overview_charts(report))

    @router.get("/leads/{reference}", response_model=None)
    async def lead_page(request: Request, reference: str) -> Response:
        if redirect := await guard(request):
            return redirect

        def read() -> dict[str, Any] | None:
            with runtime.db.read() as session:
                lead = find_lead(session, reference)
                if lead is None:
                    return None
                history = reports.score_history(session, lead.id)
                return {"lead": lead_document(session, lead), "history": history}

        found = await asyncio.to_thread(read)
        if found is None:
            return render("error.html", status.HTTP_404_NOT_FOUND, message=f"No lead {reference!r}.")
        chart = charts.line([(at, float(score)) for at, score in found["history"]], "Score over time")
        return render("lead.html", lead=found["lead"], history=found["history"], score_chart=chart)

    @router.get("/sequences/{sequence_id}", response_model=None)
    async def sequence_page(request: Request, sequence_id: str) -> Response:
        if redirect := await guard(request):
            return redirect
        period = reports.Period.last("all", clock.now())

        def read() -> reports.Sequences:
            with runtime.db.read() as session:
                return reports.sequences(session, period)

        found = await asyncio.to_thread(read)
        report = next((s for s in found.sequences if s.sequence == sequence_id), None)
        definition = runtime.content.sequences.get(sequence_id)
        if report is None and definition is None:
            return render("error.html", status.HTTP_404_NOT_FOUND, message=f"No sequence {sequence_id!r}.")
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
        if redirect := await guard(request):
            return redirect
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
