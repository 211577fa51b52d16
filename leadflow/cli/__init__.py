"""The `leadflow` command: one module per command group; this file lists them in the order `--help` shows."""

import typer

from leadflow.cli import content, db, keys, leads, outbox, processes, report, scoring

app = typer.Typer(
    help="Leadflow: events in, scored leads, durable nurture sequences, hand-off to sales.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
for command in (
    processes.dev,
    processes.worker,
    processes.api,
    content.check,
    content.preview,
    content.simulate,
    processes.mail,
    report.report,
    scoring.rescore,
):
    app.command()(command)
app.add_typer(keys.keys_app, name="keys")
app.add_typer(db.db_app, name="db")
app.add_typer(leads.leads_app, name="leads")
app.add_typer(scoring.scoring_app, name="scoring")
app.add_typer(outbox.outbox_app, name="outbox")

__all__ = ["app"]
