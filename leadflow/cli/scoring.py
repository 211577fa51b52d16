"""`leadflow rescore` and `leadflow scoring fit / evaluate`: the scoring model applied, learned and measured."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from leadflow.cli.common import FormatOption, Output, console, content_or_exit, database, errors, print_json
from leadflow.content.yamlfile import ContentError, ContentErrors
from leadflow.platform.settings import get_settings

scoring_app = typer.Typer(
    help="Learn a points model from past outcomes, and measure any model against them.", no_args_is_help=True
)


def rescore(
    batch_size: Annotated[int, typer.Option(min=1, help="Leads per transaction.")] = 500,
    notify: Annotated[
        bool, typer.Option(help="Wake the workflows of leads promoted to SQL, so sales hears at once.")
    ] = True,
) -> None:
    """Rescore every lead with the current scoring model (after changing it). Batched and restartable:
    run it again after an interruption and it resumes where it stopped."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from leadflow.scoring.rescoring import leads_to_rescore, rescore_everyone

    model = content_or_exit(get_settings().content_dir).scoring
    db = database()
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
    from leadflow.contracts import LeadWorkflowInput, signal_name
    from worker import connect
    from workflows.lead import LeadWorkflow

    settings = get_settings()
    try:
        client = await connect(settings, database())
        for lead_id in lead_ids:
            await client.start_workflow(
                LeadWorkflow.run,
                LeadWorkflowInput(lead_id),
                id=settings.lead_workflow_id(lead_id),
                task_queue=settings.task_queue,
                start_signal=signal_name(LeadWorkflow.rescore),
                start_signal_args=["the scoring model changed"],
            )
        console.print(f"{len(lead_ids)} lead(s) promoted to SQL are being handed to sales")
    except Exception as error:
        errors.print(
            f"could not reach Temporal ({error}); {len(lead_ids)} lead(s) promoted to SQL are handed to "
            "sales on their next event"
        )


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
        from leadflow.scoring import fit as scoring_fit
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
    from leadflow.scoring.fit.report import print_report, report_html, report_json

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
        print_json({**about, **reports, "report": document})


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
    from leadflow.content.yamlfile import YamlFile
    from leadflow.scoring.model import ScoringModel

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
