"""The one error base: a LeadflowError's class says what an activity that meets it does (retry or fail at
once) and which HTTP answer an API request gets."""

from __future__ import annotations

from datetime import timedelta

from leadflow.content.templates import TemplateRenderError
from leadflow.handoff.assignment import HandoffRefused, NoSalespersonAvailable
from leadflow.intake.ingest import UnknownLead
from leadflow.messaging.providers import TemporaryDeliveryError, UnsendableMessage
from leadflow.platform.errors import LeadflowError, activity_failure, failure_type
from leadflow.scoring.qualification import NotRecyclable


def test_an_error_that_fails_the_same_way_every_time_fails_the_activity_at_once() -> None:
    for error in (TemplateRenderError("x"), UnsendableMessage("x"), NoSalespersonAvailable("x")):
        failure = activity_failure(error)
        assert failure.non_retryable, error
        assert failure.type == type(error).__name__ == failure_type(type(error))
        assert failure.message == "x"


def test_a_temporary_failure_is_retried_after_the_wait_the_provider_asked_for() -> None:
    failure = activity_failure(TemporaryDeliveryError("busy", retry_after=30), timedelta(seconds=30))
    assert not failure.non_retryable
    assert failure.type == "TemporaryDeliveryError"
    assert failure.next_retry_delay == timedelta(seconds=30)


def test_only_a_clients_doing_has_an_http_answer() -> None:
    assert HandoffRefused.http_status == NotRecyclable.http_status == 409
    assert UnknownLead.http_status == 404
    assert issubclass(HandoffRefused, ValueError)  # callers that caught ValueError still do
    assert issubclass(UnknownLead, LookupError)
    assert LeadflowError.http_status is None and TemplateRenderError.http_status is None
