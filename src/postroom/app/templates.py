"""Delivery templates: create, change, duplicate, delete; the built-in one; content checks."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from postroom.accounts.bcc import check_email_bcc_kept
from postroom.app.context import AppContext
from postroom.compose.personalize import compile_content
from postroom.compose.template_limits import TemplateLimits
from postroom.domain.models import Audience, Delivery, Recipient, Template
from postroom.domain.properties import Properties, parse_properties
from postroom.domain.states import DeliveryState
from postroom.errors import InputError, NotFoundError, TemplateError
from postroom.storage.recipient_reads import recipient_page
from postroom.storage.sql import SqlStore

__all__ = ["BUILTIN_TEMPLATE", "Preview", "TemplateService", "content_problems", "ensure_builtin",
           "load_template_file", "read_content"]

BUILTIN_TEMPLATE = "default"
_BUILTIN_PROPS = Properties(
    subject="A message for {{ recipient.first_name or recipient.email }}",
    html=(
        "<html><body><p>Hello {{ recipient.first_name or recipient.email }},</p>"
        "<p>This message was sent by Postroom.</p></body></html>"
    ),
    text=(
        "Hello {{ recipient.first_name or recipient.email }},\n\n"
        "This message was sent by Postroom.\n"
    ),
)
_FILE_KEYS = {"html_file": "html", "text_file": "text"}


def ensure_builtin(store: SqlStore, now: datetime) -> None:
    """Seed the read-only built-in template (idempotent); wiring calls it once."""
    store.ensure_template(BUILTIN_TEMPLATE, _BUILTIN_PROPS, builtin=True, now=now)


def content_problems(props: Properties, limits: TemplateLimits | None = None) -> list[str]:
    """Syntax errors of a template's content, the first of each field with its line
    (templates saved before they were refused may have some), and sources past `limits`."""
    problems: list[str] = []
    for field_name in ("subject", "html", "text"):
        sources = {"subject": "", "html": "", "text": ""}
        sources[field_name] = getattr(props, field_name)
        try:
            compile_content(subject=sources["subject"], html=sources["html"],
                            text=sources["text"], limits=limits)
        except TemplateError as exc:
            problems.append(str(exc))
    return problems


def _refuse_problems(name: str, props: Properties, limits: TemplateLimits) -> None:
    problems = content_problems(props, limits)
    if problems:
        raise TemplateError(f"template {name!r} does not compile:\n  " + "\n  ".join(problems))


def load_template_file(path: Path) -> tuple[str | None, dict[str, Any]]:
    """Read a template definition: TOML whose html_file/text_file point to content files."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from None
    name = data.pop("name", None)
    for key, prop in _FILE_KEYS.items():
        if key in data:
            data[prop] = read_content(path.parent / str(data.pop(key)), key)
    return name, data


def read_content(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{what}: {path} not found") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{what}: {path} is not valid UTF-8 (byte {exc.start})") from None


@dataclass(frozen=True)
class Preview:
    """A template rendered for one recipient, or the problems that stop it."""

    template: str
    recipient: str
    subject: str
    html: str
    text: str
    problems: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"template": self.template, "recipient": self.recipient,
                "subject": self.subject, "html": self.html, "text": self.text,
                "problems": self.problems}


_PREVIEW_SAMPLE = Recipient(id=0, email="preview@example.com", first_name="Ada",
                            last_name="Lovelace")


class TemplateService:
    def __init__(self, ctx: AppContext):
        self._ctx = ctx

    def list_templates(self) -> list[Template]:
        return self._ctx.store.list_templates()

    def get_template(self, name: str) -> Template:
        return self._ctx.store.get_template(name)

    def content_problems(self, props: Properties) -> list[str]:
        """Syntax errors of `props`' content and sources past this instance's limits."""
        return content_problems(props, self._ctx.settings.templates)

    def create_template(self, name: str, data: dict[str, Any]) -> Template:
        """A new template; content that does not compile is refused, every problem named."""
        props = parse_properties(data, source=f"template {name!r}")
        _refuse_problems(name, props, self._ctx.settings.templates)
        return self._ctx.store.create_template(name, props, self._ctx.now())

    def update_template(self, name: str, data: dict[str, Any]) -> Template:
        current = self._ctx.store.get_template(name)
        props = current.properties.override(data)
        check_email_bcc_kept(was_on=current.properties.email_bcc, now_on=props.email_bcc,
                             where=f"template {name!r}")
        _refuse_problems(name, props, self._ctx.settings.templates)
        return self._ctx.store.update_template(name, props, self._ctx.now())

    def duplicate_template(self, name: str, new_name: str) -> Template:
        source = self._ctx.store.get_template(name)
        return self._ctx.store.create_template(new_name, source.properties, self._ctx.now())

    def delete_template(self, name: str) -> None:
        """Delete a template. One with Email BCC on takes an administrator to delete, as to
        turn it off: deleting it and making it again without would stop the archive quietly."""
        current = self._ctx.store.get_template(name)
        check_email_bcc_kept(was_on=current.properties.email_bcc, now_on=False,
                             where=f"template {name!r} (by deleting it)")
        self._ctx.store.delete_template(name)

    def preview(self, name: str, *, recipient: str | None = None) -> Preview:
        """The template's subject, HTML and text personalized for `recipient` (an email; by
        default the first recipient, or a made-up one when there is none). Links are
        inactive. A content or data problem is returned, not raised."""
        ctx = self._ctx
        template = ctx.store.get_template(name)
        if recipient is not None:
            sample = ctx.store.recipient_by_email(recipient)
            if sample is None:
                raise NotFoundError(f"no recipient {recipient!r}")
        else:
            first = recipient_page(ctx.store.engine, search=None, limit=1, offset=0)
            sample = first[0] if first else _PREVIEW_SAMPLE
        problems = self.content_problems(template.properties)
        if problems:
            return Preview(name, sample.email, "", "", "", problems)
        delivery = Delivery(id=0, name=f"preview of {name}", template_name=name,
                            state=DeliveryState.EDITING, properties=template.properties,
                            audience=Audience(), salt="preview", last_error="",
                            created_at=ctx.now())
        try:
            content = ctx.planner(delivery).personalize(sample, None)
        except InputError as exc:  # TemplateError: an undefined variable, a limit
            return Preview(name, sample.email, "", "", "", [str(exc)])
        return Preview(name, sample.email, content.subject, content.html, content.text, [])

    def template_changed_since(self, delivery: Delivery) -> datetime | None:
        """When the delivery's template was last changed, if after the delivery was made from
        it (the delivery keeps its own copy, DESIGN.md §1); None otherwise or if it is gone."""
        try:
            template = self._ctx.store.get_template(delivery.template_name)
        except NotFoundError:
            return None
        changed = template.updated_at
        return changed if changed is not None and changed > delivery.created_at else None
