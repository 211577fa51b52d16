"""The sequence workflow: interprets the snapshot of a sequence taken at enrollment, one branch per step kind.

Steps run in order; `branch` and `split` run their nested steps, then the sequence goes on after them. The
lead workflow forwards the lead's events (goals, branches, opt-out), hand-offs and segment exits as signals.
Every step is journaled so a lead's timeline shows what happened and why: the entries go with the next
activity (the send, the enrollment's end), or are written together (`record_steps`) before a wait.
"""

# No `from __future__ import annotations` here: the sandbox re-imports this module for every workflow it
# loads, and each string annotation would then cost a compile() when the workflow's signatures are read.

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.sending import SendActivities
    from leadflow.content.templates import TemplateRenderError
    from leadflow.contracts import (
        HANDED_TO_SALES,
        OPTED_OUT,
        EnrollmentFinished,
        EnrollmentStatus,
        EventRef,
        LeadSnapshot,
        LeadSnapshotInput,
        MomentInput,
        NewEvents,
        SendInput,
        SendWindowInput,
        SequenceInput,
        StepReached,
        StepsReached,
    )
    from leadflow.messaging.consent import OPT_OUT_EVENT
    from leadflow.platform.clock import on_the_minute
    from leadflow.platform.errors import failure_type
    from leadflow.scoring.score import EventFact
    from leadflow.segments.evaluation import LeadFacts, holds, reads_the_lead, trigger_matches
    from leadflow.segments.rules import EventTrigger
    from leadflow.sequences.model import (
        BranchStep,
        EventMoment,
        GoalStep,
        Moment,
        ResolvedMoment,
        SendStep,
        SplitStep,
        Step,
        Variant,
        WaitStep,
        WaitUntilStep,
    )

In = TypeVar("In")
EXIT_ON_OPT_OUT = "exit-on-opt-out"
CHANNEL_UNAVAILABLE = "ChannelUnavailable"  # raised by workers before SMS and push existed (old histories)
SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=30),
    non_retryable_error_types=[failure_type(TemplateRenderError), CHANNEL_UNAVAILABLE],
)
BOOKKEEPING_TIMEOUT = timedelta(seconds=30)
# The send activity heartbeats during the provider call: a worker that died mid-send is noticed this fast.
SEND_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
EVENTS_REMEMBERED = 500  # what branches can look back on; older events of a long enrollment are dropped

# Waits end on a whole minute: leads enrolled within the same minute wake together, so a time-skipping
# server (leadflow simulate) runs them as one batch instead of one by one. A minute late is nothing in a
# nurture sequence. Histories recorded before this change keep their exact timers.
WAITS_END_ON_THE_MINUTE = "waits-end-on-the-minute"


# Short reads and writes of our own store run as local activities: no round trip through the server each.
LOCAL_BOOKKEEPING = "journal-as-local-activity"
# Journal entries go with the step's own activity (the send, the enrollment's end), or all together just
# before the workflow waits: a third of the activities per enrollment, and the timeline is as current.
JOURNAL_IN_BATCHES = "journal-in-batches"
# A branch on events alone decides from the events the workflow has seen: no read of the lead.
BRANCH_ON_EVENTS_READS_NO_LEAD = "branch-on-events-reads-no-lead"
# The enrollment's last write is ours too: a local activity, no round trip through the server.
FINISH_AS_LOCAL_ACTIVITY = "finish-as-local-activity"


