"""The `leadflow` command."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from leadflow.content.loader import Content, load_content
from leadflow.content.yamlfile import ContentError, ContentErrors
from leadflow.settings import get_settings

if TYPE_CHECKING:
    from leadflow.store import Database

app = typer.Typer(
    help="Leadflow: events in, scored leads, durable nurture sequences, hand-off to sales.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The store's schema.", no_args_is_help=True)
leads_app = typer.Typer(help="Look at leads.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (create, list, revoke) and web-push keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
app.add_typer(leads_app, name="leads")
scoring_app = typer.Typer(
    help="Learn a points model from past outcomes, and measure any model against them.", no_args_is_help=True
)
app.add_typer(scoring_app, name="scoring")
outbox_app = typer.Typer(help="The outbox of accepted events on their way to Temporal.", no_args_is_help=True)
dead_letters_app = typer.Typer(
    help="Events that can never be routed, set aside so the rest flows: list, retry, drop.",
    no_args_is_help=True,
)
outbox_app.add_typer(dead_letters_app, name="dead-letters")
app.add_typer(outbox_app, name="outbox")
console = Console(emoji=False)
errors = Console(stderr=True, emoji=False)


class Output(StrEnum):
    table = "table"
    json = "json"


# Every command that reports takes it: a table for people, or JSON on stdout for programs (progress and
# warnings always go to stderr).
FormatOption = Annotated[
    Output, typer.Option("--format", help="table, or json (on stdout; progress and warnings on stderr).")
]


def _print_json(document: Any) -> None:
    print(json.dumps(document, indent=2, ensure_ascii=False, default=str))


def _logging() -> None:
    from leadflow.logs import configure_logging

    configure_logging()


def _content_or_exit(directory: Path) -> Content:
    try:
        return load_content(directory)
    except (ContentError, ContentErrors) as problem:
        for line in str(problem).splitlines():
            errors.print(line, highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1) from None


@app.command()
def dev(demo: Annotated[bool, typer.Option(help="Load two demo leads on a first start.")] = True) -> None:
    """Run the embedded stack: Temporal dev server, worker, API and mail catcher. Ctrl-C stops it."""
    from leadflow.dev import run_dev

    settings = get_settings()
    _content_or_exit(settings.content_dir)
    logging.basicConfig(level=logging.WARNING)
    raise typer.Exit(run_dev(settings, demo=demo))


@app.command()
def worker() -> None:
    """Run a worker: the Temporal worker and the outbox router (needs a running Temporal server)."""
    import worker as worker_process

    _content_or_exit(get_settings().content_dir)
    _logging()
    try:
        asyncio.run(worker_process.main())
    except KeyboardInterrupt:
        pass


@app.command()
def api() -> None:
    """Serve the HTTP API alone (events are routed by the workers)."""
    import uvicorn
    from temporalio.client import Client

    from leadflow.api import create_app
    from leadflow.runtime import Runtime
    from worker import connect

    settings = get_settings()
    _content_or_exit(settings.content_dir)
    runtime = Runtime.from_settings(settings)
    runtime.db.upgrade()
    clients: list[Client] = []

    async def temporal_client() -> Client:  # connected on first use: the API serves while Temporal is down
        if not clients:
            clients.append(await connect(settings, runtime.db, patience=0))
        return clients[0]

    _logging()
    # log_config=None: uvicorn's records go through the handlers _logging set up, which mask personal data.
    app = create_app(runtime, temporal=temporal_client)
    uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_config=None)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who or what uses it: crm-sync, website, ci.")],
) -> None:
    """Make an API key and print it, once: only its keyed hash is stored, so it cannot be shown again."""
    from leadflow.apikeys import KeyRefused, create_key

    settings = get_settings()
    db = _database()
    db.upgrade()
    try:
        key = create_key(db, settings.resolved_secret_key, name)
    except KeyRefused as refused:
        errors.print(str(refused), highlight=False, markup=False)
        raise typer.Exit(1) from None
    errors.print(
        f"API key {name!r} (shown once; keep it in your secrets store):", highlight=False, markup=False
    )
    print(key)


@keys_app.command("list")
def keys_list() -> None:
    """The stored API keys: name, when made, last used (to the minute), revoked. Never the keys themselves."""
    from leadflow.apikeys import list_keys

    db = _database()
    db.upgrade()
    table = Table("Name", "Created", "Last used", "Revoked", title="API keys (times in UTC)")
    for key in list_keys(db):
        table.add_row(key.name, _minute(key.created_at), _minute(key.last_used_at), _minute(key.revoked_at))
    console.print(table)
    bootstrap = len(get_settings().api_keys)
    if bootstrap:
        console.print(f"and {bootstrap} key(s) from LEADFLOW_API_KEYS (not stored)", highlight=False)


@keys_app.command("revoke")
def keys_revoke(
    name: Annotated[str, typer.Argument(help="The key's name (see leadflow keys list).")],
) -> None:
    """Revoke an API key: requests with it are refused (401) from now on, dashboard sessions included."""
    from leadflow.apikeys import KeyRefused, revoke_key

    db = _database()
    db.upgrade()
    try:
        key = revoke_key(db, name)
    except KeyRefused as refused:
        errors.print(str(refused), highlight=False, markup=False)
        raise typer.Exit(1) from None
    console.print(f"API key {name!r} is revoked (since {_minute(key.revoked_at)} UTC)", highlight=False)


DeadLetterIds = Annotated[
    list[int] | None, typer.Argument(help="Dead letter ids (see leadflow outbox dead-letters list).")
]
AllDeadLetters = Annotated[bool, typer.Option("--all", help="Every dead letter.")]


def _chosen_dead_letters(ids: list[int] | None, every: bool) -> list[int] | None:
    """The ids given, or None for all with --all; neither or both is a usage error."""
    if bool(ids) == every:
        errors.print("give dead letter ids or --all (not both)", highlight=False)
        raise typer.Exit(2)
    return None if every else ids


@dead_letters_app.command("list")
def dead_letters_list() -> None:
    """The events set aside because they can never be routed: lead, event, when, and why."""
    from leadflow.deadletters import dead_letters

    db = _database()
    db.upgrade()
    letters = dead_letters(db)
    table = Table("Id", "Lead", "Event", "Type", "Accepted", "Set aside", "Error", title="Dead letters (UTC)")
    for letter in letters:
        table.add_row(
            str(letter.id),
            str(letter.lead_id),
            str(letter.event_id),
            letter.event_type or "(erased)",
            _minute(letter.created_at),
            _minute(letter.set_aside_at),
            letter.error,
        )
    console.print(table)
    console.print(f"{len(letters)} dead letter(s)", highlight=False)


@dead_letters_app.command("retry")
def dead_letters_retry(ids: DeadLetterIds = None, every: AllDeadLetters = False) -> None:
    """Put dead letters back into the outbox (after a fix): the router tries them again, and sets aside
    again any that still cannot be routed."""
    from leadflow.deadletters import retry

    db = _database()
    db.upgrade()
    back = retry(db, _chosen_dead_letters(ids, every))
    console.print(f"{back} dead letter(s) back in the outbox", highlight=False)


@dead_letters_app.command("drop")
def dead_letters_drop(ids: DeadLetterIds = None, every: AllDeadLetters = False) -> None:
    """Forget dead letters: their events stay stored (the lead's timeline shows them) but never reach the
    lead's workflow."""
    from leadflow.deadletters import drop

    db = _database()
    db.upgrade()
    dropped = drop(db, _chosen_dead_letters(ids, every))
    console.print(f"{dropped} dead letter(s) dropped", highlight=False)


def _minute(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment else "–"


@keys_app.command("vapid")
def keys_vapid() -> None:
    """Generate a VAPID key pair for web push: the private key goes into LEADFLOW_VAPID_PRIVATE_KEY, the
    public one is the applicationServerKey your web page subscribes with (also at GET /v1/push/key)."""
    from leadflow.channels.webpush import generate_vapid_keys

    keys = generate_vapid_keys()
    console.print(f"LEADFLOW_VAPID_PRIVATE_KEY={keys.private_key}", highlight=False, soft_wrap=True)
    console.print(f"# applicationServerKey (public): {keys.public_key}", highlight=False, soft_wrap=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema to the newest version."""
    from leadflow.store import Database

    settings = get_settings()
    Database(settings.resolved_database_url).upgrade()
    console.print(f"schema is up to date ({settings.resolved_database_url.split('@')[-1]})")


@app.command()
def check(
    directory: Annotated[
        Path | None, typer.Argument(help="Content directory (default: LEADFLOW_CONTENT_DIR).")
    ] = None,
    output: FormatOption = Output.table,
) -> None:
    """Check every content file (scoring model, segments, sequences, templates, sales team, sites)."""
    directory = directory or get_settings().content_dir
    if output is Output.table:
        content = _content_or_exit(directory)
        _print_warnings(content)
        console.print(
            f"[green]ok[/] {directory}: scoring model {content.scoring.version}, "
            f"{len(content.segments)} segment(s), {len(content.sequences)} sequence(s), "
            f"{len(content.salespeople)} salespeople, {len(content.sites)} site(s)"
        )
        return
    try:
        content = load_content(directory)
    except (ContentError, ContentErrors) as problem:
        found = problem.errors if isinstance(problem, ContentErrors) else [problem]
        _print_json({"ok": False, "directory": str(directory), "problems": _as_json(found)})
        raise typer.Exit(1) from None
    _print_warnings(content)
    _print_json(
        {
            "ok": True,
            "directory": str(directory),
            "problems": [],
            "warnings": _as_json(content.warnings),
            "scoring_model": content.scoring.version,
            "segments": sorted(content.segments),
            "sequences": sorted(content.sequences),
            "salespeople": len(content.salespeople),
            "sites": len(content.sites),
        }
    )


@app.command()
def preview(
    template: Annotated[str, typer.Argument(help="CHANNEL/NAME (email/webinar_invite), or NAME for email.")],
    lead: Annotated[
        str | None, typer.Option("--lead", help="Render for this lead (id, email, anonymous id).")
    ] = None,
    sample: Annotated[
        Path | None,
        typer.Option(
            "--sample",
            help="Render for the lead in this YAML/JSON file (its properties; `event:` the entering event).",
        ),
    ] = None,
) -> None:
    """Render a message template the way a lead would receive it: subject, text and HTML (or SMS / push)."""
    from leadflow.content.templates import TemplateRenderError

    channel, _, name = template.rpartition("/")
    channel = channel or "email"
    settings = get_settings()
    content = _content(settings.content_dir)
    problem = content.templates.problem_with(channel, name) if channel in ("email", "sms", "push") else None
    if channel not in ("email", "sms", "push") or problem:
        errors.print(
            problem or f"unknown channel {channel!r}: email, sms or push", highlight=False, markup=False
        )
        raise typer.Exit(1)
    if (lead is None) == (sample is None):
        errors.print("give one of --lead EMAIL or --sample FILE")
        raise typer.Exit(2)
    context = _lead_context(lead, channel, name) if lead else _sample_context(sample)  # type: ignore[arg-type]
    try:
        parts = content.templates.render(channel, name, context)
    except TemplateRenderError as error:
        errors.print(f"cannot render: {error}", highlight=False, markup=False)
        raise typer.Exit(1) from None
    for part, text in parts.items():
        console.rule(f"[bold]{part}[/]", align="left")
        console.print(text, highlight=False, markup=False)


def _lead_context(reference: str, channel: str, template: str) -> dict[str, Any]:
    from leadflow.leads import find_lead, preview_context

    db = _database()
    with db.read() as session:
        found = find_lead(session, reference)
        if found is None:
            errors.print(f"no lead {reference!r}")
            raise typer.Exit(1)
        return preview_context(session, found, channel, template)


def _sample_context(path: Path) -> dict[str, Any]:
    """A sample lead file: its properties, plus email / stage / score when given (defaults otherwise), and
    optionally `event:` (type, occurred_at, properties), the event that made the lead enter the segment."""
    from leadflow.content.yamlfile import YamlFile
    from leadflow.leads import EVENT_FIELDS, event_context

    try:
        data = YamlFile(path).data
    except (ContentError, OSError) as problem:
        errors.print(str(problem), highlight=False, markup=False)
        raise typer.Exit(1) from None
    if not isinstance(data, dict):
        errors.print(f"{path}: a sample is a mapping of lead properties (first_name: Ada, …)")
        raise typer.Exit(1)
    event = data.pop("event", None)
    if event is None:
        event = event_context(None)
    elif (
        not isinstance(event, dict)
        or set(event) - set(EVENT_FIELDS)
        or not isinstance(event.get("properties", {}), dict)
    ):
        errors.print(
            f"{path}: `event` is the event that made the lead enter the segment: a mapping of "
            "type, occurred_at and properties (event: {type: ebook_downloaded, properties: {title: …}})",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(1)
    lead = {"id": 0, "email": "sample@example.com", "stage": "lead", "score": 0, "company": None, **data}
    return {"lead": lead, "event": {"properties": {}, **event}}


@app.command()
def simulate(
    sequence: Annotated[str, typer.Argument(help="The sequence id (templates/sequences/ID.yaml).")],
    events: Annotated[Path, typer.Option("--events", help="The script: what leads do and when (YAML/JSON).")],
    leads: Annotated[int, typer.Option("--leads", min=1, help="How many leads play the script.")] = 1,
    timelines: Annotated[int, typer.Option(help="Print the timelines of this many leads.")] = 10,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1, help="Processes sharing the leads (default: one per CPU, 50 leads or more each)."
        ),
    ] = None,
    output: FormatOption = Output.table,
) -> None:
    """Run a sequence on the real workflows, on a time-skipping Temporal server: every lead's timeline and
    the totals, in seconds, before the campaign touches a real lead."""
    from leadflow.simulation import load_script, quiet_temporal_core
    from leadflow.simulation import simulate as run_simulation

    settings = get_settings()
    content = _content(settings.content_dir)
    if sequence not in content.sequences:
        errors.print(f"unknown sequence {sequence!r} (known: {', '.join(sorted(content.sequences))})")
        raise typer.Exit(1)
    try:
        script = load_script(events)
    except (ContentError, ContentErrors) as problem:
        for line in str(problem).splitlines():
            errors.print(line, highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("temporalio").setLevel(logging.ERROR)
    quiet_temporal_core()
    report = asyncio.run(
        run_simulation(
            content, sequence, script, leads, lambda line: errors.print(line, highlight=False), processes
        )
    )
    if output is Output.json:
        _print_json(_simulation_json(report, timelines))
        return
    for timeline in report.leads[:timelines]:
        table = Table("when", "what")
        for entry in timeline.entries:
            table.add_row(_offset(entry.at - report.started_at), entry.what)
        # On its own line: a table's title is cut to the table's width.
        console.print(f"[italic]{timeline.email}: {timeline.outcome}", highlight=False)
        console.print(table)
    totals = Table(
        "total", "count", title=f"{sequence}: {len(report.leads)} lead(s), {report.horizon.days} days"
    )
    for name in ("leads", "enrolled", "enrollments"):
        totals.add_row(name, str(report.totals[name]))
    for group in ("outcomes", "messages", "decisions"):
        for key, count in report.totals[group].items():
            totals.add_row(f"{group[:-1]}: {key}", str(count))
    console.print(totals)
    console.print(f"simulated in {report.wall_seconds:.1f}s of real time")


def _simulation_json(report: Any, timelines: int) -> dict[str, Any]:
    return {
        "sequence": report.sequence_id,
        "started_at": report.started_at.isoformat(),
        "horizon_days": report.horizon.days,
        "wall_seconds": round(report.wall_seconds, 3),
        "totals": report.totals,
        "leads": [
            {
                "email": timeline.email,
                "outcome": timeline.outcome,
                "timeline": [
                    {
                        "at": entry.at.isoformat(),
                        "offset_seconds": int((entry.at - report.started_at).total_seconds()),
                        "what": entry.what,
                    }
                    for entry in timeline.entries
                ],
            }
            for timeline in report.leads[:timelines]
        ],
    }


def _print_warnings(content: Content) -> None:
    for warning in content.warnings:
        errors.print(str(warning), highlight=False, markup=False, soft_wrap=True)


def _as_json(found: list[ContentError]) -> list[dict[str, Any]]:
    return [{"file": str(error.path), "line": error.line, "reason": error.reason} for error in found]


def _offset(delta: timedelta) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    return f"day {days} {rest // 3600:02d}:{rest % 3600 // 60:02d}"


def _content(directory: Path) -> Content:
    _content_or_exit(directory)
    return load_content(directory)


@app.command()
def mail(number: Annotated[int | None, typer.Argument(help="Show this email in full.")] = None) -> None:
    """List the emails the development mail catcher received, or show one."""
    from leadflow.mailcatcher import caught_mail

    directory = get_settings().data_dir / "mail"
    caught = caught_mail(directory)
    if number is None:
        table = Table("#", "Date", "To", "Subject", title=f"{len(caught)} email(s) in {directory}")
        for item in caught:
            summary = item.summary
            table.add_row(str(item.number), summary["Date"], summary["To"], summary["Subject"])
        console.print(table)
        return
    if not 1 <= number <= len(caught):
        errors.print(f"no email number {number}: there are {len(caught)}")
        raise typer.Exit(1)
    item = caught[number - 1]
    for key, value in item.summary.items():
        console.print(f"[bold]{key}:[/] {value}", highlight=False)
    console.print()
    console.print(item.body("plain"), highlight=False, markup=False)


@app.command()
def report(
    since: Annotated[str, typer.Option(help="The period: 48h, 30d, 12w or all.")] = "30d",
    output: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
) -> None:
    """The funnel, sequence performance per step, the hand-off to sales and scoring health for a period."""
    import csv
    import sys

    from leadflow import clock
    from leadflow.reports import Period, build_report, tables

    if output not in ("table", "json", "csv"):
        errors.print(f"--format {output!r}: expected table, json or csv")
        raise typer.Exit(2)
    try:
        period = Period.last(since, clock.now())
    except ValueError as problem:
        errors.print(str(problem))
        raise typer.Exit(2) from None
    with _database().read() as session:
        result = build_report(session, period)
    if output == "json":
        _print_json(result.as_json())
        return
    if output == "csv":
        writer = csv.writer(sys.stdout)
        for table in tables(result):
            writer.writerow(["table", *table.headers])
            writer.writerows([table.title, *row] for row in table.rows)
            writer.writerow([])
        return
    console.print(f"[bold]Leadflow report[/] {period.start:%Y-%m-%d %H:%M} – {period.end:%Y-%m-%d %H:%M} UTC")
    for table in tables(result):
        shown = Table(*table.headers, title=table.title, title_justify="left")
        for row in table.rows:
            shown.add_row(*row)
        console.print(shown)


@leads_app.command("show")
def leads_show(
    reference: Annotated[str, typer.Argument(help="Lead id, email or anonymous id.")],
    output: FormatOption = Output.table,
) -> None:
    """A lead with its score explained (every contribution, before and after decay), stage history,
    sequences."""
    from leadflow.leads import find_lead, lead_document

    with _database().read() as session:
        lead = find_lead(session, reference)
        if lead is None:
            errors.print(f"no lead {reference!r}")
            raise typer.Exit(1)
        document = lead_document(session, lead)
    if output is Output.json:
        _print_json(document)
        return
    score = document["score"]
    account = document["account"]
    console.print(
        f"[bold]{document['email'] or reference}[/]  stage {document['stage']}  "
        f"score {score['total']} (fit {score['fit']}, behavior {score['behavior']}, "
        f"account {score['account']})  grade {score['grade']}  {score['temperature']}"
        + (f"  account {account['domain']}{' (hot)' if account['hot'] else ''}" if account else ""),
        highlight=False,
        soft_wrap=True,
    )
    _print_breakdown(score["breakdown"], f"Score breakdown (model {score['model_version']})")
    console.print_json(json.dumps({k: document[k] for k in ("stage_history", "sequences")}, default=str))


def _print_breakdown(breakdown: list[dict[str, Any]], title: str) -> None:
    table = Table("Rule", "Event", "When", "Before decay", "Points", "Why", title=title)
    for item in breakdown:
        table.add_row(
            item["rule"],
            item["event_type"] or f"({item['kind']})",
            (item["occurred_at"] or "")[:16],
            f"{item['points_before_decay']:+g}",
            f"{item['points']:+g}",
            item["note"],
        )
    console.print(table)


@leads_app.command("score")
def leads_score(
    reference: Annotated[str, typer.Argument(help="Lead id, email or anonymous id.")],
    at: Annotated[
        datetime | None,
        typer.Option(help="Recompute the score at this past time (UTC unless a zone is given)."),
    ] = None,
    output: FormatOption = Output.table,
) -> None:
    """Recompute a lead's score from the ledger, as it was at a past time (default: now)."""
    from leadflow import clock
    from leadflow.leads import find_lead
    from leadflow.qualification import score_at

    moment = (at if at and at.tzinfo else at.replace(tzinfo=UTC)) if at else clock.now()
    with _database().read() as session:
        lead = find_lead(session, reference)
        if lead is None:
            errors.print(f"no lead {reference!r}")
            raise typer.Exit(1)
        past = score_at(session, lead.id, moment)
        if past is None:
            errors.print(f"the ledger has no score for {reference!r} at {moment.isoformat()}")
            raise typer.Exit(1)
        entry_at, entry_score = past.snapshot.computed_at, past.snapshot.score
    result = past.result
    if output is Output.json:
        _print_json(
            {
                "reference": reference,
                "at": moment.isoformat(),
                **result.figures(),
                "model_version": past.model_version,
                "ledger_entry": {"computed_at": entry_at.isoformat(), "score": entry_score},
            }
        )
        return
    console.print(
        f"[bold]{reference}[/] at {moment.isoformat()}: score {result.score} (fit {result.fit}, "
        f"behavior {result.behavior_points}, account {result.account}), grade {result.grade}, "
        f"{result.temperature}; model {past.model_version}; ledger entry of {entry_at.isoformat()}: "
        f"{entry_score}",
        highlight=False,
        soft_wrap=True,
    )
    _print_breakdown([c.as_json() for c in result.contributions], "Recomputed breakdown")


@leads_app.command("recycle")
def leads_recycle(
    reference: Annotated[str, typer.Argument(help="Lead id, email or anonymous id.")],
    reason: Annotated[str, typer.Option(help="Why sales handed the lead back.")],
) -> None:
    """Recycle a lead handed back by sales: stamped "recycled", it qualifies again on new engagement."""
    from leadflow import clock
    from leadflow.leads import find_lead
    from leadflow.qualification import NotRecyclable, recycle

    model = _content_or_exit(get_settings().content_dir).scoring
    with _database().transaction() as session:
        lead = find_lead(session, reference)
        if lead is None:
            errors.print(f"no lead {reference!r}")
            raise typer.Exit(1)
        try:
            rescored = recycle(session, lead.id, reason, model, clock.now())
        except NotRecyclable as refused:
            errors.print(str(refused))
            raise typer.Exit(1) from None
    console.print(f"{reference} is recycled; score now {rescored.result.score}")


@app.command()
def rescore(
    batch_size: Annotated[int, typer.Option(min=1, help="Leads per transaction.")] = 500,
    notify: Annotated[
        bool, typer.Option(help="Wake the workflows of leads promoted to SQL, so sales hears at once.")
    ] = True,
) -> None:
    """Rescore every lead with the current scoring model (after changing it). Batched and restartable:
    run it again after an interruption and it resumes where it stopped."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from leadflow.rescoring import leads_to_rescore, rescore_everyone

    model = _content_or_exit(get_settings().content_dir).scoring
    db = _database()
    db.upgrade()
    remaining, done = leads_to_rescore(db, model)
    if done:
        console.print(f"resuming the unfinished run for model {model.version}: {done} leads already done")
    columns = (*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"rescoring with model {model.version}", total=remaining)
        report = rescore_everyone(db, model, batch_size, lambda n: progress.advance(task, n))
    console.print(
        f"rescored {report.leads} leads with model {report.model_version}: "
        f"[bold]{report.changed_stage}[/] changed stage"
    )
    if report.transitions:
        table = Table("From", "To", "Leads")
        for transition, count in sorted(report.transitions.items()):
            before, after = transition.split("→")
            table.add_row(before, after, str(count))
        console.print(table)
    if notify and report.promoted_to_sql:
        asyncio.run(_wake_lead_workflows(report.promoted_to_sql))


async def _wake_lead_workflows(lead_ids: list[int]) -> None:
    """Promotions to SQL are handed to sales by each lead's workflow: signal them to look now."""
    from leadflow.contracts import LeadWorkflowInput
    from worker import connect
    from workflows.lead import LeadWorkflow

    settings = get_settings()
    try:
        client = await connect(settings, _database())
        for lead_id in lead_ids:
            await client.start_workflow(
                LeadWorkflow.run,
                LeadWorkflowInput(lead_id),
                id=settings.lead_workflow_id(lead_id),
                task_queue=settings.task_queue,
                start_signal="rescore",
                start_signal_args=["the scoring model changed"],
            )
        console.print(f"{len(lead_ids)} lead(s) promoted to SQL are being handed to sales")
    except Exception as error:
        errors.print(
            f"could not reach Temporal ({error}); {len(lead_ids)} lead(s) promoted to SQL are handed to "
            "sales on their next event"
        )


def _database() -> Database:
    from leadflow.store import Database

    settings = get_settings()
    return Database(settings.resolved_database_url, address_key=settings.resolved_secret_key)


# --- scoring fit / evaluate ---------------------------------------------------------------------------

HistoryOption = Annotated[
    Path, typer.Option("--history", help="CSV of past leads: one row per lead, properties and the outcome.")
]
TargetOption = Annotated[
    str, typer.Option("--target", help="The outcome column: 1/0, yes/no, true/false or won/lost.")
]
JsonOption = Annotated[Path | None, typer.Option("--report-json", help="Write the report as JSON here.")]
HtmlOption = Annotated[
    Path | None, typer.Option("--report-html", help="Write the report as one HTML page with charts here.")
]


def _learning() -> Any:
    """The learning modules, or a clear exit when the optional `learn` extra is not installed."""
    try:
        from leadflow import scoring_fit
    except ImportError as missing:
        errors.print(
            f"leadflow scoring needs the learn extra ({missing.name} is missing): pip install 'leadflow[learn]'"
        )
        raise typer.Exit(1) from None
    return scoring_fit


def _history_or_exit(path: Path, target: str) -> Any:
    learning = _learning()
    try:
        return learning.read_history(path, target)
    except learning.HistoryError as problem:
        errors.print(str(problem), highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _write_reports(
    report: Any, json_path: Path | None, html_path: Path | None, output: Output, **about: Any
) -> None:
    """The report on stdout (a table, or JSON with `about` the run), and in the files asked for."""
    from leadflow.scoring_fit.report import print_report, report_html, report_json

    document = report_json(report)
    # With JSON on stdout, what is not the report goes to stderr.
    aside = console if output is Output.table else errors
    if output is Output.table:
        print_report(report, console)
    else:
        for warning in report.warnings:
            errors.print(f"warning: {warning}", highlight=False, markup=False)
    if json_path:
        json_path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        aside.print(f"report: {json_path}", highlight=False)
    if html_path:
        html_path.write_text(report_html(report), encoding="utf-8")
        aside.print(f"report: {html_path}", highlight=False)
    if output is Output.json:
        reports = {
            "report_json": str(json_path) if json_path else None,
            "report_html": str(html_path) if html_path else None,
        }
        _print_json({**about, **reports, "report": document})


@scoring_app.command("fit")
def scoring_fit(
    history: HistoryOption,
    target: TargetOption,
    out: Annotated[Path, typer.Option("--out", help="Write the learned model here (scoring.yaml format).")],
    id_column: Annotated[
        str | None, typer.Option("--id", help="The column naming each lead: never learned from.")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", help="A column not to learn from (repeatable).")
    ] = None,
    report_json_path: JsonOption = None,
    report_html_path: HtmlOption = None,
    folds: Annotated[int, typer.Option(min=2, max=20, help="Cross-validation folds.")] = 5,
    holdout: Annotated[float, typer.Option(min=0.05, max=0.5, help="Share of rows held out.")] = 0.25,
    bins: Annotated[int, typer.Option(min=1, max=20, help="Bands per numeric column.")] = 5,
    mql_top: Annotated[
        float, typer.Option(min=0.01, max=0.99, help="Share of past leads at or above MQL.")
    ] = 0.3,
    sql_top: Annotated[
        float, typer.Option(min=0.01, max=0.99, help="Share of past leads at or above SQL.")
    ] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of the split and the folds.")] = 0,
    output: FormatOption = Output.table,
) -> None:
    """Learn a points model from past outcomes; write it as scoring.yaml rules, with its evaluation."""
    learning = _learning()
    if sql_top >= mql_top:
        errors.print(f"--sql-top ({sql_top}) must be below --mql-top ({mql_top}): SQL is the smaller group")
        raise typer.Exit(2)
    table = _history_or_exit(history, target)
    options = learning.FitOptions(folds, holdout, bins, learning.VolumeTargets(mql_top, sql_top), seed)
    with errors.status("learning") as status:
        try:
            result = learning.fit_history(table, id_column, exclude or [], options, status.update)
        except learning.HistoryError as problem:
            errors.print(str(problem), highlight=False, markup=False, soft_wrap=True)
            raise typer.Exit(1) from None
    out.write_text(result.yaml_text, encoding="utf-8")
    stem = out.with_suffix("")
    if output is Output.table:
        console.print(f"[green]model:[/] {out} ({len(result.model.fit)} rules)", highlight=False)
    _write_reports(
        result.report,
        report_json_path or stem.with_name(f"{stem.name}.report.json"),
        report_html_path or stem.with_name(f"{stem.name}.report.html"),
        output,
        model=str(out),
        rules=len(result.model.fit),
    )


@scoring_app.command("evaluate")
def scoring_evaluate(
    history: HistoryOption,
    target: TargetOption,
    model_path: Annotated[Path, typer.Option("--model", help="A scoring model (scoring.yaml format).")],
    report_json_path: JsonOption = None,
    report_html_path: HtmlOption = None,
    output: FormatOption = Output.table,
) -> None:
    """Score past leads with a model (hand-written or fitted) and report how well it ranks them."""
    from leadflow.content.models import ScoringModel
    from leadflow.content.yamlfile import YamlFile

    learning = _learning()
    try:
        model = YamlFile(model_path).parse(ScoringModel)
    except (ContentError, ContentErrors) as problem:
        errors.print(str(problem), highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except OSError as problem:
        errors.print(f"{model_path}: cannot read it: {problem.strerror or problem}")
        raise typer.Exit(1) from None
    table = _history_or_exit(history, target)
    with errors.status("scoring") as status:
        report = learning.evaluate_history(model, table, status.update)
    _write_reports(report, report_json_path, report_html_path, output, model=str(model_path))
