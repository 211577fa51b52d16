"""A sample lead with every field leads are known to have, for trying a template out."""

from __future__ import annotations

from typing import Any


def sample_context() -> dict[str, Any]:
    """A lead with every field leads are known to have, for trying a template out."""
    lead = _SampleLead(
        id=1,
        email="ada@acme.test",
        phone="+33612345678",
        stage="lead",
        score=42,
        company="Acme",
        first_name="Ada",
        last_name="Lovelace",
        job_title="CTO",
        industry="software",
        company_size=250,
        country="FR",
        timezone="Europe/Paris",
        utm_source="newsletter",
        ebook_title="The Nurture Playbook",
    )
    return {"lead": lead, "unsubscribe_url": "https://leadflow.example/u/sample"}


class _SampleLead(dict[str, Any]):
    """A sample lead has every property: one it lacks reads as empty text, so trying a template goes on."""

    def __missing__(self, key: str) -> str:
        return ""