@workflow.defn
class SequenceWorkflow:
    @workflow.init
    def __init__(self, request: SequenceInput) -> None:
        self.request = request
        self.step = 0
        self.outcome: tuple[str, str] | None = None  # (status, reason) once the lead must leave
        self.goals: list[EventTrigger] = [request.sequence.goal] if request.sequence.goal else []
        self.seen: list[EventRef] = []  # the lead's events since enrollment
        self.unwritten: list[StepReached] = []  # journal entries not handed to an activity yet

    @workflow.signal
    def lead_events(self, batch: NewEvents) -> None:
        self.seen = (self.seen + batch.events)[-EVENTS_REMEMBERED:]
        for event in batch.events:
            self._check_goals(event)
            if self.outcome is None and event.type == OPT_OUT_EVENT:
                # The send-time check would stop the next message anyway; leaving now also ends the waits.
                # (Histories recorded while this exit was new carry its patch marker: consume it.)
                workflow.patched(EXIT_ON_OPT_OUT)
                self.outcome = (
                    EnrollmentStatus.EXITED,
                    f"{OPTED_OUT} of {event.properties.get('channel') or 'email'}",
                )

    @workflow.signal
    def exit(self, reason: str) -> None:
        # (`continue_after_handoff: true` reads as `exit_when.handed_to_sales: false`: one rule, see Sequence.)
        if reason == HANDED_TO_SALES and not self.request.sequence.exit_when.handed_to_sales:
            return  # this sequence keeps nurturing leads that sales works on
        if self.outcome is None:
            self.outcome = (EnrollmentStatus.EXITED, reason)

    @workflow.signal
    def segments_left(self, segment_ids: list[str]) -> None:
        sequence = self.request.sequence
        if self.outcome is None and sequence.exit_when.left_segment and sequence.segment in segment_ids:
            self.outcome = (EnrollmentStatus.EXITED, f"left the segment {sequence.segment}")

    @workflow.query
    def current_step(self) -> int:
        return self.step

    @workflow.run
    async def run(self, request: SequenceInput) -> str:
        workflow_id = workflow.info().workflow_id
        await self._run_steps(request.sequence.steps, "")
        status, reason = self.outcome or (EnrollmentStatus.COMPLETED, "")
        finished = EnrollmentFinished(
            workflow_id, status, reason, at=workflow.now(), journal=self._unwritten()
        )
        await _bookkeeping(
            SendActivities.finish_enrollment, finished, local=workflow.patched(FINISH_AS_LOCAL_ACTIVITY)
        )
        parent = workflow.info().parent
        if parent:
            # The lead workflow may have continued as new: address its latest run, not the one that started us.
            try:
                await workflow.get_external_workflow_handle(parent.workflow_id).signal(
                    "sequence_finished", EnrollmentFinished(workflow_id, status, reason)
                )
            except Exception:
                # The lead workflow has ended (its lead was merged into another): nobody to tell.
                workflow.logger.info("lead workflow %s has ended", parent.workflow_id)
        return status

    async def _run_steps(self, steps: list[Step], prefix: str) -> None:
        for index, step in enumerate(steps):
            if self.outcome:
                return
            label = f"{prefix}{index}"
            if not prefix:
                self.step = index
            await self._journal(label, step, "")
            if isinstance(step, SendStep):
                await self._send(label, step)
            elif isinstance(step, WaitStep):
                await self._sleep(step.wait)
            elif isinstance(step, WaitUntilStep):
                await self._wait_until(label, step)
            elif isinstance(step, BranchStep):
                await self._branch(label, step)
            elif isinstance(step, SplitStep):
                await self._split(label, step)
            elif isinstance(step, GoalStep):
                self._arm_goal(step.goal)

    async def _journal(self, label: str, step: Step | None, detail: str) -> None:
        kind = _kind(step) if step is not None else "note"
        reached = StepReached(
            workflow.info().workflow_id,
            self.step,
            label=label,
            kind=kind,
            detail=detail,
            lead_id=self.request.lead_id,
            at=workflow.now(),
        )
        if workflow.patched(JOURNAL_IN_BATCHES):
            self.unwritten.append(reached)
        else:
            await _bookkeeping(SendActivities.record_step, reached, local=workflow.patched(LOCAL_BOOKKEEPING))

    def _unwritten(self) -> list[StepReached]:
        """The journal entries gathered so far, handed to the activity about to run (it writes them)."""
        steps, self.unwritten = self.unwritten, []
        return steps

    async def _write_journal(self) -> None:
        """Before a wait: the timeline must show the step the lead waits in."""
        if self.unwritten:
            await workflow.execute_local_activity_method(
                SendActivities.record_steps,
                StepsReached(self._unwritten()),
                start_to_close_timeout=BOOKKEEPING_TIMEOUT,
            )

    async def _note(self, label: str, detail: str) -> None:
        """A send's decision, kept in the lead's journal; histories from before the journal record none."""
        if workflow.patched(JOURNAL_IN_BATCHES) or workflow.patched(LOCAL_BOOKKEEPING):
            await self._journal(label, None, detail)

    async def _send(self, label: str, step: SendStep) -> None:
        workflow_id = workflow.info().workflow_id
        while self.outcome is None:
            journal = self._unwritten()
            try:
                result = await workflow.execute_activity_method(
                    SendActivities.send_message,
                    SendInput(
                        lead_id=self.request.lead_id,
                        idempotency_key=f"{workflow_id}:step-{label}",
                        channel=step.send.channel,
                        template=step.send.template,
                        sequence_id=self.request.sequence.id,
                        step=self.step,
                        at=workflow.now(),
                        sender=self.request.sequence.sender or "",
                        reply_to=self.request.sequence.reply_to or "",
                        journal=journal,
                    ),
                    start_to_close_timeout=timedelta(minutes=2),
                    heartbeat_timeout=SEND_HEARTBEAT_TIMEOUT,
                    retry_policy=SEND_RETRY,
                )
            except ActivityError as error:
                self.unwritten = journal + self.unwritten  # not written: the next activity carries them
                cause = error.cause
                if isinstance(cause, ApplicationError) and cause.type == CHANNEL_UNAVAILABLE:
                    await self._journal(
                        label, None, f"skipped: the {step.send.channel} channel cannot send yet"
                    )
                    return
                raise
            later = result.hold_until or result.retry_at
            if result.status in ("held", "deferred") and later is not None:
                # Sending hours, quiet hours or a frequency cap: a durable timer, then the same step (same
                # idempotency key) asks again; consent may have changed meanwhile. An exit ends the wait.
                await self._note(label, f"deferred until {later.isoformat()}: {result.reason}")
                await self._sleep_until(later)
                continue
            if result.status == "skipped":
                await self._note(label, f"skipped: {result.reason}")
            elif result.status == "suppressed" and self.outcome is None:
                self.outcome = (EnrollmentStatus.EXITED, OPTED_OUT)
            elif result.status == "bounced" and step.send.channel == "email" and self.outcome is None:
                self.outcome = (EnrollmentStatus.EXITED, "email bounced")
            return

    async def _sleep(self, duration: timedelta, until: Callable[[], bool] = lambda: False) -> None:
        """A durable timer that an exit, a goal or `until` (something the wait depends on changed) ends early."""
        if duration <= timedelta(0):
            return
        if workflow.patched(WAITS_END_ON_THE_MINUTE):
            duration = on_the_minute(workflow.now() + duration) - workflow.now()
        await self._write_journal()
        try:
            await workflow.wait_condition(lambda: self.outcome is not None or until(), timeout=duration)
        except TimeoutError:
            pass  # the wait ran its full length: on to the next step

    async def _sleep_until(self, moment: datetime, until: Callable[[], bool] = lambda: False) -> None:
        await self._sleep(moment - workflow.now(), until)

    async def _wait_until(self, label: str, step: WaitUntilStep) -> None:
        if isinstance(step.wait_until, Moment):
            await self._wait_for_moment(label, step.wait_until)
            return
        opens = await workflow.execute_local_activity_method(
            SendActivities.next_send_window,
            SendWindowInput(self.request.lead_id, step.wait_until, workflow.now()),
            start_to_close_timeout=BOOKKEEPING_TIMEOUT,
        )
        await self._sleep_until(opens)

    async def _wait_for_moment(self, label: str, moment: Moment) -> None:
        """Until the moment, journaled; one already past, missing or unreadable lets the sequence go on at once.
        A moment from the latest event of a type is read again when a newer one comes (a webinar moved)."""
        while self.outcome is None:
            latest = self._latest_event_for(moment)
            resolved = await self._resolve(moment, latest)
            if resolved.at is None:
                await self._journal(label, None, f"skipped: {resolved.problem}")
                return
            if resolved.at <= workflow.now():
                await self._journal(label, None, f"{resolved.at.isoformat()} has passed: going on")
                return
            await self._journal(label, None, f"waiting until {resolved.at.isoformat()}")
            await self._sleep_until(resolved.at, until=self._newer_than(moment, latest))
            if self._latest_event_for(moment) == latest:
                return  # the moment came (or an exit or a goal ended the wait)

    def _newer_than(self, moment: Moment, latest: EventRef | None) -> Callable[[], bool]:
        return lambda: self._latest_event_for(moment) != latest

    def _latest_event_for(self, moment: Moment) -> EventRef | None:
        """For a moment read from an event since enrollment: the latest such event the workflow has seen."""
        if not isinstance(moment.at, EventMoment):
            return None
        event_type = moment.at.event
        return next((event for event in reversed(self.seen) if event.type == event_type), None)

    async def _resolve(self, moment: Moment, latest: EventRef | None) -> ResolvedMoment:
        """From the file or the events the workflow has seen; the entering event and the lead's properties are
        read by an activity (only the moment goes into the history)."""
        source = moment.at
        if isinstance(source, datetime):
            return moment.resolve(source)
        if isinstance(source, EventMoment):
            if latest is None:
                return ResolvedMoment(problem=f"no {source.event} since enrollment")
            return moment.resolve(latest.properties.get(source.property))
        return await workflow.execute_local_activity_method(
            SendActivities.resolve_moment,
            MomentInput(workflow.info().workflow_id, self.request.lead_id, moment),
            start_to_close_timeout=BOOKKEEPING_TIMEOUT,
        )

    async def _branch(self, label: str, step: BranchStep) -> None:
        if not reads_the_lead(step.branch.if_) and workflow.patched(BRANCH_ON_EVENTS_READS_NO_LEAD):
            lead = LeadSnapshot()
        else:
            lead = await workflow.execute_local_activity_method(
                SendActivities.lead_snapshot,
                LeadSnapshotInput(self.request.lead_id),
                start_to_close_timeout=BOOKKEEPING_TIMEOUT,
            )
        facts = LeadFacts(
            now=workflow.now(),
            events=tuple(EventFact(e.event_id, e.type, e.occurred_at, e.properties) for e in self.seen),
            new_event_ids=frozenset(e.event_id for e in self.seen),
            properties=lead.properties,
            score=lead.score,
            temperature=lead.temperature,
            stage=lead.stage,
            reachable=frozenset(lead.reachable),
        )
        taken = "then" if holds(step.branch.if_, facts) else "else"
        await self._journal(label, None, f"branch: {taken}")
        await self._run_steps(step.branch.then if taken == "then" else step.branch.else_, f"{label}.{taken}.")

    async def _split(self, label: str, step: SplitStep) -> None:
        # workflow.random() is seeded by the workflow: a replay draws the same variant for this lead.
        chosen = pick_variant(step.split, workflow.random().random())
        await self._journal(label, None, f"split: variant {chosen.name}")
        await self._run_steps(chosen.steps, f"{label}.{chosen.name}.")

    def _arm_goal(self, goal: EventTrigger) -> None:
        self.goals.append(goal)
        for event in self.seen:
            self._check_goals(event)

    def _check_goals(self, event: EventRef) -> None:
        for goal in self.goals:
            if self.outcome is None and trigger_matches(goal, event.type, event.properties):
                self.outcome = (EnrollmentStatus.CONVERTED, f"goal {goal.event} reached")


async def _bookkeeping(activity: Callable[[Any, In], Awaitable[None]], argument: In, local: bool) -> None:
    """A write to our own store: a local activity, or scheduled through the server where the history (from
    before the patch that made it local) says so."""
    if local:
        await workflow.execute_local_activity_method(
            activity, argument, start_to_close_timeout=BOOKKEEPING_TIMEOUT
        )
    else:
        await workflow.execute_activity_method(activity, argument, start_to_close_timeout=BOOKKEEPING_TIMEOUT)


def pick_variant(variants: list[Variant], draw: float) -> Variant:
    """The variant a uniform `draw` in [0, 1) falls on, each owning a share of [0, 1) by its weight."""
    point = draw * sum(variant.weight for variant in variants)
    for variant in variants:
        point -= variant.weight
        if point < 0:
            return variant
    return variants[-1]


def _kind(step: Step) -> str:
    return next(
        name for name in ("send", "wait", "wait_until", "branch", "split", "goal") if hasattr(step, name)
    )
