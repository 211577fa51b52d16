"""Loads and cross-checks a content directory; collects every mistake instead of stopping at the first."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from leadflow.content.models import (
    Salesperson,
    SalesTeam,
    ScoringModel,
    Segment,
    SendStep,
    Sequence,
    scoring_problems,
)
from leadflow.content.templates import TemplateLibrary
from leadflow.content.yamlfile import ContentError, ContentErrors, YamlFile

Model = TypeVar("Model", bound=BaseModel)

SCORING_FILE = "scoring.yaml"
SALES_FILE = "sales.yaml"


@dataclass
class Content:
    directory: Path
    scoring: ScoringModel
    segments: dict[str, Segment]
    sequences: dict[str, Sequence]
    sales: SalesTeam
    templates: TemplateLibrary
    sequence_by_segment: dict[str, Sequence] = field(init=False)

    def __post_init__(self) -> None:
        self.sequence_by_segment = {sequence.segment: sequence for sequence in self.sequences.values()}

    @property
    def salespeople(self) -> list[Salesperson]:
        return self.sales.salespeople


def load_content(directory: Path) -> Content:
    """The validated content of `directory`, or ContentErrors naming every file:line that is wrong."""
    errors: list[ContentError] = []
    scoring_path = directory / SCORING_FILE
    scoring = _parse_versioned(scoring_path, ScoringModel, errors) if scoring_path.exists() else None
    if not scoring_path.exists():
        errors.append(ContentError(scoring_path, None, "the scoring model file is missing"))
    if scoring_path.exists():
        errors.extend(_scoring_problems(scoring_path))
    if scoring:
        model, document = scoring
        scoring = model.model_copy(update={"source": scoring_path.read_text(encoding="utf-8")}), document

    segments: dict[str, Segment] = {}
    for path in sorted((directory / "segments").glob("*.y*ml")):
        if parsed_segment := _parse(path, Segment, errors):
            segment, document = parsed_segment
            if segment.id in segments:
                errors.append(document.error(("id",), f"segment id {segment.id!r} is used by another file"))
            segments[segment.id] = segment

    templates = TemplateLibrary(directory / "templates")
    sequences: dict[str, Sequence] = {}
    for path in sorted((directory / "templates" / "sequences").glob("*.y*ml")):
        if parsed_sequence := _parse_versioned(path, Sequence, errors):
            sequence, document = parsed_sequence
            errors.extend(_check_sequence(sequence, document, segments, sequences, templates))
            sequences[sequence.id] = sequence

    sales_path = directory / SALES_FILE
    team = _parse(sales_path, SalesTeam, errors) if sales_path.exists() else None
    if not sales_path.exists():
        errors.append(ContentError(sales_path, None, "the sales team file is missing"))

    if errors:
        raise ContentErrors(errors)
    assert scoring is not None and team is not None
    return Content(directory, scoring[0], segments, sequences, team[0], templates)


def _parse(path: Path, model: type[Model], errors: list[ContentError]) -> tuple[Model, YamlFile] | None:
    """The file as `model`, or None with its mistakes added to `errors`."""
    try:
        document = YamlFile(path)
        return document.parse(model), document
    except ContentError as error:
        errors.append(error)
    except ContentErrors as many:
        errors.extend(many.errors)
    return None


def _parse_versioned(
    path: Path, model: type[Model], errors: list[ContentError]
) -> tuple[Model, YamlFile] | None:
    """Like _parse, with `version` set to a digest of the file (what enrollments and score ledgers record)."""
    parsed = _parse(path, model, errors)
    if parsed is None:
        return None
    item, document = parsed
    return item.model_copy(update={"version": _digest(path)}), document


def _check_sequence(
    sequence: Sequence,
    document: YamlFile,
    segments: dict[str, Segment],
    seen: dict[str, Sequence],
    templates: TemplateLibrary,
) -> list[ContentError]:
    errors = []
    if sequence.id in seen:
        errors.append(document.error(("id",), f"sequence id {sequence.id!r} is used by another file"))
    if sequence.segment not in segments:
        known = ", ".join(sorted(segments)) or "none"
        errors.append(document.error(("segment",), f"unknown segment {sequence.segment!r} (known: {known})"))
    elif any(other.segment == sequence.segment for other in seen.values()):
        errors.append(document.error(("segment",), f"segment {sequence.segment!r} already has a sequence"))
    for index, step in enumerate(sequence.steps):
        if isinstance(step, SendStep):
            problem = templates.problem_with(step.send.channel, step.send.template)
            if problem:
                errors.append(document.error(("steps", index, "send", "template"), problem))
    return errors


def _scoring_problems(path: Path) -> list[ContentError]:
    try:
        document = YamlFile(path)
    except ContentError:
        return []  # not YAML at all: already reported
    return [
        document.error(where, f"{'.'.join(map(str, where))}: {reason}")
        for where, reason in scoring_problems(document.data)
    ]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
