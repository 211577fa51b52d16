"""A scoring model with mistakes is refused with file, line and reason, by `leadflow check` and by the
worker, which would rather not start than score every lead wrongly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from leadflow.cli import app
from leadflow.platform.settings import get_settings

BROKEN = """\
thresholds: {mql: 40, sql: 80}
groups:
  content:
    decay: {half_life: -3d}
  email:
    decay: {windows: [{within: 30d, keep: 150%}]}
fit:
  - rule: Senior
    property: job_title
    matches: '(vp|director'
    points: 15
  - rule: Big company
    property: company_size
    greater_than: 50
    points: 10
behavior:
  - rule: Pricing
    event: page_veiwed
    where: {url: {starts_with: /pricing}}
    points: 15
  - rule: Opens
    event: email_opened
    group: emails
    bands:
      - {from: 1, to: 5, points: 5}
      - {from: 5, to: 10, points: 10}
  - rule: Demo
    event: demo_requested
    points: 50
    bands: [{from: 1, points: 50}]
"""


@pytest.fixture
def broken_model(content_dir: Path) -> Path:
    (content_dir / "scoring.yaml").write_text(BROKEN)
    return content_dir


def test_check_names_every_mistake_in_the_scoring_model_with_its_line(broken_model: Path) -> None:
    result = CliRunner().invoke(app, ["check", str(broken_model)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    where = f"{broken_model / 'scoring.yaml'}:"
    expected = {
        4: "groups.content.decay.half_life: -3d is negative",
        6: "groups.email.decay.windows.0.keep: Input should be less than or equal to 1",
        10: "fit.0.matches: regular expression '(vp|director' does not compile",
        12: "fit.1: unknown operator 'greater_than' (operators: equals,",
        19: "behavior.0.where.url: unknown operator 'starts_with'",
        18: "behavior.0.event: unknown event type 'page_veiwed' (known: demo_requested,",
        23: "behavior.1.group: unknown group 'emails' (groups: content, email)",
        26: "behavior.1.bands.1: band from 5 overlaps the band from 1 to 5",
        27: "behavior.2: give either points (per event) or bands",
    }
    for line, reason in expected.items():
        assert any(entry.startswith(f"{where}{line}: {reason}") for entry in lines), (line, reason, lines)
    assert len(lines) == len(expected), lines
    assert "Traceback" not in result.output


@pytest.fixture
def settings_from_env() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_the_worker_refuses_to_start_on_an_invalid_model(broken_model: Path, settings_from_env: None) -> None:
    result = CliRunner().invoke(
        app,
        ["worker"],
        env={"LEADFLOW_CONTENT_DIR": str(broken_model), "LEADFLOW_TEMPORAL_ADDRESS": "127.0.0.1:1"},
    )
    assert result.exit_code == 1
    assert f"{broken_model / 'scoring.yaml'}:18: behavior.0.event: unknown event type" in result.output
