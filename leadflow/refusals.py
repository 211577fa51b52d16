"""How the HTTP routes say no, for their OpenAPI documentation: every refusal is JSON with a `detail` that
says why (a sentence, or for invalid fields one entry per field)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Problem(BaseModel):
    """Why a request was refused."""

    detail: str


class FieldProblem(BaseModel):
    field: str = Field(description="where, as the client wrote it: `events.3.timestamp`")
    message: str
    type: str


class Invalid(BaseModel):
    """The request's fields that are wrong; nothing of it was stored."""

    detail: list[FieldProblem]


def refusals(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of the refusals a route may answer."""
    reasons = {
        400: "malformed JSON, or a body that is not what the route reads",
        401: "missing, unknown or revoked API key",
        403: "refused: a signature, key or origin that does not check out",
        404: "no such lead, link or route",
        409: "the lead's state does not allow it",
        413: "the body, or the batch, is too large; nothing of it was stored",
        429: "over a rate limit (the API key's, the site key's or the address's): retry after `Retry-After` seconds",
    }
    documented: dict[int | str, dict[str, Any]] = {
        code: {"model": Problem, "description": reasons[code]} for code in codes
    }
    documented[422] = {"model": Invalid, "description": "invalid fields; nothing of the request was stored"}
    return documented
