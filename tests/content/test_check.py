"""The marketer's tools: `leadflow check` on a folder of broken content, `leadflow preview`, and
`leadflow simulate` running a campaign on the time-skipping server."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from leadflow.cli import app
from leadflow.content.loader import load_content
from leadflow.intake.ingest import EventIn, LeadIn, ingest_events, upsert_lead
from leadflow.platform import clock
from leadflow.platform.runtime import Runtime
from leadflow.platform.settings import PROJECT_ROOT
from leadflow.platform.store.models import Enrollment, Event
from leadflow.sequences.simulation import Script, SimulationReport, simulate
from tests.support.helpers import copy_content

MISTAKES = {
    "segments/impossible.yaml": """\
id: impossible
name: Impossible
entry:
  all:
    - property: company_size
      gt: 500
      lt: 50
    - count: {event: page_viewed, at_least: 3}
""",
    "segments/self_absent.yaml": """\
id: self_absent
name: Self absent
entry:
  absence:
    after: {event: form_started}
    missing: {event: form_started}
    within: 30m
""",
    "segments/typo.yaml": """\
id: typo
name: Typo
entry:
  cuont: {event: page_viewed, at_least: 3}
""",
    "segments/plain.yaml": "id: plain\nname: Plain\nentry: {event: trial_started}\n",
    "templates/sequences/broken.yaml": """\
id: broken
name: Broken
segment: plain
goal: {event: demo_requested}
exit_when: {left_segment: true}
steps:
  - send: {channel: email, template: ebook_delivery}
  - branch:
      if: {event: demo_requested}
      then:
        - send: {channel: email, template: no_such_template}
  - wait: 500d
  - wait_until: {start: '22:00', end: '23:00'}
  - split:
      - {name: A, weight: 1, steps: [{send: {channel: email, template: careless}}]}
      - {name: B, weight: 1, steps: [{send: {channel: sms, template: bare}}]}
""",
    "segments/plain_too.yaml": "id: plain_too\nname: Plain too\nentry: {event: trial_started}\n",
    "templates/sequences/typo.yaml": """\
id: typo
name: Typo
segment: plain_too
steps:
  - branch:
      if: {event: trial_started}
      else: [{sned: {}}]
""",
    "templates/email/careless.j2": """\
{% block subject %}Hi {{ lead.frist_name }}{% endblock %}
{% block html %}<p>{{ lead.job_title }} and {{ event.title }}</p>
<p>Your {{ event.properties.plan }} trial, started {{ event.occurred_at }}. <a href="{{ unsubscribe_url }}">Stop</a></p>
{{ campaign }}{% endblock %}
""",
    # A segment entered on the score alone: there is no event for its sequence's templates.
    "segments/scored.yaml": "id: scored\nname: Scored\nentry: {score: 40}\n",
    "templates/sequences/scored.yaml": """\
id: scored
name: Scored
segment: scored
steps:
  - send: {channel: email, template: thanks}
""",
    "templates/email/thanks.j2": """\
{% block subject %}Thanks{% endblock %}
{% block html %}<p>Enjoy {{ event.properties.title | default('our ebook') }}</p>{% endblock %}
""",
    # Entered on an event or on the score alone: the event's type is not always there.
    "segments/mixed.yaml": "id: mixed\nname: Mixed\nentry:\n  any: [{event: webinar_attended}, {score: 60}]\n",
    "templates/sequences/mixed.yaml": """\
id: mixed
name: Mixed
segment: mixed
steps:
  - send: {channel: sms, template: mixed}
""",
    "templates/sms/mixed.j2": "{% block body %}\nThanks for {{ event.type }}{% endblock %}\n",
    # Right: every event page view entering this segment has a url (its `where` says so).
    "segments/event_fans.yaml": "id: event_fans\nname: Event fans\nentry:\n  event: page_viewed\n"
    "  where: {url: {glob: '/events/*'}}\n",
    "templates/sequences/event_fans.yaml": """\
