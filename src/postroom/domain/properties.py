"""Template and delivery properties (DESIGN.md §2): what operators set.

A delivery starts as a copy of its template's properties and may override each one; the copy is
stored whole, so later template edits never change an existing delivery. Platform defaults
(From, Reply-To, errors-to) come from the instance settings when a property is left empty.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from postroom.errors import InputError

__all__ = ["MessageFormat", "MirrorMode", "Properties", "parse_properties"]


class MessageFormat(StrEnum):
    RECIPIENT = "recipient"  # each recipient's email_format; unknown → multipart
    MULTIPART = "multipart"
    HTML = "html"
    TEXT = "text"


class MirrorMode(StrEnum):
    AUTO = "auto"  # a page when the content uses mirror_url
    FORCE = "force"  # always a page
    NEVER = "never"
    ID_ONLY = "id_only"  # a page reachable only from the delivery log (`deliveries mirror`)


class Properties(BaseModel):
    """Every property a template or delivery carries. Empty strings mean "platform default"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    from_name: str = ""
    from_address: str = ""
    reply_to: str = ""
    errors_to: str = ""
    subject: str = ""
    html: str = ""
    text: str = ""
    format: MessageFormat = MessageFormat.MULTIPART
    charset: str = "utf-8"
    inline_css: bool = True
    mirror_mode: MirrorMode = MirrorMode.AUTO
    resource_validity_days: float | None = Field(None, gt=0)
    list_unsubscribe: bool = True
    extra_headers: str = ""
    email_bcc: bool = False
    max_retries: int | None = Field(None, ge=0)
    retry_period_minutes: int | None = Field(None, ge=1)
    validity_days: float | None = Field(None, gt=0)
    proof_addresses: list[str] = Field(default_factory=list)

    def override(self, changes: dict[str, Any]) -> Properties:
        """A copy with `changes` applied, validated like a fresh definition."""
        return parse_properties({**self.model_dump(), **changes}, source="override")


def parse_properties(data: dict[str, Any], *, source: str) -> Properties:
    """Validate raw properties; errors name the property and the problem."""
    try:
        return Properties.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '?'}: {err['msg']}" for err in exc.errors()
        )
        raise InputError(f"{source}: {problems}") from None
