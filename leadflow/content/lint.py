"""What `leadflow check` finds beyond the schema: templates a step cannot use, template variables a lead
or its entering event cannot provide, steps no lead can reach, waits that never end, rules that can never match. Each finding is a
ContentError at the file and line to fix, saying how."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from typing import Any

from leadflow.content.conditions import PropertyTest, as_test
from leadflow.content.templates import TemplateLibrary, VariableUse
from leadflow.content.yamlfile import ContentError, Location, YamlFile
from leadflow.leads.views import EVENT_FIELDS, LEAD_FIELDS_ALWAYS, LEAD_PROPERTIES_KNOWN
from leadflow.messaging.model import QuietHours, SendingPolicy
from leadflow.platform import clock
from leadflow.segments.evaluation import entering_events
from leadflow.segments.model import Segment
from leadflow.segments.rules import (
    STAGES,
    TEMPERATURES,
    AbsenceRule,
    AllRule,
    AnyRule,
    EventRule,
    EventTrigger,
    NotRule,
    PropertyRule,
    Rule,
    ScoreRule,
    StageRule,
    TemperatureRule,
)
from leadflow.sequences.model import (
    BranchStep,
    EnteringEventMoment,
    Moment,
    SendStep,
    SendWindow,
    Sequence,
    WaitStep,
    WaitUntilStep,
    walk_steps,
)

LONGEST_WAIT = timedelta(days=366)
# What a sequence's message renders with (leads.sequence_message_context, outgoing.message_context).
MESSAGE_VARIABLES = ("lead", "event", "unsubscribe_url")


# --- rules that can never match -------------------------------------------------------------------


def _test_contradiction(test: PropertyTest, allowed: tuple[str, ...] | None = None) -> str | None:
    lows = [v for v in (test.gt, test.gte) if v is not None]
    highs = [v for v in (test.lt, test.lte) if v is not None]
    if lows and highs and (max(lows) > min(highs) or (test.gt is not None and test.gt >= min(highs))):
        return f"no value is above {max(lows)} and below {min(highs)}"
    if test.equals is not None and test.in_ is not None and test.equals not in test.in_:
        return f"equals {test.equals!r} but must be in {test.in_}"
    if test.equals is not None and test.equals == test.not_equals:
        return f"equals and not_equals are both {test.equals!r}"
    if test.exists is False and test.tests_given - {"exists", "not_equals", "not_in"}:
        return "exists: false with a test on the value"
    if allowed is not None:
        options = [test.equals] if test.equals is not None else test.in_
        if options is not None and not any(str(o).lower() in allowed for o in options):
            return f"{', '.join(map(str, options))} is none of {', '.join(allowed)}"
    return None


def never_matches(rule: Rule) -> str | None:
    """Why `rule` can hold for no lead, or None."""
    match rule:
        case PropertyRule():
            return _test_contradiction(rule)
        case ScoreRule(score=PropertyTest() as test):
            return _test_contradiction(test)
        case TemperatureRule(temperature=PropertyTest() as test):
            return _test_contradiction(test, TEMPERATURES)
        case StageRule(stage=PropertyTest() as test):
            return _test_contradiction(test, STAGES)
        case AbsenceRule(absence=spec) if spec.after == spec.missing and not spec.same:
            return (
                "the trigger is its own follow-up, so it is never missing (name another event, or use same:)"
            )
        case AllRule():
            reasons = [reason for part in rule.all if (reason := never_matches(part))]
            if reasons:
                return reasons[0]
            if any(NotRule.model_validate({"not": part}) in rule.all for part in rule.all):
                return "it asks for a rule and its `not` at once"
            for kind, attribute in ((StageRule, "stage"), (TemperatureRule, "temperature")):
                wanted = {getattr(p, attribute) for p in rule.all if isinstance(p, kind)}
                if len({w for w in wanted if isinstance(w, str)}) > 1:
                    return f"a lead has one {attribute}, not {' and '.join(sorted(map(str, wanted)))} at once"
            return None
        case AnyRule():
            why_not = [never_matches(part) for part in rule.any]
            return "; ".join(r for r in why_not if r) if all(why_not) else None
    return None


def _rule_errors(document: YamlFile, rule: Rule | None, at: Location, what: str) -> list[ContentError]:
    reason = never_matches(rule) if rule is not None else None
    if reason is None:
        return []
    return [document.error(at, f"{what} can never match: {reason}. Fix the rule so some lead can meet it")]


def lint_segment(segment: Segment, document: YamlFile) -> list[ContentError]:
    errors = _rule_errors(document, segment.entry, ("entry",), "the entry rule") + _rule_errors(
        document, segment.exit, ("exit",), "the exit rule"
    )
    for at, channel in rule_keys(document.data, "reachable"):
        errors.append(
            document.error(
                at,
                "`reachable:` is decided when a sequence's branch runs, not for segments: branch on it in "
                f"the sequence (`branch: {{if: {{reachable: {channel}}}, ...}}`)",
            )
        )
    return errors


# --- sequences --------------------------------------------------------------------------------------


def lint_sequence(
    sequence: Sequence,
    document: YamlFile,
    segment: Segment | None,
    templates: TemplateLibrary,
    policy: SendingPolicy,
) -> list[ContentError]:
    errors: list[ContentError] = []
    if segment is not None and sequence.exit_when.left_segment and segment.exit is None:
        errors.append(
            document.error(
                ("exit_when", "left_segment"),
                f"segment {segment.id!r} has no exit rule, so no lead ever leaves it; add `exit:` to the "
                "segment or drop left_segment",
            )
        )
    for at, step in walk_steps(sequence.steps):
        if isinstance(step, SendStep):
            errors.extend(_template_errors(document, at, step, templates, sequence, segment))
        elif isinstance(step, WaitStep) and step.wait > LONGEST_WAIT:
            errors.append(
                document.error(
                    (*at, "wait"),
                    f"a wait of {step.wait.days} days never ends within a campaign (longest: "
                    f"{LONGEST_WAIT.days} days); shorten it",
                )
            )
        elif isinstance(step, WaitUntilStep) and isinstance(step.wait_until, Moment):
            errors.extend(_moment_errors(document, (*at, "wait_until", "at"), step.wait_until, segment))
        elif (
            isinstance(step, WaitUntilStep)
            and isinstance(step.wait_until, SendWindow)
            and policy.quiet_hours
            and _inside(step.wait_until, policy.quiet_hours)
        ):
            quiet = policy.quiet_hours
            errors.append(
                document.error(
                    (*at, "wait_until"),
                    f"the window {step.wait_until.start:%H:%M}-{step.wait_until.end:%H:%M} lies inside the quiet "
                    f"hours {quiet.start:%H:%M}-{quiet.end:%H:%M} (sending.yaml): no message can go out in it; "
                    "move it to the day",
                )
            )
        elif isinstance(step, BranchStep):
            errors.extend(_branch_errors(document, at, step, sequence))
    return errors


def _moment_errors(
    document: YamlFile, at: Location, moment: Moment, segment: Segment | None
) -> list[ContentError]:
    """A date in the file already past, or a property the entering event cannot give: every lead would go
    straight on."""
    source = moment.at
    if isinstance(source, datetime):
        ends = moment.resolve(source).at
        if ends is not None and ends <= clock.now():
            return [
                document.error(
                    at,
                    f"{ends.isoformat()} (`at` moved by the offset) is already past: every lead would go "
                    "straight on; give a date to come",
                )
            ]
    if isinstance(source, EnteringEventMoment) and segment is not None:
        name = source.event_property
        entering = entering_events(segment.entry)
        if not entering.triggers:
            return [
                document.error(
                    at,
                    f"no event makes a lead enter segment {segment.id!r} (its entry rule is about properties, "
                    f"score or stage alone), so there is no entering event to read {name!r} from; use "
                    "`lead_property` or a date",
                )
            ]
        if not entering.always or not all(name in _properties_required(t) for t in entering.triggers):
            types = " or ".join(sorted({trigger.event for trigger in entering.triggers}))
            return [
                document.error(
                    at,
                    f"not every {types} event that makes a lead enter segment {segment.id!r} has {name!r}: "
                    f"such a lead would go straight on; enter only on events that have it (`where: {{{name}: "
                    "{exists: true}}` in the segment's entry)",
                )
            ]
    return []


def _branch_errors(
    document: YamlFile, at: Location, step: BranchStep, sequence: Sequence
) -> list[ContentError]:
    condition = step.branch.if_
    if reason := never_matches(condition):
        if step.branch.then:
            return [
                document.error(
                    (*at, "branch", "then"),
                    f"unreachable: the branch condition can never match ({reason}); fix the `if:`",
                )
            ]
        return []
    goal = sequence.goal
    if (
        goal
        and step.branch.then
        and any(
            isinstance(rule, EventRule) and rule.event == goal.event and not goal.where
            for rule in _required(condition)
        )
    ):
        return [
            document.error(
                (*at, "branch", "then"),
                f"unreachable: the sequence's goal {goal.event!r} ends it as soon as that event happens, so no "
                f"lead who did it gets here; drop the sequence `goal:` and put a `goal` step after this branch",
            )
        ]
    return []


def _required(rule: Rule) -> Iterator[Rule]:
    """The rules that must all hold for `rule` to hold."""
    yield rule
    if isinstance(rule, AllRule):
        for part in rule.all:
            yield from _required(part)


def _inside(window: SendWindow, quiet: QuietHours) -> bool:
    def minutes(moment: time) -> int:
        return moment.hour * 60 + moment.minute

    def quiet_at(minute: int) -> bool:
        start, end = minutes(quiet.start), minutes(quiet.end)
        return start <= minute < end if start < end else minute >= start or minute < end

    start = datetime.combine(date.min, window.start)
    length = (minutes(window.end) - minutes(window.start)) % (24 * 60)
    return all(quiet_at(minutes((start + timedelta(minutes=m)).time())) for m in range(0, length, 5))


def _template_errors(
    document: YamlFile,
    at: Location,
    step: SendStep,
    templates: TemplateLibrary,
    sequence: Sequence,
    segment: Segment | None,
) -> list[ContentError]:
    channel, name = step.send.channel, step.send.template
    problem = templates.problem_with(channel, name)
    if problem:
        return [document.error((*at, "send", "template"), problem)]
    path = templates.directory / channel / f"{name}.j2"
    where = f"(sent by sequence {sequence.id!r})"
    reasons: list[tuple[int, str]] = []
    for use in templates.variables_used(channel, name):
        if use.variable == "lead":
            reason = _lead_use_problem(use, where)
        elif use.variable == "event":
            reason = _event_use_problem(use, where, segment) if segment is not None else None
        elif use.variable in MESSAGE_VARIABLES:
            reason = None
        else:
            reason = (
                f"`{use.variable}` is not something a sequence message knows {where}; its variables are "
                "`lead` (lead.first_name, lead.company, …), `event` (the event that made the lead enter the "
                "segment: event.type, event.properties.title, …) and `unsubscribe_url`"
            )
        if reason:
            reasons.append((use.line, reason))
    return [ContentError(path, line, reason) for line, reason in reasons]


def _lead_use_problem(use: VariableUse, where: str) -> str | None:
    field = use.path[0] if use.path else None
    if field is None or field in LEAD_FIELDS_ALWAYS or use.guarded:
        return None
    if field in LEAD_PROPERTIES_KNOWN:
        return f"not every lead has `lead.{field}` {where}: write {{{{ lead.{field} | default('…') }}}}"
    close = difflib.get_close_matches(field, LEAD_FIELDS_ALWAYS + LEAD_PROPERTIES_KNOWN, 1)
    hint = f"did you mean lead.{close[0]}? " if close else ""
    return (
        f"`lead.{field}` is not a property leads are known to have {where}: {hint}or give it a default: "
        f"{{{{ lead.{field} | default('…') }}}}"
    )


def _event_use_problem(use: VariableUse, where: str, segment: Segment) -> str | None:
    """Whether the event that makes a lead enter `segment` can give what the template reads of `event`."""
    entering = entering_events(segment.entry)
    written = ".".join(("event", *use.path))
    if not entering.triggers:
        return (
            f"`{written}`: no event makes a lead enter segment {segment.id!r} (its entry rule is about "
            f"properties, score or stage alone), so there is no `event` {where}; drop it, or enter the segment on an event"
        )
    types = " or ".join(sorted({trigger.event for trigger in entering.triggers}))
    field = use.path[0] if use.path else None
    if field is None or use.path == ("properties",) or use.guarded:
        return None
    if field not in EVENT_FIELDS:
        return (
            f"`{written}`: an event has {', '.join(EVENT_FIELDS)} {where}: did you mean "
            f"event.properties.{field}?"
        )
    if field != "properties":
        if entering.always:
            return None
        return (
            f"a lead can enter segment {segment.id!r} without an event {where}: write "
            f"{{{{ {written} | default('…') }}}}"
        )
    name = use.path[1]
    if entering.always and all(name in _properties_required(trigger) for trigger in entering.triggers):
        return None
    return (
        f"not every {types} event has `event.properties.{name}` {where}: write "
        f"{{{{ event.properties.{name} | default('…') }}}}"
    )


def _properties_required(trigger: EventTrigger) -> set[str]:
    """The properties every event matching `trigger` has: its `where` tests them and fails on none."""
    return {name for name, test in trigger.where.items() if not as_test(test).holds(None)}


# --- event types nothing sends ----------------------------------------------------------------------


def rule_keys(data: Any, name: str, at: Location = ()) -> Iterator[tuple[Location, str]]:
    """Every `name: VALUE` (a text) in a content file's data, with where it is: `event` in rules, triggers,
    goals, count and absence specs; property filters (`where:`) name properties, and are left out."""
    if isinstance(data, dict):
        for key, value in data.items():
            if key == name and isinstance(value, str):
                yield (*at, key), value
            elif key != "where":
                yield from rule_keys(value, name, (*at, key))
    elif isinstance(data, list):
        for index, item in enumerate(data):
            yield from rule_keys(item, name, (*at, index))


def unproduced_events(document: YamlFile, produced: frozenset[str]) -> list[ContentError]:
    """Warnings: rules and goals on an event type that nothing produces (no site may send it, Leadflow never
    records it, and sites.yaml does not list it among the events your servers post), so they never fire."""
    return [
        document.error(
            at,
            f"warning: nothing sends {event!r} events: no site in sites.yaml may send it and Leadflow does "
            "not record it itself, so this never fires. Add it to a site's `events:` if a page sends it, to "
            "`server_events:` in sites.yaml if your servers post it to /v1/events, or fix the name",
        )
        for at, event in rule_keys(document.data, "event")
        if event not in produced
    ]