id: event_fans
name: Event fans
segment: event_fans
steps:
  - send: {channel: email, template: event_fans}
""",
    "templates/email/event_fans.j2": """\
{% block subject %}About {{ event.properties.title | default('the event') }}{% endblock %}
{% block html %}<p>You looked at <a href="{{ event.properties.url }}">the event</a> {{ event.occurred_at }}</p>{% endblock %}
""",
    "templates/sms/bare.j2": "Hi {{ lead.first_name | default('') }}\n",
    "sending.yaml": "default_timezone: Mars/Olympus\nquiet_hours: {start: '21:00', end: '08:00', channels: [email]}\n",
}


def test_check_reports_every_mistake_in_a_broken_folder_with_file_line_and_fix(tmp_path: Path) -> None:
    copy_content(tmp_path)
    for name, text in MISTAKES.items():
        (tmp_path / name).write_text(text)
    result = CliRunner().invoke(app, ["check", str(tmp_path)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = result.output.splitlines()

    def reported(path: str, line: int, words: str) -> bool:
        return any(entry.startswith(f"{tmp_path / path}:{line}: ") and words in entry for entry in lines)

    expected = [
        (
            "segments/impossible.yaml",
            3,
            "the entry rule can never match: no value is above 500.0 and below 50",
        ),
        ("segments/self_absent.yaml", 3, "the trigger is its own follow-up"),
        ("segments/typo.yaml", 3, "entry: a rule is one of: event, count, absence"),
        ("sending.yaml", 1, "default_timezone: unknown timezone 'Mars/Olympus'"),
        ("templates/sequences/broken.yaml", 5, "segment 'plain' has no exit rule"),
        ("templates/sequences/broken.yaml", 10, "unreachable: the sequence's goal 'demo_requested'"),
        ("templates/sequences/broken.yaml", 11, "no email template 'no_such_template'"),
        ("templates/sequences/broken.yaml", 12, "a wait of 500 days never ends"),
        # sending.yaml is refused, so its defaults hold: quiet from 21:00 to 08:00
        (
            "templates/sequences/broken.yaml",
            13,
            "the window 22:00-23:00 lies inside the quiet hours 21:00-08:00",
        ),
        ("templates/sequences/broken.yaml", 16, "lacks the block(s) body"),  # where it is used ...
        ("templates/sequences/typo.yaml", 7, "steps.0.branch.else.0: a step is one of: send, wait"),
        ("templates/email/careless.j2", 1, "`lead.frist_name` is not a property leads are known to have"),
        ("templates/email/careless.j2", 2, "not every lead has `lead.job_title`"),
        ("templates/email/careless.j2", 2, "`event.title`: an event has type, occurred_at, properties"),
        ("templates/email/careless.j2", 3, "not every trial_started event has `event.properties.plan`"),
        ("templates/email/careless.j2", 4, "`campaign` is not something a sequence message knows"),
        ("templates/email/thanks.j2", 2, "no event makes a lead enter segment 'scored'"),
        ("templates/sms/mixed.j2", 2, "a lead can enter segment 'mixed' without an event"),
    ]
    for path, line, words in expected:
        assert reported(path, line, words), (path, line, words, lines)
    assert any("did you mean lead.first_name?" in entry for entry in lines)
    assert any("did you mean event.properties.title?" in entry for entry in lines)
    # ... and the template file itself, which every template check reports whether a sequence uses it or not
    assert (
        f"{tmp_path / 'templates/sms/bare.j2'}:1: lacks the block(s) body: add {{% block body %}}…{{% endblock %}}"
        in lines
    )
    assert len(lines) == len(expected) + 1, lines


def test_the_wait_until_window_inside_quiet_hours_is_reported(tmp_path: Path) -> None:
    copy_content(tmp_path)
    (tmp_path / "sending.yaml").write_text("quiet_hours: {start: '21:00', end: '08:00', channels: [email]}\n")
    sequence = tmp_path / "templates/sequences/event_page_help.yaml"
    sequence.write_text(
        sequence.read_text().replace("start: '09:00', end: '18:00'", "start: '22:00', end: '23:30'")
    )
    result = CliRunner().invoke(app, ["check", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{sequence}:11: the window 22:00-23:30 lies inside the quiet hours 21:00-08:00" in result.output


def test_preview_renders_a_template_for_a_sample_or_a_stored_lead(
    tmp_path: Path, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample = tmp_path / "lead.yaml"
    sample.write_text("first_name: Lin\ncompany: Initech\n")
    result = CliRunner().invoke(app, ["preview", "webinar_invite", "--sample", str(sample)])
    assert result.exit_code == 0, result.output
    assert "Lin, join our live webinar on lead nurturing" in result.output
    assert "Save my seat (https://leadflow.localhost/webinars/nurture-live)" in result.output  # the text part
    assert '<a href="https://leadflow.localhost/webinars/nurture-live">' in result.output  # the HTML part

    # The event that made the lead enter the segment, as the sequence's templates see it.
    sample.write_text(
        "first_name: Lin\nevent:\n  type: ebook_downloaded\n  properties: {title: Scoring 101}\n"
    )
    with_event = CliRunner().invoke(app, ["preview", "ebook_delivery", "--sample", str(sample)])
    assert with_event.exit_code == 0, with_event.output
    assert (
        "Your ebook: Scoring 101" in with_event.output and "<strong>Scoring 101</strong>" in with_event.output
    )
    sample.write_text("first_name: Lin\nevent: ebook_downloaded\n")
    bad = CliRunner().invoke(app, ["preview", "ebook_delivery", "--sample", str(sample)])
    assert bad.exit_code == 1 and "a mapping of type, occurred_at and properties" in " ".join(
        bad.output.split()
    )

    ada, _ = upsert_lead(runtime.db, LeadIn(email="ada@acme.test", properties={"first_name": "Ada"}))
    ingest_events(
        runtime.db,
        [EventIn(id="ada-ebook", type="ebook_downloaded", email=ada.email, properties={"title": "Funnels"})],
    )
    with runtime.db.transaction() as session:  # what the assess activity records when Ada enrolls
        sequence = runtime.content.sequences["ebook_follow_up"]
        session.add(
            Enrollment(
                workflow_id="ebook-ada",
                lead_id=ada.id,
                sequence_id=sequence.id,
                sequence_version=sequence.version,
                definition=sequence.model_dump(mode="json"),
                started_at=clock.now(),
                event_id=session.scalars(select(Event.id).where(Event.key == "ada-ebook")).one(),
            )
        )
    monkeypatch.setenv("LEADFLOW_DATABASE_URL", runtime.db.url)
    from leadflow.platform.settings import get_settings

    get_settings.cache_clear()
    try:
        stored = CliRunner().invoke(app, ["preview", "sms/form_reminder", "--lead", "ada@acme.test"])
        enrolled = CliRunner().invoke(app, ["preview", "ebook_delivery", "--lead", "ada@acme.test"])
        missing = CliRunner().invoke(app, ["preview", "email/nope", "--lead", "ada@acme.test"])
    finally:
        get_settings.cache_clear()
    assert stored.exit_code == 0, stored.output
    assert "Ada, your form at Leadflow Demo Co is one step from done" in stored.output
    assert enrolled.exit_code == 0 and "Your ebook: Funnels" in enrolled.output, enrolled.output
    assert missing.exit_code == 1 and "no email template 'nope'" in missing.output


def test_simulate_prints_each_leads_timeline_and_the_totals(tmp_path: Path) -> None:
    script = tmp_path / "events.yaml"
    script.write_text(
        """\
