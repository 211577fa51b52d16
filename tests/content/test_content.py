"""Marketer-authored content is checked before anything runs: every mistake named with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from leadflow.cli import app
from leadflow.content.loader import load_content
from leadflow.content.templates import TemplateLibrary, TemplateRenderError
from leadflow.content.yamlfile import ContentErrors
from leadflow.platform.settings import PROJECT_ROOT
from leadflow.sequences.model import Sequence


def test_the_shipped_content_is_valid() -> None:
    # Wide, so the summary line is not wrapped when the checkout lives at a long path.
    result = CliRunner().invoke(app, ["check", str(PROJECT_ROOT)], env={"COLUMNS": "1000"})
    assert result.exit_code == 0, result.output
    assert "4 sequence(s)" in result.output


def test_every_mistake_is_reported_with_file_and_line(content_dir: Path) -> None:
    scoring = content_dir / "scoring.yaml"
    scoring.write_text(
        scoring.read_text()
        .replace("matches: '/pricing'", "matches: '/pricing('")
        .replace("  sql: 80", "  sql: 30")
        .replace("    points: 50", "    points: lots")
    )
    sequence = content_dir / "templates/sequences/ebook_follow_up.yaml"
    sequence.write_text(
        sequence.read_text()
        .replace("wait: 3d", "wait: three days", 1)
        .replace("- send: {channel: email, template: webinar_invite}", "- sned: {}")
    )
    (content_dir / "segments/broken.yaml").write_text("id: broken\nname: [unclosed\n")

    result = CliRunner().invoke(app, ["check", str(content_dir)])
    assert result.exit_code == 1
    lines = result.output.splitlines()

    def reported(path: str, line: int, words: str) -> bool:
        return any(entry.startswith(f"{content_dir / path}:{line}: ") and words in entry for entry in lines)

    assert reported("scoring.yaml", 6, "must be above the mql threshold"), lines
    assert reported("scoring.yaml", 73, "behavior.0.points: Input should be a valid integer"), lines
    assert reported(
        "scoring.yaml", 77, "behavior.1.where.url.matches: regular expression '/pricing(' does not"
    ), lines
    assert reported("templates/sequences/ebook_follow_up.yaml", 8, "not like 30m, 12h, 3d or 2w"), lines
    assert reported("templates/sequences/ebook_follow_up.yaml", 12, "a step is one of: send, wait"), lines
    assert reported("segments/broken.yaml", 3, "flow sequence that starts on line 2"), lines
    assert len(lines) == 6, lines  # one line per mistake, no noise from the other forms a value may take
    assert "Traceback" not in result.output


def test_a_sequence_for_an_unknown_segment_and_unknown_fields_are_refused(content_dir: Path) -> None:
    sequence = content_dir / "templates/sequences/ebook_follow_up.yaml"
    sequence.write_text(
        sequence.read_text()
        .replace("segment: ebook_downloaders", "segment: nobody")
        .replace("template: ebook_tips", "template: ebook_tipz")
    )
    with pytest.raises(ContentErrors) as refused:
        load_content(content_dir)
    messages = [str(error) for error in refused.value.errors]
    assert any(
        ":3: unknown segment 'nobody' (known: abandoned_form, ebook_downloaders, event_page_regulars, webinar_registrants)"
        in m
        for m in messages
    ), messages
    assert any(":9: no email template 'ebook_tipz'" in m for m in messages), messages
    sequence.write_text(
        sequence.read_text().replace("segment: nobody", "segment: ebook_downloaders\ncolour: red")
    )
    with pytest.raises(ContentErrors, match=r":4: colour: unknown field"):
        load_content(content_dir)


def test_a_template_that_does_not_compile_is_refused(content_dir: Path) -> None:
    (content_dir / "templates/email/ebook_tips.j2").write_text(
        "{% block subject %}Hi {{ lead.name {% endblock %}"
    )
    with pytest.raises(ContentErrors, match=r"ebook_tips.j2:1 does not compile"):
        load_content(content_dir)


def test_templates_render_in_a_sandbox_with_strict_variables(tmp_path: Path) -> None:
    (tmp_path / "email").mkdir()
    (tmp_path / "email/escape.j2").write_text(
        "{% block subject %}x{% endblock %}{% block html %}{{ lead.__class__.__mro__ }}{% endblock %}"
    )
    (tmp_path / "email/typo.j2").write_text(
        "{% block subject %}Hi {{ lead.frist_name }}{% endblock %}{% block html %}<p>{{ lead.bio }}</p>{% endblock %}"
    )
    library = TemplateLibrary(tmp_path)
    with pytest.raises(TemplateRenderError, match=r"unsafe|__class__"):
        library.render_email("escape", {"lead": {}})
    with pytest.raises(TemplateRenderError, match="frist_name"):
        library.render_email("typo", {"lead": {"first_name": "Ada"}})
    rendered = library.render_email("typo", {"lead": {"frist_name": "Ada", "bio": "<script>x</script>"}})
    assert rendered.html == "<p>&lt;script&gt;x&lt;/script&gt;</p>"  # HTML is escaped, the text part is not
    assert rendered.text == "<script>x</script>"


def test_sms_and_push_templates_are_checked_whether_used_or_not(content_dir: Path) -> None:
    (content_dir / "templates/sms/no_body.j2").write_text("{% block text %}hi{% endblock %}\n")
    (content_dir / "templates/push/broken.j2").write_text(
        "{% block title %}x{% endblock %}\n{% block body %}{{ oops( {% endblock %}\n"
    )
    with pytest.raises(ContentErrors) as raised:
        load_content(content_dir)
    messages = [str(error) for error in raised.value.errors]
    assert any(
        m.startswith(f"{content_dir}/templates/sms/no_body.j2:1: lacks the block(s) body") for m in messages
    ), messages
    assert any(
        m.startswith(f"{content_dir}/templates/push/broken.j2:2: does not compile") for m in messages
    ), messages


def test_a_sequence_sender_must_be_an_address(content_dir: Path) -> None:
    sequence = content_dir / "templates/sequences/ebook_follow_up.yaml"
    sequence.write_text(
        sequence.read_text().replace(
            "segment: ebook_downloaders", "segment: ebook_downloaders\nsender: Ada from marketing"
        )
    )
    with pytest.raises(ContentErrors) as raised:
        load_content(content_dir)
    assert ":4: sender: 'Ada from marketing' is not an address" in str(raised.value)


def test_continue_after_handoff_is_the_short_way_to_keep_leads_sales_works_on(content_dir: Path) -> None:
    """`continue_after_handoff: true` and `exit_when: {handed_to_sales: false}` are one rule, read one way:
    enrolling a lead already with sales and exiting on the hand-off agree. A snapshot taken at enrollment
    before that (it holds the default `handed_to_sales: true` beside it) reads the same."""
    sequence = content_dir / "templates/sequences/ebook_follow_up.yaml"
    sequence.write_text(sequence.read_text().replace("reenroll:", "continue_after_handoff: true\nreenroll:"))
    loaded = load_content(content_dir).sequences["ebook_follow_up"]
    assert loaded.exit_when.handed_to_sales is False
    older_snapshot = loaded.model_dump(mode="json") | {
        "exit_when": {"handed_to_sales": True, "left_segment": False}
    }
    assert Sequence.model_validate(older_snapshot).exit_when.handed_to_sales is False
    with pytest.raises(ValidationError, match="exit_when"):
        Sequence.model_validate(older_snapshot | {"exit_when": "yes"})
