"""OpenAPI documentation of the routes FastAPI cannot describe alone: how they say no (every refusal is JSON
with a `detail` that says why: a sentence, or for invalid fields one entry per field), and what the routes
that read their request body themselves accept."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

JsonSchema = dict[str, Any]


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


def request_body(model: type[BaseModel], *media_types: str) -> dict[str, Any]:
    """OpenAPI documentation (a route's `openapi_extra`) of a body that the route reads itself, in `model`'s
    shape, sent as any of `media_types`."""
    schema = model.model_json_schema()
    definitions: dict[str, JsonSchema] = schema.pop("$defs", {})

    def inlined(node: Any) -> Any:
        # The path operation stands alone in the document: pydantic's `#/$defs/…` would point nowhere.
        if isinstance(node, dict):
            reference = node.get("$ref", "")
            if reference.startswith("#/$defs/"):
                rest = {key: value for key, value in node.items() if key != "$ref"}
                return inlined({**definitions[reference.removeprefix("#/$defs/")], **rest})
            return {key: inlined(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inlined(item) for item in node]
        return node

    body = inlined(schema)
    return {"requestBody": {"required": True, "content": {media: {"schema": body} for media in media_types}}}
