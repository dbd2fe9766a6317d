"""Jinja2 templates of notifications: ``templates/email/<name>.{subject,txt,html}`` and
``templates/sms/<name>.txt`` and ``templates/push/<name>.{title,body}``.

Rendering is strict: a missing template or an undefined variable is a ``TemplateError`` naming it,
which is permanent (retrying will not make the variable appear).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from contracts.errors import TemplateError

TEMPLATE_DIR = Path(__file__).parent / "templates"


class TemplateTooLongError(TemplateError):
    """Raised when a template renders fine but too long for its channel (an SMS over two segments):
    the notification may still go by another channel, unlike a missing template or variable."""


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


@functools.cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        # Templates ship with the code and a deploy restarts the workers: no stat of each template
        # file on every render to see whether it changed.
        auto_reload=False,
    )


def email_templates() -> list[str]:
    """The names of the email templates that exist."""
    return sorted(p.stem for p in (TEMPLATE_DIR / "email").glob("*.subject"))


def _render(kind: str, name: str, path: str, context: dict[str, Any], known: Callable[[], list[str]]) -> str:
    try:
        template = environment().get_template(path)
    except jinja2.TemplateNotFound:
        listed = ", ".join(known())
        raise TemplateError(f"{kind} template {name!r} has no {path} (known templates: {listed})") from None
    try:
        return template.render(context)
    except jinja2.UndefinedError as e:
        raise TemplateError(f"{kind} template {name!r} ({path}): {e.message}") from None


def render_email(name: str, context: dict[str, Any]) -> RenderedEmail:
    """Render the subject, text and HTML parts of an email template."""
    known = email_templates
    parts = {
        part: _render("email", name, f"email/{name}.{part}", context, known)
        for part in ("subject", "txt", "html")
    }
    return RenderedEmail(subject=" ".join(parts["subject"].split()), text=parts["txt"], html=parts["html"])


#: Two SMS segments of 160 GSM-7 characters: a longer text costs more and is split on the phone.
SMS_MAX_CHARS = 320


def sms_templates() -> list[str]:
    """The names of the SMS templates that exist."""
    return sorted(p.stem for p in (TEMPLATE_DIR / "sms").glob("*.txt"))


def render_sms(name: str, context: dict[str, Any]) -> str:
    """Render an SMS template to one line of at most ``SMS_MAX_CHARS`` characters."""
    text = " ".join(_render("SMS", name, f"sms/{name}.txt", context, sms_templates).split())
    if len(text) > SMS_MAX_CHARS:
        raise TemplateTooLongError(
            f"SMS template {name!r} renders {len(text)} characters, over {SMS_MAX_CHARS}"
        )
    return text


#: About what a phone's lock screen shows; longer texts are cut with an ellipsis.
PUSH_TITLE_MAX_CHARS = 65
PUSH_BODY_MAX_CHARS = 240


def push_templates() -> list[str]:
    """The names of the push templates that exist."""
    return sorted(p.stem for p in (TEMPLATE_DIR / "push").glob("*.title"))


def render_push(name: str, context: dict[str, Any]) -> tuple[str, str]:
    """Render a push template's title and body, each on one line, cut to what a phone shows."""
    known = push_templates
    title, body = (
        " ".join(_render("push", name, f"push/{name}.{part}", context, known).split())
        for part in ("title", "body")
    )
    return _cut(title, PUSH_TITLE_MAX_CHARS), _cut(body, PUSH_BODY_MAX_CHARS)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
