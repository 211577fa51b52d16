"""Message templates: Jinja2 in a bounded immutable sandbox (leadflow.content.sandbox) with StrictUndefined.

A template is one file per channel, `templates/CHANNEL/NAME.j2`, made of blocks:
- email: `subject`, `html` and optionally `text` (a plain-text part is made from the HTML when absent);
- sms: `body` (at most 1,600 characters);
- push: `title`, `body` and optionally `url`.
Shared pieces come in with `{% include %}` inside a block. The HTML block is autoescaped; the rest is not.

Modules: `library` (loading, checking and rendering), `variables` (what a template reads, found in its
syntax tree), `sample` (a sample lead to try one out) and `plain_text` (the text part made from HTML).
"""

from leadflow.content.templates.library import (
    BLOCKS,
    EMAIL_BLOCKS,
    REQUIRED_BLOCKS,
    SMS_MAX_LENGTH,
    Problem,
    RenderedEmail,
    RenderedPush,
    RenderedSms,
    TemplateLibrary,
    TemplateRenderError,
    UnreadableTemplate,
    compile_problem,
)
from leadflow.content.templates.plain_text import html_to_text
from leadflow.content.templates.sample import sample_context
from leadflow.content.templates.variables import JINJA_NAMES, REFERENCES, Chain, VariableUse, internals_read

__all__ = [
    "BLOCKS",
    "EMAIL_BLOCKS",
    "JINJA_NAMES",
    "REFERENCES",
    "REQUIRED_BLOCKS",
    "SMS_MAX_LENGTH",
    "Chain",
    "Problem",
    "RenderedEmail",
    "RenderedPush",
    "RenderedSms",
    "TemplateLibrary",
    "TemplateRenderError",
    "UnreadableTemplate",
    "VariableUse",
    "compile_problem",
    "html_to_text",
    "internals_read",
    "sample_context",
]
