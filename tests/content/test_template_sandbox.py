"""A marketer's template cannot reach Python, nor stall or exhaust the worker: the classic Jinja sandbox
escapes and denial-of-service tricks are reported by `leadflow check` at their file and line, refused with a
clear error when a send renders them (a template edited on disk after the worker started), nothing is sent,
and the worker goes on sending the next lead's email."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from leadflow.cli import app
from leadflow.content.loader import load_content
from leadflow.content.templates import TemplateLibrary, TemplateRenderError
from leadflow.platform.runtime import Runtime
from leadflow.platform.store.models import Message
from tests.support.helpers import Inbox, copy_content, eventually, running_stack

# name: (the line that tries it, what `leadflow check` and the render say)
ESCAPES = {
    "class_mro": ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "`__class__` is a Python internal"),
    "lead_globals": ("{{ lead.__init__.__globals__ }}", "`__init__` is a Python internal"),
    "cycler_os": ("{{ cycler.__init__.__globals__.os.system('id') }}", "`__init__` is a Python internal"),
    "joiner_globals": ("{{ joiner.__init__.__globals__ }}", "`__init__` is a Python internal"),
    "namespace_globals": ("{{ namespace.__init__.__globals__ }}", "`__init__` is a Python internal"),
    "attr_filter": ("{{ lead|attr('__class__') }}", "`attr('__class__')` is a Python internal"),
    "attr_built": ("{{ lead|attr('__cla' ~ 'ss__') }}", "access to attribute '__class__'"),
    "item": ("{{ lead['__class__'] }}", "`['__class__']` is a Python internal"),
    "format_string": ("{{ '{0.__class__}'.format(lead) }}", "reads an attribute that is a Python internal"),
    "format_built": ("{{ ('{0._' ~ '_class__}').format(lead) }}", "access to attribute '__class__'"),
    "self_context": ("{{ self._TemplateReference__context }}", "`_TemplateReference__context` is a Python"),
    "namespace_set": (
        "{% set ns = namespace() %}{% set ns.__class__ = 1 %}",
        "`__class__` is a Python internal",
    ),
}
DENIALS = {
    "huge_range": ("{{ range(10**9)|length }}", "range(1000000000,) has more than 100000 numbers"),
    "nested_loops": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "more than 20000 steps of work",
    ),
    "string_times": ("{{ 'x' * 1000000000 }}", "`*` would make a value over 100000 characters"),
    "doubling": (
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "`~` makes a value of 131072 characters",
    ),
    "power": ("{{ 7 ** 9999999 }}", "`**` would make a number over 4096 bits"),
    "padding": ("{{ 'x'|center(1000000000) }}", "the center filter is given 1000000000"),
    "format_width": ("{{ '{:>999999999}'.format(1) }}", "a width or precision over 100000"),
    "percent_width": ("{{ '%0999999999d' % 1 }}", "a width or precision over 100000"),
    "replace_blowup": (
        "{{ ('a' * 50000)|replace('a', 'aaaa') }}",
        "the replace filter would make a value over 100000 characters",
    ),
    "macro_recursion": ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "needs too much (RecursionError)"),
    "macro_fan_out": (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
        "more than 20000 steps of work",
    ),
}
ATTACKS = {**ESCAPES, **DENIALS}


def attack_template(line: str) -> str:
    # The attack sits on line 3 of the html block, as it would in a real email.
    return (
        f"{{% block subject %}}Hello{{% endblock %}}\n{{% block html %}}\n<p>Hi</p>{line}\n{{% endblock %}}\n"
    )


def test_leadflow_check_reports_each_escape_and_each_denial_at_its_file_and_line(tmp_path: Path) -> None:
    copy_content(tmp_path)
    for name, (line, _) in ATTACKS.items():
        (tmp_path / f"templates/email/attack_{name}.j2").write_text(attack_template(line))
    started = time.monotonic()
    result = CliRunner().invoke(app, ["check", str(tmp_path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.output.splitlines()
    for name, (_, reason) in ATTACKS.items():
        where = f"{tmp_path / f'templates/email/attack_{name}.j2'}:3: "
        assert any(entry.startswith(where) and reason in entry for entry in lines), (name, reason, lines)
    assert time.monotonic() - started < 15  # the denials were cut short, not run


@pytest.mark.parametrize("name", list(ATTACKS))
def test_the_render_path_of_a_send_refuses_each_one_quickly_with_the_line(tmp_path: Path, name: str) -> None:
    line, reason = ATTACKS[name]
    (tmp_path / "email").mkdir()
    (tmp_path / "email/attack.j2").write_text(attack_template(line))
    library = TemplateLibrary(tmp_path)
    started = time.monotonic()
    with pytest.raises(TemplateRenderError) as refused:
        library.render_email("attack", {"lead": {"email": "ada@acme.test", "first_name": "Ada"}})
    assert time.monotonic() - started < 5  # cut short, not run (a fraction of a second on an idle machine)
    message = str(refused.value)
    assert message.startswith("template email/attack"), message
    assert "access to attribute" in message or "unsafe" in message or reason in message, message
    if "Recursion" not in message:
        assert "(email/attack.j2:3)" in message, message


def test_sms_and_push_renders_are_bounded_too(tmp_path: Path) -> None:
    (tmp_path / "sms").mkdir()
    (tmp_path / "push").mkdir()
    (tmp_path / "sms/loop.j2").write_text(
        "{% block body %}{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}{% endblock %}"
    )
    (tmp_path / "push/escape.j2").write_text(
        "{% block title %}{{ ''.__class__ }}{% endblock %}{% block body %}x{% endblock %}"
    )
    library = TemplateLibrary(tmp_path)
    with pytest.raises(TemplateRenderError, match="steps of work"):
        library.render_sms("loop", {"lead": {}})
    with pytest.raises(TemplateRenderError, match="__class__"):
        library.render_push("escape", {"lead": {}})


def test_what_marketers_write_still_renders(tmp_path: Path) -> None:
    (tmp_path / "email").mkdir()
    (tmp_path / "email/fine.j2").write_text(
        "{% block subject %}{{ lead.first_name|title }}, {{ '{:,}'.format(lead.deal) }} for {{ lead.company }}{% endblock %}"
        "{% block html %}{% macro money(n) %}${{ '{:,}'.format(n) }}{% endmacro %}"
        "<ul>{% for item in lead['items'] %}<li>{{ loop.index }}. {{ item|upper }} ~ {{ money(lead.deal) }}</li>"
        "{% endfor %}</ul>{{ ('-' * 20) ~ ' ' ~ lead.company|replace('Inc', 'Inc.') }}{% endblock %}"
    )
    lead = {"first_name": "ada", "deal": 2500000, "company": "Acme Inc", "items": ["a", "b"]}
    rendered = TemplateLibrary(tmp_path).render_email("fine", {"lead": lead})
    assert rendered.subject == "Ada, 2,500,000 for Acme Inc"
    assert "<li>2. B ~ $2,500,000</li>" in rendered.html and "-------------------- Acme Inc." in rendered.html


async def test_a_send_with_a_hostile_template_sends_nothing_and_the_worker_goes_on(
    runtime: Runtime, temporal: WorkflowEnvironment, inbox: Inbox, tmp_path: Path
) -> None:
    content_dir = copy_content(tmp_path)
    delivery = content_dir / "templates/email/ebook_delivery.j2"
    honest = delivery.read_text()
    hostile = replace(runtime, content=load_content(content_dir))  # checked while it was honest
    # Edited on disk after the worker started, without `leadflow check`: the render path is the last guard.
    delivery.write_text(attack_template(ATTACKS["nested_loops"][0] + ATTACKS["cycler_os"][0]))
    async with running_stack(hostile, temporal.client, inbox) as stack:
        await stack.api.post(
            "/v1/events", json={"id": "e-ada", "type": "ebook_downloaded", "email": "ada@acme.test"}
        )
        sequence = stack.client.get_workflow_handle(
            runtime.settings.sequence_workflow_id("ebook_follow_up", 1)
        )

        async def failed() -> bool:
            try:
                return (await sequence.describe()).status == WorkflowExecutionStatus.FAILED
            except Exception:
                return False  # not started yet

        await eventually(failed, timeout=20, message="the sequence did not stop on the refused template")
        history = await sequence.fetch_history()
        # Failures are encrypted with the lead's payloads: read them as the client's converter does.
        failures = []
        for event in history.events:
            if event.HasField("activity_task_failed_event_attributes"):
                error = await stack.client.data_converter.decode_failure(
                    event.activity_task_failed_event_attributes.failure
                )
                failures.append(str(error.__cause__ or "") + str(error))
        assert len(failures) == 1 and "steps of work" in failures[0], failures  # refused once, not retried

        # The marketer fixes the template; the same worker sends the next lead's email.
        delivery.write_text(honest)
        await stack.api.post(
            "/v1/events", json={"id": "e-bo", "type": "ebook_downloaded", "email": "bo@acme.test"}
        )
        await eventually(lambda: inbox.to("bo@acme.test"), timeout=20, message="the worker stopped sending")
    assert inbox.to("ada@acme.test") == []
    with runtime.db.read() as session:
        recipients = session.scalars(select(Message.recipient)).all()
    assert recipients == ["bo@acme.test"]
