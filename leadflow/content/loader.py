"""Loads and cross-checks a content directory; collects every mistake instead of stopping at the first."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from leadflow.content.models import Salesperson, SalesTeam, ScoringModel, Segment, SendStep, Sequence
from leadflow.content.templates import REQUIRED_BLOCKS, TemplateLibrary
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
    salespeople: list[Salesperson]
    templates: TemplateLibrary
    sequence_by_segment: dict[str, Sequence] = field(init=False)

    def __post_init__(self) -> None:
        self.sequence_by_segment = {sequence.segment: sequence for sequence in self.sequences.values()}


def load_content(directory: Path) -> Content:
    """The validated content of `directory`, or ContentErrors naming every file:line that is wrong."""
    errors: list[ContentError] = []

    def parse(path: Path, model: type[Model]) -> tuple[Model, YamlFile] | None:
        try:
            document = YamlFile(path)
            return document.parse(model), document
        except ContentError as error:
            errors.append(error)
        except ContentErrors as many:
            errors.extend(many.errors)
        return None

    def versioned(path: Path, model: type[Model]) -> tuple[Model, YamlFile] | None:
        parsed = parse(path, model)
        if parsed is None:
            return None
        item, document = parsed
        return item.model_copy(update={"version": _digest(path)}), document

    scoring_path = directory / SCORING_FILE
    scoring = versioned(scoring_path, ScoringModel) if scoring_path.exists() else None
    if not scoring_path.exists():
        errors.append(ContentError(scoring_path, None, "the scoring model file is missing"))

    segments: dict[str, Segment] = {}
    for path in sorted((directory / "segments").glob("*.y*ml")):
        if parsed := parse(path, Segment):
            segment, document = parsed
            if segment.id in segments:
                errors.append(document.error(("id",), f"segment id {segment.id!r} is used by another file"))
            segments[segment.id] = segment

    templates = TemplateLibrary(directory / "templates")
    sequences: dict[str, Sequence] = {}
    for path in sorted((directory / "templates" / "sequences").glob("*.y*ml")):
        if parsed := versioned(path, Sequence):
            sequence, document = parsed
            errors.extend(_check_sequence(sequence, document, segments, sequences, templates))
            sequences[sequence.id] = sequence

    errors.extend(_check_templates(templates))

    sales_path = directory / SALES_FILE
    team = parse(sales_path, SalesTeam) if sales_path.exists() else None
    if not sales_path.exists():
        errors.append(ContentError(sales_path, None, "the sales team file is missing"))

    if errors:
        raise ContentErrors(errors)
    assert scoring is not None and team is not None
    return Content(directory, scoring[0], segments, sequences, team[0].salespeople, templates)


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


def _check_templates(templates: TemplateLibrary) -> list[ContentError]:
    """Every message template compiles and has its channel's blocks, used by a sequence yet or not."""
    errors = []
    for channel in REQUIRED_BLOCKS:
        for name in templates.names(channel):
            problem = templates.problem_at(channel, name)
            if problem:
                errors.append(ContentError(*problem))
    return errors


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