lead: {first_name: Sam}
horizon: 2d
events:
  - {at: 0m, type: form_started, properties: {form: demo}}
  - {at: 1h, type: form_submitted, properties: {form: demo}, leads: [2]}
"""
    )
    result = CliRunner().invoke(app, ["simulate", "abandoned_form", "--events", str(script), "--leads", "2"])
    assert result.exit_code == 0, result.output
    output = result.output
    assert "lead0001@lead0001.simulation.test: completed" in output
    assert "lead0002@lead0002.simulation.test: converted: goal form_submitted reached" in output
    assert "day 0 00:30 │ email form_reminder sent" in output
    assert "outcome: converted: goal form_submitted reached │ 1" in output
    bad = CliRunner().invoke(app, ["simulate", "nope", "--events", str(script)])
    assert bad.exit_code == 1 and "unknown sequence 'nope'" in bad.output


async def test_a_campaign_simulated_in_two_processes_adds_up_like_one() -> None:
    """Each process runs its own server, worker and store with a share of the leads; the report is one."""
    script = Script.model_validate(
        {
            "lead": {"first_name": "Sam"},
            "events": [
                {"at": "0m", "type": "ebook_downloaded"},
                {"at": "8d", "type": "webinar_registered", "leads": [1, 4]},
            ],
        }
    )
    content = load_content(PROJECT_ROOT)
    alone, shared = [
        await simulate(content, "ebook_follow_up", script, 4, lambda _: None, processes)
        for processes in (1, 2)
    ]
    latency = "enrollment_to_first_send_p50_seconds"  # real seconds: differs from run to run
    assert {**shared.totals, latency: None} == {**alone.totals, latency: None}
    assert len(shared.first_send_seconds) == 4 and shared.totals[latency] is not None
    assert shared.totals["outcomes"] == {"converted: goal webinar_registered reached": 2, "completed": 2}

    def story(report: SimulationReport) -> list[tuple[str, str, list[str]]]:
        return [
            (
                lead.email,
                lead.outcome,
                [f"{entry.at - report.started_at} {entry.what}" for entry in lead.entries],
            )
            for lead in report.leads
        ]

    # Within a minute, each share's own clock moved to the report's start (waits end on the whole minute).
    assert [(email, outcome, len(what)) for email, outcome, what in story(shared)] == [
        (email, outcome, len(what)) for email, outcome, what in story(alone)
    ]
    # More processes than leads: each lead is played once.
    one = await simulate(content, "ebook_follow_up", script, 1, lambda _: None, processes=2)
    assert one.totals["leads"] == 1 and [lead.email for lead in one.leads] == [alone.leads[0].email]
    assert [lead.entries[-1].at - shared.started_at for lead in shared.leads] == pytest.approx(
        [lead.entries[-1].at - alone.started_at for lead in alone.leads], abs=timedelta(minutes=2)
    )


def test_simulate_prints_the_report_without_temporals_own_warnings(tmp_path: Path) -> None:
    """Temporal's Rust core prints warnings on stdout by itself (the test server lacks a capability the
    worker asks for, a burst of leads makes slow tasks): none of the marketer's business."""
    script = tmp_path / "events.yaml"
    script.write_text("events:\n  - {at: 0m, type: ebook_downloaded}\n")
    leadflow = Path(sys.executable).parent / "leadflow"
    run = subprocess.run(
        [str(leadflow), "simulate", "ebook_follow_up", "--events", str(script), "--leads", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT_ROOT,
    )
    assert run.returncode == 0, run.stderr
    assert re.search(r"message: email ebook_delivery sent +│ 2 ", run.stdout), run.stdout
    assert "WARN" not in run.stdout + run.stderr, run.stdout


def leadflow_cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it: a process of its own."""
    command = [str(Path(sys.executable).parent / "leadflow"), *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_check_warns_about_rules_and_goals_on_events_nothing_sends(tmp_path: Path) -> None:
    """A goal on `event_registered`, which no site may send and Leadflow never records, would never fire:
    a warning at its line, not an error. The shipped content has none."""
    shipped = leadflow_cli("check", str(PROJECT_ROOT))
    assert shipped.returncode == 0 and "warning" not in shipped.stderr + shipped.stdout, shipped
    copy_content(tmp_path)
    sequence = tmp_path / "templates/sequences/event_page_help.yaml"
    sequence.write_text(sequence.read_text().replace("event: webinar_registered", "event: event_registered"))
    scoring = tmp_path / "scoring.yaml"
    scoring.write_text(
        scoring.read_text().replace(
            "event_types: [price_list_downloaded]", "event_types: [price_list_downloaded, partner_referred]"
        )
        + "  - {rule: Referred by a partner, event: partner_referred}\n"
    )
    assert "\nhand_off_now:" in scoring.read_text()  # the rule above lands in hand_off_now: a list of rules
    checked = leadflow_cli("check", str(tmp_path))
    assert checked.returncode == 0, checked
    warnings = checked.stderr.replace("\n", " ")
    assert f"{sequence}:5: warning: nothing sends 'event_registered' events" in warnings
    assert "to `server_events:` in sites.yaml if your servers post it to /v1/events" in warnings
    assert re.search(rf"{scoring}:\d+: warning: nothing sends 'partner_referred' events", warnings)
    assert warnings.count("warning:") == 2
    # Declared as sent by the site's servers: no warning.
    sites = tmp_path / "sites.yaml"
    sites.write_text(sites.read_text().replace("server_events: [", "server_events: [partner_referred, "))
    assert leadflow_cli("check", str(tmp_path)).stderr.count("warning:") == 1


def test_reachable_is_refused_in_a_segment_with_the_way_to_write_it(tmp_path: Path) -> None:
    copy_content(tmp_path)
    segment = tmp_path / "segments/texters.yaml"
    segment.write_text(
        "id: texters\nname: Texters\nentry:\n  all: [{event: form_started}, {reachable: sms}]\n"
    )
    checked = leadflow_cli("check", str(tmp_path))
    assert checked.returncode == 1
    assert f"{segment}:4: `reachable:` is decided when a sequence's branch runs" in checked.stderr.replace(
        "\n", " "
    )


def test_simulate_gives_leads_a_phone_and_sms_consent_so_the_sms_branch_is_played(tmp_path: Path) -> None:
    """Lead 1 has a phone and grants SMS consent in the script; lead 2 has a phone only; lead 3 a browser
    subscribed to push. The branch is decided on what consent records, as in production."""
    script = tmp_path / "events.yaml"
    script.write_text(
        """\
lead: {first_name: Sam}
lead_overrides:
  1: {phone: '+14155550101'}
  2: {phone: '+14155550102'}
  3: {push: true}
horizon: 2d
events:
  - {at: 0m, type: subscribed, properties: {channel: sms, source: demo form}, leads: [1]}
  - {at: 0m, type: form_started, properties: {form: demo}}
"""
    )
    result = leadflow_cli("simulate", "abandoned_form", "--events", str(script), "--leads", "3")
    assert result.returncode == 0, result
    decisions = re.findall(r"decision: step 2: branch: (\w+)\s*│ (\d+)", result.stdout)
    assert dict(decisions) == {"then": "1", "else": "2"}, result.stdout
    assert re.search(r"message: sms form_reminder skipped\s*│ 1", result.stdout)
    lead_one = result.stdout.split("lead0002@")[0]
    assert "step 2: branch: then" in lead_one and "event subscribed channel=sms" in lead_one
    script.write_text(script.read_text().replace("'+14155550102'", "'0102'"))
    bad = leadflow_cli("simulate", "abandoned_form", "--events", str(script))
    assert bad.returncode == 1 and f"{script}:4:" in bad.stderr + bad.stdout
    assert "phone '0102' is not an E.164 number" in bad.stderr + bad.stdout
