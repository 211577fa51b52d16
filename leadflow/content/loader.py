"""Loads and cross-checks a content directory; collects every mistake instead of stopping at the first."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from leadflow.content.lint import lint_segment, lint_sequence, unproduced_events
from leadflow.content.templates import REQUIRED_BLOCKS, TemplateLibrary
from leadflow.content.yamlfile import ContentError, ContentErrors, YamlFile, decoded_text
from leadflow.handoff.model import Salesperson, SalesTeam
from leadflow.intake.tracking.model import Site, Sites
from leadflow.messaging.model import SendingPolicy
from leadflow.scoring.model import RECORDED_EVENT_TYPES, TRACKER_EVENTS, ScoringModel, scoring_problems
from leadflow.segments.model import Segment
from leadflow.sequences.model import Sequence

Model = TypeVar("Model", bound=BaseModel)

SCORING_FILE = "scoring.yaml"
SALES_FILE = "sales.yaml"
SITES_FILE = "sites.yaml"  # optional: websites allowed to send tracking events
SENDING_FILE = "sending.yaml"  # optional: quiet hours, frequency caps, default timezone
FOLDERS = {
    "segments": "one YAML file per segment",
    "templates": "templates/email/, sms/, push/ and sequences/",
    "templates/sequences": "one YAML file per sequence",
}


@dataclass
class Content:
    directory: Path
    scoring: ScoringModel
    segments: dict[str, Segment]
    sequences: dict[str, Sequence]
    sales: SalesTeam
    templates: TemplateLibrary
    sites: dict[str, Site] = field(default_factory=dict)  # by public key
    sending: SendingPolicy = field(default_factory=SendingPolicy)
    # Mistakes that do not stop the content from loading (`leadflow check` prints them): file:line: warning.
    warnings: list[ContentError] = field(default_factory=list)
    sequence_by_segment: dict[str, Sequence] = field(init=False)

    def __post_init__(self) -> None:
        self.sequence_by_segment = {sequence.segment: sequence for sequence in self.sequences.values()}

    @property
    def salespeople(self) -> list[Salesperson]:
        return self.sales.salespeople


def load_content(directory: Path) -> Content:
    """The validated content of `directory`, or ContentErrors naming every file:line that is wrong."""
    if not directory.is_dir():
        raise ContentErrors(
            [
                ContentError(
                    directory,
                    None,
                    f"no such folder: give the content folder (it holds {SCORING_FILE}, "
                    f"{', '.join(f'{folder}/' for folder in FOLDERS)})",
                )
            ]
        )
    errors: list[ContentError] = [
        ContentError(
            directory / folder,
            None,
            f"the folder is missing: create it ({why}), or check that {directory} is the content folder",
        )
        for folder, why in FOLDERS.items()
        if (directory / folder).parent.is_dir() and not (directory / folder).is_dir()
    ]
    scoring_path = directory / SCORING_FILE
    scoring = _parse_versioned(scoring_path, ScoringModel, errors) if scoring_path.exists() else None
    if not scoring_path.exists():
        errors.append(ContentError(scoring_path, None, "the scoring model file is missing: create it"))
    if scoring_path.exists():
        errors.extend(_scoring_problems(scoring_path))
    rule_documents: list[YamlFile] = []  # the files whose rules name event types
    if scoring:
        model, document = scoring
        rule_documents.append(document)
        scoring = model.model_copy(update={"source": decoded_text(scoring_path)}), document

    segments: dict[str, Segment] = {}
    for path in sorted((directory / "segments").glob("*.y*ml")):
        if parsed_segment := _parse(path, Segment, errors):
            segment, document = parsed_segment
            if segment.id in segments:
                errors.append(document.error(("id",), f"segment id {segment.id!r} is used by another file"))
            errors.extend(lint_segment(segment, document))
            rule_documents.append(document)
            segments[segment.id] = segment

    sending_path = directory / SENDING_FILE
    parsed_policy = _parse(sending_path, SendingPolicy, errors) if sending_path.exists() else None
    policy = parsed_policy[0] if parsed_policy else SendingPolicy()

    templates = TemplateLibrary(directory / "templates")
    sequences: dict[str, Sequence] = {}
    for path in sorted((directory / "templates" / "sequences").glob("*.y*ml")):
        if parsed_sequence := _parse_versioned(path, Sequence, errors):
            sequence, document = parsed_sequence
            errors.extend(_check_sequence(sequence, document, segments, sequences))
            errors.extend(
                lint_sequence(sequence, document, segments.get(sequence.segment), templates, policy)
            )
            sequences[sequence.id] = sequence
            rule_documents.append(document)

    errors.extend(_check_templates(templates))

    sales_path = directory / SALES_FILE
    team = _parse(sales_path, SalesTeam, errors) if sales_path.exists() else None
    if not sales_path.exists():
        errors.append(ContentError(sales_path, None, "the sales team file is missing: create it"))

    sites_path = directory / SITES_FILE
    sites = _parse(sites_path, Sites, errors) if sites_path.exists() else None

    if errors:
        raise ContentErrors(list({str(error): error for error in errors}.values()))  # one line per mistake
    assert scoring is not None and team is not None
    produced = TRACKER_EVENTS | RECORDED_EVENT_TYPES
    if sites:
        declared = sites[0]
        produced |= {event for site in declared.sites for event in site.events} | set(declared.server_events)
    return Content(
        directory,
        scoring[0],
        segments,
        sequences,
        team[0],
        templates,
        sites=_sites_by_key(*sites, errors) if sites else {},
        sending=policy,
        warnings=[
            warning for document in rule_documents for warning in unproduced_events(document, produced)
        ],
    )


def _sites_by_key(sites: Sites, document: YamlFile, errors: list[ContentError]) -> dict[str, Site]:
    by_key: dict[str, Site] = {}
    ids: set[str] = set()
    for index, site in enumerate(sites.sites):
        if site.key in by_key:
            errors.append(
                document.error(("sites", index, "key"), f"key {site.key!r} is used by another site")
            )
        if site.id in ids:
            errors.append(document.error(("sites", index, "id"), f"site id {site.id!r} is used twice"))
        by_key[site.key] = site
        ids.add(site.id)
    if errors:
        raise ContentErrors(errors)
    return by_key


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
) -> list[ContentError]:
    errors = []
    if sequence.id in seen:
        errors.append(document.error(("id",), f"sequence id {sequence.id!r} is used by another file"))
    if sequence.segment not in segments:
        known = ", ".join(sorted(segments)) or "none"
        errors.append(document.error(("segment",), f"unknown segment {sequence.segment!r} (known: {known})"))
    elif any(other.segment == sequence.segment for other in seen.values()):
        errors.append(document.error(("segment",), f"segment {sequence.segment!r} already has a sequence"))
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


def _check_templates(templates: TemplateLibrary) -> list[ContentError]:
    """Every message template compiles, has its channel's blocks and stays within the sandbox, used by a
    sequence yet or not."""
    errors = [ContentError(*problem) for problem in templates.file_problems()]
    for channel in REQUIRED_BLOCKS:
        for name in templates.names(channel):
            problem = templates.problem_at(channel, name)
            if problem:
                errors.append(ContentError(*problem))
            else:
                errors.extend(ContentError(*found) for found in templates.sandbox_problems(channel, name))
    return errors


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
