"""The names Temporal knows the workflows, their signals and queries, and the activities by are written in
every recorded history and in the history of every lead, enrollment and hand-off already running (some wait
for weeks): moving or renaming code must keep each of them, pinning `name=` to the old one if need be."""

from __future__ import annotations

from temporalio import activity, workflow

from leadflow.contracts import signal_name
from leadflow.platform.runtime import Runtime
from worker import WORKFLOWS, activities_of
from workflows.handoff import HandoffWorkflow
from workflows.lead import LeadWorkflow

WORKFLOW_NAMES = {
    "LeadWorkflow": {
        "signals": {"events", "rescore", "sequence_finished"},
        "queries": {"next_rescore_at", "running_sequences"},
    },
    "SequenceWorkflow": {"signals": {"exit", "lead_events", "segments_left"}, "queries": {"current_step"}},
    "HandoffWorkflow": {"signals": {"closed"}, "queries": {"status"}},
}
ACTIVITY_NAMES = {
    "assess_lead",
    "hand_off",
    "send_message",
    "lead_snapshot",
    "next_send_window",
    "resolve_moment",
    "record_step",
    "record_steps",
    "finish_enrollment",
    "notify_webhook",
    "remind",
    "escalate",
}


def test_workflows_signals_and_queries_keep_their_names() -> None:
    registered = {}
    for cls in WORKFLOWS:
        definition = workflow._Definition.from_class(cls)
        assert definition is not None
        registered[definition.name] = {
            "signals": {name for name in definition.signals if name},
            "queries": {name for name in definition.queries if name},
        }
    assert registered == WORKFLOW_NAMES


def test_activities_keep_their_names(runtime: Runtime) -> None:
    names = set()
    for method in activities_of(runtime):
        definition = activity._Definition.from_callable(method)
        assert definition is not None
        names.add(definition.name)
    assert names == ACTIVITY_NAMES


def test_a_signal_named_by_its_method_is_the_name_temporal_registers() -> None:
    assert signal_name(LeadWorkflow.rescore) == "rescore"
    assert signal_name(LeadWorkflow.events) == "events"
    assert signal_name(HandoffWorkflow.closed) == "closed"
